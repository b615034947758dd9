"""The console's policy pages beside the Policy overview: a group's clients, its rules in order,
the schedules as week grids with dated exceptions, and the categories. Every change is first
previewed (the API's POST /preview: what a few names get now and after, nothing saved), then
saved by the API's own operation with the ETag the page was read with."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from edufilter.api.operations import etag_of
from edufilter.api.problems import Problem
from edufilter.api.validation import Invalid
from edufilter.console.invoke import invoke, may
from edufilter.console.pages import WHOLE, _moment, _number, school_zone
from edufilter.console.policy_edit import tried_names
from edufilter.console.visit import PREFIX, Visit
from edufilter.policy.model import Action

PROBE_ADDRESS = "192.0.2.1"  # TEST-NET-1 (RFC 5737): the address of a client matched by MAC or interface
SUGGESTED_NAMES = "youtube.com wikipedia.org"  # something to try until the editor types their own
DAY_MINUTES = 24 * 60
# The grid's rows: every half hour of a school day, each day's first and last hours as one row,
# and the edges of the schedule's own slots, so any stored schedule shows exactly.
GRID_FROM, GRID_TO, GRID_STEP = 7 * 60, 18 * 60, 30
_CELL = re.compile(r"([0-6])-([0-9]{2}:[0-9]{2})-([0-9]{2}:[0-9]{2})")
_HOURS = re.compile(r"([0-9]{2}:[0-9]{2})-([0-9]{2}:[0-9]{2})")


async def _whole(visit: Visit, operation_id: str, **params: Any) -> list[dict[str, Any]]:
    answer = await invoke(visit.request, visit.token, operation_id, params=params, query=dict(WHOLE))
    return list(answer.body["items"])


def _with_etags(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "etag": etag_of(row)} for row in rows]


# Previews


def identity_of(match: dict[str, Any]) -> dict[str, Any]:
    """A client the match takes in, as `check` and `preview` want it."""
    if match.get("cidr"):
        try:
            network = ipaddress.ip_network(match["cidr"], strict=False)
        except ValueError:
            return {"address": PROBE_ADDRESS}  # the preview's validation names the bad network
        host = network.network_address + 1 if network.num_addresses > 2 else network.network_address
        return {"address": str(host)}
    if match.get("mac"):
        return {"address": PROBE_ADDRESS, "mac": match["mac"]}
    return {"address": PROBE_ADDRESS, "interface": match.get("interface"), "vlan": match.get("vlan")}


async def _group_identities(visit: Visit) -> dict[str, dict[str, Any]]:
    """A client of each group that has a match, to preview as (a network first)."""
    identities: dict[str, dict[str, Any]] = {}
    clients = await _whole(visit, "list_clients")
    for client in sorted(clients, key=lambda row: row["cidr"] is None):
        identities.setdefault(client["group"], identity_of(client))
    return identities


async def _foresee(visit: Visit, clients: dict[str, dict[str, Any]], names: str, change: dict[str, Any],
                   at: str = "") -> list[dict[str, Any]]:
    """For each (group, client) and each name tried: its explanation now and after the change."""
    targets = tried_names(names)
    if not targets:
        raise Problem(422, "validation-error", visit.text("pp_names_needed"),
                      invalid_params=[Invalid("names", visit.text("pp_names_needed"))])
    body: dict[str, Any] = {"targets": targets, "change": change}
    if at:
        body["at"] = _moment(at, await school_zone(visit.request.app))
    foreseen = []
    for group, client in clients.items():
        answer = await invoke(visit.request, visit.token, "preview", body={**body, "client": client})
        foreseen.extend({"group": group, **item} for item in answer.body["items"])
    return foreseen


def _preview(foreseen: list[dict[str, Any]], save_to: str, carried: dict[str, Any], **more: Any) -> dict[str, Any]:
    """What the page's preview section shows, and what its Save form sends again."""
    pairs = [(name, value) for name, values in carried.items()
             for value in (values if isinstance(values, list) else [values])]
    return {"foreseen": foreseen, "save_to": save_to, "carried": pairs, **more}


def _require_preview_right(visit: Visit, operation_id: str) -> None:
    if not may(visit.token, operation_id) or not may(visit.token, "preview"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))


# Clients: the networks, interfaces (VLANs) and MAC addresses that put devices in a group


async def clients(visit: Visit) -> web.StreamResponse:
    return await _clients_page(visit)


