"""The group's console, mounted by make_hub_app under /console/: the sites in scope and their
blocks, the group's and the sites' parts (edited one file at a time over the revision read),
and the audit log. Sessions, CSRF, security headers, templates and texts are the school
console's; every read and change is an operation of the group API's table, run through
console.invoke as the signed-in token, with the API's scope rule on every page naming a site."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from edufilter.api.operations import MAX_PAGE, Operation
from edufilter.api.problems import Problem
from edufilter.console import pages
from edufilter.console.app import serve_pages, stylesheet, to_start
from edufilter.console.charts import bar_chart
from edufilter.console.invoke import Outcome, invoke, may
from edufilter.console.visit import PREFIX, NavItem, Visit, page
from edufilter.hub.scope import refuse_other_site

GROUP_OPERATIONS = web.AppKey("hub_console_operations", Mapping[str, Operation])
WINDOWS = ("1h", "24h", "7d")
LATEST_EVENTS = 10
LATEST_EVENTS_SINCE = timedelta(hours=1)
EVENT_PAGES = 20  # pages of the last hour read at most for the latest events
AUDIT_PAGE = 50

HUB_NAVIGATION = (
    NavItem(f"{PREFIX}/overview", "nav_overview", "list_sites"),
    NavItem(f"{PREFIX}/parts", "hub_nav_parts", "get_group_part"),
    NavItem(f"{PREFIX}/audit", "nav_audit", "list_audit"),
)


class HubVisit(Visit):
    """A visit to the group's console: its menu, from the group API's role table."""

    __slots__ = ()

    def navigation(self) -> list[NavItem]:
        return [item for item in HUB_NAVIGATION if self.may(item.operation_id)]

    def may(self, operation_id: str) -> bool:
        """Whether this token's role may run the group API's operation."""
        return may(self.token, operation_id, self.request.app[GROUP_OPERATIONS])

    async def run(self, operation_id: str, **inputs: Any) -> Outcome:
        """A group API operation as this visit's token."""
        return await invoke(self.request, self.token, operation_id, operations=self.request.app[GROUP_OPERATIONS],
                            **inputs)


HubPage = Callable[[HubVisit], Awaitable[web.StreamResponse]]


def _hub_page(handler: HubPage) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """page() with a HubVisit, which is what the handler is given."""
    return page(handler, HubVisit)  # type: ignore[arg-type]


def setup_hub_console(app: web.Application, operations: list[Operation]) -> None:
    """Add the group console's routes to the group API's application, over its operations."""
    app[GROUP_OPERATIONS] = {operation.operation_id: operation for operation in operations}
    routes = [
        app.router.add_get(PREFIX, to_start),
        app.router.add_get(f"{PREFIX}/", to_start),
        app.router.add_get(f"{PREFIX}/sign-in", pages.sign_in_form),
        app.router.add_post(f"{PREFIX}/sign-in", pages.sign_in),
        app.router.add_post(f"{PREFIX}/sign-out", _hub_page(pages.sign_out)),
        app.router.add_get(f"{PREFIX}/overview", _hub_page(overview)),
        app.router.add_get(f"{PREFIX}/overrides", _hub_page(teachers_elsewhere)),
        app.router.add_get(f"{PREFIX}/parts", _hub_page(parts)),
        app.router.add_get(f"{PREFIX}/parts/group", _hub_page(part)),
        app.router.add_post(f"{PREFIX}/parts/group", _hub_page(save_file)),
        app.router.add_get(f"{PREFIX}/parts/sites/{{site}}", _hub_page(part)),
        app.router.add_post(f"{PREFIX}/parts/sites/{{site}}", _hub_page(save_file)),
        app.router.add_get(f"{PREFIX}/audit", _hub_page(audit)),
        app.router.add_get(f"{PREFIX}/static/console.css", stylesheet),
    ]
    serve_pages(app, routes)


def utc_minute(moment: str) -> str:
    """An ISO time of the API as the console shows it: to the minute, in UTC (sites may lie in
    different time zones; the group's console shows one)."""
    return datetime.fromisoformat(moment).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# Overview: the sites in scope, their blocks per window, the latest events


