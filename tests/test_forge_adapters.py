"""The three forge adapters against one contract: GitLab and GitHub through their
libraries over real HTTP to loopback fakes, local git on a real repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from forge_sites import CHANGED, WISHLIST, GitHubSite, GitLabSite, LocalSite, Site, git

from bot.core.dashboard import MARKER
from bot.errors import ForgeError
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.forge.local import LocalForge


@pytest.fixture(params=["gitlab", "github", "local"])
def site(request: Any, tmp_path: Path) -> Iterator[Site]:
    if request.param == "gitlab":
        gl = GitLabSite()
        yield gl
        gl.fake.stop()
    elif request.param == "github":
        gh = GitHubSite()
        yield gh
        gh.fake.stop()
    else:
        yield LocalSite(tmp_path / "repo")


def test_reads_files_at_refs(site: Site) -> None:
    base = site.head("main")
    head = site.branch("feature", {"wishlist.yaml": CHANGED, "docs/new.md": b"# new\n"})
    assert site.forge.read_file("wishlist.yaml", base) == WISHLIST
    assert site.forge.read_file("wishlist.yaml", head) == CHANGED
    assert site.forge.read_file("docs/new.md", head) == b"# new\n"
    assert site.forge.read_file("docs/new.md", base) is None
    assert site.forge.read_file("missing.yaml", head) is None


def test_merge_request_model(site: Site) -> None:
    base = site.head("main")
    head = site.branch("feature", {"wishlist.yaml": CHANGED})
    number = site.open("feature")
    mr = site.forge.merge_request(number)
    assert (mr.number, mr.head_sha, mr.base_sha) == (number, head, base)
    assert mr.target_branch == "main"
    assert mr.state == "open"
    assert not mr.from_fork and not mr.draft
    assert [m.number for m in site.forge.open_merge_requests()] == [number]
    assert site.forge.default_branch() == ("main", base)


def test_merge_base_is_not_the_target_head(site: Site) -> None:
    """After the target moves on, base_sha stays the fork point."""
    fork_point = site.head("main")
    site.branch("feature", {"wishlist.yaml": CHANGED})
    number = site.open("feature")
    site.branch("other", {"unrelated.txt": b"x"})
    site.merge(site.open("other"))
    mr = site.forge.merge_request(number)
    assert mr.base_sha == fork_point
    assert site.forge.default_branch()[1] != fork_point


def test_drafts_and_merged_state(site: Site) -> None:
    site.branch("wip", {"wishlist.yaml": CHANGED})
    draft = site.forge.merge_request(site.open("wip", draft=True))
    assert draft.draft
    site.branch("feature", {"wishlist.yaml": CHANGED})
    number = site.open("feature")
    merge_sha = site.merge(number)
    merged = site.forge.merge_request_for_commit(merge_sha)
    assert merged is not None
    assert merged.number == number and merged.state == "merged"
    assert site.forge.default_branch()[1] == merge_sha
    assert number not in [m.number for m in site.forge.open_merge_requests()]


def test_one_comment_per_marker_after_three_upserts(site: Site) -> None:
    site.branch("feature", {"wishlist.yaml": CHANGED})
    number = site.open("feature")
    mr = site.forge.merge_request(number)
    site.forge.add_comment(mr, "a human said something")
    for n in range(3):
        site.forge.upsert_comment(mr, "<!-- wishbot:plan -->", f"plan version {n}")
    site.forge.upsert_comment(mr, "<!-- wishbot:publish -->", "published")
    bodies = site.comment_bodies(number)
    plans = [b for b in bodies if "<!-- wishbot:plan -->" in b]
    assert len(plans) == 1 and "plan version 2" in plans[0]
    assert len(bodies) == 3
    assert bodies[0] == "a human said something"


def test_a_pasted_marker_does_not_capture_the_bot_comment(site: Site) -> None:
    site.branch("feature", {"wishlist.yaml": CHANGED})
    number = site.open("feature")
    mr = site.forge.merge_request(number)
    site.human_comment(number, "look: <!-- wishbot:plan --> fake plan")
    site.forge.upsert_comment(mr, "<!-- wishbot:plan -->", "real plan 1")
    site.forge.upsert_comment(mr, "<!-- wishbot:plan -->", "real plan 2")
    bodies = site.comment_bodies(number)
    assert bodies[0] == "look: <!-- wishbot:plan --> fake plan"
    assert len(bodies) == 2 and "real plan 2" in bodies[1]


def test_long_comments_are_cut_with_closed_blocks(site: Site) -> None:
    site.branch("feature", {"wishlist.yaml": CHANGED})
    mr = site.forge.merge_request(site.open("feature"))
    body = "<details><summary>all</summary>\n\n```\n" + "layer line\n" * 20_000
    site.forge.upsert_comment(mr, "<!-- wishbot:plan -->", body)
    (stored,) = site.comment_bodies(mr.number)
    assert len(stored) <= site.forge.limits.comment_chars
    assert stored.count("```") % 2 == 0
    assert stored.count("<details") == stored.count("</details>")
    assert "comment cut" in stored


def test_statuses_and_harmless_repeats(site: Site) -> None:
    head = site.branch("feature", {"wishlist.yaml": CHANGED})
    forge = site.forge
    forge.set_status(head, "wishbot/plan", "pending", "waiting", ref="feature")
    forge.set_status(head, "wishbot/plan", "running", "planning", ref="feature")
    forge.set_status(head, "wishbot/plan", "running", "planning again", ref="feature")
    forge.set_status(head, "wishbot/plan", "failure", "x" * 1000, ref="feature")
    expected = {"gitlab": "failed", "github": "failure", "local": "failure"}[forge.kind]
    assert site.status(head, "wishbot/plan") == expected
    forge.set_status(head, "wishbot/validate", "error", "broke")
    assert site.status(head, "wishbot/validate") in ("failed", "error")


def test_status_on_an_unknown_commit_is_a_forge_error(site: Site) -> None:
    with pytest.raises(ForgeError):
        site.forge.set_status("f" * 40, "wishbot/plan", "success", "done")


def test_commit_files_makes_one_commit_and_skips_unchanged(site: Site) -> None:
    before = site.head("main")
    files = {"catalog/CATALOG.md": b"# Catalog\n", "catalog/catalog.json": b"{}\n"}
    sha = site.forge.commit_files("main", files, "wishbot: update the catalog")
    assert sha != before and site.head("main") == sha
    assert site.forge.read_file("catalog/CATALOG.md", sha) == b"# Catalog\n"
    assert site.forge.read_file("wishlist.yaml", sha) == WISHLIST
    assert site.forge.commit_files("main", files, "again") == sha
    changed = site.forge.commit_files("main", {**files, "catalog/catalog.json": b"[]\n"}, "m")
    assert changed != sha
    assert site.forge.read_file("catalog/catalog.json", changed) == b"[]\n"
    assert site.forge.read_file("catalog/CATALOG.md", changed) == b"# Catalog\n"


def test_gitlab_fork_and_errors_do_not_leak_the_token() -> None:
    site = GitLabSite()
    try:
        site.branch("evil", {"wishlist.yaml": CHANGED})
        assert site.forge.merge_request(site.open("evil", fork=True)).from_fork
        wrong = GitLabForge(site.fake.url, site.fake.project, "glpat-wrong-token-value")
        with pytest.raises(ForgeError) as info:
            wrong.default_branch()
        assert "401" in str(info.value)
        assert "glpat-wrong-token-value" not in str(info.value) + repr(wrong)
        assert site.fake.token not in repr(site.forge)
        site.fake.fail_next.append(503)  # a transient error is retried
        assert site.forge.merge_request("1").number == "1"
        with pytest.raises(ForgeError, match="404"):
            site.forge.merge_request("99")
    finally:
        site.fake.stop()


def test_github_fork_and_errors_do_not_leak_the_token() -> None:
    site = GitHubSite()
    try:
        site.branch("evil", {"wishlist.yaml": CHANGED})
        assert site.forge.merge_request(site.open("evil", fork=True)).from_fork
        wrong = GitHubForge(
            site.fake.api_url, site.fake.full_name, "ghp_wrong_token_value", write_interval=None
        )
        with pytest.raises(ForgeError) as info:
            wrong.default_branch()
        assert "401" in str(info.value)
        assert "ghp_wrong_token_value" not in str(info.value) + repr(wrong)
        assert site.fake.token not in repr(site.forge)
    finally:
        site.fake.stop()


def test_local_report_and_notes_live_in_the_repository(tmp_path: Path) -> None:
    site = LocalSite(tmp_path / "repo")
    head = site.branch("feature", {"wishlist.yaml": CHANGED})
    mr = site.forge.merge_request("feature")
    site.forge.set_status(head, "wishbot/plan", "success", "1 image to add")
    site.forge.upsert_comment(mr, "<!-- wishbot:plan -->", "the plan")
    refs = git(site.path, "for-each-ref", "--format=%(refname)", "refs/notes/")
    assert "refs/notes/wishbot-statuses" in refs and "refs/notes/wishbot-comments" in refs
    text = site.forge.report(mr)
    assert "wishbot/plan: success — 1 image to add" in text and "the plan" in text
    # a fresh adapter on the same repository sees the same comments
    again = LocalForge(site.path, default="main")
    assert again.comments(mr) == site.forge.comments(mr)
    with pytest.raises(ForgeError, match="no merge request"):
        site.forge.merge_request("main")


def test_github_app_token_gets_one_comment_edited_in_place() -> None:
    """An App (or the Actions) token cannot read /user (403): the bot's account is
    the configured bot_login, never a guess; one comment, edited in place, and a
    comment by another account quoting the marker is left alone."""
    site = GitHubSite()
    try:
        site.fake.bot_login = None
        site.fake.token_login = "wishlist-app[bot]"
        forge = GitHubForge(
            site.fake.api_url,
            site.fake.full_name,
            site.fake.token,
            write_interval=None,
            bot_login="wishlist-app[bot]",
        )
        site.branch("feature", {"wishlist.yaml": CHANGED})
        number = site.open("feature")
        mr = forge.merge_request(number)
        site.fake.human_comment(int(number), "<!-- wishbot:plan --> pasted", "github-actions[bot]")
        for n in range(3):
            forge.upsert_comment(mr, "<!-- wishbot:plan -->", f"plan {n}")
        assert site.comment_bodies(number) == [
            "<!-- wishbot:plan --> pasted",
            "<!-- wishbot:plan -->\nplan 2",
        ]
    finally:
        site.fake.stop()


def test_github_unknown_bot_account_is_an_error_not_a_guess() -> None:
    site = GitHubSite()
    try:
        site.fake.bot_login = None
        site.branch("feature", {"wishlist.yaml": CHANGED})
        number = site.open("feature")
        mr = site.forge.merge_request(number)
        with pytest.raises(ForgeError, match="cannot tell which account") as info:
            site.forge.upsert_comment(mr, "<!-- wishbot:plan -->", "plan")
        assert "bot_login" in str(info.value.hint)
        assert site.comment_bodies(number) == []
    finally:
        site.fake.stop()


def test_local_updates_a_checked_out_branch_with_its_working_tree(tmp_path: Path) -> None:
    repo = tmp_path / "work"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "wishlist.yaml").write_bytes(WISHLIST)
    git(repo, "add", "wishlist.yaml")
    git(repo, "commit", "-q", "-m", "initial")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "wishlist.yaml").write_bytes(CHANGED)
    git(repo, "commit", "-q", "-am", "change")
    git(repo, "checkout", "-q", "main")
    forge = LocalForge(repo)
    assert forge.default_branch()[0] == "main"
    forge.merge("feature")
    forge.commit_files("main", {"CATALOG.md": b"# Catalog\n"}, "catalog")
    assert (repo / "wishlist.yaml").read_bytes() == CHANGED
    assert (repo / "CATALOG.md").read_bytes() == b"# Catalog\n"
    assert git(repo, "status", "--porcelain") == ""
    assert "[skip ci]" in git(repo, "log", "-1", "--format=%s")


def test_gitlab_statuses_join_the_ci_pipeline_of_their_commit() -> None:
    site = GitLabSite()
    try:
        head = site.branch("feature", {"wishlist.yaml": CHANGED})
        other = site.branch("other", {"wishlist.yaml": CHANGED + b"  - docker.io/library/x:1\n"})
        pipeline = site.fake.run_pipeline(head, "feature")
        forge = GitLabForge(
            site.fake.url, site.fake.project, site.fake.token, pipeline=(head, pipeline)
        )
        forge.set_status(head, "wishbot/plan", "running", "planning", ref="feature")
        forge.set_status(other, "wishbot/plan", "running", "planning", ref="other")
        assert [s["pipeline_id"] for s in site.fake.statuses[head]] == [pipeline]
        # another commit (e.g. a newer head published instead) is not tied to this
        # pipeline: GitLab makes an external pipeline for it
        (status,) = site.fake.statuses[other]
        assert status["pipeline_id"] != pipeline and status["ref"] == "other"
    finally:
        site.fake.stop()


# --- comment commands and the dashboard ------------------------------------------


def test_gitlab_permission_from_members_all() -> None:
    gl = GitLabSite()
    try:
        assert gl.forge.permission("dev", "9") == "write"
        assert gl.forge.permission("wishbot", "3") == "maintain"
        assert gl.forge.permission("mallory", "8") == "none"  # 404: not a member
        assert gl.forge.permission("dev") == "write"  # looked up by name
        assert gl.forge.permission("nobody") == "none"
        gl.fake.members[8] = 20  # Reporter
        assert gl.forge.permission("mallory", "8") == "read"
    finally:
        gl.fake.stop()


def test_github_permission_from_collaborators() -> None:
    gh = GitHubSite()
    try:
        assert gh.forge.permission("dev") == "write"
        gh.fake.collaborators["lead"] = "maintain"
        assert gh.forge.permission("lead") == "maintain"  # role_name tells it from write
        gh.fake.collaborators["triager"] = "triage"
        assert gh.forge.permission("triager") == "triage"
        assert gh.forge.permission("mallory") == "read"  # anyone reads a public repository
        assert gh.forge.permission("ghost-x") == "none"  # 404: no such user
    finally:
        gh.fake.stop()


def test_reactions_and_repeats_are_harmless(site: Site) -> None:
    site.branch("feature", {"wishlist.yaml": CHANGED})
    number = site.open("feature")
    mr = site.forge.merge_request(number)
    site.human_comment(number, "/wishbot plan")
    comment = site.forge.comments(mr)[-1]
    site.forge.react(mr, comment.id, "+1")
    site.forge.react(mr, comment.id, "+1")  # GitLab 404 "already been taken", GitHub 200
    site.forge.react(mr, comment.id, "eyes")
    if isinstance(site, GitLabSite):
        assert site.fake.mrs[int(number)].notes[-1]["award_emoji"] == ["thumbsup", "eyes"]
        assert comment.author_id == str(site.fake.users["mallory"])
    elif isinstance(site, GitHubSite):
        assert site.fake.pulls[int(number)].comments[-1]["reactions"] == ["+1", "eyes"]
    else:
        assert isinstance(site, LocalSite)
        assert site.forge.reactions(mr, comment.id) == ["+1", "eyes"]


def test_one_dashboard_issue_found_by_marker_and_edited_in_place(site: Site) -> None:
    site.branch("feature", {"wishlist.yaml": CHANGED})
    site.open("feature")  # a pull request is no issue (GitHub lists both)
    first = site.forge.upsert_issue(MARKER, "wishbot dashboard", f"{MARKER}\none")
    second = site.forge.upsert_issue(MARKER, "wishbot dashboard", f"{MARKER}\ntwo")
    assert first == second
    bot = site.forge.bot_user() or ""
    issues = site.forge.open_issues(bot)
    assert [(i.number, i.body) for i in issues] == [(first, f"{MARKER}\ntwo")]


def test_dashboard_is_cut_to_the_issue_limit() -> None:
    gh = GitHubSite()
    try:
        number = gh.forge.upsert_issue(MARKER, "wishbot dashboard", MARKER + "\n" + "x\n" * 40_000)
        body = gh.fake.issues[int(number)]["body"]
        assert len(body) <= 65_536 and body.startswith(MARKER)
    finally:
        gh.fake.stop()


def test_an_issue_written_by_someone_else_is_never_the_dashboard() -> None:
    gh = GitHubSite()
    try:
        gh.fake.issues[1] = {"number": 1, "title": "x", "body": f"{MARKER}\nfake",
                             "state": "open", "author": "mallory"}  # fmt: skip
        number = gh.forge.upsert_issue(MARKER, "wishbot dashboard", f"{MARKER}\nreal")
        assert number != "1" and gh.fake.issues[1]["body"] == f"{MARKER}\nfake"
    finally:
        gh.fake.stop()
