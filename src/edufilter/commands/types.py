"""Types shared by the command modules."""

from __future__ import annotations

import argparse

Subparsers = argparse._SubParsersAction  # what add_subparsers() returns
