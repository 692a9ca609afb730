"""Flat images against an independent implementation (umoci) and against each other.

The image is a real OCI image layout written by hand (index.json, oci-layout,
blobs) with layers that exercise every rule: whiteouts, opaque directories
(markers before and after the layer's own entries), type changes in both
directions, hardlinks within and across layers, ``lib -> usr/lib`` followed
by ``lib/x``, deep paths, unicode and > 100 character names (PAX), an empty
layer, setuid/setgid/sticky bits and read-only directories.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tarspec import MEDIA, E, build_tar, compress, oci_layout, snapshot, write_blob

from bot.core.model import ImageConfig
from bot.publisher.flatten import apply_layerfs, write_singularity_metadata
from bot.publisher.unpack import UNLIMITED, apply_layer, unpack_layer

DEEP = "/".join(f"d{i}" for i in range(40))
LONG = "long/" + "x" * 150 + ".txt"
MTIME = 1_500_000_000

LOWER = [
    E("etc/", "dir"),
    E("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
    E("etc/old", data=b"old"),
    E("usr/", "dir"),
    E("usr/lib/", "dir"),
    E("usr/bin/", "dir"),
    E("usr/lib/base.so", data=b"base"),
    E("lib", "symlink", link="usr/lib"),
    E("usr/bin/tool", data=b"tool", mode=0o4755, mtime=MTIME),
    E("usr/bin/sg", data=b"sg", mode=0o2711),
    E("tmp/", "dir", mode=0o1777),
    E("usr/bin/a", data=b"A"),
    E("usr/bin/hl", "hardlink", link="usr/bin/a"),
    E("opq/", "dir"),
    E("opq/x", data=b"x"),
    E("opq/sub/", "dir"),
    E("opq/sub/y", data=b"y"),
    E("opq2/", "dir"),
    E("opq2/lower", data=b"l"),
    E("wh/", "dir"),
    E("wh/gone", data=b"g"),
    E("wh/keep", data=b"k"),
    E("wh/dir/", "dir"),
    E("wh/dir/inner", data=b"i"),
    E("f2d", data=b"file"),
    E("d2f/", "dir"),
    E("d2f/inner", data=b"i"),
    E("s2d", "symlink", link="etc"),
    E("d2s/", "dir"),
    E("d2s/c", data=b"c"),
    E("f2s", data=b"f"),
    E("s2f", "symlink", link="etc/passwd"),
    E(DEEP + "/file", data=b"deep"),
    E("ünïcödé/", "dir"),
    E("ünïcödé/файл.txt", data="ü".encode()),
    E("long/", "dir"),
    E(LONG, data=b"long"),
    E("ro/", "dir", mode=0o555),
    E("ro/f", data=b"r", mode=0o444),
    E("bin/", "dir"),
    E("bin/sh", data=b"#!shell\n" * 100, mode=0o755),
]
EMPTY: list[E] = []
UPPER = [
    E("lib/libfoo.so", data=b"foo"),
    E("wh/.wh.gone"),
    E("wh/.wh.dir"),
    E("opq/", "dir"),
    E("opq/new", data=b"n"),
    E("opq/.wh..wh..opq"),
    E("opq/after", data=b"a"),
    E("opq2/.wh..wh..opq"),
    E("f2d/", "dir"),
    E("f2d/child", data=b"ch"),
    E("d2f", data=b"now a file"),
    E("s2d/", "dir"),
    E("s2d/c", data=b"c"),
    E("d2s", "symlink", link="usr"),
    E("f2s", "symlink", link="bin/sh"),
    E("s2f", data=b"plain"),
    E("usr/bin/hl2", "hardlink", link="usr/bin/a"),
    E("usr/bin/shl", "hardlink", link="bin/sh"),
    E("etc/.wh.old"),
    E("ro/g", data=b"g"),
    E("newdir/sub/", "dir", mode=0o700),
    E("newdir/sub/f", data=b"f", mode=0o600),
]
TOP = [
    E("usr/bin/a", data=b"A2"),  # replaces a file that two hardlinks share
    E("opq/.wh.after"),
]


def _layers() -> list[bytes]:
    return [build_tar(layer) for layer in (LOWER, EMPTY, UPPER, TOP)]


def _umoci(tmp_path: Path, tars: list[bytes]) -> Path:
    image = tmp_path / "image"
    oci_layout(image, [(tar, "gzip") for tar in tars])
    bundle = tmp_path / "bundle"
    result = subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{image}:t", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return bundle / "rootfs"


def _flat(tmp_path: Path, tars: list[bytes], kind: str) -> Path:
    root = tmp_path / f"flat-{kind}"
    blobs = tmp_path / f"blobs-{kind}"
    blobs.mkdir()
    for i, tar in enumerate(tars):
        _, blob = write_blob(blobs, compress(tar, kind))
        apply_layer(root, blob, MEDIA[kind], limits=UNLIMITED, context=f"L{i}")
    return root


def _via_layerfs(tmp_path: Path, tars: list[bytes]) -> Path:
    root = tmp_path / "flat-layerfs"
    blobs = tmp_path / "blobs-layerfs"
    blobs.mkdir()
    for i, tar in enumerate(tars):
        _, blob = write_blob(blobs, compress(tar, "gzip"))
        layerfs = tmp_path / "layers" / str(i) / "layerfs"
        unpack_layer(blob, MEDIA["gzip"], layerfs, limits=UNLIMITED, context=f"L{i}")
        apply_layerfs(root, layerfs, context=f"L{i}")
    return root


def _diff(a: dict[str, tuple[object, ...]], b: dict[str, tuple[object, ...]]) -> list[str]:
    return [
        f"{k}: {a.get(k)} != {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
def test_flat_image_matches_umoci(tmp_path: Path) -> None:
    tars = _layers()
    theirs = snapshot(_umoci(tmp_path, tars))
    ours = snapshot(_flat(tmp_path, tars, "gzip"))
    assert _diff(theirs, ours) == []
    # the rules were really exercised (the comparison is not vacuous)
    assert ours["lib"] == ("symlink", 0, "usr/lib", "")
    assert "usr/lib/libfoo.so" in ours and "lib/libfoo.so" not in ours
    assert "wh/gone" not in ours and "wh/dir" not in ours and "wh/keep" in ours
    assert sorted(k for k in ours if k.startswith("opq/")) == ["opq/new"]
    assert ours["opq2"][0] == "dir" and not [k for k in ours if k.startswith("opq2/")]
    assert ours["f2d"][0] == "dir" and ours["d2f"][0] == "file"
    assert ours["s2d"][0] == "dir" and ours["d2s"] == ("symlink", 0, "usr", "")
    assert ours["usr/bin/tool"][1] == 0o4755 and ours["tmp"][1] == 0o1777
    assert ours["usr/bin/hl"][3] == ours["usr/bin/hl2"][3] == "usr/bin/hl"  # old inode kept
    assert ours["usr/bin/a"][3] == ""  # replaced: no longer in the group
    assert ours["usr/bin/shl"][3] == "bin/sh"
    assert DEEP + "/file" in ours and LONG in ours and "ünïcödé/файл.txt" in ours
    assert not [k for k in ours if ".wh." in k]


def test_layerfs_path_gives_the_same_tree(tmp_path: Path) -> None:
    tars = _layers()
    direct = snapshot(_flat(tmp_path, tars, "gzip"))
    assert _diff(direct, snapshot(_via_layerfs(tmp_path, tars))) == []
    zstd = snapshot(_flat(tmp_path, tars, "zstd"))
    assert _diff(direct, zstd) == []
    # the layerfs keeps whiteouts as ordinary empty files, and records what it cannot hold
    layerfs = tmp_path / "layers" / "2" / "layerfs"
    assert (layerfs / "opq" / ".wh..wh..opq").stat().st_size == 0
    assert (layerfs / "wh" / ".wh.gone").is_file()
    sidecar = (tmp_path / "layers" / "2" / ".metadata" / "layerfs.json").read_text()
    assert '"path": "usr/bin/hl2"' in sidecar and '"target": "usr/bin/a"' in sidecar
    assert '"lib"' in sidecar  # implicit: follows lib -> usr/lib when applied


def test_mtimes_and_directory_mtimes(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    layer = [
        E("a/", "dir", mtime=1_000_000_000),
        E("a/b/", "dir", mtime=1_100_000_000),
        E("a/b/f", data=b"f", mtime=1_200_000_000),
        E("a/l", "symlink", link="b/f", mtime=1_300_000_000),
    ]
    _, blob = write_blob(tmp_path, compress(build_tar(layer), "gzip"))
    apply_layer(root, blob, MEDIA["gzip"], limits=UNLIMITED, context="t")
    assert os.stat(root / "a").st_mtime == 1_000_000_000  # set after its contents
    assert os.stat(root / "a" / "b").st_mtime == 1_100_000_000
    assert os.stat(root / "a" / "b" / "f").st_mtime == 1_200_000_000
    assert os.lstat(root / "a" / "l").st_mtime == 1_300_000_000


def test_whiteout_after_the_layers_own_entry_keeps_it(tmp_path: Path) -> None:
    lower = [E("d/", "dir"), E("d/x", data=b"lower"), E("d/y", data=b"lower")]
    upper = [E("d/x", data=b"upper"), E("d/.wh.x"), E("d/.wh.y")]
    for way in ("tar", "layerfs"):
        root = tmp_path / way
        tars = [build_tar(lower), build_tar(upper)]
        if way == "tar":
            for i, tar in enumerate(tars):
                _, blob = write_blob(tmp_path, tar)
                apply_layer(root, blob, MEDIA["tar"], limits=UNLIMITED, context=f"L{i}")
        else:
            for i, tar in enumerate(tars):
                _, blob = write_blob(tmp_path, tar)
                layerfs = tmp_path / f"lfs{i}" / "layerfs"
                unpack_layer(blob, MEDIA["tar"], layerfs, limits=UNLIMITED, context=f"L{i}")
                apply_layerfs(root, layerfs, context=f"L{i}")
        assert (root / "d" / "x").read_bytes() == b"upper", way
        assert not (root / "d" / "y").exists(), way


def _sh(script: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["sh", str(script), *args], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_singularity_metadata(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("kept\n")
    os.symlink(str(tmp_path / "outside"), root / "var")  # must be followed inside root only
    nasty = "a 'b' \"c\" $HOME `id` \\ } ${x} \n newline"
    config = ImageConfig(
        env=("PATH=/opt/bin:/usr/bin:/bin", f"NASTY={nasty}", "EMPTY=", "BARE", "1BAD=x", "A;B=x"),
        entrypoint=("printf", "[%s]"),
        cmd=("default arg", "it's"),
        labels={"org.example": "yes", "q": "\"'"},
    )
    write_singularity_metadata(root, config)
    assert not (tmp_path / "outside").exists()
    assert (root / rel(tmp_path / "outside") / "tmp").is_dir()
    for name in ("dev", "proc", "sys", "tmp", "home", "root", "etc"):
        assert (root / name).is_dir(), name
    assert os.stat(root / "tmp").st_mode & 0o7777 == 0o1777
    assert (root / "etc" / "hosts").read_text() == "kept\n"
    assert (root / "etc" / "resolv.conf").read_text() == ""
    sd = root / ".singularity.d"
    for action in ("exec", "run", "shell", "start", "test"):
        assert os.access(sd / "actions" / action, os.X_OK)
    assert os.readlink(root / "singularity") == ".singularity.d/runscript"
    assert '"org.example": "yes"' in (sd / "labels.json").read_text()

    env_script = sd / "env" / "10-docker2singularity.sh"
    probe = tmp_path / "probe.sh"
    probe.write_text(f'. {env_script}\nprintf "%s|" "$PATH" "$NASTY" "$EMPTY" "${{BARE-unset}}"\n')
    out = _sh(probe, env={"NASTY": ""})
    assert out == f"/opt/bin:/usr/bin:/bin|{nasty}|||"  # BARE is exported, empty
    assert "1BAD" not in env_script.read_text() and "A;B" not in env_script.read_text()
    # a value set by the host wins (docker2singularity's ${VAR:-value})
    assert _sh(probe, env={"NASTY": "host"}).split("|")[1] == "host"

    runscript = sd / "runscript"
    assert _sh(runscript) == "[default arg][it's]"
    assert _sh(runscript, "x y", "$z") == "[x y][$z]"


def test_runscript_without_entrypoint(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    write_singularity_metadata(root, ImageConfig(cmd=("echo", "from cmd")))
    assert _sh(root / ".singularity.d" / "runscript") == "from cmd\n"
    assert _sh(root / ".singularity.d" / "runscript", "echo", "args win") == "args win\n"


def rel(path: Path) -> str:
    return str(path).lstrip("/")


HOST_FILES = {
    "usr/lib64/ld-linux-x86-64.so.2": Path("/lib64/ld-linux-x86-64.so.2"),
    "usr/lib/x86_64-linux-gnu/libc.so.6": Path("/lib/x86_64-linux-gnu/libc.so.6"),
}


@pytest.mark.skipif(
    shutil.which("bwrap") is None or not all(p.exists() for p in HOST_FILES.values()),
    reason="needs bubblewrap and an x86_64 glibc host",
)
def test_flat_image_runs_in_a_real_sandbox(tmp_path: Path) -> None:
    """A merged-/usr image (``bin -> usr/bin`` ...) built from layers runs under bwrap."""
    base = [
        E("usr/", "dir"),
        E("usr/bin/", "dir"),
        E("usr/lib/", "dir"),
        E("usr/lib/x86_64-linux-gnu/", "dir"),
        E("usr/lib64/", "dir"),
        E("bin", "symlink", link="usr/bin"),
        E("lib", "symlink", link="usr/lib"),
        E("lib64", "symlink", link="usr/lib64"),
    ]
    base += [
        E(name, data=path.resolve().read_bytes(), mode=0o755) for name, path in HOST_FILES.items()
    ]
    shell = [E("bin/sh", data=Path("/bin/dash").resolve().read_bytes(), mode=0o755)]
    tars = [build_tar(base), build_tar(shell)]
    root = _via_layerfs(tmp_path, tars)
    assert (root / "usr" / "bin" / "sh").is_file() and (root / "bin").is_symlink()
    config = ImageConfig(
        env=("GREETING=hello 'world'",),
        entrypoint=("/bin/sh", "-c", 'printf "[%s]" "$@"', "sh"),
        cmd=("default",),
    )
    write_singularity_metadata(root, config)

    def bwrap(*args: str) -> str:
        result = subprocess.run(
            ["bwrap", "--ro-bind", str(root), "/", "--proc", "/proc", "--dev", "/dev", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert bwrap("/bin/sh", "/.singularity.d/actions/run") == "[default]"
    assert bwrap("/bin/sh", "/.singularity.d/actions/run", "x y", "z") == "[x y][z]"
    out = bwrap("/bin/sh", "/.singularity.d/actions/exec", "/bin/sh", "-c", 'printf %s "$GREETING"')
    assert out == "hello 'world'"
