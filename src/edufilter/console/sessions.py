"""The console's server-side sessions: a random id in a cookie, only its SHA-256 kept here.

A session remembers the token's name, not its secret: every request looks the token up again,
so revoking it (or changing its role) takes effect on the next page. Sessions live in memory:
a restart of edufilter signs everyone out, which is acceptable for a few coordinators and
teachers and keeps no session secret on disk.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

IDLE_SECONDS = 30 * 60  # a console left open between two lessons signs out
LIFETIME_SECONDS = 12 * 60 * 60  # a school day at most, however active
MAX_SESSIONS = 10_000  # bounded memory; the oldest-used session goes first


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(slots=True)
class Session:
    token_name: str
    csrf: str  # the hidden field every form of this session carries
    created: float
    last_seen: float
    notice: str | None = None  # shown once on the next page (after a change)


class SessionStore:
    def __init__(
        self,
        idle: float = IDLE_SECONDS,
        lifetime: float = LIFETIME_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def start(self, token_name: str) -> tuple[str, Session]:
        """A new session for a signed-in token: its id (for the cookie only) and its state."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(token_name, secrets.token_urlsafe(32), now, now)
        self._sessions[digest(session_id)] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id, session

    def find(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown, idle too long or too old)."""
        if not session_id:
            return None
        key = digest(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self.idle or now - session.created > self.lifetime:
            del self._sessions[key]
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(digest(session_id), None)

    def end_for_token(self, token_name: str) -> None:
        """Sign a token out everywhere (it was revoked)."""
        for key in [key for key, session in self._sessions.items() if session.token_name == token_name]:
            del self._sessions[key]

    def __len__(self) -> int:
        return len(self._sessions)


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())
