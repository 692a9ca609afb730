"""``wishbot catalog``: describe what a publisher serves, as CATALOG.md and catalog.json.

``--markdown FILE`` and ``--json FILE`` write those files, ``--output DIR``
writes both into DIR (each only when its content changed, atomically);
``--html FILE`` writes the catalog as one self-contained web page with a
search box (open it from the file or publish it with GitLab/GitHub Pages);
with none of them the chosen ``--format`` goes to standard output. The
output is deterministic: the same publisher gives byte-identical files
(pass ``--generated ISO`` to stamp a time explicitly).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.config import Config
from bot.core.catalog import CATALOG_JSON, CATALOG_MD, catalog_files
from bot.errors import UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "catalog",
        help="write the catalog of a publisher (CATALOG.md, catalog.json, an HTML page)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--publisher", metavar="TARGET", help="local:DIR or cvmfs:REPO (default: the setting)"
    )
    parser.add_argument(
        "--cvmfs-repo",
        metavar="REPO",
        help="the CernVM-FS repository name (default: the cvmfs: name, or the one apply "
        "recorded in the tree)",
    )
    parser.add_argument("--markdown", metavar="FILE", help="write the Markdown catalog to FILE")
    parser.add_argument("--json", metavar="FILE", help="write catalog.json to FILE")
    parser.add_argument(
        "--html", metavar="FILE", help="write the catalog as a searchable web page to FILE"
    )
    parser.add_argument(
        "--output", metavar="DIR", help="write CATALOG.md and catalog.json into DIR"
    )
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    parser.add_argument(
        "--generated", metavar="ISO", help="stamp this generation time into the catalog"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bot.commands.options import parse_time
    from bot.commands.target import publisher_of, require_tree
    from bot.publisher.repoinfo import tree_repository
    from bot.publisher.state import read_state
    from bot.publisher.verify import read_status

    config = Config.load()
    publisher = publisher_of(args.publisher, config)
    require_tree(publisher, hint="check the path; wishbot apply creates the tree on its first run")
    cvmfs_repo = _cvmfs_repo(args.cvmfs_repo, publisher.target, tree_repository(publisher))
    generated = parse_time(args.generated, "--generated") if args.generated else None
    state = read_state(publisher.root, cvmfs_repo)
    files = catalog_files(
        state,
        grace_days=config.grace_days,
        generated=generated,
        verified=read_status(publisher.root),
    )
    targets = _targets(args, files)
    if args.html:
        from bot.core.catalog_html import CATALOG_HTML, catalog_html

        page = catalog_html(state, grace_days=config.grace_days, generated=generated)
        files = {**files, CATALOG_HTML: page.encode()}
        targets[CATALOG_HTML] = Path(args.html)
    if targets:
        for name, path in targets.items():
            _write_if_changed(path, files[name])
        return 0
    name = CATALOG_JSON if args.format == "json" else CATALOG_MD
    sys.stdout.write(files[name].decode())
    return 0


def _cvmfs_repo(given: str | None, target: str, known: str | None) -> str:
    """The CernVM-FS repository's name: ``--cvmfs-repo``, else the one apply recorded."""
    if given and known and given != known:
        raise UsageError(f"--cvmfs-repo {given}, but {target} is {known}")
    cvmfs_repo = given or known
    if not cvmfs_repo:
        raise UsageError(
            f"the repository name of {target} is not known (apply records it when it publishes)",
            hint="pass --cvmfs-repo REPO (e.g. unpacked.cern.ch)",
        )
    return cvmfs_repo


def _targets(args: argparse.Namespace, files: Mapping[str, bytes]) -> dict[str, Path]:
    """Where each catalog file goes (--output DIR, --markdown, --json)."""
    targets: dict[str, Path] = {}
    if args.output:
        targets = {name: Path(args.output) / name for name in files}
    if args.markdown:
        targets[CATALOG_MD] = Path(args.markdown)
    if args.json:
        targets[CATALOG_JSON] = Path(args.json)
    return targets


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write atomically, and not at all when the file already holds ``data``."""
    try:
        unchanged = path.read_bytes() == data
    except FileNotFoundError:
        unchanged = False
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if unchanged:
        print(f"unchanged {path}", file=sys.stderr)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    print(f"wrote {path}", file=sys.stderr)
