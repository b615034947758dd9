"""A slow, obviously-correct decision: the oracle for differential tests of the compiled image.

It follows "Decision semantics" in notes/design.md clause by clause and tries nothing
clever: every question looks at every rule, every entry and every override.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from edufilter._fastpath import normalise_name
from edufilter.policy.model import (
    Action,
    ClientIdentity,
    EntryKind,
    Policy,
    Rule,
    TargetKind,
    check_mac,
    effective_rules,
)
from edufilter.policy.schedule import is_active

TIER_OVERRIDE = "override"
TIER_ADMIN = "admin"
TIER_CATEGORY = "category"
TIER_RANK = {TIER_OVERRIDE: 0, TIER_ADMIN: 1, TIER_CATEGORY: 2}

# Within a tier a URL-prefix match beats any name match, which beats any address match.
MATCH_URL = 2
MATCH_NAME = 1
MATCH_ADDRESS = 0


@dataclass(frozen=True)
class CategoryData:
    """A category's imported data: names (with their subdomains), networks, URL prefixes."""

    names: frozenset[str] = frozenset()
    cidrs: tuple[str, ...] = ()
    urls: frozenset[str] = frozenset()  # "host/path" prefixes, matched on the exact host


@dataclass(frozen=True)
class ReferenceDecision:
    group: str
    action: Action
    tier: str | None  # "override", "admin", "category"; None for the group's default
    target: str | None  # list or category name as the rule gives it, or "override:<id>"
    matched: str | None  # the matched name suffix, network or URL prefix
    rule_position: int | None  # the rule's 0-based position in its group


@dataclass(frozen=True)
class _Match:
    kind: int  # MATCH_URL, MATCH_NAME or MATCH_ADDRESS
    specificity: int  # URL prefix length, labels of the name suffix, network prefix length
    matched: str


@dataclass(frozen=True)
class _Candidate:
    tier: str
    match: _Match
    action: Action
    order: int  # rule position, or override id
    target: str
    rule_position: int | None

    def rank(self) -> tuple[int, int, int, int, int]:
        """Smaller ranks first: tier, then specificity, then action, then order."""
        return (
            TIER_RANK[self.tier],
            -self.match.kind,
            -self.match.specificity,
            _action_rank(self.action),
            self.order,
        )


def _action_rank(action: Action) -> int:
    if action is Action.ALLOW:
        return 0
    if action.blocks:
        return 1
    return 2  # monitor


def reference_decide(
    policy: Policy,
    category_data: Mapping[str, CategoryData],
    client: ClientIdentity,
    name: str | None,
    address: str | None,
    when: datetime,
    path: str | None = None,
) -> ReferenceDecision:
    """The decision for a client reaching `name` and/or `address` (and `path`, plain HTTP) at `when`.

    `policy` is as check_policy returns it; `path` is the request path as sent, from its "/".
    """
    if when.utcoffset() is None:
        raise ValueError("reference_decide needs a timezone-aware datetime")
    if name is not None:
        normalised = normalise_name(name.encode("ascii"))
        if normalised is None:
            raise ValueError(f"{name!r} is not a valid host name")
        name = normalised
    destination = None if address is None else ipaddress.ip_address(address)
    if path is not None and not path.startswith("/"):
        raise ValueError(f"path {path!r} does not start with '/'")
    url = None if name is None or path is None else name + path

    group_name = client_group(policy, client)
    group = next(group for group in policy.groups if group.name == group_name)
    candidates: list[_Candidate] = []

    for override in policy.overrides:
        if override.group != group_name or not override.starts_at <= when < override.expires_at:
            continue
        match = _domain_match(name, override.name)
        if match is not None:
            target = f"override:{override.id}"
            candidates.append(_Candidate(TIER_OVERRIDE, match, override.action, override.id, target, None))

    for position, rule in enumerate(rule for rule in effective_rules(policy) if rule.group == group_name):
        if not _rule_active(policy, rule, when):
            continue
        if rule.target_kind is TargetKind.LIST:
            tier, matches = TIER_ADMIN, _list_matches(policy, rule.target, name, destination, url)
        else:
            tier, matches = TIER_CATEGORY, _category_matches(policy, category_data, rule.target, name, destination, url)
        for match in matches:
            candidates.append(_Candidate(tier, match, rule.action, position, rule.target, position))

    if not candidates:
        return ReferenceDecision(group_name, group.default_action, None, None, None, None)
    best = min(candidates, key=_Candidate.rank)
    return ReferenceDecision(group_name, best.action, best.tier, best.target, best.match.matched, best.rule_position)


