"""``wishbot serve`` (a real process) against the hostile webhook client.

Each attack is refused or contained: nothing is queued, no connection lives
past the request timeout, file descriptors and memory stay bounded, the
server log has no traceback, and a correctly signed delivery is accepted
while the attack runs. Limits here: 8 connections, 2 s per connection,
1 MiB per body, 4 MiB of bodies in memory at once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostile_webhook import Answer, HostileClient, in_parallel

SECRET = "hostile-test-secret"
PAYLOADS = Path(__file__).with_name("payloads")
PULL = (PAYLOADS / "github-pull_request-opened.json").read_bytes()
LIMITS = {
    "webhook_max_connections": 8,
    "webhook_request_timeout": 2.0,
    "webhook_max_body": 2**20,
    "webhook_body_budget": 4 * 2**20,
}
TIMEOUT = LIMITS["webhook_request_timeout"]
MiB = 2**20


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    client: HostileClient
    log: Path
    state: Path

    def rss(self) -> tuple[int, int]:
        """(current, peak) resident memory of the server process, in bytes."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            fields[name] = value.strip()
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def queued(self) -> int:
        with sqlite3.connect(self.state / "queue.sqlite") as db:
            return int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def metrics(self) -> str:
        host, port = self.client.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            return response.read().decode()


def pull(tag: str) -> bytes:
    """The documented pull-request payload as another pull request (a new signed
    body, and a new job rather than one coalesced with a waiting one)."""
    payload = json.loads(PULL)
    payload["number"] = payload["pull_request"]["number"] = 1000 + len(_numbers)
    _numbers.append(tag)
    return json.dumps(payload).encode()


_numbers: list[str] = []


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module (starting one takes a second); each test counts
    what it queued."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    address = tmp_path / "address"
    settings = tmp_path / "settings.json"
    state = tmp_path / "state"
    settings.write_text(
        json.dumps(
            {
                "repository": "Codertocat/Hello-World",
                "api_url": "http://127.0.0.1:9",  # never called: no workers
                "token": "unused",
                "secret": SECRET,
                "state_dir": str(state),
                "hang": str(tmp_path / "hang"),
                "address": str(address),
                "workers": False,
                "config": LIMITS,
                "log_format": "json",
            }
        )
    )
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    script = Path(__file__).with_name("serve_process.py")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(script), str(settings)], env=env, stderr=sink, stdout=sink
        )
    try:
        deadline = time.monotonic() + 20
        while not address.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        host, _, port = address.read_text().rpartition(":")
        yield Served(process, HostileClient((host, int(port)), SECRET), log, state)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "Traceback" not in text, text
    entries = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    accepted = [e for e in entries if e["message"] == "webhook accepted"]
    assert len(accepted) == len(_numbers) and SECRET not in text


def refused(answer: Answer, *statuses: int) -> bool:
    """Answered with one of ``statuses``, or closed without an answer (the server
    may close on an unread body, which resets the connection)."""
    return answer.status in statuses or answer.status is None


def test_a_signed_delivery_is_accepted_and_its_replays_under_new_ids_are_not(
    served: Served,
) -> None:
    before = served.queued()
    body = pull("replay")
    first, *again = served.client.replay(body, "pull_request", 4)
    assert first.status == 202
    assert [a.status for a in again] == [200, 200, 200]  # duplicate
    assert served.client.signed(body, "pull_request").status == 200
    assert served.queued() == before + 1
    assert 'wishbot_webhook_events_total{result="duplicate"}' in served.metrics()


