"""The admin lists' own image: a change elsewhere compiles the policy image without reading a
list entry, a change of the entries rebuilds the lists image, and decisions follow both."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edufilter.classify.engine import Engine
from edufilter.classify.image import Image, read_meta
from edufilter.errors import PolicyError, StoreBusyError
from edufilter.policy import store as store_module
from edufilter.policy.compile import compile_policy
from edufilter.policy.model import (
    Action,
    AdminList,
    ClientIdentity,
    EntryKind,
    Group,
    ListEntry,
    Policy,
    Rule,
    Settings,
    TargetKind,
)
from edufilter.policy.store import PolicyStore
from edufilter.state import StateDir

PUPIL = ClientIdentity("198.18.16.5")
NOW = datetime.now(timezone.utc)


def action_for(state: Path, target: str) -> str:
    """The live images' action for a pupil now, "default" when no rule decides."""
    explanation = Engine.open(state).explain(target, PUPIL, NOW)
    return "default" if explanation.decided_by == "group default" else explanation.action


@pytest.fixture
def state(tmp_path: Path) -> Path:
    entries = tuple(ListEntry(EntryKind.DOMAIN, f"site{index}.example") for index in range(200))
    entries += (ListEntry(EntryKind.CIDR, "198.51.100.0/24"), ListEntry(EntryKind.EXACT, "exact.example"))
    policy = Policy(
        settings=Settings(default_group="pupils"),
        lists=(AdminList("blocked", entries=entries), AdminList("allowed", entries=(
            ListEntry(EntryKind.DOMAIN, "ok.site1.example"),))),
        groups=(Group("pupils"),),
        rules=(Rule("pupils", TargetKind.LIST, "blocked", Action.BLOCK),
               Rule("pupils", TargetKind.LIST, "allowed", Action.ALLOW)),
    )
    with PolicyStore(StateDir(tmp_path).policy_db) as store:
        store.replace_all(policy)
    compile_policy(tmp_path)
    return tmp_path


def lists_image_identity(state: Path) -> tuple[int, int]:
    status = os.stat(StateDir(state).lists_image)
    return status.st_ino, status.st_mtime_ns


def test_an_override_reads_no_list_entry_and_keeps_the_lists_image(state: Path, monkeypatch) -> None:
    before = lists_image_identity(state)
    with PolicyStore(StateDir(state).policy_db) as store:
        store.add_override("pupils", "site7.example", Action.ALLOW, NOW - timedelta(minutes=1),
                           NOW + timedelta(minutes=50))
        version = store.version
    read: list[str] = []
    reading = store_module.list_values
    monkeypatch.setattr(store_module, "list_values", lambda *args: read.append(args[1]) or reading(*args))
    report = compile_policy(state)
    assert read == [] and report.version == version
    assert lists_image_identity(state) == before
    assert action_for(state, "www.site7.example") == "allow"  # the override, from the policy image
    assert action_for(state, "www.site8.example") == "block"  # the list, from the unchanged lists image
    assert action_for(state, "ok.site1.example") == "allow"
    assert action_for(state, "exact.example") == "block" and action_for(state, "a.exact.example") == "default"
    assert action_for(state, "198.51.100.9") == "block"


def test_entry_changes_rebuild_the_lists_image(state: Path) -> None:
    before = lists_image_identity(state)
    with PolicyStore(StateDir(state).policy_db) as store:
        store.add_list_entry("blocked", ListEntry(EntryKind.DOMAIN, "new.example"))
    compile_policy(state)
    assert lists_image_identity(state) != before
    assert action_for(state, "www.new.example") == "block"
    with PolicyStore(StateDir(state).policy_db) as store:
        store.remove_list_entry("blocked", ListEntry(EntryKind.DOMAIN, "new.example"))
    compile_policy(state)
    assert action_for(state, "www.new.example") == "default"


