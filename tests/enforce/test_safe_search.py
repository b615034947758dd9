"""The safe-search addresses the workers learn and share through one file (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edufilter.enforce import safe_search
from edufilter.enforce.safe_search import MIN_LIFETIME, SLOTS, SafeSearchAddresses
from edufilter.state import StateDir

GOOGLE = "forcesafesearch.google.com"
SAFE4 = bytes([198, 18, 1, 20])
SAFE6 = bytes.fromhex("20010002000000010000000000000020")


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    safe_search.prepare(tmp_path)
    return StateDir(tmp_path).safe_search_addresses


def test_what_one_worker_learns_every_worker_knows(shared: Path) -> None:
    first, second = SafeSearchAddresses(shared, 0, 2), SafeSearchAddresses(shared, 1, 2)
    assert not second.knows(GOOGLE, SAFE4, now=1000.0)
    first.learn(GOOGLE, SAFE4, 300, now=1000.0)
    first.learn(GOOGLE, SAFE6, 300, now=1000.0)
    assert second.knows(GOOGLE, SAFE4, now=1001.0) and second.knows(GOOGLE, SAFE6, now=1001.0)
    assert not second.knows("restrict.youtube.com", SAFE4, now=1001.0), "an address counts for its own target"
    assert not second.knows(GOOGLE, bytes([198, 18, 1, 1]), now=1001.0)
    # kept at least MIN_LIFETIME, whatever the TTL, then forgotten
    assert second.knows(GOOGLE, SAFE4, now=1000.0 + MIN_LIFETIME - 1)
    assert not second.knows(GOOGLE, SAFE4, now=1000.0 + MIN_LIFETIME + 1)


def test_a_restarted_worker_and_a_new_run_keep_what_was_learned(shared: Path) -> None:
    SafeSearchAddresses(shared, 0, 2).learn(GOOGLE, SAFE4, 300, now=1000.0)
    safe_search.prepare(shared.parent)  # the supervisor starts again
    assert SafeSearchAddresses(shared, 1, 2).knows(GOOGLE, SAFE4, now=1010.0)


def test_a_region_wraps_and_refreshes_in_place(shared: Path) -> None:
    writer, reader = SafeSearchAddresses(shared, 0, 2), SafeSearchAddresses(shared, 1, 2)
    writer.learn(GOOGLE, SAFE4, 300, now=1000.0)
    writer.learn(GOOGLE, SAFE4, 300, now=1000.0 + MIN_LIFETIME)  # refreshed: the same slot
    for index in range(SLOTS - 1):
        writer.learn(GOOGLE, bytes([198, 19, index // 256, index % 256]), 300, now=1000.0 + MIN_LIFETIME)
    assert reader.knows(GOOGLE, SAFE4, now=1000.0 + MIN_LIFETIME + 10), "the refresh took no new slot"
    writer.learn(GOOGLE, bytes([198, 19, 255, 255]), 300, now=1000.0 + MIN_LIFETIME)
    assert not reader.knows(GOOGLE, SAFE4, now=1000.0 + MIN_LIFETIME + 10), "the oldest slot was reused"


def test_a_write_under_way_is_not_read(shared: Path) -> None:
    writer, reader = SafeSearchAddresses(shared, 0, 2), SafeSearchAddresses(shared, 1, 2)
    writer.learn(GOOGLE, SAFE4, 300, now=1000.0)
    assert reader.knows(GOOGLE, SAFE4, now=1001.0)
    assert writer.map is not None
    generation = int.from_bytes(writer.map[0:8], "little")
    writer.map[0:8] = (generation + 1).to_bytes(8, "little")  # odd: a writer is between its stores
    writer.map[safe_search._HEADER.size:safe_search._HEADER.size + safe_search._SLOT.size] = bytes(safe_search._SLOT.size)
    assert reader.knows(GOOGLE, SAFE4, now=1001.0), "the last complete snapshot is used"


def test_without_the_shared_file_a_worker_keeps_its_own(tmp_path: Path) -> None:
    alone = SafeSearchAddresses(tmp_path / "missing", 0, 2)
    alone.learn(GOOGLE, SAFE4, 300, now=1000.0)
    assert alone.knows(GOOGLE, SAFE4, now=1001.0)
    assert not SafeSearchAddresses(tmp_path / "missing", 1, 2).knows(GOOGLE, SAFE4, now=1001.0)


def test_a_full_disk_leaves_no_half_made_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(descriptor: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safe_search.os, "posix_fallocate", no_space)
    safe_search.prepare(tmp_path)
    assert not StateDir(tmp_path).safe_search_addresses.exists()
