"""Registry events: authenticate and parse each sender's format (pure functions).

``wishbot serve`` accepts registry events on ``POST /hooks/registry/<format>``:

============  ====================================================  =========================
format        sender and body                                       authenticated by
============  ====================================================  =========================
distribution  distribution's (``docker-registry``, GitLab's          ``Authorization: Bearer
              registry) notification envelope,                      TOKEN`` from the
              ``application/vnd.docker.distribution.events.v1+json``  endpoint's ``headers``
harbor        a Harbor webhook policy (``PUSH_ARTIFACT``, ...)        its auth header: TOKEN
github        GitHub ``registry_package`` / ``package`` events         HMAC (X-Hub-Signature-256)
dockerhub     a Docker Hub repository webhook                        nothing: allow-listed
                                                                    repositories only
============  ====================================================  =========================

Every event is only a *hint* (:class:`TagHint`): the bot asks the registry
itself what the tag now points to before publishing anything. So the
digest an event claims is never used, and an event naming an image no wish
asks for does nothing. Deletions are parsed (and logged), never acted on.

Nothing here touches the network, the disk or the clock.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.core.mediatypes import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from bot.core.model import Wish
from bot.core.reference import ReferenceError
from bot.core.reference import parse as parse_reference
from bot.runtime.events import header

FORMATS = ("distribution", "harbor", "github", "dockerhub")
PATH_PREFIX = "/hooks/registry/"
MAX_EVENTS = 1000  # events read from one delivery
GITHUB_EVENTS = ("registry_package", "package")
GITHUB_REGISTRY = "ghcr.io"
DOCKER_HUB = "docker.io"
_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")
_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_REGISTRY = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_MANIFEST_TYPES = (DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX)


@dataclass(frozen=True, order=True)
class TagHint:
    """A tag that may have moved (``action`` push) or gone (``action`` delete)."""

    registry: str
    repository: str
    tag: str
    action: str = "push"

    @property
    def image(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


@dataclass(frozen=True)
class Parsed:
    """What one delivery says: tags pushed, tags deleted, how many events were skipped."""

    pushed: tuple[TagHint, ...] = ()
    deleted: tuple[TagHint, ...] = ()
    skipped: int = 0
    problems: tuple[str, ...] = field(default=())


class BadEvent(ValueError):
    """The delivery cannot be read as this format (answered 400)."""


def route(path: str) -> str | None:
    """The format named by a request path ``/hooks/registry/<format>`` ("" if unknown)."""
    if not path.startswith(PATH_PREFIX):
        return None
    name = path[len(PATH_PREFIX) :].split("?", 1)[0].strip("/")
    return name if name in FORMATS else ""


def _token_matches(given: str, token: str) -> bool:
    """``given`` is the token or ``Bearer <token>`` (compared in constant time)."""
    if not token or not given:
        return False
    given = given.strip()
    if given[:7].lower() == "bearer ":
        given = given[7:].strip()
    return hmac.compare_digest(given.encode(), token.encode())


def may_be_authentic(fmt: str, headers: Mapping[str, str], *, token: str, secret: str) -> bool:
    """What the headers alone prove, before any body byte is read."""
    if fmt in ("distribution", "harbor"):
        return _token_matches(header(headers, "Authorization"), token)
    if fmt == "github":
        signature = header(headers, "X-Hub-Signature-256").strip()
        return bool(secret) and _SIGNATURE.fullmatch(signature) is not None
    return fmt == "dockerhub"  # no authentication: its repositories must be allow-listed


def authentic(
    fmt: str, headers: Mapping[str, str], body: bytes, *, token: str, secret: str
) -> bool:
    """Whether the delivery is authentic for ``fmt`` (Docker Hub's: always, see module)."""
    if not may_be_authentic(fmt, headers, token=token, secret=secret):
        return False
    if fmt == "github":
        signature = header(headers, "X-Hub-Signature-256").strip()
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.lower().encode(), expected.encode())
    return True


def delivery_key(fmt: str, headers: Mapping[str, str], body: bytes) -> str:
    """A replay key: what the sender signs (the body), per format."""
    return f"registry:{fmt}:" + hashlib.sha256(body).hexdigest()


