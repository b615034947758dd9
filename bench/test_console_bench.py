"""The web console (console/), measured; nothing here gates.

- The overview's week view over 100,000 block events and a week of per-minute stats, against
  the API requests it is made of (sent as JSON with a bearer token in the same run): what
  rendering and the session cost on top of the API; and the week's charts from the hourly
  roll-up against the same queries over the minutes.
- Every page's latency per role with the store at scale (the overview both read for the page
  alone and shared within console/overview_cache.py's period, as polling people get it): the category lists of the policy
  benchmarks (bench/policyscale.py: 5 million distinct names, imported and compiled), a
  school list of LIST_ENTRIES names (bench/listgen.py's realistic names, as a large upload
  leaves it; EDUFILTER_BENCH_CONSOLE_LIST_ENTRIES), 100,000 events and a week of stats.
- 20 people polling the overview against the gateway's worker: the worker's classify loop
  (Enforcer.classify_offline over the first-packets mix, against the 5 M-name policy) in
  this process, the API and console in a process of their own (bench/consoleserve.py, as
  the supervisor serves them), the people in a third (bench/consolepollers.py, each
  reloading the overview every EDUFILTER_BENCH_POLL_SECONDS, default 2). Rounds without and
  with the polling alternate in one run; the figure is the ratio of the worker's packets per
  second, with the console process's CPU share while polled.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from listgen import generate_names
from mixes import FIRST_PACKETS, MIX_DESCRIPTION, TINY
from policyscale import PolicyScale

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "console"))
from console_client import NOW, ConsoleClient, School  # noqa: E402  (tests/console is not a package)

import edufilter  # noqa: E402
from edufilter.console.overview_cache import FRESH_SECONDS, OVERVIEWS  # noqa: E402
from edufilter.enforce._enforce import Enforcer  # noqa: E402
from edufilter.errors import PolicyError  # noqa: E402
from edufilter.output.events import Pseudonymiser  # noqa: E402
from edufilter.policy.compile import compile_policy  # noqa: E402
from edufilter.policy.liststore import register_categories  # noqa: E402
from edufilter.policy.model import (  # noqa: E402
    Action,
    AdminList,
    ClientMatch,
    EntryKind,
    ListEntry,
    Rule,
    TargetKind,
    parse_entry,
)
from edufilter.policy.store import PolicyStore  # noqa: E402
from edufilter.state import StateDir  # noqa: E402

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


# ---------------------------------------------------------------- the store at scale

LIST_ENTRIES = int(os.environ.get("EDUFILTER_BENCH_CONSOLE_LIST_ENTRIES") or (10_000 if TINY else 1_000_000))
PAGE_ROUNDS = 3 if TINY else 15
BENCH = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def school_at_scale(policy_scale: PolicyScale, tmp_path_factory: pytest.TempPathFactory) -> Iterator[School]:
    """The console's school (console_client.School) with 100,000 events, over the policy
    benchmarks' category lists and image (linked, not copied), its classes blocking five of
    those categories and a school list of LIST_ENTRIES names; compiled."""
    state_dir = tmp_path_factory.mktemp("console-scale")
    state, scale = StateDir(state_dir), StateDir(policy_scale.state_dir)
    state.lists.symlink_to(scale.lists)
    state.images.mkdir()
    state.categories_image.symlink_to(scale.categories_image)
    school = seeded(state_dir)
    with PolicyStore(scale.policy_db) as scale_store:
        categories = scale_store.load().categories
    with PolicyStore(state.policy_db) as store:
        register_categories(store, categories)
        store.add_client(ClientMatch("class-6b", cidr="198.18.6.0/24"))
        for category in [category for category in categories if category.alias_of is None][:5]:
            store.add_rule(Rule("class-6b", TargetKind.CATEGORY, category.name, Action.BLOCK))
        store.add_list(AdminList("uploaded", "a large list the school uploaded"))
        entries = school_list_entries(LIST_ENTRIES)
        while chunk := list(islice(entries, 100_000)):
            store.add_list_entries("uploaded", chunk)
        store.add_rule(Rule("class-5a", TargetKind.LIST, "uploaded", Action.BLOCK))
    compile_policy(state_dir)
    yield school
    school.close()


def school_list_entries(count: int) -> Iterator[ListEntry]:
    """listgen's names as an upload stores them: the few public suffixes among them refused."""
    for name in generate_names(count, seed="console"):
        try:
            yield parse_entry(EntryKind.DOMAIN, name)
        except PolicyError:
            continue


def a_listed_name(policy_scale: PolicyScale) -> str:
    category = next(category for category in policy_scale.store().categories() if category.alias_of is None)
    return next(category.name_chunks()).split()[0].decode()


