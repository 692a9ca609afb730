"""The forge-kind registry: each kind's webhook, CI and token knowledge in one module."""

from __future__ import annotations

import hashlib
import hmac

from bot.forge import github_events, gitlab_events
from bot.forge.kinds import FORGE_KINDS, SPECS, spec_of, specs
from bot.runtime.server import delivery_id, verify


def test_every_forge_kind_but_local_has_a_spec() -> None:
    assert set(SPECS) == set(FORGE_KINDS) - {"local"}
    assert spec_of("local") is None and spec_of("bitbucket") is None
    assert [s.kind for s in specs("github")] == ["github"]
    assert specs("local") == []


def test_each_kind_authenticates_its_own_scheme() -> None:
    body = b'{"zen": "x"}'
    signature = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    github = {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "d-1"}
    gitlab = {"X-Gitlab-Token": "s3cret", "X-Gitlab-Event-UUID": "u-1"}
    assert github_events.verify(github, body, "s3cret")
    assert not github_events.verify(github, body + b" ", "s3cret")
    assert gitlab_events.verify(gitlab, body, "s3cret")
    assert not gitlab_events.verify({"X-Gitlab-Token": "guess"}, body, "s3cret")
    assert not gitlab_events.claims(github) and not github_events.claims(gitlab)
    assert verify(github, body, "s3cret") == "github"
    assert verify(github, body, "s3cret", "gitlab") is None  # the configured kind only
    assert verify(gitlab, body, "s3cret") == "gitlab"
    assert delivery_id(github, body, "github") == "github-delivery:d-1"
    assert delivery_id({}, body, "github").startswith("sha256:")


def test_token_variables_are_the_kinds_own_then_the_generic_one() -> None:
    assert gitlab_events.TOKEN_VARIABLES == ("GITLAB_TOKEN", "WISHBOT_FORGE_TOKEN")
    assert github_events.TOKEN_VARIABLES == ("GITHUB_TOKEN", "WISHBOT_FORGE_TOKEN")
