"""`edufilter inspect`: the names in a capture file."""

from __future__ import annotations

import argparse
import sys

from edufilter.commands.types import Subparsers


def register(commands: Subparsers) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="list the names (DNS, TLS SNI, HTTP Host, QUIC SNI) in a pcap/pcapng capture",
        description="Print one line per name found in a capture file, on the frame that completes it.",
    )
    inspect.add_argument("file", help="pcap or pcapng capture file")
    inspect.add_argument("--json", action="store_true", help="one JSON object per line")
    inspect.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    inspect.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edufilter.inspection import InspectionSummary, inspect_capture

    summary = InspectionSummary()
    try:
        for record in inspect_capture(args.file, summary):
            print(record.to_json() if args.json else record.to_text())
    finally:
        if not args.quiet:
            print(f"edufilter inspect: {summary.to_text()}", file=sys.stderr)
    return 0
