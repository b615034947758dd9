"""`edufilter token`: make, list and revoke the admin API's bearer tokens locally."""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
from typing import TYPE_CHECKING

from edufilter.commands.types import Subparsers, state_dir_option
from edufilter.state import StateDir

if TYPE_CHECKING:
    from edufilter.policy.store import Actor


def register(commands: Subparsers) -> None:
    from edufilter.api.tokens import Role

    state = state_dir_option()
    token = commands.add_parser(
        "token",
        help="make, list and revoke admin API tokens",
        description="Tokens authenticate to the admin API. The secret is printed once, when made; "
        "the policy database keeps only its SHA-256 digest.",
    )
    actions = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", parents=[state], help="make a token and print its secret (once)",
        description="Print the new token's secret on stdout (the only time it is shown).",
    )
    create.add_argument("--role", required=True, choices=[role.value for role in Role],
                        help="admin: everything; editor: policy objects; teacher: overrides of --groups; "
                        "viewer: read-only")
    create.add_argument("--groups", type=_names, default=(), metavar="A,B",
                        help="teacher tokens: the groups they may override")
    create.add_argument("--max-minutes", type=int, metavar="N",
                        help="longest override the token may make (teachers: default 60)")
    create.add_argument("--name", help="a name for the audit log (default: role-<random>)")
    create.set_defaults(handler=run_create)
    listing = actions.add_parser("list", parents=[state], help="list the tokens, revoked ones included")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=run_list)
    revoke = actions.add_parser("revoke", parents=[state], help="revoke a token; it stays listed")
    revoke.add_argument("name", help="the token's name")
    revoke.set_defaults(handler=run_revoke)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _actor(action: str) -> Actor:
    """The audit log's "who" for a change made at the console: the local user, as admin."""
    from edufilter.policy.store import Actor

    return Actor(f"cli:{getpass.getuser()}", "admin", "CLI", f"edufilter token {action}")


def run_create(args: argparse.Namespace) -> int:
    from edufilter.api.tokens import create_token
    from edufilter.policy.store import PolicyStore

    name = args.name or f"{args.role}-{secrets.token_hex(3)}"
    args.state_dir.mkdir(parents=True, exist_ok=True)
    with PolicyStore(StateDir(args.state_dir).policy_db) as store:
        with store.audited(_actor("create"), "token", name) as change:
            token, secret = create_token(change.db, name, args.role, args.groups, args.max_minutes)
            change.after = token.to_dict()
    print(secret)
    print(f"edufilter token: made {token.role} token {token.name!r}; its secret (above) is not shown again",
          file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from edufilter.api.tokens import list_tokens
    from edufilter.policy.store import PolicyStore

    with PolicyStore(StateDir(args.state_dir).policy_db) as store, store.snapshot() as db:
        tokens = list_tokens(db)
    if args.json:
        for token in tokens:
            print(json.dumps(token.to_dict()))
        return 0
    rows = [("NAME", "ROLE", "GROUPS", "MAX_MINUTES", "CREATED", "REVOKED")] + [
        (token.name, token.role.value, ",".join(token.groups) or "-",
         "-" if token.max_minutes is None else str(token.max_minutes), token.created_at, token.revoked_at or "-")
        for token in tokens
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from edufilter.api.tokens import find_token, revoke_token
    from edufilter.policy.store import PolicyStore

    with PolicyStore(StateDir(args.state_dir).policy_db) as store:
        with store.audited(_actor("revoke"), "token", args.name) as change:
            before = find_token(change.db, args.name)
            change.before = None if before is None else before.to_dict()
            change.after = revoke_token(change.db, args.name).to_dict()
    print(f"edufilter token: revoked {args.name!r}", file=sys.stderr)
    return 0
