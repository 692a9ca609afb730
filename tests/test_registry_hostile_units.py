"""The pure parts of the hostile-input defences: the address policy
(IPv6 forms that embed IPv4, origins, token realms), ``Retry-After``,
token answers and the JSON loader."""

from __future__ import annotations

import math
import re

import pytest

from bot.config import Config
from bot.errors import RegistryRefused
from bot.registry import safejson
from bot.registry.auth import MAX_TOKEN_LIFETIME, token_from_answer
from bot.registry.policy import Endpoint, Policy, is_loopback, is_public, same_origin
from bot.registry.transport import retry_after


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:10.0.0.1",
        "::127.0.0.1",  # IPv4-compatible
        "::169.254.169.254",
        "64:ff9b::10.0.0.1",  # NAT64 well-known prefix
        "64:ff9b::127.0.0.1",
        "64:ff9b::169.254.169.254",
        "64:ff9b:1::8.8.8.8",  # NAT64 local-use prefix: never public
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "::1",
        "::",
        "fe80::1%eth0",
        "fc00::1",
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
    ],
)
def test_private_addresses_in_every_spelling_are_not_public(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::8.8.8.8", "2002:808:808::1"]
)
def test_public_addresses_stay_public(address: str) -> None:
    assert is_public(address)


def test_embedded_loopback_is_loopback_for_the_proxy_bypass() -> None:
    assert is_loopback("[::ffff:127.0.0.1]") and is_loopback("::127.0.0.1")
    assert not is_loopback("64:ff9b::8.8.8.8")


def test_the_policy_refuses_registries_on_embedded_private_addresses() -> None:
    policy = Policy(Config())
    for host in ("[64:ff9b::a00:1]", "[2002:7f00:1::1]", "[::127.0.0.1]", "[::ffff:a9fe:a9fe]"):
        with pytest.raises(RegistryRefused, match="loopback, private or link-local"):
            policy.check_address(host)
        with pytest.raises(RegistryRefused, match="not followed"):
            policy.check_redirect("r.example", "https://8.8.8.8/a", f"https://{host}/b")


def test_origins() -> None:
    assert same_origin("https://r.example/v2/x?last=a", "https://r.example:443")
    assert not same_origin("http://r.example/v2/x", "https://r.example")  # downgrade
    assert not same_origin("https://r.example:8443/v2/x", "https://r.example")
    assert not same_origin("https://user:pw@r.example/v2/x", "https://r.example")
    assert not same_origin("https://[::1/x", "https://r.example")
    assert not same_origin("/relative", "https://r.example")


def test_token_realms() -> None:
    policy = Policy(Config(insecure_registries=("127.0.0.1:5000",)))
    registry = Endpoint("127.0.0.1:5000", "http://127.0.0.1:5000")
    policy.check_realm(registry, "http://127.0.0.1:5000/token")  # its own origin
    policy.check_realm(registry, "https://8.8.8.8/token")  # a public token server
    for realm, why in {
        "http://127.0.0.1:6000/token": "plain-http token server",
        "https://127.0.0.1:6000/token": "not allowed",
        "https://169.254.169.254/token": "not allowed",
        "https://[64:ff9b::a9fe:a9fe]/token": "not allowed",
        "https://8.8.8.8:99999/token": "not an HTTP(S) URL",
        "https://u:p@8.8.8.8/token": "not an HTTP(S) URL",
        "ftp://8.8.8.8/token": "not an HTTP(S) URL",
    }.items():
        with pytest.raises(RegistryRefused, match=re.escape(why)):
            policy.check_realm(registry, realm)
    hub = Endpoint("registry.hub.docker.com", "https://registry-1.docker.io")
    with pytest.raises(RegistryRefused, match="plain-http"):
        Policy(Config()).check_realm(hub, "http://8.8.8.8/token")
    listed = Policy(Config(private_registries=("127.0.0.1:6000",)))
    listed.check_realm(registry, "https://127.0.0.1:6000/token")  # listed with its port


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("²³", None),  # Unicode digits
        ("١٢", None),
        ("9" * 5000, math.inf),
        ("-5", None),
        ("1e9", None),
        ("1.5", None),
        ("soon", None),
        ("Mon, 99 Foo 99999 99:99:99 GMT", None),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_never_raises(value: str | None, expected: float | None) -> None:
    assert retry_after(value) == expected


def test_retry_after_far_future_is_long() -> None:
    wait = retry_after("Fri, 31 Dec 9999 23:59:59 GMT")
    assert wait is not None and wait > 1e10


def test_token_answers() -> None:
    assert token_from_answer(b'{"token": "abc.def-ghi_~+/="}') == ("abc.def-ghi_~+/=", 60.0)
    assert token_from_answer(b'{"access_token": "t", "expires_in": 300}') == ("t", 300.0)
    huge = b'{"token": "t", "expires_in": ' + b"9" * 4000 + b"}"
    assert token_from_answer(huge) == ("t", MAX_TOKEN_LIFETIME)
    assert token_from_answer(b'{"token": "t", "expires_in": 1e999}')[1] == 60.0
    assert token_from_answer(b'{"token": "t", "expires_in": true}')[1] == 60.0
    for body, why in {
        b'{"token": "abc\\nSECRET"}': "cannot be sent",
        b'{"token": "abc SECRET"}': "cannot be sent",
        b'{"token": "\\u00e9SECRET"}': "cannot be sent",
        b'{"token": 5}': "no token",
        b'{"token": ""}': "no token",
        b"[1]": "not a JSON object",
        b"\xff": "not UTF-8",
        b"[" * 1000 + b"]" * 1000: "deeper",
        b'{"token": ' + b"1" * 5000 + b"}": "too large",
    }.items():
        with pytest.raises(ValueError, match=why) as caught:
            token_from_answer(body)
        assert "SECRET" not in str(caught.value)


def test_safejson_depth_ignores_brackets_in_strings() -> None:
    assert safejson.loads(b'{"a": "' + b"[" * 10_000 + b'"}') == {"a": "[" * 10_000}
    assert safejson.depth('{"a": [[1], {"b": "]]]"}]}') == 3
    assert safejson.loads(b"[" * 64 + b"]" * 64) is not None
    with pytest.raises(safejson.BadJson, match="deeper than 64"):
        safejson.loads(b"[" * 65 + b"]" * 65)
