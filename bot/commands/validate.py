"""``wishbot validate FILE...``: check wishlists (YAML, schema, meaning; registries on request).

Offline by default. With ``--check-registry`` every wish is also resolved in
its registry: an image that does not exist, a wildcard that matches nothing
or a missing platform is an error at the wish's line:col; a registry that
cannot answer right now gives an ``unavailable`` error (never "does not
exist"); ``ignoreErrors`` turns matching registry errors into warnings. With
``--base OLD`` only the wishes that are new or changed relative to OLD are
checked: a broken image elsewhere does not fail someone else's change.

Exit status: 0 when every file is valid (warnings allowed), 1 when any file
is invalid, cannot be read or has an image that failed the registry check,
2 for a wrong command line. :func:`validate_file` is the reusable part;
:func:`render` prints problems as text (``path:line:col: severity:
message``) or JSON (a list of objects).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from bot.core.model import Location, Problem, Wishlist
from bot.core.recipe import load_wishlist
from bot.core.safeyaml import MAX_BYTES
from bot.errors import UsageError

if TYPE_CHECKING:
    from bot.registry.check import RegistryCheck
    from bot.registry.client import RegistryClient


def read_wishlist_file(path: str) -> tuple[bytes | None, Problem | None]:
    """The file's bytes (at most one byte over the size limit), or a problem saying why not."""
    where = Location(path)
    try:
        # a FIFO or device would block or never end: look before opening
        if not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path):
            return None, Problem("error", "not a regular file", where, "unreadable")
        with open(path, "rb") as handle:
            return handle.read(MAX_BYTES + 1), None
    except FileNotFoundError:
        return None, Problem(
            "error", "no such file", where, "not-found", "check the path of the wishlist"
        )
    except IsADirectoryError:
        return None, Problem("error", "is a directory, not a wishlist file", where, "unreadable")
    except PermissionError:
        return None, Problem("error", "permission denied", where, "unreadable")
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        return None, Problem("error", f"cannot read the file: {reason}", where, "unreadable")


def validate_file(path: str) -> tuple[Wishlist | None, list[Problem]]:
    """Read and check one wishlist file; the Wishlist is None when there is an error."""
    data, problem = read_wishlist_file(path)
    if data is None:
        return None, [problem] if problem else []
    return load_wishlist(data, path)


def _reference_converter_problems(path: str) -> list[Problem]:
    from bot.core.ducc_compat import reference_converter_problems

    data, _ = read_wishlist_file(path)
    return reference_converter_problems(data or b"", path)


def render(problems: Sequence[Problem], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        payload: list[dict[str, Any]] = [problem.to_json() for problem in problems]
        json.dump(payload, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return
    for problem in problems:
        out.write(f"{_printable(str(problem))}\n")


def _printable(text: str) -> str:
    """Keep one problem on one line whatever the wishlist contained."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check wishlist files (YAML, schema, image references; registries on request)",
        description=(
            "Check wishlist files offline; with --check-registry also resolve their images "
            "(with --base OLD only the new and changed ones). Exit 0 when all are valid "
            "(warnings allowed), 1 when any is invalid."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="wishlist YAML file")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="output format (default: text, one problem per line)",
    )
    parser.add_argument(
        "--check-registry",
        action="store_true",
        help="also resolve every wish in its registry (network; see WISHBOT_* settings)",
    )
    parser.add_argument(
        "--ducc-compatible",
        action="store_true",
        help=(
            "also refuse what the reference converter (cvmfs ducc) cannot read: per-image "
            "mapping entries (- image: ...; platforms: [...]); top-level platforms are fine"
        ),
    )
    parser.add_argument(
        "--base",
        metavar="OLD",
        help=(
            "with --check-registry: the wishlist before the change; check only the wishes "
            "that are new or changed (one FILE only)"
        ),
    )
    parser.set_defaults(func=run)


def _base_wishlist(path: str) -> Wishlist | None:
    """The base wishlist, or None when it cannot be used (then every wish counts as new)."""
    base, _problems = validate_file(path)
    if base is None:
        print(
            f"wishbot validate: the base {path} is not a valid wishlist: checking every wish",
            file=sys.stderr,
        )
    return base


def check_registry(
    client: RegistryClient, wishlist: Wishlist, base_path: str | None
) -> RegistryCheck:
    """The registry check of one valid wishlist (only changed wishes when a base is given)."""
    from bot.registry.check import check_wishlist

    base = _base_wishlist(base_path) if base_path else None
    return check_wishlist(client, wishlist, base)


@dataclass
class _Tally:
    """What one ``validate`` run counted, for its summary line."""

    files: int
    invalid: int = 0
    wishes: int = 0
    checked: int = 0
    images: int = 0
    unavailable: int = 0


def run(args: argparse.Namespace) -> int:
    _check_options(args)
    tally = _Tally(files=len(args.files))
    problems: list[Problem] = []
    wishlists = _validate_files(args, problems, tally)
    if args.check_registry and wishlists:
        _check_registries(args, wishlists, problems, tally)
    render(problems, args.format, sys.stdout)
    if args.format == "text":
        print(_summary(args, problems, tally), file=sys.stderr)
    return 1 if tally.invalid else 0


def _check_options(args: argparse.Namespace) -> None:
    if args.base and not args.check_registry:
        raise UsageError(
            "--base only makes sense with --check-registry",
            hint="add --check-registry, or drop --base",
        )
    if args.base and len(args.files) != 1:
        raise UsageError(
            f"--base compares one wishlist with its old version, but {len(args.files)} "
            "files were given",
            hint="validate one FILE at a time with --base",
        )


def _validate_files(
    args: argparse.Namespace, problems: list[Problem], tally: _Tally
) -> list[Wishlist]:
    """The valid wishlists among ``args.files``; every file's problems are added."""
    wishlists: list[Wishlist] = []
    for path in args.files:
        wishlist, found = validate_file(path)
        if wishlist is not None and args.ducc_compatible:
            found += _reference_converter_problems(path)
            wishlist = None if any(p.severity == "error" for p in found) else wishlist
        problems.extend(found)
        if wishlist is None:
            tally.invalid += 1
        else:
            tally.wishes += len(wishlist.wishes)
            wishlists.append(wishlist)
    return wishlists


def _check_registries(
    args: argparse.Namespace, wishlists: list[Wishlist], problems: list[Problem], tally: _Tally
) -> None:
    from bot.config import Config
    from bot.registry.client import RegistryClient

    with RegistryClient(Config.load()) as client:
        for wishlist in wishlists:
            result = check_registry(client, wishlist, args.base)
            problems.extend(result.problems)
            tally.checked += len(result.checked)
            tally.images += result.images
            tally.unavailable += len(result.unavailable)
            tally.invalid += bool(result.errors)


def _summary(args: argparse.Namespace, problems: list[Problem], tally: _Tally) -> str:
    errors = sum(problem.severity == "error" for problem in problems)
    warnings = len(problems) - errors
    files = tally.files
    verdict = f"{tally.invalid} of {files} invalid" if tally.invalid else f"{files} valid"
    noun = "file" if files == 1 else "files"
    line = f"wishbot validate: {verdict} {noun}, {errors} error(s), {warnings} warning(s)"
    if not tally.invalid:
        line += f", {tally.wishes} image(s)"
    if args.check_registry:
        line += (
            f"; {tally.checked} wish(es) checked in their registries, {tally.images} image(s) found"
        )
        if tally.unavailable:
            line += f"; could not check {tally.unavailable} right now: re-run later"
    return line
