"""Telling a running daemon that the compiled policy changed: SIGHUP to the pid it wrote."""

from __future__ import annotations

import os
import signal
from pathlib import Path

RUN_DIR = "run"
PID_FILE = "edufilter.pid"


def pid_file(state_dir: Path) -> Path:
    return Path(state_dir) / RUN_DIR / PID_FILE


def running_pid(state_dir: Path) -> int | None:
    """The daemon's pid when one runs for this state directory, else None."""
    try:
        pid = int(pid_file(state_dir).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def request_reload(state_dir: Path) -> bool:
    """Ask the daemon to map the new images; False when no daemon runs (nothing to do)."""
    pid = running_pid(state_dir)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    return True
