"""``wishbot verify``: a tree made by a real ``apply`` is clean; each kind of damage is found."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from apply_util import NOW, REPO, run_apply, write_wishlist
from registry_util import client_for

from bot.cli import main
from bot.config import Config
from bot.core import audit, layout
from bot.core.audit import FlatFacts, TreeFacts
from bot.core.catalog import catalog_files
from bot.core.schemas import schema_errors
from bot.publisher import apply as apply_module
from bot.publisher.state import read_state
from bot.publisher.verify import flat_facts, next_batch, read_status, tree_entries, verify
from bot.runtime.journal import Journal
from bot.runtime.pipeline import WishbotPipeline
from bot.runtime.queue import Queue
from bot.runtime.server import WebhookServer
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


@pytest.fixture
def published(registry: LocalRegistry, unique_repo: str, tmp_path: Path) -> dict[str, object]:
    """A tree from two real ``apply`` runs: one image, then its tag moved (one scheduled)."""
    first = push_image(registry.url, unique_repo, "1.0", [BASE, TOP], cmd=["/bin/sh"])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, f"{unique_repo}:1.0")
    tree = tmp_path / "tree"
    assert run_apply(registry, wishlist, tree).ok
    moved = push_image(registry.url, unique_repo, "1.0", [BASE, NEWER], cmd=["/bin/sh"])
    assert run_apply(registry, wishlist, tree, now=NOW + timedelta(days=1)).ok
    path = f"{registry.host}/{unique_repo}:1.0"
    return {"tree": tree, "path": path, "first": first, "moved": moved}


def _deep(registry: LocalRegistry, tree: Path) -> audit.AuditReport:
    with client_for(registry.host) as client:
        return verify(tree, download=lambda ref, d, s, dest: client.download_blob(ref, d, s, dest))


def _checks(report: audit.AuditReport) -> list[tuple[str, str]]:
    return [(f.check, f.path) for f in report.findings]


def test_a_healthy_tree_is_clean_also_deep(
    registry: LocalRegistry, published: dict[str, object]
) -> None:
    tree = published["tree"]
    assert isinstance(tree, Path)
    report = verify(tree)
    assert report.ok, report.render()
    assert report.images == 1 and report.layers == 3
    deep = _deep(registry, tree)
    assert deep.ok and deep.deep, deep.render()
    assert schema_errors(deep.to_json(), "verify.schema.json") == []


def test_missing_singularity_file_and_leftover_whiteout(published: dict[str, object]) -> None:
    tree, moved = published["tree"], published["moved"]
    assert isinstance(tree, Path)
    flat = tree / layout.flat_dir(moved.config_digest)  # type: ignore[attr-defined]
    (flat / ".singularity.d/runscript").unlink()
    (flat / "app/.wh.gone").write_text("")
    report = verify(tree)
    assert _checks(report) == [
        ("singularity", layout.flat_dir(moved.config_digest)),  # type: ignore[attr-defined]
        ("whiteout", layout.flat_dir(moved.config_digest)),  # type: ignore[attr-defined]
    ]
    assert ".singularity.d/runscript" in report.findings[0].message
    assert "app/.wh.gone" in report.findings[1].message
    assert "--repair" in report.findings[0].fix


def test_layer_files_that_do_not_match_their_tar(
    registry: LocalRegistry, published: dict[str, object]
) -> None:
    tree, first = published["tree"], published["first"]
    assert isinstance(tree, Path)
    base, top = first.layer_digests  # type: ignore[attr-defined]
    (tree / layout.layerfs_dir(base) / "usr/bin/tool").write_text("#!/bin/sh\necho evil\n")
    # the whiteout a real overlayfs publish drops silently (issue 9)
    (tree / layout.layerfs_dir(top) / "etc/.wh.os-release").unlink()
    assert verify(tree).ok  # not visible without --deep
    deep = _deep(registry, tree)
    found = {f.path: f.message for f in deep.findings}
    assert set(found) == {layout.layerfs_dir(base), layout.layerfs_dir(top)}
    assert "usr/bin/tool: content differs" in found[layout.layerfs_dir(base)]
    assert "etc/.wh.os-release: missing" in found[layout.layerfs_dir(top)]


def test_recorded_diff_id_that_does_not_match(
    registry: LocalRegistry, published: dict[str, object]
) -> None:
    tree, first = published["tree"], published["first"]
    assert isinstance(tree, Path)
    base = first.layer_digests[0]  # type: ignore[attr-defined]
    info = tree / layout.layer_metadata_dir(base) / "layers.json"
    text = info.read_text()
    info.write_text(text.replace(first.diff_ids[0], "sha256:" + "0" * 64))  # type: ignore[attr-defined]
    deep = _deep(registry, tree)
    assert _checks(deep) == [("layer-content", f"{layout.layer_metadata_dir(base)}/layers.json")]


def test_dangling_public_path_and_backlink_to_deleted_image(
    published: dict[str, object],
) -> None:
    tree, path, first = published["tree"], published["path"], published["first"]
    assert isinstance(tree, Path) and isinstance(path, str)
    other = path.replace(":1.0", ":gone")
    os.symlink(layout.flat_link(other, "sha256:" + "ab" * 32), tree / other)
    base = first.layer_digests[0]  # type: ignore[attr-defined]
    origin = tree / layout.layer_metadata_dir(base) / "origin.json"
    users = json.loads(origin.read_text())["origin"]
    deleted = "sha256:" + "cd" * 32
    origin.write_text(json.dumps({"origin": [*users, deleted]}))
    report = verify(tree)
    assert _checks(report) == [
        ("dangling-path", other),
        ("backlink", f"{layout.layer_metadata_dir(base)}/origin.json"),
    ]
    assert deleted in report.findings[1].message


def test_deleted_flat_image_dangles_its_path_and_stale_schedule(
    published: dict[str, object],
) -> None:
    tree, path, first = published["tree"], published["path"], published["first"]
    assert isinstance(tree, Path)
    shutil.rmtree(tree / layout.flat_dir(first.config_digest))  # type: ignore[attr-defined]
    report = verify(tree)
    checks = _checks(report)
    assert ("schedule", layout.REMOVE_SCHEDULE) in checks
    assert ("dangling-path", path) not in checks  # the path serves the moved image


def test_cli_exit_codes_and_json(
    published: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    tree = published["tree"]
    assert isinstance(tree, Path)
    assert main(["verify", "--publisher", f"local:{tree}"]) == 0
    assert "clean" in capsys.readouterr().out
    flat = next(p for p in (tree / layout.FLAT).glob("*/*") if p.is_dir())
    (flat / ".singularity.d/env/10-docker2singularity.sh").unlink()
    assert main(["verify", "--publisher", f"local:{tree}", "--format", "json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["findings"][0]["check"] == "singularity"
    assert schema_errors(out, "verify.schema.json") == []


# --- pure: variant symlinks as a stock client expands them -----------------------------

HEX = "ef" * 32


def _variant_facts(arch: str) -> TreeFacts:
    path = "reg.example/tool:1"
    link = f"{layout.MULTIARCH}/{arch}/{path}"
    return TreeFacts(
        links={
            path: layout.relative_link(path, f"{layout.MULTIARCH}/$(CVMFS_ARCH:-amd64)/{path}"),
            link: layout.flat_link(link, f"sha256:{HEX}"),
        },
        public=(path,),
        flats={f"sha256:{HEX}": FlatFacts(f"sha256:{HEX}")},
        metadata={link: audit.ImageMeta(f"sha256:{HEX}")},
    )


def test_variant_symlink_resolves_for_uname_named_architectures() -> None:
    assert audit.audit(_variant_facts("x86_64")).ok
    assert audit.audit(_variant_facts("aarch64")).ok


def test_variant_symlink_named_by_go_architecture_dangles_on_stock_clients() -> None:
    report = audit.audit(_variant_facts("amd64"))
    (finding,) = report.findings
    assert finding.check == "dangling-path"
    assert "CVMFS_ARCH=x86_64" in finding.message
    assert ".multiarch/x86_64/reg.example/tool:1" in finding.fix


def test_a_flat_image_without_its_singularity_files_is_not_published(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    push_image(registry.url, unique_repo, "1.0", [BASE, TOP])
    push_image(registry.url, unique_repo, "2.0", [BASE, NEWER])
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, f"{unique_repo}:1.0", f"{unique_repo}:2.0")
    tree = tmp_path / "tree"
    real = apply_module.write_singularity_metadata
    calls: list[Path] = []

    def forgetful(root: Path, config: object, **kwargs: object) -> None:
        real(root, config, **kwargs)  # type: ignore[arg-type]
        calls.append(root)
        if len(calls) == 1:  # the first image loses its runscript, as DUCC's once did
            (root / ".singularity.d/runscript").unlink()

    monkeypatch.setattr(apply_module, "write_singularity_metadata", forgetful)
    report = run_apply(registry, wishlist, tree)
    failed, ok = report.results
    assert not failed.ok and ok.ok
    assert ".singularity.d/runscript" in failed.message
    assert not os.path.lexists(tree / failed.path)  # nothing of it is visible
    assert verify(tree).ok


# --- the scheduled deep verify: maintenance, metrics, catalog ----------------------------


def test_maintenance_runs_the_deep_verify_daily_and_shows_it(
    registry: LocalRegistry, published: dict[str, object], tmp_path: Path
) -> None:
    tree, moved = published["tree"], published["moved"]
    assert isinstance(tree, Path)
    clock = [NOW + timedelta(days=2)]
    config = Config(
        publisher=f"local:{tree}",
        insecure_registries=(registry.host,),
        backoff=0.01,
        verify_interval=86400,
        verify_batch=2,
        listen="127.0.0.1:0",
        repositories=("team/wishlist",),
    )
    pipeline = WishbotPipeline(config, clock=lambda: clock[0])
    assert pipeline.collect().endswith("; deep verify (2 of 3 layer(s)): clean")
    status = read_status(tree)
    assert status is not None and status["ok"] is True and status["deep"] is True
    first_cursor = status["cursor"]
    clock[0] += timedelta(hours=1)
    assert "verify" not in pipeline.collect()  # not due yet
    flat = tree / layout.flat_dir(moved.config_digest)  # type: ignore[attr-defined]
    (flat / ".singularity.d/runscript").unlink()
    clock[0] += timedelta(days=1)
    assert pipeline.collect().endswith(
        "; deep verify (2 of 3 layer(s)): 1 finding(s) (run wishbot verify --deep)"
    )
    status = read_status(tree)
    assert status is not None and status["errors"] == 1
    assert status["cursor"] != first_cursor  # the layers take turns

    # the catalog shows it ...
    files = catalog_files(read_state(tree, REPO), grace_days=30, verified=status)
    catalog = json.loads(files["catalog.json"])
    assert catalog["verified"]["errors"] == 1
    assert schema_errors(catalog, "catalog.schema.json") == []
    assert "Last verified (deep)" in files["CATALOG.md"].decode()
    # ... and so do the metrics
    server = WebhookServer(
        config,
        secret="s3cret",
        queue=Queue(tmp_path / "queue.sqlite"),
        journal=Journal(tmp_path / "journal.sqlite"),
        pipeline=pipeline,
        forge_for=lambda kind, repository: None,  # type: ignore[arg-type,return-value]
    )
    metrics = server.metrics_text()
    assert 'wishbot_verify_findings{state="error"} 1' in metrics
    assert 'wishbot_verify_checked_timestamp_seconds{state="findings"}' in metrics


# --- --repair ------------------------------------------------------------------------


def test_repair_rebuilds_flat_layer_backlinks_and_schedule(
    registry: LocalRegistry,
    published: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tree, first, moved = published["tree"], published["first"], published["moved"]
    assert isinstance(tree, Path)
    flat = tree / layout.flat_dir(moved.config_digest)  # type: ignore[attr-defined]
    (flat / ".singularity.d/runscript").unlink()
    (flat / "app/.wh.gone").write_text("")
    base = first.layer_digests[0]  # type: ignore[attr-defined]
    (tree / layout.layerfs_dir(base) / "usr/bin/tool").write_text("tampered\n")
    origin = tree / layout.layer_metadata_dir(base) / "origin.json"
    users = json.loads(origin.read_text())["origin"]
    origin.write_text(json.dumps({"origin": [*users, "sha256:" + "cd" * 32]}))
    schedule = tree / layout.REMOVE_SCHEDULE
    entries = json.loads(schedule.read_text())
    schedule.write_text(json.dumps([*entries, {"Config": {"Digest": "sha256:" + "ee" * 32}}]))
    monkeypatch.setenv("WISHBOT_INSECURE_REGISTRIES", registry.host)
    args = ["verify", "--publisher", f"local:{tree}", "--deep", "--repair", "--format", "json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert schema_errors(out, "verify.schema.json") == []
    assert out["ok"] is True and out["findings"] == []
    fixed = sorted((r["finding"]["check"], r["done"]) for r in out["repairs"])
    assert fixed == [
        ("backlink", True),
        ("layer-content", True),
        ("schedule", True),
        ("singularity", True),
    ]  # the whiteout finding is the same flat image: rebuilt once
    assert (flat / ".singularity.d/runscript").is_file()
    assert not (flat / "app/.wh.gone").exists()
    tool = tree / layout.layerfs_dir(base) / "usr/bin/tool"
    assert tool.read_text() == "#!/bin/sh\necho tool\n"
    assert json.loads(origin.read_text())["origin"] == sorted(users)
    assert main(["verify", "--publisher", f"local:{tree}"]) == 0


def test_scheduled_deep_verify_takes_layers_in_turn() -> None:
    layers = ["a", "b", "c", "d", "e"]
    assert next_batch(layers, None, 2) == ["a", "b"]
    assert next_batch(layers, "b", 2) == ["c", "d"]
    assert next_batch(layers, "d", 2) == ["e", "a"]
    assert next_batch(layers, "gone", 2) == ["a", "b"]  # a cursor past the end wraps
    assert next_batch(layers, "c", 0) == layers


def test_a_multiarch_tree_from_apply_is_judged_as_a_stock_client_sees_it(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    push_index(
        registry.url, unique_repo, "1.0", {"linux/amd64": [BASE], "linux/arm64/v8": [BASE, TOP]}
    )
    wishlist = tmp_path / "wishlist.yaml"
    wishlist.write_text(
        "version: 1\nuser: tester\ncvmfs_repo: 'unpacked.example.org'\n"
        f"output_format: '{registry.host}/thin/$(image)'\ninput:\n"
        f"  - image: '{registry.host}/{unique_repo}:1.0'\n"
        "    platforms: [linux/amd64, linux/arm64/v8]\n"
    )
    tree = tmp_path / "tree"
    assert run_apply(registry, wishlist, tree, thin=False).ok
    arches = {p.name for p in (tree / layout.MULTIARCH).iterdir()}
    # a .multiarch name that is not what a client sets CVMFS_ARCH to (uname -m) dangles
    # for that client; with uname names (x86_64, aarch64) the tree is clean
    unseen = sorted(a for a in arches if audit.client_arch(a) not in arches)
    report = verify(tree)
    assert [f.check for f in report.findings] == ["dangling-path"] * len(unseen), report.render()
    for finding, arch in zip(report.findings, unseen, strict=True):
        assert f"CVMFS_ARCH={audit.client_arch(arch)}" in finding.message


def test_findings_escape_names_from_images_for_the_terminal() -> None:
    facts = TreeFacts(
        links={"reg.example/a:1": layout.flat_link("reg.example/a:1", f"sha256:{HEX}")},
        public=("reg.example/a:1",),
        flats={
            f"sha256:{HEX}": FlatFacts(f"sha256:{HEX}", whiteouts=("etc/.wh.\x1b]0;pwned\x07",))
        },
        metadata={"reg.example/a:1": audit.ImageMeta(f"sha256:{HEX}")},
    )
    (finding,) = audit.audit(facts).findings
    assert "\x1b" not in finding.render() and "\x07" not in finding.render()


def test_whiteout_scan_and_tree_walk_go_deeper_than_python_recurses(tmp_path: Path) -> None:
    deep = str(tmp_path / "flat")
    os.mkdir(deep)
    for _ in range(1500):
        deep += "/d"
        os.mkdir(deep)
    open(f"{deep}/.wh.gone", "w").close()
    try:
        facts = flat_facts(tmp_path / "flat", f"sha256:{HEX}")
        assert len(facts.whiteouts) == 1 and facts.whiteouts[0].endswith("/d/.wh.gone")
        assert len(tree_entries(tmp_path / "flat")) == 1501
    finally:  # pytest's own clean-up of old tmp dirs recurses and cannot remove it
        subprocess.run(["rm", "-rf", "--", str(tmp_path / "flat")], check=True)
