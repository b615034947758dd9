"""The providers' safe-search addresses, learned from the answers the gateway's own DNS rewrite
restores, shared by the workers.

A pupil who resolves www.google.com elsewhere (DNS over HTTPS to an unlisted server, a hosts
file, an answer cached before the rewrite) reaches an address that serves unfiltered results,
and the SNI alone cannot tell. So for safe-search groups a TLS or QUIC connection named after a
name the rewrite handles must go to an address the rewrite handed out for it. The answer is
restored by the worker that saw the query, the connection that follows may reach another: each
worker writes what it learns into its own region of one small shared file (one writer per
region, no locks; readers check a region's generation before and after reading it).
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
import zlib
from pathlib import Path

from edufilter.state import StateDir

log = logging.getLogger(__name__)

MAX_WORKERS = 64
SLOTS = 128  # per worker: a few providers' addresses, each refreshed in place
# The services' addresses are stable; a client may keep an answer longer than its TTL.
MIN_LIFETIME = 3600.0
MAX_LIFETIME = 86400.0

_HEADER = struct.Struct("=QI4x")  # generation, next slot to write
_SLOT = struct.Struct("=dIB3x16s")  # expires at (0: empty), target hash, IP version, address
_REGION = _HEADER.size + SLOTS * _SLOT.size
FILE_SIZE = MAX_WORKERS * _REGION


def _target_hash(target: str) -> int:
    return zlib.crc32(target.encode("ascii", "replace")) or 1


def prepare(state_dir: Path) -> None:
    """Makes the shared file, its blocks reserved (a full disk fails here, not in a write
    through a mapping), before the workers start; what a previous run learned is kept."""
    path = StateDir(state_dir).safe_search_addresses
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(descriptor, 0, FILE_SIZE)
        finally:
            os.close(descriptor)
    except OSError as error:
        log.warning("safe search: cannot make %s (%s): each worker keeps what it learns alone", path, error)
        path.unlink(missing_ok=True)


class SafeSearchAddresses:
    """What every worker learned; `worker` writes its own region. Without the shared file
    (not made, a full disk) it keeps what this worker learned alone."""

    def __init__(self, path: Path | None, worker: int, workers: int) -> None:
        self.worker = worker
        self.regions = range(min(max(workers, worker + 1), MAX_WORKERS))
        self.map: mmap.mmap | None = None
        if path is not None and 0 <= worker < MAX_WORKERS:
            try:
                with open(path, "r+b") as file:
                    if os.fstat(file.fileno()).st_size >= FILE_SIZE:
                        self.map = mmap.mmap(file.fileno(), FILE_SIZE)
            except OSError as error:
                log.warning("safe search: %s unusable (%s); this worker keeps what it learns alone", path, error)
        self.local: dict[tuple[int, bytes], float] = {}
        self.written: dict[tuple[int, bytes], int] = {}  # our entries: their slot
        self.snapshots: dict[int, tuple[int, dict[tuple[int, bytes], float]]] = {}

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None

    def learn(self, target: str, address: bytes, ttl: int, now: float | None = None) -> None:
        """address (4 or 16 bytes) answered for target, valid for ttl seconds (kept at least
        MIN_LIFETIME)."""
        now = time.time() if now is None else now
        key = (_target_hash(target), bytes(address))
        expires = now + min(max(float(ttl), MIN_LIFETIME), MAX_LIFETIME)
        if self.local.get(key, 0.0) - now > MIN_LIFETIME / 2:
            return  # learned a moment ago: no write
        self.local[key] = expires
        if len(self.local) > SLOTS * 4:
            for stale in [k for k, until in self.local.items() if until <= now]:
                del self.local[stale]
        if self.map is not None:
            self._write(key, expires)

    def _write(self, key: tuple[int, bytes], expires: float) -> None:
        assert self.map is not None
        base = self.worker * _REGION
        generation, next_slot = _HEADER.unpack_from(self.map, base)
        slot = self.written.get(key)
        if slot is None:
            slot = next_slot % SLOTS
            for old_key, old_slot in list(self.written.items()):
                if old_slot == slot:
                    del self.written[old_key]
            self.written[key] = slot
            next_slot += 1
        offset = base + _HEADER.size + slot * _SLOT.size
        target_hash, address = key
        # odd generation: a write is under way; readers retry
        _HEADER.pack_into(self.map, base, generation + 1, next_slot)
        _SLOT.pack_into(self.map, offset, expires, target_hash, 4 if len(address) == 4 else 6, address.ljust(16, b"\0"))
        _HEADER.pack_into(self.map, base, generation + 2, next_slot)

    def knows(self, target: str, address: bytes, now: float | None = None) -> bool:
        """Whether address was answered for target and is still valid, by any worker."""
        now = time.time() if now is None else now
        key = (_target_hash(target), bytes(address))
        if self.local.get(key, 0.0) > now:
            return True
        if self.map is None:
            return False
        for region in self.regions:
            if region != self.worker and self._region(region).get(key, 0.0) > now:
                return True
        return False

    def _region(self, region: int) -> dict[tuple[int, bytes], float]:
        assert self.map is not None
        base = region * _REGION
        for _ in range(3):
            generation, _next = _HEADER.unpack_from(self.map, base)
            cached = self.snapshots.get(region)
            if cached is not None and cached[0] == generation:
                return cached[1]
            if generation & 1:
                continue
            entries: dict[tuple[int, bytes], float] = {}
            for slot in range(SLOTS):
                expires, target_hash, version, address = _SLOT.unpack_from(self.map, base + _HEADER.size + slot * _SLOT.size)
                if expires > 0 and version in (4, 6):
                    entries[(target_hash, address[:4] if version == 4 else address)] = expires
            if _HEADER.unpack_from(self.map, base)[0] == generation:
                self.snapshots[region] = (generation, entries)
                return entries
        return self.snapshots.get(region, (0, {}))[1]