async def overview(visit: HubVisit) -> web.StreamResponse:
    if not visit.may("list_sites"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    window = visit.request.query.get("window", "24h")
    if window not in WINDOWS:
        window = "24h"
    sites = (await visit.run("list_sites")).body["items"]
    blocks = {choice: await _counts(visit, choice, "site") for choice in WINDOWS}
    charts = {"site": bar_chart(blocks[window], visit.text("other")),
              "category": bar_chart(await _counts(visit, window, "category"), visit.text("other"))}
    return visit.render("hub_overview.html", sites=sites, group_revision=await _group_revision(visit),
                        blocks=blocks, windows=WINDOWS, window=window, charts=charts,
                        events=await _latest_events(visit), when=utc_minute)


async def _counts(visit: HubVisit, window: str, by: str) -> Counter[str]:
    rows = (await visit.run("event_counts", query={"window": window, "by": by})).body["rows"]
    return Counter({str(row["key"]) if row["key"] is not None else visit.text("other"): row["events"] for row in rows})


async def _group_revision(visit: HubVisit) -> int | None:
    try:
        return (await visit.run("get_group_part")).body["revision"]
    except Problem as problem:
        if problem.status == 404:  # no group policy yet
            return None
        raise


async def _latest_events(visit: HubVisit) -> list[dict[str, Any]]:
    """The newest LATEST_EVENTS of the last hour across the sites in scope, newest first. The
    API reads oldest first, so this follows its pages (EVENT_PAGES at most) keeping the tail."""
    since = (datetime.now(timezone.utc) - LATEST_EVENTS_SINCE).isoformat(timespec="seconds")
    newest: deque[dict[str, Any]] = deque(maxlen=LATEST_EVENTS)
    query: dict[str, Any] = {"since": since, "limit": MAX_PAGE}
    for _ in range(EVENT_PAGES):
        answer = (await visit.run("list_events", query=query)).body
        newest.extend(answer["items"])
        if answer["next_cursor"] is None:
            break
        query = {**query, "cursor": answer["next_cursor"]}
    return list(reversed(newest))


async def teachers_elsewhere(visit: HubVisit) -> web.StreamResponse:
    """Where the sign-in sends a token that may not read the overview (a teacher's)."""
    raise Problem(403, "forbidden", visit.text("hub_teachers_elsewhere"))


# Parts: the group's and each site's, one file edited at a time over the revision read


async def parts(visit: HubVisit) -> web.StreamResponse:
    sites = (await visit.run("list_sites")).body["items"]
    return visit.render("hub_parts.html", sites=sites, group_revision=await _group_revision(visit))


def _scope(visit: HubVisit) -> str | None:
    """The site the page names (None: the group's part); another site than a site token's is 403."""
    site = visit.request.match_info.get("site")
    refuse_other_site(visit.token, site)
    return site


def _may_edit(visit: HubVisit, site: str | None) -> bool:
    """The API's rule: editors and admins; the group's part by the group's tokens only."""
    if site is None:
        return visit.may("put_group_part") and visit.token.site is None
    return visit.may("put_site_part")


async def _read_part(visit: HubVisit, site: str | None) -> dict[str, Any]:
    if site is None:
        return (await visit.run("get_group_part")).body
    return (await visit.run("get_site_part", params={"site": site})).body


def _part_path(site: str | None) -> str:
    return f"{PREFIX}/parts/group" if site is None else f"{PREFIX}/parts/sites/{site}"


async def part(visit: HubVisit) -> web.StreamResponse:
    site = _scope(visit)
    stored = await _read_part(visit, site)
    editing = visit.request.query.get("file")
    if editing is not None and not _may_edit(visit, site):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    return _part_page(visit, site, stored, editing, stored["files"].get(editing or "", ""), stored["revision"])


def _part_page(visit: HubVisit, site: str | None, stored: dict[str, Any], editing: str | None, draft: str,
               revision: int, status: int = 200, error: str | None = None) -> web.Response:
    return visit.render("hub_part.html", status=status, site=site, part=stored, action=_part_path(site),
                        may_edit=_may_edit(visit, site), editing=editing, draft=draft, revision=revision,
                        error=error)


async def save_file(visit: HubVisit) -> web.StreamResponse:
    """One file's new text over the revision the editor read: the API refuses (412) when the part
    changed since, and the page then keeps the editor's text beside the current revision."""
    site = _scope(visit)
    name = visit.form.get("file", "").strip()
    draft = visit.form.get("text", "").replace("\r\n", "\n")
    read_revision = visit.form.get("revision", "")
    stored = await _read_part(visit, site)
    body = {"files": {**stored["files"], name: draft}}
    operation, params = ("put_group_part", {}) if site is None else ("put_site_part", {"site": site})
    try:
        saved = await visit.run(operation, params=params, body=body, if_match=f'"{read_revision}"')
    except Problem as problem:
        if problem.status == 412:  # the API's current revision: the part may have changed after the read above
            current = problem.extra.get("current_revision", stored["revision"])
            error = visit.text("hub_conflict", read=read_revision, current=current)
        elif problem.status in (403, 404):
            raise
        else:
            error = problem.detail
        return _part_page(visit, site, stored, name, draft, int(read_revision) if read_revision.isdigit() else 0,
                          status=problem.status, error=error)
    return visit.done(_part_path(site), visit.text("hub_saved", file=name, revision=saved.body["revision"]))


# Audit: the changes in scope, newest first, with the site each concerns


async def audit(visit: HubVisit) -> web.StreamResponse:
    query: dict[str, Any] = {"limit": AUDIT_PAGE}
    cursor = visit.request.query.get("cursor")
    if cursor:
        query["cursor"] = cursor
    answer = (await visit.run("list_audit", query=query)).body
    return visit.render("hub_audit.html", rows=answer["items"], next_cursor=answer["next_cursor"], when=utc_minute)
