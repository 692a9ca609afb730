"""Broken wishlists: each problem is pinned to its line, column and a key phrase."""

from __future__ import annotations

import pytest

from bot.core.recipe import load_wishlist

OUT = "https://gitlab-registry.cern.ch/unpacked/sync/$(image)"
HEAD = f"""version: 1
user: cvmfsunpacker
cvmfs_repo: 'unpacked.cern.ch'
output_format: '{OUT}'
input:
"""
GOOD = HEAD + "  - 'https://registry.hub.docker.com/library/centos:centos7'\n"
DIGEST = "sha256:" + "a" * 64

# (id, wishlist text, line, column, phrase that must appear in the problem)
CASES: list[tuple[str, str | bytes, int, int, str]] = [
    (
        "typo-key",
        GOOD.replace("output_format", "ouput_format"),
        4,
        1,
        "unknown key 'ouput_format' — did you mean 'output_format'?",
    ),
    ("missing-user", GOOD.replace("user: cvmfsunpacker\n", ""), 1, 1, "missing key 'user'"),
    (
        "version-2",
        GOOD.replace("version: 1", "version: 2"),
        1,
        10,
        "unsupported wishlist version 2",
    ),
    ("version-text", GOOD.replace("version: 1", "version: '1'"), 1, 10, "must be the number 1"),
    ("user-list", GOOD.replace("user: cvmfsunpacker", "user: [a, b]"), 2, 7, "'user' must be text"),
    (
        "user-bool",
        GOOD.replace("user: cvmfsunpacker", "user: yes"),
        2,
        7,
        "put the value in quotes",
    ),
    ("user-spaces", GOOD.replace("user: cvmfsunpacker", "user: 'a b'"), 2, 7, "one word"),
    ("user-empty", GOOD.replace("user: cvmfsunpacker", "user:"), 2, 6, "'user' is empty"),
    (
        "repo-traversal",
        GOOD.replace("'unpacked.cern.ch'", "'unpacked.cern.ch/../etc'"),
        3,
        13,
        "not a CernVM-FS repository name",
    ),
    ("repo-dots", GOOD.replace("'unpacked.cern.ch'", "'..'"), 3, 13, "repository name"),
    ("input-scalar", HEAD.replace("input:\n", "input: centos\n"), 5, 8, "'input' must be a list"),
    ("input-null", HEAD, 5, 7, "'input' is empty; it must be a list"),
    (
        "input-number",
        GOOD + "  - 42\n",
        7,
        5,
        "input item 2 must be an image reference (text) or a mapping",
    ),
    (
        "uppercase-repository",
        GOOD + "  - 'quay.io/Stimela/casa:1.7.1'\n",
        7,
        5,
        "repository names must be lowercase",
    ),
    (
        "bad-digest",
        GOOD + "  - 'quay.io/a/b@sha256:xyz'\n",
        7,
        5,
        "digest 'sha256:xyz' is not valid",
    ),
    ("ftp-scheme", GOOD + "  - 'ftp://quay.io/a/b:1'\n", 7, 5, "unsupported scheme 'ftp://'"),
    ("star-in-repo", GOOD + "  - 'quay.io/a/*:1'\n", 7, 5, "'*' is only allowed in the tag"),
    ("empty-tag", GOOD + "  - 'quay.io/a/b:'\n", 7, 5, "the tag after ':' is empty"),
    ("unquoted-colon", GOOD + "  - quay.io/a/b:\n", 7, 5, "input item 2 was read as a mapping"),
    ("space-in-ref", GOOD + "  - 'quay.io/a/b :1'\n", 7, 5, "cannot contain spaces"),
    (
        "wildcard-digest",
        GOOD + f"  - 'quay.io/a/b:1*@{DIGEST}'\n",
        7,
        5,
        "combines a wildcard tag with a digest",
    ),
    (
        "duplicate-key",
        GOOD + "user: other\n",
        7,
        1,
        "duplicate key 'user' (first written on line 2)",
    ),
    ("tab-indent", HEAD + "\t- 'quay.io/a/b:1'\n", 6, 1, "a tab is used for indentation"),
    ("not-utf8", GOOD.encode() + b"  - 'quay.io/a/\xe9:1'\n", 7, 16, "not UTF-8"),
    ("control-char", GOOD + "  - 'quay.io/a/b:1\x07'\n", 7, 19, "control character U+0007"),
    ("top-list", "- centos\n- debian\n", 1, 1, "must be a mapping of keys"),
    ("top-scalar", "just some words\n", 1, 1, "not text"),
    ("empty-file", "", 1, 1, "the wishlist is empty"),
    ("only-comments", "# nothing here\n\n", 1, 1, "the wishlist is empty"),
    ("two-documents", GOOD + "---\nversion: 1\n", 7, 1, "more than one YAML document"),
    ("unclosed-quote", GOOD + "  - 'quay.io/a/b:1\n", 8, 1, "YAML syntax error"),
    ("bad-indent", GOOD + " user: x\n", 7, 2, "YAML syntax error"),
    (
        "unknown-placeholder",
        GOOD.replace("$(image)", "$(imgae)"),
        4,
        16,
        "unknown placeholder '$(imgae)' in 'output_format' — did you mean '$(image)'?",
    ),
    ("unclosed-placeholder", GOOD.replace("$(image)", "$(image"), 4, 16, "without its closing ')'"),
    ("brace-placeholder", GOOD.replace("$(image)", "${image}"), 4, 16, "write it with parentheses"),
    (
        "output-collision",
        GOOD.replace("$(image)", "$(repository)") + "  - 'quay.io/library/centos:7'\n",
        7,
        5,
        "would both be published as the thin image",
    ),
    (
        "bad-output-name",
        GOOD.replace("sync/$(image)", "$(tag)/x:1") + "  - 'quay.io/a/b:V1'\n",
        7,
        5,
        "is not a valid image reference",
    ),
    (
        "unknown-platform",
        GOOD + "platforms: [linux/x86_64]\n",
        7,
        13,
        "unknown platform 'linux/x86_64' — did you mean 'linux/amd64'?",
    ),
    ("platform-shape", GOOD + "platforms:\n  - amd64\n", 8, 5, "platform 'amd64' is not valid"),
    ("platforms-empty", GOOD + "platforms: []\n", 7, 12, "'platforms' is an empty list"),
    (
        "platforms-twice",
        GOOD + "platforms: [linux/arm64, linux/arm64]\n",
        7,
        26,
        "lists 'linux/arm64' twice",
    ),
    (
        "mapping-no-image",
        GOOD + "  - platforms: [linux/amd64]\n",
        7,
        5,
        "missing key 'image' in input item 2",
    ),
    (
        "mapping-typo",
        GOOD + "  - image: quay.io/a/b:1\n    platform: [linux/arm64]\n",
        8,
        5,
        "unknown key 'platform' in input item 2 — did you mean 'platforms'?",
    ),
    (
        "mapping-bad-ref",
        GOOD + "  - image: 'quay.io/a/b:-x'\n    platforms: [linux/arm64]\n",
        7,
        12,
        "tag '-x' is not valid",
    ),
    (
        "mapping-bad-platform",
        GOOD + "  - image: quay.io/a/b:1\n    platforms: [linux/aarch64]\n",
        8,
        17,
        "did you mean 'linux/arm64'?",
    ),
    ("ignore-errors-scalar", GOOD + "ignoreErrors: '*'\n", 7, 15, "'ignoreErrors' must be a list"),
    ("python-tag", GOOD + "user2: !!python/object/apply:os.system [id]\n", 7, 8, "is not allowed"),
    (
        "custom-tag",
        GOOD.replace("user: cvmfsunpacker", "user: !secret x"),
        2,
        7,
        "'!secret' is not allowed",
    ),
    ("merge-key", GOOD + "<<: {user: x}\n", 7, 1, "merge keys ('<<') are not supported"),
    ("recursive-alias", GOOD + "ignoreErrors: &a [*a]\n", 7, 15, "contains itself"),
    ("undefined-alias", GOOD + "  - *nothing\n", 7, 5, "undefined alias"),
    ("too-deep", GOOD + "x: " + "[" * 70 + "]" * 70 + "\n", 7, 68, "nested more than 64 levels"),
    ("missing-all", "a: 1\n", 1, 1, "missing key 'output_format'"),
    (
        "null-version",
        GOOD.replace("version: 1", "version:"),
        1,
        9,
        "unsupported wishlist version null",
    ),
]


def _problems(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    wishlist, problems = load_wishlist(data, "wishlist.yaml")
    assert wishlist is None, "a broken wishlist must not load"
    assert any(p.severity == "error" for p in problems)
    texts = [str(p) for p in problems]
    assert len(set(texts)) == len(texts), "each problem is reported once"
    return texts


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 25
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("text", "line", "column", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_broken_wishlist_is_pinned(text: str | bytes, line: int, column: int, phrase: str) -> None:
    problems = _problems(text)
    prefix = f"wishlist.yaml:{line}:{column}: error: "
    matching = [p for p in problems if p.startswith(prefix) and phrase in p]
    assert matching, f"expected {prefix}...{phrase!r}, got:\n" + "\n".join(problems)


def test_good_base_loads() -> None:
    wishlist, problems = load_wishlist(GOOD.encode(), "wishlist.yaml")
    assert problems == []
    assert wishlist is not None
    assert [str(w.reference) for w in wishlist.wishes] == [
        "registry.hub.docker.com/library/centos:centos7"
    ]
