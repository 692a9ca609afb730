"""``plan`` says exactly what ``apply`` then does (real registry, real local publisher).

Each test plans (the :class:`Plan` object and ``wishbot plan --format json``),
applies through ``wishbot apply --format json``, and compares: the same
paths, platforms and actions; the same new layers (what ``apply``
downloads and what appears on the publisher); then a second plan has
nothing left to do.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.commands.plan import build_plan
from bot.config import Config
from bot.core.plan import Plan
from bot.core.render import render_json
from bot.publisher.state import read_state
from bot.sandbox.image_builder import push_image, push_index
from bot.sandbox.layers import build_layer, file, with_parents
from bot.sandbox.registry_server import LocalRegistry

REPO = "unpacked.example.org"
NOW = "2026-03-01T12:00:00Z"
LATER = "2026-03-02T12:00:00Z"
BASE = build_layer(with_parents([file("etc/os-release", "ID=agree\n")]))
V1 = build_layer(with_parents([file("app/version", "1\n")]))
V2 = build_layer(with_parents([file("app/version", "2\n")]))
V3 = build_layer(with_parents([file("app/version", "3\n")]))
OTHER = build_layer(with_parents([file("opt/other", "other\n")]))
ARM = build_layer(with_parents([file("etc/arch", "arm64\n")]))

Row = tuple[str, str, str | None]  # action, path, platform


@pytest.fixture
def setup(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("WISHBOT_INSECURE_REGISTRIES", registry.host)
    monkeypatch.setenv("WISHBOT_BACKOFF", "0.01")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    for name in ("WISHBOT_CONFIG", "WISHBOT_PUBLISHER", "WISHBOT_THIN"):
        monkeypatch.delenv(name, raising=False)
    push_image(registry.url, unique_repo, "1.0", [BASE, V1])
    push_image(registry.url, unique_repo, "2.0", [BASE, V2])
    push_image(registry.url, f"{unique_repo}-other", "latest", [BASE, OTHER])
    push_index(
        registry.url,
        f"{unique_repo}-multi",
        "1",
        {"linux/amd64": [BASE, V1], "linux/arm64": [BASE, ARM]},
    )
    tree = tmp_path / "tree"
    tree.mkdir()  # a new publisher: an existing, empty directory (plan refuses a missing one)
    return {
        "registry": registry,
        "name": f"{registry.host}/{unique_repo}",
        "tree": tree,
        "target": f"local:{tree}",
        "dir": tmp_path,
    }


def write_wishlist(setup: dict[str, Any], filename: str, *entries: str) -> str:
    path = setup["dir"] / filename
    host = setup["registry"].host
    path.write_text(
        f"version: 1\nuser: t\ncvmfs_repo: '{REPO}'\n"
        f"output_format: '{host}/thin/$(image)'\ninput:\n" + "".join(entries)
    )
    return str(path)


def full_wishlist(setup: dict[str, Any], filename: str = "wishlist.yaml") -> str:
    name = setup["name"]
    return write_wishlist(
        setup,
        filename,
        f"  - '{name}:*'\n",
        f"  - '{name}-other:latest'\n",
        f"  - image: '{name}-multi:1'\n    platforms: [linux/amd64, linux/arm64]\n",
    )


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert out, err
    return code, json.loads(out)


def plan_object(
    wishlist: str,
    *,
    publisher: str | None = None,
    catalog: str | None = None,
    base: str | None = None,
    now: str = NOW,
) -> Plan:
    args = argparse.Namespace(
        wishlist=wishlist, base=base, publisher=publisher, catalog=catalog, now=now
    )
    return build_plan(args, Config.load())


def plan_cli(
    wishlist: str, capsys: pytest.CaptureFixture[str], *options: str, now: str = NOW
) -> dict[str, Any]:
    code, data = cli(["plan", wishlist, "--format", "json", "--now", now, *options], capsys)
    assert code == 0, data["problems"]
    assert isinstance(data, dict)
    return data


def apply_cli(
    setup: dict[str, Any], wishlist: str, capsys: pytest.CaptureFixture[str], now: str = NOW
) -> dict[str, Any]:
    argv = ["apply", wishlist, "--publisher", setup["target"], "--format", "json", "--now", now]
    code, report = cli(argv, capsys)
    assert code == 0, report
    assert report["ok"] is True
    assert isinstance(report, dict)
    return report


def planned_rows(data: dict[str, Any]) -> set[Row]:
    return {
        (r["action"], r["path"], r["platform"])
        for r in data["images"]
        if r["action"] != "unchanged"
    }


def applied_rows(report: dict[str, Any]) -> set[Row]:
    return {(r["action"], r["path"], r["platform"]) for r in report["images"]}


def ingest(data: dict[str, Any]) -> set[str]:
    return {layer["digest"] for layer in data["layers"] if layer["action"] == "ingest"}


def published_layers(setup: dict[str, Any]) -> set[str]:
    return set(read_state(setup["tree"], REPO).layers)


def assert_agree(plan: Plan, data: dict[str, Any]) -> None:
    """The Plan object and the CLI's JSON are the same plan."""
    assert render_json(plan) == data


