"""Which registries we may talk to, and how: scheme, API host, address policy.

- Docker Hub's names (``docker.io``, ``index.docker.io``,
  ``registry.hub.docker.com``) all mean the API host ``registry-1.docker.io``.
- Plain ``http://`` only for registries listed in ``insecure_registries``
  (and those are always spoken to over HTTP).
- A registry whose name resolves to a loopback, private, link-local or
  otherwise non-public address is refused unless it is listed in
  ``insecure_registries`` or ``private_registries``: wishlists are untrusted
  and must not make the bot probe the internal network.
- Redirects are followed by the transport one hop at a time, and every hop
  must pass :meth:`Policy.check_redirect`: the same scheme and address
  rules as the registry itself (a hostile registry must not be able to send
  us to ``http://169.254.169.254/`` or to plain HTTP by answering 307).
- Token realms pass :meth:`Policy.check_realm` (the registry's own origin,
  or HTTPS on an allowed host; not another port of a private host), and
  pagination links and credentials stay on the registry's own origin
  (:func:`same_origin`: scheme, host and port).
- Public means every address is globally routable, and so is every IPv4
  address embedded in an IPv6 one (:func:`embedded_ipv4`: mapped,
  compatible, NAT64, 6to4, Teredo).
- Requests to loopback addresses never go through an HTTP proxy from the
  environment (:func:`is_loopback`); all others honour ``HTTPS_PROXY`` etc.

DNS rebinding: :meth:`Policy.check_address` resolves the name once and
caches its verdict; the connection resolves the name again. A name whose
owner answers a public address to the check and a private one to the
connection slips through. Pinning the checked address for the connection
would need a connection class that dials one IP while keeping the name for
SNI, certificate checks and ``Host``; the transport does not do that yet.
What limits the hole: a rebinding name must be chosen by a merge-request
author *and* pass TLS verification (certificates are checked against the
name, so an internal HTTPS service answers with a certificate for another
name and the connection fails before any request is sent: the internal
host sees a TLS handshake, nothing more), and plain HTTP is only spoken to
registries the operator listed. Operators who need more should block the bot's egress
to internal ranges in the firewall, which is the robust control anyway.
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


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use: never public
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible ::a.b.c.d


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: IPv4-mapped ``::ffff:a.b.c.d``,
    IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``, 6to4
    ``2002:aabb:ccdd::``, Teredo ``2001:0::`` (server and client)."""
    out: list[ipaddress.IPv4Address] = []
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):
        out.append(low32)
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)
    return out


