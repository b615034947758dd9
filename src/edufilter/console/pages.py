"""The console's pages. Each reads and changes only through console.invoke (the API's own
operations, as the signed-in token), so roles, validation and audit are the API's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from edufilter.api import views
from edufilter.api.context import STORE
from edufilter.api.operations import etag_of
from edufilter.api.problems import Problem
from edufilter.api.tokens import MAX_OVERRIDE_MINUTES, Role
from edufilter.console.charts import bar_chart, totals
from edufilter.console.i18n import translator
from edufilter.console.idle_rules import idle_rule_warnings, policy_facts
from edufilter.console.invoke import invoke, may
from edufilter.console.overview_cache import OVERVIEWS
from edufilter.console.sessions import same_secret
from edufilter.console.visit import (
    CSRF_FIELD,
    PREFIX,
    SESSION_COOKIE,
    SESSIONS,
    SIGN_IN_COOKIE,
    Visit,
    end_session,
    language_of,
    new_sign_in_nonce,
    read_form,
    refused_sign_in,
    remember_language,
    render,
    same_origin,
    start_session,
    token_for_secret,
)
from edufilter.policy.model import Action, QuicMode
from edufilter.policy.store import PolicyStore

WINDOWS = ("1h", "24h", "7d")
BLOCKING_VERDICTS = ("block", "drop")
LATEST_EVENTS = 10
EVASION_CATEGORY = "evasion"  # the category of the events of bypass attempts (DoH, VPN, ECH...)
EXPIRED_OVERRIDE_SHOWN = timedelta(days=1)
STALE_LIST_DAYS = 7
AUDIT_PAGE = 50
OWN_OVERRIDES = 100
SUGGESTED_MINUTES = 50  # one lesson


# Sign-in and sign-out


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    language = language_of(request)
    if request.app[SESSIONS].find(request.cookies.get(SESSION_COOKIE)) is not None:
        raise web.HTTPSeeOther(f"{PREFIX}/overview")
    text = translator(language)
    message = (text("session_ended") if "ended" in request.query
               else text("signed_out") if "out" in request.query else None)
    return _sign_in_page(request, language, 200, message)


def _sign_in_page(request: web.Request, language: str, status: int, message: str | None,
                  headers: dict[str, str] | None = None) -> web.Response:
    nonce = new_sign_in_nonce()
    response = render(request, "sign_in.html", language, status=status, message=message, nonce=nonce,
                      token=None, navigation=[], notice=None, csrf="")
    response.headers.update(headers or {})
    response.set_cookie(SIGN_IN_COOKIE, nonce, path=PREFIX, httponly=True, samesite="Strict", secure=request.secure)
    remember_language(request, response, language)
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    """A token typed into the form (never into a URL) becomes a session cookie."""
    language = language_of(request)
    text = translator(language)
    form = await read_form(request)
    if not same_origin(request) or not same_secret(form.get(CSRF_FIELD), request.cookies.get(SIGN_IN_COOKIE, "")):
        return _sign_in_page(request, language, 403, text("forged"))
    token = await token_for_secret(request.app, form.get("token", "").strip())
    if token is None:
        wait = refused_sign_in(request)
        if wait is not None:
            return _sign_in_page(request, language, 429, text("throttled", seconds=wait),
                                 headers={"Retry-After": str(wait)})
        return _sign_in_page(request, language, 401, text("bad_token"))
    start = "overview" if may(token, "status") else "overrides"
    response = web.Response(status=303, headers={"Location": f"{PREFIX}/{start}"})
    start_session(request, response, token)
    return response


async def sign_out(visit: Visit) -> web.StreamResponse:
    response = web.Response(status=303, headers={"Location": f"{PREFIX}/sign-in?out=1"})
    end_session(visit.request, response)
    return response


# Overview: read-only, from the status and the aggregated stats (never a scan of events)


async def overview(visit: Visit) -> web.StreamResponse:
    if not may(visit.token, "status"):
        raise web.HTTPSeeOther(f"{PREFIX}/overrides")
    window = visit.request.query.get("window", "24h")
    if window not in WINDOWS:
        window = "24h"
    report = (await invoke(visit.request, visit.token, "status")).body
    zone = await school_zone(visit.request.app)
    key = (window, visit.token.role, visit.language, report["policy_version"])
    numbers = await visit.request.app[OVERVIEWS].get(key, lambda: _overview_numbers(visit, window, report, zone))
    return visit.render("overview.html", report=report, daemon=report.get("daemon"), window=window,
                        windows=WINDOWS, local=_local_time(zone), **numbers)


async def _overview_numbers(visit: Visit, window: str, report: dict[str, Any], zone: tzinfo) -> dict[str, Any]:
    """What the overview shows besides the status: the same for everyone of a role (OVERVIEWS)."""
    charts = {}
    for dimension in ("category", "group"):
        counted: Counter[str] = Counter()
        for verdict in BLOCKING_VERDICTS:
            answer = await invoke(visit.request, visit.token, "stats",
                                  query={"window": window, "by": dimension, "verdict": verdict})
            counted += totals(answer.body["rows"], visit.text("group_default"))
        charts[dimension] = bar_chart(counted, visit.text("other"))
    events = (await invoke(visit.request, visit.token, "list_events", query={"limit": LATEST_EVENTS})).body
    freshness = (await invoke(visit.request, visit.token, "list_freshness")).body
    evasion = await invoke(visit.request, visit.token, "stats",
                           query={"window": window, "by": "verdict", "category": EVASION_CATEGORY})
    warnings = await overview_warnings(visit, report.get("daemon"), freshness, _local_time(zone))
    facts = await policy_facts(visit, freshness)
    if facts is not None:
        warnings += idle_rule_warnings(facts, datetime.now(zone).date(), visit.text)
    return {"charts": charts, "events": events["items"], "freshness": freshness, "warnings": warnings,
            "evasion": sum(row["flows"] for row in evasion.body["rows"])}


async def overview_warnings(visit: Visit, daemon: dict[str, Any] | None, freshness: dict[str, Any],
                            local: Callable[[object], str]) -> list[str]:
    """What needs a look: workers not running or restarted, overrides that ended by expiring
    in the last day, category lists older than STALE_LIST_DAYS, a failed `lists update`
    (and, from idle_rules, the rules that match nothing)."""
    warnings = []
    for queue in (daemon or {}).get("queues") or []:
        if queue.get("state") != "running" or queue.get("restarts"):
            warnings.append(visit.text("warn_worker", worker=queue.get("worker"), state=queue.get("state"),
                                       restarts=queue.get("restarts") or 0))
    now = datetime.now(timezone.utc)
    ended = await invoke(visit.request, visit.token, "list_overrides",
                         query={"active": False, "sort": "-expires_at", "limit": 20})
    for override in ended.body["items"]:
        expired = datetime.fromisoformat(override["expires_at"])
        if now - EXPIRED_OVERRIDE_SHOWN <= expired <= now:
            warnings.append(visit.text("warn_expired", name=override["name"], group=override["group"],
                                       time=local(override["expires_at"])))
    for category in freshness["categories"]:
        if category["age_seconds"] > STALE_LIST_DAYS * 86400:
            warnings.append(visit.text("warn_stale", name=category["name"], days=category["age_seconds"] // 86400))
    last = freshness["last_update"]
    if last is not None and last["failed"]:
        warnings.append(visit.text("warn_update_failed", time=local(last["at"]), failed=", ".join(last["failed"])))
    return warnings


# Teacher page: open a site for a group for some minutes; see and end one's own overrides


async def overrides(visit: Visit) -> web.StreamResponse:
    return await _overrides_page(visit)


async def _overrides_page(visit: Visit, status: int = 200, error: Problem | None = None,
                          values: dict[str, str] | None = None) -> web.Response:
    token = visit.token
    if not may(token, "create_override"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    if token.role is Role.TEACHER:
        groups = [(name, name) for name in token.groups]
    else:
        page = await invoke(visit.request, token, "list_groups", query={"limit": 1000})
        groups = [(row["name"], row["title"] or row["name"]) for row in page.body["items"]]
    own = await invoke(visit.request, token, "list_overrides",
                       query={"created_by": token.name, "sort": "-id", "limit": OWN_OVERRIDES})
    rows = [{**row, "etag": etag_of(row)} for row in own.body["items"]]
    max_minutes = token.max_minutes or MAX_OVERRIDE_MINUTES
    defaults = {"group": groups[0][0] if groups else "", "site": "", "reason": "",
                "minutes": str(min(SUGGESTED_MINUTES, max_minutes))}
    zone = await school_zone(visit.request.app)
    return visit.render("overrides.html", status=status, groups=groups, overrides=rows, max_minutes=max_minutes,
                        values={**defaults, **(values or {})}, error=error, local=_local_time(zone))


async def open_site(visit: Visit) -> web.StreamResponse:
    values = {name: visit.form.get(name, "").strip() for name in ("group", "site", "minutes", "reason")}
    body = {"group": values["group"], "name": values["site"], "minutes": _number(values["minutes"]),
            "reason": values["reason"]}
    try:
        created = (await invoke(visit.request, visit.token, "create_override", body=body)).body
    except Problem as problem:
        return await _overrides_page(visit, problem.status, problem, values)
    zone = await school_zone(visit.request.app)
    return visit.done(f"{PREFIX}/overrides", visit.text(
        "opened", site=created["name"], group=created["group"], time=_local_time(zone)(created["expires_at"])))


async def end_override(visit: Visit) -> web.StreamResponse:
    override_id = _number(visit.request.match_info["id"])
    try:
        await invoke(visit.request, visit.token, "delete_override", params={"id": override_id},
                     if_match=visit.form.get("etag") or None)
    except Problem as problem:
        return await _overrides_page(visit, problem.status, problem)
    return visit.done(f"{PREFIX}/overrides", visit.text("override_ended"))


# Policy, read only for now: groups with their rules in order, clients, lists, schedules

WHOLE = {"limit": 1000}  # every page of the policy's collections is read whole (a school's few)


async def policy(visit: Visit) -> web.StreamResponse:
    return await policy_page(visit)


async def policy_page(visit: Visit, status: int = 200, **editing: Any) -> web.Response:
    """The policy; for editors also the change forms, and what a previewed change will do."""
    if not may(visit.token, "list_groups"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))

    async def items(operation_id: str, **params: Any) -> list[dict[str, Any]]:
        answer = await invoke(visit.request, visit.token, operation_id, params=params, query=dict(WHOLE))
        return list(answer.body["items"])

    groups = [{**group, "etag": etag_of(group)} for group in await items("list_groups")]
    rules = {group["name"]: await items("list_rules", group=group["name"]) for group in groups}
    editing = {"error": None, "entry": {"list": "", "kind": "domain", "value": "", "names": ""},
               "group_change": {"group": ""}, "foreseen": [], "preview": None, "no_client": False, **editing}
    return visit.render("policy.html", status=status, groups=groups, rules=rules,
                        clients=await items("list_clients"), lists=await items("list_lists"),
                        schedules=await items("list_schedules"), weekdays=visit.text("weekdays").split(),
                        may_add_entry=may(visit.token, "create_entry"),
                        may_change_group=may(visit.token, "patch_group"),
                        quic_modes=[mode.value for mode in QuicMode], actions=[action.value for action in Action],
                        **editing)


# Check: what would this device get for this site at this time, and why


async def check_form(visit: Visit) -> web.StreamResponse:
    if not may(visit.token, "check"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    return visit.render("check.html", values={}, result=None, error=None)


async def check(visit: Visit) -> web.StreamResponse:
    if not may(visit.token, "check"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    fields = ("target", "address", "mac", "interface", "vlan", "at")
    values = {name: visit.form.get(name, "").strip() for name in fields}
    client: dict[str, Any] = {"address": values["address"]}
    if values["mac"]:
        client["mac"] = values["mac"]
    if values["interface"]:
        client["interface"] = values["interface"]
    if values["vlan"]:
        client["vlan"] = _number(values["vlan"])
    body: dict[str, Any] = {"target": values["target"], "client": client}
    zone = await school_zone(visit.request.app)
    if values["at"]:
        body["at"] = _moment(values["at"], zone)
    try:
        result = (await invoke(visit.request, visit.token, "check", body=body)).body
    except Problem as problem:
        return visit.render("check.html", status=problem.status, values=values, result=None, error=problem)
    return visit.render("check.html", values=values, result=result, error=None)


def _moment(local: str, zone: tzinfo) -> str:
    """A datetime-local field (school time) as the API's date-time; unreadable text stays as
    it is, so the API's own validation names the field."""
    try:
        moment = datetime.fromisoformat(local)
    except ValueError:
        return local
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).isoformat()