def test_a_new_empty_list_and_a_removed_list_keep_decisions_right(state: Path) -> None:
    before = lists_image_identity(state)
    with PolicyStore(StateDir(state).policy_db) as store:
        store.add_list(AdminList("later"))
        store.add_rule(Rule("pupils", TargetKind.LIST, "later", Action.ALLOW), 0)
    compile_policy(state)
    assert lists_image_identity(state) == before  # no entry changed: the lists image holds
    assert action_for(state, "site3.example") == "block"
    with PolicyStore(StateDir(state).policy_db) as store:
        store.add_list_entry("later", ListEntry(EntryKind.DOMAIN, "site3.example"))
    compile_policy(state)
    assert action_for(state, "site3.example") == "allow"
    with PolicyStore(StateDir(state).policy_db) as store:
        store.remove_rule("pupils", 2)  # the rule on "allowed"
        store.remove_list("allowed")
    compile_policy(state)
    assert action_for(state, "ok.site1.example") == "block"
    assert "allowed" not in Image(StateDir(state).lists_image).meta["lists"]


def test_the_lists_revision_follows_the_entries(tmp_path: Path) -> None:
    with PolicyStore(StateDir(tmp_path).policy_db) as store:
        store.replace_all(Policy(settings=Settings(default_group="pupils"), groups=(Group("pupils"),),
                                 lists=(AdminList("a", entries=(ListEntry(EntryKind.DOMAIN, "a.example"),)),)))

        def revision() -> int:
            with store.compile_view() as view:
                return view.lists_revision

        first = revision()
        store.update_group(Group("pupils", "Pupils"))
        store.update_list(AdminList("a", "same entries", (ListEntry(EntryKind.DOMAIN, "a.example"),)))
        assert revision() == first
        store.add_list_entries("a", [ListEntry(EntryKind.DOMAIN, "b.example")])
        second = revision()
        assert second != first
        store.remove_list("a")  # its entries go by cascade
        assert revision() != second


def test_a_locked_database_is_reported_busy_not_invalid(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 100)
    with PolicyStore(StateDir(tmp_path).policy_db) as store, PolicyStore(StateDir(tmp_path).policy_db) as other:
        store.add_group(Group("pupils"))
        with other.audited(store_module.Actor("t", "admin", "TEST", "/"), "group", "x"):
            with pytest.raises(StoreBusyError, match="busy"):
                store.add_group(Group("staff"))


def test_a_reload_maps_and_checks_only_the_images_that_changed(state: Path) -> None:
    first = Engine.open(state)
    with PolicyStore(StateDir(state).policy_db) as store:
        store.add_override("pupils", "site9.example", Action.ALLOW, NOW - timedelta(minutes=1),
                           NOW + timedelta(minutes=50))
    compile_policy(state)
    second = Engine.open(state)
    assert second.lists_image is first.lists_image and second.categories_image is first.categories_image
    assert second.policy_image is not first.policy_image and second.meta["overrides"]


def test_a_cut_short_lists_image_is_compiled_again(state: Path) -> None:
    lists = StateDir(state).lists_image
    with open(lists, "r+b") as image:
        image.truncate(lists.stat().st_size // 2)
    with pytest.raises(PolicyError, match="truncated"):
        read_meta(lists)
    compile_policy(state)
    assert action_for(state, "site5.example") == "block"


def test_a_full_disk_while_spooling_the_lists_is_a_storage_error() -> None:
    """The names are spooled beside the image before it is written: a full disk there is
    StorageFullError too (the daemon reports it and keeps the live images), no spool is left."""
    from small_disk import run_on_small_disk

    done = run_on_small_disk('''
import json
from edufilter.errors import StorageFullError
from edufilter.policy.compile import write_lists_image
from edufilter.policy.model import EntryKind
directory = Path(sys.argv[1])
fill_disk(directory, leave=0)
names = [f"site{index}.example" for index in range(50000)]
try:
    write_lists_image(["school"], lambda name, kind: names if kind is EntryKind.DOMAIN else [], 7,
                      directory / "lists.img")
    result = "written"
except StorageFullError as error:
    result = str(error)
print(json.dumps({"result": result, "files": sorted(item.name for item in directory.iterdir())}))
''')
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    outcome = json.loads(done.stdout)
    assert "the disk is full" in outcome["result"], outcome
    assert outcome["files"] == ["filler"]