def assert_nothing_left(
    setup: dict[str, Any], wishlist: str, capsys: pytest.CaptureFixture[str], now: str
) -> None:
    again = plan_cli(wishlist, capsys, "--publisher", setup["target"], now=now)
    assert {r["action"] for r in again["images"]} == {"unchanged"}
    assert again["totals"]["layers_to_ingest"] == 0
    assert again["totals"]["download_bytes"] == 0
    assert again["totals"]["layers_scheduled"] == 0 and again["unscheduled"] == []
    unchanged = len(again["images"])
    assert again["verdict"] == f"✅ No changes: {unchanged} image{'s' * (unchanged != 1)} unchanged"
    plan = plan_object(wishlist, publisher=setup["target"], now=now)
    assert not plan.has_changes and not plan.has_errors
    report = apply_cli(setup, wishlist, capsys, now=now)
    assert report["images"] == [] and report["transactions"] == 0
    assert report["downloaded_layers"] == 0


def test_plan_lists_exactly_what_apply_does(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    wishlist = full_wishlist(setup)
    name = setup["name"]
    data = plan_cli(wishlist, capsys, "--publisher", setup["target"])
    assert_agree(plan_object(wishlist, publisher=setup["target"]), data)
    rows = planned_rows(data)
    assert rows == {
        ("add", f"{name}:1.0", "linux/amd64"),
        ("add", f"{name}:2.0", "linux/amd64"),
        ("add", f"{name}-other:latest", "linux/amd64"),
        ("add", f"{name}-multi:1", "linux/amd64"),
        ("add", f"{name}-multi:1", "linux/arm64"),
    }
    new_layers = ingest(data)
    assert len(new_layers) == 5  # BASE, V1, V2, OTHER, ARM: each once

    before = published_layers(setup)
    report = apply_cli(setup, wishlist, capsys)
    assert applied_rows(report) == rows
    assert report["transactions"] == len(rows)
    assert all(
        r["thin_image"] and r["thin_image"].startswith(f"{setup['registry'].host}/thin/")
        for r in report["images"]
    )
    assert report["downloaded_layers"] == data["totals"]["layers_to_ingest"] == len(new_layers)
    assert sum(r["downloaded_bytes"] for r in report["images"]) == data["totals"]["download_bytes"]
    assert published_layers(setup) - before == new_layers

    # every planned image is served where the plan said, as the plan said
    state = read_state(setup["tree"], REPO)
    served = {(image.manifest_digest, image.image_id) for image in state.images}
    for row in data["images"]:
        new = row["new"]
        assert (new["manifest_digest"], new["image_id"]) in served, row["path"]
        assert os.path.isdir(setup["tree"] / row["published_path"]), row["published_path"]
        assert os.path.islink(setup["tree"] / row["path"]), row["path"]
    assert (setup["tree"] / f"{name}:2.0" / "app/version").read_text() == "2\n"
    assert_nothing_left(setup, wishlist, capsys, NOW)


def test_a_moved_tag_and_a_removed_wish_are_applied_as_planned(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name = setup["name"]
    apply_cli(setup, full_wishlist(setup), capsys)
    old_state = read_state(setup["tree"], REPO)
    old_ids = {image.path: image.image_id for image in old_state.images}

    # upstream: 2.0 is rebuilt; in the wishlist: the other image is dropped
    moved = push_image(setup["registry"].url, name.split("/", 1)[1], "2.0", [BASE, V3])
    wishlist = write_wishlist(
        setup,
        "smaller.yaml",
        f"  - '{name}:*'\n",
        f"  - image: '{name}-multi:1'\n    platforms: [linux/amd64, linux/arm64]\n",
    )
    data = plan_cli(wishlist, capsys, "--publisher", setup["target"], now=LATER)
    assert_agree(plan_object(wishlist, publisher=setup["target"], now=LATER), data)
    rows = planned_rows(data)
    assert rows == {
        ("update", f"{name}:2.0", "linux/amd64"),
        ("remove", f"{name}-other:latest", "linux/amd64"),
    }
    update = next(r for r in data["images"] if r["action"] == "update")
    assert update["new"]["manifest_digest"] == moved.manifest_digest
    assert update["old"]["image_id"] == old_ids[f"{name}:2.0"]
    assert update["new_layers"] == [moved.layer_digests[1]]  # only V3: BASE is shared
    assert ingest(data) == {moved.layer_digests[1]}
    assert data["totals"]["images_scheduled"] == 2
    scheduled_layers = {r["digest"] for r in data["layers"] if r["action"] == "schedule"}
    assert len(scheduled_layers) == 2  # V2 and OTHER lose their last user; BASE stays

    before = published_layers(setup)
    report = apply_cli(setup, wishlist, capsys, now=LATER)
    assert applied_rows(report) == rows
    assert report["downloaded_layers"] == 1
    assert published_layers(setup) - before == ingest(data)
    state = read_state(setup["tree"], REPO)
    other = f"{name}-other:latest"
    # the removed path serves the same image until gc deletes it (retiring)
    assert [i.image_id for i in state.images if i.path == other] == [old_ids[other]]
    assert (setup["tree"] / other).resolve().is_dir()
    assert (setup["tree"] / f"{name}:2.0" / "app/version").read_text() == "3\n"
    scheduled_images = {(s.id, s.path) for s in state.schedule if s.kind == "image"}
    assert scheduled_images == {
        (old_ids[f"{name}:2.0"], f"{name}:2.0"),
        (old_ids[other], other),
    }
    # planned again: no second remove row, and the date is not reset
    assert_nothing_left(setup, wishlist, capsys, LATER)
    assert read_state(setup["tree"], REPO).schedule == state.schedule


def test_the_merge_request_plan_is_what_the_merge_publishes(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Review (``plan --base OLD --catalog catalog.json``) against publish (``apply``)."""
    name = setup["name"]
    old = write_wishlist(setup, "old.yaml", f"  - '{name}:1.0'\n")
    apply_cli(setup, old, capsys)
    catalog = setup["dir"] / "catalog"
    assert (
        main(
            [
                "catalog",
                "--publisher",
                setup["target"],
                "--cvmfs-repo",
                REPO,
                "--output",
                str(catalog),
            ]
        )
        == 0
    )
    capsys.readouterr()
    new = full_wishlist(setup, "new.yaml")
    options = ["--base", old, "--catalog", str(catalog / "catalog.json")]
    data = plan_cli(new, capsys, *options)
    assert data["base"] is True
    assert_agree(plan_object(new, base=old, catalog=str(catalog / "catalog.json")), data)
    rows = planned_rows(data)
    assert rows == {
        ("add", f"{name}:2.0", "linux/amd64"),
        ("add", f"{name}-other:latest", "linux/amd64"),
        ("add", f"{name}-multi:1", "linux/amd64"),
        ("add", f"{name}-multi:1", "linux/arm64"),
    }
    assert len(ingest(data)) == 3  # V2, OTHER, ARM; BASE and V1 are published already
    before = published_layers(setup)
    report = apply_cli(setup, new, capsys)
    assert applied_rows(report) == rows
    assert report["downloaded_layers"] == data["totals"]["layers_to_ingest"]
    assert published_layers(setup) - before == ingest(data)
    assert_nothing_left(setup, new, capsys, NOW)


def test_plan_reads_a_mounted_tree_without_touching_it(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only mount such as /cvmfs/unpacked.cern.ch is a valid current state."""
    wishlist = full_wishlist(setup)
    apply_cli(setup, wishlist, capsys)
    tree: Path = setup["tree"]

    def listing() -> list[tuple[str, int]]:
        return sorted((str(p), p.lstat().st_mtime_ns) for p in tree.rglob("*"))

    before = listing()
    mounted = plan_cli(wishlist, capsys, "--publisher", str(tree))
    assert mounted["images"] == plan_cli(wishlist, capsys, "--publisher", setup["target"])["images"]
    assert {r["action"] for r in mounted["images"]} == {"unchanged"}
    assert listing() == before
