"""The state folder's layout: every file and folder edufilter keeps there, named once.

A daemon, the API, the CLI and the tests all find the same files through `StateDir`; a module
that needs a path asks it instead of joining names of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class StateDir:
    """One state folder (`--state-dir`, default /var/lib/edufilter)."""

    root: Path

    def __init__(self, root: Path | str) -> None:
        object.__setattr__(self, "root", Path(root))

    # control path: the policy store and what it compiles
    @property
    def policy_db(self) -> Path:
        return self.root / "policy.sqlite"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def categories_image(self) -> Path:
        return self.images / "categories.img"

    @property
    def lists_image(self) -> Path:
        return self.images / "lists.img"

    @property
    def policy_image(self) -> Path:
        return self.images / "policy.img"

    @property
    def lists(self) -> Path:
        """Downloaded category lists, one versioned folder per source."""
        return self.root / "lists"

    @property
    def last_update(self) -> Path:
        """When `lists update` last ran, and what it fetched."""
        return self.root / "last-update.json"

    @property
    def uploads(self) -> Path:
        """The API's staged list uploads."""
        return self.root / "uploads"

    # data path and service: what the daemon writes while it runs
    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def pid_file(self) -> Path:
        return self.run / "edufilter.pid"

    @property
    def lock_file(self) -> Path:
        return self.run / "edufilter.lock"

    @property
    def status(self) -> Path:
        return self.run / "status.json"

    @property
    def safe_search_addresses(self) -> Path:
        """The safe-search addresses the workers share (a small mapped file)."""
        return self.root / "safe-search-addresses"

    @property
    def events_db(self) -> Path:
        return self.root / "events.sqlite"

    @property
    def events_jsonl(self) -> Path:
        return self.root / "events"

    @property
    def pseudonym_keys(self) -> Path:
        return self.root / "keys"
