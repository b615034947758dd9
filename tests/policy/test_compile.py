"""The compiled images against the reference decision, on hand-made and random policies."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_decision import CategoryData, reference_decide

from edufilter.classify._classify import DomainTable, DomainTableBuilder
from edufilter.classify.engine import Engine, Target
from edufilter.classify.image import Image, write_image
from edufilter.errors import PolicyError
from edufilter.policy.compile import (
    policy_sections,
    write_categories_image,
    write_lists_image,
)
from edufilter.policy.liststore import ListCounts, StoredCategory
from edufilter.policy.model import (
    Action,
    AdminList,
    Category,
    ClientIdentity,
    ClientMatch,
    DatedException,
    EntryKind,
    Group,
    ListEntry,
    Override,
    Policy,
    Rule,
    Schedule,
    Settings,
    TargetKind,
    TimeSlot,
)
from edufilter.policy.store import check_policy
from edufilter.state import StateDir

BASE = datetime(2026, 3, 27, 7, 0, tzinfo=timezone.utc)  # a Friday, two days before the DST change
MONDAY_LESSON = BASE + timedelta(days=3, hours=1, minutes=55)  # Monday 30 March 10:55 CEST (after DST)


def stored_category(folder: Path, name: str, data: CategoryData, alias_of: str | None = None) -> StoredCategory:
    """A category as the list store keeps it: sorted unique names, networks, URL prefixes."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"names": sorted(data.names), "cidrs": list(data.cidrs), "urls": sorted(data.urls)}
    for kind, lines in files.items():
        (folder / kind).write_text("".join(f"{line}\n" for line in lines))
    digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()
    counts = ListCounts(len(data.names), len(data.cidrs), len(data.urls))
    return StoredCategory(name, "test", "test", alias_of, counts, BASE, None, digest, folder)


def compile_engine(tmp: Path, policy: Policy, data: dict[str, CategoryData], now: datetime = BASE) -> Engine:
    policy = check_policy(policy)
    aliases = {category.name: category.alias_of for category in policy.categories if category.alias_of}
    categories = [stored_category(tmp / "lists" / name, name, value) for name, value in data.items()]
    categories += [stored_category(tmp / "lists" / name, name, CategoryData(), target) for name, target in aliases.items()]
    state = StateDir(tmp)
    write_categories_image(categories, state.categories_image)
    write_lists_image([admin_list.name for admin_list in policy.lists], policy_list_values(policy), 1,
                      state.lists_image)
    sections, meta, _ = policy_sections(policy, Image(state.categories_image).meta,
                                        Image(state.lists_image).meta, now, 1)
    write_image(state.policy_image, sections, meta)
    return Engine.open(tmp)


def policy_list_values(policy: Policy):
    """The admin lists' values of a Policy, as write_lists_image asks for them."""
    def values(name: str, kind: EntryKind) -> list[str]:
        admin_list = next(admin_list for admin_list in policy.lists if admin_list.name == name)
        return [entry.value for entry in admin_list.entries if entry.kind is kind]

    return values


def decide(engine: Engine, client: ClientIdentity, name: str | None, address: str | None, when: datetime,
           path: str | None = None) -> tuple:
    """The compiled decision in the reference's terms: group, action, tier, target, matched."""
    group, _ = engine.group_index(client)
    action, tier, match, list_id, matched, order, _ = engine.classifier.decide(
        group, name.encode() if name else None, ipaddress.ip_address(address).packed if address else None,
        when.timestamp(), engine.url_matches(name, path) if name else (),
    )
    meta = engine.meta
    group_meta = meta["groups"][group]
    if action == 0:
        return group_meta["name"], Action(group_meta["default_action"]), None, None, None
    listed = meta["lists"][list_id]
    tiers = {0: "override", 1: "admin", 2: "category"}
    target_for = Target(name, ipaddress.ip_address(address) if address else None, path)
    matched_text = engine._matched(target_for, match, matched)
    if listed["kind"] == "override":
        target = f"override:{order}"
    else:
        target = next(r for r in meta["rules"] if r["group"] == group_meta["name"] and r["position"] == order)["target"]
    actions = {1: Action.ALLOW, 2: Action.BLOCK, 3: Action.DROP, 4: Action.SINKHOLE, 5: Action.MONITOR}
    return group_meta["name"], actions[action], tiers[tier], target, matched_text


