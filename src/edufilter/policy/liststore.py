"""Imported category data, one folder per category under <state>/lists, replaced atomically.

`<state>/lists/<category>` is a symlink to `.versions/<category>@<id>/`, which holds
  names      one normalised host name per line, sorted and unique (the name and its subdomains)
  cidrs      one network per line (bare addresses in UT1 domains files and hosts files)
  urls       `host/path` per line (URL prefixes for plain HTTP)
  meta.json  source, origin, counts, imported_at, md5 of the archive, alias_of, digest
An import writes a complete new version beside the live one and swaps the symlink with one
rename: readers see the old data or the new, never a mix, and a crash leaves the old data.
Category names are unique across sources; the policy refers to categories by name.
"""

from __future__ import annotations

import fcntl
import hashlib
import heapq
import json
import os
import secrets
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from itertools import groupby, islice
from pathlib import Path
from typing import IO, Any

from edufilter.errors import PolicyError
from edufilter.policy.model import Category, check_id
from edufilter.policy.sources import (
    BadLines,
    Entries,
    ListFormat,
    OnRead,
    Ut1Category,
    extract_ut1_archive,
    find_ut1_root,
    is_category_name,
    read_list,
    read_ut1_catalogue,
    read_ut1_category,
    scan_ut1,
)
from edufilter.policy.store import PolicyStore
from edufilter.progress import ProgressCallback
from edufilter.state import StateDir

UT1_SOURCE = "ut1"
NAME_CHUNK_BYTES = 1 << 20  # small blocks: the compile holds a few at once; 8 MB ones were a sixth of its peak
RUN_LINES = 1_000_000  # lines sorted in memory at once; more are spilled as sorted runs and merged
SHRINK_GUARD_MIN_ENTRIES = 100  # smaller lists change a lot in relative terms; never refused
_VERSIONS = ".versions"
_PARTIAL = ".partial"
_WORK_PREFIX = ".work-"
_LINK_SUFFIX = ".link"
_DATA_FILES = ("names", "cidrs", "urls")
_WRITE_BATCH = 65536


@dataclass(frozen=True, slots=True)
class ListCounts:
    names: int = 0
    cidrs: int = 0
    urls: int = 0
    bad_lines: int = 0

    @property
    def entries(self) -> int:
        return self.names + self.cidrs + self.urls


@dataclass(frozen=True, slots=True)
class StoredCategory:
    """One imported category as it was when read; its files stay those of that version."""

    name: str
    source: str
    origin: str  # the file, folder or URL it was imported from
    alias_of: str | None
    counts: ListCounts
    imported_at: datetime
    md5: str | None  # of the archive it came from, when the source published one
    digest: str  # SHA-256 over the data files: equal digests, equal data
    folder: Path

    def name_chunks(self, block_bytes: int = NAME_CHUNK_BYTES) -> Iterator[bytes]:
        """The names file in blocks of about block_bytes, each a run of whole b'name\\n' lines."""
        with self._open("names") as names:
            yield from line_blocks(names, block_bytes)

    def cidrs(self) -> Iterator[str]:
        yield from self._lines("cidrs")

    def urls(self) -> Iterator[str]:
        yield from self._lines("urls")

    def _lines(self, kind: str) -> Iterator[str]:
        with self._open(kind) as lines:
            for line in lines:
                yield line[:-1].decode("utf-8")

    @contextmanager
    def _open(self, kind: str) -> Iterator[IO[bytes]]:
        try:
            data = open(self.folder / kind, "rb")
        except FileNotFoundError:
            raise PolicyError(
                f"category {self.name!r} was replaced or removed while being read; read it again"
            ) from None
        except OSError as error:
            raise PolicyError(f"{self.folder / kind}: cannot read: {error.strerror or error}") from error
        with data:
            yield data


# Why a freshly read category must not replace the stored one (None: it may).
Guard = Callable[[ListCounts, StoredCategory | None], str | None]


