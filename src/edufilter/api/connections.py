"""Limits on the API's connections: how many one address and all together may hold open, and
resource errors (no descriptors left) logged once per interval instead of once per event.

Idle connections and slow request headers are timed out by aiohttp itself (its keep-alive
timer runs from the connection's start until a whole request has arrived); start_api sets it.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from edufilter import logs

log = logging.getLogger(logs.API)

# errno values that mean the process or the system ran out of something, not a bad peer.
RESOURCE_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def resource_error(error: BaseException | None) -> bool:
    return isinstance(error, OSError) and error.errno in RESOURCE_ERRNOS


class ResourceLog:
    """Logs a resource problem at most once per interval, with how many were left unlogged."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: float | None = None
        self.unlogged = 0
        self.total = 0

    def report(self, what: str, error: BaseException) -> None:
        self.total += 1
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            self.unlogged += 1
            return
        earlier = f" ({self.unlogged} more since the last report)" if self.unlogged else ""
        log.error("admin API: %s: %s%s; reported at most once per %.0f s", what, error, earlier, self.interval)
        self._last, self.unlogged = now, 0

    def install(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Route the loop's resource errors (asyncio's failed accept()) through this log; the
        loop's other errors go where they went before. Returns the call that undoes it."""
        previous = loop.get_exception_handler()

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            error = context.get("exception")
            if resource_error(error):
                assert isinstance(error, OSError)
                self.report(str(context.get("message", "out of a system resource")), error)
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handle)
        return lambda: loop.set_exception_handler(previous)


RESOURCE_LOG = web.AppKey("resource_log", ResourceLog)


def connection_budget(wanted: int) -> int:
    """At most `wanted` connections, and at most half the descriptors this process may open:
    the rest stay for the policy database, images, logs and the daemon's workers."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return wanted if soft == resource.RLIM_INFINITY else max(1, min(wanted, soft // 2))


class ConnectionGuard:
    """Counts open connections per client address; one past a limit is answered 503 and closed."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self.open: Counter[str] = Counter()
        self.refused = 0

    def protocol_factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, make())

    def admit(self, address: str) -> bool:
        if self.open[address] >= self.per_address or sum(self.open.values()) >= self.total:
            self.refused += 1
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


CONNECTIONS = web.AppKey("connections", ConnectionGuard)


def _refusal() -> bytes:
    body = json.dumps({
        "type": "urn:edufilter:problem:too-many-connections",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "too many open connections from this address (or in all); close some and try again",
    }).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


_REFUSAL = _refusal()


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's count."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._guard.admit(address):
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_REFUSAL)
            transport.close()
            return
        self._address = address
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._address is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._address is not None else None

    def pause_writing(self) -> None:
        if self._address is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._address is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
            self._inner.connection_lost(exc)


class ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering requests its parser refuses (a request line or
    header over 8 KiB, bad framing) with a problem document instead of text, logged quietly:
    they are the client's mistake, and a flood of them must not flood the log."""

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        log.debug("admin API: refused a malformed request from %s: %s", request.remote, exc)
        detail = f"the request is malformed: {exc}" if exc is not None else "the request is malformed"
        body = {"type": "urn:edufilter:problem:malformed-request", "title": HTTPStatus(status).phrase,
                "status": status, "detail": detail}
        response = web.Response(status=status, text=json.dumps(body), content_type="application/problem+json")
        response.force_close()
        return response


# After an answer sent before the whole body was read (413, 408), the rest is read and thrown
# away for this long so the client sees the answer rather than a reset; then the connection closes.
LINGERING_SECONDS = 2.0


class GuardedSite(web.TCPSite):
    """A TCP site whose connections pass the guard and are handled by ProblemRequestHandler,
    idle or slow-header ones closed after idle_timeout (a TLS handshake gets as long)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard, idle_timeout: float,
                 **options: Any) -> None:
        super().__init__(runner, host, port, **options)
        self._guard = guard
        self._idle_timeout = idle_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner; the listening is ours
        loop = asyncio.get_running_loop()
        manager = self._runner.server
        assert manager is not None

        def handler() -> asyncio.Protocol:
            return ProblemRequestHandler(manager, loop=loop, keepalive_timeout=self._idle_timeout, access_log=None,
                                         lingering_time=LINGERING_SECONDS)

        self._server = await loop.create_server(
            self._guard.protocol_factory(handler), self._host, self._port, ssl=self._ssl_context,
            ssl_handshake_timeout=self._idle_timeout if self._ssl_context else None, backlog=self._backlog,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
