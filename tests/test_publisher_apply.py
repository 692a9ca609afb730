"""``apply`` end to end: a real registry on loopback, real tar layers, a local publisher."""

from __future__ import annotations

import io
import json
import os
import tarfile
from datetime import timedelta
from pathlib import Path

import requests
from apply_util import NOW, REPO, run_apply, write_wishlist
from registry_util import client_for

from bot.config import Config
from bot.core import layout
from bot.core.model import DEFAULT_PLATFORM, Layer, Location, ResolvedImage, Wish
from bot.core.plan import ImageChange, Plan
from bot.core.recipe import load_wishlist
from bot.core.reference import parse
from bot.publisher.apply import apply_plan
from bot.publisher.converge import converge
from bot.publisher.gc import collect
from bot.publisher.local import LocalPublisher
from bot.publisher.state import read_state
from bot.sandbox.image_builder import push_image, push_index
from bot.sandbox.layers import build_layer, file, symlink, whiteout, with_parents
from bot.sandbox.registry_server import LocalRegistry

BASE = build_layer(
    with_parents(
        [
            file("etc/os-release", "ID=test\n"),
            file("usr/bin/tool", "#!/bin/sh\necho tool\n", mode=0o755),
            symlink("bin", "usr/bin"),
        ]
    )
)
TOP = build_layer([whiteout("etc/os-release"), file("app/hello.txt", "hi\n")])
NEWER = build_layer([file("app/hello.txt", "hello again\n")])


def pull_thin(registry: LocalRegistry, name: str, tag: str) -> tuple[dict[str, object], dict]:
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    manifest = requests.get(f"{registry.url}/v2/{name}/manifests/{tag}", headers=accept, timeout=10)
    manifest.raise_for_status()
    body = manifest.json()
    config = requests.get(
        f"{registry.url}/v2/{name}/blobs/{body['config']['digest']}", timeout=10
    ).json()
    (layer,) = body["layers"]
    blob = requests.get(f"{registry.url}/v2/{name}/blobs/{layer['digest']}", timeout=10).content
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        assert tar.getnames() == ["thin.json"]
        member = tar.extractfile("thin.json")
        assert member is not None
        return json.loads(member.read()), config


