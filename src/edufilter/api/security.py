"""Bearer-token authentication, role checks and throttling of failed authentication."""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from edufilter.api.context import METRICS, STORE
from edufilter.api.operations import TOKEN, Operation
from edufilter.api.problems import Handler, Problem
from edufilter.api.tokens import EVERY_ROLE, Token, authenticate
from edufilter.policy.store import PolicyStore

OPERATIONS = web.AppKey("operations", dict[AbstractRoute, Operation])
MAX_TRACKED_ADDRESSES = 10_000  # bounded memory under a spray from many addresses


class FailureThrottle:
    """Counts failed authentications per client address over a sliding window; an address
    with `limit` failures inside the window gets 429 until the oldest one ages out."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> float | None:
        """Seconds until `address` may try again, or None when it may now."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        horizon = self._clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures[0] - horizon if len(failures) >= self.limit else None

    def failed(self, address: str) -> None:
        failures = self._failures.setdefault(address, deque(maxlen=self.limit))
        failures.append(self._clock())
        self._failures.move_to_end(address)
        while len(self._failures) > MAX_TRACKED_ADDRESSES:
            self._failures.popitem(last=False)


THROTTLE = web.AppKey("throttle", FailureThrottle)
_CHALLENGE = 'Bearer realm="edufilter"'
MAX_SECRET_CHARACTERS = 200  # far above a real token; anything longer is not looked up


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request but the public ones needs a live token whose role the operation allows."""
    operation = request.app[OPERATIONS].get(request.match_info.route)
    roles = EVERY_ROLE if operation is None else operation.roles  # an unknown path: any token, then 404
    if roles is None:
        return await handler(request)
    address = request.remote or "unknown"
    throttle = request.app[THROTTLE]
    wait = throttle.retry_after(address)
    if wait is not None:
        request.app[METRICS].throttled += 1
        raise Problem(
            429,
            "too-many-failures",
            "too many failed authentications from this address; wait before trying again",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    header = request.headers.get("Authorization")
    if header is None:
        raise Problem(401, "unauthorized", "this needs 'Authorization: Bearer <token>'",
                      headers={"WWW-Authenticate": _CHALLENGE})
    token = await _token(request.app, header)
    if token is None:
        throttle.failed(address)
        request.app[METRICS].auth_failures += 1
        raise Problem(
            401,
            "unauthorized",
            "send a valid, unrevoked token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
        )
    if token.role not in roles:
        raise Problem(403, "forbidden", f"a {token.role} token may not use {request.method} {request.path}")
    request[TOKEN] = token
    return await handler(request)


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
