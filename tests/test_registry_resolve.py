"""Resolving wishes against a real registry: manifests, indexes, platforms, configs."""

from __future__ import annotations

import json

import pytest
from registry_util import client_for, wish

from bot.core.model import Platform
from bot.core.reference import parse
from bot.errors import NotFound
from bot.registry import check_wishes
from bot.sandbox.image_builder import push_image, push_index
from bot.sandbox.layers import build_layer, file, symlink
from bot.sandbox.registry_server import LocalRegistry

BASE = build_layer([file("etc/os-release", "ID=test\n"), symlink("bin", "usr/bin")])
TOP = build_layer([file("app/run.sh", "#!/bin/sh\necho hi\n", mode=0o755)])


@pytest.mark.parametrize("media", ["docker", "oci"])
@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_single_image_resolves_with_config(
    registry: LocalRegistry, unique_repo: str, media: str, compression: str
) -> None:
    pushed = push_image(
        registry.url,
        unique_repo,
        "1.0",
        [BASE, TOP],
        media=media,  # type: ignore[arg-type]
        compression=compression,  # type: ignore[arg-type]
        env=["PATH=/usr/bin", "A=b"],
        entrypoint=["/app/run.sh"],
        cmd=["--verbose"],
        working_dir="/app",
        user="1000:1000",
        labels={"org.opencontainers.image.title": "t"},
    )
    with client_for(registry.host) as client:
        resolution = client.resolve(wish(f"{registry.host}/{unique_repo}:1.0"))
    assert resolution.problem is None
    (image,) = resolution.images
    assert image.manifest_digest == pushed.manifest_digest
    assert image.image_id == pushed.config_digest
    assert str(image.reference) == f"{registry.host}/{unique_repo}:1.0"
    assert image.platform == Platform("linux", "amd64")
    assert not image.multiarch
    assert [layer.digest for layer in image.layers] == list(pushed.layer_digests)
    assert [layer.size for layer in image.layers] == list(pushed.layer_sizes)
    assert [layer.media_type for layer in image.layers] == list(pushed.layer_media_types)
    assert [layer.diff_id for layer in image.layers] == list(pushed.diff_ids)
    assert image.config.env == ("PATH=/usr/bin", "A=b")
    assert image.config.entrypoint == ("/app/run.sh",)
    assert image.config.cmd == ("--verbose",)
    assert image.config.working_dir == "/app"
    assert image.config.user == "1000:1000"
    assert image.config.labels == {"org.opencontainers.image.title": "t"}


def test_oci_manifest_without_media_type_uses_content_type(
    registry: LocalRegistry, unique_repo: str
) -> None:
    pushed = push_image(
        registry.url, unique_repo, "umoci", [BASE], media="oci", omit_media_type=True
    )
    assert "mediaType" not in json.loads(pushed.manifest)
    with client_for(registry.host) as client:
        manifest = client.get_manifest(parse(f"{registry.host}/{unique_repo}:umoci"))
        (image,) = client.resolve(wish(f"{registry.host}/{unique_repo}:umoci")).images
    assert manifest.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert image.image_id == pushed.config_digest


@pytest.mark.parametrize("media", ["docker", "oci"])
def test_index_selects_platforms_and_skips_attestation(
    registry: LocalRegistry, unique_repo: str, media: str
) -> None:
    index = push_index(
        registry.url,
        unique_repo,
        "multi",
        {
            "linux/amd64": [BASE],
            "linux/arm64/v8": [BASE, TOP],
            "linux/arm/v7": [TOP],
            "linux/ppc64le": [TOP, BASE],
        },
        media=media,  # type: ignore[arg-type]
        attestation=True,
    )
    ref = f"{registry.host}/{unique_repo}:multi"
    with client_for(registry.host) as client:
        resolution = client.resolve(wish(ref, ["linux/arm64", "linux/amd64", "linux/arm"]))
    assert resolution.problem is None
    by_platform = {str(i.platform): i for i in resolution.images}
    assert list(by_platform) == ["linux/arm64", "linux/amd64", "linux/arm"]
    assert all(i.multiarch for i in resolution.images)
    for wanted, offered in [
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/amd64", "linux/amd64"),
        ("linux/arm", "linux/arm/v7"),
    ]:
        pushed = index.image_for(offered)
        assert by_platform[wanted].manifest_digest == pushed.manifest_digest
        assert by_platform[wanted].image_id == pushed.config_digest
    assert index.attestation_digest not in {i.manifest_digest for i in resolution.images}