def test_apply_publishes_converges_and_moves_tags(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    pushed = push_image(registry.url, unique_repo, "1.0", [BASE, TOP], cmd=["/bin/sh"])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, f"{unique_repo}:1.0")
    tree = tmp_path / "tree"

    metered: list[tuple[str, int, int]] = []
    report = run_apply(registry, wishlist, tree, meter=lambda *m: metered.append(m))
    assert report.ok, report.to_json()
    assert report.downloaded_layers == 2 and report.transactions == 1
    # every download reported its bytes up to the layer's size
    finals = {label: (done, total) for label, done, total in metered}
    assert sorted(finals.values()) == sorted((size, size) for size in pushed.layer_sizes)
    path = f"{registry.host}/{unique_repo}:1.0"
    link = tree / path
    assert link.is_symlink() and not os.readlink(link).startswith("/")
    assert os.readlink(link) == layout.flat_link(path, pushed.config_digest)
    # the flat image: layers applied in order, whiteout honoured, Singularity metadata
    assert (link / "app/hello.txt").read_text() == "hi\n"
    assert not (link / "etc/os-release").exists()
    assert (link / "bin").is_symlink() and (link / "bin/tool").is_file()
    assert (link / ".singularity.d").is_dir()
    assert not list(link.rglob(".wh.*"))
    # the layers, as in their tars (whiteouts kept), with metadata and backlinks
    top_dir = tree / layout.layer_dir(pushed.layer_digests[1])
    assert (top_dir / "layerfs/etc/.wh.os-release").exists()
    for digest, diff_id in zip(pushed.layer_digests, pushed.diff_ids, strict=True):
        meta = tree / layout.layer_metadata_dir(digest)
        (info,) = json.loads((meta / "layers.json").read_text())  # DUCC's array
        assert info["diff-digest"] == info["wishbot"]["diff_id"] == diff_id
        assert json.loads((meta / "origin.json").read_text()) == {"origin": [pushed.config_digest]}
        assert (tree / layout.layerfs_dir(digest) / ".cvmfscatalog").exists()
    for marker in (".flat", ".layers", layout.flat_dir(pushed.config_digest)):
        assert (tree / marker / ".cvmfscatalog").exists()
    manifest = json.loads((tree / ".metadata" / path / "manifest.json").read_text())
    assert manifest["config"]["digest"] == pushed.config_digest
    assert manifest["wishbot"]["manifest_digest"] == pushed.manifest_digest
    assert manifest["wishbot"]["thin_image"] == f"{registry.host}/thin/{unique_repo}:1.0"
    # the thin image, pulled back
    thin, thin_config = pull_thin(registry, f"thin/{unique_repo}", "1.0")
    assert thin["layers"] == [
        {"digest": layout.hex_of(d), "url": f"cvmfs://{REPO}/{layout.layerfs_dir(d)}"}
        for d in pushed.layer_digests
    ]
    assert "CVMFS_IMAGE=true" in thin_config["config"]["Env"]
    assert thin_config["config"]["Cmd"] == ["/bin/sh"]
    state = read_state(tree, REPO)
    assert [(i.path, i.image_id) for i in state.images] == [(path, pushed.config_digest)]

    # nothing changed: no download, no transaction
    again = run_apply(registry, wishlist, tree)
    assert again.ok and again.results == []
    assert again.downloaded_layers == 0 and again.transactions == 0

    # the tag moves: only the new layer is downloaded, the old image is scheduled
    moved = push_image(registry.url, unique_repo, "1.0", [BASE, NEWER], cmd=["/bin/sh"])
    report = run_apply(registry, wishlist, tree, now=NOW + timedelta(days=1))
    assert report.ok and [r.action for r in report.results] == ["update"]
    assert report.downloaded_layers == 1
    assert (link / "app/hello.txt").read_text() == "hello again\n"
    schedule = read_state(tree, REPO).schedule
    assert [(s.kind, s.id) for s in schedule] == [("image", pushed.config_digest)]
    base_origin = tree / layout.layer_metadata_dir(pushed.layer_digests[0]) / "origin.json"
    assert json.loads(base_origin.read_text())["origin"] == sorted(
        [pushed.config_digest, moved.config_digest]
    )

    gone = collect(LocalPublisher(tree), NOW + timedelta(days=40), grace_days=30, max_deletions=10)
    assert gone.deleted_images == [(pushed.config_digest, path)]
    assert gone.deleted_layers == [pushed.layer_digests[1]]  # TOP; BASE is still used
    assert (link / "app/hello.txt").read_text() == "hello again\n"


