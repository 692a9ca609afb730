"""``wishbot apply`` and ``wishbot gc`` as commands: exit codes, output, both backends."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.publisher.state import read_state
from bot.sandbox.image_builder import push_image
from bot.sandbox.layers import build_layer, file, with_parents
from bot.sandbox.registry_server import LocalRegistry

FAKE = Path(__file__).with_name("fake_cvmfs_server")
REPO = "unpacked.example.org"
LAYER_A = build_layer(with_parents([file("etc/a", "a\n")]))
LAYER_B = build_layer(with_parents([file("etc/b", "b\n")]))


def wishbot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def wishlist(path: Path, registry: LocalRegistry, *inputs: str) -> Path:
    body = "".join(f"  - '{registry.host}/{text}'\n" for text in inputs)
    path.write_text(
        f"version: 1\nuser: t\ncvmfs_repo: '{REPO}'\n"
        f"output_format: '{registry.host}/thin/$(image)'\ninput:\n{body}"
    )
    return path


def test_apply_remove_and_gc_on_local(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    env = {"WISHBOT_INSECURE_REGISTRIES": registry.host, "WISHBOT_BACKOFF": "0.01"}
    push_image(registry.url, unique_repo, "a", [LAYER_A])
    push_image(registry.url, unique_repo, "b", [LAYER_A, LAYER_B])
    tree = tmp_path / "tree"
    target = f"local:{tree}"
    both = wishlist(tmp_path / "both.yaml", registry, f"{unique_repo}:a", f"{unique_repo}:b")
    done = wishbot("apply", str(both), "--publisher", target, "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["transactions"] == 2 and report["downloaded_layers"] == 2
    assert all(image["thin_image"] for image in report["images"])
    assert "downloading layer" in done.stderr  # progress, one line per step

    # drop wish b: its path serves on until gc, path and image wait in the remove schedule
    only_a = wishlist(tmp_path / "a.yaml", registry, f"{unique_repo}:a")
    done = wishbot("apply", str(only_a), "--publisher", target, "--now", "2025-01-01", env=env)
    assert done.returncode == 0, done.stderr
    assert "remove" in done.stdout
    b_path = tree / f"{registry.host}/{unique_repo}:b"
    assert (b_path / "etc/b").is_file()
    state = read_state(tree, REPO)
    assert [(s.kind, s.path) for s in state.schedule] == [
        ("image", f"{registry.host}/{unique_repo}:b")
    ]
    again = wishbot("apply", str(only_a), "--publisher", target, "--now", "2025-01-10", env=env)
    assert again.returncode == 0 and "nothing to do" in again.stdout  # no second removal
    assert read_state(tree, REPO).schedule == state.schedule  # the date is not reset

    gc_args = ("gc", "--publisher", target, "--format", "json")
    early = wishbot(*gc_args, "--now", "2025-01-20", env=env)
    assert early.returncode == 0 and json.loads(early.stdout)["deleted_images"] == []
    dry = wishbot(*gc_args, "--now", "2025-03-01", "--dry-run", env=env)
    assert len(json.loads(dry.stdout)["deleted_images"]) == 1
    assert len(read_state(tree, REPO).flat_images) == 2
    late = wishbot(*gc_args, "--now", "2025-03-01", env=env)
    result = json.loads(late.stdout)
    assert len(result["deleted_images"]) == 1 and len(result["deleted_layers"]) == 1
    assert (tree / f"{registry.host}/{unique_repo}:a/etc/a").read_text() == "a\n"
    assert len(read_state(tree, REPO).flat_images) == 1
    assert [p["path"] for p in result["deleted_paths"]] == [f"{registry.host}/{unique_repo}:b"]
    assert not os.path.lexists(b_path) and read_state(tree, REPO).schedule == ()


def test_apply_names_failing_wishes_and_exits_1(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    env = {"WISHBOT_INSECURE_REGISTRIES": registry.host, "WISHBOT_BACKOFF": "0.01"}
    push_image(registry.url, unique_repo, "ok", [LAYER_A])
    wl = wishlist(tmp_path / "w.yaml", registry, f"{unique_repo}:ok", f"{unique_repo}:missing")
    done = wishbot("apply", str(wl), "--publisher", f"local:{tmp_path / 't'}", env=env)
    assert done.returncode == 1
    assert f"not converged: {registry.host}/{unique_repo}:missing" in done.stderr
    assert (tmp_path / "t" / f"{registry.host}/{unique_repo}:ok/etc/a").exists()


def test_apply_usage_errors(tmp_path: Path) -> None:
    env = {"WISHBOT_PUBLISHER": ""}
    assert wishbot("apply", "nope.yaml", env=env).returncode == 2
    done = wishbot("gc", "--publisher", "ftp:x", env=env)
    assert done.returncode == 2 and "local:DIR" in done.stderr
    done = wishbot("gc", "--publisher", f"local:{tmp_path}", "--now", "yesterday", env=env)
    assert done.returncode == 2 and "ISO-8601" in done.stderr


def test_apply_through_cvmfs_server(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cvmfs_server").symlink_to(FAKE)
    env = {
        "WISHBOT_INSECURE_REGISTRIES": registry.host,
        "WISHBOT_BACKOFF": "0.01",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "WISHBOT_CVMFS_ROOT": str(tmp_path / "cvmfs"),
        "FAKE_CVMFS_SPOOL": str(tmp_path / "spool"),
        "WISHBOT_LOCK_DIR": str(tmp_path / "locks"),
    }
    subprocess.run(["cvmfs_server", "mkfs", REPO], env={**os.environ, **env}, check=True)
    push_image(registry.url, unique_repo, "1", [LAYER_A, LAYER_B])
    wl = wishlist(tmp_path / "w.yaml", registry, f"{unique_repo}:1")
    done = wishbot("apply", str(wl), "--publisher", f"cvmfs:{REPO}", "--no-thin", env=env)
    assert done.returncode == 0, done.stderr
    published = tmp_path / "spool" / REPO / "published"
    path = f"{registry.host}/{unique_repo}:1"
    assert (published / path / "etc/b").read_text() == "b\n"
    assert [i.path for i in read_state(published, REPO).images] == [path]
    # mkfs, one ingest per layer (whiteouts survive), one publish of the image
    revision = tmp_path / "spool" / REPO / "revision"
    assert revision.read_text() == "4"
    again = wishbot("apply", str(wl), "--publisher", f"cvmfs:{REPO}", "--no-thin", env=env)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert revision.read_text() == "4"  # nothing changed: no publish
    wrong = wishbot("apply", str(wl), "--publisher", "cvmfs:other.example.org", env=env)
    assert wrong.returncode == 2 and REPO in wrong.stderr


def test_apply_refuses_a_repository_subdirectory(tmp_path: Path) -> None:
    recipe = tmp_path / "w.yaml"
    recipe.write_text(
        f"version: 1\nuser: t\ncvmfs_repo: '{REPO}/sub'\n"
        "output_format: 'thin.example.org/$(image)'\ninput: []\n"
    )
    done = wishbot("apply", str(recipe), "--publisher", f"local:{tmp_path / 'tree'}", env={})
    assert done.returncode == 2
    assert "names a subdirectory" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "tree").exists() or not any((tmp_path / "tree").iterdir())


def test_plain_progress_when_not_a_terminal() -> None:
    """A pipe or log gets plain lines: no carriage return, no escape sequence, no bar."""
    from bot.commands.progress import PlainDisplay, apply_display

    out = io.StringIO()
    display = apply_display(out)
    assert isinstance(display, PlainDisplay)
    with display:
        display.step("resolving 2 wish(es)")
        display.total_bytes = 10_000
        display.meter("abc123", 5_000, 10_000)
        display.number, display.count, display.path = 2, 7, "r.example.org/x:1"
        display._image()
        display.step("r.example.org/x:1: done")
    text = out.getvalue()
    assert text == (
        "resolving 2 wish(es)\n"
        "image 2 of 7: r.example.org/x:1 (5.0 kB of 10 kB downloaded)\n"
        "r.example.org/x:1: done\n"
    )


def test_plain_progress_tells_speed_and_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.commands import progress

    clock = iter([100.0, 110.0])  # made, then the image starts 10 s later
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    display = progress.PlainDisplay(out)
    display.total_bytes = 50_000_000
    display.meter("abc123", 10_000_000, 20_000_000)
    display.number, display.count, display.path = 2, 3, "r.example.org/x:1"
    display._image()
    assert out.getvalue() == (
        "image 2 of 3: r.example.org/x:1 (10 MB of 50 MB downloaded, 1.0 MB/s, about 40 s left)\n"
    )
    assert [progress._duration(s) for s in (0.2, 89, 600, 7_500)] == [
        "1 s",
        "89 s",
        "10 min",
        "2 h 5 min",
    ]
