"""The bundled default policy (policies/*.toml) and the reader of policy folders."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from reference_decision import CategoryData, reference_decide

from edufilter.errors import PolicyError
from edufilter.policy.defaults import default_policy_dir, load_policy_dir
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
    Policy,
    QuicMode,
    Rule,
    Schedule,
    Settings,
    TargetKind,
    TimeSlot,
)
from edufilter.policy.sources import find_ut1_root, scan_ut1
from edufilter.policy.store import PolicyStore, check_policy

REPOSITORY = Path(__file__).resolve().parents[2]
UT1_SNAPSHOT = REPOSITORY.parent / "shared" / "blocklists" / "ut1"
BRUSSELS = ZoneInfo("Europe/Brussels")

SCHOOL = """\
[settings]
timezone = "Europe/Brussels"
default_group = "guests"

[categories.ut1]
names = ["adult", "drogue"]
aliases = { drugs = "drogue" }

[schedules.lessons]
monday = ["08:25-12:05", "13:00-15:50"]
friday = ["22:00-24:00"]

[schedules.lessons.exceptions]
2026-12-07 = []
2026-12-08 = ["08:30-12:30"]

[lists.school-allow]
description = "never blocked"
domain = ["smartschool.be"]
exact = ["classroom.google.com"]
cidr = ["198.18.100.0/24"]
url_prefix = ["example.org/lessons/"]
"""

PRIMARY = """\
[groups.primary]
title = "Primary"
safe_search = true
quic = "block"

[[groups.primary.clients]]
cidr = "198.18.16.0/21"
[[groups.primary.clients]]
interface = "eth1"
vlan = 16
[[groups.primary.clients]]
mac = "02:00:5E:00:20:01"

[[groups.primary.rules]]
action = "allow"
lists = ["school-allow"]

[[groups.primary.rules]]
action = "block"
categories = ["adult", "drugs"]

