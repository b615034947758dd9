"""The group's API (`edufilter hub serve`): the group policy and each site's part in the hub,
block events and counts across sites, tokens scoped to the whole group or to one site, and
an audit log that records the site each change concerns.

Tokens and the audit log live in the hub's own state folder (the policy database's tables);
the policy lives in NATS. Roles are the API's (admin, editor, teacher, viewer) with a scope:
a token without a site acts on the whole group, a site's token on that site alone. Every
request passes scope_middleware after authentication: a site's token naming another site is
refused (403), and one naming none means its own."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import nats
from aiohttp import web
from nats.errors import Error as NatsError

from edufilter.api import schemas
from edufilter.api.admin import read_audit, revoke_change, whoami
from edufilter.api.connections import CONNECTIONS, RESOURCE_LOG, ConnectionGuard, ResourceLog, connection_budget
from edufilter.api.context import METRICS, SETTINGS, STORE, Metrics, StoreWorker, policy_path
from edufilter.api.operations import (
    PAGE_QUERY,
    TOKEN,
    Call,
    Change,
    Operation,
    Response,
    canonical_json,
    handler_for,
    json_response,
    no_content,
    paginate,
    path_of,
    precondition_required,
    with_defaults,
)
from edufilter.api.problems import Handler, Problem, problem_middleware
from edufilter.api.routes import ADMINS, EDITORS, OVERRIDERS, READERS
from edufilter.api.resources import refuse_over_quota, refuse_teacher_over_rate
from edufilter.api.security import OPERATIONS, OVERRIDE_RATE, THROTTLE, WindowCounter, auth_middleware
from edufilter.api.settings import ApiSettings
from edufilter.api.tokens import EVERY_ROLE, MAX_OVERRIDE_MINUTES, Role, create_token, find_token, list_tokens
from edufilter.api.validation import array, checked_date_time, choice, date_time, integer, obj, slug, text
from edufilter.config import HubConfig
from edufilter.hub.agent import connect
from edufilter.hub.model import (
    GROUP_BUCKET,
    SITE_OVERRIDES,
    HubError,
    check_files,
    combined_policy,
    read_overrides,
    site_bucket,
    write_overrides,
)
from edufilter.hub.parts import PartConflict, check_part, latest, site_names, store_part
from edufilter.hub.reading import COUNT_DIMENSIONS, count_events, event_page
from edufilter.policy.model import Action, Override
from edufilter.policy.store import PolicyStore

OVERRIDE_ATTEMPTS = 5
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "14d": timedelta(days=14)}
MAX_EVENTS_READ = 100_000  # events one page request reads at most, matching or not
GROUP_SCOPE = "group"  # the audit's object id of the group's part

HUB = web.AppKey("hub", nats.NATS)
_SITE_NAME = text(31, 1, pattern=r"^[a-z0-9][a-z0-9-]{0,30}$", description="a site's name")
PART = obj({"files": obj({}, additionalProperties=text(1 << 20), description="policy TOML files by name")},
           required=["files"])
PART_READ = obj({"revision": integer(), "files": PART["properties"]["files"]}, required=["revision", "files"])
TOKEN_CREATE = obj({
    "name": slug("token name"),
    "role": choice(Role),
    "site": _SITE_NAME,
    "groups": array(slug("group name"), 100, description="teacher tokens: the site's groups they teach"),
    "max_minutes": integer(1, MAX_OVERRIDE_MINUTES),
}, required=["name", "role"])


# Scope


@web.middleware
async def scope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before anything else of an operation (its body included): a site's token naming another
    site, in the path or the query, is refused."""
    token = request.get(TOKEN)
    if token is not None and token.site is not None:
        named = request.match_info.get("site", request.query.get("site"))
        if named is not None and named != token.site:
            raise Problem(403, "forbidden", f"a token of site {token.site} may not act on site {named}")
    return await handler(request)


def site_of(call: Call) -> str | None:
    """The site an operation acts on: a site's token's own (scope_middleware refused any
    other), else the {site} path parameter or `site` query, or None for the whole group."""
    assert call.token is not None
    return call.token.site or call.params.get("site", call.query.get("site"))


def group_scope_only(call: Call, what: str) -> None:
    assert call.token is not None
    if call.token.site is not None:
        raise Problem(403, "forbidden", f"a token of site {call.token.site} may not {what}: the group's tokens only")


