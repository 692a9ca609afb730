"""The durable SQLite queue: at-least-once, leases, coalescing, delivery memory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bot.runtime.queue import Queue, Retention


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
    queue = Queue(tmp_path / "q.sqlite", visibility=2.0)
    queue.put("review", "k", {})
    first = queue.claim(("review",))
    assert first is not None
    assert queue.claim(("review",)) is None
    time.sleep(2.2)
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


def test_the_same_body_under_a_new_delivery_id_is_a_duplicate(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite")
    assert queue.put("review", "r:1", {}, delivery="gh:1", digest="body:aa") == "queued"
    assert queue.put("review", "r:1", {}, delivery="gh:2", digest="body:aa") == "duplicate"
    # nothing of a refused put is remembered: gh:2 with another body is still new
    assert queue.put("review", "r:2", {}, delivery="gh:2", digest="body:bb") == "queued"
    assert queue.counts() == {"queued": 2}


def test_a_running_job_keeps_its_lease_while_renewed(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite", visibility=0.3)
    queue.put("review", "k", {})
    job = queue.claim(("review",))
    assert job is not None
    for _ in range(4):  # 0.6 s: twice the lease, renewed every 0.15 s
        time.sleep(0.15)
        assert queue.renew(job)
        assert queue.claim(("review",)) is None
    assert queue.done(job)


def test_a_worker_that_lost_its_lease_cannot_settle_the_job(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite", visibility=0.1)
    queue.put("review", "k", {})
    first = queue.claim(("review",))
    time.sleep(0.15)
    second = queue.claim(("review",))
    assert first is not None and second is not None and second.attempts == 2
    assert not queue.renew(first)
    assert not queue.done(first)
    assert not queue.retry(first, 0, "late")
    assert queue.counts() == {"running": 1}
    assert queue.done(second)


def test_jobs_interrupted_by_a_restart_are_queued_again_or_failed(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite")
    queue.put("review", "a", {"n": 1})
    queue.put("publish", "b", {"n": 2})
    first = queue.claim(("review",))
    second = queue.claim(("publish",))
    assert first is not None and second is not None
    queue.retry(second, 0, "try again")
    second = queue.claim(("publish",))
    assert second is not None and second.attempts == 2
    reopened = Queue(tmp_path / "q.sqlite")
    interrupted = reopened.interrupted(2, "restarted")
    assert sorted((j.key, j.attempts) for j in interrupted) == [("a", 1), ("b", 2)]
    assert reopened.counts() == {"queued": 1, "failed": 1}
    again = reopened.claim(("review",))
    assert again is not None and again.key == "a"  # at once, not after the lease


def test_pruning_by_age_and_count(tmp_path: Path) -> None:
    retention = Retention(
        replay_window=100.0, max_deliveries=3, job_days=1.0, max_finished_jobs=2, interval=1e9
    )
    queue = Queue(tmp_path / "q.sqlite", retention=retention)
    now = time.time()
    for n in range(5):
        queue.put("review", f"k{n}", {}, delivery=f"d{n}")
        job = queue.claim(("review",))
        assert job is not None
        queue.done(job)
    queue.put("review", "waiting", {})
    # five deliveries, five finished jobs, one waiting: keep the newest 3 and 2
    assert queue.prune(now + 1) == (2, 3)
    assert queue.counts() == {"done": 2, "queued": 1}
    assert queue.put("review", "again", {}, delivery="d4") == "duplicate"
    assert queue.put("review", "again", {}, delivery="d0") == "queued"  # forgotten
    # past the replay window and the job age, everything finished goes; waiting stays
    assert queue.prune(now + 2 * 86400) == (4, 2)
    assert queue.counts() == {"queued": 2}


def test_put_prunes_at_most_every_interval(tmp_path: Path) -> None:
    retention = Retention(max_deliveries=1, interval=3600)
    queue = Queue(tmp_path / "q.sqlite", retention=retention)
    for n in range(3):
        queue.put("review", f"k{n}", {}, delivery=f"d{n}")
    # the first put pruned (nothing); the next ones within the hour did not
    assert queue.prune() == (2, 0)
