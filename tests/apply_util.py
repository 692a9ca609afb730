"""Shared by the apply tests: a wishlist on the loopback registry and one ``apply`` run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry_util import client_for

from bot.config import Config
from bot.core.recipe import load_wishlist
from bot.publisher.apply import ApplyReport, Meter
from bot.publisher.converge import converge
from bot.publisher.local import LocalPublisher
from bot.sandbox.registry_server import LocalRegistry

NOW = datetime(2025, 3, 1, tzinfo=UTC)
REPO = "unpacked.example.org"


def write_wishlist(path: Path, registry: LocalRegistry, *inputs: str) -> None:
    """A wishlist asking for ``registry.host/<input>`` for each input."""
    lines = [
        "version: 1",
        "user: tester",
        f"cvmfs_repo: '{REPO}'",
        f"output_format: '{registry.host}/thin/$(image)'",
        "input:",
        *[f"  - '{registry.host}/{text}'" for text in inputs],
    ]
    path.write_text("\n".join(lines) + "\n")


def run_apply(
    registry: LocalRegistry,
    wishlist: Path,
    tree: Path,
    *,
    now: datetime = NOW,
    meter: Meter | None = None,
    **settings: Any,
) -> ApplyReport:
    """One ``apply`` of ``wishlist`` into ``local:tree``; ``settings`` override Config fields."""
    loaded, problems = load_wishlist(wishlist.read_bytes(), str(wishlist))
    assert loaded is not None, problems
    config = Config(**{"insecure_registries": (registry.host,), "backoff": 0.01, **settings})
    with client_for(registry.host) as client:
        _plan, report = converge(
            loaded, LocalPublisher(tree), client, config=config, now=now, meter=meter
        )
    return report