async def _hub_call(request: Awaitable[Any]) -> Any:
    """A request to the group's servers; 503 when they do not answer."""
    try:
        return await request
    except (NatsError, asyncio.TimeoutError) as error:
        raise Problem(503, "hub-unavailable", f"the group's servers do not answer: {error or type(error).__name__}",
                      headers={"Retry-After": "5"}) from error


# Parts


def _bucket(site: str | None) -> str:
    return GROUP_BUCKET if site is None else site_bucket(site)


def _part_response(revision: int, files: dict[str, str]) -> web.Response:
    return web.Response(body=canonical_json({"revision": revision, "files": files}), content_type="application/json",
                        headers={"ETag": f'"{revision}"'})


async def _known_site(call: Call, site: str) -> None:
    if site not in await _hub_call(site_names(call.app[HUB])):
        raise Problem(404, "not-found", f"site {site} does not exist (edufilter hub init --sites ...)")


async def get_group_part(call: Call) -> web.StreamResponse:
    revision, files = await _hub_call(latest(call.app[HUB], GROUP_BUCKET))
    if not revision:
        raise Problem(404, "not-found", "there is no group policy yet")
    return _part_response(revision, files)


async def get_site_part(call: Call) -> web.StreamResponse:
    site = site_of(call)
    assert site is not None
    await _known_site(call, site)
    revision, files = await _hub_call(latest(call.app[HUB], site_bucket(site)))
    return _part_response(revision, files)


def _expected_revision(call: Call) -> int:
    """The revision an edit starts from: If-Match "N", or If-None-Match * for a part not stored yet."""
    if call.if_match is not None:
        tag = call.if_match.strip()
        if not (tag.startswith('"') and tag.endswith('"') and tag[1:-1].isdigit()):
            raise Problem(412, "precondition-failed", 'If-Match must be the part\'s ETag, its revision: "7"')
        return int(tag[1:-1])
    if call.request.headers.get("If-None-Match", "").strip() == "*":
        return 0
    raise precondition_required()


async def put_group_part(call: Call) -> web.StreamResponse:
    group_scope_only(call, "change the group policy")
    return await _put_part(call, None)


async def put_site_part(call: Call) -> web.StreamResponse:
    site = site_of(call)
    assert site is not None
    await _known_site(call, site)
    return await _put_part(call, site)


async def _put_part(call: Call, site: str | None) -> web.StreamResponse:
    """Check the part against the parts it combines with, store it over the revision the
    editor read (412 when it changed since), then record it in the audit log."""
    files = check_files(call.body["files"])
    expected = _expected_revision(call)
    client, bucket = call.app[HUB], _bucket(site)
    before_revision, before = await _hub_call(latest(client, bucket))
    await _hub_call(check_part(client, site, files))
    try:
        revision = await _hub_call(store_part(client, bucket, files, expected))
    except PartConflict as conflict:
        raise Problem(412, "precondition-failed", f"{conflict}", current_revision=conflict.current) from None
    actor = call.actor_for(site)
    kind = "group_part" if site is None else "site_part"

    def record(store: PolicyStore) -> None:
        store.record_external(actor, kind, site or GROUP_SCOPE, {"revision": before_revision, "files": before},
                              {"revision": revision, "files": files})

    await call.app[STORE].run(record)
    return _part_response(revision, files)


# A site's overrides: a teacher's allow (or block) of a name for one of the site's groups


