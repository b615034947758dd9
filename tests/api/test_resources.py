"""Create, read, update and delete every resource over real HTTP; each answer is checked
against the schema the OpenAPI document gives for it."""

from __future__ import annotations

import pytest
from conftest import LiveApi, conforms, problem, seed

from edufilter.policy.store import PolicyStore


def test_groups_crud_with_safe_search_and_bypass_shield(api: LiveApi) -> None:
    created = api.post("/api/v1/groups", {"name": "class-5a", "title": "Class 5A", "safe_search": True})
    assert created.status_code == 201
    assert created.headers["Location"] == "/api/v1/groups/class-5a"
    group = conforms(api, created, "Group")
    assert group == {
        "name": "class-5a", "title": "Class 5A", "default_action": "allow", "safe_search": True,
        "quic": "inspect", "bypass_shield": False, "log_client_address": False, "unnamed": "auto",
    }
    assert api.get("/api/v1/groups/class-5a").json() == group
    assert api.get("/api/v1/groups/class-5a").headers["ETag"] == created.headers["ETag"]

    patched = api.change("PATCH", "/api/v1/groups/class-5a", {"bypass_shield": True, "default_action": "block"})
    assert patched.status_code == 200
    assert conforms(api, patched, "Group") == {**group, "bypass_shield": True, "default_action": "block"}
    assert patched.headers["ETag"] != created.headers["ETag"]

    replaced = api.change("PUT", "/api/v1/groups/class-5a", {"title": "5A"})
    assert replaced.json() == {**group, "title": "5A", "safe_search": False}  # PUT: left out means default

    egress = api.change("PATCH", "/api/v1/groups/class-5a", {"unnamed": "block-all"})
    assert conforms(api, egress, "Group")["unnamed"] == "block-all"
    with PolicyStore(api.database) as store:
        assert next(g for g in store.load().groups if g.name == "class-5a").unnamed == "block-all"
    refused = problem(api.change("PATCH", "/api/v1/groups/class-5a", {"unnamed": "block"}), 422)
    assert refused["invalid_params"][0]["name"] == "unnamed"

    assert api.post("/api/v1/groups", {"name": "staff"}).status_code == 201
    page = conforms(api, api.get("/api/v1/groups"), "GroupPage")
    assert [item["name"] for item in page["items"]] == ["guests", "class-5a", "staff"]
    assert api.change("DELETE", "/api/v1/groups/staff").status_code == 204
    problem(api.get("/api/v1/groups/staff"), 404)
    with PolicyStore(api.database) as store:
        assert [group.name for group in store.load().groups] == ["guests", "class-5a"]


def test_creating_twice_is_a_conflict_and_bad_names_name_the_field(api: LiveApi) -> None:
    assert api.post("/api/v1/groups", {"name": "staff"}).status_code == 201
    problem(api.post("/api/v1/groups", {"name": "staff"}), 409)
    refused = problem(api.post("/api/v1/groups", {"name": "Not A Slug"}), 422)
    assert refused["invalid_params"][0]["name"] == "name"