def test_every_page_at_scale(benchmark: Any, school_at_scale: School, policy_scale: PolicyScale) -> None:
    """Each page's median time over PAGE_ROUNDS, signed in as the role that uses it."""
    school = school_at_scale
    listed = a_listed_name(policy_scale)
    console = ConsoleClient(school.app())
    overviews = console.app[OVERVIEWS]
    # person -> (figure label, method, path, form fields)
    pages: dict[str, list[tuple[str, str, str, dict[str, str] | None]]] = {
        "viewer": [("overview_day", "GET", "/console/overview?window=24h", None),
                   ("overview_week", "GET", "/console/overview?window=7d", None),
                   ("policy", "GET", "/console/policy", None), ("audit", "GET", "/console/audit", None),
                   ("check", "POST", "/console/check", {"target": listed, "address": "198.18.6.9"})],
        "ms-peeters": [("teacher", "GET", "/console/overrides", None), ("reviews", "GET", "/console/reviews", None)],
        "editor": [("uploads", "GET", "/console/uploads", None)],
        "coordinator": [("tokens", "GET", "/console/tokens", None)],
    }
    figures: dict[str, float] = {}
    try:
        for person, visits in pages.items():
            console.client.session.cookie_jar.clear()  # the previous person's session
            csrf = console.sign_in(school.secrets[person]).hidden("csrf")
            if person == "editor":
                form = FormData()
                for name, value in (("csrf", csrf), ("list", "blocked"), ("mode", "append"), ("format", "auto")):
                    form.add_field(name, value)
                form.add_field("file", b"one.example\ntwo.example\n", filename="a.txt", content_type="text/plain")
                started = console.request("POST", "/console/uploads", data=form, allow_redirects=False)
                location = started.headers["Location"]
                visits = [*visits, ("upload_status", "GET", location, None),
                          ("upload_progress", "GET", f"{location}/progress", None)]
            for label, method, path, form_fields in visits:
                def visit(method: str = method, path: str = path, fields: Any = form_fields) -> None:
                    answer = console.request(method, path, data=None if fields is None else {"csrf": csrf, **fields})
                    assert answer.status == 200, (path, answer.status, answer.text[:500])

                visit()
                if label.startswith("overview"):  # read for this page alone, then shared (OVERVIEWS)
                    overviews.fresh_seconds = 0
                    figures[f"console_{label}_ms"] = median_seconds(visit, PAGE_ROUNDS) * 1000
                    overviews.fresh_seconds = FRESH_SECONDS
                    label += "_shared"
                figures[f"console_{label}_ms"] = median_seconds(visit, PAGE_ROUNDS) * 1000
        console.client.session.cookie_jar.clear()
        console.sign_in(school.secrets["viewer"])
        overviews.fresh_seconds = 0
        benchmark.pedantic(lambda: console.get("/console/overview"), rounds=PAGE_ROUNDS, iterations=1)
    finally:
        console.close()
    benchmark.extra_info["figures"] = {
        "console_scale_listed_names": policy_scale.real_names + policy_scale.synthetic_names,
        "console_scale_school_list_entries": LIST_ENTRIES, "console_scale_events": EVENTS,
        "console_slowest_page_ms": max(figures.values()), **figures,
    }


# ---------------------------------------------------------------- pollers against the worker

POLLERS = 20
POLL_SECONDS = float(os.environ.get("EDUFILTER_BENCH_POLL_SECONDS") or 2.0)
WORKER_ROUNDS = 2 if TINY else 8  # of each kind, alternating
ROUND_SECONDS = 1.0 if TINY else 4.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def worker_packets_per_second(make_loop: Callable[[], Enforcer], seconds: float) -> float:
    """The worker's classify pass over the first-packets mix, a fresh loop (flow table) per pass."""
    packets, busy = 0, 0.0
    ends = time.perf_counter() + seconds
    while time.perf_counter() < ends:
        loop = make_loop()
        started = time.perf_counter()
        loop.classify_offline(FIRST_PACKETS, 1.0)
        busy += time.perf_counter() - started
        packets += len(FIRST_PACKETS)
    return packets / busy


def started_process(arguments: list[str], log: Path) -> subprocess.Popen[bytes]:
    source = str(Path(edufilter.__file__).resolve().parents[1])
    return subprocess.Popen([sys.executable, *arguments], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": source})


def stopped(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def test_twenty_people_polling_the_overview_against_the_worker(benchmark: Any, school_at_scale: School,
                                                                  worker_loop: Callable[[], Enforcer],
                                                                  tmp_path: Path) -> None:
    port_file, flag, report = tmp_path / "port", tmp_path / "polling", tmp_path / "pollers.json"
    server = started_process([str(BENCH / "consoleserve.py"), str(school_at_scale.state_dir), str(port_file)],
                             tmp_path / "server.log")
    pollers = None
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            assert time.monotonic() < deadline and server.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        base_url = f"http://127.0.0.1:{port_file.read_text()}"
        pollers = started_process([str(BENCH / "consolepollers.py"), base_url, school_at_scale.secrets["viewer"],
                                   str(POLLERS), str(POLL_SECONDS), str(flag), str(report)], tmp_path / "pollers.log")
        time.sleep(2 + POLL_SECONDS)  # everyone signed in
        without, with_polling, server_share = [], [], []
        for _ in range(WORKER_ROUNDS):
            without.append(worker_packets_per_second(worker_loop, ROUND_SECONDS))
            flag.touch()
            cpu_before, started = cpu_seconds(server.pid), time.monotonic()
            with_polling.append(worker_packets_per_second(worker_loop, ROUND_SECONDS))
            server_share.append((cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - started))
            flag.unlink()
        benchmark.pedantic(lambda: worker_loop().classify_offline(FIRST_PACKETS, 1.0), rounds=3, iterations=1)
    finally:
        if pollers is not None:
            stopped(pollers)
        stopped(server)
    polled = json.loads(report.read_text())
    assert polled["error"] is None and polled["pages"] > 0, polled
    alone, polled_pps = statistics.median(without), statistics.median(with_polling)
    benchmark.extra_info["mix"] = MIX_DESCRIPTION
    benchmark.extra_info["worker_ratio_per_round_pair"] = [round(b / a, 3) for a, b in zip(without, with_polling)]
    benchmark.extra_info["figures"] = {
        "console_pollers": POLLERS, "console_poll_seconds": POLL_SECONDS,
        "worker_pps_alone": alone, "worker_pps_while_console_polled": polled_pps,
        "worker_console_polled_vs_alone_ratio": polled_pps / alone,
        "console_polled_overview_pages": polled["pages"],
        "console_polled_overview_median_ms": statistics.median(polled["latencies_ms"]),
        "console_process_cpu_share_while_polled": statistics.median(server_share),
    }
