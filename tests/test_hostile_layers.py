"""Hostile layers (issue 10): every one refused or contained with a clear message.

The layers come from :mod:`hostile_layers`. Each is run through both ways
the engine applies a layer (``apply_layer`` straight from the blob, and
``unpack_layer`` + ``apply_layerfs`` as production does); then a few go
through ``wishbot apply`` as a subprocess next to good images, which must
still be published.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import struct
import subprocess
import sys
import tarfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_layers import REFUSED, pax_entry, sparse_tar, whiteout_written_dir
from tarspec import MEDIA, E, build_tar, snapshot, write_blob

from bot.core import layout
from bot.errors import BadLayer, PublisherError, UnsafeLayer, WishbotError
from bot.publisher.flatten import apply_layerfs
from bot.publisher.tarheader import show_name
from bot.publisher.unpack import UNLIMITED, LayerStats, Limits, apply_layer, unpack_layer
from bot.sandbox.image_builder import push_image
from bot.sandbox.registry_server import LocalRegistry


def flat(work: Path, blobs: list[Path], limits: Limits = UNLIMITED) -> list[LayerStats]:
    return [
        apply_layer(work / "root", blob, MEDIA["tar"], limits=limits, context=f"img L{i}")
        for i, blob in enumerate(blobs)
    ]


def via_layerfs(work: Path, blobs: list[Path], limits: Limits = UNLIMITED) -> list[LayerStats]:
    out = []
    for i, blob in enumerate(blobs):
        layerfs = work / f"layer{i}" / "layerfs"
        out.append(unpack_layer(blob, MEDIA["tar"], layerfs, limits=limits, context=f"img L{i}"))
        apply_layerfs(work / "root", layerfs, context=f"img L{i}")
    return out


RUNNERS = [flat, via_layerfs]


def blobs_of(work: Path, *tars: bytes) -> list[Path]:
    (work / "blobs").mkdir(exist_ok=True)
    return [write_blob(work / "blobs", tar)[1] for tar in tars]


def disk_usage(path: Path) -> int:
    """Bytes actually allocated below ``path`` (holes do not count)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_header_is_refused_clearly(
    run: Callable[..., list[LayerStats]], case: str, tmp_path: Path
) -> None:
    build, message = REFUSED[case]
    (blob,) = blobs_of(tmp_path, build())
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(WishbotError) as caught:
            run(tmp_path, [blob])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(caught.value, BadLayer | UnsafeLayer), caught.value
    assert re.search(message, str(caught.value)), str(caught.value)
    assert str(caught.value).startswith("img L0: ")
    assert time.monotonic() - started < 10  # never minutes under the publisher lock
    assert peak < 64 << 20, peak  # bounded memory, whatever the header claims
    assert disk_usage(tmp_path) - disk_usage(tmp_path / "blobs") < 1 << 20  # bounded disk


@pytest.mark.parametrize("fmt", ["gnu", "0.0", "0.1", "1.0"])
def test_sparse_files_count_expanded(fmt: str, tmp_path: Path) -> None:
    """409 bytes of tar cannot become 1.7 GB: the holes count against max_layer_bytes."""
    tar = sparse_tar(tmp_path, fmt, apparent=1_700_000_000)
    assert len(tar) < 16 << 10
    (blob,) = blobs_of(tmp_path, tar)
    for run in RUNNERS:
        work = tmp_path / run.__name__
        with pytest.raises(UnsafeLayer, match=r"is larger than the limit.*a sparse file"):
            run(work, [blob], Limits(max_bytes=64 << 20, max_entries=100))
        assert disk_usage(work) < 1 << 20


