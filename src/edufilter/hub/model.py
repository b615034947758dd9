"""Names shared by the hub, the gateways and the server configuration: buckets, subjects,
and a policy part (a folder of policy TOML files) as the bytes a bucket stores."""

from __future__ import annotations

import json
import re
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from edufilter.errors import EdufilterError, PolicyError
from edufilter.policy.defaults import load_policy_dir, read_group_changes
from edufilter.policy.model import (
    Action,
    ClientMatch,
    Group,
    Override,
    Policy,
    QuicMode,
    Rule,
    TargetKind,
    UnnamedFlows,
    effective_unnamed,
)
from edufilter.policy.store import check_policy

GROUP_BUCKET = "edufilter-group"
SITE_BUCKET_PREFIX = "edufilter-site-"
POLICY_KEY = "policy"
EVENTS_STREAM = "EDUFILTER_EVENTS"
EVENTS_SUBJECT_PREFIX = "edufilter.events."
KV_HISTORY = 64  # the most JetStream keeps per key
SITE_PART_PREFIX = "site-"  # a site's files sit beside the group's under this prefix
SITE_CLIENTS = "clients.toml"  # a site's networks in the group's groups
SITE_CHANGES = "changes.toml"  # a site's stricter settings and added rules for the group's groups
SITE_OVERRIDES = "overrides.toml"  # a site's temporary overrides, written by the group's API
SITE_RESERVED = (SITE_CLIENTS, SITE_CHANGES, SITE_OVERRIDES)
SITES_MAY_LOOSEN = "sites.toml"  # in the group's part: what sites may loosen, per group
_CLIENT_KEYS = ("cidr", "interface", "vlan", "mac")

_SITE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")


class HubError(EdufilterError):
    """The hub is unreachable, refused a request, or holds something unusable."""


def check_site_name(site: str) -> str:
    if not _SITE_NAME.fullmatch(site):
        raise HubError(f"site name {site!r}: use 1-31 lowercase letters, digits and '-'")
    return site


def site_bucket(site: str) -> str:
    return SITE_BUCKET_PREFIX + check_site_name(site)


def bucket_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def bucket_subject(bucket: str) -> str:
    return f"$KV.{bucket}.{POLICY_KEY}"


def events_subject(site: str) -> str:
    return EVENTS_SUBJECT_PREFIX + check_site_name(site)


def site_inbox(site: str) -> str:
    """Replies to a site's requests come here; only that site may subscribe to it."""
    return f"_INBOX_{check_site_name(site)}"


def read_part(folder: Path) -> dict[str, str]:
    """The policy TOML files of a folder, by file name."""
    files = {path.name: path.read_text() for path in sorted(folder.glob("*.toml")) if not path.name.startswith(".")}
    if not files:
        raise HubError(f"{folder}: no policy files (*.toml)")
    return files


def encode_part(files: dict[str, str]) -> bytes:
    return json.dumps({"files": files}, sort_keys=True).encode()