def reference(policy: Policy, data: dict[str, CategoryData], client: ClientIdentity, name: str | None,
              address: str | None, when: datetime, path: str | None = None) -> tuple:
    answer = reference_decide(check_policy(policy), data, client, name, address, when, path)
    return answer.group, answer.action, answer.tier, answer.target, answer.matched


# ---------------------------------------------------------------- a hand-made school


def school() -> tuple[Policy, dict[str, CategoryData]]:
    lessons = Schedule(
        "lessons",
        tuple(TimeSlot(day, time(8, 30), time(12, 0)) for day in range(5)),
        (DatedException(BASE.date(), ()),),  # no lessons on BASE's day
    )
    policy = Policy(
        settings=Settings(timezone="Europe/Brussels", default_group="guests"),
        categories=(Category("adult", "ut1"), Category("games", "ut1"), Category("porn", "ut1", alias_of="adult")),
        lists=(
            AdminList("allow", entries=(ListEntry(EntryKind.DOMAIN, "docs.example.org"),
                                        ListEntry(EntryKind.EXACT, "exact.example.net"))),
            AdminList("block", entries=(ListEntry(EntryKind.DOMAIN, "example.org"),
                                        ListEntry(EntryKind.CIDR, "198.19.0.0/16"),
                                        ListEntry(EntryKind.CIDR, "2001:2:ff::/48"),
                                        ListEntry(EntryKind.URL_PREFIX, "news.example.com/sport/"),
                                        ListEntry(EntryKind.DOMAIN, "xn--bcher-kva.example"))),
        ),
        groups=(Group("pupils"), Group("staff"), Group("guests", default_action=Action.BLOCK)),
        clients=(
            ClientMatch("pupils", cidr="198.18.16.0/21"),
            ClientMatch("staff", cidr="198.18.16.128/25"),
            ClientMatch("pupils", cidr="2001:2:0:16::/64"),
            ClientMatch("staff", mac="02:00:5e:00:20:01"),
            ClientMatch("staff", interface="eth1", vlan=32),
        ),
        rules=(
            Rule("pupils", TargetKind.LIST, "allow", Action.ALLOW),
            Rule("pupils", TargetKind.LIST, "block", Action.BLOCK),
            Rule("pupils", TargetKind.CATEGORY, "porn", Action.SINKHOLE),
            Rule("pupils", TargetKind.CATEGORY, "games", Action.BLOCK, schedule="lessons"),
            Rule("staff", TargetKind.CATEGORY, "adult", Action.MONITOR),
            Rule("guests", TargetKind.LIST, "allow", Action.ALLOW),
        ),
        schedules=(lessons,),
        overrides=(
            Override(7, "pupils", "games.example", Action.ALLOW, MONDAY_LESSON - timedelta(minutes=5),
                     MONDAY_LESSON + timedelta(minutes=5), "teacher", "lesson"),
        ),
    )
    data = {
        "adult": CategoryData(frozenset({"adult.example", "example.org"}), ("198.19.7.7/32",), frozenset()),
        "games": CategoryData(frozenset({"games.example"}), (), frozenset({"games.example/flash/"})),
    }
    return policy, data


PUPIL = ClientIdentity("198.18.16.9")


