"""The bot's workflow: review merge requests, publish merged wishlists.

Forge-neutral: it reads the wishlist through a :class:`~bot.forge.base.Forge`
and hands the real work to a :class:`~bot.runtime.pipeline_api.Pipeline`.
Every status it sets ends in a final state, even when the pipeline raises:
statuses go to the run journal first, and :func:`recover` fails those a
crashed bot left behind.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from bot.config import Config
from bot.core.catalog import CATALOG_JSON, CATALOG_MD
from bot.core.comment import (
    CommentLinks,
    error_comment,
    missing_wishlist_comment,
    publish_comment,
    render_markdown,
    safe_url,
)
from bot.core.text import cut, escape_markdown
from bot.errors import ForgeError, LockedError, WishbotError
from bot.forge.base import (
    FINAL_STATES,
    BranchRefused,
    Forge,
    MergeRequest,
    StatusState,
)
from bot.forge.kinds import spec_of, specs
from bot.runtime import wish_requests
from bot.runtime.journal import Journal
from bot.runtime.pipeline_api import PLAN_MARKER, PUBLISH_MARKER, Pipeline, Publication

log = logging.getLogger(__name__)

VALIDATE = "wishbot/validate"
PLAN = "wishbot/plan"
PUBLISH = "wishbot/publish"


@dataclass(frozen=True)
class Outcome:
    """What a workflow step did: ``action`` is skipped, reviewed, published, maintained or failed.

    ``retry`` says the step failed for a reason that may go away (the queue
    runs it again later).
    """

    action: str
    detail: str
    sha: str = ""
    retry: bool = False
    catalog_commit: str = ""  # the catalog commit on_push made, if any
    ok: bool = True  # False when a status ended in failure or error


class StatusSet:
    """The statuses one run sets on one commit; :meth:`close` fails any left open."""

    def __init__(
        self, forge: Forge, journal: Journal, sha: str, ref: str | None, target_url: str = ""
    ):
        self._forge = forge
        self._journal = journal
        self._sha = sha
        self._ref = ref
        self._open: set[str] = set()
        self._target_url = safe_url(target_url) or None  # where the forge's "Details" leads

    def set(self, context: str, state: StatusState, description: str) -> None:
        """Send one status. An open state is journalled *before* it is sent, a final
        one only *after*, so the journal never forgets a status the forge may show
        as pending or running."""
        description = cut(description, 255)
        repository, ref = self._forge.repository, self._ref or ""
        if state in FINAL_STATES:
            self._send(context, state, description)
            self._journal.record(repository, self._sha, context, state, description, ref)
            self._open.discard(context)
        else:
            self._journal.record(repository, self._sha, context, state, description, ref)
            self._open.add(context)
            self._send(context, state, description)

    def _send(self, context: str, state: StatusState, description: str) -> None:
        if self._target_url:
            self._forge.set_status(
                self._sha, context, state, description, ref=self._ref, target_url=self._target_url
            )
        else:
            self._forge.set_status(self._sha, context, state, description, ref=self._ref)

    def keep_open(self, context: str) -> None:
        """Leave ``context`` pending on purpose (the work waits in the queue): not closed."""
        self._open.discard(context)

    def close(self, description: str) -> None:
        """Turn every status still pending or running into ``error``."""
        for context in sorted(self._open):
            try:
                self.set(context, "error", description)
            except WishbotError as exc:
                log.warning("could not fail status %s on %s: %s", context, self._sha[:12], exc)


def _failure_text(exc: BaseException) -> str:
    if isinstance(exc, WishbotError):
        return str(exc)
    return f"internal error ({type(exc).__name__}): {exc}"


def _error_comment(marker: str, what: str, exc: BaseException, retried: bool) -> str:
    return error_comment(marker, what, _failure_text(exc), retried)


def catalog_path(config: Config, name: str) -> str:
    """Where a catalog file lives in the wishlist repository."""
    return posixpath.join(config.catalog_dir, name) if config.catalog_dir else name


def repository_url(forge: Forge, mr: MergeRequest | None) -> str:
    """The repository's web page, from a merge request's web URL ("" when unknown)."""
    if mr is None:
        return ""
    for tail in (tail for spec in specs() for tail in spec.request_paths):
        base, found, _number = mr.web_url.rpartition(tail)
        if found and base.startswith(("https://", "http://")):
            return base
    return ""


def comment_links(
    forge: Forge, config: Config, mr: MergeRequest | None, commit: str, job_url: str
) -> CommentLinks:
    """Links for a comment: the job, the catalog (setting, else CATALOG.md on the forge), docs."""
    catalog = config.catalog_url
    base = repository_url(forge, mr)
    spec = spec_of(forge.kind)
    if not catalog and base and spec is not None:
        branch = config.catalog_branch or (mr.target_branch if mr else "")
        path = catalog_path(config, CATALOG_MD)
        catalog = f"{base}{spec.blob_path}{branch}/{path}" if branch else ""
    return CommentLinks(
        commit=commit, job_url=job_url, catalog_url=catalog, docs_url=config.docs_url
    )


def on_merge_request(
    forge: Forge,
    pipeline: Pipeline,
    mr: MergeRequest,
    config: Config,
    journal: Journal | None = None,
    *,
    job_url: str = "",
) -> Outcome:
    """Review one merge request: statuses, the one plan comment, final statuses.

    ``job_url`` (the CI job, when there is one) is where the statuses' "Details"
    lead and what the comment links to; without it "Details" opens the request."""
    if mr.state != "open":
        return Outcome("skipped", f"merge request {mr.number} is {mr.state}", mr.head_sha)
    if mr.draft and not config.plan_drafts:
        return Outcome("skipped", f"merge request {mr.number} is a draft", mr.head_sha)
    # a fork's branch name means nothing in the target project: give no ref then
    ref = None if mr.from_fork else mr.source_branch
    statuses = StatusSet(forge, journal or Journal(), mr.head_sha, ref, job_url or mr.web_url)
    links = comment_links(forge, config, mr, mr.head_sha, job_url)
    try:
        return _review(forge, pipeline, mr, config, statuses, links)
    except ForgeError as exc:
        statuses.close(cut(f"forge error: {exc}", 120))
        raise
    except Exception as exc:
        return _review_failed(forge, mr, statuses, exc)
    finally:
        statuses.close("wishbot stopped before finishing; push again to re-run")


def _review(
    forge: Forge,
    pipeline: Pipeline,
    mr: MergeRequest,
    config: Config,
    statuses: StatusSet,
    links: CommentLinks,
) -> Outcome:
    """Validate and plan: the statuses, then the comment, then the final statuses."""
    path = config.wishlist_path
    statuses.set(VALIDATE, "pending", f"validating {path}")
    statuses.set(PLAN, "pending", "waiting for validation")
    head = forge.read_file(path, mr.head_sha)
    if head is None:
        forge.upsert_comment(mr, PLAN_MARKER, missing_wishlist_comment(path, links))
        statuses.set(VALIDATE, "failure", f"{path} is missing")
        statuses.set(PLAN, "failure", "nothing to plan")
        return Outcome("reviewed", f"{path} is missing", mr.head_sha, ok=False)
    base = forge.read_file(path, mr.base_sha) if mr.base_sha else None
    catalog = forge.read_file(
        catalog_path(config, CATALOG_JSON),
        config.catalog_branch or mr.base_sha or mr.head_sha,
    )
    review = pipeline.review(base, head, path, trusted=not mr.from_fork, catalog=catalog)
    comment = review.comment
    if review.plan is not None:
        comment = render_markdown(review.plan, title=review.title, links=links)
    forge.upsert_comment(mr, PLAN_MARKER, comment)
    statuses.set(VALIDATE, "success" if review.valid else "failure", review.validate_description)
    statuses.set(PLAN, "success" if review.planned else "failure", review.plan_description)
    ok = review.valid and review.planned
    # a failed review says why (file and line) where CI shows it: the job's log
    detail = review.plan_description
    if not review.valid:
        detail = f"{review.validate_description}; {detail}"
    return Outcome("reviewed", detail, mr.head_sha, ok=ok)


def _review_failed(forge: Forge, mr: MergeRequest, statuses: StatusSet, exc: Exception) -> Outcome:
    """A review that broke: say so in the comment and the statuses."""
    log.warning("review of %s failed: %s", mr.number, _failure_text(exc), exc_info=True)
    try:
        forge.upsert_comment(
            mr, PLAN_MARKER, _error_comment(PLAN_MARKER, "review this change", exc, False)
        )
    except WishbotError as comment_exc:
        log.warning("could not comment on %s: %s", mr.number, comment_exc)
    statuses.close(cut(f"failed: {_failure_text(exc)}", 120))
    return Outcome("failed", _failure_text(exc), mr.head_sha, ok=False)


@dataclass(frozen=True)
class _Push:
    """One publication run: the pushed commit, the default branch and its head."""

    forge: Forge
    config: Config
    journal: Journal
    sha: str
    default: str
    head: str
    retried: bool
    job_url: str


def on_push(
    forge: Forge,
    pipeline: Pipeline,
    branch: str,
    sha: str,
    config: Config,
    journal: Journal | None = None,
    *,
    retried: bool = False,
    job_url: str = "",
) -> Outcome:
    """Publish after a push: only the default branch, only its current head.

    A push of ``sha`` that is no longer the head publishes the head instead
    (it is merged too, and newer); other branches publish nothing.
    ``retried`` says the caller will run this again on failure.
    """
    default, head = forge.default_branch()
    if branch != default:
        return Outcome("skipped", f"{branch} is not the default branch {default}", sha)
    run = _Push(forge, config, journal or Journal(), sha, default, head, retried, job_url)
    statuses = StatusSet(forge, run.journal, head, default, job_url or config.catalog_url)
    try:
        return _publish_head(run, pipeline, statuses)
    except ForgeError as exc:
        statuses.close(cut(f"forge error: {exc}", 120))
        raise
    except Exception as exc:
        statuses.close(cut(f"failed: {_failure_text(exc)}", 120))
        return Outcome("failed", _failure_text(exc), head, retry=True, ok=False)
    finally:
        statuses.close("wishbot stopped before finishing; it will retry")


def _publish_head(run: _Push, pipeline: Pipeline, statuses: StatusSet) -> Outcome:
    """Publish the head's wishlist, commit the catalog, set the statuses and notes."""
    path, head, default = run.config.wishlist_path, run.head, run.default
    statuses.set(PUBLISH, "running", f"publishing {path}")
    wishlist = run.forge.read_file(path, head)
    if wishlist is None:
        statuses.set(PUBLISH, "failure", f"{path} does not exist on {default}")
        return Outcome("failed", f"{path} does not exist on {default}", head, ok=False)
    try:
        publication = guarded_publication(
            lambda: pipeline.publish(wishlist, path, head),
            head,
            what="publishing",
            failed="publishing failed",
            waits=True,
        )
    except LockedError as exc:
        # another run holds the publisher: this one waits its turn, it has not failed
        statuses.set(PUBLISH, "pending", queued_behind(exc))
        statuses.keep_open(PUBLISH)
        return Outcome("waiting", queued_behind(exc), head, retry=True)
    catalog_commit, catalog_problem = commit_catalog_or_say_why(
        run.forge, run.config, default, head, publication
    )
    state, text = _publish_status(publication, catalog_problem)
    statuses.set(PUBLISH, state, text)
    commits = [head]
    if _pushed_commit_too(run.forge, path, run.sha, head, wishlist, publication, catalog_commit):
        target = run.job_url or run.config.catalog_url
        StatusSet(run.forge, run.journal, run.sha, default, target).set(PUBLISH, state, text)
        commits.append(run.sha)
    _note_requests(run, commits, publication, catalog_problem)
    return _push_outcome(head, publication, catalog_commit, catalog_problem)