async def create_site_override(call: Call) -> web.StreamResponse:
    """Add an override to the site's part (its SITE_OVERRIDES, expired ones dropped), over the
    part's current revision, read again when another edit came first."""
    site, token = site_of(call), call.token
    assert site is not None and token is not None
    body = with_defaults(call.body, schemas.OVERRIDE_CREATE)
    if token.role is Role.TEACHER and body["group"] not in token.groups:
        raise Problem(403, "forbidden", f"a teacher token of groups {', '.join(token.groups)} may not override "
                      f"group {body['group']}")
    if token.max_minutes is not None and body["minutes"] > token.max_minutes:
        raise Problem(422, "invalid-change", f"minutes is more than this token's maximum of {token.max_minutes}")
    teacher = token.role is Role.TEACHER
    if teacher:
        refuse_teacher_over_rate(call)
    await _known_site(call, site)
    client, bucket = call.app[HUB], site_bucket(site)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for _ in range(OVERRIDE_ATTEMPTS):
        revision, files = await _hub_call(latest(client, bucket))
        live = [item for item in read_overrides(files.get(SITE_OVERRIDES, "")) if item.expires_at > now]
        if teacher:
            refuse_over_quota(call, sum(item.created_by == token.name for item in live))
        override = Override(len(live) + 1, body["group"], body["name"], Action(body["action"]), now,
                            now + timedelta(minutes=body["minutes"]), token.name, body["reason"])
        updated = {**files, SITE_OVERRIDES: write_overrides([*live, override])}
        await _hub_call(check_part(client, site, updated))
        try:
            stored = await _hub_call(store_part(client, bucket, updated, revision))
        except PartConflict:
            continue
        break
    else:
        raise Problem(503, "busy", f"site {site}'s part kept changing; try again", headers={"Retry-After": "1"})
    if teacher:
        call.app[OVERRIDE_RATE].record(token.name)
    row = {**_override_row(site, override), "revision": stored}
    actor = call.actor_for(site)
    await call.app[STORE].run(lambda store: store.record_external(actor, "override", site, None, row))
    return json_response(row, 201)


def _override_row(site: str, override: Override) -> dict[str, object]:
    return {"site": site, "group": override.group, "name": override.name, "action": override.action.value,
            "starts_at": override.starts_at.isoformat(), "expires_at": override.expires_at.isoformat(),
            "created_by": override.created_by, "reason": override.reason}


async def list_site_overrides(call: Call) -> web.StreamResponse:
    """The site's live overrides (a teacher: of their groups)."""
    site, token = site_of(call), call.token
    assert site is not None and token is not None
    await _known_site(call, site)
    _, files = await _hub_call(latest(call.app[HUB], site_bucket(site)))
    now = datetime.now(timezone.utc)
    rows = [_override_row(site, item) for item in read_overrides(files.get(SITE_OVERRIDES, ""))
            if item.expires_at > now and (token.role is not Role.TEACHER or item.group in token.groups)]
    return json_response({"items": rows, "next_cursor": None, "total": len(rows)})


# Sites, events and counts


async def list_sites(call: Call) -> web.StreamResponse:
    client = call.app[HUB]
    names = await _hub_call(site_names(client))
    scope = site_of(call)
    visible = [name for name in names if scope is None or name == scope]
    rows = [{"site": name, "revision": (await _hub_call(latest(client, site_bucket(name))))[0]} for name in visible]
    return json_response({"items": rows, "next_cursor": None, "total": len(rows)})


_EVENT_FILTERS = ("group", "category", "action", "client")


def _event_filter(call: Call, names: tuple[str, ...]) -> Callable[[dict], bool]:
    wanted = {name: call.query[name] for name in names if name in call.query}
    return lambda record: all(record.get(name) == value for name, value in wanted.items())


async def list_events(call: Call) -> web.StreamResponse:
    site = site_of(call)
    if "client" in call.query and site is None:
        raise Problem(422, "validation-error", "a client pseudonym is made with one site's keys: filter by its site "
                      "too (a pupil is never followed across sites)")
    since = checked_date_time(call.query["since"]) if "since" in call.query else None
    page = await _hub_call(event_page(call.app[HUB], site, _event_filter(call, _EVENT_FILTERS),
                                      start=int(call.query.get("cursor") or 1), since=since,
                                      limit=call.query["limit"], most=MAX_EVENTS_READ))
    return json_response({"items": page.items,
                          "next_cursor": None if page.next_cursor is None else str(page.next_cursor), "total": None})


async def event_counts(call: Call) -> web.StreamResponse:
    site, window, by = site_of(call), call.query["window"], call.query["by"]
    since = datetime.now(timezone.utc) - WINDOWS[window]
    matches = _event_filter(call, ("group", "category", "action"))
    counted = await _hub_call(count_events(call.app[HUB], site, by, matches, since))
    rows = [{"key": key, "events": count} for key, count in sorted(counted.counts.items())]
    return json_response({"window": window, "by": by, "rows": rows, "read": counted.read,
                          "truncated": counted.truncated})


# Audit and tokens


def _scoped_token(call: Call, db: sqlite3.Connection, name: str) -> dict | None:
    """The token by that name when the caller's scope covers it (a site admin: its site's only)."""
    token = find_token(db, name)
    assert call.token is not None
    if token is None or call.token.site not in (None, token.site):
        return None
    return token.to_dict()


