"""Bearer-token authentication, role checks and throttling of failed authentication."""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import NoReturn

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from edufilter.api.context import METRICS, STORE
from edufilter.api.operations import TOKEN, Operation
from edufilter.api.problems import Handler, Problem
from edufilter.api.tokens import EVERY_ROLE, Token, authenticate
from edufilter.policy.store import PolicyStore

OPERATIONS = web.AppKey("operations", dict[AbstractRoute, Operation])
MAX_TRACKED_KEYS = 10_000  # bounded memory under a spray from many addresses


class WindowCounter:
    """Counts events per key (failed authentications per address, overrides per teacher token)
    over a sliding window; a key with `limit` events inside the window waits until the oldest
    ages out."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may have another event, or None when it may now."""
        events = self._events.get(key)
        if events is None:
            return None
        horizon = self._clock() - self.window
        while events and events[0] <= horizon:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events[0] - horizon if len(events) >= self.limit else None

    def record(self, key: str) -> None:
        events = self._events.setdefault(key, deque(maxlen=self.limit))
        events.append(self._clock())
        self._events.move_to_end(key)
        while len(self._events) > MAX_TRACKED_KEYS:
            self._events.popitem(last=False)


THROTTLE = web.AppKey("throttle", WindowCounter)
OVERRIDE_RATE = web.AppKey("override_rate", WindowCounter)  # overrides made per teacher token
_CHALLENGE = 'Bearer realm="edufilter"'
MAX_SECRET_CHARACTERS = 200  # far above a real token; anything longer is not looked up
# Routes that authenticate on their own (the console's session cookie): no bearer token needed.
COOKIE_ROUTES = web.AppKey("cookie_routes", set[AbstractRoute])


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request but the public ones needs a live token whose role the operation allows."""
    route = request.match_info.route
    if route in request.app.get(COOKIE_ROUTES, ()):
        return await handler(request)
    operation = request.app[OPERATIONS].get(route)
    roles = EVERY_ROLE if operation is None else operation.roles  # an unknown path: any token, then 404
    if roles is None:
        return await handler(request)
    header = request.headers.get("Authorization")
    if header is None:
        raise Problem(401, "unauthorized", "this needs 'Authorization: Bearer <token>'",
                      headers={"WWW-Authenticate": _CHALLENGE})
    token = await _token(request.app, header)
    if token is None:
        refuse_bad_token(request)
    if token.role not in roles:
        raise Problem(403, "forbidden", f"a {token.role} token may not use {request.method} {request.path}")
    request[TOKEN] = token
    return await handler(request)


def refuse_bad_token(request: web.Request) -> NoReturn:
    """401 for a bad token, 429 once its address has failed too often: only failures are
    throttled, so a valid token is never refused for someone else's guesses from its address."""
    address = request.remote or "unknown"
    throttle = request.app[THROTTLE]
    request.app[METRICS].auth_failures += 1
    wait = throttle.retry_after(address)
    if wait is not None:
        request.app[METRICS].throttled += 1
        raise Problem(
            429,
            "too-many-failures",
            "too many failed authentications from this address; wait before trying again",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    throttle.record(address)
    raise Problem(
        401,
        "unauthorized",
        "send a valid, unrevoked token as 'Authorization: Bearer <token>'",
        headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
    )


async def _token(app: web.Application, header: str) -> Token | None:
    """The live token an Authorization header carries, or None."""
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or len(secret) > MAX_SECRET_CHARACTERS:
        return None

    def lookup(store: PolicyStore) -> Token | None:
        with store.snapshot() as db:
            return authenticate(db, secret)

    return await app[STORE].authenticate(lookup)
