"""Cyclomatic complexity of wishbot's functions (radon): how many are above the norm.

    .venv/bin/python tests/complexity.py [--over 10] [--list] [PATH ...]

The norm is 10, never above 15 (see the README). This prints how many
functions and methods are above 10 and above 15, and with ``--list`` which
ones (most complex first). ``tests/test_architecture.py`` holds the tree to
it through ``functions_over``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Function

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "bot"


def functions(paths: list[Path]) -> list[tuple[int, str, str]]:
    """(complexity, file:line, name) of every function and method under ``paths``."""
    out: dict[tuple[str, int], tuple[int, str, str]] = {}
    for root in paths:
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            for block in cc_visit(path.read_text(encoding="utf-8")):
                if isinstance(block, Function):
                    name = f"{block.classname}.{block.name}" if block.classname else block.name
                    key = (str(where), block.lineno)
                    out[key] = (block.complexity, f"{where}:{block.lineno}", name)
    return sorted(out.values(), reverse=True)


def functions_over(limit: int, paths: list[Path] | None = None) -> list[tuple[int, str, str]]:
    return [f for f in functions(paths or [BOT]) if f[0] > limit]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[BOT])
    parser.add_argument("--over", type=int, default=10, help="list functions above this")
    parser.add_argument("--list", action="store_true", help="name the functions")
    args = parser.parse_args(argv)
    found = functions([p.resolve() for p in args.paths])
    for limit in sorted({10, 15, args.over}):
        print(f"above {limit}: {sum(1 for f in found if f[0] > limit)} of {len(found)}")
    if args.list:
        for complexity, where, name in found:
            if complexity > args.over:
                print(f"{complexity:4d}  {where}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
