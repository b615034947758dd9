"""A group's setting for flows without a readable name (issue 13, item 3): the model, its
column and migration, the bundled policy and the compiled image the workers read."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from edufilter.errors import PolicyError
from edufilter.policy.compile import compile_policy
from edufilter.policy.defaults import default_policy_dir, load_policy_dir
from edufilter.classify.engine import Engine
from edufilter.policy.model import Group, UnnamedFlows, effective_unnamed
from edufilter.policy.store import MIGRATIONS, PolicyStore, _statements


def test_auto_follows_the_bypass_shield() -> None:
    assert effective_unnamed(Group("staff")) is UnnamedFlows.ALLOW
    assert effective_unnamed(Group("pupils", bypass_shield=True)) is UnnamedFlows.BLOCK_WEB
    assert effective_unnamed(Group("open", bypass_shield=True, unnamed=UnnamedFlows.ALLOW)) is UnnamedFlows.ALLOW
    assert effective_unnamed(Group("vpn-free", unnamed=UnnamedFlows.BLOCK_ALL)) is UnnamedFlows.BLOCK_ALL


def test_the_bundled_pupil_groups_block_unnamed_web_flows() -> None:
    groups = {group.name: group for group in load_policy_dir(default_policy_dir()).groups}
    assert groups["primary"].unnamed is groups["secondary"].unnamed is UnnamedFlows.BLOCK_WEB
    assert effective_unnamed(groups["staff"]) is UnnamedFlows.ALLOW


def test_an_older_database_gets_the_column_with_auto(tmp_path: Path) -> None:
    path = tmp_path / "policy.sqlite"
    db = sqlite3.connect(path)
    before = next(index for index, script in enumerate(MIGRATIONS) if "ADD COLUMN unnamed" in script)
    for script in MIGRATIONS[:before]:
        for statement in _statements(script):
            db.execute(statement)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (?)", (before,))
    db.execute("INSERT INTO groups VALUES ('old', '', 'allow', 0, 'inspect', 1, 0)")
    db.commit()
    db.close()
    with PolicyStore(path) as store:
        (group,) = store.load().groups
        assert group.unnamed is UnnamedFlows.AUTO
        store.update_group(replace(group, unnamed=UnnamedFlows.BLOCK_ALL))
        assert store.load().groups[0].unnamed is UnnamedFlows.BLOCK_ALL
        with pytest.raises(PolicyError, match="group.unnamed"):
            store.update_group(replace(group, unnamed="block"))  # type: ignore[arg-type]


def test_the_compiled_image_holds_the_resolved_setting(tmp_path: Path) -> None:
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "school.toml").write_text(
        '[settings]\ndefault_group = "a"\n[groups.a]\nbypass_shield = true\n'
        '[groups.b]\nunnamed = "block-all"\n[groups.c]\n')
    with PolicyStore(tmp_path / "policy.sqlite") as store:
        store.replace_all(load_policy_dir(tmp_path / "policy"))
    compile_policy(tmp_path)
    groups = {group["name"]: group["unnamed"] for group in Engine.open(tmp_path).meta["groups"]}
    assert groups == {"a": "block-web", "b": "block-all", "c": "allow"}
