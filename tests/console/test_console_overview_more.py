"""The overview's list freshness (each category's age, the last `lists update`), evasion
attempts (events of the category "evasion", from the stats) and warnings; and the API's
freshness operation it reads them from."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timedelta

from console_client import NOW, ConsoleClient, School, console, school  # noqa: F401 (fixtures)

from edufilter.policy.liststore import ListStore
from edufilter.policy.model import Action
from edufilter.policy.store import PolicyStore
from edufilter.policy.update import record_update_run
from edufilter.state import StateDir


def import_category(school: School, name: str, names: list[str], age_days: int) -> None:
    listed = school.state_dir / f"{name}.txt"
    listed.write_text("".join(f"{entry}\n" for entry in names))
    lists = ListStore.in_state_dir(school.state_dir)
    lists.import_file(listed, name)
    meta = lists.get(name).folder / "meta.json"  # type: ignore[union-attr]
    record = json.loads(meta.read_text())
    imported = NOW - timedelta(days=age_days, hours=3)
    record["imported_at"] = imported.isoformat(timespec="seconds")
    meta.write_text(json.dumps(record))


def test_the_overview_shows_freshness_evasion_and_warnings(console: ConsoleClient, school: School) -> None:
    import_category(school, "games", ["a.example", "b.example"], age_days=2)
    import_category(school, "adult", ["c.example"], age_days=9)
    record_update_run(school.state_dir, {"adult.tar.gz": "checksum mismatch"})
    assert school.events is not None
    school.events.stats.add([(NOW, "class-5a", "evasion", "block", 3, 12), (NOW, "class-6b", "evasion", "drop", 2, 2)])
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        store.add_override("class-5a", "maps.example", Action.ALLOW, NOW - timedelta(hours=2),
                           NOW - timedelta(hours=1), "ms-peeters", "lesson")
        store.add_override("class-5a", "old.example", Action.ALLOW, NOW - timedelta(days=3),
                           NOW - timedelta(days=2), "ms-peeters", "lesson")
    console.sign_in(school.secrets["viewer"])
    page = console.get("/console/overview?window=24h").text
    warnings = re.findall(r"<li>(.*?)</li>", page.split('id="warnings-heading"')[1].split("</section>")[0])
    assert "Worker 1 is restarting (4 restarts)." in warnings
    assert any(text.startswith("The override for maps.example (class-5a) expired at ") for text in warnings)
    assert not any("old.example" in text for text in warnings)  # ended more than a day ago
    assert "The list adult is 9 days old." in warnings and not any("games is" in text for text in warnings)
    assert any(text.startswith("The last lists update (") and text.endswith("failed for: adult.tar.gz.")
               for text in warnings)
    assert re.search(r'<dd class="evasion">5</dd>', page)
    rows = re.findall(r"<tr><td>(\w+)</td><td>([^<]+)</td><td>([^<]+)</td></tr>", page.split('class="freshness"')[1])
    assert rows == [("adult", "9 d 3 h", "1"), ("games", "2 d 3 h", "2")]


def test_with_nothing_imported_the_overview_says_so(console: ConsoleClient, school: School) -> None:
    console.sign_in(school.secrets["viewer"])
    page = console.get("/console/overview").text
    assert "No categories imported." in page and "<dt>Last lists update</dt><dd>never</dd>" in page
    assert '<dd class="evasion">0</dd>' in page


def test_the_freshness_operation_reads_the_list_store_and_the_last_update(console: ConsoleClient,
                                                                          school: School) -> None:
    import_category(school, "games", ["a.example"], age_days=1)
    record_update_run(school.state_dir, {})
    assert (StateDir(school.state_dir).last_update).exists()
    (StateDir(school.state_dir).last_update).write_text("not json")  # a damaged record reads as never
    answer = console.get("/api/v1/freshness", headers={"Authorization": f"Bearer {school.secrets['viewer']}"})
    body = json.loads(answer.text)
    assert answer.status == 200 and body["last_update"] is None
    [games] = body["categories"]
    assert (games["name"], games["names"]) == ("games", 1) and 86400 <= games["age_seconds"] < 2 * 86400 + 60
    os.remove(StateDir(school.state_dir).last_update)
    record_update_run(school.state_dir, {})
    body = json.loads(console.get("/api/v1/freshness",
                                  headers={"Authorization": f"Bearer {school.secrets['viewer']}"}).text)
    recorded_at = datetime.fromisoformat(body["last_update"]["at"]).timestamp()
    assert body["last_update"]["failed"] == [] and abs(time.time() - recorded_at) < 60
    teacher = console.get("/api/v1/freshness", headers={"Authorization": f"Bearer {school.secrets['ms-peeters']}"})
    assert teacher.status == 403
