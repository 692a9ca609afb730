"""The meaning of a wishlist: wishes, platforms, warnings, output names, diffs, ignoreErrors."""

from __future__ import annotations

from dataclasses import replace

from bot.core.model import DEFAULT_PLATFORM, Location, Platform, Problem, Wishlist
from bot.core.recipe import (
    apply_ignore_errors,
    diff_wishlists,
    load_wishlist,
    output_name,
)
from bot.core.reference import parse

DIGEST = "sha256:" + "b" * 64


def wishlist_text(*inputs: str, extra: str = "", output: str = "x.io/sync/$(image)") -> bytes:
    lines = [
        "version: 1",
        "user: bot",
        "cvmfs_repo: unpacked.example.org",
        f"output_format: '{output}'",
        extra.rstrip("\n"),
        "input:",
        *(f"  - {item}" for item in inputs),
    ]
    return ("\n".join(line for line in lines if line) + "\n").encode()


def load(*inputs: str, extra: str = "", output: str = "x.io/sync/$(image)") -> Wishlist:
    wishlist, problems = load_wishlist(wishlist_text(*inputs, extra=extra, output=output), "w.yaml")
    assert wishlist is not None, [str(p) for p in problems]
    return wishlist


def test_wishes_keep_text_location_and_default_platform() -> None:
    wishlist = load("centos:7", "'https://quay.io/a/b:1'")
    assert [w.text for w in wishlist.wishes] == ["centos:7", "https://quay.io/a/b:1"]
    assert [w.location for w in wishlist.wishes] == [
        Location("w.yaml", 6, 5),
        Location("w.yaml", 7, 5),
    ]
    assert all(w.platforms == (DEFAULT_PLATFORM,) for w in wishlist.wishes)
    assert wishlist.platforms == (DEFAULT_PLATFORM,)


def test_platforms_global_and_per_input_are_sorted() -> None:
    wishlist = load(
        "quay.io/a/b:1",
        "{image: quay.io/a/c:1, platforms: [linux/arm64, linux/amd64]}",
        extra="platforms: [linux/ppc64le, linux/arm/v7]",
    )
    arm7 = Platform("linux", "arm", "v7")
    assert wishlist.platforms == (arm7, Platform("linux", "ppc64le"))
    assert wishlist.wishes[0].platforms == wishlist.platforms
    assert wishlist.wishes[1].platforms == (DEFAULT_PLATFORM, Platform("linux", "arm64"))
    assert wishlist.wishes[1].location == Location("w.yaml", 8, 13)


def test_duplicate_after_normalisation_is_a_warning_naming_both_lines() -> None:
    data = wishlist_text("centos", "docker.io/library/centos:latest", "index.docker.io/centos")
    wishlist, problems = load_wishlist(data, "w.yaml")
    assert wishlist is not None
    assert len(wishlist.wishes) == 1
    assert [(p.severity, p.code, p.location.line) for p in problems] == [
        ("warning", "duplicate", 7),
        ("warning", "duplicate", 8),
    ]
    assert "on line 6 (as 'centos') and on line 7" in problems[0].message


def test_http_input_is_a_warning() -> None:
    wishlist, problems = load_wishlist(wishlist_text("http://reg.local:5000/a/b:1"), "w.yaml")
    assert wishlist is not None
    assert [(p.severity, p.code) for p in problems] == [("warning", "insecure")]
    assert str(problems[0]).startswith("w.yaml:6:5: warning: ")


def test_empty_input_list_is_a_warning() -> None:
    data = wishlist_text().replace(b"input:\n", b"input: []\n")
    wishlist, problems = load_wishlist(data, "w.yaml")
    assert wishlist is not None and wishlist.wishes == ()
    assert [p.code for p in problems] == ["empty-input"]


def test_extensions_are_optional_and_loaded() -> None:
    wishlist = load("quay.io/a/b:1", extra="ignoreErrors: ['quay.io/a/*', '*:nightly']")
    assert wishlist.ignore_errors == ("quay.io/a/*", "*:nightly")


def test_repo_with_subdirectory_is_accepted() -> None:
    data = wishlist_text("quay.io/a/b:1").replace(
        b"unpacked.example.org", b"unpacked.example.org/sub"
    )
    wishlist, problems = load_wishlist(data, "w.yaml")
    assert wishlist is not None and problems == []
    assert wishlist.cvmfs_repo == "unpacked.example.org/sub"


def test_wildcards_with_distinct_patterns_do_not_collide() -> None:
    wishlist = load("quay.io/a/b:1*", "quay.io/a/b:2*")
    assert len(wishlist.wishes) == 2


