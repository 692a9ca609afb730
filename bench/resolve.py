"""Benchmark: resolve N tags of a local registry with wishbot and with skopeo.

    .venv/bin/python bench/resolve.py [--tags 500] [--skopeo-tags N]

Pushes N distinct small images (one tag each) to a fresh local registry,
then resolves them (manifest + config per tag) with wishbot's client, once
as N separate wishes and once as one wildcard, and with a loop of
``skopeo inspect --tls-verify=false`` (one process per tag). Prints the
times, the request count and the ratio. Not a test; it takes a few minutes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from bot.config import Config
from bot.core.model import DEFAULT_PLATFORM, Location, Wish
from bot.core.reference import parse
from bot.registry.auth import CredentialStore
from bot.registry.client import RegistryClient
from bot.sandbox.image_builder import Pusher, push_image
from bot.sandbox.layers import build_layer, file
from bot.sandbox.registry_server import LocalRegistry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tags", type=int, default=500)
    parser.add_argument(
        "--skopeo-tags", type=int, default=0, help="tags for skopeo (default: all of them)"
    )
    parser.add_argument("--workers", type=int, default=16)
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
        started = time.monotonic()
        for i in range(skopeo_tags):
            subprocess.run(
                [
                    "skopeo",
                    "inspect",
                    "--tls-verify=false",
                    f"docker://{registry.host}/{repository}:1.{i}",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        skopeo_time = time.monotonic() - started
        per_tag_skopeo = skopeo_time / skopeo_tags
        per_tag_wishbot = wishbot_time / args.tags
        print(f"skopeo inspect loop, {skopeo_tags} tags: {skopeo_time:.2f} s")
        print(
            f"per tag: wishbot {per_tag_wishbot * 1000:.2f} ms, skopeo {per_tag_skopeo * 1000:.2f} ms; "
            f"wishbot is {per_tag_skopeo / per_tag_wishbot:.1f}x faster"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