async def list_scoped_tokens(call: Call) -> web.StreamResponse:
    scope = site_of(call)
    rows = await call.read(lambda db: [token.to_dict() for token in list_tokens(db)
                                       if scope is None or token.site == scope])
    return json_response(paginate(rows, {name: value for name, value in call.query.items() if name != "site"}))


async def get_scoped_token(call: Call) -> web.StreamResponse:
    name = call.params["name"]
    return json_response(await call.read_one("token", name, lambda db: _scoped_token(call, db, name)))


async def create_scoped_token(call: Call) -> web.StreamResponse:
    """A token of the group (no site: group tokens only) or of one site; a teacher's groups
    must be groups of that site's policy."""
    assert call.token is not None
    body = call.body
    site = body.get("site", call.token.site)
    if call.token.site is not None and site != call.token.site:
        raise Problem(403, "forbidden", f"a token of site {call.token.site} may make tokens of that site only")
    role = Role(body["role"])
    if role is Role.TEACHER and site is None:
        raise Problem(422, "validation-error", "a teacher token teaches at one site: give its site")
    groups: set[str] = set()
    if site is not None:
        await _known_site(call, site)
        if role is Role.TEACHER:
            client = call.app[HUB]
            (_, group), (_, part) = await asyncio.gather(_hub_call(latest(client, GROUP_BUCKET)),
                                                         _hub_call(latest(client, site_bucket(site))))
            groups = {item.name for item in combined_policy(group, part).groups} if group else set()
    secret = ""

    def write(store: PolicyStore, db: sqlite3.Connection, before: dict | None) -> None:
        nonlocal secret
        _, secret = create_token(db, body["name"], role, tuple(body.get("groups", ())), body.get("max_minutes"),
                                 site=site, group_exists=groups.__contains__)

    change = Change("token", body["name"], lambda db: _scoped_token(call, db, body["name"]), write, create=True)
    row = await call.change(change, apply=False, site=site)
    assert row is not None
    return json_response({**row, "token": secret}, 201, location=path_of("tokens", body["name"]))


async def revoke_scoped_token(call: Call) -> web.StreamResponse:
    """The API's revoke, of a token the caller's scope covers (others are 404)."""
    name = call.params["name"]
    found = await call.read_one("token", name, lambda db: _scoped_token(call, db, name))
    await call.change(revoke_change(name), apply=False, site=found["site"])
    return no_content()


# The application


def _ok(schema: Any = None) -> tuple[Response, ...]:
    """An OK with its ETag: a part's revision, or a digest of the representation."""
    return (Response(200, "OK", schema, headers=("ETag",)),)


_PAGE = {"limit": PAGE_QUERY["limit"], "cursor": PAGE_QUERY["cursor"]}
_SITE_PARAM = {"site": _SITE_NAME}
_SITE_QUERY = {"site": _SITE_NAME}


def _operation(method: str, path: str, operation_id: str, summary: str,
               handler: Callable[[Call], Awaitable[web.StreamResponse]], roles: frozenset[Role],
               **extra: Any) -> Operation:
    return Operation(method, path, operation_id, summary, handler, roles,
                     extra.pop("responses", _ok()), extra.pop("tag", "hub"), **extra)


