"""Tar headers an attacker wrote: bounded while parsed, checked before use.

:mod:`tarfile` parses whatever a header says. A layer is untrusted, so
:class:`BoundedTarInfo` (handed to ``tarfile.open(tarinfo=...)``) refuses,
*before* reading them, the headers that would cost unbounded memory or time:

- a PAX header (extended or global) larger than :data:`MAX_PAX_BYTES` or
  with more than :data:`MAX_PAX_RECORDS` records; global headers are applied
  to every later entry, so all of them together may hold at most
  :data:`MAX_GLOBAL_RECORDS` records (150,000 of them would cost minutes);
- a GNU long name or long link larger than :data:`MAX_NAME_BYTES`;
- a sparse map (old GNU extension blocks, PAX 0.0/0.1 records, PAX 1.0 map in
  the data area) with more than :data:`MAX_SPARSE_ENTRIES` fragments.

:func:`check_header` then refuses the numbers no file system can take (an
``mtime`` of ``1e300`` or NaN, a uid beyond 32 bits, a negative size, a
device number beyond 32 bits) with a clear :class:`~bot.errors.BadLayer`
instead of an ``OverflowError`` deep inside ``os.utime`` or ``os.mknod``.

:func:`show_name` is how every message prints an entry name: at most
:data:`SHOWN_NAME_CHARS` characters with a marker giving the full length,
bytes that are not UTF-8 and control characters as backslash escapes.
"""

from __future__ import annotations

import math
import re
import tarfile
from typing import Any

from bot.errors import BadLayer, UnsafeLayer

BLOCKSIZE = tarfile.BLOCKSIZE
XGLTYPE = tarfile.XGLTYPE
_nti = tarfile.nti  # type: ignore[attr-defined]

MAX_PAX_BYTES = 1 << 20
MAX_PAX_RECORDS = 10_000
MAX_GLOBAL_RECORDS = 64
MAX_NAME_BYTES = 64 << 10
MAX_SPARSE_ENTRIES = 1 << 16
SHOWN_NAME_CHARS = 200

_MAX_ID = (1 << 32) - 2  # uid_t/gid_t: 0xffffffff means "no change"
_MAX_DEV = (1 << 32) - 1
_MAX_MTIME = (1 << 63) // 1_000_000_000  # nanoseconds must fit in 64 bits
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def show_name(name: str) -> str:
    """``name`` fit for a message: escaped, and cut after ``SHOWN_NAME_CHARS``.

    Names are decoded with ``surrogateescape``: bytes that are not UTF-8
    become ``\\xNN``, as do control and bidi characters (a name must not
    move the terminal's cursor or reorder the line it is printed on).
    """
    raw = name.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    if len(text) <= SHOWN_NAME_CHARS:
        return text
    return f"{text[:SHOWN_NAME_CHARS]}… ({len(raw)} bytes)"


