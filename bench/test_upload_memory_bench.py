"""Peak memory of the admin API while a 64 MiB list file is uploaded, read and stored (issue:
at most 200 MB): once without compiling (the upload's own path), once as `edufilter api` runs
it, compile included. A figure of memory, not of time: one round each."""

from __future__ import annotations

import sys
from pathlib import Path

from mixes import TINY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "api"))

from apiprocess import API_WITHOUT_COMPILE, ApiProcess, megabytes, plain_list  # noqa: E402

UPLOAD_MIB = 1 if TINY else 64
UPLOAD_PEAK_LIMIT_MB = 200


def _peak_during_upload(command: list[str], state: Path, data: bytes) -> tuple[int, int]:
    """(peak RSS in MB before the upload, peak RSS in MB once it is done)."""
    server = ApiProcess(command, state)
    try:
        before = megabytes(server.process.pid, "VmHWM")
        done = server.wait_for(server.upload(data), "done")
        assert done["added"] == data.count(b"\n")
        return before, megabytes(server.process.pid, "VmHWM")
    finally:
        server.stop()


def test_upload_peak_memory(benchmark, tmp_path: Path) -> None:
    data = plain_list(UPLOAD_MIB)
    figures: dict[str, float] = {}

    def measure() -> None:
        (tmp_path / "own").mkdir()
        (tmp_path / "api").mkdir()
        figures["upload_rss_before_mb"], figures["upload_peak_rss_mb"] = _peak_during_upload(
            [sys.executable, "-c", API_WITHOUT_COMPILE, str(tmp_path / "own")], tmp_path / "own", data)
        _, figures["upload_and_compile_peak_rss_mb"] = _peak_during_upload(
            [sys.executable, "-m", "edufilter", "api", "--state-dir", str(tmp_path / "api"), "--port", "0"],
            tmp_path / "api", data)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info["figures"] = figures
    benchmark.extra_info["upload_bytes"] = len(data)
    assert figures["upload_peak_rss_mb"] <= UPLOAD_PEAK_LIMIT_MB, figures
