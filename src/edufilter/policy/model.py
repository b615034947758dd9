"""The school policy, as the admin edits it: plain immutable values, validated on creation.

Decision semantics (implemented by the compiled image, documented in the README):
1. A client belongs to one group: a MAC match beats an interface/VLAN match, which beats
   the longest matching source CIDR; otherwise the default group.
2. Tiers: temporary overrides beat admin lists, which beat imported categories. The first
   tier with an active rule that matches the name decides.
3. Within a tier the most specific name wins (a rule on docs.example.org beats one on
   example.org); at equal specificity an allow beats a block, and a block beats monitor.
   Blocking actions at equal specificity: the rule listed first for the group wins.
4. Nothing matches: the group's default action.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edufilter.errors import PolicyError
from edufilter.policy.suffixes import Scope, refuse_public_suffix

_NAME_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def check_id(kind: str, value: str) -> str:
    """Identifiers (group, list, schedule names) are short lowercase slugs."""
    if not _NAME_ID.fullmatch(value):
        raise PolicyError(f"{kind} {value!r}: use 1-64 lowercase letters, digits, '-', '_' or '.'")
    return value


class Action(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"  # TCP reset / ICMP administratively prohibited; DNS: NXDOMAIN
    DROP = "drop"  # silent drop, DNS too
    SINKHOLE = "sinkhole"  # DNS answers the block-page address; other flows are reset
    MONITOR = "monitor"  # allowed, but logged as an event

    @property
    def blocks(self) -> bool:
        return self in (Action.BLOCK, Action.DROP, Action.SINKHOLE)


class QuicMode(StrEnum):
    INSPECT = "inspect"  # read the Initial's SNI and decide like TLS
    BLOCK = "block"  # drop UDP/443 so browsers fall back to TCP


class UnnamedFlows(StrEnum):
    """What a group's flows get when they show no name the gateway can read (a ClientHello
    without SNI, a connection to a bare address, other bytes on a web port)."""

    AUTO = "auto"  # block-web for groups with the bypass shield, allow for the others
    ALLOW = "allow"  # the destination address and the group's default decide, as for any flow
    BLOCK_WEB = "block-web"  # TCP 80 and 443 without a name are reset (reason evasion)
    # block-web, and every other TCP or UDP flow without a name is blocked too (a default-deny
    # egress: VPNs on UDP 51820/1194 and the like), except DNS (53) and NTP (UDP 123)
    BLOCK_ALL = "block-all"


class EntryKind(StrEnum):
    DOMAIN = "domain"  # the name and all its subdomains
    EXACT = "exact"  # this host name only
    CIDR = "cidr"  # an IPv4 or IPv6 network (a bare address is a /32 or /128)
    URL_PREFIX = "url_prefix"  # host/path prefix, plain HTTP only


class TargetKind(StrEnum):
    CATEGORY = "category"
    LIST = "list"


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One admin-list entry; the value is normalised by parse_entry."""

    kind: EntryKind
    value: str


@dataclass(frozen=True, slots=True)
class Category:
    """An imported category (e.g. UT1 'adult'); its names live in the list store, not here."""

    name: str
    source: str  # e.g. "ut1", or the file an import came from
    titles: dict[str, str] = field(default_factory=dict)  # language code -> title
    descriptions: dict[str, str] = field(default_factory=dict)
    alias_of: str | None = None


