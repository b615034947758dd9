"""The console's page of review requests from the block page: approve one as an override for
its group (teachers: their groups, their maximum minutes) or, for editors, as an entry in a
school list; or decline it. Every step is an operation of the API's table."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edufilter.api.operations import etag_of
from edufilter.api.problems import Problem
from edufilter.api.tokens import MAX_OVERRIDE_MINUTES
from edufilter.console.invoke import invoke, may
from edufilter.console.pages import SUGGESTED_MINUTES, _local_time, _number, school_zone
from edufilter.console.visit import PREFIX, Visit

PENDING_SHOWN = 200
DECIDED_SHOWN = 20


async def reviews(visit: Visit) -> web.StreamResponse:
    return await _reviews_page(visit)


async def _reviews_page(visit: Visit, status: int = 200, error: Problem | None = None) -> web.Response:
    token = visit.token
    if not may(token, "list_review_requests"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))

    async def requests(state: str, limit: int) -> list[dict[str, Any]]:
        answer = await invoke(visit.request, token, "list_review_requests",
                              query={"state": state, "sort": "-id", "limit": limit})
        return list(answer.body["items"])

    pending = [{**row, "etag": etag_of(row)} for row in await requests("pending", PENDING_SHOWN)]
    decided = sorted(await requests("approved", DECIDED_SHOWN) + await requests("declined", DECIDED_SHOWN),
                     key=lambda row: str(row["decided_at"]), reverse=True)[:DECIDED_SHOWN]
    lists: list[dict[str, Any]] = []
    if may(token, "create_entry"):
        lists = (await invoke(visit.request, token, "list_lists", query={"limit": 1000})).body["items"]
    max_minutes = token.max_minutes or MAX_OVERRIDE_MINUTES
    zone = await school_zone(visit.request.app)
    return visit.render("reviews.html", status=status, pending=pending, decided=decided, lists=lists,
                        minutes=min(SUGGESTED_MINUTES, max_minutes), max_minutes=max_minutes, error=error,
                        local=_local_time(zone))


async def approve(visit: Visit) -> web.StreamResponse:
    body: dict[str, Any] = {"as": visit.form.get("as", "override")}
    if body["as"] == "allow_list":
        body["list"] = visit.form.get("list", "")
    else:
        body["minutes"] = _number(visit.form.get("minutes", "").strip())
    return await _decide(visit, "approve_review_request", body, "review_approved")


async def decline(visit: Visit) -> web.StreamResponse:
    return await _decide(visit, "decline_review_request", None, "review_declined")


async def _decide(visit: Visit, operation_id: str, body: Any, notice: str) -> web.StreamResponse:
    request_id = _number(visit.request.match_info["id"])
    try:
        decided = (await invoke(visit.request, visit.token, operation_id, params={"id": request_id}, body=body,
                                if_match=visit.form.get("etag") or None)).body
    except Problem as problem:
        return await _reviews_page(visit, problem.status, problem)
    return visit.done(f"{PREFIX}/reviews", visit.text(notice, site=decided["name"]))
