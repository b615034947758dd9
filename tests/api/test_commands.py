"""`edufilter token` and `edufilter api` as an administrator runs them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

EDUFILTER = [sys.executable, "-m", "edufilter"]


def edufilter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDUFILTER, *args], capture_output=True, text=True, timeout=60)


def test_token_create_list_revoke(tmp_path: Path) -> None:
    state = str(tmp_path / "state")  # made if missing
    made = edufilter("token", "create", "--role", "admin", "--name", "first-admin", "--state-dir", state)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert re.fullmatch(r"eft_[A-Za-z0-9_-]{43}", secret) and "not shown again" in made.stderr

    teacher = edufilter("token", "create", "--role", "teacher", "--groups", "class-5a", "--state-dir", state)
    assert teacher.returncode == 2 and "group 'class-5a' does not exist" in teacher.stderr

    listed = edufilter("token", "list", "--state-dir", state)
    assert "first-admin" in listed.stdout and secret not in listed.stdout
    assert edufilter("token", "revoke", "first-admin", "--state-dir", state).returncode == 0
    listing = edufilter("token", "list", "--json", "--state-dir", state).stdout
    revoked = [json.loads(line) for line in listing.splitlines()]
    assert revoked[0]["name"] == "first-admin" and revoked[0]["revoked_at"] is not None
    again = edufilter("token", "revoke", "first-admin", "--state-dir", state)
    assert again.returncode == 2 and "already revoked" in again.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_api_command_serves_until_stopped(tmp_path: Path, stop_signal: int) -> None:
    state = str(tmp_path)
    secret = edufilter("token", "create", "--role", "viewer", "--state-dir", state).stdout.strip()
    server = subprocess.Popen([*EDUFILTER, "api", "--state-dir", state, "--port", "0"],
                              stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", line)
        assert match, line
        base = match.group(1)
        assert requests.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
        answer = requests.get(f"{base}/api/v1/status", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
        assert answer.json()["policy_version"] == 0
    finally:
        server.send_signal(stop_signal)
        assert server.wait(timeout=30) == 0
