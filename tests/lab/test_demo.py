"""`make demo` runs: the bundled policy filters a lab school, and everything is cleaned up."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("require_lab")]


def test_demo_filters_the_lab_school_with_the_bundled_policy() -> None:
    completed = subprocess.run([sys.executable, "-m", "edufilter_lab.demo"], capture_output=True, text=True,
                               timeout=240, check=False)
    out = completed.stdout
    assert completed.returncode == 0, out[-3000:] + completed.stderr[-3000:]
    lines = {line.split()[0] + " " + line.split()[1]: line for line in out.splitlines() if line.count(" ") > 3}
    assert "HTTP 200" in lines["primary https://www.smartschool.be"]
    assert "connection reset" in lines["primary https://www.facebook.com"]
    assert "block page" in lines["primary http://www.roblox.com"]
    assert "CNAME forcesafesearch.google.com" in lines["primary dns://www.google.com"]
    assert "HTTP 200" in lines["staff https://www.facebook.com"]
    assert "its netfilter rules are gone" in out
