"""Operations: one declaration per method and path, from which the route, the request
checks (path, query, body, If-Match) and the OpenAPI entry are all made."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from edufilter.api.context import APPLIER, SETTINGS, STORE
from edufilter.api.problems import Problem, invalid
from edufilter.api.tokens import Role, Token
from edufilter.api.validation import Invalid, Schema, integer, resolve, text, validate
from edufilter.api.views import Row
from edufilter.policy.store import Actor, PolicyStore, policy_version

T = TypeVar("T")

JSON_TYPES = ("application/json",)
PATCH_TYPES = ("application/json", "application/merge-patch+json")
UPLOAD_TYPES = ("application/octet-stream", "text/plain", "application/gzip")

BODY_CHUNK_BYTES = 1 << 20
# Every body schema nests a few levels; deeper JSON is refused before validation walks it
# (recursively) and before json.loads itself runs out of stack.
MAX_JSON_DEPTH = 32
TOKEN = web.RequestKey("token", Token)  # the authenticated token of a request
MAX_PAGE = 1000
PAGE_QUERY: dict[str, Schema] = {
    "limit": integer(1, MAX_PAGE, default=100),
    "cursor": text(18, 1, pattern=r"^[0-9]+$", description="next_cursor of the previous page"),
}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    description: str
    schema: Schema | None = None
    content_type: str = "application/json"
    headers: tuple[str, ...] = ()  # names of the headers it carries: ETag, Location


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Callable[[Call], Awaitable[web.StreamResponse]]
    roles: frozenset[Role] | None  # None: no token needed
    responses: tuple[Response, ...]
    tag: str
    path_params: dict[str, Schema] = field(default_factory=dict)
    query: dict[str, Schema] = field(default_factory=dict)
    body: Schema | None = None  # JSON body
    body_types: tuple[str, ...] = JSON_TYPES
    upload: bool = False  # a raw file body instead of JSON
    if_match: bool = False  # changes an existing resource: If-Match is required
    description: str = ""


@dataclass(slots=True)
class Call:
    """One request to an operation, its inputs checked against the operation's schemas."""

    request: web.Request
    token: Token | None
    params: dict[str, Any]
    query: dict[str, Any]
    body: Any
    if_match: str | None

    @property
    def app(self) -> web.Application:
        return self.request.app

    @property
    def actor(self) -> Actor:
        assert self.token is not None
        return Actor(self.token.name, self.token.role.value, self.request.method, self.request.path_qs,
                     self.token.site)

    def actor_for(self, site: str | None) -> Actor:
        """The actor of this call, recording `site` (default: the token's) as the site its change concerns."""
        return replace(self.actor, site=site or self.actor.site)

    def raw_body_type(self) -> str | None:
        """The media type of an upload operation's raw body; None when the request names none."""
        return self.request.content_type if "Content-Type" in self.request.headers else None

    def raw_body(self, limit: int) -> AsyncIterator[bytes]:
        """An upload operation's raw body in chunks, within `limit` bytes."""
        return limited_body(self.request, limit)

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run `query` on one consistent snapshot of the policy database."""

        def work(store: PolicyStore) -> T:
            with store.snapshot() as db:
                return query(db)

        return await self.app[STORE].read(work)

    async def read_one(self, kind: str, object_id: object, query: Callable[[sqlite3.Connection], Row | None]) -> Row:
        """The object `query` finds, or 404."""
        row = await self.read(query)
        if row is None:
            raise not_found(kind, object_id)
        return row

    async def change(self, change: Change, apply: bool = True, site: str | None = None) -> Row | None:
        """Make the change with its audit row in one transaction, then apply it live; `site`:
        the site it concerns in multi-site mode (default: the token's)."""
        actor = self.actor_for(site)
        after, version, changed = await self.app[STORE].run(
            lambda store: _run_change(store, change, actor, self.if_match)
        )
        if apply and changed:  # a change that changes nothing (PATCH {}) compiles nothing
            await self.app[APPLIER].apply(version)
        return after


@dataclass(slots=True)
class Change:
    """A change to one object, made inside one audited transaction.

    read gives the object as it is (None: absent). A create needs it absent (else 409); any
    other change needs it present (else 404) and matching If-Match. write makes the change
    and returns the key of a created object when the database chose it (read_after finds
    the object by that key; otherwise read does).
    """

    kind: str
    object_id: str
    read: Callable[[sqlite3.Connection], Row | None]
    write: Callable[[PolicyStore, sqlite3.Connection, Row | None], object]
    create: bool = False
    read_after: Callable[[sqlite3.Connection, Any], Row | None] | None = None
    guard: Callable[[Row], None] | None = None  # e.g. a teacher may only touch their groups
    identify: Callable[[Row], str] | None = None  # the audit's object id, from the object after


def _run_change(
    store: PolicyStore, change: Change, actor: Actor, if_match: str | None
) -> tuple[Row | None, int, bool]:
    """The object after the change, the policy version and whether the change bumped it."""
    with store.audited(actor, change.kind, change.object_id) as audit:
        version_before = policy_version(audit.db)
        before = change.read(audit.db)
        if change.create:
            if before is not None:
                raise Problem(409, "exists", f"{change.kind} {change.object_id} already exists")
        else:
            if before is None:
                raise not_found(change.kind, change.object_id)
            if change.guard is not None:
                change.guard(before)
            check_if_match(if_match, before)
        key = change.write(store, audit.db, before)
        after = change.read(audit.db) if change.read_after is None else change.read_after(audit.db, key)
        if change.identify is not None and after is not None:
            audit.object_id = change.identify(after)
        audit.before, audit.after = before, after
        version = policy_version(audit.db)
        return after, version, version != version_before


def not_found(kind: str, object_id: object) -> Problem:
    return Problem(404, "not-found", f"{kind} {object_id} does not exist")


# Representations, ETags and preconditions


def canonical_json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def etag_of(representation: object) -> str:
    """A strong ETag: a digest of the canonical JSON the API sends for the representation."""
    return '"' + hashlib.sha256(canonical_json(representation)).hexdigest()[:32] + '"'


def precondition_required() -> Problem:
    return Problem(428, "precondition-required", "send If-Match with the ETag of the resource you change")


def check_if_match(if_match: str | None, current: Row) -> None:
    """412 unless If-Match is * or lists the current ETag (strong comparison, RFC 9110 13.1.1)."""
    if if_match is None:
        raise precondition_required()
    if if_match.strip() == "*":
        return
    if etag_of(current) not in [tag.strip() for tag in if_match.split(",")]:
        raise Problem(
            412,
            "precondition-failed",
            "the resource changed since you read it (If-Match does not match its ETag); read it again",
        )


def json_response(value: object, status: int = 200, location: str | None = None) -> web.Response:
    body = canonical_json(value)
    headers = {"ETag": etag_of(value)}
    if location is not None:
        headers["Location"] = location
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def no_content() -> web.Response:
    return web.Response(status=204)


def path_of(*parts: object) -> str:
    return "/api/v1/" + "/".join(quote(str(part), safe="") for part in parts)


# Collections


def paginate(rows: list[Row], query: dict[str, Any], search: tuple[str, ...] = ("name",)) -> dict[str, object]:
    """Filter (equality on each filter parameter, `q` as a substring), sort, and cut a page."""
    for name, wanted in query.items():
        if name not in ("limit", "cursor", "sort", "q"):
            rows = [row for row in rows if row.get(name) == wanted]
    if query.get("q"):
        needle = query["q"].lower()
        rows = [row for row in rows if any(needle in str(row.get(name) or "").lower() for name in search)]
    sort = query.get("sort")
    if sort:
        key = sort.lstrip("-")
        rows = sorted(rows, key=lambda row: (row[key] is None, row[key] if row[key] is not None else 0),
                      reverse=sort.startswith("-"))
    offset = int(query.get("cursor") or 0)
    return page_of(rows[offset:offset + query["limit"]], len(rows), offset, query["limit"])


def page_of(items: list[Row], total: int, offset: int, limit: int) -> dict[str, object]:
    """A page at `offset` of a collection of `total` items; its cursor is the next offset."""
    following = offset + limit
    return {"items": items, "next_cursor": str(following) if following < total else None, "total": total}


def sort_choices(*fields: str) -> Schema:
    return {"type": "string", "enum": [choice for name in fields for choice in (name, f"-{name}")]}


# Reading a request


def handler_for(operation: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        params = _path_params(request, operation)
        query = _query(request, operation)
        if_match = request.headers.get("If-Match")
        if operation.if_match and if_match is None:
            raise precondition_required()
        body = await read_json(request, operation.body, operation.body_types) if operation.body else None
        return await operation.handler(Call(request, request.get(TOKEN), params, query, body, if_match))

    return handle


def _path_params(request: web.Request, operation: Operation) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, schema in operation.path_params.items():
        value = _coerce(request.match_info[name], resolve(schema))
        if value is None or validate(value, schema):
            raise Problem(404, "not-found", f"{request.path} does not name anything here")
        params[name] = value
    return params


def _query(request: web.Request, operation: Operation) -> dict[str, Any]:
    problems: list[Invalid] = []
    query: dict[str, Any] = {}
    for name in request.query:
        if name not in operation.query:
            problems.append(Invalid(name, "is not a known query parameter"))
        elif len(request.query.getall(name)) > 1:
            problems.append(Invalid(name, "is given more than once"))
    for name, schema in operation.query.items():
        if name in request.query:
            value = _coerce(request.query[name], resolve(schema))
            if value is None:
                problems.append(Invalid(name, f"must be {resolve(schema)['type']}"))
                continue
            problems.extend(validate(value, schema, name))
            query[name] = value
        elif "default" in schema:
            query[name] = schema["default"]
    if problems:
        raise invalid(problems, "query")
    return query


_INTEGER = re.compile(r"-?[0-9]{1,19}")


def _coerce(value: str, schema: Schema) -> Any:
    """A query or path text as the schema's type, or None when it cannot be one."""
    kind = schema.get("type")
    if kind == "integer":
        return int(value) if _INTEGER.fullmatch(value) else None
    if kind == "boolean":
        return {"true": True, "false": False}.get(value)
    return value


async def read_json(request: web.Request, schema: Schema, types: tuple[str, ...] = JSON_TYPES) -> Any:
    """The body as JSON checked against `schema`: 415, 413, 400 or 422 otherwise."""
    if request.content_type not in types:
        raise Problem(415, "unsupported-media-type", f"send the body as {' or '.join(types)}")
    limit = request.app[SETTINGS].max_json_bytes
    raw = b"".join([chunk async for chunk in limited_body(request, limit)])
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                           parse_float=_number)
    except (UnicodeDecodeError, ValueError) as error:
        raise Problem(400, "malformed-json", f"the body is not valid JSON in UTF-8: {error}") from None
    except RecursionError:
        raise too_deep() from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise too_deep()
    problems = validate(value, schema)
    if problems:
        raise invalid(problems, "body")
    return value


def limited_body(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """The body in chunks; 413 as soon as it is known to be longer than `limit` bytes, 408 when
    it sends nothing for the body_timeout setting's seconds (a stalled client holds no slot)."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    return limited_chunks(lambda: request.content.read(BODY_CHUNK_BYTES), limit, request.app[SETTINGS].body_timeout)


async def limited_chunks(read: Callable[[], Awaitable[bytes]], limit: int, wait: float) -> AsyncIterator[bytes]:
    """The chunks `read` gives until it gives b""; 413 past `limit` bytes, 408 when a read
    waits more than `wait` seconds."""
    size = 0
    while True:
        try:
            async with asyncio.timeout(wait):
                chunk = await read()
        except TimeoutError:
            raise Problem(408, "request-timeout", f"the body sent nothing for {wait:g} seconds",
                          close_connection=True) from None
        if not chunk:
            return
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        yield chunk


def too_deep() -> Problem:
    return Problem(400, "malformed-json", f"the body nests objects or arrays more than {MAX_JSON_DEPTH} deep")


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in a parsed body, counted without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", f"the body is larger than {limit} bytes")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a key is given twice in one object")
    return result


def _number(text: str) -> int | float:
    """A JSON number with a fraction or exponent; a whole one (50.0, 5e1) is an integer, as
    JSON Schema counts it."""
    value = float(text)
    return int(value) if value.is_integer() else value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def with_defaults(body: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """The body with each property it leaves out at the schema's default."""
    properties = resolve(schema).get("properties", {})
    return {**{name: item["default"] for name, item in properties.items() if "default" in item}, **body}