[[groups.primary.rules]]
action = "monitor"
schedule = "lessons"
categories = ["drogue"]
"""

GUESTS = """\
[groups.guests]
"""


def write_policy(folder: Path, **files: str) -> Path:
    folder.mkdir(exist_ok=True)
    contents = {"school": SCHOOL, "primary": PRIMARY, "guests": GUESTS, **files}
    for name, text in contents.items():
        if text is not None:
            (folder / f"{name}.toml").write_text(text, encoding="utf-8")
    return folder


# The reader


def test_reads_every_table(tmp_path: Path):
    policy = load_policy_dir(write_policy(tmp_path))
    lessons = Schedule(
        "lessons",
        (
            TimeSlot(0, time(8, 25), time(12, 5)),
            TimeSlot(0, time(13), time(15, 50)),
            TimeSlot(4, time(22), time(0)),
        ),
        (
            DatedException(date(2026, 12, 7)),
            DatedException(date(2026, 12, 8), ((time(8, 30), time(12, 30)),)),
        ),
    )
    assert policy == Policy(
        settings=Settings("Europe/Brussels", "guests"),
        categories=(Category("adult", "ut1"), Category("drogue", "ut1"), Category("drugs", "ut1", alias_of="drogue")),
        lists=(
            AdminList(
                "school-allow",
                "never blocked",
                (
                    ListEntry(EntryKind.DOMAIN, "smartschool.be"),
                    ListEntry(EntryKind.EXACT, "classroom.google.com"),
                    ListEntry(EntryKind.CIDR, "198.18.100.0/24"),
                    ListEntry(EntryKind.URL_PREFIX, "example.org/lessons/"),
                ),
            ),
        ),
        groups=(Group("guests"), Group("primary", "Primary", safe_search=True, quic=QuicMode.BLOCK)),
        clients=(
            ClientMatch("primary", cidr="198.18.16.0/21"),
            ClientMatch("primary", interface="eth1", vlan=16),
            ClientMatch("primary", mac="02:00:5e:00:20:01"),
        ),
        rules=(
            Rule("primary", TargetKind.LIST, "school-allow", Action.ALLOW),
            Rule("primary", TargetKind.CATEGORY, "adult", Action.BLOCK),
            Rule("primary", TargetKind.CATEGORY, "drugs", Action.BLOCK),
            Rule("primary", TargetKind.CATEGORY, "drogue", Action.MONITOR, "lessons"),
        ),
        schedules=(lessons,),
    )


def test_settings_may_be_left_out(tmp_path: Path):
    school = SCHOOL.replace('[settings]\ntimezone = "Europe/Brussels"\ndefault_group = "guests"\n', "")
    assert load_policy_dir(write_policy(tmp_path, school=school)).settings == Settings()


def test_any_file_may_hold_any_table(tmp_path: Path):
    write_policy(tmp_path, school=SCHOOL + GUESTS, guests=None)
    (tmp_path / "zz-extra.toml").write_text('[lists.extra]\ndomain = ["example.net"]\n')
    (tmp_path / "notes.txt").write_text("not a policy file")
    (tmp_path / ".primary.toml.swp.toml").write_text("editor leftovers")
    policy = load_policy_dir(tmp_path)
    assert [admin_list.name for admin_list in policy.lists] == ["school-allow", "extra"]


def test_names_that_need_quotes_in_toml(tmp_path: Path):
    write_policy(tmp_path, extra='[lists."exam.sites"]\ndomain = ["bad..name"]\n')
    with pytest.raises(PolicyError, match=re.escape('extra.toml: lists."exam.sites".domain[0]: domain entry')):
        load_policy_dir(tmp_path)


def test_error_names_file_table_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    primary = PRIMARY.replace('action = "monitor"', 'action = "blok"')
    write_policy(tmp_path / "policies", primary=primary)
    with pytest.raises(PolicyError) as caught:
        load_policy_dir(Path("policies"))
    assert str(caught.value) == (
        "policies/primary.toml: groups.primary.rules[2].action: 'blok' is not one of allow, block, drop, sinkhole, monitor"
    )


# (file, text replaced, replacement, the error expected after "<folder>/")
BROKEN = [
    ("primary", "[[groups.primary.rules]]\naction", "[[groups.primary.rules]\naction", r"primary.toml: not valid TOML: .*line 14"),
    ("primary", "safe_search = true", "safesearch = true", r"primary.toml: groups.primary: unknown key 'safesearch'"),
    ("primary", "safe_search = true", 'safe_search = "yes"', r"primary.toml: groups.primary.safe_search: 'yes' is not true or false"),
    ("primary", 'quic = "block"', 'quic = "off"', r"primary.toml: groups.primary.quic: 'off' is not one of inspect, block"),
    ("primary", "vlan = 16", 'vlan = "16"', r"primary.toml: groups.primary.clients\[1\].vlan: '16' is not a whole number"),
    ("primary", 'cidr = "198.18.16.0/21"', 'cidr = "198.18.16.0/33"', r"primary.toml: groups.primary.clients\[0\]: client.cidr"),
    ("primary", 'mac = "02:00:5E:00:20:01"', 'mac = "02:00:5E"', r"primary.toml: groups.primary.clients\[2\]: MAC address '02:00:5E'"),
    ("primary", 'mac = "02:00:5E:00:20:01"', 'mac = "02:00:5E:00:20:01"\nip = "x"', r"primary.toml: groups.primary.clients\[2\]: unknown key 'ip'"),
    ("primary", 'cidr = "198.18.16.0/21"', 'cidr = "198.18.16.0/21"\nmac = "02:00:5e:00:20:09"', r"primary.toml: groups.primary.clients\[0\]: client match needs exactly one of"),
    ("primary", '"adult", "drugs"', '"adulte"', r"primary.toml: groups.primary.rules\[1\]: rule.target: category 'adulte' does not exist"),
    ("primary", 'lists = ["school-allow"]', 'lists = ["school-alow"]', r"primary.toml: groups.primary.rules\[0\]: rule.target: list 'school-alow'"),
    ("primary", 'schedule = "lessons"', 'schedule = "lesons"', r"primary.toml: groups.primary.rules\[2\]: rule.schedule: schedule 'lesons' does not exist"),
    ("primary", 'action = "allow"\n', "", r"primary.toml: groups.primary.rules\[0\]: has no action"),
    ("primary", 'lists = ["school-allow"]', 'lists = ["school-allow"]\ncategories = ["adult"]', r"primary.toml: groups.primary.rules\[0\]: needs exactly one of"),
    ("primary", 'lists = ["school-allow"]', "lists = []", r"primary.toml: groups.primary.rules\[0\].lists: is empty"),
    ("primary", 'lists = ["school-allow"]', 'lists = "school-allow"', r"primary.toml: groups.primary.rules\[0\].lists: is not a list of text"),
    ("primary", "[groups.primary]", "[group.primary]", r"primary.toml: 'group' is not a policy table"),
    ("school", 'default_group = "guests"', 'default_group = "gasten"', r"school.toml: settings: settings.default_group: group 'gasten'"),
    ("school", 'timezone = "Europe/Brussels"', 'timezone = "Europe/Brussel"', r"school.toml: settings: settings.timezone 'Europe/Brussel'"),
    ("school", 'timezone = "Europe/Brussels"', 'time_zone = "Europe/Brussels"', r"school.toml: settings: unknown key 'time_zone'"),
    ("school", 'names = ["adult", "drogue"]', 'names = ["adult", "Drogue"]', r"school.toml: categories.ut1.names\[1\]: category 'Drogue'"),
    ("school", 'names = ["adult", "drogue"]', 'names = ["adult", "drogue", "adult"]', r"school.toml: categories.ut1.names\[2\]: 'adult' is defined twice"),
    ("school", 'drugs = "drogue"', 'drugs = "drog"', r"school.toml: categories.ut1.aliases.drugs: category.alias_of: category 'drog' does not exist"),
    ("school", 'drugs = "drogue"', "drugs = 1", r"school.toml: categories.ut1.aliases.drugs: 1 is not the name of a category"),
    ("school", 'names = ["adult", "drogue"]', 'names = ["adult", "drogue"]\ntitles = {}', r"school.toml: categories.ut1: unknown key 'titles'"),
    ("school", '"08:25-12:05"', '"8:25-12:05"', r"school.toml: schedules.lessons.monday\[0\]: '8:25-12:05' is not a time slot"),
    ("school", '"13:00-15:50"', '"13:00-24:30"', r"school.toml: schedules.lessons.monday\[1\]: '13:00-24:30' is not a time slot: hours are 00-23"),
    ("school", '"22:00-24:00"', '"22:00-00:00"', r"school.toml: schedules.lessons.friday\[0\]: '22:00-00:00': write 24:00 for midnight"),
    ("school", '"22:00-24:00"', '"24:00-24:00"', r"school.toml: schedules.lessons.friday\[0\]: '24:00-24:00' is not a time slot"),
    ("school", '"08:25-12:05"', '"12:05-08:25"', r"school.toml: schedules.lessons: schedule 'lessons': slot 12:05-08:25 ends before"),
    ("school", "monday =", "mondag =", r"school.toml: schedules.lessons: unknown key 'mondag'"),
    ("school", "2026-12-07 = []", "2026-02-30 = []", r"school.toml: schedules.lessons.exceptions.2026-02-30: is not a date"),
    ("school", "2026-12-07 = []", "tomorrow = []", r"school.toml: schedules.lessons.exceptions.tomorrow: is not a date \(YYYY-MM-DD\)"),
    ("school", '2026-12-08 = ["08:30-12:30"]', '2026-12-08 = ["08:30"]', r"school.toml: schedules.lessons.exceptions.2026-12-08\[0\]: '08:30' is not a time slot"),
    ("school", 'domain = ["smartschool.be"]', 'domain = ["smartschool.be", "bad..name"]', r"school.toml: lists.school-allow.domain\[1\]: domain entry 'bad..name' is not a valid host name"),
    ("school", 'cidr = ["198.18.100.0/24"]', 'cidr = ["198.18.100.0/24", "198.18.100.1/24"]', r"school.toml: lists.school-allow.cidr\[1\]: cidr entry '198.18.100.0/24' is given twice"),
    ("school", 'domain = ["smartschool.be"]', 'domains = ["smartschool.be"]', r"school.toml: lists.school-allow: unknown key 'domains'"),
    ("school", 'description = "never blocked"', "description = 3", r"school.toml: lists.school-allow.description: 3 is not text"),
    # Files are read in name order: the second definition is the one reported.
    ("guests", "[groups.guests]", "[groups.primary]", r"primary.toml: groups.primary: 'primary' is defined twice"),
    ("guests", "[groups.guests]", '[groups.guests]\n[settings]\ndefault_group = "guests"', r"school.toml: settings: given twice \(also in .*guests.toml: settings\)"),
    ("guests", "[groups.guests]", '[groups.guests]\nclients = "198.18.40.0/22"', r"guests.toml: groups.guests.clients: is not an array of tables"),
    ("guests", "[groups.guests]", "groups = 1", r"guests.toml: groups: is not a table"),
    ("guests", "[groups.guests]", "[groups]\nguests = 1", r"guests.toml: groups.guests: is not a table"),
]


@pytest.mark.parametrize("name, old, new, problem", BROKEN, ids=[case[3][:60] for case in BROKEN])
def test_broken_files_name_file_and_key(tmp_path: Path, name: str, old: str, new: str, problem: str):
    original = {"school": SCHOOL, "primary": PRIMARY, "guests": GUESTS}[name]
    assert old in original
    write_policy(tmp_path, **{name: original.replace(old, new, 1)})
    with pytest.raises(PolicyError, match=f"^{re.escape(str(tmp_path))}/{problem}"):
        load_policy_dir(tmp_path)


def test_files_that_cannot_be_read(tmp_path: Path):
    write_policy(tmp_path)
    (tmp_path / "primary.toml").write_bytes(b'[groups.primary]\ntitle = "\xff"\n')
    with pytest.raises(PolicyError, match=f"^{re.escape(str(tmp_path))}/primary.toml: not UTF-8 text"):
        load_policy_dir(tmp_path)
    (tmp_path / "primary.toml").unlink()
    (tmp_path / "primary.toml").mkdir()
    with pytest.raises(PolicyError, match=f"^{re.escape(str(tmp_path))}/primary.toml: cannot read"):
        load_policy_dir(tmp_path)


def test_folder_without_policy_files(tmp_path: Path):
    with pytest.raises(PolicyError, match="no policy files"):
        load_policy_dir(tmp_path)
    with pytest.raises(PolicyError, match="not a folder of policy files"):
        load_policy_dir(tmp_path / "missing")


# The bundled policy


@pytest.fixture(scope="module")
def bundled() -> Policy:
    return load_policy_dir(default_policy_dir())


def test_bundled_policy_is_the_repositorys_policies_folder():
    assert default_policy_dir().resolve() == (REPOSITORY / "policies").resolve()
    assert sorted(path.name for path in default_policy_dir().glob("*.toml")) == [
        "guests.toml", "primary.toml", "school.toml", "secondary.toml", "staff.toml"
    ]


def test_bundled_policy_loads_checks_and_stores(bundled: Policy, tmp_path: Path):
    assert check_policy(bundled) == bundled
    assert [group.name for group in bundled.groups] == ["guests", "primary", "secondary", "staff"]
    assert bundled.settings.default_group == "guests"
    with PolicyStore(tmp_path / "policy.sqlite") as store:
        store.replace_all(bundled)
        assert store.load() == bundled


def test_bundled_policy_refers_to_categories_by_name_only(bundled: Policy):
    assert {category.source for category in bundled.categories} == {"ut1"}
    for admin_list in bundled.lists:
        assert len(admin_list.entries) < 50, f"{admin_list.name}: big lists belong in categories"


def test_bundled_categories_exist_in_the_ut1_snapshot(bundled: Policy):
    if not UT1_SNAPSHOT.is_dir():
        pytest.skip(f"the UT1 snapshot is not at {UT1_SNAPSHOT} (see the shared blocklists README)")
    ut1 = scan_ut1(find_ut1_root(UT1_SNAPSHOT))
    for category in bundled.categories:
        assert category.name in ut1, f"UT1 has no category {category.name!r}"
        assert ut1[category.name].alias_of == category.alias_of, f"{category.name}: UT1 aliases it differently"


# What the bundled policy decides, on a few names of each category


SAMPLE_DATA = {
    "adult": CategoryData(names=frozenset({"adult.example"})),
    "drogue": CategoryData(names=frozenset({"drugs.example"})),
    "chat": CategoryData(names=frozenset({"chat.example", "teams.microsoft.com"})),
    "social_networks": CategoryData(names=frozenset({"social.example"})),
    "games": CategoryData(names=frozenset({"games.example"})),
    "ai": CategoryData(names=frozenset({"chatbot.example"})),
    "tricheur": CategoryData(names=frozenset({"answers.example"})),
    "vpn": CategoryData(names=frozenset({"vpn.example"})),
    "phishing": CategoryData(names=frozenset({"phish.example"})),
}
PRIMARY_PUPIL = ClientIdentity("198.18.16.20")
SECONDARY_PUPIL = ClientIdentity("2001:2:0:24::20")
TEACHER = ClientIdentity("198.18.40.5", mac="02:00:5e:00:20:01")  # the MAC wins over the guest Wi-Fi
VISITOR = ClientIdentity("198.18.99.9")  # not in any client match: the default group

MONDAY_LESSON = datetime(2026, 11, 30, 10, 0, tzinfo=BRUSSELS)
MONDAY_LUNCH = datetime(2026, 11, 30, 12, 30, tzinfo=BRUSSELS)
EXAM_MORNING = datetime(2027, 6, 15, 9, 0, tzinfo=BRUSSELS)
ASCENSION_DAY = datetime(2027, 5, 6, 10, 0, tzinfo=BRUSSELS)


def bundled_action(policy: Policy, client: ClientIdentity, name: str, when: datetime = MONDAY_LESSON) -> Action:
    return reference_decide(policy, SAMPLE_DATA, client, name, None, when).action


@pytest.mark.parametrize(
    "client, name, when, expected",
    [
        (PRIMARY_PUPIL, "www.adult.example", MONDAY_LESSON, Action.BLOCK),
        (PRIMARY_PUPIL, "drugs.example", MONDAY_LESSON, Action.BLOCK),  # through the "drugs" alias
        (PRIMARY_PUPIL, "social.example", MONDAY_LUNCH, Action.BLOCK),  # primary: at all times
        (PRIMARY_PUPIL, "chat.example", MONDAY_LUNCH, Action.BLOCK),
        (PRIMARY_PUPIL, "teams.microsoft.com", MONDAY_LESSON, Action.ALLOW),  # the school's allow list
        (PRIMARY_PUPIL, "vpn.example", MONDAY_LESSON, Action.BLOCK),
        (PRIMARY_PUPIL, "www.smartschool.be", MONDAY_LESSON, Action.ALLOW),
        (SECONDARY_PUPIL, "social.example", MONDAY_LESSON, Action.BLOCK),
        (SECONDARY_PUPIL, "social.example", MONDAY_LUNCH, Action.ALLOW),
        (SECONDARY_PUPIL, "games.example", ASCENSION_DAY, Action.ALLOW),  # a day off
        (SECONDARY_PUPIL, "chatbot.example", MONDAY_LESSON, Action.ALLOW),
        (SECONDARY_PUPIL, "chatbot.example", EXAM_MORNING, Action.BLOCK),
        (SECONDARY_PUPIL, "answers.example", EXAM_MORNING, Action.BLOCK),
        (SECONDARY_PUPIL, "adult.example", MONDAY_LUNCH, Action.BLOCK),
        (TEACHER, "social.example", MONDAY_LESSON, Action.ALLOW),
        (TEACHER, "vpn.example", MONDAY_LESSON, Action.ALLOW),
        (TEACHER, "phish.example", MONDAY_LESSON, Action.BLOCK),
        (VISITOR, "adult.example", MONDAY_LESSON, Action.BLOCK),
        (VISITOR, "vpn.example", MONDAY_LESSON, Action.ALLOW),  # visitors need their company VPN
        (VISITOR, "social.example", MONDAY_LESSON, Action.ALLOW),
    ],
)
def test_bundled_policy_decisions(bundled: Policy, client: ClientIdentity, name: str, when: datetime, expected: Action):
    assert bundled_action(bundled, client, name, when) is expected