@dataclass(frozen=True, slots=True)
class ImportedCategory:
    name: str
    counts: ListCounts
    alias_of: str | None
    changed: bool  # its data differs from the stored data it replaced, or it is new
    previous: ListCounts | None


@dataclass(slots=True)
class ImportReport:
    imported: list[ImportedCategory] = field(default_factory=list)
    categories: list[Category] = field(default_factory=list)  # to register, targets before aliases
    failed: dict[str, str] = field(default_factory=dict)  # category -> why its stored data was kept
    bad: BadLines = field(default_factory=BadLines)
    skipped_members: list[str] = field(default_factory=list)  # archive members not unpacked

    @property
    def changed(self) -> list[str]:
        return [category.name for category in self.imported if category.changed]


class ListStore:
    """The imported categories under one folder (normally <state>/lists)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._versions = self.root / _VERSIONS
        self._lock_depth = 0
        self._lock_file: IO[bytes] | None = None

    @classmethod
    def in_state_dir(cls, state_dir: Path | str) -> ListStore:
        return cls(StateDir(state_dir).lists)

    # Reading

    def categories(self) -> list[StoredCategory]:
        try:
            names = sorted(entry.name for entry in self.root.iterdir() if is_category_name(entry.name))
        except FileNotFoundError:
            return []
        except OSError as error:
            raise PolicyError(f"{self.root}: cannot list: {error.strerror or error}") from error
        return [category for name in names if (category := self.get(name)) is not None]

    def get(self, name: str) -> StoredCategory | None:
        if not is_category_name(name):
            return None
        folder = self._live_version(name)
        if folder is None:
            return None
        try:
            meta = json.loads((folder / "meta.json").read_bytes())
            return StoredCategory(
                name=name,
                source=meta["source"],
                origin=meta["origin"],
                alias_of=meta["alias_of"],
                counts=ListCounts(**meta["counts"]),
                imported_at=datetime.fromisoformat(meta["imported_at"]),
                md5=meta["md5"],
                digest=meta["digest"],
                folder=folder,
            )
        except FileNotFoundError:
            return None  # replaced or removed since the link was read
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PolicyError(f"{folder / 'meta.json'}: damaged list store entry: {error}") from error

    # Importing

    def import_ut1(
        self,
        path: Path | str,
        only: Collection[str] | None = None,
        progress: ProgressCallback | None = None,
        *,
        origin: str | None = None,
        md5: str | None = None,
        min_ratio: float | None = None,
    ) -> ImportReport:
        """Import the categories of a UT1 folder or archive (whole or single-category).

        A category whose files are damaged, or that would shrink below min_ratio of its
        stored entries, keeps its stored data and is listed in report.failed.
        """
        path = Path(path)
        origin = origin or str(path.resolve())
        with self.locked():
            if path.is_dir():
                return self._import_ut1_tree(find_ut1_root(path), only, progress, origin, md5, min_ratio)
            if not path.exists():
                raise PolicyError(f"{path}: no such file or folder")
            with self.scratch() as work:
                skipped = extract_ut1_archive(path, work)
                report = self._import_ut1_tree(work, only, progress, origin, md5, min_ratio)
            report.skipped_members = skipped
            return report

    def import_file(
        self,
        path: Path | str,
        category: str,
        fmt: ListFormat | str = ListFormat.AUTO,
        source: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> ImportReport:
        """Import a hosts, plain or adblock list file as one category (replacing its data)."""
        path = Path(path)
        check_id("category", category)
        if not path.is_file():
            raise PolicyError(f"{path}: no such file")
        bad = BadLines()
        total = path.stat().st_size

        def refuse_junk(counts: ListCounts, stored: StoredCategory | None) -> str | None:
            if counts.entries == 0 and bad.count:
                return f"{path}: no valid entries in {bad.count} lines (first: {bad.first[0]}); is it a list file?"
            return None

        with self.locked():
            imported = self._write_category(
                category,
                lambda on_read: read_list(path, fmt, bad, on_read),
                bad,
                source=source or path.name,
                origin=str(path.resolve()),
                on_read=_progress_counter(progress, total),
                guard=refuse_junk,
            )
        if progress is not None:
            progress(total, total)
        return ImportReport(
            imported=[imported],
            categories=[Category(name=category, source=source or path.name)],
            bad=bad,
        )

    def check_removable(self, name: str) -> None:
        """PolicyError when stored aliases point at the category (remove those first)."""
        users = [stored.name for stored in self.categories() if stored.alias_of == name]
        if users:
            raise PolicyError(f"category {name!r} cannot be removed: it is the target of aliases {', '.join(users)}")

    def remove(self, name: str) -> None:
        with self.locked():
            folder = self._live_version(name)
            if folder is None:
                raise PolicyError(f"no imported category {name!r}")
            self.check_removable(name)
            try:
                os.unlink(self.root / name)
                _fsync_dir(self.root)
            except OSError as error:
                raise PolicyError(f"{self.root / name}: cannot remove: {error.strerror or error}") from error
            shutil.rmtree(folder, ignore_errors=True)

    # Locking and scratch space

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's write lock (re-entrant in this object): one writer at a time."""
        if self._lock_depth == 0:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                lock_file = open(self.root / ".lock", "wb")
            except OSError as error:
                raise PolicyError(f"{self.root}: cannot write the list store: {error.strerror or error}") from error
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock_file.close()
                raise PolicyError(f"{self.root}: another list import or update is running") from None
            self._lock_file = lock_file
            self._remove_leftovers()
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_file is not None:
                self._lock_file.close()  # closing releases the flock
                self._lock_file = None

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """An empty folder on the store's file system, removed afterwards (lock held)."""
        with self.locked():
            work = self.root / f"{_WORK_PREFIX}{secrets.token_hex(6)}"
            work.mkdir()
            try:
                yield work
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """Remove what a crashed writer left: partial versions, unused versions, scratch."""
        live = set()
        for entry in self.root.iterdir():
            # Category names never start with a dot: these names are the store's own.
            if entry.name.startswith(_WORK_PREFIX) or (entry.name[0] == "." and entry.name.endswith(_LINK_SUFFIX)):
                _remove(entry)
            elif entry.is_symlink():
                live.add(os.readlink(entry))
        if self._versions.is_dir():
            for version in self._versions.iterdir():
                if f"{_VERSIONS}/{version.name}" not in live:
                    _remove(version)

    # Writing one category

    def _import_ut1_tree(
        self,
        root: Path,
        only: Collection[str] | None,
        progress: ProgressCallback | None,
        origin: str,
        md5: str | None,
        min_ratio: float | None,
    ) -> ImportReport:
        tree = scan_ut1(root)
        if not tree:
            raise PolicyError(f"{origin}: no UT1 categories in it (folders holding domains or urls files)")
        selected = self._select(tree, only, origin)
        catalogue_file = root / "global_usage"
        catalogue = read_ut1_catalogue(catalogue_file, UT1_SOURCE) if catalogue_file.is_file() else {}
        report = ImportReport()
        targets = [name for name in selected if tree[name].alias_of is None]
        aliases = [name for name in selected if tree[name].alias_of is not None]
        total = sum(_size(path) for name in targets for path in tree[name].domain_files + tree[name].url_files)
        on_read = _progress_counter(progress, total)
        guard = _shrink_guard(min_ratio) if min_ratio is not None else None
        for name in targets + aliases:
            folder: Ut1Category = tree[name]
            alias_of = folder.alias_of
            if alias_of is not None and alias_of in report.failed and self.get(alias_of) is None:
                report.failed[name] = f"{name}: alias of {alias_of}, which could not be imported"
                continue
            try:
                imported = self._write_category(
                    name,
                    lambda on: read_ut1_category(folder, report.bad, on),
                    report.bad,
                    source=UT1_SOURCE,
                    origin=origin,
                    md5=md5,
                    alias_of=alias_of,
                    on_read=on_read,
                    guard=None if alias_of else guard,
                )
            except PolicyError as error:
                report.failed[name] = str(error)
                continue
            report.imported.append(imported)
            described = catalogue.get(name, Category(name=name, source=UT1_SOURCE))
            report.categories.append(replace(described, alias_of=alias_of))
        if progress is not None:
            progress(total, total)
        return report

    def _select(self, tree: dict[str, Ut1Category], only: Collection[str] | None, origin: str) -> list[str]:
        if only is None:
            return list(tree)
        wanted = list(dict.fromkeys(only))
        unknown = [name for name in wanted if name not in tree]
        if unknown:
            available = ", ".join(list(tree)[:12]) + (", ..." if len(tree) > 12 else "")
            raise PolicyError(f"{origin}: has no category {', '.join(unknown)} (it has {available})")
        for name in wanted:
            target = tree[name].alias_of
            if target is not None and target not in wanted and self.get(target) is None:
                raise PolicyError(f"{name} is an alias of {target}: import {target} too")
        return wanted

    def _write_category(
        self,
        name: str,
        read: Callable[[OnRead | None], Iterator[Entries]],
        bad: BadLines,
        *,
        source: str,
        origin: str,
        md5: str | None = None,
        alias_of: str | None = None,
        on_read: OnRead | None = None,
        guard: Guard | None = None,
    ) -> ImportedCategory:
        """Read a category into a new version and make it live; PolicyError keeps the old one."""
        check_id("category", name)
        previous = self.get(name)
        build = self._versions / f"{name}@{secrets.token_hex(6)}{_PARTIAL}"
        try:
            build.mkdir(parents=True)
            writers = {kind: _SortedLinesWriter(build / kind) for kind in _DATA_FILES}
            bad_before = bad.count
            if alias_of is None:  # an alias holds no data: rules on it apply to its target's
                for entries in read(on_read):
                    writers["names"].add(entries.names)
                    writers["cidrs"].add(entries.cidrs)
                    writers["urls"].add(entries.urls)
            digest = hashlib.sha256()
            written = {kind: writer.finish(digest) for kind, writer in writers.items()}
            counts = ListCounts(written["names"], written["cidrs"], written["urls"], bad.count - bad_before)
            refusal = guard(counts, previous) if guard is not None else None
            if refusal:
                raise PolicyError(refusal)
            meta = {
                "name": name,
                "source": source,
                "origin": origin,
                "alias_of": alias_of,
                "counts": {"names": counts.names, "cidrs": counts.cidrs, "urls": counts.urls,
                           "bad_lines": counts.bad_lines},
                "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "md5": md5,
                "digest": digest.hexdigest(),
            }
            _write_synced(build / "meta.json", json.dumps(meta, indent=2).encode() + b"\n")
            _fsync_dir(build)
            self._publish(name, build)
        except OSError as error:  # a full disk, mostly
            shutil.rmtree(build, ignore_errors=True)
            raise PolicyError(f"{name}: cannot write the list store: {error.strerror or error}") from error
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        changed = previous is None or previous.digest != meta["digest"] or previous.alias_of != alias_of
        return ImportedCategory(name, counts, alias_of, changed, previous.counts if previous else None)

    def _publish(self, name: str, build: Path) -> None:
        version = build.with_name(build.name.removesuffix(_PARTIAL))
        os.rename(build, version)
        _fsync_dir(self._versions)
        old = self._live_version(name)
        link = self.root / f".{name}{_LINK_SUFFIX}"
        os.symlink(f"{_VERSIONS}/{version.name}", link)
        try:
            os.replace(link, self.root / name)
        except OSError as error:
            os.unlink(link)
            raise PolicyError(f"{self.root / name}: cannot replace it: {error.strerror or error}") from error
        _fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _live_version(self, name: str) -> Path | None:
        try:
            target = os.readlink(self.root / name)
        except OSError:  # no such category, or not one of the store's links
            return None
        folder = self.root / target
        return folder if folder.parent == self._versions else None


