"""How long a queue is without its worker: a worker killed with SIGKILL until a new one has
the queue bound again, against the floor of any restart measured in the same run (a fresh
interpreter importing the worker module). Lab, root; run alone:

    PYTHONPATH=src pytest bench/test_daemon_bench.py -p no:cacheprovider --benchmark-only -s
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edufilter_lab.netns import Lab, cleanup_stale, namespaces_available
from edufilter_lab.school import start_filtered_school
from labbench import median

pytestmark = pytest.mark.lab

KILLS = 7
IMPORT_ROUNDS = 7

# Run inside the gateway's namespace (its /proc/net/netfilter is the namespace's own): kill the
# worker bound to the queue, poll until another process binds it.
KILL_AND_WAIT = r"""
import json, os, signal, sys, time
queue = int(sys.argv[1])

def bound() -> int | None:
    with open("/proc/net/netfilter/nfnetlink_queue") as table:
        for line in table:
            fields = line.split()
            if int(fields[0]) == queue:
                return int(fields[1])
    return None

old = bound()
os.kill(old, signal.SIGKILL)  # the first netlink socket's port id is the process id
killed = time.monotonic()
deadline = killed + 10
while time.monotonic() < deadline:
    port = bound()
    if port is not None and port != old:
        print(json.dumps({"seconds": time.monotonic() - killed}))
        break
    time.sleep(0.002)
else:
    print(json.dumps({"seconds": None}))
"""

IMPORT_WORKER = [sys.executable, "-c", "import edufilter.daemon.worker"]


def test_worker_restart_time(benchmark, tmp_path: Path) -> None:
    reason = namespaces_available()
    if reason is not None:
        pytest.skip(reason)
    cleanup_stale()
    benchmark.group = "daemon: a killed worker's queue bound again"

    def measure() -> dict:
        with Lab() as lab:
            school = start_filtered_school(lab, tmp_path)
            school.add_pupil("pupil", 16)
            policy = tmp_path / "policy"
            policy.mkdir()
            (policy / "school.toml").write_text('[settings]\ndefault_group = "guests"\n[groups.guests]\n')
            school.start_daemon(policy, "[queue]\nworkers = 2\n", lists={})
            try:
                restarts = []
                for _ in range(KILLS):
                    school.wait_for_workers()
                    done = school.gateway.run([sys.executable, "-c", KILL_AND_WAIT, "0"], timeout=20)
                    restarts.append(json.loads(done.stdout)["seconds"])
            finally:
                school.stop_daemon()
        imports = []
        for _ in range(IMPORT_ROUNDS):
            started = time.monotonic()
            subprocess.run(IMPORT_WORKER, check=True)
            imports.append(time.monotonic() - started)
        restart, floor = median(restarts), median(imports)
        print(f"\nworker restart: median {restart:.3f} s (max {max(restarts):.3f} s), "
              f"{restart / floor:.2f}x a bare interpreter importing the worker ({floor:.3f} s)")
        benchmark.extra_info.update(restarts=[round(seconds, 3) for seconds in restarts])
        return {"worker_restart_seconds": restart, "worker_restart_max_seconds": max(restarts),
                "worker_import_seconds": floor, "worker_restart_over_import": restart / floor}

    figures = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(figures=figures, mix="a killed worker (SIGKILL) until its queue is bound again, "
                                f"median of {KILLS}, against a bare interpreter importing the worker module")
