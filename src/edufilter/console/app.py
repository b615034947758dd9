"""Mounting the console on the admin API's application: its routes under /console/, its
sessions and templates, and the security headers on every answer under /console/."""

from __future__ import annotations

import jinja2
from aiohttp import web

from edufilter.api.security import COOKIE_ROUTES
from edufilter.console import bulk_upload, pages, policy_edit, policy_pages, reviews
from edufilter.console.overview_cache import OVERVIEWS, OverviewCache
from edufilter.console.sessions import SessionStore
from edufilter.console.visit import HERE, PREFIX, SESSIONS, TEMPLATES, page

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on the
    # console's own form posts, which the origin check must refuse.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def setup_console(app: web.Application) -> None:
    """Add the console's routes."""
    app[OVERVIEWS] = OverviewCache()
    routes = [
        app.router.add_get(PREFIX, to_start),
        app.router.add_get(f"{PREFIX}/", to_start),
        app.router.add_get(f"{PREFIX}/sign-in", pages.sign_in_form),
        app.router.add_post(f"{PREFIX}/sign-in", pages.sign_in),
        app.router.add_post(f"{PREFIX}/sign-out", page(pages.sign_out)),
        app.router.add_get(f"{PREFIX}/overview", page(pages.overview)),
        app.router.add_get(f"{PREFIX}/overrides", page(pages.overrides)),
        app.router.add_post(f"{PREFIX}/overrides", page(pages.open_site)),
        app.router.add_post(f"{PREFIX}/overrides/{{id}}/end", page(pages.end_override)),
        app.router.add_get(f"{PREFIX}/reviews", page(reviews.reviews)),
        app.router.add_post(f"{PREFIX}/reviews/{{id}}/approve", page(reviews.approve)),
        app.router.add_post(f"{PREFIX}/reviews/{{id}}/decline", page(reviews.decline)),
        app.router.add_get(f"{PREFIX}/policy", page(pages.policy)),
        app.router.add_post(f"{PREFIX}/policy/entries", page(policy_edit.add_entry)),
        app.router.add_post(f"{PREFIX}/policy/groups/{{group}}", page(policy_edit.change_group)),
        app.router.add_get(f"{PREFIX}/policy/clients", page(policy_pages.clients)),
        app.router.add_post(f"{PREFIX}/policy/clients", page(policy_pages.add_client)),
        app.router.add_post(f"{PREFIX}/policy/clients/{{id}}", page(policy_pages.change_client)),
        app.router.add_get(f"{PREFIX}/policy/rules", page(policy_pages.rules)),
        app.router.add_post(f"{PREFIX}/policy/rules/{{group}}/{{position}}", page(policy_pages.change_rule)),
        app.router.add_get(f"{PREFIX}/policy/schedules", page(policy_pages.schedules)),
        app.router.add_post(f"{PREFIX}/policy/schedules/{{name}}", page(policy_pages.change_schedule)),
        app.router.add_get(f"{PREFIX}/policy/categories", page(policy_pages.categories)),
        app.router.add_get(f"{PREFIX}/check", page(pages.check_form)),
        app.router.add_post(f"{PREFIX}/check", page(pages.check)),
        app.router.add_get(f"{PREFIX}/audit", page(pages.audit)),
        app.router.add_get(f"{PREFIX}/tokens", page(pages.tokens)),
        app.router.add_post(f"{PREFIX}/tokens", page(pages.make_token)),
        app.router.add_post(f"{PREFIX}/tokens/{{name}}/revoke", page(pages.revoke_token)),
        app.router.add_get(f"{PREFIX}/static/console.css", stylesheet),
        *_upload_routes(app),
    ]
    serve_pages(app, routes)


def serve_pages(app: web.Application, routes: list[web.AbstractRoute]) -> None:
    """Sessions, templates and security headers for a console's routes (the school's or the
    group's), listed in COOKIE_ROUTES so the bearer check skips them."""
    app[SESSIONS] = SessionStore()
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app[COOKIE_ROUTES] = {route for resource in {route.resource for route in routes} for route in resource}
    app.on_response_prepare.append(_security_headers)


def _upload_routes(app: web.Application) -> list[web.AbstractRoute]:
    return [
        app.router.add_get(f"{PREFIX}/uploads", page(bulk_upload.uploads)),
        app.router.add_post(f"{PREFIX}/uploads", page(bulk_upload.start_upload, files=True)),
        app.router.add_get(f"{PREFIX}/uploads/{{id}}", page(bulk_upload.upload_status)),
        app.router.add_get(f"{PREFIX}/uploads/{{id}}/progress", page(bulk_upload.upload_progress)),
        app.router.add_post(f"{PREFIX}/uploads/{{id}}/cancel", page(bulk_upload.cancel_upload)),
        app.router.add_get(f"{PREFIX}/static/upload.js", bulk_upload.script),
    ]


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every console answer, pages, errors and the stylesheet alike."""
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith(f"{PREFIX}/static/"):
            response.headers["Cache-Control"] = "no-store"


async def stylesheet(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(HERE / "static" / "console.css", headers={"Content-Type": "text/css; charset=utf-8"})


async def to_start(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(f"{PREFIX}/overview")