@pytest.mark.parametrize("fmt", ["gnu", "0.0", "0.1", "1.0"])
def test_sparse_files_within_the_limit_unpack_exactly(fmt: str, tmp_path: Path) -> None:
    tar = sparse_tar(tmp_path, fmt, apparent=3 << 20, data=b"head")
    (blob,) = blobs_of(tmp_path, tar)
    for run in RUNNERS:
        work = tmp_path / run.__name__
        (stats,) = run(work, [blob], Limits(max_bytes=8 << 20, max_entries=100))
        data = (work / "root" / "big").read_bytes()
        assert len(data) == 3 << 20 and data[:4] == b"head" and data[4:].count(0) == len(data) - 4
        assert stats.file_bytes == 3 << 20 or run is via_layerfs


def test_many_sparse_files_are_counted_together(tmp_path: Path) -> None:
    """Five 3 MiB sparse files (a few KB of tar) do not fit an 8 MiB budget together."""
    tar = sparse_tar(tmp_path, "1.0", apparent=3 << 20, files=5)
    assert len(tar) < 64 << 10
    (blob,) = blobs_of(tmp_path, tar)
    for run in RUNNERS:
        with pytest.raises(UnsafeLayer, match="beyond 8388608 bytes"):
            run(tmp_path / run.__name__, [blob], Limits(max_bytes=8 << 20, max_entries=100))


@pytest.mark.parametrize("run", RUNNERS)
def test_long_names_are_cut_in_messages(
    run: Callable[..., list[LayerStats]], tmp_path: Path
) -> None:
    name = "d/" + "n" * 900_000  # a PAX path: far beyond what a file system takes
    (blob,) = blobs_of(tmp_path, build_tar([E(name, data=b"1")]))
    with pytest.raises(PublisherError) as caught:
        run(tmp_path, [blob])
    text = str(caught.value)
    assert len(text) < 2000, len(text)
    assert "… (900002 bytes)" in text


@pytest.mark.parametrize("run", RUNNERS)
def test_names_that_are_not_utf8_print_safely(
    run: Callable[..., list[LayerStats]], tmp_path: Path
) -> None:
    name = b"\xff\xfe-evil\x1b[31m".decode("utf-8", "surrogateescape")
    tar = build_tar([E(name, "hardlink", link="/etc/passwd")], fmt=tarfile.GNU_FORMAT)
    (blob,) = blobs_of(tmp_path, tar)
    with pytest.raises(UnsafeLayer) as caught:
        run(tmp_path, [blob])
    text = str(caught.value)
    text.encode("utf-8")  # printable on any terminal: no lone surrogates
    assert "entry '\\xff\\xfe-evil\\x1b[31m'" in text
    assert "\x1b" not in text


def test_show_name() -> None:
    assert show_name("usr/bin/ls") == "usr/bin/ls"
    assert show_name("a" * (8 << 20)) == "a" * 200 + "… (8388608 bytes)"
    assert show_name("x\u202eevil") == "x\\u202eevil"  # bidi override escaped
    assert show_name("é") == "é"


@pytest.mark.parametrize("order", ["whiteout-last", "whiteout-first"])
def test_whiteout_of_a_directory_the_layer_writes_into(order: str, tmp_path: Path) -> None:
    """apply_layer (the bench's API) and the production path give the same tree."""
    lower, upper = whiteout_written_dir()
    if order == "whiteout-first":
        upper = [upper[-1], *upper[:-1]]
    blobs = blobs_of(tmp_path, build_tar(lower), build_tar(upper))
    flat(tmp_path / "a", blobs)
    via_layerfs(tmp_path / "b", blobs)
    a, b = tmp_path / "a" / "root", tmp_path / "b" / "root"
    assert snapshot(a) == snapshot(b)
    assert sorted(os.listdir(a / "d")) == ["mine", "sub"]  # lower content hidden
    assert (a / "keep").read_bytes() == b"k"
    assert stat.S_IMODE(os.lstat(a / "d").st_mode) == 0o755  # not the lower 0700


# --- through wishbot apply, next to good images -------------------------------

GOOD = build_tar([E("etc/", "dir"), E("etc/os-release", data=b"ID=good\n")])


