"""A fault-injecting HTTP proxy on loopback, in front of a real registry.

It forwards every request to the upstream registry and, for requests that
match a rule, does what the real registry cannot be made to do: answer 5xx
or 429 with ``Retry-After``, cut a blob short, corrupt it, serve manifest
bytes that do not match their digest, paginate the tag list with ``Link``
headers, or replace a body altogether::

    with FaultProxy(registry.url) as proxy:
        proxy.add(Rule(path=r"/manifests/", status=503, times=2))
        client = RegistryClient(Config(insecure_registries=(proxy.host,)))
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
}


@dataclass
class Rule:
    """What to do to requests whose method and path match (``times`` = how often; -1 forever)."""

    path: str = ""  # regular expression searched in the path (query excluded)
    method: str = "GET"
    times: int = 1
    status: int | None = None  # answer this status instead of forwarding
    headers: Mapping[str, str] = field(default_factory=dict)  # added to the answer
    truncate: int | None = None  # forward, but send only this many body bytes, then close
    corrupt: bool = False  # forward, flipping one byte of the body
    body: bytes | None = None  # forward (for headers), but send this body instead
    content_type: str | None = None
    no_ranges: bool = False  # drop Range from the request and Accept-Ranges from the answer
    delay: float = 0.0  # seconds to wait before answering
    rate: int = 0  # send the body at this many bytes per second (0: at once)
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            method == self.method
            and re.search(self.path, path) is not None
            and (self.times < 0 or self.hits < self.times)
        )


class FaultProxy:
    def __init__(self, upstream: str, *, tag_page_size: int = 0, absolute_links: bool = False):
        self.upstream = upstream.rstrip("/")
        self.tag_page_size = tag_page_size
        self.absolute_links = absolute_links
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, dict[str, str]]] = []  # method, path+query, headers
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._server: ThreadingHTTPServer | None = None
        self.in_flight = 0
        self.max_in_flight = 0  # most requests handled at the same time

    # --- lifecycle --------------------------------------------------------
    def __enter__(self) -> FaultProxy:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                owner._handle(self)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._session.close()

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def requests_to(self, pattern: str, method: str = "GET") -> list[dict[str, str]]:
        with self._lock:
            return [h for m, p, h in self.log if m == method and re.search(pattern, p)]

    # --- the proxy ---------------------------------------------------------
    def _rule(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    return rule
        return None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._forward(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _forward(self, request: BaseHTTPRequestHandler) -> None:
        method = request.command
        split = urllib.parse.urlsplit(request.path)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.pop("Host", None)
        with self._lock:
            self.log.append((method, request.path, dict(headers)))
        length = int(request.headers.get("Content-Length") or 0)
        data = request.rfile.read(length) if length else None
        rule = self._rule(method, split.path)
        if rule is not None and rule.delay:
            time.sleep(rule.delay)
        if rule is not None and rule.status is not None:
            body = rule.body or json.dumps({"errors": [{"code": "INJECTED"}]}).encode()
            self._reply(request, rule.status, dict(rule.headers), body, rule)
            return
        if rule is not None and rule.no_ranges:
            headers.pop("Range", None)
        if self.tag_page_size and split.path.endswith("/tags/list") and method == "GET":
            self._tags(request, split, headers)
            return
        upstream = self._session.request(
            method,
            self.upstream + request.path,
            headers=headers,
            data=data,
            allow_redirects=False,
            timeout=30,
        )
        answer = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        if "Location" in answer:
            answer["Location"] = answer["Location"].replace(self.upstream, self.url)
        if rule is not None and rule.no_ranges:
            answer.pop("Accept-Ranges", None)
        answer.update(rule.headers if rule else {})
        self._reply(request, upstream.status_code, answer, upstream.content, rule)

    def _tags(self, request: BaseHTTPRequestHandler, split: Any, headers: dict[str, str]) -> None:
        """Serve the upstream tag list in pages of ``tag_page_size`` (?n=&last=)."""
        path = split.path
        upstream = self._session.get(self.upstream + path, headers=headers, timeout=30)
        if upstream.status_code != 200:
            self._reply(request, upstream.status_code, {}, upstream.content, None)
            return
        body = upstream.json()
        tags = sorted(body.get("tags") or [])
        query = urllib.parse.parse_qs(split.query)
        last = query.get("last", [""])[0]
        size = self.tag_page_size
        start = 0
        if last:
            start = next((i + 1 for i, t in enumerate(tags) if t == last), len(tags))
        page = tags[start : start + size]
        answer = {"Content-Type": "application/json"}
        if start + size < len(tags):
            link = f"{path}?n={size}&last={urllib.parse.quote(page[-1])}"
            if self.absolute_links:
                link = self.url + link
            answer["Link"] = f'<{link}>; rel="next"'
        payload = json.dumps({"name": body.get("name"), "tags": page}).encode()
        self._reply(request, 200, answer, payload, None)

    def _reply(
        self,
        request: BaseHTTPRequestHandler,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        rule: Rule | None,
    ) -> None:
        if rule is not None and rule.body is not None and rule.status is None:
            body = rule.body
        if rule is not None and rule.corrupt and body:
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
        request.send_response(status)
        for key, value in headers.items():
            if key.lower() == "content-type" and rule is not None and rule.content_type:
                continue
            request.send_header(key, value)
        if rule is not None and rule.content_type:
            request.send_header("Content-Type", rule.content_type)
        request.send_header("Content-Length", str(len(body)))
        if rule is not None and rule.truncate is not None:
            request.send_header("Connection", "close")
            request.end_headers()
            if request.command != "HEAD":
                request.wfile.write(body[: rule.truncate])
                request.wfile.flush()
            request.close_connection = True
            return
        request.end_headers()
        if request.command != "HEAD":
            _send(request, body, rule.rate if rule is not None else 0)


def _send(request: BaseHTTPRequestHandler, body: bytes, rate: int) -> None:
    """Write ``body``, at ``rate`` bytes per second when given (a slow registry)."""
    if not rate:
        request.wfile.write(body)
        return
    chunk = max(1, rate // 20)
    for start in range(0, len(body), chunk):
        request.wfile.write(body[start : start + chunk])
        request.wfile.flush()
        time.sleep(chunk / rate)
