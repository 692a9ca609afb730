"""The registry client: manifests, configs, tags, blobs; resolving wishes.

::

    with RegistryClient(Config.load()) as client:
        resolutions = client.resolve_all(wishlist.wishes)   # input order
        client.download_blob(ref, layer.digest, layer.size, Path("layer.tar.gz"))

Reads go to the configured mirror first (``config.mirrors[registry]``) and
fall back to the registry itself. Every byte is verified: manifests against
the digest asked for or ``Docker-Content-Digest``, configs and blobs against
their digest and size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import requests

from bot.config import Config
from bot.core import mediatypes as mt
from bot.core.model import (
    DEFAULT_PLATFORM,
    ImageConfig,
    Layer,
    Location,
    Platform,
    Problem,
    Resolution,
    ResolvedImage,
    Wish,
)
from bot.core.reference import DOCKER_HUB, DOCKER_HUB_ALIASES, ImageReference
from bot.errors import (
    IntegrityError,
    NotFound,
    RegistryError,
    Unavailable,
    Unsupported,
)
from bot.registry import safejson
from bot.registry.auth import CredentialStore
from bot.registry.cache import BlobCache, TagHints
from bot.registry.manifest import (
    Manifest,
    offered_platforms,
    parse_config,
    parse_manifest,
    platform_matches,
    select_platform,
    sha256_digest,
)
from bot.registry.policy import Endpoint, Policy, origin, same_origin
from bot.registry.transport import HOSTILE, TRANSIENT, Transport

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_TAG_PAGES = 1000
CHUNK = 1 << 17


@dataclass
class _Transfer:
    """A blob download's progress over its attempts."""

    received: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)


@dataclass(frozen=True)
class ImageInfo:
    """One platform of one concrete image, as the registry describes it."""

    reference: ImageReference
    platform: Platform
    manifest_digest: str
    media_type: str
    image_id: str
    layers: tuple[Layer, ...]
    config: ImageConfig


