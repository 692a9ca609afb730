"""Neutral forge events and CI jobs, and the interface each forge kind implements.

What a webhook delivery or a CI job's variables say, once a forge kind's
module (:mod:`bot.forge.gitlab_events`, :mod:`bot.forge.github_events`) has
read them: only what the bot acts on becomes an event; everything else is
:class:`Ignored` with a reason. Payloads are untrusted: they only say *which*
merge request or branch to look at; the workflow reads the facts (head sha,
fork or not, default branch) back from the forge's API.

:class:`ForgeKindSpec` is everything wishbot knows about one kind of forge
outside its API adapter (webhook authentication, parsing, CI detection,
token variables, how to build the adapter); :mod:`bot.forge.kinds` lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.core.commands import CommentEvent
from bot.errors import UsageError

if TYPE_CHECKING:
    from bot.config import Config
    from bot.forge.base import Forge

ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class MergeRequestEvent:
    """A merge request was opened, reopened or got new commits."""

    forge: str
    repository: str
    number: str
    action: str
    head_sha: str

    @property
    def key(self) -> str:
        return f"mr:{self.repository}:{self.number}:{self.head_sha}"


@dataclass(frozen=True)
class PushEvent:
    """A branch moved to ``sha``."""

    forge: str
    repository: str
    branch: str
    sha: str

    @property
    def key(self) -> str:
        return f"push:{self.repository}:{self.branch}:{self.sha}"


@dataclass(frozen=True)
class Ignored:
    reason: str


Event = MergeRequestEvent | PushEvent


@dataclass(frozen=True)
class CiJob:
    """``step`` is "review" (with ``number``), "push" (with ``branch`` and ``sha``),
    "maintain" (a scheduled run: gc, then re-publish the default branch) or "none"."""

    forge: str
    url: str
    repository: str
    step: str
    number: str = ""
    branch: str = ""
    sha: str = ""
    reason: str = ""
    pipeline: tuple[str, int] | None = None  # GitLab: (CI_COMMIT_SHA, CI_PIPELINE_ID)
    job_url: str = ""  # the job's page: statuses' "Details" and the comments link there


#: the most of a comment body kept from a payload (a command is its short first line)
MAX_BODY = 4096


@dataclass(frozen=True)
class DashboardEdit:
    """An issue's body was edited by ``editor``: maybe a box ticked on the dashboard."""

    forge: str
    repository: str
    number: str
    before: str
    editor: str
    editor_id: str

    @property
    def key(self) -> str:
        return f"dashboard:{self.repository}:{self.number}"


#: what a forge kind's comment or issue-edit delivery becomes (None: nothing to do)
CommandEvent = CommentEvent | DashboardEdit


@dataclass(frozen=True)
class ForgeKindSpec:
    """One forge kind's webhook, CI and token knowledge.

    - ``claims(headers)``: the delivery carries this kind's credential header;
    - ``may_be_authentic(headers, secret)``: what the headers alone prove,
      before any body byte is read; ``verify(headers, body, secret)`` decides;
    - ``delivery_id(headers)``: the delivery's unique id, if it has one;
    - ``event_name(headers)``: the event kind header ('' when not this kind's);
    - ``parse_event(headers, payload)``: the neutral event of a JSON object;
    - ``parse_command(event_name, payload)``: a comment on a merge request or an
      issue's edited body (comment commands, the dashboard), else None;
    - ``ci_job(environ, event_text)``: the CI job, None when not this kind's CI;
    - ``job_url(environ)``: the running CI job's page ('' if unknown);
    - ``token_variables``: where its token is looked up, in order;
    - ``make(config, repository, url, token, pipeline)``: the API adapter;
    - ``request_paths``: what stands between the repository's web page and a
      request's number in its web URL; ``blob_path``: between the repository's
      web page and ``BRANCH/FILE`` in a file's.
    """

    kind: str
    claims: Callable[[Mapping[str, str]], bool]
    may_be_authentic: Callable[[Mapping[str, str], str], bool]
    verify: Callable[[Mapping[str, str], bytes, str], bool]
    delivery_id: Callable[[Mapping[str, str]], str | None]
    event_name: Callable[[Mapping[str, str]], str]
    parse_event: Callable[[Mapping[str, str], dict[str, Any]], Event | Ignored]
    parse_command: Callable[[str, dict[str, Any]], CommandEvent | None]
    ci_job: Callable[[Mapping[str, str], str | None], CiJob | None]
    job_url: Callable[[Mapping[str, str]], str]
    token_variables: tuple[str, ...]
    make: Callable[[Config, str, str, str | None, tuple[str, int] | None], Forge]
    request_paths: tuple[str, ...]
    blob_path: str


def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value, looked up case-insensitively ('' when absent)."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return ""


def branch_of(ref: str) -> str | None:
    """The branch a ``refs/heads/...`` ref names (None for tags and others)."""
    return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None


def need(env: Mapping[str, str], name: str) -> str:
    """A CI variable that must be set."""
    value = env.get(name, "")
    if not value:
        raise UsageError(f"the CI variable {name} is not set")
    return value