def test_clients_by_cidr_interface_and_mac(api: LiveApi) -> None:
    seed(api)
    by_cidr = api.post("/api/v1/clients", {"group": "class-5a", "cidr": "198.18.5.7/24"})
    assert by_cidr.status_code == 201
    client = conforms(api, by_cidr, "Client")
    assert client["cidr"] == "198.18.5.0/24" and client["interface"] is None  # normalised
    problem(api.post("/api/v1/clients", {"group": "staff", "cidr": "198.18.5.0/24"}), 409)
    by_mac = api.post("/api/v1/clients", {"group": "staff", "mac": "AA-BB-CC-DD-EE-FF"}).json()
    assert by_mac["mac"] == "aa:bb:cc:dd:ee:ff"
    by_vlan = api.post("/api/v1/clients", {"group": "guests", "interface": "eth1", "vlan": 42}).json()
    assert (by_vlan["interface"], by_vlan["vlan"]) == ("eth1", 42)
    refused = problem(api.post("/api/v1/clients", {"group": "staff", "mac": "not-a-mac"}), 422)
    assert refused["invalid_params"][0]["name"] == "mac"
    problem(api.post("/api/v1/clients", {"group": "staff", "cidr": "198.18.9.0/24", "mac": "aa:bb:cc:dd:ee:01"}),
            422)

    moved = api.change("PATCH", f"/api/v1/clients/{client['id']}", {"group": "staff"})
    assert moved.json() == {**client, "group": "staff"}
    problem(api.change("PATCH", f"/api/v1/clients/{client['id']}", {"cidr": "198.18.6.0/24"}), 422)  # identity
    page = api.get("/api/v1/clients", params={"group": "staff", "sort": "-id"}).json()
    assert [item["id"] for item in page["items"]] == [by_mac["id"], client["id"]]
    assert api.change("DELETE", f"/api/v1/clients/{by_mac['id']}").status_code == 204
    assert api.get("/api/v1/clients").json()["total"] == 2


def test_categories_are_read_only_with_titles_in_every_language(api: LiveApi) -> None:
    seed(api)
    category = conforms(api, api.get("/api/v1/categories/adult"), "Category")
    assert category["titles"] == {"en": "Adult", "fr": "Adulte", "nl": "Volwassenen"}
    assert api.get("/api/v1/categories", params={"q": "volwassen"}).json()["total"] == 1
    problem(api.post("/api/v1/categories", {"name": "x"}), 405)
    problem(api.get("/api/v1/categories/nothing"), 404)


def test_lists_and_single_entries(api: LiveApi) -> None:
    seed(api)
    entry = api.post("/api/v1/lists/games/entries", {"kind": "domain", "value": "  WWW.Example.ORG. "})
    assert entry.status_code == 201
    assert conforms(api, entry, "Entry")["value"] == "www.example.org"
    problem(api.post("/api/v1/lists/games/entries", {"kind": "domain", "value": "www.example.org"}), 409)
    refused = problem(api.post("/api/v1/lists/games/entries", {"kind": "cidr", "value": "300.1.2.3"}), 422)
    assert refused["invalid_params"][0]["name"] == "value"
    problem(api.post("/api/v1/lists/nowhere/entries", {"kind": "domain", "value": "a.example"}), 404)
    assert api.post("/api/v1/lists/games/entries", {"kind": "url_prefix",
                                                    "value": "http://Example.org/games/"}).json()["value"] \
        == "example.org/games/"

    entries = conforms(api, api.get("/api/v1/lists/games/entries", params={"sort": "value"}), "EntryPage")
    assert [item["value"] for item in entries["items"]] == ["example.org/games/", "games.example", "www.example.org"]
    assert api.get("/api/v1/lists/games/entries", params={"kind": "domain", "q": "www"}).json()["total"] == 1
    game_list = conforms(api, api.get("/api/v1/lists/games"), "List")
    assert game_list["entry_count"] == 3

    described = api.change("PATCH", "/api/v1/lists/games", {"description": "no games in class"})
    assert described.json() == {**game_list, "description": "no games in class"}  # entries kept
    entry_path = entry.headers["Location"]
    assert api.change("DELETE", entry_path).status_code == 204
    problem(api.get(entry_path), 404)
    assert api.get("/api/v1/lists/games").json()["entry_count"] == 2


