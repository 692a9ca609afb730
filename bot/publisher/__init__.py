"""Publisher backends and the conversion into the CernVM-FS layout.

The interface is :mod:`bot.publisher.backend`; :func:`open_publisher` (here,
outside it, so the interface imports no backend) picks a backend by prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import UsageError

if TYPE_CHECKING:
    from bot.publisher.backend import Publisher


def open_publisher(target: str) -> Publisher:
    """``local:DIR`` or ``cvmfs:REPO`` -> a publisher backend (for a repository
    published through a gateway, :class:`~bot.publisher.gateway.GatewayPublisher`)."""
    kind, sep, rest = target.partition(":")
    if not sep or not rest:
        raise UsageError(
            f"publisher '{target}' is not valid",
            hint="write local:DIR (a plain directory) or cvmfs:REPO (a CernVM-FS repository)",
        )
    if kind == "local":
        from bot.publisher.local import LocalPublisher

        return LocalPublisher(Path(rest))
    if kind == "cvmfs":
        from bot.publisher.cvmfs import CvmfsPublisher

        publisher = CvmfsPublisher(rest)
        if publisher.through_gateway():
            from bot.publisher.gateway import GatewayPublisher

            return GatewayPublisher(rest)
        return publisher
    raise UsageError(
        f"publisher kind '{kind}' is unknown (in '{target}')",
        hint="write local:DIR or cvmfs:REPO",
    )
