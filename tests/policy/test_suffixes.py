"""Public suffixes are refused as admin-list entries and overrides: they would cover every
site registered under them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from edufilter.errors import PolicyError
from edufilter.policy.model import EntryKind, Group, parse_entry
from edufilter.policy.store import PolicyStore
from edufilter.policy.suffixes import DEBIAN_LIST, Scope, list_source, public_suffix_section

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("name, section", [
    ("com", Scope.ICANN), ("co.uk", Scope.ICANN), ("be", Scope.ICANN), ("localhost", Scope.ICANN),
    ("xn--p1ai", Scope.ICANN), ("xn--abcdef", Scope.ICANN), ("city.kawasaki.jp", None), ("kawasaki.jp", Scope.ICANN),
    ("github.io", Scope.ANY), ("blogspot.com", Scope.ANY),
    ("example.com", None), ("www.example.co.uk", None), ("school.github.io", None), ("printer.lan", None),
])
def test_public_suffixes_and_their_section(name: str, section: Scope | None) -> None:
    assert public_suffix_section(name) is section


def test_the_list_is_debians_when_installed() -> None:
    assert list_source() == (str(DEBIAN_LIST) if DEBIAN_LIST.exists() else "the publicsuffixlist library")


@pytest.mark.parametrize("kind, value", [
    ("domain", "com"), ("domain", "CO.UK."), ("exact", "localhost"), ("domain", "xn--p1ai"),
    ("url_prefix", "http://com/path"), ("domain", "xn--zz-.example"),
])
def test_list_entries_refuse_public_suffixes(kind: str, value: str) -> None:
    with pytest.raises(PolicyError, match=r"public suffix|not a valid internationalised name") as refused:
        parse_entry(kind, value)
    assert "entry" in str(refused.value)


def test_list_entries_may_name_a_hosting_platform_and_any_site() -> None:
    # An editor may block a whole platform on purpose; only a teacher's override may not.
    assert parse_entry("domain", "blogspot.com").value == "blogspot.com"
    assert parse_entry("domain", "www.example.co.uk").value == "www.example.co.uk"
    assert parse_entry(EntryKind.DOMAIN, "xn--bcher-kva.example").value == "xn--bcher-kva.example"


@pytest.mark.parametrize("name", ["com", "org.", "co.uk", "localhost", "xn--p1ai", "github.io"])
def test_overrides_refuse_any_public_suffix(tmp_path, name: str) -> None:
    with PolicyStore(tmp_path / "policy.sqlite") as store:
        store.add_group(Group("guests"))
        with pytest.raises(PolicyError, match=r"override\.name .* is a public suffix"):
            store.add_override("guests", name, "allow", NOW, NOW + timedelta(minutes=50))
        assert store.add_override("guests", f"school.{name.rstrip('.')}", "allow", NOW,
                                  NOW + timedelta(minutes=50)).name == f"school.{name.rstrip('.')}"
