"""The gateway backend's pure parts: which lease a scope takes, what counts as a
write outside it, a variant symlink as a CernVM-FS client reads it, and when
a transaction is asked for again (with ``cvmfs_server`` replaced)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core import layout
from bot.errors import UsageError
from bot.publisher import gateway
from bot.publisher.backend import Scope
from bot.publisher.gateway import (
    EXIT_LEASE_BUSY,
    STALE_AT_ONCE,
    GatewayPublisher,
    lease_of,
    stray_writes,
)


@pytest.mark.parametrize(
    ("paths", "published", "lease"),
    [
        (None, set(), ""),  # the whole repository
        ((".flat/ab/abc",), {".flat", ".flat/ab"}, ".flat/ab/abc"),
        ((".flat/ab/abc",), {".flat"}, ".flat/ab"),  # the partition is missing
        ((".flat/ab/abc",), set(), ".flat"),
        (("r.io/a/b:1", "r.io/a/c:1"), {"r.io", "r.io/a"}, "r.io/a"),  # the common ancestor
        (("r.io/a/b:1", "s.io/x"), {"r.io", "s.io"}, ""),
        (("a/one", "ab/two"), {"a", "ab"}, ""),  # components, not characters
    ],
)
def test_a_lease_is_the_common_ancestor_from_its_first_missing_directory(
    paths: tuple[str, ...] | None, published: set[str], lease: str
) -> None:
    assert lease_of(Scope(paths), lambda rel: rel in published) == lease


def test_writes_outside_the_lease_are_found_in_the_upper_directory(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    (scratch / ".flat/ab/abc/usr").mkdir(parents=True)
    (scratch / ".flat/ab/abc/usr/file").write_text("inside")
    assert stray_writes(scratch, ".flat/ab/abc") == []
    (scratch / ".flat/ab/other").write_text("beside")
    (scratch / "outside").mkdir()
    assert stray_writes(scratch, ".flat/ab/abc") == [".flat/ab/other", "outside"]
    assert stray_writes(scratch, "") == []  # the whole repository: nothing is outside
    assert stray_writes(tmp_path / "none", ".flat") == []


def test_a_variant_symlink_read_expanded_still_marks_a_multi_platform_path() -> None:
    path = "r.io/a/b:1"
    written = layout.relative_link(path, f"{layout.MULTIARCH}/{layout.ARCH_VARIABLE}/{path}")
    expanded = layout.relative_link(path, f"{layout.MULTIARCH}/x86_64/{path}")
    assert layout.serves_variant(path, written)
    assert layout.serves_variant(path, expanded)
    assert not layout.serves_variant(path, layout.flat_link(path, "sha256:" + "a" * 64))
    other = layout.relative_link(path, f"{layout.MULTIARCH}/x86_64/r.io/a/c:1")
    assert not layout.serves_variant(path, other)


class Answers:
    """``cvmfs_server transaction`` answering from a script: each answer an exit
    code, and whether the transaction it opened starts from the newest revision."""

    def __init__(self, script: list[tuple[int, bool]]) -> None:
        self.script = list(script)
        self.calls: list[str] = []
        self.fresh = True

    def call(self, *args: str, feed: object = None) -> tuple[int, str]:
        self.calls.append(" ".join(args))
        if args[0] == "abort":
            return 0, ""
        code, self.fresh = self.script.pop(0)
        return code, "CernVM-FS transaction error: lease path busy" if code else ""


@pytest.fixture
def answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[GatewayPublisher, Answers, list[float]]:
    monkeypatch.setenv("WISHBOT_LOCK_DIR", str(tmp_path))
    publisher = GatewayPublisher("gw.example.org", cvmfs_root=tmp_path / "cvmfs")
    answers = Answers([])
    pauses: list[float] = []
    monkeypatch.setattr(publisher, "_call", answers.call)
    monkeypatch.setattr(publisher, "_fresh", lambda: answers.fresh)
    monkeypatch.setattr(gateway.time, "sleep", pauses.append)
    return publisher, answers, pauses


def test_a_stale_start_is_aborted_and_asked_for_again_at_once(
    answered: tuple[GatewayPublisher, Answers, list[float]],
) -> None:
    publisher, answers, pauses = answered
    answers.script = [(0, False), (0, False), (0, True)]
    assert publisher._begin((), ".flat/ab/abc") == (0, "")
    opened = [c for c in answers.calls if c.startswith("transaction")]
    assert len(opened) == 3 and answers.calls.count("abort -f gw.example.org") == 2
    assert pauses == []  # the newer revision is out: no reason to wait


def test_a_busy_lease_is_waited_for_and_a_stale_start_only_so_often_at_once(
    answered: tuple[GatewayPublisher, Answers, list[float]],
) -> None:
    publisher, answers, pauses = answered
    answers.script = [(EXIT_LEASE_BUSY, True), (EXIT_LEASE_BUSY, True)]
    answers.script += [(0, False)] * (STALE_AT_ONCE + 1) + [(0, True)]
    assert publisher._begin((), ".flat/ab/abc") == (0, "")
    assert len(pauses) == 3  # two busy answers, then one stale start too many


def test_a_lease_busy_past_the_wait_is_given_up(
    answered: tuple[GatewayPublisher, Answers, list[float]],
) -> None:
    publisher, answers, pauses = answered
    publisher.wait = 0.0
    answers.script = [(EXIT_LEASE_BUSY, True)]
    assert publisher._begin((), ".flat/ab/abc")[0] == EXIT_LEASE_BUSY
    assert pauses == []


@pytest.mark.parametrize(
    ("setting", "hosts", "leased"),
    [
        ("", 1, False),  # alone: whole-repository transactions, as a release manager
        ("", 3, True),  # one of three hosts: leases on paths
        ("auto", 2, True),
        ("paths", 1, True),
        ("repository", 4, False),
    ],
)
def test_leases_on_paths_only_while_several_hosts_publish(
    setting: str, hosts: int, leased: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WISHBOT_GATEWAY_LEASES", setting)
    publisher = GatewayPublisher("gw.example.org", cvmfs_root=tmp_path)
    assert publisher.leased is (setting != "repository")  # before it is told
    publisher.share_with(hosts)
    assert (publisher.leased, publisher.hosts) == (leased, hosts)
    assert not publisher.catalog_clones  # never, through a gateway


def test_an_unknown_lease_setting_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WISHBOT_GATEWAY_LEASES", "some")
    with pytest.raises(UsageError, match="WISHBOT_GATEWAY_LEASES='some' is not one of auto"):
        GatewayPublisher("gw.example.org", cvmfs_root=tmp_path)
