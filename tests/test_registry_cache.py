"""The request budget for freshness: HEAD for tags seen before, manifests and
configs from a content-addressed on-disk cache that survives restarts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from registry_util import client_for, wish

from bot.registry.cache import BlobCache, TagHints
from bot.sandbox.image_builder import push_image, push_index
from bot.sandbox.layers import build_layer, file
from bot.sandbox.registry_server import LocalRegistry


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as server:
        yield server


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def test_cache_verifies_on_read_and_drops_damage(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    body = b'{"schemaVersion": 2}'
    cache.put(_digest(body), body, "application/vnd.oci.image.manifest.v1+json")
    assert cache.get(_digest(body)) == (body, "application/vnd.oci.image.manifest.v1+json")
    cache.put(_digest(b"other"), b"not other", "x")  # does not hash to its name: not kept
    assert cache.get(_digest(b"other")) is None
    stored = tmp_path / "c" / "sha256" / _digest(body).removeprefix("sha256:")
    stored.write_bytes(stored.read_bytes() + b" ")  # altered on disk
    assert cache.get(_digest(body)) is None
    assert not stored.exists()
    assert cache.get("sha256:../../etc/passwd") is None


def test_cache_is_bounded_and_survives_a_restart(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=10_000)
    bodies = [bytes([i]) * 1000 for i in range(30)]
    for body in bodies:
        cache.put(_digest(body), body, "config")
    assert cache.size <= 10_000
    again = BlobCache(tmp_path, max_bytes=10_000)
    assert again.size == cache.size
    assert again.get(_digest(bodies[-1])) == (bodies[-1], "config")  # the newest stay


def test_tag_hints_persist_and_ignore_junk(tmp_path: Path) -> None:
    hints = TagHints(tmp_path / "tags.json")
    hints.set("r/a:1", "sha256:" + "a" * 64)
    hints.save()
    assert TagHints(tmp_path / "tags.json").get("r/a:1") == "sha256:" + "a" * 64
    (tmp_path / "tags.json").write_text('{"r/a:1": "../x", "r/b": 3}')
    assert TagHints(tmp_path / "tags.json").get("r/a:1") is None


def test_recheck_of_unchanged_tags_costs_one_head_each(
    proxy: FaultProxy, registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    layer = build_layer([file("a", "1")])
    push_image(registry.url, unique_repo, "1", [layer])
    push_index(registry.url, unique_repo, "multi", {"linux/amd64": [layer], "linux/arm64": [layer]})
    wishes = [
        wish(f"{proxy.host}/{unique_repo}:1"),
        wish(f"{proxy.host}/{unique_repo}:multi", ["linux/amd64", "linux/arm64"]),
    ]
    cache = str(tmp_path / "cache")
    with client_for(proxy.host, registry_cache_dir=cache) as client:
        first = [client.resolve(w) for w in wishes]  # in turn: they share a config
        cold = client.requests_made
    # image: manifest, config; the index, its arm64 manifest and config (its amd64
    # image is the first image, kept by digest: no request)
    assert cold == 2 + 3
    with client_for(proxy.host, registry_cache_dir=cache) as client:  # a restart
        again = client.resolve_all(wishes)
        assert client.requests_made == 2
    assert len(proxy.requests_to("/manifests/", "HEAD")) == 2
    assert [r.images for r in again] == [r.images for r in first]


def test_a_moved_tag_is_fetched_again(
    proxy: FaultProxy, registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    push_image(registry.url, unique_repo, "1", [build_layer([file("a", "1")])])
    cache = str(tmp_path / "cache")
    ref = wish(f"{proxy.host}/{unique_repo}:1")
    with client_for(proxy.host, registry_cache_dir=cache) as client:
        client.resolve(ref)
    moved = push_image(registry.url, unique_repo, "1", [build_layer([file("a", "2")])])
    with client_for(proxy.host, registry_cache_dir=cache) as client:
        resolution = client.resolve(ref)
        assert client.requests_made == 3  # HEAD, GET manifest, GET config
    assert resolution.images[0].manifest_digest == moved.manifest_digest


def test_without_a_cache_directory_nothing_changes(
    proxy: FaultProxy, registry: LocalRegistry, unique_repo: str
) -> None:
    push_image(registry.url, unique_repo, "1", [build_layer([file("a", "1")])])
    for _ in range(2):
        with client_for(proxy.host) as client:
            client.resolve(wish(f"{proxy.host}/{unique_repo}:1"))
            assert client.requests_made == 2
    assert not proxy.requests_to("/manifests/", "HEAD")


def test_a_cached_private_manifest_needs_access_to_be_read(
    basic_registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    """The cache is shared by every client of a server, forks' reviews (no
    credentials) included: what it keeps is only handed over after a request
    this client may make."""
    assert basic_registry.credentials is not None
    pushed = push_image(
        basic_registry.url,
        unique_repo,
        "1",
        [build_layer([file("secret", "s")])],
        auth=basic_registry.credentials,
    )
    cache = str(tmp_path / "cache")
    host = basic_registry.host
    pinned = wish(f"{host}/{unique_repo}@{pushed.manifest_digest}")
    owner = {host: basic_registry.credentials}
    with client_for(host, credentials=owner, registry_cache_dir=cache) as client:
        assert client.resolve(pinned).problem is None
    for ref in (pinned, wish(f"{host}/{unique_repo}:1")):
        with client_for(host, registry_cache_dir=cache) as stranger:
            problem = stranger.resolve(ref).problem
            assert problem is not None and problem.code == "unauthorized", problem
    with client_for(host, credentials=owner, registry_cache_dir=cache) as client:
        assert client.resolve(pinned).problem is None
        assert client.requests_made <= 3  # HEAD (+ its token dance), nothing fetched