@pytest.mark.parametrize(
    ("client", "name", "address", "when", "path"),
    [
        (PUPIL, "docs.example.org", None, BASE, None),  # allowed below a blocked domain
        (PUPIL, "www.docs.example.org", None, BASE, None),
        (PUPIL, "example.org", None, BASE, None),  # admin block beats the category at equal specificity
        (PUPIL, "exact.example.net", None, BASE, None),
        (PUPIL, "sub.exact.example.net", None, BASE, None),  # exact entries do not cover subdomains
        (PUPIL, "adult.example", None, BASE, None),  # a rule on an alias uses its target's names
        (PUPIL, None, "198.19.7.7", BASE, None),  # admin CIDR beats the category address
        (PUPIL, None, "198.20.0.1", BASE, None),
        (PUPIL, "games.example", None, BASE, None),  # no lessons on the exception day
        (PUPIL, "games.example", None, MONDAY_LESSON, None),  # override window
        (PUPIL, "games.example", None, MONDAY_LESSON + timedelta(minutes=10), None),  # override expired, lessons on
        (PUPIL, "games.example", None, MONDAY_LESSON + timedelta(hours=2), None),  # after lessons
        (PUPIL, "games.example", None, BASE + timedelta(days=3, hours=6, minutes=30), "/flash/x.swf"),
        (PUPIL, "news.example.com", None, BASE, "/sport/today"),
        (PUPIL, "news.example.com", None, BASE, "/politics/"),
        (PUPIL, "xn--bcher-kva.example", None, BASE, None),
        (ClientIdentity("198.18.16.200"), "adult.example", None, BASE, None),  # longest CIDR: staff
        (ClientIdentity("198.18.16.9", mac="02:00:5E:00:20:01"), "example.org", None, BASE, None),
        (ClientIdentity("198.18.99.1", interface="eth1", vlan=32), "example.org", None, BASE, None),
        (ClientIdentity("198.18.99.1", interface="eth1", vlan=33), "example.org", None, BASE, None),
        (ClientIdentity("2001:2:0:16::9"), None, "2001:2:ff::1", BASE, None),
        (ClientIdentity("198.18.99.1"), "docs.example.org", None, BASE, None),  # guests: default block
        (ClientIdentity("198.18.99.1"), "other.example", None, BASE, None),
    ],
)
def test_school_matches_reference(tmp_path: Path, client, name, address, when, path) -> None:
    policy, data = school()
    engine = compile_engine(tmp_path, policy, data)
    assert decide(engine, client, name, address, when, path) == reference(policy, data, client, name, address, when, path)


def test_school_explanations(tmp_path: Path) -> None:
    policy, data = school()
    engine = compile_engine(tmp_path, policy, data)
    explained = engine.explain("www.docs.example.org", PUPIL, BASE)
    assert (explained.action, explained.decided_by, explained.list, explained.matched) == (
        "allow", "admin list", "allow", "docs.example.org")
    assert explained.rule == {"group": "pupils", "position": 0, "target_kind": "list", "target": "allow",
                              "action": "allow", "schedule": None, "bypass_shield": False}
    games = engine.explain("games.example", PUPIL, MONDAY_LESSON + timedelta(minutes=10))
    assert (games.action, games.decided_by, games.list) == ("block", "category", "games")
    assert games.schedule_slot == "Monday 2026-03-30 08:30-12:00"
    opened = engine.explain("games.example", PUPIL, MONDAY_LESSON)
    assert (opened.action, opened.decided_by, opened.list) == ("allow", "override", "override:7")
    assert opened.override["created_by"] == "teacher"
    address = engine.explain("198.19.7.7", PUPIL, BASE)
    assert (address.action, address.match, address.matched) == ("block", "address", "198.19.0.0/16")
    url = engine.explain("http://news.example.com/sport/today", PUPIL, BASE)
    assert (url.action, url.match, url.matched) == ("block", "url", "news.example.com/sport/")
    idn = engine.explain("bücher.example", PUPIL, BASE)
    assert (idn.action, idn.matched) == ("block", "xn--bcher-kva.example")
    assert engine.explain("x.example", ClientIdentity("198.18.99.1"), BASE).decided_by == "group default"
    with pytest.raises(PolicyError):
        engine.explain("not a name!", PUPIL, BASE)


# ---------------------------------------------------------------- random policies

