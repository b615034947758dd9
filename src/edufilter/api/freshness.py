"""How fresh the category lists are: each imported category's age and size, and when
`lists update` last ran (and what failed then)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web

from edufilter.api.context import STATE_DIR
from edufilter.api.operations import Call, json_response
from edufilter.api.validation import array, component, date_time, integer, nullable, obj, slug, text
from edufilter.policy.liststore import ListStore
from edufilter.policy.update import last_update_run

FRESHNESS = component(
    "ListFreshness",
    obj(
        {
            "categories": array(obj(
                {"name": slug("category name"), "source": text(200), "imported_at": date_time(),
                 "age_seconds": integer(), "names": integer()},
                required=["name", "source", "imported_at", "age_seconds", "names"]), max_items=100_000),
            "last_update": nullable(obj(
                {"at": date_time(), "failed": array(text(300), description="archives or steps that failed")},
                required=["at", "failed"], description="the last `lists update` run; null: never")),
        },
        required=["categories", "last_update"],
    ),
)


def freshness(state_dir: Path, now: datetime) -> dict[str, Any]:
    categories = [
        {"name": category.name, "source": category.source, "imported_at": category.imported_at.isoformat(),
         "age_seconds": max(0, int((now - category.imported_at).total_seconds())), "names": category.counts.names}
        for category in ListStore.in_state_dir(state_dir).categories()
    ]
    last = last_update_run(state_dir)
    return {"categories": categories,
            "last_update": None if last is None else {"at": last["at"], "failed": list(last.get("failed") or [])}}


async def list_freshness(call: Call) -> web.StreamResponse:
    now = datetime.now(timezone.utc)
    return json_response(await asyncio.to_thread(freshness, call.app[STATE_DIR], now))
