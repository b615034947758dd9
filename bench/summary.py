"""The benchmark report and the release gate.

    python bench/summary.py build RAW.json [RAW.json ...]   # latest.json, a table, latest.png
    python bench/summary.py check [bench/results/latest.json]

`build` turns pytest-benchmark JSON into named figures (a rate from a benchmark's median
time and the count it processed, a time, or figures a benchmark measured itself), evaluates
the targets of bench/targets.toml against them, writes bench/results/latest.json, prints a
table and draws the headroom of each target (bench/results/latest.png, with matplotlib).
`check` exits 1 when a gated target is missed or was not measured, naming each and by how much.
Both say where the policy benchmarks' category lists came from: updated from upstream, the
real lists in ../shared/blocklists, or generated (bench/listsource.py).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import operator
import platform
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TARGETS = BENCH / "targets.toml"
RESULTS = BENCH / "results"
LATEST = RESULTS / "latest.json"
CHART = RESULTS / "latest.png"
PREAMBLE_AND_GAP_BYTES = 20
BUSY_LOAD = 0.5  # per core: a 1-minute load average above this before a run means other work was running
SHARED_CPU_NOTE = ("end to end on a 2-core machine: the lab gives the gateway (forwarding, conntrack, queue, filter) "
                   "one core and the clients and servers the other, by pinning and receive steering (RPS), for both "
                   "sides of each ratio; only the scaling figures let them share")
_OPERATORS: dict[type, Callable[[float, float], float]] = {ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(expression: str | float, names: Mapping[str, float]) -> float | None:
    """A target expression (names, numbers, * and /); None when a name was not measured."""
    if isinstance(expression, (int, float)):
        return float(expression)

    def walk(node: ast.AST) -> float | None:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            value = names.get(node.id)
            return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else None
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = walk(node.left), walk(node.right)
            if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
                return None
            return _OPERATORS[type(node.op)](left, right)
        raise ValueError(f"target expression {expression!r}: only names, numbers, * and / are allowed")

    return walk(ast.parse(expression, mode="eval"))


def constants(targets: dict) -> dict[str, float]:
    """Line rates (frames/s) and the school's rates, from their stated assumptions."""
    found = {line["name"]: line["bits_per_second"] / ((line["mean_frame_bytes"] + PREAMBLE_AND_GAP_BYTES) * 8)
             for line in targets.get("line_rate", [])}
    school = targets.get("school")
    if school:
        peak = school["users"] * school["pages_per_user_per_second"] * school["background_factor"] * \
            school["burst_factor"]
        found["school_new_flows_per_s"] = peak * school["connections_per_page"]
        found["school_dns_qps"] = peak * school["dns_queries_per_page"]
    return found


def figures_of(raw: dict) -> tuple[dict[str, float], dict[str, str]]:
    """Named figures and the description of what each benchmark measured."""
    figures: dict[str, float] = {}
    descriptions: dict[str, str] = {}
    for bench in raw.get("benchmarks", []):
        info, stats = bench.get("extra_info", {}), bench.get("stats") or {}
        if "rate_figure" in info and stats.get("median"):
            figures[info["rate_figure"]] = info["count"] / stats["median"]
        if "time_figure" in info and stats.get("median"):
            figures[info["time_figure"]] = stats["median"]
        figures.update(info.get("figures", {}))
        if info.get("mix"):
            descriptions[bench["name"]] = info["mix"]
    return figures, descriptions


def judge(target: dict, names: Mapping[str, float]) -> dict:
    value = evaluate(target["value"], names)
    bound_kind = "min" if "min" in target else "max"
    required = evaluate(target[bound_kind], names)
    headroom = None
    if value is not None and required is not None:
        headroom = value / required if bound_kind == "min" else (required / value if value > 0 else math.inf)
    status = "not measured" if headroom is None else ("pass" if headroom >= 1 else "miss")
    return {
        "id": target["id"], "title": target["title"], "value": value, "bound": bound_kind, "required": required,
        "expression": target["value"], "headroom": headroom, "status": status, "gate": target.get("gate", True),
        "source": target.get("source", ""), "note": target.get("note", ""),
    }


