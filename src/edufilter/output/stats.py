"""Counts per minute, group, category and verdict (no client identity), and Prometheus text.

The supervisor turns the workers' counter snapshots into deltas and adds them here; the rows
share the events database and its retention.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from edufilter.errors import EdufilterError
from edufilter.output.database import EventDatabase, check_retention

# Window → (span, bucket): each window has 30 to 365 buckets, the last one the current.
WINDOWS: dict[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), timedelta(minutes=1)),
    "6h": (timedelta(hours=6), timedelta(minutes=5)),
    "24h": (timedelta(hours=24), timedelta(minutes=15)),
    "7d": (timedelta(days=7), timedelta(hours=1)),
    "30d": (timedelta(days=30), timedelta(hours=6)),
    "90d": (timedelta(days=90), timedelta(days=1)),
    "365d": (timedelta(days=365), timedelta(days=1)),
}
DIMENSIONS = {"verdict": "verdict", "group": "group_name", "category": "category"}
_MINUTE = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class CounterDelta(NamedTuple):
    """What one worker counted in one minute for one group, category and verdict."""

    minute: datetime  # aware; truncated to the minute
    group: str
    category: str | None  # None: the group's default decided
    verdict: str
    flows: int
    packets: int


@dataclass(frozen=True, slots=True)
class StatsRow:
    """Totals of one time bucket for one value of the chosen dimension."""

    start: datetime  # UTC; buckets are aligned on the epoch (days on UTC midnight)
    key: str | None  # the group, category (None: a group's default) or verdict
    flows: int
    packets: int


class StatsStore:
    """Per-minute counts in the events database, kept as long as the events."""

    def __init__(self, database: EventDatabase, retention_days: int) -> None:
        self.database = database
        self.retention_days = check_retention(retention_days)

    def add(self, deltas: Iterable[tuple[datetime, str, str | None, str, int, int]]) -> None:
        """Add deltas in one transaction; a delta is (minute, group, category, verdict, flows, packets)."""
        rows = [row for row in map(_row, deltas) if row[4] or row[5]]
        if not rows:
            return
        hours: dict[tuple[int, str, str, str], list[int]] = {}
        for minute, group, category, verdict, flows, packets in rows:
            totals = hours.setdefault((minute // 60, group, category, verdict), [0, 0])
            totals[0] += flows
            totals[1] += packets

        def write(db: sqlite3.Connection) -> None:
            for table, unit, values in (("stats_minutes", "minute", rows),
                                        ("stats_hours", "hour", [(*key, *totals) for key, totals in hours.items()])):
                db.executemany(
                    f"INSERT INTO {table} ({unit}, group_name, category, verdict, flows, packets)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                    " flows = flows + excluded.flows, packets = packets + excluded.packets",
                    values,
                )

        self.database.write(write)

    def query(
        self,
        window: str,
        by: str,
        *,
        now: datetime | None = None,
        group: str | None = None,
        category: str | None = None,
        verdict: str | None = None,
    ) -> list[StatsRow]:
        """Totals per bucket of `window` (see WINDOWS) and per value of `by`; empty buckets left out."""
        if window not in WINDOWS:
            raise EdufilterError(f"stats window {window!r}: use one of {', '.join(WINDOWS)}")
        if by not in DIMENSIONS:
            raise EdufilterError(f"stats dimension {by!r}: use one of {', '.join(DIMENSIONS)}")
        span, bucket = WINDOWS[window]
        bucket_minutes = bucket // _MINUTE
        current = _minute_number(now or datetime.now(timezone.utc)) // bucket_minutes * bucket_minutes
        window_start, window_end = current + bucket_minutes - span // _MINUTE, current + bucket_minutes
        # Buckets of whole hours start on whole hours: the hourly roll-up holds the same totals.
        table, unit, size = ("stats_hours", "hour", 60) if bucket_minutes % 60 == 0 else ("stats_minutes", "minute", 1)
        conditions = [f"{unit} >= ?", f"{unit} < ?"]
        values: list[object] = [window_start // size, window_end // size]
        for column, value in (("group_name", group), ("category", category), ("verdict", verdict)):
            if value is not None:
                conditions.append(f"{column} = ?")
                values.append(value)
        column = DIMENSIONS[by]
        with self.database.reading() as db:
            rows = db.execute(
                f"SELECT {unit} / ? * ? AS bucket, {column}, sum(flows), sum(packets) FROM {table}"
                f" WHERE {' AND '.join(conditions)} GROUP BY bucket, {column} ORDER BY bucket, {column}",
                (bucket_minutes // size, bucket_minutes, *values),
            ).fetchall()
        return [
            StatsRow(_EPOCH + start * _MINUTE, key or None, int(flows), int(packets))
            for start, key, flows, packets in rows
        ]

    def purge(self, now: datetime) -> int:
        """Drop the minutes older than the retention; the number of rows dropped."""
        cutoff = _minute_number(now) - timedelta(days=self.retention_days) // _MINUTE

        def delete(db: sqlite3.Connection) -> int:
            purged = int(db.execute("DELETE FROM stats_minutes WHERE minute < ?", (cutoff,)).rowcount)
            # The hour the cutoff falls in is summed again from its minutes that remain.
            boundary = cutoff // 60
            db.execute("DELETE FROM stats_hours WHERE hour <= ?", (boundary,))
            db.execute(
                "INSERT INTO stats_hours (hour, group_name, category, verdict, flows, packets)"
                " SELECT minute / 60, group_name, category, verdict, sum(flows), sum(packets) FROM stats_minutes"
                " WHERE minute >= ? AND minute < ? GROUP BY minute / 60, group_name, category, verdict",
                (boundary * 60, boundary * 60 + 60),
            )
            return purged

        return int(self.database.write(delete))


def _row(fields: tuple[object, ...]) -> tuple[int, str, str, str, int, int]:
    try:
        delta = CounterDelta._make(fields)
    except TypeError as error:
        raise EdufilterError(
            f"counter delta {fields!r}: give (minute, group, category, verdict, flows, packets)"
        ) from error
    for value, what in ((delta.flows, "flows"), (delta.packets, "packets")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise EdufilterError(f"counter delta {what} {value!r} is not a count (a new worker counts from 0)")
    for value, what in ((delta.group, "group"), (delta.verdict, "verdict")):
        if not isinstance(value, str) or not value:
            raise EdufilterError(f"counter delta {what} {value!r} is not a name")
    if delta.category is not None and not isinstance(delta.category, str):
        raise EdufilterError(f"counter delta category {delta.category!r} is not a name")
    # The primary key cannot hold NULL: "" stands for the group's default.
    category = delta.category or ""
    return (_minute_number(delta.minute), delta.group, category, delta.verdict, delta.flows, delta.packets)


def _minute_number(moment: object) -> int:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise EdufilterError(f"counter time {moment!r} is not a date and time with a time zone")
    return (moment - _EPOCH) // _MINUTE


# Prometheus text exposition format 0.0.4

_Metric = tuple[str, str, str, str]  # counters key, metric name, type, help (no "\\" or line break)
_WORKER_METRICS: tuple[_Metric, ...] = (
    ("packets", "edufilter_queue_packets_total", "counter", "Packets a worker received from its NFQUEUE queue."),
    ("queue_dropped", "edufilter_queue_dropped_total", "counter", "Packets the kernel dropped: the queue was full."),
    ("user_dropped", "edufilter_queue_user_dropped_total", "counter",
     "Packets the kernel dropped: the worker's netlink socket buffer was full."),
    ("fail_open", "edufilter_fail_open_total", "counter", "Packets accepted uninspected under fail-open."),
    ("restarts", "edufilter_worker_restarts_total", "counter", "Times the supervisor restarted the worker."),
    ("queue_total", "edufilter_queue_length", "gauge", "Packets waiting in the kernel queue now."),
    ("name_cache_hits", "edufilter_name_cache_hits_total", "counter",
     "Names a worker answered from its name cache (no table lookup)."),
    ("name_cache_misses", "edufilter_name_cache_misses_total", "counter",
     "Names a worker looked up in the policy's tables."),
    ("connections_reused", "edufilter_connections_reused_total", "counter",
     "New connections (TCP SYNs, QUIC Initials of a new connection) on a 5-tuple whose earlier connection "
     "was decided: judged afresh."),
    ("evasion", "edufilter_evasion_total", "counter",
     "Flows stopped as circumvention attempts: no readable name on a web port, two names, unreadable framing, "
     "decoys, differing overlaps, urgent data, a ClientHello or request head unfinished at the bound."),
)
_DECISION_METRICS: tuple[_Metric, ...] = (
    ("flows", "edufilter_flows_total", "counter", "Flows and DNS queries decided, by group, category and verdict."),
    ("packets", "edufilter_packets_total", "counter", "Packets given a verdict, by group, category and verdict."),
)


def prometheus_text(counters: Mapping[str, object]) -> str:
    """The live counters in Prometheus text format 0.0.4; absent counters are left out.

    `counters` is {"workers": {worker: {"queue": n, "packets", "queue_dropped",
    "user_dropped", "fail_open", "restarts", "queue_total", "name_cache_hits",
    "name_cache_misses", "connections_reused", "evasion": n, "decisions": {group:
    {category or "": {verdict: {"flows": n, "packets": n}}}}}}}.
    """
    samples: dict[str, list[str]] = {}

    def add(metrics: tuple[_Metric, ...], labels: dict[str, str], values: Mapping[object, object]) -> None:
        for key, metric, _, _ in metrics:
            if key in values:
                samples.setdefault(metric, []).append(_sample(metric, labels, values[key]))

    for worker, worker_counters in _items(counters.get("workers", {}), "workers"):
        worker_counters = _mapping(worker_counters, f"workers[{worker}]")
        queue = str(worker_counters.get("queue", worker))
        add(_WORKER_METRICS, {"worker": worker, "queue": queue}, worker_counters)
        for group, by_category in _items(worker_counters.get("decisions", {}), f"workers[{worker}].decisions"):
            for category, by_verdict in _items(by_category, f"decisions[{group}]"):
                for verdict, counts in _items(by_verdict, f"decisions[{group}][{category}]"):
                    labels = {"worker": worker, "group": group, "category": category, "verdict": verdict}
                    add(_DECISION_METRICS, labels, _mapping(counts, f"decisions[{group}][{category}][{verdict}]"))
    lines: list[str] = []
    for _, metric, kind, help_text in _WORKER_METRICS + _DECISION_METRICS:
        if metric in samples:
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}", *samples[metric]]
    return "".join(line + "\n" for line in lines)


def _sample(metric: str, labels: Mapping[str, str], value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EdufilterError(f"counter {metric} {value!r} is not a whole number")
    label_text = ",".join(f'{name}="{_escape_label(label)}"' for name, label in labels.items())
    return f"{metric}{{{label_text}}} {value}"


def _escape_label(value: str) -> str:
    # The format escapes only these three; other line breaks and controls would still split
    # the line for many readers (and str.splitlines), so they become U+FFFD.
    if not value.isprintable():
        value = "".join(char if char.isprintable() or char == "\n" else "\ufffd" for char in value)
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _items(value: object, what: str) -> list[tuple[str, object]]:
    """A mapping's items with text keys, in a stable order."""
    return sorted(((str(key), item) for key, item in _mapping(value, what).items()), key=lambda pair: pair[0])


def _mapping(value: object, what: str) -> Mapping[object, object]:
    if not isinstance(value, Mapping):
        raise EdufilterError(f"counters {what} is not a mapping")
    return value
