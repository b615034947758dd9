"""The benchmark code still runs (on a tiny input, nothing timed), and the release gate judges
targets as bench/targets.toml says. The benchmarks themselves are `make bench`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import summary  # noqa: E402  (bench/ is not a package)


def test_non_lab_benchmarks_run_on_a_tiny_input(tmp_path: Path) -> None:
    environment = {**os.environ, "EDUFILTER_BENCH_TINY": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", str(BENCH), "-m", "not lab", "-q", "-p", "no:cacheprovider",
         "--benchmark-disable", f"--basetemp={tmp_path / 'bench'}"],
        env=environment, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert " passed" in completed.stdout and "failed" not in completed.stdout


def raw_report(figures: dict[str, float]) -> dict:
    """A pytest-benchmark report carrying the given figures, as the lab benchmarks write them."""
    return {"machine_info": {"cpu": {"brand_raw": "test", "count": 2}}, "datetime": "2026-01-01T00:00:00",
            "benchmarks": [{"name": "test_figures", "stats": {"median": 0.5},
                            "extra_info": {"figures": figures, "rate_figure": "fastpath_pps", "count": 2_000_000}}]}


def test_rates_come_from_the_median_and_targets_from_expressions(tmp_path: Path) -> None:
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(raw_report({"fastpath_reference_pps": 100_000, "compile_seconds": 12.5})))
    built = summary.build([raw])
    assert built["figures"]["fastpath_pps"] == 4_000_000
    targets = {target["id"]: target for target in built["targets"]}
    assert targets["fastpath-vs-reference"]["value"] == 40 and targets["fastpath-vs-reference"]["status"] == "pass"
    assert targets["compile-time"]["status"] == "miss" and targets["compile-time"]["headroom"] == pytest.approx(0.8)
    assert targets["tcp-throughput"]["status"] == "not measured"
    assert built["constants"]["line_1g_64b_pps"] == pytest.approx(1_488_095, rel=1e-6)
    assert built["constants"]["line_1g_imix_pps"] == pytest.approx(327_400, rel=1e-3)


def test_the_gate_names_each_missed_or_unmeasured_target(tmp_path: Path) -> None:
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(raw_report({"fastpath_reference_pps": 100_000, "compile_seconds": 12.5})))
    problems = summary.check(summary.build([raw]))
    assert any(problem.startswith("missed: compile the categories image") and "over by 25%" in problem
               for problem in problems)
    assert any(problem.startswith("not measured: bulk TCP") for problem in problems)
    assert not any("non-QUIC mix: fast path / dpkt reference" in problem for problem in problems)
    assert any(problem.startswith("not measured: decode+extract, mix with QUIC") for problem in problems)
    assert not any("10 Gbit/s" in problem for problem in problems), "informative targets never fail the gate"


def test_only_arithmetic_is_allowed_in_target_expressions() -> None:
    assert summary.evaluate("a / b * 2", {"a": 3.0, "b": 1.5}) == 4.0
    assert summary.evaluate("a / missing", {"a": 3.0}) is None
    with pytest.raises(ValueError):
        summary.evaluate("__import__('os')", {})