def test_missing_platform_is_a_not_found_problem(registry: LocalRegistry, unique_repo: str) -> None:
    push_index(registry.url, unique_repo, "1", {"linux/amd64": [BASE]}, attestation=True)
    push_image(registry.url, unique_repo, "single", [BASE])
    with client_for(registry.host) as client:
        listed = client.resolve(wish(f"{registry.host}/{unique_repo}:1", ["linux/s390x"]))
        single = client.resolve(wish(f"{registry.host}/{unique_repo}:single", ["linux/arm64"]))
    assert listed.problem is not None and listed.problem.code == "not-found"
    assert "linux/s390x" in listed.problem.message and "linux/amd64" in listed.problem.message
    assert "unknown" not in listed.problem.message  # the attestation is not a platform
    assert listed.problem.location.line == 3
    assert not listed.complete
    assert single.problem is not None and "linux/arm64" in single.problem.message


def test_digest_pinned_reference(registry: LocalRegistry, unique_repo: str) -> None:
    first = push_image(registry.url, unique_repo, "moving", [BASE])
    push_image(registry.url, unique_repo, "moving", [TOP])
    with client_for(registry.host) as client:
        pinned = client.resolve(wish(f"{registry.host}/{unique_repo}@{first.manifest_digest}"))
        both = client.resolve(wish(f"{registry.host}/{unique_repo}:moving@{first.manifest_digest}"))
        latest = client.resolve(wish(f"{registry.host}/{unique_repo}:moving"))
    assert pinned.images[0].manifest_digest == first.manifest_digest
    assert both.images[0].manifest_digest == first.manifest_digest
    assert latest.images[0].manifest_digest != first.manifest_digest


def test_missing_image_and_repository(registry: LocalRegistry, unique_repo: str) -> None:
    push_image(registry.url, unique_repo, "1", [BASE])
    with client_for(registry.host) as client:
        no_tag = client.resolve(wish(f"{registry.host}/{unique_repo}:2"))
        no_repo = client.resolve(wish(f"{registry.host}/{unique_repo}-absent:1"))
        with pytest.raises(NotFound):
            client.get_manifest(parse(f"{registry.host}/{unique_repo}:2"))
    for resolution in (no_tag, no_repo):
        assert resolution.problem is not None
        assert resolution.problem.code == "not-found"
        assert resolution.problem.hint
        assert resolution.problem.image == resolution.wish.text


def test_resolve_all_keeps_input_order_and_check_wishes(
    registry: LocalRegistry, unique_repo: str
) -> None:
    tags = [f"v{i}" for i in range(12)]
    pushed = {
        tag: push_image(registry.url, unique_repo, tag, [build_layer([file("t", tag)])])
        for tag in tags
    }
    wishes = [
        wish(f"{registry.host}/{unique_repo}:{tag}", line=i + 1) for i, tag in enumerate(tags)
    ]
    wishes.insert(5, wish(f"{registry.host}/{unique_repo}:absent", line=99))
    with client_for(registry.host, workers=6) as client:
        resolutions, problems = check_wishes(client, wishes)
        assert client.requests_made >= 2 * len(tags)
    assert [r.wish for r in resolutions] == wishes
    assert [p.location.line for p in problems] == [99]
    for resolution in resolutions:
        if resolution.problem is None:
            tag = resolution.wish.reference.tag
            assert tag is not None
            assert resolution.images[0].manifest_digest == pushed[tag].manifest_digest


def test_config_blobs_are_cached_across_tags(registry: LocalRegistry, unique_repo: str) -> None:
    pushed = push_image(registry.url, unique_repo, "a", [BASE])
    push_image(registry.url, unique_repo, "b", [BASE])
    with client_for(registry.host) as client:
        client.resolve(wish(f"{registry.host}/{unique_repo}:a"))
        before = client.requests_made
        (image,) = client.resolve(wish(f"{registry.host}/{unique_repo}:b")).images
        assert client.requests_made - before == 1  # the manifest only
    assert image.image_id == pushed.config_digest
