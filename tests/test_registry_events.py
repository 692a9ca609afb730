"""Registry events end to end: the real ``docker-registry`` sends its own
notifications (distribution's envelope, a bearer token in the endpoint's
headers) to a running webhook server with the real pipeline and a ``local:``
publisher; the server re-resolves what the event may concern and publishes
only what changed."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from registry_events_site import (
    CVMFS_REPO,
    ENVELOPE,
    SECRET,
    TOKEN,
    Site,
    event_site,
    wait_for,
)

from bot.publisher.state import read_state
from bot.runtime import registry_events as events
from bot.runtime.queue import Queue


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with event_site(tmp_path_factory.mktemp("events")) as running:
        yield running


def _envelope(host: str, repository: str, tags: list[str]) -> bytes:
    return json.dumps(
        {
            "events": [
                {
                    "id": f"{repository}-{tag}",
                    "action": "push",
                    "target": {
                        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                        "repository": repository,
                        "tag": tag,
                        "digest": "sha256:" + "0" * 64,
                    },
                    "request": {"host": host},
                }
                for tag in tags
            ]
        }
    ).encode()


def _bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": ENVELOPE}


def test_a_push_of_a_wished_tag_republishes_it(site: Site) -> None:
    site.wish("app:1")
    first = site.push("app", "1", "1.0")
    wait_for(lambda: site.published("app", "1") == first.manifest_digest)
    wait_for(site.idle)
    catalog = site.forge.read_file("catalog.json", site.forge.default_branch()[1])
    assert catalog is not None and first.manifest_digest.encode() in catalog
    started = time.monotonic()
    moved = site.push("app", "1", "2.0")
    wait_for(lambda: site.published("app", "1") == moved.manifest_digest)
    assert time.monotonic() - started < 10
    state = read_state(site.tree, CVMFS_REPO)
    # the old image waits for its grace period, exactly as on the hourly path
    assert any(s.kind == "image" and s.id == first.config_digest for s in state.schedule)
    wait_for(site.idle)
    seconds = "wishbot_registry_event_to_published_seconds"
    assert site.server.metrics.value(f"{seconds}_count") >= 2
    assert site.server.metrics.value(f"{seconds}_sum") < 20


def test_a_push_of_an_unwished_tag_does_nothing(site: Site) -> None:
    site.wish("app:1")
    before = site.server.metrics.value(
        "wishbot_registry_events_total", source="distribution", result="accepted"
    )
    site.push("other", "1", "1.0")
    wait_for(
        lambda: (
            site.server.metrics.value(
                "wishbot_registry_events_total", source="distribution", result="accepted"
            )
            > before
        )
    )
    wait_for(site.idle)
    assert site.published("other", "1") is None


def test_a_wildcard_gains_its_new_tag(site: Site) -> None:
    site.wish("app:1", "wild:2.*")
    site.push("wild", "2.0", "2.0")
    wait_for(lambda: site.published("wild", "2.0") is not None)
    new = site.push("wild", "2.1", "2.1")
    wait_for(lambda: site.published("wild", "2.1") == new.manifest_digest)
    other = site.push("wild", "3.0", "3.0")  # does not match the pattern
    assert other.manifest_digest
    wait_for(site.idle)
    assert site.published("wild", "3.0") is None


def test_unauthenticated_or_forged_events_are_refused(site: Site) -> None:
    body = _envelope(site.registry.host, "events/app", ["1"])
    assert site.post("distribution", body, {"Content-Type": ENVELOPE}).status_code == 401
    assert site.post("distribution", body, _bearer("wrong")).status_code == 401
    assert site.post("harbor", b"{}", {"Authorization": "nope"}).status_code == 401
    forged = {"X-GitHub-Event": "registry_package", "X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert site.post("github", b"{}", forged).status_code == 401
    # Docker Hub cannot sign: only allow-listed repositories, and only as a hint
    hub = json.dumps({"push_data": {"tag": "1"}, "repository": {"repo_name": "evil/x"}})
    assert site.post("dockerhub", hub.encode(), {}).status_code == 403
    assert site.post("nosuch", body, _bearer()).status_code == 404
    big = b"{" + b" " * (site.server.limits.max_body + 1) + b"}"
    assert site.post("distribution", big, _bearer()).status_code == 413
    refused = site.server.metrics.value(
        "wishbot_registry_events_total", source="distribution", result="refused"
    )
    assert refused >= 2


def test_a_signed_github_package_event_is_accepted(site: Site) -> None:
    body = json.dumps(
        {
            "action": "published",
            "registry_package": {
                "name": "tool",
                "namespace": "Team",
                "package_type": "CONTAINER",
                "package_version": {"container_metadata": {"tag": {"name": "v1"}}},
            },
        }
    ).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-GitHub-Event": "registry_package", "X-Hub-Signature-256": signature}
    answer = site.post("github", body, headers)
    assert answer.status_code == 403  # ghcr.io/team/tool is not allow-listed here
    assert answer.json() == {"error": "registry or repository is not allow-listed"}


def test_a_flood_of_500_events_is_coalesced_into_few_runs(site: Site) -> None:
    site.wish("app:1", "flood:1.*")
    image = site.push("flood", "1.0", "1.0")
    wait_for(lambda: site.published("flood", "1.0") is not None)
    wait_for(site.idle)
    before = len(site.refresh_jobs())

    def deliver(i: int) -> int:
        body = _envelope(site.registry.host, "events/flood", [f"1.{i}"])
        return site.post("distribution", body, _bearer()).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(deliver, range(500)))
    assert set(statuses) == {202}
    wait_for(site.idle)
    runs = len(site.refresh_jobs()) - before
    assert 1 <= runs <= 8, runs  # 500 deliveries in about 5 s, 1 s debounce
    assert site.published("flood", "1.0") == image.manifest_digest


def test_a_hostile_event_naming_an_image_outside_the_wishlist_publishes_nothing(
    site: Site,
) -> None:
    site.wish("app:1")
    site.push("evil", "1", "1.0")  # exists upstream, nobody wished it
    wait_for(site.idle)
    before = read_state(site.tree, CVMFS_REPO).images
    body = _envelope(site.registry.host, "events/evil", ["1", "latest"])
    assert site.post("distribution", body, _bearer()).status_code == 202
    assert site.post("distribution", body, _bearer()).status_code == 200  # a replay: dropped
    outside = _envelope("registry.example.org", "events/app", ["1"])
    assert site.post("distribution", outside, _bearer()).status_code == 403
    time.sleep(0.5)
    wait_for(site.idle)
    assert read_state(site.tree, CVMFS_REPO).images == before


def test_deletions_are_only_logged() -> None:
    body = json.dumps(
        {
            "events": [
                {
                    "action": "delete",
                    "target": {"repository": "a/b", "tag": "1"},
                    "request": {"host": "r.example.org"},
                },
                {"action": "pull", "target": {"repository": "a/b", "tag": "1"}},
                {
                    "action": "push",
                    "target": {"mediaType": "application/octet-stream", "repository": "a/b"},
                },
            ]
        }
    ).encode()
    parsed = events.parse("distribution", {}, body)
    assert parsed.pushed == ()
    assert [h.image for h in parsed.deleted] == ["r.example.org/a/b:1"]
    assert parsed.skipped == 2


def test_each_format_parses_to_tag_hints() -> None:
    harbor = {
        "type": "PUSH_ARTIFACT",
        "event_data": {
            "resources": [{"tag": "v1", "resource_url": "harbor.example.org/proj/app:v1"}],
            "repository": {"repo_full_name": "proj/app"},
        },
    }
    github = {
        "action": "published",
        "package": {
            "name": "tool",
            "namespace": "Org",
            "package_type": "container",
            "package_version": {"container_metadata": {"tag": {"name": "2.0"}}},
        },
    }
    hub = {"push_data": {"tag": "3.12"}, "repository": {"repo_name": "python"}}
    cases = [
        ("harbor", {}, harbor, "harbor.example.org/proj/app:v1"),
        ("github", {"X-GitHub-Event": "package"}, github, "ghcr.io/org/tool:2.0"),
        ("dockerhub", {}, hub, "docker.io/library/python:3.12"),
    ]
    for fmt, headers, body, image in cases:
        parsed = events.parse(fmt, headers, json.dumps(body).encode())
        assert [h.image for h in parsed.pushed] == [image], fmt
    hostile = {"push_data": {"tag": "../../x"}, "repository": {"repo_name": "A/$(rm)"}}
    assert events.parse("dockerhub", {}, json.dumps(hostile).encode()).pushed == ()
    with pytest.raises(events.BadEvent):
        events.parse("distribution", {}, b"[1]")


def test_an_event_concerns_exact_tags_and_matching_wildcards() -> None:
    from bot.core.recipe import load_wishlist

    text = (
        "version: 1\nuser: u\ncvmfs_repo: r.org\noutput_format: 'x/$(image)'\ninput:\n"
        "  - 'https://registry.hub.docker.com/library/python:3.12'\n"
        "  - 'https://r.example.org/a/b:1.*'\n"
        "  - 'https://r.example.org/a/b:2'\n"
    )
    wishlist, problems = load_wishlist(text.encode(), "wishlist.yaml")
    assert wishlist is not None, problems
    hit = events.concerned(
        wishlist.wishes, ["docker.io/library/python:3.12", "r.example.org/a/b:1.5"]
    )
    assert [w.text for w in hit] == [w.text for w in wishlist.wishes[:2]]
    assert events.concerned(wishlist.wishes, ["r.example.org/a/c:2", "evil.org/a/b:2"]) == []


def test_waiting_hints_merge_and_overflow(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite")
    put = lambda images, received: queue.put_merged(  # noqa: E731
        "refresh", "k", {"images": images, "received": received}, merge="images", limit=3
    )
    assert put(["a"], 5.0) == "queued"
    assert put(["b", "a"], 4.0) == "coalesced"
    job = queue.claim(("refresh",))
    assert job is not None and job.payload == {
        "images": ["a", "b"],
        "received": 4.0,
        "overflow": False,
    }
    assert put(["c"], 1.0) == "queued"  # the first one is running: a new run waits
    assert put(["d", "e", "f"], 1.0) == "coalesced"
    assert queue.claim(("refresh",)) is None  # the same key is still running
    queue.done(job)
    again = queue.claim(("refresh",))
    assert again is not None and again.payload["overflow"] is True  # every wish, then
    assert again.payload["images"] == [] and again.payload["received"] == 1.0


def test_a_tag_deleted_upstream_removes_nothing(site: Site) -> None:
    site.wish("app:1", "gone:4.*")
    kept = site.push("gone", "4.0", "4.0")
    site.push("gone", "4.1", "4.1")
    wait_for(lambda: site.published("gone", "4.1") is not None)
    wait_for(lambda: site.published("gone", "4.0") is not None)
    deleted = requests.delete(
        f"{site.registry.url}/v2/events/gone/manifests/{kept.manifest_digest}",
        headers={"Accept": kept.manifest_media_type},
        timeout=10,
    )
    assert deleted.status_code == 202, deleted.text
    site.push("gone", "4.2", "4.2")  # the wildcard would now drop 4.0: left to the hourly run
    time.sleep(1.5)
    wait_for(site.idle)
    assert site.published("gone", "4.0") == kept.manifest_digest
    state = read_state(site.tree, CVMFS_REPO)
    assert not any(s.id == kept.config_digest for s in state.schedule)
    assert site.published("gone", "4.2") is None  # the whole wish waits for the periodic run
