"""The durable SQLite queue: at-least-once, leases, coalescing, delivery memory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bot.runtime.queue import Queue


def test_put_claim_done_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    queue = Queue(path)
    assert queue.put("review", "review:a:1", {"number": "1"}) == "queued"
    assert queue.put("review", "review:a:1", {"number": "1"}) == "coalesced"
    assert queue.put("publish", "publish:a:main", {"sha": "abc"}, delivery="d1") == "queued"
    assert queue.put("publish", "publish:a:other", {}, delivery="d1") == "duplicate"
    reopened = Queue(path)
    job = reopened.claim(("publish",))
    assert job is not None and job.payload == {"sha": "abc"} and job.attempts == 1
    assert reopened.claim(("publish",)) is None
    reopened.done(job)
    review = reopened.claim(("review", "publish"))
    assert review is not None and review.kind == "review"
    assert reopened.counts() == {"done": 1, "running": 1}


def test_an_expired_lease_is_claimed_again(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite", visibility=0.2)
    queue.put("review", "k", {})
    first = queue.claim(("review",))
    assert first is not None
    assert queue.claim(("review",)) is None
    time.sleep(0.3)
    again = queue.claim(("review",))
    assert again is not None and again.id == first.id and again.attempts == 2


def test_same_key_is_not_run_twice_at_once(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite")
    queue.put("review", "review:a:1", {"head": "one"})
    running = queue.claim(("review",))
    assert running is not None
    assert queue.put("review", "review:a:1", {"head": "two"}) == "queued"  # new commits
    assert queue.claim(("review",)) is None  # waits for the running one
    queue.done(running)
    later = queue.claim(("review",))
    assert later is not None and later.payload == {"head": "two"}


def test_retry_waits_and_fail_keeps_the_error(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite")
    queue.put("publish", "p", {})
    job = queue.claim(("publish",))
    assert job is not None
    queue.retry(job, 0.3, "registry down")
    assert queue.claim(("publish",)) is None
    time.sleep(0.35)
    job = queue.claim(("publish",))
    assert job is not None and job.attempts == 2
    queue.fail(job, "gave up")
    assert queue.counts() == {"failed": 1}


def test_deliveries_are_remembered(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite")
    assert not queue.seen_delivery("gh:1")
    assert queue.seen_delivery("gh:1")
    assert Queue(tmp_path / "q.sqlite").seen_delivery("gh:1")
    assert not queue.seen_delivery("gh:2")


def test_concurrent_workers_never_claim_the_same_job(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite")
    for n in range(40):
        queue.put("review", f"k{n}", {"n": n})
    claimed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = Queue(tmp_path / "q.sqlite")
        while (job := mine.claim(("review",))) is not None:
            with lock:
                claimed.append(job.id)
            mine.done(job)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 40
