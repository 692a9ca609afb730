"""Build real layer tars (and OCI image layouts) for the tar-engine tests.

A layer is a list of :class:`E` entries written with :mod:`tarfile` exactly in
the given order (hostile names included: nothing is cleaned).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

MEDIA = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "tar": "application/vnd.oci.image.layer.v1.tar",
}


@dataclass
class E:
    """One tar entry."""

    name: str
    kind: str = "file"  # file dir symlink hardlink char block fifo
    data: bytes = b""
    mode: int | None = None
    link: str = ""
    uid: int = 0
    gid: int = 0
    mtime: int = 1_600_000_000
    dev: tuple[int, int] = (0, 0)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def build_tar(entries: list[E], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, encoding="utf-8") as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _TYPES[e.kind]
            info.mode = e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644)
            info.uid, info.gid, info.mtime = e.uid, e.gid, e.mtime
            info.linkname = e.link
            info.devmajor, info.devminor = e.dev
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_blob(directory: Path, data: bytes) -> tuple[str, Path]:
    digest = sha(data)
    path = directory / digest.split(":")[1]
    path.write_bytes(data)
    return digest, path


def oci_layout(directory: Path, layers: list[tuple[bytes, str]], tag: str = "t") -> None:
    """An OCI image layout with these (tar bytes, compression) layers."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    descriptors, diff_ids = [], []
    for tar, kind in layers:
        data = compress(tar, kind)
        digest, _ = write_blob(blobs, data)
        descriptors.append({"mediaType": MEDIA[kind], "digest": digest, "size": len(data)})
        diff_ids.append(sha(tar))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    cdigest, _ = write_blob(blobs, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cdigest,
                "size": len(config),
            },
            "layers": descriptors,
        }
    ).encode()
    mdigest, _ = write_blob(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdigest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """path -> (type, permission bits, content sha256 | link target, hardlink group).

    Hardlink groups are named by the smallest path of the group, so two trees
    compare equal when the same paths share inodes.
    """
    groups: dict[tuple[int, int], list[str]] = {}
    raw: dict[str, tuple[str, int, str, tuple[int, int]]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            key = (st.st_dev, st.st_ino)
            if stat.S_ISDIR(st.st_mode):
                raw[rel] = ("dir", stat.S_IMODE(st.st_mode), "", key)
            elif stat.S_ISLNK(st.st_mode):
                raw[rel] = ("symlink", 0, os.readlink(full), key)
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(Path(full).read_bytes()).hexdigest()
                raw[rel] = ("file", stat.S_IMODE(st.st_mode), digest, key)
                groups.setdefault(key, []).append(rel)
            else:
                raw[rel] = ("special", stat.S_IMODE(st.st_mode), str(st.st_rdev), key)
    out: dict[str, tuple[object, ...]] = {}
    for rel, (kind, mode, content, key) in raw.items():
        group = min(groups[key]) if kind == "file" and len(groups[key]) > 1 else ""
        out[rel] = (kind, mode, content, group)
    return out
