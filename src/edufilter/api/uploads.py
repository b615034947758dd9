"""Uploads of whole list files (hosts, plain, adblock; gzip or not) into an admin list.

The file is saved under <state>/uploads, then read, stored and applied in the background;
the upload's state and counts can be polled, and it can be cancelled (so is every upload
when the API stops). Reading stages the entries in the database block by block, so memory
stays bounded whatever the file's size; gzip may inflate only so much, and only a few
uploads run at once. Uploads live in this process's memory (the last KEEP of them): after a
restart only their audit rows and their entries remain.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import web

from edufilter import logs
from edufilter.api import views
from edufilter.api.context import APPLIER, SETTINGS, STATE_DIR, policy_path
from edufilter.api.operations import UPLOAD_TYPES, Call, json_response, not_found, paginate, path_of
from edufilter.api.problems import Problem
from edufilter.errors import EdufilterError, PolicyError
from edufilter.policy.model import EntryKind, ListEntry, parse_entry
from edufilter.policy.sources import BadLines, ListFormat, read_list, sniff_format
from edufilter.policy.store import Actor, PolicyStore, policy_version

log = logging.getLogger(logs.API)

KEEP = 100
REFUSED_KEPT = 20  # refused entries shown with their reason


def _now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Cancelled(Exception):
    """The upload was cancelled (by a request or because the API stops)."""


@dataclass(slots=True)
class Upload:
    """One upload and how far it got; a background thread updates the counts as it reads."""

    id: str
    list: str
    format: ListFormat
    mode: str
    bytes: int
    state: str = "queued"
    bytes_read: int = 0  # of the file on disk (compressed, for gzip): the progress of reading
    entries_read: int = 0
    bad_lines: BadLines = field(default_factory=BadLines)
    refused_count: int = 0
    refused: list[str] = field(default_factory=list)
    added: int | None = None
    policy_version: int | None = None
    error: str | None = None
    created_at: str = field(default_factory=_now_text)
    finished_at: str | None = None
    allow_empty: bool = False  # a replace may leave the list empty
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "list": self.list,
            "format": self.format.value,
            "mode": self.mode,
            "state": self.state,
            "bytes": self.bytes,
            "bytes_read": self.bytes_read,
            "entries_read": self.entries_read,
            "bad_line_count": self.bad_lines.count,
            "bad_lines": [
                {"line_number": bad.line_number, "text": bad.text, "reason": bad.reason}
                for bad in list(self.bad_lines.first)
            ],
            "refused_count": self.refused_count,
            "refused": list(self.refused),
            "added": self.added,
            "policy_version": self.policy_version,
            "error": self.error,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }

    def check_cancelled(self) -> None:
        if self.cancel_requested.is_set():
            raise Cancelled()


class Uploads:
    """The uploads of this process, their background tasks, and how many may run at once."""

    def __init__(self, directory: Path, max_running: int) -> None:
        self.directory = directory
        self.max_running = max_running
        self.uploads: OrderedDict[str, Upload] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.receiving = 0  # requests whose file is still arriving

    def open(self) -> None:
        # Files left by a process that stopped mid-upload can never finish: start clean.
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(mode=0o700, parents=True)

    async def close(self) -> None:
        """Cancel every upload under way and wait for its thread to stop (within a block)."""
        for upload in self.uploads.values():
            upload.cancel_requested.set()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> int:
        return sum(1 for upload in self.uploads.values() if upload.finished_at is None)

    def reserve(self) -> None:
        """Count a new upload's request, or refuse it (503) while max_running are under way."""
        if self.running + self.receiving >= self.max_running:
            raise Problem(503, "too-many-uploads", f"{self.max_running} uploads are under way; try again when one "
                          "has finished", headers={"Retry-After": "10"})
        self.receiving += 1

    def start(self, app: web.Application, upload: Upload, path: Path, actor: Actor) -> None:
        self.uploads[upload.id] = upload
        while len(self.uploads) > KEEP:
            self.uploads.popitem(last=False)
        task = asyncio.create_task(_process(app, upload, path, actor))
        self._tasks[upload.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(upload.id, None))

    async def cancel(self, upload: Upload) -> None:
        """Cancel an upload under way and wait until it has stopped."""
        upload.cancel_requested.set()
        task = self._tasks.get(upload.id)
        if task is not None:
            await asyncio.wait({task})


UPLOADS = web.AppKey("uploads", Uploads)


async def create_upload(call: Call) -> web.StreamResponse:
    if call.raw_body_type() not in UPLOAD_TYPES:
        raise Problem(415, "unsupported-media-type", f"send the list file as {' or '.join(UPLOAD_TYPES)}")
    name, mode, allow_empty = call.params["list"], call.query["mode"], call.query["allow_empty"]
    await call.read_one("list", name, lambda db: views.admin_list(db, name))
    uploads = call.app[UPLOADS]
    uploads.reserve()
    try:
        upload_id = secrets.token_hex(8)
        path = uploads.directory / upload_id
        size = 0
        try:
            with open(path, "wb") as file:
                async for chunk in call.raw_body(call.app[SETTINGS].max_upload_bytes):
                    size += len(chunk)
                    file.write(chunk)  # into the page cache: quick enough for the event loop
            if size == 0 and mode == "replace" and not allow_empty:
                raise _empty_replacement(name)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        upload = Upload(upload_id, name, ListFormat(call.query["format"]), mode, size, allow_empty=allow_empty)
        uploads.start(call.app, upload, path, call.actor)
    finally:
        uploads.receiving -= 1
    return json_response(upload.to_dict(), 202, location=path_of("uploads", upload_id))


