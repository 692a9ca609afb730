"""Property tests: whatever the bytes, the loader and the CLI only ever report problems."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import main
from bot.core.recipe import load_wishlist

BASE = """version: 1
user: bot
cvmfs_repo: unpacked.example.org
output_format: 'x.io/sync/$(image)'
input:
  - quay.io/a/b:1
"""

_yamlish_atoms = st.sampled_from(
    [
        "version", "user", "cvmfs_repo", "output_format", "input", "platforms", "image",
        "ignoreErrors", ":", ": ", "- ", "  ", "    ", "\n", "\t", "'", '"', "[", "]", "{", "}",
        ",", "&a ", "*a", "!!python/object:os.system ", "!tag ", "<<: ", "---\n", "...\n", "#",
        "|\n", ">\n", "1", "null", "yes", "~", "$(image)", "$(", "quay.io/a/b:1", "http://x.io/a",
        "centos", "@sha256:", "linux/amd64", "*", "?", "%YAML 1.1\n", "\\", "\x00", "é", "\ufeff",
    ]
)  # fmt: skip
yamlish = st.lists(_yamlish_atoms, max_size=60).map("".join)
mutations = st.tuples(st.integers(0, len(BASE)), st.integers(0, 20), yamlish).map(
    lambda m: BASE[: m[0]] + m[2] + BASE[m[0] + m[1] :]
)


def _check(data: bytes) -> None:
    wishlist, problems = load_wishlist(data, "w.yaml")
    assert isinstance(problems, list)
    has_error = any(p.severity == "error" for p in problems)
    assert (wishlist is None) == has_error
    for problem in problems:
        assert problem.location.path == "w.yaml"
        assert problem.location.line >= 0 and problem.location.column >= 0
        assert problem.message


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_give_problems(data: bytes) -> None:
    _check(data)


@settings(max_examples=200, deadline=None)
@given(st.one_of(yamlish, mutations))
def test_yamlish_text_only_gives_problems(text: str) -> None:
    _check(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(st.binary(max_size=200), mutations.map(lambda t: t.encode("utf-8", "surrogatepass")))
)
def test_cli_never_prints_a_traceback(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.yaml"
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            for fmt in ("text", "json"):
                assert main(["validate", "--format", fmt, str(path)]) in (0, 1)
        assert "Traceback" not in out.getvalue() + err.getvalue()
        for line in out.getvalue().splitlines():
            if line.startswith(str(path)):
                assert ": error: " in line or ": warning: " in line
