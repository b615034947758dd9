"""The compiled-image container: a header, a section directory and 64-byte aligned
sections, checked by CRC-32 on load and published by one atomic rename.

Workers map an image read-only and share its pages; a new image is written beside the
live one under a temporary name and renamed into place only when complete, so readers
see the old image or the new one, never a partial file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import shutil
import struct
import tempfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edufilter.errors import PolicyError, StorageFullError

MAGIC = b"EDUFIMG\x01"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIIIQ")  # magic, version, section count, body CRC-32, reserved, body offset
DIRECTORY_ENTRY = struct.Struct("<16sQQ")  # name, offset, length
ALIGNMENT = 64
MAX_SECTIONS = 64


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclass(frozen=True, slots=True)
class SectionSpec:
    """A section to write: its size, and a function that fills a writable view of it.

    fill(view, release) may call release() now and then: it drops the pages written so
    far from this process (they stay in the page cache), so that writing a large image
    does not add its size to the compiling process's memory.
    """

    name: str
    size: int
    fill: Callable[[memoryview, Callable[[], None]], None]

    @classmethod
    def of_bytes(cls, name: str, data: bytes) -> SectionSpec:
        def fill(view: memoryview, release: Callable[[], None]) -> None:
            view[:] = data

        return cls(name, len(data), fill)


TEMPORARY_SUFFIX = ".tmp"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def write_image(path: Path, sections: list[SectionSpec], meta: dict[str, object]) -> Path:
    """Writes an image atomically: temp file in the same directory, fsync, rename.

    A full disk raises StorageFullError and leaves the live image as it was."""
    all_sections = [SectionSpec.of_bytes("meta", json.dumps(meta, sort_keys=True).encode()), *sections]
    if len(all_sections) > MAX_SECTIONS:
        raise PolicyError(f"image {path}: too many sections")
    body_offset = _align(HEADER.size + DIRECTORY_ENTRY.size * len(all_sections))
    layout = []
    offset = body_offset
    for section in all_sections:
        layout.append((section, offset))
        offset = _align(offset + section.size)
    total = offset
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    except OSError as error:
        raise_if_disk_full(path, error)
        raise
    try:
        # Locked while written: remove_stale_temporaries() takes only the files of writers that died.
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        # Every block reserved before the map: a page with no block behind it would be SIGBUS
        # on a full disk, not an error.
        os.posix_fallocate(descriptor, 0, total)
        with mmap.mmap(descriptor, total) as mapped:
            view = memoryview(mapped)
            try:
                for section, start in layout:
                    low = start - start % mmap.PAGESIZE
                    high = min(total, -(-(start + section.size) // mmap.PAGESIZE) * mmap.PAGESIZE)

                    def release(low: int = low, high: int = high) -> None:
                        # MAP_SHARED file pages: dropping them keeps the data in the page cache.
                        if low < high:
                            mapped.madvise(mmap.MADV_DONTNEED, low, high - low)

                    # Released explicitly: a fill that fails keeps its view alive in the
                    # traceback, and an exported view would stop the map from closing.
                    with view[start:start + section.size] as section_view:
                        section.fill(section_view, release)
                    release()
                directory = b"".join(
                    DIRECTORY_ENTRY.pack(section.name.encode(), start, section.size) for section, start in layout
                )
                view[HEADER.size:HEADER.size + len(directory)] = directory
                crc = _checksum(mapped, view, HEADER.size, total)
                view[:HEADER.size] = HEADER.pack(MAGIC, FORMAT_VERSION, len(all_sections), crc, 0, body_offset)
                mapped.flush()
            finally:
                view.release()
        os.fsync(descriptor)
        os.close(descriptor)
        descriptor = -1
        os.replace(temporary, path)
        directory_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    except BaseException as error:
        if descriptor >= 0:
            os.close(descriptor)
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise_if_disk_full(path, error)
        raise
    return path


def raise_if_disk_full(path: Path, error: OSError) -> None:
    if error.errno in DISK_FULL_ERRNOS:
        raise StorageFullError(f"image {path}: the disk is full ({error.strerror}); the live image stays") from error


SPOOL_SUFFIX = ".spool"  # a lists image's names being sorted: a folder, locked while in use
CHECK_PREFIX = ".check-"  # an image compiled for one check: unlinked as soon as it is mapped


@contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on path (a file or a folder) for as long as it is being written, so
    remove_stale_temporaries() tells a live writer's from a dead one's."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove what writers that died (kill -9, a power cut) left: temporary images and lists
    spool folders nobody holds a lock on, and images compiled for a check (unlinked once
    mapped, so a leftover belongs to a dead process; a mapping outlives the unlink anyway)."""
    directory = Path(directory)
    removed = [candidate for candidate in directory.glob(f"{CHECK_PREFIX}*") if _remove(candidate)]
    for candidate in [*directory.glob(f".*{TEMPORARY_SUFFIX}"), *directory.glob(f".*{SPOOL_SUFFIX}")]:
        try:
            descriptor = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        else:
            if _remove(candidate):
                removed.append(candidate)
        finally:
            os.close(descriptor)
    return removed


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    return True


