"""What the real registry cannot do, injected by a proxy in front of it:
5xx bursts, 429 with Retry-After, broken and corrupted transfers, altered
manifests, schema 1, and mirrors that fail."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_proxy import FaultProxy, Rule
from registry_util import client_for, wish

from bot.core.reference import parse
from bot.errors import IntegrityError, NotFound, Unavailable
from bot.sandbox.image_builder import PushedImage, push_image
from bot.sandbox.layers import build_layer, compress, file
from bot.sandbox.registry_server import LocalRegistry

BIG = build_layer([file(f"data/{i}", bytes([i]) * 70_000) for i in range(40)])


@pytest.fixture(scope="module")
def image(registry: LocalRegistry) -> PushedImage:
    return push_image(
        registry.url, "t/faults", "1", [build_layer([file("a", "1")]), BIG], compression="none"
    )


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as server:
        yield server


def test_burst_of_5xx_is_retried(proxy: FaultProxy, image: PushedImage) -> None:
    proxy.add(Rule(path="/manifests/", status=503, times=2))
    proxy.add(Rule(path="/blobs/", status=502, times=1))
    with client_for(proxy.host) as client:
        resolution = client.resolve(wish(f"{proxy.host}/t/faults:1"))
        assert client.requests_made == 5  # 3 manifest + 2 config
    assert resolution.problem is None
    assert resolution.images[0].manifest_digest == image.manifest_digest


def test_endless_5xx_is_unavailable_never_not_found(proxy: FaultProxy, image: PushedImage) -> None:
    proxy.add(Rule(path="/manifests/", status=500, times=-1))
    with client_for(proxy.host, retries=2) as client:
        resolution = client.resolve(wish(f"{proxy.host}/t/faults:1"))
        assert client.requests_made == 3
    assert resolution.problem is not None
    assert resolution.problem.code == "unavailable"
    assert "3 attempts" in resolution.problem.message
    assert not resolution.complete


def test_429_honours_retry_after(proxy: FaultProxy, image: PushedImage) -> None:
    proxy.add(Rule(path="/manifests/", status=429, headers={"Retry-After": "1"}, times=1))
    started = time.monotonic()
    with client_for(proxy.host, backoff=0.0) as client:
        resolution = client.resolve(wish(f"{proxy.host}/t/faults:1"))
    assert resolution.problem is None
    assert time.monotonic() - started >= 0.9


def test_429_with_long_retry_after_gives_up_at_once(proxy: FaultProxy, image: PushedImage) -> None:
    proxy.add(Rule(path="/manifests/", status=429, headers={"Retry-After": "3600"}, times=-1))
    with client_for(proxy.host, max_retry_after=5.0) as client:
        started = time.monotonic()
        resolution = client.resolve(wish(f"{proxy.host}/t/faults:1"))
        assert client.requests_made == 1
    assert time.monotonic() - started < 2
    assert resolution.problem is not None and resolution.problem.code == "unavailable"
    assert "3600" in resolution.problem.message


def test_manifest_bytes_not_matching_digest(proxy: FaultProxy, image: PushedImage) -> None:
    altered = image.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion":2')
    assert altered != image.manifest
    proxy.add(Rule(path="/manifests/", body=altered, times=-1))
    with client_for(proxy.host) as client:
        by_tag = client.resolve(wish(f"{proxy.host}/t/faults:1"))  # vs Docker-Content-Digest
        with pytest.raises(IntegrityError, match="not the sha256"):
            client.get_manifest(parse(f"{proxy.host}/t/faults@{image.manifest_digest}"))
    assert by_tag.problem is not None and by_tag.problem.code == "integrity"


def test_schema1_is_unsupported_with_advice(proxy: FaultProxy, image: PushedImage) -> None:
    schema1 = json.dumps(
        {"schemaVersion": 1, "name": "t/faults", "tag": "1", "fsLayers": []}
    ).encode()
    proxy.add(
        Rule(
            path="/manifests/",
            body=schema1,
            content_type="application/vnd.docker.distribution.manifest.v1+prettyjws",
            headers={"Docker-Content-Digest": ""},
            times=-1,
        )
    )
    with client_for(proxy.host) as client:
        resolution = client.resolve(wish(f"{proxy.host}/t/faults:1"))
    assert resolution.problem is not None and resolution.problem.code == "unsupported"
    assert "re-push" in (resolution.problem.hint or "")


def test_truncated_blob_resumes_with_range(
    proxy: FaultProxy, image: PushedImage, tmp_path: Path
) -> None:
    digest, size = image.layer_digests[1], image.layer_sizes[1]
    proxy.add(Rule(path=f"/blobs/{digest}", truncate=1_000_000, times=1))
    dest = tmp_path / "layer.tar"
    seen: list[int] = []
    with client_for(proxy.host) as client:
        client.download_blob(
            parse(f"{proxy.host}/t/faults:1"), digest, size, dest, progress=seen.append
        )
    assert dest.read_bytes() == BIG
    # progress counts up through the resumed transfer and ends at the full size
    assert seen == sorted(seen) and seen[-1] == size and len(seen) > 1
    ranges = [h.get("Range") for h in proxy.requests_to(f"/blobs/{digest}")]
    assert len(ranges) == 2 and ranges[0] is None
    assert ranges[1] is not None
    start = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 1_000_000  # resumed where the transfer broke, not from zero


def test_truncated_blob_restarts_without_range_support(
    proxy: FaultProxy, image: PushedImage, tmp_path: Path
) -> None:
    digest, size = image.layer_digests[1], image.layer_sizes[1]
    proxy.add(Rule(path=f"/blobs/{digest}", truncate=500_000, times=1))
    proxy.add(Rule(path=f"/blobs/{digest}", no_ranges=True, times=1))
    dest = tmp_path / "layer.tar"
    with client_for(proxy.host) as client:
        client.download_blob(parse(f"{proxy.host}/t/faults:1"), digest, size, dest)
    assert dest.read_bytes() == BIG


def test_corrupted_or_oversized_blob_is_refused_and_removed(
    proxy: FaultProxy, image: PushedImage, tmp_path: Path
) -> None:
    digest, size = image.layer_digests[1], image.layer_sizes[1]
    proxy.add(Rule(path=f"/blobs/{digest}", corrupt=True, times=-1))
    dest = tmp_path / "layer.tar"
    ref = parse(f"{proxy.host}/t/faults:1")
    with client_for(proxy.host) as client:
        with pytest.raises(IntegrityError, match="hash to"):
            client.download_blob(ref, digest, size, dest)
        assert not dest.exists()
        with pytest.raises(IntegrityError, match="more than"):
            client.download_blob(ref, digest, size - 10, dest)
        assert not dest.exists()
        with pytest.raises(NotFound):
            client.download_blob(ref, "sha256:" + "0" * 64, 1, dest)
        assert not dest.exists()


def test_endless_broken_transfers_are_unavailable(
    proxy: FaultProxy, image: PushedImage, tmp_path: Path
) -> None:
    digest, size = image.layer_digests[1], image.layer_sizes[1]
    proxy.add(Rule(path=f"/blobs/{digest}", truncate=0, no_ranges=True, times=-1))
    dest = tmp_path / "layer.tar"
    with client_for(proxy.host, retries=2) as client, pytest.raises(Unavailable):
        client.download_blob(parse(f"{proxy.host}/t/faults:1"), digest, size, dest)
    assert not dest.exists()


def test_mirror_is_tried_first_and_falls_back(registry: LocalRegistry, image: PushedImage) -> None:
    ref = f"{registry.host}/t/faults:1"
    with FaultProxy(registry.url) as mirror:
        with client_for(registry.host, mirrors={registry.host: mirror.url}) as client:
            (resolved,) = client.resolve(wish(ref)).images
        assert len(mirror.requests_to("/manifests/")) == 1
        assert resolved.manifest_digest == image.manifest_digest
        mirror.add(Rule(path="/", status=503, times=-1))
        with client_for(registry.host, mirrors={registry.host: mirror.url}, retries=0) as client:
            resolution = client.resolve(wish(ref))
        assert resolution.problem is None
        assert len(mirror.requests_to("/manifests/")) == 2


def test_zstd_and_gzip_blobs_download_as_bytes(registry: LocalRegistry, tmp_path: Path) -> None:
    for compression in ("gzip", "zstd"):
        pushed = push_image(
            registry.url, f"t/blob-{compression}", "1", [BIG], compression=compression
        )
        dest = tmp_path / f"layer.{compression}"
        with client_for(registry.host) as client:
            client.download_blob(
                parse(f"{registry.host}/t/blob-{compression}:1"),
                pushed.layer_digests[0],
                pushed.layer_sizes[0],
                dest,
            )
        assert dest.read_bytes() == compress(BIG, compression)


def test_concurrency_per_registry_is_limited(proxy: FaultProxy, image: PushedImage) -> None:
    proxy.add(Rule(path="/manifests/", delay=0.05, times=-1))
    wishes = [wish(f"{proxy.host}/t/faults:1", line=i) for i in range(12)]
    with client_for(proxy.host, workers=12, concurrency=2) as client:
        resolutions = client.resolve_all(wishes)
    assert all(r.problem is None for r in resolutions)
    assert proxy.max_in_flight == 2
