"""Block events: what was blocked or monitored, for which group, when; kept for a bounded time.

Privacy (GDPR; the clients are mostly minors):
- No raw client address is stored unless the client's group asks for it
  (`log_client_address`); every event instead carries a pseudonym, HMAC-SHA256 of the
  address under a random 32-byte key, truncated to 48 bits ("c-" + 12 hex digits).
  A keyed hash, because an unkeyed one over a school's few thousand addresses is undone by
  trying them all.
- The key lives for one *school-local* day (the zone passed in, settings.timezone): within
  that day the coordinator can see that one device tripped forty blocks; a school day is
  never split by the change of key, which a UTC day would do for schools far from UTC.
  At rotation every other day's key file is overwritten and removed and the key dropped
  from memory, so a past day's pseudonyms can no longer be linked to an address, nor
  to the next day's pseudonyms: no browsing history per pupil builds up across days.
  The key is kept in a 0600 file only so that a daemon restart does not change the
  pseudonyms within a day.
- Retention is bounded (default 14 days, at most 366) and enforced by `purge`, in SQLite
  (secure_delete, so purged rows do not linger in free pages) and in the JSON-lines files.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from enum import StrEnum
from pathlib import Path

from edufilter.enforce.blockpage import new_reference
from edufilter.errors import EdufilterError
from edufilter.output.database import (
    DEFAULT_RETENTION_DAYS,
    EventDatabase,
    check_retention,
)
from edufilter.output.stats import StatsStore
from edufilter.policy.model import check_id

KEY_BYTES = 32
MAX_QUERY_LIMIT = 1000
_KEY_FILE = re.compile(r"pseudonym-(\d{4}-\d{2}-\d{2})\.key")
_JSONL_FILE = re.compile(r"events-(\d{4}-\d{2}-\d{2})\.jsonl")
_REFERENCE = re.compile(r"[A-Z2-7]{8}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_TEXT = 300  # a DNS name is at most 253 characters, "[IPv6]:port" at most 47


class EventKind(StrEnum):
    """What the decision was made on."""

    DNS = "dns"
    SNI = "sni"
    HTTP_HOST = "http_host"
    QUIC_SNI = "quic_sni"
    ADDRESS = "address"  # the destination address matched a CIDR entry
    DEFAULT = "default"  # no name within the inspection bound: the group's default


@dataclass(frozen=True, slots=True)
class BlockEvent:
    """One blocked (or monitored) flow or DNS query; validated on creation."""

    time: datetime  # aware; stored in UTC
    group: str
    category: str | None  # category or admin-list name; None for the group's default
    name: str | None  # host name; None for a decision on the address alone
    destination: str | None  # "address:port", only when there is no name
    kind: EventKind
    action: str  # block, drop, sinkhole, reject, monitor...
    client: str  # pseudonym
    client_address: str | None  # only when the group's policy asks for it
    reference: str  # shown on the block page
    worker: int

    def __post_init__(self) -> None:
        if not isinstance(self.time, datetime) or self.time.utcoffset() is None:
            raise EdufilterError(f"event time {self.time!r} is not a date and time with a time zone")
        object.__setattr__(self, "time", self.time.astimezone(timezone.utc))
        object.__setattr__(self, "kind", _event_kind(self.kind))
        _check_slug(self.group, "event group")
        _check_slug(self.action, "event action")
        if self.category is not None:
            _check_slug(self.category, "event category")
        for value, what in (
            (self.name, "event name"),
            (self.destination, "event destination"),
            (self.client_address, "event client address"),
        ):
            if value is not None:
                _check_text(value, what)
        _check_text(self.client, "event client")
        if (self.name is None) == (self.destination is None):
            raise EdufilterError("an event has either a name or a destination, not both or neither")
        if not isinstance(self.reference, str) or not _REFERENCE.fullmatch(self.reference):
            raise EdufilterError(f"event reference {self.reference!r}: use 8 base32 characters")
        if isinstance(self.worker, bool) or not isinstance(self.worker, int) or self.worker < 0:
            raise EdufilterError(f"event worker {self.worker!r} is not a worker number")

    def to_dict(self) -> dict[str, object]:
        fields = {name: getattr(self, name) for name in self.__slots__}  # asdict() deep-copies: 25x slower
        fields["time"] = self.time.isoformat(timespec="microseconds")
        fields["kind"] = str(self.kind)
        return fields

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BlockEvent:
        if not isinstance(data, Mapping):
            raise EdufilterError(f"an event is an object, not {type(data).__name__}")
        unknown = set(data) - set(cls.__slots__)
        missing = set(cls.__slots__) - set(data)
        if unknown or missing:
            raise EdufilterError(f"event fields: unknown {sorted(unknown)}, missing {sorted(missing)}")
        time = data["time"]
        if not isinstance(time, str):
            raise EdufilterError(f"event time {time!r} is not an ISO 8601 text")
        try:
            moment = datetime.fromisoformat(time)
        except ValueError as error:
            raise EdufilterError(f"event time {time!r} is not an ISO 8601 text") from error
        return cls(**{**data, "time": moment})  # type: ignore[arg-type]


class Pseudonymiser:
    """Keyed pseudonyms for client addresses, with a key per school-local day.

    Only the supervisor holds it: workers send raw addresses over their socketpair, never to
    disk. Call `rotate(now)` at start and every minute or so; it is cheap when the day is unchanged.
    """

    def __init__(self, key_dir: Path | str, zone: tzinfo = timezone.utc) -> None:
        self.key_dir = Path(key_dir)
        self.zone = zone
        self._day: date | None = None
        self._key = b""

    def pseudonym(self, client_address: str, when: datetime) -> str:
        # A late event from before midnight takes the new key: the old one is gone for good.
        day = _aware(when, "pseudonym time").astimezone(self.zone).date()
        if self._day is None or day > self._day:
            self._rotate_to(day)
        digest = hmac.new(self._key, _normalised_address(client_address).encode(), hashlib.sha256)
        return "c-" + digest.hexdigest()[:12]

    def rotate(self, now: datetime) -> None:
        """Use the key of `now`'s day, destroying every other day's key."""
        day = _aware(now, "rotation time").astimezone(self.zone).date()
        if day != self._day:
            self._rotate_to(day)

    def block_event(
        self,
        *,
        time: datetime,
        group: str,
        category: str | None,
        name: str | None,
        destination: str | None,
        kind: EventKind | str,
        action: str,
        client_address: str,
        worker: int,
        log_client_address: bool,
        reference: str | None = None,
    ) -> BlockEvent:
        """The event for a worker's report; the raw address is kept only when the group asks.

        `reference` is the one the worker showed on a block page; without one a new one is made.
        """
        return BlockEvent(
            time=time,
            group=group,
            category=category,
            name=name,
            destination=destination,
            kind=_event_kind(kind),
            action=action,
            client=self.pseudonym(client_address, time),
            client_address=client_address if log_client_address else None,
            reference=new_reference() if reference is None else reference,
            worker=worker,
        )

    def _rotate_to(self, day: date) -> None:
        self._day, self._key = None, b""  # never hash with a stale or empty key
        try:
            self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for path in self.key_dir.iterdir():
                match = _KEY_FILE.fullmatch(path.name)
                if match and match[1] != day.isoformat():
                    _destroy(path)
            self._key = _load_or_create_key(self.key_dir / f"pseudonym-{day.isoformat()}.key")
        except OSError as error:
            raise EdufilterError(f"{self.key_dir}: cannot rotate the pseudonym key: {error}") from error
        self._day = day


class EventStore:
    """Block events in SQLite (for queries) and in one JSON-lines file per UTC day (for shipping)."""

    def __init__(
        self,
        path: Path | str,
        jsonl_dir: Path | str | None,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        *,
        start_over_if_damaged: bool = False,
    ) -> None:
        self.retention_days = check_retention(retention_days)
        self.jsonl_dir = None if jsonl_dir is None else Path(jsonl_dir)
        self.database = EventDatabase(path, start_over_if_damaged=start_over_if_damaged)
        self.stats = StatsStore(self.database, retention_days)

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def record(self, events: Sequence[BlockEvent]) -> None:
        """Store a batch in one transaction, then append it to the day files."""
        if not events:
            return
        rows = [
            (
                _microseconds(event.time), event.group, event.category, event.name, event.destination,
                str(event.kind), event.action, event.client, event.client_address, event.reference,
                event.worker,
            )
            for event in events
        ]
        self.database.write(
            lambda db: db.executemany(
                "INSERT INTO events (time_us, group_name, category, name, destination, kind, action,"
                " client, client_address, reference, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        )
        if self.jsonl_dir is not None:
            _append_lines(self.jsonl_dir, events)

    def query(
        self,
        group: str | None = None,
        category: str | None = None,
        action: str | None = None,
        client: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        reference: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[BlockEvent], str | None]:
        """Events newest first, and the cursor of the next page (None on the last page).

        `since` is inclusive, `until` exclusive. A cursor marks a place in the order, so
        events recorded meanwhile neither repeat nor shift later pages.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_QUERY_LIMIT:
            raise EdufilterError(f"limit {limit!r}: use 1 to {MAX_QUERY_LIMIT}")
        conditions: list[str] = []
        values: list[object] = []
        for column, value in (
            ("group_name", group),
            ("category", category),
            ("action", action),
            ("client", client),
            ("reference", None if reference is None else reference.strip().upper()),
        ):
            if value is not None:
                conditions.append(f"{column} = ?")
                values.append(value)
        if since is not None:
            conditions.append("time_us >= ?")
            values.append(_microseconds(_aware(since, "since")))
        if until is not None:
            conditions.append("time_us < ?")
            values.append(_microseconds(_aware(until, "until")))
        if cursor is not None:
            conditions.append("(time_us, id) < (?, ?)")
            values.extend(_decode_cursor(cursor))
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT id, time_us, group_name, category, name, destination, kind, action, client,"
                f" client_address, reference, worker FROM events {where}"
                " ORDER BY time_us DESC, id DESC LIMIT ?",
                (*values, limit + 1),
            ).fetchall()
        page = rows[:limit]
        events = [_event_from_row(row[1:]) for row in page]
        next_cursor = _encode_cursor(page[-1][1], page[-1][0]) if len(rows) > limit else None
        return events, next_cursor

    def purge(self, now: datetime) -> int:
        """Drop events older than the retention, rows and day files; the number of rows dropped."""
        cutoff = _aware(now, "purge time") - timedelta(days=self.retention_days)
        dropped = self.database.write(
            lambda db: db.execute("DELETE FROM events WHERE time_us < ?", (_microseconds(cutoff),)).rowcount
        )
        with self.database.reading() as db:
            # Old pages also sit in the write-ahead log until it is checkpointed and truncated.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if self.jsonl_dir is not None and self.jsonl_dir.is_dir():
            try:
                for path in self.jsonl_dir.iterdir():
                    match = _JSONL_FILE.fullmatch(path.name)
                    # A day file goes once its first possible event is past the retention.
                    if match and datetime.fromisoformat(match[1]).replace(tzinfo=timezone.utc) < cutoff:
                        path.unlink(missing_ok=True)
            except OSError as error:
                raise EdufilterError(f"{self.jsonl_dir}: cannot remove old event lines: {error}") from error
        return int(dropped)


