"""The block-page server: pages for browsers that reach the gateway's block-page address
directly (a sinkholed DNS answer sent them there). The supervisor serves it; workers inject
pages themselves (blockpage.py) and never import aiohttp.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from aiohttp import web

from edufilter.enforce.blockpage import (
    FALLBACK_LANGUAGE,
    BlockInfo,
    choose_language,
    render_block_page,
    render_neutral_page,
)
from edufilter.errors import EdufilterError

log = logging.getLogger(__name__)

Explain = Callable[[str, str, str | None], BlockInfo | None]
EXPLAIN_KEY: Final = web.AppKey("explain", Explain)
DEFAULT_LANGUAGE_KEY: Final = web.AppKey("default_language", str)


def make_blockpage_app(
    explain: Explain, default_language: str = FALLBACK_LANGUAGE
) -> web.Application:
    """The block-page server: explain(host, client address, Accept-Language) -> BlockInfo.

    Every path but /healthz shows the block page for the Host header, or a neutral page when
    explain knows no block for it.
    """
    choose_language(None, default_language)  # reject a bad default now rather than per request
    app = web.Application()
    app[EXPLAIN_KEY] = explain
    app[DEFAULT_LANGUAGE_KEY] = default_language
    app.router.add_get("/healthz", _healthz)
    app.router.add_route("*", "/{path:.*}", _block_page)
    return app


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
        status, headers, body = render_block_page(info, accept_language, default_language)
    return web.Response(status=status, headers=headers, body=body)


def _host_name(host: str) -> str:
    """The name or address in a Host header, without port or final dot, lowercased."""
    host = host.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.removesuffix(".").lower()
