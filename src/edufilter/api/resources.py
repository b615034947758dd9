"""Handlers of the policy objects: groups, client matches, categories, admin lists and their
entries, rules, schedules, overrides and the general settings."""

from __future__ import annotations

import ipaddress
import math
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from edufilter.api import schemas, views
from edufilter.api.context import SETTINGS
from edufilter.api.operations import (
    Call,
    Change,
    json_response,
    no_content,
    not_found,
    page_of,
    paginate,
    path_of,
    with_defaults,
)
from edufilter.api.problems import Problem
from edufilter.api.security import OVERRIDE_RATE
from edufilter.api.tokens import Role
from edufilter.api.validation import Invalid, Resource
from edufilter.api.views import Row
from edufilter.policy.model import (
    AdminList,
    ClientMatch,
    DatedException,
    EntryKind,
    Group,
    ListEntry,
    Rule,
    Schedule,
    Settings,
    TimeSlot,
    parse_entry,
)
from edufilter.policy.store import PolicyStore, checked_client

Handler = Callable[[Call], Awaitable[web.StreamResponse]]


def _now() -> datetime:
    return datetime.now(timezone.utc)


# Objects named by a slug: groups, lists, schedules


@dataclass(frozen=True)
class Named:
    kind: str
    param: str  # the path parameter holding the name
    collection: str  # the collection's path part
    resource: Resource
    read: Callable[[sqlite3.Connection, str], Row | None]
    read_all: Callable[[sqlite3.Connection], list[Row]]
    model: Callable[[str, dict[str, Any], sqlite3.Connection], Any]  # name, writable fields -> model object
    add: Callable[[PolicyStore, Any], None]
    update: Callable[[PolicyStore, Any], None]
    remove: Callable[[PolicyStore, str], None]
    search: tuple[str, ...] = ("name",)


def list_named(kind: Named) -> Handler:
    async def handle(call: Call) -> web.StreamResponse:
        return json_response(paginate(await call.read(kind.read_all), call.query, kind.search))

    return handle


def get_named(kind: Named) -> Handler:
    async def handle(call: Call) -> web.StreamResponse:
        name = call.params[kind.param]
        return json_response(await call.read_one(kind.kind, name, lambda db: kind.read(db, name)))

    return handle


def create_named(kind: Named) -> Handler:
    async def handle(call: Call) -> web.StreamResponse:
        body = with_defaults(call.body, kind.resource.create)
        name = body.pop("name")

        def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
            kind.add(store, kind.model(name, body, db))

        row = await call.change(Change(kind.kind, name, lambda db: kind.read(db, name), write, create=True))
        return json_response(row, 201, location=path_of(kind.collection, name))

    return handle


def update_named(kind: Named, patch: bool) -> Handler:
    """PUT replaces the writable fields (left out: their defaults); PATCH changes those given."""

    async def handle(call: Call) -> web.StreamResponse:
        name = call.params[kind.param]

        def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
            assert before is not None
            if patch:
                given = {field: before[field] for field in kind.resource.writable} | call.body
            else:
                given = with_defaults(call.body, kind.resource.replace)
            kind.update(store, kind.model(name, given, db))

        return json_response(await call.change(Change(kind.kind, name, lambda db: kind.read(db, name), write)))

    return handle


def delete_named(kind: Named) -> Handler:
    async def handle(call: Call) -> web.StreamResponse:
        name = call.params[kind.param]

        def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
            kind.remove(store, name)

        await call.change(Change(kind.kind, name, lambda db: kind.read(db, name), write))
        return no_content()

    return handle


def _list_model(name: str, given: dict[str, Any], db: sqlite3.Connection) -> AdminList:
    # A list's representation leaves its entries out; a change of its fields keeps them.
    return AdminList(name, given["description"])


def _update_list(store: PolicyStore, admin_list: AdminList) -> None:
    store.set_list_description(admin_list.name, admin_list.description)


def _schedule_model(name: str, given: dict[str, Any], db: sqlite3.Connection) -> Schedule:
    _refuse_overlaps("slots", [(slot["weekday"], slot["start"], slot["end"]) for slot in given["slots"]])
    for index, exception in enumerate(given["exceptions"]):
        _refuse_overlaps(f"exceptions[{index}].slots", [(0, slot["start"], slot["end"]) for slot in exception["slots"]])
    return Schedule(
        name,
        tuple(
            TimeSlot(slot["weekday"], views.parse_slot_time(slot["start"]), views.parse_slot_time(slot["end"]))
            for slot in given["slots"]
        ),
        tuple(
            DatedException(
                date.fromisoformat(exception["day"]),
                tuple(
                    (views.parse_slot_time(slot["start"]), views.parse_slot_time(slot["end"]))
                    for slot in exception["slots"]
                ),
            )
            for exception in given["exceptions"]
        ),
    )


