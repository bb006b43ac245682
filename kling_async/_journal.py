"""``Journal``: a durable record of a batch in SQLite, so a killed batch resumes safely.

Before each POST it stores the request and its Idempotency-Key; after, the task id; then
status changes and the finished file. Rerunning the same batch with the same journal
skips finished items, re-attaches unfinished task ids without a new POST, and re-sends
items whose POST outcome was unknown with the same key, so the server replays instead
of charging twice. The API key is never written.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs

from ._models import TaskError, TaskSnapshot, TaskStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    body TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    task_id TEXT,
    state TEXT NOT NULL,
    model TEXT,
    result_url TEXT,
    error_code TEXT,
    error_message TEXT,
    credits REAL,
    path TEXT,
    item_key TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@attrs.frozen(kw_only=True)
class JournalEntry:
    """What the journal knows of one request of a batch.

    ``state`` is ``submitting`` (POST may have been sent), ``submitted`` (task id
    known), ``processing``, ``completed``, ``failed``, ``refused`` (the POST was
    answered with an error) or ``downloaded``. ``item_key`` is the item's own key.
    """

    index: int
    digest: str
    idempotency_key: str
    state: str
    task_id: str | None = None
    model: str | None = None
    result_url: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    credits: float | None = None
    path: str | None = None
    item_key: str | None = None

    def snapshot(self) -> TaskSnapshot:
        """A snapshot rebuilt from the journal, for a task finished in an earlier run."""
        if self.task_id is None:
            raise ValueError(f"journal entry {self.index} has no task id")
        failed = self.state == "failed"
        return TaskSnapshot(
            id=self.task_id, model=self.model or "", raw_status=self.state,
            status=TaskStatus.FAILED if failed else TaskStatus.COMPLETED,
            progress=0 if failed else 100,
            results=(self.result_url,) if self.result_url else (),
            error=TaskError(code=self.error_code or "unknown_error",
                            message=self.error_message or "") if failed else None)


UNFINISHED_STATES = frozenset({"submitting", "submitted", "processing"})
FAILED_STATES = frozenset({"failed", "refused"})


class JournalMismatchError(ValueError):
    """The journal records a different batch than the one given (nothing was sent).

    Attributes:
        index: the first request that differs.
    """

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def digest_of(body: Mapping[str, Any]) -> str:
    """A stable fingerprint of a request body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Journal:
    """A batch journal in one SQLite file (WAL mode, file mode 0600).

    Args:
        path: the database file; created if missing.

    Writes run in a worker thread, one at a time, each in its own transaction, so
    a kill at any moment leaves the file consistent.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(descriptor)
        os.chmod(self.path, 0o600)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(items)")}
        if "item_key" not in columns:  # a journal written before items had keys
            self._db.execute("ALTER TABLE items ADD COLUMN item_key TEXT")
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"<kling_async.Journal {str(self.path)!r}>"

    # -- reading --------------------------------------------------------------------------

    def entries(self) -> dict[int, JournalEntry]:
        """Every entry, by request index."""
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, digest, idem_key, state, task_id, model, result_url, error_code,"
                " error_message, credits, path, item_key FROM items").fetchall()
        return {row[0]: JournalEntry(
            index=row[0], digest=row[1], idempotency_key=row[2], state=row[3],
            task_id=row[4], model=row[5], result_url=row[6], error_code=row[7],
            error_message=row[8], credits=row[9], path=row[10], item_key=row[11])
            for row in rows}

    def unfinished(self) -> list[JournalEntry]:
        """Entries whose task may still be running, or whose POST outcome is unsettled:
        paid for (or possibly paid for) and not yet finished."""
        return [e for e in self.entries().values() if e.state in UNFINISHED_STATES]

    def forget_failures(self) -> list[JournalEntry]:
        """Remove failed and refused entries (returned), so that running the batch again
        submits those requests again, with new idempotency keys."""
        failed = [e for e in self.entries().values() if e.state in FAILED_STATES]
        with self._lock:
            self._db.executemany("DELETE FROM items WHERE idx = ?", [(e.index,) for e in failed])
        return failed

    def meta(self, name: str) -> str | None:
        """A value stored with :meth:`set_meta`."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        """Store a named value (e.g. which server the batch runs on)."""
        self._write("INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                    "SET value = excluded.value", (name, value))

    # -- writing --------------------------------------------------------------------------

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, params)

    async def _awrite(self, sql: str, params: tuple[Any, ...]) -> None:
        # The write finishes even if the caller is cancelled: a half-known state is worse.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._write, sql, params)

    async def begin(self, index: int, digest: str, body: Mapping[str, Any], key: str, *,
                    item_key: str | None = None) -> None:
        """Record that request ``index`` (with the item's own ``item_key``) is about to
        be POSTed with the idempotency key ``key``."""
        await self._awrite(
            "INSERT INTO items(idx, digest, body, idem_key, state, item_key) VALUES (?, ?, "
            "?, ?, 'submitting', ?) ON CONFLICT(idx) DO UPDATE SET state = 'submitting'",
            (index, digest, json.dumps(body, sort_keys=True), key, item_key))

    async def submitted(self, index: int, snapshot: TaskSnapshot) -> None:
        """Record the task id the POST returned."""
        await self._awrite("UPDATE items SET task_id = ?, model = ?, state = 'submitted' "
                           "WHERE idx = ?", (snapshot.id, snapshot.model, index))

    async def refused(self, index: int, code: str | None, message: str) -> None:
        """Record that the POST was answered with an error (no task was created)."""
        await self._awrite("UPDATE items SET state = 'refused', error_code = ?, "
                           "error_message = ? WHERE idx = ?", (code, message, index))

    async def status(self, index: int, snapshot: TaskSnapshot) -> None:
        """Record a status change (terminal ones with their result or error)."""
        if snapshot.status is TaskStatus.COMPLETED:
            credits = snapshot.usage.credits_used if snapshot.usage else None
            await self._awrite("UPDATE items SET state = 'completed', result_url = ?, "
                               "credits = ? WHERE idx = ?", (snapshot.video_url, credits, index))
        elif snapshot.status is TaskStatus.FAILED:
            error = snapshot.error
            await self._awrite("UPDATE items SET state = 'failed', error_code = ?, "
                               "error_message = ? WHERE idx = ?",
                               (error.code if error else None, error.message if error else None,
                                index))
        else:
            await self._awrite("UPDATE items SET state = 'processing' WHERE idx = ? AND "
                               "state = 'submitted'", (index,))

    async def downloaded(self, index: int, path: Path) -> None:
        """Record that the finished file is on disk at ``path``."""
        await self._awrite("UPDATE items SET state = 'downloaded', path = ? WHERE idx = ?",
                           (str(path), index))