def line_blocks(lines: IO[bytes], block_bytes: int = NAME_CHUNK_BYTES) -> Iterator[bytes]:
    """A file of b'line\\n' lines in blocks of about block_bytes, each a run of whole lines."""
    while block := lines.read(block_bytes):
        yield block if block.endswith(b"\n") else block + lines.readline()


def register_categories(store: PolicyStore, categories: Iterable[Category]) -> list[str]:
    """Add or update each category in the policy store (targets first); the names changed.

    Titles an import does not carry (a list file, a one-category archive) stay as stored.
    """
    stored = {category.name: category for category in store.load().categories}
    latest = {category.name: category for category in categories}
    changed = []
    for category in sorted(latest.values(), key=lambda category: category.alias_of is not None):
        old = stored.get(category.name)
        if old is None:
            store.add_category(category)
        else:
            category = replace(
                category,
                titles=category.titles or old.titles,
                descriptions=category.descriptions or old.descriptions,
            )
            if category == old:
                continue
            store.update_category(category)
        changed.append(category.name)
    return changed


def _shrink_guard(min_ratio: float) -> Guard:
    def refuse_shrink(counts: ListCounts, stored: StoredCategory | None) -> str | None:
        if stored is None or stored.alias_of or stored.counts.entries < SHRINK_GUARD_MIN_ENTRIES:
            return None
        if counts.entries >= stored.counts.entries * min_ratio:
            return None
        return (
            f"{stored.name}: the new list has {counts.entries} entries, the stored one "
            f"{stored.counts.entries}; kept the stored list (a partial or broken source?); "
            f"force the update to accept it"
        )

    return refuse_shrink