def _publish_status(
    publication: Publication, catalog_problem: CatalogProblem | None
) -> tuple[StatusState, str]:
    """The ``wishbot/publish`` status of a publication and its catalog commit."""
    if not publication.ok:
        return "failure", publication.failure or publication.description
    if catalog_problem:
        return "failure", catalog_problem.status
    return "success", publication.description


def _push_outcome(
    head: str, publication: Publication, catalog_commit: str, problem: CatalogProblem | None
) -> Outcome:
    if publication.ok and problem:
        return Outcome("published", problem.detail, head, False, "", ok=False)
    if publication.ok:
        return Outcome("published", publication.description, head, False, catalog_commit)
    failure = publication.failure or publication.description
    return Outcome("failed", failure, head, True, catalog_commit, ok=False)


def guarded_publication(
    publish: Callable[[], Publication], head: str, *, what: str, failed: str, waits: bool = False
) -> Publication:
    """``publish()``'s publication; any failure but the forge's (which the caller
    retries) is a failed publication described as ``failed``, logged as ``what``.
    With ``waits``, a publisher held by another run (:class:`LockedError`) is
    raised too: the caller shows it as waiting, not failed."""
    try:
        return publish()
    except ForgeError:
        raise
    except LockedError:
        if waits:
            raise
        return Publication(ok=False, description=failed, failure="the publisher is busy")
    except Exception as exc:
        log.warning("%s %s failed: %s", what, head[:12], _failure_text(exc), exc_info=True)
        return Publication(ok=False, description=failed, failure=_failure_text(exc))


