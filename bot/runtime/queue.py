"""A durable work queue in SQLite: survives restarts, delivers at least once.

A claimed job is leased for ``visibility`` seconds and the worker renews the
lease while it runs (:meth:`Queue.renew`), so a slow job is never handed to
a second worker; a worker that dies leaves its job to be claimed again when
the lease runs out. A lease is identified by the job's attempt number: a
worker whose lease was lost cannot settle a job another worker now holds.
Jobs with the same key that are still waiting are coalesced; webhook
delivery ids and digests of signed bodies are remembered for the replay
window so replays and duplicate deliveries are dropped. Old deliveries and
finished jobs are pruned by age and count (:class:`Retention`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        kind         TEXT NOT NULL,
        key          TEXT NOT NULL,
        payload      TEXT NOT NULL,
        state        TEXT NOT NULL DEFAULT 'queued',
        attempts     INTEGER NOT NULL DEFAULT 0,
        available_at REAL NOT NULL,
        lease_until  REAL NOT NULL DEFAULT 0,
        last_error   TEXT NOT NULL DEFAULT '',
        created      REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, kind, available_at)",
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, created)",
    """
    CREATE TABLE IF NOT EXISTS deliveries (
        id   TEXT PRIMARY KEY,
        seen REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS deliveries_seen ON deliveries (seen)",
)
DELIVERY_MEMORY = 7 * 24 * 3600.0
FINISHED = ("done", "failed")


@dataclass(frozen=True)
class Retention:
    """How long and how many deliveries and finished jobs the queue remembers.

    ``replay_window`` is how long a delivery id or signed-body digest is
    remembered (a replay within it is dropped); ``max_deliveries`` bounds
    them by count. Finished (done or failed) jobs are kept ``job_days`` and
    at most ``max_finished_jobs``. Pruning runs at most every ``interval``
    seconds, from :meth:`Queue.put`.
    """

    replay_window: float = DELIVERY_MEMORY
    max_deliveries: int = 100_000
    job_days: float = 30.0
    max_finished_jobs: int = 10_000
    interval: float = 60.0


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    key: str
    payload: Mapping[str, Any]
    attempts: int


