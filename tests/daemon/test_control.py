"""One daemon per state folder and per network namespace (the claim), without root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edufilter.daemon.control import claim_daemon
from edufilter.errors import EdufilterError
from edufilter.policy.publish import running_pid
from edufilter.state import StateDir


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
    assert not StateDir(tmp_path / "state").pid_file.exists()
    claim_daemon(tmp_path / "state", address).release()  # free again once released
