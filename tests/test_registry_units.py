"""Pure parts of the client: token cache, Retry-After, Link headers, platform matching."""

from __future__ import annotations

import time

import pytest

from bot.core.model import Platform
from bot.errors import IntegrityError, Unsupported
from bot.registry.auth import TokenCache
from bot.registry.client import _next_link
from bot.registry.manifest import parse_manifest, platform_matches, sha256_digest
from bot.registry.transport import retry_after


def test_token_cache_expires_shortly_before_the_token() -> None:
    cache = TokenCache()
    cache.put("r:5000", "repository:a:pull", "tok", expires_in=0.4)
    assert cache.get("r:5000", "repository:a:pull") == "tok"
    assert cache.get("r:5000", "repository:b:pull") is None
    assert cache.get("other:5000", "repository:a:pull") is None
    time.sleep(0.32)  # the margin is a quarter of the lifetime (at most 30 s)
    assert cache.get("r:5000", "repository:a:pull") is None


def test_retry_after_forms() -> None:
    assert retry_after("7") == 7.0
    assert retry_after(None) is None and retry_after("soon") is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 100))
    assert 95 <= (retry_after(future) or 0) <= 101


def test_next_link() -> None:
    base = "https://r.example/v2/a/tags/list?n=2"
    assert _next_link('</v2/a/tags/list?n=2&last=b>; rel="next"', base) == (
        "https://r.example/v2/a/tags/list?n=2&last=b"
    )
    assert (
        _next_link("<https://r.example/x?last=c>; rel=next", base) == "https://r.example/x?last=c"
    )
    assert _next_link('<https://r.example/p>; rel="prev"', base) is None
    assert _next_link("", base) is None


@pytest.mark.parametrize(
    ("wanted", "offered", "match"),
    [
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/arm64", True),
        ("linux/arm", "linux/arm/v7", True),
        ("linux/arm", "linux/arm/v6", False),
        ("linux/amd64", "linux/amd64", True),
        ("linux/amd64", "linux/amd64/v3", False),
        ("linux/amd64", "windows/amd64", False),
    ],
)
def test_platform_matching(wanted: str, offered: str, match: bool) -> None:
    assert platform_matches(Platform.parse(wanted), Platform.parse(offered)) is match


def test_manifest_verification() -> None:
    body = b'{"schemaVersion": 2, "manifests": []}'
    digest = sha256_digest(body)
    manifest = parse_manifest(body, "", expected_digest=digest, served_digest=None, what="x")
    assert manifest.is_index and manifest.digest == digest
    with pytest.raises(IntegrityError):
        parse_manifest(body, "", expected_digest=None, served_digest="sha256:" + "0" * 64, what="x")
    with pytest.raises(Unsupported, match="not valid JSON"):
        parse_manifest(b"<html>", "text/html", expected_digest=None, served_digest=None, what="x")
    with pytest.raises(Unsupported, match="not a container image"):
        parse_manifest(
            b'{"schemaVersion": 2, "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json",'
            b' "digest": "sha256:' + b"a" * 64 + b'", "size": 1}, "layers": []}',
            "application/vnd.oci.image.manifest.v1+json",
            expected_digest=None,
            served_digest=None,
            what="x",
        ).config_descriptor()
