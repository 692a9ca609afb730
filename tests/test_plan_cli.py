"""``wishbot plan`` and ``wishbot catalog`` end to end: real registry, real files, real publisher dir."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from plan_samples import published
from plan_samples import state as samples_state
from registry_util import client_for
from registry_util import wish as registry_wish

from bot.commands import catalog as catalog_command
from bot.commands import plan as plan_command
from bot.core.catalog import catalog_json
from bot.core.schemas import schema_errors
from bot.sandbox.image_builder import push_image
from bot.sandbox.layers import build_layer, file
from bot.sandbox.registry_server import LocalRegistry

BASE = build_layer([file("etc/os-release", "ID=plan-test\n")])
V1 = build_layer([file("app/version", "1\n")])
V2 = build_layer([file("app/version", "2\n")])
NOW = "2026-03-01T12:00:00Z"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="wishbot")
    subparsers = parser.add_subparsers()
    plan_command.register(subparsers)
    catalog_command.register(subparsers)
    args = parser.parse_args(argv)
    code = int(args.func(args))
    out, err = capsys.readouterr()
    return code, out, err


def wishlist(path: Path, *inputs: str) -> str:
    lines = [
        "version: 1",
        "user: cvmfsunpacker",
        "cvmfs_repo: 'unpacked.example.org'",
        "output_format: 'registry.example.org/unpacked/$(image)'",
        "input:",
        *(f"  - '{text}'" for text in inputs),
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def images(
    registry: LocalRegistry, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("WISHBOT_INSECURE_REGISTRIES", registry.host)
    monkeypatch.delenv("WISHBOT_CONFIG", raising=False)
    monkeypatch.delenv("WISHBOT_PUBLISHER", raising=False)
    one = push_image(registry.url, unique_repo, "1.0", [BASE, V1])
    two = push_image(registry.url, unique_repo, "2.0", [BASE, V2])
    return {"one": one, "two": two, "name": f"{registry.host}/{unique_repo}", "host": registry.host}


def catalog_with(tmp_path: Path, host: str, *texts: str) -> str:
    """A catalog.json describing a publisher that already serves ``texts``."""
    client = client_for(host)
    done = []
    for text in texts:
        resolution = client.resolve(registry_wish(text))
        done += [published(image) for image in resolution.images]
    state = replace(samples_state(done), cvmfs_repo="unpacked.example.org")
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog_json(state, grace_days=30)))
    return str(path)


def test_full_plan_against_an_empty_publisher(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    new = wishlist(tmp_path / "wishlist.yaml", f"{images['name']}:*")
    code, out, err = run(["plan", new, "--format", "json", "--now", NOW], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert schema_errors(data, "plan.schema.json") == []
    assert [(r["action"], r["path"]) for r in data["images"]] == [
        ("add", f"{images['name']}:1.0"),
        ("add", f"{images['name']}:2.0"),
    ]
    assert data["totals"]["layers_to_ingest"] == 3  # BASE counted once
    assert (
        data["totals"]["download_bytes"]
        == sum(images["one"].layer_sizes) + images["two"].layer_sizes[1]
    )
    assert "empty" in err


def test_merge_request_view_moves_a_pinned_tag(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    old = wishlist(tmp_path / "old.yaml", f"{images['name']}:1.0")
    new = wishlist(tmp_path / "new.yaml", f"{images['name']}:2.0")
    current = catalog_with(tmp_path, images["host"], f"{images['name']}:1.0")
    argv = ["plan", new, "--base", old, "--catalog", current, "--now", NOW]
    code, out, _ = run([*argv, "--format", "markdown"], capsys)
    assert code == 0
    assert out.startswith("<!-- wishbot:plan -->\n")
    assert "✅ Merging this change adds 1 image" in out and "1 old image" in out
    code, out, _ = run([*argv, "--format", "json"], capsys)
    data = json.loads(out)
    assert data["base"] is True
    rows = {r["path"]: r for r in data["images"]}
    assert rows[f"{images['name']}:2.0"]["action"] == "add"
    assert rows[f"{images['name']}:1.0"]["action"] == "remove"
    assert rows[f"{images['name']}:1.0"]["eligible"] == "2026-03-31T12:00:00Z"
    shared = [r for r in data["layers"] if r["action"] == "shared"]
    assert [r["digest"] for r in shared] == [images["one"].layer_digests[0]]


def test_missing_tag_fails_closed(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    new = wishlist(tmp_path / "wishlist.yaml", f"{images['name']}:3.0")
    current = catalog_with(tmp_path, images["host"], f"{images['name']}:1.0")
    code, out, _ = run(["plan", new, "--catalog", current, "--now", NOW], capsys)
    assert code == 1
    assert out.startswith("❌ 1 problem")
    # 1.0 is not covered by the failing wish: it goes; the failing wish itself is an error row
    assert any(line.startswith("remove") for line in out.splitlines())
    assert any(line.startswith("error") for line in out.splitlines())


def test_ignored_missing_tag_is_a_warning_and_exit_code_0(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """ignoreErrors agrees with itself: plan exits 0 like validate --check-registry,
    the verdict and the comment say ⚠️, and the wish still protects nothing it should not."""
    new = wishlist(tmp_path / "wishlist.yaml", f"{images['name']}:3.0")
    text = Path(new).read_text().replace("input:", f"ignoreErrors: ['{images['name']}:*']\ninput:")
    Path(new).write_text(text)
    current = catalog_with(tmp_path, images["host"], f"{images['name']}:1.0")
    code, out, _ = run(["plan", new, "--catalog", current, "--now", NOW], capsys)
    assert code == 0, out
    assert out.startswith("✅") and "(1 warning)" in out.splitlines()[0]
    code, out, _ = run(["plan", new, "--catalog", current, "--format", "markdown"], capsys)
    assert code == 0 and "❌" not in out and "ignoreErrors" in out
    code, out, _ = run(["plan", new, "--catalog", current, "--format", "json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["totals"]["has_errors"] is False
    assert [p["severity"] for p in data["problems"]] == ["warning"]


def test_broken_wishlist_plans_nothing(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "wishlist.yaml"
    bad.write_text("version: 1\ninptu: []\n")
    current = catalog_with(tmp_path, images["host"], f"{images['name']}:1.0")
    code, out, _ = run(["plan", str(bad), "--catalog", current, "--format", "json"], capsys)
    assert code == 1
    data = json.loads(out)
    assert data["images"] == [] and data["layers"] == []
    assert data["problems"] and data["problems"][0]["line"] >= 1


def test_bad_catalog_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.errors import PublisherError

    new = wishlist(tmp_path / "wishlist.yaml", "quay.io/org/app:1")
    broken = tmp_path / "catalog.json"
    broken.write_text("{not json")
    with pytest.raises(PublisherError, match="not JSON"):
        run(["plan", new, "--catalog", str(broken)], capsys)


def test_catalog_command_writes_deterministic_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WISHBOT_CONFIG", raising=False)
    tree = tmp_path / "tree"
    tree.mkdir()
    out_dir = tmp_path / "out"
    argv = ["catalog", "--publisher", f"local:{tree}", "--cvmfs-repo", "unpacked.example.org"]
    code, _, _ = run([*argv, "--output", str(out_dir)], capsys)
    assert code == 0
    first = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert set(first) == {"CATALOG.md", "catalog.json"}
    assert json.loads(first["catalog.json"])["images"] == []
    run([*argv, "--output", str(out_dir)], capsys)
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == first
    code, out, _ = run([*argv, "--format", "json", "--generated", NOW], capsys)
    assert json.loads(out)["generated"] == "2026-03-01T12:00:00Z"


def test_catalog_command_markdown_and_json_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WISHBOT_CONFIG", raising=False)
    tree = tmp_path / "tree"
    tree.mkdir()
    md, js = tmp_path / "docs" / "CATALOG.md", tmp_path / "catalog.json"
    argv = ["catalog", "--publisher", f"local:{tree}", "--cvmfs-repo", "unpacked.example.org"]
    code, _, err = run([*argv, "--markdown", str(md), "--json", str(js)], capsys)
    assert code == 0
    assert md.read_text().startswith("# Container images in unpacked.example.org")
    assert json.loads(js.read_text())["images"] == []
    assert f"wrote {md}" in err
    stamp = md.stat().st_mtime_ns
    code, _, err = run([*argv, "--markdown", str(md)], capsys)
    assert f"unchanged {md}" in err
    assert md.stat().st_mtime_ns == stamp
    assert not list(tmp_path.rglob(".*.partial"))


def test_catalog_command_writes_the_html_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WISHBOT_CONFIG", raising=False)
    tree = tmp_path / "tree"
    tree.mkdir()
    page = tmp_path / "public" / "index.html"
    argv = ["catalog", "--publisher", f"local:{tree}", "--cvmfs-repo", "unpacked.example.org"]
    code, _, err = run([*argv, "--html", str(page)], capsys)
    assert code == 0 and f"wrote {page}" in err
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "0 image paths" in text
    code, _, err = run([*argv, "--html", str(page), "--output", str(tmp_path / "out")], capsys)
    assert code == 0 and f"unchanged {page}" in err  # deterministic
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"CATALOG.md", "catalog.json"}
