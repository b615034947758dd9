"""The overview's numbers are read once per period for everyone of a role and language, and
again at once after a policy change; the workers' state is read for every page."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from console_client import CLIENT_ADDRESS, NOW, ConsoleClient, School, console, school  # noqa: F401 (fixtures)

from edufilter.console.overview_cache import OverviewCache
from edufilter.output.events import Pseudonymiser
from edufilter.output.status import write_status


def test_people_asking_at_once_or_within_the_period_share_one_read() -> None:
    reads: list[str] = []

    async def read() -> dict[str, object]:
        reads.append("read")
        await asyncio.sleep(0.01)
        return {"number": len(reads)}

    async def scenario() -> None:
        cache = OverviewCache(fresh_seconds=0.2)
        at_once = await asyncio.gather(*(cache.get("24h", read) for _ in range(20)))
        assert at_once == [{"number": 1}] * 20 and len(reads) == 1
        assert await cache.get("7d", read) == {"number": 2}  # another key, its own read
        await asyncio.sleep(0.25)
        assert await cache.get("24h", read) == {"number": 3}

    asyncio.run(scenario())


def test_the_overview_shows_new_events_after_the_period_or_a_policy_change(console: ConsoleClient,
                                                                         school: School) -> None:
    console.sign_in(school.secrets["viewer"])
    assert "late.example" not in console.get("/console/overview").text
    assert school.events is not None
    school.events.record([Pseudonymiser(school.state_dir / "keys").block_event(
        time=NOW + timedelta(seconds=1), group="class-5a", category="games", name="late.example", destination=None,
        kind="sni", action="block", client_address=CLIENT_ADDRESS, worker=0, log_client_address=False)])
    status = json.loads((school.state_dir / "run" / "status.json").read_text())
    status["queues"][0]["state"] = "stopped"
    write_status(school.state_dir / "run" / "status.json", status)
    page = console.get("/console/overview").text
    assert "late.example" not in page  # the same period's numbers
    assert '<td class="warning">stopped</td>' in page  # the workers' state is read for each page
    added = console.request("POST", "/api/v1/lists/blocked/entries", json={"kind": "domain", "value": "x.example"},
                            headers={"Authorization": f"Bearer {school.secrets['editor']}"})
    assert added.status == 201
    assert "late.example" in console.get("/console/overview").text  # a new policy version reads again