async def _clients_page(visit: Visit, status: int = 200, error: Problem | None = None,
                        preview: dict[str, Any] | None = None, added: dict[str, str] | None = None) -> web.Response:
    if not may(visit.token, "list_clients"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    groups = await _whole(visit, "list_groups")
    shown = visit.request.query.get("group", "")
    rows = _with_etags(await _whole(visit, "list_clients"))
    names = visit.form.get("names") or visit.request.query.get("names", SUGGESTED_NAMES)
    return visit.render("policy_clients.html", status=status, groups=groups, shown=shown,
                        clients=[row for row in rows if not shown or row["group"] == shown], names=names,
                        may_edit=may(visit.token, "create_client") and may(visit.token, "preview"),
                        error=error, preview=preview,
                        added={"group": shown, "kind": "cidr", "value": "", "vlan": "", **(added or {})})


def _match_body(values: dict[str, str]) -> dict[str, Any]:
    """The form's group and match as the API's client body."""
    body: dict[str, Any] = {"group": values["group"]}
    if values["kind"] == "interface":
        body["interface"] = values["value"]
        if values["vlan"]:
            body["vlan"] = _number(values["vlan"])
    else:
        body["cidr" if values["kind"] == "cidr" else "mac"] = values["value"]
    return body


async def add_client(visit: Visit) -> web.StreamResponse:
    values = {name: visit.form.get(name, "").strip() for name in ("group", "kind", "value", "vlan", "names")}
    body = _match_body(values)
    try:
        if visit.form.get("step") == "save":
            await invoke(visit.request, visit.token, "create_client", body=body)
            return visit.done(f"{PREFIX}/policy/clients?group={values['group']}",
                              visit.text("pp_client_added", match=values["value"], group=values["group"]))
        _require_preview_right(visit, "create_client")
        foreseen = await _foresee(visit, {values["group"]: identity_of(body)}, values["names"], {"client": {"match": body}})
    except Problem as problem:
        return await _clients_page(visit, problem.status, problem, added=values)
    return await _clients_page(visit, preview=_preview(foreseen, f"{PREFIX}/policy/clients", values), added=values)


async def change_client(visit: Visit) -> web.StreamResponse:
    """Move a match to another group (op=move) or remove it (op=delete): preview, then save."""
    client_id = _number(visit.request.match_info["id"])
    values = {name: visit.form.get(name, "").strip() for name in ("op", "group", "etag", "names")}
    try:
        current = (await invoke(visit.request, visit.token, "get_client", params={"id": client_id})).body
        moving = values["op"] == "move"
        if visit.form.get("step") == "save":
            if moving:
                await invoke(visit.request, visit.token, "patch_client", params={"id": client_id},
                             body={"group": values["group"]}, if_match=values["etag"] or None)
                notice = visit.text("pp_client_moved", group=values["group"])
            else:
                await invoke(visit.request, visit.token, "delete_client", params={"id": client_id},
                             if_match=values["etag"] or None)
                notice = visit.text("pp_client_removed")
            return visit.done(f"{PREFIX}/policy/clients", notice)
        _require_preview_right(visit, "patch_client" if moving else "delete_client")
        match = {key: current[key] for key in ("cidr", "interface", "vlan", "mac") if current[key] is not None}
        change: dict[str, Any] = {"id": client_id}
        if moving:
            change["match"] = {**match, "group": values["group"]}
        foreseen = await _foresee(visit, {current["group"]: identity_of(current)}, values["names"], {"client": change})
    except Problem as problem:
        return await _clients_page(visit, problem.status, problem)
    return await _clients_page(visit, preview=_preview(foreseen, f"{PREFIX}/policy/clients/{client_id}", values,
                                                       removing=not moving))


# Rules of a group, in order: move up or down, switch on or off, change the action or schedule


async def rules(visit: Visit) -> web.StreamResponse:
    return await _rules_page(visit)


async def _rules_page(visit: Visit, status: int = 200, group: str | None = None, error: Problem | None = None,
                      preview: dict[str, Any] | None = None) -> web.Response:
    if not may(visit.token, "list_rules"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    groups = await _whole(visit, "list_groups")
    known = [row["name"] for row in groups]
    group = group or visit.request.query.get("group", "")
    if group not in known:
        group = known[0] if known else ""
    names = visit.form.get("names") or visit.request.query.get("names", SUGGESTED_NAMES)
    at = visit.form.get("at") or visit.request.query.get("at", "")
    return visit.render("policy_rules.html", status=status, groups=groups, group=group,
                        rules=_with_etags(await _whole(visit, "list_rules", group=group)) if group else [],
                        schedules=await _whole(visit, "list_schedules"), actions=[action.value for action in Action],
                        names=names, at=at, may_edit=may(visit.token, "patch_rule") and may(visit.token, "preview"),
                        error=error, preview=preview)


def _rule_item(rule: dict[str, Any]) -> dict[str, Any]:
    return {key: rule[key] for key in ("target_kind", "target", "action", "schedule", "enabled")}


async def change_rule(visit: Visit) -> web.StreamResponse:
    group, position = visit.request.match_info["group"], _number(visit.request.match_info["position"])
    values = {name: visit.form.get(name, "").strip()
              for name in ("etag", "action", "schedule", "enabled", "move", "names", "at")}
    changed = {"action": values["action"], "schedule": values["schedule"] or None, "enabled": values["enabled"] == "on"}
    try:
        rows = await _whole(visit, "list_rules", group=group)
        if not 0 <= position < len(rows):
            raise Problem(404, "not-found", visit.text("pp_no_such_rule", position=position + 1, group=group))
        moved_to = {"up": position - 1, "down": position + 1}.get(values["move"], position)
        moved_to = min(max(moved_to, 0), len(rows) - 1)
        if visit.form.get("step") == "save":
            body = {**changed, **({"position": moved_to} if moved_to != position else {})}
            await invoke(visit.request, visit.token, "patch_rule", params={"group": group, "position": position},
                         body=body, if_match=values["etag"] or None)
            query = urlencode({"group": group, "names": values["names"], "at": values["at"]})
            return visit.done(f"{PREFIX}/policy/rules?{query}",
                              visit.text("pp_rule_saved", position=moved_to + 1, group=group))
        _require_preview_right(visit, "patch_rule")
        items = [_rule_item(row) for row in rows]
        items[position] = {**items[position], **changed}
        items.insert(moved_to, items.pop(position))
        clients = {group: client for name, client in (await _group_identities(visit)).items() if name == group}
        foreseen = await _foresee(visit, clients, values["names"], {"rules": {"group": group, "rules": items}},
                                  values["at"])
    except Problem as problem:
        return await _rules_page(visit, problem.status, group, problem)
    return await _rules_page(visit, group=group, preview=_preview(
        foreseen, f"{PREFIX}/policy/rules/{group}/{position}", values, no_client=not clients,
        position=position, moved_to=moved_to, rule=items[moved_to]))


# Schedules: a week grid of time slots, and dated exceptions (holidays, exam days)


def _minute(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def week_grid(slots: list[dict[str, Any]]) -> dict[str, Any]:
    """The grid's rows (start, end) and the cells the slots cover, as 'weekday-start-end'."""
    marks = {0, DAY_MINUTES, *range(GRID_FROM, GRID_TO + 1, GRID_STEP)}
    for slot in slots:
        marks.update((_minute(slot["start"]), _minute(slot["end"])))
    edges = sorted(marks)
    rows = [(_clock(start), _clock(end)) for start, end in zip(edges, edges[1:])]
    ticked = {
        f"{slot['weekday']}-{start}-{end}"
        for slot in slots for start, end in rows
        if _minute(slot["start"]) <= _minute(start) and _minute(end) <= _minute(slot["end"])
    }
    return {"rows": rows, "ticked": ticked}


def slots_of_cells(cells: list[str]) -> list[dict[str, Any]]:
    """The ticked cells as slots, each run of adjoining cells of a day as one slot."""
    spans: list[tuple[int, int, int]] = []
    for cell in cells:
        found = _CELL.fullmatch(cell)
        if found is None or not 0 <= _minute(found[2]) < _minute(found[3]) <= DAY_MINUTES:
            raise Problem(422, "validation-error", f"{cell!r} is not a cell of the week grid",
                          invalid_params=[Invalid("cell", f"{cell!r} is not a cell of the week grid")])
        spans.append((int(found[1]), _minute(found[2]), _minute(found[3])))
    merged: list[list[int]] = []
    for day, start, end in sorted(set(spans)):
        if merged and merged[-1][0] == day and merged[-1][2] >= start:
            merged[-1][2] = max(merged[-1][2], end)
        else:
            merged.append([day, start, end])
    return [{"weekday": day, "start": _clock(start), "end": _clock(end)} for day, start, end in merged]


def day_slots(text: str) -> list[dict[str, str]]:
    """'08:30-12:00 13:00-15:00' as the API's day slots; empty: closed that day."""
    slots = []
    for part in text.replace(",", " ").split():
        found = _HOURS.fullmatch(part)
        if found is None:
            raise Problem(422, "validation-error", f"{part!r} is not hours like 08:30-12:00",
                          invalid_params=[Invalid("new_hours", f"{part!r} is not hours like 08:30-12:00")])
        slots.append({"start": found[1], "end": found[2]})
    return slots


async def _rules_where(visit: Visit, **query: str) -> list[dict[str, Any]]:
    """Every group's rules that the API's filters keep (schedule=..., target_kind=...)."""
    found = []
    for group in await _whole(visit, "list_groups"):
        answer = await invoke(visit.request, visit.token, "list_rules", params={"group": group["name"]},
                              query={**WHOLE, **query})
        found.extend(answer.body["items"])
    return found


async def _schedule_users(visit: Visit, name: str) -> list[str]:
    """The groups with a rule on this schedule."""
    return sorted({rule["group"] for rule in await _rules_where(visit, schedule=name)})


async def schedules(visit: Visit) -> web.StreamResponse:
    return await _schedules_page(visit)


async def _schedules_page(visit: Visit, status: int = 200, error: Problem | None = None,
                          edited: dict[str, Any] | None = None, preview: dict[str, Any] | None = None) -> web.Response:
    if not may(visit.token, "list_schedules"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    users: dict[str, set[str]] = {}
    for rule in await _rules_where(visit):  # every rule read once, however many schedules
        if rule["schedule"] is not None:
            users.setdefault(rule["schedule"], set()).add(rule["group"])
    shown = []
    for schedule in _with_etags(await _whole(visit, "list_schedules")):
        if edited is not None and edited["name"] == schedule["name"]:
            schedule = {**edited, "etag": schedule["etag"]}
        shown.append({**schedule, "grid": week_grid(schedule["slots"]),
                      "users": sorted(users.get(schedule["name"], ()))})
    return visit.render("policy_schedules.html", status=status, schedules=shown,
                        day_names=visit.text("pp_weekday_names").split(), weekdays=visit.text("weekdays").split(),
                        names=visit.form.get("names") or visit.request.query.get("names", SUGGESTED_NAMES),
                        at=visit.form.get("at", ""), may_edit=may(visit.token, "replace_schedule")
                        and may(visit.token, "preview"), error=error, preview=preview,
                        edited_name=None if edited is None else edited["name"])


async def change_schedule(visit: Visit) -> web.StreamResponse:
    name = visit.request.match_info["name"]
    values: dict[str, Any] = {key: visit.form.get(key, "").strip()
                              for key in ("etag", "new_day", "new_hours", "names", "at")}
    values["cell"] = visit.form.getall("cell", [])
    values["remove_exception"] = visit.form.getall("remove_exception", [])
    edited: dict[str, Any] | None = None
    try:
        current = (await invoke(visit.request, visit.token, "get_schedule", params={"schedule": name})).body
        exceptions = [exception for exception in current["exceptions"]
                      if exception["day"] not in values["remove_exception"]]
        if values["new_day"]:
            exceptions = [exception for exception in exceptions if exception["day"] != values["new_day"]]
            exceptions.append({"day": values["new_day"], "slots": day_slots(values["new_hours"])})
        body = {"slots": slots_of_cells(values["cell"]), "exceptions": sorted(exceptions, key=lambda e: e["day"])}
        edited = {"name": name, **body}
        if visit.form.get("step") == "save":
            await invoke(visit.request, visit.token, "replace_schedule", params={"schedule": name}, body=body,
                         if_match=values["etag"] or None)
            return visit.done(f"{PREFIX}/policy/schedules", visit.text("pp_schedule_saved", name=name))
        _require_preview_right(visit, "replace_schedule")
        users = await _schedule_users(visit, name)
        clients = {group: client for group, client in (await _group_identities(visit)).items() if group in users}
        foreseen = await _foresee(visit, clients, values["names"], {"schedule": edited}, values["at"])
    except Problem as problem:
        return await _schedules_page(visit, problem.status, problem, edited)
    return await _schedules_page(visit, edited=edited, preview=_preview(
        foreseen, f"{PREFIX}/policy/schedules/{name}", values, unused=not users, no_client=bool(users) and not clients))


# Categories: imported by `lists update`, read only here


async def categories(visit: Visit) -> web.StreamResponse:
    if not may(visit.token, "list_categories"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    freshness = (await invoke(visit.request, visit.token, "list_freshness")).body
    sizes = {row["name"]: row["names"] for row in freshness["categories"]}
    used: dict[str, list[str]] = {}
    for rule in await _rules_where(visit, target_kind="category"):
        used.setdefault(rule["target"], []).append(rule["group"])
    rows = [
        {**category, "title": category["titles"].get(visit.language) or category["titles"].get("en")
         or category["name"], "names": sizes.get(category["name"]), "used_by": sorted(set(used.get(category["name"], [])))}
        for category in await _whole(visit, "list_categories")
    ]
    return visit.render("policy_categories.html", categories=rows)
