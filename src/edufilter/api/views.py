"""The API's JSON representations, read straight from the policy database's tables.

PolicyStore.load() reads the whole policy (every list entry included); the API needs one
object at a time inside the transaction that changes it (for If-Match and the audit log's
before/after) and pages of long lists, so it reads the tables here, with the queries the store
defines beside the schema (store.GROUP_QUERY, ...).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import fields
from datetime import datetime, time
from typing import Any

from edufilter.policy.model import ClientMatch, Settings, TargetKind
from edufilter.policy.store import (
    CATEGORY_QUERY,
    CLIENT_QUERY,
    EXCEPTION_SLOT_QUERY,
    GROUP_QUERY,
    OVERRIDE_QUERY,
    SCHEDULE_EXCEPTION_QUERY,
    SCHEDULE_SLOT_QUERY,
    stored_settings,
)

Row = dict[str, Any]  # a JSON object

# A slot ending at midnight is stored as 00:00; the API writes it as 24:00, which reads better.
END_OF_DAY = "24:00"


def end_text(stored: str) -> str:
    return END_OF_DAY if stored == "00:00" else stored


def parse_slot_time(value: str) -> time:
    return time(0, 0) if value == END_OF_DAY else time.fromisoformat(value)


def _one(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None


# Groups

def _group(row: tuple[object, ...]) -> Row:
    name, title, default_action, safe_search, quic, bypass_shield, log_client_address, unnamed = row
    return {
        "name": name,
        "title": title,
        "default_action": default_action,
        "safe_search": bool(safe_search),
        "quic": quic,
        "bypass_shield": bool(bypass_shield),
        "log_client_address": bool(log_client_address),
        "unnamed": unnamed,
    }


def groups(db: sqlite3.Connection) -> list[Row]:
    return [_group(row) for row in db.execute(f"{GROUP_QUERY} ORDER BY rowid")]


def group(db: sqlite3.Connection, name: str) -> Row | None:
    return _one([_group(row) for row in db.execute(f"{GROUP_QUERY} WHERE name = ?", (name,))])


# Client matches

def _client(row: tuple[object, ...]) -> Row:
    client_id, group_name, cidr, interface, vlan, mac = row
    return {"id": client_id, "group": group_name, "cidr": cidr, "interface": interface, "vlan": vlan, "mac": mac}


def clients(db: sqlite3.Connection) -> list[Row]:
    return [_client(row) for row in db.execute(f"{CLIENT_QUERY} ORDER BY id")]


def client(db: sqlite3.Connection, client_id: int) -> Row | None:
    return _one([_client(row) for row in db.execute(f"{CLIENT_QUERY} WHERE id = ?", (client_id,))])


def client_by_match(db: sqlite3.Connection, match: ClientMatch) -> Row | None:
    """The client match with the same (normalised) cidr, interface and VLAN, or MAC."""
    rows = db.execute(
        f"{CLIENT_QUERY} WHERE cidr IS ? AND interface IS ? AND vlan IS ? AND mac IS ?",
        (match.cidr, match.interface, match.vlan, match.mac),
    )
    return _one([_client(row) for row in rows])


# Categories

def _category(row: tuple[object, ...]) -> Row:
    name, source, titles, descriptions, alias_of = row
    return {
        "name": name,
        "source": source,
        "titles": json.loads(str(titles)),
        "descriptions": json.loads(str(descriptions)),
        "alias_of": alias_of,
    }


def categories(db: sqlite3.Connection) -> list[Row]:
    return [_category(row) for row in db.execute(f"{CATEGORY_QUERY} ORDER BY name")]


def category(db: sqlite3.Connection, name: str) -> Row | None:
    return _one([_category(row) for row in db.execute(f"{CATEGORY_QUERY} WHERE name = ?", (name,))])


# Admin lists and their entries

_LIST_QUERY = "SELECT name, description FROM lists"

# Counting a list of a million entries takes a tenth of a second, and the console reads the
# lists on its overview, policy and upload pages. Entries change only with the store's lists
# revision (every entry written or removed sets it anew; a rolled-back write's value is never
# seen again), so the counts are kept for the latest revision read: a write costs nothing more.
_counted: tuple[int, dict[str, int]] = (0, {})  # (lists revision, list name -> entries)


def _entry_counts(db: sqlite3.Connection, names: list[str]) -> dict[str, int]:
    global _counted
    revision = int(db.execute("SELECT value FROM lists_revision").fetchone()[0])
    counted_revision, counts = _counted
    if counted_revision != revision:
        counts = {}
        _counted = (revision, counts)
    for name in names:
        if name not in counts:
            counts[name] = int(db.execute("SELECT count(*) FROM list_entries WHERE list = ?", (name,)).fetchone()[0])
    return {name: counts[name] for name in names}


def _lists(db: sqlite3.Connection, rows: list[tuple[str, str]]) -> list[Row]:
    counts = _entry_counts(db, [name for name, _ in rows])
    return [{"name": name, "description": description, "entry_count": counts[name]} for name, description in rows]


def lists(db: sqlite3.Connection) -> list[Row]:
    return _lists(db, db.execute(f"{_LIST_QUERY} ORDER BY rowid").fetchall())


def admin_list(db: sqlite3.Connection, name: str) -> Row | None:
    return _one(_lists(db, db.execute(f"{_LIST_QUERY} WHERE name = ?", (name,)).fetchall()))


def _entry(row: tuple[object, ...]) -> Row:
    entry_id, kind, value = row
    return {"id": entry_id, "kind": kind, "value": value}


ENTRY_SORTS = {"id": "id", "-id": "id DESC", "value": "value, id", "-value": "value DESC, id DESC"}


def entries(
    db: sqlite3.Connection,
    list_name: str,
    kind: str | None,
    contains: str | None,
    sort: str,
    limit: int,
    offset: int,
) -> tuple[list[Row], int]:
    """One page of a list's entries (SQL-side: lists can be long) and the number matching."""
    where = "list = ?"
    arguments: list[object] = [list_name]
    if kind is not None:
        where += " AND kind = ?"
        arguments.append(kind)
    if contains:
        where += " AND instr(value, ?) > 0"
        arguments.append(contains)
    total = int(db.execute(f"SELECT count(*) FROM list_entries WHERE {where}", arguments).fetchone()[0])
    rows = db.execute(
        f"SELECT id, kind, value FROM list_entries WHERE {where} ORDER BY {ENTRY_SORTS[sort]} LIMIT ? OFFSET ?",
        [*arguments, limit, offset],
    )
    return [_entry(row) for row in rows], total


