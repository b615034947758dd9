"""The image container: sections at any size and place, damage refused with a clear error."""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
from pathlib import Path

import pytest

from edufilter.errors import PolicyError, StorageFullError
from edufilter.classify.image import ALIGNMENT, Image, SectionSpec, hold_lock, remove_stale_temporaries, write_image


def test_sections_round_trip_including_empty_ones_at_a_page_edge(tmp_path: Path) -> None:
    # The first section ends exactly on a page boundary, so the empty one after it starts there.
    first = b"x" * (mmap.PAGESIZE - 2 * ALIGNMENT)
    path = write_image(tmp_path / "a.img", [SectionSpec.of_bytes("first", first), SectionSpec.of_bytes("empty", b"")],
                       {"kind": "test"})
    image = Image(path)
    assert bytes(image.section("first")) == first
    assert bytes(image.section("empty")) == b""
    assert image.meta == {"kind": "test"}
    with pytest.raises(PolicyError, match="no 'missing' section"):
        image.section("missing")


@pytest.mark.parametrize("cut", [0, 10, 100])
def test_truncated_images_are_refused(tmp_path: Path, cut: int) -> None:
    path = write_image(tmp_path / "a.img", [SectionSpec.of_bytes("data", b"y" * 5000)], {"kind": "test"})
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(PolicyError):
        Image(path)


def test_a_failed_write_leaves_the_old_image(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.img", [SectionSpec.of_bytes("data", b"old")], {"kind": "test"})

    def explode(view: memoryview, release: object) -> None:
        raise PolicyError("compile failed halfway")

    with pytest.raises(PolicyError, match="halfway"):
        write_image(path, [SectionSpec("data", 10, explode)], {"kind": "test"})
    assert bytes(Image(path).section("data")) == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.img"]


# --- a full disk, writers that died ----------------------------------------------------


def test_a_full_disk_fails_the_write_and_keeps_the_live_image() -> None:
    """With 24 KB left, a larger image cannot be written: StorageFullError, not SIGBUS on a
    page of the map with no block behind it; the old image stays, no temporary is left."""
    from small_disk import run_on_small_disk

    done = run_on_small_disk('''
import json
from edufilter.errors import StorageFullError
from edufilter.classify.image import Image, SectionSpec, write_image
directory = Path(sys.argv[1])
path = directory / "policy.img"
write_image(path, [SectionSpec.of_bytes("data", b"old" * 1000)], {"version": 1})
fill_disk(directory, leave=24 * 1024)
try:
    write_image(path, [SectionSpec.of_bytes("data", b"new" * 100000)], {"version": 2})
    result = "written"
except StorageFullError as error:
    result = str(error)
print(json.dumps({"result": result, "version": Image(path).meta["version"],
                  "files": sorted(item.name for item in directory.iterdir())}))
''')
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    outcome = json.loads(done.stdout)
    assert "the disk is full" in outcome["result"]
    assert outcome["version"] == 1
    assert outcome["files"] == ["filler", "policy.img"]


def test_a_failed_reservation_is_a_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(descriptor: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    path = write_image(tmp_path / "policy.img", [SectionSpec.of_bytes("data", b"old")], {"version": 1})
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(StorageFullError, match="disk is full"):
        write_image(path, [SectionSpec.of_bytes("data", b"new")], {"version": 2})
    assert Image(path).meta["version"] == 1
    assert sorted(item.name for item in tmp_path.iterdir()) == ["policy.img"]


def test_stale_temporaries_are_removed_and_ones_being_written_kept(tmp_path: Path) -> None:
    stale = tmp_path / ".policy.img.k2j4x9.tmp"
    stale.write_bytes(b"\0" * 4096)  # a writer killed with -9 left it, unlocked
    busy = tmp_path / ".categories.img.a8b7c6.tmp"
    busy.write_bytes(b"")
    image = write_image(tmp_path / "policy.img", [SectionSpec.of_bytes("data", b"x")], {"version": 1})
    with open(busy, "rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)  # as write_image holds it
        assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and busy.exists() and image.exists()


def test_a_dead_compiles_spool_and_check_image_are_removed_a_live_spool_kept(tmp_path: Path) -> None:
    dead_spool = tmp_path / ".lists.img.q1w2e3.spool"
    dead_spool.mkdir()
    (dead_spool / "0.domain").write_bytes(b"a.example\n")
    live_spool = tmp_path / ".lists.img.r4t5y6.spool"
    live_spool.mkdir()
    check = tmp_path / ".check-u7i8o9.img"
    check.write_bytes(b"")
    with hold_lock(live_spool):  # as write_lists_image holds it while it sorts the names
        removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([check, dead_spool])
    assert not dead_spool.exists() and not check.exists() and live_spool.is_dir()
