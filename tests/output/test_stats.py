"""Per-minute counts in the events database, and the Prometheus text of the live counters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edufilter.errors import EdufilterError
from edufilter.output.events import EventStore
from edufilter.output.stats import (
    WINDOWS,
    CounterDelta,
    StatsRow,
    StatsStore,
    prometheus_text,
)
from edufilter.state import StateDir

UTC = timezone.utc
NOW = datetime(2024, 3, 14, 10, 20, 30, tzinfo=UTC)


@pytest.fixture
def stats(tmp_path: Path) -> Iterator[StatsStore]:
    with EventStore(StateDir(tmp_path).events_db, None, retention_days=7) as store:
        yield store.stats


def at(hour: int, minute: int, second: int = 0, day: int = 14) -> datetime:
    return datetime(2024, 3, day, hour, minute, second, tzinfo=UTC)


def test_deltas_add_up_per_minute(stats: StatsStore) -> None:
    stats.add([
        CounterDelta(at(10, 5, 10), "pupils", "social", "block", 2, 7),
        (at(10, 5, 50), "pupils", "social", "block", 1, 1),  # same minute: summed
        (at(10, 6), "pupils", "social", "block", 4, 4),
        (at(10, 6), "pupils", None, "allow", 10, 300),
        (at(10, 6), "staff", "news", "allow", 0, 0),  # nothing counted: not stored
    ])
    stats.add([(at(10, 6), "pupils", None, "allow", 5, 50)])
    assert stats.query("1h", "verdict", now=NOW) == [
        StatsRow(at(10, 5), "block", 3, 8),
        StatsRow(at(10, 6), "allow", 15, 350),
        StatsRow(at(10, 6), "block", 4, 4),
    ]
    assert stats.query("1h", "category", now=NOW) == [
        StatsRow(at(10, 5), "social", 3, 8),
        StatsRow(at(10, 6), None, 15, 350),  # the group's default
        StatsRow(at(10, 6), "social", 4, 4),
    ]
    assert stats.query("1h", "group", now=NOW) == [
        StatsRow(at(10, 5), "pupils", 3, 8), StatsRow(at(10, 6), "pupils", 19, 354)
    ]


def test_buckets_follow_the_window(stats: StatsStore) -> None:
    stats.add([
        (at(10, 3), "pupils", "games", "block", 1, 1),
        (at(10, 14), "pupils", "games", "block", 1, 1),
        (at(10, 15), "pupils", "games", "block", 1, 1),
        (at(8, 59), "pupils", "games", "block", 1, 1),
        (at(9, 0, day=12), "pupils", "games", "block", 1, 1),
    ])
    assert stats.query("24h", "verdict", now=NOW) == [
        StatsRow(at(8, 45), "block", 1, 1), StatsRow(at(10, 0), "block", 2, 2), StatsRow(at(10, 15), "block", 1, 1)
    ]
    assert stats.query("7d", "verdict", now=NOW) == [
        StatsRow(at(9, 0, day=12), "block", 1, 1), StatsRow(at(8, 0), "block", 1, 1), StatsRow(at(10, 0), "block", 3, 3)
    ]
    assert stats.query("90d", "verdict", now=NOW) == [
        StatsRow(at(0, 0, day=12), "block", 1, 1), StatsRow(at(0, 0), "block", 4, 4)
    ]


def test_window_bounds_take_whole_buckets_up_to_the_current_one(stats: StatsStore) -> None:
    stats.add([
        (at(9, 20), "pupils", "games", "block", 1, 1),  # the oldest minute of the hour ending 10:20:59
        (at(9, 21), "pupils", "games", "block", 2, 2),
        (at(10, 20), "pupils", "games", "block", 4, 4),  # the current minute
        (at(10, 21), "pupils", "games", "block", 8, 8),  # the future: not shown
    ])
    rows = stats.query("1h", "verdict", now=NOW)
    assert [(row.start, row.flows) for row in rows] == [(at(9, 21), 2), (at(10, 20), 4)]


def test_query_filters(stats: StatsStore) -> None:
    stats.add([
        (at(10, 5), "pupils", "social", "block", 1, 1),
        (at(10, 5), "pupils", "games", "monitor", 2, 2),
        (at(10, 5), "staff", "social", "allow", 4, 4),
    ])
    assert stats.query("1h", "category", now=NOW, group="pupils") == [
        StatsRow(at(10, 5), "games", 2, 2), StatsRow(at(10, 5), "social", 1, 1)
    ]
    assert stats.query("1h", "group", now=NOW, category="social", verdict="allow") == [
        StatsRow(at(10, 5), "staff", 4, 4)
    ]


def test_every_window_has_a_sensible_number_of_whole_buckets() -> None:
    for span, bucket in WINDOWS.values():
        assert span % bucket == timedelta(0) and 30 <= span // bucket <= 365


@pytest.mark.parametrize(
    ("window", "by", "message"), [("2h", "verdict", "window"), ("1h", "client", "dimension"), ("1h", "", "dimension")]
)
def test_unknown_window_or_dimension(stats: StatsStore, window: str, by: str, message: str) -> None:
    with pytest.raises(EdufilterError, match=message):
        stats.query(window, by, now=NOW)


@pytest.mark.parametrize(
    "delta",
    [
        (at(10, 0), "pupils", "games", "block", -1, 0),
        (at(10, 0), "pupils", "games", "block", 1, 2.5),
        (at(10, 0), "pupils", "games", "block", True, 1),
        (datetime(2024, 3, 14, 10), "pupils", "games", "block", 1, 1),
        (at(10, 0), "", "games", "block", 1, 1),
        (at(10, 0), "pupils", 7, "block", 1, 1),
        (at(10, 0), "pupils", "games", "block", 1),
    ],
)
def test_bad_deltas_are_refused_and_nothing_is_stored(stats: StatsStore, delta: tuple[object, ...]) -> None:
    with pytest.raises(EdufilterError, match="counter"):
        stats.add([(at(10, 1), "pupils", "games", "block", 1, 1), delta])  # type: ignore[list-item]
    assert stats.query("1h", "verdict", now=NOW) == []


def test_purge_enforces_the_retention(stats: StatsStore) -> None:
    stats.add([(NOW - timedelta(days=days, minutes=1), "pupils", "games", "block", 1, 1) for days in range(10)])
    assert stats.purge(NOW) == 3  # 7, 8 and 9 days (and a minute) old
    assert sum(row.flows for row in stats.query("30d", "group", now=NOW)) == 7
    assert stats.purge(NOW) == 0


# --- Prometheus text ---------------------------------------------------------------------

HOSTILE = 'a"b\\c\nd} e{f="g",h # HELP x\u00e9\u2603'


def counters() -> dict[str, object]:
    return {
        "workers": {
            "0": {
                "queue": 0, "packets": 1000, "queue_dropped": 3, "user_dropped": 1, "fail_open": 2, "restarts": 0,
                "queue_total": 5, "name_cache_hits": 90, "name_cache_misses": 17, "evasion": 3,
                "decisions": {
                    "pupils": {
                        "social": {"block": {"flows": 7, "packets": 9}},
                        "": {"allow": {"flows": 100, "packets": 900}},
                    },
                },
            },
            1: {"queue": 1, "packets": 20, "decisions": {HOSTILE: {HOSTILE: {HOSTILE: {"flows": 1, "packets": 2}}}}},
        }
    }


def parse(text: str) -> dict[str, tuple[str, str, list[tuple[str, dict[str, str], float]]]]:
    return {
        family.name: (family.type, family.documentation, [(s.name, s.labels, s.value) for s in family.samples])
        for family in text_string_to_metric_families(text)
    }


def test_prometheus_text_parses_back() -> None:
    text = prometheus_text(counters())
    families = parse(text)
    assert families["edufilter_queue_packets"] == (
        "counter",
        "Packets a worker received from its NFQUEUE queue.",
        [
            ("edufilter_queue_packets_total", {"worker": "0", "queue": "0"}, 1000),
            ("edufilter_queue_packets_total", {"worker": "1", "queue": "1"}, 20),
        ],
    )
    assert families["edufilter_queue_length"][0] == "gauge"
    assert families["edufilter_queue_length"][2] == [("edufilter_queue_length", {"worker": "0", "queue": "0"}, 5)]
    assert families["edufilter_fail_open"][2] == [("edufilter_fail_open_total", {"worker": "0", "queue": "0"}, 2)]
    assert families["edufilter_name_cache_hits"][2] == [
        ("edufilter_name_cache_hits_total", {"worker": "0", "queue": "0"}, 90)]
    assert families["edufilter_name_cache_misses"][2][0][2] == 17
    assert families["edufilter_evasion"][2] == [("edufilter_evasion_total", {"worker": "0", "queue": "0"}, 3)]
    flows = {labels["category"]: value for _, labels, value in families["edufilter_flows"][2] if labels["worker"] == "0"}
    assert flows == {"social": 7, "": 100}
    assert families["edufilter_flows"][2][1][1] == {"worker": "0", "group": "pupils", "category": "social", "verdict": "block"}
    assert families["edufilter_packets"][2][0][2] == 900
    for line in text.splitlines():
        assert line.startswith(("# HELP edufilter_", "# TYPE edufilter_", "edufilter_"))
    assert sum(line.startswith("# TYPE") for line in text.splitlines()) == len(families) == 11
    assert text.endswith("\n")


def test_hostile_label_values_are_escaped() -> None:
    text = prometheus_text(counters())
    hostile = [labels for _, labels, _ in parse(text)["edufilter_flows"][2] if labels["worker"] == "1"]
    assert hostile == [{"worker": "1", "group": HOSTILE, "category": HOSTILE, "verdict": HOSTILE}]
    # One sample per line: no line break of a value reaches the text.
    assert sum(line.startswith("edufilter_flows_total") for line in text.splitlines()) == 3


@pytest.mark.parametrize("breaker", ["\r", "\x0b", "\x1e", "\x85", "\u2028", "\x00"])
def test_other_line_breaks_and_controls_in_labels_are_replaced(breaker: str) -> None:
    text = prometheus_text({"workers": {f"0{breaker}# TYPE x gauge": {"packets": 1}}})
    assert len(text.splitlines()) == 3
    assert parse(text)["edufilter_queue_packets"][2][0][1]["worker"] == "0\ufffd# TYPE x gauge"


def test_prometheus_text_of_nothing() -> None:
    assert prometheus_text({}) == prometheus_text({"workers": {}}) == ""
    only_queue = prometheus_text({"workers": {"3": {"queue": 3, "packets": 1}}})
    assert list(parse(only_queue)) == ["edufilter_queue_packets"]


@pytest.mark.parametrize(
    "bad",
    [
        {"workers": []},
        {"workers": {"0": {"packets": "many"}}},
        {"workers": {"0": {"packets": 1.5}}},
        {"workers": {"0": {"fail_open": None}}},
        {"workers": {"0": {"decisions": {"pupils": {"social": {"block": 7}}}}}},
    ],
)
def test_malformed_counters_are_a_clear_error(bad: dict[str, object]) -> None:
    with pytest.raises(EdufilterError, match="counter"):
        prometheus_text(bad)