CHECKSUM_WINDOW = 8 << 20


def _checksum(mapped: mmap.mmap, view: memoryview, start: int, end: int) -> int:
    """CRC-32 of view[start:end], read a window at a time and each window's pages dropped
    again, so checking a large new image does not map all of it into the compiling process."""
    crc = 0
    for low in range(start, end, CHECKSUM_WINDOW):
        high = min(end, low + CHECKSUM_WINDOW)
        crc = zlib.crc32(view[low:high], crc)
        page = low - low % mmap.PAGESIZE
        mapped.madvise(mmap.MADV_DONTNEED, page, high - page)
    return crc


def read_meta(path: Path) -> dict[str, object]:
    """An image's metadata without mapping or checking the rest of it (cheap for a large
    image; a cut-short file is still found): for deciding what to compile, not for using it."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            magic, version, count, _, _, _ = HEADER.unpack(file.read(HEADER.size).ljust(HEADER.size, b"\0"))
            if magic != MAGIC or version != FORMAT_VERSION or count > MAX_SECTIONS:
                raise PolicyError(f"image {path}: not an edufilter image of format {FORMAT_VERSION}")
            directory = file.read(count * DIRECTORY_ENTRY.size)
            entries = [DIRECTORY_ENTRY.unpack_from(directory, index * DIRECTORY_ENTRY.size)
                       for index in range(len(directory) // DIRECTORY_ENTRY.size)]
            if len(entries) != count or any(offset + length > size for _, offset, length in entries):
                raise PolicyError(f"image {path}: file is truncated")
            for raw_name, offset, length in entries:
                if raw_name.rstrip(b"\0") == b"meta":
                    file.seek(offset)
                    return json.loads(file.read(length))
    except OSError as error:
        raise PolicyError(f"image {path}: cannot open: {error.strerror}") from error
    except ValueError as error:
        raise PolicyError(f"image {path}: metadata section is damaged") from error
    raise PolicyError(f"image {path}: metadata section is missing")


class Image:
    """A mapped, verified image: sections as read-only memoryviews, meta as a dict."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                if size < HEADER.size:
                    raise PolicyError(f"image {path}: file is truncated ({size} bytes)")
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
                status = os.fstat(file.fileno())
                # Which file this is: a new image is renamed over the old one, never written in place.
                self.identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        except OSError as error:
            raise PolicyError(f"image {path}: cannot open: {error.strerror}") from error
        view = memoryview(self._map)
        magic, version, count, crc, _, body_offset = HEADER.unpack_from(view)
        if magic != MAGIC:
            raise PolicyError(f"image {path}: not an edufilter image")
        if version != FORMAT_VERSION:
            raise PolicyError(f"image {path}: format version {version}, this edufilter reads {FORMAT_VERSION}")
        if count > MAX_SECTIONS or HEADER.size + count * DIRECTORY_ENTRY.size > min(body_offset, size):
            raise PolicyError(f"image {path}: section directory is damaged")
        if zlib.crc32(view[HEADER.size:]) != crc:
            raise PolicyError(f"image {path}: checksum mismatch (truncated or corrupt file)")
        self.sections: dict[str, memoryview] = {}
        for index in range(count):
            raw_name, offset, length = DIRECTORY_ENTRY.unpack_from(view, HEADER.size + index * DIRECTORY_ENTRY.size)
            if offset < body_offset or offset + length > size or offset % ALIGNMENT:
                raise PolicyError(f"image {path}: section {index} lies outside the file")
            self.sections[raw_name.rstrip(b"\0").decode("ascii", "replace")] = view[offset:offset + length]
        try:
            self.meta: dict[str, object] = json.loads(bytes(self.sections["meta"]))
        except (KeyError, ValueError) as error:
            raise PolicyError(f"image {path}: metadata section is missing or damaged") from error

    def section(self, name: str) -> memoryview:
        try:
            return self.sections[name]
        except KeyError:
            raise PolicyError(f"image {self.path}: no {name!r} section") from None

    @property
    def size(self) -> int:
        return len(self._map)


MAPPED_IMAGES = 8  # the images a process keeps mapped and checked for its next reload


class MappedImages:
    """The images this process mapped and checked last, by path: a reload maps and checks
    only the images whose file changed (a lists or categories image of millions of names
    takes a tenth of a second to check, an override's policy image a millisecond)."""

    def __init__(self, capacity: int = MAPPED_IMAGES) -> None:
        self._capacity = capacity
        self._images: OrderedDict[Path, Image] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, path: Path) -> Image:
        try:
            status = os.stat(path)
        except OSError as error:
            raise PolicyError(f"image {path}: cannot open: {error.strerror}") from error
        with self._lock:
            known = self._images.get(path)
            if known is not None and known.identity == (status.st_dev, status.st_ino, status.st_size,
                                                         status.st_mtime_ns):
                self._images.move_to_end(path)
                return known
        image = Image(path)
        with self._lock:
            self._images[path] = image
            self._images.move_to_end(path)
            while len(self._images) > self._capacity:
                self._images.popitem(last=False)
        return image


mapped_images = MappedImages()
