"""Image references: examples from production, rejections, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.reference import DOCKER_HUB, ImageReference, ReferenceError, parse, redact

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "scheme"),
    [
        ("centos", DOCKER_HUB, "library/centos", None, None, "https"),
        ("atlas/athena:22.0", DOCKER_HUB, "atlas/athena", "22.0", None, "https"),
        (
            "https://registry.hub.docker.com/library/centos:centos7",
            DOCKER_HUB,
            "library/centos",
            "centos7",
            None,
            "https",
        ),
        (
            "https://gitlab-p4n.aip.de:5005/compute4punch/container-stacks/wlcg-wn:latest",
            "gitlab-p4n.aip.de:5005",
            "compute4punch/container-stacks/wlcg-wn",
            "latest",
            None,
            "https",
        ),
        (
            "https://ghcr.io/dluitz/bonn-comp-phys-c--dev:main",
            "ghcr.io",
            "dluitz/bonn-comp-phys-c--dev",
            "main",
            None,
            "https",
        ),
        (
            "ghcr.io/watonomous/actions-runner-image:*",
            "ghcr.io",
            "watonomous/actions-runner-image",
            "*",
            None,
            "https",
        ),
        (f"localhost:5000/a/b@{DIGEST}", "localhost:5000", "a/b", None, DIGEST, "https"),
        (f"http://[::1]:5000/a:1@{DIGEST}", "[::1]:5000", "a", "1", DIGEST, "http"),
        ("HTTPS://quay.io/a/b", "quay.io", "a/b", None, None, "https"),
    ],
)
def test_parse_examples(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None, scheme: str
) -> None:
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.scheme) == (
        registry,
        repository,
        tag,
        digest,
        scheme,
    )


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("", "empty"),
        (" centos", "spaces around"),
        ("quay.io/a b", "cannot contain spaces"),
        ("ftp://quay.io/a", "unsupported scheme"),
        ("quay.io/a@sha256:abc", "64 lowercase hex"),
        ("quay.io/a@md5:abc", "only sha256"),
        ("quay.io/a:", "tag after ':' is empty"),
        ("quay.io/a:.x", "not valid"),
        ("quay.io/a:café", "not valid"),  # tags are ASCII
        ("quay.io/a:١٢", "not valid"),  # ... and Unicode digits are not digits here
        ("quay.io/A", "must be lowercase"),
        ("quay.io//a", "empty path component"),
        ("quay.io/a*/b", "only allowed in the tag"),
        ("host:99999/a", "between 1 and 65535"),
        ("host:0/a", "between 1 and 65535"),
        ("-bad-.io/a", "not a valid host name"),
        ("quay.io/" + "a" * 300, "longer than 255"),
        ("https://alice:pw@quay.io/a/b:1", "credentials do not belong in the wishlist"),
        ("alice:pw@quay.io/a/b", "credentials do not belong in the wishlist"),
        ("https://alice@quay.io/a", "credentials do not belong in the wishlist"),
        ("https://ghcr.io:latest", "must name a repository"),
        ("https://gitlab-registry.cern.ch", "must name a repository"),
        ("http://host:5000", "must name a repository"),
        ("https://centos", "must name a repository"),
        ("ghcr.io:latest", "must name a repository"),
        ("localhost:5000", "must name a repository"),
    ],
)
def test_parse_rejects(text: str, phrase: str) -> None:
    with pytest.raises(ReferenceError) as info:
        parse(text)
    assert phrase in str(info.value)


def test_normalized_folds_docker_hub_spellings() -> None:
    spellings = [
        "centos",
        "centos:latest",
        "library/centos",
        "docker.io/centos",
        "docker.io/library/centos:latest",
        "index.docker.io/library/centos",
        "https://registry.hub.docker.com/library/centos:latest",
        "Registry.Hub.Docker.com/library/centos",
    ]
    normal = {parse(text).normalized() for text in spellings}
    assert normal == {ImageReference(DOCKER_HUB, "library/centos", "latest")}
    assert parse("quay.io/centos").normalized() != parse("centos").normalized()
    assert parse("http://quay.io/a").normalized() != parse("quay.io/a").normalized()


def test_placeholder_views() -> None:
    ref = parse(f"quay.io/a/b:1.0@{DIGEST}")
    assert ref.reference == f":1.0@{DIGEST}"
    assert ref.image == f"a/b:1.0@{DIGEST}"
    assert parse("quay.io/a/b").reference == ":latest"
    assert parse(f"quay.io/a/b@{DIGEST}").reference == f"@{DIGEST}"


def test_wildcard_matching_is_a_glob_on_star_only() -> None:
    ref = parse("atlas/analysisbase:21.2.1*")
    assert ref.is_wildcard
    assert ref.matches_tag("21.2.10")
    assert ref.matches_tag("21.2.1")
    assert not ref.matches_tag("21.3.10")
    assert not ref.matches_tag("21x2x10")  # '.' is literal
    assert parse("a/b:*").matches_tag("anything-at-all")


# --- round trips ------------------------------------------------------------

_lower = "abcdefghijklmnopqrstuvwxyz0123456789"
_word = st.text(_lower + "ABCXYZ", min_size=1, max_size=8)
_label = st.one_of(_word, st.tuples(_word, _word).map("-".join))
_host = st.one_of(
    st.lists(_label, min_size=2, max_size=4).map(".".join),
    st.just("localhost"),
    st.sampled_from(["docker.io", "index.docker.io", DOCKER_HUB, "quay.io", "ghcr.io"]),
    st.just("[::1]"),
)
_registry = st.tuples(_host, st.one_of(st.none(), st.integers(1, 65535))).map(
    lambda hp: hp[0] if hp[1] is None else f"{hp[0]}:{hp[1]}"
)
_part = st.text(_lower, min_size=1, max_size=8)
_component = st.tuples(
    _part, st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "--"]), _part), max_size=3)
).map(lambda c: c[0] + "".join(sep + part for sep, part in c[1]))
_repository = st.lists(_component, min_size=1, max_size=4).map("/".join)
_tag_chars = "abcXYZ0189_*"
_tag = st.tuples(st.sampled_from(_tag_chars), st.text(_tag_chars + ".-", max_size=20)).map("".join)
_digest = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(
    lambda h: f"sha256:{h}"
)


@st.composite
def references(draw: st.DrawFn) -> ImageReference:
    registry = draw(_registry)
    repository = draw(_repository)
    ref = ImageReference(
        registry=registry,
        repository=repository,
        tag=draw(st.one_of(st.none(), _tag)),
        digest=draw(st.one_of(st.none(), _digest)),
        scheme=draw(st.sampled_from(["https", "http"])),
    )
    if len(registry) + 1 + len(repository) > 255:
        ref = ImageReference(registry="quay.io", repository="a", tag=ref.tag, digest=ref.digest)
    return ref


@settings(max_examples=200, deadline=None)
@given(references())
def test_round_trip(ref: ImageReference) -> None:
    assert parse(str(ref)) == ref
    assert parse(ref.url) == ref
    normal = ref.normalized()
    assert parse(str(normal)) == normal
    assert normal.normalized() == normal


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_parse_never_raises_anything_else(text: str) -> None:
    try:
        ref = parse(text)
    except ReferenceError as exc:
        assert str(exc)
    else:
        assert parse(str(ref)) == ref


def test_credentials_are_redacted_and_never_in_the_error() -> None:
    assert redact("https://alice:pw@quay.io/a:1") == "https://***@quay.io/a:1"
    assert redact("alice:pw@quay.io/a") == "***@quay.io/a"
    assert redact("https://a:p@ghcr.io:latest") == "https://***@ghcr.io:latest"
    assert redact("quay.io/a@sha256:" + "a" * 64) == "quay.io/a@sha256:" + "a" * 64
    assert redact("centos@sha256:" + "a" * 64) == "centos@sha256:" + "a" * 64
    for text in (
        "https://alice:pw-42@quay.io/a:1",
        "alice:pw-42@quay.io/a",
        "https://u:pw-42@h.io:1",
    ):
        with pytest.raises(ReferenceError) as info:
            parse(text)
        assert "pw-42" not in str(info.value)


def test_docker_hub_short_names_still_parse() -> None:
    assert parse("centos").repository == "library/centos"
    assert parse("python:3.12").tag == "3.12"
    assert parse("centos@sha256:" + "a" * 64).digest == "sha256:" + "a" * 64