@dataclass(frozen=True, slots=True)
class AdminList:
    name: str
    description: str = ""
    entries: tuple[ListEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    title: str = ""
    default_action: Action = Action.ALLOW
    safe_search: bool = False
    quic: QuicMode = QuicMode.INSPECT
    bypass_shield: bool = False  # block DoH/DoT/DoQ, VPN and proxy categories, ECH
    log_client_address: bool = False  # raw addresses in events only when a policy asks
    unnamed: UnnamedFlows = UnnamedFlows.AUTO  # flows without a readable name; address rules still apply


@dataclass(frozen=True, slots=True)
class ClientMatch:
    """Puts clients in a group by exactly one of: source CIDR, interface (+ VLAN), MAC."""

    group: str
    cidr: str | None = None
    interface: str | None = None
    vlan: int | None = None
    mac: str | None = None


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """What the gateway knows of a client; mac is lowercase aa:bb:cc:dd:ee:ff, vlan the 802.1Q id."""

    address: str  # source IP address, IPv4 or IPv6 text
    mac: str | None = None
    interface: str | None = None
    vlan: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """What a group does with one category or admin list, optionally only on a schedule."""

    group: str
    target_kind: TargetKind
    target: str
    action: Action
    schedule: str | None = None
    enabled: bool = True  # a disabled rule keeps its place in the order but decides nothing


@dataclass(frozen=True, slots=True)
class TimeSlot:
    """A slot in local time on one weekday (0 = Monday), start inclusive, end exclusive."""

    weekday: int
    start: time
    end: time  # time(0, 0) as end means midnight at the end of the day


@dataclass(frozen=True, slots=True)
class DatedException:
    """A date whose slots replace the weekly ones: none for a holiday, some for an exam day."""

    day: date
    slots: tuple[tuple[time, time], ...] = ()


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    slots: tuple[TimeSlot, ...]
    exceptions: tuple[DatedException, ...] = ()


@dataclass(frozen=True, slots=True)
class Override:
    """A teacher's temporary allow (or block) of a name for one group."""

    id: int
    group: str
    name: str
    action: Action
    starts_at: datetime  # timezone-aware
    expires_at: datetime
    created_by: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    timezone: str = "Europe/Brussels"
    default_group: str = "guests"
    block_page_ipv4: str = "198.18.0.1"
    block_page_ipv6: str = "2001:2::1"

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise PolicyError(f"settings.timezone {self.timezone!r} is not a known time zone") from error


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything a compile needs besides the imported category names."""

    settings: Settings = field(default_factory=Settings)
    categories: tuple[Category, ...] = ()
    lists: tuple[AdminList, ...] = ()
    groups: tuple[Group, ...] = ()
    clients: tuple[ClientMatch, ...] = ()
    rules: tuple[Rule, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    overrides: tuple[Override, ...] = ()


# What a group's bypass shield blocks besides DNS-level signals: encrypted DNS (DoH) servers,
# VPNs and proxies, by their UT1 categories (as far as they are imported).
BYPASS_CATEGORIES = ("doh", "vpn", "redirector", "residential-proxies")


def effective_unnamed(group: Group) -> UnnamedFlows:
    """The group's setting for flows without a name, AUTO resolved by its bypass shield."""
    if group.unnamed is UnnamedFlows.AUTO:
        return UnnamedFlows.BLOCK_WEB if group.bypass_shield else UnnamedFlows.ALLOW
    return group.unnamed


def effective_rules(policy: Policy) -> tuple[Rule, ...]:
    """The policy's rules plus, per group with the bypass shield on, a block rule for each
    bypass category the policy knows, after the group's own rules."""
    known = {category.name for category in policy.categories}
    shield = tuple(
        Rule(group.name, TargetKind.CATEGORY, name, Action.BLOCK)
        for group in policy.groups if group.bypass_shield
        for name in BYPASS_CATEGORIES if name in known
    )
    return policy.rules + shield


def parse_entry(kind: EntryKind | str, value: str) -> ListEntry:
    """A validated, normalised admin-list entry; PolicyError names what is wrong."""
    from edufilter._fastpath import normalise_name

    try:
        kind = EntryKind(kind)
    except ValueError:
        raise PolicyError(f"entry kind {kind!r} is not one of {', '.join(EntryKind)}") from None
    text = value.strip()
    if kind in (EntryKind.DOMAIN, EntryKind.EXACT):
        name = normalise_name(text.encode("ascii", "replace"))
        if name is None:
            raise PolicyError(f"{kind} entry {value!r} is not a valid host name")
        refuse_public_suffix(name, f"{kind} entry", Scope.ICANN)
        return ListEntry(kind, name)
    if kind is EntryKind.CIDR:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError as error:
            raise PolicyError(f"cidr entry {value!r}: {error}") from error
        return ListEntry(kind, str(network))
    host, slash, path = text.partition("/")
    for scheme in ("http://", "https://"):
        if text.lower().startswith(scheme):
            host, slash, path = text[len(scheme):].partition("/")
    name = normalise_name(host.encode("ascii", "replace"))
    if name is None:
        raise PolicyError(f"url_prefix entry {value!r} has no valid host name")
    refuse_public_suffix(name, "url_prefix entry host", Scope.ICANN)
    return ListEntry(kind, f"{name}/{path}")


def check_mac(value: str) -> str:
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.fullmatch(mac):
        raise PolicyError(f"MAC address {value!r} is not of the form aa:bb:cc:dd:ee:ff")
    return mac
