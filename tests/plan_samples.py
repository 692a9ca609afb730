"""Builders of wishes, resolutions and publisher states for plan, render and catalog tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from bot.core.layout import image_path
from bot.core.model import (
    DEFAULT_PLATFORM,
    CurrentState,
    Layer,
    Location,
    Platform,
    Problem,
    PublishedImage,
    PublishedLayer,
    Resolution,
    ResolvedImage,
    ScheduledRemoval,
    Wish,
)
from bot.core.reference import parse

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EARLIER = datetime(2026, 1, 15, 8, 30, tzinfo=UTC)
REPO = "unpacked.example.org"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def wish(text: str, line: int = 1, platforms: Sequence[Platform] = (DEFAULT_PLATFORM,)) -> Wish:
    return Wish(parse(text), Location("wishlist.yaml", line, 5), tuple(platforms), text)


def resolved(
    w: Wish,
    tag: str | None,
    image: str,
    layers: Iterable[str],
    *,
    platform: Platform = DEFAULT_PLATFORM,
    size: int = 10_000_000,
) -> ResolvedImage:
    ref = w.reference.normalized()
    if tag is not None:
        ref = ref.with_tag(tag)
    return ResolvedImage(
        wish=w,
        reference=ref,
        platform=platform,
        manifest_digest=digest(f"manifest:{image}:{platform}"),
        image_id=digest(f"config:{image}"),
        layers=tuple(Layer(digest(f"layer:{name}"), size, GZIP) for name in layers),
        multiarch=len(w.platforms) > 1,
    )


def resolution(w: Wish, *images: ResolvedImage) -> Resolution:
    return Resolution(w, tuple(images))


def failed(w: Wish, code: str = "unavailable") -> Resolution:
    problem = Problem(
        "error",
        f"registry did not answer for {w.reference}",
        w.location,
        code=code,
        hint="try again later",
        image=str(w.reference),
    )
    return Resolution(w, (), problem)


def published(new: ResolvedImage, *, updated: datetime = EARLIER) -> PublishedImage:
    return PublishedImage(
        path=image_path(new.reference),
        reference=new.reference,
        platform=new.platform,
        manifest_digest=new.manifest_digest,
        image_id=new.image_id,
        layers=tuple(layer.digest for layer in new.layers),
        updated=updated,
        thin_image=f"registry.example.org/unpacked/{new.reference.repository}:{new.reference.tag}",
        unpacked_size=3 * new.compressed_size,
    )


def state(
    images: Sequence[PublishedImage],
    schedule: Sequence[ScheduledRemoval] = (),
    sizes: dict[str, int] | None = None,
) -> CurrentState:
    layers: dict[str, PublishedLayer] = {}
    for image in images:
        for layer in image.layers:
            old = layers.get(layer)
            users = (old.users if old else frozenset()) | {image.image_id}
            size = (sizes or {}).get(layer, 10_000_000)
            layers[layer] = PublishedLayer(
                layer, "sha256:" + layer[-64:][::-1], size, 3 * size, frozenset(users)
            )
    return CurrentState(
        cvmfs_repo=REPO,
        images=tuple(images),
        layers=layers,
        schedule=tuple(schedule),
        flat_images=frozenset(image.image_id for image in images),
    )


def realistic_plan_inputs() -> tuple[list[Wish], list[Resolution], CurrentState, list[Problem]]:
    """A plan touching every row kind: add, update, remove, unchanged, error, multi-arch."""
    c7 = wish("https://registry.hub.docker.com/library/centos:centos7", 3)
    ab = wish("https://registry.hub.docker.com/atlas/analysisbase:21.2.1*", 4)
    wn = wish("https://gitlab-p4n.aip.de:5005/compute4punch/container-stacks/wlcg-wn:latest", 5)
    arm = Platform("linux", "arm64", "v8")
    cu = wish(
        "nvcr.io/nvidia/cuda:12.2.0-runtime-ubuntu22.04",
        6,
        platforms=(DEFAULT_PLATFORM, arm),
    )
    gone = wish("quay.io/old/tool:0.9", 7)
    old_c7 = resolved(c7, None, "centos7-2024", ["centos-base"], size=75_000_000)
    new_c7 = resolved(c7, None, "centos7-2026", ["centos-base-2026"], size=76_123_456)
    ab10 = resolved(ab, "21.2.10", "ab10", ["ab-os", "ab-sw10"], size=412_000_000)
    ab11 = resolved(ab, "21.2.11", "ab11", ["ab-os", "ab-sw11"], size=430_500_000)
    cu_amd = resolved(cu, None, "cuda-amd", ["ubuntu-amd", "cuda-amd"], size=1_200_000_000)
    cu_arm = resolved(
        cu, None, "cuda-arm", ["ubuntu-arm", "cuda-arm"], platform=arm, size=1_100_000_000
    )
    old_tool = resolved(gone, None, "tool09", ["tool-base"], size=5_000_000)
    current = state([published(old_c7), published(ab10), published(old_tool)])
    warning = Problem(
        "warning",
        "the tag list of atlas/analysisbase has 812 tags; 2 match '21.2.1*'",
        ab.location,
        code="many-tags",
        hint="pin a tag to resolve faster",
    )
    resolutions = [
        resolution(c7, new_c7),
        resolution(ab, ab10, ab11),
        failed(wn, "unauthorized"),
        resolution(cu, cu_amd, cu_arm),
    ]
    return [c7, ab, wn, cu], resolutions, current, [warning]
