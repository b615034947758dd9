"""A real admin API listening on 127.0.0.1 (port chosen by the kernel) in a thread of its
own, and plain HTTP clients (requests) talking to it."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from edufilter.api.app import make_app, start_api
from edufilter.api.settings import ApiSettings
from edufilter.api.standalone import compiling_applier, image_explain
from edufilter.api.tokens import create_token
from edufilter.policy.model import Category, Group
from edufilter.policy.store import Actor, PolicyStore


class CountingApplier:
    """The real applier (compile policy.img, signal a daemon if one runs), counting its calls."""

    def __init__(self, state_dir: Path) -> None:
        self.apply = compiling_applier(state_dir)
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        return await self.apply()


class LiveApi:
    """The API served in a background thread; `call` sends one request with a token."""

    def __init__(self, state_dir: Path, settings: ApiSettings | None = None, **factory: Any) -> None:
        self.state_dir = state_dir
        self.database = state_dir / "policy.sqlite"
        with PolicyStore(self.database) as store:
            store.add_group(Group("guests", "Guests"))  # settings.default_group: a policy compiles with it
        self.applier = CountingApplier(state_dir)
        self._token_numbers = itertools.count(1)
        self.settings = settings or ApiSettings(port=0)
        factory.setdefault("explain", image_explain(state_dir))
        self.app = make_app(state_dir, self.applier, settings=self.settings, **factory)
        self.admin = self.token("admin", name="admin")
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="admin-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"the API did not start: {self._error}")
        self.session = requests.Session()

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.runner = self.loop.run_until_complete(start_api(self.app))
        except BaseException as error:
            self._error = error
            self._ready.set()
            return
        host, port = self.runner.addresses[0][:2]
        scheme = "https" if self.settings.tls_cert else "http"
        self.base_url = f"{scheme}://{host}:{port}"
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def stop(self) -> None:
        self.session.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def token(self, role: str, groups: tuple[str, ...] = (), max_minutes: int | None = None,
              name: str | None = None) -> str:
        """A new token's secret, made the way `edufilter token create` makes it."""
        name = name or f"{role}-{next(self._token_numbers)}"
        with PolicyStore(self.database) as store:
            with store.audited(Actor("cli:test", "admin", "CLI", "token create"), "token", name) as change:
                return create_token(change.db, name, role, groups, max_minutes)[1]

    def call(self, method: str, path: str, token: str | None = "admin", **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        secret = self.admin if token == "admin" else token
        if secret is not None:
            headers.setdefault("Authorization", f"Bearer {secret}")
        return self.session.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.call("POST", path, json=body, **kwargs)

    def change(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        """PUT, PATCH or DELETE with the If-Match of the resource as it is now."""
        etag = self.get(path, token=kwargs.get("token", "admin")).headers["ETag"]
        headers = {"If-Match": etag, **kwargs.pop("headers", {})}
        return self.call(method, path, json=body, headers=headers, **kwargs)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveApi]:
    live = LiveApi(tmp_path)
    yield live
    live.stop()


def seed(api: LiveApi) -> None:
    """A small school: three groups, a list, a category, a schedule."""
    for name in ("class-5a", "staff"):
        assert api.post("/api/v1/groups", {"name": name, "title": name.upper()}).status_code == 201
    assert api.post("/api/v1/lists", {"name": "games", "description": "games"}).status_code == 201
    assert api.post("/api/v1/lists/games/entries", {"kind": "domain", "value": "games.example"}).status_code == 201
    assert api.post("/api/v1/schedules", {"name": "lessons", "slots": [
        {"weekday": day, "start": "08:30", "end": "15:30"} for day in range(5)
    ]}).status_code == 201
    with PolicyStore(api.database) as store:
        store.add_category(Category("adult", "ut1", {"en": "Adult", "fr": "Adulte", "nl": "Volwassenen"}))


def problem(response: requests.Response, status: int) -> dict[str, Any]:
    """The problem document of a refused request, checked for its form."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"].startswith("urn:edufilter:problem:")
    return body


def conforms(api: LiveApi, response: requests.Response, schema_name: str) -> Any:
    """The response body, checked against a component schema of the served OpenAPI document."""
    document = api.get("/api/openapi.json").json()
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    body = response.json()
    validator.validate(body)
    return body