def test_one_failing_image_does_not_stop_the_others(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    evil = build_layer([symlink("escape", "/etc"), file("escape/owned", "x")])
    push_image(registry.url, unique_repo, "good", [BASE])
    push_image(registry.url, unique_repo, "evil", [evil])
    push_image(registry.url, unique_repo, "broken", [BASE, b"this is not a tar archive" * 40])
    wishlist = tmp_path / "wishlist.yaml"
    tags = ("good", "evil", "broken")
    write_wishlist(wishlist, registry, *(f"{unique_repo}:{tag}" for tag in tags))
    tree = tmp_path / "tree"
    report = run_apply(registry, wishlist, tree, thin=False)
    by_tag = {r.path.rsplit(":", 1)[1]: r for r in report.results}
    assert by_tag["good"].ok and by_tag["evil"].ok
    assert (tree / f"{registry.host}/{unique_repo}:good/usr/bin/tool").is_file()
    # a symlink planted by the layer is followed inside the image, never out of it
    assert not Path("/etc/owned").exists()
    assert (tree / f"{registry.host}/{unique_repo}:evil/etc/owned").read_text() == "x"
    # the broken image is reported, and nothing of it is visible
    assert not by_tag["broken"].ok and not report.ok
    assert not os.path.lexists(tree / f"{registry.host}/{unique_repo}:broken")
    assert not list((tree / ".wishbot").glob("txn-*"))
    assert f"{unique_repo}:broken" in " ".join(r.wish for r in report.failures)


def test_multiarch_wish_gets_variant_symlink(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    index = push_index(
        registry.url,
        unique_repo,
        "1.0",
        {"linux/amd64": [BASE], "linux/arm64/v8": [TOP]},
        attestation=True,
    )
    wishlist = tmp_path / "wishlist.yaml"
    wishlist.write_text(
        "\n".join(
            [
                "version: 1",
                "user: tester",
                f"cvmfs_repo: '{REPO}'",
                f"output_format: '{registry.host}/thin/$(image)'",
                "input:",
                f"  - image: '{registry.host}/{unique_repo}:1.0'",
                "    platforms: [linux/amd64, linux/arm64/v8]",
            ]
        )
        + "\n"
    )
    tree = tmp_path / "tree"
    report = run_apply(registry, wishlist, tree, thin=False)
    assert report.ok, report.to_json()
    path = f"{registry.host}/{unique_repo}:1.0"
    # directories named as $(CVMFS_ARCH) expands on stock clients (uname -m)
    assert "$(CVMFS_ARCH:-x86_64)" in os.readlink(tree / path)
    for platform, arch in (("linux/amd64", "x86_64"), ("linux/arm64/v8", "aarch64")):
        arch_link = tree / ".multiarch" / arch / path
        image = index.image_for(platform)
        assert os.path.realpath(arch_link).endswith(layout.hex_of(image.config_digest))
    state = read_state(tree, REPO)
    assert sorted(str(i.platform) for i in state.images) == ["linux/amd64", "linux/arm64/v8"]
    assert run_apply(registry, wishlist, tree, thin=False).transactions == 0


def test_multiarch_thin_images_are_one_index(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    """Every platform's thin image, under one name: an OCI image index (not last-one-wins)."""
    push_index(registry.url, unique_repo, "2.0", {"linux/amd64": [BASE], "linux/arm64/v8": [TOP]})
    wishlist = tmp_path / "wishlist.yaml"
    wishlist.write_text(
        f"version: 1\nuser: t\ncvmfs_repo: '{REPO}'\n"
        f"output_format: '{registry.host}/thin/$(image)'\ninput:\n"
        f"  - image: '{registry.host}/{unique_repo}:2.0'\n"
        "    platforms: [linux/amd64, linux/arm64/v8]\n"
    )
    assert run_apply(registry, wishlist, tmp_path / "tree").ok
    accept = {"Accept": "application/vnd.oci.image.index.v1+json"}
    url = f"{registry.url}/v2/thin/{unique_repo}/manifests/2.0"
    index = requests.get(url, headers=accept, timeout=10).json()
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = {
        "/".join(
            filter(
                None,
                (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant")),
            )
        )
        for m in index["manifests"]
    }
    assert platforms == {"linux/amd64", "linux/arm64/v8"}
    urls = set()
    for entry in index["manifests"]:
        thin, _config = pull_thin(registry, f"thin/{unique_repo}", entry["digest"])
        urls |= {layer["url"] for layer in thin["layers"]}  # type: ignore[attr-defined]
    assert len(urls) == 2  # each platform's own layers


class _NoRegistry:
    """Any use is a test failure: the plan must be refused before touching a registry."""

    def download_blob(
        self, ref: object, digest: str, size: int, dest: Path, *, progress: object = None
    ) -> None:
        raise AssertionError("downloaded")

    def push_blob(self, ref: object, data: bytes) -> str:
        raise AssertionError("pushed")

    def push_manifest(self, ref: object, body: bytes, media_type: str) -> str:
        raise AssertionError("pushed")


def test_malformed_digests_never_become_paths(tmp_path: Path) -> None:
    ref = parse("reg.example.org/a/b:1")
    wish = Wish(ref, Location("w.yaml", 5, 5), text=str(ref))
    bad = ResolvedImage(
        wish=wish,
        reference=ref,
        platform=DEFAULT_PLATFORM,
        manifest_digest="sha256:" + "1" * 64,
        image_id="sha256:" + "2" * 64,
        layers=(Layer("sha256:../../../../etc", 10, "application/x-tar"),),
    )
    plan = Plan(
        cvmfs_repo=REPO,
        now=NOW,
        grace_days=30,
        images=(ImageChange("add", "reg.example.org/a/b:1", ref, wish=wish, new=bad),),
    )
    pub = LocalPublisher(tmp_path / "tree")
    report = apply_plan(plan, pub, _NoRegistry(), config=Config(thin=False))
    assert not report.ok and "not a sha256 digest" in report.results[0].message
    assert report.transactions == 0 and not (tmp_path / "tree").exists()


def test_failed_thin_push_aborts_the_image(
    registry: LocalRegistry, basic_registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    push_image(registry.url, unique_repo, "1.0", [BASE])
    wishlist = tmp_path / "wishlist.yaml"
    wishlist.write_text(
        f"version: 1\nuser: t\ncvmfs_repo: '{REPO}'\n"
        f"output_format: '{basic_registry.host}/thin/$(image)'\n"
        f"input:\n  - '{registry.host}/{unique_repo}:1.0'\n"
    )
    loaded, problems = load_wishlist(wishlist.read_bytes(), str(wishlist))
    assert loaded is not None, problems
    config = Config(insecure_registries=(registry.host, basic_registry.host), backoff=0.01)
    tree = tmp_path / "tree"
    with client_for(registry.host, basic_registry.host) as client:  # no credentials
        _plan, report = converge(loaded, LocalPublisher(tree), client, config=config, now=NOW)
    assert not report.ok and report.transactions == 1
    assert not os.path.lexists(tree / f"{registry.host}/{unique_repo}:1.0")
    assert read_state(tree, REPO).flat_images == frozenset()  # aborted: retried next run


def _flat_digest(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = f"dir:{st.st_mode & 0o7777:o}"
        else:
            out[rel] = f"file:{st.st_mode & 0o7777:o}:{st.st_nlink}:{path.read_bytes()!r}"
    return out


def test_flat_from_blobs_equals_flat_from_published_layers(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    hard = build_layer([whiteout("usr/bin/tool"), file("usr/bin/tool", "new\n", mode=0o700)])
    x = push_image(registry.url, unique_repo, "x", [BASE, TOP, hard], env=["A=1"])
    push_image(registry.url, unique_repo, "y", [BASE, TOP, hard, NEWER])
    fresh, reused = tmp_path / "fresh", tmp_path / "reused"
    write_wishlist(tmp_path / "x.yaml", registry, f"{unique_repo}:x")
    write_wishlist(tmp_path / "y.yaml", registry, f"{unique_repo}:y")
    assert run_apply(registry, tmp_path / "x.yaml", fresh, thin=False).downloaded_layers == 3
    assert run_apply(registry, tmp_path / "y.yaml", reused, thin=False).ok
    second = run_apply(registry, tmp_path / "x.yaml", reused, thin=False)
    assert second.ok and second.downloaded_layers == 0  # built from the published layerfs
    flat = layout.flat_dir(x.config_digest)
    assert _flat_digest(fresh / flat) == _flat_digest(reused / flat)
    assert (fresh / flat / "usr/bin/tool").read_text() == "new\n"


def test_rerun_downloads_no_blob_not_even_the_config(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    """The config blob is kept beside manifest.json, content-addressed: a re-run with
    nothing changed asks the registry for manifests only."""
    pushed = push_image(registry.url, unique_repo, "1.0", [BASE, TOP], cmd=["/bin/sh"])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, f"{unique_repo}:1.0")
    tree = tmp_path / "tree"
    assert run_apply(registry, wishlist, tree, thin=False).ok
    stored = tree / ".metadata" / f"{registry.host}/{unique_repo}:1.0" / "config.json"
    assert stored.read_bytes() == pushed.config
    loaded, _problems = load_wishlist(wishlist.read_bytes(), str(wishlist))
    assert loaded is not None
    paths: list[str] = []
    with client_for(registry.host) as client:
        send = client.transport.send

        def record(endpoint: object, method: str, path: str, **kw: object) -> object:
            paths.append(path)
            return send(endpoint, method, path, **kw)  # type: ignore[arg-type]

        client.transport.send = record  # type: ignore[method-assign,assignment]
        _plan, report = converge(
            loaded, LocalPublisher(tree), client, config=Config(thin=False), now=NOW
        )
    assert report.ok and report.transactions == 0
    assert paths and not [p for p in paths if "/blobs/" in p]
