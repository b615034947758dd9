"""A gateway's policy from the group's part and its site's: what a site may add, tighten and
(with the group's leave) loosen."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edufilter.classify.engine import Explanation
from edufilter.policy.defaults import store_policy
from edufilter.errors import PolicyError
from edufilter.hub.model import (
    SITE_CHANGES,
    SITE_OVERRIDES,
    SITES_MAY_LOOSEN,
    HubError,
    combined_policy,
    decode_part,
    encode_part,
    read_overrides,
    read_part,
    write_overrides,
)
from edufilter.policy.check import open_current
from edufilter.policy.defaults import default_policy_dir
from edufilter.policy.model import Action, ClientIdentity, Override, Policy, QuicMode


@pytest.fixture(scope="module")
def group() -> dict[str, str]:
    return read_part(default_policy_dir())


def test_a_site_adds_its_own_lists_and_puts_its_networks_in_the_groups_groups(group: dict[str, str]) -> None:
    site = {"lists.toml": '[lists.ghent-block]\ndomain = ["only-ghent.test"]\n',
            "clients.toml": '[[clients.primary]]\ncidr = "198.18.100.0/24"\n'}
    policy = combined_policy(group, site)
    assert "ghent-block" in {admin_list.name for admin_list in policy.lists}
    assert "198.18.100.0/24" in {client.cidr for client in policy.clients if client.group == "primary"}
    assert len(policy.groups) == len(combined_policy(group, {}).groups)


@pytest.mark.parametrize("site, complaint", [
    ({"lists.toml": '[lists.school-block]\ndomain = ["x.test"]\n'}, "school-block"),
    ({"clients.toml": '[[clients.nosuchgroup]]\ncidr = "198.18.100.0/24"\n'}, "nosuchgroup"),
    ({"clients.toml": '[[clients.primary]]\nnetwork = "198.18.100.0/24"\n'}, "network"),
    ({"clients.toml": "[[clients.primary]\n"}, "not valid TOML"),
])
def test_a_site_part_that_does_not_make_a_policy_is_refused(
    group: dict[str, str], site: dict[str, str], complaint: str
) -> None:
    with pytest.raises(PolicyError, match=complaint):
        combined_policy(group, site)


def test_a_part_round_trips_and_bad_bytes_are_refused(group: dict[str, str]) -> None:
    assert decode_part(encode_part(group)) == group
    for bad in (b"not json", b'{"files": {"../x.toml": ""}}', b'{"files": {"a.txt": ""}}', b'{"files": []}'):
        with pytest.raises(HubError):
            decode_part(bad)


# Precedence: a site tightens the group's groups; it loosens them only with the group's leave.

PUPIL = "198.18.16.5"  # in the bundled primary group's network
SITE_LISTS = ('[lists.ghent-block]\ndomain = ["only-ghent.test", "smartschool.be", "x.smartschool.be"]\n'
              '[lists.ghent-allow]\ndomain = ["games.test"]\n')
LOOSEN_PRIMARY = '[loosen.primary]\nallow_lists = true\nallow_categories = ["games"]\nsettings = ["safe_search"]\n'


def group_blocking_games(group: dict[str, str], loosen: str = "") -> dict[str, str]:
    """The bundled policy whose school-block list holds games.test, and a sites.toml when loosen."""
    start = group["school.toml"].index("[lists.school-block]")
    school = group["school.toml"][:start] + group["school.toml"][start:].replace(
        "domain = []", 'domain = ["games.test"]', 1)
    assert school != group["school.toml"]
    return {**group, "school.toml": school, **({SITES_MAY_LOOSEN: loosen} if loosen else {})}


def decide(tmp_path: Path, policy: Policy, name: str) -> Explanation:
    store_policy(tmp_path, policy)
    return open_current(tmp_path).explain(name, ClientIdentity(PUPIL))


def test_a_site_tightens_the_groups_groups_after_their_own_rules(group: dict[str, str], tmp_path: Path) -> None:
    changes = '[groups.primary]\nquic = "block"\n[[groups.primary.rules]]\naction = "block"\nlists = ["ghent-block"]\n'
    policy = combined_policy(group, {"lists.toml": SITE_LISTS, SITE_CHANGES: changes})
    primary = next(item for item in policy.groups if item.name == "primary")
    assert primary.quic is QuicMode.BLOCK
    assert [rule.target for rule in policy.rules if rule.group == "primary"][-1] == "ghent-block"
    blocked = decide(tmp_path, policy, "only-ghent.test")
    assert (blocked.action, blocked.list) == ("block", "ghent-block")
    # The group's allow list keeps a name the site blocks at the same specificity; a more
    # specific name the site blocks is blocked.
    assert decide(tmp_path, policy, "smartschool.be").action == "allow"
    assert decide(tmp_path, policy, "x.smartschool.be").action == "block"


@pytest.mark.parametrize("changes, complaint", [
    ('[[groups.primary.rules]]\naction = "allow"\nlists = ["ghent-allow"]\n', "allow rule on list 'ghent-allow'"),
    ('[[groups.primary.rules]]\naction = "monitor"\ncategories = ["games"]\n', "monitor rule on category"),
    ("[groups.primary]\nsafe_search = false\n", "safe_search: false loosens group 'primary'"),
    ('[groups.primary]\ndefault_action = "allow"\nunnamed = "allow"\n', 'unnamed: "allow" loosens'),
    ("[groups.primary]\nlog_client_address = true\n", "log_client_address"),
    ("[groups.primary]\nbypass_shield = false\nunnamed = \"auto\"\n", "bypass_shield"),
    ('[groups.primary]\ntitle = "Ours"\n', "a site may change only"),
    ('[groups.ghent-own]\nsafe_search = true\n', "no group 'ghent-own'"),
    ('[lists.x]\ndomain = ["x.test"]\n', "only \\[groups.<name>\\] tables"),
])
def test_a_site_cannot_loosen_without_the_groups_leave(group: dict[str, str], changes: str, complaint: str) -> None:
    with pytest.raises(PolicyError, match=complaint):
        combined_policy(group_blocking_games(group), {"lists.toml": SITE_LISTS, SITE_CHANGES: changes})


def test_a_site_loosens_what_the_group_lets_it_and_no_more(group: dict[str, str], tmp_path: Path) -> None:
    with_leave = group_blocking_games(group, LOOSEN_PRIMARY)
    changes = ("[groups.primary]\nsafe_search = false\n"
               '[[groups.primary.rules]]\naction = "allow"\nlists = ["ghent-allow"]\n'
               '[[groups.primary.rules]]\naction = "allow"\ncategories = ["games"]\n')
    policy = combined_policy(with_leave, {"lists.toml": SITE_LISTS, SITE_CHANGES: changes})
    assert not next(item for item in policy.groups if item.name == "primary").safe_search
    allowed = decide(tmp_path, policy, "games.test")  # the group's school-block list holds it
    assert (allowed.action, allowed.list) == ("allow", "ghent-allow")
    assert decide(tmp_path, combined_policy(group_blocking_games(group), {}), "games.test").action == "block"

    shield_only = "[loosen.primary]\nsettings = [\"bypass_shield\"]\n"  # unnamed "auto" would follow it off
    with pytest.raises(PolicyError, match="unnamed: \"auto\" loosens"):
        combined_policy(group_blocking_games(group, shield_only),
                        {SITE_CHANGES: '[groups.primary]\nbypass_shield = false\nunnamed = "auto"\n'})
    for beyond in ('[[groups.primary.rules]]\naction = "allow"\ncategories = ["chat"]\n',  # not in the leave
                   '[[groups.secondary.rules]]\naction = "allow"\nlists = ["ghent-allow"]\n',  # another group
                   '[groups.primary]\nquic = "inspect"\nbypass_shield = false\n'):
        with pytest.raises(PolicyError, match="loosens"):
            combined_policy(with_leave, {"lists.toml": SITE_LISTS, SITE_CHANGES: beyond})


@pytest.mark.parametrize("loosen, complaint", [
    ("[loosen.nosuchgroup]\nallow_lists = true\n", "nosuchgroup"),
    ("[loosen.primary]\neverything = true\n", "unknown key 'everything'"),
    ('[loosen.primary]\nsettings = ["title"]\n', "'title' is not one of"),
    ("[loosen.primary]\nallow_lists = 1\n", "not true or false"),
])
def test_a_bad_sites_file_in_the_group_part_is_refused(group: dict[str, str], loosen: str, complaint: str) -> None:
    with pytest.raises(PolicyError, match=complaint):
        combined_policy({**group, SITES_MAY_LOOSEN: loosen}, {SITE_CHANGES: "[groups.primary]\nquic = \"block\"\n"})


def test_a_sites_overrides_round_trip_and_allow_only_with_the_groups_leave(group: dict[str, str],
                                                                         tmp_path: Path) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    written = (Override(1, "primary", "games.test", Action.ALLOW, now, now + timedelta(hours=1), "ms-peeters",
                        'film "Brugge"\nles 3'),
               Override(2, "secondary", "chat.test", Action.BLOCK, now, now + timedelta(hours=1), "mr-janssens", ""))
    text = write_overrides(written)
    assert read_overrides(text) == written
    with pytest.raises(PolicyError, match="overrides = true"):
        combined_policy(group_blocking_games(group), {SITE_OVERRIDES: text})
    leave = group_blocking_games(group, "[loosen.primary]\noverrides = true\n")
    allowed = decide(tmp_path, combined_policy(leave, {SITE_OVERRIDES: text}), "games.test")
    assert (allowed.action, allowed.decided_by) == ("allow", "override")
    blocking = combined_policy(group, {SITE_OVERRIDES: write_overrides(written[1:])})  # tightens: no leave needed
    assert blocking.overrides == (replace(written[1], id=1),)
