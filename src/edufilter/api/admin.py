"""Handlers of the API's own administration: tokens, the caller's token, the audit log, and
applying the stored policy again."""

from __future__ import annotations

import sqlite3
from datetime import timezone

from aiohttp import web

from edufilter.api import views
from edufilter.api.context import APPLIER, STORE
from edufilter.api.operations import Call, Change, json_response, no_content, paginate, path_of
from edufilter.api.problems import Problem
from edufilter.api.tokens import Role, create_token, find_token, list_tokens, live_admin_count, revoke_token
from edufilter.api.validation import checked_date_time
from edufilter.api.views import Row
from edufilter.policy.store import PolicyStore


def _token_row(db: sqlite3.Connection, name: str) -> Row | None:
    token = find_token(db, name)
    return None if token is None else token.to_dict()


async def list_token_handler(call: Call) -> web.StreamResponse:
    rows = await call.read(lambda db: [token.to_dict() for token in list_tokens(db)])
    return json_response(paginate(rows, call.query))


async def get_token(call: Call) -> web.StreamResponse:
    name = call.params["name"]
    return json_response(await call.read_one("token", name, lambda db: _token_row(db, name)))


async def create_token_handler(call: Call) -> web.StreamResponse:
    body = call.body
    secret = ""

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
        nonlocal secret
        _, secret = create_token(
            db, body["name"], body["role"], tuple(body.get("groups", ())), body.get("max_minutes")
        )

    change = Change("token", body["name"], lambda db: _token_row(db, body["name"]), write, create=True)
    row = await call.change(change, apply=False)  # tokens are not policy: nothing to compile
    assert row is not None
    return json_response({**row, "token": secret}, 201, location=path_of("tokens", body["name"]))


async def revoke_token_handler(call: Call) -> web.StreamResponse:
    await call.change(revoke_change(call.params["name"]), apply=False)
    return no_content()


def revoke_change(name: str) -> Change:
    """Revoke the token by that name, unless it is revoked already or the last live admin."""

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
        assert before is not None
        if before["revoked_at"] is not None:
            raise Problem(409, "revoked", f"token {name} was already revoked at {before['revoked_at']}")
        if before["role"] == Role.ADMIN and before["site"] is None and live_admin_count(db) == 1:
            raise Problem(409, "last-admin", f"token {name} is the last live admin token: revoking it would leave "
                          "no one able to manage tokens; make another admin token first")
        revoke_token(db, name)

    return Change("token", name, lambda db: _token_row(db, name), write)


async def whoami(call: Call) -> web.StreamResponse:
    assert call.token is not None
    return json_response(call.token.to_dict())


async def read_audit(call: Call) -> web.StreamResponse:
    limit = call.query["limit"]
    filters: dict[str, str] = {name: call.query[name] for name in ("kind", "object_id", "token") if name in call.query}
    if "since" in call.query:
        # Stored times are UTC with microseconds, so they compare as text in time order.
        since = checked_date_time(call.query["since"])
        filters["since"] = since.astimezone(timezone.utc).isoformat(timespec="microseconds")
    cursor = call.query.get("cursor")
    assert call.token is not None
    # Multi-site mode: a site's token reads its site's changes only (the group's API may ask for one).
    site = call.token.site or call.query.get("site")
    if site is not None:
        filters["site"] = site
    # The audit shows no more than the role may read: tokens are an admin's alone.
    hidden = () if call.token.role is Role.ADMIN else ("token",)
    rows = await call.read(lambda db: views.audit(db, filters, limit + 1, int(cursor) if cursor else None, hidden))
    following = str(rows[limit - 1]["id"]) if len(rows) > limit else None
    return json_response({"items": rows[:limit], "next_cursor": following, "total": None})


async def apply_policy(call: Call) -> web.StreamResponse:
    """Apply the stored policy again, e.g. after a failed apply was fixed."""
    stored = await call.app[STORE].run(lambda store: store.version)
    return json_response({"live_version": await call.app[APPLIER].apply(stored)})
