"""Benchmark: converting an image, compared in the same run with umoci and tar.

The image is a Debian root file system from ``debootstrap --variant=minbase``
when that works here (it needs ``debootstrap`` and a reachable Debian
mirror, configured as debootstrap's default), otherwise a synthetic tree of
thousands of files, symlinks and hardlinks. It is cut into three gzip
layers (the base, a layer that modifies and deletes files, a small top).

Measured, each in its own process (wall time and peak RSS):

- layers: wishbot ``unpack_layer`` into ``layerfs`` vs ``tar -xzf``;
- flat image: wishbot ``apply_layer`` over all layers vs ``umoci unpack``
  (an independent implementation of layer application), and the two flat
  trees are compared file by file;
- the whole conversion as ``wishbot apply`` does it (``unpack_layer`` of
  every layer, then the flat image from the ``layerfs`` trees with
  ``apply_layerfs``) vs ``tar -xzf`` plus ``umoci unpack``.

With ``--cvmfs`` (root, CernVM-FS installed: CERN's packages), the images
are published into throwaway repositories of a real CernVM-FS instead, with
``wishbot apply`` (``cvmfs:`` publisher) and read through an independent
client mount, measuring:

- the time from apply start until the client mount sees the image (after an
  explicit ``remount sync``), and the publishes (ingests and transactions)
  per image: image A (base + a layer that changes and deletes files + a small
  top), then image B, which shares A's base and middle layer;
- the same two images with every flat tree published whole (no catalog-level
  clone of the first layer), in a second repository;
- a floor in the same run: ``cp -a`` of B's new layer files into a
  transaction and one publish.

Run: ``.venv/bin/python bench/convert.py [--files N] [--keep DIR] [--cvmfs]``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import random
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def synthetic_tree(base: Path, files: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    dirs = [base / f"usr/lib/pkg{n // 40:03d}/sub{n % 7}" for n in range(files // 10)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for n in range(files):
        d = dirs[n % len(dirs)]
        size = int(rng.lognormvariate(7.5, 1.6)) % (2 << 20)
        (d / f"file{n}.so").write_bytes(rng.randbytes(size // 4) * 4)
        if n % 50 == 0:
            os.symlink(f"file{n}.so", d / f"link{n}.so")
        if n % 97 == 0:
            os.link(d / f"file{n}.so", d / f"hard{n}.so")
    (base / "etc").mkdir(exist_ok=True)
    (base / "etc/os-release").write_text("ID=synthetic\n")
    (base / "bin").symlink_to("usr/bin")
    (base / "usr/bin").mkdir(parents=True, exist_ok=True)


def debootstrap_tree(base: Path) -> bool:
    if not shutil.which("debootstrap") or os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(base)],
        capture_output=True,
        check=False,
        timeout=900,
    )
    return done.returncode == 0


def tar_of(base: Path, *, only: list[str] | None = None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if only is None:
            for entry in sorted(base.iterdir()):
                tar.add(entry, arcname=entry.name)
        else:
            for name in only:
                tar.add(base / name, arcname=name, recursive=False)
    return raw.getvalue()


def make_layers(tree: Path, work: Path) -> list[bytes]:
    """Base = the tree; middle = some files changed and some deleted; top = one file."""
    base = tar_of(tree)
    mid_dir = work / "mid"
    mid_dir.mkdir()
    files = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    changed = files[::37]
    deleted = files[5::53]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in changed:
            data = b"changed " + path.name.encode()
            info = tarfile.TarInfo(str(path.relative_to(tree)))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for path in deleted:
            rel = path.relative_to(tree)
            info = tarfile.TarInfo(str(rel.parent / f".wh.{rel.name}"))
            tar.addfile(info, io.BytesIO(b""))
    middle = raw.getvalue()
    top_raw = io.BytesIO()
    with tarfile.open(fileobj=top_raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("app/hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return [base, middle, top_raw.getvalue()]


def measure(command: list[str], **kwargs: object) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one command.

    The peak is taken by GNU time when present: a child forked from this
    (large) benchmark process would otherwise count our own pages.
    """
    gnu_time = shutil.which("time") or "/usr/bin/time"
    with tempfile.NamedTemporaryFile("r") as report:
        wrapped = (
            [gnu_time, "-f", "%M", "-o", report.name, *command]
            if os.path.exists(gnu_time)
            else command
        )
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, **kwargs)  # type: ignore[call-overload]
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{command[0]} failed with exit {os.waitstatus_to_exitcode(status)}")
        text = report.read().strip().splitlines()
        peak_kib = int(text[-1]) if text and text[-1].isdigit() else usage.ru_maxrss
    return elapsed, peak_kib // 1024


