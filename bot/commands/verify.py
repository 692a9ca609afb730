"""``wishbot verify --publisher TARGET [--deep]``: audit what a publisher serves.

Checks that every public path resolves for every published platform (as a
stock CernVM-FS client expands $(CVMFS_ARCH)), that every flat image has its
Apptainer/Singularity files and no whiteout markers, that image metadata,
layer backlinks (origin.json) and the remove schedule agree with what is
published, and lists orphans. With --deep, every layer is downloaded again
from a registry that serves it, checked against its diffID and compared
file by file with what is published.

Works on trees written by wishbot and by the reference converter (DUCC).
--repair redoes what can be redone safely, one transaction per fix: a flat
image is rebuilt from its layers (its config fetched again), a layer that
differs from its tar (--deep) is unpacked again, backlinks are rewritten from
what is published, stale remove-schedule entries are dropped; then it
verifies again.
Exit status: 0 clean (after repairs), 1 with findings (each names the path and what to do),
2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bot.commands.options import add_publisher_arguments, publisher_target
from bot.config import Config
from bot.errors import UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="audit a published tree against its metadata (and, --deep, its registries)",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_publisher_arguments(parser)
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also download every layer again and compare its files with the published ones",
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="redo what can be redone safely (flat images, layers, backlinks, schedule), "
        "one transaction per fix, then verify again",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bot.publisher import open_publisher
    from bot.publisher.repair import Repairer
    from bot.publisher.unpack import Limits
    from bot.publisher.verify import verify
    from bot.registry.client import RegistryClient

    config = Config.load()
    target = publisher_target(args, config)
    publisher = open_publisher(target)
    if not publisher.root.is_dir():
        raise UsageError(f"{publisher.root} does not exist", hint=f"check --publisher {target}")
    limits = Limits.from_config(config)
    repairs: list[Any] = []
    with RegistryClient(config) as client:

        def download(ref: Any, digest: str, size: int, dest: Path) -> None:
            client.download_blob(ref, digest, size, dest)

        deep = download if args.deep else None
        report = verify(publisher.root, download=deep, limits=limits)
        if args.repair and not report.ok:
            with publisher.lock():
                for line in publisher.recover():
                    print(f"recovery: {line}", file=sys.stderr)
                repairs = Repairer(publisher, client, limits).run(report.findings)
            report = verify(publisher.root, download=deep, limits=limits)
    _show(args, report, repairs)
    return 0 if report.ok else 1


def _show(args: argparse.Namespace, report: Any, repairs: list[Any]) -> None:
    if args.format == "json":
        data = report.to_json()
        if args.repair:
            data["repairs"] = [r.to_json() for r in repairs]
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for repair in repairs:
            print(repair.render())
        print(report.render())
