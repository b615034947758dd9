"""Catching up a policy change that was stored but never compiled."""

from __future__ import annotations

from pathlib import Path

from edufilter.policy.publish import catch_up_images
from edufilter.state import StateDir


def test_a_change_stored_and_never_compiled_is_compiled_at_start(tmp_path: Path) -> None:
    """kill -9 between the commit and the compile: the next start compiles what the image lacks
    and removes the temporary image the dead compile left."""
    from edufilter.classify.image import Image
    from edufilter.policy.compile import compile_policy
    from edufilter.policy.model import Group
    from edufilter.policy.store import PolicyStore

    with PolicyStore(StateDir(tmp_path).policy_db) as store:
        store.add_group(Group("guests", "Guests"))
    compile_policy(tmp_path)
    assert catch_up_images(tmp_path) is None, "an image as new as the store is left alone"
    with PolicyStore(StateDir(tmp_path).policy_db) as store:
        store.add_group(Group("staff", "Staff"))
        stored = store.version
    stale = StateDir(tmp_path).images / ".policy.img.q1w2e3.tmp"
    stale.write_bytes(b"\0" * 4096)
    assert Image(StateDir(tmp_path).policy_image).meta["version"] < stored
    assert catch_up_images(tmp_path) == stored
    assert Image(StateDir(tmp_path).policy_image).meta["version"] == stored
    assert not stale.exists()


def test_a_fresh_state_folder_is_left_to_the_first_change(tmp_path: Path) -> None:

    assert catch_up_images(tmp_path) is None
    assert not StateDir(tmp_path).images.exists()
