"""What every handler shares: settings, the store's thread, the live applier, counters."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from edufilter.api.problems import Problem
from edufilter.api.settings import ApiSettings
from edufilter.policy.store import PolicyStore
from edufilter.state import StateDir

log = logging.getLogger(__name__)

T = TypeVar("T")

# Compiles the stored policy and makes it live in the daemon; returns the version now live.
Applier = Callable[[], Awaitable[int]]


def policy_path(state_dir: Path) -> Path:
    return StateDir(state_dir).policy_db


class StoreThread:
    """One connection to the policy store on a thread of its own: SQLite never blocks the
    event loop and the connection stays on the thread that opened it."""

    def __init__(self, path: Path, name: str, reader: bool) -> None:
        self.path = path
        self._reader = reader
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._store: PolicyStore | None = None

    async def open(self) -> None:
        self._store = await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: PolicyStore(self.path, reader=self._reader)
        )

    async def run(self, work: Callable[[PolicyStore], T]) -> T:
        store = self._store
        assert store is not None, "open() first"
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, store)

    async def close(self) -> None:
        if self._store is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._store.close)
            self._store = None
        self._executor.shutdown(wait=True)


class StoreWorker:
    """The policy store as the API uses it. Changes run on one writer thread, one at a time,
    so an If-Match check and the change it guards cannot interleave with another request.
    Reads and token lookups have read-only connections on threads of their own: in WAL they
    see the last committed state while a change (or an upload) holds the write lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = StoreThread(path, "policy-store", reader=False)
        self._reader = StoreThread(path, "policy-read", reader=True)
        self._authenticator = StoreThread(path, "policy-auth", reader=True)

    async def open(self) -> None:
        await self._writer.open()  # first: it checks and migrates the database
        await self._reader.open()
        await self._authenticator.open()

    async def run(self, work: Callable[[PolicyStore], T]) -> T:
        """Run `work` on the writer's connection (a change, or a read inside one)."""
        return await self._writer.run(work)

    async def read(self, work: Callable[[PolicyStore], T]) -> T:
        """Run `work` on a read-only connection; it never waits for a change."""
        return await self._reader.run(work)

    async def authenticate(self, work: Callable[[PolicyStore], T]) -> T:
        """Run a token lookup on a connection and thread no other work queues on."""
        return await self._authenticator.run(work)

    async def close(self) -> None:
        for thread in (self._authenticator, self._reader, self._writer):
            await thread.close()


class LiveApplier:
    """Calls the daemon's applier once per change, one call at a time, and remembers the
    version it made live; a failure leaves that version live and becomes a problem."""

    def __init__(self, apply: Applier) -> None:
        self._apply = apply
        self._lock = asyncio.Lock()
        self.live_version: int | None = None
        self.applies = 0
        self.failures = 0
        self.last_error: str | None = None

    async def apply(self, stored_version: int) -> int:
        async with self._lock:
            try:
                version = await self._apply()
            except Exception as error:
                self.failures += 1
                self.last_error = f"{type(error).__name__}: {error}"
                log.exception("admin API: applying policy version %d failed", stored_version)
                live = "no version" if self.live_version is None else f"version {self.live_version}"
                raise Problem(
                    500,
                    "apply-failed",
                    f"the change is stored (policy version {stored_version}) but could not be applied: "
                    f"{error}; {live} stays live. Fix the cause, then POST /api/v1/apply.",
                    policy_version=stored_version,
                    live_version=self.live_version,
                ) from error
            self.applies += 1
            self.live_version = version
            self.last_error = None
            return version


@dataclass(slots=True)
class Metrics:
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (method, status)
    auth_failures: int = 0
    throttled: int = 0


SETTINGS = web.AppKey("settings", ApiSettings)
STATE_DIR = web.AppKey("state_dir", Path)
STORE = web.AppKey("store", StoreWorker)
APPLIER = web.AppKey("applier", LiveApplier)
METRICS = web.AppKey("metrics", Metrics)
