"""The console's only way to read or change anything: an operation of the API's table, run
with the signed-in token, through the same role check, schemas, handler and audit as a
request to /api/v1 (so the console can do nothing the API cannot)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from edufilter.api.context import SETTINGS
from edufilter.api.operations import BODY_CHUNK_BYTES, Call, Operation, limited_chunks
from edufilter.api.problems import Problem, invalid, policy_problem
from edufilter.api.routes import OPERATIONS_TABLE
from edufilter.api.tokens import Token
from edufilter.api.validation import Invalid, validate
from edufilter.errors import EdufilterError, StorageFullError
from edufilter.policy.store import Actor

OPERATIONS_BY_ID: dict[str, Operation] = {operation.operation_id: operation for operation in OPERATIONS_TABLE}


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: Any  # the JSON the API would send, or None (204)
    etag: str | None


def may(token: Token, operation_id: str, operations: Mapping[str, Operation] = OPERATIONS_BY_ID) -> bool:
    """Whether this token's role may run the operation (the API's own role table; the group's
    console passes the group API's)."""
    roles = operations[operation_id].roles
    return roles is None or token.role in roles


@dataclass(slots=True)
class _ConsoleCall(Call):
    """A Call whose audit row names the API operation the console ran, not the console's page."""

    operation_method: str = ""
    api_path: str = ""
    file: BodyPartReader | None = None  # an upload operation's file: a part of the page's form

    @property
    def actor(self) -> Actor:
        assert self.token is not None
        return Actor(self.token.name, self.token.role.value, self.operation_method, self.api_path,
                     self.token.site)

    def raw_body_type(self) -> str | None:
        # A browser labels a file by its name's extension; the upload sniffs its bytes instead.
        return None if self.file is None else "application/octet-stream"

    def raw_body(self, limit: int) -> AsyncIterator[bytes]:
        assert self.file is not None
        file = self.file
        return limited_chunks(lambda: file.read_chunk(BODY_CHUNK_BYTES), limit, self.app[SETTINGS].body_timeout)


async def invoke(
    request: web.Request,
    token: Token,
    operation_id: str,
    *,
    params: dict[str, Any] | None = None,
    query: dict[str, Any] | None = None,
    body: Any = None,
    if_match: str | None = None,
    operations: Mapping[str, Operation] = OPERATIONS_BY_ID,
    file: BodyPartReader | None = None,
) -> Outcome:
    """Run the operation as `token`; a refusal (role, validation, policy) raises Problem.
    `file` is an upload operation's body, read as it arrives."""
    operation = operations[operation_id]
    if not may(token, operation_id, operations):
        raise Problem(403, "forbidden", f"a {token.role} token may not use {operation.method} {operation.path}")
    params = params or {}
    for name, schema in operation.path_params.items():
        if name not in params or validate(params[name], schema):
            raise Problem(404, "not-found", f"{operation.path} with {name}={params.get(name)!r} names nothing")
    checked_query = _checked_query(operation, query or {})
    if operation.body is not None:
        problems = validate(body, operation.body)
        if problems:
            raise invalid(problems, "body")
    if operation.if_match and if_match is None:
        raise Problem(428, "precondition-required", "the page did not say which version it changes")
    api_path = operation.path.format(**{name: quote(str(value), safe="") for name, value in params.items()})
    call = _ConsoleCall(request, token, params, checked_query, body, if_match, operation.method, api_path, file)
    try:
        response = await operation.handler(call)
    except StorageFullError as error:
        raise Problem(503, "storage-full", str(error)) from error
    except EdufilterError as error:
        raise policy_problem(error) from error
    assert isinstance(response, web.Response)
    raw = response.body
    value = json.loads(raw) if isinstance(raw, bytes) and raw and response.content_type == "application/json" else None
    return Outcome(response.status, value, response.headers.get("ETag"))


def _checked_query(operation: Operation, query: dict[str, Any]) -> dict[str, Any]:
    problems: list[Invalid] = []
    checked: dict[str, Any] = {}
    for name, value in query.items():
        if name not in operation.query:
            problems.append(Invalid(name, "is not a known query parameter"))
        else:
            problems.extend(validate(value, operation.query[name], name))
            checked[name] = value
    for name, schema in operation.query.items():
        if name not in checked and "default" in schema:
            checked[name] = schema["default"]
    if problems:
        raise invalid(problems, "query")
    return checked