def decode_part(data: bytes) -> dict[str, str]:
    """The files of a stored part; HubError when the bytes are not one."""
    try:
        files = json.loads(data)["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise HubError(f"not a policy part: {error}") from error
    return check_files(files)


def check_files(files: object) -> dict[str, str]:
    """The files of a part: plain *.toml names to text, at least one; HubError otherwise."""
    if not isinstance(files, dict) or not files or not all(
        isinstance(name, str) and isinstance(text, str) and name.endswith(".toml") and "/" not in name
        and not name.startswith(".") for name, text in files.items()
    ):
        raise HubError("not a policy part: files must map plain *.toml names to text")
    return files


def combined_policy(group: dict[str, str], site: dict[str, str]) -> Policy:
    """The gateway's policy: the group's files plus the site's, which add items of their own
    (a site redefining a group's item is refused), put the site's networks into the group's
    groups (SITE_CLIENTS), and tighten the group's groups, or loosen them where the group's
    SITES_MAY_LOOSEN lets sites (SITE_CHANGES). PolicyError names the file and item at fault."""
    with tempfile.TemporaryDirectory(prefix="edufilter-part-") as temporary:
        folder = Path(temporary)
        for name, text in group.items():
            if name != SITES_MAY_LOOSEN:
                (folder / name).write_text(text)
        group_groups = {item.name: item for item in load_policy_dir(folder).groups}
        for name, text in site.items():
            if name not in SITE_RESERVED:
                (folder / (SITE_PART_PREFIX + name)).write_text(text)
        policy = load_policy_dir(folder)
    if not set(site) & set(SITE_RESERVED):
        return policy
    loosen = site_loosening(group.get(SITES_MAY_LOOSEN, ""), group_groups)
    groups, rules = dict((item.name, item) for item in policy.groups), list(policy.rules)
    if SITE_CHANGES in site:
        for change in read_group_changes(site[SITE_CHANGES], Path(SITE_CHANGES)):
            where = f"{SITE_CHANGES}: groups.{change.group}"
            if change.group not in group_groups:
                raise PolicyError(f"{where}: the group policy has no group {change.group!r} (a site's own groups "
                                  "are defined in its other files)")
            allowed = loosen.get(change.group, Loosening())
            groups[change.group] = _changed_group(group_groups[change.group], change.settings, allowed, where)
            for rule, rule_where in change.rules:
                _check_site_rule(rule, allowed, rule_where)
                rules.append(rule)  # after the group's own: at equal specificity its blocking rule wins
    clients = _site_clients(site[SITE_CLIENTS]) if SITE_CLIENTS in site else ()
    overrides = read_overrides(site.get(SITE_OVERRIDES, ""))
    for override in overrides:
        if override.group in group_groups and not override.action.blocks \
                and not loosen.get(override.group, Loosening()).overrides:
            raise PolicyError(f"{SITE_OVERRIDES}: override {override.id}: an {override.action} override loosens group "
                              f"{override.group!r}, and the group policy does not let sites loosen it "
                              f"({SITES_MAY_LOOSEN}: [loosen.{override.group}] overrides = true)")
    return check_policy(replace(policy, groups=tuple(groups.values()), rules=tuple(rules),
                                clients=policy.clients + clients, overrides=overrides))


@dataclass(frozen=True, slots=True)
class Loosening:
    """What the group policy lets sites loosen in one of its groups (by default: nothing)."""

    allow_lists: bool = False  # allow (or monitor) rules on lists: a site's own allow list
    allow_categories: frozenset[str] = frozenset()  # allow (or monitor) rules on these categories
    settings: frozenset[str] = frozenset()  # group settings a site may set less strictly
    overrides: bool = False  # a site's teachers may allow names for a while (allow overrides)


_LOOSENING_KEYS = ("allow_lists", "allow_categories", "settings", "overrides")


def site_loosening(text: str, groups: dict[str, Group]) -> dict[str, Loosening]:
    """The group part's SITES_MAY_LOOSEN: [loosen.<group>] tables of Loosening's keys."""
    where = SITES_MAY_LOOSEN
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{where}: not valid TOML: {error}") from error
    if set(tables) - {"loosen"} or not isinstance(tables.get("loosen", {}), dict):
        raise PolicyError(f"{where}: only [loosen.<group>] tables")
    loosening = {}
    for name, table in tables.get("loosen", {}).items():
        if name not in groups or not isinstance(table, dict):
            raise PolicyError(f"{where}: loosen.{name}: not a table of a group the group policy defines")
        unknown = set(table) - set(_LOOSENING_KEYS)
        if unknown:
            raise PolicyError(f"{where}: loosen.{name}: unknown key {sorted(unknown)[0]!r} "
                              f"(known: {', '.join(_LOOSENING_KEYS)})")
        allow_lists, overrides = table.get("allow_lists", False), table.get("overrides", False)
        categories, settings = table.get("allow_categories", []), table.get("settings", [])
        for key, flag in (("allow_lists", allow_lists), ("overrides", overrides)):
            if not isinstance(flag, bool):
                raise PolicyError(f"{where}: loosen.{name}.{key}: {flag!r} is not true or false")
        for key, values in (("allow_categories", categories), ("settings", settings)):
            if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
                raise PolicyError(f"{where}: loosen.{name}.{key}: not a list of names")
        unknown = set(settings) - set(STRICTNESS)
        if unknown:
            raise PolicyError(f"{where}: loosen.{name}.settings: {sorted(unknown)[0]!r} is not one of "
                              f"{', '.join(STRICTNESS)}")
        loosening[name] = Loosening(allow_lists, frozenset(categories), frozenset(settings), overrides)
    return loosening


_UNNAMED_ORDER = (UnnamedFlows.ALLOW, UnnamedFlows.BLOCK_WEB, UnnamedFlows.BLOCK_ALL)

# How strict each group setting a site may change is, as a number (higher: stricter).
# log_client_address is stricter off: a site may keep more private, never log more.
STRICTNESS: dict[str, Callable[[Group], int]] = {
    "default_action": lambda group: int(group.default_action.blocks),
    "safe_search": lambda group: int(group.safe_search),
    "bypass_shield": lambda group: int(group.bypass_shield),
    "quic": lambda group: int(group.quic is QuicMode.BLOCK),
    "unnamed": lambda group: _UNNAMED_ORDER.index(effective_unnamed(group)),
    "log_client_address": lambda group: int(not group.log_client_address),
}


def _changed_group(group: Group, settings: dict[str, object], allowed: Loosening, where: str) -> Group:
    """The group with a site's settings: each as strict as the group's or stricter, unless
    the group policy lets sites loosen that setting."""
    unknown = set(settings) - set(STRICTNESS)
    if unknown:
        raise PolicyError(f"{where}.{sorted(unknown)[0]}: a site may change only {', '.join(STRICTNESS)}")
    changed = replace(group, **settings)  # type: ignore[arg-type]
    # Every setting is compared, not only those given: bypass_shield off also relaxes unnamed "auto".
    for name, strictness in STRICTNESS.items():
        if strictness(changed) < strictness(group) and name not in allowed.settings:
            given = f"{json.dumps(settings[name])} " if name in settings else ""
            raise PolicyError(f"{where}.{name}: {given}loosens group {group.name!r}, and the group policy does not "
                              f"let sites loosen it ({SITES_MAY_LOOSEN}: [loosen.{group.name}] settings)")
    return changed


def _check_site_rule(rule: Rule, allowed: Loosening, where: str) -> None:
    """A site's blocking rule tightens and is always taken; an allow or monitor rule loosens
    and needs the group policy's leave for its target."""
    if rule.action.blocks:
        return
    if rule.target_kind is TargetKind.LIST:
        permitted, leave = allowed.allow_lists, "allow_lists = true"
    else:
        permitted, leave = rule.target in allowed.allow_categories, f'allow_categories = ["{rule.target}"]'
    if not permitted:
        raise PolicyError(f"{where}: an {rule.action} rule on {rule.target_kind} {rule.target!r} loosens group "
                          f"{rule.group!r}, and the group policy does not let sites loosen it "
                          f"({SITES_MAY_LOOSEN}: [loosen.{rule.group}] {leave})")


_OVERRIDE_KEYS = ("group", "name", "action", "starts_at", "expires_at", "created_by", "reason")


def read_overrides(text: str) -> tuple[Override, ...]:
    """A site's SITE_OVERRIDES: [[overrides]] tables, numbered from 1 in order."""
    try:
        tables = tomllib.loads(text).get("overrides", [])
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{SITE_OVERRIDES}: not valid TOML: {error}") from error
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise PolicyError(f"{SITE_OVERRIDES}: overrides must be [[overrides]] tables")
    overrides = []
    for number, table in enumerate(tables, 1):
        if set(table) != set(_OVERRIDE_KEYS):
            raise PolicyError(f"{SITE_OVERRIDES}: overrides[{number}] needs exactly {', '.join(_OVERRIDE_KEYS)}")
        try:
            overrides.append(Override(number, table["group"], table["name"], Action(table["action"]),
                                      table["starts_at"], table["expires_at"], table["created_by"], table["reason"]))
        except ValueError as error:
            raise PolicyError(f"{SITE_OVERRIDES}: overrides[{number}]: {error}") from error
    return tuple(overrides)


def write_overrides(overrides: Sequence[Override]) -> str:
    """SITE_OVERRIDES's text for these overrides (JSON strings are TOML basic strings)."""
    return "".join(
        "[[overrides]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in (
            ("group", override.group), ("name", override.name), ("action", override.action.value),
            ("created_by", override.created_by), ("reason", override.reason)))
        + f"starts_at = {override.starts_at.isoformat()}\nexpires_at = {override.expires_at.isoformat()}\n"
        for override in overrides
    )


def _site_clients(text: str) -> tuple[ClientMatch, ...]:
    """[[clients.<group>]] tables of cidr/interface/vlan/mac, as in a group's clients."""
    try:
        tables = tomllib.loads(text).get("clients", {})
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{SITE_CLIENTS}: not valid TOML: {error}") from error
    if not isinstance(tables, dict):
        raise PolicyError(f"{SITE_CLIENTS}: [clients] must be a table of groups")
    matches = []
    for group, entries in tables.items():
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise PolicyError(f"{SITE_CLIENTS}: clients.{group} must be [[clients.{group}]] tables")
        for entry in entries:
            unknown = set(entry) - set(_CLIENT_KEYS)
            if unknown:
                raise PolicyError(f"{SITE_CLIENTS}: clients.{group}: unknown key {sorted(unknown)[0]!r}")
            matches.append(ClientMatch(group, **entry))
    return tuple(matches)
