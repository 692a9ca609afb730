"""The gateway's lease API from the operator's side: bot/publisher/gateway_api.py and
``wishbot lease list|drop``, against the fake of the API (tests/fake_gateway_api.py)
and, where ``cvmfs_gateway`` is installed (marker ``cvmfs``), the real gateway."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from fake_gateway_api import Answer, FakeGateway, Key

from bot.cli import main
from bot.config import Config
from bot.errors import ConfigError, PublisherError, UsageError
from bot.publisher.gateway_api import (
    AdminKey,
    GatewayAdmin,
    Lease,
    admin_key,
    cancelled_by,
    gateway_url,
    gateway_url_for,
    lease_path,
    parse_go_time,
)

REPO = "repo.wishbot.test"
ADMIN_SECRET = "s3cr3t-admin-Zq9"
PUB_SECRET = "s3cr3t-pub-Xw7"
#: the answer the real gateway gave today (the task's brief), with one extra field
REAL_ANSWER = (
    b'{"status":"ok","data":{"REPO/path":{"key_id":"pubkey","path":"REPO/path",'
    b'"expires":"2026-11-30 20:23:09.574 +0000 UTC","hostname":"vm","token":"x"}},"extra":1}'
)


def go_authorization(key_id: str, secret: str, url_path: str) -> str:
    """The header as the gateway's Go code checks it, computed here on its own:
    hex.EncodeToString(hmac.New(sha1.New, secret).Sum(path)), then base64.StdEncoding."""
    mac = hmac.new(secret.encode(), url_path.encode(), hashlib.sha1).digest()
    return f"{key_id} " + base64.standard_b64encode(mac.hex().encode()).decode("ascii")


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway(
        repos={REPO: {"pub": "/", "admin": "/"}},
        keys={"pub": Key(PUB_SECRET), "admin": Key(ADMIN_SECRET, admin=True)},
    )
    with fake:
        yield fake


def admin(gateway: FakeGateway, key_id: str = "admin", secret: str = ADMIN_SECRET) -> GatewayAdmin:
    return GatewayAdmin(gateway.url, key_id, secret, timeout=5)


# --- parsing ------------------------------------------------------------------------


def test_go_times_parse() -> None:
    assert parse_go_time("2026-11-30 20:23:09.574 +0000 UTC") == datetime(
        2026, 11, 30, 20, 23, 9, 574000, UTC
    )
    cet = parse_go_time("2026-11-30 21:23:09 +0100 CET")
    assert cet == datetime(2026, 11, 30, 20, 23, 9, tzinfo=UTC)
    assert cet.utcoffset() == timedelta(hours=1)
    assert parse_go_time("2026-11-30 20:23:09.123456789 -0330 -0330 m=+7200.001").tzinfo == (
        timezone(-timedelta(hours=3, minutes=30))
    )
    for bad in ("2026-11-30T20:23:09Z", "", "2026-11-30 20:23:09", "yesterday"):
        with pytest.raises(ValueError):
            parse_go_time(bad)


def test_the_real_answer_parses_and_an_extra_field_is_ignored(gateway: FakeGateway) -> None:
    gateway.answer_next.append(Answer(200, REAL_ANSWER, {"Content-Type": "text/plain"}))
    assert GatewayAdmin(gateway.url).leases() == [
        Lease("REPO/path", "pubkey", "vm", datetime(2026, 11, 30, 20, 23, 9, 574000, UTC))
    ]


def test_leases_of_the_fake_table(gateway: FakeGateway) -> None:
    gateway.add_lease(f"{REPO}/.flat/ab/x", hostname="pub1", ttl=600)
    gateway.add_lease(f"{REPO}/.layers/cd", key_id="pub", hostname="", ttl=60)
    gateway.add_lease(f"{REPO}/gone", ttl=-1)  # expired: the gateway lists active leases only
    leases = GatewayAdmin(gateway.url).leases()
    assert [(x.path, x.key_id, x.hostname) for x in leases] == [
        (f"{REPO}/.flat/ab/x", "publisher", "pub1"),
        (f"{REPO}/.layers/cd", "pub", ""),
    ]
    left = leases[0].expires - datetime.now(UTC)
    assert timedelta(seconds=590) < left <= timedelta(seconds=600)


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"<html>proxy error</html>", "is not valid JSON"),
        (b"\xff\xfe", "is not UTF-8"),
        (b"[" * 100 + b"]" * 100, "nests JSON deeper than 64 levels"),
        (b'{"status":"ok","data":[]}', "has a 'data' that is not an object"),
        (b'{"status":"ok","data":{"R/p":"x"}}', "has a lease 'R/p' that is not an object"),
        (
            b'{"status":"ok","data":{"R/p":{"expires":"soon"}}}',
            "has a lease 'R/p' whose expiry 'soon' is not a time",
        ),
        (
            b'{"status":"ok","data":{"R/p":{"expires":5}}}',
            "has a lease 'R/p' whose expires is not a string",
        ),
        (
            b'{"status":"error","reason":"db \\u001b[31m down"}',
            "says 'error': 'db \ufffd[31m down'",
        ),
        (b"[]", "is not a JSON object"),
    ],
)
def test_a_malformed_answer_is_a_clear_error(gateway: FakeGateway, body: bytes, what: str) -> None:
    gateway.answer_next.append(Answer(200, body))
    with pytest.raises(PublisherError) as caught:
        GatewayAdmin(gateway.url).leases()
    assert f"{gateway.url}/leases: the gateway's answer {what}" in str(caught.value)


@pytest.mark.parametrize("close_delimited", [False, True])
def test_an_oversized_answer_is_not_read(gateway: FakeGateway, close_delimited: bool) -> None:
    big = b'{"status":"ok","data":{' + b" " * (2 * 2**20) + b"}}"
    gateway.answer_next.append(Answer(200, big, close_delimited=close_delimited))
    with pytest.raises(PublisherError, match=r"larger than 1048576 bytes; not read further"):
        GatewayAdmin(gateway.url).leases()


def test_a_wrong_url_says_so(gateway: FakeGateway) -> None:
    with pytest.raises(PublisherError) as caught:
        GatewayAdmin(gateway.url.removesuffix("/api/v1") + "/api/v2").leases()
    assert "answered HTTP 404: '404 page not found'" in str(caught.value)
    assert "not the gateway's API" in str(caught.value)


def test_a_gateway_that_is_down_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PublisherError) as caught:
        GatewayAdmin(f"http://127.0.0.1:{port}/api/v1").leases()
    assert str(caught.value).startswith(
        f"http://127.0.0.1:{port}/api/v1/leases: the gateway did not answer (connection refused)"
    )


def test_a_gateway_that_never_answers_times_out() -> None:
    with socket.socket() as sock:  # listens, never accepts: connect works, read waits
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1"
        started = time.monotonic()
        with pytest.raises(PublisherError, match=r"did not answer \(timed out\)"):
            GatewayAdmin(url, timeout=0.5).leases()
    assert time.monotonic() - started < 5


# --- drop ------------------------------------------------------------------------------


def test_drop_signs_the_url_path_as_the_gateway_checks_it(gateway: FakeGateway) -> None:
    gateway.add_lease(f"{REPO}/.flat/ab/img")
    gateway.add_lease(f"{REPO}/.flat/cd/img")
    admin(gateway).drop(f"{REPO}/.flat/ab")
    method, path, headers = gateway.requests[-1]
    assert (method, path) == ("DELETE", f"/api/v1/leases-by-path/{REPO}/.flat/ab")
    assert headers["authorization"] == go_authorization(
        "admin", ADMIN_SECRET, f"/api/v1/leases-by-path/{REPO}/.flat/ab"
    )
    assert list(gateway.active_leases()) == [f"{REPO}/.flat/cd/img"]


def test_drop_signs_the_decoded_path_and_sends_it_encoded(gateway: FakeGateway) -> None:
    gateway.add_lease(f"{REPO}/a b/c")
    admin(gateway).drop(f"{REPO}/a b")
    _, path, headers = gateway.requests[-1]
    assert path == f"/api/v1/leases-by-path/{REPO}/a%20b"
    assert headers["authorization"] == go_authorization(
        "admin", ADMIN_SECRET, f"/api/v1/leases-by-path/{REPO}/a b"
    )
    assert gateway.active_leases() == {}


@pytest.mark.parametrize(
    ("key_id", "secret", "message", "reason"),
    [
        ("nobody", ADMIN_SECRET, "the gateway does not know the key 'nobody'", "invalid_key"),
        ("pub", PUB_SECRET, "the key 'pub' is not an administration key", "no_admin_key"),
        ("admin", "wrong", "the secret of key 'admin' is not the one it has", "invalid_hmac"),
    ],
)
def test_a_refused_key_is_a_clear_error(
    gateway: FakeGateway, key_id: str, secret: str, message: str, reason: str
) -> None:
    gateway.add_lease(f"{REPO}/x")
    with pytest.raises(PublisherError) as caught:
        admin(gateway, key_id, secret).drop(f"{REPO}/x")
    text = str(caught.value)
    assert message in text and f"({reason})" in text and "repo.json" in text
    assert secret not in text and not caught.value.retryable
    assert list(gateway.active_leases()) == [f"{REPO}/x"]


def test_the_gateway_reason_is_passed_on(gateway: FakeGateway) -> None:
    with pytest.raises(PublisherError, match=r"the gateway says 'missing repository name"):
        admin(gateway).drop("justarepo")


def test_a_redirect_is_not_followed(gateway: FakeGateway) -> None:
    with FakeGateway(keys={"admin": Key(ADMIN_SECRET, admin=True)}) as elsewhere:
        target = f"{elsewhere.url}/leases-by-path/{REPO}/x"
        gateway.answer_next.append(Answer(307, b"", {"Location": target}))
        with pytest.raises(PublisherError, match=r"a redirect to .* not followed"):
            admin(gateway).drop(f"{REPO}/x")
        assert elsewhere.requests == []


def test_the_secret_never_shows(
    gateway: FakeGateway, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    key = AdminKey("admin", ADMIN_SECRET)
    assert ADMIN_SECRET not in repr(key) and ADMIN_SECRET not in repr(admin(gateway))
    with pytest.raises(PublisherError) as caught:
        admin(gateway, "admin", ADMIN_SECRET + "x").drop(f"{REPO}/x")
    logging.getLogger("test").debug("%s", caught.value)
    gateway.add_lease(f"{REPO}/y")
    admin(gateway).drop(f"{REPO}/y")
    out = capsys.readouterr()
    assert caplog.records  # urllib3 logged the requests
    for text in (caplog.text, out.out, out.err, str(caught.value)):
        assert ADMIN_SECRET not in text


def test_the_preview_cancels_what_the_gateway_cancels(gateway: FakeGateway) -> None:
    """String prefix, ``_`` any character, ASCII case folded, same repository only
    (the real gateway, observed: dropping x/a_b cancelled x/aXb, x/abc cancelled x/AbC)."""
    paths = [f"{REPO}/x/aXb", f"{REPO}/x/AbC", f"{REPO}/x/abcd/e", f"{REPO}/y", "other.repo/x/ab"]
    for prefix in ("x/a_b", "x/abc", "x/a", "x/ab%d", "y", "/"):
        for path in paths:
            gateway.add_lease(path)
        before = GatewayAdmin(gateway.url).leases()
        repo_path = lease_path(REPO, prefix)
        preview = {lease.path for lease in cancelled_by(repo_path, before)}
        admin(gateway).drop(repo_path)
        assert preview == set(paths) - set(gateway.active_leases()), prefix


def test_leases_json_of_the_fake_cvmfs_server(tmp_path: Path) -> None:
    """The fake serves the lease table the fake cvmfs_server's gateway mode keeps, under
    its flock: a DELETE waits for the lock and keeps what it does not cancel."""
    table = tmp_path / "leases.json"
    later = time.time() + 3600
    table.write_text(
        json.dumps(
            {
                f"{REPO}/.flat/ab": {"expires": later, "publisher": "/srv/pub1"},
                f"{REPO}/.flat/cd": {"expires": later, "publisher": "/srv/pub2"},
                f"{REPO}/old": {"expires": time.time() - 1, "publisher": "/srv/pub3"},
            }
        )
    )
    with FakeGateway(keys={"admin": Key(ADMIN_SECRET, admin=True)}, leases_file=table) as fake:
        leases = GatewayAdmin(fake.url).leases()
        assert [(x.path, x.hostname) for x in leases] == [
            (f"{REPO}/.flat/ab", "/srv/pub1"),
            (f"{REPO}/.flat/cd", "/srv/pub2"),
        ]
        with open(table, "r+") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            worker = threading.Thread(target=admin(fake).drop, args=(f"{REPO}/.flat/ab",))
            worker.start()
            worker.join(0.3)
            assert worker.is_alive()  # waiting for the lock
        worker.join(5)
        assert sorted(json.loads(table.read_text())) == [f"{REPO}/.flat/cd", f"{REPO}/old"]


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "url"),
    [
        (
            f"CVMFS_UPSTREAM_STORAGE=gw,/srv/cvmfs/{REPO}/data/txn,http://gw.example:4929/api/v1\n",
            "http://gw.example:4929/api/v1",
        ),
        (
            'CVMFS_REPOSITORY_NAME=x\nCVMFS_UPSTREAM_STORAGE="gw,/tmp,http://h:4929/api/v1"\n',
            "http://h:4929/api/v1",
        ),
        (
            "CVMFS_UPSTREAM_STORAGE=gw,/tmp,http://a/api/v1\nCVMFS_UPSTREAM_STORAGE=gw,/tmp,http://b/api/v1",
            "http://b/api/v1",
        ),
        ("export CVMFS_UPSTREAM_STORAGE=gw,/tmp,http://h,x/api/v1", "http://h,x/api/v1"),
        (f"CVMFS_UPSTREAM_STORAGE=local,/srv/cvmfs/{REPO}/data/txn,/srv/cvmfs/{REPO}", None),
        ("# CVMFS_UPSTREAM_STORAGE=gw,/tmp,http://h/api/v1", None),
        ("CVMFS_UPSTREAM_STORAGE=gw,/tmp", None),
        ("", None),
    ],
)
def test_gateway_url_from_server_conf(text: str, url: str | None) -> None:
    assert gateway_url(text) == url


def test_gateway_url_setting_then_server_conf(tmp_path: Path) -> None:
    conf = tmp_path / "repositories.d" / REPO / "server.conf"
    with pytest.raises(ConfigError, match=r"no gateway URL for .*cannot read .*server.conf"):
        gateway_url_for(REPO, Config(), etc=tmp_path)
    conf.parent.mkdir(parents=True)
    conf.write_text("CVMFS_UPSTREAM_STORAGE=local,/a,/b\n")
    with pytest.raises(ConfigError, match=r"names no gateway .*set WISHBOT_GATEWAY_URL"):
        gateway_url_for(REPO, Config(), etc=tmp_path)
    conf.write_text("CVMFS_UPSTREAM_STORAGE=gw,/tmp,http://gw.example:4929/api/v1/\n")
    assert gateway_url_for(REPO, Config(), etc=tmp_path) == "http://gw.example:4929/api/v1"
    setting = Config(gateway_url="https://other:4929/api/v1")
    assert gateway_url_for(REPO, setting, etc=tmp_path) == "https://other:4929/api/v1"
    with pytest.raises(ConfigError, match=r"not http\(s\)://HOST:PORT/api/v1"):
        gateway_url_for(REPO, Config(gateway_url="http://user:pw@h/api/v1"), etc=tmp_path)
    with pytest.raises(ConfigError, match=r"setting 'gateway_url' \(WISHBOT_GATEWAY_URL\)"):
        Config.load({"WISHBOT_GATEWAY_URL": "gw.example:4929"})


def test_the_admin_key_from_the_environment(tmp_path: Path) -> None:
    assert admin_key({}) is None
    assert admin_key({"WISHBOT_GATEWAY_ADMIN_KEY": "adm:se:cret"}) == AdminKey("adm", "se:cret")
    plain = tmp_path / "repo.gw"
    plain.write_text("plain_text adm s3cret\nignored\n")
    plain.chmod(0o600)
    assert admin_key({"WISHBOT_GATEWAY_ADMIN_KEY_FILE": str(plain)}) == AdminKey("adm", "s3cret")
    spec = tmp_path / "key.json"
    spec.write_text('{"type": "plain_text", "id": "adm", "secret": "s3cret", "admin": true}')
    assert admin_key({"WISHBOT_GATEWAY_ADMIN_KEY_FILE": str(spec)}) == AdminKey("adm", "s3cret")
    bad = tmp_path / "bad.gw"
    bad.write_text("file adm s3cret\n")
    mistakes = {
        "WISHBOT_GATEWAY_ADMIN_KEY": ("nocolon", "is not KEYID:SECRET"),
        "WISHBOT_GATEWAY_ADMIN_KEY_FILE": (
            str(bad),
            "not 'plain_text KEYID SECRET' (3 fields, type 'file')",
        ),
    }
    for variable, (value, message) in mistakes.items():
        with pytest.raises(ConfigError) as caught:
            admin_key({variable: value})
        assert message in str(caught.value) and "s3cret" not in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read"):
        admin_key({"WISHBOT_GATEWAY_ADMIN_KEY_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="looks like a file name") as caught:
        admin_key({"WISHBOT_GATEWAY_ADMIN_KEY": str(plain)})
    assert "WISHBOT_GATEWAY_ADMIN_KEY_FILE" in str(caught.value)
    with pytest.raises(ConfigError, match="both"):
        admin_key({"WISHBOT_GATEWAY_ADMIN_KEY": "a:b", "WISHBOT_GATEWAY_ADMIN_KEY_FILE": "f"})
    with pytest.raises(ConfigError, match="key id is empty"):
        admin_key({"WISHBOT_GATEWAY_ADMIN_KEY": ":secret"})


def test_the_key_variables_are_known_settings() -> None:
    from bot.config import unknown_variables

    env = {"WISHBOT_GATEWAY_ADMIN_KEY": "a:b", "WISHBOT_GATEWAY_ADMIN_KEY_FILE": "f"}
    assert unknown_variables({**env, "WISHBOT_GATEWAY_URL": "http://h"}) == []
    assert unknown_variables({"WISHBOT_GATEWAY_ULR": "x"}) == [
        "WISHBOT_GATEWAY_ULR is not a wishbot setting and is ignored "
        "(did you mean WISHBOT_GATEWAY_URL?)"
    ]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".flat/ab/img", f"{REPO}/.flat/ab/img"),
        ("/.flat/ab/", f"{REPO}/.flat/ab"),
        (f"{REPO}/.flat/ab", f"{REPO}/.flat/ab"),
        (f"/{REPO}/.flat", f"{REPO}/.flat"),
        ("/", f"{REPO}/"),
        (REPO, f"{REPO}/"),
        (f"{REPO}/", f"{REPO}/"),
    ],
)
def test_lease_paths_are_normalised(path: str, expected: str) -> None:
    assert lease_path(REPO, path) == expected


@pytest.mark.parametrize("path", ["", "  ", "a//b", "a/../b", "./a", "a/\x1b[2J"])
def test_odd_lease_paths_are_refused(path: str) -> None:
    with pytest.raises(UsageError):
        lease_path(REPO, path)


# --- the command line ---------------------------------------------------------------


@pytest.fixture
def cli_env(gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    monkeypatch.setenv("WISHBOT_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("WISHBOT_GATEWAY_ADMIN_KEY", f"admin:{ADMIN_SECRET}")
    monkeypatch.delenv("WISHBOT_GATEWAY_ADMIN_KEY_FILE", raising=False)
    monkeypatch.delenv("WISHBOT_CONFIG", raising=False)
    gateway.add_lease(f"{REPO}/.flat/ab/img", hostname="pub1", ttl=3600)
    gateway.add_lease(f"{REPO}/.flat/abc/img", hostname="pub2", ttl=125)
    gateway.add_lease("other.repo/.flat/ab", hostname="pub3")
    return gateway


def lease(*args: str) -> int:
    return main(["lease", *args[:1], *args[1:], "--publisher", f"cvmfs:{REPO}"])


def test_cli_list(cli_env: FakeGateway, capsys: pytest.CaptureFixture[str]) -> None:
    expires = cli_env.leases[f"{REPO}/.flat/ab/img"].expires
    now = datetime.fromtimestamp(int(expires * 1000) / 1000 - 3599.5, UTC).isoformat()
    assert lease("list", "--now", now) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["path", "host", "expires", "in"]
    assert lines[1].split() == [f"{REPO}/.flat/ab/img", "pub1", "59m", "59s"]
    assert lines[2].split() == [f"{REPO}/.flat/abc/img", "pub2", "2m", "04s"]
    assert len(lines) == 3  # other.repo is not listed
    assert lease("list", "--format", "json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gateway"] == cli_env.url and report["repository"] == REPO
    assert [x["path"] for x in report["leases"]] == [
        f"{REPO}/.flat/ab/img",
        f"{REPO}/.flat/abc/img",
    ]
    assert 3500 < report["leases"][0]["expires_in_seconds"] <= 3600
    assert (
        report["leases"][0]["expires"]
        == datetime.fromtimestamp(int(expires * 1000) / 1000, UTC).isoformat()
    )
    assert report["leases"][0]["key_id"] == "publisher"


def test_cli_drop_previews_without_yes(
    cli_env: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lease("drop", ".flat/ab") == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"would drop 2 leases under {REPO}/.flat/ab:\n")
    assert "nothing dropped: run again with --yes" in out
    assert f"also covers {REPO}/.flat/abc/img" in err
    assert len(cli_env.active_leases()) == 3
    assert not any(method == "DELETE" for method, _, _ in cli_env.requests)


def test_cli_drop_with_yes(cli_env: FakeGateway, capsys: pytest.CaptureFixture[str]) -> None:
    assert lease("drop", f"{REPO}/.flat/ab/img/", "--yes") == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"dropped 1 lease under {REPO}/.flat/ab/img:\n") and err == ""
    assert sorted(cli_env.active_leases()) == ["other.repo/.flat/ab", f"{REPO}/.flat/abc/img"]
    assert lease("drop", ".flat/nothing", "--yes") == 0
    assert capsys.readouterr().out == f"no lease under {REPO}/.flat/nothing: nothing to drop\n"
    assert lease("drop", "/", "--yes", "--format", "json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dropped"] is True and report["path"] == f"{REPO}/"
    assert list(cli_env.active_leases()) == ["other.repo/.flat/ab"]


def test_cli_mistakes(
    cli_env: FakeGateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WISHBOT_GATEWAY_ADMIN_KEY", "admin:wrong")
    assert lease("drop", ".flat/ab", "--yes") == 1
    err = capsys.readouterr().err
    assert err.startswith("wishbot: error: ") and "(invalid_hmac)" in err
    assert "Traceback" not in err and "wrong" not in err.replace("wrong-", "")
    monkeypatch.delenv("WISHBOT_GATEWAY_ADMIN_KEY")
    assert lease("drop", ".flat/ab") == 0  # the preview needs no key, and says so
    assert "(--yes needs WISHBOT_GATEWAY_ADMIN_KEY" in capsys.readouterr().out
    assert lease("drop", ".flat/ab", "--yes") == 2
    assert "no gateway admin key" in capsys.readouterr().err
    assert main(["lease", "list", "--publisher", "local:/tmp/x"]) == 2
    assert "leases exist only on a CernVM-FS gateway" in capsys.readouterr().err
    assert lease("drop", "a/../b") == 2
    cli_env.stop()
    assert lease("list") == 1
    err = capsys.readouterr().err
    assert "the gateway did not answer (connection refused)" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as usage:
        main(["lease"])
    assert usage.value.code == 2


def test_help_does_not_import_the_adapter() -> None:
    code = (
        "import sys; from bot.cli import build_parser; build_parser(); "
        "print('bot.publisher.gateway_api' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# --- the real gateway ------------------------------------------------------------------

GATEWAY = Path("/usr/bin/cvmfs_gateway")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.cvmfs
def test_against_the_real_gateway(tmp_path: Path) -> None:
    """cvmfs_gateway 2.12 on a free port, for a repository that need not exist (it
    accepts one that does not): list, take a lease as a publisher would, preview and
    drop it with the client; the fake answers the refusals word for word the same."""
    if not GATEWAY.exists():
        pytest.skip(f"cvmfs: {GATEWAY} is not installed")
    port, pprof = _free_port(), _free_port()
    user = tmp_path / "user.json"
    user.write_text(
        json.dumps(
            {
                "max_lease_time": 7200,
                "port": port,
                "num_receivers": 1,
                "receiver_path": "/usr/bin/cvmfs_receiver",
                "log_level": "info",
                "work_dir": str(tmp_path / "work"),
            }
        )
    )
    access = tmp_path / "repo.json"
    access.write_text(
        json.dumps(
            {
                "version": 2,
                "repos": [
                    {
                        "domain": REPO,
                        "keys": [
                            {"id": "pub", "path": "/"},
                            {"id": "admin", "path": "/", "admin": True},
                        ],
                    }
                ],
                "keys": [
                    {"type": "plain_text", "id": "pub", "secret": PUB_SECRET},
                    {"type": "plain_text", "id": "admin", "secret": ADMIN_SECRET, "admin": True},
                ],
            }
        )
    )
    (tmp_path / "work").mkdir()
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [
            str(GATEWAY),
            "--user_config_file", str(user),
            "--access_config_file", str(access),
            "--pprof_port", str(pprof),
            "--pprof_port_range_max", str(pprof),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/v1"
    try:
        _wait_for(url, proc, tmp_path / "gateway.log")
        real = GatewayAdmin(url, "admin", ADMIN_SECRET, timeout=10)
        assert real.leases() == []
        real.drop(f"{REPO}/nothing/here")  # ok with nothing to cancel
        for path in (f"{REPO}/.flat/aXb", f"{REPO}/.flat/cd"):
            _take_lease(url, path)
        leases = real.leases()
        assert [(x.path, x.key_id, x.hostname) for x in leases] == [
            (f"{REPO}/.flat/aXb", "pub", "wishbot-test"),
            (f"{REPO}/.flat/cd", "pub", "wishbot-test"),
        ]
        assert timedelta(seconds=7100) < leases[0].expires - datetime.now(UTC) <= timedelta(hours=2)
        real.drop(f"{REPO}/")
        _preview_is_what_goes(url, real)
        _same_refusals(url)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _preview_is_what_goes(url: str, real: GatewayAdmin) -> None:
    """What the preview says a drop cancels is what the real gateway cancels: string
    prefix, ``_`` any character, ASCII case folded, this repository only."""
    paths = [f"{REPO}/x/aXb", f"{REPO}/x/AbC", f"{REPO}/y/z"]
    expected = {
        "x/a_b": [f"{REPO}/x/aXb"],
        "x/ABC": [f"{REPO}/x/AbC"],
        "x/": [f"{REPO}/x/AbC", f"{REPO}/x/aXb"],
        "x/a": [f"{REPO}/x/AbC", f"{REPO}/x/aXb"],
        "y/zz": [],
        "/": paths,
    }
    for prefix, cancelled in expected.items():
        held = {lease.path for lease in real.leases()}
        for path in paths:
            if path not in held:
                _take_lease(url, path)
        before = real.leases()
        repo_path = lease_path(REPO, prefix)
        preview = sorted(lease.path for lease in cancelled_by(repo_path, before))
        real.drop(repo_path)
        after = {lease.path for lease in real.leases()}
        assert preview == sorted(set(paths) - after) == sorted(cancelled), prefix


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"cvmfs_gateway exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail(f"cvmfs_gateway did not answer on {url}: {log.read_text()[-2000:]}")


def _take_lease(url: str, path: str) -> None:
    """``POST /leases`` as cvmfs_server transaction does (frontend/leases.go: the HMAC of the body)."""
    body = json.dumps({"path": path, "api_version": "3", "hostname": "wishbot-test"})
    mac = hmac.new(PUB_SECRET.encode(), body.encode(), hashlib.sha1).hexdigest()
    answer = requests.post(
        url + "/leases",
        data=body,
        headers={"Authorization": "pub " + base64.b64encode(mac.encode()).decode()},
        timeout=10,
    ).json()
    assert answer["status"] == "ok", answer


def _same_refusals(url: str) -> None:
    """The fake answers as the real gateway does: status, Content-Type, body."""
    fake = FakeGateway(
        repos={REPO: {"pub": "/", "admin": "/"}},
        keys={"pub": Key(PUB_SECRET), "admin": Key(ADMIN_SECRET, admin=True)},
    )
    target = f"/api/v1/leases-by-path/{REPO}/x"
    cases = [
        ("DELETE", target, go_authorization("admin", "wrong", target)),
        ("DELETE", target, go_authorization("pub", PUB_SECRET, target)),
        ("DELETE", target, go_authorization("nobody", ADMIN_SECRET, target)),
        ("DELETE", target, "admin"),
        ("DELETE", "/api/v1/leases-by-path/", go_authorization("admin", ADMIN_SECRET, "/api/v1/leases-by-path/")),
        ("DELETE", f"/api/v1/leases-by-path/{REPO}", go_authorization("admin", ADMIN_SECRET, f"/api/v1/leases-by-path/{REPO}")),
        ("GET", "/api/v1/repos", ""),
        ("GET", "/api/v1/nothing", ""),
        ("PUT", "/api/v1/leases", ""),
    ]  # fmt: skip
    with fake:
        base = fake.url.removesuffix("/api/v1")
        for method, path, authorization in cases:
            headers = {"Authorization": authorization} if authorization else {}
            answers = [
                requests.request(method, root + path, headers=headers, timeout=10)
                for root in (url.removesuffix("/api/v1"), base)
            ]
            real, ours = (
                (a.status_code, a.headers.get("Content-Type"), a.content) for a in answers
            )
            assert ours == real, (method, path)
