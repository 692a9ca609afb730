"""The run journal: every commit status the bot sets, kept in SQLite.

A status is written to the journal *before* it is sent to the forge, so a
bot that crashed (or was killed) can find the statuses it left pending or
running when it starts again and fail them (:func:`bot.runtime.workflow.recover`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.forge.base import FINAL_STATES

_SCHEMA = """
CREATE TABLE IF NOT EXISTS statuses (
    repository  TEXT NOT NULL,
    sha         TEXT NOT NULL,
    context     TEXT NOT NULL,
    ref         TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    updated     REAL NOT NULL,
    PRIMARY KEY (repository, sha, context)
)
"""


@dataclass(frozen=True)
class StatusRecord:
    repository: str
    sha: str
    context: str
    ref: str
    state: str
    description: str
    updated: float


class Journal:
    """The journal at ``path`` (a SQLite file), or in memory when ``path`` is None."""

    def __init__(self, path: str | Path | None = None):
        self._path = str(path) if path else ":memory:"
        self._lock = threading.Lock()
        self._memory: sqlite3.Connection | None = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)

    @classmethod
    def in_state_dir(cls, state_dir: str) -> Journal:
        """The journal of a bot whose state lives in ``state_dir`` (memory when empty)."""
        return cls(Path(state_dir) / "journal.sqlite" if state_dir else None)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._path == ":memory:":
                if self._memory is None:
                    self._memory = sqlite3.connect(":memory:", check_same_thread=False)
                db = self._memory
                with db:
                    yield db
                return
            db = sqlite3.connect(self._path, timeout=30)
            try:
                with db:
                    yield db
            finally:
                db.close()

    def record(
        self, repository: str, sha: str, context: str, state: str, description: str, ref: str = ""
    ) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO statuses (repository, sha, context, ref, state, description, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (repository, sha, context) DO UPDATE SET"
                " ref = excluded.ref, state = excluded.state,"
                " description = excluded.description, updated = excluded.updated",
                (repository, sha, context, ref, state, description, time.time()),
            )

    def unfinished(self, repository: str | None = None) -> list[StatusRecord]:
        """Statuses left pending or running (of one repository, or all)."""
        marks = ",".join("?" for _ in FINAL_STATES)
        query = f"SELECT * FROM statuses WHERE state NOT IN ({marks})"
        params: list[str] = sorted(FINAL_STATES)
        if repository is not None:
            query += " AND repository = ?"
            params.append(repository)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY updated", params).fetchall()
        return [StatusRecord(*row) for row in rows]

    def get(self, repository: str, sha: str, context: str) -> StatusRecord | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM statuses WHERE repository = ? AND sha = ? AND context = ?",
                (repository, sha, context),
            ).fetchone()
        return StatusRecord(*row) if row else None
