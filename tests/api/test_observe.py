"""Status, stats, events and metrics from the daemon's real outputs; health; check."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import LiveApi, conforms, problem, seed
from prometheus_client.parser import text_string_to_metric_families

from edufilter.output.events import EventStore, Pseudonymiser
from edufilter.output.status import write_status
from edufilter.state import StateDir

NOW = datetime.now(timezone.utc).replace(second=0, microsecond=0)


@pytest.fixture
def daemon_api(tmp_path: Path) -> Iterator[tuple[LiveApi, EventStore]]:
    """The API fed by a real event store and status file, as the daemon writes them."""
    store = EventStore(StateDir(tmp_path).events_db, None)
    pseudonyms = Pseudonymiser(tmp_path / "keys")
    store.record([
        pseudonyms.block_event(time=NOW - timedelta(minutes=minutes), group=group, category="adult",
                               name=f"site{minutes}.example", destination=None, kind="sni", action="block",
                               client_address="198.18.5.7", worker=0, log_client_address=False)
        for minutes, group in ((1, "class-5a"), (2, "class-5a"), (3, "staff"))
    ])
    store.stats.add([(NOW, "class-5a", "adult", "block", 2, 9), (NOW, "staff", None, "allow", 5, 40)])
    write_status(tmp_path / "run" / "status.json", {
        "updated_at": NOW,
        "daemon": {"pid": 1234, "started_at": NOW, "edufilter": "0.1.0"},
        "policy": {"version": 0, "images": {"policy": 0, "categories": 0}},
        "rules": {"backend": "xt", "table": "inet edufilter", "queued_packets": 1003},
        "queues": [{"worker": 0, "queue": 0, "pid": 1235, "state": "running", "restarts": 1, "packets": 1000,
                    "verdicts": {"1": 990, "2": 10}, "queue_total": 3, "queue_dropped": 0, "user_dropped": 0,
                    "fail_open": 0}],
        "totals": {"packets": 1000, "flows": 50, "queue_dropped": 0, "user_dropped": 0, "fail_open": 0},
        "last_reload": None,
    })
    api = LiveApi(tmp_path, event_store=store)
    yield api, store
    api.stop()
    store.close()


def test_status_shows_versions_and_the_daemon(daemon_api: tuple[LiveApi, EventStore]) -> None:
    api, _ = daemon_api
    status = conforms(api, api.get("/api/v1/status"), "Status")
    assert status["policy_version"] == 1 and status["live_version"] is None
    assert status["daemon"]["queues"][0]["packets"] == 1000
    api.post("/api/v1/groups", {"name": "staff"})
    assert api.get("/api/v1/status").json()["live_version"] == 2


def test_status_without_a_daemon(api: LiveApi) -> None:
    assert api.get("/api/v1/status").json()["daemon"] is None


def test_events_are_pseudonymised_filtered_and_paged(daemon_api: tuple[LiveApi, EventStore]) -> None:
    api, _ = daemon_api
    everything = conforms(api, api.get("/api/v1/events"), "EventPage")
    assert [event["name"] for event in everything["items"]] == ["site1.example", "site2.example", "site3.example"]
    assert all(event["client"].startswith("c-") and event["client_address"] is None for event in everything["items"])
    assert "198.18.5.7" not in api.get("/api/v1/events").text
    first = api.get("/api/v1/events", params={"group": "class-5a", "limit": 1}).json()
    rest = api.get("/api/v1/events", params={"group": "class-5a", "cursor": first["next_cursor"]}).json()
    assert [event["name"] for event in first["items"] + rest["items"]] == ["site1.example", "site2.example"]
    since = (NOW - timedelta(minutes=2)).isoformat()
    assert len(api.get("/api/v1/events", params={"since": since}).json()["items"]) == 2
    reference = everything["items"][0]["reference"]
    assert api.get("/api/v1/events", params={"reference": reference}).json()["items"][0]["name"] == "site1.example"
    problem(api.get("/api/v1/events", params={"cursor": "garbage"}), 422)


def test_stats_per_window_and_dimension(daemon_api: tuple[LiveApi, EventStore]) -> None:
    api, _ = daemon_api
    stats = conforms(api, api.get("/api/v1/stats", params={"window": "1h", "by": "group"}), "Stats")
    assert {(row["key"], row["flows"], row["packets"]) for row in stats["rows"]} == {
        ("class-5a", 2, 9), ("staff", 5, 40)}
    by_verdict = api.get("/api/v1/stats", params={"group": "staff"}).json()
    assert by_verdict["window"] == "24h" and [row["key"] for row in by_verdict["rows"]] == ["allow"]
    problem(api.get("/api/v1/stats", params={"window": "2h"}), 422)


def test_events_and_stats_without_an_event_store(api: LiveApi) -> None:
    assert api.get("/api/v1/events").json() == {"items": [], "next_cursor": None, "total": 0}
    assert api.get("/api/v1/stats").json()["rows"] == []


def test_prometheus_metrics(daemon_api: tuple[LiveApi, EventStore]) -> None:
    api, _ = daemon_api
    api.post("/api/v1/groups", {"name": "staff"})
    response = api.get("/metrics")
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)  # Prometheus's own parser
        for sample in family.samples
    }
    assert samples["edufilter_policy_version", ()] == samples["edufilter_policy_live_version", ()] == 2
    assert samples["edufilter_api_requests_total", (("code", "201"), ("method", "POST"))] == 1
    assert samples["edufilter_queue_packets_total", (("queue", "0"), ("worker", "0"))] == 1000
    assert samples["edufilter_worker_restarts_total", (("queue", "0"), ("worker", "0"))] == 1
    assert samples["edufilter_queued_packets_total", ()] == 1003


def test_a_change_made_over_the_api_changes_check(api: LiveApi) -> None:
    seed(api)
    api.post("/api/v1/clients", {"group": "class-5a", "cidr": "198.18.5.0/24"})
    pupil = {"address": "198.18.5.7"}
    before = conforms(api, api.post("/api/v1/check", {"target": "www.games.example", "client": pupil}),
                      "Explanation")
    assert (before["group"], before["group_match"], before["action"]) == ("class-5a", "cidr", "allow")
    assert before["decided_by"] == "group default"

    api.post("/api/v1/groups/class-5a/rules", {"target_kind": "list", "target": "games", "action": "block"})
    blocked = api.post("/api/v1/check", {"target": "http://www.games.example/play", "client": pupil}).json()
    assert (blocked["action"], blocked["decided_by"], blocked["list"]) == ("block", "admin list", "games")
    assert blocked["matched"] == "games.example" and blocked["rule"]["position"] == 0

    api.post("/api/v1/overrides", {"group": "class-5a", "name": "www.games.example", "minutes": 50})
    opened = api.post("/api/v1/check", {"target": "www.games.example", "client": pupil}).json()
    assert (opened["action"], opened["decided_by"]) == ("allow", "override")
    later = api.post("/api/v1/check", {"target": "www.games.example", "client": pupil,
                                       "at": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()}).json()
    assert later["action"] == "block"  # the override has expired by then
    guest = api.post("/api/v1/check", {"target": "www.games.example", "client": {"address": "198.18.9.9"}}).json()
    assert (guest["group"], guest["action"]) == ("guests", "allow")


def test_check_refuses_a_bad_client_or_target(api: LiveApi) -> None:
    refused = problem(api.post("/api/v1/check", {"target": "a.example", "client": {"address": "nope",
                                                                                  "mac": "zz"}}), 422)
    assert {item["name"] for item in refused["invalid_params"]} == {"client.address", "client.mac"}
    problem(api.post("/api/v1/check", {"target": "not a name!", "client": {"address": "198.18.0.9"}}), 422)


def test_check_without_an_engine(tmp_path: Path) -> None:
    api = LiveApi(tmp_path, explain=None)
    try:
        problem(api.post("/api/v1/check", {"target": "a.example", "client": {"address": "198.18.0.9"}}), 503)
    finally:
        api.stop()
