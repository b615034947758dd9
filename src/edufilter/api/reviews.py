"""Review requests from the block page ("this should not be blocked"): the queue's rows, and
the handlers that list, approve (as a time-limited override or a permanent list entry) and
decline them. Editors handle any group's requests, a teacher those of the token's groups."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from enum import StrEnum

from aiohttp import web

from edufilter.api.operations import Call, Change, json_response, paginate, with_defaults
from edufilter.api.problems import Problem
from edufilter.api.resources import refuse_teacher_over_quota, refuse_teacher_over_rate
from edufilter.api.security import OVERRIDE_RATE
from edufilter.api.tokens import MAX_OVERRIDE_MINUTES, Role
from edufilter.api.validation import (
    Invalid,
    choice,
    component,
    date_time,
    integer,
    nullable,
    obj,
    page,
    slug,
    text,
)
from edufilter.api.views import Row
from edufilter.policy.model import Action, EntryKind, ListEntry
from edufilter.policy.store import Actor, PolicyStore


class ReviewState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"


class Approval(StrEnum):
    OVERRIDE = "override"  # a time-limited allow override for the request's group
    ALLOW_LIST = "allow_list"  # a permanent domain entry in a school list (editors only)


REVIEW_REQUEST = component(
    "ReviewRequest",
    obj(
        {
            "id": integer(1),
            "created_at": date_time(),
            "name": text(253, description="the blocked site"),
            "category": text(64, description="why it was blocked (category or list)"),
            "group": text(64),
            "reference": text(8, description="the code on the block page, to find the event"),
            "reason": text(500, description="the pupil's own words, if any"),
            "state": choice(ReviewState),
            "decision": nullable(choice(Approval)),
            "decision_target": nullable(text(64, description="the override's id or the list's name")),
            "decided_at": nullable(date_time()),
            "decided_by": nullable(text(200)),
        },
        required=["id", "created_at", "name", "category", "group", "reference", "reason", "state"],
    ),
)
REVIEW_REQUEST_PAGE = page(REVIEW_REQUEST, "ReviewRequestPage")
REVIEW_APPROVAL = component(
    "ReviewApproval",
    obj(
        {
            "as": choice(Approval, default=Approval.OVERRIDE.value),
            "minutes": integer(1, MAX_OVERRIDE_MINUTES, default=50,
                               description="for an override: from now; at most the token's max_minutes"),
            "list": slug("for an allow-list entry: the school list to add the site to"),
        },
    ),
)
REVIEW_QUERY = {"state": choice(ReviewState), "group": slug("group name")}

_COLUMNS = ("id, created_at, name, category, group_name, reference, reason, state, decision, decision_target,"
            " decided_at, decided_by")
_FIELDS = ("id", "created_at", "name", "category", "group", "reference", "reason", "state", "decision",
           "decision_target", "decided_at", "decided_by")


def review_requests(db: sqlite3.Connection) -> list[Row]:
    """Every request, newest first."""
    return [dict(zip(_FIELDS, row)) for row in db.execute(f"SELECT {_COLUMNS} FROM review_requests ORDER BY id DESC")]


def review_request(db: sqlite3.Connection, request_id: int) -> Row | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM review_requests WHERE id = ?", (request_id,)).fetchone()
    return None if row is None else dict(zip(_FIELDS, row))


def _may_review(call: Call, group: str) -> None:
    token = call.token
    assert token is not None
    if token.role is Role.TEACHER and group not in token.groups:
        raise Problem(403, "forbidden", f"this token may not handle requests for group {group!r}")


def _pending(row: Row) -> None:
    if row["state"] != ReviewState.PENDING:
        raise Problem(409, "already-decided", f"review request {row['id']} is already {row['state']}")


async def list_review_requests(call: Call) -> web.StreamResponse:
    rows = await call.read(review_requests)
    assert call.token is not None
    if call.token.role is Role.TEACHER:
        rows = [row for row in rows if row["group"] in call.token.groups]
    return json_response(paginate(rows, call.query, ("name", "reason", "reference")))


async def get_review_request(call: Call) -> web.StreamResponse:
    request_id = call.params["id"]
    row = await call.read_one("review request", request_id, lambda db: review_request(db, request_id))
    _may_review(call, str(row["group"]))
    return json_response(row)


async def approve_review_request(call: Call) -> web.StreamResponse:
    request_id, token, now = call.params["id"], call.token, datetime.now(timezone.utc)
    assert token is not None
    body = with_defaults(call.body or {}, REVIEW_APPROVAL)
    approval, minutes = Approval(body["as"]), int(body["minutes"])
    if approval is Approval.OVERRIDE and token.max_minutes is not None and minutes > token.max_minutes:
        reason = f"is more than this token's maximum of {token.max_minutes} minutes"
        raise Problem(422, "invalid-change", f"minutes {reason}", invalid_params=[Invalid("minutes", reason)])
    teacher = token.role is Role.TEACHER
    if teacher and approval is Approval.OVERRIDE:  # the limits of the teacher page hold here too
        refuse_teacher_over_rate(call)
    if approval is Approval.ALLOW_LIST:
        if teacher:
            raise Problem(403, "forbidden", "only an editor may add a site to a school list; approve as an override")
        if "list" not in body:
            reason = "is required to approve as an allow-list entry"
            raise Problem(422, "invalid-change", f"list {reason}", invalid_params=[Invalid("list", reason)])

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
        assert before is not None
        if approval is Approval.OVERRIDE:
            if teacher:
                refuse_teacher_over_quota(call, db, now)
            target = str(store.add_override(
                before["group"], before["name"], Action.ALLOW, now, now + timedelta(minutes=minutes),
                created_by=token.name, reason=f"review request {before['id']} ({before['reference']})",
            ).id)
        else:
            target = body["list"]
            entry = ListEntry(EntryKind.DOMAIN, before["name"])
            if db.execute("SELECT 1 FROM list_entries WHERE list = ? AND kind = ? AND value = ?",
                          (target, entry.kind.value, entry.value)).fetchone() is None:
                store.add_list_entry(target, entry)
        store.decide_review_request(before["id"], ReviewState.APPROVED, approval, target, token.name, now)

    decided = await call.change(_decision(call, request_id, write))
    if teacher:
        call.app[OVERRIDE_RATE].record(token.name)
    return json_response(decided)


async def decline_review_request(call: Call) -> web.StreamResponse:
    request_id, token, now = call.params["id"], call.token, datetime.now(timezone.utc)
    assert token is not None

    def write(store: PolicyStore, db: sqlite3.Connection, before: Row | None) -> None:
        assert before is not None
        store.decide_review_request(before["id"], ReviewState.DECLINED, None, None, token.name, now)

    return json_response(await call.change(_decision(call, request_id, write), apply=False))


def _decision(call: Call, request_id: int, write: Callable[[PolicyStore, sqlite3.Connection, Row | None], None]
              ) -> Change:
    def guard(row: Row) -> None:
        _may_review(call, str(row["group"]))
        _pending(row)

    return Change("review_request", str(request_id), lambda db: review_request(db, request_id), write, guard=guard)


BLOCK_PAGE_ACTOR = Actor("block-page", "pupil", "POST", "/review")


def queue_review_request(store: PolicyStore, name: str, category: str, group: str, reference: str,
                         reason: str, now: datetime) -> int | None:
    """Put a block page's request in the queue, audited as the block page's; None when full."""
    with store.audited(BLOCK_PAGE_ACTOR, "review_request", reference) as change:
        request_id = store.add_review_request(name, category, group, reference, reason, now)
        if request_id is not None:
            change.object_id = str(request_id)
            change.after = review_request(change.db, request_id)
        return request_id
