"""Benchmark: plan a 5-wish merge request on a 2,000-wish wishlist, against resolving everything.

    .venv/bin/python bench/plan.py [--wishes 2000] [--changed 5] [--scale 2000,20000]

Builds a wishlist of ``--wishes`` images from real names (the OSG wishlist in
/work/shared/data/osg/docker_images.txt and every image of the unpacked.cern.ch
recipe history), all pointing at a local registry started with bot.sandbox.
Pushing is cheap: a handful of distinct images (shared layers and configs),
so each further tag is a single manifest PUT. The publisher's current state
is a catalog.json describing the old wishlist as published.

A merge request then changes ``--changed`` wishes (tag bumps and new images)
and is planned twice through the real code path
(:func:`bot.commands.plan.build_plan`, which is :func:`bot.runtime.plan_change.plan_change`):

* ``plan --base OLD --catalog catalog.json``: wishbot's merge-request view,
  which resolves only the new and changed wishes;
* the naive way (what the OSG synchronisation service does on every change):
  resolve every wish of the new wishlist and plan it all.

It prints registry requests and wall time of both (and their ratio), checks
that the merge-request view sent exactly the requests the changed wishes
alone need, and times the pure planning and rendering (no network, in
memory) for each ``--scale`` size to show it grows linearly. Run by
``make bench``; not a test (a smoke test runs it at a tiny size). Without
the shared data (``--data``) the names are made up from one image.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from bot.commands.plan import build_plan
from bot.config import Config
from bot.core.catalog import catalog_json, state_from_catalog
from bot.core.layout import image_path
from bot.core.mediatypes import DOCKER_LAYER_GZIP
from bot.core.model import (
    DEFAULT_PLATFORM,
    CurrentState,
    Layer,
    Location,
    PublishedImage,
    PublishedLayer,
    Resolution,
    ResolvedImage,
    Wish,
)
from bot.core.plan import Plan, make_plan
from bot.core.recipe import diff_wishlists, load_wishlist
from bot.core.reference import parse
from bot.core.render import render_json, render_markdown, render_text
from bot.registry.auth import CredentialStore
from bot.registry.client import RegistryClient
from bot.sandbox.image_builder import Pusher, image_config, manifest_body, sha256
from bot.sandbox.layers import build_layer, compress, file, with_parents
from bot.sandbox.registry_server import LocalRegistry

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the checkout
CVMFS_REPO = "unpacked.cern.ch"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
VARIANTS = 16  # distinct images in the registry
GZIP_DOCKER = DOCKER_LAYER_GZIP


# --- real names ------------------------------------------------------------


def _split(text: str) -> tuple[str, str] | None:
    """(repository, tag) of one image name, registry dropped; wildcards made concrete."""
    text = text.strip().removeprefix("https://").removeprefix("http://")
    if not text or text.startswith("#") or "@" in text:
        return None
    name, _, tag = text.rpartition(":") if ":" in text.split("/")[-1] else (text, "", "latest")
    parts = name.split("/")
    if len(parts) >= 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # the registry: everything goes to the local one
    if len(parts) == 1:
        parts = ["library", *parts]
    repository = "/".join(parts).lower()
    tag = (tag or "latest").replace("*", "0")
    return repository, tag


def real_names(data: Path = DATA) -> list[tuple[str, str]]:
    """Unique (repository, tag) pairs: the OSG wishlist, then the recipe history's images."""
    lines: list[str] = []
    osg = data / "osg" / "docker_images.txt"
    if osg.is_file():
        lines += osg.read_text(encoding="utf-8").splitlines()
    recipes = data / "unpacked-recipe-history"
    if recipes.is_dir():
        for path in sorted(recipes.glob("*.yaml")):
            for line in path.read_text(encoding="utf-8").splitlines():
                item = line.strip()
                if item.startswith("- "):
                    lines.append(item[2:].strip().strip("'\""))
    seen: dict[tuple[str, str], None] = {}
    for line in lines:
        pair = _split(line)
        if pair is not None:
            seen.setdefault(pair)
    if not seen:
        seen[("library/centos", "centos7")] = None
    return list(seen)


