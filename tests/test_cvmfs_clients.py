"""``wishbot apply`` into CernVM-FS, read back through what clients see.

Runs against the fake and, where CernVM-FS is installed, a real repository
with an independent client mount (marker ``cvmfs``; see ``cvmfs_fixture``),
skipped with one line elsewhere. What is checked is what a site's worker
node sees: the client mount, after an explicit ``remount sync``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from apply_util import NOW
from cvmfs_fixture import Repo, open_repo
from gateway_fixture import gateway_missing, open_gateway
from registry_util import client_for
from tarspec import E, build_tar, oci_layout, snapshot

from bot.config import Config
from bot.core import layout
from bot.core.recipe import load_wishlist
from bot.publisher import open_publisher
from bot.publisher.apply import ApplyReport
from bot.publisher.converge import converge
from bot.publisher.cvmfs import CvmfsPublisher
from bot.publisher.gc import collect
from bot.sandbox.image_builder import push_image, push_index
from bot.sandbox.registry_server import LocalRegistry

HOST = {
    "usr/lib64/ld-linux-x86-64.so.2": Path("/lib64/ld-linux-x86-64.so.2"),
    "usr/lib/x86_64-linux-gnu/libc.so.6": Path("/lib/x86_64-linux-gnu/libc.so.6"),
    "usr/bin/sh": Path("/bin/dash"),
}
DIRS = ["etc", "opq", "usr", "usr/bin", "usr/lib", "usr/lib/x86_64-linux-gnu", "usr/lib64"]
#: a runnable merged-/usr base (the host's glibc and dash), with files later layers delete
BASE = [
    *(E(f"{d}/", "dir") for d in DIRS),
    E("bin", "symlink", link="usr/bin"),
    E("lib", "symlink", link="usr/lib"),
    E("lib64", "symlink", link="usr/lib64"),
    *(E(name, data=path.resolve().read_bytes(), mode=0o755) for name, path in HOST.items()),
    E("etc/gone", data=b"deleted by a whiteout"),
    E("etc/keep", data=b"kept"),
    E("opq/old1", data=b"hidden by an opaque marker"),
    E("usr/bin/a", data=b"shared inode"),
    E("usr/bin/b", "hardlink", link="usr/bin/a"),
]
MID = [
    E("etc/", "dir"),
    E("etc/.wh.gone"),
    E("etc/added", data=b"added"),
    E("opq/", "dir"),
    E("opq/.wh..wh..opq"),
    E("opq/new", data=b"new"),
]
TOP_A = [E("app/", "dir"), E("app/a.txt", data=b"a\n")]
TOP_B = [E("app/", "dir"), E("app/b.txt", data=b"b\n"), E("etc/", "dir"), E("etc/.wh.keep")]
#: what the flat image adds to the image's own files (Apptainer's needs, the catalog)
EXTRAS = (
    *(".singularity.d", "singularity", "environment", ".cvmfscatalog", "etc/hosts"),
    *("etc/resolv.conf", "dev", "proc", "sys", "tmp", "var", "home", "root"),
)


def _wishlist(path: Path, registry: LocalRegistry, repo: str, inputs: list[str]) -> Path:
    lines = [
        "version: 1",
        "user: tester",
        f"cvmfs_repo: '{repo}'",
        f"output_format: '{registry.host}/thin/$(image)'",
        "input:",
        *inputs,
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _apply(registry: LocalRegistry, wishlist: Path, repo: str) -> tuple[ApplyReport, int]:
    loaded, problems = load_wishlist(wishlist.read_bytes(), str(wishlist))
    assert loaded is not None, problems
    config = Config(insecure_registries=(registry.host,), backoff=0.01)
    publisher = open_publisher(f"cvmfs:{repo}")
    assert isinstance(publisher, CvmfsPublisher)
    with client_for(registry.host) as client:
        _plan, report = converge(loaded, publisher, client, config=config, now=NOW)
    return report, publisher.publishes


def _umoci(tmp: Path, tars: list[bytes]) -> dict[str, tuple[object, ...]]:
    image = tmp / f"oci-{uuid.uuid4().hex[:6]}"
    oci_layout(image, [(tar, "gzip") for tar in tars])
    bundle = tmp / f"bundle-{image.name}"
    done = subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{image}:t", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return _no_hardlinks(snapshot(bundle / "rootfs"))


def _no_hardlinks(snap: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    """CernVM-FS publishes each name of a hardlink as its own file (reference page)."""
    return {path: entry[:3] for path, entry in snap.items()}


def _same_as_umoci(flat: Path, theirs: dict[str, tuple[object, ...]]) -> None:
    ours = _no_hardlinks(snapshot(flat))
    extra = {
        p
        for p in set(ours) - set(theirs)
        if not any(p == x or p.startswith(f"{x}/") for x in EXTRAS)
    }
    assert extra == set()
    differ = [
        f"{p}: {ours.get(p)} != {theirs[p]}" for p in sorted(theirs) if ours.get(p) != theirs[p]
    ]
    assert differ == []


@pytest.fixture(
    params=[
        "fake",
        pytest.param("real", marks=pytest.mark.cvmfs),
        pytest.param("gateway", marks=pytest.mark.cvmfs),
        pytest.param("gateway-alone", marks=pytest.mark.cvmfs),
    ]
)
def published_through(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Repo]:
    """The fake, a real repository, and a publisher of a real gateway: in steps,
    each on a lease on its paths (as one of several hosts), and alone (each
    image, after its layers, one transaction on the whole repository)."""
    if not request.param.startswith("gateway"):
        with open_repo(request.param, request, tmp_path, monkeypatch) as repo:
            yield repo
        return
    if request.param == "gateway":
        monkeypatch.setenv("WISHBOT_GATEWAY_LEASES", "paths")
        gateway = request.getfixturevalue("real_gateway")
    else:  # a repository of its own: the shared one holds these layers already
        missing = gateway_missing()
        if missing:
            pytest.skip(f"cvmfs gateway: {missing}")
        gateway = open_gateway(tmp_path / "alone", 1)
    try:
        for key, value in gateway.env.items():
            monkeypatch.setenv(key, value)
        with gateway.in_use():
            yield gateway
    finally:
        if request.param != "gateway":
            gateway.stop()


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
def test_images_through_a_real_client(
    published_through: Repo, registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    cvmfs_repo = published_through
    repo = cvmfs_repo.name
    tars = {
        name: build_tar(layer)
        for name, layer in (("base", BASE), ("mid", MID), ("a", TOP_A), ("b", TOP_B))
    }
    image_a = push_image(
        registry.url,
        unique_repo,
        "a",
        [tars["base"], tars["mid"], tars["a"]],
        cmd=["/bin/sh", "-c", "echo hello from cvmfs"],
    )
    image_b = push_image(registry.url, unique_repo, "b", [tars["base"], tars["mid"], tars["b"]])
    multi = push_index(
        registry.url,
        unique_repo,
        "multi",
        {
            "linux/amd64": [tars["base"], build_tar([E("app/", "dir"), E("app/m.txt", data=b"m")])],
            "linux/arm64/v8": [build_tar([E("arm", data=b"arm64")])],
        },
    )
    first = _wishlist(
        tmp_path / "first.yaml",
        registry,
        repo,
        [
            f"  - '{registry.host}/{unique_repo}:a'",
            f"  - image: '{registry.host}/{unique_repo}:multi'",
            "    platforms: [linux/amd64, linux/arm64/v8]",
        ],
    )
    report, _ = _apply(registry, first, repo)
    assert report.ok, json.dumps(report.to_json())[-3000:]
    client = cvmfs_repo.client()
    path_a = client / f"{registry.host}/{unique_repo}:a"

    # published layers keep their whiteout markers, in their own nested catalogs
    mid_digest = image_a.layer_digests[1]
    mid = client / layout.layerfs_dir(mid_digest)
    assert sorted(os.listdir(mid / "etc")) == [".wh.gone", "added"]
    assert sorted(os.listdir(mid / "opq")) == [".wh..wh..opq", "new"]

    # the first image equals umoci's unpacking of it, and runs from the client mount
    _same_as_umoci(path_a, _umoci(tmp_path, [tars["base"], tars["mid"], tars["a"]]))
    if shutil.which("bwrap"):
        run = subprocess.run(
            [
                "bwrap",
                "--ro-bind",
                str(path_a),
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "/bin/sh",
                "/.singularity.d/actions/run",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert run.returncode == 0 and run.stdout == "hello from cvmfs\n", run.stderr

    # the multi-platform path resolves on this (x86_64) client to the amd64 image
    path_multi = client / f"{registry.host}/{unique_repo}:multi"
    if cvmfs_repo.kind != "fake":  # the client expands the variant symlink as it reads it
        assert f".multiarch/{os.uname().machine}/" in os.readlink(path_multi)
    else:  # a plain directory expands nothing: do as the client does
        assert "$(CVMFS_ARCH:-x86_64)" in os.readlink(path_multi)
        path_multi = (
            client / ".multiarch" / os.uname().machine / f"{registry.host}/{unique_repo}:multi"
        )
    amd64 = multi.image_for("linux/amd64").config_digest
    assert os.path.realpath(path_multi).endswith(layout.hex_of(amd64))
    assert (path_multi / "app/m.txt").read_text() == "m"
    assert (client / ".multiarch/aarch64" / f"{registry.host}/{unique_repo}:multi").is_symlink()

    # thin images name layer directories that exist
    thin = requests.get(
        f"{registry.url}/v2/thin/{unique_repo}/manifests/a",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    assert thin.status_code == 200
    manifest = json.loads(
        (client / ".metadata" / f"{registry.host}/{unique_repo}:a" / "manifest.json").read_text()
    )
    assert manifest["wishbot"]["thin_image"] == f"{registry.host}/thin/{unique_repo}:a"
    for digest in image_a.layer_digests:
        assert (client / layout.layerfs_dir(digest)).is_dir()

    # a later run builds an image from the layers published before: equal to umoci
    second = _wishlist(
        tmp_path / "second.yaml",
        registry,
        repo,
        [
            f"  - '{registry.host}/{unique_repo}:a'",
            f"  - '{registry.host}/{unique_repo}:b'",
            f"  - image: '{registry.host}/{unique_repo}:multi'",
            "    platforms: [linux/amd64, linux/arm64/v8]",
        ],
    )
    partitions = (
        os.path.dirname(layout.layer_dir(image_b.layer_digests[2])),
        os.path.dirname(layout.flat_dir(image_b.config_digest)),
    )
    new_partitions = sum(not (client / p).is_dir() for p in partitions)
    report, publishes = _apply(registry, second, repo)
    assert report.ok and report.downloaded_layers == 1, report.to_json()
    if cvmfs_repo.kind == "gateway" and os.environ.get("WISHBOT_GATEWAY_LEASES") == "paths":
        # its missing partitions, the new layer's ingest, the flat image, the
        # layers' backlinks (3), metadata, the public path
        assert publishes == new_partitions + 7
    elif cvmfs_repo.kind == "gateway":
        # alone: its missing partitions, the new layer's ingest, the image's transaction
        assert publishes == new_partitions + 2
    else:
        assert publishes == 2  # the new layer's ingest, the image's transaction
    client = cvmfs_repo.client()
    path_b = client / f"{registry.host}/{unique_repo}:b"
    _same_as_umoci(path_b, _umoci(tmp_path, [tars["base"], tars["mid"], tars["b"]]))
    assert not (path_b / "etc/keep").exists() and not (path_b / "etc/gone").exists()

    # nested catalogs where the reference converter puts them
    catalogs = set(cvmfs_repo.catalogs())
    flat_b = layout.flat_dir(image_b.config_digest)
    for directory in (
        layout.FLAT,
        flat_b,
        layout.LAYERS,
        os.path.dirname(layout.layer_dir(mid_digest)),
        layout.layerfs_dir(mid_digest),
    ):
        assert f"/{directory}" in catalogs
    assert f"/{os.path.dirname(flat_b)}" not in catalogs

    # nothing changed: no publish, no download
    revision = cvmfs_repo.revision()
    partitions = (
        os.path.dirname(layout.layer_dir(image_b.layer_digests[2])),
        os.path.dirname(layout.flat_dir(image_b.config_digest)),
    )
    new_partitions = sum(not (client / p).is_dir() for p in partitions)
    report, publishes = _apply(registry, second, repo)
    assert report.ok and report.transactions == 0 and report.downloaded_layers == 0
    assert publishes == 0 and cvmfs_repo.revision() == revision

    # a removed wish serves until gc deletes its path, its image and its own layer
    third = _wishlist(
        tmp_path / "third.yaml",
        registry,
        repo,
        [
            f"  - '{registry.host}/{unique_repo}:b'",
            f"  - image: '{registry.host}/{unique_repo}:multi'",
            "    platforms: [linux/amd64, linux/arm64/v8]",
        ],
    )
    assert _apply(registry, third, repo)[0].ok
    pub = CvmfsPublisher(repo)
    gone = collect(pub, NOW + timedelta(days=31), grace_days=30, max_deletions=10)
    assert gone.deleted_images == [(image_a.config_digest, f"{registry.host}/{unique_repo}:a")]
    client = cvmfs_repo.client()
    assert not os.path.lexists(path_a)
    assert not os.path.lexists(client / layout.flat_dir(image_a.config_digest))
    assert not os.path.lexists(client / layout.layer_dir(image_a.layer_digests[2]))
    assert (client / layout.layerfs_dir(mid_digest) / "etc/.wh.gone").exists()
    assert (path_b / "app/b.txt").read_text() == "b\n"


@pytest.mark.parametrize("crash", ["layer", "image-written"])
def test_apply_killed_midway_is_recovered(
    cvmfs_repo: Repo, registry: LocalRegistry, unique_repo: str, tmp_path: Path, crash: str
) -> None:
    """``wishbot apply`` SIGKILLed with a transaction open (or between layer ingests):
    nothing of the image is visible; the next run aborts what is left and publishes it."""
    layer = build_tar([E("k/", "dir"), E(f"k/{crash}", data=crash.encode())])
    push_image(registry.url, unique_repo, "k", [build_tar(TOP_A), layer])
    wishlist = _wishlist(
        tmp_path / "w.yaml",
        registry,
        cvmfs_repo.name,
        [
            f"  - '{registry.host}/{unique_repo}:k'",
        ],
    )
    command = [
        sys.executable,
        "-m",
        "bot",
        "apply",
        str(wishlist),
        "--no-thin",
        "--publisher",
        f"cvmfs:{cvmfs_repo.name}",
    ]
    env = {**os.environ, "WISHBOT_INSECURE_REGISTRIES": registry.host, "WISHBOT_BACKOFF": "0.01"}
    killed = subprocess.run(
        command,
        env={**env, "WISHBOT_TEST_CRASH_AT": crash},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    path = f"{registry.host}/{unique_repo}:k"
    assert not os.path.lexists(cvmfs_repo.client() / path)
    again = subprocess.run(
        command, env=env, cwd="/", capture_output=True, text=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr
    if crash == "image-written":  # killed inside the image's transaction: found and aborted
        assert "aborted the transaction a crashed run left open" in again.stdout + again.stderr
    assert (cvmfs_repo.client() / path / f"k/{crash}").read_text() == crash
    assert not CvmfsPublisher(cvmfs_repo.name).in_transaction()
