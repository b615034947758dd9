"""The overview's "rules that match nothing": found from the policy as the API reads it (groups,
rules, clients, list sizes, schedules) and the imported categories' sizes — a few small
reads, never a look at a list's entries or at the events.

A rule matches nothing when its group takes no device (not the default group, and no
network, interface or MAC puts a client in it), when its list is empty or its category has
no imported names, or when its schedule has no hours from today on (no weekly slot, and no
exception day from today with a slot).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from edufilter.console.i18n import Translate
from edufilter.console.invoke import invoke, may
from edufilter.console.visit import Visit

WHOLE = {"limit": 1000}  # a school's groups, lists, clients and schedules are few


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    default_group: str
    groups: list[str]
    rules: list[dict[str, Any]]  # every group's, as the API lists them
    clients: list[dict[str, Any]]
    list_sizes: dict[str, int]  # admin list -> entries
    category_names: dict[str, int]  # imported category -> names
    aliases: dict[str, str]  # category -> the category it is an alias of
    schedules: list[dict[str, Any]]


def idle_rule_warnings(facts: PolicyFacts, today: date, text: Translate) -> list[str]:
    """One warning per group with rules switched on that takes no device, and one per other
    rule switched on that matches nothing."""
    warnings = []
    rules = [rule for rule in facts.rules if rule.get("enabled", True)]  # one switched off is meant to be idle
    with_clients = {client["group"] for client in facts.clients} | {facts.default_group}
    with_rules = {rule["group"] for rule in rules}
    idle_groups = [group for group in facts.groups if group in with_rules and group not in with_clients]
    warnings += [text("warn_group_no_clients", group=group) for group in idle_groups]
    never = {schedule["name"] for schedule in facts.schedules if not _applies_from(schedule, today)}
    for rule in rules:
        if rule["group"] in idle_groups:
            continue
        about = {"group": rule["group"], "position": rule["position"], "action": rule["action"],
                 "target": rule["target"]}
        if rule["target_kind"] == "list" and facts.list_sizes.get(rule["target"], 0) == 0:
            warnings.append(text("warn_rule_empty_list", **about))
        elif rule["target_kind"] == "category" and _category_size(facts, rule["target"]) == 0:
            warnings.append(text("warn_rule_empty_category", **about))
        elif rule["schedule"] in never:
            warnings.append(text("warn_rule_never_scheduled", schedule=rule["schedule"], **about))
    return warnings


def _category_size(facts: PolicyFacts, name: str) -> int:
    return facts.category_names.get(facts.aliases.get(name, name), 0)


def _applies_from(schedule: dict[str, Any], today: date) -> bool:
    return bool(schedule["slots"]) or any(
        exception["slots"] and date.fromisoformat(exception["day"]) >= today for exception in schedule["exceptions"])


async def policy_facts(visit: Visit, freshness: dict[str, Any]) -> PolicyFacts | None:
    """What idle_rule_warnings needs, read through the API's operations; None when the
    token may not read the policy."""
    if not all(may(visit.token, operation) for operation in
               ("list_groups", "list_rules", "list_clients", "list_lists", "list_categories", "list_schedules",
                "get_settings")):
        return None

    async def items(operation_id: str, **params: Any) -> list[dict[str, Any]]:
        answer = await invoke(visit.request, visit.token, operation_id, params=params, query=dict(WHOLE))
        return list(answer.body["items"])

    groups = [group["name"] for group in await items("list_groups")]
    rules = [rule for group in groups for rule in await items("list_rules", group=group)]
    settings = (await invoke(visit.request, visit.token, "get_settings")).body
    return PolicyFacts(
        default_group=settings["default_group"], groups=groups, rules=rules, clients=await items("list_clients"),
        list_sizes={row["name"]: row["entry_count"] for row in await items("list_lists")},
        category_names={row["name"]: row["names"] for row in freshness["categories"]},
        aliases=_aliases(await items("list_categories")), schedules=await items("list_schedules"),
    )


def _aliases(categories: Iterable[dict[str, Any]]) -> dict[str, str]:
    return {row["name"]: row["alias_of"] for row in categories if row.get("alias_of")}