def test_bad_layers_fail_their_image_and_the_others_publish(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    bad_mtime = REFUSED["pax-mtime-1e300"][0]()
    bad_name = build_tar(
        [E(b"\xffbad\x1b]".decode("utf-8", "surrogateescape"), "hardlink", link="/etc/shadow")],
        fmt=tarfile.GNU_FORMAT,
    )
    images = {
        "a-good": [GOOD],
        "b-mtime": [GOOD, bad_mtime],
        "c-name": [bad_name],
        "d-good": [GOOD, build_tar([E("app", data=b"d\n")])],
    }
    for tag, layers in images.items():
        push_image(registry.url, unique_repo, tag, layers, cmd=["/bin/sh"])
    tree = tmp_path / "publisher"
    wishlist = tmp_path / "wishlist.yaml"
    wishlist.write_text(
        "version: 1\nuser: t\ncvmfs_repo: 'unpacked.example.org'\n"
        f"output_format: '{registry.host}/thin/$(image)'\ninput:\n"
        + "".join(f"  - '{registry.host}/{unique_repo}:{tag}'\n" for tag in images)
    )
    env = {
        **os.environ,
        "WISHBOT_INSECURE_REGISTRIES": registry.host,
        "WISHBOT_BACKOFF": "0.01",
        "PYTHONIOENCODING": "utf-8",
    }
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bot", "apply", str(wishlist)),
            *("--publisher", f"local:{tree}", "--no-thin", "--now", "2025-03-01T00:00:00Z"),
        ],
        capture_output=True,
        env=env,
        timeout=300,
        check=False,
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 1, out + err
    assert "Traceback" not in err and "Traceback" not in out
    for tag in ("a-good", "d-good"):
        assert (tree / registry.host / f"{unique_repo}:{tag}" / "etc/os-release").is_file(), tag
        assert f"ok   add     {registry.host}/{unique_repo}:{tag}" in out
    for tag in ("b-mtime", "c-name"):
        assert not os.path.lexists(tree / registry.host / f"{unique_repo}:{tag}")
        assert f"wishbot: not converged: {registry.host}/{unique_repo}:{tag}" in err
    assert "has an impossible modification time (1e+300)" in out
    assert "entry '\\xffbad\\x1b]' is a hardlink to 'etc/shadow'" in out
    assert "\x1b" not in out + err
    leftovers = [n for n in os.listdir(tree / ".wishbot") if n.startswith(("txn-", "trash-"))]
    assert leftovers == []
    assert not list((tree / layout.LAYERS).glob("*/*/.metadata/*.tmp-*"))


CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # v2, effective, cap_net_raw


@pytest.mark.parametrize("run", RUNNERS)
def test_extended_attributes_are_kept_or_named(
    run: Callable[..., list[LayerStats]], tmp_path: Path
) -> None:
    records = {
        "SCHILY.xattr.security.capability": CAPABILITY.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.origin": "image",
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "LIBARCHIVE.xattr.user.from%20bsdtar": base64.b64encode(b"\x00\xff").decode(),
    }
    tar = pax_entry(records, name="usr/bin/ping", data=b"#!/bin/sh\n")
    (blob,) = blobs_of(tmp_path, tar)
    stats = run(tmp_path, [blob])
    ping = str(tmp_path / "root" / "usr/bin/ping")
    dropped = "\n".join(s for layer in stats for s in layer.dropped_xattrs)
    # never applied, always named
    assert "usr/bin/ping: trusted.overlay.opaque (not published" in dropped
    assert "trusted.overlay.opaque" not in os.listxattr(ping)
    # applied where the file system allows (ext4 and tmpfs do), named otherwise
    for name, value in (("user.origin", b"image"), ("user.from bsdtar", b"\x00\xff")):
        assert os.getxattr(ping, name) == value or f"ping: {name} (" in dropped
    if os.geteuid() == 0:  # setting file capabilities needs CAP_SETFCAP
        assert os.getxattr(ping, "security.capability") == CAPABILITY
    else:
        assert "security.capability" in dropped