def client_group(policy: Policy, client: ClientIdentity) -> str:
    """A MAC match, else an interface match (its exact VLAN first), else the longest CIDR, else the default."""
    if client.mac is not None:
        mac = check_mac(client.mac)
        for match in policy.clients:
            if match.mac == mac:
                return match.group
    if client.interface is not None:
        # A match without a VLAN takes the whole interface; one with the client's VLAN beats it.
        for vlan in (client.vlan, None):
            for match in policy.clients:
                if match.interface == client.interface and match.vlan == vlan:
                    return match.group
    source = ipaddress.ip_address(client.address)
    best_group, best_length = policy.settings.default_group, -1
    for match in policy.clients:
        if match.cidr is None:
            continue
        network = ipaddress.ip_network(match.cidr)
        if network.version == source.version and source in network and network.prefixlen > best_length:
            best_group, best_length = match.group, network.prefixlen
    return best_group


def _rule_active(policy: Policy, rule: Rule, when: datetime) -> bool:
    if rule.schedule is None:
        return True
    schedule = next(schedule for schedule in policy.schedules if schedule.name == rule.schedule)
    return is_active(schedule, policy.settings.zone, when)


def _domain_match(name: str | None, entry: str) -> _Match | None:
    """The entry matches the name itself and every name below it."""
    if name is None or not (name == entry or name.endswith("." + entry)):
        return None
    return _Match(MATCH_NAME, len(entry.split(".")), entry)


def _exact_match(name: str | None, entry: str) -> _Match | None:
    if name != entry:
        return None
    return _Match(MATCH_NAME, len(entry.split(".")), entry)


def _address_match(destination: ipaddress.IPv4Address | ipaddress.IPv6Address | None, cidr: str) -> _Match | None:
    if destination is None:
        return None
    network = ipaddress.ip_network(cidr)
    if network.version != destination.version or destination not in network:
        return None
    return _Match(MATCH_ADDRESS, network.prefixlen, str(network))


def _url_match(url: str | None, prefix: str) -> _Match | None:
    """A "host/path" prefix: the host is compared whole, since the prefix holds its "/"."""
    if url is None or not url.startswith(prefix):
        return None
    return _Match(MATCH_URL, len(prefix), prefix)


def _list_matches(
    policy: Policy,
    list_name: str,
    name: str | None,
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    url: str | None,
) -> list[_Match]:
    admin_list = next(admin_list for admin_list in policy.lists if admin_list.name == list_name)
    matchers = {
        EntryKind.DOMAIN: lambda value: _domain_match(name, value),
        EntryKind.EXACT: lambda value: _exact_match(name, value),
        EntryKind.CIDR: lambda value: _address_match(destination, value),
        EntryKind.URL_PREFIX: lambda value: _url_match(url, value),
    }
    found = [matchers[entry.kind](entry.value) for entry in admin_list.entries]
    return [match for match in found if match is not None]


def _category_matches(
    policy: Policy,
    category_data: Mapping[str, CategoryData],
    category_name: str,
    name: str | None,
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    url: str | None,
) -> list[_Match]:
    category = next(category for category in policy.categories if category.name == category_name)
    data = category_data.get(category.alias_of or category.name, CategoryData())
    found = [_domain_match(name, value) for value in data.names]
    found += [_address_match(destination, value) for value in data.cidrs]
    found += [_url_match(url, value) for value in data.urls]
    return [match for match in found if match is not None]