LABELS = ["a", "b", "www", "docs", "xn--bcher-kva"]
TLDS = ["org", "com", "be"]
CLIENT_NETWORKS = ["198.18.0.0/16", "198.18.16.0/21", "198.18.16.0/24", "2001:2::/48", "2001:2:0:16::/64"]
CLIENT_ADDRESSES = ["198.18.16.5", "198.18.17.5", "198.18.200.1", "198.19.1.1", "2001:2:0:16::5", "2001:2:1::5"]
DESTINATION_NETWORKS = ["198.19.0.0/16", "198.19.7.0/24", "198.19.7.7/32", "2001:2:ff::/48", "2001:2:ff:1::/64"]
DESTINATIONS = ["198.19.7.7", "198.19.7.8", "198.19.8.1", "198.20.0.1", "2001:2:ff:1::1", "2001:2:ff:2::1"]
GROUPS = ["g0", "g1", "g2"]
ACTIONS = list(Action)

names = st.builds(
    lambda labels, tld: ".".join([*labels, tld]), st.lists(st.sampled_from(LABELS), min_size=0, max_size=3),
    st.sampled_from(TLDS),
)
# Admin-list entries and overrides never name a public suffix (the store refuses them).
registrable_names = st.builds(
    lambda labels, tld: ".".join([*labels, tld]), st.lists(st.sampled_from(LABELS), min_size=1, max_size=3),
    st.sampled_from(TLDS),
)
minutes_of_day = st.integers(0, 23 * 60 + 59)
slot_times = st.builds(lambda start, length: (start, min(start + length, 24 * 60)), minutes_of_day, st.integers(1, 600))


