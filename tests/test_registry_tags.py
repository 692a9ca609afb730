"""Tag lists and wildcard expansion (real registry; pagination through the proxy)."""

from __future__ import annotations

import pytest
from fault_proxy import FaultProxy
from registry_util import client_for, wish

from bot.core.reference import parse
from bot.sandbox.image_builder import push_image, tag_image
from bot.sandbox.layers import build_layer, file
from bot.sandbox.registry_server import LocalRegistry

TAGS = [f"1.{minor}.{patch}" for minor in range(5) for patch in range(6)] + [
    "1x2y0",
    "latest",
    "2.0-rc1",
    "1.2.3-cuda",
]


@pytest.fixture(scope="module")
def tagged(registry: LocalRegistry) -> tuple[LocalRegistry, str]:
    repository = "t/many-tags"
    image = push_image(registry.url, repository, TAGS[0], [build_layer([file("f", "x")])])
    tag_image(registry.url, image, TAGS[1:])
    return registry, repository


def test_wildcard_expands_sorted_with_literal_dots(tagged: tuple[LocalRegistry, str]) -> None:
    registry, repository = tagged
    with client_for(registry.host) as client:
        refs = client.expand(parse(f"{registry.host}/{repository}:1.2.*"))
        resolution = client.resolve(wish(f"{registry.host}/{repository}:1.*.3*"))
    tags = [str(ref.tag) for ref in refs]
    assert tags == sorted(tags)
    assert tags == sorted([f"1.2.{p}" for p in range(6)] + ["1.2.3-cuda"])
    assert "1x2y0" not in tags  # '.' is literal
    assert resolution.problem is None
    got = [str(image.reference).rsplit(":", 1)[1] for image in resolution.images]
    assert got == sorted([f"1.{m}.3" for m in range(5)] + ["1.2.3-cuda"])


def test_wildcard_matching_nothing_is_not_found(tagged: tuple[LocalRegistry, str]) -> None:
    registry, repository = tagged
    with client_for(registry.host) as client:
        resolution = client.resolve(wish(f"{registry.host}/{repository}:9.*"))
    assert resolution.problem is not None
    assert resolution.problem.code == "not-found"
    assert "matches none" in resolution.problem.message
    assert str(len(TAGS)) in resolution.problem.message


def test_wildcard_with_digest_is_refused(tagged: tuple[LocalRegistry, str]) -> None:
    registry, repository = tagged
    with client_for(registry.host) as client:
        resolution = client.resolve(wish(f"{registry.host}/{repository}:1.*@sha256:" + "a" * 64))
    assert resolution.problem is not None and resolution.problem.code == "unsupported"


@pytest.mark.parametrize("absolute", [False, True])
def test_tag_pagination_follows_link_headers(
    tagged: tuple[LocalRegistry, str], absolute: bool
) -> None:
    registry, repository = tagged
    with (
        FaultProxy(registry.url, tag_page_size=7, absolute_links=absolute) as proxy,
        client_for(proxy.host) as client,
    ):
        tags = client.list_tags(parse(f"{proxy.host}/{repository}"))
        pages = proxy.requests_to(r"/tags/list")
        refs = client.expand(parse(f"{proxy.host}/{repository}:1.4.*"))
    assert tags == sorted(TAGS)
    assert len(pages) == -(-len(TAGS) // 7)
    assert [r.tag for r in refs] == [f"1.4.{p}" for p in range(6)]
