"""``bench/plan.py`` at a tiny size, so the benchmark keeps working (``make bench`` runs it big)."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "plan.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_plan", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_plan"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench()


def test_the_benchmark_runs_small_and_checks_its_claims(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WISHBOT_CONFIG", "WISHBOT_PUBLISHER"):
        monkeypatch.delenv(name, raising=False)
    out = io.StringIO()
    result = bench.run(30, 5, [30, 90], out=out)
    text = out.getvalue()
    assert result.ok, text
    assert result.wishes == 30 and result.changed == 5
    # the merge-request view asks the registry only about the changed wishes
    assert result.base_requests == result.changed_only_requests > 0
    assert result.naive_requests > 2 * result.base_requests
    assert result.base_rows == {"add": 5, "remove": 3}  # 3 tag bumps, 2 new images
    assert result.naive_rows == {"add": 5, "remove": 3, "unchanged": 27}
    assert [(row.images, row.view) for row in result.scale] == [
        (30, "merge request"),
        (30, "full (apply)"),
        (90, "merge request"),
        (90, "full (apply)"),
    ]
    assert [row.rows for row in result.scale] == [10, 35, 10, 95]
    assert "wishbot plan --base (merge request)" in text
    assert "naive: resolve every wish" in text
    assert "(same as plan --base)" in text
    assert "PROBLEM" not in text


def test_names_come_from_the_real_data(bench: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "osg").mkdir()
    (tmp_path / "osg" / "docker_images.txt").write_text(
        "# comment\n\ndebian:stable\nrocker/r-ver\nghcr.io/star-bnl/star-sw:SL23f\n"
        "atlas/analysisbase:21.2.1*\nDEBIAN:stable\n"
    )
    (tmp_path / "unpacked-recipe-history").mkdir()
    (tmp_path / "unpacked-recipe-history" / "01.yaml").write_text(
        "input:\n    - 'https://gitlab-p4n.aip.de:5005/c4p/stacks/wn:latest'\n"
    )
    assert bench.real_names(tmp_path) == [
        ("library/debian", "stable"),
        ("rocker/r-ver", "latest"),
        ("star-bnl/star-sw", "SL23f"),
        ("atlas/analysisbase", "21.2.10"),
        ("c4p/stacks/wn", "latest"),
    ]
    names = bench.wish_names(12, tmp_path)
    assert len(names) == len(set(names)) == 12
    assert names[5] == ("library/debian", "stable-r1")


def test_the_merge_request_changes_exactly_the_asked_number(bench: ModuleType) -> None:
    names = [(f"r/{i}", "1") for i in range(20)]
    new, brought = bench.merge_request(names, 5)
    assert len(brought) == 5
    assert len(set(new) - set(names)) == 5
    assert len(set(names) - set(new)) == 3  # the tag bumps
