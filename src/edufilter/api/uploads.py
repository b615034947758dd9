"""Uploads of whole list files (hosts, plain, adblock; gzip or not) into an admin list.

The file is saved under <state>/uploads, then read, stored and applied in the background;
the upload's state and counts can be polled. Uploads live in this process's memory (the
last KEEP of them): after a restart only their audit rows and their entries remain.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import web

from edufilter.api import views
from edufilter.api.context import APPLIER, SETTINGS, STATE_DIR, policy_path
from edufilter.api.operations import UPLOAD_TYPES, Call, json_response, limited_body, not_found, paginate, path_of
from edufilter.api.problems import Problem
from edufilter.errors import EdufilterError
from edufilter.policy.model import EntryKind, ListEntry
from edufilter.policy.sources import BadLines, ListFormat, read_list, sniff_format
from edufilter.policy.store import Actor, PolicyStore

log = logging.getLogger(__name__)

KEEP = 100


def _now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(slots=True)
class Upload:
    """One upload and how far it got; a background thread updates the counts as it reads."""

    id: str
    list: str
    format: ListFormat
    mode: str
    bytes: int
    state: str = "queued"
    entries_read: int = 0
    bad_lines: BadLines = field(default_factory=BadLines)
    added: int | None = None
    policy_version: int | None = None
    error: str | None = None
    created_at: str = field(default_factory=_now_text)
    finished_at: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "list": self.list,
            "format": self.format.value,
            "mode": self.mode,
            "state": self.state,
            "bytes": self.bytes,
            "entries_read": self.entries_read,
            "bad_line_count": self.bad_lines.count,
            "bad_lines": [
                {"line_number": bad.line_number, "text": bad.text, "reason": bad.reason}
                for bad in list(self.bad_lines.first)
            ],
            "added": self.added,
            "policy_version": self.policy_version,
            "error": self.error,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


class Uploads:
    """The uploads of this process and their background tasks."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.uploads: OrderedDict[str, Upload] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def open(self) -> None:
        # Files left by a process that stopped mid-upload can never finish: start clean.
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(mode=0o700, parents=True)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> int:
        return sum(1 for upload in self.uploads.values() if upload.finished_at is None)

    def start(self, app: web.Application, upload: Upload, path: Path, actor: Actor) -> None:
        self.uploads[upload.id] = upload
        while len(self.uploads) > KEEP:
            self.uploads.popitem(last=False)
        task = asyncio.create_task(_process(app, upload, path, actor))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


UPLOADS = web.AppKey("uploads", Uploads)


async def create_upload(call: Call) -> web.StreamResponse:
    request = call.request
    if request.content_type not in UPLOAD_TYPES:
        raise Problem(415, "unsupported-media-type", f"send the list file as {' or '.join(UPLOAD_TYPES)}")
    name = call.params["list"]
    await call.read_one("list", name, lambda db: views.admin_list(db, name))
    uploads = call.app[UPLOADS]
    upload_id = secrets.token_hex(8)
    path = uploads.directory / upload_id
    size = 0
    try:
        with open(path, "wb") as file:
            async for chunk in limited_body(request, call.app[SETTINGS].max_upload_bytes):
                size += len(chunk)
                file.write(chunk)  # into the page cache: quick enough for the event loop
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    upload = Upload(upload_id, name, ListFormat(call.query["format"]), call.query["mode"], size)
    uploads.start(call.app, upload, path, call.actor)
    return json_response(upload.to_dict(), 202, location=path_of("uploads", upload_id))


async def list_uploads(call: Call) -> web.StreamResponse:
    rows = [upload.to_dict() for upload in reversed(call.app[UPLOADS].uploads.values())]
    return json_response(paginate(rows, call.query, ("list",)))


async def get_upload(call: Call) -> web.StreamResponse:
    upload = call.app[UPLOADS].uploads.get(call.params["id"])
    if upload is None:
        raise not_found("upload", call.params["id"])
    return json_response(upload.to_dict())


async def _process(app: web.Application, upload: Upload, path: Path, actor: Actor) -> None:
    try:
        upload.state = "reading"
        entries = await asyncio.to_thread(_read, path, upload)
        upload.state = "storing"
        upload.policy_version = await asyncio.to_thread(_store, policy_path(app[STATE_DIR]), upload, entries, actor)
        upload.state = "applying"
        await app[APPLIER].apply(upload.policy_version)
        upload.state = "done"
    except Problem as problem:
        upload.state, upload.error = "failed", problem.detail
    except EdufilterError as error:
        upload.state, upload.error = "failed", str(error)
    except Exception:
        log.exception("admin API: upload %s into list %s failed", upload.id, upload.list)
        upload.state, upload.error = "failed", "unexpected error; see the edufilter log"
    finally:
        upload.finished_at = _now_text()
        path.unlink(missing_ok=True)


def _read(path: Path, upload: Upload) -> list[ListEntry]:
    if upload.format is ListFormat.AUTO:
        upload.format = sniff_format(path)  # shown in the upload's state
    entries: dict[ListEntry, None] = {}  # the file's entries in order, each once
    for block in read_list(path, upload.format, upload.bad_lines):
        for kind, values in (
            (EntryKind.DOMAIN, block.names),
            (EntryKind.CIDR, block.cidrs),
            (EntryKind.URL_PREFIX, block.urls),
        ):
            entries.update((ListEntry(kind, value), None) for value in values)
        upload.entries_read = len(entries)
    return list(entries)


def _store(db_path: Path, upload: Upload, entries: list[ListEntry], actor: Actor) -> int:
    # A connection of this thread's own: the API's store thread stays free to answer.
    with PolicyStore(db_path) as store, store.audited(actor, "list", upload.list) as audit:
        audit.before = views.admin_list(audit.db, upload.list)
        if audit.before is None:
            raise not_found("list", upload.list)
        upload.added = store.add_list_entries(upload.list, entries, replace_all=upload.mode == "replace")
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
            },
        }
        return views.policy_version(audit.db)
