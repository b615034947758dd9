"""The policy follower without servers: revisions taken one by one into the local store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("nats", reason="the hub extra (nats-py) is not installed")

from edufilter.api.standalone import compiling_applier
from edufilter.hub.agent import PolicyFollower
from edufilter.hub.model import (
    GROUP_BUCKET,
    SITE_CHANGES,
    SITES_MAY_LOOSEN,
    encode_part,
    read_part,
    site_bucket,
)
from edufilter.policy.defaults import default_policy_dir
from edufilter.policy.store import PolicyStore
from edufilter.state import StateDir

SITE_PART = {"lists.toml": '[lists.ghent-block]\ndomain = ["only-ghent.test"]\n'}


def lists(state: Path) -> set[str]:
    with PolicyStore(StateDir(state).policy_db) as store:
        return {admin_list.name for admin_list in store.load().lists}


def test_a_site_part_before_the_group_waits_for_it_and_a_bad_revision_keeps_the_last_good(tmp_path: Path) -> None:
    async def scenario() -> None:
        follower = PolicyFollower(tmp_path, "ghent", compiling_applier(tmp_path))
        await follower.take(site_bucket("ghent"), 1, encode_part(SITE_PART), {})
        assert follower.applied == 0 and follower.rejected == 1
        await follower.take(GROUP_BUCKET, 2, encode_part(read_part(default_policy_dir())), {})
        assert follower.applied == 1
        assert {"school-block", "ghent-block"} <= lists(tmp_path)
        assert (tmp_path / "images" / "policy.img").exists()

        await follower.take(site_bucket("ghent"), 3, b"not a part", {})
        await follower.take(site_bucket("ghent"), 4, encode_part({"x.toml": "[lists.school-block]\n"}), {})
        assert follower.rejected == 3
        assert "ghent-block" in lists(tmp_path)  # the last good policy stays

        restarted = PolicyFollower(tmp_path, "ghent", compiling_applier(tmp_path))
        assert restarted.revisions() == {GROUP_BUCKET: 2, site_bucket("ghent"): 4}  # resumes after 4

    asyncio.run(scenario())


def test_a_gateway_refuses_a_site_part_that_loosens_without_the_groups_leave(tmp_path: Path) -> None:
    """A revision that loosens the group's group is not applied, whoever stored it; once the
    group policy gives the leave, the same site part is."""
    group = read_part(default_policy_dir())
    site = {"lists.toml": '[lists.ghent-allow]\ndomain = ["games.test"]\n',
            SITE_CHANGES: '[[groups.primary.rules]]\naction = "allow"\nlists = ["ghent-allow"]\n'}

    async def scenario() -> None:
        follower = PolicyFollower(tmp_path, "ghent", compiling_applier(tmp_path))
        await follower.take(GROUP_BUCKET, 1, encode_part(group), {})
        await follower.take(site_bucket("ghent"), 1, encode_part(site), {})
        assert (follower.applied, follower.rejected) == (1, 1)
        assert "ghent-allow" not in lists(tmp_path)
        leave = {**group, SITES_MAY_LOOSEN: "[loosen.primary]\nallow_lists = true\n"}
        await follower.take(GROUP_BUCKET, 2, encode_part(leave), {})
        assert follower.applied == 2
        assert "ghent-allow" in lists(tmp_path)

    asyncio.run(scenario())
