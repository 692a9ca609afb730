"""A content-addressed, size-bounded, on-disk cache of manifests and configs.

Re-checking a wishlist should cost one ``HEAD`` per tag: the registry says
which digest a tag points to (``Docker-Content-Digest``), and everything
behind that digest — the index, the platform's manifest, the config — is
immutable, so it can be kept across runs and restarts::

    cache = BlobCache(Path(state_dir) / "registry-cache", max_bytes=256 * 2**20)
    cache.put("sha256:…", body, media_type)
    cache.get("sha256:…")  # (body, media_type) or None

Every read is verified against its digest (a damaged or altered file is
deleted and counts as a miss). Files are written to a temporary name and
renamed, so a crash leaves a whole entry or none. When the cache grows past
``max_bytes`` the least recently used entries go first.

:class:`TagHints` remembers which digest each tag pointed to last time, so a
tag seen before is re-checked with a ``HEAD`` and a tag never seen is fetched
with one ``GET`` (a hint is only ever a reason to ask, never an answer).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_MEDIA_TYPE = re.compile(rb"[\w.+/-]{0,255}", re.ASCII)
DEFAULT_MAX_BYTES = 256 * 2**20
MAX_HINTS = 200_000


class BlobCache:
    """Bytes by sha256 digest, each with its media type; thread safe."""

    def __init__(self, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES):
        self.directory = directory
        self.max_bytes = max(max_bytes, 0)
        self._lock = threading.Lock()
        self._blobs = directory / "sha256"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._size = sum(_size(p) for p in self._blobs.iterdir() if not p.name.startswith("."))
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"BlobCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    def _path(self, digest: str) -> Path | None:
        match = _DIGEST.fullmatch(digest)
        return self._blobs / match.group(1) if match else None

    def has(self, digest: str) -> bool:
        path = self._path(digest)
        return path is not None and path.is_file()

    def get(self, digest: str) -> tuple[bytes, str] | None:
        """The body and media type stored under ``digest``, verified; None on a miss."""
        path = self._path(digest)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        media_type, _, body = data.partition(b"\n")
        if hashlib.sha256(body).hexdigest() != path.name or not _MEDIA_TYPE.fullmatch(media_type):
            log.warning("registry cache: %s is damaged; dropping it", digest)
            self._drop(path)
            self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        self.hits += 1
        return body, media_type.decode()

    def put(self, digest: str, body: bytes, media_type: str = "") -> None:
        """Keep ``body`` (which must hash to ``digest``); never raises on a full or
        read-only disk (the cache is an optimisation, not a store)."""
        path = self._path(digest)
        header = media_type.encode("ascii", "replace")
        if path is None or not _MEDIA_TYPE.fullmatch(header):
            return
        if hashlib.sha256(body).hexdigest() != path.name or path.exists():
            return
        data = header + b"\n" + body
        if len(data) > self.max_bytes:
            return
        try:
            with tempfile.NamedTemporaryFile(dir=self._blobs, prefix=".", delete=False) as out:
                out.write(data)
            os.replace(out.name, path)
        except OSError as exc:
            log.warning("registry cache: cannot write %s: %s", digest, exc.strerror)
            return
        with self._lock:
            self._size += len(data)
            over = self._size > self.max_bytes
        if over:
            self._evict()

    def _drop(self, path: Path) -> None:
        size = _size(path)
        try:
            path.unlink()
        except OSError:
            return
        with self._lock:
            self._size -= size

    def _evict(self) -> None:
        """Remove the least recently used entries until the cache is at 3/4 of its size."""
        entries = []
        for path in self._blobs.iterdir():
            if path.name.startswith("."):
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        entries.sort()
        target = self.max_bytes * 3 // 4
        with self._lock:
            self._size = sum(size for _, size, _ in entries)
        for _, _, path in entries:
            with self._lock:
                if self._size <= target:
                    return
            self._drop(path)

    @property
    def size(self) -> int:
        with self._lock:
            return self._size


class TagHints:
    """Which digest each tag pointed to when last seen (``registry/repo:tag`` -> digest).

    Saved as one JSON file on :meth:`save`; bounded to :data:`MAX_HINTS` entries.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._hints: dict[str, str] = {}
        self._dirty = False
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict):
            self._hints = {
                k: v
                for k, v in list(data.items())[:MAX_HINTS]
                if isinstance(k, str) and isinstance(v, str) and _DIGEST.fullmatch(v)
            }

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._hints.get(key)

    def set(self, key: str, digest: str) -> None:
        with self._lock:
            if self._hints.get(key) == digest:
                return
            self._hints.pop(key, None)
            self._hints[key] = digest
            while len(self._hints) > MAX_HINTS:
                self._hints.pop(next(iter(self._hints)))
            self._dirty = True

    def save(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            text = json.dumps(self._hints, sort_keys=True)
            self._dirty = False
        try:
            with tempfile.NamedTemporaryFile(
                "w", dir=self.path.parent, prefix=".", delete=False, encoding="utf-8"
            ) as out:
                out.write(text)
            os.replace(out.name, self.path)
        except OSError as exc:
            log.warning("registry cache: cannot save tag hints: %s", exc.strerror)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
