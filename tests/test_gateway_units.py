"""The gateway backend's pure parts: which lease a scope takes, what counts as a
write outside it, and a variant symlink as a CernVM-FS client reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core import layout
from bot.publisher.backend import Scope
from bot.publisher.gateway import lease_of, stray_writes


@pytest.mark.parametrize(
    ("paths", "published", "lease"),
    [
        (None, set(), ""),  # the whole repository
        ((".flat/ab/abc",), {".flat", ".flat/ab"}, ".flat/ab/abc"),
        ((".flat/ab/abc",), {".flat"}, ".flat/ab"),  # the partition is missing
        ((".flat/ab/abc",), set(), ".flat"),
        (("r.io/a/b:1", "r.io/a/c:1"), {"r.io", "r.io/a"}, "r.io/a"),  # the common ancestor
        (("r.io/a/b:1", "s.io/x"), {"r.io", "s.io"}, ""),
        (("a/one", "ab/two"), {"a", "ab"}, ""),  # components, not characters
    ],
)
def test_a_lease_is_the_common_ancestor_from_its_first_missing_directory(
    paths: tuple[str, ...] | None, published: set[str], lease: str
) -> None:
    assert lease_of(Scope(paths), lambda rel: rel in published) == lease


def test_writes_outside_the_lease_are_found_in_the_upper_directory(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    (scratch / ".flat/ab/abc/usr").mkdir(parents=True)
    (scratch / ".flat/ab/abc/usr/file").write_text("inside")
    assert stray_writes(scratch, ".flat/ab/abc") == []
    (scratch / ".flat/ab/other").write_text("beside")
    (scratch / "outside").mkdir()
    assert stray_writes(scratch, ".flat/ab/abc") == [".flat/ab/other", "outside"]
    assert stray_writes(scratch, "") == []  # the whole repository: nothing is outside
    assert stray_writes(tmp_path / "none", ".flat") == []


def test_a_variant_symlink_read_expanded_still_marks_a_multi_platform_path() -> None:
    path = "r.io/a/b:1"
    written = layout.relative_link(path, f"{layout.MULTIARCH}/{layout.ARCH_VARIABLE}/{path}")
    expanded = layout.relative_link(path, f"{layout.MULTIARCH}/x86_64/{path}")
    assert layout.serves_variant(path, written)
    assert layout.serves_variant(path, expanded)
    assert not layout.serves_variant(path, layout.flat_link(path, "sha256:" + "a" * 64))
    other = layout.relative_link(path, f"{layout.MULTIARCH}/x86_64/r.io/a/c:1")
    assert not layout.serves_variant(path, other)
