"""A school's policy, tokens, events and status on disk, the admin API app over them, and
clients for the console: aiohttp's test client (request level) and a real listening server
(for the browser). The fixtures are here, not in a conftest.py: tests/api's modules import
theirs as `conftest`, and a second one would shadow it."""

from __future__ import annotations

import asyncio
import html
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import CookieJar, web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDictProxy

from edufilter.api.app import make_app, start_api
from edufilter.api.settings import ApiSettings
from edufilter.api.standalone import compiling_applier, image_explain
from edufilter.api.tokens import create_token
from edufilter.output.events import EventStore, Pseudonymiser
from edufilter.output.status import write_status
from edufilter.policy.model import (
    Action,
    AdminList,
    Category,
    ClientMatch,
    EntryKind,
    Group,
    ListEntry,
    Rule,
    Schedule,
    Settings,
    TargetKind,
    TimeSlot,
)
from edufilter.policy.store import Actor, PolicyStore
from edufilter.state import StateDir

NOW = datetime.now(timezone.utc).replace(second=0, microsecond=0)
CLIENT_ADDRESS = "198.18.5.7"


@dataclass
class School:
    """Groups class-5a, class-6b and guests; a category; block events and stats; a status
    file; one token per role (the teacher's for class-5a, 45 minutes at most)."""

    state_dir: Path
    secrets: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    events: EventStore | None = None

    def __post_init__(self) -> None:
        with PolicyStore(self.state_dir / "policy.sqlite") as store:
            for name, title in (("guests", "Guests"), ("class-5a", "Class 5A"), ("class-6b", "Class 6B")):
                store.add_group(Group(name, title))
            store.set_settings(Settings(timezone="UTC", default_group="guests"))
            store.add_category(Category("games", "ut1", {"en": "Games", "nl": "Spelletjes"}))
            store.add_list(AdminList("blocked", "blocked by the school",
                                     (ListEntry(EntryKind.DOMAIN, "games.example"),)))
            store.add_rule(Rule("class-5a", TargetKind.LIST, "blocked", Action.BLOCK))
            store.add_client(ClientMatch("class-5a", cidr="198.18.5.0/24"))
            store.add_schedule(Schedule("lessons", tuple(TimeSlot(day, time(8, 30), time(15, 30)) for day in range(5))))
            store.add_rule(Rule("class-6b", TargetKind.CATEGORY, "games", Action.BLOCK, "lessons"))
        self.token("admin", name="coordinator")
        self.token("editor", name="editor")
        self.token("viewer", name="viewer")
        self.token("teacher", name="ms-peeters", groups=("class-5a",), max_minutes=45)
        self.events = EventStore(StateDir(self.state_dir).events_db, None)
        pseudonyms = Pseudonymiser(self.state_dir / "keys")
        self.events.record([
            pseudonyms.block_event(time=NOW - timedelta(minutes=minutes), group=group, category=category,
                                   name=f"site{minutes}.example", destination=None, kind="sni", action="block",
                                   client_address=CLIENT_ADDRESS, worker=0, log_client_address=False)
            for minutes, group, category in ((1, "class-5a", "games"), (2, "class-5a", "games"),
                                             (3, "class-6b", None))
        ])
        self.events.stats.add([
            (NOW, "class-5a", "games", "block", 7, 30),
            (NOW, "class-6b", "games", "drop", 2, 4),
            (NOW, "class-6b", None, "block", 3, 9),
            (NOW, "guests", None, "allow", 500, 4000),  # allowed: in no chart of blocks
        ])
        write_status(self.state_dir / "run" / "status.json", {
            "updated_at": NOW,
            "daemon": {"pid": 1234, "started_at": NOW, "edufilter": "0.1.0"},
            "policy": {"version": 1, "images": {"policy": 1, "categories": 1}},
            "rules": {"backend": "nft", "table": "inet edufilter", "queued_packets": 1003},
            "queues": [
                {"worker": 0, "queue": 0, "pid": 1235, "state": "running", "restarts": 0, "packets": 1000,
                 "verdicts": {"1": 990, "2": 10}, "queue_total": 3, "queue_dropped": 0, "user_dropped": 0},
                {"worker": 1, "queue": 1, "pid": 1236, "state": "restarting", "restarts": 4, "packets": 20,
                 "verdicts": {"1": 20}, "queue_total": 0, "queue_dropped": 11, "user_dropped": 2},
            ],
            "totals": {"packets": 1020, "flows": 50, "queue_dropped": 11, "user_dropped": 2, "fail_open": 17},
            "last_reload": None,
        })

    def token(self, role: str, name: str, groups: tuple[str, ...] = (), max_minutes: int | None = None) -> str:
        with PolicyStore(self.state_dir / "policy.sqlite") as store:
            with store.audited(Actor("cli:test", "admin", "CLI", "token create"), "token", name) as change:
                token, self.secrets[name] = create_token(change.db, name, role, groups, max_minutes)
                change.after = token.to_dict()  # as the CLI does: a change with no after is a no-op
        self.roles[name] = role
        return self.secrets[name]

    def app(self, settings: ApiSettings = ApiSettings(port=0)) -> web.Application:
        return make_app(self.state_dir, compiling_applier(self.state_dir), explain=image_explain(self.state_dir),
                        event_store=self.events, settings=settings)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


@dataclass
class Page:
    status: int
    headers: CIMultiDictProxy[str]
    text: str
    url: str

    def hidden(self, name: str) -> str:
        """The value of the first hidden field with this name."""
        match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', self.text)
        assert match, f"no hidden field {name} in the page"
        return html.unescape(match[1])


class ConsoleClient:
    """aiohttp's test client driven from plain (synchronous) tests; keeps cookies like a browser."""

    def __init__(self, app: web.Application) -> None:
        async def start() -> TestClient[web.Request, web.Application]:
            client = TestClient(TestServer(app), cookie_jar=CookieJar(unsafe=True))
            await client.start_server()
            return client

        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(start())
        self.app = app

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Page:
        async def send() -> Page:
            async with self.client.request(method, path, **kwargs) as response:
                return Page(response.status, response.headers, await response.text(), str(response.url))

        return self.loop.run_until_complete(send())

    def get(self, path: str, **kwargs: Any) -> Page:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict[str, str], **kwargs: Any) -> Page:
        return self.request("POST", path, data=form, **kwargs)

    def sign_in(self, secret: str) -> Page:
        form = self.get("/console/sign-in")
        return self.post("/console/sign-in", {"csrf": form.hidden("csrf"), "token": secret})

    def cookie(self, name: str) -> Any:
        return next((cookie for cookie in self.client.session.cookie_jar if cookie.key == name), None)


class LiveConsole:
    """The API app listening on 127.0.0.1 (a port the kernel picks) in a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="console", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"the console did not start: {self._error}")

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.runner = self.loop.run_until_complete(start_api(self.app))
        except BaseException as error:
            self._error = error
            self._ready.set()
            return
        host, port = self.runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def school(tmp_path: Path) -> Iterator[School]:
    made = School(tmp_path)
    yield made
    made.close()


@pytest.fixture
def console(school: School) -> Iterator[ConsoleClient]:
    client = ConsoleClient(school.app())
    yield client
    client.close()
