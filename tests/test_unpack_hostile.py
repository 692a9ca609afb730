"""Hostile layers: nothing is ever written outside the target directory."""

from __future__ import annotations

import os
import re
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from tarspec import MEDIA, E, build_tar, compress, snapshot, write_blob

from bot.errors import PublisherError, UnsafeLayer
from bot.publisher.flatten import apply_layerfs
from bot.publisher.unpack import UNLIMITED, LayerStats, Limits, apply_layer, unpack_layer


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(root, sentinel, blobs): the sentinel sits next to the root."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "secret").write_text("do not touch")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    return tmp_path / "root", sentinel, blobs


def _blobs(blobs: Path, layers: list[list[E]]) -> list[Path]:
    return [write_blob(blobs, compress(build_tar(layer), "gzip"))[1] for layer in layers]


def run_flat(root: Path, blobs: Path, layers: list[list[E]], **kw: object) -> list[LayerStats]:
    return [
        apply_layer(root, blob, MEDIA["gzip"], limits=UNLIMITED, context=f"img L{i}", **kw)  # type: ignore[arg-type]
        for i, blob in enumerate(_blobs(blobs, layers))
    ]


def run_layerfs(root: Path, blobs: Path, layers: list[list[E]], **kw: object) -> list[LayerStats]:
    out = []
    for i, blob in enumerate(_blobs(blobs, layers)):
        layerfs = root.parent / f"layer{i}" / "layerfs"
        out.append(
            unpack_layer(blob, MEDIA["gzip"], layerfs, limits=UNLIMITED, context=f"img L{i}", **kw)  # type: ignore[arg-type]
        )
        apply_layerfs(root, layerfs, context=f"img L{i}", **kw)  # type: ignore[arg-type]
    return out


RUNNERS = [run_flat, run_layerfs]


def untouched(tmp_path: Path, sentinel: Path, before: dict[str, tuple[object, ...]]) -> None:
    assert snapshot(sentinel) == before
    assert (sentinel / "secret").read_text() == "do not touch"
    assert os.stat(sentinel / "secret").st_nlink == 1
    allowed = {"root", "root2", "sentinel", "blobs"} | {f"layer{i}" for i in range(5)}
    assert {p.name for p in tmp_path.iterdir()} <= allowed


def rel_to_root(path: Path) -> str:
    return str(path).lstrip("/")


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize(
    ("name", "layers", "lands"),
    [
        ("dotdot", [[E("../../x", data=b"1")]], "x"),
        ("absolute", [[E("/etc/x", data=b"1")]], "etc/x"),
        (
            "symlink-to-root",
            [[E("evil", "symlink", link="/"), E("evil/etc/x", data=b"1")]],
            "etc/x",
        ),
        (
            "symlink-chain",
            [
                [
                    E("a", "symlink", link="b"),
                    E("b", "symlink", link="../../.."),
                    E("a/pwn", data=b"1"),
                ]
            ],
            "pwn",
        ),
        (
            "lower-layer-dotdot",
            [[E("up", "symlink", link="..")], [E("up/up/up/pwn", data=b"1")]],
            "pwn",
        ),
        (
            "dir-symlink-dotdot",
            [
                [E("d/", "dir"), E("d/up", "symlink", link="../../../..")],
                [E("d/up/pwn", data=b"1")],
            ],
            "pwn",
        ),
    ],
)
def test_escapes_stay_inside_the_root(
    run: Callable[..., list[LayerStats]],
    sandbox: tuple[Path, Path, Path],
    name: str,
    layers: list[list[E]],
    lands: str,
) -> None:
    root, sentinel, blobs = sandbox
    before = snapshot(sentinel)
    run(root, blobs, layers)
    assert (root / lands).read_bytes() == b"1", name
    untouched(root.parent, sentinel, before)


@pytest.mark.parametrize("run", RUNNERS)
def test_symlink_to_the_sentinel_is_followed_inside_the_root(
    run: Callable[..., list[LayerStats]], sandbox: tuple[Path, Path, Path]
) -> None:
    root, sentinel, blobs = sandbox
    before = snapshot(sentinel)
    up = "../" * 12
    run(
        root,
        blobs,
        [
            [E("abs", "symlink", link=str(sentinel)), E("abs/pwn", data=b"1")],
            [E("rel", "symlink", link=up + rel_to_root(sentinel)), E("rel/secret", data=b"2")],
        ],
    )
    inside = root / rel_to_root(sentinel)
    assert (inside / "pwn").read_bytes() == b"1"
    assert (inside / "secret").read_bytes() == b"2"
    untouched(root.parent, sentinel, before)


def test_hardlink_to_a_host_file_is_refused(sandbox: tuple[Path, Path, Path]) -> None:
    root, sentinel, blobs = sandbox
    before = snapshot(sentinel)
    for i, link in enumerate(["/etc/passwd", str(sentinel / "secret"), "../" * 9 + "etc/passwd"]):
        with pytest.raises(UnsafeLayer, match=f"img L0: entry 'hl{i}' .*not in the image"):
            run_flat(root, blobs, [[E(f"hl{i}", "hardlink", link=link)]])
    assert not list(root.iterdir())
    untouched(root.parent, sentinel, before)


