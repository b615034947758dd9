"""The bundled default school policy: readable TOML files (`policies/*.toml`) into a Policy.

By convention school.toml holds the settings, categories, schedules and admin lists and
each group has a file of its own, but any file may hold any of these tables. Unknown keys
are errors, so that a typo never silently weakens a policy; every error names the file,
the table and the key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import MISSING, dataclass, fields, replace
from datetime import date, time
from enum import StrEnum
from pathlib import Path
from typing import NoReturn

from edufilter.errors import PolicyError
from edufilter.policy.model import (
    Action,
    AdminList,
    Category,
    ClientMatch,
    DatedException,
    EntryKind,
    Group,
    ListEntry,
    Policy,
    Rule,
    Schedule,
    Settings,
    TargetKind,
    TimeSlot,
    parse_entry,
)
from edufilter.policy.store import PolicyStore, check_policy
from edufilter.state import StateDir

POLICY_TABLES = ("settings", "categories", "schedules", "lists", "groups")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
RULE_TARGETS = {"categories": TargetKind.CATEGORY, "lists": TargetKind.LIST}

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SLOT = re.compile(r"\s*(\d\d):(\d\d)\s*-\s*(\d\d):(\d\d)\s*")
_DAY = re.compile(r"\d{4}-\d\d-\d\d")


def default_policy_dir() -> Path:
    """The bundled policies: `edufilter/data/policies`, a link to the source tree's `policies/`."""
    return Path(__file__).resolve().parent.parent / "data" / "policies"


def load_policy_dir(path: Path) -> Policy:
    """The policy of every `*.toml` file in `path`, validated by check_policy."""
    path = Path(path)
    if not path.is_dir():
        raise PolicyError(f"{path}: not a folder of policy files")
    files = sorted(file for file in path.glob("*.toml") if not file.name.startswith("."))
    if not files:
        raise PolicyError(f"{path}: no policy files (*.toml)")
    collected = _Collected(path)
    for file in files:
        _read_file(file, collected)
    return check_policy(collected.policy(), lambda kind, index: collected.where[kind][index])


_POLICY_KINDS = ("categories", "lists", "groups", "clients", "rules", "schedules")


class _Collected:
    """The objects read so far, each with where it was defined (for error messages)."""

    def __init__(self, path: Path) -> None:
        self.settings: Settings | None = None
        self.objects: dict[str, list[object]] = {kind: [] for kind in _POLICY_KINDS}
        self.where: dict[str, list[str]] = {kind: [] for kind in _POLICY_KINDS}
        self.where["settings"] = [f"{path}: settings (none given, so the defaults)"]

    def add(self, kind: str, item: object, where: str) -> None:
        self.objects[kind].append(item)
        self.where[kind].append(where)

    def policy(self) -> Policy:
        parts = {kind: tuple(items) for kind, items in self.objects.items()}
        return Policy(settings=self.settings or Settings(), **parts)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Table:
    """A TOML table and where it is: the file and its dotted key, for error messages."""

    file: Path
    key: str
    values: dict[str, object]
    name: str = ""  # the last part of the key: [groups.primary] is "primary"

    def where(self, key: str | None = None) -> str:
        return f"{self.file}: {self.key}" + ("" if key is None else f".{key}")

    def fail(self, key: str | None, problem: str) -> NoReturn:
        raise PolicyError(f"{self.where(key)}: {problem}")

    def only(self, known: tuple[str, ...]) -> None:
        for key in self.values:
            if key not in known:
                self.fail(None, f"unknown key {key!r} (known: {', '.join(known)})")

    def subtables(self) -> list[_Table]:
        """[key.<name>] tables, one per name."""
        return [self.table(name) for name in self.values]

    def table(self, key: str) -> _Table:
        value = self.values[key]
        if not isinstance(value, dict):
            self.fail(key, "is not a table")
        return _Table(self.file, f"{self.key}.{_toml_key(key)}", value, key)

    def tables(self, key: str) -> list[_Table]:
        """The tables of an array of tables ([[key]]), or none when the key is absent."""
        value = self.values.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.fail(key, f"is not an array of tables ([[{self.key}.{key}]])")
        return [_Table(self.file, f"{self.key}.{key}[{index}]", item) for index, item in enumerate(value)]

    def texts(self, key: str) -> list[str]:
        value = self.values.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(key, "is not a list of text values")
        return value

    def value(self, key: str, kind: type, default: object = None) -> object:
        """The value of `key` (default when absent) as a `kind`: str, bool, int or a StrEnum."""
        if key not in self.values:
            return default
        value = self.values[key]
        if issubclass(kind, StrEnum):
            if not isinstance(value, str) or value not in kind._value2member_map_:
                self.fail(key, f"{value!r} is not one of {', '.join(kind)}")
            return kind(value)
        if kind is bool and not isinstance(value, bool):
            self.fail(key, f"{value!r} is not true or false")
        if kind is str and not isinstance(value, str):
            self.fail(key, f"{value!r} is not text")
        if kind is int and type(value) is not int:
            self.fail(key, f"{value!r} is not a whole number")
        return value


