"""`edufilter lists update`: fetch the UT1 archives, check their MD5, import what changed.

Upstream (https://dsi.ut-capitole.fr/blacklists/download/) publishes `blacklists.tar.gz`
(every category), one `<category>.tar.gz` per category (an alias's archive is a copy of
its target's) and `MD5SUM.LST`, one "md5  file" line per archive. A server without that
list may publish `<archive>.md5` beside each archive instead; an archive with neither is
refused. The stored MD5 makes a daily run that finds nothing new cost one small request.

A download is verified before anything is unpacked, and each category is replaced
atomically by the list store, which also keeps a category whose new list is suspiciously
small: a broken, partial or truncated download never replaces a working list.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from edufilter import __version__
from edufilter.errors import PolicyError
from edufilter.policy.liststore import (
    UT1_SOURCE,
    ImportedCategory,
    ImportReport,
    ListStore,
    register_categories,
)
from edufilter.policy.model import check_id
from edufilter.policy.sources import extract_ut1_archive, scan_ut1
from edufilter.policy.store import PolicyStore
from edufilter.progress import StepProgress
from edufilter.state import StateDir

DEFAULT_UT1_URL = "https://dsi.ut-capitole.fr/blacklists/download/"
WHOLE_ARCHIVE = "blacklists.tar.gz"
CHECKSUM_LIST = "MD5SUM.LST"
TIMEOUT_SECONDS = 60.0  # for each connect and each read: a stalled server fails after this
MAX_DOWNLOAD_SECONDS = 30 * 60  # a server trickling bytes fails after this
MAX_DOWNLOAD_BYTES = 1 << 30  # the whole archive is a few tens of MB
MAX_CHECKSUM_BYTES = 1 << 20
SHRINK_REFUSAL_RATIO = 0.5  # a category losing more than half its entries is kept unless forced
_CHUNK_BYTES = 1 << 20
_MD5 = re.compile(r"[0-9a-f]{32}")
_BSD_CHECKSUM = re.compile(r"MD5 \((?P<file>.+)\) = (?P<md5>[0-9a-fA-F]{32})")


@dataclass(slots=True)
class UpdateReport:
    unchanged: list[str] = field(default_factory=list)  # archives whose MD5 matched the stored lists
    downloaded: list[str] = field(default_factory=list)  # archives fetched, verified and imported
    imports: list[ImportReport] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)  # categories added or changed in the policy
    failed: dict[str, str] = field(default_factory=dict)  # archive or category -> why it was kept

    @property
    def imported(self) -> list[ImportedCategory]:
        return [category for report in self.imports for category in report.imported]

    @property
    def changed(self) -> list[str]:
        """Categories whose data changed: the compiled image needs rebuilding."""
        return [name for report in self.imports for name in report.changed]


class UpdateError(PolicyError):
    """Some archive or category could not be updated; its stored list was kept."""

    def __init__(self, report: UpdateReport) -> None:
        self.report = report
        lines = [why if what in why else f"{what}: {why}" for what, why in report.failed.items()]
        updated = report.changed
        lines.append(f"updated: {', '.join(updated)}" if updated else "nothing was updated")
        super().__init__("lists update failed; the stored lists were kept for:\n  " + "\n  ".join(lines))


def update_lists(
    state_dir: Path | str,
    categories: Collection[str] | None = None,
    *,
    base_url: str = DEFAULT_UT1_URL,
    force: bool = False,
    timeout: float = TIMEOUT_SECONDS,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    recompile: Callable[[Path], object] | None = None,
    progress: StepProgress | None = None,
) -> UpdateReport:
    """Fetch, verify and import the UT1 archives, register the categories, recompile if changed.

    Without categories, the whole archive refreshes the UT1 categories already imported (all on
    a first run); with them, each comes from its own archive. Any failure raises UpdateError.
    """
    state_dir = Path(state_dir)
    store = ListStore.in_state_dir(state_dir)
    upstream = _Upstream(base_url, timeout, max_bytes, progress)
    report = UpdateReport()
    with store.locked():
        if categories is None:
            stored = [category.name for category in store.categories() if category.source == UT1_SOURCE]
            plan: list[tuple[str, list[str] | None]] = [(WHOLE_ARCHIVE, stored or None)]
        else:
            plan = [(f"{check_id('category', name)}.tar.gz", [name]) for name in dict.fromkeys(categories)]
        for archive, wanted in plan:
            try:
                _update_from(store, upstream, archive, wanted, force, report)
            except PolicyError as error:
                report.failed[archive] = str(error)
    imported_categories = [category for result in report.imports for category in result.categories]
    if imported_categories:
        try:
            with PolicyStore(StateDir(state_dir).policy_db) as policy:
                report.registered = register_categories(policy, imported_categories)
        except PolicyError as error:
            report.failed["policy store"] = str(error)
    if recompile is not None and (report.changed or report.registered):
        try:
            recompile(state_dir)
        except PolicyError as error:
            report.failed["compile"] = str(error)
    record_update_run(state_dir, report.failed)
    if report.failed:
        raise UpdateError(report)
    return report




def record_update_run(state_dir: Path, failed: dict[str, str]) -> None:
    """Note when `lists update` ran and what failed, for the overview's list freshness."""
    record = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "failed": sorted(failed)}
    path = StateDir(state_dir).last_update
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(json.dumps(record))
        temporary.replace(path)
    except OSError as error:
        failed["last update record"] = f"{path}: {error.strerror or error}"


