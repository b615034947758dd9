"""The edufilter command line: one subcommand per job, errors reported in one place."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edufilter import __version__
from edufilter.errors import EdufilterError


def cmd_inspect(args: argparse.Namespace) -> int:
    from edufilter.inspection import InspectionSummary, inspect_capture

    summary = InspectionSummary()
    try:
        for record in inspect_capture(args.file, summary):
            print(record.to_json() if args.json else record.to_text())
    finally:
        if not args.quiet:
            print(f"edufilter inspect: {summary.to_text()}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edufilter",
        description="Content-filtering firewall for school gateways.",
    )
    parser.add_argument("--version", action="version", version=f"edufilter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser(
        "inspect",
        help="list the names (DNS, TLS SNI, HTTP Host, QUIC SNI) in a pcap/pcapng capture",
        description="Print one line per name found in a capture file, on the frame that completes it.",
    )
    inspect.add_argument("file", help="pcap or pcapng capture file")
    inspect.add_argument("--json", action="store_true", help="one JSON object per line")
    inspect.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    inspect.set_defaults(handler=cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except EdufilterError as error:
        print(f"edufilter {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # output piped into `head` and closed early: not an error worth a traceback
        sys.stderr.close()
        return 0
