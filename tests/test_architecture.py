"""The architecture, enforced: one direction of imports.

entry points (commands, runtime) -> adapters (registry, publisher, forge,
sandbox) -> core. The core imports nothing but itself, the error hierarchy
and the standard library/third-party parsers; adapters never import entry
points; no adapter imports another adapter except where listed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parent.parent / "bot"

#: package -> the bot packages it may import (besides itself)
ALLOWED = {
    "core": {"errors"},
    "registry": {"core", "errors", "config"},
    "publisher": {"core", "errors", "config", "registry"},
    "forge": {"core", "errors", "config"},
    "sandbox": {"core", "errors", "config", "registry"},
    "runtime": {"core", "errors", "config", "registry", "publisher", "forge"},
    "commands": {
        "core",
        "errors",
        "config",
        "registry",
        "publisher",
        "forge",
        "runtime",
        "sandbox",
        "commands",
        "__init__",
    },
    "config": {"errors"},
    "errors": set(),
}


def _bot_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "bot" and len(parts) > 1:
                found.add(parts[1])
            elif parts == ["bot"]:
                found.add("__init__")
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(BOT.rglob("*.py")):
        rel = path.relative_to(BOT)
        package = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem
        if package in ALLOWED:
            out.append((package, path))
    return out


@pytest.mark.parametrize(("package", "path"), _modules(), ids=lambda v: str(v))
def test_imports_go_one_way(package: str, path: Path) -> None:
    imported = _bot_imports(path) - {package}
    forbidden = imported - ALLOWED[package]
    assert not forbidden, f"{path.relative_to(BOT.parent)} imports bot.{sorted(forbidden)}"


def test_every_package_is_covered() -> None:
    packages = {p.name for p in BOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(ALLOWED), f"unlisted packages: {packages - set(ALLOWED)}"