def test_rules_are_ordered_and_move(api: LiveApi) -> None:
    seed(api)
    rules = "/api/v1/groups/class-5a/rules"
    first = api.post(rules, {"target_kind": "category", "target": "adult", "action": "block"})
    assert first.status_code == 201 and first.headers["Location"] == f"{rules}/0"
    assert conforms(api, first, "Rule") == {"group": "class-5a", "position": 0, "target_kind": "category",
                                            "target": "adult", "action": "block", "schedule": None, "enabled": True}
    second = api.post(rules, {"target_kind": "list", "target": "games", "action": "block", "schedule": "lessons"})
    assert second.json()["position"] == 1
    on_top = api.post(rules, {"target_kind": "list", "target": "games", "action": "allow", "position": 0})
    assert on_top.json()["position"] == 0
    assert [rule["action"] for rule in api.get(rules).json()["items"]] == ["allow", "block", "block"]

    moved = api.change("PUT", f"{rules}/0", {"target_kind": "list", "target": "games", "action": "monitor",
                                             "position": 2})
    assert moved.json()["position"] == 2
    assert [rule["action"] for rule in api.get(rules).json()["items"]] == ["block", "block", "monitor"]
    refused = problem(api.post(rules, {"target_kind": "category", "target": "nothing", "action": "block"}), 422)
    assert refused["invalid_params"][0]["name"] == "target"
    problem(api.post("/api/v1/groups/nobody/rules", {"target_kind": "list", "target": "games", "action": "block"}),
            404)
    assert api.change("DELETE", f"{rules}/0").status_code == 204
    assert [rule["position"] for rule in api.get(rules).json()["items"]] == [0, 1]
    problem(api.change("DELETE", "/api/v1/lists/games"), 422)  # rules use it


def test_schedules_with_exceptions(api: LiveApi) -> None:
    body = {
        "name": "exams",
        "slots": [{"weekday": 0, "start": "08:00", "end": "24:00"}],
        "exceptions": [{"day": "2025-06-16", "slots": [{"start": "09:00", "end": "12:00"}]},
                       {"day": "2025-12-25", "slots": []}],
    }
    created = api.post("/api/v1/schedules", body)
    assert created.status_code == 201
    assert conforms(api, created, "Schedule") == body
    refused = problem(api.post("/api/v1/schedules", {"name": "bad", "slots": [
        {"weekday": 1, "start": "10:00", "end": "09:00"}]}), 422)
    assert refused["invalid_params"][0]["name"] == "slots"
    problem(api.post("/api/v1/schedules", {"name": "bad", "slots": [{"weekday": 7, "start": "10:00",
                                                                     "end": "11:00"}]}), 422)
    replaced = api.change("PUT", "/api/v1/schedules/exams", {"slots": []})
    assert replaced.json() == {"name": "exams", "slots": [], "exceptions": []}
    assert api.change("DELETE", "/api/v1/schedules/exams").status_code == 204


def test_overrides_the_teacher_case(api: LiveApi) -> None:
    seed(api)
    created = api.post("/api/v1/overrides", {"group": "class-5a", "name": "Video.Example", "minutes": 50})
    assert created.status_code == 201
    override = conforms(api, created, "Override")
    assert override["name"] == "video.example" and override["action"] == "allow" and override["active"]
    assert override["created_by"] == "admin"
    from datetime import datetime

    lasts = datetime.fromisoformat(override["expires_at"]) - datetime.fromisoformat(override["starts_at"])
    assert lasts.total_seconds() == 50 * 60
    with PolicyStore(api.database) as store:
        assert [stored.name for stored in store.load().overrides] == ["video.example"]
    problem(api.post("/api/v1/overrides", {"group": "nobody", "name": "a.example", "minutes": 5}), 422)
    listed = api.get("/api/v1/overrides", params={"active": "true", "group": "class-5a"}).json()
    assert [item["id"] for item in listed["items"]] == [override["id"]]
    assert api.change("DELETE", created.headers["Location"]).status_code == 204
    assert api.get("/api/v1/overrides").json()["total"] == 0