def _note_requests(
    run: _Push,
    commits: list[str],
    publication: Publication,
    catalog_problem: CatalogProblem | None,
) -> None:
    """The publish note on the merge request of each commit (once per request)."""
    noted: set[str] = set()
    for commit in commits:
        mr = run.forge.merge_request_for_commit(commit)
        if mr is None or mr.number in noted:
            continue
        noted.add(mr.number)
        wish_requests.remember(run.config, mr, publication)
        links = comment_links(run.forge, run.config, mr, run.head, run.job_url)
        comment = publish_comment(
            run.head,
            ok=publication.ok,
            description=publication.description,
            published=publication.published,
            failure=publication.failure,
            retried=run.retried,
            links=links,
        )
        if catalog_problem:
            comment += f"\n{escape_markdown(catalog_problem.detail)}\n"
        run.forge.upsert_comment(mr, PUBLISH_MARKER, comment)


def queued_behind(exc: LockedError) -> str:
    """The ``pending`` status of a publication waiting for the publisher's lock."""
    holder = str(exc).rsplit("(", 1)[-1].rstrip(")") if "(" in str(exc) else "another run"
    return f"queued behind another publication ({holder}); retried when it finishes"


def _pushed_commit_too(
    forge: Forge,
    path: str,
    sha: str,
    head: str,
    wishlist: bytes,
    publication: Publication,
    catalog_commit: str,
) -> bool:
    """Whether the pushed ``sha`` (not the head) gets this run's status and note too.

    It does when it asks for exactly the published wishlist and this run failed
    or changed the catalog: a re-run after a failed publish, whose catalog
    commit moved the head past the pushed commit, then clears that commit's
    failure. A push whose change a newer head already published keeps what
    that run gave it.
    """
    if not sha or sha == head:
        return False
    if publication.ok and catalog_commit in ("", head):
        return False
    return forge.read_file(path, sha) == wishlist


