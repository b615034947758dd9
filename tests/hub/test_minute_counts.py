"""Per-minute block counts for the hub: counted in the event's own minute, no pupil identity,
closed only once the minute is safely over, and kept on disk when the agent stops."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("nats", reason="the hub extra (nats-py) is not installed")

from edufilter.config import HubConfig
from edufilter.hub.agent import STATS_OUTBOX_FILE, GatewayAgent, hub_dir
from edufilter.hub.outbox import Outbox
from edufilter.hub.stats import CLOSE_AFTER, ROWS_PER_RECORD, MinuteCounts

NINE = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)


def event(at: datetime, group: str = "primary", category: str | None = "games", kind: str = "sni") -> dict:
    return {"time": at.isoformat(timespec="microseconds"), "group": group, "category": category, "kind": kind,
            "action": "block", "name": "x.test", "destination": None, "client": "c-0123456789ab",
            "client_address": None, "reference": "ABCDEFGH", "worker": 0}


def test_blocks_are_counted_per_minute_group_category_and_reason_without_the_pupil() -> None:
    counts = MinuteCounts()
    counts.add([event(NINE + timedelta(seconds=1)), event(NINE + timedelta(seconds=59)),
                event(NINE + timedelta(seconds=30), category=None, kind="default"),
                event(NINE + timedelta(seconds=61), group="staff"),
                {"time": "yesterday", "group": "primary"}, {"group": "primary"}])
    assert counts.unreadable == 2
    assert counts.close(NINE + timedelta(minutes=1) + CLOSE_AFTER - timedelta(microseconds=1)) == []  # not yet over
    (first,) = counts.close(NINE + timedelta(minutes=1) + CLOSE_AFTER)
    assert first == {"minute": "2026-12-07T09:00:00+00:00", "counts": [
        {"group": "primary", "category": None, "kind": "default", "action": "block", "blocks": 1},
        {"group": "primary", "category": "games", "kind": "sni", "action": "block", "blocks": 2}]}
    assert "c-0123456789ab" not in json.dumps(first) and "x.test" not in json.dumps(first)
    (second,) = counts.close()  # everything left, whatever the time
    assert second["minute"] == "2026-12-07T09:01:00+00:00" and second["counts"][0]["group"] == "staff"
    assert counts.close() == []


def test_a_minute_with_many_combinations_is_split_across_records() -> None:
    counts = MinuteCounts()
    counts.add([event(NINE, category=f"list-{number}") for number in range(ROWS_PER_RECORD + 1)])
    records = counts.close()
    assert [len(record["counts"]) for record in records] == [ROWS_PER_RECORD, 1]
    assert {record["minute"] for record in records} == {NINE.isoformat()}


def test_counts_of_a_stopped_agent_go_to_the_stats_outbox_at_once(tmp_path: Path) -> None:
    agent = GatewayAgent(HubConfig(servers=("tls://198.18.61.2:4222",), site="ghent"), tmp_path,
                         applier=None)  # type: ignore[arg-type]
    agent.add_events([event(NINE), event(NINE)])
    outbox = Outbox(hub_dir(tmp_path) / STATS_OUTBOX_FILE, 1000)
    ((_, payload),) = outbox.oldest(10)
    assert json.loads(payload)["counts"][0]["blocks"] == 2
    assert agent.status()["stats_waiting"] == 1 and agent.status()["events_waiting"] == 2
