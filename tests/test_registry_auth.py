"""Authentication, credentials, TLS and the address policy, against real registries."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from registry_util import client_for, wish

from bot.config import Config
from bot.core.reference import parse
from bot.errors import ConfigError, RegistryRefused, Unauthorized
from bot.registry.auth import Credentials, CredentialStore, canonical_host, parse_challenges
from bot.registry.client import RegistryClient
from bot.registry.policy import Policy
from bot.sandbox.image_builder import push_image
from bot.sandbox.layers import build_layer, file
from bot.sandbox.registry_server import LocalRegistry

LAYER = build_layer([file("secret.txt", "s")])


def test_parse_challenges_handles_quoted_commas_and_several_schemes() -> None:
    header = (
        'Bearer realm="https://auth.example.org/token",service="registry.example.org",'
        'scope="repository:a/b:pull,push",error="insufficient_scope", '
        'Basic realm="say \\"hi\\", please"'
    )
    bearer, basic = parse_challenges(header)
    assert bearer.scheme == "bearer"
    assert bearer.params == {
        "realm": "https://auth.example.org/token",
        "service": "registry.example.org",
        "scope": "repository:a/b:pull,push",
        "error": "insufficient_scope",
    }
    assert basic.scheme == "basic" and basic.params["realm"] == 'say "hi", please'
    assert parse_challenges("Basic") == [parse_challenges("basic")[0]]
    assert parse_challenges("") == []


def test_basic_auth(basic_registry: LocalRegistry, unique_repo: str) -> None:
    pushed = push_image(
        basic_registry.url, unique_repo, "1", [LAYER], auth=basic_registry.credentials
    )
    ref = f"{basic_registry.host}/{unique_repo}:1"
    assert basic_registry.credentials is not None
    good = {basic_registry.host: basic_registry.credentials}
    bad = {basic_registry.host: (basic_registry.username, "wrong")}
    with client_for(basic_registry.host, credentials=good) as client:
        (image,) = client.resolve(wish(ref)).images
    assert image.image_id == pushed.config_digest
    for credentials in (bad, None):
        with client_for(basic_registry.host, credentials=credentials) as client:
            resolution = client.resolve(wish(ref))
            with pytest.raises(Unauthorized) as caught:
                client.get_manifest(parse(ref))
        assert resolution.problem is not None and resolution.problem.code == "unauthorized"
        assert "wrong" not in str(caught.value) and "wrong" not in resolution.problem.message
        assert caught.value.hint


def test_token_auth_caches_tokens(token_registry: LocalRegistry, unique_repo: str) -> None:
    tokens = token_registry.token_server
    assert tokens is not None and token_registry.credentials is not None
    pushed = [
        push_image(
            token_registry.url,
            unique_repo,
            f"v{i}",
            [build_layer([file("n", str(i))])],
            auth=token_registry.credentials,
        )
        for i in range(4)
    ]
    before = tokens.tokens_issued
    good = {token_registry.host: token_registry.credentials}
    token_host = f"127.0.0.1:{tokens.port}"  # a realm on another port must be listed
    with client_for(token_registry.host, token_host, credentials=good) as client:
        resolution = client.resolve(wish(f"{token_registry.host}/{unique_repo}:v*"))
        assert client.requests_made >= 9
    assert resolution.problem is None
    assert [i.manifest_digest for i in resolution.images] == [p.manifest_digest for p in pushed]
    assert tokens.tokens_issued - before == 1  # one token for the scope, reused
    asked = tokens.requests[-1]
    assert asked["scopes"] == [f"repository:{unique_repo}:pull"]
    assert asked["service"] == tokens.service and asked["user"] == token_registry.username


def test_token_auth_wrong_password_and_anonymous(
    token_registry: LocalRegistry, unique_repo: str
) -> None:
    push_image(token_registry.url, unique_repo, "1", [LAYER], auth=token_registry.credentials)
    ref = f"{token_registry.host}/{unique_repo}:1"
    bad = {token_registry.host: (token_registry.username, "not-the-password")}
    assert token_registry.token_server is not None
    token_host = f"127.0.0.1:{token_registry.token_server.port}"  # listed: see test above
    with (
        client_for(token_registry.host, token_host, credentials=bad) as client,
        pytest.raises(Unauthorized, match="refused the credentials"),
    ):
        client.get_manifest(parse(ref))
    with client_for(token_registry.host, token_host) as client:
        resolution = client.resolve(wish(ref))
    assert resolution.problem is not None and resolution.problem.code == "unauthorized"
    assert "WISHBOT_REGISTRY_<N>_HOST" in (resolution.problem.hint or "")


def test_tls_registry_with_test_ca(tls_registry: LocalRegistry, unique_repo: str) -> None:
    pushed = push_image(tls_registry.url, unique_repo, "1", [LAYER], verify=tls_registry.verify)
    ref = f"{tls_registry.host}/{unique_repo}:1"
    config = Config(
        private_registries=(tls_registry.host,), ca_bundle=str(tls_registry.ca_file), retries=0
    )
    with RegistryClient(config, credentials=CredentialStore()) as client:
        (image,) = client.resolve(wish(ref)).images
        assert client.transport.verify != True  # noqa: E712 - a combined bundle file
    assert image.manifest_digest == pushed.manifest_digest
    without_ca = Config(private_registries=(tls_registry.host,), retries=0)
    with RegistryClient(without_ca, credentials=CredentialStore()) as client:
        resolution = client.resolve(wish(ref))
    assert resolution.problem is not None and resolution.problem.code == "unavailable"
    assert "WISHBOT_CA_BUNDLE" in (resolution.problem.hint or "")


def test_loopback_and_plain_http_are_refused_unless_allowed(
    registry: LocalRegistry, unique_repo: str
) -> None:
    push_image(registry.url, unique_repo, "1", [LAYER])
    ref = f"{registry.host}/{unique_repo}:1"
    with RegistryClient(Config(), credentials=CredentialStore()) as client:
        refused = client.resolve(wish(ref))
        http = client.resolve(wish(f"http://{registry.host}/{unique_repo}:1"))
        assert client.requests_made == 0
    assert refused.problem is not None and refused.problem.code == "refused"
    assert "WISHBOT_INSECURE_REGISTRIES" in (refused.problem.hint or "")
    assert http.problem is not None and http.problem.code == "refused"
    policy = Policy(Config(private_registries=("10.1.2.3",)))
    policy.check_address("10.1.2.3:5000")
    for host in ("169.254.169.254", "10.0.0.1:443", "[::1]:5000", "192.168.1.1", "localhost:5000"):
        with pytest.raises(RegistryRefused):
            policy.check_address(host)
    policy.check_address("8.8.8.8")
    assert policy.endpoint(parse("ubuntu")).base_url == "https://registry-1.docker.io"
    assert (
        policy.endpoint(parse("index.docker.io/library/ubuntu")).base_url
        == "https://registry-1.docker.io"
    )


def test_credentials_from_auth_file_and_environment(tmp_path: Path) -> None:
    auth_file = tmp_path / "auth.json"
    encoded = base64.b64encode(b"alice:s3cret:with:colons").decode()
    auth_file.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": encoded},
                    "gitlab.example.org:5050": {"username": "bob", "password": "pw"},
                }
            }
        )
    )
    env = {
        "REGISTRY_AUTH_FILE": str(auth_file),
        "WISHBOT_REGISTRY_1_HOST": "ghcr.io",
        "WISHBOT_REGISTRY_1_USER": "ci",
        "WISHBOT_REGISTRY_1_PASSWORD": "token-123",
        "WISHBOT_REGISTRY_GL_HOST": "gitlab.example.org:5050",
        "WISHBOT_REGISTRY_GL_USER": "deploy",
        "WISHBOT_REGISTRY_GL_PASSWORD": "deploy-token",
    }
    store = CredentialStore.load(env)
    assert store.get("docker.io") == Credentials("alice", "s3cret:with:colons")
    assert store.get("registry.hub.docker.com") == store.get("docker.io")
    assert store.get("ghcr.io") == Credentials("ci", "token-123")
    assert store.get("gitlab.example.org:5050") == Credentials("deploy", "deploy-token")  # env wins
    assert store.get("quay.io") is None
    assert "s3cret" not in repr(store) and "token-123" not in repr(store.get("ghcr.io"))
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(
        json.dumps({"auths": {"quay.io": {"auth": base64.b64encode(b"q:p").decode()}}})
    )
    assert CredentialStore.load({"HOME": str(home)}).get("quay.io") == Credentials("q", "p")
    with pytest.raises(ConfigError, match="WISHBOT_REGISTRY_2_PASSWORD"):
        CredentialStore.load(
            {"HOME": str(home), "WISHBOT_REGISTRY_2_HOST": "x.io", "WISHBOT_REGISTRY_2_USER": "u"}
        )
    auth_file.write_text("{not json")
    with pytest.raises(ConfigError, match=r"auth\.json"):
        CredentialStore.load({"REGISTRY_AUTH_FILE": str(auth_file)})
    assert canonical_host("https://Index.Docker.io/v1/") == "registry.hub.docker.com"