def last_update_run(state_dir: Path) -> dict[str, object] | None:
    """What record_update_run noted last, or None (never ran, or unreadable)."""
    try:
        record = json.loads(StateDir(state_dir).last_update.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("at"), str) else None


def _update_from(
    store: ListStore,
    upstream: _Upstream,
    archive: str,
    wanted: list[str] | None,
    force: bool,
    report: UpdateReport,
) -> None:
    url = upstream.url(archive)
    md5 = upstream.published_md5(archive)
    if not force and wanted and all(_is_current(store, name, url, md5) for name in wanted):
        report.unchanged.append(url)
        return
    with store.scratch() as work:
        download = work / archive
        actual = upstream.download(archive, download)
        if actual != md5:
            raise PolicyError(f"{url}: MD5 {actual} differs from the published {md5} (damaged or changed download)")
        tree = work / "tree"
        skipped = extract_ut1_archive(download, tree)
        download.unlink()
        only = None if wanted is None else _categories_to_import(tree, wanted, archive != WHOLE_ARCHIVE, url, report)
        if only == []:
            return
        label = f"import {archive}"
        result = store.import_ut1(
            tree,
            only,
            upstream.progress(label) if upstream.progress else None,
            origin=url,
            md5=md5,
            min_ratio=None if force else SHRINK_REFUSAL_RATIO,
        )
    result.skipped_members = skipped
    report.downloaded.append(url)
    report.imports.append(result)
    report.failed.update(result.failed)


def _is_current(store: ListStore, name: str, url: str, md5: str) -> bool:
    stored = store.get(name)
    return stored is not None and stored.origin == url and stored.md5 == md5


def _categories_to_import(
    tree: Path, wanted: list[str], per_category: bool, url: str, report: UpdateReport
) -> list[str]:
    """The wanted categories the unpacked archive holds, with the targets of aliases.

    A per-category archive of an alias (porn.tar.gz) holds its target's folder (adult/): the
    wanted name becomes an alias of the archive's only category.
    """
    found = scan_ut1(tree)
    only: list[str] = []
    for name in wanted:
        if name not in found and per_category and len(found) == 1:
            target = next(iter(found))
            os.symlink(target, tree / name)
            only += [target, name]
        elif name in found:
            target = found[name].alias_of
            only += [target, name] if target is not None and target not in wanted else [name]
        else:
            report.failed[name] = f"{name}: not in {url}; kept the stored list"
    return list(dict.fromkeys(only))


