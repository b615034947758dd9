"""The policy model's value checks: admin-list entries, identifiers, MAC addresses, settings."""

from __future__ import annotations

import dataclasses
from zoneinfo import ZoneInfo

import pytest

from edufilter.errors import PolicyError
from edufilter.policy.model import (
    Action,
    ClientIdentity,
    EntryKind,
    ListEntry,
    Settings,
    check_id,
    check_mac,
    parse_entry,
)


@pytest.mark.parametrize("kind", [EntryKind.DOMAIN, EntryKind.EXACT, "domain", "exact"])
@pytest.mark.parametrize(
    "value, normalised",
    [
        ("example.org", "example.org"),
        ("  WWW.Example.ORG.  ", "www.example.org"),
        ("xn--caf-dma.be", "xn--caf-dma.be"),  # café.be, in punycode
        ("_dmarc.example.org", "_dmarc.example.org"),
        ("Printer.LAN", "printer.lan"),  # a name under an unknown top-level domain
    ],
)
def test_name_entries_are_normalised(kind, value: str, normalised: str):
    assert parse_entry(kind, value) == ListEntry(EntryKind(kind), normalised)


@pytest.mark.parametrize("kind", [EntryKind.DOMAIN, EntryKind.EXACT])
@pytest.mark.parametrize(
    "value", ["", "   ", "bad..name", ".example.org", "exa mple.org", "198.18.0.1", "café.be", "a" * 64 + ".org", "*.example.org"]
)
def test_bad_name_entries(kind: EntryKind, value: str):
    with pytest.raises(PolicyError, match=f"{kind} entry .* is not a valid host name"):
        parse_entry(kind, value)


@pytest.mark.parametrize(
    "value, normalised",
    [
        ("198.18.0.1", "198.18.0.1/32"),
        ("198.18.1.7/24", "198.18.1.0/24"),
        (" 198.18.0.0/15 ", "198.18.0.0/15"),
        ("2001:2::1", "2001:2::1/128"),
        ("2001:2:66::5/48", "2001:2:66::/48"),
        ("2001:0002:0066:0000::/64", "2001:2:66::/64"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_cidr_entries_are_normalised(value: str, normalised: str):
    assert parse_entry(EntryKind.CIDR, value) == ListEntry(EntryKind.CIDR, normalised)


@pytest.mark.parametrize("value", ["198.18.0.0/33", "2001:2::/129", "example.org", "", "198.18.0", "198.18.0.1/-1"])
def test_bad_cidr_entries(value: str):
    with pytest.raises(PolicyError, match="cidr entry"):
        parse_entry(EntryKind.CIDR, value)


@pytest.mark.parametrize(
    "value, normalised",
    [
        ("example.org/games/", "example.org/games/"),
        ("Example.ORG/Games/Index.html", "example.org/Games/Index.html"),  # paths keep their case
        ("http://www.example.org/a?b=c", "www.example.org/a?b=c"),
        ("HTTPS://www.example.org/a", "www.example.org/a"),
        ("example.org", "example.org/"),
        ("http://example.org", "example.org/"),
        ("xn--caf-dma.be/menu", "xn--caf-dma.be/menu"),
    ],
)
def test_url_prefix_entries_are_normalised(value: str, normalised: str):
    assert parse_entry(EntryKind.URL_PREFIX, value) == ListEntry(EntryKind.URL_PREFIX, normalised)


@pytest.mark.parametrize("value", ["", "/games/", "http:///games", "bad..host/x", "198.18.0.1/x", "example.org:8080/x"])
def test_bad_url_prefix_entries(value: str):
    with pytest.raises(PolicyError, match="url_prefix entry .* has no valid host name"):
        parse_entry(EntryKind.URL_PREFIX, value)


def test_unknown_entry_kind():
    with pytest.raises(PolicyError, match="entry kind 'host' is not one of domain, exact, cidr, url_prefix"):
        parse_entry("host", "example.org")


@pytest.mark.parametrize("value", ["guests", "school-allow", "ut1", "a", "b_2.x", "0" * 64])
def test_good_ids(value: str):
    assert check_id("group", value) == value


@pytest.mark.parametrize("value", ["", "Guests", "-guests", ".x", "_x", "with space", "é", "0" * 65])
def test_bad_ids(value: str):
    with pytest.raises(PolicyError, match="group .*: use 1-64 lowercase letters"):
        check_id("group", value)


@pytest.mark.parametrize("value", ["02:00:5e:00:20:01", "02-00-5E-00-20-01", " 02:00:5E:00:20:01 "])
def test_mac_addresses_are_normalised(value: str):
    assert check_mac(value) == "02:00:5e:00:20:01"


@pytest.mark.parametrize("value", ["", "02:00:5e:00:20", "0200.5e00.2001", "02:00:5e:00:20:0g", "02:00:5e:00:20:01:02"])
def test_bad_mac_addresses(value: str):
    with pytest.raises(PolicyError, match="is not of the form aa:bb:cc:dd:ee:ff"):
        check_mac(value)


def test_blocking_actions():
    assert [action for action in Action if action.blocks] == [Action.BLOCK, Action.DROP, Action.SINKHOLE]


def test_settings_zone():
    assert Settings().zone == ZoneInfo("Europe/Brussels")
    with pytest.raises(PolicyError, match="settings.timezone 'Europe/Gent' is not a known time zone"):
        Settings(timezone="Europe/Gent").zone  # noqa: B018 -- reading it raises
    with pytest.raises(PolicyError, match="settings.timezone"):
        Settings(timezone="../etc/passwd").zone  # noqa: B018 -- reading it raises


def test_client_identity_is_a_frozen_value():
    client = ClientIdentity("198.18.16.10", interface="eth1", vlan=16)
    assert client == ClientIdentity("198.18.16.10", None, "eth1", 16)
    assert client.mac is None and hash(client) == hash(ClientIdentity("198.18.16.10", None, "eth1", 16))
    with pytest.raises(dataclasses.FrozenInstanceError):
        client.address = "198.18.16.11"  # type: ignore[misc]
