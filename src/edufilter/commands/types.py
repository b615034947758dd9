"""What the command modules share: the subparsers type and the --state-dir option."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from edufilter.config import Config

Subparsers = argparse._SubParsersAction  # what add_subparsers() returns

DEFAULT_STATE_DIR = Config().state_dir


def state_dir_option() -> argparse.ArgumentParser:
    """A parent parser adding --state-dir, for every command that reads or writes state."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR,
        help=f"edufilter's state folder (default {DEFAULT_STATE_DIR})",
    )
    return parent


def moment(text: str) -> datetime:
    """An ISO-8601 time with its time zone, as --at options take it."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time") from None
    if value.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. {text}+01:00")
    return value