def test_unsigned_and_forged_floods_are_refused_within_bounded_memory(served: Served) -> None:
    client = served.client
    before = served.queued()
    _, peak_before = served.rss()
    # a dozen clients with no signature: refused on their headers, bodies never held
    unsigned = client.flood(lambda: client.unsigned(MiB), 12)
    assert all(refused(a, 401) for a in unsigned), unsigned
    # a dozen with signature-shaped forgeries: bodies read, but at most 4 MiB at once
    forged = client.flood(lambda: client.forged(MiB), 12)
    assert all(refused(a, 401, 503) for a in forged), forged
    wrong = client.flood(lambda: client.wrong_token(MiB), 12)
    assert all(refused(a, 401) for a in wrong), wrong
    # bodies over the cap: 413 before a byte of them is read
    too_large = client.flood(lambda: client.declared_too_large(25 * MiB), 12)
    assert all(refused(a, 413) for a in too_large), too_large
    _, peak_after = served.rss()
    # the bound: 4 MiB of bodies (the budget) plus thread stacks and buffers
    print(f"peak RSS {peak_before / MiB:.1f} MiB -> {peak_after / MiB:.1f} MiB")
    assert peak_after - peak_before < 4 * MiB + 20 * MiB, (peak_before, peak_after)
    assert served.queued() == before
    assert client.signed(pull("flood"), "pull_request").status == 202


def test_oversized_and_lying_bodies(served: Served) -> None:
    client = served.client
    before = served.queued()
    assert refused(client.declared_too_large(25 * MiB), 413)
    assert refused(client.no_length(3 * MiB), 411)
    assert refused(client.chunked(3 * MiB), 411)
    # signed for its first 100 bytes, then 3 MiB more: only 100 bytes are read,
    # and they are not a JSON object, so the delivery is ignored
    lying = client.lying_short(100, 3 * MiB, PULL)
    assert refused(lying, 202, 401)
    # declares 1 MiB, sends 10 bytes and waits: cut off at the request timeout
    started = time.monotonic()
    short = client.lying_long(MiB, b"x" * 10)
    assert refused(short, 400) and time.monotonic() - started < TIMEOUT + 1.5
    assert refused(client.huge_headers(), 431)
    assert served.queued() == before


def test_slow_clients_are_cut_off_and_a_signed_delivery_gets_through(served: Served) -> None:
    client = served.client
    before = served.queued()
    attacks = [lambda: client.slowloris(interval=0.5, limit=30)] * 12
    attacks += [lambda: client.slow_body(interval=0.5, limit=30)] * 12
    results: list[list[Answer]] = []
    flood = threading.Thread(target=lambda: results.append(in_parallel(attacks)))
    flood.start()
    time.sleep(0.8)  # every slot is taken by a slow client now
    fds = served.fds()
    honest = client.signed(pull("slowloris"), "pull_request")
    flood.join()
    assert honest.status == 202, honest
    answers = results[0]
    # each slow client was evicted, cut off at 2 s or refused: none lived on
    assert all(a.seconds < TIMEOUT + 1.5 for a in answers), [a.seconds for a in answers]
    assert all(a.status in (None, 503) for a in answers), answers
    assert fds < 8 + 25, fds  # the connection cap holds file descriptors too
    text = served.metrics()
    assert 'wishbot_webhook_connections_refused_total{reason="timeout"}' in text
    assert served.queued() == before + 1


def test_many_idle_connections_do_not_starve_the_queue(served: Served) -> None:
    client = served.client
    before = served.queued()
    sockets = client.idle(200)
    try:
        assert len(sockets) == 200
        assert served.fds() < 8 + 25
        honest = client.signed(pull("idle"), "pull_request")
        assert honest.status == 202, honest
    finally:
        for sock in sockets:
            sock.close()
    assert served.queued() == before + 1


@pytest.mark.slow
def test_soak_mixed_attacks_keep_memory_flat(served: Served) -> None:
    client = served.client
    baseline = served.rss()[0]
    for round_ in range(20):
        in_parallel(
            [lambda: client.forged(MiB)] * 8
            + [lambda: client.unsigned(MiB)] * 8
            + [lambda: client.slowloris(interval=0.2, limit=5)] * 8
        )
        assert client.signed(pull(f"soak-{round_}"), "pull_request").status == 202
    assert served.rss()[0] - baseline < 24 * MiB
