"""Redirects and proxies: a hostile registry must not steer wishbot to private
addresses or plain HTTP, credentials never follow a redirect to another
host, and loopback registries are reached directly even with a proxy set.

Everything runs on 127.0.0.1, so "allowed" and "private" are modelled with
the policy's allow lists: the servers listed in ``insecure_registries`` are
allowed, another port on 127.0.0.1 is not.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fault_proxy import FaultProxy, Rule
from registry_util import client_for, wish

from bot.config import Config
from bot.core.reference import parse
from bot.errors import RegistryRefused
from bot.registry.policy import Policy, is_loopback
from bot.registry.transport import MAX_REDIRECTS, _same_server
from bot.sandbox.image_builder import PushedImage, push_image
from bot.sandbox.layers import build_layer, file
from bot.sandbox.registry_server import LocalRegistry

LAYER = build_layer([file("etc/motd", "redirected\n"), file("data", b"x" * 50_000)])


class Recorder:
    """A loopback HTTP server that records every request line and answers 404
    (also works as a forward proxy: it then sees absolute URLs)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                with owner._lock:
                    owner.seen.append((self.command, self.path, dict(self.headers.items())))
                body = b'{"errors": [{"code": "NAME_UNKNOWN"}]}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_POST = do_PUT = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pushed(registry: LocalRegistry, basic_registry: LocalRegistry) -> PushedImage:
    """The same image (same digests) on the open and the password registry."""
    open_image = push_image(registry.url, "t/redirects", "1", [LAYER], compression="none")
    locked = push_image(
        basic_registry.url,
        "t/redirects",
        "1",
        [LAYER],
        compression="none",
        auth=basic_registry.credentials,
    )
    assert locked.manifest_digest == open_image.manifest_digest
    return open_image


@pytest.fixture
def front(registry: LocalRegistry) -> Iterator[FaultProxy]:
    """The registry the wish names (allowed)."""
    with FaultProxy(registry.url) as server:
        yield server


@pytest.fixture
def elsewhere(registry: LocalRegistry) -> Iterator[FaultProxy]:
    """Another server on 127.0.0.1 (private unless a test allows it)."""
    with FaultProxy(registry.url) as server:
        yield server


def _all_requests(proxy: FaultProxy) -> list[dict[str, str]]:
    return [h for method in ("GET", "HEAD") for h in proxy.requests_to("", method)]


def test_redirect_to_a_private_address_is_refused(
    front: FaultProxy, elsewhere: FaultProxy, pushed: PushedImage
) -> None:
    front.add(
        Rule(
            path="/blobs/",
            status=307,
            headers={"Location": f"http://{elsewhere.host}/v2/t/redirects/blobs/x?sig=1"},
            times=-1,
        )
    )
    with client_for(front.host) as client:
        resolution = client.resolve(wish(f"{front.host}/t/redirects:1"))
    problem = resolution.problem
    assert problem is not None and problem.code == "refused"
    assert front.host in problem.message and elsewhere.host in problem.message
    assert "sig=1" not in problem.message
    assert "WISHBOT_PRIVATE_REGISTRIES" in (problem.hint or "")
    assert len(front.requests_to("/blobs/")) == 1  # refused, not retried
    assert _all_requests(elsewhere) == []  # the private target saw nothing


def test_redirect_to_metadata_address_and_plain_http_are_refused_by_the_policy() -> None:
    policy = Policy(Config(private_registries=("registry.internal",)))
    source = "https://8.8.4.4/v2/a/blobs/sha256:1"  # IP literals: no DNS in this test
    refusals = {
        "http://169.254.169.254/latest/meta-data/": "private",
        "https://10.1.2.3/x": "private",
        "https://[::1]:8443/x": "private",
        "http://8.8.8.8/blob": "plain http",
        "http://8.8.4.4/v2/a/blobs/sha256:1": "plain http",
        "file:///etc/passwd": "not an HTTP(S) URL",
        "https://user:pw@8.8.8.8/blob": "credentials",
        "https://8.8.8.8:99999/blob": "not an HTTP(S) URL",
    }
    for target, why in refusals.items():
        with pytest.raises(RegistryRefused, match=re.escape(why)) as caught:
            policy.check_redirect("registry.example.org", source, target)
        assert "registry.example.org" in caught.value.message
        assert caught.value.hint
    policy.check_redirect("registry.example.org", source, "https://8.8.8.8/cdn/blob?sig=2")
    policy.check_redirect("registry.example.org", source, "https://registry.internal/blob")
    http_source = "http://10.0.0.5:5000/v2/a/blobs/sha256:1"
    policy.check_redirect("10.0.0.5:5000", http_source, "http://10.0.0.5:5000/other")
    insecure = Policy(Config(insecure_registries=("10.0.0.6:5000",)))
    insecure.check_redirect("r", source, "http://10.0.0.6:5000/blob")


def _redirect(proxy: FaultProxy, digest: str, location: str, times: int = -1) -> None:
    proxy.add(
        Rule(path=f"/blobs/{digest}$", status=307, headers={"Location": location}, times=times)
    )