def wish_names(count: int, data: Path = DATA) -> list[tuple[str, str]]:
    """``count`` unique (repository, tag) pairs: the real ones, then more tags of them."""
    base = real_names(data)
    out: list[tuple[str, str]] = []
    for round_ in itertools.count():
        for repository, tag in base:
            if len(out) == count:
                return out
            out.append((repository, tag if round_ == 0 else f"{tag}-r{round_}"))
    raise AssertionError("unreachable")


# --- the registry --------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One distinct image: a shared base layer, its own layer, its config."""

    blobs: tuple[bytes, ...]  # base layer, own layer, config (what a repository needs)
    manifest: bytes
    media_type: str
    manifest_digest: str
    image_id: str
    layers: tuple[Layer, ...]


def make_variants(count: int, salt: str = "") -> list[Variant]:
    base_tar = build_layer(with_parents([file("etc/os-release", "ID=bench\n")]))
    base = compress(base_tar, "gzip")
    out = []
    for i in range(count):
        own_tar = build_layer(with_parents([file("opt/app/version", f"{salt}{i}\n")]))
        own = compress(own_tar, "gzip")
        config = image_config([sha256(base_tar), sha256(own_tar)])
        rows = [(sha256(base), len(base), GZIP_DOCKER), (sha256(own), len(own), GZIP_DOCKER)]
        body, media_type = manifest_body(sha256(config), len(config), rows)
        out.append(
            Variant(
                blobs=(base, own, config),
                manifest=body,
                media_type=media_type,
                manifest_digest=sha256(body),
                image_id=sha256(config),
                layers=(
                    Layer(rows[0][0], rows[0][1], GZIP_DOCKER, sha256(base_tar)),
                    Layer(rows[1][0], rows[1][1], GZIP_DOCKER, sha256(own_tar)),
                ),
            )
        )
    return out


def variant_of(repository: str, variants: Sequence[Variant]) -> Variant:
    index = int(hashlib.sha256(repository.encode()).hexdigest()[:8], 16) % len(variants)
    return variants[index]


def push_all(
    registry: LocalRegistry, tags: dict[str, list[str]], variant: Callable[[str], Variant]
) -> int:
    """Push every repository's blobs once and one manifest per tag; the requests made."""
    pushers: dict[int, Pusher] = {}

    def pusher() -> Pusher:
        import threading

        key = threading.get_ident()
        if key not in pushers:
            pushers[key] = Pusher(registry.url)
        return pushers[key]

    def push(item: tuple[str, list[str]]) -> int:
        repository, repo_tags = item
        image = variant(repository)
        own = pusher()
        for blob in image.blobs:
            own.push_blob(repository, blob)
        for tag in repo_tags:
            own.push_manifest(repository, tag, image.manifest, image.media_type)
        return 3 * len(image.blobs) + len(repo_tags)

    with ThreadPoolExecutor(max_workers=16) as pool:
        return sum(pool.map(push, tags.items()))


# --- wishlists and the current state ------------------------------------------------


def wishlist_text(host: str, names: Sequence[tuple[str, str]]) -> str:
    lines = [
        "version: 1",
        "user: cvmfsunpacker",
        f"cvmfs_repo: '{CVMFS_REPO}'",
        "output_format: 'https://gitlab-registry.cern.ch/unpacked/sync/$(image)'",
        "input:",
        *(f"  - '{host}/{repository}:{tag}'" for repository, tag in names),
    ]
    return "\n".join(lines) + "\n"