def test_hardlink_through_a_symlink_is_refused(sandbox: tuple[Path, Path, Path]) -> None:
    root, sentinel, blobs = sandbox
    before = snapshot(sentinel)
    layer = [
        E("s", "symlink", link=str(sentinel.parent)),
        E("h", "hardlink", link=f"s/{sentinel.name}/secret"),
    ]
    with pytest.raises(UnsafeLayer, match="entry 'h'"):
        run_flat(root, blobs, [layer])
    untouched(root.parent, sentinel, before)
    # layerfs: recorded as a link to a lower layer, then refused when applied
    with pytest.raises(UnsafeLayer, match="entry 'h'"):
        run_layerfs(root.parent / "root2", blobs, [layer])
    untouched(root.parent, sentinel, before)


def test_hardlink_to_a_directory_is_refused(sandbox: tuple[Path, Path, Path]) -> None:
    root, _, blobs = sandbox
    with pytest.raises(UnsafeLayer, match="entry 'h' is a hardlink to the directory"):
        run_flat(root, blobs, [[E("d/", "dir"), E("h", "hardlink", link="d")]])


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize("marker", ["a/.wh..", "a/.wh...", ".wh..", ".wh...", "a/.wh."])
def test_whiteout_of_dot_or_dotdot_is_refused(
    run: Callable[..., list[LayerStats]], sandbox: tuple[Path, Path, Path], marker: str
) -> None:
    root, sentinel, blobs = sandbox
    before = snapshot(sentinel)
    lower = [E("a/", "dir"), E("a/keep", data=b"k")]
    with pytest.raises(UnsafeLayer, match=f"entry '{marker.replace('.', '[.]')}'"):
        run(root, blobs, [lower, [E(marker)]])
    assert (root / "a" / "keep").exists()
    untouched(root.parent, sentinel, before)