def _refuse_overlaps(field: str, slots: list[tuple[int, str, str]]) -> None:
    """422 when two slots of one day overlap or repeat: the schedule means their union, which
    the admin should see written as such rather than be left to guess."""
    minutes = [(day, _minute(start), _minute(end) or 24 * 60, index) for index, (day, start, end) in enumerate(slots)]
    minutes.sort()
    for (day, _, end, first), (next_day, next_start, _, second) in zip(minutes, minutes[1:]):
        if day == next_day and next_start < end:
            first, second = sorted((first, second))
            message = (f"{field}[{first}] and {field}[{second}] overlap on the same day "
                       f"({slots[first][1]}-{slots[first][2]} and {slots[second][1]}-{slots[second][2]}): "
                       "write the time they cover as one slot")
            raise Problem(422, "invalid-change", message, invalid_params=[Invalid(f"{field}[{second}]", message)])


def _minute(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


GROUPS = Named(
    "group", "group", "groups", schemas.GROUP, views.group, views.groups,
    lambda name, given, db: Group(name, **given),
    PolicyStore.add_group, PolicyStore.update_group, PolicyStore.remove_group,
    search=("name", "title"),
)
LISTS = Named(
    "list", "list", "lists", schemas.LIST, views.admin_list, views.lists, _list_model,
    PolicyStore.add_list, _update_list, PolicyStore.remove_list,
    search=("name", "description"),
)
SCHEDULES = Named(
    "schedule", "schedule", "schedules", schemas.SCHEDULE, views.schedule, views.schedules, _schedule_model,
    PolicyStore.add_schedule, PolicyStore.update_schedule, PolicyStore.remove_schedule,
)


# Client matches, by id; their match (cidr, interface and VLAN, or MAC) never changes


def _client_key(match: ClientMatch) -> str:
    return " ".join(f"{name}={getattr(match, name)}" for name in ("cidr", "interface", "vlan", "mac")
                    if getattr(match, name) is not None)


def match_of(row: Row) -> ClientMatch:
    return ClientMatch(row["group"], row["cidr"], row["interface"], row["vlan"], row["mac"])


async def list_clients(call: Call) -> web.StreamResponse:
    return json_response(paginate(await call.read(views.clients), call.query, ("cidr", "interface", "mac")))


async def get_client(call: Call) -> web.StreamResponse:
    client_id = call.params["id"]
    return json_response(await call.read_one("client", client_id, lambda db: views.client(db, client_id)))


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def refuse_misleading_network(cidr: str | None) -> None:
    """422 for a client network that would not do what it seems to: a zone ID, every
    address, or IPv4-mapped IPv6 addresses (the gateway sees those clients as IPv4)."""
    if cidr is None:
        return
    if "%" in cidr:
        reason = (f"{cidr!r} carries a zone ID: a zone names a network interface, not clients; "
                  "to put an interface's clients in a group, match the interface instead")
    else:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            return  # the store says what is wrong with it
        if network.prefixlen == 0:
            reason = (f"{network} matches every IPv{network.version} client, staff devices included: to put the "
                      "clients no other match takes into a group, set settings.default_group instead")
        elif isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
            mapped = network.network_address.ipv4_mapped
            ipv4 = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}", strict=False)
            reason = (f"{network} is an IPv4-mapped IPv6 network: the gateway sees these clients' packets as IPv4, "
                      f"so it would never match them (and would overlap {ipv4} in another group); "
                      f"give the IPv4 network {ipv4} instead")
        else:
            return
    raise Problem(422, "invalid-change", f"client.cidr {reason}", invalid_params=[Invalid("cidr", reason)])


async def create_client(call: Call) -> web.StreamResponse:
    refuse_misleading_network(call.body.get("cidr"))
    match = match_of(with_defaults(call.body, schemas.CLIENT.create))
    # Normalised (cidr as a network, MAC lowercase) to find a duplicate; the store checks the group.
    normal = replace(checked_client(match, lambda kind, name: True), group=match.group)

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
        store.add_client(match)

    change = Change("client", _client_key(normal), lambda db: views.client_by_match(db, normal), write, create=True,
                    identify=lambda row: str(row["id"]))
    row = await call.change(change)
    assert row is not None
    return json_response(row, 201, location=path_of("clients", row["id"]))


def update_client(patch: bool) -> Handler:
    async def handle(call: Call) -> web.StreamResponse:
        client_id = call.params["id"]

        def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
            assert before is not None
            group = call.body.get("group", before["group"]) if patch else call.body["group"]
            store.update_client(replace(match_of(before), group=group))

        change = Change("client", str(client_id), lambda db: views.client(db, client_id), write)
        return json_response(await call.change(change))

    return handle


