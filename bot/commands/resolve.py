"""``wishbot resolve REF... [--platform P] [--format text|json]``.

Prints, per reference (wildcards expanded), the manifest digest, the image
id, the platform and the layers with media type and size. Exit status 1 when
any reference could not be resolved.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bot.config import Config
from bot.core.model import DEFAULT_PLATFORM, Platform, Resolution
from bot.core.reference import ReferenceError, parse
from bot.errors import UsageError
from bot.registry.client import RegistryClient, cli_wish


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "resolve",
        help="show what image references resolve to in their registries",
        description="Resolve image references (wildcard tags expanded) against their registries.",
    )
    parser.add_argument("references", nargs="+", metavar="REF", help="image reference")
    parser.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="OS/ARCH[/VARIANT]",
        help="platform to resolve (repeatable; default: WISHBOT_PLATFORMS, else linux/amd64)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def _platforms(texts: list[str], config: Config) -> tuple[Platform, ...]:
    try:
        if texts:
            return tuple(Platform.parse(t) for t in texts)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        return tuple(Platform.parse(t) for t in config.platforms) or (DEFAULT_PLATFORM,)
    except ValueError as exc:
        raise UsageError(f"WISHBOT_PLATFORMS: {exc}") from None


def _to_json(resolution: Resolution) -> dict[str, Any]:
    return {
        "reference": resolution.wish.text,
        "problem": resolution.problem.to_json() if resolution.problem else None,
        "images": [
            {
                "reference": str(image.reference),
                "platform": str(image.platform),
                "manifest_digest": image.manifest_digest,
                "image_id": image.image_id,
                "compressed_size": image.compressed_size,
                "layers": [
                    {
                        "digest": layer.digest,
                        "diff_id": layer.diff_id,
                        "media_type": layer.media_type,
                        "size": layer.size,
                    }
                    for layer in image.layers
                ],
            }
            for image in resolution.images
        ],
    }


def _print_text(resolution: Resolution) -> None:
    if resolution.problem is not None:
        problem = resolution.problem
        hint = f" ({problem.hint})" if problem.hint else ""
        print(f"{resolution.wish.text}: error [{problem.code}]: {problem.message}{hint}")
        return
    for image in resolution.images:
        print(f"{image.reference} ({image.platform})")
        print(f"  manifest: {image.manifest_digest}")
        print(f"  image id: {image.image_id}")
        print(f"  layers:   {len(image.layers)}, {image.compressed_size} bytes compressed")
        for layer in image.layers:
            print(f"    {layer.digest}  {layer.size:>12}  {layer.media_type}")


def run(args: argparse.Namespace) -> int:
    config = Config.load()
    platforms = _platforms(args.platform, config)
    wishes = []
    for text in args.references:
        try:
            wishes.append(cli_wish(parse(text), platforms))
        except ReferenceError as exc:
            raise UsageError(f"'{text}' is not an image reference: {exc}") from None
    with RegistryClient(config) as client:
        resolutions = client.resolve_all(wishes)
    if args.format == "json":
        json.dump([_to_json(r) for r in resolutions], sys.stdout, indent=2)
        print()
    else:
        for resolution in resolutions:
            _print_text(resolution)
    return 1 if any(r.problem for r in resolutions) else 0
