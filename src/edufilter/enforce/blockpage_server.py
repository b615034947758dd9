"""The block-page server: pages for browsers that reach the gateway's block-page address
directly (a sinkholed DNS answer sent them there). The supervisor serves it; workers inject
pages themselves (blockpage.py) and never import aiohttp.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

from aiohttp import web

from edufilter import logs
from edufilter.enforce.blockpage import (
    FALLBACK_LANGUAGE,
    MAX_REASON_CHARS,
    REVIEW_FIELDS,
    BlockInfo,
    choose_language,
    render_block_page,
    render_neutral_page,
    render_review_answer,
)
from edufilter.errors import EdufilterError

log = logging.getLogger(logs.BLOCK_PAGE)

REVIEW_PATH: Final = "/review"
MAX_REVIEW_FORM_BYTES: Final = 4096
REVIEWS_PER_HOUR: Final = 5  # per client pseudonym
_REMEMBERED_CLIENTS: Final = 10_000  # the rate limiter's memory, least recently used first out
_FORM_TYPE: Final = "application/x-www-form-urlencoded"
_REFERENCE: Final = re.compile(r"[A-Z2-7]{8}")
_SLUG: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_HOST: Final = re.compile(r"[a-z0-9_.-]{1,253}")


@dataclass(frozen=True, slots=True)
class ReviewForm:
    """The fields of a block page's review form, checked for form only (no pupil identity)."""

    site: str
    category: str
    group: str
    reference: str
    reason: str


Explain = Callable[[str, str, str | None], BlockInfo | None]
# The form -> "sent", "refused" (no such block) or "unavailable" (queue full or store down).
SubmitReview = Callable[[ReviewForm], Awaitable[str]]
Pseudonym = Callable[[str], str]  # a client address -> its pseudonym of the day
EXPLAIN_KEY: Final = web.AppKey("explain", Explain)
DEFAULT_LANGUAGE_KEY: Final = web.AppKey("default_language", str)
SUBMIT_KEY: Final = web.AppKey("submit_review", SubmitReview)


class ReviewLimiter:
    """At most `per_hour` review requests per client pseudonym in any hour (kept in memory)."""

    def __init__(self, pseudonym: Pseudonym, per_hour: int = REVIEWS_PER_HOUR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pseudonym, self.per_hour, self.clock = pseudonym, per_hour, clock
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, client_address: str) -> bool:
        """Count one request from the client; False when it is over the limit."""
        key, now = self.pseudonym(client_address), self.clock()
        times = self._recent.pop(key, deque())
        while times and times[0] <= now - 3600:
            times.popleft()
        allowed = len(times) < self.per_hour
        if allowed:
            times.append(now)
        self._recent[key] = times
        while len(self._recent) > _REMEMBERED_CLIENTS:
            self._recent.popitem(last=False)
        return allowed


LIMITER_KEY: Final = web.AppKey("review_limiter", ReviewLimiter)


def make_blockpage_app(
    explain: Explain, default_language: str = FALLBACK_LANGUAGE,
    submit_review: SubmitReview | None = None, pseudonym: Pseudonym | None = None,
) -> web.Application:
    """The block-page server: explain(host, client address, Accept-Language) -> BlockInfo.

    Every path but /healthz shows the block page for the Host header, or a neutral page when
    explain knows no block for it. With submit_review (and the pseudonym its rate limit
    counts by), the page has the review form and POST /review hands its fields over.
    """
    choose_language(None, default_language)  # reject a bad default now rather than per request
    app = web.Application()
    app[EXPLAIN_KEY] = explain
    app[DEFAULT_LANGUAGE_KEY] = default_language
    app.router.add_get("/healthz", _healthz)
    if submit_review is not None:
        if pseudonym is None:
            raise ValueError("the review form's rate limit needs the client pseudonym")
        app[SUBMIT_KEY] = submit_review
        app[LIMITER_KEY] = ReviewLimiter(pseudonym)
        app.router.add_post(REVIEW_PATH, _review)
    app.router.add_route("*", "/{path:.*}", _block_page)
    return app


async def _review(request: web.Request) -> web.Response:
    """Forward the form's fields, and nothing else of the request, to submit_review."""
    accept_language = request.headers.get("Accept-Language")
    default_language = request.app[DEFAULT_LANGUAGE_KEY]
    form = await _read_review_form(request)
    if form is None:
        outcome = "refused"
    elif not request.app[LIMITER_KEY].allow(request.remote or ""):
        outcome = "too_many"
    else:
        try:
            outcome = await request.app[SUBMIT_KEY](form)
        except EdufilterError as error:
            log.warning("review request %s not queued: %s", form.reference, error)
            outcome = "unavailable"
    status, headers, body = render_review_answer(outcome, accept_language, default_language)
    return web.Response(status=status, headers=headers, body=body)


async def _read_review_form(request: web.Request) -> ReviewForm | None:
    length = request.content_length
    if request.content_type != _FORM_TYPE or length is None or length > MAX_REVIEW_FORM_BYTES:
        return None
    try:
        fields = parse_qs((await request.read()).decode("utf-8"), max_num_fields=len(REVIEW_FIELDS))
    except (UnicodeDecodeError, ValueError):
        return None
    if any(len(values) != 1 for values in fields.values()) or not set(fields) <= set(REVIEW_FIELDS):
        return None
    value = {name: fields.get(name, [""])[0].strip() for name in REVIEW_FIELDS}
    reason = " ".join(value["reason"].split())  # control characters and line breaks become spaces
    if (not _HOST.fullmatch(value["site"]) or not _SLUG.fullmatch(value["group"])
            or not (value["category"] == "" or _SLUG.fullmatch(value["category"]))
            or not _REFERENCE.fullmatch(value["reference"]) or len(reason) > MAX_REASON_CHARS
            or not reason.isprintable()):
        return None
    return ReviewForm(value["site"], value["category"], value["group"], value["reference"], reason)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


async def _block_page(request: web.Request) -> web.Response:
    accept_language = request.headers.get("Accept-Language")
    default_language = request.app[DEFAULT_LANGUAGE_KEY]
    host = _host_name(request.headers.get("Host", ""))
    info = None
    if host:
        try:
            info = request.app[EXPLAIN_KEY](host, request.remote or "", accept_language)
        except EdufilterError as error:
            log.warning("block page for %r: %s", host, error)
    if info is None:
        status, headers, body = render_neutral_page(accept_language, default_language)
    else:
        review_action = REVIEW_PATH if SUBMIT_KEY in request.app else None
        status, headers, body = render_block_page(info, accept_language, default_language, review_action)
    return web.Response(status=status, headers=headers, body=body)


def _host_name(host: str) -> str:
    """The name or address in a Host header, without port or final dot, lowercased."""
    host = host.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.removesuffix(".").lower()
