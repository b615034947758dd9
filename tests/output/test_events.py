"""Block events: pseudonyms and their daily keys, the SQLite + JSON-lines store, retention, damage."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import sqlite3
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from edufilter.enforce.blockpage import new_reference
from edufilter.errors import EdufilterError
from edufilter.output.database import MAX_RETENTION_DAYS
from edufilter.output.events import BlockEvent, EventStore, Pseudonymiser
from edufilter.state import StateDir

UTC = timezone.utc
NOON = datetime(2024, 3, 14, 12, 0, tzinfo=UTC)
PUPIL = "198.18.7.42"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_files(key_dir: Path) -> list[str]:
    return sorted(path.name for path in key_dir.glob("pseudonym-*.key"))


def make_event(pseudonymiser: Pseudonymiser, when: datetime, index: int = 0, **fields: object) -> BlockEvent:
    arguments: dict[str, object] = {
        "time": when,
        "group": "pupils",
        "category": "social",
        "name": f"site{index}.example",
        "destination": None,
        "kind": "sni",
        "action": "block",
        "client_address": f"198.18.{index % 8}.{index % 250 + 1}",
        "worker": index % 2,
        "log_client_address": False,
    }
    arguments.update(fields)
    return pseudonymiser.block_event(**arguments)  # type: ignore[arg-type]


@pytest.fixture
def pseudonymiser(tmp_path: Path) -> Pseudonymiser:
    return Pseudonymiser(tmp_path / "keys")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore(StateDir(tmp_path).events_db, tmp_path / "events") as store:
        yield store


# --- pseudonyms --------------------------------------------------------------------------


def test_pseudonym_is_stable_within_a_day_and_one_per_address(pseudonymiser: Pseudonymiser) -> None:
    morning = pseudonymiser.pseudonym(PUPIL, NOON.replace(hour=0, minute=0))
    evening = pseudonymiser.pseudonym(PUPIL, NOON.replace(hour=23, minute=59))
    assert morning == evening
    assert morning.startswith("c-") and len(morning) == 14 and int(morning[2:], 16) >= 0
    assert pseudonymiser.pseudonym("198.18.7.43", NOON) != morning
    assert pseudonymiser.pseudonym("2001:0002:0000::0001", NOON) == pseudonymiser.pseudonym("2001:2::1", NOON)


def test_pseudonyms_differ_across_days(pseudonymiser: Pseudonymiser) -> None:
    days = [pseudonymiser.pseudonym(PUPIL, NOON + timedelta(days=offset)) for offset in range(5)]
    assert len(set(days)) == 5


def test_day_is_the_school_local_day(tmp_path: Path) -> None:
    brussels = Pseudonymiser(tmp_path / "brussels", ZoneInfo("Europe/Brussels"))
    # 22:59 and 23:01 UTC on 14 March are 23:59 and 00:01 in Brussels (UTC+1): two days there.
    before, after = datetime(2024, 3, 14, 22, 59, tzinfo=UTC), datetime(2024, 3, 14, 23, 1, tzinfo=UTC)
    assert brussels.pseudonym(PUPIL, before) != brussels.pseudonym(PUPIL, after)
    assert key_files(tmp_path / "brussels") == ["pseudonym-2024-03-15.key"]
    utc = Pseudonymiser(tmp_path / "utc")
    assert utc.pseudonym(PUPIL, before) == utc.pseudonym(PUPIL, after)


def test_pseudonym_cannot_be_reversed_without_the_key(tmp_path: Path, pseudonymiser: Pseudonymiser) -> None:
    pseudonym = pseudonymiser.pseudonym(PUPIL, NOON)
    addresses = [str(address) for address in ipaddress.ip_network("198.18.0.0/20")]
    unkeyed = {"c-" + hashlib.sha256(address.encode()).hexdigest()[:12] for address in addresses}
    other_key = {"c-" + hmac.new(b"k" * 32, address.encode(), "sha256").hexdigest()[:12] for address in addresses}
    assert pseudonym not in unkeyed | other_key
    # With the key, trying every address is all it takes: the key is what protects pupils.
    key = (tmp_path / "keys" / "pseudonym-2024-03-14.key").read_bytes()
    found = [a for a in addresses if "c-" + hmac.new(key, a.encode(), "sha256").hexdigest()[:12] == pseudonym]
    assert found == [PUPIL]


def test_key_files_are_private_and_survive_a_restart_within_the_day(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    first = Pseudonymiser(key_dir).pseudonym(PUPIL, NOON)
    assert mode(key_dir) == 0o700
    key_file = key_dir / "pseudonym-2024-03-14.key"
    assert mode(key_file) == 0o600 and len(key_file.read_bytes()) == 32
    assert Pseudonymiser(key_dir).pseudonym(PUPIL, NOON + timedelta(hours=5)) == first


def test_rotation_destroys_the_old_keys(tmp_path: Path, pseudonymiser: Pseudonymiser) -> None:
    key_dir = tmp_path / "keys"
    monday = pseudonymiser.pseudonym(PUPIL, NOON)
    (key_dir / "unrelated.txt").write_text("kept")
    pseudonymiser.rotate(NOON + timedelta(days=1, hours=-11, minutes=59))  # 00:59 the next day
    assert key_files(key_dir) == ["pseudonym-2024-03-15.key"]
    assert (key_dir / "unrelated.txt").read_text() == "kept"
    # A late event of the past day takes the new key; the old one is not brought back.
    late = pseudonymiser.pseudonym(PUPIL, NOON + timedelta(hours=11, minutes=59))
    assert late != monday and key_files(key_dir) == ["pseudonym-2024-03-15.key"]
    # Even a new process cannot link the past day's pseudonym to the address any more.
    assert Pseudonymiser(key_dir).pseudonym(PUPIL, NOON) != monday


def test_rotate_is_idempotent_within_the_day(tmp_path: Path, pseudonymiser: Pseudonymiser) -> None:
    first = pseudonymiser.pseudonym(PUPIL, NOON)
    pseudonymiser.rotate(NOON + timedelta(hours=3))
    assert pseudonymiser.pseudonym(PUPIL, NOON) == first


def test_a_damaged_key_file_is_replaced(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    (key_dir / "pseudonym-2024-03-14.key").write_bytes(b"short")
    pseudonym = Pseudonymiser(key_dir).pseudonym(PUPIL, NOON)
    assert len((key_dir / "pseudonym-2024-03-14.key").read_bytes()) == 32
    assert Pseudonymiser(key_dir).pseudonym(PUPIL, NOON) == pseudonym


def test_an_unusable_key_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(EdufilterError, match="cannot rotate the pseudonym key"):
        Pseudonymiser(tmp_path / "file" / "keys").pseudonym(PUPIL, NOON)


def test_naive_times_are_refused(pseudonymiser: Pseudonymiser) -> None:
    with pytest.raises(EdufilterError, match="time zone"):
        pseudonymiser.pseudonym(PUPIL, datetime(2024, 3, 14, 12))


# --- events ------------------------------------------------------------------------------


def test_client_address_is_kept_only_when_the_group_asks(pseudonymiser: Pseudonymiser) -> None:
    hidden = make_event(pseudonymiser, NOON, client_address=PUPIL)
    shown = make_event(pseudonymiser, NOON, client_address=PUPIL, log_client_address=True)
    assert hidden.client_address is None and PUPIL not in json.dumps(hidden.to_dict())
    assert shown.client_address == PUPIL
    assert hidden.client == shown.client == pseudonymiser.pseudonym(PUPIL, NOON)


def test_reference_is_short_and_tells_events_apart(pseudonymiser: Pseudonymiser) -> None:
    event = make_event(pseudonymiser, NOON)
    assert len(event.reference) == 8 and event.reference.isalnum() and event.reference.isupper()
    # 40 random bits: two of 2000 alike once in about a million runs.
    assert len({make_event(pseudonymiser, NOON).reference for _ in range(2000)}) == 2000


def test_a_worker_given_reference_is_kept(pseudonymiser: Pseudonymiser) -> None:
    reference = new_reference()
    assert make_event(pseudonymiser, NOON, reference=reference).reference == reference
    with pytest.raises(EdufilterError, match="reference"):
        make_event(pseudonymiser, NOON, reference="<script>")


def test_event_round_trips_through_a_dict_and_json(pseudonymiser: Pseudonymiser) -> None:
    event = make_event(pseudonymiser, NOON.astimezone(ZoneInfo("Europe/Brussels")), log_client_address=True)
    assert event.time.utcoffset() == timedelta(0)
    assert BlockEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event
    address_only = make_event(pseudonymiser, NOON, name=None, destination="[2001:2::9]:443", kind="address",
                              category=None)
    assert BlockEvent.from_dict(address_only.to_dict()) == address_only


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"time": datetime(2024, 3, 14, 12)}, "time zone"),
        ({"destination": "198.18.0.9:443"}, "either a name or a destination"),
        ({"name": None}, "either a name or a destination"),
        ({"kind": "smoke-signal"}, "event kind"),
        ({"group": "Pupils; DROP TABLE"}, "event group"),
        ({"action": ""}, "event action"),
        ({"name": "x" * 400}, "printable"),
        ({"name": "evil\nline.example"}, "printable"),
        ({"worker": -1}, "worker"),
    ],
)
def test_bad_events_are_refused(pseudonymiser: Pseudonymiser, fields: dict[str, object], message: str) -> None:
    with pytest.raises(EdufilterError, match=message):
        make_event(pseudonymiser, NOON, **fields)


@pytest.mark.parametrize(
    "change",
    [{"colour": "red"}, {"time": "yesterday"}, {"time": 12}, {"reference": "lower123"}, {"worker": True}],
)
def test_from_dict_refuses_bad_records(pseudonymiser: Pseudonymiser, change: dict[str, object]) -> None:
    with pytest.raises(EdufilterError):
        BlockEvent.from_dict({**make_event(pseudonymiser, NOON).to_dict(), **change})
    with pytest.raises(EdufilterError, match="missing"):
        BlockEvent.from_dict({"time": NOON.isoformat()})
    with pytest.raises(EdufilterError, match="object"):
        BlockEvent.from_dict(["not", "a", "mapping"])  # type: ignore[arg-type]


# --- the store ---------------------------------------------------------------------------


def test_record_and_query_newest_first(store: EventStore, pseudonymiser: Pseudonymiser) -> None:
    events = [make_event(pseudonymiser, NOON + timedelta(seconds=n), n) for n in range(5)]
    store.record(events)
    found, cursor = store.query()
    assert found == events[::-1] and cursor is None
    store.record([])
    assert len(store.query()[0]) == 5


def test_query_filters(store: EventStore, pseudonymiser: Pseudonymiser) -> None:
    teacher = make_event(pseudonymiser, NOON, 1, group="teachers", category="gambling", action="monitor")
    pupil = make_event(pseudonymiser, NOON + timedelta(minutes=1), 2, client_address=PUPIL)
    default = make_event(pseudonymiser, NOON + timedelta(minutes=2), 3, category=None, name=None,
                         destination="198.18.0.9:8443", kind="default", action="drop")
    store.record([teacher, pupil, default])
    assert store.query(group="teachers")[0] == [teacher]
    assert store.query(category="gambling")[0] == [teacher]
    assert store.query(action="drop")[0] == [default]
    assert store.query(client=pseudonymiser.pseudonym(PUPIL, NOON))[0] == [pupil]
    assert store.query(since=NOON + timedelta(minutes=1))[0] == [default, pupil]
    assert store.query(until=NOON + timedelta(minutes=1))[0] == [teacher]
    assert store.query(reference=f" {pupil.reference.lower()} ")[0] == [pupil]
    assert store.query(group="pupils", action="monitor") == ([], None)


def test_pagination_is_stable_under_concurrent_inserts(store: EventStore, pseudonymiser: Pseudonymiser) -> None:
    original = [make_event(pseudonymiser, NOON + timedelta(seconds=n), n) for n in range(25)]
    store.record(original)
    seen: list[BlockEvent] = []
    page, cursor = store.query(limit=10)
    seen += page
    # Meanwhile: newer events, and a late batch with times inside pages already read.
    store.record([make_event(pseudonymiser, NOON + timedelta(hours=1, seconds=n), 100 + n) for n in range(7)])
    store.record([make_event(pseudonymiser, NOON + timedelta(seconds=24, microseconds=1), 200)])
    while cursor is not None:
        page, cursor = store.query(limit=10, cursor=cursor)
        seen += page
    assert seen == original[::-1]


def test_pagination_with_equal_times_and_filters(store: EventStore, pseudonymiser: Pseudonymiser) -> None:
    store.record([make_event(pseudonymiser, NOON, n, worker=n % 3) for n in range(12)])
    store.record([make_event(pseudonymiser, NOON, 50, group="staff")])
    seen: list[BlockEvent] = []
    cursor = None
    for _ in range(10):
        page, cursor = store.query(group="pupils", limit=5, cursor=cursor)
        seen += page
        if cursor is None:
            break
    assert len(seen) == len({event.reference for event in seen}) == 12


@pytest.mark.parametrize("cursor", ["", "nonsense", "!!!!", "MTIz", "YS5i"])
def test_foreign_cursors_are_refused(store: EventStore, cursor: str) -> None:
    with pytest.raises(EdufilterError, match="cursor"):
        store.query(cursor=cursor)


@pytest.mark.parametrize("limit", [0, 1001, -5, True])
def test_limit_is_bounded(store: EventStore, limit: int) -> None:
    with pytest.raises(EdufilterError, match="limit"):
        store.query(limit=limit)


def test_json_lines_one_file_per_utc_day(tmp_path: Path, store: EventStore, pseudonymiser: Pseudonymiser) -> None:
    events = [make_event(pseudonymiser, datetime(2024, 3, 14, 23, 59, 59, tzinfo=UTC), 1),
              make_event(pseudonymiser, datetime(2024, 3, 15, 0, 0, 1, tzinfo=UTC), 2),
              make_event(pseudonymiser, datetime(2024, 3, 15, 8, 0, tzinfo=UTC), 3)]
    store.record(events[:2])
    store.record(events[2:])
    files = sorted((tmp_path / "events").iterdir())
    assert [path.name for path in files] == ["events-2024-03-14.jsonl", "events-2024-03-15.jsonl"]
    assert all(mode(path) == 0o600 for path in files)
    lines = [BlockEvent.from_dict(json.loads(line)) for path in files for line in path.read_text().splitlines()]
    assert lines == events


def test_without_a_json_lines_dir_only_sqlite_is_written(tmp_path: Path, pseudonymiser: Pseudonymiser) -> None:
    with EventStore(StateDir(tmp_path).events_db, None) as store:
        store.record([make_event(pseudonymiser, NOON)])
        store.purge(NOON + timedelta(days=30))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["events.sqlite", "keys"]


def test_unwritable_json_lines_are_a_clear_error(tmp_path: Path, pseudonymiser: Pseudonymiser) -> None:
    (tmp_path / "events").write_text("a file where the directory should be")
    with EventStore(StateDir(tmp_path).events_db, tmp_path / "events") as store:
        with pytest.raises(EdufilterError, match="cannot write event lines"):
            store.record([make_event(pseudonymiser, NOON)])
        assert len(store.query()[0]) == 1  # the database has it


def test_database_is_private(tmp_path: Path, store: EventStore, pseudonymiser: Pseudonymiser) -> None:
    store.record([make_event(pseudonymiser, NOON)])
    assert mode(StateDir(tmp_path).events_db) == 0o600
    assert mode(tmp_path / "events.sqlite-wal") == 0o600


def test_purge_enforces_the_retention(tmp_path: Path, pseudonymiser: Pseudonymiser) -> None:
    now = datetime(2024, 3, 30, 10, 0, tzinfo=UTC)
    events = [make_event(pseudonymiser, now - timedelta(days=days, hours=1), days) for days in range(20)]
    with EventStore(StateDir(tmp_path).events_db, tmp_path / "events", retention_days=7) as store:
        store.record(events)
        (tmp_path / "events" / "notes.txt").write_text("not ours")
        assert store.purge(now) == 13  # 7 days and 1 hour old and older
        remaining, _ = store.query(limit=1000)
        assert remaining == events[:7]
        assert store.purge(now) == 0
    day_files = sorted(path.name for path in (tmp_path / "events").glob("events-*.jsonl"))
    # The file of 23 March also held events from before the cutoff (23 March 10:00): it went.
    assert day_files == [f"events-2024-03-{day}.jsonl" for day in range(24, 31)]
    assert (tmp_path / "events" / "notes.txt").exists()


def test_purged_events_leave_no_trace_in_the_files(tmp_path: Path, pseudonymiser: Pseudonymiser) -> None:
    old = make_event(pseudonymiser, NOON - timedelta(days=30), name="secret-search-of-a-pupil.example",
                     client_address=PUPIL, log_client_address=True)
    with EventStore(StateDir(tmp_path).events_db, None) as store:
        store.record([old] + [make_event(pseudonymiser, NOON, n) for n in range(200)])
        assert store.purge(NOON) == 1
        # While the daemon runs: the database, its write-ahead log and shared memory.
        data = b"".join(path.read_bytes() for path in tmp_path.glob("events.sqlite*"))
    for trace in (old.name, old.client, old.reference, PUPIL):
        assert trace.encode() not in data


@pytest.mark.parametrize("days", [0, -1, MAX_RETENTION_DAYS + 1, 10**6, True, "14", None])
def test_retention_is_never_unbounded(tmp_path: Path, days: object) -> None:
    with pytest.raises(EdufilterError, match="retention"):
        EventStore(StateDir(tmp_path).events_db, None, retention_days=days)  # type: ignore[arg-type]


def test_maximum_retention_is_accepted(tmp_path: Path) -> None:
    with EventStore(StateDir(tmp_path).events_db, None, retention_days=MAX_RETENTION_DAYS) as store:
        assert store.retention_days == MAX_RETENTION_DAYS


# --- damage ------------------------------------------------------------------------------


def filled_database(path: Path, pseudonymiser: Pseudonymiser, count: int = 2000) -> None:
    with EventStore(path, None) as store:
        store.record([make_event(pseudonymiser, NOON + timedelta(seconds=n), n) for n in range(count)])
        store.database.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def damage_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    for page in range(2, len(data) // page_size, 3):
        data[page * page_size : page * page_size + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["header", "pages"])
def test_damaged_database_is_a_clear_error(tmp_path: Path, pseudonymiser: Pseudonymiser, damage: str) -> None:
    path = StateDir(tmp_path).events_db
    filled_database(path, pseudonymiser)
    if damage == "header":
        path.write_bytes(b"this is not SQLite at all" * 100)
    else:
        damage_pages(path)
    with pytest.raises(EdufilterError, match=r"event database is damaged .*move it aside"):
        EventStore(path, None)
    assert path.exists()


def test_damaged_database_is_moved_aside_and_a_new_one_started(
    tmp_path: Path, pseudonymiser: Pseudonymiser, caplog: pytest.LogCaptureFixture
) -> None:
    path = StateDir(tmp_path).events_db
    filled_database(path, pseudonymiser)
    damage_pages(path)
    damaged_bytes = path.read_bytes()
    with caplog.at_level(logging.WARNING), EventStore(path, None, start_over_if_damaged=True) as store:
        assert store.query() == ([], None)
        store.record([make_event(pseudonymiser, NOON)])
        assert len(store.query()[0]) == 1
    [moved] = tmp_path.glob("events.sqlite.damaged-*")
    assert moved.read_bytes() == damaged_bytes
    assert "damaged" in caplog.text and str(moved) in caplog.text


def test_damage_found_while_running_starts_over(tmp_path: Path, pseudonymiser: Pseudonymiser) -> None:
    path = StateDir(tmp_path).events_db
    filled_database(path, pseudonymiser)
    with EventStore(path, None, start_over_if_damaged=True) as store:
        damage_pages(path)
        # A write by another connection (to the undamaged first page) makes the store read
        # its pages from the file again.
        with sqlite3.connect(path) as other:
            other.execute("PRAGMA user_version = 1")
        with pytest.raises(EdufilterError, match="damaged.*started a new one"):
            store.query(limit=1000)
        store.record([make_event(pseudonymiser, NOON)])
        assert len(store.query()[0]) == 1
    assert len(list(tmp_path.glob("events.sqlite.damaged-*Z"))) == 1


def test_a_foreign_database_is_never_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "policy.sqlite"
    with sqlite3.connect(path) as foreign:
        foreign.execute("CREATE TABLE groups (name TEXT)")
    with pytest.raises(EdufilterError, match="not an edufilter event database"):
        EventStore(path, None, start_over_if_damaged=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["policy.sqlite"]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = StateDir(tmp_path).events_db
    EventStore(path, None).close()
    with sqlite3.connect(path) as database:
        database.execute("PRAGMA user_version = 99")
    with pytest.raises(EdufilterError, match="newer than this edufilter knows"):
        EventStore(path, None)


# --- throughput --------------------------------------------------------------------------


def test_record_throughput(benchmark: BenchmarkFixture, tmp_path: Path, pseudonymiser: Pseudonymiser) -> None:
    batch = [make_event(pseudonymiser, NOON + timedelta(milliseconds=n), n) for n in range(1000)]
    batches = 0

    def record() -> None:
        nonlocal batches
        store.record(batch)
        batches += 1

    with EventStore(StateDir(tmp_path).events_db, tmp_path / "events") as store:
        benchmark.pedantic(record, rounds=5, iterations=1)  # once under --benchmark-disable
        with store.database.reading() as db:
            assert db.execute("SELECT count(*) FROM events").fetchone()[0] == batches * 1000 > 0
    lines = (tmp_path / "events" / "events-2024-03-14.jsonl").read_text().splitlines()
    assert len(lines) == batches * 1000
