"""A list's entry_count as the API shows it, counted once per lists revision (the console
reads the lists on every overview): right after adds, duplicates, removals, replacements, a
list removed and made again, a write rolled back, and with two databases read in turn."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edufilter.api import views
from edufilter.policy.model import AdminList, EntryKind, ListEntry
from edufilter.policy.store import PolicyStore


def shown(path: Path) -> dict[str, int]:
    """The counts the API shows, checked against a count of the table itself."""
    with sqlite3.connect(path) as db:
        counted = dict(db.execute("SELECT list, count(*) FROM list_entries GROUP BY list").fetchall())
        kept = {row["name"]: row["entry_count"] for row in views.lists(db)}
        for name, count in kept.items():
            assert views.admin_list(db, name) == {"name": name, "description": "", "entry_count": count}
    assert kept == {name: counted.get(name, 0) for name in kept}
    return kept


def names(*values: str) -> list[ListEntry]:
    return [ListEntry(EntryKind.DOMAIN, value) for value in values]


def test_the_counts_follow_every_change(tmp_path: Path) -> None:
    path, other = tmp_path / "policy.sqlite", tmp_path / "other.sqlite"
    with PolicyStore(path) as store, PolicyStore(other) as other_store:
        store.add_list(AdminList("school", "", tuple(names("a.example", "b.example"))))
        store.add_list(AdminList("empty"))
        other_store.add_list(AdminList("school", "", tuple(names("z.example"))))
        assert shown(path) == {"school": 2, "empty": 0} and shown(other) == {"school": 1}
        assert store.add_list_entries("school", names("b.example", "c.example", "d.example")) == 2
        assert shown(path) == {"school": 4, "empty": 0} and shown(other) == {"school": 1}
        store.remove_list_entry("school", ListEntry(EntryKind.DOMAIN, "a.example"))
        assert shown(path) == {"school": 3, "empty": 0}
        store.add_list_entries("school", names("x.example"), replace_all=True)
        assert shown(path) == {"school": 1, "empty": 0}
        store.remove_list("school")
        store.add_list(AdminList("school"))
        assert shown(path) == {"school": 0, "empty": 0}


def test_a_rolled_back_write_leaves_the_counts_as_they_were(tmp_path: Path) -> None:
    path = tmp_path / "policy.sqlite"
    with PolicyStore(path) as store:
        store.add_list(AdminList("school", "", tuple(names("a.example"))))
    assert shown(path) == {"school": 1}
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO list_entries (list, kind, value) VALUES ('school', 'domain', 'b.example')")
        assert views.lists(db)[0]["entry_count"] == 2  # seen inside the write
        db.rollback()
        assert views.lists(db)[0]["entry_count"] == 1
    assert shown(path) == {"school": 1}