def test_anchors_and_aliases_within_bounds_are_fine() -> None:
    data = wishlist_text(
        "{image: quay.io/a/b:1, platforms: &both [linux/amd64, linux/arm64]}",
        "{image: quay.io/a/c:1, platforms: *both}",
    )
    wishlist, problems = load_wishlist(data, "w.yaml")
    assert wishlist is not None and problems == []
    assert wishlist.wishes[0].platforms == wishlist.wishes[1].platforms


# --- output names -----------------------------------------------------------


def test_output_name_expands_every_placeholder() -> None:
    ref = parse(f"https://quay.io/a/b:1.0@{DIGEST}")
    fmt = "$(scheme)|$(registry)|$(repository)|$(tag)|$(digest)|$(reference)|$(image)|$(other)"
    assert output_name(fmt, ref) == (
        f"https|quay.io|a/b|1.0|{DIGEST}|:1.0@{DIGEST}|a/b:1.0@{DIGEST}|$(other)"
    )
    production = "https://gitlab-registry.cern.ch/unpacked/sync/$(image)"
    centos = parse("centos").normalized()
    assert output_name(production, centos) == (
        "https://gitlab-registry.cern.ch/unpacked/sync/library/centos:latest"
    )
    expanded = parse("atlas/analysisbase:21.2.1*").with_tag("21.2.10")
    assert output_name(production, expanded).endswith("atlas/analysisbase:21.2.10")


# --- diffs ------------------------------------------------------------------


def test_diff_by_key_ignores_spelling_and_order() -> None:
    old = load("centos:7", "quay.io/a/b:1", "quay.io/a/gone:1")
    new = load("quay.io/a/b:1", "docker.io/library/centos:7", "quay.io/a/new:1")
    diff = diff_wishlists(old, new)
    assert [w.text for w in diff.added] == ["quay.io/a/new:1"]
    assert [w.text for w in diff.removed] == ["quay.io/a/gone:1"]
    assert [w.text for w in diff.unchanged] == ["quay.io/a/b:1", "docker.io/library/centos:7"]
    assert diff.changed_settings == ()
    assert not diff.empty
    assert diff_wishlists(new, new).empty


def test_diff_platform_change_of_one_wish_is_add_and_remove() -> None:
    old = load("quay.io/a/b:1")
    new = load("{image: quay.io/a/b:1, platforms: [linux/arm64]}")
    diff = diff_wishlists(old, new)
    assert [w.platforms for w in diff.added] == [(Platform("linux", "arm64"),)]
    assert [w.platforms for w in diff.removed] == [(DEFAULT_PLATFORM,)]
    assert diff.unchanged == ()


def test_diff_global_setting_change_changes_every_wish() -> None:
    old = load("quay.io/a/b:1", "quay.io/a/c:1")
    new = load("quay.io/a/b:1", "quay.io/a/c:1", output="y.io/$(image)")
    diff = diff_wishlists(old, new)
    assert diff.changed_settings == ("output_format",)
    assert diff.added == new.wishes
    assert diff.unchanged == () and diff.removed == ()
    moved = replace(new, cvmfs_repo="other.example.org")
    assert diff_wishlists(new, moved).changed_settings == ("cvmfs_repo",)


def test_diff_without_a_base_adds_everything_and_removes_nothing() -> None:
    new = load("quay.io/a/b:1", "quay.io/a/c:1")
    diff = diff_wishlists(None, new)
    assert diff.added == new.wishes
    assert diff.removed == () and diff.unchanged == ()


# --- ignoreErrors -------------------------------------------------------------


def test_ignore_errors_turns_matching_errors_into_warnings() -> None:
    wishlist = load(
        "quay.io/a/b:1",
        "'https://registry.hub.docker.com/lincolnbryant/atlas-wn:latest'",
        extra="ignoreErrors: ['quay.io/a/*', '*lincolnbryant/*']",
    )
    where = Location("w.yaml", 6, 5)
    problems = [
        Problem("error", "not found", where, "not-found", image="quay.io/a/b:1"),
        Problem(
            "error", "denied", where, "unauthorized", hint="log in", image="lincolnbryant/atlas-wn"
        ),
        Problem("error", "not found", where, "not-found", image="ghcr.io/x/y:1"),
        Problem("error", "broken wishlist", where),
        Problem("warning", "slow", where, image="quay.io/a/b:1"),
    ]
    result = apply_ignore_errors(problems, wishlist)
    assert [p.severity for p in result] == ["warning", "warning", "error", "error", "warning"]
    assert result[0].hint == "ignored because it matches ignoreErrors 'quay.io/a/*'"
    assert result[1].hint == "log in; ignored because it matches ignoreErrors '*lincolnbryant/*'"
    assert result[4] is problems[4]
