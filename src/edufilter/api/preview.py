"""A change's preview: what a few names get now and what they would get after a change to a
group's rules, a schedule or a client match, explained as `check` explains, saving nothing.
The console shows it before every policy change is saved."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from edufilter.api import schemas, views
from edufilter.api.context import STATE_DIR
from edufilter.api.observe import CHECKS, check_moment, client_identity, engine_explain
from edufilter.api.operations import Call, json_response, not_found, with_defaults
from edufilter.api.problems import Problem
from edufilter.api.resources import (
    SCHEDULES,
    match_of,
    refuse_misleading_network,
    rule_model,
)
from edufilter.api.validation import (
    Invalid,
    array,
    boolean,
    choice,
    component,
    integer,
    nullable,
    obj,
    slug,
    text,
)
from edufilter.policy.check import open_assumed
from edufilter.policy.model import Action, ClientMatch, Policy, TargetKind

MAX_TARGETS = 5

RULE_ITEM = obj(
    {"target_kind": choice(TargetKind), "target": slug("category or list name"), "action": choice(Action),
     "schedule": nullable(slug("schedule name")), "enabled": boolean(default=True)},
    required=["target_kind", "target", "action"],
)
PREVIEW_REQUEST = component(
    "PreviewRequest",
    obj(
        {
            "targets": array(text(2048, 1), MAX_TARGETS, minItems=1, description="host names or URLs"),
            "client": schemas.CHECK_CLIENT,
            "at": schemas.CHECK_AT,
            "change": obj(
                {
                    "rules": obj({"group": slug("group name"), "rules": array(RULE_ITEM, 1000)},
                                 required=["group", "rules"], description="all of a group's rules, in their new order"),
                    "schedule": schemas.SCHEDULE.create,
                    "client": obj({"id": integer(1), "match": schemas.CLIENT.create},
                                  description="id alone: that match removed; match alone: a match added; "
                                              "both: the match with that id replaced"),
                },
                description="exactly one of: rules (a group's, as a whole), schedule (as a whole, new or "
                            "replacing the one of its name), client (a match added, changed or removed)",
            ),
        },
        required=["targets", "client", "change"],
    ),
)
PREVIEW = component(
    "Preview",
    obj(
        {"items": array(obj({"target": text(2048), "before": schemas.EXPLANATION, "after": schemas.EXPLANATION},
                            required=["target", "before", "after"]), MAX_TARGETS)},
        required=["items"],
    ),
)

Assume = Callable[[Policy], Policy]


async def preview(call: Call) -> web.StreamResponse:
    explain = engine_explain(call.app)
    identity, at = client_identity(call.body["client"]), check_moment(call.body)
    assume = await _assumption(call, call.body["change"])
    state_dir = call.app[STATE_DIR]
    targets = call.body["targets"]

    def work() -> list[dict[str, Any]]:
        after = open_assumed(state_dir, at, assume)
        return [{"target": target, "before": explain(target, identity, at).to_dict(),
                 "after": after.explain(target, identity, at).to_dict()} for target in targets]

    return json_response({"items": await call.app[CHECKS].run(work)})


async def _assumption(call: Call, change: dict[str, Any]) -> Assume:
    given = sorted(change)
    if len(given) != 1:
        message = "give exactly one of rules, schedule, client"
        raise Problem(422, "validation-error", message, invalid_params=[Invalid("change", message)])
    if "rules" in change:
        group = change["rules"]["group"]
        rules = tuple(rule_model(group, with_defaults(item, RULE_ITEM)) for item in change["rules"]["rules"])
        return lambda policy: replace(policy, rules=tuple(r for r in policy.rules if r.group != group) + rules)
    if "schedule" in change:
        body = with_defaults(change["schedule"], schemas.SCHEDULE.create)
        name = body.pop("name")
        schedule = await call.read(lambda db: SCHEDULES.model(name, body, db))
        return lambda policy: replace(
            policy, schedules=tuple(s for s in policy.schedules if s.name != name) + (schedule,))
    client_id, match = change["client"].get("id"), change["client"].get("match")
    if client_id is None and match is None:
        message = "give the id of the match changed, the match added, or both"
        raise Problem(422, "validation-error", message, invalid_params=[Invalid("change.client", message)])
    removed: ClientMatch | None = None
    if client_id is not None:
        row = await call.read(lambda db: views.client(db, client_id))
        if row is None:
            raise not_found("client", client_id)
        removed = match_of(row)
    added: tuple[ClientMatch, ...] = ()
    if match is not None:
        refuse_misleading_network(match.get("cidr"))
        added = (match_of(with_defaults(match, schemas.CLIENT.create)),)
    return lambda policy: replace(policy, clients=tuple(m for m in policy.clients if m != removed) + added)