class BoundedTarInfo(tarfile.TarInfo):
    """A :class:`tarfile.TarInfo` that refuses oversized extension headers.

    The hooks are :mod:`tarfile`'s own header processors (stable since
    Python 3.2); each checks the size it is about to read, then lets
    :mod:`tarfile` do the parsing.
    """

    #: the layer being read, for messages (set by the engine before opening)
    context = "layer"

    def _refuse(self, what: str) -> UnsafeLayer:
        return UnsafeLayer(f"{self.context}: {what}", hint="the layer is refused")

    def _proc_pax(self, tarfile: Any) -> Any:
        if self.size > MAX_PAX_BYTES:
            raise self._refuse(
                f"a tar header claims {self.size} bytes for a PAX header "
                f"(at most {MAX_PAX_BYTES} are accepted)"
            )
        records = _count_records(tarfile.fileobj.peek(_blocks(self.size)))
        if records > MAX_PAX_RECORDS:
            raise self._refuse(
                f"a PAX header with {records} records (at most {MAX_PAX_RECORDS} are accepted)"
            )
        self._check_sparse_map(tarfile.fileobj)
        if self.type == XGLTYPE:
            total = len(tarfile.pax_headers) + records
            if total > MAX_GLOBAL_RECORDS:
                raise self._refuse(
                    f"PAX global headers with {total} records (at most "
                    f"{MAX_GLOBAL_RECORDS}: they apply to every entry)"
                )
        return super()._proc_pax(tarfile)  # type: ignore[misc]

    def _proc_gnulong(self, tarfile: Any) -> Any:
        if self.size > MAX_NAME_BYTES:
            raise self._refuse(
                f"a tar header claims {self.size} bytes for a GNU long name "
                f"(at most {MAX_NAME_BYTES} are accepted)"
            )
        return super()._proc_gnulong(tarfile)  # type: ignore[misc]

    def _proc_sparse(self, tarfile: Any) -> Any:
        """Old GNU sparse: the extension blocks, counted as they are read."""
        structs, isextended, origsize = self._sparse_structs  # type: ignore[attr-defined]
        del self._sparse_structs  # type: ignore[attr-defined]
        while isextended:
            if len(structs) > MAX_SPARSE_ENTRIES:
                raise self._sparse_refused(len(structs))
            buf = tarfile.fileobj.read(BLOCKSIZE)
            if len(buf) < BLOCKSIZE:
                raise tarfile.ReadError("truncated sparse header")
            for pos in range(0, 21 * 24, 24):
                try:
                    offset = _nti(buf[pos : pos + 12])
                    numbytes = _nti(buf[pos + 12 : pos + 24])
                except ValueError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
            isextended = bool(buf[504])
        self.sparse = structs
        self.offset_data = tarfile.fileobj.tell()
        tarfile.offset = self.offset_data + _blocks(self.size)
        self.size = origsize
        return self

    def _check_sparse_map(self, fileobj: Any) -> None:
        """PAX sparse 1.0 keeps its map in the data area: count it before it is read.

        0.1 keeps it in one record (counted here), 0.0 in one record per
        fragment (bounded by the record count).
        """
        header = _blocks(self.size)
        records = fileobj.peek(header)[:header]
        if b" GNU.sparse.map=" in records:  # 0.1: "offset,size,offset,size,..."
            self._check_sparse_count((records.count(b",") + 1) // 2)
        if not records.count(b"GNU.sparse.major=1\n"):
            return
        data = fileobj.peek(header + 2 * BLOCKSIZE)[header + BLOCKSIZE :]
        first = data.split(b"\n", 1)[0]
        try:
            fields = int(first)
        except ValueError:
            raise BadLayer(f"{self.context}: a sparse map is not readable") from None
        self._check_sparse_count(fields)

    def _check_sparse_count(self, count: int) -> None:
        if count > MAX_SPARSE_ENTRIES:
            raise self._sparse_refused(count)

    def _sparse_refused(self, count: int) -> UnsafeLayer:
        return self._refuse(
            f"a sparse file of {count} or more fragments "
            f"(at most {MAX_SPARSE_ENTRIES} are accepted)"
        )

    @classmethod
    def for_layer(cls, context: str) -> type[BoundedTarInfo]:
        """The class to hand to ``tarfile.open``, naming ``context`` in its errors."""
        return type("LayerTarInfo", (cls,), {"context": context})


def _blocks(count: int) -> int:
    """``count`` rounded up to whole tar blocks."""
    return -(-count // BLOCKSIZE) * BLOCKSIZE


def _count_records(buf: bytes) -> int:
    """An upper bound of the records in a PAX header (each ends with a newline)."""
    return buf.count(b"\n")


def check_header(member: tarfile.TarInfo, context: str) -> None:
    """Refuse numbers in ``member`` that no file system can take."""

    def bad(field: str, value: object) -> BadLayer:
        return BadLayer(
            f"{context}: entry '{show_name(member.name)}' has an impossible {field} "
            f"({str(value)[:40]}) in its tar header",
            hint="the layer is corrupt or forged; ask the image's owner to rebuild it",
        )

    mtime = member.mtime
    if not isinstance(mtime, int | float) or not math.isfinite(mtime):
        raise bad("modification time", mtime)
    if not -_MAX_MTIME <= mtime <= _MAX_MTIME:
        raise bad("modification time", mtime)
    numbers = [("uid", member.uid, _MAX_ID), ("gid", member.gid, _MAX_ID)]
    numbers += [("size", member.size, 1 << 63), ("mode", member.mode, 0o7777777)]
    if member.ischr() or member.isblk():
        numbers += [("device major", member.devmajor, _MAX_DEV)]
        numbers += [("device minor", member.devminor, _MAX_DEV)]
    for field, value, most in numbers:
        if not isinstance(value, int) or not 0 <= value <= most:
            raise bad(field, oct(value) if field == "mode" and isinstance(value, int) else value)
