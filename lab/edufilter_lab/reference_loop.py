"""The limit reference of the queue benchmarks: bench/nfq_accept_all.c, compiled at run time.

A minimal C accept-all loop over libnetfilter_queue with batched verdicts; the benchmark builds
it on the machine at hand so it measures what the queue mechanism itself can do there.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from edufilter_lab.netns import LabError

SOURCE = Path(__file__).resolve().parents[3] / "bench" / "nfq_accept_all.c"
LIBRARIES = ("-lnetfilter_queue", "-lmnl")


def build_accept_all(output_dir: Path) -> Path:
    """Compile the accept-all reference into output_dir (gcc -O2) and return the binary."""
    compiler = shutil.which("gcc")
    if compiler is None:
        raise LabError("gcc is not installed: the accept-all reference cannot be built")
    if not SOURCE.is_file():
        raise LabError(f"{SOURCE} is missing: the reference builds from a source checkout")
    output_dir.mkdir(parents=True, exist_ok=True)
    binary = output_dir / "nfq_accept_all"
    command = [compiler, "-O2", "-Wall", "-o", str(binary), str(SOURCE), *LIBRARIES]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as error:
        raise LabError(f"building {SOURCE.name} timed out") from error
    if completed.returncode != 0:
        raise LabError(
            f"building {SOURCE.name} failed (are libnetfilter-queue-dev and libmnl-dev "
            f"installed?): {completed.stderr.strip()[-2000:]}"
        )
    return binary
