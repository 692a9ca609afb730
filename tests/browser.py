"""Debian's Chromium, headless, for tests and screenshots of what people look at.

Only two things are asked of the browser, both plain command-line modes:
``--dump-dom`` (the DOM after the page's scripts ran) and ``--screenshot``.
A page is driven by its own ``?q=`` parameter or by a small script the test
appends to a copy of it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")
TIMEOUT = 60


def chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed (make deps installs it)")
    command = [
        binary,
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespaces for the sandbox
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
        stdin=subprocess.DEVNULL,
    )


def dump_dom(url: str, profile: Path, width: int = 1000, height: int = 800) -> str:
    """The page's DOM (serialized) once it has loaded and its scripts ran."""
    result = _run([f"--window-size={width},{height}", "--dump-dom", url], profile)
    return result.stdout


def screenshot(url: str, output: Path, profile: Path, width: int, height: int) -> None:
    """A PNG of the page at ``width`` x ``height`` CSS pixels."""
    _run([f"--window-size={width},{height}", f"--screenshot={output}", url], profile)
    if not output.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {output}")
