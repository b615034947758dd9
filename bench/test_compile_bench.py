"""Compile and reload (policy/compile.py, classify/engine.py) at 5 M names: the categories image
built from the ListStore (time, bytes per name), mapped again (Engine.open), and the peak
memory of a compile running next to a live, mapped image."""

from __future__ import annotations

import json
import mmap
import subprocess
import sys
from pathlib import Path

from edufilter.classify._classify import DomainTable
from edufilter.policy.compile import write_categories_image
from edufilter.classify.image import Image
from edufilter.policy.liststore import ListStore
from mixes import TINY
from policyscale import PolicyScale

COMPILE_ROUNDS = 1 if TINY else 3
RELOAD_ROUNDS = 2 if TINY else 10
# A compile in a process of its own, as `edufilter lists update` runs beside the workers.
COMPILE_SCRIPT = """
import json, sys
from pathlib import Path
from edufilter.policy.compile import write_categories_image
from edufilter.policy.liststore import ListStore

def high_water():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

before = high_water()
if sys.argv[3] == "compile":
    write_categories_image(ListStore.in_state_dir(sys.argv[1]).categories(), Path(sys.argv[2]))
print(json.dumps({"before": before, "peak": high_water()}))
"""


def compile_in_child(state_dir: Path, out: Path, action: str) -> dict[str, int]:
    completed = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, str(state_dir), str(out), action],
                               capture_output=True, text=True, check=True, timeout=600)
    return json.loads(completed.stdout)


def fault_in(view: memoryview) -> int:
    """Reads a byte of every page, so the mapping is resident as in a busy worker."""
    return sum(view[offset] for offset in range(0, len(view), mmap.PAGESIZE))


def test_compile_categories(benchmark, policy_scale: PolicyScale, tmp_path: Path) -> None:
    benchmark.group = "compile"
    out = tmp_path / "categories.img"

    def compile_image() -> int:
        return write_categories_image(ListStore.in_state_dir(policy_scale.state_dir).categories(), out).image_bytes

    image_bytes = benchmark.pedantic(compile_image, rounds=COMPILE_ROUNDS)
    names = DomainTable(Image(out).section("names")).entry_count
    benchmark.extra_info.update(time_figure="compile_seconds", figures={
        "image_bytes": image_bytes, "image_names": names, "image_bytes_per_name": image_bytes / names,
        "import_seconds": policy_scale.import_seconds})


def test_reload(benchmark, policy_scale: PolicyScale) -> None:
    """Mapping both images and checking them (CRC-32), as a worker does on a swap."""
    benchmark.group = "compile"
    benchmark.extra_info.update(time_figure="reload_seconds")
    engine = benchmark.pedantic(policy_scale.engine, rounds=RELOAD_ROUNDS)
    assert engine.classifier.group_count == 1


def test_compile_memory_next_to_live_image(benchmark, policy_scale: PolicyScale, tmp_path: Path) -> None:
    """Peak RSS of a compile process while this process keeps the live image mapped and
    resident, against the live image's size."""
    benchmark.group = "compile"
    live = policy_scale.engine()
    fault_in(live.categories_image.section("names"))
    live_bytes = live.categories_image.size
    idle = compile_in_child(policy_scale.state_dir, tmp_path / "unused.img", "import-only")
    measured = benchmark.pedantic(compile_in_child, args=(policy_scale.state_dir, tmp_path / "new.img", "compile"),
                                  rounds=1)
    benchmark.extra_info.update(figures={
        "compile_peak_rss_bytes": measured["peak"], "live_image_bytes": live_bytes,
        "compile_peak_over_live": measured["peak"] / live_bytes,
        "interpreter_rss_bytes": idle["peak"], "live_plus_compile_over_live": (live_bytes + measured["peak"]) / live_bytes,
    })