def _addresses(text: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address and any IPv4 address embedded in it."""
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        return [ip, *embedded_ipv4(ip)]
    return [ip]


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` (no port) is a loopback address or ``localhost``,
    decided without a DNS lookup."""
    host = hostname.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        addresses = _addresses(host)
    except ValueError:
        return False
    return any(ip.is_loopback for ip in addresses)


def is_public(address: str) -> bool:
    """Whether an IP address (text) is public: globally routable, not
    multicast, and so is every IPv4 address it embeds (NAT64, 6to4, Teredo,
    mapped or compatible forms cannot smuggle a private one)."""
    addresses = _addresses(address)
    ip = addresses[0]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        if ip.ipv4_mapped is not None or ip in _NAT64 or ip.sixtofour is not None:
            addresses = addresses[1:]  # judged by the IPv4 address they carry
    return all(a.is_global and not a.is_multicast for a in addresses)


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL (default ports spelled out), for
    messages and comparisons; a bounded excerpt if it is not a URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        host = parts.hostname or ""
    except ValueError:
        return url.split("?", 1)[0][:100]
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def same_origin(url: str, base: str) -> bool:
    """Whether ``url`` is on exactly ``base``'s scheme, host and port (no
    downgrade, no other port): the only place credentials may go."""
    try:
        a = urllib.parse.urlsplit(url)
        if not a.hostname or a.username is not None or a.password is not None:
            return False
    except ValueError:
        return False
    return origin(url) == origin(base)


def _valid_url(parts: urllib.parse.SplitResult) -> bool:
    try:  # .port raises ValueError when the port is not a number in range
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        return False


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

    def check_address(self, host_port: str) -> None:
        """Refuse ``host_port`` if it resolves to a non-public address and is not allowed."""
        key = host_port.lower()
        if self.allowed_private(key):
            return
        with self._lock:
            cached = self._checked.get(key)
        if cached is None:
            verdict = self._resolves_public(key)
            if verdict is None:
                # not resolvable now: the connection fails with a clear
                # "cannot connect" (Unavailable); no verdict is cached, so a
                # name that resolves later is checked then
                return
            cached = verdict
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

    def check_redirect(self, registry: str, source: str, target: str) -> None:
        """Refuse a redirect from URL ``source`` to URL ``target`` (sent by
        ``registry``) that the scheme or address policy forbids.

        A hop to the server we are already talking to (same scheme and
        ``host:port``) is fine. Any other target must be HTTPS unless listed
        as insecure, must not carry credentials in the URL, and must pass
        :meth:`check_address` (so public object stores and CDNs are fine)."""
        try:
            src = urllib.parse.urlsplit(source)
            dst = urllib.parse.urlsplit(target)
            valid = _valid_url(dst)
        except ValueError:
            valid = False
        if not valid:
            raise RegistryRefused(
                f"registry {registry} redirects to '{_no_query(target)}', "
                "which is not an HTTP(S) URL; not followed",
                hint="the registry is misconfigured or hostile; tell its operators",
            )
        host = dst.netloc.rsplit("@", 1)[-1]
        if dst.username is not None or dst.password is not None:
            raise RegistryRefused(
                f"registry {registry} redirects to {host} with credentials in the URL; "
                "not followed",
                hint="the registry is misconfigured or hostile; tell its operators",
            )
        if dst.scheme == src.scheme and host.lower() == src.netloc.lower():
            return
        try:
            self.check_address(host)
        except RegistryRefused:
            raise RegistryRefused(
                f"registry {registry} redirects to {host}, which resolves to a loopback, "
                "private or link-local address; not followed",
                hint=(
                    f"if {host} is meant to be used, add it to WISHBOT_PRIVATE_REGISTRIES "
                    "(HTTPS) or WISHBOT_INSECURE_REGISTRIES (HTTP)"
                ),
            ) from None
        if dst.scheme == "http" and not self.insecure(host):
            raise RegistryRefused(
                f"registry {registry} redirects to plain http://{host}; not followed",
                hint=(
                    f"registries must redirect to HTTPS; if {host} is meant to be used "
                    "over plain HTTP, add it to WISHBOT_INSECURE_REGISTRIES"
                ),
            )

    def check_realm(self, endpoint: Endpoint, realm: str) -> None:
        """Refuse a token ``realm`` the registry at ``endpoint`` names, unless
        it is on the registry's own scheme, host and port, or an HTTPS URL
        (HTTP only if listed insecure) on a host the address policy allows:
        public, or listed with this very port (``host:port``) or as a bare
        host in ``private_registries`` / ``insecure_registries``. Another
        port of the registry's own private host is *not* allowed by itself."""
        if same_origin(realm, endpoint.base_url):
            return
        shown = _no_query(realm)
        try:
            parts = urllib.parse.urlsplit(realm)
            valid = _valid_url(parts) and parts.username is None and parts.password is None
        except ValueError:
            valid = False
        if not valid:
            raise RegistryRefused(
                f"the registry's token realm '{shown}' is not an HTTP(S) URL",
                hint="the registry is misconfigured or hostile; tell its operators",
            )
        host = parts.netloc
        if parts.scheme == "http" and not (
            self.insecure(host) and endpoint.base_url.startswith("http://")
        ):
            raise RegistryRefused(
                f"the registry sends us to a plain-http token server ({host})",
                hint="tokens and passwords are only sent over HTTPS (or to servers "
                "listed in WISHBOT_INSECURE_REGISTRIES, for HTTP registries)",
            )
        try:
            self.check_address(host)
        except RegistryRefused:
            raise RegistryRefused(
                f"the registry's token server {host} is on a loopback, private or "
                "link-local address that is not allowed",
                hint=(
                    f"if {host} is the registry's genuine token server, add it (with its "
                    "port) to WISHBOT_PRIVATE_REGISTRIES or WISHBOT_INSECURE_REGISTRIES"
                ),
            ) from None

    @staticmethod
    def _resolves_public(host_port: str) -> bool | None:
        """Whether every address of the host is public (None: cannot resolve)."""
        hostname = _hostname(host_port)
        try:
            ipaddress.ip_address(hostname.strip("[]"))
            addresses = [hostname.strip("[]")]
        except ValueError:
            try:
                infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
            except (OSError, UnicodeError):
                return None
            addresses = [str(info[4][0]) for info in infos]
        return bool(addresses) and all(is_public(a) for a in addresses)


def _no_query(url: str) -> str:
    """A URL without query or fragment (which may carry signatures), for messages."""
    return url.split("?", 1)[0].split("#", 1)[0][:200]
