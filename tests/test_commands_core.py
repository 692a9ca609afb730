"""The comment commands' and the dashboard's rules (pure: bot/core/commands, bot/core/dashboard)."""

from __future__ import annotations

import pytest

from bot.core import commands as c
from bot.core import dashboard as d


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/wishbot plan", c.Command("plan")),
        ("  /WishBot   PLAN  \nplease", c.Command("plan")),
        ("\n\n/wishbot retry", c.Command("retry")),
        ("/wishbot\thelp", c.Command("help")),
        ("/wishbot", c.Command("help")),
        ("/wishbot apply", c.Command("help", unknown="apply")),
        ("please /wishbot plan", None),
        ("thanks!\n/wishbot plan", None),
        ("/wishbotplan", None),
        ("", None),
        ("> /wishbot plan", None),
    ],
)
def test_parse_command(body: str, expected: c.Command | None) -> None:
    assert c.parse_command(body) == expected


def test_only_the_first_line_is_read_and_bounded() -> None:
    assert c.parse_command("/wishbot " + "x" * 10_000) == c.Command("help", unknown="x" * 191)


def _event(**kw: object) -> c.CommentEvent:
    base: dict[str, object] = dict(
        forge="gitlab", repository="g/w", number="1", comment_id="9", author="ann",
        author_id="5", body="/wishbot plan",
    )  # fmt: skip
    base.update(kw)
    return c.CommentEvent(**base)  # type: ignore[arg-type]


def test_screen_never_runs_the_bots_own_edited_or_repeated_comments() -> None:
    assert c.screen(_event(), "wishbot", seen=False) == (c.Command("plan"), "")
    assert c.screen(_event(author="WishBot"), "wishbot", seen=False)[0] is None
    assert c.screen(_event(created=False), "wishbot", seen=False)[0] is None
    assert c.screen(_event(), "wishbot", seen=True)[0] is None
    assert c.screen(_event(body="lgtm"), "wishbot", seen=False)[0] is None


@pytest.mark.parametrize(
    ("have", "need", "verdict"),
    [
        ("write", "write", "run"),
        ("admin", "maintain", "run"),
        ("triage", "write", "refuse"),
        ("read", "write", "refuse"),
        ("none", "write", "refuse"),
        ("write", "maintain", "refuse"),
    ],
)
def test_decide(have: c.Permission, need: c.Permission, verdict: str) -> None:
    assert c.decide(c.Command("plan"), have, need).verdict == verdict
    # help is answered whoever asks
    assert c.decide(c.Command("help"), have, need).verdict == "help"


def test_permission_ladders_of_both_forges() -> None:
    # https://docs.gitlab.com/api/members/#roles
    assert [c.gitlab_permission(n) for n in (0, 5, 10, 20, 30, 40, 50)] == [
        "none", "none", "read", "read", "write", "maintain", "admin",
    ]  # fmt: skip
    # https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user
    assert c.github_permission("write", "maintain") == "maintain"
    assert c.github_permission("read", "triage") == "triage"
    assert c.github_permission("admin", "custom-role") == "admin"
    assert c.github_permission("bogus") == "none"
    assert c.required_permission("Developer") == "write"
    assert c.required_permission("maintainer") == "maintain"
    with pytest.raises(ValueError, match="command_permission"):
        c.required_permission("read")


def test_replies_are_escaped_and_short() -> None:
    refusal = c.refusal_text(c.Command("retry"), "@everyone <b>", "write")
    assert "`@everyone <b>`" in refusal  # a code span: no mention, no HTML
    assert refusal.count("\n") == 0 and len(refusal) < 200
    text = c.help_text("write", unknown="<script>")
    assert "`<script>`" in text and "/wishbot plan" in text


def _state() -> d.DashboardState:
    return d.DashboardState(
        failing=(
            d.FailingWish("docker.io/a/b:1", "registry answered 503", "2026-11-30"),
            d.FailingWish("x|y: z", "<img src=x>", "2026-11-29"),
        ),
        retiring=(d.RetiringImage("/cvmfs/unpacked/a/b:0", "2026-12-30"),),
        last_publication=d.Publication("a" * 40, "failed: disk full", "2026-11-30T10:00Z"),
        queue=("publish abc", "review !3"),
    )


