"""What a policy change costs when the admin lists are large (issue 14), end to end through the
admin API served in this process with its real applier (compile, then the images a worker maps).

- A teacher's override with 100 k, 1 M and 5 M names in admin lists: from the POST until a
  freshly mapped engine (as a worker maps it on a reload) holds the override.
- GET /status (a viewer's token) while a large list file is uploaded, stored and compiled:
  its p99, against its p99 with nothing else running, measured in the same run.

The lists are synthetic (deterministic, every name distinct, labels, depth and TLDs varied;
`listnames.py`) and put into the store once per size through PolicyStore.add_list_entries,
then compiled once; only the change is timed.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from listnames import synthetic_names
from mixes import TINY

from edufilter.api.app import make_app, start_api
from edufilter.api.settings import ApiSettings
from edufilter.api.standalone import compiling_applier, image_explain
from edufilter.api.tokens import create_token
from edufilter.classify.engine import Engine
from edufilter.policy.compile import compile_policy
from edufilter.policy.model import (
    Action,
    AdminList,
    EntryKind,
    Group,
    ListEntry,
    Policy,
    Rule,
    Settings,
    TargetKind,
)
from edufilter.policy.store import Actor, PolicyStore
from edufilter.state import StateDir

SIZES = {"100k": 100_000, "1m": 1_000_000, "5m": 5_000_000} if not TINY else {"1k": 1_000, "5k": 5_000}
ROUNDS = int(os.environ.get("EDUFILTER_BENCH_CHANGE_ROUNDS", 5))
STORE_BATCH = 1_000_000  # entries per add_list_entries call while the state is made
UPLOAD_NAMES = int(os.environ.get("EDUFILTER_BENCH_UPLOAD_NAMES", 2_000 if TINY else 2_000_000))
STATUS_INTERVAL = 0.01  # seconds between two GET /status


class ServedApi:
    """The admin API on 127.0.0.1 in a thread of its own, as `edufilter api` serves it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.app = make_app(state_dir, compiling_applier(state_dir), explain=image_explain(state_dir),
                            settings=ApiSettings(port=0, max_upload_bytes=1 << 30))
        self.tokens = {role: self._token(role) for role in ("editor", "viewer")}
        self.tokens["teacher"] = self._token("teacher", ("pupils",))
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(30), "the API did not start"

    def _token(self, role: str, groups: tuple[str, ...] = ()) -> str:
        with PolicyStore(StateDir(self.state_dir).policy_db) as store:
            with store.audited(Actor("bench", "admin", "CLI", "token create"), "token", role) as change:
                return create_token(change.db, f"bench-{role}", role, groups)[1]

    def _serve(self, ready: threading.Event) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = self.loop.run_until_complete(start_api(self.app))
        host, port = self.runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)

    def request(self, session: requests.Session, method: str, path: str, role: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}", **kwargs.pop("headers", {})}
        return session.request(method, self.base_url + path, headers=headers, timeout=600, **kwargs)


def school(state_dir: Path, names: int) -> None:
    """A school whose admin list `blocked` holds `names` names, compiled."""
    with PolicyStore(StateDir(state_dir).policy_db) as store:
        store.replace_all(Policy(
            settings=Settings(default_group="pupils"),
            groups=(Group("pupils"),),
            lists=(AdminList("blocked"), AdminList("uploaded")),
            rules=(Rule("pupils", TargetKind.LIST, "blocked", Action.BLOCK),
                   Rule("pupils", TargetKind.LIST, "uploaded", Action.BLOCK)),
        ))
        batch: list[ListEntry] = []
        for name in synthetic_names(names):
            batch.append(ListEntry(EntryKind.DOMAIN, name))
            if len(batch) == STORE_BATCH:
                store.add_list_entries("blocked", batch)
                batch.clear()
        store.add_list_entries("blocked", batch)
    compile_policy(state_dir)


@dataclass
class Served:
    api: ServedApi
    names: int


@pytest.fixture(scope="module", params=list(SIZES))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    state_dir = tmp_path_factory.mktemp(f"change-cost-{request.param}")
    school(state_dir, SIZES[request.param])
    api = ServedApi(state_dir)
    yield Served(api, SIZES[request.param])
    api.stop()


def test_override_live_with_large_admin_lists(benchmark, served: Served) -> None:
    """POST /api/v1/overrides (a teacher) until a freshly mapped engine holds the override."""
    label = next(label for label, count in SIZES.items() if count == served.names)
    benchmark.group = "change cost"
    benchmark.extra_info.update(time_figure=f"override_live_seconds_{label}", admin_list_names=served.names)
    session = requests.Session()
    made: list[int] = []

    def override_live() -> None:
        response = served.api.request(session, "POST", "/api/v1/overrides", "teacher", json={
            "group": "pupils", "name": f"site{len(made)}.example", "minutes": 50})
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
        engine = Engine.open(served.api.state_dir)
        assert made[-1] in {override["id"] for override in engine.meta["overrides"]}

    benchmark.pedantic(override_live, rounds=ROUNDS)
    session.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def status_latencies(api: ServedApi, session: requests.Session, until) -> list[float]:
    """Seconds per GET /status (a viewer), one every STATUS_INTERVAL, until until() is true."""
    latencies = []
    while not until():
        started = time.perf_counter()
        response = api.request(session, "GET", "/api/v1/status", "viewer")
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200
        time.sleep(STATUS_INTERVAL)
    return latencies


def test_status_answers_during_a_large_upload(benchmark, tmp_path: Path) -> None:
    """p99 of GET /status while a list file of UPLOAD_NAMES names is read, stored and compiled."""
    benchmark.group = "change cost"
    school(tmp_path, 0)
    api = ServedApi(tmp_path)
    data = "".join(f"{name}\n" for name in synthetic_names(UPLOAD_NAMES, seed=2)).encode()
    session = requests.Session()
    try:
        idle_until = time.monotonic() + (0.5 if TINY else 5.0)
        idle = status_latencies(api, session, lambda: time.monotonic() > idle_until)
        accepted = api.request(session, "POST", "/api/v1/lists/uploaded/uploads?format=plain", "editor",
                               data=data, headers={"Content-Type": "text/plain"})
        assert accepted.status_code == 202, accepted.text
        upload = accepted.headers["Location"]

        def finished() -> bool:
            return api.request(session, "GET", upload, "viewer").json()["state"] in ("done", "failed")

        busy = benchmark.pedantic(status_latencies, args=(api, session, finished), rounds=1)
        assert api.request(session, "GET", upload, "viewer").json()["state"] == "done"
    finally:
        session.close()
        api.stop()
    benchmark.extra_info.update(figures={
        "status_p99_during_upload_ms": percentile(busy, 0.99) * 1000,
        "status_p50_during_upload_ms": percentile(busy, 0.5) * 1000,
        "status_p99_idle_ms": percentile(idle, 0.99) * 1000,
        "status_requests_during_upload": len(busy),
        "upload_names": UPLOAD_NAMES, "upload_bytes": len(data),
    })
