"""The console's clients, rules, schedules and categories pages at the request level: each
change shows its preview (nothing stored), then saves through the API's operation; a viewer
gets no form and a forged or unauthorised post changes nothing."""

from __future__ import annotations

import re

from console_client import ConsoleClient, Page, School
from console_client import console, school  # noqa: F401 (fixtures)

from edufilter.console.policy_pages import day_slots, slots_of_cells, week_grid
from edufilter.policy.model import Action, Rule, TargetKind
from edufilter.policy.store import PolicyStore


def _rows(text: str) -> list[list[str]]:
    table = re.search(r'<table class="foreseen">.*?<tbody>(.*?)</tbody>', text, re.S)
    assert table, "no preview table"
    return [[re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table[1], re.S)]


def _etag(page: Page, action: str) -> str:
    found = re.search(rf'action="{re.escape(action)}#preview-title"[^>]*>\s*<input type="hidden" name="csrf" value="[^"]+">\s*'
                      r'<input type="hidden" name="step" value="preview">\s*'
                      r'<input type="hidden" name="etag" value="([^"]+)">', page.text)
    assert found, f"no form for {action}"
    return found[1].replace("&#34;", '"')


def _policy(school: School):  # type: ignore[no-untyped-def]
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        return store.load()


def test_a_rule_switched_off_is_previewed_then_saved(console: ConsoleClient, school: School) -> None:
    csrf = console.sign_in(school.secrets["editor"]).hidden("csrf")
    page = console.get("/console/policy/rules?group=class-5a")
    form = {"csrf": csrf, "etag": _etag(page, "/console/policy/rules/class-5a/0"), "action": "block",
            "schedule": "", "names": "games.example news.example"}  # "enabled" left out: unticked
    preview = console.post("/console/policy/rules/class-5a/0", {**form, "step": "preview"})
    assert preview.status == 200, preview.text
    assert _rows(preview.text) == [
        ["games.example", "class-5a", "block (admin list: blocked, rule 1)", "allow (group default)", "changes"],
        ["news.example", "class-5a", "allow (group default)", "allow (group default)", "same"],
    ]
    assert _policy(school).rules[0].enabled
    saved = console.post("/console/policy/rules/class-5a/0", {**form, "step": "save"})
    assert "Rule 1 of class-5a is saved." in saved.text
    assert not _policy(school).rules[0].enabled


def test_a_rule_moves_down_and_takes_a_schedule(console: ConsoleClient, school: School) -> None:
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        store.add_rule(Rule("class-5a", TargetKind.CATEGORY, "games", Action.ALLOW))
    csrf = console.sign_in(school.secrets["editor"]).hidden("csrf")
    page = console.get("/console/policy/rules?group=class-5a")
    assert 'value="up"' in page.text and page.text.count('value="down"') == 1
    form = {"csrf": csrf, "etag": _etag(page, "/console/policy/rules/class-5a/0"), "action": "block",
            "schedule": "lessons", "enabled": "on", "move": "down", "names": "games.example"}
    preview = console.post("/console/policy/rules/class-5a/0", {**form, "step": "preview"})
    assert "After the change the rule is at position 2." in preview.text
    console.post("/console/policy/rules/class-5a/0", {**form, "step": "save"})
    rules = [rule for rule in _policy(school).rules if rule.group == "class-5a"]
    assert [(rule.target, rule.schedule) for rule in rules] == [("games", None), ("blocked", "lessons")]
    stale = console.post("/console/policy/rules/class-5a/0", {**form, "step": "save"})
    assert stale.status == 412 and 'role="alert"' in stale.text


def test_clients_are_added_moved_and_removed_after_a_preview(console: ConsoleClient, school: School) -> None:
    csrf = console.sign_in(school.secrets["editor"]).hidden("csrf")
    form = {"csrf": csrf, "group": "class-6b", "kind": "cidr", "value": "198.18.6.0/24", "vlan": "",
            "names": "games.example"}
    preview = console.post("/console/policy/clients", {**form, "step": "preview"})
    assert _rows(preview.text) == [["games.example", "guests → class-6b", "allow (group default)",
                                    "allow (group default)", "changes"]]
    assert len(_policy(school).clients) == 1
    console.post("/console/policy/clients", {**form, "step": "save"})
    [added] = [match for match in _policy(school).clients if match.cidr == "198.18.6.0/24"]
    assert added.group == "class-6b"
    bad = console.post("/console/policy/clients", {**form, "value": "0.0.0.0/0", "step": "preview"})
    assert bad.status == 422 and "every IPv4 client" in bad.text

    page = console.get("/console/policy/clients?group=class-5a")
    match = re.search(r'action="/console/policy/clients/([0-9]+)#preview-title"', page.text)
    assert match
    client_path = f"/console/policy/clients/{match[1]}"
    etag = _etag(page, client_path)
    move = {"csrf": csrf, "etag": etag, "op": "move", "group": "class-6b", "names": "games.example"}
    moved = console.post(client_path, {**move, "step": "preview"})
    assert _rows(moved.text)[0][1:] == ["class-5a → class-6b", "block (admin list: blocked, rule 1)",
                                        "allow (group default)", "changes"]
    console.post(client_path, {**move, "step": "save"})
    assert {match.cidr: match.group for match in _policy(school).clients}["198.18.5.0/24"] == "class-6b"
    etag = _etag(console.get("/console/policy/clients"), client_path)
    removal = {"csrf": csrf, "etag": etag, "op": "delete", "group": "class-6b", "names": "games.example"}
    assert _rows(console.post(client_path, {**removal, "step": "preview"}).text)[0][1] == "class-6b → guests"
    console.post(client_path, {**removal, "step": "save"})
    assert "198.18.5.0/24" not in [match.cidr for match in _policy(school).clients]


