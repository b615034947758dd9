"""Bearer tokens of the admin API, kept in the policy database (table api_tokens).

A token is 32 random bytes (secrets.token_urlsafe), shown once when made; the database keeps
only its SHA-256 digest. A fast, unsalted hash is enough here because the secret is not a
password: with 256 bits of entropy no dictionary or brute-force search can find a preimage,
however fast the hash, and an unsalted digest can be looked up by index on every request.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from edufilter.errors import PolicyError
from edufilter.policy.model import check_id

SECRET_PREFIX = "eft_"  # lets secret scanners and people recognise an edufilter token
DEFAULT_TEACHER_MAX_MINUTES = 60
MAX_OVERRIDE_MINUTES = 30 * 24 * 60  # overrides are temporary: a month at most for anyone


class Role(StrEnum):
    ADMIN = "admin"  # everything, tokens and general settings included
    EDITOR = "editor"  # policy objects
    TEACHER = "teacher"  # overrides of the token's groups, up to its max_minutes
    VIEWER = "viewer"  # reads everything but tokens; changes nothing


EVERY_ROLE = frozenset(Role)


@dataclass(frozen=True, slots=True)
class Token:
    """A token as stored, without its secret."""

    name: str
    role: Role
    groups: tuple[str, ...] = ()  # the groups a teacher token may override
    max_minutes: int | None = None  # longest override this token may make
    created_at: str = ""
    revoked_at: str | None = None
    site: str | None = None  # multi-site mode: the one site it may act on; None: the school, or the group

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role.value,
            "groups": list(self.groups),
            "max_minutes": self.max_minutes,
            "site": self.site,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def _now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_COLUMNS = "name, role, groups, max_minutes, created_at, revoked_at, site"


def _token(row: tuple[Any, ...]) -> Token:
    name, role, groups, max_minutes, created_at, revoked_at, site = row
    return Token(name, Role(role), tuple(json.loads(groups)), max_minutes, created_at, revoked_at, site)


def create_token(
    db: sqlite3.Connection,
    name: str,
    role: Role | str,
    groups: tuple[str, ...] = (),
    max_minutes: int | None = None,
    site: str | None = None,
    group_exists: Callable[[str], bool] | None = None,
) -> tuple[Token, str]:
    """Store a new token and return it with its secret, which is not kept anywhere.

    site limits it to one site (multi-site mode); group_exists tells which groups a teacher
    token may name (default: the groups of this database's policy)."""
    check_id("token name", name)
    try:
        role = Role(role)
    except ValueError:
        raise PolicyError(f"token.role {role!r} is not one of {', '.join(Role)}") from None
    if find_token(db, name) is not None:
        raise PolicyError(f"token.name {name!r} is taken (revoked tokens keep their name)")
    if role is Role.TEACHER:
        if not groups:
            raise PolicyError("token.groups: a teacher token needs the groups it may override")
        max_minutes = DEFAULT_TEACHER_MAX_MINUTES if max_minutes is None else max_minutes
    elif groups:
        raise PolicyError("token.groups: only teacher tokens are limited to groups")
    def stored_group(group: str) -> bool:
        return db.execute("SELECT 1 FROM groups WHERE name = ?", (group,)).fetchone() is not None

    for group in groups:
        if not (group_exists or stored_group)(group):
            raise PolicyError(f"token.groups: group {group!r} does not exist")
    if max_minutes is not None and not 1 <= max_minutes <= MAX_OVERRIDE_MINUTES:
        raise PolicyError(f"token.max_minutes {max_minutes!r} is not in 1..{MAX_OVERRIDE_MINUTES}")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    token = Token(name, role, tuple(dict.fromkeys(groups)), max_minutes, _now_text(), site=site)
    db.execute(
        f"INSERT INTO api_tokens (secret_sha256, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            secret_digest(secret),
            token.name,
            token.role.value,
            json.dumps(list(token.groups)),
            token.max_minutes,
            token.created_at,
            None,
            token.site,
        ),
    )
    return token, secret


def revoke_token(db: sqlite3.Connection, name: str) -> Token:
    """Mark a token revoked (it stays listed for the audit trail); returns it revoked."""
    token = find_token(db, name)
    if token is None:
        raise PolicyError(f"token {name!r} does not exist")
    if token.revoked_at is not None:
        raise PolicyError(f"token {name!r} was already revoked at {token.revoked_at}")
    db.execute("UPDATE api_tokens SET revoked_at = ? WHERE name = ?", (_now_text(), name))
    revoked = find_token(db, name)
    assert revoked is not None
    return revoked


def find_token(db: sqlite3.Connection, name: str) -> Token | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE name = ?", (name,)).fetchone()
    return None if row is None else _token(row)


def authenticate(db: sqlite3.Connection, secret: str) -> Token | None:
    """The live (not revoked) token with this secret, or None."""
    row = db.execute(
        f"SELECT {_COLUMNS} FROM api_tokens WHERE secret_sha256 = ? AND revoked_at IS NULL",
        (secret_digest(secret),),
    ).fetchone()
    return None if row is None else _token(row)


def live_admin_count(db: sqlite3.Connection) -> int:
    """Live admin tokens of the whole school (or group): site admins do not count."""
    return int(db.execute(
        "SELECT count(*) FROM api_tokens WHERE role = ? AND revoked_at IS NULL AND site IS NULL", (Role.ADMIN.value,)
    ).fetchone()[0])


def list_tokens(db: sqlite3.Connection) -> list[Token]:
    return [_token(row) for row in db.execute(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at, name")]
