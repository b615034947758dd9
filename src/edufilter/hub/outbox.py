"""Block events (or minutes of counts) waiting for the hub: a bounded SQLite queue on disk,
oldest dropped (and counted) when full, so an outage of any length costs a bounded disk and
the oldest records."""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
from pathlib import Path

from edufilter.errors import EdufilterError


class Outbox:
    def __init__(self, path: Path, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()  # appended from the supervisor's loop, drained from a thread
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # AUTOINCREMENT: an id is never reused, so it names one event to the stream's deduplication.
            self._db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "payload BLOB NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            # Ids restart at 1 in a new outbox (a gateway set up again, a second agent of a site):
            # this random name keeps their message ids apart from an older outbox's.
            self._db.execute("CREATE TABLE IF NOT EXISTS identity (name TEXT NOT NULL)")
            self._db.execute("INSERT INTO identity SELECT ? WHERE NOT EXISTS (SELECT 1 FROM identity)",
                             (secrets.token_hex(8),))
            (self.identity,) = self._db.execute("SELECT name FROM identity").fetchone()
        except sqlite3.Error as error:
            raise EdufilterError(f"{path}: cannot open the outbox: {error}") from error

    def append(self, payloads: list[bytes]) -> None:
        """Queue payloads; when the outbox is full the oldest go, counted as dropped."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO outbox (payload) VALUES (?)", [(p,) for p in payloads])
                (count,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
                excess = count - self.limit
                if excess > 0:
                    self._db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                                     (excess,))
                    self._db.execute("INSERT INTO counters VALUES ('dropped', ?) "
                                     "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (excess,))
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                with contextlib.suppress(sqlite3.Error):  # a closed or broken database has nothing to undo
                    self._db.execute("ROLLBACK")
                raise EdufilterError(f"event outbox: {error}") from error

    def oldest(self, count: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return self._db.execute("SELECT id, payload FROM outbox ORDER BY id LIMIT ?", (count,)).fetchall()

    def remove_through(self, last_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id <= ?", (last_id,))

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def dropped(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
            return row[0] if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
