"""The fast-path and domain-table tests and fuzzers, again, against an AddressSanitizer build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_fast_path_is_clean_under_address_sanitizer():
    runtime = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not Path(runtime).is_file():
        pytest.skip("gcc's libasan is not installed (see packaging/apt-packages.txt)")
    run = subprocess.run(
        [str(ROOT / "scripts" / "fuzz-asan.sh"), "-x"],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=900,
    )
    output = run.stdout + run.stderr
    assert "AddressSanitizer" not in output, output[-5000:]
    assert run.returncode == 0, output[-5000:]