class RegistryClient:
    """Talks to registries for wishbot; thread safe; close() when done."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        credentials: CredentialStore | None = None,
        sleep: Callable[[float], None] | None = None,
    ):
        self.config = config or Config.load()
        self.credentials = credentials if credentials is not None else CredentialStore.load()
        self.policy = Policy(self.config)
        if sleep is None:
            self.transport = Transport(self.config, self.credentials, self.policy)
        else:
            self.transport = Transport(self.config, self.credentials, self.policy, sleep=sleep)
        self._configs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.cache, self._hints = _open_cache(self.config)
        self._inner = ThreadPoolExecutor(
            max_workers=max(1, self.config.workers), thread_name_prefix="wishbot-tag"
        )

    def __repr__(self) -> str:
        return f"RegistryClient({self.credentials!r})"

    def close(self) -> None:
        if self._hints is not None:
            self._hints.save()
        self._inner.shutdown(wait=False, cancel_futures=True)
        self.transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (token requests and retries included)."""
        return self.transport.requests_made

    # --- endpoints and mirrors -------------------------------------------
    def _mirror(self, ref: ImageReference) -> Endpoint | None:
        registry = ref.registry.lower()
        keys = [registry]
        if registry in DOCKER_HUB_ALIASES:
            keys += [DOCKER_HUB, "docker.io", "index.docker.io"]
        for key in keys:
            base = self.config.mirrors.get(key)
            if base:
                base = base.rstrip("/")
                netloc = urllib.parse.urlsplit(base).netloc
                return Endpoint(netloc, base)
        return None

    def _endpoints(self, ref: ImageReference) -> list[Callable[[], Endpoint]]:
        mirror = self._mirror(ref)
        out: list[Callable[[], Endpoint]] = []
        if mirror is not None:
            out.append(lambda: mirror)
        out.append(lambda: self.policy.endpoint(ref))
        return out

    def _pull(self, ref: ImageReference, action: Callable[[Endpoint], T]) -> T:
        """Run ``action`` against the mirror, then the registry (on any failure)."""
        choices = self._endpoints(ref)
        for index, choose in enumerate(choices):
            endpoint = choose()
            try:
                return action(endpoint)
            except RegistryError as exc:
                if index == len(choices) - 1:
                    raise
                log.info("mirror %s failed for %s (%s); asking the registry", endpoint, ref, exc)
        raise AssertionError("unreachable: there is always one endpoint")

    @staticmethod
    def _repository(ref: ImageReference) -> str:
        return ref.normalized().repository

    # --- manifests -------------------------------------------------------
    def get_manifest(self, ref: ImageReference, reference: str | None = None) -> Manifest:
        """The manifest or index for ``reference`` (tag or digest; default: the ref's
        digest, else its tag), verified.

        With the on-disk cache (``registry_cache_dir`` or ``state_dir``), a tag or
        a digest asked for costs one ``HEAD`` while the cache keeps what it
        points to (the ``HEAD`` also proves this client may read it: a cached
        private manifest is never handed to a client without access), and a
        platform's manifest inside an index read that way costs nothing."""
        target, expected, what = _manifest_target(ref, reference)
        if self.cache is None:
            return self._fetch_manifest(ref, target, expected, what)
        tag_key = "" if expected else f"{ref.normalized().name}:{target}"
        digest = self._known_digest(ref, target, expected, what, tag_key, named=reference)
        cached = self._cached_manifest(digest, what) if digest else None
        if cached is None:
            cached = self._fetch_manifest(ref, target, expected, what)
            self.cache.put(cached.digest, cached.body, cached.media_type)
        if tag_key and self._hints is not None:
            self._hints.set(tag_key, cached.digest)
        return cached

    def _known_digest(
        self,
        ref: ImageReference,
        target: str,
        expected: str | None,
        what: str,
        tag_key: str,
        *,
        named: str | None,
    ) -> str:
        """The digest whose cached manifest may serve ``target`` ("" for none):
        a digest an index just named, or what a ``HEAD`` says the tag or digest
        points to now, when the cache holds what it pointed to before."""
        if expected and named is not None:
            return expected  # named by an index this client has just read
        known = expected or (self._hints.get(tag_key) if self._hints is not None else None)
        if not known or self.cache is None or not self.cache.has(known):
            return ""
        digest = self._head(ref, target, what)
        if expected and digest != expected:
            return ""  # a registry naming another digest: fetch and verify
        return digest

    def _head(self, ref: ImageReference, target: str, what: str) -> str:
        """The digest ``target`` (a tag or digest) points to now, by ``HEAD``
        ("" when the answer does not say: fetch the manifest instead)."""
        repository = self._repository(ref)

        def head(endpoint: Endpoint) -> str:
            response = self.transport.send(
                endpoint,
                "HEAD",
                f"/v2/{repository}/manifests/{target}",
                who=what,
                repository=repository,
                headers={"Accept": mt.ACCEPT},
            )
            with response:
                if response.status_code == 404:
                    raise _no_manifest(what)
                served = response.headers.get("Docker-Content-Digest", "")
                if response.status_code != 200 or not _DIGEST.fullmatch(served):
                    return ""  # no usable answer to HEAD: fetch the manifest
                return served

        return self._pull(ref, head)

    def _cached_manifest(self, digest: str, what: str) -> Manifest | None:
        """The manifest the cache keeps under ``digest`` (verified again), or None."""
        if self.cache is None:
            return None
        kept = self.cache.get(digest)
        if kept is None:
            return None
        body, media_type = kept
        try:
            return parse_manifest(
                body,
                media_type,
                expected_digest=digest,
                served_digest=None,
                what=what,
                limit=self.config.max_manifest_bytes,
            )
        except RegistryError:
            return None

    def _fetch_manifest(
        self, ref: ImageReference, target: str, expected: str | None, what: str
    ) -> Manifest:
        """GET the manifest for ``target`` from the mirror or the registry."""
        repository = self._repository(ref)

        def fetch(endpoint: Endpoint) -> Manifest:
            response = self.transport.send(
                endpoint,
                "GET",
                f"/v2/{repository}/manifests/{target}",
                who=what,
                repository=repository,
                headers={"Accept": mt.ACCEPT},
                max_bytes=self.config.max_manifest_bytes,
                setting="max_manifest_bytes",
            )
            with response:
                if response.status_code == 404:
                    raise _no_manifest(what)
                _expect(response, 200, what)
                body = response.content
            return parse_manifest(
                body,
                response.headers.get("Content-Type", ""),
                expected_digest=expected,
                served_digest=response.headers.get("Docker-Content-Digest"),
                what=what,
                limit=self.config.max_manifest_bytes,
            )

        return self._pull(ref, fetch)

    def get_config(self, ref: ImageReference, digest: str, size: int | None = None) -> bytes:
        """The config blob (verified; cached by digest)."""
        with self._lock:
            cached = self._configs.get(digest)
        if cached is None and self.cache is not None:
            kept = self.cache.get(digest)
            cached = kept[0] if kept is not None else None
        if cached is not None and (size is None or len(cached) == size):
            return cached
        limit = self.config.max_config_bytes
        if size is not None and size > limit:
            raise Unsupported(
                f"{ref}: the image config is larger than {limit} bytes",
                hint="raise WISHBOT_MAX_CONFIG_BYTES if the image is genuine",
            )
        repository = self._repository(ref)
        what = f"{ref.name}@{digest} (config)"

        def fetch(endpoint: Endpoint) -> bytes:
            response = self.transport.send(
                endpoint,
                "GET",
                f"/v2/{repository}/blobs/{digest}",
                who=what,
                repository=repository,
                max_bytes=limit,
                setting="max_config_bytes",
            )
            with response:
                if response.status_code == 404:
                    raise NotFound(f"{what}: the registry has lost the image config blob")
                _expect(response, 200, what)
                body = response.content
            if sha256_digest(body) != digest or (size is not None and len(body) != size):
                raise IntegrityError(
                    f"{what}: the config blob does not match its digest or size",
                    hint="the registry or a proxy altered it; try again",
                )
            return body

        body = self._pull(ref, fetch)
        with self._lock:
            self._configs[digest] = body
        if self.cache is not None:
            self.cache.put(digest, body, "config")
        return body

    def remember_configs(self, blobs: Mapping[str, bytes]) -> None:
        """Config blobs known already (by digest; each checked): never downloaded."""
        with self._lock:
            for digest, body in blobs.items():
                if sha256_digest(body) == digest:
                    self._configs[digest] = body

    def inspect(self, ref: ImageReference, platforms: Sequence[Platform]) -> list[ImageInfo]:
        """One :class:`ImageInfo` per wanted platform of a concrete reference."""
        manifest = self.get_manifest(ref)
        concrete = ref.normalized()
        out: list[ImageInfo] = []
        for platform in platforms:
            image = manifest
            if manifest.is_index:
                entries = manifest.entries()
                entry = select_platform(entries, platform)
                if entry is None:
                    offered = ", ".join(offered_platforms(entries)) or "none"
                    raise NotFound(
                        f"{ref}: the image has no {platform} variant (it offers {offered})",
                        hint="change the wished platforms or pick an image built for them",
                    )
                image = self.get_manifest(ref, entry.digest)
                if image.is_index:
                    raise Unsupported(f"{ref}: an index inside an index is not supported")
            out.append(
                self._image_info(concrete, platform, image, check_platform=not manifest.is_index)
            )
        return out

    def _image_info(
        self, ref: ImageReference, platform: Platform, manifest: Manifest, *, check_platform: bool
    ) -> ImageInfo:
        descriptor = manifest.config_descriptor()
        layers = manifest.layers()
        body = self.get_config(ref, descriptor.digest, descriptor.size)
        parsed = parse_config(body, what=str(ref))
        if (
            check_platform
            and parsed.platform is not None
            and not platform_matches(platform, parsed.platform)
        ):
            raise NotFound(
                f"{ref}: the image is for {parsed.platform}, not {platform}",
                hint="change the wished platforms or pick a multi-platform image",
            )
        diff_ids = parsed.config.diff_ids
        if diff_ids and len(diff_ids) != len(layers):
            raise IntegrityError(
                f"{ref}: the manifest has {len(layers)} layers but the config lists {len(diff_ids)} diff_ids",
                hint="the image is malformed; rebuild and re-push it",
            )
        if diff_ids:
            layers = [
                Layer(layer.digest, layer.size, layer.media_type, diff_id)
                for layer, diff_id in zip(layers, diff_ids, strict=True)
            ]
        return ImageInfo(
            reference=ref,
            platform=platform,
            manifest_digest=manifest.digest,
            media_type=manifest.media_type,
            image_id=descriptor.digest,
            layers=tuple(layers),
            config=parsed.config,
        )

    # --- tags ------------------------------------------------------------
    def list_tags(self, ref: ImageReference) -> list[str]:
        """All tags of the repository (following ``Link`` pagination on the
        same origin), sorted; at most ``config.max_tags`` of them."""
        repository = self._repository(ref)
        what = f"{ref.name} (tag list)"

        def fetch(endpoint: Endpoint) -> list[str]:
            tags: set[str] = set()
            url = f"{endpoint.base_url}/v2/{repository}/tags/list"
            params: dict[str, str] | None = {"n": "1000"}
            seen: set[str] = set()
            for _ in range(MAX_TAG_PAGES):
                page, link, page_url = self._tag_page(endpoint, url, params, what, repository)
                tags.update(page)
                if len(tags) > self.config.max_tags:
                    raise Unsupported(
                        f"{what}: the repository has more than {self.config.max_tags} tags",
                        hint="write a concrete tag, or raise WISHBOT_MAX_TAGS",
                    )
                next_url = _next_link(link, page_url)
                if next_url is None or next_url in seen:
                    return sorted(tags)
                if not same_origin(next_url, page_url):
                    raise Unsupported(
                        f"{what}: the next page is on another scheme, host or port "
                        f"({origin(next_url)}); refusing to follow",
                        hint="the registry is misconfigured or hostile; tell its operators",
                    )
                seen.add(next_url)
                url, params = next_url, None
            raise Unsupported(f"{what}: more than {MAX_TAG_PAGES} pages of tags")

        return self._pull(ref, fetch)

    def _tag_page(
        self,
        endpoint: Endpoint,
        url: str,
        params: dict[str, str] | None,
        what: str,
        repository: str,
    ) -> tuple[list[str], str, str]:
        """One page of a tag list: its tags, its ``Link`` header, its URL."""
        response = self.transport.send(
            endpoint,
            "GET",
            url,
            who=what,
            repository=repository,
            params=params,
            max_bytes=self.config.max_tag_page_bytes,
            setting="max_tag_page_bytes",
        )
        with response:
            if response.status_code == 404:
                raise NotFound(
                    f"{what.removesuffix(' (tag list)')}: no such repository",
                    hint="check the registry and repository name",
                )
            _expect(response, 200, what)
            body = _json(response.content, what)
            link = response.headers.get("Link", "")
            page_url = response.url
        page = body.get("tags") if isinstance(body, dict) else None
        if page is not None and not isinstance(page, list):
            raise Unsupported(f"{what}: the answer's 'tags' is not a list")
        return [t for t in page or [] if isinstance(t, str) and _TAG.fullmatch(t)], link, page_url

    def expand(self, ref: ImageReference) -> list[ImageReference]:
        """Concrete normalized references: the wildcard's matching tags, sorted."""
        normal = ref.normalized()
        if not ref.is_wildcard:
            return [normal]
        tags = self.list_tags(ref)
        matched = [normal.with_tag(tag) for tag in tags if ref.matches_tag(tag)]
        if not matched:
            raise NotFound(
                f"{ref}: the wildcard matches none of the repository's {len(tags)} tags",
                hint="check the pattern ('*' is the only wildcard; '.' is literal)",
            )
        cap = self.config.max_wildcard_tags
        if len(matched) > cap:
            raise Unsupported(
                f"{ref}: the wildcard matches {len(matched)} tags, more than the "
                f"{cap} one wildcard may expand to (max_wildcard_tags)",
                hint=(
                    "narrow the pattern or list the tags you need; the operator can raise "
                    "WISHBOT_MAX_WILDCARD_TAGS"
                ),
            )
        return matched

    # --- resolving wishes -------------------------------------------------
    def resolve(self, wish: Wish) -> Resolution:
        """All images of one wish (wildcards and platforms expanded), or a problem."""
        ref = wish.reference
        platforms = wish.platforms or (DEFAULT_PLATFORM,)
        try:
            if ref.is_wildcard and ref.digest:
                raise Unsupported(
                    f"{ref}: a wildcard tag cannot be pinned to a digest",
                    hint="remove the digest or write a concrete tag",
                )
            concrete = self.expand(ref)
            if len(concrete) == 1:
                infos = [self.inspect(concrete[0], platforms)]
            else:
                infos = list(self._inner.map(lambda r: self.inspect(r, platforms), concrete))
        except RegistryError as exc:
            return Resolution(wish=wish, problem=problem_for(wish, exc))
        except (*HOSTILE, RecursionError, OverflowError) as exc:
            # the wish boundary: whatever a hostile answer provokes past the
            # typed checks is a problem of this wish, never the whole run's
            log.debug("%s: unusable registry answer", ref, exc_info=True)
            return Resolution(wish=wish, problem=problem_for(wish, _unusable(exc)))
        multiarch = len(platforms) > 1
        images = tuple(
            ResolvedImage(
                wish=wish,
                reference=info.reference,
                platform=info.platform,
                manifest_digest=info.manifest_digest,
                image_id=info.image_id,
                layers=info.layers,
                config=info.config,
                multiarch=multiarch,
            )
            for group in infos
            for info in group
        )
        return Resolution(wish=wish, images=images)

    def resolve_all(self, wishes: Sequence[Wish]) -> list[Resolution]:
        """:meth:`resolve` for many wishes at once (``config.workers``), in input order."""
        if not wishes:
            return []
        with ThreadPoolExecutor(
            max_workers=max(1, min(self.config.workers, len(wishes))),
            thread_name_prefix="wishbot-resolve",
        ) as pool:
            return list(pool.map(self.resolve, wishes))

    # --- blobs -----------------------------------------------------------
    def download_blob(
        self,
        ref: ImageReference,
        digest: str,
        size: int,
        dest: Path,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a blob into ``dest``; its sha256 and size are checked before
        returning (a mismatch raises :class:`IntegrityError` and removes the file).
        A broken transfer resumes with ``Range`` where the server allows it.
        ``progress`` is called with the bytes received so far after every chunk."""
        repository = self._repository(ref)
        what = f"{ref.name}@{digest}"

        def fetch(endpoint: Endpoint) -> None:
            with self.transport.slot(endpoint.registry):
                self._download(endpoint, repository, what, digest, size, dest, progress)

        try:
            self._pull(ref, fetch)
        except (*HOSTILE, RecursionError, OverflowError) as exc:
            dest.unlink(missing_ok=True)
            log.debug("%s: unusable registry answer", what, exc_info=True)
            raise _unusable(exc, what) from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    def _download(
        self,
        endpoint: Endpoint,
        repository: str,
        what: str,
        digest: str,
        size: int,
        dest: Path,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        state = _Transfer()
        attempts = self.config.retries + 1
        reason = ""
        with dest.open("wb") as out:
            for attempt in range(attempts):
                seconds = self._blob_seconds(size - state.received)
                with self.transport.deadline(seconds) as deadline:
                    try:
                        self._receive(
                            endpoint, repository, (what, digest, size), out, state, progress
                        )
                    except TRANSIENT as exc:
                        if deadline.expired:
                            raise _too_slow(what, seconds) from None
                        reason = exc.__class__.__name__
                        log.debug(
                            "%s: transfer broke at %d bytes (%s)", what, state.received, reason
                        )
                        if attempt < attempts - 1:
                            self.transport.sleep(self.transport.backoff(attempt))
                        continue
                    except Unavailable:
                        if deadline.expired:
                            raise _too_slow(what, seconds) from None
                        raise
                if state.received == size:
                    break
                reason = f"short transfer ({state.received} of {size} bytes)"
                if attempt < attempts - 1:
                    self.transport.sleep(self.transport.backoff(attempt))
            else:
                raise Unavailable(
                    f"{what}: the download did not complete ({reason}) after {attempts} attempts",
                    hint="try again later",
                )
            out.flush()
            os.fsync(out.fileno())
        _check_blob_digest(state, digest, what)

    def _blob_seconds(self, remaining: int) -> float:
        """The total deadline for receiving ``remaining`` bytes of a blob:
        ``request_deadline`` plus the time at ``min_blob_throughput``."""
        throughput = self.config.min_blob_throughput
        if throughput <= 0:
            return float("inf")
        return self.config.request_deadline + remaining / throughput

    def _receive(
        self,
        endpoint: Endpoint,
        repository: str,
        blob: tuple[str, str, int],
        out: BinaryIO,
        state: _Transfer,
        progress: Callable[[int], None] | None,
    ) -> None:
        """One attempt: ask for the rest of the blob and append it to ``out``,
        counting and hashing in ``state`` (restarted when the server ignores
        ``Range``). ``blob``: (name in messages, digest, size)."""
        what, digest, size = blob
        received = state.received
        headers = {"Range": f"bytes={received}-"} if received else {}
        response = self.transport.send(
            endpoint,
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            who=what,
            repository=repository,
            headers=headers,
            stream=True,
            limit=False,
        )
        with response:
            _start_blob(response, what, out, state)
            for chunk in response.iter_content(CHUNK):
                if state.received + len(chunk) > size:
                    raise IntegrityError(
                        f"{what}: the registry sends more than the {size} bytes the manifest promises",
                        hint="the registry or a proxy is misbehaving; try again",
                    )
                state.hasher.update(chunk)
                out.write(chunk)
                state.received += len(chunk)
                if progress is not None:
                    progress(state.received)

    def push_blob(self, ref: ImageReference, data: bytes) -> str:
        """Upload a blob (monolithic) unless the registry has it; its digest."""
        digest = sha256_digest(data)
        repository = self._repository(ref)
        endpoint = self.policy.endpoint(ref)
        what = f"{ref.name}@{digest} (upload)"
        send = self.transport.send
        head = send(endpoint, "HEAD", f"/v2/{repository}/blobs/{digest}", who=what,
                    repository=repository, actions="pull,push")  # fmt: skip
        head.close()
        if head.status_code == 200:
            return digest
        start = send(endpoint, "POST", f"/v2/{repository}/blobs/uploads/", who=what,
                     repository=repository, actions="pull,push")  # fmt: skip
        with start:
            _expect(start, 202, what)
            try:
                location = urllib.parse.urljoin(start.url, start.headers.get("Location", ""))
            except ValueError:
                location = ""
        if not same_origin(location, endpoint.base_url):
            raise Unsupported(
                f"{what}: the upload location is not a URL on the registry itself; refusing"
            )
        done = send(
            endpoint,
            "PUT",
            location,
            who=what,
            repository=repository,
            actions="pull,push",
            params={"digest": digest},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        with done:
            _expect(done, 201, what)
        return digest

    def push_manifest(self, ref: ImageReference, body: bytes, media_type: str) -> str:
        """Put a manifest under the ref's tag (or its digest); returns the digest."""
        digest = sha256_digest(body)
        repository = self._repository(ref)
        target = ref.tag if ref.tag and not ref.is_wildcard else digest
        what = f"{ref.name}:{target} (manifest upload)"
        response = self.transport.send(
            self.policy.endpoint(ref),
            "PUT",
            f"/v2/{repository}/manifests/{target}",
            who=what,
            repository=repository,
            actions="pull,push",
            data=body,
            headers={"Content-Type": media_type},
        )
        with response:
            _expect(response, 201, what)
            served = response.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise IntegrityError(f"{what}: the registry stored digest {served}, expected {digest}")
        return digest


def _start_blob(response: requests.Response, what: str, out: BinaryIO, state: _Transfer) -> None:
    """Check a blob answer's status: 200 for the whole blob, 206 for the rest asked
    for; a server that ignores ``Range`` (200 again) restarts ``out`` and ``state``."""
    if response.status_code == 404:
        raise NotFound(f"{what}: the registry does not have this blob")
    if not state.received:
        _expect(response, 200, what)
    elif response.status_code == 200:
        out.seek(0)
        out.truncate()
        state.hasher, state.received = hashlib.sha256(), 0
    elif response.status_code != 206:
        _expect(response, 206, what)


def _check_blob_digest(state: _Transfer, digest: str, what: str) -> None:
    actual = "sha256:" + state.hasher.hexdigest()
    if actual != digest:
        raise IntegrityError(
            f"{what}: the downloaded bytes hash to {actual}, not to the blob's digest",
            hint="the registry or a proxy corrupted the blob; try again",
        )


def problem_for(wish: Wish, exc: RegistryError) -> Problem:
    """A registry failure as a problem at the wish's location."""
    message = exc.message
    reference = str(wish.reference)
    if reference not in message and wish.reference.name not in message:
        message = f"{reference}: {message}"
    return Problem(
        severity="error",
        message=message,
        location=wish.location,
        code=exc.kind,
        hint=exc.hint,
        image=wish.text or reference,
    )


def cli_wish(ref: ImageReference, platforms: Sequence[Platform]) -> Wish:
    """A wish for a reference given on the command line."""
    return Wish(
        reference=ref,
        location=Location("<command line>"),
        platforms=tuple(platforms) or (DEFAULT_PLATFORM,),
        text=str(ref),
    )


def _expect(response: requests.Response, status: int, what: str) -> None:
    if response.status_code == status:
        return
    code = response.status_code
    detail = ""
    try:
        body = safejson.loads(response.content)
    except safejson.BadJson:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        detail = f": {_printable(first.get('code'), 40)} {_printable(first.get('message'), 200)}"
    if code == 404:
        raise NotFound(f"{what}: not found{detail}")
    if code == 429 or code >= 500:
        raise Unavailable(
            f"{what}: the registry answered HTTP {code}{detail}", hint="try again later"
        )
    raise RegistryError(f"{what}: the registry answered HTTP {code}{detail}")


def _printable(value: object, limit: int) -> str:
    """A registry-sent string for a message: text only, no control characters, bounded."""
    if not isinstance(value, str):
        return ""
    return "".join(ch if ch.isprintable() else " " for ch in value[:limit])


def _json(body: bytes, what: str) -> Any:
    """A JSON answer, or :class:`Unsupported` saying plainly why not."""
    try:
        return safejson.loads(body)
    except safejson.BadJson as exc:
        raise Unsupported(
            f"{what}: the answer {exc}",
            hint="the registry is misconfigured or hostile; tell its operators",
        ) from None


def _unusable(exc: BaseException, what: str = "") -> Unsupported:
    """An unexpected failure on a registry's answer, as a typed problem (the
    class name only: exception texts may quote headers, which may hold secrets)."""
    prefix = f"{what}: " if what else ""
    return Unsupported(
        f"{prefix}the registry's answer cannot be used ({exc.__class__.__name__})",
        hint="the registry is misconfigured or hostile; tell its operators",
    )


def _too_slow(what: str, seconds: float) -> Unavailable:
    return Unavailable(
        f"{what}: could not download: the blob did not arrive within {seconds:.0f} s",
        hint=(
            "the registry is stalling or very slow; try again later "
            "(WISHBOT_MIN_BLOB_THROUGHPUT and WISHBOT_REQUEST_DEADLINE set the limit)"
        ),
    )


_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _open_cache(config: Config) -> tuple[BlobCache | None, TagHints | None]:
    """The on-disk manifest/config cache and tag hints, when a directory is configured."""
    directory = config.registry_cache_dir or (
        str(Path(config.state_dir) / "registry-cache") if config.state_dir else ""
    )
    if not directory or config.registry_cache_bytes <= 0:
        return None, None
    try:
        cache = BlobCache(Path(directory), max_bytes=config.registry_cache_bytes)
    except OSError as exc:
        log.warning("registry cache %s unusable (%s); going without", directory, exc.strerror)
        return None, None
    return cache, TagHints(Path(directory) / "tags.json")


def _next_link(header: str, base: str) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header, made absolute."""
    for part in header.split(","):
        if "<" not in part or ">" not in part:
            continue
        target = part[part.index("<") + 1 : part.index(">")]
        params = part[part.index(">") + 1 :]
        rels = [
            p.split("=", 1)[1].strip().strip('"')
            for p in params.split(";")
            if "=" in p and p.split("=", 1)[0].strip().lower() == "rel"
        ]
        if any("next" in rel.split() for rel in rels):
            try:
                return urllib.parse.urljoin(base, target)
            except ValueError:
                return target  # not a URL: refused as not on the registry's origin
    return None


def _manifest_target(ref: ImageReference, reference: str | None) -> tuple[str, str | None, str]:
    """What to ask for (``reference``, else the ref's digest, else its tag), the
    digest it must have (when it is one) and how messages name it."""
    target = reference or ref.digest or ref.effective_tag or "latest"
    expected = target if target.startswith("sha256:") else None
    return target, expected, f"{ref.name}{'@' if expected else ':'}{target}"


def _no_manifest(what: str) -> NotFound:
    """A registry's 404 for a manifest (``HEAD`` or ``GET``)."""
    return NotFound(
        f"{what}: no such image (the registry has no manifest for it)",
        hint="check the repository name and the tag or digest",
    )
