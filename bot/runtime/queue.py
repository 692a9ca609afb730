"""A durable work queue in SQLite: survives restarts, delivers at least once.

A claimed job is leased for ``visibility`` seconds; a worker that dies
leaves its job to be claimed again when the lease runs out. Jobs with the
same key that are still waiting are coalesced, and webhook delivery ids are
remembered so replays and duplicate deliveries are dropped.
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
    """
    CREATE TABLE IF NOT EXISTS deliveries (
        id   TEXT PRIMARY KEY,
        seen REAL NOT NULL
    )
    """,
)
DELIVERY_MEMORY = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    key: str
    payload: Mapping[str, Any]
    attempts: int


class Queue:
    """The queue in the SQLite file ``path``."""

    def __init__(self, path: str | Path, *, visibility: float = 900.0):
        self.path = Path(path)
        self.visibility = visibility
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
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM deliveries WHERE seen < ?", (now - DELIVERY_MEMORY,))
            cursor = db.execute(
                "INSERT OR IGNORE INTO deliveries (id, seen) VALUES (?, ?)", (delivery, now)
            )
            return cursor.rowcount == 0

    def put(
        self,
        kind: str,
        key: str,
        payload: Mapping[str, Any],
        *,
        delivery: str | None = None,
        delay: float = 0.0,
    ) -> str:
        """Queue a job: "queued", "coalesced" (a job with this key is already
        waiting) or "duplicate" (``delivery`` was seen before). The delivery is
        remembered in the same transaction, so a failed put can be redelivered."""
        now = time.time()
        with self._transaction() as db:
            if delivery is not None:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO deliveries (id, seen) VALUES (?, ?)", (delivery, now)
                )
                if cursor.rowcount == 0:
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

    def done(self, job: Job) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = 'done', lease_until = 0 WHERE id = ?", (job.id,))

    def retry(self, job: Job, delay: float, error: str) -> None:
        """Put ``job`` back, to run again after ``delay`` seconds."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'queued', available_at = ?, lease_until = 0,"
                " last_error = ? WHERE id = ?",
                (time.time() + delay, error[:2000], job.id),
            )

    def fail(self, job: Job, error: str) -> None:
        """Give up on ``job`` (kept, with its error, for the operator)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'failed', lease_until = 0, last_error = ? WHERE id = ?",
                (error[:2000], job.id),
            )

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        with self._transaction() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}
