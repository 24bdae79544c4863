"""The agent's local queue (the spec's "Local Queue (Offline Mode)"): discovery results written to a
SQLite file before they are posted, and removed only once the manager has answered for them.

Every batch gets its `Idempotency-Key` (a UUID) when it is queued, and keeps it through every retry and
process restart, so the manager stores a batch once however often it is sent. Batches go out in the
order they were queued. With no state directory the queue is in memory: it then survives outages of
the manager, not a restart of the agent.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILENAME = "spool.sqlite3"
DISCOVERY_RESULTS = "discovery_results"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    site_id TEXT NOT NULL,
    run_id TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL,
    queued_at TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Batch:
    key: str  # the Idempotency-Key
    type: str
    site_id: str
    run_id: str
    body: dict[str, Any]
    queued_at: str


class Spool:
    def __init__(self, state_dir: str | Path | None = None):
        if state_dir is None:
            self.path = ":memory:"
        else:
            directory = Path(state_dir)
            directory.mkdir(parents=True, exist_ok=True)
            self.path = str(directory / FILENAME)
        # Autocommit: each statement is its own transaction, durable when it returns (synchronous=FULL).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)

    def put(
        self, *, site_id: str, body: dict[str, Any], run_id: str = "", kind: str = DISCOVERY_RESULTS
    ) -> str:
        """Queue a batch; returns its Idempotency-Key."""
        key = str(uuid.uuid4())
        queued_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            self._db.execute(
                "INSERT INTO batches (key, type, site_id, run_id, body, queued_at) VALUES (?, ?, ?, ?, ?, ?)",
                (key, kind, site_id, run_id, json.dumps(body, separators=(",", ":")), queued_at),
            )
        return key

    def first(self) -> Batch | None:
        """The oldest batch, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT key, type, site_id, run_id, body, queued_at FROM batches ORDER BY seq LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        key, kind, site_id, run_id, body, queued_at = row
        return Batch(
            key=key, type=kind, site_id=site_id, run_id=run_id, body=json.loads(body), queued_at=queued_at
        )

    def keys(self) -> list[str]:
        with self._lock:
            return [key for (key,) in self._db.execute("SELECT key FROM batches ORDER BY seq")]

    def remove(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM batches WHERE key = ?", (key,)).rowcount > 0

    def drop_run(self, run_id: str) -> list[str]:
        """Remove the batches of a run (it was cancelled); returns their keys."""
        with self._lock:
            keys = [k for (k,) in self._db.execute("SELECT key FROM batches WHERE run_id = ?", (run_id,))]
            self._db.execute("DELETE FROM batches WHERE run_id = ?", (run_id,))
        return keys

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM batches").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