def parse(fmt: str, headers: Mapping[str, str], body: bytes) -> Parsed:
    """The tag hints of one delivery; :class:`BadEvent` when it is not this format."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BadEvent("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadEvent("the body is not a JSON object")
    if fmt == "distribution":
        return _distribution(data)
    if fmt == "harbor":
        return _harbor(data)
    if fmt == "github":
        return _github(header(headers, "X-GitHub-Event"), data)
    if fmt == "dockerhub":
        return _dockerhub(data)
    raise BadEvent(f"unknown format {fmt!r}")


def _hint(registry: Any, repository: Any, tag: Any, action: str) -> TagHint | None:
    """A hint when every part is well formed (registry lower-cased), else None."""
    if not all(isinstance(v, str) for v in (registry, repository, tag)):
        return None
    registry = registry.lower()
    if not _REGISTRY.fullmatch(registry) or len(repository) > 255:
        return None
    if not _REPOSITORY.fullmatch(repository) or not _TAG.fullmatch(tag):
        return None
    return TagHint(registry, repository, tag, action)


def _collect(hints: Iterable[TagHint | None], skipped: int) -> Parsed:
    pushed: list[TagHint] = []
    deleted: list[TagHint] = []
    for hint in hints:
        if hint is None:
            skipped += 1
        elif hint.action == "delete":
            deleted.append(hint)
        else:
            pushed.append(hint)
    return Parsed(tuple(sorted(set(pushed))), tuple(sorted(set(deleted))), skipped)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value[:MAX_EVENTS] if isinstance(value, list) else []


def _distribution(data: dict[str, Any]) -> Parsed:
    """distribution's envelope: ``{"events": [{"action", "target": {"mediaType",
    "repository", "tag", "url"}, "request": {"host"}}]}``; manifest pushes and
    deletes with a tag count, everything else (blobs, pulls, mounts) is skipped."""
    events = data.get("events")
    if not isinstance(events, list):
        raise BadEvent("a distribution envelope has an 'events' list")
    hints: list[TagHint | None] = []
    skipped = max(len(events) - MAX_EVENTS, 0)
    for event in _list(events):
        event = _dict(event)
        target = _dict(event.get("target"))
        action = event.get("action")
        if action not in ("push", "delete") or not target.get("tag"):
            skipped += 1
            continue
        if action == "push" and target.get("mediaType") not in _MANIFEST_TYPES:
            skipped += 1
            continue
        host = _dict(event.get("request")).get("host")
        if not isinstance(host, str) or not host:
            url = target.get("url")
            host = urllib.parse.urlsplit(url).netloc if isinstance(url, str) else ""
        hints.append(_hint(host, target.get("repository"), target.get("tag"), action))
    return _collect(hints, skipped)


def _harbor(data: dict[str, Any]) -> Parsed:
    """Harbor: ``{"type": "PUSH_ARTIFACT", "event_data": {"resources": [{"tag",
    "resource_url": "host/project/name:tag"}], "repository": {"repo_full_name"}}}``."""
    kind = data.get("type")
    actions = {"PUSH_ARTIFACT": "push", "pushImage": "push", "DELETE_ARTIFACT": "delete"}
    if kind not in actions:
        return Parsed(skipped=1)
    event = _dict(data.get("event_data"))
    repository = _dict(event.get("repository")).get("repo_full_name")
    hints: list[TagHint | None] = []
    for resource in _list(event.get("resources")):
        resource = _dict(resource)
        url = resource.get("resource_url")
        host = url.split("/", 1)[0] if isinstance(url, str) and "/" in url else None
        hints.append(_hint(host, repository, resource.get("tag"), actions[str(kind)]))
    return _collect(hints, 0)


def _github(event: str, data: dict[str, Any]) -> Parsed:
    """GitHub ``registry_package`` / ``package`` (action published or updated) for a
    container package: ``ghcr.io/<namespace>/<name>:<tag>``."""
    if event not in GITHUB_EVENTS:
        return Parsed(skipped=1)
    package = _dict(data.get(event))
    if str(package.get("package_type", "")).lower() != "container":
        return Parsed(skipped=1)
    action = data.get("action")
    if action not in ("published", "updated"):
        return Parsed(skipped=1)
    namespace = package.get("namespace") or _dict(package.get("owner")).get("login")
    name = package.get("name")
    version = _dict(package.get("package_version"))
    tag = _dict(_dict(version.get("container_metadata")).get("tag")).get("name")
    if not all(isinstance(v, str) and v for v in (namespace, name, tag)):
        return Parsed(skipped=1)
    repository = f"{str(namespace).lower()}/{name}"
    return _collect([_hint(GITHUB_REGISTRY, repository, tag, "push")], 0)


def _dockerhub(data: dict[str, Any]) -> Parsed:
    """Docker Hub: ``{"push_data": {"tag"}, "repository": {"repo_name": "owner/name"}}``."""
    tag = _dict(data.get("push_data")).get("tag")
    name = _dict(data.get("repository")).get("repo_name")
    if isinstance(name, str) and "/" not in name:
        name = f"library/{name}"
    return _collect([_hint(DOCKER_HUB, name, tag, "push")], 0)


def allowed(hint: TagHint, patterns: Sequence[str]) -> bool:
    """Whether ``registry/repository`` matches one of the allow-list's globs
    (``127.0.0.1:5000/*``, ``ghcr.io/org/*``, ``docker.io/library/python``)."""
    name = f"{hint.registry}/{hint.repository}"
    return any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in patterns)


def concerned(wishes: Sequence[Wish], images: Iterable[str]) -> list[Wish]:
    """The wishes a pushed ``registry/repository:tag`` may concern: a wish of that
    very tag, or a wildcard whose pattern matches it (Docker Hub's names folded);
    in wishlist order, each once."""
    pushed: dict[tuple[str, str], set[str]] = {}
    for text in images:
        try:
            ref = parse_reference(text).normalized()
        except ReferenceError:
            continue
        if ref.tag:
            pushed.setdefault((ref.registry, ref.repository), set()).add(ref.tag)
    out: list[Wish] = []
    for wish in wishes:
        wanted = wish.reference.normalized()
        tags = pushed.get((wanted.registry, wanted.repository), set())
        if wanted.tag is not None and any(wanted.matches_tag(tag) for tag in tags):
            out.append(wish)
    return out