_UNPACK = """
import sys
from pathlib import Path
from bot.publisher.unpack import UNLIMITED, unpack_layer
for n, blob in enumerate(sys.argv[2:]):
    unpack_layer(Path(blob), "application/vnd.oci.image.layer.v1.tar+gzip",
                 Path(sys.argv[1]) / f"layer{n}" / "layerfs", limits=UNLIMITED, context=blob)
"""

_FLAT = """
import sys
from pathlib import Path
from bot.publisher.unpack import UNLIMITED, apply_layer
for blob in sys.argv[2:]:
    apply_layer(Path(sys.argv[1]), Path(blob), "application/vnd.oci.image.layer.v1.tar+gzip",
                limits=UNLIMITED, context=blob)
"""


_CONVERT = """
import sys
from pathlib import Path
from bot.publisher.flatten import apply_layerfs
from bot.publisher.unpack import UNLIMITED, unpack_layer
out = Path(sys.argv[1])
flat = out / "flat"
flat.mkdir(parents=True)
for n, blob in enumerate(sys.argv[2:]):
    layerfs = out / f"layer{n}" / "layerfs"
    unpack_layer(Path(blob), "application/vnd.oci.image.layer.v1.tar+gzip",
                 layerfs, limits=UNLIMITED, context=blob)
    apply_layerfs(flat, layerfs, context=blob)
"""


