"""The architecture, enforced: one direction of imports, and no import cycles.

entry points (commands, runtime) -> adapters (registry, publisher, forge,
sandbox) -> core. The core imports nothing but itself, the error hierarchy
and the standard library/third-party parsers; adapters never import entry
points; no adapter imports another adapter except where listed.

Inside a package too, modules import each other one way: the module import
graph of ``bot/**.py`` (every import, at module level or inside a function,
``TYPE_CHECKING`` ones included) has no cycle.

The runtimes (``serve``, ``ci``, ``watch``) hand every action to the one
dispatcher (``bot.runtime.dispatch``), and forge kinds are looked up in one
registry (``bot.forge.kinds``).
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


# --- no import cycles, inside a package too -------------------------------------

#: cycles known when the check was added, each to be broken by the work named
#: (the publisher's was: its factory now lives outside the interface module)
KNOWN_CYCLES: list[frozenset[str]] = []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(BOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(module: str, path: Path, modules: set[str]) -> set[str]:
    """The bot modules ``module`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    found.add(submodule)
                elif base in modules:
                    found.add(base)
    return found - {module}


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in BOT.rglob("*.py")}
    modules = set(paths)
    return {name: _imported_modules(name, path, modules) for name, path in paths.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(frozenset(component))
    return cycles


def test_cycle_finder_sees_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"} - {"e"}}
    assert import_cycles(graph) == [frozenset({"a", "b", "c"})]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_reads_submodule_imports() -> None:
    graph = import_graph()
    assert (
        "bot.core.mediatypes" in graph["bot.registry.manifest"]
    )  # from bot.core import mediatypes
    assert "bot.core.plan" in graph["bot.core.render"]


def test_no_import_cycles() -> None:
    new = [
        sorted(cycle)
        for cycle in import_cycles(import_graph())
        if not any(cycle <= known for known in KNOWN_CYCLES)
    ]
    assert not new, f"modules that import each other (break the cycle): {new}"


# --- one dispatcher, one forge-kind registry --------------------------------------

#: the runtimes build actions and hand them to bot.runtime.dispatch; none runs a step itself
RUNTIMES = ["runtime/server.py", "runtime/watcher.py", "runtime/ci.py", "commands/ci.py"]
WORKFLOW_STEPS = {"on_merge_request", "on_push", "on_schedule", "run_refresh"}


def _names_imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtimes_hand_their_work_to_the_one_dispatcher(runtime: str) -> None:
    path = BOT / runtime
    steps = _names_imported(path) & WORKFLOW_STEPS
    assert not steps, f"{runtime} runs {sorted(steps)} itself; build an action and dispatch it"
    assert "bot.runtime.dispatch" in import_graph()[_module_name(path)] or runtime.endswith(
        "runtime/ci.py"
    )


def test_forge_kinds_are_looked_up_in_one_registry() -> None:
    """Each forge kind's module (``bot/forge/*_events.py``) is imported by the
    registry (``bot.forge.kinds``) only: the rest of the bot asks the registry."""
    kind_modules = {
        _module_name(p) for p in (BOT / "forge").glob("*_events.py") if p.stem != "events_model"
    }
    assert {"bot.forge.gitlab_events", "bot.forge.github_events"} <= kind_modules
    importers = {
        module
        for module, imported in import_graph().items()
        if imported & kind_modules and module not in kind_modules
    }
    assert importers == {"bot.forge.kinds"}


def test_functions_stay_small() -> None:
    """Complexity 10 is the norm, 15 the ceiling (radon, see tests/complexity.py):
    no function above 15, and at most 10 above 10 in the whole of ``bot``."""
    from complexity import functions_over

    assert functions_over(15) == []
    over = functions_over(10)
    assert len(over) <= 10, "\n".join(f"{c:4d} {where} {name}" for c, where, name in over)
