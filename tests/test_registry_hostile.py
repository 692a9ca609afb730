"""A hostile registry (tests/hostile_registry.py) against the real client:
every attack is refused or contained as a typed problem of that one wish,
with a clear message, no traceback and no secret, in bounded time and
memory, while the good wishes of the same run still resolve."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile_registry import (
    BAD_JSON,
    LOCATIONS,
    MANY_TAGS,
    RETRY_AFTERS,
    TOKEN_SECRET,
    HostileRegistry,
)
from registry_util import client_for, wish

from bot.core.model import Problem, Resolution
from bot.core.reference import ImageReference, parse
from bot.errors import Unavailable
from bot.registry.manifest import MAX_MANIFEST_BYTES
from bot.sandbox.certs import make_ca, make_server_cert
from bot.sandbox.image_builder import PushedImage, push_image
from bot.sandbox.layers import build_layer, file
from bot.sandbox.registry_server import LocalRegistry

PASSWORD = "hunter2-registry-password"
FAST: dict[str, Any] = {"retries": 1, "backoff": 0.01}


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry() as server:
        yield server


@pytest.fixture(scope="module")
def good(registry: LocalRegistry) -> PushedImage:
    layer = build_layer([file("etc/motd", "good\n")])
    return push_image(registry.url, "t/hostile-good", "1", [layer], compression="none")


def resolve_one(hostile: HostileRegistry, text: str, **config: Any) -> Resolution:
    credentials = {hostile.host: ("user", PASSWORD)}
    with client_for(hostile.host, credentials=credentials, **{**FAST, **config}) as client:
        return client.resolve(wish(f"{hostile.host}/{text}"))


def assert_contained(problem: object, code: str, phrase: str) -> None:
    assert isinstance(problem, Problem), "a hostile answer must be a problem of the wish"
    assert problem.code == code, (problem.code, problem.message)
    assert phrase in problem.message, problem.message
    text = f"{problem.message} {problem.hint}"
    assert PASSWORD not in text and TOKEN_SECRET not in text
    assert "Traceback" not in text and len(problem.message) < 600


# --- time ----------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["drip-body", "drip-headers"])
def test_a_dripping_registry_fails_at_the_total_deadline(
    hostile: HostileRegistry, behaviour: str
) -> None:
    start = time.monotonic()
    resolution = resolve_one(hostile, f"{behaviour}/app:1", request_deadline=1.0, timeout=5.0)
    elapsed = time.monotonic() - start
    assert_contained(resolution.problem, "unavailable", "did not finish answering within 1 s")
    # each byte arrives well within the 5 s read timeout: only the deadline stops it
    assert elapsed < 2.5, elapsed


def test_a_dripping_blob_fails_at_its_size_scaled_deadline(
    hostile: HostileRegistry, tmp_path: Path
) -> None:
    from hostile_registry import DRIP_LAYER, DRIP_LAYER_DIGEST

    ref = parse(f"{hostile.host}/drip-blob/app:1")
    settings: dict[str, Any] = {
        "request_deadline": 0.5,
        "min_blob_throughput": 4096,
        "timeout": 5.0,
    }
    with client_for(hostile.host, **{**FAST, **settings}) as client:
        assert client.resolve(wish(str(ref))).problem is None
        start = time.monotonic()
        with pytest.raises(Unavailable, match="did not arrive within 2 s"):
            client.download_blob(ref, DRIP_LAYER_DIGEST, len(DRIP_LAYER), tmp_path / "blob")
    assert time.monotonic() - start < 3.5  # 0.5 s + 4096 B at 4096 B/s, not 4096 × 0.1 s
    assert not (tmp_path / "blob").exists()


# --- size ----------------------------------------------------------------------

LIMITS = {
    "huge-manifest/app:1": ("larger than 4194304 bytes", 4 * 2**20),
    "huge-manifest-nolength/app:1": ("larger than 4194304 bytes", 4 * 2**20),
    "huge-config/app:1": ("larger than 8388608 bytes", 8 * 2**20),
    "huge-tags/app:v*": ("larger than 8388608 bytes", 8 * 2**20),
    "huge-token/app:1": ("larger than 1048576 bytes", 2**20),
    "huge-error/app:1": ("answered HTTP 400", 64 * 2**10),
    "gzip-bomb/app:1": ("larger than 4194304 bytes", 4 * 2**20),
}


@pytest.mark.parametrize("text", sorted(LIMITS))
def test_100_mb_answers_cost_bounded_memory(hostile: HostileRegistry, text: str) -> None:
    phrase, cap = LIMITS[text]
    tracemalloc.start()
    try:
        resolution = resolve_one(hostile, text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    code = "registry-error" if "HTTP 400" in phrase else "unsupported"
    assert_contained(resolution.problem, code, phrase)
    # the bound: the body is read in 64 KiB chunks into one buffer of at most
    # the cap, copied once at the end (2 × cap), plus the client's own objects
    assert peak < 2 * cap + 2 * 2**20, f"peak {peak / 2**20:.1f} MiB for a {cap} byte cap"


def test_a_raised_manifest_limit_is_named_in_the_hint(hostile: HostileRegistry) -> None:
    resolution = resolve_one(hostile, "huge-manifest/app:1", max_manifest_bytes=2**20)
    assert_contained(resolution.problem, "unsupported", "larger than 1048576 bytes")
    assert resolution.problem is not None
    assert "WISHBOT_MAX_MANIFEST_BYTES" in (resolution.problem.hint or "")
    assert MAX_MANIFEST_BYTES == 4 * 2**20


# --- odd answers -----------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(RETRY_AFTERS)))
def test_odd_retry_after_values(hostile: HostileRegistry, index: int) -> None:
    start = time.monotonic()
    resolution = resolve_one(hostile, f"retry-after-{index}/app:1")
    assert_contained(resolution.problem, "unavailable", "rate")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("index", range(len(LOCATIONS)))
def test_invalid_locations_are_refused(hostile: HostileRegistry, index: int) -> None:
    resolution = resolve_one(hostile, f"location-{index}/app:1")
    assert_contained(resolution.problem, "refused", "not followed")


JSON_REASONS = [
    "nests JSON deeper than 64 levels",
    "nests JSON deeper than 64 levels",
    "number too large",
    "bad size",
    "not UTF-8",
    "no config descriptor",
    "no config descriptor",
    "'manifests' is not a list",
    "non-sha256 digest",
    "non-sha256 digest",
    "not a JSON object",
    "not a JSON object",
    "not a JSON object",
]


@pytest.mark.parametrize("index", range(len(BAD_JSON)))
def test_hostile_json_is_a_typed_problem(hostile: HostileRegistry, index: int) -> None:
    resolution = resolve_one(hostile, f"json-{index}/app:1")
    assert_contained(resolution.problem, "unsupported", JSON_REASONS[index])


def test_a_token_with_a_newline_is_refused_without_showing_it(hostile: HostileRegistry) -> None:
    resolution = resolve_one(hostile, "newline-token/app:1")
    assert_contained(resolution.problem, "registry-error", "cannot be sent in an HTTP header")


def test_a_wildcard_expands_to_at_most_max_wildcard_tags(hostile: HostileRegistry) -> None:
    before = len(hostile.seen("/many-tags/app/manifests/"))
    resolution = resolve_one(hostile, "many-tags/app:v*")
    assert_contained(resolution.problem, "unsupported", f"matches {MANY_TAGS} tags")
    assert resolution.problem is not None
    assert "WISHBOT_MAX_WILDCARD_TAGS" in (resolution.problem.hint or "")
    assert len(hostile.seen("/many-tags/app/manifests/")) == before  # not one manifest asked
    narrow = resolve_one(hostile, "many-tags/app:v000*", max_wildcard_tags=10)
    assert narrow.problem is None and len(narrow.images) == 10


# --- addresses and credentials --------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "phrase"), [("http", "plain-http token server"), ("https", "not allowed")]
)
def test_a_realm_on_another_port_of_the_registry_host_is_refused(
    hostile: HostileRegistry, scheme: str, phrase: str
) -> None:
    with HostileRegistry() as elsewhere:
        hostile.realm = f"{scheme}://{elsewhere.host}/token"
        resolution = resolve_one(hostile, "realm-port/app:1")
        assert_contained(resolution.problem, "unauthorized", phrase)
        assert resolution.problem is not None and elsewhere.host in resolution.problem.message
        assert elsewhere.seen() == []


def test_a_401_after_a_cross_host_redirect_never_gets_the_credentials(
    hostile: HostileRegistry,
) -> None:
    with HostileRegistry() as target, HostileRegistry() as realm:
        hostile.redirect_to = target.url
        target.realm = f"{realm.url}/token"
        credentials = {hostile.host: ("user", PASSWORD)}
        # every server is allowed: only the origin rule keeps the password home
        with client_for(
            hostile.host, target.host, realm.host, credentials=credentials, **FAST
        ) as client:
            resolution = client.resolve(wish(f"{hostile.host}/redirect/app:1"))
        assert_contained(resolution.problem, "unauthorized", "credentials are not sent there")
        assert realm.seen() == []
        assert all("Authorization" not in headers for _, _, headers in target.seen())


def test_pagination_never_downgrades_to_plain_http(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert = make_server_cert(tmp_path, ca)
    with HostileRegistry(tls=(cert.cert, cert.key)) as server:
        credentials = {server.host: ("user", PASSWORD)}
        with client_for(
            credentials=credentials,
            private_registries=(server.host,),
            ca_bundle=str(ca.cert),
            **FAST,
        ) as client:
            resolution = client.resolve(wish(f"{server.host}/downgrade-link/app:*"))
        assert_contained(resolution.problem, "unsupported", "another scheme, host or port")
        assert len(server.seen("/tags/list")) == 1  # the plain-http page was never asked


# --- the run goes on ----------------------------------------------------------------


def test_good_wishes_resolve_beside_every_hostile_one(
    hostile: HostileRegistry, registry: LocalRegistry, good: PushedImage
) -> None:
    bad = [
        "huge-manifest/app:1",
        "huge-tags/app:v*",
        "retry-after-1/app:1",
        "location-0/app:1",
        "location-3/app:1",
        *(f"json-{i}/app:1" for i in range(len(BAD_JSON))),
        "newline-token/app:1",
        "many-tags/app:v*",
    ]
    wishes = [wish(f"{registry.host}/t/hostile-good:1")]
    wishes += [wish(f"{hostile.host}/{text}") for text in bad]
    wishes += [wish(f"{registry.host}/t/hostile-good:1", line=99)]
    with client_for(hostile.host, registry.host, **FAST) as client:
        resolutions = client.resolve_all(wishes)
    assert resolutions[0].problem is None and resolutions[-1].problem is None
    assert resolutions[0].images[0].manifest_digest == good.manifest_digest
    for resolution in resolutions[1:-1]:
        assert resolution.problem is not None, resolution.wish.text
        assert resolution.problem.code in (
            "unsupported",
            "unavailable",
            "refused",
            "registry-error",
        )


def test_an_unexpected_failure_stays_with_its_wish(
    registry: LocalRegistry, good: PushedImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wish boundary: whatever slips past the typed checks (here a
    ValueError and a RecursionError from deep inside) is that wish's problem."""
    from bot.registry.client import RegistryClient

    real = RegistryClient.inspect

    def flaky(self: RegistryClient, ref: ImageReference, platforms: Any) -> Any:
        if ref.tag == "boom":
            raise ValueError("Invalid header value b'Bearer abc\\nSECRET-TOKEN-PART-7f3a'")
        if ref.tag == "deep":
            raise RecursionError("maximum recursion depth exceeded")
        return real(self, ref, platforms)

    monkeypatch.setattr(RegistryClient, "inspect", flaky)
    wishes = [
        wish(f"{registry.host}/t/hostile-good:boom"),
        wish(f"{registry.host}/t/hostile-good:1"),
        wish(f"{registry.host}/t/hostile-good:deep"),
    ]
    with client_for(registry.host, **FAST) as client:
        boom, fine, deep = client.resolve_all(wishes)
    assert fine.problem is None and fine.images[0].manifest_digest == good.manifest_digest
    assert_contained(boom.problem, "unsupported", "cannot be used (ValueError)")
    assert_contained(deep.problem, "unsupported", "cannot be used (RecursionError)")
