"""Hand-written cases for every clause of the decision semantics (notes/design.md)."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from reference_decision import CategoryData, ReferenceDecision, client_group, reference_decide

from edufilter.policy.model import (
    Action,
    AdminList,
    Category,
    ClientIdentity,
    ClientMatch,
    DatedException,
    Group,
    Override,
    Policy,
    Rule,
    Schedule,
    Settings,
    TargetKind,
    TimeSlot,
    parse_entry,
)
from edufilter.policy.store import check_policy

UTC = timezone.utc
BRUSSELS = ZoneInfo("Europe/Brussels")
MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=BRUSSELS)
PUPIL = ClientIdentity("198.18.16.10")

CATEGORIES = (
    Category("adult", "ut1"),
    Category("games", "ut1"),
    Category("education", "ut1"),
    Category("porn", "ut1", alias_of="adult"),
)
DATA = {
    "adult": CategoryData(
        names=frozenset({"example.org", "xn--caf-dma.be"}),
        cidrs=("198.18.200.0/24", "2001:2:66::/48"),
        urls=frozenset({"free.example.net/adult/"}),
    ),
    "games": CategoryData(names=frozenset({"games.example.org", "play.example.com"})),
    "education": CategoryData(names=frozenset({"docs.example.org", "org", "free.example.net"}), cidrs=("198.18.200.7/32",)),
    "porn": CategoryData(names=frozenset({"never.example"})),  # aliases use their target's data
}
GROUPS = (Group("pupils"), Group("staff"), Group("guests", default_action=Action.BLOCK))


def rule(target: str, action: str, kind: TargetKind = TargetKind.CATEGORY, group: str = "pupils", **extra) -> Rule:
    return Rule(group, kind, target, Action(action), **extra)


def admin_list(name: str, **entries: list[str]) -> AdminList:
    return AdminList(name, entries=tuple(parse_entry(kind, value) for kind, values in entries.items() for value in values))


def make_policy(*, rules=(), lists=(), clients=(), schedules=(), overrides=(), timezone="Europe/Brussels") -> Policy:
    return check_policy(
        Policy(
            settings=Settings(timezone=timezone, default_group="pupils"),
            categories=CATEGORIES,
            lists=tuple(lists),
            groups=GROUPS,
            clients=tuple(clients),
            rules=tuple(rules),
            schedules=tuple(schedules),
            overrides=tuple(overrides),
        )
    )


def decide(policy, name=None, address=None, when=MONDAY_NOON, path=None, client=PUPIL) -> ReferenceDecision:
    return reference_decide(policy, DATA, client, name, address, when, path)


def action(policy, name=None, address=None, when=MONDAY_NOON, path=None, client=PUPIL) -> Action:
    return decide(policy, name, address, when, path, client).action


# Specificity and precedence


def test_allowing_a_subdomain_while_its_domain_is_blocked():
    policy = make_policy(
        rules=[rule("adult", "block"), rule("school-allow", "allow", TargetKind.LIST)],
        lists=[admin_list("school-allow", domain=["docs.example.org"])],
    )
    assert decide(policy, "docs.example.org") == ReferenceDecision(
        "pupils", Action.ALLOW, "admin", "school-allow", "docs.example.org", 1
    )
    assert action(policy, "a.docs.example.org") is Action.ALLOW
    assert decide(policy, "www.example.org") == ReferenceDecision(
        "pupils", Action.BLOCK, "category", "adult", "example.org", 0
    )
    assert action(policy, "example.org") is Action.BLOCK
    assert action(policy, "badexample.org") is Action.ALLOW  # suffixes match whole labels
    assert decide(policy, "example.com") == ReferenceDecision("pupils", Action.ALLOW, None, None, None, None)


def test_most_specific_name_wins_within_the_category_tier():
    policy = make_policy(rules=[rule("adult", "block"), rule("education", "allow")])
    assert decide(policy, "docs.example.org").action is Action.ALLOW
    assert decide(policy, "docs.example.org").matched == "docs.example.org"
    assert decide(policy, "www.example.org").matched == "example.org"
    assert action(policy, "www.example.org") is Action.BLOCK
    # A more specific block under a broader allow: the block wins.
    policy = make_policy(rules=[rule("education", "allow"), rule("games", "block")])
    assert action(policy, "games.example.org") is Action.BLOCK
    assert action(policy, "docs.example.org") is Action.ALLOW
    assert decide(policy, "news.example.org").matched == "org"


def test_allow_beats_block_at_equal_specificity_whatever_the_order():
    for rules in ([rule("games", "block"), rule("play", "allow", TargetKind.LIST)],
                  [rule("play", "allow", TargetKind.LIST), rule("games", "block")]):
        policy = make_policy(rules=rules, lists=[admin_list("play", domain=["play.example.com"])])
        assert action(policy, "play.example.com") is Action.ALLOW
    policy = make_policy(
        rules=[rule("a", "block", TargetKind.LIST), rule("b", "allow", TargetKind.LIST)],
        lists=[admin_list("a", domain=["example.com"]), admin_list("b", domain=["example.com"])],
    )
    assert decide(policy, "example.com").target == "b"


def test_blocking_actions_tie_on_position_and_beat_monitor():
    lists = [admin_list(name, domain=["example.com"]) for name in ("first", "second", "watch")]

    def winner(*rules: Rule) -> ReferenceDecision:
        return decide(make_policy(rules=rules, lists=lists), "www.example.com")

    assert winner(rule("first", "drop", TargetKind.LIST), rule("second", "sinkhole", TargetKind.LIST)).action is Action.DROP
    assert winner(rule("first", "sinkhole", TargetKind.LIST), rule("second", "drop", TargetKind.LIST)).action is Action.SINKHOLE
    monitored = winner(rule("watch", "monitor", TargetKind.LIST), rule("second", "block", TargetKind.LIST))
    assert (monitored.action, monitored.rule_position) == (Action.BLOCK, 1)
    assert winner(rule("watch", "monitor", TargetKind.LIST)).action is Action.MONITOR
    assert winner(rule("watch", "monitor", TargetKind.LIST), rule("first", "allow", TargetKind.LIST)).action is Action.ALLOW


def test_admin_lists_beat_categories_whatever_the_specificity():
    policy = make_policy(
        rules=[rule("education", "allow"), rule("school-block", "block", TargetKind.LIST)],
        lists=[admin_list("school-block", domain=["example.org"])],
    )
    decision = decide(policy, "docs.example.org")
    assert (decision.action, decision.tier, decision.matched) == (Action.BLOCK, "admin", "example.org")
    # An admin address match still beats a category name match.
    policy = make_policy(
        rules=[rule("education", "allow"), rule("nets", "block", TargetKind.LIST)],
        lists=[admin_list("nets", cidr=["198.18.0.0/15"])],
    )
    assert decide(policy, "docs.example.org", "198.18.1.1").tier == "admin"


def test_overrides_beat_admin_lists_and_categories():
    start = MONDAY_NOON - timedelta(hours=1)
    override = Override(7, "pupils", "example.org", Action.ALLOW, start, start + timedelta(hours=2))
    policy = make_policy(
        rules=[rule("adult", "block"), rule("school-block", "block", TargetKind.LIST)],
        lists=[admin_list("school-block", exact=["www.example.org"])],
        overrides=[override],
    )
    assert decide(policy, "www.example.org") == ReferenceDecision(
        "pupils", Action.ALLOW, "override", "override:7", "example.org", None
    )
    block = Override(8, "pupils", "docs.example.org", Action.BLOCK, start, start + timedelta(hours=2))
    policy = make_policy(rules=[rule("education", "allow")], overrides=[override, block])
    assert decide(policy, "a.docs.example.org").target == "override:8"  # more specific override
    assert decide(policy, "www.example.org").target == "override:7"


def test_overrides_at_equal_specificity_allow_first_then_lowest_id():
    start, end = MONDAY_NOON - timedelta(hours=1), MONDAY_NOON + timedelta(hours=1)
    overrides = [
        Override(5, "pupils", "example.org", Action.BLOCK, start, end),
        Override(3, "pupils", "example.org", Action.DROP, start, end),
    ]
    assert decide(make_policy(overrides=overrides), "example.org").target == "override:3"
    overrides.append(Override(9, "pupils", "example.org", Action.ALLOW, start, end))
    assert decide(make_policy(overrides=overrides), "example.org").target == "override:9"


def test_override_of_another_group_does_not_apply():
    start = MONDAY_NOON - timedelta(hours=1)
    override = Override(1, "staff", "example.org", Action.ALLOW, start, start + timedelta(hours=2))
    policy = make_policy(rules=[rule("adult", "block")], overrides=[override])
    assert action(policy, "example.org") is Action.BLOCK


def test_override_starts_and_expires_at_its_exact_instants():
    starts = datetime(2026, 11, 23, 10, 0, tzinfo=BRUSSELS)
    expires = datetime(2026, 11, 23, 10, 50, tzinfo=BRUSSELS)
    policy = make_policy(
        rules=[rule("adult", "block")],
        overrides=[Override(1, "pupils", "example.org", Action.ALLOW, starts, expires)],
    )
    tick = timedelta(microseconds=1)
    assert action(policy, "example.org", when=starts - tick) is Action.BLOCK
    assert action(policy, "example.org", when=starts) is Action.ALLOW
    assert action(policy, "example.org", when=starts.astimezone(UTC)) is Action.ALLOW
    assert action(policy, "example.org", when=expires - tick) is Action.ALLOW
    assert action(policy, "example.org", when=expires) is Action.BLOCK


# Entries: exact and domain, names and addresses, URL prefixes


def test_exact_entry_matches_only_its_host_and_counts_like_a_domain_entry():
    policy = make_policy(
        rules=[rule("hosts", "block", TargetKind.LIST), rule("school", "allow", TargetKind.LIST)],
        lists=[admin_list("hosts", exact=["www.example.com"]), admin_list("school", domain=["example.com"])],
    )
    assert action(policy, "www.example.com") is Action.BLOCK  # 3 labels beat 2
    assert action(policy, "sub.www.example.com") is Action.ALLOW
    assert action(policy, "example.com") is Action.ALLOW
    # An exact entry and a domain entry on the same name tie: the allow wins.
    policy = make_policy(
        rules=[rule("hosts", "block", TargetKind.LIST), rule("school", "allow", TargetKind.LIST)],
        lists=[admin_list("hosts", domain=["www.example.com"]), admin_list("school", exact=["www.example.com"])],
    )
    assert action(policy, "www.example.com") is Action.ALLOW
    assert action(policy, "sub.www.example.com") is Action.BLOCK


def test_address_matches_longest_prefix_and_loses_to_a_name_match():
    policy = make_policy(rules=[rule("adult", "block"), rule("education", "allow")])
    assert decide(policy, None, "198.18.200.7") == ReferenceDecision(
        "pupils", Action.ALLOW, "category", "education", "198.18.200.7/32", 1
    )
    assert decide(policy, None, "198.18.200.8").matched == "198.18.200.0/24"
    assert action(policy, None, "198.18.200.8") is Action.BLOCK
    assert action(policy, None, "198.18.201.8") is Action.ALLOW
    # The /32 allow is an address match; "example.org" (2 labels) is a name match and wins.
    assert decide(policy, "example.org", "198.18.200.7").matched == "example.org"
    assert action(policy, "example.org", "198.18.200.7") is Action.BLOCK
    # Without a name match the address decides.
    assert action(policy, "example.com", "198.18.200.8") is Action.BLOCK
    # A name alone never matches a network, an address alone never a name.
    assert action(policy, "example.com") is Action.ALLOW
    assert action(make_policy(rules=[rule("games", "block")]), None, "198.18.200.8") is Action.ALLOW


def test_ipv6_destination_networks():
    policy = make_policy(
        rules=[rule("adult", "block"), rule("nets", "allow", TargetKind.LIST)],
        lists=[admin_list("nets", cidr=["2001:2:66:1::/64"])],
    )
    assert decide(policy, None, "2001:2:66::1").matched == "2001:2:66::/48"
    assert action(policy, None, "2001:2:66::1") is Action.BLOCK
    assert action(policy, None, "2001:2:66:1::5") is Action.ALLOW  # admin tier
    assert action(policy, None, "2001:2:67::1") is Action.ALLOW
    assert action(policy, None, "::ffff:198.18.200.1") is Action.ALLOW  # IPv6, not the IPv4 network


def test_url_prefix_beats_names_and_needs_a_path():
    policy = make_policy(
        rules=[rule("sites", "allow", TargetKind.LIST), rule("paths", "block", TargetKind.LIST)],
        lists=[
            admin_list("sites", domain=["www.example.com"]),
            admin_list("paths", url_prefix=["www.example.com/games/", "http://Example.com/"]),
        ],
    )
    decision = decide(policy, "www.example.com", path="/games/tetris")
    assert (decision.action, decision.matched) == (Action.BLOCK, "www.example.com/games/")
    assert action(policy, "www.example.com", path="/games") is Action.ALLOW
    assert action(policy, "www.example.com", path="/Games/") is Action.ALLOW
    assert action(policy, "www.example.com") is Action.ALLOW  # HTTPS: no path
    assert action(policy, "sub.www.example.com", path="/games/") is Action.ALLOW  # exact host only
    assert action(policy, "example.com", path="/") is Action.BLOCK
    assert action(policy, "example.com.evil.test", path="/") is Action.ALLOW
    # The longest URL prefix wins.
    policy = make_policy(
        rules=[rule("paths", "block", TargetKind.LIST), rule("learn", "allow", TargetKind.LIST)],
        lists=[
            admin_list("paths", url_prefix=["www.example.com/games/"]),
            admin_list("learn", url_prefix=["www.example.com/games/maths/"]),
        ],
    )
    assert action(policy, "www.example.com", path="/games/maths/1") is Action.ALLOW
    assert action(policy, "www.example.com", path="/games/cards") is Action.BLOCK


def test_category_url_prefix_beats_a_longer_category_name():
    policy = make_policy(rules=[rule("education", "allow"), rule("adult", "block")])
    decision = decide(policy, "free.example.net", path="/adult/page.html")
    assert (decision.action, decision.target, decision.matched) == (Action.BLOCK, "adult", "free.example.net/adult/")
    assert decide(policy, "free.example.net", path="/other").matched == "free.example.net"
    assert action(policy, "free.example.net", path="/other") is Action.ALLOW
    assert action(policy, "free.example.net") is Action.ALLOW


def test_rule_on_an_alias_uses_its_targets_data():
    policy = make_policy(rules=[rule("porn", "block")])
    assert decide(policy, "www.example.org") == ReferenceDecision(
        "pupils", Action.BLOCK, "category", "porn", "example.org", 0
    )
    assert action(policy, "never.example") is Action.ALLOW


def test_idn_names_in_punycode():
    policy = make_policy(
        rules=[rule("adult", "block"), rule("school", "allow", TargetKind.LIST)],
        lists=[admin_list("school", domain=["xn--cole-9oa.example"])],  # école.example
    )
    assert decide(policy, "www.xn--caf-dma.be").matched == "xn--caf-dma.be"  # café.be
    assert action(policy, "XN--CAF-DMA.BE.") is Action.BLOCK
    assert action(policy, "caf.be") is Action.ALLOW
    assert action(policy, "les.xn--cole-9oa.example") is Action.ALLOW
    with pytest.raises(ValueError):
        decide(policy, "café.be")


def test_no_match_gives_the_groups_default():
    policy = make_policy(rules=[rule("adult", "block", group="guests")], clients=[ClientMatch("guests", cidr="198.18.40.0/22")])
    guest = ClientIdentity("198.18.40.5")
    assert decide(policy, "example.com", client=guest) == ReferenceDecision("guests", Action.BLOCK, None, None, None, None)
    assert decide(policy, "example.com") == ReferenceDecision("pupils", Action.ALLOW, None, None, None, None)


def test_rule_positions_count_within_the_group():
    policy = make_policy(rules=[rule("games", "block", group="staff"), rule("education", "allow"), rule("adult", "block")])
    assert decide(policy, "example.org").rule_position == 1


def test_naive_time_is_refused():
    with pytest.raises(ValueError):
        decide(make_policy(), "example.org", when=datetime(2026, 11, 23, 12, 0))


# Client to group


def test_client_group_mac_then_interface_then_longest_cidr_then_default():
    policy = make_policy(
        clients=[
            ClientMatch("staff", cidr="198.18.16.0/24"),
            ClientMatch("guests", cidr="198.18.16.0/21"),
            ClientMatch("guests", interface="eth1"),
            ClientMatch("staff", interface="eth1", vlan=32),
            ClientMatch("staff", mac="02:00:5e:00:20:01"),
            ClientMatch("staff", cidr="2001:2:0:16:1::/80"),
            ClientMatch("guests", cidr="2001:2:0:16::/64"),
        ]
    )
    assert client_group(policy, ClientIdentity("198.18.17.1")) == "guests"
    assert client_group(policy, ClientIdentity("198.18.16.1")) == "staff"  # /24 beats /21
    assert client_group(policy, ClientIdentity("198.18.99.1")) == "pupils"  # the default group
    assert client_group(policy, ClientIdentity("198.18.16.1", interface="eth1")) == "guests"
    assert client_group(policy, ClientIdentity("198.18.17.1", interface="eth1", vlan=32)) == "staff"
    assert client_group(policy, ClientIdentity("198.18.16.1", interface="eth1", vlan=16)) == "guests"
    assert client_group(policy, ClientIdentity("198.18.16.1", interface="eth2")) == "staff"  # no interface match
    assert client_group(policy, ClientIdentity("198.18.17.1", mac="02:00:5E:00:20:01", interface="eth1")) == "staff"
    assert client_group(policy, ClientIdentity("198.18.16.1", mac="02:00:5e:00:20:02")) == "staff"  # unknown MAC
    assert client_group(policy, ClientIdentity("2001:2:0:16::9")) == "guests"
    assert client_group(policy, ClientIdentity("2001:2:0:16:1::9")) == "staff"
    assert client_group(policy, ClientIdentity("2001:2:0:17::9")) == "pupils"


def test_the_clients_group_decides_which_rules_apply():
    policy = make_policy(
        rules=[rule("adult", "block", group="staff")],
        clients=[ClientMatch("staff", cidr="2001:2:0:32::/64")],
    )
    assert decide(policy, "example.org", client=ClientIdentity("2001:2:0:32::5")).action is Action.BLOCK
    assert decide(policy, "example.org", client=PUPIL).action is Action.ALLOW


# Schedules


def lessons(*exceptions: DatedException) -> Schedule:
    return Schedule(
        "lessons",
        (TimeSlot(0, time(8, 25), time(12, 5)), TimeSlot(0, time(13, 0), time(15, 50)), TimeSlot(2, time(22, 0), time(0, 0))),
        exceptions,
    )


def scheduled_policy(schedule: Schedule, timezone: str = "Europe/Brussels") -> Policy:
    return make_policy(rules=[rule("games", "block", schedule=schedule.name)], schedules=[schedule], timezone=timezone)


def blocked_at(policy: Policy, when: datetime) -> bool:
    return action(policy, "games.example.org", when=when) is Action.BLOCK


def test_schedule_slot_edges_start_inclusive_end_exclusive():
    policy = scheduled_policy(lessons())
    monday = datetime(2026, 11, 23, tzinfo=BRUSSELS)
    tick = timedelta(microseconds=1)
    assert not blocked_at(policy, monday.replace(hour=8, minute=25) - tick)
    assert blocked_at(policy, monday.replace(hour=8, minute=25))
    assert blocked_at(policy, monday.replace(hour=12, minute=5) - tick)
    assert not blocked_at(policy, monday.replace(hour=12, minute=5))
    assert not blocked_at(policy, monday.replace(hour=12, minute=30))
    assert blocked_at(policy, monday.replace(hour=13))
    assert not blocked_at(policy, monday.replace(hour=10) + timedelta(days=1))  # Tuesday


def test_schedule_slot_ending_at_midnight():
    policy = scheduled_policy(lessons())
    wednesday = datetime(2026, 11, 25, tzinfo=BRUSSELS)
    assert not blocked_at(policy, wednesday.replace(hour=21, minute=59))
    assert blocked_at(policy, wednesday.replace(hour=22))
    assert blocked_at(policy, wednesday.replace(hour=23, minute=59, second=59, microsecond=999999))
    assert not blocked_at(policy, wednesday + timedelta(days=1))  # Thursday 00:00


def test_schedule_reads_the_schools_clock_whatever_the_instants_zone():
    policy = scheduled_policy(lessons())
    assert blocked_at(policy, datetime(2026, 11, 23, 7, 25, tzinfo=UTC))  # 08:25 CET
    assert not blocked_at(policy, datetime(2026, 11, 23, 7, 24, tzinfo=UTC))
    assert blocked_at(policy, datetime(2026, 6, 22, 6, 25, tzinfo=UTC))  # 08:25 CEST
    assert not blocked_at(policy, datetime(2026, 6, 22, 6, 24, tzinfo=UTC))
    assert blocked_at(policy, datetime(2026, 11, 23, 2, 25, tzinfo=ZoneInfo("America/New_York")))
    # The same schedule for a school in Tokyo: 08:25 there is 23:25 UTC the day before.
    tokyo = scheduled_policy(lessons(), timezone="Asia/Tokyo")
    assert blocked_at(tokyo, datetime(2026, 11, 22, 23, 25, tzinfo=UTC))
    assert not blocked_at(tokyo, datetime(2026, 11, 23, 7, 25, tzinfo=UTC))


def test_schedule_on_the_spring_forward_day():
    # Sunday 2026-03-29, Brussels: 02:00 CET becomes 03:00 CEST at 01:00 UTC.
    night = Schedule("night", (TimeSlot(6, time(2, 30), time(3, 30)), TimeSlot(0, time(8, 25), time(12, 5))))
    policy = scheduled_policy(night)
    assert not blocked_at(policy, datetime(2026, 3, 29, 0, 59, tzinfo=UTC))  # 01:59 CET
    assert blocked_at(policy, datetime(2026, 3, 29, 1, 0, tzinfo=UTC))  # 03:00 CEST
    assert blocked_at(policy, datetime(2026, 3, 29, 1, 29, tzinfo=UTC))  # 03:29 CEST
    assert not blocked_at(policy, datetime(2026, 3, 29, 1, 30, tzinfo=UTC))  # 03:30 CEST
    assert blocked_at(policy, datetime(2026, 3, 30, 6, 25, tzinfo=UTC))  # Monday 08:25 CEST
    assert blocked_at(policy, datetime(2026, 3, 30, 10, 4, tzinfo=UTC))  # 12:04 CEST
    assert not blocked_at(policy, datetime(2026, 3, 30, 10, 5, tzinfo=UTC))  # 12:05 CEST


def test_schedule_on_the_fall_back_day():
    # Sunday 2026-10-25, Brussels: 03:00 CEST becomes 02:00 CET at 01:00 UTC; 02:xx shows twice.
    night = Schedule("night", (TimeSlot(6, time(2, 30), time(3, 30)),))
    policy = scheduled_policy(night)
    assert not blocked_at(policy, datetime(2026, 10, 25, 0, 29, tzinfo=UTC))  # 02:29 CEST
    assert blocked_at(policy, datetime(2026, 10, 25, 0, 30, tzinfo=UTC))  # 02:30 CEST
    assert not blocked_at(policy, datetime(2026, 10, 25, 1, 0, tzinfo=UTC))  # 02:00 CET
    assert blocked_at(policy, datetime(2026, 10, 25, 1, 30, tzinfo=UTC))  # 02:30 CET
    assert blocked_at(policy, datetime(2026, 10, 25, 2, 29, tzinfo=UTC))  # 03:29 CET
    assert not blocked_at(policy, datetime(2026, 10, 25, 2, 30, tzinfo=UTC))  # 03:30 CET


def test_dated_exceptions_replace_the_weekly_slots():
    holiday = DatedException(datetime(2026, 11, 23).date())
    exam = DatedException(datetime(2026, 11, 30).date(), ((time(8, 30), time(12, 30)),))
    policy = scheduled_policy(lessons(holiday, exam))
    assert not blocked_at(policy, datetime(2026, 11, 23, 10, 0, tzinfo=BRUSSELS))  # holiday Monday
    assert not blocked_at(policy, datetime(2026, 11, 30, 8, 25, tzinfo=BRUSSELS))  # exam day starts later
    assert blocked_at(policy, datetime(2026, 11, 30, 8, 30, tzinfo=BRUSSELS))
    assert blocked_at(policy, datetime(2026, 11, 30, 12, 10, tzinfo=BRUSSELS))  # past the weekly 12:05
    assert not blocked_at(policy, datetime(2026, 11, 30, 12, 30, tzinfo=BRUSSELS))
    assert not blocked_at(policy, datetime(2026, 11, 30, 14, 0, tzinfo=BRUSSELS))  # no afternoon slot
    assert blocked_at(policy, datetime(2026, 12, 7, 14, 0, tzinfo=BRUSSELS))  # an ordinary Monday


def test_inactive_rule_falls_through_to_the_next_match():
    policy = make_policy(
        rules=[rule("games", "block", schedule="lessons"), rule("education", "monitor")],
        schedules=[lessons()],
    )
    assert action(policy, "games.example.org") is Action.BLOCK
    evening = MONDAY_NOON.replace(hour=19)
    assert decide(policy, "games.example.org", when=evening).matched == "org"
    assert action(policy, "games.example.org", when=evening) is Action.MONITOR
