"""Hostile layers, written from issue 10 ("Layers, crashes and the disk").

Each builder returns the bytes of an uncompressed tar that attacks one class
of defence of the tar engine; :data:`REFUSED` pairs every such layer with the
message that must refuse it (a typed error naming the layer and the entry,
never a traceback). The headers are forged by hand where :mod:`tarfile`
would not write them (impossible numbers, sparse maps); sparse files are made
by GNU tar from a real sparse file.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from tarspec import E, build_tar

BLOCK = 512


def pax_entry(records: dict[str, str], name: str = "f", data: bytes = b"x") -> bytes:
    """A file whose PAX extended header carries ``records`` verbatim."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.pax_headers = records
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def gnu_entry(name: str, kind: bytes = tarfile.CHRTYPE, **numbers: int) -> bytes:
    """One GNU-format header with numbers too big for octal (written base-256)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    for field, value in numbers.items():
        setattr(info, field, value)
    return info.tobuf(tarfile.GNU_FORMAT) + b"\0" * (2 * BLOCK)


def pax_record(key: str, value: str) -> bytes:
    """One PAX record, ``"<length> key=value\n"`` (the length counts itself)."""
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def global_records(count: int) -> bytes:
    """A PAX global header of ``count`` records, then a few ordinary files.

    Written by hand: :mod:`tarfile`'s own writer takes minutes for 150,000.
    """
    data = b"".join(pax_record(f"comment.{i}", "x") for i in range(count))
    header = tarfile.TarInfo("pax_global_header")
    header.type = tarfile.XGLTYPE
    header.size = len(data)
    files = build_tar([E(f"f{i}") for i in range(3)], fmt=tarfile.USTAR_FORMAT)
    return header.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % BLOCK) + files


def long_gnu_name(size: int) -> bytes:
    """A GNU long name (``././@LongLink``) of ``size`` bytes."""
    return build_tar([E("d/" + "n" * (size - 2), data=b"1")], fmt=tarfile.GNU_FORMAT)


def sparse_tar(
    directory: Path, fmt: str, *, apparent: int, data: bytes = b"409 bytes", files: int = 1
) -> bytes:
    """GNU tar's archive of sparse files ``big`` (or ``big0``…): ``data`` at offset
    0, ``apparent`` bytes long.

    ``fmt``: ``gnu`` (old GNU sparse, type ``S``) or ``0.0``/``0.1``/``1.0``
    (PAX sparse versions).
    """
    tar = shutil.which("tar")
    assert tar is not None, "GNU tar is needed to write sparse archives"
    work = directory / f"sparse-{fmt}-{files}"
    work.mkdir(parents=True, exist_ok=True)
    names = ["big"] if files == 1 else [f"big{i}" for i in range(files)]
    for name in names:
        with open(work / name, "wb") as handle:
            handle.write(data)
            handle.truncate(apparent)
    args = ["--format=gnu"] if fmt == "gnu" else ["--format=posix", f"--sparse-version={fmt}"]
    out = work / "layer.tar"
    subprocess.run(
        [tar, *args, "--sparse", "-cf", str(out), "-C", str(work), *names],
        check=True,
        capture_output=True,
    )
    for name in names:
        (work / name).unlink()
    return out.read_bytes()


def old_gnu_sparse_fragments(count: int) -> bytes:
    """An old GNU sparse header that announces ``count`` fragments in extension blocks."""
    header = bytearray(tarfile.TarInfo("s").tobuf(tarfile.GNU_FORMAT))
    header[156:157] = b"S"
    header[124:136] = b"%011o\0" % count  # stored bytes: one per fragment
    header[483:495] = b"%011o\0" % (count * 2)  # real size
    header[482] = 1  # isextended
    blocks = []
    written = 0
    while written < count:
        block = bytearray(BLOCK)
        for slot in range(21):
            if written == count:
                break
            block[slot * 24 : slot * 24 + 12] = b"%011o\0" % (2 * written + 1)
            block[slot * 24 + 12 : slot * 24 + 24] = b"%011o\0" % 1
            written += 1
        block[504] = 1 if written < count else 0
        blocks.append(bytes(block))
    _fix_checksum(header)
    data = b"x" * count
    padding = b"\0" * (-len(data) % BLOCK)
    return bytes(header) + b"".join(blocks) + data + padding + b"\0" * (2 * BLOCK)


def pax_sparse_10_fragments(count: int) -> bytes:
    """A PAX 1.0 sparse file whose map (in the data area) claims ``count`` fragments."""
    records = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "s",
        "GNU.sparse.realsize": str(count * 2),
    }
    body = f"{count}\n1\n1\n".encode()
    body += b"\0" * (-len(body) % BLOCK) + b"x"
    return pax_entry(records, name="GNUSparseFile.0/s", data=body)


def _fix_checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)


def whiteout_written_dir() -> tuple[list[E], list[E]]:
    """(lower, upper): the upper layer writes into ``d`` and whites ``d`` out after."""
    lower = [E("d/", "dir", mode=0o700), E("d/lower", data=b"lower"), E("keep", data=b"k")]
    upper = [E("d/mine", data=b"mine"), E("d/sub/deep", data=b"deep"), E(".wh.d")]
    return lower, upper


#: name -> (builder, message that must refuse it)
REFUSED: dict[str, tuple[Callable[[], bytes], str]] = {
    "pax-mtime-1e300": (
        lambda: pax_entry({"mtime": "1e300"}),
        r"entry 'f' has an impossible modification time \(1e\+300\)",
    ),
    "pax-mtime-nan": (
        lambda: pax_entry({"mtime": "nan"}),
        r"entry 'f' has an impossible modification time \(nan\)",
    ),
    "pax-mtime-negative-huge": (
        lambda: pax_entry({"mtime": "-1e300"}),
        r"impossible modification time \(-1e\+300\)",
    ),
    "pax-uid-huge": (
        lambda: pax_entry({"uid": "9" * 30}),
        r"entry 'f' has an impossible uid \(9{30}\)",
    ),
    "gnu-gid-negative": (
        lambda: gnu_entry("g", tarfile.REGTYPE, gid=-5),
        r"entry 'g' has an impossible gid \(-5\)",
    ),
    "gnu-device-major-huge": (
        lambda: gnu_entry("dev/x", tarfile.BLKTYPE, devmajor=1 << 40),
        r"entry 'dev/x' has an impossible device major \(1099511627776\)",
    ),
    "pax-size-negative": (
        lambda: pax_entry({"size": "-5"}),
        r"entry 'f' has an impossible size \(-5\)",
    ),
    "pax-global-150k-records": (
        lambda: global_records(150_000),
        r"claims \d+ bytes for a PAX header|a PAX header with 150000 records",
    ),
    "pax-global-too-many": (
        lambda: global_records(100),
        r"PAX global headers with 100 records \(at most 64",
    ),
    "pax-extended-20k-records": (
        lambda: pax_entry({f"x.{i}": "v" for i in range(20_000)}),
        r"a PAX header with 20000 records",
    ),
    "gnu-long-name-8mb": (
        lambda: long_gnu_name(8 << 20),
        r"a tar header claims 8388609 bytes for a GNU long name",
    ),
    "old-gnu-sparse-fragments": (
        lambda: old_gnu_sparse_fragments(70_000),
        r"a sparse file of 655\d\d or more fragments",
    ),
    "pax-sparse-0.1-fragments": (
        lambda: pax_entry(
            {
                "GNU.sparse.size": "200000",
                "GNU.sparse.numblocks": "100000",
                "GNU.sparse.map": ",".join(f"{2 * i},1" for i in range(100_000)),
            }
        ),
        r"a sparse file of 100000 or more fragments",
    ),
    "pax-sparse-1.0-fragments": (
        lambda: pax_sparse_10_fragments(10_000_000),
        r"a sparse file of 10000000 or more fragments",
    ),
}
