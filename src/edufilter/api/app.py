"""The admin API's application factory and its listening site (loopback unless configured,
TLS when a certificate is given)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from edufilter.api.connections import (
    CONNECTIONS,
    RESOURCE_LOG,
    ConnectionGuard,
    GuardedSite,
    ResourceLog,
    connection_budget,
)
from edufilter.api.context import (
    APPLIER,
    METRICS,
    SETTINGS,
    STATE_DIR,
    STORE,
    Applier,
    LiveApplier,
    Metrics,
    StoreWorker,
    policy_path,
)
from edufilter.api.observe import (
    CHECKS,
    EVENTS,
    EXPLAIN,
    STATUS_SOURCE,
    CheckSlots,
    Explain,
    StatusSource,
    status_file_source,
)
from edufilter.api.openapi import OPENAPI, openapi_document
from edufilter.api.problems import Handler, problem_middleware
from edufilter.api.routes import OPERATIONS_TABLE, setup_routes
from edufilter.api.security import (
    OVERRIDE_RATE,
    THROTTLE,
    WindowCounter,
    auth_middleware,
)
from edufilter.api.settings import ApiSettings
from edufilter.api.uploads import UPLOADS, Uploads
from edufilter.console.app import setup_console
from edufilter.errors import EdufilterError
from edufilter.output.events import EventStore
from edufilter.state import StateDir


def make_app(
    state_dir: Path,
    applier: Applier,
    *,
    explain: Explain | None = None,
    status_source: StatusSource | None = None,
    event_store: EventStore | None = None,
    settings: ApiSettings = ApiSettings(),
) -> web.Application:
    """The admin API over the policy database in state_dir.

    applier compiles the stored policy and makes it live, returning the version now live;
    explain answers POST /check; status_source gives the daemon's status (default: the file
    <state>/run/status.json); event_store answers /events and /stats.
    """
    app = web.Application(middlewares=[_count_requests, problem_middleware, auth_middleware])
    app[SETTINGS] = settings
    app[STATE_DIR] = state_dir
    app[STORE] = StoreWorker(policy_path(state_dir))
    app[APPLIER] = LiveApplier(applier)
    app[METRICS] = Metrics()
    app[THROTTLE] = WindowCounter(settings.auth_failures, settings.auth_window)
    app[OVERRIDE_RATE] = WindowCounter(settings.teacher_overrides_per_hour, 3600.0)
    app[UPLOADS] = Uploads(StateDir(state_dir).uploads, settings.max_concurrent_uploads)
    app[EXPLAIN] = explain
    app[CHECKS] = CheckSlots()
    app[STATUS_SOURCE] = status_source or status_file_source(StateDir(state_dir).status)
    app[EVENTS] = event_store
    app[OPENAPI] = openapi_document(OPERATIONS_TABLE)
    app[RESOURCE_LOG] = ResourceLog(settings.resource_log_interval)
    app[CONNECTIONS] = ConnectionGuard(settings.max_connections_per_address,
                                       connection_budget(settings.max_connections))
    setup_routes(app)
    app.cleanup_ctx.append(_resource_log_context)
    app.cleanup_ctx.append(_store_context)
    app.cleanup_ctx.append(_uploads_context)
    setup_console(app)
    return app


async def _resource_log_context(app: web.Application) -> AsyncIterator[None]:
    restore = app[RESOURCE_LOG].install(asyncio.get_running_loop())
    yield
    restore()


async def _store_context(app: web.Application) -> AsyncIterator[None]:
    await app[STORE].open()
    yield
    await app[STORE].close()


async def _uploads_context(app: web.Application) -> AsyncIterator[None]:
    app[UPLOADS].open()
    yield
    await app[UPLOADS].close()


@web.middleware
async def _count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    request.app[METRICS].requests[request.method, response.status] += 1  # aiohttp's parser knows few methods
    return response


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise EdufilterError(f"cannot load the API's TLS certificate {cert} / key {key}: {error}") from error
    return context


async def start_api(app: web.Application) -> web.AppRunner:
    """Listen on the app's configured address; stop with `await runner.cleanup()`.

    runner.addresses tells where it listens (useful with port 0)."""
    settings = app[SETTINGS]
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise EdufilterError("the API needs both a TLS certificate and its key, or neither")
    context = tls_context(settings.tls_cert, settings.tls_key) if settings.tls_cert and settings.tls_key else None
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=settings.idle_timeout,
                           shutdown_timeout=settings.shutdown_timeout)
    await runner.setup()
    site = GuardedSite(runner, settings.host, settings.port, app[CONNECTIONS], settings.idle_timeout,
                       ssl_context=context)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise EdufilterError(f"the API cannot listen on {settings.host}:{settings.port}: {error}") from error
    return runner
