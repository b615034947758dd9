"""The hourly roll-up of the per-minute counts: windows of hourly or longer buckets read it and
answer exactly what the minutes say; an older database gets it filled from its minutes; purging
keeps it in step with the minutes."""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edufilter.output.database import MIGRATIONS
from edufilter.output.events import EventStore
from edufilter.output.stats import WINDOWS, StatsRow
from edufilter.state import StateDir

UTC = timezone.utc
NOW = datetime(2024, 3, 14, 10, 20, 30, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GROUPS, CATEGORIES, VERDICTS = ("pupils", "staff"), ("games", None, "social"), ("block", "allow")


def random_deltas(seed: int, count: int, days: int) -> list[tuple[datetime, str, str | None, str, int, int]]:
    chooser = random.Random(seed)
    return [(NOW - timedelta(minutes=chooser.randrange(days * 1440)), chooser.choice(GROUPS),
             chooser.choice(CATEGORIES), chooser.choice(VERDICTS), chooser.randrange(1, 5), chooser.randrange(1, 50))
            for _ in range(count)]


def expected(deltas: list[tuple[datetime, str, str | None, str, int, int]], window: str, by: str,
             verdict: str | None = None) -> list[StatsRow]:
    """The window's buckets summed straight from the deltas, as the minutes would give them."""
    span, bucket = WINDOWS[window]
    size = bucket // timedelta(minutes=1)
    current = int((NOW - EPOCH) // timedelta(minutes=1)) // size * size
    start, end = current + size - span // timedelta(minutes=1), current + size
    totals: dict[tuple[int, str | None], list[int]] = defaultdict(lambda: [0, 0])
    for moment, group, category, row_verdict, flows, packets in deltas:
        minute = int((moment - EPOCH) // timedelta(minutes=1))
        if start <= minute < end and verdict in (None, row_verdict):
            key = {"group": group, "category": category, "verdict": row_verdict}[by]
            counted = totals[(minute // size * size, key)]
            counted[0] += flows
            counted[1] += packets
    return [StatsRow(EPOCH + timedelta(minutes=bucket_start), key, flows, packets)
            for (bucket_start, key), (flows, packets) in sorted(totals.items(), key=lambda item: (item[0][0],
                                                                                              item[0][1] or ""))]


@pytest.mark.parametrize("window", ["7d", "30d", "24h", "1h"])
@pytest.mark.parametrize("by", ["group", "category", "verdict"])
def test_every_window_answers_what_the_minutes_say(tmp_path: Path, window: str, by: str) -> None:
    deltas = random_deltas(16, 3000, 35)
    with EventStore(StateDir(tmp_path).events_db, None, retention_days=60) as store:
        for first in range(0, len(deltas), 500):
            store.stats.add(deltas[first:first + 500])
        assert store.stats.query(window, by, now=NOW) == expected(deltas, window, by)
        assert store.stats.query(window, by, now=NOW, verdict="block") == expected(deltas, window, by, "block")


def test_hourly_windows_read_the_roll_up(tmp_path: Path) -> None:
    with EventStore(StateDir(tmp_path).events_db, None, retention_days=60) as store:
        store.stats.add([(NOW - timedelta(minutes=minute), "pupils", "games", "block", 1, 1) for minute in range(180)])
        with store.database.reading() as db:
            hours = db.execute("SELECT hour, flows FROM stats_hours ORDER BY hour").fetchall()
            db.execute("DELETE FROM stats_minutes")  # the week's answer no longer depends on the minutes
        assert [flows for _, flows in hours] == [39, 60, 60, 21]  # 07:21-07:59, 08, 09, 10:00-10:20
        assert sum(row.flows for row in store.stats.query("7d", "group", now=NOW)) == 180
        assert store.stats.query("1h", "group", now=NOW) == []


def test_an_older_database_gets_the_roll_up_from_its_minutes(tmp_path: Path) -> None:
    path = StateDir(tmp_path).events_db
    deltas = random_deltas(7, 500, 6)
    with sqlite3.connect(path) as db:  # schema version 1: minutes only
        for statement in MIGRATIONS[0]:
            db.execute(statement)
        db.executemany("INSERT INTO stats_minutes VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                       " flows = flows + excluded.flows, packets = packets + excluded.packets",
                       [(int((moment - EPOCH) // timedelta(minutes=1)), group, category or "", verdict, flows, packets)
                        for moment, group, category, verdict, flows, packets in deltas])
        db.execute("PRAGMA user_version = 1")
    with EventStore(path, None, retention_days=60) as store:
        assert store.stats.query("7d", "category", now=NOW) == expected(deltas, "7d", "category")


def test_purging_keeps_the_roll_up_in_step(tmp_path: Path) -> None:
    deltas = random_deltas(3, 2000, 12)
    with EventStore(StateDir(tmp_path).events_db, None, retention_days=7) as store:
        store.stats.add(deltas)
        store.stats.purge(NOW)
        cutoff = NOW.replace(second=0) - timedelta(days=7)
        kept = [delta for delta in deltas if delta[0].replace(second=0, microsecond=0) >= cutoff]
        assert store.stats.query("30d", "group", now=NOW) == expected(kept, "30d", "group")
        assert store.stats.query("7d", "verdict", now=NOW) == expected(kept, "7d", "verdict")