def entry(db: sqlite3.Connection, list_name: str, entry_id: int) -> Row | None:
    rows = db.execute("SELECT id, kind, value FROM list_entries WHERE list = ? AND id = ?", (list_name, entry_id))
    return _one([_entry(row) for row in rows])


def entry_by_value(db: sqlite3.Connection, list_name: str, kind: str, value: str) -> Row | None:
    rows = db.execute(
        "SELECT id, kind, value FROM list_entries WHERE list = ? AND kind = ? AND value = ?", (list_name, kind, value)
    )
    return _one([_entry(row) for row in rows])


# Rules, addressed by group and position

_RULE_QUERY = "SELECT group_name, position, category, list, action, schedule, enabled FROM rules"


def _rule(row: tuple[object, ...]) -> Row:
    group_name, position, category_name, list_name, action, schedule_name, enabled = row
    return {
        "group": group_name,
        "position": position,
        "target_kind": (TargetKind.CATEGORY if category_name is not None else TargetKind.LIST).value,
        "target": category_name if category_name is not None else list_name,
        "action": action,
        "schedule": schedule_name,
        "enabled": bool(enabled),
    }


def rules(db: sqlite3.Connection, group_name: str) -> list[Row]:
    rows = db.execute(f"{_RULE_QUERY} WHERE group_name = ? ORDER BY position", (group_name,))
    return [_rule(row) for row in rows]


def rule(db: sqlite3.Connection, group_name: str, position: int) -> Row | None:
    rows = db.execute(f"{_RULE_QUERY} WHERE group_name = ? AND position = ?", (group_name, position))
    return _one([_rule(row) for row in rows])


# Schedules

