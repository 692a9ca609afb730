"""The catalog: golden Markdown and JSON, schema, round trip to CurrentState, determinism."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from golden_check import check_golden
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from plan_samples import EARLIER, digest, published, resolved, state, wish

from bot.core.catalog import (
    anchor,
    canonical_state,
    catalog_json,
    catalog_markdown,
    state_from_catalog,
)
from bot.core.model import CurrentState, Platform, PublishedImage, ScheduledRemoval
from bot.core.reference import ImageReference
from bot.core.schemas import schema_errors
from bot.errors import PublisherError

ARM = Platform("linux", "arm64", "v8")


def realistic_state() -> CurrentState:
    c7 = wish("centos:centos7")
    multi = wish("nvcr.io/nvidia/cuda:12.2.0", platforms=(Platform("linux", "amd64"), ARM))
    port = wish("gitlab-p4n.aip.de:5005/compute4punch/container-stacks/wlcg-wn:latest")
    dash = wish("gitlab-registry.cern.ch/atlas/c--dev/athena:22.0.1")
    images = [
        published(resolved(c7, None, "c7", ["base", "c7"], size=75_000_000)),
        published(resolved(c7, "centos8", "c8", ["base", "c8"], size=80_000_000)),
        published(resolved(multi, None, "cuda-amd", ["ubuntu", "cuda"], size=900_000_000)),
        replace(
            published(resolved(multi, None, "cuda-arm", ["ubuntu-arm", "cuda-arm"], platform=ARM)),
            path=".multiarch/arm64:v8/nvcr.io/nvidia/cuda:12.2.0",
        ),
        published(
            resolved(port, None, "wn", ["el9", "wn"], size=300_000_000),
            updated=datetime(2026, 2, 2, tzinfo=UTC),
        ),
        published(resolved(dash, None, "athena", ["el9", "athena"], size=2_000_000_000)),
    ]
    schedule = [
        ScheduledRemoval(
            "image",
            digest("config:old-c7"),
            EARLIER,
            path="registry.hub.docker.com/library/centos:centos7",
        ),
        ScheduledRemoval("layer", digest("layer:old"), EARLIER + timedelta(days=3)),
        # athena was removed from the wishlist: its path serves until gc (retiring)
        ScheduledRemoval("image", images[-1].image_id, EARLIER + timedelta(days=1), path=ATHENA),
    ]
    return state(images[::-1], schedule)  # deliberately unsorted


ATHENA = "gitlab-registry.cern.ch/atlas/c--dev/athena:22.0.1"


def test_a_retiring_path_is_served_and_waits_for_removal() -> None:
    current = realistic_state()
    data = catalog_json(current, grace_days=30)
    deletion = {i["public_path"]: i["deletion"] for i in data["images"]}
    assert deletion[ATHENA] == "2026-02-15T08:30:00Z"
    assert {p for p, when in deletion.items() if when is not None} == {ATHENA}
    serving = {(r["kind"], r["path"]): r["serving"] for r in data["schedule"]}
    assert serving == {
        ("image", "registry.hub.docker.com/library/centos:centos7"): False,  # a moved tag
        ("image", ATHENA): True,
        ("layer", None): False,
    }
    text = catalog_markdown(current, grace_days=30)
    row = next(
        line for line in text.splitlines() if f"/cvmfs/unpacked.example.org/{ATHENA}" in line
    )
    assert "⏳ removed from the wishlist, deleted after 2026-02-15" in row
    waiting = text.split("Waiting for removal")[-1]
    retiring_row = next(line for line in waiting.splitlines() if ATHENA in line)
    assert "still served" in retiring_row and "2026-02-15" in retiring_row
    assert "centos7 (⏳" not in waiting  # the moved tag's old image is not marked
    assert "⏳ 1 path removed from the wishlist still serves" in text
    # gc deleted it: no longer listed as retiring
    gone = replace(current, images=tuple(i for i in current.images if i.path != ATHENA))
    assert "⏳" not in catalog_markdown(gone, grace_days=30).split("Waiting for removal")[0]


def test_golden_catalog() -> None:
    current = realistic_state()
    check_golden("catalog.md", catalog_markdown(current, grace_days=30))
    data = catalog_json(current, grace_days=30)
    check_golden("catalog.json", json.dumps(data, indent=2) + "\n")


def test_catalog_json_follows_schema_and_round_trips() -> None:
    current = realistic_state()
    data = catalog_json(current, grace_days=30, generated=datetime(2026, 3, 1, tzinfo=UTC))
    assert schema_errors(data, "catalog.schema.json") == []
    assert data["generated"] == "2026-03-01T00:00:00Z"
    assert state_from_catalog(data) == canonical_state(current)
    assert state_from_catalog(json.loads(json.dumps(data))) == canonical_state(current)
    cuda = [i for i in data["images"] if i["public_path"] == "nvcr.io/nvidia/cuda:12.2.0"]
    assert [i["platform"] for i in cuda] == ["linux/amd64", "linux/arm64/v8"]
    assert cuda[1]["cvmfs_path"] == "/cvmfs/unpacked.example.org/nvcr.io/nvidia/cuda:12.2.0"
    removal = data["schedule"][0]
    assert removal["deletion"] == "2026-02-14T08:30:00Z"


def test_output_is_deterministic_whatever_the_order() -> None:
    current = realistic_state()
    shuffled = replace(current, images=current.images[::-1], schedule=current.schedule[::-1])
    assert catalog_markdown(current, grace_days=30) == catalog_markdown(shuffled, grace_days=30)
    assert catalog_json(current, grace_days=30) == catalog_json(shuffled, grace_days=30)
    assert "Generated" not in catalog_markdown(current, grace_days=30)


def test_markdown_has_contents_anchors_and_schedule() -> None:
    text = catalog_markdown(realistic_state(), grace_days=30)
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    links = re.findall(r'href="#([^"]+)"', html)
    ids = set(re.findall(r'id="([^"]+)"', html))
    assert links and set(links) <= ids  # every contents entry lands somewhere
    assert anchor("registry.hub.docker.com/library/centos") in links
    assert anchor("registry.hub.docker.com/library/centos:centos7") in ids
    assert "Waiting for removal" in html and "2026-02-14" in html
    assert "linux/arm64/v8" in html
    assert "/cvmfs/unpacked.example.org/gitlab-registry.cern.ch/atlas/c--dev/athena:22.0.1" in html
    # registries are sections, in order
    sections = re.findall(r"<h2>(.*?)</h2>", html)
    assert sections[:1] == ["Contents"]
    assert sections[1:-1] == sorted(sections[1:-1])


def test_anchor_depends_on_path_only() -> None:
    assert anchor("quay.io/a/b:1") == anchor("quay.io/a/b:1")
    assert anchor("a.b/c") != anchor("ab/c")
    assert re.fullmatch(r"[a-z0-9-]+", anchor("Host:5000/x/y:TAG_1"))


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.pop("images"), "images"),
        (lambda d: d.update(schema="wishbot-catalog/9"), "schema"),
        (lambda d: d["images"][0].update(image_id="not a digest"), "images/0/image_id"),
        (lambda d: d["images"][0].update(reference="UPPER/Case"), "images/0/reference"),
        (lambda d: d["images"][0].update(updated="yesterday"), "images/0/updated"),
    ],
)
def test_bad_catalog_is_a_clear_error(mutate: object, fragment: str) -> None:
    data = json.loads(json.dumps(catalog_json(realistic_state(), grace_days=30)))
    assert callable(mutate)
    mutate(data)
    with pytest.raises(PublisherError) as caught:
        state_from_catalog(data)
    assert fragment in str(caught.value)
    assert "wishbot catalog" in str(caught.value)


def test_not_an_object_at_all() -> None:
    with pytest.raises(PublisherError, match="does not follow schema"):
        state_from_catalog(["not", "a", "catalog"])


hexes = st.text("0123456789abcdef", min_size=4, max_size=4).map(digest)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,8}", fullmatch=True)


@st.composite
def states(draw: st.DrawFn) -> CurrentState:
    images = []
    for _ in range(draw(st.integers(0, 4))):
        repo = draw(st.sampled_from(["library/centos", "org/app", "a/b/c"]))
        registry = draw(st.sampled_from(["registry.hub.docker.com", "quay.io", "localhost:5000"]))
        ref = ImageReference(
            registry, repo, tag=draw(tags), scheme=draw(st.sampled_from(["https", "http"]))
        )
        images.append(
            PublishedImage(
                path=f"{registry}/{repo}:{ref.tag}",
                reference=ref,
                platform=draw(st.sampled_from([Platform("linux", "amd64"), ARM])),
                manifest_digest=draw(st.one_of(st.just(""), hexes)),
                image_id=draw(hexes),
                layers=tuple(draw(st.lists(hexes, max_size=3))),
                updated=draw(times),
                thin_image=draw(st.one_of(st.none(), st.just("reg.example/thin:1"))),
                unpacked_size=draw(st.integers(0, 10**12)),
            )
        )
    current = state(images)
    schedule = [
        ScheduledRemoval(
            draw(st.sampled_from(["image", "layer"])),
            draw(hexes),
            draw(times),
            draw(st.one_of(st.none(), st.just("quay.io/x/y:1"))),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    return canonical_state(replace(current, schedule=tuple(schedule)))


@settings(max_examples=100, deadline=None)
@given(states(), st.integers(0, 90))
def test_round_trip_property(current: CurrentState, grace: int) -> None:
    data = json.loads(json.dumps(catalog_json(current, grace_days=grace)))
    assert schema_errors(data, "catalog.schema.json") == []
    assert state_from_catalog(data) == current
    assert catalog_markdown(state_from_catalog(data), grace_days=grace) == catalog_markdown(
        current, grace_days=grace
    )
