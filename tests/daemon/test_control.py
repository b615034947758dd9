"""One daemon per state folder and per network namespace (the claim), without root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edufilter.daemon.control import catch_up_images, claim_daemon, pid_file, running_pid
from edufilter.errors import EdufilterError


def test_a_second_daemon_is_refused_beside_a_live_one(tmp_path: Path) -> None:
    # An address of this test's own: the real one belongs to the namespace's daemon, if any.
    address = f"\0edufilter-test-{os.getpid()}".encode()
    first = claim_daemon(tmp_path / "state", address)
    try:
        assert running_pid(tmp_path / "state") == os.getpid()
        with pytest.raises(EdufilterError, match=rf"another edufilter run \(pid {os.getpid()}\) uses the state folder"):
            claim_daemon(tmp_path / "state", f"\0edufilter-test-other-{os.getpid()}".encode())
        with pytest.raises(EdufilterError, match="another edufilter run filters in this network namespace"):
            claim_daemon(tmp_path / "elsewhere", address)
    finally:
        first.release()
    assert not pid_file(tmp_path / "state").exists()
    claim_daemon(tmp_path / "state", address).release()  # free again once released


def test_a_change_stored_and_never_compiled_is_compiled_at_start(tmp_path: Path) -> None:
    """kill -9 between the commit and the compile: the next start compiles what the image lacks
    and removes the temporary image the dead compile left."""
    from edufilter.policy.compile import POLICY_IMAGE, compile_policy, images_dir
    from edufilter.classify.image import Image
    from edufilter.policy.model import Group
    from edufilter.policy.store import POLICY_DB, PolicyStore

    with PolicyStore(tmp_path / POLICY_DB) as store:
        store.add_group(Group("guests", "Guests"))
    compile_policy(tmp_path)
    assert catch_up_images(tmp_path) is None, "an image as new as the store is left alone"
    with PolicyStore(tmp_path / POLICY_DB) as store:
        store.add_group(Group("staff", "Staff"))
        stored = store.version
    stale = images_dir(tmp_path) / ".policy.img.q1w2e3.tmp"
    stale.write_bytes(b"\0" * 4096)
    assert Image(images_dir(tmp_path) / POLICY_IMAGE).meta["version"] < stored
    assert catch_up_images(tmp_path) == stored
    assert Image(images_dir(tmp_path) / POLICY_IMAGE).meta["version"] == stored
    assert not stale.exists()


def test_a_fresh_state_folder_is_left_to_the_first_change(tmp_path: Path) -> None:
    from edufilter.policy.compile import images_dir

    assert catch_up_images(tmp_path) is None
    assert not images_dir(tmp_path).exists()
