"""What every console page shares: sessions, rendering, the sign-in and CSRF checks."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import BodyPartReader, web
from multidict import MultiDict

from edufilter.api.context import SETTINGS, STORE
from edufilter.api.problems import Problem
from edufilter.api.security import MAX_SECRET_CHARACTERS, refuse_bad_token
from edufilter.api.tokens import Token, authenticate, find_token
from edufilter.console.i18n import LANGUAGE_NAMES, Translate, page_language, translator
from edufilter.console.invoke import may
from edufilter.console.sessions import Session, SessionStore, same_secret
from edufilter.policy.store import PolicyStore

PREFIX = "/console"
SESSION_COOKIE = "edufilter_console"
SIGN_IN_COOKIE = "edufilter_console_sign_in"  # pairs the sign-in form with its browser
LANGUAGE_COOKIE = "edufilter_console_language"
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 64 * 1024  # the console's forms are a few fields

_GET_TOO = frozenset((f"{PREFIX}/sign-in", f"{PREFIX}/overrides", f"{PREFIX}/check", f"{PREFIX}/tokens",
                      f"{PREFIX}/reviews", f"{PREFIX}/uploads"))

SESSIONS = web.AppKey("console_sessions", SessionStore)
TEMPLATES = web.AppKey("console_templates", jinja2.Environment)

HERE = Path(__file__).parent


@dataclass(frozen=True, slots=True)
class NavItem:
    path: str
    text_key: str
    operation_id: str  # shown only to tokens whose role may run this API operation


NAVIGATION = (
    NavItem(f"{PREFIX}/overview", "nav_overview", "status"),
    NavItem(f"{PREFIX}/overrides", "nav_overrides", "create_override"),
    NavItem(f"{PREFIX}/reviews", "nav_reviews", "list_review_requests"),
    NavItem(f"{PREFIX}/policy", "nav_policy", "list_groups"),
    NavItem(f"{PREFIX}/uploads", "nav_uploads", "create_upload"),
    NavItem(f"{PREFIX}/check", "nav_check", "check"),
    NavItem(f"{PREFIX}/audit", "nav_audit", "list_audit"),
    NavItem(f"{PREFIX}/tokens", "nav_tokens", "list_tokens"),
)


@dataclass(slots=True)
class Visit:
    """One request to a console page by a signed-in person."""

    request: web.Request
    session: Session
    token: Token
    language: str
    text: Translate
    form: MultiDict[str]  # the posted form's fields; empty on GET
    file: BodyPartReader | None = None  # a multipart form's file, not read yet (page(files=True))

    def navigation(self) -> list[NavItem]:
        """The menu: the pages whose API operation this token's role may run."""
        return [item for item in NAVIGATION if may(self.token, item.operation_id)]

    def render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        navigation = self.navigation()
        notice, self.session.notice = self.session.notice, None
        return render(self.request, template, self.language, status=status, token=self.token,
                      navigation=navigation, csrf=self.session.csrf, notice=notice, **values)

    def done(self, path: str, notice: str) -> web.Response:
        """Post/redirect/get: the notice shows once on the page the change leads back to."""
        self.session.notice = notice
        return web.Response(status=303, headers={"Location": path})


Page = Callable[[Visit], Awaitable[web.StreamResponse]]


def render(request: web.Request, template: str, language: str, status: int = 200, **values: Any) -> web.Response:
    text = translator(language)
    # The language switch reloads this page by GET, or the start page after a form's answer.
    here = request.path if request.method == "GET" or request.path in _GET_TOO else f"{PREFIX}/overview"
    body = request.app[TEMPLATES].get_template(template).render(
        t=text, lang=language, languages=LANGUAGE_NAMES, path=request.path, here=here, **values
    )
    return web.Response(status=status, text=body, content_type="text/html", charset="utf-8")


def language_of(request: web.Request) -> str:
    return page_language((request.query.get("lang"), request.cookies.get(LANGUAGE_COOKIE)),
                         request.headers.get("Accept-Language"))


def remember_language(request: web.Request, response: web.StreamResponse, language: str) -> None:
    """A language picked with ?lang= sticks for the next pages (a preference, not a secret)."""
    if request.query.get("lang") == language:
        response.set_cookie(LANGUAGE_COOKIE, language, path=PREFIX, httponly=True, samesite="Strict",
                            secure=request.secure, max_age=365 * 24 * 3600)