@dataclass(frozen=True)
class CatalogProblem:
    """The catalog could not be committed: ``status`` is short (a commit status),
    ``detail`` says why and what to do."""

    status: str
    detail: str


def commit_catalog_or_say_why(
    forge: Forge, config: Config, default: str, head: str, publication: Publication
) -> tuple[str, CatalogProblem | None]:
    """:func:`commit_catalog`, but a refused commit (a protected branch: GitLab 403,
    GitHub 422) is reported, not raised: the images *are* published, and trying
    again changes nothing until someone acts. Other forge errors propagate (retry)."""
    try:
        return commit_catalog(forge, config, default, head, publication), None
    except BranchRefused as exc:
        branch = config.catalog_branch or default
        log.warning("catalog not committed to %s: %s", branch, exc)
        return "", CatalogProblem(
            status=f"images published, catalog not committed: {branch} refused the commit; "
            "see the job log",
            detail=f"The images are published, but the catalog was not committed to {branch}: "
            f"{exc}. Let the bot commit to a branch of its own (catalog_branch = "
            '"wishbot-catalog", see docs/operating.md) or allow it to push to '
            f"{branch}; the next publication commits the catalog.",
        )


def commit_catalog(
    forge: Forge, config: Config, default: str, head: str, publication: Publication
) -> str:
    """Commit the publication's catalog files back: the new head, the unchanged head
    when no file changed, "" when the publication has no catalog."""
    if not publication.catalog:
        return ""
    files = {catalog_path(config, name): data for name, data in publication.catalog.items()}
    return forge.commit_files(
        config.catalog_branch or default,
        files,
        f"wishbot: update the catalog for {head[:12]} [skip ci]",
    )