HUB_OPERATIONS: list[Operation] = [
    _operation("GET", "/api/v1/whoami", "whoami", "The token making this request", whoami, EVERY_ROLE),
    _operation("GET", "/api/v1/sites", "list_sites", "The sites the token may see, with their part's revision",
               list_sites, READERS),
    _operation("GET", "/api/v1/group/part", "get_group_part", "The group policy's files; the ETag is its revision",
               get_group_part, READERS, responses=_ok(PART_READ)),
    _operation("PUT", "/api/v1/group/part", "put_group_part", "Store the group policy (group editors only)",
               put_group_part, EDITORS, body=PART),
    _operation("GET", "/api/v1/sites/{site}/part", "get_site_part", "A site's part; the ETag is its revision",
               get_site_part, READERS, path_params=_SITE_PARAM, responses=_ok(PART_READ)),
    _operation("PUT", "/api/v1/sites/{site}/part", "put_site_part", "Store a site's part (the group's or that "
               "site's editors)", put_site_part, EDITORS, path_params=_SITE_PARAM, body=PART),
    _operation("POST", "/api/v1/sites/{site}/overrides", "create_site_override",
               "Allow (or block) a name for one of the site's groups from now for some minutes", create_site_override,
               OVERRIDERS, path_params=_SITE_PARAM, body=schemas.OVERRIDE_CREATE,
               responses=(Response(201, "Created"),)),
    _operation("GET", "/api/v1/sites/{site}/overrides", "list_site_overrides",
               "The site's live overrides (a teacher: of their groups)", list_site_overrides, EVERY_ROLE,
               path_params=_SITE_PARAM),
    _operation("GET", "/api/v1/events", "list_events", "Block events across the sites in scope, oldest first",
               list_events, READERS,
               query={**_PAGE, **_SITE_QUERY, "cursor": text(20, 1, pattern=r"^[0-9]+$"),
                      "group": slug("group name"), "category": slug("category name"), "action": slug("action"),
                      "client": text(64, 1, description="a pseudonym: with its site only"), "since": date_time()}),
    _operation("GET", "/api/v1/stats", "event_counts", "Block events per site, group, category or action",
               event_counts, READERS,
               query={**_SITE_QUERY, "window": {"type": "string", "enum": list(WINDOWS), "default": "24h"},
                      "by": {"type": "string", "enum": list(COUNT_DIMENSIONS), "default": "site"},
                      "group": slug("group name"), "category": slug("category name"), "action": slug("action")}),
    _operation("GET", "/api/v1/audit", "list_audit", "Audit log, newest first (a site's tokens: that site's)",
               read_audit, READERS,
               query={**_PAGE, **_SITE_QUERY, "kind": text(40, 1), "object_id": text(200, 1), "token": text(200, 1),
                      "since": date_time()}),
    _operation("GET", "/api/v1/tokens", "list_tokens", "The tokens in scope, revoked ones included",
               list_scoped_tokens, ADMINS, query={**_PAGE, **_SITE_QUERY, "role": choice(Role)}),
    _operation("POST", "/api/v1/tokens", "create_token", "Make a token of the group or of a site in scope",
               create_scoped_token, ADMINS, body=TOKEN_CREATE, responses=(Response(201, "Created"),)),
    _operation("GET", "/api/v1/tokens/{name}", "get_token", "Read a token in scope", get_scoped_token, ADMINS,
               path_params={"name": slug("token name")}),
    _operation("DELETE", "/api/v1/tokens/{name}", "revoke_token", "Revoke a token in scope", revoke_scoped_token,
               ADMINS, path_params={"name": slug("token name")}, if_match=True,
               responses=(Response(204, "Done"),)),
]


def make_hub_app(state_dir: Path, hub: HubConfig, settings: ApiSettings = ApiSettings()) -> web.Application:
    """The group's API over the hub's tokens and audit log in state_dir and the group's servers."""
    app = web.Application(middlewares=[problem_middleware, auth_middleware, scope_middleware])
    app[SETTINGS] = settings
    app[STORE] = StoreWorker(policy_path(Path(state_dir)))
    app[METRICS] = Metrics()
    app[THROTTLE] = WindowCounter(settings.auth_failures, settings.auth_window)
    app[OVERRIDE_RATE] = WindowCounter(settings.teacher_overrides_per_hour, 3600.0)
    app[RESOURCE_LOG] = ResourceLog(settings.resource_log_interval)
    app[CONNECTIONS] = ConnectionGuard(settings.max_connections_per_address,
                                       connection_budget(settings.max_connections))
    routes = {}
    for operation in HUB_OPERATIONS:
        routes[app.router.add_route(operation.method, operation.path, handler_for(operation))] = operation
    app[OPERATIONS] = routes

    async def store_context(app: web.Application) -> AsyncIterator[None]:
        await app[STORE].open()
        yield
        await app[STORE].close()

    async def hub_context(app: web.Application) -> AsyncIterator[None]:
        try:
            app[HUB] = await connect(hub, "edufilter-hub-api")
        except (NatsError, OSError, asyncio.TimeoutError) as error:
            raise HubError(f"the group's servers do not answer: {error}") from error
        yield
        await app[HUB].close()

    app.cleanup_ctx.append(store_context)
    app.cleanup_ctx.append(hub_context)
    return app
