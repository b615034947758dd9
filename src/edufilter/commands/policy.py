"""`edufilter policy` (install the bundled defaults, compile) and `edufilter check`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edufilter.commands.types import Subparsers, moment, state_dir_option


def register(commands: Subparsers) -> None:
    state = state_dir_option()
    policy = commands.add_parser(
        "policy", help="install the bundled default policy, compile the policy images",
        description="The school policy: groups, clients, rules, schedules, lists, overrides.",
    )
    actions = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    install = actions.add_parser(
        "install-defaults", parents=[state],
        help="replace the stored policy with the bundled default (or a folder of policy TOML files)",
        description="Loads the policy TOML files (default: the bundled policies/) and stores them in place of "
        "the whole stored policy. Imported categories and their titles are kept.",
    )
    install.add_argument("folder", type=Path, nargs="?", help="a folder of policy TOML files")
    install.set_defaults(handler=run_install_defaults)
    compile_ = actions.add_parser(
        "compile", parents=[state], help="compile the policy (and with --categories the category lists) into images",
    )
    compile_.add_argument("--categories", action="store_true", help="also rebuild the (large) categories image")
    compile_.set_defaults(handler=run_compile)

    check = commands.add_parser(
        "check", parents=[state], help="what a client gets for a name, URL or address, and why",
        description="Decide as the gateway would, and explain: the group, the rule, the list or category and "
        "the matched suffix, the schedule slot, the override if any.",
    )
    check.add_argument("target", help="a host name, a URL (http://host/path) or an IP address")
    check.add_argument("--client", required=True, help="the client's IP address")
    check.add_argument("--mac", help="the client's MAC address")
    check.add_argument("--interface", help="the interface the client is on")
    check.add_argument("--vlan", type=int, help="the client's VLAN")
    check.add_argument("--at", type=moment, help="ISO-8601 time with time zone (default: now)")
    check.add_argument("--json", action="store_true", help="one JSON object")
    check.set_defaults(handler=run_check)


def run_install_defaults(args: argparse.Namespace) -> int:
    from edufilter.policy.defaults import default_policy_dir, install_policy

    policy, version = install_policy(args.state_dir, args.folder or default_policy_dir())
    print(f"installed {len(policy.groups)} groups, {len(policy.rules)} rules, {len(policy.lists)} lists "
          f"(policy version {version})")
    return run_compile(argparse.Namespace(state_dir=args.state_dir, categories=False))



def run_compile(args: argparse.Namespace) -> int:
    from edufilter.policy.compile import compile_categories, compile_policy

    if args.categories:
        report = compile_categories(args.state_dir)
        print(f"categories: {report.names} names, {report.networks} networks, {report.url_prefixes} URL prefixes, "
              f"{report.image_bytes / 1e6:.1f} MB")
    report = compile_policy(args.state_dir)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"policy: {report.path} ({report.image_bytes} bytes)")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from edufilter.policy.check import open_current
    from edufilter.policy.model import ClientIdentity

    client = ClientIdentity(args.client, args.mac, args.interface, args.vlan)
    explanation = open_current(args.state_dir, args.at).explain(args.target, client, args.at)
    print(json.dumps(explanation.to_dict()) if args.json else explanation.to_text())
    return 0
