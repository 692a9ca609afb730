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

from markdown_it import MarkdownIt

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


#: GitHub-like look of a comment: a column of a given width; tables scroll inside it
FORGE_CSS = """
body{margin:0;background:#fff;color:#1f2328;
font:14px/1.5 -apple-system,"Segoe UI","Noto Sans",Helvetica,Arial,sans-serif}
.comment{box-sizing:border-box;width:WIDTHpx;margin:12px;border:1px solid #d1d9e0;
border-radius:6px}
.head{background:#f6f8fa;border-bottom:1px solid #d1d9e0;padding:8px 16px;color:#59636e;
border-radius:6px 6px 0 0}
.body{padding:16px}
h1,h2,h3,h4{margin:16px 0 8px;font-weight:600;line-height:1.25}h3{font-size:20px}
h4{font-size:16px}
p,ul,table,details,pre{margin:0 0 12px}
ul{padding-left:2em}
code{font:85%/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eff1f3;
padding:.2em .4em;border-radius:6px;white-space:break-spaces}
pre{background:#f6f8fa;padding:12px 16px;border-radius:6px;overflow:auto}
pre code{background:none;padding:0}
table{display:block;width:max-content;max-width:100%;overflow:auto;border-collapse:collapse}
th,td{border:1px solid #d1d9e0;padding:6px 13px}th{font-weight:600}
tr:nth-child(2n){background:#f6f8fa}
a{color:#0969da;text-decoration:none}
sub{color:#59636e}
hr{border:0;border-top:1px solid #d1d9e0;margin:16px 0}
"""


def forge_page(markdown: str, title: str, width: int = 900) -> str:
    """A Markdown comment as a forge shows it: a box of ``width`` px with a header."""
    body = (
        MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown)
    )
    css = FORGE_CSS.replace("WIDTH", str(width))
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><style>{css}</style></head>'
        f'<body><div class="comment"><div class="head"><b>wishbot</b> commented · {title}</div>'
        f'<div class="body">{body}</div></div></body></html>'
    )
