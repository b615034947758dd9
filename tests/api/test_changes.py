"""How changes are made: If-Match between two admins, live application once per change,
and a failed apply that leaves the old policy live."""

from __future__ import annotations

import pytest
import requests
from conftest import LiveApi, problem, seed

from edufilter.classify.engine import Engine
from edufilter.classify.image import Image
from edufilter.policy.store import PolicyStore
from edufilter.state import StateDir


def test_two_admins_cannot_overwrite_each_other(api: LiveApi) -> None:
    seed(api)
    alice, bob = api.admin, api.token("admin", name="bob")
    path = "/api/v1/groups/class-5a"
    alice_read = api.get(path, token=alice)
    bob_read = api.get(path, token=bob)
    assert alice_read.headers["ETag"] == bob_read.headers["ETag"]

    saved = api.call("PATCH", path, token=alice, json={"safe_search": True},
                     headers={"If-Match": alice_read.headers["ETag"]})
    assert saved.status_code == 200
    conflict = problem(api.call("PATCH", path, token=bob, json={"title": "Bob's title"},
                                headers={"If-Match": bob_read.headers["ETag"]}), 412)
    assert "changed since you read it" in conflict["detail"]
    assert api.get(path).json()["title"] == "CLASS-5A"  # Bob's change was not made

    retried = api.call("PATCH", path, token=bob, json={"title": "Bob's title"},
                       headers={"If-Match": f'"other", {saved.headers["ETag"]}'})
    assert retried.status_code == 200
    assert retried.json()["safe_search"] is True and retried.json()["title"] == "Bob's title"


def test_changes_to_existing_resources_need_if_match(api: LiveApi) -> None:
    seed(api)
    for method, path in (("PATCH", "/api/v1/groups/staff"), ("PUT", "/api/v1/groups/staff"),
                         ("DELETE", "/api/v1/groups/staff"), ("PATCH", "/api/v1/settings"),
                         ("DELETE", "/api/v1/lists/games/entries/1")):
        problem(api.call(method, path, json={}), 428)
    problem(api.call("DELETE", "/api/v1/groups/staff", headers={"If-Match": 'W/"weak"'}), 412)
    assert api.call("DELETE", "/api/v1/groups/staff", headers={"If-Match": "*"}).status_code == 204
    problem(api.call("DELETE", "/api/v1/groups/staff", headers={"If-Match": "*"}), 404)


def test_a_rule_moved_by_another_admin_is_not_deleted_by_position(api: LiveApi) -> None:
    seed(api)
    rules = "/api/v1/groups/class-5a/rules"
    api.post(rules, {"target_kind": "category", "target": "adult", "action": "block"})
    api.post(rules, {"target_kind": "list", "target": "games", "action": "block"})
    second = api.get(f"{rules}/1")
    assert api.change("DELETE", f"{rules}/0").status_code == 204  # the list rule is now at 0
    problem(api.call("DELETE", f"{rules}/0", headers={"If-Match": second.headers["ETag"]}), 412)


def test_every_change_is_applied_once(api: LiveApi) -> None:
    version = api.get("/api/v1/status").json()["policy_version"]
    before = api.applier.calls
    api.post("/api/v1/groups", {"name": "staff"})
    api.post("/api/v1/lists", {"name": "blocked"})
    api.post("/api/v1/lists/blocked/entries", {"kind": "domain", "value": "a.example"})
    api.change("PATCH", "/api/v1/groups/staff", {"safe_search": True})
    api.post("/api/v1/overrides", {"group": "staff", "name": "b.example", "minutes": 5})
    assert api.applier.calls == before + 5
    api.get("/api/v1/groups")
    problem(api.post("/api/v1/groups", {"name": "staff"}), 409)
    problem(api.post("/api/v1/groups", {"name": "BAD"}), 422)
    assert api.applier.calls == before + 5  # reads and refused changes apply nothing
    status = api.get("/api/v1/status").json()
    assert status["live_version"] == status["policy_version"] == version + 5
    assert status["applies"] == 5
    assert Engine.open(api.state_dir).version == version + 5  # the image the daemon maps


def test_a_failed_apply_leaves_the_old_policy_live(api: LiveApi) -> None:
    api.post("/api/v1/groups", {"name": "staff"})
    live = api.get("/api/v1/status").json()["live_version"]
    categories = StateDir(api.state_dir).categories_image
    good = categories.read_bytes()
    categories.write_bytes(b"\0" * 4096)  # damaged: the policy cannot be compiled against it
    failed = problem(api.post("/api/v1/groups", {"name": "teachers"}), 500)
    assert failed["type"].endswith(":apply-failed")
    assert "not an edufilter image" in failed["detail"] and failed["live_version"] == live
    status = api.get("/api/v1/status").json()
    assert status["live_version"] == live and status["policy_version"] == live + 1
    assert status["apply_failures"] == 1 and "not an edufilter image" in status["last_apply_error"]
    assert Image(StateDir(api.state_dir).policy_image).meta["version"] == live  # still mapped

    categories.write_bytes(good)
    assert api.post("/api/v1/apply").json() == {"live_version": live + 1}
    assert api.get("/api/v1/status").json()["last_apply_error"] is None
    assert Engine.open(api.state_dir).version == live + 1


def test_an_invalid_change_touches_nothing(api: LiveApi) -> None:
    seed(api)
    with PolicyStore(api.database) as store:
        version, policy = store.load_with_version()
    problem(api.change("PATCH", "/api/v1/settings", {"default_group": "nobody"}), 422)
    problem(api.post("/api/v1/groups/class-5a/rules", {"target_kind": "list", "target": "games",
                                                       "action": "block", "schedule": "never"}), 422)
    with PolicyStore(api.database) as store:
        assert store.load_with_version() == (version, policy)


def test_concurrent_changes_are_serialised(api: LiveApi) -> None:
    api.post("/api/v1/lists", {"name": "many"})
    from concurrent.futures import ThreadPoolExecutor

    def add(number: int) -> int:
        with requests.Session() as session:
            return session.post(f"{api.base_url}/api/v1/lists/many/entries",
                                json={"kind": "domain", "value": f"host{number}.example"},
                                headers={"Authorization": f"Bearer {api.admin}"}, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(add, range(40))) == {201}
    assert api.get("/api/v1/lists/many").json()["entry_count"] == 40
    assert len(api.get("/api/v1/audit", params={"kind": "entry", "limit": 1000}).json()["items"]) == 40


def test_a_change_the_full_disk_cannot_store_is_503_with_retry_after(
        api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's StorageFullError (SQLite "database or disk is full", tested in
    tests/policy/test_store.py on a real full tmpfs) is the server's trouble: 503, not 422."""
    from contextlib import contextmanager

    from edufilter.errors import StorageFullError
    from edufilter.policy.store import PolicyStore

    @contextmanager
    def full_disk(*args: object, **kwargs: object):
        raise StorageFullError("policy.sqlite: the disk is full: the change was not stored")
        yield

    monkeypatch.setattr(PolicyStore, "audited", full_disk)
    answer = api.call("POST", "/api/v1/groups", json={"name": "staff"})
    body = problem(answer, 503)
    assert answer.headers["Retry-After"].isdigit()
    assert body["type"].endswith(":storage-full") and "disk is full" in body["detail"]
