"""Code run on a small, nearly full disk: a tmpfs mounted in a private mount namespace
(`unshare -m`), so the mount exists only for that process and goes away with it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

MOUNT_POINT = "/mnt"  # in the private mount namespace only

FILL = '''
import os, sys
from pathlib import Path

def fill_disk(directory: Path, leave: int = 0) -> None:
    """Write a filler file until the disk refuses, then give back `leave` bytes."""
    with open(directory / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\\0" * 4096)
        except OSError:
            pass
    os.truncate(directory / "filler", max(0, os.path.getsize(directory / "filler") - leave))
'''


def run_on_small_disk(code: str, size: str = "1m") -> subprocess.CompletedProcess[str]:
    """Run Python `code` with sys.argv[1] a fresh tmpfs of `size` and fill_disk() defined."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a private tmpfs needs root and unshare")
    mount = f'mount -t tmpfs -o size="$1" edufilter-test {MOUNT_POINT} && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, "sh", size, sys.executable, "-c",
         FILL + code, MOUNT_POINT], capture_output=True, text=True, timeout=60, env=os.environ.copy())