def test_a_schedule_grid_and_an_exception_are_saved_after_a_preview(console: ConsoleClient, school: School) -> None:
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        store.update_rule(Rule("class-5a", TargetKind.LIST, "blocked", Action.BLOCK, "lessons"), 0)
    csrf = console.sign_in(school.secrets["editor"]).hidden("csrf")
    page = console.get("/console/policy/schedules")
    assert 'value="0-08:30-09:00" checked' in page.text and 'value="5-08:30-09:00">' in page.text
    cells = [f"{day}-{start}-{end}" for day in range(4) for start, end in
             (("08:30", "09:00"), ("09:00", "09:30"), ("09:30", "10:00"))]
    form = {"csrf": csrf, "etag": _etag(page, "/console/policy/schedules/lessons"), "new_day": "2030-01-08",
            "new_hours": "", "names": "games.example", "at": "2030-01-07T11:00"}  # a Monday, after 10:00
    fields = [*form.items(), *(("cell", cell) for cell in cells)]
    preview = console.request("POST", "/console/policy/schedules/lessons", data=[*fields, ("step", "preview")])
    assert _rows(preview.text) == [["games.example", "class-5a", "block (admin list: blocked, rule 1)",
                                    "allow (group default)", "changes"]]
    assert 'value="4-08:30-09:00">' in preview.text  # the grid shows the edit, not the stored one
    console.request("POST", "/console/policy/schedules/lessons", data=[*fields, ("step", "save")])
    [lessons] = _policy(school).schedules
    assert [(slot.weekday, f"{slot.start:%H:%M}", f"{slot.end:%H:%M}") for slot in lessons.slots] == [
        (day, "08:30", "10:00") for day in range(4)]
    assert [(str(exception.day), exception.slots) for exception in lessons.exceptions] == [("2030-01-08", ())]


def test_the_categories_page_shows_titles_and_the_groups_using_them(console: ConsoleClient, school: School) -> None:
    console.sign_in(school.secrets["viewer"])
    page = console.get("/console/policy/categories")
    row = re.search(r'<th scope="row">games</th>(.*?)</tr>', page.text, re.S)
    assert row and "Games" in row[1] and "class-6b" in row[1] and "not imported" in row[1]
    assert "Spelletjes" in console.get("/console/policy/categories?lang=nl").text


def test_a_viewer_gets_no_forms_and_a_forged_or_unauthorised_post_changes_nothing(console: ConsoleClient,
                                                                                  school: School) -> None:
    csrf = console.sign_in(school.secrets["viewer"]).hidden("csrf")
    for path in ("/console/policy/clients", "/console/policy/rules?group=class-5a", "/console/policy/schedules"):
        page = console.get(path)
        assert page.status == 200 and 'method="post" action="/console/policy/' not in page.text
        assert 'type="checkbox"' not in page.text
    refused = console.post("/console/policy/rules/class-5a/0", {"csrf": csrf, "step": "save", "etag": "*",
                                                               "action": "allow"})
    assert refused.status == 403
    refused = console.post("/console/policy/clients", {"csrf": csrf, "step": "preview", "group": "guests",
                                                      "kind": "cidr", "value": "198.18.7.0/24", "names": "a.example"})
    assert refused.status == 403
    csrf = console.sign_in(school.secrets["editor"]).hidden("csrf")
    forged = console.post("/console/policy/rules/class-5a/0", {"csrf": csrf + "x", "step": "save", "etag": "*",
                                                              "action": "allow"})
    assert forged.status == 403
    cross = console.post("/console/policy/rules/class-5a/0", {"csrf": csrf, "step": "save", "etag": "*",
                                                             "action": "allow"},
                         headers={"Origin": "https://elsewhere.example", "Sec-Fetch-Site": "cross-site"})
    assert cross.status == 403
    assert _policy(school).rules[0].action == "block" and _policy(school).rules[0].enabled


def test_the_grid_reads_back_what_it_shows() -> None:
    slots = [{"weekday": 0, "start": "08:25", "end": "12:05"}, {"weekday": 2, "start": "19:00", "end": "24:00"}]
    grid = week_grid(slots)
    assert ("08:25", "08:30") in grid["rows"] and ("12:05", "12:30") in grid["rows"]
    assert slots_of_cells(sorted(grid["ticked"])) == slots
    assert day_slots("08:30-12:00, 13:00-15:00") == [{"start": "08:30", "end": "12:00"},
                                                     {"start": "13:00", "end": "15:00"}]
    assert day_slots("") == []
