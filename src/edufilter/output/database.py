"""The events database (`<state>/events.sqlite`): block events and per-minute counts.

Events are not policy: a damaged file is moved aside with a timestamp and a new one started
(when the owner allows it), so that losing the log never stops filtering.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from edufilter import logs
from edufilter.errors import EdufilterError

DEFAULT_RETENTION_DAYS = 14
MAX_RETENTION_DAYS = 366  # a school year and its holidays; never unbounded
BUSY_TIMEOUT_MS = 5000

# Index n holds the statements that take the schema from version n to n + 1 (PRAGMA
# user_version); append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            time_us INTEGER NOT NULL,
            group_name TEXT NOT NULL,
            category TEXT,
            name TEXT,
            destination TEXT,
            kind TEXT NOT NULL,
            action TEXT NOT NULL,
            client TEXT NOT NULL,
            client_address TEXT,
            reference TEXT NOT NULL,
            worker INTEGER NOT NULL
        )""",
        "CREATE INDEX events_time ON events (time_us)",
        "CREATE INDEX events_reference ON events (reference)",
        "CREATE INDEX events_client ON events (client, time_us)",
        """CREATE TABLE stats_minutes (
            minute INTEGER NOT NULL,
            group_name TEXT NOT NULL,
            category TEXT NOT NULL,
            verdict TEXT NOT NULL,
            flows INTEGER NOT NULL,
            packets INTEGER NOT NULL,
            PRIMARY KEY (minute, group_name, category, verdict)
        ) WITHOUT ROWID""",
    ),
    # The same counts per hour, kept beside the minutes so that windows of hourly or longer
    # buckets (7d, 30d...) read 60 times fewer rows; filled from the minutes already stored.
    (
        """CREATE TABLE stats_hours (
            hour INTEGER NOT NULL,
            group_name TEXT NOT NULL,
            category TEXT NOT NULL,
            verdict TEXT NOT NULL,
            flows INTEGER NOT NULL,
            packets INTEGER NOT NULL,
            PRIMARY KEY (hour, group_name, category, verdict)
        ) WITHOUT ROWID""",
        """INSERT INTO stats_hours (hour, group_name, category, verdict, flows, packets)
            SELECT minute / 60, group_name, category, verdict, sum(flows), sum(packets) FROM stats_minutes
            GROUP BY minute / 60, group_name, category, verdict""",
    ),
)

# SQLite result codes that mean the file itself is damaged, not that the call was wrong.
_DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

log = logging.getLogger(logs.EVENTS)
T = TypeVar("T")


def check_retention(days: int) -> int:
    """Retention in days, from 1 to MAX_RETENTION_DAYS: never unbounded."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
        raise EdufilterError(f"event retention {days!r}: use 1 to {MAX_RETENTION_DAYS} days")
    return days


class EventDatabase:
    """One connection to the events database, shared by the event and stats stores.

    Calls are serialised by a lock, so an asyncio supervisor may run them in worker threads.
    """

    def __init__(self, path: Path | str, *, start_over_if_damaged: bool = False) -> None:
        self.path = Path(path)
        self.start_over_if_damaged = start_over_if_damaged
        self.lock = threading.RLock()
        try:
            self.connection = self._connect_checked()
        except _Damaged as damage:
            self._start_over(str(damage))

    def close(self) -> None:
        with self.lock:
            self.connection.close()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self.lock, self._errors():
            yield self.connection

    def write(self, statements: Callable[[sqlite3.Connection], T]) -> T:
        """Run `statements` in one write transaction, all or nothing."""
        with self.lock, self._errors():
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                result = statements(self.connection)
                self.connection.execute("COMMIT")
            except BaseException:
                if self.connection.in_transaction:
                    self.connection.execute("ROLLBACK")
                raise
            return result

    def _start_over(self, damage: str) -> None:
        """Move the damaged file aside (with a UTC timestamp) and start an empty one, if allowed."""
        message = f"{self.path}: event database is damaged ({damage})"
        if not self.start_over_if_damaged:
            raise EdufilterError(
                f"{message}; move it aside to start a new one (events are not policy: filtering does not need them)"
            )
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        moved = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        try:
            for suffix in ("", "-wal", "-shm"):
                source = self.path.with_name(self.path.name + suffix)
                if source.exists():
                    source.rename(moved.with_name(moved.name + suffix))
        except OSError as error:
            raise EdufilterError(f"{message}; cannot move it aside: {error}") from error
        self.connection = self._connect_checked()
        log.warning("%s; moved it aside to %s and started a new one", message, moved)

    def _connect_checked(self) -> sqlite3.Connection:
        try:
            # Pseudonyms and perhaps addresses: readable by the daemon only; SQLite gives the
            # -wal and -shm files the main file's mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise EdufilterError(f"{self.path}: cannot open the event database: {error}") from error
        try:
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            # Events carry pseudonyms: once purged they must not linger in free pages.
            connection.execute("PRAGMA secure_delete = ON")
            # Consistent after a power cut in WAL mode; the last batch may be lost, which events can afford.
            connection.execute("PRAGMA synchronous = NORMAL")
            problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise _Damaged(problems[0])
            _migrate(connection, self.path)
            return connection
        except sqlite3.DatabaseError as error:
            connection.close()
            if error.sqlite_errorcode & 0xFF in _DAMAGE_CODES:
                raise _Damaged(str(error)) from error
            raise EdufilterError(f"{self.path}: event database error: {error}") from error
        except BaseException:
            connection.close()
            raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            if getattr(error, "sqlite_errorcode", 0) & 0xFF not in _DAMAGE_CODES:
                raise EdufilterError(f"{self.path}: event database error: {error}") from error
            if self.start_over_if_damaged:
                self.connection.close()
            self._start_over(str(error))  # raises when not allowed
            # This call's data is lost; the next one works on the new file.
            raise EdufilterError(f"{self.path}: event database was damaged ({error}); started a new one") from error


class _Damaged(Exception):
    """The file is not a sound SQLite database (only ever handled inside this module)."""


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    if _schema_version(connection, path) == len(MIGRATIONS):
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated meanwhile.
        known = _schema_version(connection, path)
        if known == 0 and connection.execute("SELECT 1 FROM sqlite_master").fetchone():
            raise EdufilterError(f"{path}: an SQLite file, but not an edufilter event database")
        for migration in MIGRATIONS[known:]:
            for statement in migration:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _schema_version(connection: sqlite3.Connection, path: Path) -> int:
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise EdufilterError(
            f"{path}: event database schema version {version} is newer than this edufilter "
            f"knows ({len(MIGRATIONS)}); upgrade edufilter"
        )
    return version
