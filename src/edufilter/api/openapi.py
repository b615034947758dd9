"""The OpenAPI 3.1 document, made from the operation table and the schemas that also check
every request, so what it promises is what the API does."""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from edufilter import __version__
from edufilter.api.operations import UPLOAD_TYPES, Call, Operation, json_response
from edufilter.api.schemas import PROBLEM
from edufilter.api.validation import COMPONENTS

OPENAPI = web.AppKey("openapi", dict[str, Any])

DESCRIPTION = """\
Manage a school's edufilter policy live: every change is validated, stored with its audit
row in one transaction, then compiled and applied to the running daemon.

**Tokens.** Every request but `GET /healthz` needs `Authorization: Bearer <token>`. Roles:
`admin` (everything, tokens and general settings included), `editor` (policy objects),
`teacher` (overrides of the token's groups only, up to the token's `max_minutes`), `viewer`
(reads everything but tokens). Once an address has failed to authenticate too often, its
further bad tokens are answered 429 with `Retry-After`; a valid token is never throttled.

**Concurrency.** Every resource has a strong `ETag`. A change to an existing resource (PUT,
PATCH, DELETE) must send `If-Match`: 428 without it, 412 when the resource changed since it
was read. `If-Match: *` deliberately skips the comparison. Creating (POST) needs none.

**Errors** are `application/problem+json` (RFC 9457); a refused field is named in
`invalid_params`. Bodies are JSON (415 otherwise) of at most 1 MiB by default (list uploads:
64 MiB); unknown fields and wrong types are refused (422), as are unknown query parameters.

**Collections** take `limit` and `cursor` (the previous page's `next_cursor`), `sort`
(a field, `-field` for descending), `q` (a substring) and equality filters on fields.
"""

_HEADERS = {
    "ETag": {"description": "strong entity tag of the representation", "required": True, "schema": {"type": "string"}},
    "Location": {"description": "where the new resource is", "required": True, "schema": {"type": "string"}},
}
_PROBLEM_HEADERS = {
    "Retry-After": {"description": "seconds to wait (429)", "schema": {"type": "string"}},
    "WWW-Authenticate": {"description": "the scheme to authenticate with (401)", "schema": {"type": "string"}},
    "Allow": {"description": "the methods the path takes (405)", "schema": {"type": "string"}},
}


async def serve_openapi(call: Call) -> web.StreamResponse:
    return json_response(call.app[OPENAPI])


def openapi_document(operations: list[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edufilter admin API",
            "version": __version__,
            "description": DESCRIPTION,
            "license": {"name": "GPL-3.0-or-later", "identifier": "GPL-3.0-or-later"},
        },
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(COMPONENTS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "an edufilter token"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(operation: Operation) -> dict[str, Any]:
    roles = "none (no token needed)" if operation.roles is None else ", ".join(sorted(operation.roles))
    entry: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "description": (f"{operation.description}\n\n" if operation.description else "") + f"Roles: {roles}.",
        "tags": [operation.tag],
    }
    if operation.roles is None:
        entry["security"] = []
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in operation.path_params.items()
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": schema} for name, schema in operation.query.items()
    ]
    if operation.if_match:
        parameters.append({
            "name": "If-Match",
            "in": "header",
            "required": True,
            "description": "the ETag you read, or * to change whatever is there",
            "schema": {"type": "string", "examples": ["*"]},
        })
    if parameters:
        entry["parameters"] = parameters
    if operation.body is not None:
        entry["requestBody"] = {
            "required": True,
            "content": {media: {"schema": operation.body} for media in operation.body_types},
        }
    elif operation.upload:
        entry["requestBody"] = {
            "required": True,
            "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in UPLOAD_TYPES},
        }
    responses: dict[str, Any] = {}
    for response in operation.responses:
        answer: dict[str, Any] = {"description": response.description}
        if response.schema is not None:
            answer["content"] = {response.content_type: {"schema": response.schema}}
        if response.headers:
            answer["headers"] = {name: _HEADERS[name] for name in response.headers}
        responses[str(response.status)] = answer
    responses["4XX"] = {
        "description": "The request was refused; the problem says why",
        "content": {"application/problem+json": {"schema": PROBLEM}},
        "headers": _PROBLEM_HEADERS,
    }
    if operation.roles is not None:
        responses.setdefault("503", {
            "description": "Busy: another change holds the policy database (or too many checks run); nothing "
                           "was changed, try again after Retry-After",
            "content": {"application/problem+json": {"schema": PROBLEM}},
            "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}},
        })
    entry["responses"] = responses
    return entry
