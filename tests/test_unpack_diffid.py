"""diffID computation and decompression detection of the tar engine."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import zstandard
from tarspec import MEDIA, E, build_tar, compress, sha, write_blob

from bot.errors import BadLayer
from bot.publisher.unpack import (
    UNLIMITED,
    apply_layer,
    detect_compression,
    open_layer,
    unpack_layer,
)

TAR = build_tar(
    [
        E("etc/", "dir"),
        E("etc/hello", data=b"hello\n" * 1000),
        E("bin/", "dir"),
        E("bin/sh", data=bytes(range(256)) * 64, mode=0o755),
    ]
)


@pytest.mark.parametrize("kind", ["gzip", "zstd", "tar"])
def test_diff_id_is_sha256_of_the_uncompressed_stream(tmp_path: Path, kind: str) -> None:
    _, blob = write_blob(tmp_path, compress(TAR, kind))
    stats = unpack_layer(
        blob, MEDIA[kind], tmp_path / "l" / "layerfs", limits=UNLIMITED, context="t"
    )
    assert stats.diff_id == sha(TAR)
    assert stats.unpacked_size == len(TAR)
    assert stats.entries == 4
    assert (tmp_path / "l" / "layerfs" / "etc" / "hello").read_bytes() == b"hello\n" * 1000
    flat = apply_layer(tmp_path / "flat", blob, MEDIA[kind], limits=UNLIMITED, context="t")
    assert flat.diff_id == sha(TAR)


def test_diff_id_covers_bytes_after_the_end_of_archive(tmp_path: Path) -> None:
    data = TAR + b"\0" * 4096 + b"trailing bytes tar readers skip"
    _, blob = write_blob(tmp_path, compress(data, "gzip"))
    stats = apply_layer(tmp_path / "flat", blob, MEDIA["gzip"], limits=UNLIMITED, context="t")
    assert stats.diff_id == sha(data) != sha(TAR)
    assert stats.unpacked_size == len(data)


@pytest.mark.parametrize(
    ("kind", "label"),
    [("gzip", "tar"), ("zstd", "gzip"), ("tar", "gzip"), ("tar", "zstd"), ("gzip", "weird/type")],
)
def test_magic_bytes_win_over_a_lying_media_type(tmp_path: Path, kind: str, label: str) -> None:
    _, blob = write_blob(tmp_path, compress(TAR, kind))
    media = MEDIA.get(label, label)
    stats = unpack_layer(blob, media, tmp_path / "l" / "layerfs", limits=UNLIMITED, context="t")
    assert stats.diff_id == sha(TAR)
    with open_layer(blob, media) as stream:
        assert stream.read() == TAR


def test_detect_compression() -> None:
    assert detect_compression(MEDIA["tar"], gzip.compress(b"x")[:8]) == "gzip"
    assert (
        detect_compression(MEDIA["gzip"], zstandard.ZstdCompressor().compress(b"x")[:8]) == "zstd"
    )
    assert detect_compression(MEDIA["gzip"], TAR[:8]) == "tar"


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path: Path) -> None:
    half = len(TAR) // 2
    multi_gz = gzip.compress(TAR[:half]) + gzip.compress(TAR[half:])
    cctx = zstandard.ZstdCompressor()
    multi_zst = cctx.compress(TAR[:half]) + cctx.compress(TAR[half:])
    for data, kind in ((multi_gz, "gzip"), (multi_zst, "zstd")):
        _, blob = write_blob(tmp_path, data)
        stats = apply_layer(tmp_path / kind, blob, MEDIA[kind], limits=UNLIMITED, context="t")
        assert stats.diff_id == sha(TAR)
        assert (tmp_path / kind / "bin" / "sh").stat().st_mode & 0o777 == 0o755


def test_empty_layer(tmp_path: Path) -> None:
    zeros = b"\0" * 1024
    _, blob = write_blob(tmp_path, gzip.compress(zeros))
    stats = unpack_layer(
        blob, MEDIA["gzip"], tmp_path / "l" / "layerfs", limits=UNLIMITED, context="t"
    )
    assert stats.diff_id == "sha256:" + hashlib.sha256(zeros).hexdigest()
    assert stats.entries == 0
    assert list((tmp_path / "l" / "layerfs").iterdir()) == []


def test_corrupt_and_truncated_layers_are_reported(tmp_path: Path) -> None:
    good = compress(TAR, "gzip")
    corrupt = good[:20] + bytes(b ^ 0xFF for b in good[20:60]) + good[60:]
    _, blob = write_blob(tmp_path, corrupt)
    with pytest.raises(BadLayer, match="image x layer 1"):
        apply_layer(
            tmp_path / "a", blob, MEDIA["gzip"], limits=UNLIMITED, context="image x layer 1"
        )
    _, blob = write_blob(tmp_path, good[: len(good) // 2])
    with pytest.raises(BadLayer, match=r"truncated|not a valid tar"):
        apply_layer(tmp_path / "b", blob, MEDIA["gzip"], limits=UNLIMITED, context="t")
    _, blob = write_blob(tmp_path, TAR[:2000])
    with pytest.raises(BadLayer, match="not a valid tar"):
        apply_layer(tmp_path / "c", blob, MEDIA["tar"], limits=UNLIMITED, context="t")


def test_limits_from_config() -> None:
    from bot.config import Config
    from bot.publisher.unpack import Limits

    limits = Limits.from_config(Config(max_layer_bytes=123, max_layer_entries=45))
    assert limits == Limits(max_bytes=123, max_entries=45)
