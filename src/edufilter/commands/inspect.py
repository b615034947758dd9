"""`edufilter inspect`: the names in a capture file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edufilter.commands.types import Subparsers, moment


def register(commands: Subparsers) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="list the names (DNS, TLS SNI, HTTP Host, QUIC SNI) in a pcap/pcapng capture",
        description="Print one line per name found in a capture file, on the frame that completes it.",
    )
    inspect.add_argument("file", help="pcap or pcapng capture file")
    inspect.add_argument("--json", action="store_true", help="one JSON object per line")
    inspect.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    inspect.add_argument(
        "--policy", type=Path, metavar="STATE_DIR",
        help="add the verdict of the policy stored in STATE_DIR (e.g. /var/lib/edufilter) for each name's client",
    )
    inspect.add_argument("--at", type=moment, help="decide at this ISO-8601 time (default: now)")
    inspect.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edufilter.inspection import InspectionSummary, Verdict, inspect_capture
    from edufilter.policy.check import open_current
    from edufilter.policy.model import ClientIdentity

    engine = open_current(args.policy, args.at) if args.policy else None
    summary = InspectionSummary()
    try:
        for record in inspect_capture(args.file, summary):
            verdict = None
            if engine is not None:
                verdict = Verdict.of(engine.explain(record.value, ClientIdentity(record.client), args.at))
            print(record.to_json(verdict) if args.json else record.to_text(verdict))
    finally:
        if not args.quiet:
            print(f"edufilter inspect: {summary.to_text()}", file=sys.stderr)
    return 0