@pytest.mark.parametrize("run", RUNNERS)
def test_devices_are_skipped_when_not_root(
    run: Callable[..., list[LayerStats]], sandbox: tuple[Path, Path, Path]
) -> None:
    root, _, blobs = sandbox
    layer = [
        E("dev/", "dir"),
        E("dev/null", "char", dev=(1, 3)),
        E("dev/sda", "block", dev=(8, 0)),
        E("dev/pipe", "fifo"),
        E("dev/ok", data=b"x"),
    ]
    stats = run(root, blobs, [layer], privileged=False)
    assert set(stats[0].skipped) == {"dev/null", "dev/sda", "dev/pipe"}
    assert sorted(p.name for p in (root / "dev").iterdir()) == ["ok"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create device nodes")
@pytest.mark.parametrize("run", RUNNERS)
def test_devices_and_ownership_as_root(
    run: Callable[..., list[LayerStats]], sandbox: tuple[Path, Path, Path]
) -> None:
    root, _, blobs = sandbox
    layer = [
        E("dev/", "dir", uid=7, gid=8),
        E("dev/null", "char", dev=(1, 3), mode=0o666),
        E("dev/sda", "block", dev=(8, 0), mode=0o666),
        E("dev/pipe", "fifo", mode=0o640),
        E("home/", "dir"),
        E("home/u/", "dir", uid=1234, gid=5678, mode=0o750),
        E("home/u/f", data=b"x", uid=1234, gid=5678, mode=0o4750),
        E("home/u/l", "symlink", link="f", uid=1234, gid=99),
    ]
    stats = run(root, blobs, [layer])
    # device nodes are never published, even as root (a 0666 block device in the
    # publisher's tree is its disk); fifos are, with exactly the tar's mode
    assert set(stats[0].skipped) == {"dev/null", "dev/sda"}
    assert sorted(p.name for p in (root / "dev").iterdir()) == ["pipe"]
    st = os.lstat(root / "dev" / "pipe")
    assert stat.S_ISFIFO(st.st_mode) and (st.st_mode & 0o7777) == 0o640
    assert os.stat(root / "dev").st_uid == 7
    f = os.stat(root / "home" / "u" / "f")
    assert (f.st_uid, f.st_gid, f.st_mode & 0o7777) == (1234, 5678, 0o4750)  # setuid survives chown
    assert os.lstat(root / "home" / "u" / "l").st_gid == 99
    assert (os.stat(root / "home" / "u").st_mode & 0o7777) == 0o750


def test_entry_count_bomb(sandbox: tuple[Path, Path, Path]) -> None:
    root, _, blobs = sandbox
    (blob,) = _blobs(blobs, [[E(f"f{i}", data=b"") for i in range(50)]])
    with pytest.raises(UnsafeLayer, match=r"img: layer has more than 10 entries \(at 'f10'\)"):
        apply_layer(root, blob, MEDIA["gzip"], limits=Limits(1 << 30, 10), context="img")
    assert len(list(root.iterdir())) == 10


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_size_bomb(sandbox: tuple[Path, Path, Path], kind: str) -> None:
    root, _, blobs = sandbox
    tar = build_tar([E(f"zeros{i}", data=b"\0" * (256 << 10)) for i in range(32)])
    _, blob = write_blob(blobs, compress(tar, kind))
    assert blob.stat().st_size < 1 << 20
    with pytest.raises(UnsafeLayer, match="img: layer expands beyond 1048576 bytes"):
        unpack_layer(blob, MEDIA[kind], root, limits=Limits(1 << 20, 100), context="img")
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total <= 2 << 20


def test_one_huge_entry_is_refused_before_writing(sandbox: tuple[Path, Path, Path]) -> None:
    root, _, blobs = sandbox
    (blob,) = _blobs(blobs, [[E("zeros", data=b"\0" * (4 << 20))]])
    with pytest.raises(UnsafeLayer, match="img: entry 'zeros' is larger than the limit"):
        apply_layer(root, blob, MEDIA["gzip"], limits=Limits(1 << 20, 100), context="img")
    assert not (root / "zeros").exists()


def test_symlink_loop_is_refused(sandbox: tuple[Path, Path, Path]) -> None:
    root, _, blobs = sandbox
    layer = [E("a", "symlink", link="b"), E("b", "symlink", link="a"), E("a/x", data=b"1")]
    with pytest.raises(UnsafeLayer, match="entry 'a/x' goes through too many levels"):
        run_flat(root, blobs, [layer])


def test_file_used_as_a_directory_is_refused(sandbox: tuple[Path, Path, Path]) -> None:
    root, _, blobs = sandbox
    with pytest.raises(UnsafeLayer, match="entry 'f/x' needs 'f' to be a directory"):
        run_flat(root, blobs, [[E("f", data=b"1"), E("f/x", data=b"2")]])


def test_whiteout_through_a_symlink_cannot_delete_outside(
    sandbox: tuple[Path, Path, Path],
) -> None:
    root, sentinel, blobs = sandbox
    before = snapshot(sentinel)
    run_flat(
        root,
        blobs,
        [
            [E("s", "symlink", link=str(sentinel))],
            [E("s/.wh.secret"), E("s/.wh..wh..opq"), E("up", "symlink", link="../../..")],
            [E("up/.wh.sentinel"), E(f"up/{sentinel.name}/.wh..wh..opq")],
        ],
    )
    untouched(root.parent, sentinel, before)


@pytest.mark.parametrize("run", RUNNERS)
def test_markers_never_appear_in_the_flat_image(
    run: Callable[..., list[LayerStats]], sandbox: tuple[Path, Path, Path]
) -> None:
    root, _, blobs = sandbox
    lower = [E("d/", "dir"), E("d/foo", data=b"1"), E("d/bar", data=b"2")]
    upper = [
        E("d/.wh.foo/", "dir"),
        E("d/.wh.foo/inside", data=b"x"),
        E("d/.wh..wh.plnk/", "dir"),
        E("d/.wh..wh.plnk/x", data=b"x"),
        E("./", "dir", mode=0o700),
    ]
    run(root, blobs, [lower, upper])
    assert sorted(p.name for p in (root / "d").iterdir()) == ["bar"]
    assert os.stat(root).st_mode & 0o777 != 0o700  # "./" does not change the root


def test_forged_giant_header_is_refused_without_buffering(sandbox: tuple[Path, Path, Path]) -> None:
    root, _, blobs = sandbox
    header = tarfile.TarInfo("pax")
    header.type = tarfile.XHDTYPE
    header.size = 6 << 30  # a PAX header that claims 6 GiB
    data = build_tar([E("ok", data=b"1")])[:1024] + header.tobuf(tarfile.USTAR_FORMAT)
    data += b"\0" * (1 << 20)
    _, blob = write_blob(blobs, compress(data, "gzip"))
    with pytest.raises(UnsafeLayer, match="img: a tar header claims"):
        apply_layer(root, blob, MEDIA["gzip"], limits=UNLIMITED, context="img")


def test_layerfs_without_sidecar_is_refused(tmp_path: Path) -> None:
    (tmp_path / "layer" / "layerfs").mkdir(parents=True)
    with pytest.raises(PublisherError, match="img: the layer has no sidecar"):
        apply_layerfs(tmp_path / "root", tmp_path / "layer" / "layerfs", context="img")


def test_disk_errors_name_the_entry(tmp_path: Path) -> None:
    long_name = "d/" + "x" * 300  # longer than NAME_MAX: the file system refuses it
    _, blob = write_blob(tmp_path, build_tar([E("d/", "dir"), E(long_name, data=b"1")]))
    # names longer than 200 characters are cut in messages, with their length
    shown = f"{long_name[:200]}… (302 bytes)"
    with pytest.raises(
        PublisherError, match=f"img: cannot write entry '{re.escape(shown)}'.*File name too"
    ):
        apply_layer(tmp_path / "root", blob, MEDIA["tar"], limits=UNLIMITED, context="img")
