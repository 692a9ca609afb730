"""``wishbot apply`` in a real terminal (tmux) at 80 and 120 columns.

The registry is slowed down (a throttling proxy) so the live progress block
is drawn many times while layers download. Both what the pane shows (wrapped
rows joined back, scrollback included) and the raw byte stream the program
wrote (``tmux pipe-pane``) must have no line wider than the terminal, and the
final report must start on lines of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_proxy import FaultProxy, Rule

from bot.sandbox.image_builder import push_image
from bot.sandbox.layers import build_layer, file, with_parents
from bot.sandbox.registry_server import LocalRegistry

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

REPO = "unpacked.example.org"
#: long enough that "image N of M · path" and every step line would overflow 120 columns
LONG = "group/subgroup/a-container-image-name-that-is-really-quite-long-for-a-terminal"
_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-B]|[=>78])")


@pytest.fixture(scope="module")
def slow_registry(registry: LocalRegistry) -> Iterator[tuple[FaultProxy, list[str]]]:
    """Three images of ~400 kB each, served at 600 kB/s: about two seconds of downloads."""
    refs = []
    for number in range(3):
        noise = os.urandom(400_000)  # incompressible, so the blob is as big as the file
        layer = build_layer(with_parents([file(f"data/{number}.bin", noise)]))
        push_image(registry.url, f"{LONG}-{number}", "v1.0.0-with-a-long-tag", [layer])
        refs.append(f"{LONG}-{number}:v1.0.0-with-a-long-tag")
    with FaultProxy(registry.url) as proxy:
        proxy.add(Rule(path=r"/blobs/sha256:", times=-1, rate=600_000))
        yield proxy, refs


def _tmux(socket: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["tmux", "-S", str(socket), "-f", "/dev/null", *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return done.stdout


def run_in_tmux(
    tmp_path: Path, columns: int, command: list[str], env: dict[str, str]
) -> tuple[str, str]:
    """Run ``command`` in a ``columns``-wide tmux pane; (pane text with rows joined, raw output)."""
    # a server of our own on a socket of our own (short path: sockets have a length limit)
    sockets = Path(tempfile.mkdtemp(prefix="wishbot-tmux-"))
    socket = sockets / "s"
    raw = tmp_path / f"raw-{columns}.log"
    go = tmp_path / f"go-{columns}"
    done = tmp_path / f"done-{columns}"
    quoted = " ".join(f"'{part}'" for part in command)
    script = (
        f"while [ ! -e '{go}' ]; do sleep 0.05; done; {quoted}; "
        f"echo \"exit=$?\" > '{done}'; sleep 600"
    )
    full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}
    full_env.update(env, TERM="xterm-256color")
    _tmux(
        socket,
        "new-session", "-d", "-x", str(columns), "-y", "40", "-s", "apply", "sh", "-c", script,
        env=full_env,
    )  # fmt: skip
    try:
        _tmux(socket, "pipe-pane", "-t", "apply", "-o", f"cat > '{raw}'")
        go.touch()
        deadline = time.monotonic() + 120
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # let tmux take in the last bytes
        pane = _tmux(socket, "capture-pane", "-p", "-J", "-S", "-", "-t", "apply")
        rows = _tmux(socket, "capture-pane", "-p", "-S", "-", "-t", "apply")
        (tmp_path / f"pane-{columns}.txt").write_text(rows)
        assert done.exists(), f"wishbot apply did not finish within 2 minutes:\n{rows}"
        assert done.read_text().strip() == "exit=0", rows
    finally:
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], check=False, capture_output=True)
        shutil.rmtree(sockets, ignore_errors=True)
    return pane, raw.read_bytes().decode("utf-8", "replace")


def widest(raw: str) -> int:
    """The widest run of text between line breaks, carriage returns and escape sequences."""
    from rich.cells import cell_len

    plain = _ESCAPE.sub("\n", raw)
    return max((cell_len(part) for part in re.split(r"[\r\n]", plain)), default=0)


@pytest.mark.parametrize("columns", [80, 120])
def test_apply_in_a_terminal_fits_its_width(
    slow_registry: tuple[FaultProxy, list[str]], tmp_path: Path, columns: int
) -> None:
    proxy, refs = slow_registry
    recipe = tmp_path / "wishlist.yaml"
    body = "".join(f"  - '{proxy.host}/{ref}'\n" for ref in refs)
    recipe.write_text(
        f"version: 1\nuser: t\ncvmfs_repo: '{REPO}'\n"
        f"output_format: '{proxy.host}/thin/$(image)'\ninput:\n{body}"
    )
    command = [sys.executable, "-m", "bot", "apply", str(recipe), "--publisher"]
    command += [f"local:{tmp_path / 'tree'}", "--no-thin"]
    env = {"WISHBOT_INSECURE_REGISTRIES": proxy.host, "PYTHONPATH": str(Path.cwd())}
    pane, raw = run_in_tmux(tmp_path, columns, command, env)

    assert "image 2 of 3" in raw and "/s" in raw  # the live block was drawn, with a speed
    assert widest(raw) <= columns, f"a line of {widest(raw)} columns in a {columns}-column terminal"
    lines = pane.rstrip("\n").split("\n")
    assert max(len(line) for line in lines) <= columns, "the terminal had to wrap a line"
    # the block vanished; the report starts on lines of its own
    assert not any("image 3 of 3" in line for line in lines)
    assert sum(line.startswith("ok   add     ") for line in lines) == 3
    assert any(line.startswith("apply: 3 image(s) converged, 0 failed") for line in lines)


@pytest.mark.parametrize("width", [40, 80, 120])
def test_the_live_block_fits_any_width(width: int) -> None:
    """The block itself, driven through apply's hooks on a console of a given width."""
    import io
    from datetime import UTC, datetime

    from rich.console import Console

    from bot.commands.progress import TerminalDisplay
    from bot.core.plan import ImageChange, LayerChange, Plan
    from bot.core.reference import parse

    digest = "sha256:" + "ab" * 32
    path = f"registry.example.org/{LONG}:v1.0.0-with-a-long-tag"
    plan = Plan(
        cvmfs_repo=REPO,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        grace_days=30,
        layers=(LayerChange(action="ingest", digest=digest, compressed_size=3_000_000),),
    )
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, height=20)
    with TerminalDisplay(out, console) as display:
        display.step(f"resolving 3 wish(es) of {path}")
        display.planned(plan)
        display.image(1, 3, ImageChange(action="add", path=path, reference=parse(path)))
        display.step(f"{path}: downloading layer {digest} (3.0 MB)")
        for done in range(0, 3_000_001, 250_000):
            display.meter(digest[7:19], done, 3_000_000)
            display.block.refresh()
        display.step(f"{path}: FAILED: the layer {digest} is corrupt")
    text = out.getvalue()
    assert "image 1 of 3" in text and "3.0/3.0 MB" in text
    assert f"FAILED: the layer {digest[7:19]} is corrupt" in text.replace("\n", "")
    assert widest(text) <= width


def test_a_dumb_terminal_or_a_pipe_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from bot.commands.progress import PlainDisplay, TerminalDisplay, apply_display

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("TERM_PROGRAM", raising=False)
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert isinstance(apply_display(Tty()), TerminalDisplay)
    assert isinstance(apply_display(io.StringIO()), PlainDisplay)
    monkeypatch.setenv("FORCE_COLOR", "1")  # CI systems set it: a log still gets plain lines
    assert isinstance(apply_display(io.StringIO()), PlainDisplay)
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.delenv("FORCE_COLOR")
    assert isinstance(apply_display(Tty()), PlainDisplay)