async def delete_client(call: Call) -> web.StreamResponse:
    client_id = call.params["id"]

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
        assert before is not None
        store.remove_client(match_of(before))

    await call.change(Change("client", str(client_id), lambda db: views.client(db, client_id), write))
    return no_content()


# Categories: made by list imports, read here


async def list_categories(call: Call) -> web.StreamResponse:
    return json_response(paginate(await call.read(views.categories), call.query, ("name", "titles")))


async def get_category(call: Call) -> web.StreamResponse:
    name = call.params["category"]
    return json_response(await call.read_one("category", name, lambda db: views.category(db, name)))


# Entries of an admin list


def _require_list(db: sqlite3.Connection, name: str) -> None:
    if views.admin_list(db, name) is None:
        raise not_found("list", name)


async def list_entries(call: Call) -> web.StreamResponse:
    name = call.params["list"]
    offset, limit = int(call.query.get("cursor") or 0), call.query["limit"]

    def page(db: sqlite3.Connection) -> tuple[list[Row], int]:
        _require_list(db, name)
        return views.entries(
            db, name, call.query.get("kind"), call.query.get("q"), call.query["sort"], limit, offset
        )

    items, total = await call.read(page)
    return json_response(page_of(items, total, offset, limit))


async def get_entry(call: Call) -> web.StreamResponse:
    name, entry_id = call.params["list"], call.params["id"]
    return json_response(await call.read_one("entry", f"{name}/{entry_id}", lambda db: views.entry(db, name, entry_id)))


async def create_entry(call: Call) -> web.StreamResponse:
    name = call.params["list"]
    entry = parse_entry(call.body["kind"], call.body["value"])  # normalised, to find a duplicate

    def read(db: sqlite3.Connection) -> Row | None:
        _require_list(db, name)
        return views.entry_by_value(db, name, entry.kind.value, entry.value)

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
        store.add_list_entry(name, entry)

    change = Change("entry", f"{name}/{entry.kind}:{entry.value}", read, write, create=True,
                    identify=lambda row: f"{name}/{row['id']}")
    row = await call.change(change)
    assert row is not None
    return json_response(row, 201, location=path_of("lists", name, "entries", row["id"]))


async def delete_entry(call: Call) -> web.StreamResponse:
    name, entry_id = call.params["list"], call.params["id"]

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
        assert before is not None
        store.remove_list_entry(name, ListEntry(EntryKind(before["kind"]), before["value"]))

    await call.change(Change("entry", f"{name}/{entry_id}", lambda db: views.entry(db, name, entry_id), write))
    return no_content()


# Rules, by group and position


def rule_model(group: str, given: dict[str, Any]) -> Rule:
    return Rule(group, given["target_kind"], given["target"], given["action"], given.get("schedule"),
                given.get("enabled", True))


def _rule_id(row: Row) -> str:
    return f"{row['group']}/{row['position']}"


async def list_rules(call: Call) -> web.StreamResponse:
    group = call.params["group"]

    def read(db: sqlite3.Connection) -> list[Row]:
        if views.group(db, group) is None:
            raise not_found("group", group)
        return views.rules(db, group)

    return json_response(paginate(await call.read(read), call.query, ("target",)))


async def get_rule(call: Call) -> web.StreamResponse:
    group, position = call.params["group"], call.params["position"]
    return json_response(await call.read_one("rule", f"{group}/{position}", lambda db: views.rule(db, group, position)))


async def create_rule(call: Call) -> web.StreamResponse:
    group = call.params["group"]
    rule = rule_model(group, with_defaults(call.body, schemas.RULE.create))

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> int:
        if views.group(db, group) is None:
            raise not_found("group", group)
        return store.add_rule(rule, call.body.get("position"))

    change = Change("rule", group, lambda db: None, write, create=True,
                    read_after=lambda db, position: views.rule(db, group, position), identify=_rule_id)
    row = await call.change(change)
    assert row is not None
    return json_response(row, 201, location=path_of("groups", group, "rules", row["position"]))


def update_rule(patch: bool) -> Handler:
    """Replace a rule; a new position moves it (the rules between shift by one)."""

    async def handle(call: Call) -> web.StreamResponse:
        group, position = call.params["group"], call.params["position"]

        def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> int:
            assert before is not None
            given = before | call.body if patch else with_defaults(call.body, schemas.RULE.replace)
            rule = rule_model(group, given)
            moved_to = call.body.get("position", position)
            if moved_to == position:
                store.update_rule(rule, position)
            else:
                store.remove_rule(group, position)
                store.add_rule(rule, moved_to)
            return int(moved_to)

        change = Change("rule", f"{group}/{position}", lambda db: views.rule(db, group, position), write,
                        read_after=lambda db, moved_to: views.rule(db, group, moved_to))
        return json_response(await call.change(change))

    return handle


