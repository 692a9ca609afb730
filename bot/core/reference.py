"""Image references: ``[scheme://]REGISTRY[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]``.

The grammar follows the OCI distribution specification (repository path
components such as ``c--dev`` are legal), with one wishbot extension: ``*``
may appear in the tag, where it acts as a shell glob over the tag list.

``str()`` gives the normal form and ``parse(str(ref)) == ref`` always holds.
:meth:`ImageReference.normalized` folds Docker Hub's aliases and the implicit
``library/`` so two spellings of one image compare equal.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, replace

DOCKER_HUB = "registry.hub.docker.com"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry.hub.docker.com"})
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_COMPONENT_RE = re.compile(rf"^{_COMPONENT}$")
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY_RE = re.compile(
    rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?$"
)
_TAG_RE = re.compile(r"^[\w*][\w.*-]{0,127}$", re.ASCII)  # ASCII: no Unicode letters in tags
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


class ReferenceError(ValueError):
    """The text is not an image reference; the message says why and what to do."""


@dataclass(frozen=True, order=True)
class ImageReference:
    """One image reference, as parsed. Build it with :func:`parse`."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    scheme: str = "https"

    # --- derived views ----------------------------------------------------
    @property
    def is_wildcard(self) -> bool:
        return self.tag is not None and "*" in self.tag

    @property
    def effective_tag(self) -> str | None:
        """The tag to ask for: the written tag, ``latest`` when there is neither tag nor digest."""
        if self.tag is None and self.digest is None:
            return DEFAULT_TAG
        return self.tag

    @property
    def name(self) -> str:
        """``registry/repository``."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """``:tag``, ``@digest`` or ``:tag@digest`` (the ``$(reference)`` placeholder)."""
        text = ""
        tag = self.effective_tag
        if tag is not None:
            text += f":{tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def image(self) -> str:
        """``repository`` + :attr:`reference` (the ``$(image)`` placeholder)."""
        return self.repository + self.reference

    @property
    def is_docker_hub(self) -> bool:
        return self.registry.lower() in DOCKER_HUB_ALIASES

    def normalized(self) -> ImageReference:
        """Docker Hub aliases folded to one name, implicit ``library/`` and tag made explicit."""
        registry = self.registry.lower()
        repository = self.repository
        if registry in DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB
            if "/" not in repository:
                repository = f"library/{repository}"
        return replace(self, registry=registry, repository=repository, tag=self.effective_tag)

    def with_tag(self, tag: str) -> ImageReference:
        """This reference with a concrete tag (wildcard expansion)."""
        return replace(self, tag=tag)

    def with_digest(self, digest: str | None) -> ImageReference:
        return replace(self, digest=digest)

    def matches_tag(self, tag: str) -> bool:
        """Shell-glob match of a concrete tag against this (wildcard) tag.

        Only ``*`` is special: ``.`` and ``?`` and ``[`` are literal.
        """
        pattern = self.tag or DEFAULT_TAG
        escaped = "".join("*" if ch == "*" else f"[{ch}]" for ch in pattern)
        return fnmatch.fnmatchcase(tag, escaped)

    def __str__(self) -> str:
        prefix = "http://" if self.scheme == "http" else ""
        text = f"{prefix}{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def url(self) -> str:
        """The reference with its scheme spelled out, as the production recipe writes it."""
        return f"{self.scheme}://{str(self).removeprefix('http://')}"


def _looks_like_registry(segment: str) -> bool:
    return "." in segment or ":" in segment or segment == "localhost" or segment.startswith("[")


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

CREDENTIALS_HINT = (
    "credentials do not belong in the wishlist (it is public and reviewed): remove "
    "'user:password@' and give them to the operator as WISHBOT_REGISTRY_<N>_HOST/_USER/_PASSWORD "
    "or in the registry auth file (REGISTRY_AUTH_FILE)"
)


def _userinfo_end(text: str) -> int:
    """The index of the '@' that ends a ``user[:password]@`` before the host, or -1.

    Only an '@' in the authority counts: before the first '/' after the
    scheme, and either a scheme was written or a '/' follows (``name@sha256:…``
    is a digest, not credentials)."""
    match = _SCHEME_RE.match(text)
    start = match.end() if match else 0
    slash = text.find("/", start)
    authority = text[start:] if slash < 0 else text[start:slash]
    at = authority.rfind("@")
    if at < 0 or (match is None and slash < 0):
        return -1
    return start + at


def redact(text: str) -> str:
    """``text`` with any ``user:password@`` before the host replaced by ``***@``:
    what messages, JSON and comments may show of a reference someone wrote."""
    if not isinstance(text, str):
        return text
    end = _userinfo_end(text)
    if end < 0:
        return text
    match = _SCHEME_RE.match(text)
    start = match.end() if match else 0
    return f"{text[:start]}***{text[end:]}"


def parse(text: str) -> ImageReference:
    """Parse an image reference; raise :class:`ReferenceError` with a plain-words reason."""
    _check_text(text)
    scheme, written, text = _split_scheme(text)
    text, digest = _split_digest(text)
    text, tag = _split_tag(text)
    registry, path = _split_name(text, tag, written=written)
    _check_repository(registry, path)
    return ImageReference(
        registry=registry, repository="/".join(path), tag=tag, digest=digest, scheme=scheme
    )


def _check_text(text: object) -> None:
    """A non-empty string without spaces or credentials."""
    if not isinstance(text, str):
        raise ReferenceError("an image reference must be a string")
    if text.strip() != text:
        raise ReferenceError("the image reference has spaces around it; remove them")
    if not text:
        raise ReferenceError("the image reference is empty")
    if any(ch.isspace() for ch in text):
        raise ReferenceError("an image reference cannot contain spaces")
    if _userinfo_end(text) >= 0:
        raise ReferenceError(f"the reference carries a user name or password; {CREDENTIALS_HINT}")


def _split_scheme(text: str) -> tuple[str, bool, str]:
    """(scheme, whether it was written, the rest): ``https`` unless ``http://`` is written."""
    match = _SCHEME_RE.match(text)
    if not match:
        return "https", False, text
    scheme = match.group(1).lower()
    if scheme not in ("http", "https"):
        raise ReferenceError(
            f"unsupported scheme '{match.group(1)}://'; use https:// (or leave it out)"
        )
    return scheme, True, text[match.end() :]


def _split_digest(text: str) -> tuple[str, str | None]:
    if "@" not in text:
        return text, None
    text, digest = text.rsplit("@", 1)
    if _DIGEST_RE.match(digest):
        return text, digest
    if digest.startswith("sha256:"):
        raise ReferenceError(
            f"digest '{digest}' is not valid: expected 'sha256:' followed by 64 lowercase hex digits"
        )
    raise ReferenceError(
        f"digest '{digest}' is not valid: only sha256 digests ('sha256:' + 64 hex digits) are supported"
    )


def _split_tag(text: str) -> tuple[str, str | None]:
    colon = text.rfind(":")
    if colon <= text.rfind("/"):
        return text, None
    text, tag = text[:colon], text[colon + 1 :]
    if not tag:
        raise ReferenceError("the tag after ':' is empty; write a tag or remove the ':'")
    if not _TAG_RE.match(tag):
        raise ReferenceError(
            f"tag '{tag}' is not valid: a tag is up to 128 letters, digits, '_', '.', '-' "
            "(and '*' as a wildcard), not starting with '.' or '-'"
        )
    return text, tag


def _split_name(text: str, tag: str | None, *, written: bool) -> tuple[str, list[str]]:
    """(registry, repository path): Docker Hub (``library/`` for one component) unless
    the first component looks like a host."""
    segments = text.split("/")
    if len(segments) == 1 and (written or _looks_like_registry(segments[0])):
        raise ReferenceError(_no_repository(segments[0], tag, written=written))
    if len(segments) > 1 and _looks_like_registry(segments[0]):
        _check_registry(segments[0])
        return segments[0], segments[1:]
    if len(segments) == 1:
        return DOCKER_HUB, ["library", *segments]
    return DOCKER_HUB, segments


def _check_registry(registry: str) -> None:
    if not _REGISTRY_RE.match(registry):
        raise ReferenceError(f"registry '{registry}' is not a valid host name[:port]")
    port = registry.rsplit(":", 1)[1] if re.search(r":[0-9]+$", registry) else None
    if port is not None and not 0 < int(port) < 65536:
        raise ReferenceError(f"port {port} of registry '{registry}' is not between 1 and 65535")


def _check_repository(registry: str, path: list[str]) -> None:
    if "*" in registry or any("*" in part for part in path):
        raise ReferenceError("'*' is only allowed in the tag, not in the registry or repository")
    if not path or any(part == "" for part in path):
        raise ReferenceError(f"repository '{'/'.join(path)}' has an empty path component")
    for part in path:
        _check_component(part)
    if len(registry) + 1 + len("/".join(path)) > 255:
        raise ReferenceError("the image name is longer than 255 characters")


def _check_component(part: str) -> None:
    if not _COMPONENT_RE.match(part):
        hint = " (repository names must be lowercase)" if part.lower() != part else ""
        raise ReferenceError(
            f"repository component '{part}' is not valid: use lowercase letters and digits "
            f"separated by '.', '_', '__' or '-'{hint}"
        )


def _no_repository(host: str, tag: str | None, *, written: bool) -> str:
    """The message for a registry host without a repository (which the
    reference converter refuses too), e.g. ``https://ghcr.io:latest``."""
    shown = f"{host}:{tag}" if tag and written else host
    why = "a reference with a scheme" if written else f"'{host}' looks like a registry host, so it"
    return (
        f"{why} must name a repository after the registry: '{shown}' names none; "
        "write REGISTRY/REPOSITORY[:TAG], e.g. 'https://ghcr.io/org/tool:v2'"
    )
