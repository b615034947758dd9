"""Bulk upload of a school list from the console.

The form (multipart, its file field last) is handed to the API's own upload operation as it
arrives, so the roles, limits, staging, audit and the two-at-once bound are the API's. Its
answer leads to a status page that follows the upload: without script it refreshes itself
(a <meta> refresh inside <noscript>); with static/upload.js it stays put and moves a
progress bar from a small JSON view of the same upload, then reloads once it has finished.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edufilter.api.context import SETTINGS
from edufilter.api.problems import Problem
from edufilter.api.schemas import UPLOAD_MODES
from edufilter.console.invoke import invoke, may
from edufilter.console.pages import _local_time, school_zone
from edufilter.console.visit import HERE, PREFIX, Visit
from edufilter.policy.sources import ListFormat

RECENT_UPLOADS = 20
REFRESH_SECONDS = 2  # the status page's refresh without script
FINISHED = ("done", "failed", "cancelled")


async def uploads(visit: Visit) -> web.StreamResponse:
    return await _uploads_page(visit)


async def _uploads_page(visit: Visit, status: int = 200, error: Problem | None = None,
                        values: dict[str, str] | None = None) -> web.Response:
    if not may(visit.token, "create_upload"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    lists = (await invoke(visit.request, visit.token, "list_lists", query={"limit": 1000})).body["items"]
    recent = (await invoke(visit.request, visit.token, "list_uploads", query={"limit": RECENT_UPLOADS})).body
    zone = await school_zone(visit.request.app)
    return visit.render("uploads.html", status=status, lists=lists, recent=recent["items"], error=error,
                        modes=UPLOAD_MODES,
                        formats=[choice.value for choice in ListFormat],
                        max_mib=visit.request.app[SETTINGS].max_upload_bytes >> 20,
                        values={"list": lists[0]["name"] if lists else "", "mode": "append", "format": "auto",
                                **(values or {})},
                        local=_local_time(zone))


async def start_upload(visit: Visit) -> web.StreamResponse:
    """The form's file, streamed into the API's upload operation; then its status page."""
    values = {name: visit.form.get(name, "") for name in ("list", "mode", "format")}
    if visit.file is None or not visit.file.filename:
        return await _uploads_page(visit, 422, Problem(422, "invalid-change", visit.text("upload_no_file")), values)
    try:
        created = (await invoke(
            visit.request, visit.token, "create_upload", params={"list": values["list"]},
            query={"mode": values["mode"], "format": values["format"],
                   "allow_empty": visit.form.get("allow_empty") == "on"},
            file=visit.file,
        )).body
    except Problem as problem:
        return await _uploads_page(visit, problem.status, problem, values)
    return web.Response(status=303, headers={"Location": f"{PREFIX}/uploads/{created['id']}"})


async def upload_status(visit: Visit) -> web.StreamResponse:
    return await _status_page(visit)


async def _status_page(visit: Visit, status: int = 200, error: Problem | None = None) -> web.Response:
    upload = await _upload(visit)
    zone = await school_zone(visit.request.app)
    running = upload["state"] not in FINISHED
    return visit.render("upload.html", status=status, upload=upload, error=error, running=running,
                        state_text=visit.text(f"upload_state_{upload['state']}"), progress=progress_of(upload),
                        may_cancel=running and may(visit.token, "cancel_upload"), refresh_seconds=REFRESH_SECONDS,
                        local=_local_time(zone))


async def upload_progress(visit: Visit) -> web.StreamResponse:
    """What static/upload.js shows: the upload's counts, its state in the page's language."""
    upload = await _upload(visit)
    return web.json_response({
        "state": upload["state"], "state_text": visit.text(f"upload_state_{upload['state']}"),
        "finished": upload["state"] in FINISHED, "progress": progress_of(upload),
        "bytes_read": upload["bytes_read"], "bytes": upload["bytes"], "entries_read": upload["entries_read"],
    })


async def cancel_upload(visit: Visit) -> web.StreamResponse:
    upload_id = visit.request.match_info["id"]
    try:
        await invoke(visit.request, visit.token, "cancel_upload", params={"id": upload_id})
    except Problem as problem:
        return await _status_page(visit, problem.status, problem)
    return visit.done(f"{PREFIX}/uploads/{upload_id}", visit.text("upload_cancelled_notice"))


async def _upload(visit: Visit) -> dict[str, Any]:
    answer = await invoke(visit.request, visit.token, "get_upload", params={"id": visit.request.match_info["id"]})
    return dict(answer.body)


def progress_of(upload: dict[str, Any]) -> int:
    """Per mille of the work: reading is the long part; once stored and applying, it is read."""
    if upload["state"] in ("storing", "applying", "done"):
        return 1000
    return upload["bytes_read"] * 1000 // upload["bytes"] if upload["bytes"] else 0


async def script(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(HERE / "static" / "upload.js",
                            headers={"Content-Type": "text/javascript; charset=utf-8"})
