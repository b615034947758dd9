"""A gateway's policy from the group's part and its site's: what a site may add."""

from __future__ import annotations

import pytest

from edufilter.errors import PolicyError
from edufilter.hub.model import HubError, combined_policy, decode_part, encode_part, read_part
from edufilter.policy.defaults import default_policy_dir


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
