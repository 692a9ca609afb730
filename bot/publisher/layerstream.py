"""The uncompressed byte stream of a layer blob, counted and hashed.

The compression is chosen by the magic bytes (:func:`detect_compression`).
Decompression, counting and sha256 run in a thread (zlib, zstd and hashlib
release the GIL), so they overlap with writing files. :class:`HashingReader`
is a forward-only file over that stream: :mod:`tarfile` runs in its
random-access mode on it (``tell`` and forward ``seek``), which avoids the
buffer copying of tarfile's stream mode, and every byte — including what a
tar reader skips after the end-of-archive blocks — goes into the diffID.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import lzma
import queue
import threading
import zlib
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from bot.errors import BadLayer, UnsafeLayer

CHUNK = 1 << 20
MAX_READ = 64 << 20  # largest single read: bounds PAX and GNU long-name headers

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"


def detect_compression(media_type: str, head: bytes) -> str:
    """``gzip``, ``zstd``, ``bzip2``, ``xz`` or ``tar``, from the magic bytes.

    Media types lie (registries label zstd or plain layers as gzip), magic
    bytes do not: every compressed stream starts with its magic, and a tar
    starts with a file name. So the magic decides; the media type is taken
    for the record only and can never turn a plain tar into a compressed one.
    """
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC) and head[3:4].isdigit():
        return "bzip2"
    del media_type  # the label cannot make uncompressed bytes compressed
    return "tar"


class _GzipRaw(io.RawIOBase):
    """Multi-member gzip decompression with bounded output per read.

    Trailing zero padding after the last member is tolerated (some tools
    write it); anything else after a member must be another gzip member.
    """

    def __init__(self, fileobj: BinaryIO):
        self._f = fileobj
        self._d = zlib.decompressobj(31)
        self._input = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = len(buffer)
        while not self._done:
            if self._d.unconsumed_tail:
                data = self._d.unconsumed_tail
            elif self._input:
                data, self._input = self._input, b""
            else:
                data = self._f.read(CHUNK)
                if not data:
                    if not self._d.eof:
                        raise BadLayer("gzip stream is truncated")
                    self._done = True
                    break
            try:
                out = self._d.decompress(data, size)
            except zlib.error as exc:
                raise BadLayer(f"gzip stream is corrupt: {exc}") from None
            if self._d.eof:
                rest = self._d.unused_data
                if rest.strip(b"\0") == b"" and not self._more_members(rest):
                    self._done = True
                else:
                    self._d = zlib.decompressobj(31)
                    self._input = rest
            if out:
                buffer[: len(out)] = out
                return len(out)
        return 0

    def _more_members(self, rest: bytes) -> bool:
        """After a member: is there another one (or only padding/EOF)?"""
        if rest:
            return False  # only zeros in ``rest``: padding
        data = self._f.read(CHUNK)
        if not data:
            return False
        if data.startswith(GZIP_MAGIC):
            self._input = data
            return True
        if data.strip(b"\0") == b"":
            while data:  # drain padding; reject junk after it
                data = self._f.read(CHUNK)
                if data.strip(b"\0"):
                    raise BadLayer("unexpected data after the gzip stream")
            return False
        raise BadLayer("unexpected data after the gzip stream")

    def close(self) -> None:
        self._f.close()
        super().close()


def open_layer(blob: Path, media_type: str) -> BinaryIO:
    """Open a layer blob as a stream of its uncompressed tar bytes."""
    f = open(blob, "rb", buffering=0)  # noqa: SIM115 - the returned stream owns it
    try:
        head = f.read(8)
        f.seek(0)
        kind = detect_compression(media_type, head)
        raw: BinaryIO
        if kind == "gzip":
            return io.BufferedReader(_GzipRaw(f), buffer_size=CHUNK)
        if kind == "zstd":
            raw = zstandard.ZstdDecompressor().stream_reader(
                f, read_size=CHUNK, read_across_frames=True, closefd=True
            )
            return raw
        if kind == "xz":
            return lzma.LZMAFile(f)  # type: ignore[return-value]
        if kind == "bzip2":
            return bz2.BZ2File(f)  # type: ignore[return-value]
        return io.BufferedReader(f, buffer_size=CHUNK)
    except BaseException:
        f.close()
        raise


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Producer(threading.Thread):
    """Decompresses, counts and hashes in a thread (zlib, zstd and sha256
    release the GIL), so decompression overlaps with writing files."""

    def __init__(self, source: Readable, limit: int, context: str):
        super().__init__(name="layer-decompress", daemon=True)
        self._src = source
        self._limit = limit
        self._context = context
        self.queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=16)
        self._halted = threading.Event()
        self.sha = hashlib.sha256()
        self.count = 0

    def run(self) -> None:
        try:
            while not self._halted.is_set():
                try:
                    data = self._src.read(CHUNK)
                except BadLayer as exc:
                    raise BadLayer(f"{self._context}: {exc.message}") from None
                except (zlib.error, zstandard.ZstdError, lzma.LZMAError, OSError, EOFError) as exc:
                    raise BadLayer(f"{self._context}: cannot decompress the layer: {exc}") from None
                if data:
                    self.count += len(data)
                    if self.count > self._limit:
                        raise UnsafeLayer(
                            f"{self._context}: layer expands beyond {self._limit} bytes",
                            hint="raise max_layer_bytes if this image is legitimate",
                        )
                    self.sha.update(data)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reading thread, raised there
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._halted.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def halt(self) -> None:
        self._halted.set()
        if self.is_alive():
            self.join()


class HashingReader:
    """A forward-only file over the uncompressed stream.

    Counts and hashes every byte it pulls from ``source`` (so the diffID
    covers what the tar reader skips), enforces the size limit, and offers
    ``tell``/forward ``seek`` so :mod:`tarfile` can run in its random-access
    mode without the copying of its stream mode.
    """

    def __init__(self, source: Readable, limit: int, context: str):
        self._producer = _Producer(source, limit, context)
        self._context = context
        self._buf = b""
        self._pos = 0  # position inside _buf
        self._offset = 0  # position in the stream
        self._eof = False

    def __enter__(self) -> HashingReader:
        self._producer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._producer.halt()

    @property
    def count(self) -> int:
        return self._producer.count

    def diff_id(self) -> str:
        """The sha256 of the whole stream (call after :meth:`drain`)."""
        return f"sha256:{self._producer.sha.hexdigest()}"

    def _fill(self) -> bytes:
        if self._eof:
            return b""
        item = self._producer.queue.get()
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        if not item:
            self._eof = True
        return item

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_READ:
            # tarfile reads file data in CHUNKs; only a header (PAX, GNU long
            # name) asks for more at once: never buffer a forged giant one
            raise UnsafeLayer(
                f"{self._context}: a tar header claims {size} bytes (more than {MAX_READ})"
            )
        avail = len(self._buf) - self._pos
        if size <= avail:
            out = self._buf[self._pos : self._pos + size]
            self._pos += size
            self._offset += size
            return out
        parts = [self._buf[self._pos :]] if avail else []
        need = size - avail
        self._buf, self._pos = b"", 0
        while need > 0:
            chunk = self._fill()
            if not chunk:
                break
            if len(chunk) <= need:
                parts.append(chunk)
                need -= len(chunk)
            else:
                parts.append(chunk[:need])
                self._buf, self._pos = chunk, need
                need = 0
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._offset += len(out)
        return out

    def peek(self, size: int) -> bytes:
        """The next ``size`` bytes (fewer at the end), without consuming them."""
        while len(self._buf) - self._pos < size:
            chunk = self._fill()
            if not chunk:
                break
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0
        return self._buf[self._pos : self._pos + size]

    def tell(self) -> int:
        return self._offset

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self._offset + offset
        if whence not in (0, 1) or target < self._offset:
            raise OSError("the layer stream can only move forward")
        while self._offset < target:
            if not self.read(min(target - self._offset, CHUNK)):
                break
        return self._offset

    def drain(self) -> None:
        self._buf, self._pos = b"", 0
        more = self._fill()
        while more:
            more = self._fill()
