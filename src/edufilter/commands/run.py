"""`edufilter run` (the daemon) and `edufilter status`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from edufilter.commands.types import Subparsers
from edufilter.state import StateDir


def register(commands: Subparsers) -> None:
    run = commands.add_parser(
        "run", help="filter: install the netfilter rules and run one worker per queue (needs root)",
        description="The gateway daemon. Reads the configuration (default /etc/edufilter/edufilter.toml), "
        "installs a stored or the bundled default policy, filters until SIGTERM; SIGHUP reloads the policy.",
    )
    run.add_argument("--config", type=Path, help="TOML configuration file")
    run.add_argument("--state-dir", type=Path, help="state folder (overrides the configuration)")
    run.add_argument("--no-api", action="store_true", help="do not serve the admin API")
    run.set_defaults(handler=run_daemon)

    status = commands.add_parser("status", help="queues, counters and the live policy version of the daemon")
    status.add_argument("--config", type=Path, help="TOML configuration file")
    status.add_argument("--state-dir", type=Path, help="state folder (overrides the configuration)")
    status.add_argument("--json", action="store_true", help="the status document as JSON")
    status.set_defaults(handler=show_status)


def run_daemon(args: argparse.Namespace) -> int:
    from edufilter.config import load_config
    from edufilter.daemon.supervisor import Supervisor

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    config = load_config(args.config, args.state_dir)
    return asyncio.run(Supervisor(config, args.config, serve_api=not args.no_api).run())


def show_status(args: argparse.Namespace) -> int:
    from edufilter.config import load_config
    from edufilter.output.status import read_status
    from edufilter.policy.publish import running_pid

    config = load_config(args.config, args.state_dir)
    status = read_status(StateDir(config.state_dir).status)
    pid = running_pid(config.state_dir)
    rules_installed = _rules_installed()
    if status is not None and pid is None:
        _mark_dead_workers(status)
    if args.json:
        print(json.dumps({"running": pid is not None, "rules_installed": rules_installed, **(status or {})}))
        return 0 if pid is not None else 3
    if status is None:
        print(f"edufilter is not running (no status in {config.state_dir})")
        if rules_installed:
            print(_orphaned_rules(config.queue.fail_open))
        return 3
    print(f"edufilter {'running, pid ' + str(pid) if pid else 'NOT running (last status below)'}; "
          f"policy version {status['policy']['version']}; status of {_age(status['updated_at'])}")
    if pid is None and rules_installed:
        print(_orphaned_rules(config.queue.fail_open))
    problem = status["policy"].get("problem")
    if problem:
        print(f"policy NOT up to date: {problem}")
    storage = status.get("storage") or {}
    if storage.get("lost_events"):
        print(f"storage: {storage['lost_events']} block events lost (the state disk was full)")
    rules = status.get("rules")
    if rules:
        reinstalled = rules.get("reinstalled", 0)
        print(f"rules: table {rules['table']}, {rules['backend']} backend; {rules['queued_packets']} packets queued"
              + (f"; reinstalled after another tool removed or changed them: {reinstalled} (last: "
                 f"{rules.get('last_reinstall')})" if reinstalled else ""))
    rows = [("WORKER", "QUEUE", "PID", "STATE", "RESTARTS", "HANGS", "PACKETS", "FLOWS", "ALLOW", "BLOCK", "DROP",
             "QUEUED", "Q-DROPPED", "U-DROPPED")]
    for queue in status["queues"]:
        verdicts = queue["verdicts"]
        rows.append(tuple(str(value) for value in (
            queue["worker"], queue["queue"], queue["pid"] or "-", queue["state"], queue["restarts"],
            queue.get("hangs", 0),
            queue["packets"], queue.get("flows", 0), verdicts.get("1", 0), verdicts.get("2", 0), verdicts.get("3", 0),
            queue["queue_total"], queue["queue_dropped"], queue["user_dropped"])))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
    totals = status["totals"]
    if "fail_open" in totals:
        print(f"uninspected: {totals['fail_open']} packets passed while no worker could take them (fail-open)")
    elif "fail_closed_dropped" in totals:
        print(f"uninspected: {totals['fail_closed_dropped']} packets dropped with no worker to take them "
              "(fail-closed)")
    if totals.get("evasion"):
        print(f"evasion: {totals['evasion']} flows reset as circumvention attempts (bypass shield)")
    if status.get("last_reload"):
        reload = status["last_reload"]
        print(f"last reload {reload['at']}: {reload['result']} ({reload['duration_ms']} ms)")
    return 0 if pid is not None else 3


def _rules_installed() -> bool | None:
    """Whether this namespace holds edufilter's table; None when it cannot be read (not root)."""
    from edufilter.errors import NetfilterError
    from edufilter.rules.netfilter import table_installed

    try:
        return table_installed()
    except NetfilterError:
        return None


def _mark_dead_workers(status: dict) -> None:
    """The last status of a daemon that died names workers that have gone with it: say so."""
    for queue in status.get("queues", []):
        if queue.get("state") != "stopped" and not (queue.get("pid") and _is_worker(queue["pid"])):
            queue["state"] = "dead"
            queue["pid"] = None


def _is_worker(pid: int) -> bool:
    try:
        return b"edufilter.daemon.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _orphaned_rules(fail_open: bool) -> str:
    effect = ("lets forwarded traffic pass UNFILTERED (fail-open)" if fail_open
              else "DROPS the forwarded traffic it would queue (fail-closed)")
    return (f"rules: still installed (table inet edufilter) with no worker behind them: the kernel {effect}. "
            "`systemctl restart edufilter` (or `edufilter run`) takes them over; "
            "`nft delete table inet edufilter` removes them.")


def _age(stamp: str) -> str:
    seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(stamp)).total_seconds()
    return f"{seconds:.0f} s ago"