def machine(raw: dict) -> dict:
    info = raw.get("machine_info", {})
    commit = subprocess.run(["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {
        "cpu": info.get("cpu", {}).get("brand_raw", platform.processor()),
        "cores": info.get("cpu", {}).get("count"),
        "kernel": info.get("release", platform.release()),
        "python": info.get("python_version", platform.python_version()),
        "load_average_start": info.get("load_average_start"),
        "load_average_end": info.get("load_average_end"),
        "commit": commit or None,
        "run_at": raw.get("datetime"),
    }


def lists_used(raws: list[dict]) -> dict | None:
    """The list source the last run with policy benchmarks reported (conftest.py), or None."""
    return next((raw["lists"] for raw in reversed(raws) if raw.get("lists")), None)


def lists_line(lists: dict | None) -> str:
    if lists is None:
        return "lists: none (no policy benchmark ran)"
    line = f"lists: {lists['kind']} ({lists['detail']})"
    if lists.get("synthetic_names"):
        line += f", synthetic names from {lists['synthetic_names']}"
    if lists.get("update_failure"):
        line += f"; the asked-for update failed: {lists['update_failure']}"
    return line


def build(raw_paths: list[Path]) -> dict:
    targets = tomllib.loads(TARGETS.read_text())
    figures: dict[str, float] = {}
    descriptions: dict[str, str] = {}
    raws = [json.loads(path.read_text()) for path in raw_paths]
    for raw in raws:
        found, described = figures_of(raw)
        figures.update(found)
        descriptions.update(described)
    known = constants(targets)
    names = {**known, **figures}
    host = machine(raws[-1] if raws else {})
    notes = [SHARED_CPU_NOTE]
    if (host["load_average_start"] or [0])[0] > BUSY_LOAD * (host["cores"] or 1):
        notes.append(f"the machine was busy before the run (load average {host['load_average_start']}): other work "
                     "shared the CPUs and moves the figures; release figures come from an idle machine")
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": host,
        "lists": lists_used(raws),
        "notes": notes,
        "constants": known,
        "figures": dict(sorted(figures.items())),
        "mixes": descriptions,
        "targets": [judge(target, names) for target in targets["target"]],
    }


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 0.01 <= abs(value) < 1000:
        return f"{value:.3g}"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.2e}"


def table(summary: dict) -> str:
    rows = [("target", "measured", "needs", "headroom", "status")]
    for target in summary["targets"]:
        sign = ">=" if target["bound"] == "min" else "<="
        headroom = "-" if target["headroom"] is None else f"{target['headroom']:.2f}x"
        status = target["status"] + ("" if target["gate"] else " (info)")
        rows.append((target["title"], number(target["value"]), f"{sign} {number(target['required'])}", headroom, status))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                       for column, (cell, width) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    host = summary["machine"]
    lines.append(f"\n{host['cpu']}, {host['cores']} cores, kernel {host['kernel']}, Python {host['python']}, "
                 f"commit {host['commit']}; load average {host['load_average_start']} -> {host['load_average_end']}")
    lines.append(lists_line(summary.get("lists")))
    lines += [f"note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def draw(summary: dict, path: Path) -> bool:
    """Headroom of every measured target on a log scale, the target at 1; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    measured = [target for target in summary["targets"] if target["headroom"] is not None]
    height = 0.32 * len(measured) + 1.6
    figure, axes = plt.subplots(figsize=(12, height))
    labels = [target["title"] for target in measured]
    values = [min(max(target["headroom"], 1e-3), 1e4) for target in measured]
    colours = ["#2e7d32" if target["status"] == "pass" else "#c62828" for target in measured]
    bars = axes.barh(range(len(measured)), values, color=colours)
    for bar, target in zip(bars, measured):
        if not target["gate"]:
            bar.set_alpha(0.45)
            bar.set_hatch("//")
        axes.text(bar.get_width() * 1.05, bar.get_y() + bar.get_height() / 2, f"{target['headroom']:.2f}x",
                  va="center", fontsize=7)
    axes.axvline(1.0, color="black", linewidth=1)
    axes.set_xscale("log")
    axes.set_yticks(range(len(measured)), labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("headroom: measured / target (log scale; 1 = target; hatched: informative, not gated)")
    host = summary["machine"]
    axes.set_title(f"edufilter benchmarks {summary['generated_at'][:10]} (commit {host['commit']}, {host['cores']} cores)",
                   fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def check(summary: dict) -> list[str]:
    """Why the release gate fails: one line per gated target missed or not measured."""
    problems = []
    for target in summary["targets"]:
        if not target["gate"]:
            continue
        if target["status"] == "not measured":
            problems.append(f"not measured: {target['title']} ({target['expression']}); run the whole `make bench` "
                            "(the end-to-end part needs root and network namespaces)")
        elif target["status"] == "miss":
            if target["bound"] == "min":
                by_how_much = f"short by {1 - target['value'] / target['required']:.0%}"
            else:
                by_how_much = f"over by {target['value'] / target['required'] - 1:.0%}"
            sign = ">=" if target["bound"] == "min" else "<="
            problems.append(f"missed: {target['title']}: {number(target['value'])}, needs {sign} "
                            f"{number(target['required'])} ({by_how_much}; headroom {target['headroom']:.2f}x)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    build_parser = actions.add_parser("build", help="raw pytest-benchmark JSON -> latest.json, table, chart")
    build_parser.add_argument("raw", type=Path, nargs="+")
    build_parser.add_argument("--out", type=Path, default=LATEST)
    build_parser.add_argument("--chart", type=Path, default=CHART)
    check_parser = actions.add_parser("check", help="exit 1 when a gated target is missed")
    check_parser.add_argument("summary", type=Path, nargs="?", default=LATEST)
    args = parser.parse_args(argv)
    if args.action == "build":
        summary = build(args.raw)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
        print(table(summary))
        print(f"\nwrote {args.out}" + (f" and {args.chart}" if draw(summary, args.chart) else
                                       " (no chart: install the bench extra for matplotlib)"))
        return 0
    summary = json.loads(args.summary.read_text())
    problems = check(summary)
    for problem in problems:
        print(problem)
    print(lists_line(summary.get("lists")))
    print("release check: " + ("FAILED" if problems else "all gated targets met"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
