"""Prints packets/s and the fast/baseline ratio per benchmark group from pytest-benchmark JSON."""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> int:
    report = json.load(open(path))
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    machine = report.get("machine_info", {})
    print(f"machine: {machine.get('cpu', {}).get('brand_raw', '?')}, python {machine.get('python_version', '?')}")
    for bench in report["benchmarks"]:
        info = bench.get("extra_info", {})
        if "packets" not in info:
            continue
        rate = info["packets"] / bench["stats"]["median"]
        groups[bench["group"]][info.get("role", bench["name"])] = rate
        print(f"{bench['name']:<45} {rate / 1e6:8.3f} Mpackets/s  (median of {bench['stats']['rounds']} rounds)")
    for group, rates in groups.items():
        if "fast" in rates and "baseline" in rates:
            print(f"{group}: fast path = {rates['fast'] / rates['baseline']:.1f} x the dpkt reference")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
