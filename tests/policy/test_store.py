"""The SQLite policy store: every change, its validation, references, versions, damaged files."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

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
    Override,
    Policy,
    QuicMode,
    Rule,
    Schedule,
    Settings,
    TargetKind,
    TimeSlot,
    parse_entry,
)
from edufilter.policy.store import MIGRATIONS, PolicyStore, check_policy

UTC = timezone.utc
START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
END = START + timedelta(minutes=50)


def base_policy() -> Policy:
    return Policy(
        settings=Settings(default_group="guests"),
        categories=(
            Category("adult", "ut1", {"nl": "18+ (X)"}, {"en": "Adult sites"}),
            Category("porn", "ut1", alias_of="adult"),
            Category("games", "ut1"),
        ),
        lists=(
            AdminList("school-allow", "never blocked", (parse_entry("domain", "smartschool.be"),)),
            AdminList("school-block", "", (parse_entry("cidr", "198.18.255.0/24"),)),
        ),
        groups=(Group("guests"), Group("pupils", "Pupils", safe_search=True, bypass_shield=True)),
        clients=(ClientMatch("pupils", cidr="198.18.16.0/21"), ClientMatch("pupils", interface="eth1", vlan=16)),
        rules=(
            Rule("pupils", TargetKind.LIST, "school-allow", Action.ALLOW),
            Rule("pupils", TargetKind.CATEGORY, "adult", Action.BLOCK),
            Rule("pupils", TargetKind.CATEGORY, "games", Action.BLOCK, "lessons"),
        ),
        schedules=(
            Schedule(
                "lessons",
                (TimeSlot(0, time(8, 25), time(12, 5)), TimeSlot(2, time(20, 0), time(0, 0))),
                (DatedException(date(2026, 12, 7)), DatedException(date(2026, 12, 8), ((time(8, 30), time(12, 30)),))),
            ),
        ),
        overrides=(Override(4, "pupils", "games.example.org", Action.ALLOW, START, END, "teacher", "lesson"),),
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "policy.sqlite"


@pytest.fixture
def store(path: Path):
    with PolicyStore(path) as store:
        store.replace_all(base_policy())
        yield store


def test_new_file_is_migrated_to_an_empty_policy(path: Path):
    with PolicyStore(path) as store:
        assert store.version == 0
        assert store.load() == Policy()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (len(MIGRATIONS),)


def test_empty_existing_file_is_migrated(path: Path):
    path.write_bytes(b"")
    with PolicyStore(path) as store:
        assert store.load() == Policy()


def test_wal_mode_is_on(store: PolicyStore, path: Path):
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_replace_all_round_trip(store: PolicyStore):
    assert store.load() == check_policy(base_policy())
    version, policy = store.load_with_version()
    assert version == store.version == 1
    assert policy.overrides[0].starts_at == START


def test_replace_all_is_all_or_nothing(store: PolicyStore):
    before = store.load_with_version()
    broken = replace(base_policy(), groups=(Group("pupils"),))  # the default group is gone
    with pytest.raises(PolicyError, match="settings.default_group"):
        store.replace_all(broken)
    broken = replace(base_policy(), rules=(*base_policy().rules, Rule("pupils", TargetKind.LIST, "nope", Action.BLOCK)))
    with pytest.raises(PolicyError, match=r"rules\[3\]: rule.target: list 'nope' does not exist"):
        store.replace_all(broken)
    assert store.load_with_version() == before


def test_version_bumps_only_on_a_real_change(store: PolicyStore):
    version = store.version
    store.replace_all(base_policy())
    store.update_group(Group("pupils", "Pupils", safe_search=True, bypass_shield=True))
    store.set_settings(Settings(default_group="guests"))
    store.update_list(base_policy().lists[0])
    store.update_rule(base_policy().rules[2], 2)
    store.update_schedule(base_policy().schedules[0])
    assert store.expire_overrides(START) == 0
    with pytest.raises(PolicyError):
        store.remove_rule("pupils", 9)
    assert store.version == version
    store.update_group(Group("pupils", "Pupils (6-12)", safe_search=True, bypass_shield=True))
    assert store.version == version + 1


def test_two_stores_on_one_file_see_each_others_changes(store: PolicyStore, path: Path):
    with PolicyStore(path) as other:
        other.add_group(Group("staff"))
        assert store.version == other.version
        assert [group.name for group in store.load().groups] == ["guests", "pupils", "staff"]
        store.remove_group("staff")
        assert [group.name for group in other.load().groups] == ["guests", "pupils"]


# Settings


def test_set_settings(store: PolicyStore):
    store.set_settings(Settings("Europe/Amsterdam", "pupils", "198.18.0.2", "2001:2:0:0::2"))
    assert store.load().settings == Settings("Europe/Amsterdam", "pupils", "198.18.0.2", "2001:2::2")


@pytest.mark.parametrize(
    "settings, field",
    [
        (Settings(timezone="Europe/Brusels"), "settings.timezone"),
        (Settings(default_group="nobody"), "settings.default_group"),
        (Settings(block_page_ipv4="2001:2::1"), "settings.block_page_ipv4"),
        (Settings(block_page_ipv6="not an address"), "settings.block_page_ipv6"),
    ],
)
def test_bad_settings_name_the_field(store: PolicyStore, settings: Settings, field: str):
    with pytest.raises(PolicyError, match=field):
        store.set_settings(settings)


# Categories


def test_add_update_remove_category(store: PolicyStore):
    store.add_category(Category("chat", "ut1", {"nl": "Chat"}))
    store.update_category(Category("chat", "ut1", {"nl": "Chatten"}, {"en": "Chat sites"}))
    assert store.load().categories[-1] == Category("chat", "ut1", {"nl": "Chatten"}, {"en": "Chat sites"})
    store.update_category(Category("chat", "ut1", alias_of="games"))
    assert store.load().categories[-1].alias_of == "games"
    store.remove_category("chat")
    assert "chat" not in {category.name for category in store.load().categories}


def test_category_errors(store: PolicyStore):
    with pytest.raises(PolicyError, match="already exists"):
        store.add_category(Category("adult", "ut1"))
    with pytest.raises(PolicyError, match="category.source"):
        store.add_category(Category("chat", ""))
    with pytest.raises(PolicyError, match="category 'Chat!'"):
        store.add_category(Category("Chat!", "ut1"))
    with pytest.raises(PolicyError, match="category.alias_of: category 'nope' does not exist"):
        store.add_category(Category("chat", "ut1", alias_of="nope"))
    with pytest.raises(PolicyError, match="category.alias_of: 'porn' is itself an alias"):
        store.add_category(Category("xxx", "ut1", alias_of="porn"))
    with pytest.raises(PolicyError, match="alias of itself"):
        store.update_category(Category("games", "ut1", alias_of="games"))
    with pytest.raises(PolicyError, match="category.titles"):
        store.add_category(Category("chat", "ut1", {"nl": 3}))  # type: ignore[dict-item]
    with pytest.raises(PolicyError, match="category 'chat' does not exist"):
        store.update_category(Category("chat", "ut1"))


def test_categories_in_use_are_kept(store: PolicyStore):
    with pytest.raises(PolicyError, match="'adult' cannot be removed: rules of groups pupils use it"):
        store.remove_category("adult")
    store.remove_rule("pupils", 1)
    with pytest.raises(PolicyError, match="'adult' cannot be removed: categories porn are aliases of it"):
        store.remove_category("adult")
    with pytest.raises(PolicyError, match="'adult' cannot be made an alias"):
        store.update_category(Category("adult", "ut1", alias_of="games"))
    store.remove_category("porn")
    store.remove_category("adult")


# Admin lists


def test_add_update_remove_list_and_entries(store: PolicyStore):
    store.add_list(AdminList("extra", "more", (ListEntry(EntryKind.EXACT, "WWW.Example.ORG."),)))
    assert store.load().lists[-1] == AdminList("extra", "more", (ListEntry(EntryKind.EXACT, "www.example.org"),))
    added = store.add_list_entry("extra", ListEntry(EntryKind.URL_PREFIX, "http://Example.org/games/"))
    assert added == ListEntry(EntryKind.URL_PREFIX, "example.org/games/")
    store.add_list_entry("extra", ListEntry(EntryKind.CIDR, "2001:2:66::1/48"))
    assert store.load().lists[-1].entries[-1] == ListEntry(EntryKind.CIDR, "2001:2:66::/48")
    store.remove_list_entry("extra", ListEntry(EntryKind.EXACT, "www.example.org"))
    assert len(store.load().lists[-1].entries) == 2
    store.update_list(AdminList("extra", "replaced", (ListEntry(EntryKind.DOMAIN, "example.net"),)))
    assert store.load().lists[-1] == AdminList("extra", "replaced", (ListEntry(EntryKind.DOMAIN, "example.net"),))
    store.remove_list("extra")
    assert [admin_list.name for admin_list in store.load().lists] == ["school-allow", "school-block"]


def test_list_errors(store: PolicyStore):
    with pytest.raises(PolicyError, match="already exists"):
        store.add_list(AdminList("school-allow"))
    with pytest.raises(PolicyError, match="list 'nope' does not exist"):
        store.update_list(AdminList("nope"))
    with pytest.raises(PolicyError, match=r"list.entries\[1\]: domain entry 'a.example' is given twice"):
        store.add_list(AdminList("twice", "", (ListEntry("domain", "a.example"), ListEntry("domain", "A.example"))))
    with pytest.raises(PolicyError, match="list.entries\\[0\\].kind 'host'"):
        store.add_list(AdminList("bad", "", (ListEntry("host", "a.example"),)))  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="not a valid host name"):
        store.add_list_entry("school-allow", ListEntry(EntryKind.DOMAIN, "bad..name"))
    with pytest.raises(PolicyError, match="already has domain entry 'smartschool.be'"):
        store.add_list_entry("school-allow", ListEntry(EntryKind.DOMAIN, "Smartschool.be"))
    with pytest.raises(PolicyError, match="has no exact entry"):
        store.remove_list_entry("school-allow", ListEntry(EntryKind.EXACT, "smartschool.be"))
    with pytest.raises(PolicyError, match="list 'nope' does not exist"):
        store.add_list_entry("nope", ListEntry(EntryKind.DOMAIN, "a.example"))
    with pytest.raises(PolicyError, match="'school-allow' cannot be removed: rules of groups pupils use it"):
        store.remove_list("school-allow")


# Groups


def test_add_update_remove_group(store: PolicyStore):
    store.add_group(Group("staff", "Teachers", Action.MONITOR, quic=QuicMode.BLOCK, log_client_address=True))
    assert store.load().groups[-1] == Group("staff", "Teachers", Action.MONITOR, quic=QuicMode.BLOCK, log_client_address=True)
    store.update_group(Group("staff", "Staff"))
    assert store.load().groups[-1] == Group("staff", "Staff")
    store.remove_group("staff")
    assert [group.name for group in store.load().groups] == ["guests", "pupils"]


def test_removing_a_group_removes_its_clients_rules_and_overrides(store: PolicyStore):
    store.remove_group("pupils")
    policy = store.load()
    assert (policy.clients, policy.rules, policy.overrides) == ((), (), ())


def test_group_errors(store: PolicyStore):
    with pytest.raises(PolicyError, match="already exists"):
        store.add_group(Group("pupils"))
    with pytest.raises(PolicyError, match="group.default_action 'blok' is not one of allow, block, drop, sinkhole, monitor"):
        store.add_group(Group("staff", default_action="blok"))  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="group.quic 'udp'"):
        store.add_group(Group("staff", quic="udp"))  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="group.safe_search 'yes' is not true or false"):
        store.update_group(Group("pupils", safe_search="yes"))  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="group 'Staff Room'"):
        store.add_group(Group("Staff Room"))
    with pytest.raises(PolicyError, match="group 'nope' does not exist"):
        store.remove_group("nope")
    with pytest.raises(PolicyError, match="'guests' cannot be removed: it is settings.default_group"):
        store.remove_group("guests")


# Client matches


def test_add_update_remove_client(store: PolicyStore):
    store.add_group(Group("staff"))
    store.add_client(ClientMatch("staff", mac="02-00-5E-00-20-01"))
    store.add_client(ClientMatch("staff", cidr="2001:2:0:32::1/64"))
    store.add_client(ClientMatch("staff", interface="eth1"))
    assert store.load().clients[-3:] == (
        ClientMatch("staff", mac="02:00:5e:00:20:01"),
        ClientMatch("staff", cidr="2001:2:0:32::/64"),
        ClientMatch("staff", interface="eth1"),
    )
    store.update_client(ClientMatch("guests", cidr="2001:2:0:32::/64"))
    assert ClientMatch("guests", cidr="2001:2:0:32::/64") in store.load().clients
    store.remove_client(ClientMatch("guests", mac="02:00:5e:00:20:01"))
    store.remove_client(ClientMatch("staff", interface="eth1"))
    assert len(store.load().clients) == 3


@pytest.mark.parametrize(
    "match, problem",
    [
        (ClientMatch("nope", cidr="198.18.0.0/24"), "client.group: group 'nope' does not exist"),
        (ClientMatch("pupils"), "exactly one of cidr, interface, mac"),
        (ClientMatch("pupils", cidr="198.18.0.0/24", mac="02:00:5e:00:20:01"), "exactly one of cidr, interface, mac"),
        (ClientMatch("pupils", cidr="198.18.0.0/33"), "client.cidr"),
        (ClientMatch("pupils", mac="02:00:5e:00:20"), "MAC address"),
        (ClientMatch("pupils", interface="eth1", vlan=4095), "client.vlan 4095"),
        (ClientMatch("pupils", interface="a-very-long-interface-name"), "client.interface"),
        (ClientMatch("pupils", cidr="198.18.0.0/24", vlan=3), "client.vlan is only used with client.interface"),
        (ClientMatch("pupils", cidr="198.18.16.0/21"), "already exists"),
        (ClientMatch("pupils", interface="eth1", vlan=16), "already exists"),
    ],
)
def test_client_errors(store: PolicyStore, match: ClientMatch, problem: str):
    with pytest.raises(PolicyError, match=problem):
        store.add_client(match)


def test_unknown_client_match_cannot_be_updated_or_removed(store: PolicyStore):
    with pytest.raises(PolicyError, match="there is no client match for cidr 198.18.99.0/24"):
        store.update_client(ClientMatch("pupils", cidr="198.18.99.0/24"))
    with pytest.raises(PolicyError, match="there is no client match for interface eth1 VLAN 17"):
        store.remove_client(ClientMatch("pupils", interface="eth1", vlan=17))


# Rules


def pupil_rules(store: PolicyStore) -> list[tuple[str, Action]]:
    return [(rule.target, rule.action) for rule in store.load().rules if rule.group == "pupils"]


def test_add_update_remove_rule_keeps_positions(store: PolicyStore):
    assert store.add_rule(Rule("pupils", TargetKind.LIST, "school-block", Action.DROP), 1) == 1
    assert store.add_rule(Rule("pupils", TargetKind.CATEGORY, "porn", Action.MONITOR)) == 4
    assert pupil_rules(store) == [
        ("school-allow", Action.ALLOW),
        ("school-block", Action.DROP),
        ("adult", Action.BLOCK),
        ("games", Action.BLOCK),
        ("porn", Action.MONITOR),
    ]
    store.update_rule(Rule("pupils", TargetKind.CATEGORY, "adult", Action.SINKHOLE), 2)
    store.remove_rule("pupils", 0)
    assert pupil_rules(store) == [
        ("school-block", Action.DROP),
        ("adult", Action.SINKHOLE),
        ("games", Action.BLOCK),
        ("porn", Action.MONITOR),
    ]
    assert store.load().rules[2].schedule == "lessons"


@pytest.mark.parametrize(
    "rule, problem",
    [
        (Rule("nope", TargetKind.CATEGORY, "adult", Action.BLOCK), "rule.group: group 'nope' does not exist"),
        (Rule("pupils", TargetKind.CATEGORY, "chat", Action.BLOCK), "rule.target: category 'chat' does not exist"),
        (Rule("pupils", TargetKind.LIST, "adult", Action.BLOCK), "rule.target: list 'adult' does not exist"),
        (Rule("pupils", "group", "adult", Action.BLOCK), "rule.target_kind 'group'"),
        (Rule("pupils", TargetKind.CATEGORY, "adult", "blok"), "rule.action 'blok' is not one of"),
        (Rule("pupils", TargetKind.CATEGORY, "adult", Action.BLOCK, "exams"), "rule.schedule: schedule 'exams'"),
    ],
)
def test_rule_errors(store: PolicyStore, rule: Rule, problem: str):
    with pytest.raises(PolicyError, match=problem):
        store.add_rule(rule)


def test_rule_positions_are_checked(store: PolicyStore):
    rule = Rule("pupils", TargetKind.CATEGORY, "games", Action.BLOCK)
    with pytest.raises(PolicyError, match=r"rule position 4 is not in 0..3"):
        store.add_rule(rule, 4)
    with pytest.raises(PolicyError, match="no rule at position 3"):
        store.update_rule(rule, 3)
    with pytest.raises(PolicyError, match="no rule at position -1"):
        store.remove_rule("pupils", -1)


# Schedules


def test_add_update_remove_schedule(store: PolicyStore):
    exams = Schedule("exams", (), (DatedException(date(2027, 6, 14), ((time(8, 30), time(12, 30)),)),))
    store.add_schedule(exams)
    assert store.load().schedules[-1] == exams
    weekly = Schedule("exams", (TimeSlot(4, time(13, 0), time(0, 0)),))
    store.update_schedule(weekly)
    assert store.load().schedules[-1] == weekly
    store.remove_schedule("exams")
    assert [schedule.name for schedule in store.load().schedules] == ["lessons"]


def test_schedule_errors(store: PolicyStore):
    with pytest.raises(PolicyError, match="already exists"):
        store.add_schedule(Schedule("lessons", ()))
    with pytest.raises(PolicyError, match="schedule 'nope' does not exist"):
        store.update_schedule(Schedule("nope", ()))
    with pytest.raises(PolicyError, match="slot 12:00-08:00 ends before it starts"):
        store.add_schedule(Schedule("bad", (TimeSlot(0, time(12, 0), time(8, 0)),)))
    with pytest.raises(PolicyError, match="'lessons' cannot be removed: rules of groups pupils use it"):
        store.remove_schedule("lessons")


# Overrides


def test_add_update_remove_and_expire_overrides(store: PolicyStore):
    brussels_start = START.astimezone(ZoneInfo("Europe/Brussels"))
    added = store.add_override("pupils", "Docs.Example.org", Action.ALLOW, brussels_start, END, "juf Anna", "les")
    assert added.id != 4 and added.name == "docs.example.org" and added.starts_at.utcoffset() == timedelta(0)
    assert store.load().overrides[-1] == added
    store.update_override(replace(added, expires_at=END + timedelta(hours=1)))
    assert store.load().overrides[-1].expires_at == END + timedelta(hours=1)
    assert store.expire_overrides(END - timedelta(microseconds=1)) == 0
    assert store.expire_overrides(END) == 1  # expires_at is exclusive: expired at that instant
    assert [override.id for override in store.load().overrides] == [added.id]
    store.remove_override(added.id)
    assert store.load().overrides == ()


def test_override_errors(store: PolicyStore):
    with pytest.raises(PolicyError, match="override.expires_at is not after override.starts_at"):
        store.add_override("pupils", "example.org", Action.ALLOW, END, START)
    with pytest.raises(PolicyError, match="override.starts_at .* is not a date and time with a time zone"):
        store.add_override("pupils", "example.org", Action.ALLOW, datetime(2026, 11, 23, 10), END)
    with pytest.raises(PolicyError, match="override.name 'not a name'"):
        store.add_override("pupils", "not a name", Action.ALLOW, START, END)
    with pytest.raises(PolicyError, match="override.group: group 'nope'"):
        store.add_override("nope", "example.org", Action.ALLOW, START, END)
    with pytest.raises(PolicyError, match="override.action 'open'"):
        store.add_override("pupils", "example.org", "open", START, END)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="override 99 does not exist"):
        store.update_override(Override(99, "pupils", "example.org", Action.ALLOW, START, END))
    with pytest.raises(PolicyError, match="override 99 does not exist"):
        store.remove_override(99)


# Files that are not a current policy database


def test_newer_schema_is_refused(store: PolicyStore, path: Path):
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS) + 1,))
    with pytest.raises(PolicyError, match="newer than this edufilter knows"):
        PolicyStore(path)


def test_damaged_file_gives_a_clear_error(path: Path):
    with PolicyStore(path) as store:
        entries = tuple(parse_entry("domain", f"host{index}.example.org") for index in range(3000))
        store.replace_all(replace(base_policy(), lists=(*base_policy().lists, AdminList("big", "", entries))))
    data = bytearray(path.read_bytes())
    assert len(data) > 64 * 1024  # several pages, so the middle is inside the tables
    middle = len(data) // 2
    data[middle:middle + 4096] = b"\xab" * 4096
    path.write_bytes(data)
    with pytest.raises(PolicyError, match=f"{path}: policy database"):
        PolicyStore(path).close()


def test_other_files_are_refused(path: Path):
    path.write_text("not a database at all, but long enough to look like a header\n" * 20)
    with pytest.raises(PolicyError, match=f"{path}: policy database error"):
        PolicyStore(path)
    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(PolicyError, match="not an edufilter policy database"):
        PolicyStore(path)


def test_a_full_disk_is_a_storage_error_not_an_invalid_change() -> None:
    """SQLite's "database or disk is full" is the server's trouble (the API answers 503), not a
    policy the model refuses (422); the stored policy stays as it was."""
    from small_disk import run_on_small_disk

    done = run_on_small_disk('''
import json
from edufilter.errors import StorageFullError
from edufilter.policy.model import Group
from edufilter.policy.store import PolicyStore
directory = Path(sys.argv[1])
with PolicyStore(directory / "policy.sqlite") as store:
    store.add_group(Group("guests", "Guests"))
    fill_disk(directory)
    try:
        for index in range(200):  # until a page or the journal needs a block
            store.add_group(Group(f"group-{index}", "x" * 2000))
        result = "stored"
    except StorageFullError as error:
        result = type(error).__name__ + ": " + str(error)
    groups = len(store.load().groups)
print(json.dumps({"result": result, "groups": groups}))
''')
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["result"].startswith("StorageFullError: ") and "disk is full" in outcome["result"], outcome
    assert outcome["groups"] >= 1


def _entries_of(store: PolicyStore, name: str) -> list[ListEntry]:
    return next(admin_list.entries for admin_list in store.load().lists if admin_list.name == name)


def test_staged_entries_are_added_in_order_once(store: PolicyStore):
    store.add_list(AdminList("big", entries=(ListEntry(EntryKind.DOMAIN, "kept.example"),)))
    version = store.version
    staged = [ListEntry(EntryKind.DOMAIN, name) for name in ("b.example", "a.example", "b.example", "kept.example")]
    assert store.stage_list_entries(iter(staged)) == 3
    assert store.add_staged_list_entries("big") == 2
    assert [entry.value for entry in _entries_of(store, "big")] == ["kept.example", "b.example", "a.example"]
    assert store.version == version + 1
    assert store.stage_list_entries([ListEntry(EntryKind.CIDR, "198.18.0.0/15")]) == 1  # replaces the staging
    assert store.add_staged_list_entries("big", replace_all=True) == 1
    assert _entries_of(store, "big") == (ListEntry(EntryKind.CIDR, "198.18.0.0/15"),)


def test_a_failing_source_stages_nothing(store: PolicyStore):
    def entries():
        yield ListEntry(EntryKind.DOMAIN, "a.example")
        raise PolicyError("the file is cut short")

    store.stage_list_entries([ListEntry(EntryKind.DOMAIN, "old.example")])
    with pytest.raises(PolicyError, match="cut short"):
        store.stage_list_entries(entries())
    store.add_list(AdminList("big"))
    assert store.add_staged_list_entries("big") == 1  # what was staged before stays staged


def test_a_stopped_add_changes_nothing(store: PolicyStore):
    store.add_list(AdminList("big", entries=(ListEntry(EntryKind.DOMAIN, "kept.example"),)))
    version = store.version
    store.stage_list_entries(ListEntry(EntryKind.DOMAIN, f"n{number}.example") for number in range(200_000))
    asked = []
    store.stop_when(lambda: asked.append(1) or len(asked) > 3)
    with pytest.raises(PolicyError, match="interrupt"):
        store.add_staged_list_entries("big", replace_all=True)
    store.stop_when(lambda: False)
    assert _entries_of(store, "big") == (ListEntry(EntryKind.DOMAIN, "kept.example"),)
    assert store.version == version