def _empty_replacement(list_name: str) -> Problem:
    return Problem(422, "empty-replacement",
                   f"the file has no entries: replacing would empty list {list_name}; to do that, "
                   "send allow_empty=true")


async def list_uploads(call: Call) -> web.StreamResponse:
    rows = [upload.to_dict() for upload in reversed(call.app[UPLOADS].uploads.values())]
    return json_response(paginate(rows, call.query, ("list",)))


def _find(call: Call) -> Upload:
    upload = call.app[UPLOADS].uploads.get(call.params["id"])
    if upload is None:
        raise not_found("upload", call.params["id"])
    return upload


async def get_upload(call: Call) -> web.StreamResponse:
    return json_response(_find(call).to_dict())


async def cancel_upload(call: Call) -> web.StreamResponse:
    upload = _find(call)
    if upload.finished_at is not None:
        raise Problem(409, "finished", f"upload {upload.id} has already finished: {upload.state}")
    await call.app[UPLOADS].cancel(upload)
    return json_response(upload.to_dict())


async def _process(app: web.Application, upload: Upload, path: Path, actor: Actor) -> None:
    settings = app[SETTINGS]
    try:
        upload.state = "reading"
        upload.policy_version = await asyncio.to_thread(
            _ingest, policy_path(app[STATE_DIR]), upload, path, actor, settings.max_upload_inflated_bytes,
            settings.max_upload_ratio,
        )
        upload.state = "applying"
        await app[APPLIER].apply(upload.policy_version)
        upload.state = "done"
    except Cancelled:
        upload.state, upload.error = "cancelled", "cancelled before it was stored; the list is unchanged"
    except Problem as problem:
        upload.state, upload.error = "failed", problem.detail
    except EdufilterError as error:
        if upload.cancel_requested.is_set():  # the store stopped its statement
            upload.state, upload.error = "cancelled", "cancelled before it was stored; the list is unchanged"
        else:
            upload.state, upload.error = "failed", str(error)
    except Exception:
        log.exception("admin API: upload %s into list %s failed", upload.id, upload.list)
        upload.state, upload.error = "failed", "unexpected error; see the edufilter log"
    finally:
        upload.finished_at = _now_text()
        path.unlink(missing_ok=True)


def _ingest(db_path: Path, upload: Upload, path: Path, actor: Actor, max_bytes: int, max_ratio: float) -> int:
    """Read the file into the store's staging table, then add it to the list with its audit
    row; returns the policy version that holds it. A connection of this thread's own: the
    API's store thread stays free to answer."""
    if upload.format is ListFormat.AUTO:
        upload.format = sniff_format(path)  # shown in the upload's state
    with PolicyStore(db_path) as store:
        store.stop_when(upload.cancel_requested.is_set)
        upload.entries_read = store.stage_list_entries(_entries(path, upload, max_bytes, max_ratio))
        if upload.entries_read == 0 and upload.mode == "replace" and not upload.allow_empty:
            raise _empty_replacement(upload.list)
        upload.state = "storing"
        upload.check_cancelled()
        with store.audited(actor, "list", upload.list) as audit:
            audit.before = views.admin_list(audit.db, upload.list)
            if audit.before is None:
                raise not_found("list", upload.list)
            upload.added = store.add_staged_list_entries(upload.list, replace_all=upload.mode == "replace")
            after = views.admin_list(audit.db, upload.list)
            assert after is not None
            audit.after = {
                **after,
                "upload": {
                    "id": upload.id,
                    "format": upload.format.value,
                    "mode": upload.mode,
                    "entries_read": upload.entries_read,
                    "added": upload.added,
                    "bad_line_count": upload.bad_lines.count,
                    "refused_count": upload.refused_count,
                },
            }
            return policy_version(audit.db)


def _entries(path: Path, upload: Upload, max_bytes: int, max_ratio: float) -> Iterator[ListEntry]:
    """The file's entries as parse_entry makes them; those it refuses (public suffixes) are
    counted. Checks for cancellation between blocks."""
    def on_read(count: int) -> None:
        upload.bytes_read += count

    for block in read_list(path, upload.format, upload.bad_lines, on_read, max_bytes=max_bytes, max_ratio=max_ratio):
        upload.check_cancelled()
        for kind, values in (
            (EntryKind.DOMAIN, block.names),
            (EntryKind.CIDR, block.cidrs),
            (EntryKind.URL_PREFIX, block.urls),
        ):
            for value in values:
                try:
                    entry = parse_entry(kind, value)
                except PolicyError as error:
                    upload.refused_count += 1
                    if len(upload.refused) < REFUSED_KEPT:
                        upload.refused.append(str(error))
                    continue
                upload.entries_read += 1
                yield entry
