"""`edufilter lists`: import, update, show and remove the category lists."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from edufilter.commands.types import Subparsers, state_dir_option
from edufilter.state import StateDir

if TYPE_CHECKING:
    from edufilter.policy.liststore import ImportReport

_BAD_LINES_SHOWN = 5
_CHANGED_SHOWN = 12


def register(commands: Subparsers) -> None:
    state = state_dir_option()
    lists = commands.add_parser(
        "lists",
        help="import, update, show and remove the category lists (UT1, hosts, plain, adblock)",
        description="The categories a policy's rules refer to, imported into <state-dir>/lists "
        "and registered in the policy store.",
    )
    actions = lists.add_subparsers(dest="lists_command", required=True, metavar="ACTION")

    importing = actions.add_parser("import", help="import a UT1 tree or archive, or a list file as one category")
    formats = importing.add_subparsers(dest="list_format", required=True, metavar="FORMAT")
    ut1 = formats.add_parser(
        "ut1", parents=[state], help="a UT1 blacklists folder or .tar.gz archive (whole or one category)"
    )
    ut1.add_argument("path", type=Path, help="folder or .tar.gz archive")
    ut1.add_argument("--only", type=_names, metavar="A,B", help="import only these categories")
    ut1.set_defaults(handler=run_import_ut1)
    for fmt, what in (
        ("hosts", "a hosts file ('0.0.0.0 name')"),
        ("plain", "one name or address per line"),
        ("adblock", "adblock-style '||name^' rules"),
    ):
        parser = formats.add_parser(fmt, parents=[state], help=what)
        parser.add_argument("file", type=Path, help="list file (may be gzipped)")
        parser.add_argument("--category", required=True, help="the category to import it as (replaces its data)")
        parser.set_defaults(handler=run_import_file)

    update = actions.add_parser(
        "update",
        parents=[state],
        help="fetch the UT1 archives, check their MD5 and import what changed",
        description="Without --category, refresh the UT1 categories already imported from the whole "
        "archive (all categories on a first run). A list that would shrink by more than half is kept "
        "unless --force.",
    )
    update.add_argument(
        "--category", type=_names, metavar="A,B", help="update these categories, each from its own archive"
    )
    update.add_argument("--url", help="folder holding the archives and MD5SUM.LST (default: the UT1 site)")
    update.add_argument("--force", action="store_true", help="import even when unchanged or much smaller")
    update.set_defaults(handler=run_update)

    show = actions.add_parser("show", parents=[state], help="the imported categories with their counts and age")
    show.set_defaults(handler=run_show)

    remove = actions.add_parser("remove", parents=[state], help="remove a category's data and its policy entry")
    remove.add_argument("name", help="category name")
    remove.set_defaults(handler=run_remove)


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give one or more comma-separated category names")
    return names


def run_import_ut1(args: argparse.Namespace) -> int:
    from edufilter.policy.liststore import ListStore
    from edufilter.progress import ProgressBar

    bar = ProgressBar(f"import {args.path.name}")
    try:
        report = ListStore.in_state_dir(args.state_dir).import_ut1(args.path, args.only, bar)
    finally:
        bar.close()
    return _finish_import(args, report)


def run_import_file(args: argparse.Namespace) -> int:
    from edufilter.policy.liststore import ListStore
    from edufilter.progress import ProgressBar

    bar = ProgressBar(f"import {args.file.name}")
    try:
        store = ListStore.in_state_dir(args.state_dir)
        report = store.import_file(args.file, args.category, args.list_format, progress=bar)
    finally:
        bar.close()
    return _finish_import(args, report)


def _finish_import(args: argparse.Namespace, report: ImportReport) -> int:
    from edufilter.policy.liststore import register_categories
    from edufilter.policy.store import PolicyStore

    with PolicyStore(StateDir(args.state_dir).policy_db) as policy:
        register_categories(policy, report.categories)
    _print_imports([report])
    if report.changed:
        _recompile(args.state_dir)
    for name, why in report.failed.items():
        print(f"edufilter lists: {name} kept its stored list: {why}", file=sys.stderr)
    return 1 if report.failed else 0


def _print_imports(reports: list[ImportReport]) -> None:
    for report in reports:
        if not report.imported:
            continue
        names = sum(category.counts.names for category in report.imported)
        cidrs = sum(category.counts.cidrs for category in report.imported)
        urls = sum(category.counts.urls for category in report.imported)
        aliases = sum(category.alias_of is not None for category in report.imported)
        print(
            f"imported {_count(len(report.imported), 'category', 'categories')}"
            + (f" ({_count(aliases, 'alias', 'aliases')})" if aliases else "")
            + f": {names:,} names, {cidrs:,} networks, {urls:,} URLs;"
            + f" {_count(report.bad.count, 'bad line', 'bad lines')}"
        )
        changed = report.changed
        more = len(changed) - _CHANGED_SHOWN
        shown = ", ".join(changed[:_CHANGED_SHOWN]) + (f" and {more} more" if more > 0 else "")
        print(f"changed: {shown}" if changed else "no category changed")
        for line in report.bad.first[:_BAD_LINES_SHOWN]:
            print(f"edufilter lists: bad line: {line}", file=sys.stderr)
        if report.bad.count > _BAD_LINES_SHOWN:
            print(f"edufilter lists: ... {report.bad.count - _BAD_LINES_SHOWN:,} more bad lines", file=sys.stderr)


def run_update(args: argparse.Namespace) -> int:
    from edufilter.policy.update import DEFAULT_UT1_URL, UpdateError, update_lists
    from edufilter.progress import ProgressSteps

    steps = ProgressSteps()
    try:
        report = update_lists(
            args.state_dir, args.category, base_url=args.url or DEFAULT_UT1_URL, force=args.force, progress=steps,
            recompile=_recompile,
        )
    except UpdateError as error:
        steps.close()
        _print_imports(error.report.imports)
        raise
    finally:
        steps.close()
    for url in report.unchanged:
        print(f"unchanged: {url}")
    _print_imports(report.imports)
    return 0


def _recompile(state_dir: Path) -> None:
    """Rebuild the images from the changed lists and let a running daemon map them."""
    from edufilter.policy.compile import compile_categories
    from edufilter.policy.publish import request_reload

    report = compile_categories(state_dir)
    print(f"compiled {report.names:,} names, {report.networks:,} networks ({report.image_bytes / 1e6:.1f} MB)")
    if request_reload(state_dir):
        print("the running daemon is reloading")


def run_show(args: argparse.Namespace) -> int:
    from edufilter.policy.liststore import ListStore

    rows = [("CATEGORY", "SOURCE", "NAMES", "NETWORKS", "URLS", "BAD", "AGE", "ALIAS OF")]
    now = datetime.now(timezone.utc)
    for category in ListStore.in_state_dir(args.state_dir).categories():
        counts = category.counts
        rows.append((
            category.name, category.source, f"{counts.names:,}", f"{counts.cidrs:,}", f"{counts.urls:,}",
            f"{counts.bad_lines:,}", _age(now - category.imported_at), category.alias_of or "",
        ))
    if len(rows) == 1:
        print(f"no categories imported in {args.state_dir}", file=sys.stderr)
        return 0
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    numeric = {2, 3, 4, 5}
    for row in rows:
        cells = [cell.rjust(width) if column in numeric else cell.ljust(width)
                 for column, (cell, width) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
    return 0


def _count(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def _age(elapsed: timedelta) -> str:
    seconds = int(elapsed.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return "now"


def run_remove(args: argparse.Namespace) -> int:
    from edufilter.errors import PolicyError
    from edufilter.policy.liststore import ListStore
    from edufilter.policy.store import PolicyStore

    lists = ListStore.in_state_dir(args.state_dir)
    stored = lists.get(args.name)
    lists.check_removable(args.name)  # before the policy store forgets it
    registered = False
    policy_path = StateDir(args.state_dir).policy_db
    if policy_path.exists():
        with PolicyStore(policy_path) as policy:
            registered = any(category.name == args.name for category in policy.load().categories)
            if registered:
                policy.remove_category(args.name)
    if stored is not None:
        lists.remove(args.name)
    if stored is None and not registered:
        raise PolicyError(f"no category {args.name!r} in {args.state_dir}")
    print(f"removed category {args.name}")
    if stored is not None:
        _recompile(args.state_dir)
    return 0
