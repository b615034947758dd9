"""The overview's numbers, shared by the people who keep it open: the charts, latest events,
list freshness, evasion count and warnings are read at most once every FRESH_SECONDS for a
window, role, language and policy version (a change to the policy reads them again at once),
however many people reload the page; each page is still rendered for its reader, with the
workers' state read for it. Twenty people polling then cost the gateway one read per period."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from aiohttp import web

FRESH_SECONDS = 5.0


class OverviewCache:
    def __init__(self, fresh_seconds: float = FRESH_SECONDS) -> None:
        self.fresh_seconds = fresh_seconds
        self._read: dict[Hashable, tuple[float, dict[str, Any]]] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}

    async def get(self, key: Hashable, read: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """The numbers for key, read again when older than fresh_seconds; people who ask while
        they are being read wait for that one read."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            held = self._read.get(key)
            if held is not None and time.monotonic() - held[0] < self.fresh_seconds:
                return held[1]
            numbers = await read()
            now = time.monotonic()
            self._read = {kept: value for kept, value in self._read.items() if now - value[0] < self.fresh_seconds}
            self._read[key] = (now, numbers)
            # Keys end with the policy version: forget the locks of keys no longer held.
            self._locks = {kept: lock for kept, lock in self._locks.items() if kept in self._read or lock.locked()}
            return numbers


OVERVIEWS = web.AppKey("console_overviews", OverviewCache)
