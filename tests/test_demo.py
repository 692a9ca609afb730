"""``wishbot demo`` run through the real command line entry point."""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from bot.cli import main
from bot.commands.demo import MARKER


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.ESRCH
    # still there: a zombie (not reaped) counts as alive here
    return False


def test_demo_plays_the_whole_loop_and_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a site proxy (here a dead one) must not stand between wishbot and a loopback registry
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "demo"
    assert main(["demo", "--dir", str(work)]) == 0
    out = capsys.readouterr().out

    found = re.search(r"registry: http://(127\.0\.0\.1):(\d+) \(pid (\d+)\)", out)
    assert found, out
    host, port, pid = found.group(1), int(found.group(2)), int(found.group(3))
    # the registry process is gone and its port closed
    assert _process_gone(pid)
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2).close()

    # the two requests were reviewed, merged and published
    for heading in ("Merge request 'add-images'", "Merge request 'move-hello'", "Where to look"):
        assert heading in out
    assert "wishbot/validate: success" in out and "wishbot/plan: success" in out
    assert out.count("wishbot/publish on") == 2 and "wishbot/publish on" in out
    assert "<!-- wishbot:plan -->" in out and "➖ remove" in out
    assert "1 image to update" in out  # the whole-wishlist plan shows the moved tag
    assert "# Container images in unpacked.example.org" in out  # CATALOG.md head

    tree = work / "cvmfs" / "unpacked.example.org" / f"{host}:{port}"
    hello = tree / "demo" / "hello:1.0"
    assert hello.is_symlink() and hello.resolve().is_dir()
    assert (hello / "srv/hello/message.txt").read_text() == "hello from hello 1.1\n"
    assert not (tree / "demo" / "greeter:2.1").exists()

    # gc deleted the old build of hello (the moved tag) and greeter (its path served
    # until then), and their layers
    old_id = re.search(rf"{host}:{port}/demo/hello:1\.0  id ([0-9a-f]{{12}})", out)
    assert old_id, out
    assert "gc: deleted 1 retiring path(s), 2 image(s) and 2 layer(s)" in out
    assert f"deleted path {host}:{port}/demo/greeter:2.1" in out
    deleted = re.findall(r"deleted image sha256:([0-9a-f]{64})", out)
    assert any(d.startswith(old_id.group(1)) for d in deleted)
    flat = work / "cvmfs/unpacked.example.org/.flat"
    flats = sorted(p.name for p in flat.glob("*/*") if not p.name.startswith("."))
    assert len(flats) == 1 and os.readlink(hello).endswith(flats[0])

    # the repository: catalog commits by the bot, comments and statuses in git notes
    repo = work / "wishlist-repo"
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%s", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert log.count("[skip ci]") == 2
    assert (repo / "CATALOG.md").is_file() and (repo / "catalog.json").is_file()
    notes = subprocess.run(
        ["git", "-C", str(repo), "notes", "--ref=wishbot-comments", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert len(notes.splitlines()) == 2  # one comment thread per merge request

    # bubblewrap either ran /bin/hello inside the published image or was skipped
    assert "running on wishbot demo base" in out or "skipped" in out

    # a second run wipes and recreates its own directory
    (work / "leftover.txt").write_text("x")
    assert main(["demo", "--dir", str(work)]) == 0
    assert not (work / "leftover.txt").exists() and (work / MARKER).is_file()


def test_demo_refuses_a_directory_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    assert main(["demo", "--dir", str(precious)]) == 2
    assert "was not made by 'wishbot demo'" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "do not delete"