def digest_tree(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                out[rel] = "l:" + os.readlink(path)
            elif stat.S_ISDIR(info.st_mode):
                out[rel] = "d"
            elif stat.S_ISREG(info.st_mode):
                out[rel] = "f:" + hashlib.sha256(path.read_bytes()).hexdigest()
            else:  # device nodes, fifos: never read them (/dev/zero would never end)
                out[rel] = f"s:{stat.S_IFMT(info.st_mode)}:{info.st_rdev}"
    return out


def _cvmfs_apply(registry: Any, repo: Any, wishlist: Path, path: str, clones: bool) -> str:
    """One ``apply`` into ``repo``: seconds until its client sees ``path``, and publishes."""
    from bot.config import Config
    from bot.core.recipe import load_wishlist
    from bot.publisher.converge import converge
    from bot.publisher.cvmfs import CvmfsPublisher
    from bot.registry.client import RegistryClient

    loaded, problems = load_wishlist(wishlist.read_bytes(), str(wishlist))
    assert loaded is not None, problems
    publisher = CvmfsPublisher(repo.name)
    publisher.catalog_clones = clones
    config = Config(insecure_registries=(registry.host,), thin=False)
    start = time.perf_counter()
    with RegistryClient(config) as client:
        _plan, report = converge(loaded, publisher, client, config=config, now=datetime.now(UTC))
    if not report.ok:
        raise SystemExit(f"apply failed: {report.to_json()}")
    seen = repo.client() / path
    if not (seen / "app/hello.txt").exists() and not (seen / "app").exists():
        raise SystemExit(f"the client does not see {path}")
    elapsed = time.perf_counter() - start
    return f"{elapsed:6.2f} s until a client sees it, {publisher.publishes} publishes"


def cvmfs_bench(work: Path, layers: list[bytes], kind: str) -> None:
    """Publish two images sharing a base into real CernVM-FS repositories (see the docstring)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from cvmfs_fixture import RealRepo, real_cvmfs_missing

    from bot.sandbox.image_builder import push_image
    from bot.sandbox.registry_server import LocalRegistry

    missing = real_cvmfs_missing()
    if missing:
        raise SystemExit(f"--cvmfs: {missing}")
    base, middle, top = layers
    other_top = tar_of_text("app/other.txt", "other\n")
    total = sum(len(x) for x in layers)
    print(f"image A: {kind}; base + middle + top, {total / 2**20:.1f} MiB uncompressed")
    print("image B: A's base and middle + its own small top")
    with LocalRegistry() as registry:
        push_image(registry.url, "bench/img", "a", [base, middle, top])
        push_image(registry.url, "bench/img", "b", [base, middle, other_top])
        wishlists = {}
        for name in ("a", "b"):
            wishlists[name] = work / f"{name}.yaml"
        for clones in (True, False):
            repo = RealRepo(Path(tempfile.mkdtemp(prefix="cvmfs-", dir=work)))
            try:
                repo.create()
                os.environ.update(repo.env)
                images = []
                for name in ("a", "b"):
                    images.append(f"{registry.host}/bench/img:{name}")
                    write_bench_wishlist(wishlists[name], registry.host, repo.name, images)
                    path = f"{registry.host}/bench/img:{name}"
                    result = _cvmfs_apply(registry, repo, wishlists[name], path, clones)
                    how = "flat image cloned from its base" if clones else "whole flat tree"
                    print(f"cvmfs apply, image {name.upper()} ({how}): {result}")
                if clones:
                    print(
                        f"cvmfs floor (cp -a of B's new layer + one publish): {_floor(repo, other_top, work)}"
                    )
            finally:
                repo.close()


def tar_of_text(name: str, text: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = text.encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def write_bench_wishlist(path: Path, host: str, repo: str, images: list[str]) -> Path:
    lines = [
        "version: 1",
        "user: bench",
        f"cvmfs_repo: '{repo}'",
        f"output_format: '{host}/thin/$(image)'",
        "input:",
    ]
    path.write_text("\n".join([*lines, *(f"  - '{image}'" for image in images)]) + "\n")
    return path


def _floor(repo: Any, layer: bytes, work: Path) -> str:
    """``cp -a`` of a layer's files into a transaction, and one publish."""
    files = work / "floor"
    files.mkdir()
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        tar.extractall(files, filter="tar")
    name = repo.name
    start = time.perf_counter()
    for command in (
        ["cvmfs_server", "transaction", name],
        ["cp", "-a", str(files), f"/cvmfs/{name}/floor"],
        ["cvmfs_server", "publish", name],
    ):
        subprocess.run(command, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, check=True)
    seen = repo.client() / "floor"
    if not seen.is_dir():
        raise SystemExit("the client does not see the floor's files")
    return f"{time.perf_counter() - start:6.2f} s until a client sees it, 1 publish"


def source_tree(work: Path, files: int) -> tuple[Path, str]:
    """A Debian root file system where debootstrap works, else a synthetic tree."""
    tree = work / "source"
    tree.mkdir()
    if debootstrap_tree(tree):
        return tree, "debootstrap minbase bookworm"
    shutil.rmtree(tree)
    tree.mkdir()
    synthetic_tree(tree, files)
    return tree, f"synthetic tree, {files} files"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=6000, help="synthetic tree size")
    parser.add_argument("--keep", type=Path, help="keep the work directory here")
    parser.add_argument(
        "--cvmfs", action="store_true", help="publish into a real CernVM-FS (root, installed)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wishbot-bench-", dir=args.keep))
    try:
        tree, kind = source_tree(work, args.files)
        layers = make_layers(tree, work)
        if args.cvmfs:
            cvmfs_bench(work, layers, kind)
            return 0
        blobs = []
        for n, layer in enumerate(layers):
            blob = work / f"layer{n}.tar.gz"
            blob.write_bytes(gzip.compress(layer, compresslevel=6))
            (work / f"layer{n}.tar").write_bytes(layer)
            blobs.append(blob)
        total = sum(len(x) for x in layers)
        print(f"image: {kind}; {len(layers)} layers, {total / 2**20:.1f} MiB uncompressed")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        python = sys.executable

        ours_layers = measure(
            [python, "-c", _UNPACK, str(work / "ours-layers"), *map(str, blobs)], env=env
        )
        tar_dir = work / "tar-layers"
        tar_script = "; ".join(
            f"mkdir -p {tar_dir}/l{n} && tar -xzf {blob} -C {tar_dir}/l{n}"
            for n, blob in enumerate(blobs)
        )
        tar_layers = measure(["sh", "-c", tar_script])

        ours_flat = measure(
            [python, "-c", _FLAT, str(work / "ours-flat"), *map(str, blobs)], env=env
        )
        umoci = shutil.which("umoci")
        umoci_flat: tuple[float, int] | None = None
        if umoci:
            layout = f"{work}/oci"
            subprocess.run([umoci, "init", "--layout", layout], check=True)
            subprocess.run([umoci, "new", "--image", f"{layout}:img"], check=True)
            for n in range(len(layers)):
                subprocess.run(
                    [umoci, "raw", "add-layer", "--image", f"{layout}:img", f"{work}/layer{n}.tar"],
                    check=True,
                    capture_output=True,
                )
            umoci_flat = measure(
                [umoci, "unpack", "--rootless", "--image", f"{layout}:img", f"{work}/bundle"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        def row(name: str, ours: tuple[float, int], other: tuple[float, int]) -> None:
            print(
                f"{name:<22} wishbot {ours[0]:7.2f} s {ours[1]:5d} MiB | "
                f"reference {other[0]:7.2f} s {other[1]:5d} MiB | "
                f"time ratio {ours[0] / max(other[0], 1e-9):5.2f}"
            )

        ours_convert = measure(
            [python, "-c", _CONVERT, str(work / "ours-convert"), *map(str, blobs)], env=env
        )

        row("layers vs tar -xzf", ours_layers, tar_layers)
        if umoci_flat:
            row("flat vs umoci unpack", ours_flat, umoci_flat)
            both = (tar_layers[0] + umoci_flat[0], max(tar_layers[1], umoci_flat[1]))
            row("apply vs tar+umoci", ours_convert, both)
            umoci_tree = digest_tree(work / "bundle" / "rootfs")
            for name, tree in (
                ("apply_layer", work / "ours-flat"),
                ("apply (layerfs)", work / "ours-convert" / "flat"),
            ):
                ours = digest_tree(tree)
                # umoci --rootless cannot create device nodes and writes them as
                # empty files; wishbot never publishes device nodes (as root it
                # creates fifos only): those paths are not compared.
                empty = "f:" + hashlib.sha256(b"").hexdigest()
                devices = {k for k, v in ours.items() if v.startswith("s:")}
                devices |= {k for k, v in umoci_tree.items() if k not in ours and v == empty}
                a = {k: v for k, v in ours.items() if k not in devices}
                b = {k: v for k, v in umoci_tree.items() if k not in devices}
                same = a == b
                print(
                    f"{name} flat tree identical to umoci's: {same} ({len(a)} entries, "
                    f"{len(devices)} device nodes and fifos not compared)"
                )
                if not same:
                    diff = sorted(set(a.items()) ^ set(b.items()))[:10]
                    print("  first differences:", *diff, sep="\n    ")
        else:
            print(f"flat image: wishbot {ours_flat[0]:.2f} s {ours_flat[1]} MiB (umoci missing)")
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