def clock(minutes: int) -> time:
    return time(0, 0) if minutes >= 24 * 60 else time(minutes // 60, minutes % 60)


@st.composite
def policies(draw: st.DrawFn) -> tuple[Policy, dict[str, CategoryData]]:
    schedules = tuple(
        Schedule(f"s{index}", tuple(TimeSlot(draw(st.integers(0, 6)), clock(s), clock(e))
                                    for s, e in draw(st.lists(slot_times, max_size=3))))
        for index in range(draw(st.integers(0, 2)))
    )
    entry = st.one_of(
        st.builds(lambda n: ListEntry(EntryKind.DOMAIN, n), registrable_names),
        st.builds(lambda n: ListEntry(EntryKind.EXACT, n), registrable_names),
        st.builds(lambda c: ListEntry(EntryKind.CIDR, c), st.sampled_from(DESTINATION_NETWORKS)),
        st.builds(lambda n, p: ListEntry(EntryKind.URL_PREFIX, f"{n}/{p}"), registrable_names,
                  st.sampled_from(["", "a/", "a/b"])),
    )
    lists = tuple(
        AdminList(f"l{index}", entries=tuple(dict.fromkeys(draw(st.lists(entry, max_size=5)))))
        for index in range(draw(st.integers(0, 3)))
    )
    data = {
        ("c0", "vpn", "c2")[index]: CategoryData(
            frozenset(draw(st.lists(names, max_size=6))),
            tuple(sorted(set(draw(st.lists(st.sampled_from(DESTINATION_NETWORKS), max_size=2))))),
            frozenset(f"{n}/{p}" for n, p in draw(st.lists(st.tuples(names, st.sampled_from(["", "a/"])), max_size=2))),
        )
        for index in range(draw(st.integers(0, 3)))
    }
    categories = tuple(Category(name, "test") for name in data)
    if data and draw(st.booleans()):
        categories += (Category("alias", "test", alias_of=draw(st.sampled_from(sorted(data)))),)
    targets = [(TargetKind.LIST, admin_list.name) for admin_list in lists]
    targets += [(TargetKind.CATEGORY, category.name) for category in categories]
    rules: tuple[Rule, ...] = ()
    if targets:
        rules = tuple(
            Rule(draw(st.sampled_from(GROUPS)), *draw(st.sampled_from(targets)), draw(st.sampled_from(ACTIONS)),
                 draw(st.sampled_from([None, *[s.name for s in schedules]])))
            for _ in range(draw(st.integers(0, 8)))
        )
    clients = tuple(
        ClientMatch(draw(st.sampled_from(GROUPS)), cidr=cidr)
        for cidr in sorted(set(draw(st.lists(st.sampled_from(CLIENT_NETWORKS), max_size=4))))
    )
    overrides = tuple(
        Override(index + 1, draw(st.sampled_from(GROUPS)), draw(registrable_names),
                 draw(st.sampled_from([Action.ALLOW, Action.BLOCK])),
                 BASE + timedelta(minutes=draw(st.integers(0, 3000))),
                 BASE + timedelta(minutes=draw(st.integers(3001, 6000))))
        for index in range(draw(st.integers(0, 2)))
    )
    groups = tuple(Group(name, default_action=draw(st.sampled_from(ACTIONS)), bypass_shield=draw(st.booleans()))
                   for name in GROUPS)
    policy = Policy(Settings(timezone="Europe/Brussels", default_group="g0"), categories, lists, groups, clients,
                    rules, schedules, overrides)
    return policy, data


questions = st.tuples(
    st.sampled_from(CLIENT_ADDRESSES),
    st.one_of(st.none(), names),
    st.one_of(st.none(), st.sampled_from(DESTINATIONS)),
    st.integers(0, 7 * 24 * 60),
    st.sampled_from([None, "/", "/a/b/c", "/b"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policies(), st.lists(questions, min_size=1, max_size=12))
def test_random_policies_match_reference(tmp_path_factory: pytest.TempPathFactory, school_policy, asked) -> None:
    policy, data = school_policy
    engine = compile_engine(tmp_path_factory.mktemp("random"), policy, data)
    for address, name, destination, minute, path in asked:
        when = BASE + timedelta(minutes=minute)
        client = ClientIdentity(address)
        path = path if name else None
        assert decide(engine, client, name, destination, when, path) == reference(
            policy, data, client, name, destination, when, path), (address, name, destination, when, path)


# ---------------------------------------------------------------- tables and images


def test_fingerprint_collisions_never_match_the_wrong_name() -> None:
    """With no fingerprint bits and one bucket, every lookup compares name bytes."""
    listed = [f"n{index}.example" for index in range(300)]
    builder = DomainTableBuilder(tlds=[b"example"], seed=3, entries_per_bucket=10_000, fingerprint_mask=0)
    builder.add_source(1, False, lambda: ["\n".join(listed).encode()])
    section = bytearray(builder.prepare())
    builder.write(section)
    table = DomainTable(bytes(section))
    assert table.bucket_count == 1
    assert all(table.find(name.encode()) is not None for name in listed)
    for near_miss in ("n300.example", "n1.exampl", "m1.example", "n10.example.org", "n1"):
        assert table.find(near_miss.encode()) is None
    assert table.count_listed([b"x.n5.example", b"n5.example.x", b"nn5.example"]) == 1


def test_damaged_images_are_refused(tmp_path: Path) -> None:
    policy, data = school()
    compile_engine(tmp_path, policy, data)
    image = StateDir(tmp_path).policy_image
    whole = image.read_bytes()
    image.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PolicyError, match="checksum|truncated|outside"):
        Engine.open(tmp_path)
    damaged = bytearray(whole)
    damaged[len(damaged) // 2] ^= 0x40
    image.write_bytes(bytes(damaged))
    with pytest.raises(PolicyError, match="checksum"):
        Engine.open(tmp_path)
    image.write_bytes(b"not an image at all, but long enough to have a header........")
    with pytest.raises(PolicyError, match="not an edufilter image"):
        Engine.open(tmp_path)
    image.write_bytes(whole)
    os.replace(StateDir(tmp_path).categories_image, tmp_path / "moved")
    with pytest.raises(PolicyError, match="cannot open"):
        Engine.open(tmp_path)


def test_policy_compiled_against_other_lists_is_refused(tmp_path: Path) -> None:
    policy, data = school()
    compile_engine(tmp_path, policy, data)
    write_categories_image([stored_category(tmp_path / "other", "adult", CategoryData(frozenset({"x.example"})))],
                           StateDir(tmp_path).categories_image)
    with pytest.raises(PolicyError, match="other category lists"):
        Engine.open(tmp_path)
