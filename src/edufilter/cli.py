"""The edufilter command line: one subcommand per job, errors reported in one place."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edufilter import __version__
from edufilter.commands import api, hub, inspect, lists, policy, run, token
from edufilter.errors import EdufilterError

# Each module adds its subcommands; the order here is the order in --help.
COMMAND_MODULES = (inspect, lists, policy, run, token, api, hub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edufilter",
        description="Content-filtering firewall for school gateways.",
    )
    parser.add_argument("--version", action="version", version=f"edufilter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
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
