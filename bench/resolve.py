"""Benchmark: resolve N tags of a local registry with wishbot and with skopeo.

    .venv/bin/python bench/resolve.py [--tags 500] [--skopeo-tags N] [--rtt 0.05 --rtt-tags 300]

Pushes N distinct small images (one tag each) to a fresh local registry,
then resolves them (manifest + config per tag) with wishbot's client, once
as N separate wishes and once as one wildcard, and with a loop of
``skopeo inspect --tls-verify=false`` (one process per tag). Prints the
times, the request count and the ratio.

Then, through a loopback proxy that delays every answer by ``--rtt`` seconds
(a distant registry), it resolves ``--rtt-tags`` tags three ways: wishbot
cold (empty on-disk cache), wishbot re-checking them after a restart (the
cache kept: one ``HEAD`` a tag), at the default ``concurrency`` (8 requests
per registry at once) and at 16, and the ``skopeo inspect`` loop; and prints
the ratios. Not a test; it takes a few minutes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from bot.config import Config
from bot.core.model import DEFAULT_PLATFORM, Location, Wish
from bot.core.reference import parse
from bot.registry.auth import CredentialStore
from bot.registry.client import RegistryClient
from bot.sandbox.image_builder import Pusher, push_image
from bot.sandbox.layers import build_layer, file
from bot.sandbox.registry_server import LocalRegistry

CONCURRENCY = (8, 16)  # the default setting, and twice it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tags", type=int, default=500)
    parser.add_argument(
        "--skopeo-tags", type=int, default=0, help="tags for skopeo (default: all of them)"
    )
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--rtt", type=float, default=0.05, help="seconds; 0: no distant run")
    parser.add_argument("--rtt-tags", type=int, default=300)
    args = parser.parse_args()
    skopeo_tags = args.skopeo_tags or args.tags
    repository = "bench/many"
    with LocalRegistry() as registry:
        started = time.monotonic()

        def push(i: int) -> None:
            layer = build_layer([file(f"etc/release-{i}", f"build {i}\n")])
            push_image(registry.url, repository, f"1.{i}", [layer], pusher=Pusher(registry.url))

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(push, range(args.tags)))
        print(f"pushed {args.tags} images in {time.monotonic() - started:.1f} s")

        config = Config(
            insecure_registries=(registry.host,), workers=args.workers, max_wildcard_tags=args.tags
        )
        wishes = [
            Wish(
                parse(f"{registry.host}/{repository}:1.{i}"),
                Location("bench", i + 1),
                (DEFAULT_PLATFORM,),
            )
            for i in range(args.tags)
        ]
        with RegistryClient(config, credentials=CredentialStore()) as client:
            started = time.monotonic()
            resolutions = client.resolve_all(wishes)
            wishbot_time = time.monotonic() - started
            failed = [r for r in resolutions if r.problem]
            print(
                f"wishbot, {args.tags} wishes: {wishbot_time:.2f} s, "
                f"{client.requests_made} requests, {len(failed)} failed"
            )
        with RegistryClient(config, credentials=CredentialStore()) as client:
            started = time.monotonic()
            (wildcard,) = client.resolve_all(
                [Wish(parse(f"{registry.host}/{repository}:1.*"), Location("bench", 1))]
            )
            wildcard_time = time.monotonic() - started
            print(
                f"wishbot, one wildcard: {wildcard_time:.2f} s, {len(wildcard.images)} images, "
                f"{client.requests_made} requests"
            )

        if shutil.which("skopeo") is None:
            print("skopeo is not installed; no comparison")
            return 0
        skopeo_time = _skopeo_loop(registry.host, repository, skopeo_tags)
        per_tag_skopeo = skopeo_time / skopeo_tags
        per_tag_wishbot = wishbot_time / args.tags
        print(f"skopeo inspect loop, {skopeo_tags} tags: {skopeo_time:.2f} s")
        print(
            f"per tag: wishbot {per_tag_wishbot * 1000:.2f} ms, skopeo {per_tag_skopeo * 1000:.2f} ms; "
            f"wishbot is {per_tag_skopeo / per_tag_wishbot:.1f}x faster"
        )
        if args.rtt > 0:
            distant(
                registry.url,
                repository,
                min(args.rtt_tags, args.tags),
                args.rtt,
                Config(workers=args.workers),
            )
    return 0


def _skopeo_loop(host: str, repository: str, tags: int) -> float:
    started = time.monotonic()
    for i in range(tags):
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{host}/{repository}:1.{i}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return time.monotonic() - started


def distant(upstream: str, repository: str, tags: int, rtt: float, settings: Config) -> None:
    """wishbot (cold, then re-checking with its cache) against skopeo, every
    answer delayed by ``rtt`` seconds; wishbot at each ``--concurrency``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from fault_proxy import FaultProxy, Rule  # the tests' loopback proxy

    with FaultProxy(upstream) as proxy:
        for method in ("GET", "HEAD"):
            proxy.add(Rule(path="", method=method, times=-1, delay=rtt))
        wishes = [
            Wish(parse(f"{proxy.host}/{repository}:1.{i}"), Location("bench", i + 1))
            for i in range(tags)
        ]
        results: dict[int, list[float]] = {}
        for concurrency in CONCURRENCY:
            with tempfile.TemporaryDirectory() as cache:
                config = replace(
                    settings,
                    insecure_registries=(proxy.host,),
                    registry_cache_dir=cache,
                    concurrency=concurrency,
                    workers=max(settings.workers, concurrency),
                )
                results[concurrency] = [
                    _timed(config, wishes, f"{rtt * 1000:.0f} ms round trip, {run}")
                    for run in ("cold", "re-check after a restart")
                ]
        if shutil.which("skopeo") is None:
            return
        skopeo_time = _skopeo_loop(proxy.host, repository, tags)
        print(
            f"{rtt * 1000:.0f} ms round trip, skopeo inspect loop, {tags} tags: {skopeo_time:.2f} s"
        )
        for concurrency, (cold, again) in results.items():
            print(
                f"concurrency {concurrency}: wishbot is {skopeo_time / cold:.1f}x faster cold, "
                f"{skopeo_time / again:.1f}x faster re-checking"
            )


def _timed(config: Config, wishes: list[Wish], what: str) -> float:
    with RegistryClient(config, credentials=CredentialStore()) as client:
        started = time.monotonic()
        failed = [r for r in client.resolve_all(wishes) if r.problem]
        seconds = time.monotonic() - started
        print(
            f"{what}, wishbot (concurrency {config.concurrency}), {len(wishes)} tags: "
            f"{seconds:.2f} s, {client.requests_made} requests, {len(failed)} failed"
        )
    return seconds


if __name__ == "__main__":
    sys.exit(main())