# Audit log


async def audit(visit: Visit) -> web.StreamResponse:
    if not may(visit.token, "list_audit"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    query: dict[str, Any] = {"limit": AUDIT_PAGE}
    cursor = visit.request.query.get("cursor", "")
    if _number(cursor) >= 0:
        query["cursor"] = cursor
    page = (await invoke(visit.request, visit.token, "list_audit", query=query)).body
    zone = await school_zone(visit.request.app)
    return visit.render("audit.html", rows=page["items"], next_cursor=page["next_cursor"], local=_local_time(zone))


# Tokens (admin): make one (its secret shown once, in the answer to the form) and revoke


async def tokens(visit: Visit) -> web.StreamResponse:
    return await _tokens_page(visit)


async def _tokens_page(visit: Visit, status: int = 200, error: Problem | None = None,
                       values: dict[str, Any] | None = None, made: dict[str, Any] | None = None) -> web.Response:
    if not may(visit.token, "list_tokens"):
        raise Problem(403, "forbidden", visit.text("not_allowed"))
    listed = (await invoke(visit.request, visit.token, "list_tokens", query={"limit": 1000})).body["items"]
    groups = (await invoke(visit.request, visit.token, "list_groups", query={"limit": 1000})).body["items"]
    zone = await school_zone(visit.request.app)
    return visit.render("tokens.html", status=status, tokens=[{**row, "etag": etag_of(row)} for row in listed],
                        groups=groups, roles=[role.value for role in Role], error=error, made=made,
                        values={"name": "", "role": Role.TEACHER.value, "groups": [], "max_minutes": "",
                                **(values or {})},
                        local=_local_time(zone))


async def make_token(visit: Visit) -> web.StreamResponse:
    values: dict[str, Any] = {name: visit.form.get(name, "").strip() for name in ("name", "role", "max_minutes")}
    values["groups"] = visit.form.getall("groups", [])
    body: dict[str, Any] = {"name": values["name"], "role": values["role"]}
    if values["groups"]:
        body["groups"] = values["groups"]
    if values["max_minutes"]:
        body["max_minutes"] = _number(values["max_minutes"])
    try:
        made = (await invoke(visit.request, visit.token, "create_token", body=body)).body
    except Problem as problem:
        return await _tokens_page(visit, problem.status, problem, values)
    return await _tokens_page(visit, 201, made=made)


async def revoke_token(visit: Visit) -> web.StreamResponse:
    name = visit.request.match_info["name"]
    try:
        await invoke(visit.request, visit.token, "revoke_token", params={"name": name},
                     if_match=visit.form.get("etag") or None)
    except Problem as problem:
        return await _tokens_page(visit, problem.status, problem)
    visit.request.app[SESSIONS].end_for_token(name)
    return visit.done(f"{PREFIX}/tokens", visit.text("token_revoked", name=name))


# The school's clock, for showing times (the settings' time zone; not a capability)


async def school_zone(app: web.Application) -> tzinfo:
    def read(store: PolicyStore) -> str:
        with store.snapshot() as db:
            return str(views.settings(db)["timezone"])

    try:
        return ZoneInfo(await app[STORE].run(read))
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def _number(text: str) -> int:
    """A form's whole number; anything else is -1, which the API's schemas refuse by name."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 16 else -1


def _local_time(zone: tzinfo) -> Callable[[object], str]:
    def show(moment: object) -> str:
        try:
            parsed = datetime.fromisoformat(str(moment))
        except ValueError:
            return str(moment)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(zone).strftime("%Y-%m-%d %H:%M")

    return show