def _read_file(file: Path, collected: _Collected) -> None:
    try:
        with open(file, "rb") as stream:
            document = tomllib.load(stream)
    except OSError as error:
        raise PolicyError(f"{file}: cannot read: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise PolicyError(f"{file}: not UTF-8 text: {error.reason} at byte {error.start}") from error
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{file}: not valid TOML: {error}") from error
    for key, value in document.items():
        if key not in POLICY_TABLES:
            raise PolicyError(f"{file}: {key!r} is not a policy table (known: {', '.join(POLICY_TABLES)})")
        if not isinstance(value, dict):
            raise PolicyError(f"{file}: {key}: is not a table")
    if "settings" in document:
        if collected.settings is not None:
            raise PolicyError(f"{file}: settings: given twice (also in {collected.where['settings'][0]})")
        table = _Table(file, "settings", document["settings"])
        collected.settings = _settings(table)
        collected.where["settings"] = [table.where()]
    sections = {key: _Table(file, key, document.get(key, {})) for key in POLICY_TABLES}
    for table in sections["categories"].subtables():
        _categories(table, collected)
    for table in sections["schedules"].subtables():
        collected.add("schedules", _schedule(table), table.where())
    for table in sections["lists"].subtables():
        collected.add("lists", _admin_list(table), table.where())
    for table in sections["groups"].subtables():
        _group(table, collected)


def _toml_key(name: str) -> str:
    """A key as it is written in TOML: quoted when it is not a bare key."""
    return name if _BARE_KEY.fullmatch(name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _settings(table: _Table) -> Settings:
    table.only(tuple(field.name for field in fields(Settings)))
    return Settings(
        **{field.name: table.value(field.name, type(field.default), field.default) for field in fields(Settings)}
    )


def _categories(table: _Table, collected: _Collected) -> None:
    """[categories.<source>]: names = [...] and aliases = { alias = "target" }."""
    table.only(("names", "aliases"))
    for index, name in enumerate(table.texts("names")):
        collected.add("categories", Category(name, table.name), table.where(f"names[{index}]"))
    if "aliases" in table.values:
        aliases = table.table("aliases")
        for alias, target in aliases.values.items():
            if not isinstance(target, str):
                aliases.fail(_toml_key(alias), f"{target!r} is not the name of a category")
            collected.add("categories", Category(alias, table.name, alias_of=target), aliases.where(_toml_key(alias)))


def _schedule(table: _Table) -> Schedule:
    """[schedules.<name>]: weekday = ["HH:MM-HH:MM", ...] and an exceptions table of dates."""
    table.only((*WEEKDAYS, "exceptions"))
    slots = []
    for weekday, day_name in enumerate(WEEKDAYS):
        for index, text in enumerate(table.texts(day_name)):
            start, end = _slot(table, f"{day_name}[{index}]", text)
            slots.append(TimeSlot(weekday, start, end))
    exceptions = []
    if "exceptions" in table.values:
        dated = table.table("exceptions")
        for day_text in dated.values:
            key = _toml_key(day_text)
            if not _DAY.fullmatch(day_text):
                dated.fail(key, "is not a date (YYYY-MM-DD)")
            try:
                day = date.fromisoformat(day_text)
            except ValueError as error:
                dated.fail(key, f"is not a date: {error}")
            day_slots = tuple(_slot(dated, f"{key}[{index}]", text) for index, text in enumerate(dated.texts(day_text)))
            exceptions.append(DatedException(day, day_slots))
    return Schedule(table.name, tuple(slots), tuple(exceptions))


def _slot(table: _Table, key: str, text: str) -> tuple[time, time]:
    """"HH:MM-HH:MM" in local time; "24:00" as the end is midnight at the end of the day."""
    match = _SLOT.fullmatch(text)
    if match is None:
        table.fail(key, f"{text!r} is not a time slot like \"08:30-12:05\"")
    start_hour, start_minute, end_hour, end_minute = (int(part) for part in match.groups())
    if (end_hour, end_minute) == (0, 0):
        table.fail(key, f"{text!r}: write 24:00 for midnight at the end of the day")
    if (end_hour, end_minute) == (24, 0):
        end_hour = 0
    if start_hour > 23 or end_hour > 23 or start_minute > 59 or end_minute > 59:
        table.fail(key, f"{text!r} is not a time slot: hours are 00-23 (24:00 only as the end), minutes 00-59")
    return time(start_hour, start_minute), time(end_hour, end_minute)


def _admin_list(table: _Table) -> AdminList:
    """[lists.<name>]: description and one list of values per entry kind."""
    table.only(("description", *EntryKind))
    entries: list[ListEntry] = []
    for kind in EntryKind:
        for index, value in enumerate(table.texts(kind)):
            try:
                entry = parse_entry(kind, value)
            except PolicyError as error:
                table.fail(f"{kind}[{index}]", str(error))
            if entry in entries:
                table.fail(f"{kind}[{index}]", f"{kind} entry {entry.value!r} is given twice")
            entries.append(entry)
    return AdminList(table.name, table.value("description", str, ""), tuple(entries))  # type: ignore[arg-type]


_GROUP_FIELDS = tuple(field for field in fields(Group) if field.default is not MISSING)
_CLIENT_KEYS = {"cidr": str, "interface": str, "vlan": int, "mac": str}


def _group(table: _Table, collected: _Collected) -> None:
    """[groups.<name>] with its settings, [[groups.<name>.clients]] and [[groups.<name>.rules]]."""
    table.only((*(field.name for field in _GROUP_FIELDS), "clients", "rules"))
    name = table.name
    settings = {field.name: table.value(field.name, type(field.default), field.default) for field in _GROUP_FIELDS}
    collected.add("groups", Group(name, **settings), table.where())  # type: ignore[arg-type]
    for client in table.tables("clients"):
        client.only(tuple(_CLIENT_KEYS))
        match = {key: client.value(key, kind) for key, kind in _CLIENT_KEYS.items()}
        collected.add("clients", ClientMatch(name, **match), client.where())  # type: ignore[arg-type]
    for target_rule, where in _rules(table):
        collected.add("rules", target_rule, where)


def _rules(table: _Table) -> list[tuple[Rule, str]]:
    """The [[groups.<name>.rules]] of a group's table, one Rule per target, with where each is."""
    rules = []
    for rule in table.tables("rules"):
        rule.only(("action", "schedule", *RULE_TARGETS))
        if "action" not in rule.values:
            rule.fail(None, "has no action")
        action = rule.value("action", Action)
        schedule = rule.value("schedule", str)
        given = [key for key in RULE_TARGETS if key in rule.values]
        if len(given) != 1:
            rule.fail(None, "needs exactly one of categories = [...] or lists = [...]")
        targets = rule.texts(given[0])
        if not targets:
            rule.fail(given[0], "is empty")
        for target in targets:
            target_rule = Rule(table.name, RULE_TARGETS[given[0]], target, action, schedule)  # type: ignore[arg-type]
            rules.append((target_rule, rule.where()))
    return rules


@dataclass(frozen=True, slots=True)
class GroupChange:
    """What a file changes in a group defined elsewhere: the settings it gives (only those)
    and the rules it adds, each rule with where it is written."""

    group: str
    settings: dict[str, object]
    rules: tuple[tuple[Rule, str], ...]


def read_group_changes(text: str, file: Path) -> list[GroupChange]:
    """The [groups.<name>] tables of a file that changes groups defined elsewhere (a site's
    part in multi-site mode): the same keys as a group's table but clients; nothing else."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{file}: not valid TOML: {error}") from error
    for key in document:
        if key != "groups":
            raise PolicyError(f"{file}: {key!r}: only [groups.<name>] tables change the group policy's groups")
    changes = []
    for table in _Table(file, "groups", document.get("groups", {})).subtables():
        table.only((*(field.name for field in _GROUP_FIELDS), "rules"))
        settings = {field.name: table.value(field.name, type(field.default))
                    for field in _GROUP_FIELDS if field.name in table.values}
        changes.append(GroupChange(table.name, settings, tuple(_rules(table))))
    return changes


def install_policy(state_dir: Path, folder: Path) -> tuple[Policy, int]:
    """Store the policy of a folder of TOML files in place of the stored one; imported
    categories (with the titles their lists gave them) are kept."""
    policy = load_policy_dir(folder)
    return policy, store_policy(state_dir, policy)


def store_policy(state_dir: Path, policy: Policy) -> int:
    """Store policy in place of the stored one, keeping imported categories; the new version."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with PolicyStore(StateDir(state_dir).policy_db) as store:
        stored = {category.name: category for category in store.load().categories}
        named = {category.name for category in policy.categories}
        categories = tuple(stored.get(category.name, category) for category in policy.categories)
        categories += tuple(category for name, category in stored.items() if name not in named)
        store.replace_all(replace(policy, categories=categories))
        return store.version
