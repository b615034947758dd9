"""The compiled policy, mapped and asked: which group a client is in, and what a name, URL or
address gets, with the reasons (edufilter check, the API's check, the block page).

The same Classifier answers in the workers' data path; this module adds what a person
needs to read the answer: names instead of ids, the rule, the schedule slot, the override.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from edufilter._fastpath import normalise_name
from edufilter.classify._classify import Classifier, MatchKind, RuleAction, Tier
from edufilter.classify.image import mapped_images
from edufilter.errors import PolicyError
from edufilter.policy.model import (
    Action,
    ClientIdentity,
    DatedException,
    Schedule,
    TimeSlot,
    check_mac,
)
from edufilter.policy.schedule import MIDNIGHT, slots_on
from edufilter.state import StateDir

ACTION_NAMES = {
    RuleAction.ACTION_ALLOW: Action.ALLOW,
    RuleAction.ACTION_BLOCK: Action.BLOCK,
    RuleAction.ACTION_DROP: Action.DROP,
    RuleAction.ACTION_SINKHOLE: Action.SINKHOLE,
    RuleAction.ACTION_MONITOR: Action.MONITOR,
}
TIER_NAMES = {Tier.TIER_OVERRIDE: "override", Tier.TIER_ADMIN: "admin list", Tier.TIER_CATEGORY: "category"}
MATCH_NAMES = {MatchKind.MATCH_URL: "url", MatchKind.MATCH_NAME: "name", MatchKind.MATCH_ADDRESS: "address"}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Target:
    """What is asked about: a host name, a URL (host and path), or an address."""

    name: str | None
    address: IPAddress | None
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        text = text.strip()
        path = None
        if "://" in text or "/" in text:
            parts = urlsplit(text if "://" in text else f"http://{text}")
            host = parts.hostname or ""
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        else:
            host = text
        try:
            return cls(None, ipaddress.ip_address(host.strip("[]")), None)
        except ValueError:
            pass
        name = normalise_name(host.encode("idna") if not host.isascii() else host.encode())
        if name is None:
            raise PolicyError(f"{text!r} is neither a valid host name, URL nor IP address")
        return cls(name, None, path)


@dataclass(frozen=True, slots=True)
class Explanation:
    """A decision and why, as `edufilter check` and the API show it."""

    target: str
    group: str
    group_match: str  # "mac" | "interface" | "cidr" | "default"
    action: str
    decided_by: str  # "override" | "admin list" | "category" | "group default"
    list: str | None  # category or admin list name; "override:<id>"
    list_title: str | None  # a category's title (English, else any)
    match: str | None  # "url" | "name" | "address"
    matched: str | None  # the matched suffix, network or URL prefix
    rule: dict | None  # the group's rule: position, target, action, schedule
    override: dict | None
    schedule_slot: str | None  # the slot that made a scheduled rule active, e.g. "monday 08:25-12:05"
    at: str
    policy_version: int

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        lines = [f"{self.target}: {self.action.upper()} for group {self.group} (matched by {self.group_match})"]
        if self.decided_by == "group default":
            lines.append("  no rule matches: the group's default action")
        else:
            lines.append(f"  decided by {self.decided_by} {self.list}" + (f" ({self.list_title})" if self.list_title else ""))
            lines.append(f"  matched {self.match} {self.matched}")
        if self.rule:
            schedule = f", schedule {self.rule['schedule']}" if self.rule.get("schedule") else ""
            lines.append(f"  rule {self.rule['position']} of {self.group}: {self.rule['action']} "
                         f"{self.rule['target_kind']} {self.rule['target']}{schedule}")
        if self.schedule_slot:
            lines.append(f"  active slot: {self.schedule_slot}")
        if self.override:
            lines.append(f"  override {self.override['id']} by {self.override['created_by'] or '?'} until "
                         f"{self.override['expires_at']}" + (f": {self.override['reason']}" if self.override['reason'] else ""))
        lines.append(f"  at {self.at}, policy version {self.policy_version}")
        return "\n".join(lines)


class Engine:
    """The three images of one state directory, mapped, with their Classifier."""

    def __init__(self, categories_path: Path, lists_path: Path, policy_path: Path) -> None:
        self.categories_image = mapped_images.open(categories_path)
        self.lists_image = mapped_images.open(lists_path)
        self.policy_image = mapped_images.open(policy_path)
        categories_meta, lists_meta, meta = self.categories_image.meta, self.lists_image.meta, self.policy_image.meta
        if (categories_meta.get("kind"), lists_meta.get("kind"), meta.get("kind")) != ("categories", "lists", "policy"):
            raise PolicyError(f"{categories_path} / {lists_path} / {policy_path}: not a categories, a lists and a "
                              "policy image")
        if meta["categories_digest"] != categories_meta["digest"]:
            raise PolicyError(f"{policy_path} was compiled against other category lists; compile the policy again")
        if meta["lists_digest"] != lists_meta["digest"]:
            raise PolicyError(f"{policy_path} was compiled against other admin lists; compile the policy again")
        self.meta = meta
        self.classifier = Classifier(
            dict(self.categories_image.sections), dict(self.lists_image.sections), dict(self.policy_image.sections),
            len(meta["groups"]), len(meta["lists"]), len(meta["schedules"]),
            meta["window_start_minute"], meta["window_minutes"], meta["default_group"], meta["list_base"],
        )
        self.urls = _url_table(self.categories_image.section("urls"))
        for host, prefixes in _url_table(self.lists_image.section("urls"), meta["list_base"]).items():
            self.urls.setdefault(host, []).extend(prefixes)
        self.schedules = {schedule["name"]: schedule_from_meta(schedule) for schedule in meta["schedules"]}

    @classmethod
    def open(cls, state_dir: Path) -> Engine:
        state = StateDir(state_dir)
        return cls(state.categories_image, state.lists_image, state.policy_image)

    @property
    def version(self) -> int:
        return int(self.meta["version"])

    def covers(self, at: datetime) -> bool:
        """Whether `at` falls in the compiled schedule window."""
        minute = int(at.timestamp()) // 60 - self.meta["window_start_minute"]
        return 0 <= minute < self.meta["window_minutes"]

    def group_index(self, client: ClientIdentity) -> tuple[int, str]:
        address = ipaddress.ip_address(client.address)
        mac = bytes.fromhex(check_mac(client.mac).replace(":", "")) if client.mac else None
        group, how = self.classifier.client_group(address.packed, mac, 0)
        if how in ("cidr", "default") and client.interface:
            by_interface = self.interface_group(client.interface, client.vlan)
            if by_interface is not None:
                return by_interface, "interface"
        return group, how

    def interface_group(self, interface: str, vlan: int | None) -> int | None:
        """An exact interface+VLAN match beats a match on the whole interface."""
        exact = whole = None
        for match in self.meta["interfaces"]:
            if match["interface"] == interface:
                if match["vlan"] is None:
                    whole = match["group"]
                elif match["vlan"] == vlan:
                    exact = match["group"]
        return exact if exact is not None else whole

    def url_matches(self, name: str, path: str | None) -> list[tuple[int, int]]:
        """(list id, prefix length) of every URL prefix that the name and path start with."""
        if path is None:
            return []
        url = name + path
        return [(list_id, len(prefix)) for prefix, list_id in self.urls.get(name, ()) if url.startswith(prefix)]

    def explain(self, text: str, client: ClientIdentity, at: datetime | None = None) -> Explanation:
        at = at or datetime.now(timezone.utc)
        if at.utcoffset() is None:
            raise PolicyError("the time needs a time zone (e.g. 2026-11-26T10:00:00+01:00)")
        target = Target.parse(text)
        group, how = self.group_index(client)
        action, tier, match, list_id, matched, order, _ = self.classifier.decide(
            group, target.name.encode() if target.name else None,
            target.address.packed if target.address else None, at.timestamp(),
            self.url_matches(target.name, target.path) if target.name else (),
        )
        group_meta = self.meta["groups"][group]
        local = at.astimezone(ZoneInfo(self.meta["settings"]["timezone"]))
        explanation = dict(
            target=text, group=group_meta["name"], group_match=how, at=local.isoformat(),
            policy_version=self.version, list=None, list_title=None, match=None, matched=None, rule=None,
            override=None, schedule_slot=None,
        )
        if action == RuleAction.NO_RULE:
            return Explanation(action=group_meta["default_action"], decided_by="group default", **explanation)
        listed = self.meta["lists"][list_id]
        explanation.update(match=MATCH_NAMES[match], matched=self._matched(target, match, matched))
        if listed["kind"] == "override":
            override = next(o for o in self.meta["overrides"] if o["id"] == order)
            explanation.update(list=f"override:{order}", override=override)
        else:
            rule = next(r for r in self.meta["rules"] if r["group"] == group_meta["name"] and r["position"] == order)
            explanation.update(list=listed["name"], rule=rule, list_title=self._title(listed))
            if rule["schedule"]:
                explanation["schedule_slot"] = self._slot(rule["schedule"], local)
        return Explanation(action=ACTION_NAMES[action].value, decided_by=TIER_NAMES[tier], **explanation)

    def _matched(self, target: Target, match: int, matched: int) -> str:
        if match == MatchKind.MATCH_NAME and target.name:
            return target.name[matched:]
        if match == MatchKind.MATCH_ADDRESS and target.address:
            return str(ipaddress.ip_network(f"{target.address}/{matched}", strict=False))
        return f"{target.name}{target.path or ''}"[:matched]

    def _title(self, listed: dict) -> str | None:
        if listed["kind"] != "category":
            return None
        titles = self.meta["categories"].get(listed["name"], {}).get("titles", {})
        title = titles.get("en") or next(iter(titles.values()), None)
        return title if title != listed["name"] else None  # UT1 titles some categories by their name

    def _slot(self, schedule_name: str, local: datetime) -> str | None:
        for start, end in slots_on(self.schedules[schedule_name], local.date()):
            if start <= local.time() and (end == MIDNIGHT or local.time() < end):
                return f"{local:%A %Y-%m-%d} {start:%H:%M}-{'24:00' if end == MIDNIGHT else f'{end:%H:%M}'}"
        return None


def schedule_from_meta(meta: dict) -> Schedule:
    def clock(text: str) -> time:
        return time.fromisoformat(text)

    return Schedule(
        meta["name"],
        tuple(TimeSlot(weekday, clock(start), clock(end)) for weekday, start, end in meta["slots"]),
        tuple(
            DatedException(date.fromisoformat(day), tuple((clock(start), clock(end)) for start, end in slots))
            for day, slots in meta["exceptions"]
        ),
    )


def _url_table(section: memoryview, list_base: int = 0) -> dict[str, list[tuple[str, int]]]:
    """host -> [(host/path prefix, list id)] from a urls section whose ids start at list_base."""
    table: dict[str, list[tuple[str, int]]] = {}
    for line in bytes(section).decode().splitlines():
        list_id, _, url = line.partition(" ")
        table.setdefault(url.partition("/")[0], []).append((url, list_base + int(list_id)))
    return table
