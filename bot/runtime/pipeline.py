"""The real :class:`~bot.runtime.pipeline_api.Pipeline`: validation, plan and publish.

``review`` is what a merge request gets: the wishlist at its head validated
(schema and semantics), the wishes it adds or changes resolved against their
registries (nothing else: a broken image elsewhere must not fail someone
else's request), and the plan of the change against the publisher's current
state, rendered as the one Markdown comment. ``publish`` is what a merge
gets: ``apply`` on the publisher, then the refreshed catalog.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from bot.config import Config
from bot.core.catalog import catalog_files, state_from_catalog
from bot.core.model import CurrentState, Problem, Resolution, Wish, Wishlist
from bot.core.plan import Plan
from bot.core.recipe import apply_ignore_errors, load_wishlist
from bot.core.render import plural, render_markdown, summary_parts
from bot.errors import PublisherError, WishbotError
from bot.publisher import open_publisher
from bot.publisher.apply import ApplyReport
from bot.publisher.backend import Publisher
from bot.publisher.converge import converge
from bot.publisher.gc import collect
from bot.publisher.refresh import refresh
from bot.publisher.repoinfo import check_repository, tree_repository
from bot.publisher.state import read_state
from bot.publisher.unpack import Limits
from bot.publisher.verify import read_status, scheduled_verify, verify_due
from bot.registry.auth import CredentialStore
from bot.registry.client import RegistryClient
from bot.runtime.pipeline_api import Pipeline, Publication, Review
from bot.runtime.plan_change import plan_change
from bot.runtime.registry_events import concerned

Clock = Callable[[], datetime]
REVIEW_TITLE = "wishbot plan for this change"
INVALID_TITLE = "wishbot: this change cannot be planned"
log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _count(problems: Sequence[Problem], severity: str) -> int:
    return sum(1 for p in problems if p.severity == severity)


def _first(problems: Sequence[Problem]) -> str:
    problem = next(p for p in problems if p.severity == "error")
    where = f"line {problem.location.line}: " if problem.location.line else ""
    return f"{where}{problem.message}"


def blocking_errors(problems: Sequence[Problem], wishlist: Wishlist | None) -> list[Problem]:
    """The errors that fail a status or an exit code (``ignoreErrors`` taken into account).

    The plan itself stays strict: an ignored error still keeps that wish's
    images from being removed (fail closed); it just does not block.
    """
    if wishlist is not None:
        problems = apply_ignore_errors(problems, wishlist)
    return [p for p in problems if p.severity == "error"]


def _validate_description(path: str, added: Sequence[Wish], blocking: Sequence[Problem]) -> str:
    """The validate status of a merge request: valid, not checkable right now, or the errors."""
    if not blocking:
        checked = f", {plural(len(added), 'new or changed wish', 'new or changed wishes')} found"
        return f"{path} is valid{checked if added else ''}"
    unavailable = [p for p in blocking if p.code == "unavailable"]
    if unavailable and len(unavailable) == len(blocking):
        return f"could not check {plural(len(unavailable), 'image')} right now; re-run later"
    return f"{plural(len(blocking), 'error')}: {_first(blocking)}"


class WishbotPipeline:
    """Validation, plan and publish on the operator's configuration."""

    def __init__(self, config: Config, *, clock: Clock = _utcnow):
        self.config = config
        self.clock = clock

    # --- review (merge requests) ------------------------------------------

    def review(
        self,
        base: bytes | None,
        head: bytes,
        path: str,
        *,
        trusted: bool,
        catalog: bytes | None = None,
    ) -> Review:
        wishlist, problems = load_wishlist(head, path)
        # Forks are planned with no secrets at all: anonymous registry access.
        credentials = None if trusted else CredentialStore()

        def resolve(wishes: Sequence[Wish]) -> list[Resolution]:
            with RegistryClient(self.config, credentials=credentials) as client:
                return client.resolve_all(wishes)

        change = plan_change(
            wishlist,
            problems,
            current=lambda cvmfs_repo: self._current_state(cvmfs_repo, catalog),
            resolve=resolve,
            now=self.clock(),
            grace_days=self.config.grace_days,
            base=load_wishlist(base, path)[0] if base is not None else None,
        )
        plan = change.plan
        if wishlist is None:
            errors = _count(problems, "error")
            return Review(
                valid=False,
                validate_description=f"{plural(errors, 'error')} in {path}: {_first(problems)}",
                planned=False,
                plan_description="not planned: the wishlist is invalid",
                comment=render_markdown(plan, title=INVALID_TITLE),
                plan=plan,
                title=INVALID_TITLE,
            )
        blocking = blocking_errors([*problems, *change.registry_problems], wishlist)
        summary = ", ".join(summary_parts(plan)) or "no changes to the publisher"
        return Review(
            valid=not blocking,
            validate_description=_validate_description(path, change.resolved, blocking),
            planned=not blocking,
            plan_description=summary if not blocking else f"blocked: {summary}",
            comment=render_markdown(plan, title=REVIEW_TITLE),
            plan=plan,
            title=REVIEW_TITLE,
        )

    def _current_state(self, cvmfs_repo: str, catalog: bytes | None) -> CurrentState:
        """The publisher's state: its tree when configured, else the committed catalog."""
        if self.config.publisher:
            publisher = open_publisher(self.config.publisher)
            if publisher.cvmfs_repo and not publisher.root.is_dir():
                raise PublisherError(
                    f"the CernVM-FS repository {publisher.cvmfs_repo} is not mounted "
                    f"({publisher.root} is not a directory): a plan against it would show "
                    "every image as new",
                    hint=f"mount it on the publisher host ('cvmfs_server mount "
                    f"{publisher.cvmfs_repo}'), then re-run the review",
                )
            check_repository(
                cvmfs_repo, tree_repository(publisher), f"the publisher {publisher.root}",
                where="the wishlist",
            )  # fmt: skip
            return read_state(publisher.root, cvmfs_repo)
        if catalog:
            try:
                state = state_from_catalog(json.loads(catalog))
            except (ValueError, WishbotError) as exc:
                # An unreadable catalog plans against nothing: every image shows as
                # new and nothing can be scheduled for removal (fail closed).
                log.warning("ignoring the committed catalog.json: %s", exc)
                return CurrentState(cvmfs_repo)
            check_repository(cvmfs_repo, state.cvmfs_repo, "the catalog", where="the wishlist")
            return state
        return CurrentState(cvmfs_repo)

    # --- publish (after merge) --------------------------------------------

    def publish(self, wishlist: bytes, path: str, commit: str) -> Publication:
        now = self.clock()
        loaded, problems = load_wishlist(wishlist, path)
        if loaded is None:
            return Publication(
                ok=False,
                description="the wishlist on the default branch is invalid",
                failure=f"{path}: {_first(problems)}",
            )
        if not self.config.publisher:
            return Publication(
                ok=False,
                description="no publisher configured",
                failure="set WISHBOT_PUBLISHER (local:DIR or cvmfs:REPO) on the publish job",
            )
        publisher = open_publisher(self.config.publisher)
        with RegistryClient(self.config) as client:
            plan, report = converge(loaded, publisher, client, config=self.config, now=now)
        state = read_state(publisher.root, loaded.cvmfs_repo)
        files = catalog_files(
            state, grace_days=self.config.grace_days, verified=read_status(publisher.root)
        )
        published = _published(loaded.cvmfs_repo, report)
        failures = report.failures
        blocking = blocking_errors(plan.problems, loaded)
        description = _publish_summary(plan, len(published), len(failures))
        if failures or blocking:
            names = [f"{f.path}: {f.message}" for f in failures]
            names += [f"{p.image or p.location}: {p.message}" for p in blocking]
            return _not_published(names, description, published, files)
        return Publication(ok=True, description=description, published=published, catalog=files)

    # --- a registry said some tags moved -----------------------------------

    def refresh(
        self, wishlist: bytes, path: str, commit: str, images: Sequence[str] | None
    ) -> Publication:
        """Re-publish the wishes the pushed ``images`` (``registry/repo:tag``) may
        concern; ``None``: every wish (too many hints to keep). An empty
        publication (no catalog) when no wish concerns them."""
        loaded, problems = load_wishlist(wishlist, path)
        if loaded is None:
            return Publication(
                ok=False,
                description="the wishlist on the default branch is invalid",
                failure=f"{path}: {_first(problems)}",
            )
        wishes = list(loaded.wishes) if images is None else concerned(loaded.wishes, images)
        if not wishes:
            return Publication(ok=True, description="no wish concerns these tags")
        if not self.config.publisher:
            return Publication(
                ok=False,
                description="no publisher configured",
                failure="set WISHBOT_PUBLISHER (local:DIR or cvmfs:REPO) on the server",
            )
        publisher = open_publisher(self.config.publisher)
        with RegistryClient(self.config) as client:
            plan, report, kept = refresh(
                loaded, wishes, publisher, client, config=self.config, now=self.clock()
            )
        for wish in kept:
            log.info("left to the periodic re-publication (a tag is gone upstream): %s", wish.text)
        published = _published(loaded.cvmfs_repo, report)
        description = _publish_summary(plan, len(published), len(report.failures))
        files: dict[str, bytes] = {}
        if published or plan.images_scheduled:
            state = read_state(publisher.root, loaded.cvmfs_repo)
            files = catalog_files(
                state, grace_days=self.config.grace_days, verified=read_status(publisher.root)
            )
        if report.failures:
            names = [f"{f.path}: {f.message}" for f in report.failures]
            return _not_published(names, description, published, files)
        return Publication(ok=True, description=description, published=published, catalog=files)

    # --- garbage collection (scheduled) ------------------------------------

    def collect(self) -> str:
        if not self.config.publisher:
            return "gc skipped: no publisher configured"
        publisher = open_publisher(self.config.publisher)
        with publisher.lock():
            publisher.recover()
            report = collect(
                publisher,
                self.clock(),
                grace_days=self.config.grace_days,
                max_deletions=self.config.max_deletions,
            )
            summary = report.render().splitlines()[0]
            verified = self._verify(publisher)
        return f"{summary}; {verified}" if verified else summary

    def _verify(self, publisher: Publisher) -> str | None:
        """The deep verify, when ``verify_interval`` has passed since the last one."""
        now = self.clock()
        if not verify_due(publisher.root, now, self.config.verify_interval):
            return None
        try:
            with RegistryClient(self.config) as client:
                return scheduled_verify(
                    publisher,
                    now,
                    lambda ref, digest, size, dest: client.download_blob(ref, digest, size, dest),
                    Limits.from_config(self.config),
                    self.config.verify_batch,
                )
        except (WishbotError, OSError) as exc:
            log.warning("scheduled verify failed: %s", exc)
            return f"deep verify failed: {exc}"


def _published(cvmfs_repo: str, report: ApplyReport) -> tuple[str, ...]:
    """The /cvmfs paths a run added or updated."""
    return tuple(
        f"/cvmfs/{cvmfs_repo}/{result.path}"
        for result in report.results
        if result.ok and result.action in ("add", "update")
    )


def _not_published(
    names: Sequence[str], description: str, published: tuple[str, ...], files: dict[str, bytes]
) -> Publication:
    return Publication(
        ok=False,
        description=description,
        published=published,
        catalog=files,
        failure=f"{plural(len(names), 'image')} not published: " + "; ".join(names[:5]),
    )


def _publish_summary(plan: Plan, published: int, failed: int) -> str:
    parts = [f"{plural(published, 'image')} published"]
    if plan.images_scheduled:
        parts.append(f"{plural(plan.images_scheduled, 'image')} scheduled for removal")
    if failed:
        parts.append(f"{failed} failed")
    if not published and not failed and not plan.images_scheduled:
        return "nothing to publish: the publisher already serves the wishlist"
    return ", ".join(parts)


def make_pipeline(config: Config) -> Pipeline:
    return WishbotPipeline(config)