async def delete_rule(call: Call) -> web.StreamResponse:
    group, position = call.params["group"], call.params["position"]

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
        store.remove_rule(group, position)

    await call.change(Change("rule", f"{group}/{position}", lambda db: views.rule(db, group, position), write))
    return no_content()


# Overrides: the teacher's "open this site for my class for 50 minutes"


def _may_override(call: Call, group: str) -> None:
    token = call.token
    assert token is not None
    if token.role is Role.TEACHER and group not in token.groups:
        raise Problem(403, "forbidden", f"this token may not override for group {group!r}")


async def list_overrides(call: Call) -> web.StreamResponse:
    now = _now()
    rows = await call.read(lambda db: views.overrides(db, now))
    assert call.token is not None
    if call.token.role is Role.TEACHER:
        rows = [row for row in rows if row["group"] in call.token.groups]
    return json_response(paginate(rows, call.query, ("name", "reason")))


async def get_override(call: Call) -> web.StreamResponse:
    override_id, now = call.params["id"], _now()
    row = await call.read_one("override", override_id, lambda db: views.override(db, override_id, now))
    _may_override(call, str(row["group"]))
    return json_response(row)


def refuse_teacher_over_rate(call: Call) -> None:
    """429 when the teacher's token made its hourly number of overrides already."""
    assert call.token is not None
    wait = call.app[OVERRIDE_RATE].retry_after(call.token.name)
    if wait is not None:
        raise Problem(429, "too-many-overrides",
                      f"this token made {call.app[SETTINGS].teacher_overrides_per_hour} overrides in the last hour; "
                      "wait before making another", headers={"Retry-After": str(max(1, math.ceil(wait)))})


def refuse_teacher_over_quota(call: Call, db: sqlite3.Connection, at: datetime) -> None:
    """409 when the teacher's token holds its number of unexpired overrides; called inside the
    change's transaction, so that two requests at once cannot both pass."""
    assert call.token is not None
    refuse_over_quota(call, views.unexpired_overrides_by(db, call.token.name, at))


def refuse_over_quota(call: Call, held: int) -> None:
    """409 when a teacher's token holds `held` unexpired overrides, its quota or more."""
    quota = call.app[SETTINGS].teacher_active_overrides
    if held >= quota:
        raise Problem(409, "override-quota", f"this token already holds {quota} overrides that have not "
                      "expired; end one (DELETE) or wait until one expires")


async def create_override(call: Call) -> web.StreamResponse:
    body = with_defaults(call.body, schemas.OVERRIDE_CREATE)
    _may_override(call, body["group"])
    token = call.token
    assert token is not None
    if token.max_minutes is not None and body["minutes"] > token.max_minutes:
        reason = f"is more than this token's maximum of {token.max_minutes} minutes"
        raise Problem(422, "invalid-change", f"minutes {reason}", invalid_params=[Invalid("minutes", reason)])
    teacher = token.role is Role.TEACHER
    if teacher:
        refuse_teacher_over_rate(call)
    starts_at = _now()

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> int:
        if teacher:
            refuse_teacher_over_quota(call, db, starts_at)
        return store.add_override(
            body["group"], body["name"], body["action"], starts_at, starts_at + timedelta(minutes=body["minutes"]),
            created_by=token.name, reason=body["reason"],
        ).id

    change = Change("override", body["group"], lambda db: None, write, create=True,
                    read_after=lambda db, override_id: views.override(db, override_id, starts_at),
                    identify=lambda row: str(row["id"]))
    row = await call.change(change)
    assert row is not None
    if teacher:
        call.app[OVERRIDE_RATE].record(token.name)
    return json_response(row, 201, location=path_of("overrides", row["id"]))


async def delete_override(call: Call) -> web.StreamResponse:
    override_id, now = call.params["id"], _now()

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
        store.remove_override(override_id)

    change = Change("override", str(override_id), lambda db: views.override(db, override_id, now), write,
                    guard=lambda row: _may_end_override(call, row))
    await call.change(change)
    return no_content()


def _may_end_override(call: Call, row: Row) -> None:
    """A teacher ends only the overrides their own token started (a colleague's lesson is theirs)."""
    _may_override(call, str(row["group"]))
    assert call.token is not None
    if call.token.role is Role.TEACHER and row["created_by"] != call.token.name:
        raise Problem(403, "forbidden", f"override {row['id']} was started by another token; a teacher ends "
                      "only their own")


# General settings: one object, always present


async def get_settings(call: Call) -> web.StreamResponse:
    return json_response(await call.read(views.settings))


def update_settings(patch: bool) -> Handler:
    async def handle(call: Call) -> web.StreamResponse:
        def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
            assert before is not None
            given = before | call.body if patch else with_defaults(call.body, schemas.SETTINGS.replace)
            store.set_settings(Settings(**given))

        return json_response(await call.change(Change("settings", "settings", views.settings, write)))

    return handle