def test_dashboard_body_starts_with_the_marker_and_escapes() -> None:
    body = d.render(_state(), d.GITHUB_BODY_CHARS)
    assert body.startswith(d.MARKER)
    assert "<img" not in body and "&lt;img" in body
    assert "- [ ] retry `docker.io/a/b:1`" in body
    assert "- [ ] re-plan everything" in body
    assert "2026-12-30" in body and "failed: disk full" in body and "review \\!" in body


def test_dashboard_body_fits_the_limit() -> None:
    many = tuple(d.FailingWish(f"reg/img{i}:1", "why " * 50, "2026-11-30") for i in range(5000))
    body = d.render(d.DashboardState(failing=many), d.GITHUB_BODY_CHARS)
    assert len(body) <= d.GITHUB_BODY_CHARS
    assert "left out" in body


def test_ticked_boxes_become_actions_only_when_they_changed_and_are_known() -> None:
    before = d.render(_state(), d.GITHUB_BODY_CHARS)
    after = (
        before.replace("- [ ] retry `docker.io", "- [x] retry `docker.io")
        .replace("- [ ] retry `x", "- [X] retry `x")
        .replace("- [ ] re-plan", "- [x] re-plan")
        + "\n- [x] retry `evil/added:1`\n"
    )
    assert d.ticked(before, after) == [
        d.DashboardAction("replan"),
        d.DashboardAction("retry", "docker.io/a/b:1"),
        d.DashboardAction("retry", "x|y: z"),
    ]
    # already ticked before: nothing new
    assert d.ticked(after, after) == []
    # unticking is not an action
    assert d.ticked(after, before) == []
    # not the dashboard
    assert d.ticked(before.replace(d.MARKER, ""), after) == []


def test_failing_wishes_from_a_publication_keep_their_first_date() -> None:
    text = "2 images not published: /cvmfs/x/a:1: registry 503; /cvmfs/x/b:2: timeout"
    first = d.failing_from(text, "2026-11-30")
    assert [(w.wish, w.why, w.since) for w in first] == [
        ("/cvmfs/x/a:1", "registry 503", "2026-11-30"),
        ("/cvmfs/x/b:2", "timeout", "2026-11-30"),
    ]
    before = d.render(d.DashboardState(failing=first), d.GITLAB_DESCRIPTION_CHARS)
    later = d.failing_from("1 image not published: /cvmfs/x/b:2: timeout", "2026-12-02", before)
    assert later == (d.FailingWish("/cvmfs/x/b:2", "timeout", "2026-11-30"),)
    assert d.failing_from("the wishlist is invalid", "now") == (
        d.FailingWish("the whole wishlist", "the wishlist is invalid", "now"),
    )


def test_images_waiting_for_removal_from_the_catalog() -> None:
    catalog = {
        "schedule": [
            {"kind": "image", "path": "/cvmfs/x/a:0", "deletion": "2026-12-30T00:00:00Z"},
            {"kind": "layer", "id": "sha256:1", "deletion": "2026-12-30T00:00:00Z"},
        ]
    }
    assert d.retiring_from(catalog) == (d.RetiringImage("/cvmfs/x/a:0", "2026-12-30"),)
    assert d.retiring_from(None) == () and d.retiring_from({"schedule": "x"}) == ()


def test_hostile_bodies_are_read_in_bounded_time() -> None:
    import time

    before = d.render(_state(), d.GITLAB_DESCRIPTION_CHARS)
    hostile = "- [x] retry " + "`" * 100_000 + "a" + "`" * 99_999 + "\n"
    started = time.monotonic()
    assert d.ticked(before, before + hostile * 5) == []
    assert d.previous_since(hostile * 5) == {}
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("value", ["read", "triage", "root", ""])
def test_a_command_permission_below_write_is_refused(value: str) -> None:
    from bot.config import Config
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match="WISHBOT_COMMAND_PERMISSION"):
        Config.load({"WISHBOT_COMMAND_PERMISSION": value})
    assert Config.load({"WISHBOT_COMMAND_PERMISSION": "Maintainer"}).command_permission