def merge_request(
    names: list[tuple[str, str]], changed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The new wishlist's names and the ``changed`` entries it brings (tag bumps, new images)."""
    new = list(names)
    brought: list[tuple[str, str]] = []
    step = max(1, len(names) // max(1, changed))
    for k in range(changed):
        if k % 2 == 0:  # a tag bump somewhere in the file
            index = min(len(new) - 1, k * step)
            repository, _tag = new[index]
            new[index] = (repository, f"mr-{k}")
            brought.append(new[index])
        else:  # a new image
            entry = (f"bench/new-image-{k}", "1.0")
            new.append(entry)
            brought.append(entry)
    return new, brought


def published_state(wishes: Sequence[Wish], variant: Callable[[str], Variant]) -> CurrentState:
    """The publisher after the old wishlist was applied (in memory)."""
    images: list[PublishedImage] = []
    layers: dict[str, PublishedLayer] = {}
    for wish in wishes:
        ref = wish.reference.normalized()
        image = variant(ref.repository)
        images.append(
            PublishedImage(
                path=image_path(ref),
                reference=ref,
                platform=DEFAULT_PLATFORM,
                manifest_digest=image.manifest_digest,
                image_id=image.image_id,
                layers=tuple(layer.digest for layer in image.layers),
                updated=NOW - timedelta(days=10),
                unpacked_size=3 * sum(layer.size for layer in image.layers),
            )
        )
        for layer in image.layers:
            old = layers.get(layer.digest)
            users = (old.users if old else frozenset()) | {image.image_id}
            layers[layer.digest] = PublishedLayer(
                layer.digest, layer.diff_id, layer.size, 3 * layer.size, frozenset(users)
            )
    return CurrentState(
        cvmfs_repo=CVMFS_REPO,
        images=tuple(images),
        layers=layers,
        flat_images=frozenset(image.image_id for image in images),
    )


# --- the pure part at scale -----------------------------------------------------


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def synthetic(
    size: int, changed: int
) -> tuple[list[Wish], list[Resolution], list[Resolution], list[Wish], CurrentState]:
    """In-memory inputs for ``size`` images: (new wishes, every resolution, resolutions of
    the changed wishes only, removed wishes, current state)."""
    old_wishes: list[Wish] = []
    resolved: list[ResolvedImage] = []
    for i in range(size):
        text = f"registry.example.org/group{i // 50}/app{i}:1.{i % 7}"
        wish = Wish(parse(text), Location("wishlist.yaml", i + 6, 5), (DEFAULT_PLATFORM,), text)
        old_wishes.append(wish)
        layers = (
            Layer(_digest(f"base{i % 10}"), 30_000_000, GZIP_DOCKER),
            Layer(_digest(f"mid{i % 100}"), 5_000_000, GZIP_DOCKER),
            Layer(_digest(f"top{i}"), 1_000_000, GZIP_DOCKER),
        )
        resolved.append(
            ResolvedImage(
                wish=wish,
                reference=wish.reference.normalized(),
                platform=DEFAULT_PLATFORM,
                manifest_digest=_digest(f"manifest{i}"),
                image_id=_digest(f"config{i}"),
                layers=layers,
            )
        )
    current = published_state_from(resolved)
    step = max(1, size // max(1, changed))
    new_wishes = list(old_wishes)
    every = [Resolution(w, (r,)) for w, r in zip(old_wishes, resolved, strict=True)]
    changed_only: list[Resolution] = []
    removed: list[Wish] = []
    for k in range(min(changed, size)):
        index = k * step
        old = old_wishes[index]
        text = f"{old.reference.normalized().with_tag(f'mr-{k}')}"
        wish = Wish(parse(text), old.location, (DEFAULT_PLATFORM,), text)
        image = ResolvedImage(
            wish=wish,
            reference=wish.reference.normalized(),
            platform=DEFAULT_PLATFORM,
            manifest_digest=_digest(f"manifest-mr{k}"),
            image_id=_digest(f"config-mr{k}"),
            layers=(resolved[index].layers[0], Layer(_digest(f"mr{k}"), 2_000_000, GZIP_DOCKER)),
        )
        new_wishes[index] = wish
        every[index] = Resolution(wish, (image,))
        changed_only.append(Resolution(wish, (image,)))
        removed.append(old)
    return new_wishes, every, changed_only, removed, current


def published_state_from(images: Sequence[ResolvedImage]) -> CurrentState:
    published: list[PublishedImage] = []
    layers: dict[str, PublishedLayer] = {}
    users: dict[str, set[str]] = {}
    for image in images:
        published.append(
            PublishedImage(
                path=image_path(image.reference),
                reference=image.reference,
                platform=image.platform,
                manifest_digest=image.manifest_digest,
                image_id=image.image_id,
                layers=tuple(layer.digest for layer in image.layers),
                updated=NOW - timedelta(days=10),
            )
        )
        for layer in image.layers:
            users.setdefault(layer.digest, set()).add(image.image_id)
            layers.setdefault(
                layer.digest, PublishedLayer(layer.digest, None, layer.size, 3 * layer.size)
            )
    layers = {
        d: PublishedLayer(d, None, v.compressed_size, v.unpacked_size, frozenset(users[d]))
        for d, v in layers.items()
    }
    return CurrentState(
        cvmfs_repo=CVMFS_REPO,
        images=tuple(published),
        layers=layers,
        flat_images=frozenset(image.image_id for image in images),
    )


@dataclass(frozen=True)
class ScaleRow:
    images: int
    view: str
    catalog_s: float  # reading the current state from catalog.json
    plan_s: float
    render_s: float
    rows: int

    @property
    def per_image_us(self) -> float:
        return (self.catalog_s + self.plan_s + self.render_s) / self.images * 1e6


def _timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def _render(plan: Plan) -> None:
    render_markdown(plan)
    json.dumps(render_json(plan))
    render_text(plan)


def scale_rows(size: int, changed: int) -> list[ScaleRow]:
    wishes, every, changed_only, removed, current = synthetic(size, changed)
    document = json.dumps(catalog_json(current, grace_days=30))
    catalog_s, loaded = _timed(lambda: state_from_catalog(json.loads(document)))
    assert isinstance(loaded, CurrentState) and len(loaded.images) == size
    out = []
    views: list[tuple[str, list[Resolution], list[Wish] | None]] = [
        ("merge request", changed_only, removed),
        ("full (apply)", every, None),
    ]
    for view, resolutions, gone in views:
        started = time.perf_counter()
        plan = make_plan(wishes, resolutions, loaded, NOW, cvmfs_repo=CVMFS_REPO, removed=gone)
        plan_s = time.perf_counter() - started
        started = time.perf_counter()
        _render(plan)
        render_s = time.perf_counter() - started
        out.append(ScaleRow(size, view, catalog_s, plan_s, render_s, len(plan.images)))
    return out


# --- the run --------------------------------------------------------------------------


@dataclass
class Result:
    wishes: int
    changed: int
    repositories: int = 0
    push_s: float = 0.0
    base_requests: int = 0
    base_s: float = 0.0
    changed_only_requests: int = 0
    naive_requests: int = 0
    naive_s: float = 0.0
    catalog_s: float = 0.0  # reading catalog.json (part of both plans' wall time)
    recheck_requests: int = 0  # re-resolving every wish, unchanged, after a restart (cache)
    recheck_expected: int = 0  # one HEAD per concrete tag, one tag list per wildcard
    recheck_s: float = 0.0
    base_rows: dict[str, int] = field(default_factory=dict)
    naive_rows: dict[str, int] = field(default_factory=dict)
    scale: list[ScaleRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _rows(plan: Plan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for change in plan.images:
        counts[change.action] = counts.get(change.action, 0) + 1
    return dict(sorted(counts.items()))


def run(
    wishes: int, changed: int, scales: Sequence[int], *, data: Path = DATA, out: TextIO
) -> Result:
    result = Result(wishes=wishes, changed=changed)
    names = wish_names(wishes, data)
    new_names, brought = merge_request(names, changed)
    variants = make_variants(VARIANTS)
    fresh = make_variants(changed, salt="mr-")
    brought_set = set(brought)

    def variant(repository: str, tag: str | None = None) -> Variant:
        if tag is not None and (repository, tag) in brought_set:
            return fresh[brought.index((repository, tag))]
        return variant_of(repository, variants)

    with LocalRegistry() as registry, tempfile.TemporaryDirectory() as tmp:
        tags: dict[str, list[str]] = {}
        for repository, tag in names:
            tags.setdefault(repository, []).append(tag)
        result.repositories = len(tags)
        started = time.monotonic()
        push_all(registry, tags, variant)
        pusher = Pusher(registry.url)
        for k, (repository, tag) in enumerate(brought):
            image = fresh[k]
            for blob in image.blobs:
                pusher.push_blob(repository, blob)
            pusher.push_manifest(repository, tag, image.manifest, image.media_type)
        result.push_s = time.monotonic() - started
        print(
            f"pushed {len(names) + len(brought)} tags in {result.repositories} repositories "
            f"({VARIANTS} + {changed} distinct images) in {result.push_s:.1f} s",
            file=out,
        )

        directory = Path(tmp)
        old_path = directory / "old.yaml"
        new_path = directory / "wishlist.yaml"
        old_path.write_text(wishlist_text(registry.host, names))
        new_path.write_text(wishlist_text(registry.host, new_names))
        old, _ = load_wishlist(old_path.read_bytes(), str(old_path))
        new, _ = load_wishlist(new_path.read_bytes(), str(new_path))
        assert old is not None and new is not None
        current = published_state(old.wishes, lambda repository: variant(repository))
        catalog = directory / "catalog.json"
        catalog.write_text(json.dumps(catalog_json(current, grace_days=30)))
        started = time.monotonic()
        state_from_catalog(json.loads(catalog.read_text()))
        result.catalog_s = time.monotonic() - started

        config = Config(insecure_registries=(registry.host,), workers=16, backoff=0.01)

        def plan_with(base: str | None) -> tuple[Plan, int, float]:
            args = argparse.Namespace(
                wishlist=str(new_path),
                base=base,
                catalog=str(catalog),
                publisher=None,
                now=NOW.isoformat(),
            )
            with RegistryClient(config, credentials=CredentialStore()) as client:
                started = time.monotonic()
                plan = build_plan(args, config, client)
                return plan, client.requests_made, time.monotonic() - started

        plan, result.base_requests, result.base_s = plan_with(str(old_path))
        result.base_rows = _rows(plan)
        naive, result.naive_requests, result.naive_s = plan_with(None)
        result.naive_rows = _rows(naive)

        # what the changed wishes alone cost, resolved on their own
        added = diff_wishlists(old, new).added
        with RegistryClient(config, credentials=CredentialStore()) as client:
            client.resolve_all(added)
            result.changed_only_requests = client.requests_made

        recheck(result, config, new.wishes, directory / "registry-cache")

        if len(added) != changed:
            result.problems.append(f"the change has {len(added)} new wishes, not {changed}")
        if result.base_requests != result.changed_only_requests:
            result.problems.append(
                f"plan --base made {result.base_requests} requests; "
                f"the {changed} changed wishes need {result.changed_only_requests}"
            )
        if plan.has_errors or naive.has_errors:
            result.problems.append(
                "a plan has errors: "
                + "; ".join(str(p) for p in (*plan.errors, *naive.errors))[:500]
            )
        if plan.images_added != changed:
            result.problems.append(f"plan --base adds {plan.images_added} images, not {changed}")

    for size in scales:
        result.scale.extend(scale_rows(size, changed))
    report(result, out)
    return result


def recheck(result: Result, config: Config, wishes: Sequence[Wish], cache: Path) -> None:
    """Resolve every wish, then again with a new client on the same on-disk cache
    (a restart): the second pass should cost one ``HEAD`` a tag and nothing else."""
    config = replace(config, registry_cache_dir=str(cache))
    for _ in range(2):
        with RegistryClient(config, credentials=CredentialStore()) as client:
            started = time.monotonic()
            client.resolve_all(wishes)
            result.recheck_requests = client.requests_made
            result.recheck_s = time.monotonic() - started
    wildcards = sum(1 for wish in wishes if wish.reference.is_wildcard)
    result.recheck_expected = len(wishes) + wildcards
    if result.recheck_requests != result.recheck_expected:
        result.problems.append(
            f"re-checking {len(wishes)} unchanged wishes made {result.recheck_requests} "
            f"requests, not one HEAD a tag ({result.recheck_expected})"
        )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.0f}x" if b > 0 else "-"


def report(result: Result, out: TextIO) -> None:
    w = out.write
    w(f"\nmerge request changing {result.changed} of {result.wishes} wishes\n")
    w(f"{'':38}{'requests':>10}{'wall time':>12}  plan rows\n")
    w(
        f"{'wishbot plan --base (merge request)':38}{result.base_requests:>10}"
        f"{result.base_s:>10.2f} s  {result.base_rows}\n"
    )
    w(
        f"{'naive: resolve every wish (OSG-style)':38}{result.naive_requests:>10}"
        f"{result.naive_s:>10.2f} s  {result.naive_rows}\n"
    )
    w(
        f"{'ratio naive / wishbot':38}{_ratio(result.naive_requests, result.base_requests):>10}"
        f"{_ratio(result.naive_s, result.base_s):>12}\n"
    )
    w(
        f"requests the {result.changed} changed wishes need on their own: "
        f"{result.changed_only_requests} "
        f"({'same as' if result.changed_only_requests == result.base_requests else 'NOT'} "
        "plan --base)\n"
    )
    w(
        f"reading catalog.json ({result.wishes} images), part of both wall times: {result.catalog_s:.2f} s\n"
    )
    w(
        f"re-checking all {result.wishes} unchanged wishes after a restart (registry cache): "
        f"{result.recheck_requests} requests (one HEAD a tag: {result.recheck_expected}), "
        f"{result.recheck_s:.2f} s\n"
    )
    if result.scale:
        w("\npure planning + rendering (in memory, no network)\n")
        w(
            f"{'images':>8}  {'view':<14}{'catalog ms':>11}{'plan ms':>10}{'render ms':>11}"
            f"{'rows':>8}{'µs/image':>10}\n"
        )
        for row in result.scale:
            w(
                f"{row.images:>8}  {row.view:<14}{row.catalog_s * 1e3:>11.1f}"
                f"{row.plan_s * 1e3:>10.1f}{row.render_s * 1e3:>11.1f}{row.rows:>8}"
                f"{row.per_image_us:>10.1f}\n"
            )
        small, large = result.scale[0].images, result.scale[-1].images
        if large > small:
            for view in ("merge request", "full (apply)"):
                first = next(r for r in result.scale if r.view == view)
                last = next(r for r in reversed(result.scale) if r.view == view)
                grow = (last.catalog_s + last.plan_s + last.render_s) / max(
                    1e-9, first.catalog_s + first.plan_s + first.render_s
                )
                w(f"{view}: {large / small:.0f}x the images took {grow:.1f}x the time\n")
    for problem in result.problems:
        w(f"PROBLEM: {problem}\n")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--wishes", type=int, default=2000, help="wishes in the wishlist")
    parser.add_argument("--changed", type=int, default=5, help="wishes the merge request changes")
    parser.add_argument(
        "--scale",
        default="2000,20000",
        help="comma-separated image counts for the pure planning timing",
    )
    parser.add_argument("--data", type=Path, default=DATA, help="the shared real data")
    args = parser.parse_args(argv)
    scales = [int(part) for part in args.scale.split(",") if part.strip()]
    result = run(args.wishes, args.changed, scales, data=args.data, out=out or sys.stdout)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
