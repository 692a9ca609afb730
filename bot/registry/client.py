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
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests

from bot.config import Config
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
from bot.registry import mediatypes as mt
from bot.registry.auth import CredentialStore
from bot.registry.manifest import (
    MAX_CONFIG_BYTES,
    Manifest,
    offered_platforms,
    parse_config,
    parse_manifest,
    platform_matches,
    select_platform,
    sha256_digest,
)
from bot.registry.policy import Endpoint, Policy
from bot.registry.transport import TRANSIENT, Transport

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_TAG_PAGES = 1000
CHUNK = 1 << 17


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
        self._inner = ThreadPoolExecutor(
            max_workers=max(1, self.config.workers), thread_name_prefix="wishbot-tag"
        )

    def __repr__(self) -> str:
        return f"RegistryClient({self.credentials!r})"

    def close(self) -> None:
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
        digest, else its tag), verified."""
        target = reference or ref.digest or ref.effective_tag or "latest"
        expected = target if target.startswith("sha256:") else None
        repository = self._repository(ref)
        what = f"{ref.name}{'@' if expected else ':'}{target}"

        def fetch(endpoint: Endpoint) -> Manifest:
            response = self.transport.send(
                endpoint,
                "GET",
                f"/v2/{repository}/manifests/{target}",
                who=what,
                repository=repository,
                headers={"Accept": mt.ACCEPT},
            )
            with response:
                if response.status_code == 404:
                    raise NotFound(
                        f"{what}: no such image (the registry has no manifest for it)",
                        hint="check the repository name and the tag or digest",
                    )
                _expect(response, 200, what)
                body = response.content
            return parse_manifest(
                body,
                response.headers.get("Content-Type", ""),
                expected_digest=expected,
                served_digest=response.headers.get("Docker-Content-Digest"),
                what=what,
            )

        return self._pull(ref, fetch)

    def get_config(self, ref: ImageReference, digest: str, size: int | None = None) -> bytes:
        """The config blob (verified; cached by digest)."""
        with self._lock:
            cached = self._configs.get(digest)
        if cached is not None:
            return cached
        if size is not None and size > MAX_CONFIG_BYTES:
            raise Unsupported(f"{ref}: the image config is larger than {MAX_CONFIG_BYTES} bytes")
        repository = self._repository(ref)
        what = f"{ref.name}@{digest} (config)"

        def fetch(endpoint: Endpoint) -> bytes:
            response = self.transport.send(
                endpoint,
                "GET",
                f"/v2/{repository}/blobs/{digest}",
                who=what,
                repository=repository,
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
        """All tags of the repository (following ``Link`` pagination), sorted."""
        repository = self._repository(ref)
        what = f"{ref.name} (tag list)"

        def fetch(endpoint: Endpoint) -> list[str]:
            tags: list[str] = []
            url = f"{endpoint.base_url}/v2/{repository}/tags/list"
            params: dict[str, str] | None = {"n": "1000"}
            seen: set[str] = set()
            for _ in range(MAX_TAG_PAGES):
                response = self.transport.send(
                    endpoint, "GET", url, who=what, repository=repository, params=params
                )
                with response:
                    if response.status_code == 404:
                        raise NotFound(
                            f"{ref.name}: no such repository",
                            hint="check the registry and repository name",
                        )
                    _expect(response, 200, what)
                    try:
                        body = response.json()
                    except ValueError:
                        raise Unsupported(f"{what}: the answer is not JSON") from None
                    link = response.headers.get("Link", "")
                    page_url = response.url
                page = body.get("tags") if isinstance(body, dict) else None
                tags.extend(str(t) for t in page or [] if isinstance(t, str))
                next_url = _next_link(link, page_url)
                if next_url is None:
                    return sorted(set(tags))
                if urllib.parse.urlsplit(next_url).netloc != urllib.parse.urlsplit(page_url).netloc:
                    raise Unsupported(
                        f"{what}: the next page is on another host; refusing to follow"
                    )
                if next_url in seen:
                    return sorted(set(tags))
                seen.add(next_url)
                url, params = next_url, None
            raise Unsupported(f"{what}: more than {MAX_TAG_PAGES} pages of tags")

        return self._pull(ref, fetch)

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
        hasher = hashlib.sha256()
        received = 0
        attempts = self.config.retries + 1
        reason = ""
        with dest.open("wb") as out:
            for attempt in range(attempts):
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
                    if response.status_code == 404:
                        raise NotFound(f"{what}: the registry does not have this blob")
                    if received and response.status_code == 200:
                        # the server ignored Range: start over
                        out.seek(0)
                        out.truncate()
                        hasher, received = hashlib.sha256(), 0
                    elif received and response.status_code != 206:
                        _expect(response, 206, what)
                    elif not received:
                        _expect(response, 200, what)
                    try:
                        for chunk in response.iter_content(CHUNK):
                            received += len(chunk)
                            if received > size:
                                raise IntegrityError(
                                    f"{what}: the registry sends more than the {size} bytes the manifest promises",
                                    hint="the registry or a proxy is misbehaving; try again",
                                )
                            hasher.update(chunk)
                            out.write(chunk)
                            if progress is not None:
                                progress(received)
                    except TRANSIENT as exc:
                        reason = exc.__class__.__name__
                        log.debug("%s: transfer broke at %d bytes (%s)", what, received, reason)
                        if attempt < attempts - 1:
                            self.transport.sleep(self.transport.backoff(attempt))
                        continue
                if received == size:
                    break
                reason = f"short transfer ({received} of {size} bytes)"
                if attempt < attempts - 1:
                    self.transport.sleep(self.transport.backoff(attempt))
            else:
                raise Unavailable(
                    f"{what}: the download did not complete ({reason}) after {attempts} attempts",
                    hint="try again later",
                )
            out.flush()
            os.fsync(out.fileno())
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            raise IntegrityError(
                f"{what}: the downloaded bytes hash to {actual}, not to the blob's digest",
                hint="the registry or a proxy corrupted the blob; try again",
            )

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
            location = urllib.parse.urljoin(start.url, start.headers.get("Location", ""))
        if urllib.parse.urlsplit(location).netloc != urllib.parse.urlsplit(start.url).netloc:
            raise Unsupported(f"{what}: the upload location is on another host; refusing")
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
        body = response.json()
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            detail = f": {errors[0].get('code', '')!s} {str(errors[0].get('message', ''))[:200]}"
    except ValueError:
        detail = ""
    if code == 404:
        raise NotFound(f"{what}: not found{detail}")
    if code == 429 or code >= 500:
        raise Unavailable(
            f"{what}: the registry answered HTTP {code}{detail}", hint="try again later"
        )
    raise RegistryError(f"{what}: the registry answered HTTP {code}{detail}")


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
            return urllib.parse.urljoin(base, target)
    return None
