"""The overview's "rules that match nothing": a group no device belongs to, an empty list, a
category without imported names, a schedule with no hours from today on; found from the
policy and the categories' sizes, and gone once the cause is."""

from __future__ import annotations

import re
from datetime import date, time, timedelta

from console_client import NOW, ConsoleClient, School, console, school  # noqa: F401 (fixtures)
from test_console_overview_more import import_category

from edufilter.console.i18n import translator
from edufilter.console.idle_rules import PolicyFacts, idle_rule_warnings
from edufilter.policy.model import Action, AdminList, ClientMatch, DatedException, Rule, Schedule, TargetKind
from edufilter.policy.store import PolicyStore

TODAY = date(2026, 12, 7)


def rule(group: str, position: int, kind: str, target: str, schedule: str | None = None) -> dict[str, object]:
    return {"group": group, "position": position, "target_kind": kind, "target": target, "action": "block",
            "schedule": schedule}


def facts(**changes: object) -> PolicyFacts:
    made = {
        "default_group": "guests", "groups": ["guests", "pupils", "staff"],
        "rules": [rule("pupils", 0, "list", "blocked"), rule("pupils", 1, "category", "games", "lessons"),
                  rule("guests", 0, "category", "adult")],
        "clients": [{"group": "pupils", "cidr": "198.18.5.0/24"}],
        "list_sizes": {"blocked": 3}, "category_names": {"adult": 10, "games": 5}, "aliases": {},
        "schedules": [{"name": "lessons", "slots": [{"weekday": 0, "start": "08:30", "end": "15:30"}],
                       "exceptions": []}],
    }
    made.update(changes)
    return PolicyFacts(**made)  # type: ignore[arg-type]


def test_a_policy_whose_rules_all_can_match_warns_of_nothing() -> None:
    assert idle_rule_warnings(facts(), TODAY, translator("en")) == []


def test_each_cause_of_a_rule_matching_nothing_is_named() -> None:
    text = translator("en")
    staff_rules = [rule("staff", 0, "list", "blocked")]
    assert idle_rule_warnings(facts(rules=staff_rules), TODAY, text) == [
        "The rules of staff match nothing: no device belongs to the group (no network, interface or MAC, and it is "
        "not the default group).",
    ]
    assert idle_rule_warnings(facts(list_sizes={"blocked": 0}), TODAY, text) == [
        "Rule 0 of pupils (block list blocked) matches nothing: the list is empty."]
    assert idle_rule_warnings(facts(category_names={"adult": 10}), TODAY, text) == [
        "Rule 1 of pupils (block category games) matches nothing: the category has no imported names."]
    assert idle_rule_warnings(facts(aliases={"adult": "porn"}), TODAY, text) == [  # the alias's target counts
        "Rule 0 of guests (block category adult) matches nothing: the category has no imported names."]
    holiday_only = [{"name": "lessons", "slots": [], "exceptions": [
        {"day": "2026-12-06", "slots": [{"start": "09:00", "end": "10:00"}]},
        {"day": "2026-12-24", "slots": []}]}]
    assert idle_rule_warnings(facts(schedules=holiday_only), TODAY, text) == [
        "Rule 1 of pupils (block games) never applies: its schedule lessons has no hours from today on."]
    exam_day = [{"name": "lessons", "slots": [], "exceptions": [
        {"day": "2026-12-07", "slots": [{"start": "09:00", "end": "10:00"}]}]}]
    assert idle_rule_warnings(facts(schedules=exam_day), TODAY, text) == []  # today still has an hour
    switched_off = [{**rule("pupils", 0, "list", "blocked"), "enabled": False}, rule("staff", 0, "list", "blocked")]
    assert idle_rule_warnings(facts(rules=switched_off[:1], list_sizes={}), TODAY, text) == []
    assert idle_rule_warnings(facts(rules=[{**switched_off[1], "enabled": False}]), TODAY, text) == []
    everyone_else = facts(clients=[], default_group="pupils", rules=[rule("pupils", 0, "list", "blocked")])
    assert idle_rule_warnings(everyone_else, TODAY, text) == []  # the default group takes every other device


def idle_warnings(page: str) -> list[str]:
    section = page.split('id="warnings-heading"')[1].split("</section>")[0] if 'id="warnings-heading"' in page else ""
    return [text for text in re.findall(r"<li>(.*?)</li>", section) if "match" in text or "never applies" in text]


def test_the_overview_warns_of_rules_that_match_nothing_until_they_can(console: ConsoleClient,
                                                                       school: School) -> None:
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        store.add_list(AdminList("empty", "nothing yet"))
        store.add_rule(Rule("class-5a", TargetKind.LIST, "empty", Action.BLOCK))
        past = NOW.date() - timedelta(days=30)
        store.add_schedule(Schedule("exam-week", (), (DatedException(past, ((time(9), time(12)),)),)))
        store.add_rule(Rule("class-5a", TargetKind.LIST, "blocked", Action.ALLOW, "exam-week"))
    console.sign_in(school.secrets["viewer"])
    assert idle_warnings(console.get("/console/overview").text) == [
        "The rules of class-6b match nothing: no device belongs to the group (no network, interface or MAC, and it "
        "is not the default group).",
        "Rule 1 of class-5a (block list empty) matches nothing: the list is empty.",
        "Rule 2 of class-5a (allow blocked) never applies: its schedule exam-week has no hours from today on.",
    ]
    import_category(school, "games", ["a.example"], age_days=1)
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        store.add_client(ClientMatch("class-6b", cidr="198.18.6.0/24"))
    bearer = {"Authorization": f"Bearer {school.secrets['editor']}"}
    added = console.request("POST", "/api/v1/lists/empty/entries", json={"kind": "domain", "value": "x.example"},
                            headers=bearer)
    assert added.status == 201, added.text
    assert idle_warnings(console.get("/console/overview").text) == [
        "Rule 2 of class-5a (allow blocked) never applies: its schedule exam-week has no hours from today on.",
    ]