def page(handler: Page, visit_type: type[Visit] = Visit,
         files: bool = False) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A page for signed-in people: a live session and token, and on POST a same-origin form
    carrying the session's CSRF token. Refusals of the API become the page's error. The
    group's console passes its own visit_type (its menu). With files, the form is multipart
    and its file is left to the handler to read."""

    async def handle(request: web.Request) -> web.StreamResponse:
        language = language_of(request)
        text = translator(language)
        session_id = request.cookies.get(SESSION_COOKIE)
        session = request.app[SESSIONS].find(session_id)
        token = None if session is None else await _live_token(request.app, session.token_name)
        if session is None or token is None:
            request.app[SESSIONS].end(session_id)
            if request.method == "POST":
                return error_page(request, language, 403, text("session_ended"))
            raise web.HTTPSeeOther(f"{PREFIX}/sign-in?ended=1" if session_id else f"{PREFIX}/sign-in")
        form: MultiDict[str] = MultiDict()
        file = None
        if request.method == "POST":
            form, file = await read_form_and_file(request) if files else (await read_form(request), None)
            if not same_origin(request) or not same_secret(form.get(CSRF_FIELD), session.csrf):
                return error_page(request, language, 403, text("forged"))
        visit = visit_type(request, session, token, language, text, form, file)
        try:
            response = await handler(visit)
        except Problem as problem:
            return visit.render("error.html", status=problem.status, detail=problem.detail)
        remember_language(request, response, language)
        return response

    return handle


def error_page(request: web.Request, language: str, status: int, detail: str) -> web.Response:
    """An error shown to someone not (or no longer) signed in."""
    return render(request, "error.html", language, status=status, detail=detail, token=None, navigation=[],
                  notice=None, csrf="")


async def read_form(request: web.Request) -> MultiDict[str]:
    """The posted form's text fields (files left out), within MAX_FORM_BYTES."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise web.HTTPUnsupportedMediaType(text="the console's forms are sent url-encoded")
    if request.content_length is None:  # browsers send a form's length; no unbounded reads
        raise web.HTTPLengthRequired(text="send the form with a Content-Length")
    if request.content_length > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_FORM_BYTES, request.content_length)
    posted = await request.post()
    return MultiDict((name, value) for name, value in posted.items() if isinstance(value, str))


async def read_form_and_file(request: web.Request) -> tuple[MultiDict[str], BodyPartReader | None]:
    """A multipart form's text fields (within MAX_FORM_BYTES) up to its first file, and that
    file's part, unread: the forms put the file last, so the CSRF token is checked before a
    byte of the file is read."""
    if request.content_type != "multipart/form-data":
        raise web.HTTPUnsupportedMediaType(text="send this form as multipart/form-data")
    if request.content_length is None:
        raise web.HTTPLengthRequired(text="send the form with a Content-Length")
    limit = request.app[SETTINGS].max_upload_bytes + MAX_FORM_BYTES
    if request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(limit, request.content_length)
    reader = await request.multipart()
    fields: MultiDict[str] = MultiDict()
    size = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            raise web.HTTPBadRequest(text="a form field without a name")
        if part.filename is not None:
            return fields, part
        value = b""
        while chunk := await part.read_chunk(MAX_FORM_BYTES):
            size += len(chunk)
            if size > MAX_FORM_BYTES:
                raise web.HTTPRequestEntityTooLarge(MAX_FORM_BYTES, size)
            value += chunk
        fields.add(part.name, value.decode("utf-8", "replace"))
    return fields, None


def same_origin(request: web.Request) -> bool:
    """False for a form another site made the browser send (Fetch Metadata and Origin)."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


async def _live_token(app: web.Application, name: str) -> Token | None:
    """The session's token as stored now: None once revoked, its role and groups as they are."""

    def lookup(store: PolicyStore) -> Token | None:
        with store.snapshot() as db:
            return find_token(db, name)

    token = await app[STORE].run(lookup)
    return None if token is None or token.revoked_at is not None else token


async def token_for_secret(app: web.Application, secret: str) -> Token | None:
    if not secret or len(secret) > MAX_SECRET_CHARACTERS:
        return None

    def lookup(store: PolicyStore) -> Token | None:
        with store.snapshot() as db:
            return authenticate(db, secret)

    return await app[STORE].run(lookup)


def refused_sign_in(request: web.Request) -> int | None:
    """Count a failed sign-in exactly as the API counts a bad bearer token; seconds to wait
    when the address is throttled (429), else None (401)."""
    try:
        refuse_bad_token(request)
    except Problem as problem:
        if problem.status == 429:
            return int(problem.headers.get("Retry-After", "1"))
        return None
    raise AssertionError("refuse_bad_token always refuses")


def new_sign_in_nonce() -> str:
    return secrets.token_urlsafe(32)


def start_session(request: web.Request, response: web.StreamResponse, token: Token) -> None:
    """A new session id at every sign-in; the browser's previous session, if any, ends."""
    request.app[SESSIONS].end(request.cookies.get(SESSION_COOKIE))
    session_id, _ = request.app[SESSIONS].start(token.name)
    response.set_cookie(SESSION_COOKIE, session_id, path=PREFIX, httponly=True, samesite="Strict",
                        secure=request.secure)
    response.del_cookie(SIGN_IN_COOKIE, path=PREFIX)


def end_session(request: web.Request, response: web.StreamResponse) -> None:
    request.app[SESSIONS].end(request.cookies.get(SESSION_COOKIE))
    response.del_cookie(SESSION_COOKIE, path=PREFIX)

