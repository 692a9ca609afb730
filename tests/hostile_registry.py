"""A hostile registry on loopback: one bad behaviour per repository.

Written from the attacks of issue 10, not from the client's code. The first
component of the repository name picks the behaviour, so one server plays
all of them and a wishlist can mix them with good images::

    with HostileRegistry() as hostile:
        wish(f"{hostile.host}/drip-body/app:1")       # answers one byte at a time
        hostile.requests                               # (method, path, headers) seen

Behaviours (``NAME/…`` as the repository):

- ``drip-body``, ``drip-headers``: a manifest whose body (or whose status
  line and headers) arrive one byte every :attr:`drip` seconds;
- ``drip-blob``: a good manifest and config, then a layer blob that drips;
- ``huge-manifest``, ``huge-manifest-nolength``, ``huge-config``,
  ``huge-tags``, ``huge-error``, ``huge-token``: 100 MB answers (streamed from
  a generator: the server itself holds one chunk), with and without
  ``Content-Length``;
- ``gzip-bomb``: a manifest sent with ``Content-Encoding: gzip`` that
  inflates from about 100 KB to 100 MB;
- ``retry-after-N``: 429 with the N-th odd ``Retry-After`` of
  :data:`RETRY_AFTERS`;
- ``location-N``: 307 to the N-th invalid ``Location`` of :data:`LOCATIONS`;
- ``json-N``: a manifest body from :data:`BAD_JSON` (nested, huge integers,
  not UTF-8, wrong types everywhere);
- ``newline-token``: a bearer challenge on this server whose token holds a
  newline and :data:`TOKEN_SECRET`;
- ``many-tags``: a repository with :data:`MANY_TAGS` tags (``v0000`` …),
  every manifest served (so a client that expands them all is caught by the
  request count);
- ``downgrade-link``: a tag list whose ``Link`` sends the next page to
  ``http://`` on the same host and port (serve with ``tls=True``);
- ``realm-port``: a bearer challenge whose realm is ``realm`` (another port);
- ``redirect``: 307 to ``redirect_to`` + the same path, for a second server
  playing ``challenge`` (a 401 naming ``realm``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HUGE = 100 * 2**20
CHUNK = 2**16
MANY_TAGS = 3000
TOKEN_SECRET = "SECRET-TOKEN-PART-7f3a"

RETRY_AFTERS = [
    "²³",  # Unicode digits: str.isdigit() says yes, float() says no
    "9" * 5000,  # more digits than any wait
    "-5",
    "1e9",
    "Mon, 99 Foo 99999 99:99:99 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Thu, 01 Jan 1970 00:00:00 GMT",
]
LOCATIONS = [
    "http://[::1",  # unterminated IPv6 literal
    "http://127.0.0.1:99999/x",  # port out of range
    "http://exa mple.org/x",  # space in the host
    "https://a..b\xe9.invalid/x",  # an empty label: not encodable as IDNA
    "javascript:alert(1)",
    "//" + "a" * 300 + "." * 10 + "/x",
    "http://127.0.0.1:0/x",
]
_DIGEST = "sha256:" + "a" * 64
_GOOD_CONFIG = json.dumps(
    {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
).encode()
BAD_JSON: list[bytes] = [
    b"[" * 100_000 + b"]" * 100_000,  # deeply nested
    b'{"schemaVersion": 2, "layers": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
    b'{"schemaVersion": 2, "config": {"size": ' + b"1" * 5000 + b"}}",  # int-string limit
    b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", '
    b'"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": '
    + b"9" * 4000
    + b', "digest": "'
    + _DIGEST.encode()
    + b'"}, "layers": []}',  # parses, but no blob is that large
    b"\xff\xfe{\x00}\x00",  # not UTF-8
    b'{"schemaVersion": 2, "mediaType": ["a", "b"]}',  # wrong types ...
    b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", '
    b'"config": "x", "layers": 7}',
    b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", '
    b'"manifests": {"a": 1}}',
    b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", '
    b'"manifests": [{"digest": ["x"], "size": "1", "platform": 5}]}',
    b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", '
    b'"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1, '
    b'"digest": "sha256:../../../etc/passwd////////////////////////////////////////////////"}, '
    b'"layers": []}',
    b"null",
    b'"just a string"',
    b"1e999999",
]


def _manifest(config: bytes, layers: list[tuple[str, int]]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}
                for d, s in layers
            ],
        }
    ).encode()


DRIP_LAYER = b"x" * 4096
DRIP_LAYER_DIGEST = "sha256:" + hashlib.sha256(DRIP_LAYER).hexdigest()


@functools.cache
def gzip_bomb() -> bytes:
    """100 MB of zeros, gzip-compressed (about 100 KB), made once."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"0" * 2**20
    return b"".join([*(packer.compress(block) for _ in range(HUGE // len(block))), packer.flush()])


def _zeros(total: int) -> Iterator[bytes]:
    block = b"0" * CHUNK
    sent = 0
    while sent < total:
        part = block[: min(CHUNK, total - sent)]
        sent += len(part)
        yield part


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hang up on purpose (that is the point): no tracebacks."""


class HostileRegistry:
    """A loopback HTTP(S) server playing the behaviours above."""

    def __init__(self, *, tls: tuple[Path, Path] | None = None, drip: float = 0.1):
        self.drip = drip
        self.realm = ""  # for realm-port and challenge
        self.redirect_to = ""  # base URL for redirect
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                with owner._lock:
                    owner.requests.append((self.command, self.path, dict(self.headers.items())))
                try:
                    owner.answer(self)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                    self.close_connection = True

            do_HEAD = do_GET

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # --- lifecycle ---------------------------------------------------------
    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HostileRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def seen(self, needle: str = "") -> list[tuple[str, str, dict[str, str]]]:
        with self._lock:
            return [r for r in self.requests if needle in r[1]]

    # --- answers -------------------------------------------------------------
    def answer(self, h: BaseHTTPRequestHandler) -> None:
        if h.path.startswith("/token"):
            return self._token(h)
        match = re.match(r"^/v2/([^/]+)/(.+?)/(manifests|blobs|tags)/([^?]*)", h.path)
        if match is None:
            return self._send(h, 404, b'{"errors": [{"code": "NAME_UNKNOWN"}]}')
        behaviour, _, kind, ref = match.groups()
        base, _, index = behaviour.rpartition("-")
        if base in ("retry-after", "location", "json") and index.isdigit():
            return getattr(self, "_" + base.replace("-", "_"))(h, int(index))
        handler = getattr(self, "_" + behaviour.replace("-", "_"), None)
        if handler is None:
            return self._send(h, 404, b'{"errors": [{"code": "NAME_UNKNOWN"}]}')
        return handler(h, kind, ref)

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _stream(
        self, h: BaseHTTPRequestHandler, status: int, *, length: bool, headers: dict[str, str]
    ) -> None:
        """A 100 MB body, with or without Content-Length (then close-delimited)."""
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        if length:
            h.send_header("Content-Length", str(HUGE))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        for part in _zeros(HUGE):
            h.wfile.write(part)

    def _drip_bytes(self, h: BaseHTTPRequestHandler, data: bytes) -> None:
        for byte in data:
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(self.drip)

    # slow answers
    def _drip_body(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        body = b"{" + b" " * 10_000 + b"}"
        h.send_response(200)
        h.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.flush()
        self._drip_bytes(h, body)

    def _drip_headers(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        h.close_connection = True
        self._drip_bytes(h, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 10_000 + b"\r\n\r\n")

    def _drip_blob(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        if kind == "manifests":
            body = _manifest(_GOOD_CONFIG, [(DRIP_LAYER_DIGEST, len(DRIP_LAYER))])
            return self._send(
                h, 200, body, content_type="application/vnd.oci.image.manifest.v1+json"
            )
        if ref == DRIP_LAYER_DIGEST:
            h.send_response(200)
            h.send_header("Content-Length", str(len(DRIP_LAYER)))
            h.end_headers()
            return self._drip_bytes(h, DRIP_LAYER)
        return self._send(h, 200, _GOOD_CONFIG)

    # huge answers
    def _huge_manifest(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        self._stream(h, 200, length=True, headers=headers)

    def _huge_manifest_nolength(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        self._stream(h, 200, length=False, headers=headers)

    def _huge_config(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        if kind == "manifests":
            body = _manifest(_GOOD_CONFIG, [])  # the config promises a few hundred bytes
            return self._send(
                h, 200, body, content_type="application/vnd.oci.image.manifest.v1+json"
            )
        return self._stream(h, 200, length=False, headers={})

    def _gzip_bomb(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        headers = {"Content-Encoding": "gzip"}
        media = "application/vnd.oci.image.manifest.v1+json"
        self._send(h, 200, gzip_bomb(), headers, content_type=media)

    def _huge_tags(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        self._stream(h, 200, length=False, headers={"Content-Type": "application/json"})

    def _huge_error(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        self._stream(h, 400, length=True, headers={"Content-Type": "application/json"})

    def _huge_token(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        self._challenge_here(h, "huge")

    def _newline_token(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        self._challenge_here(h, "newline")

    def _challenge_here(self, h: BaseHTTPRequestHandler, flavour: str) -> None:
        if h.headers.get("Authorization"):
            return self._send(h, 404, b"{}")
        realm = f"{self.url}/token/{flavour}"
        self._send(h, 401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="x"'})

    def _token(self, h: BaseHTTPRequestHandler) -> None:
        if h.path.startswith("/token/huge"):
            return self._stream(h, 200, length=False, headers={})
        if h.path.startswith("/token/newline"):
            body = json.dumps({"token": f"abc\r\nX-Injected: {TOKEN_SECRET}"}).encode()
            return self._send(h, 200, body)
        return self._send(h, 200, json.dumps({"token": "realm-token-" + TOKEN_SECRET}).encode())

    # odd headers
    def _retry_after(self, h: BaseHTTPRequestHandler, index: int) -> None:
        self._send(h, 429, b"{}", {"Retry-After": RETRY_AFTERS[index]})

    def _location(self, h: BaseHTTPRequestHandler, index: int) -> None:
        self._send(h, 307, b"", {"Location": LOCATIONS[index]})

    def _json(self, h: BaseHTTPRequestHandler, index: int) -> None:
        body = BAD_JSON[index]
        self._send(h, 200, body, content_type="application/vnd.oci.image.manifest.v1+json")

    # expansion and address policy
    def _many_tags(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        if kind == "tags":
            tags = [f"v{i:04d}" for i in range(MANY_TAGS)]
            return self._send(h, 200, json.dumps({"name": "many-tags/app", "tags": tags}).encode())
        if kind == "manifests":
            body = _manifest(_GOOD_CONFIG, [])
            return self._send(
                h, 200, body, content_type="application/vnd.oci.image.manifest.v1+json"
            )
        return self._send(h, 200, _GOOD_CONFIG)

    def _downgrade_link(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        if "last=" in h.path:
            return self._send(h, 200, json.dumps({"tags": ["page2"]}).encode())
        plain = f"http://{self.host}/v2/downgrade-link/app/tags/list?last=a"
        body = json.dumps({"tags": ["a"]}).encode()
        self._send(h, 200, body, {"Link": f'<{plain}>; rel="next"'})

    def _realm_port(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        self._send(h, 401, b"{}", {"WWW-Authenticate": f'Bearer realm="{self.realm}"'})

    def _redirect(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        target = self.redirect_to + h.path.replace("/v2/redirect/", "/v2/challenge/", 1)
        self._send(h, 307, b"", {"Location": target})

    def _challenge(self, h: BaseHTTPRequestHandler, kind: str, ref: str) -> None:
        self._send(h, 401, b"{}", {"WWW-Authenticate": f'Bearer realm="{self.realm}"'})