class _SortedLinesWriter:
    """Writes the lines added, sorted and unique. Beyond RUN_LINES lines, sorted runs are
    spilled beside the file and merged at the end, so memory stays bounded at any size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_lines = RUN_LINES
        self._pending: list[str] = []
        self._runs: list[Path] = []

    def add(self, lines: list[str]) -> None:
        self._pending += lines
        if len(self._pending) >= self.run_lines:
            self._spill()

    def finish(self, digest: Any) -> int:
        """Write the file (synced to disk), feed its bytes to digest; the number of lines."""
        with open(self.path, "wb") as out:
            if self._runs:
                self._spill()
                count = self._merge_runs(out, digest)
            else:
                unique = sorted(set(self._pending))
                self._pending = []
                data = _joined(unique)
                out.write(data)
                digest.update(data)
                count = len(unique)
            if count:  # an empty file has no data to flush; the folder's fsync records it
                out.flush()
                os.fsync(out.fileno())
        digest.update(b"\0")  # the files' boundaries count in the digest
        return count

    def _spill(self) -> None:
        run = self.path.with_name(f"{self.path.name}.run{len(self._runs)}")
        run.write_bytes(_joined(sorted(set(self._pending))))
        self._pending = []
        self._runs.append(run)

    def _merge_runs(self, out: IO[bytes], digest: Any) -> int:
        # Every line ends in b"\n" and no entry holds a byte below it, so merging the runs'
        # lines as bytes keeps the order that sorting the entries as text gave each run.
        count = 0
        with ExitStack() as stack:
            runs = [stack.enter_context(open(run, "rb", buffering=1 << 20)) for run in self._runs]
            unique = (line for line, _ in groupby(heapq.merge(*runs)))
            while batch := list(islice(unique, _WRITE_BATCH)):
                data = b"".join(batch)
                out.write(data)
                digest.update(data)
                count += len(batch)
        for run in self._runs:
            run.unlink()
        self._runs = []
        return count


def _joined(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def _progress_counter(progress: ProgressCallback | None, total: int) -> OnRead | None:
    if progress is None:
        return None
    done = 0

    def on_read(count: int) -> None:
        nonlocal done
        done += count
        progress(min(done, total), total)

    return on_read


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