def test_redirect_to_an_allowed_host_works_without_our_credentials(
    basic_registry: LocalRegistry,
    registry: LocalRegistry,
    pushed: PushedImage,
    tmp_path: Path,
) -> None:
    layer = pushed.layer_digests[0]
    with FaultProxy(basic_registry.url) as locked, FaultProxy(registry.url) as cdn:
        for digest in (pushed.config_digest, layer):
            _redirect(locked, digest, f"{cdn.url}/v2/t/redirects/blobs/{digest}")
        credentials = {locked.host: basic_registry.credentials or ("", "")}
        with client_for(locked.host, cdn.host, credentials=credentials) as client:
            ref = parse(f"{locked.host}/t/redirects:1")
            resolution = client.resolve(wish(str(ref)))
            dest = tmp_path / "layer.tar"
            client.download_blob(ref, layer, pushed.layer_sizes[0], dest)
        assert resolution.problem is None, resolution.problem
        assert resolution.images[0].manifest_digest == pushed.manifest_digest
        assert dest.read_bytes() == LAYER
        assert any("Authorization" in h for h in locked.requests_to("/blobs/"))
        received = cdn.requests_to("/blobs/")
        assert len(received) == 2  # config and layer, both fetched from the "CDN"
        assert not any(key.lower() == "authorization" for h in received for key in h)


def test_redirect_on_the_same_server_keeps_credentials(
    basic_registry: LocalRegistry, pushed: PushedImage
) -> None:
    config = pushed.config_digest
    with FaultProxy(basic_registry.url) as locked:
        _redirect(locked, config, f"/v2/t/redirects/blobs/{config}?again=1", times=1)
        credentials = {locked.host: basic_registry.credentials or ("", "")}
        with client_for(locked.host, credentials=credentials) as client:
            resolution = client.resolve(wish(f"{locked.host}/t/redirects:1"))
    assert resolution.problem is None, resolution.problem
    blob_requests = locked.requests_to(f"/blobs/{config}")
    assert len(blob_requests) == 2
    assert all("Authorization" in h for h in blob_requests)


def test_endless_redirects_stop(front: FaultProxy, pushed: PushedImage) -> None:
    front.add(
        Rule(
            path="/manifests/",
            status=302,
            headers={"Location": "/v2/t/redirects/manifests/1"},
            times=-1,
        )
    )
    with client_for(front.host) as client:
        resolution = client.resolve(wish(f"{front.host}/t/redirects:1"))
        assert client.requests_made == MAX_REDIRECTS + 1
    assert resolution.problem is not None and resolution.problem.code == "refused"
    assert f"more than {MAX_REDIRECTS} times" in resolution.problem.message


def test_same_server_rules_for_credentials() -> None:
    assert _same_server("https://r.example/a", "https://r.example:443/b")
    assert _same_server("http://r.example/a", "https://r.example/b")  # upgrade
    assert not _same_server("https://r.example/a", "http://r.example/b")  # downgrade
    assert not _same_server("https://r.example/a", "https://cdn.example/b")
    assert not _same_server("https://r.example/a", "https://r.example:8443/b")
    assert not _same_server("http://127.0.0.1:5000/a", "http://127.0.0.1:5001/a")


def test_loopback_is_reached_directly_even_with_a_proxy_set(
    monkeypatch: pytest.MonkeyPatch,
    registry: LocalRegistry,
    pushed: PushedImage,
    recorder: Recorder,
) -> None:
    # the registry itself, not a FaultProxy: the proxy's own forwarding would
    # honour the environment's proxy settings
    proxy_url = f"http://{recorder.host}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy_url)
        monkeypatch.setenv(name.lower(), proxy_url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with client_for(registry.host, "registry.example.org", retries=0) as client:
        direct = client.resolve(wish(f"{registry.host}/t/redirects:1"))
        proxied = client.resolve(wish("registry.example.org/t/redirects:1"))
    assert direct.problem is None, direct.problem
    assert direct.images[0].manifest_digest == pushed.manifest_digest
    # other hosts still go through the environment's proxy (sites need it)
    assert proxied.problem is not None and proxied.problem.code == "not-found"
    paths = [path for _method, path, _headers in recorder.seen]
    assert paths == ["http://registry.example.org/v2/t/redirects/manifests/1"]


def test_loopback_names() -> None:
    for host in (
        "127.0.0.1",
        "127.8.9.1",
        "[::1]",
        "::1",
        "localhost",
        "LOCALHOST.",
        "a.localhost",
    ):
        assert is_loopback(host), host
    for host in ("10.0.0.1", "registry.example.org", "localhost.example.org", "8.8.8.8", ""):
        assert not is_loopback(host), host
    assert is_loopback("::ffff:127.0.0.1")


def test_a_name_that_does_not_resolve_is_checked_again_later() -> None:
    """No verdict is cached for a name that fails to resolve (a hostile DNS
    server must not get a name waved through by failing the first lookup)."""
    answers: list[bool | None] = [None, False]

    class ScriptedDns(Policy):
        @staticmethod
        def _resolves_public(host_port: str) -> bool | None:
            return answers.pop(0)

    policy = ScriptedDns(Config())
    policy.check_address("rebind.example.org")  # unknown now: the connection will tell
    with pytest.raises(RegistryRefused, match=r"rebind\.example\.org"):
        policy.check_address("rebind.example.org")
    assert answers == []