class _Upstream:
    """The HTTP(S) (or file:) folder holding the archives and their MD5s."""

    def __init__(self, base_url: str, timeout: float, max_bytes: int, progress: StepProgress | None) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.progress = progress
        self._checksums: dict[str, str] | None = None

    def url(self, file: str) -> str:
        return self.base_url + file

    def published_md5(self, archive: str) -> str:
        if self._checksums is None:
            listing = self._fetch_small(CHECKSUM_LIST)
            self._checksums = parse_checksums(listing) if listing is not None else {}
        if archive in self._checksums:
            return self._checksums[archive]
        single = self._fetch_small(f"{archive}.md5")
        if single is not None:
            found = parse_checksums(single, archive)
            if archive in found:
                return found[archive]
            raise PolicyError(f"{self.url(archive + '.md5')}: no MD5 in it")
        raise PolicyError(
            f"{self.url(archive)}: no MD5 published (not in {CHECKSUM_LIST}, no {archive}.md5): "
            "not an upstream archive, or one that cannot be verified"
        )

    def download(self, archive: str, path: Path) -> str:
        """Save the archive at path within the size and time limits; its MD5 (hex)."""
        url = self.url(archive)
        report = self.progress(f"download {archive}") if self.progress else None
        digest = hashlib.md5(usedforsecurity=False)
        deadline = time.monotonic() + MAX_DOWNLOAD_SECONDS
        received = 0
        with self._open(url) as response:
            length = _content_length(response)
            if length is not None and length > self.max_bytes:
                raise PolicyError(f"{url}: {length} bytes, more than the {self.max_bytes >> 20} MiB allowed")
            with open(path, "xb") as out:
                while chunk := self._read(response, url):
                    received += len(chunk)
                    if received > self.max_bytes:
                        raise PolicyError(f"{url}: more than the {self.max_bytes >> 20} MiB allowed")
                    if time.monotonic() > deadline:
                        raise PolicyError(f"{url}: download took more than {MAX_DOWNLOAD_SECONDS} s")
                    digest.update(chunk)
                    out.write(chunk)
                    if report is not None:
                        report(received, length or 0)
        if length is not None and received != length:
            raise PolicyError(f"{url}: download cut short ({received} of {length} bytes)")
        return digest.hexdigest()

    def _read(self, response: http.client.HTTPResponse, url: str) -> bytes:
        try:
            return response.read(_CHUNK_BYTES)
        except TimeoutError:
            raise PolicyError(f"{url}: no data for {self.timeout:g} s (server stalled)") from None
        except (OSError, http.client.HTTPException) as error:
            raise PolicyError(f"{url}: download failed: {error!r}") from error

    def _fetch_small(self, file: str) -> bytes | None:
        """A checksum file's bytes, or None when the server has no such file."""
        url = self.url(file)
        try:
            response = self._open(url)
        except _Missing:
            return None
        with response:
            data = self._read(response, url)
            while len(data) <= MAX_CHECKSUM_BYTES and (more := self._read(response, url)):
                data += more
        if len(data) > MAX_CHECKSUM_BYTES:
            raise PolicyError(f"{url}: larger than {MAX_CHECKSUM_BYTES >> 10} KiB; not a checksum file")
        return data

    def _open(self, url: str) -> http.client.HTTPResponse:
        request = urllib.request.Request(url, headers={"User-Agent": f"edufilter/{__version__}"})
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 404:
                raise _Missing(url) from None
            raise PolicyError(f"{url}: HTTP {error.code} {error.reason}") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, FileNotFoundError):  # a file: URL
                raise _Missing(url) from None
            raise PolicyError(f"{url}: cannot fetch: {error.reason}") from None
        except TimeoutError:
            raise PolicyError(f"{url}: no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise PolicyError(f"{url}: cannot fetch: {error!r}") from error


class _Missing(PolicyError):
    def __init__(self, url: str) -> None:
        super().__init__(f"{url}: not found (HTTP 404)")


def parse_checksums(text: bytes, default_file: str | None = None) -> dict[str, str]:
    """File name -> MD5 from `md5sum` output ("md5  file", "md5 *file") or BSD "MD5 (file) = md5".

    A line holding only an MD5 (a `<archive>.md5` file) stands for default_file.
    """
    checksums: dict[str, str] = {}
    for line in text.decode("utf-8", "replace").splitlines():
        line = line.strip()
        bsd = _BSD_CHECKSUM.fullmatch(line)
        if bsd:
            checksums[PurePosixPath(bsd["file"]).name] = bsd["md5"].lower()
            continue
        fields = line.split()
        if not fields or not _MD5.fullmatch(fields[0].lower()):
            continue
        if len(fields) >= 2:
            checksums[PurePosixPath(fields[-1].lstrip("*")).name] = fields[0].lower()
        elif default_file is not None:
            checksums[default_file] = fields[0].lower()
    return checksums


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
