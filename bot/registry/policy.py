"""Which registries we may talk to, and how: scheme, API host, address policy.

- Docker Hub's names (``docker.io``, ``index.docker.io``,
  ``registry.hub.docker.com``) all mean the API host ``registry-1.docker.io``.
- Plain ``http://`` only for registries listed in ``insecure_registries``
  (and those are always spoken to over HTTP).
- A registry whose name resolves to a loopback, private, link-local or
  otherwise non-public address is refused unless it is listed in
  ``insecure_registries`` or ``private_registries``: wishlists are untrusted
  and must not make the bot probe the internal network.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from bot.config import Config
from bot.core.reference import DOCKER_HUB_ALIASES, ImageReference
from bot.errors import RegistryRefused

DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class Endpoint:
    """Where a registry's API lives: ``scheme://host[:port]``."""

    registry: str  # the name as in references (normalized)
    base_url: str  # e.g. https://registry-1.docker.io, no trailing slash

    @property
    def netloc(self) -> str:
        return urllib.parse.urlsplit(self.base_url).netloc


def _hostname(host_port: str) -> str:
    parsed = urllib.parse.urlsplit(f"//{host_port}")
    return parsed.hostname or host_port


def _listed(host_port: str, names: Iterable[str]) -> bool:
    wanted = host_port.lower()
    hostname = _hostname(wanted)
    for name in names:
        name = name.strip().lower()
        if name in (wanted, hostname):
            return True
    return False


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class Policy:
    """Decides endpoints and refuses forbidden registries (address lookups cached)."""

    def __init__(self, config: Config):
        self.config = config
        self._checked: dict[str, bool] = {}
        self._lock = threading.Lock()

    def insecure(self, registry: str) -> bool:
        return _listed(registry, self.config.insecure_registries)

    def allowed_private(self, registry: str) -> bool:
        return self.insecure(registry) or _listed(registry, self.config.private_registries)

    def endpoint(self, reference: ImageReference) -> Endpoint:
        registry = reference.registry.lower()
        if registry in DOCKER_HUB_ALIASES:
            return Endpoint(registry, f"https://{DOCKER_HUB_API}")
        insecure = self.insecure(registry)
        if reference.scheme == "http" and not insecure:
            raise RegistryRefused(
                f"{reference}: plain http:// is not allowed for registry {registry}",
                hint=f"use https://, or add {registry} to WISHBOT_INSECURE_REGISTRIES",
            )
        scheme = "http" if insecure else "https"
        self.check_address(registry)
        return Endpoint(registry, f"{scheme}://{registry}")

    def check_address(self, host_port: str, *, also_allowed: Iterable[str] = ()) -> None:
        """Refuse ``host_port`` if it resolves to a non-public address and is not allowed."""
        key = host_port.lower()
        if self.allowed_private(key) or _listed(key, also_allowed):
            return
        with self._lock:
            cached = self._checked.get(key)
        if cached is None:
            cached = self._resolves_public(key)
            with self._lock:
                self._checked[key] = cached
        if not cached:
            raise RegistryRefused(
                f"registry {host_port} resolves to a loopback, private or link-local address",
                hint=(
                    f"if this registry is meant to be used, add {host_port} to "
                    "WISHBOT_PRIVATE_REGISTRIES (HTTPS) or WISHBOT_INSECURE_REGISTRIES (HTTP)"
                ),
            )

    @staticmethod
    def _resolves_public(host_port: str) -> bool:
        hostname = _hostname(host_port)
        try:
            ipaddress.ip_address(hostname.strip("[]"))
            addresses = [hostname.strip("[]")]
        except ValueError:
            try:
                infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
            except (OSError, UnicodeError):
                # unknown names fail later with a clear "cannot connect" (Unavailable)
                return True
            addresses = [str(info[4][0]) for info in infos]
        return bool(addresses) and all(_is_public(a) for a in addresses)
