"""Errors as RFC 9457 problem details (application/problem+json), made in one middleware."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus

from aiohttp import web

from edufilter import logs
from edufilter.api.connections import RESOURCE_LOG, resource_error
from edufilter.api.validation import Invalid
from edufilter.errors import EdufilterError, StorageFullError, StoreBusyError

log = logging.getLogger(logs.API)

PROBLEM_TYPE = "application/problem+json"
_TYPE_PREFIX = "urn:edufilter:problem:"
STORAGE_FULL_RETRY_AFTER = "60"  # seconds: freeing disk space takes a person
BUSY_RETRY_AFTER = 2  # seconds: a hint; a change holds the write lock for milliseconds, an upload for longer


class Problem(Exception):
    """An error answer: status, a short kind (the type URI's last part) and what went wrong."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        invalid_params: list[Invalid] | None = None,
        headers: Mapping[str, str] | None = None,
        close_connection: bool = False,  # the request's framing is lost (e.g. a body cut short)
        **extra: object,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.invalid_params = invalid_params or []
        self.headers = dict(headers or {})
        self.close_connection = close_connection
        self.extra = extra

    def response(self, instance: str) -> web.Response:
        body: dict[str, object] = {
            "type": _TYPE_PREFIX + self.kind,
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.invalid_params:
            body["invalid_params"] = [{"name": item.name, "reason": item.reason} for item in self.invalid_params]
        body.update(self.extra)
        response = web.Response(
            status=self.status,
            text=json.dumps(body, ensure_ascii=False),
            content_type=PROBLEM_TYPE,
            headers=self.headers,
        )
        if self.close_connection:
            response.force_close()
        return response


def invalid(problems: list[Invalid], what: str = "request") -> Problem:
    names = ", ".join(dict.fromkeys(problem.name for problem in problems))
    return Problem(422, "validation-error", f"the {what} is not valid: {names}", invalid_params=problems)


# A PolicyError message names the field the way the model does ("rule.target: ...",
# "client.cidr ...", "list.entries[3]: ..."); these patterns find it for invalid_params.
_FIELD_PATTERNS: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"\b(?:settings|category|list|group|client|rule|override|token|entry)\.([a-z0-9_]+)"), None),
    (re.compile(r"\b(?:domain|exact|cidr|url_prefix) entry\b"), "value"),
    (re.compile(r"\bMAC address\b"), "mac"),
    (re.compile(r"\brule position\b"), "position"),
    (re.compile(r"\bexception (?:day|\d)"), "exceptions"),
    (re.compile(r"\b(?:weekday|slot)\b"), "slots"),
    (re.compile(r"\b(?:group|list|schedule|category|token name) '[^']*': use 1-64\b"), "name"),
    (re.compile(r"\bsettings\.default_group\b|\bdefault group\b"), "default_group"),
)


def policy_problem(error: EdufilterError) -> Problem:
    """A 422 for a change the policy model refuses, naming the field when the message does."""
    message = str(error)
    for pattern, field in _FIELD_PATTERNS:
        match = pattern.search(message)
        if match:
            name = field or match.group(1)
            return Problem(422, "invalid-change", message, invalid_params=[Invalid(name, message)])
    return Problem(422, "invalid-change", message)


def busy_problem(error: StoreBusyError) -> Problem:
    """503: the database was locked by another change for the whole busy timeout; nothing changed."""
    return Problem(503, "store-busy", f"{error}; nothing was changed", headers={"Retry-After": str(BUSY_RETRY_AFTER)})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as a problem document: ours, the model's, aiohttp's, or a bug's."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response(request.path)
    except StorageFullError as error:  # the server's trouble, not the client's change
        return Problem(503, "storage-full", str(error),
                       headers={"Retry-After": STORAGE_FULL_RETRY_AFTER}).response(request.path)
    except StoreBusyError as error:
        return busy_problem(error).response(request.path)
    except EdufilterError as error:
        return policy_problem(error).response(request.path)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {name: value for name, value in error.headers.items() if name.lower() in ("allow", "retry-after")}
        detail = error.text if error.text and not error.text.startswith(f"{error.status}:") else error.reason
        return Problem(error.status, _slug(error.reason), detail, headers=headers).response(request.path)
    except OSError as error:
        if not resource_error(error):
            log.exception("admin API: unexpected error on %s %s", request.method, request.path)
            return Problem(500, "internal-error", "unexpected error; see the edufilter log").response(request.path)
        request.app[RESOURCE_LOG].report(f"{request.method} {request.path} failed", error)
        return Problem(503, "out-of-resources", "the server is out of file descriptors or memory; try again soon",
                       headers={"Retry-After": "5"}).response(request.path)
    except Exception:
        log.exception("admin API: unexpected error on %s %s", request.method, request.path)
        return Problem(500, "internal-error", "unexpected error; see the edufilter log").response(request.path)


def _slug(reason: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", reason.lower()).strip("-")
