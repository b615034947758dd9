"""The API while the policy database is busy: reads and token lookups do not wait for a
write, a write that cannot get the database is 503 (not the client's error), a change that
changes nothing is neither audited nor compiled, and checks run off the event loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import requests
from conftest import LiveApi, problem, seed

from edufilter.api.observe import CHECKS, MAX_RUNNING_CHECKS, MAX_WAITING_CHECKS
from edufilter.policy import store as store_module
from edufilter.policy.check import open_current
from edufilter.policy.model import ClientIdentity
from edufilter.policy.store import Actor, PolicyStore


@pytest.fixture
def quick_busy_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveApi]:
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 2000)
    live = LiveApi(tmp_path)
    yield live
    live.stop()


def hold_write_lock(database: Path) -> tuple[threading.Event, threading.Thread]:
    """Another writer (as an upload is) holding the write lock until the event is set."""
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        with PolicyStore(database) as other, other.audited(Actor("t", "admin", "TEST", "/"), "group", "x") as change:
            change.db.execute("UPDATE settings SET value = value")
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(10)
    return release, thread


def test_a_busy_database_answers_503_with_retry_after(quick_busy_api: LiveApi) -> None:
    api = quick_busy_api
    release, thread = hold_write_lock(api.database)
    try:
        body = problem(api.post("/api/v1/groups", {"name": "staff"}), 503)
        response = api.post("/api/v1/groups", {"name": "staff"})
        assert int(response.headers["Retry-After"]) >= 1
        assert body["type"].endswith(":store-busy") and "nothing was changed" in body["detail"]
    finally:
        release.set()
        thread.join(10)
    assert api.post("/api/v1/groups", {"name": "staff"}).status_code == 201


def test_authentication_and_reads_do_not_wait_for_a_write(quick_busy_api: LiveApi) -> None:
    """A change waiting for the write lock (here for the whole busy timeout) occupies the API's
    writer thread; a viewer's token lookup and reads answer meanwhile, not after it."""
    api = quick_busy_api
    viewer = api.token("viewer")
    release, holder = hold_write_lock(api.database)
    try:
        waiting = threading.Thread(target=lambda: api.call("POST", "/api/v1/groups", json={"name": "staff"}),
                                   daemon=True)
        waiting.start()
        time.sleep(0.1)  # the change reaches the writer thread and waits there for the lock
        status = requests.get(f"{api.base_url}/api/v1/status", headers={"Authorization": f"Bearer {viewer}"},
                              timeout=30)
        groups = requests.get(f"{api.base_url}/api/v1/groups", headers={"Authorization": f"Bearer {viewer}"},
                              timeout=30)
        assert status.status_code == 200 and groups.status_code == 200
        assert waiting.is_alive()  # answered while the change still waited
        assert requests.get(f"{api.base_url}/api/v1/status", headers={"Authorization": "Bearer eft_nothing"},
                            timeout=30).status_code == 401
    finally:
        release.set()
        holder.join(10)
        waiting.join(30)


def test_a_change_that_changes_nothing_is_neither_audited_nor_applied(api: LiveApi) -> None:
    seed(api)
    audit = len(api.get("/api/v1/audit", params={"limit": 1000}).json()["items"])
    applied, version = api.applier.calls, api.get("/api/v1/status").json()["policy_version"]
    for path in ("/api/v1/groups/staff", "/api/v1/lists/games", "/api/v1/settings"):
        assert api.change("PATCH", path, {}).status_code == 200
    assert api.change("PATCH", "/api/v1/groups/staff", {"title": "STAFF"}).status_code == 200  # the same title
    assert len(api.get("/api/v1/audit", params={"limit": 1000}).json()["items"]) == audit
    assert api.applier.calls == applied
    assert api.get("/api/v1/status").json()["policy_version"] == version
    assert api.change("PATCH", "/api/v1/groups/staff", {"title": "Staff"}).status_code == 200
    assert len(api.get("/api/v1/audit", params={"limit": 1000}).json()["items"]) == audit + 1
    assert api.applier.calls == applied + 1


def test_a_list_description_change_keeps_its_entries(api: LiveApi) -> None:
    seed(api)
    assert api.change("PATCH", "/api/v1/lists/games", {"description": "board games"}).status_code == 200
    page = api.get("/api/v1/lists/games/entries").json()
    assert [item["value"] for item in page["items"]] == ["games.example"]
    assert api.get("/api/v1/lists/games").json()["description"] == "board games"


@pytest.fixture
def slow_check_api(tmp_path: Path) -> Iterator[tuple[LiveApi, threading.Event, threading.Semaphore]]:
    """An API whose explain blocks until released, as a compile for a far `at` takes long."""
    release, entered = threading.Event(), threading.Semaphore(0)

    def explain(target: str, client: ClientIdentity, at: datetime):
        entered.release()
        release.wait(30)
        return open_current(tmp_path, at).explain(target, client, at)

    live = LiveApi(tmp_path, explain=explain)
    yield live, release, entered
    release.set()
    live.stop()


def test_checks_run_off_the_event_loop_and_are_bounded(slow_check_api) -> None:
    api, release, entered = slow_check_api
    body = {"target": "www.example.org", "client": {"address": "198.18.16.5"}, "at": "2030-01-01T10:00:00+01:00"}
    answers: list[requests.Response] = []

    def check() -> requests.Response:
        return requests.post(f"{api.base_url}/api/v1/check", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {api.admin}"})

    threads = [threading.Thread(target=lambda: answers.append(check()), daemon=True)
               for _ in range(MAX_RUNNING_CHECKS + MAX_WAITING_CHECKS)]
    for thread in threads[:MAX_RUNNING_CHECKS]:
        thread.start()
    for _ in range(MAX_RUNNING_CHECKS):
        assert entered.acquire(timeout=10)  # running on threads, blocked there
    assert api.get("/healthz", token=None).status_code == 200  # the event loop is free meanwhile
    for thread in threads[MAX_RUNNING_CHECKS:]:
        thread.start()
    deadline = time.monotonic() + 10
    while api.app[CHECKS].in_progress < len(threads) and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = check()
    assert problem(refused, 503)["type"].endswith(":busy") and refused.headers["Retry-After"] == "1"
    release.set()
    for thread in threads:
        thread.join(30)
    assert [answer.status_code for answer in answers] == [200] * len(threads)
    assert answers[0].json()["group"] == "guests"