def _append_lines(jsonl_dir: Path, events: Sequence[BlockEvent]) -> None:
    lines_by_day: dict[str, list[str]] = {}
    for event in events:
        line = json.dumps(event.to_dict(), separators=(",", ":")) + "\n"
        lines_by_day.setdefault(event.time.date().isoformat(), []).append(line)
    try:
        jsonl_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for day, lines in lines_by_day.items():
            descriptor = os.open(jsonl_dir / f"events-{day}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with open(descriptor, "a", encoding="ascii") as file:
                file.writelines(lines)
    except OSError as error:
        raise EdufilterError(f"{jsonl_dir}: cannot write event lines: {error}") from error


def _event_from_row(row: Sequence[object]) -> BlockEvent:
    # The columns after time_us are selected in the order of BlockEvent's fields.
    return BlockEvent(_EPOCH + timedelta(microseconds=int(row[0])), *row[1:])  # type: ignore[arg-type]


def _encode_cursor(time_us: object, row_id: object) -> str:
    return base64.urlsafe_b64encode(f"{time_us}.{row_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        time_us, row_id = text.split(".")
        return int(time_us), int(row_id)
    except (ValueError, UnicodeDecodeError) as error:
        raise EdufilterError(f"cursor {cursor[:40]!r} is not one this server gave out") from error


def _load_or_create_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
        if len(key) == KEY_BYTES:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(KEY_BYTES)
    temporary = path.with_name(path.name + ".new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # also when a stale temporary file had another mode
        os.write(descriptor, key)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    return key


def _destroy(path: Path) -> None:
    # Overwriting first helps on plain file systems; on copy-on-write or flash storage only
    # the unlink is sure, which is why the key never leaves this directory.
    try:
        with open(path, "r+b") as file:
            file.write(bytes(KEY_BYTES))
            file.flush()
            os.fsync(file.fileno())
    except OSError:
        pass
    path.unlink(missing_ok=True)


def _normalised_address(client_address: str) -> str:
    """One spelling per address, so "2001:2::1" and "2001:0002::1" get one pseudonym."""
    try:
        return ipaddress.ip_address(client_address.strip()).compressed
    except ValueError:
        return client_address.strip().lower()  # a MAC address or another client identity


def _microseconds(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise EdufilterError(f"{what} {value!r} is not a date and time with a time zone")
    return value.astimezone(timezone.utc)


def _event_kind(value: object) -> EventKind:
    try:
        return EventKind(value)
    except ValueError as error:
        raise EdufilterError(f"event kind {value!r}: use one of {', '.join(EventKind)}") from error


def _check_slug(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise EdufilterError(f"{what} {value!r} is not a text")
    check_id(what, value)


def _check_text(value: object, what: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT or not value.isprintable():
        raise EdufilterError(f"{what} {value!r}: use 1 to {_MAX_TEXT} printable characters")
