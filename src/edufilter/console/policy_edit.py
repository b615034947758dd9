"""Editing the policy from the console's Policy page, with a preview before saving: add an entry
to a school list, change a group's settings. The preview runs the API's `check` for a few
names as one client of each group and says what the change will make of each decision."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from edufilter.api.problems import Problem
from edufilter.console.invoke import invoke, may
from edufilter.console.pages import policy_page
from edufilter.console.visit import PREFIX, Visit

MAX_TRIED_NAMES = 5
GROUP_SETTINGS = ("default_action", "safe_search", "quic", "bypass_shield")


@dataclass(frozen=True, slots=True)
class Foreseen:
    """One name for one group: its decision now, and what the change makes of it."""

    name: str
    group: str
    now: dict[str, Any]  # the check explanation
    after: str  # the action after the change
    why: str  # a text key saying why


def tried_names(text: str, first: str = "") -> list[str]:
    """The names to try: `first`, then those typed (comma or space separated), at most five."""
    names = [first] if first else []
    for name in text.replace(",", " ").split():
        if name not in names:
            names.append(name)
    return names[:MAX_TRIED_NAMES]


async def _group_clients(visit: Visit) -> dict[str, str]:
    """A client address in each group that has a network match, to run `check` as."""
    clients = await invoke(visit.request, visit.token, "list_clients", query={"limit": 1000})
    addresses: dict[str, str] = {}
    for client in clients.body["items"]:
        if client.get("cidr") and client["group"] not in addresses:
            network = ipaddress.ip_network(client["cidr"], strict=False)
            host = network.network_address + 1 if network.num_addresses > 2 else network.network_address
            addresses[client["group"]] = str(host)
    return addresses


async def _explain(visit: Visit, name: str, address: str) -> dict[str, Any]:
    return (await invoke(visit.request, visit.token, "check", body={"target": name, "client": {"address": address}})
            ).body


async def add_entry(visit: Visit) -> web.StreamResponse:
    """Preview (step=preview) or save (step=save) one entry of a school list."""
    values = {name: visit.form.get(name, "").strip() for name in ("list", "kind", "value", "names")}
    if visit.form.get("step") == "save":
        try:
            await invoke(visit.request, visit.token, "create_entry", params={"list": values["list"]},
                         body={"kind": values["kind"], "value": values["value"]})
        except Problem as problem:
            return await policy_page(visit, problem.status, error=problem, entry=values)
        return visit.done(f"{PREFIX}/policy", visit.text("entry_added", value=values["value"], list=values["list"]))
    if not may(visit.token, "create_entry"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    groups = await invoke(visit.request, visit.token, "list_groups", query={"limit": 1000})
    using: dict[str, list[dict[str, Any]]] = {}
    foreseen = []
    try:
        for group_row in groups.body["items"]:
            group_rules = await invoke(visit.request, visit.token, "list_rules", params={"group": group_row["name"]},
                                       query={"limit": 1000, "target_kind": "list", "target": values["list"]})
            using[group_row["name"]] = group_rules.body["items"]
        for group, address in (await _group_clients(visit)).items():
            for name in tried_names(values["names"], values["value"]):
                now = await _explain(visit, name, address)
                foreseen.append(_after_entry(name, group, now, using.get(group, [])))
    except Problem as problem:
        return await policy_page(visit, problem.status, error=problem, entry=values)
    return await policy_page(visit, entry=values, foreseen=foreseen, preview="entry")


def _after_entry(name: str, group: str, now: dict[str, Any], rules: list[dict[str, Any]]) -> Foreseen:
    """An entry matching the name makes the first rule of the group using the list decide,
    unless an override or an earlier rule decides already."""
    if not rules:
        return Foreseen(name, group, now, now["action"], "unchanged_no_rule")
    rule = rules[0]
    if now["decided_by"] == "override":
        return Foreseen(name, group, now, now["action"], "unchanged_override")
    if now["rule"] is not None and now["rule"]["position"] < rule["position"]:
        return Foreseen(name, group, now, now["action"], "unchanged_earlier_rule")
    why = "by_list_rule" if rule["schedule"] is None else "by_list_rule_when"
    return Foreseen(name, group, now, rule["action"], why)


async def change_group(visit: Visit) -> web.StreamResponse:
    """Preview (step=preview) or save (step=save) a group's settings, with the group's ETag."""
    group = visit.request.match_info["group"]
    values = {name: visit.form.get(name, "").strip() for name in (*GROUP_SETTINGS, "names", "etag")}
    body: dict[str, Any] = {"default_action": values["default_action"], "quic": values["quic"],
                            "safe_search": values["safe_search"] == "on",
                            "bypass_shield": values["bypass_shield"] == "on"}
    if visit.form.get("step") == "save":
        try:
            await invoke(visit.request, visit.token, "patch_group", params={"group": group}, body=body,
                         if_match=values["etag"] or None)
        except Problem as problem:
            return await policy_page(visit, problem.status, error=problem, group_change={"group": group, **values})
        return visit.done(f"{PREFIX}/policy", visit.text("group_changed", group=group))
    if not may(visit.token, "patch_group"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    foreseen = []
    address = (await _group_clients(visit)).get(group)
    try:
        for name in tried_names(values["names"]) if address else []:
            now = await _explain(visit, name, address or "")
            if now["decided_by"] == "group default":
                foreseen.append(Foreseen(name, group, now, body["default_action"], "by_group_default"))
            else:
                foreseen.append(Foreseen(name, group, now, now["action"], "unchanged_not_default"))
    except Problem as problem:
        return await policy_page(visit, problem.status, error=problem, group_change={"group": group, **values})
    return await policy_page(visit, group_change={"group": group, **values}, foreseen=foreseen, preview="group",
                             no_client=address is None)
