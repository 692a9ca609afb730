"""Helpers for registry tests: clients configured for loopback registries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.config import Config
from bot.core.model import Location, Platform, Wish
from bot.core.reference import parse
from bot.registry.auth import Credentials, CredentialStore
from bot.registry.client import RegistryClient


def client_for(
    *hosts: str,
    credentials: dict[str, tuple[str, str]] | None = None,
    **config: Any,
) -> RegistryClient:
    """A client allowed to use ``hosts`` over HTTP, with fast retries and no
    credentials except the ones given (never the user's ~/.docker)."""
    settings: dict[str, Any] = {
        "insecure_registries": hosts,
        "backoff": 0.01,
        "retries": 3,
        "timeout": 10.0,
    }
    settings.update(config)
    store = CredentialStore(
        {
            host: Credentials(user, password)
            for host, (user, password) in (credentials or {}).items()
        }
    )
    return RegistryClient(Config(**settings), credentials=store)


def wish(text: str, platforms: Sequence[str] = ("linux/amd64",), line: int = 3) -> Wish:
    return Wish(
        reference=parse(text),
        location=Location("wishlist.yaml", line, 5),
        platforms=tuple(Platform.parse(p) for p in platforms),
        text=text,
    )
