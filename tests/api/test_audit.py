"""The audit log: who changed what, when, before and after, committed with the change."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from conftest import LiveApi, conforms, problem, seed


def test_every_change_is_recorded_with_before_and_after(api: LiveApi) -> None:
    editor = api.token("editor", name="ict-coordinator")
    api.post("/api/v1/groups", {"name": "class-5a"}, token=editor)
    api.change("PATCH", "/api/v1/groups/class-5a", {"safe_search": True}, token=editor)
    api.change("DELETE", "/api/v1/groups/class-5a", token=editor)
    log = conforms(api, api.get("/api/v1/audit", params={"kind": "group"}), "AuditPage")["items"]
    assert [(entry["method"], entry["path"]) for entry in log] == [
        ("DELETE", "/api/v1/groups/class-5a"), ("PATCH", "/api/v1/groups/class-5a"), ("POST", "/api/v1/groups")]
    deleted, patched, created = log
    assert {entry["token"] for entry in log} == {"ict-coordinator"} and {entry["role"] for entry in log} == {"editor"}
    assert created["before"] is None and created["after"]["safe_search"] is False
    assert patched["before"]["safe_search"] is False and patched["after"]["safe_search"] is True
    assert deleted["before"] == patched["after"] and deleted["after"] is None
    assert [entry["policy_version"] for entry in log] == [4, 3, 2]  # 1: the fixture's guests group
    assert all(entry["object_id"] == "class-5a" for entry in log)
    at = datetime.fromisoformat(created["at"])
    assert timedelta(0) <= datetime.now(timezone.utc) - at < timedelta(minutes=1)


def test_objects_with_database_ids_are_audited_by_id(api: LiveApi) -> None:
    seed(api)
    override = api.post("/api/v1/overrides", {"group": "class-5a", "name": "a.example", "minutes": 5}).json()
    entry = api.post("/api/v1/lists/games/entries", {"kind": "exact", "value": "b.example"}).json()
    rule = api.post("/api/v1/groups/staff/rules", {"target_kind": "list", "target": "games", "action": "block"})
    audit = {item["kind"]: item for item in reversed(api.get("/api/v1/audit").json()["items"])}  # newest wins
    assert audit["override"]["object_id"] == str(override["id"])
    assert audit["entry"]["object_id"] == f"games/{entry['id']}"
    assert audit["rule"]["object_id"] == "staff/0" and audit["rule"]["after"] == rule.json()


def test_a_refused_change_leaves_no_audit_row(api: LiveApi) -> None:
    seed(api)
    count = len(api.get("/api/v1/audit", params={"limit": 1000}).json()["items"])
    problem(api.post("/api/v1/groups", {"name": "staff"}), 409)
    problem(api.change("PATCH", "/api/v1/settings", {"default_group": "nobody"}), 422)  # refused in the store
    problem(api.call("PATCH", "/api/v1/groups/staff", json={"title": "x"}, headers={"If-Match": '"stale"'}), 412)
    assert len(api.get("/api/v1/audit", params={"limit": 1000}).json()["items"]) == count


def test_a_change_cannot_exist_without_its_audit_row(api: LiveApi) -> None:
    # Make the audit insert fail inside the transaction: the change must roll back with it.
    with sqlite3.connect(api.database) as db:
        db.execute("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'no'); END")
        before = db.execute("SELECT (SELECT count(*) FROM groups), (SELECT version FROM policy_version)").fetchone()
    problem(api.post("/api/v1/groups", {"name": "staff"}), 422)
    with sqlite3.connect(api.database) as db:
        assert db.execute("SELECT (SELECT count(*) FROM groups), (SELECT version FROM policy_version)").fetchone() \
            == before


def test_tokens_and_paging_of_the_log(api: LiveApi) -> None:
    subprocess.run([sys.executable, "-m", "edufilter", "token", "create", "--role", "viewer", "--name", "auditor",
                    "--state-dir", str(api.state_dir)], check=True, capture_output=True, timeout=60)
    made = api.get("/api/v1/audit", params={"kind": "token", "object_id": "auditor"}).json()["items"]
    assert made[0]["method"] == "CLI" and made[0]["token"].startswith("cli:")
    assert "secret" not in str(made[0]["after"]) and made[0]["after"]["role"] == "viewer"
    for number in range(5):
        api.post("/api/v1/groups", {"name": f"g{number}"})
    first = api.get("/api/v1/audit", params={"kind": "group", "limit": 2}).json()
    second = api.get("/api/v1/audit", params={"kind": "group", "limit": 2, "cursor": first["next_cursor"]}).json()
    third = api.get("/api/v1/audit", params={"kind": "group", "limit": 2, "cursor": second["next_cursor"]}).json()
    ids = [item["object_id"] for page in (first, second, third) for item in page["items"]]
    assert ids == ["g4", "g3", "g2", "g1", "g0"] and third["next_cursor"] is None
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert api.get("/api/v1/audit", params={"since": later}).json()["items"] == []
    viewer = api.token("viewer")
    assert api.get("/api/v1/audit", token=viewer).status_code == 200


def test_only_admins_read_the_audit_of_tokens(api: LiveApi) -> None:
    api.post("/api/v1/tokens", {"name": "laptop", "role": "editor"})
    api.post("/api/v1/groups", {"name": "class-5a"})
    viewer, editor = api.token("viewer"), api.token("editor")
    for reader in (viewer, editor):
        assert api.get("/api/v1/audit", params={"kind": "token"}, token=reader).json()["items"] == []
        kinds = {item["kind"] for item in api.get("/api/v1/audit", token=reader).json()["items"]}
        assert kinds == {"group"}
    assert {item["object_id"] for item in api.get("/api/v1/audit", params={"kind": "token"}).json()["items"]} >= {
        "laptop"}
    problem(api.get("/api/v1/audit", token=api.token("teacher", groups=("guests",))), 403)
