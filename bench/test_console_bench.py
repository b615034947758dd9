"""The web console's overview (console/pages.py) over 100,000 block events and a week of
per-minute stats: the page's time against the API requests it is made of (status, four stats
queries, the latest events), sent as JSON with a bearer token in the same run. The ratio is
what rendering and the session cost on top of the API."""

from __future__ import annotations

import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from mixes import TINY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "console"))
from console_client import NOW, ConsoleClient, School  # noqa: E402  (tests/console is not a package)

from edufilter.output.events import Pseudonymiser  # noqa: E402

EVENTS = 1_000 if TINY else 100_000
STATS_MINUTES = 60 if TINY else 7 * 24 * 60
ROUNDS = 2 if TINY else 20
API_CALLS = [("/api/v1/status", {}), *(
    ("/api/v1/stats", {"window": "7d", "by": by, "verdict": verdict})
    for by in ("category", "group") for verdict in ("block", "drop")
), ("/api/v1/events", {"limit": "10"}), ("/api/v1/freshness", {}),
    ("/api/v1/stats", {"window": "7d", "by": "verdict", "category": "evasion"}),
    ("/api/v1/overrides", {"active": "false", "sort": "-expires_at", "limit": "20"})]
# The week's four chart queries as they were before the hourly roll-up: over the minutes.
MINUTE_QUERY = ("SELECT minute / 60 * 60 AS bucket, {column}, sum(flows), sum(packets) FROM stats_minutes"
                " WHERE minute >= ? AND minute < ? AND verdict = ? GROUP BY bucket, {column} ORDER BY bucket, {column}")


def seeded(state_dir: Path) -> School:
    school = School(state_dir)
    assert school.events is not None
    pseudonyms = Pseudonymiser(state_dir / "keys")
    chooser = random.Random(16)
    for start in range(0, EVENTS, 10_000):
        school.events.record([
            pseudonyms.block_event(time=NOW - timedelta(seconds=number * 6),
                                   group=chooser.choice(("class-5a", "class-6b")), category="games", name=f"s{number}.example", destination=None, kind="sni",
                                   action="block", client_address=f"198.18.5.{number % 250}", worker=0,
                                   log_client_address=False)
            for number in range(start, min(start + 10_000, EVENTS))
        ])
    school.events.stats.add([
        (NOW - timedelta(minutes=minute), group, category, "block", 3, 9)
        for minute in range(STATS_MINUTES) for group in ("class-5a", "class-6b", "guests")
        for category in ("games", "adult", "social")
    ])
    return school


def median_seconds(work: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_console_overview_against_its_api_requests(benchmark: Any, tmp_path: Path) -> None:
    school = seeded(tmp_path)
    console = ConsoleClient(school.app())
    try:
        console.sign_in(school.secrets["viewer"])
        bearer = {"Authorization": f"Bearer {school.secrets['viewer']}"}

        def overview() -> None:
            assert console.get("/console/overview?window=7d").status == 200

        def api_requests() -> None:
            for path, query in API_CALLS:
                assert console.get(path, params=query, headers=bearer).status == 200

        benchmark.pedantic(overview, rounds=ROUNDS, iterations=1, warmup_rounds=1)
        page = median_seconds(overview, ROUNDS)
        baseline = median_seconds(api_requests, ROUNDS)
        benchmark.extra_info["figures"] = {
            "console_overview_week_ms": page * 1000,
            "console_overview_api_requests_ms": baseline * 1000,
            "console_overview_vs_api_ratio": page / baseline,
        }
    finally:
        console.close()
        school.close()


def test_week_stats_from_the_hourly_roll_up_against_the_minutes(benchmark: Any, tmp_path: Path) -> None:
    school = seeded(tmp_path)
    assert school.events is not None
    stats = school.events.stats
    try:
        def roll_up() -> int:
            return sum(len(stats.query("7d", by, verdict=verdict)) for by in ("category", "group")
                       for verdict in ("block", "drop"))

        end = (int(NOW.timestamp()) // 3600 + 1) * 60
        start = end - 7 * 24 * 60

        def minutes() -> int:
            with stats.database.reading() as db:
                return sum(len(db.execute(MINUTE_QUERY.format(column=column), (start, end, verdict)).fetchall())
                           for column in ("category", "group_name") for verdict in ("block", "drop"))

        assert roll_up() == minutes()
        benchmark.pedantic(roll_up, rounds=ROUNDS, iterations=1, warmup_rounds=1)
        fast = median_seconds(roll_up, ROUNDS)
        slow = median_seconds(minutes, ROUNDS)
        benchmark.extra_info["figures"] = {
            "week_stats_roll_up_ms": fast * 1000,
            "week_stats_minutes_ms": slow * 1000,
            "week_stats_roll_up_vs_minutes_ratio": fast / slow,
        }
    finally:
        school.close()