def _schedules(db: sqlite3.Connection, name: str | None) -> list[Row]:
    where, arguments = ("WHERE name = ?", (name,)) if name is not None else ("", ())
    names = [row[0] for row in db.execute(f"SELECT name FROM schedules {where} ORDER BY rowid", arguments)]
    slots: dict[str, list[Row]] = {}
    for schedule_name, weekday, starts, ends in db.execute(SCHEDULE_SLOT_QUERY):
        slots.setdefault(schedule_name, []).append({"weekday": weekday, "start": starts, "end": end_text(ends)})
    day_slots: dict[int, list[Row]] = {}
    for exception_id, starts, ends in db.execute(EXCEPTION_SLOT_QUERY):
        day_slots.setdefault(exception_id, []).append({"start": starts, "end": end_text(ends)})
    exceptions: dict[str, list[Row]] = {}
    for exception_id, schedule_name, day in db.execute(SCHEDULE_EXCEPTION_QUERY):
        exceptions.setdefault(schedule_name, []).append({"day": day, "slots": day_slots.get(exception_id, [])})
    return [
        {"name": schedule_name, "slots": slots.get(schedule_name, []), "exceptions": exceptions.get(schedule_name, [])}
        for schedule_name in names
    ]


def schedules(db: sqlite3.Connection) -> list[Row]:
    return _schedules(db, None)


def schedule(db: sqlite3.Connection, name: str) -> Row | None:
    return _one(_schedules(db, name))


# Overrides

def _override(row: tuple[object, ...], now: datetime) -> Row:
    override_id, group_name, name, action, starts_at, expires_at, created_by, reason = row
    active = datetime.fromisoformat(str(starts_at)) <= now < datetime.fromisoformat(str(expires_at))
    return {
        "id": override_id,
        "group": group_name,
        "name": name,
        "action": action,
        "starts_at": starts_at,
        "expires_at": expires_at,
        "created_by": created_by,
        "reason": reason,
        "active": active,
    }


def overrides(db: sqlite3.Connection, now: datetime) -> list[Row]:
    return [_override(row, now) for row in db.execute(f"{OVERRIDE_QUERY} ORDER BY id")]


def unexpired_overrides_by(db: sqlite3.Connection, token_name: str, now: datetime) -> int:
    """How many overrides the token made that have not expired at `now`."""
    rows = db.execute("SELECT expires_at FROM overrides WHERE created_by = ?", (token_name,))
    return sum(1 for (expires_at,) in rows if datetime.fromisoformat(str(expires_at)) > now)


def override(db: sqlite3.Connection, override_id: int, now: datetime) -> Row | None:
    return _one([_override(row, now) for row in db.execute(f"{OVERRIDE_QUERY} WHERE id = ?", (override_id,))])


# General settings

def settings(db: sqlite3.Connection) -> Row:
    """The stored settings, each unset one at its model default."""
    stored = stored_settings(db)
    return {field.name: stored.get(field.name, field.default) for field in fields(Settings)}


# Audit log, newest first, paged by id

_AUDIT_FILTERS = {"kind": "kind = ?", "object_id": "object_id = ?", "token": "token = ?", "since": "at >= ?",
                  "site": "site = ?"}


def audit(db: sqlite3.Connection, filters: dict[str, str], limit: int, before_id: int | None,
          hidden_kinds: tuple[str, ...] = ()) -> list[Row]:
    """Up to `limit` audit rows matching `filters`, with ids below before_id, leaving out the
    rows of hidden_kinds."""
    clauses = [_AUDIT_FILTERS[name] for name in filters]
    arguments: list[object] = list(filters.values())
    for kind in hidden_kinds:
        clauses.append("kind != ?")
        arguments.append(kind)
    if before_id is not None:
        clauses.append("id < ?")
        arguments.append(before_id)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = db.execute(
        "SELECT id, at, token, role, method, path, site, kind, object_id, before, after, policy_version"
        f" FROM audit_log {where} ORDER BY id DESC LIMIT ?",
        [*arguments, limit],
    )
    return [
        {
            "id": row_id,
            "at": at,
            "token": token,
            "role": role,
            "method": method,
            "path": path,
            "site": site,
            "kind": kind,
            "object_id": object_id,
            "before": None if before is None else json.loads(before),
            "after": None if after is None else json.loads(after),
            "policy_version": version,
        }
        for row_id, at, token, role, method, path, site, kind, object_id, before, after, version in rows
    ]