def on_schedule(
    forge: Forge, pipeline: Pipeline, config: Config, journal: Journal | None = None
) -> Outcome:
    """Periodic maintenance: gc, then re-publish the default branch (tags move upstream).

    gc goes first so the catalog committed afterwards no longer lists what it deleted.

    Quiet by design: nothing changed means no transaction, no commit, no
    status and no comment. A catalog that changed is committed; a failed
    re-publication sets a failed ``wishbot/publish`` status on the head, so
    it shows where people look.
    """
    collected = pipeline.collect()
    default, head = forge.default_branch()
    wishlist = forge.read_file(config.wishlist_path, head)
    if wishlist is None:
        return Outcome("skipped", f"{config.wishlist_path} does not exist on {default}", head)
    publication = guarded_publication(
        lambda: pipeline.publish(wishlist, config.wishlist_path, head),
        head,
        what="periodic publish of",
        failed="periodic re-publication failed",
    )
    catalog_commit, catalog_problem = commit_catalog_or_say_why(
        forge, config, default, head, publication
    )
    if not publication.ok or catalog_problem:
        why = publication.failure or publication.description
        statuses = StatusSet(forge, journal or Journal(), head, default)
        statuses.set(
            PUBLISH,
            "failure",
            f"periodic re-publication: {catalog_problem.status if catalog_problem else why}",
        )
    detail = f"{collected}; {publication.description}"
    if catalog_problem:
        return Outcome("maintained", f"{detail}; {catalog_problem.detail}", head, ok=False)
    if publication.ok:
        return Outcome("maintained", detail, head, False, catalog_commit)
    return Outcome("failed", detail, head, True, catalog_commit, ok=False)


def recover(forge: Forge, journal: Journal) -> int:
    """Fail the statuses a previous run left pending or running; returns how many."""
    count = 0
    for record in journal.unfinished(forge.repository):
        description = "wishbot restarted while this was running; push again to re-run"
        journal.record(
            record.repository, record.sha, record.context, "error", description, record.ref
        )
        try:
            forge.set_status(
                record.sha, record.context, "error", description, ref=record.ref or None
            )
        except WishbotError as exc:
            journal.record(
                record.repository,
                record.sha,
                record.context,
                record.state,
                record.description,
                record.ref,
            )
            log.warning("could not fail %s on %s: %s", record.context, record.sha[:12], exc)
            continue
        count += 1
    return count