def test_general_settings(api: LiveApi) -> None:
    seed(api)
    settings = conforms(api, api.get("/api/v1/settings"), "Settings")
    assert settings["timezone"] == "Europe/Brussels"
    changed = api.change("PATCH", "/api/v1/settings", {"timezone": "Europe/Amsterdam", "default_group": "guests"})
    assert changed.json() == {**settings, "timezone": "Europe/Amsterdam", "default_group": "guests"}
    refused = problem(api.change("PATCH", "/api/v1/settings", {"timezone": "Mars/Olympus"}), 422)
    assert refused["invalid_params"][0]["name"] == "timezone"
    refused = problem(api.change("PATCH", "/api/v1/settings", {"block_page_ipv4": "2001:2::1"}), 422)
    assert refused["invalid_params"][0]["name"] == "block_page_ipv4"
    problem(api.change("DELETE", "/api/v1/groups/guests"), 422)  # the default group stays


def test_tokens_made_shown_once_and_listed_without_secret(api: LiveApi) -> None:
    seed(api)
    made = api.post("/api/v1/tokens", {"name": "mrs-peeters", "role": "teacher", "groups": ["class-5a"],
                                       "max_minutes": 50})
    assert made.status_code == 201
    secret = conforms(api, made, "TokenCreated")["token"]
    assert secret.startswith("eft_") and len(secret) > 40
    listed = api.get("/api/v1/tokens/mrs-peeters").json()
    assert "token" not in listed and listed["groups"] == ["class-5a"]
    assert secret not in api.get("/api/v1/tokens").text
    whoami = api.get("/api/v1/whoami", token=secret).json()
    assert (whoami["name"], whoami["role"], whoami["max_minutes"]) == ("mrs-peeters", "teacher", 50)
    problem(api.post("/api/v1/tokens", {"name": "t2", "role": "teacher"}), 422)  # no groups
    problem(api.post("/api/v1/tokens", {"name": "e2", "role": "editor", "groups": ["staff"]}), 422)
    problem(api.post("/api/v1/tokens", {"name": "mrs-peeters", "role": "viewer"}), 409)


@pytest.mark.parametrize("cidr, explained", [
    ("0.0.0.0/0", "matches every IPv4 client"), ("::/0", "matches every IPv6 client"),
    ("::ffff:198.18.0.0/120", "give the IPv4 network 198.18.0.0/24 instead"),
    ("fe80::1%eth0/128", "zone ID"),
])
def test_misleading_client_networks_are_refused_with_why(api: LiveApi, cidr: str, explained: str) -> None:
    api.post("/api/v1/groups", {"name": "pupils"})
    refused = problem(api.post("/api/v1/clients", {"group": "pupils", "cidr": cidr}), 422)
    assert explained in refused["detail"] and refused["invalid_params"][0]["name"] == "cidr"
    assert api.get("/api/v1/clients").json()["total"] == 0
    assert api.post("/api/v1/clients", {"group": "pupils", "cidr": "198.18.0.0/24"}).status_code == 201


def test_overlapping_or_repeated_slots_are_refused(api: LiveApi) -> None:
    monday = {"weekday": 0, "start": "08:00", "end": "10:00"}
    for slots in ([monday, {**monday}], [monday, {"weekday": 0, "start": "09:00", "end": "11:00"}],
                  [{"weekday": 0, "start": "20:00", "end": "24:00"}, {"weekday": 0, "start": "23:00", "end": "23:30"}]):
        refused = problem(api.post("/api/v1/schedules", {"name": "lessons", "slots": slots}), 422)
        assert "overlap on the same day" in refused["detail"] and refused["invalid_params"][0]["name"] == "slots[1]"
    exam_day = {"day": "2026-06-15", "slots": [{"start": "08:00", "end": "09:00"}, {"start": "08:30", "end": "10:00"}]}
    refused = problem(api.post("/api/v1/schedules", {"name": "lessons", "slots": [monday],
                                                     "exceptions": [exam_day]}), 422)
    assert refused["invalid_params"][0]["name"] == "exceptions[0].slots[1]"
    touching = [monday, {"weekday": 0, "start": "10:00", "end": "12:00"},
                {"weekday": 1, "start": "08:00", "end": "10:00"}]
    assert api.post("/api/v1/schedules", {"name": "lessons", "slots": touching}).status_code == 201
