"""Whole runs with hostile wishes beside good ones: ``validate
--check-registry``, the merge-request review (plan comment) and ``apply``
each report the hostile wish as a problem of that wish only, honour
``ignoreErrors``, never print a traceback or a secret, and still plan and
publish the good images. Credentials written into the wishlist are refused
and never echoed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_registry import TOKEN_SECRET, HostileRegistry

from bot.cli import main
from bot.config import Config
from bot.publisher.state import read_state
from bot.runtime.pipeline import WishbotPipeline
from bot.sandbox.image_builder import PushedImage, push_image
from bot.sandbox.layers import build_layer, file, with_parents
from bot.sandbox.registry_server import LocalRegistry

REPO = "unpacked.example.org"
PASSWORD = "s3cr3t-in-the-wishlist"
HOSTILE = [
    "huge-manifest/app:1",
    "json-0/app:1",
    "json-2/app:1",
    "location-0/app:1",
    "retry-after-1/app:1",
    "newline-token/app:1",
    "many-tags/app:v*",
]


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry() as server:
        yield server


@pytest.fixture(scope="module")
def good(registry: LocalRegistry) -> PushedImage:
    layer = build_layer(with_parents([file("etc/motd", "beside hostile ones\n")]))
    return push_image(registry.url, "t/hostile-runs", "1", [layer], compression="none")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, registry: LocalRegistry, hostile: HostileRegistry) -> None:
    monkeypatch.setenv("WISHBOT_INSECURE_REGISTRIES", f"{registry.host},{hostile.host}")
    monkeypatch.setenv("WISHBOT_RETRIES", "1")
    monkeypatch.setenv("WISHBOT_BACKOFF", "0.01")
    monkeypatch.setenv("WISHBOT_THIN", "false")
    monkeypatch.delenv("WISHBOT_CONFIG", raising=False)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", "")
    monkeypatch.setenv("HOME", "/nonexistent-wishbot-test")


def write(path: Path, inputs: list[str], ignore: list[str] | None = None) -> Path:
    lines = [
        "version: 1",
        "user: t",
        f"cvmfs_repo: '{REPO}'",
        "output_format: 'x.io/sync/$(image)'",
    ]
    if ignore:
        lines += ["ignoreErrors:", *(f"  - '{glob}'" for glob in ignore)]
    lines += ["input:", *(f"  - '{text}'" for text in inputs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def inputs(registry: LocalRegistry, hostile: HostileRegistry) -> list[str]:
    return [
        f"https://{registry.host}/t/hostile-runs:1",
        *(f"https://{hostile.host}/{text}" for text in HOSTILE),
    ]


def assert_clean(text: str) -> None:
    assert "Traceback" not in text
    assert TOKEN_SECRET not in text and PASSWORD not in text


def test_validate_check_registry_goes_on_and_honours_ignore_errors(
    env: None,
    registry: LocalRegistry,
    hostile: HostileRegistry,
    good: PushedImage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    strict = write(tmp_path / "strict.yaml", inputs(registry, hostile))
    assert main(["validate", "--check-registry", "--format", "json", str(strict)]) == 1
    out, err = capsys.readouterr()
    assert_clean(out + err)
    problems = json.loads(out)
    flagged = {p["image"] for p in problems if p["severity"] == "error"}
    assert flagged == {f"https://{hostile.host}/{text}" for text in HOSTILE}
    lenient = write(
        tmp_path / "lenient.yaml", inputs(registry, hostile), [f"https://{hostile.host}/*"]
    )
    assert main(["validate", "--check-registry", str(lenient)]) == 0
    out, err = capsys.readouterr()
    assert_clean(out + err)
    assert "ignored because it matches ignoreErrors" in out + err


def test_review_plans_the_good_image_beside_hostile_wishes(
    env: None,
    registry: LocalRegistry,
    hostile: HostileRegistry,
    good: PushedImage,
    tmp_path: Path,
) -> None:
    ignore = [f"https://{hostile.host}/*"]
    head = write(tmp_path / "w.yaml", inputs(registry, hostile), ignore).read_bytes()
    review = WishbotPipeline(Config.load()).review(None, head, "w.yaml", trusted=True)
    assert review.valid and review.planned, review.validate_description
    assert_clean(review.comment)
    assert "t/hostile-runs" in review.comment
    assert "adds 1 image" in review.comment  # the verdict line of the redesigned comment


def test_apply_publishes_the_good_image_beside_hostile_wishes(
    env: None,
    registry: LocalRegistry,
    hostile: HostileRegistry,
    good: PushedImage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    path = write(tmp_path / "w.yaml", inputs(registry, hostile), [f"https://{hostile.host}/*"])
    code = main(["apply", str(path), "--publisher", f"local:{tree}"])
    out, err = capsys.readouterr()
    assert_clean(out + err)
    assert code == 0, out + err
    state = read_state(tree, REPO)
    assert [image.reference.repository for image in state.images] == ["t/hostile-runs"]
    strict = write(tmp_path / "strict.yaml", inputs(registry, hostile))
    assert main(["apply", str(strict), "--publisher", f"local:{tree}"]) == 1
    out, err = capsys.readouterr()
    assert_clean(out + err)
    assert "not converged" in err


def test_credentials_in_the_wishlist_are_refused_and_never_echoed(
    env: None,
    registry: LocalRegistry,
    good: PushedImage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    written = [
        f"https://alice:{PASSWORD}@{registry.host}/t/hostile-runs:1",
        f"alice:{PASSWORD}@quay.io/org/img",
        f"https://alice:{PASSWORD}@ghcr.io:latest",
        f"https://{registry.host}/t/hostile-runs:1",
    ]
    path = write(tmp_path / "w.yaml", written)
    assert main(["validate", str(path)]) == 1
    assert main(["validate", "--format", "json", str(path)]) == 1
    out, err = capsys.readouterr()
    assert_clean(out + err)
    assert out.count("credentials do not belong in the wishlist") >= 3
    assert "https://***@" in out
    review = WishbotPipeline(Config.load()).review(None, path.read_bytes(), "w.yaml", trusted=True)
    assert_clean(review.comment + review.validate_description)
    assert "credentials do not belong in the wishlist" in review.comment and not review.valid


def test_the_bot_publishes_the_good_image_beside_ignored_hostile_wishes(
    env: None,
    registry: LocalRegistry,
    hostile: HostileRegistry,
    good: PushedImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    monkeypatch.setenv("WISHBOT_PUBLISHER", f"local:{tree}")
    ignore = [f"https://{hostile.host}/*"]
    body = write(tmp_path / "w.yaml", inputs(registry, hostile), ignore).read_bytes()
    publication = WishbotPipeline(Config.load()).publish(body, "w.yaml", "c0ffee")
    assert publication.ok, publication.failure
    assert publication.published == (f"/cvmfs/{REPO}/{registry.host}/t/hostile-runs:1",)
    assert_clean(f"{publication.description} {publication.failure}")
