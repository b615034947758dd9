"""A rule switched off, and the preview of a change before it is saved: rules of a group,
a schedule, a client match; each explained before and after, nothing stored."""

from __future__ import annotations

from datetime import datetime, timezone

from conftest import LiveApi, api, conforms, problem, seed  # noqa: F401 (api is a fixture)

PUPIL = {"address": "198.18.5.7"}
RULES = "/api/v1/groups/class-5a/rules"
MONDAY_TEN = datetime(2030, 1, 7, 10, 0, tzinfo=timezone.utc).isoformat()  # the school's clock is UTC here


def _school(api: LiveApi) -> None:
    seed(api)
    assert api.post("/api/v1/clients", {"group": "class-5a", "cidr": "198.18.5.0/24"}).status_code == 201
    assert api.post(RULES, {"target_kind": "list", "target": "games", "action": "block"}).status_code == 201


def test_a_disabled_rule_keeps_its_place_and_decides_nothing(api: LiveApi) -> None:
    _school(api)
    assert api.post(RULES, {"target_kind": "list", "target": "games", "action": "monitor"}).status_code == 201
    assert conforms(api, api.get(f"{RULES}/0"), "Rule")["enabled"] is True
    switched = api.change("PATCH", f"{RULES}/0", {"enabled": False})
    assert switched.status_code == 200 and switched.json()["enabled"] is False
    assert [rule["enabled"] for rule in api.get(RULES).json()["items"]] == [False, True]
    decided = api.post("/api/v1/check", {"target": "games.example", "client": PUPIL}).json()
    assert (decided["action"], decided["rule"]["position"]) == ("monitor", 1)
    audit = api.get("/api/v1/audit", params={"kind": "rule"}).json()["items"][0]
    assert (audit["before"]["enabled"], audit["after"]["enabled"]) == (True, False)
    problem(api.change("PATCH", f"{RULES}/0", {"enabled": "no"}), 422)


def test_a_preview_of_a_group_s_rules_explains_before_and_after_and_stores_nothing(api: LiveApi) -> None:
    _school(api)
    version = api.get("/api/v1/status").json()["policy_version"]
    body = {"targets": ["www.games.example", "other.example"], "client": PUPIL,
            "change": {"rules": {"group": "class-5a", "rules": [
                {"target_kind": "list", "target": "games", "action": "block", "enabled": False}]}}}
    answer = conforms(api, api.post("/api/v1/preview", body), "Preview")
    games, other = answer["items"]
    assert (games["before"]["action"], games["before"]["decided_by"]) == ("block", "admin list")
    assert (games["after"]["action"], games["after"]["decided_by"]) == ("allow", "group default")
    assert other["before"]["action"] == other["after"]["action"] == "allow"
    assert api.get("/api/v1/status").json()["policy_version"] == version
    assert api.get(f"{RULES}/0").json()["enabled"] is True


def test_a_preview_of_a_schedule_and_of_a_client_match(api: LiveApi) -> None:
    _school(api)
    api.change("PATCH", f"{RULES}/0", {"schedule": "lessons"})
    at_ten = {"targets": ["games.example"], "client": PUPIL, "at": MONDAY_TEN}
    free_monday = {"name": "lessons", "slots": [{"weekday": day, "start": "08:30", "end": "15:30"}
                                                for day in range(1, 5)]}
    [item] = api.post("/api/v1/preview", {**at_ten, "change": {"schedule": free_monday}}).json()["items"]
    assert (item["before"]["action"], item["after"]["action"]) == ("block", "allow")
    holiday = {**free_monday, "slots": [{"weekday": 0, "start": "08:00", "end": "16:00"}],
               "exceptions": [{"day": "2030-01-07", "slots": []}]}
    [item] = api.post("/api/v1/preview", {**at_ten, "change": {"schedule": holiday}}).json()["items"]
    assert item["after"]["action"] == "allow"

    client_id = api.get("/api/v1/clients").json()["items"][0]["id"]
    moved = {"id": client_id, "match": {"group": "staff", "cidr": "198.18.5.0/24"}}
    [item] = api.post("/api/v1/preview", {**at_ten, "change": {"client": moved}}).json()["items"]
    assert (item["before"]["group"], item["after"]["group"]) == ("class-5a", "staff")
    [item] = api.post("/api/v1/preview", {**at_ten, "change": {"client": {"id": client_id}}}).json()["items"]
    assert item["after"]["group"] == "guests"
    added = {"match": {"group": "staff", "cidr": "198.18.5.7/32"}}
    [item] = api.post("/api/v1/preview", {**at_ten, "change": {"client": added}}).json()["items"]
    assert (item["after"]["group"], item["after"]["action"]) == ("staff", "allow")
    assert len(api.get("/api/v1/clients").json()["items"]) == 1


def test_a_preview_refuses_what_a_save_would_refuse_and_needs_an_editor(api: LiveApi) -> None:
    _school(api)
    base = {"targets": ["games.example"], "client": PUPIL}
    unknown = {"rules": {"group": "class-5a", "rules": [{"target_kind": "list", "target": "nothing",
                                                         "action": "block"}]}}
    assert "nothing" in problem(api.post("/api/v1/preview", {**base, "change": unknown}), 422)["detail"]
    overlapping = {"name": "lessons", "slots": [{"weekday": 0, "start": "08:00", "end": "10:00"},
                                                {"weekday": 0, "start": "09:00", "end": "11:00"}]}
    problem(api.post("/api/v1/preview", {**base, "change": {"schedule": overlapping}}), 422)
    problem(api.post("/api/v1/preview", {**base, "change": {}}), 422)
    problem(api.post("/api/v1/preview", {**base, "change": {"client": {}}}), 422)
    problem(api.post("/api/v1/preview", {**base, "change": {"client": {"id": 999}}}), 404)
    too_many = {**base, "targets": [f"n{index}.example" for index in range(6)], "change": unknown}
    problem(api.post("/api/v1/preview", too_many), 422)
    viewer = api.token("viewer")
    problem(api.post("/api/v1/preview", {**base, "change": unknown}, token=viewer), 403)