class Queue:
    """The queue in the SQLite file ``path``."""

    def __init__(
        self,
        path: str | Path,
        *,
        visibility: float = 900.0,
        retention: Retention | None = None,
    ):
        self.path = Path(path)
        self.visibility = visibility
        self.retention = retention or Retention()
        self._pruned = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def seen_delivery(self, delivery: str) -> bool:
        """Remember ``delivery``; True if it was seen before (a replay or duplicate)."""
        with self._transaction() as db:
            return not _remember(db, delivery, time.time())

    def put(
        self,
        kind: str,
        key: str,
        payload: Mapping[str, Any],
        *,
        delivery: str | None = None,
        digest: str | None = None,
        delay: float = 0.0,
    ) -> str:
        """Queue a job: "queued", "coalesced" (a job with this key is already
        waiting) or "duplicate" (``delivery`` or the body ``digest`` was seen
        within the replay window). Both are remembered in the same transaction,
        so a failed put can be redelivered."""
        now = time.time()
        self._maybe_prune(now)
        with self._transaction() as db:
            marks = [m for m in (delivery, digest) if m is not None]
            fresh = [_remember(db, mark, now) for mark in marks]
            if not all(fresh):
                if any(fresh):
                    # keep the unseen half forgotten too: nothing was queued
                    db.execute("ROLLBACK")
                    db.execute("BEGIN IMMEDIATE")
                return "duplicate"
            waiting = db.execute(
                "SELECT 1 FROM jobs WHERE key = ? AND state = 'queued'", (key,)
            ).fetchone()
            if waiting:
                return "coalesced"
            db.execute(
                "INSERT INTO jobs (kind, key, payload, available_at, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (kind, key, json.dumps(dict(payload), sort_keys=True), now + delay, now),
            )
            return "queued"

    def put_merged(
        self,
        kind: str,
        key: str,
        payload: Mapping[str, Any],
        *,
        merge: str,
        limit: int,
        digest: str | None = None,
        delay: float = 0.0,
    ) -> str:
        """:meth:`put` for hints that add up: a job with this key still waiting takes
        the union of its ``payload[merge]`` list and this one (sorted; beyond
        ``limit`` items it keeps none and says ``overflow``), and the earliest
        ``received``. Returns "queued", "coalesced" or "duplicate"."""
        now = time.time()
        self._maybe_prune(now)
        with self._transaction() as db:
            if digest is not None and not _remember(db, digest, now):
                return "duplicate"
            row = db.execute(
                "SELECT id, payload FROM jobs WHERE key = ? AND state = 'queued'", (key,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO jobs (kind, key, payload, available_at, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (kind, key, json.dumps(dict(payload), sort_keys=True), now + delay, now),
                )
                return "queued"
            merged = _merged(json.loads(row[1]), payload, merge, limit)
            db.execute(
                "UPDATE jobs SET payload = ? WHERE id = ?",
                (json.dumps(merged, sort_keys=True), row[0]),
            )
            return "coalesced"

    def claim(self, kinds: Sequence[str]) -> Job | None:
        """Lease the oldest ready job of one of ``kinds`` (or one whose lease ran out)."""
        now = time.time()
        marks = ",".join("?" for _ in kinds)
        with self._transaction() as db:
            row = db.execute(
                f"SELECT id, kind, key, payload, attempts FROM jobs WHERE kind IN ({marks})"
                " AND ((state = 'queued' AND available_at <= ?)"
                " OR (state = 'running' AND lease_until < ?))"
                " AND key NOT IN (SELECT key FROM jobs WHERE state = 'running' AND lease_until >= ?)"
                " ORDER BY available_at, id LIMIT 1",
                (*kinds, now, now, now),
            ).fetchone()
            if row is None:
                return None
            job_id, kind, key, payload, attempts = row
            db.execute(
                "UPDATE jobs SET state = 'running', lease_until = ?, attempts = attempts + 1"
                " WHERE id = ?",
                (now + self.visibility, job_id),
            )
        return Job(job_id, kind, key, json.loads(payload), attempts + 1)

    def running(self, kinds: Sequence[str]) -> list[Job]:
        """The jobs of ``kinds`` running now (their lease not run out), oldest first."""
        marks = ",".join("?" for _ in kinds)
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT id, kind, key, payload, attempts FROM jobs WHERE kind IN ({marks})"
                " AND state = 'running' AND lease_until >= ? ORDER BY id",
                (*kinds, time.time()),
            ).fetchall()
        return [Job(i, kind, key, json.loads(payload), n) for i, kind, key, payload, n in rows]

    def renew(self, job: Job) -> bool:
        """Extend ``job``'s lease by ``visibility`` from now; False if the lease is lost."""
        return self._settle(
            job, "UPDATE jobs SET lease_until = ? WHERE id = ?", time.time() + self.visibility
        )

    def done(self, job: Job) -> bool:
        return self._settle(job, "UPDATE jobs SET state = 'done', lease_until = 0 WHERE id = ?")

    def retry(self, job: Job, delay: float, error: str) -> bool:
        """Put ``job`` back, to run again after ``delay`` seconds."""
        return self._settle(
            job,
            "UPDATE jobs SET state = 'queued', available_at = ?, lease_until = 0,"
            " last_error = ? WHERE id = ?",
            time.time() + delay,
            error[:2000],
        )

    def fail(self, job: Job, error: str) -> bool:
        """Give up on ``job`` (kept, with its error, for the operator)."""
        return self._settle(
            job,
            "UPDATE jobs SET state = 'failed', lease_until = 0, last_error = ? WHERE id = ?",
            error[:2000],
        )

    def _settle(self, job: Job, update: str, *values: object) -> bool:
        """Run ``update`` on ``job`` only while this worker still holds its lease
        (running, same attempt); False when it does not."""
        guarded = update + " AND state = 'running' AND attempts = ?"
        with self._transaction() as db:
            cursor = db.execute(guarded, (*values, job.id, job.attempts))
            return cursor.rowcount == 1

    def interrupted(self, max_attempts: int, reason: str) -> list[Job]:
        """At start-up (with no worker alive): the jobs a previous process left
        running. Each is queued again at once, or failed when it has had
        ``max_attempts`` attempts; returns them (with their attempt counts)."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, kind, key, payload, attempts FROM jobs WHERE state = 'running'"
            ).fetchall()
            for job_id, _, _, _, attempts in rows:
                state = "failed" if attempts >= max_attempts else "queued"
                db.execute(
                    "UPDATE jobs SET state = ?, available_at = ?, lease_until = 0,"
                    " last_error = ? WHERE id = ?",
                    (state, time.time(), reason, job_id),
                )
        return [Job(i, k, key, json.loads(p), a) for i, k, key, p, a in rows]

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        with self._transaction() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def _maybe_prune(self, now: float) -> None:
        if now - self._pruned >= self.retention.interval:
            self.prune(now)

    def prune(self, now: float | None = None) -> tuple[int, int]:
        """Forget deliveries older than the replay window or beyond the count bound,
        and finished jobs older than ``job_days`` or beyond theirs; returns how many
        deliveries and jobs were removed."""
        now = time.time() if now is None else now
        self._pruned = now
        keep = self.retention
        marks = ",".join("?" for _ in FINISHED)
        with self._transaction() as db:
            deliveries = db.execute(
                "DELETE FROM deliveries WHERE seen < ? OR id IN (SELECT id FROM deliveries"
                " ORDER BY seen DESC LIMIT -1 OFFSET ?)",
                (now - keep.replay_window, max(keep.max_deliveries, 0)),
            ).rowcount
            jobs = db.execute(
                f"DELETE FROM jobs WHERE state IN ({marks}) AND (created < ? OR id IN"
                f" (SELECT id FROM jobs WHERE state IN ({marks})"
                " ORDER BY created DESC, id DESC LIMIT -1 OFFSET ?))",
                (
                    *FINISHED,
                    now - keep.job_days * 86400,
                    *FINISHED,
                    max(keep.max_finished_jobs, 0),
                ),
            ).rowcount
        return deliveries, jobs


def _merged(
    waiting: dict[str, Any], new: Mapping[str, Any], merge: str, limit: int
) -> dict[str, Any]:
    """A waiting job's payload with ``new``'s ``merge`` list added (see put_merged)."""
    items = set(waiting.get(merge) or ()) | set(new.get(merge) or ())
    overflow = bool(waiting.get("overflow") or new.get("overflow")) or len(items) > limit
    waiting[merge] = [] if overflow else sorted(items)
    waiting["overflow"] = overflow
    times = [t for t in (waiting.get("received"), new.get("received")) if t is not None]
    if times:
        waiting["received"] = min(times)
    return waiting


def _remember(db: sqlite3.Connection, mark: str, now: float) -> bool:
    """Record a delivery id or body digest; False if it is already remembered."""
    cursor = db.execute("INSERT OR IGNORE INTO deliveries (id, seen) VALUES (?, ?)", (mark, now))
    return cursor.rowcount == 1
