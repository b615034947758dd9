"""Each role tried against each class of endpoint, and the teacher's limits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import LiveApi, problem, seed

from edufilter.api.settings import ApiSettings

ADMIN, EDITOR, TEACHER, VIEWER = "admin", "editor", "teacher", "viewer"
EVERYONE = {ADMIN, EDITOR, TEACHER, VIEWER}
READERS = {ADMIN, EDITOR, VIEWER}
EDITORS = {ADMIN, EDITOR}


@pytest.fixture(scope="module")
def school(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveApi, dict[str, str]]]:
    live = LiveApi(tmp_path_factory.mktemp("roles"))
    seed(live)
    tokens = {
        ADMIN: live.admin,
        EDITOR: live.token(EDITOR),
        TEACHER: live.token(TEACHER, groups=("class-5a",), max_minutes=50),
        VIEWER: live.token(VIEWER),
    }
    yield live, tokens
    live.stop()


# (endpoint class, roles allowed, method, path, JSON body); {role} makes names unique per role.
ENDPOINTS: list[tuple[str, set[str], str, str, Any]] = [
    ("read policy", READERS, "GET", "/api/v1/groups", None),
    ("read one", READERS, "GET", "/api/v1/lists/games", None),
    ("create policy", EDITORS, "POST", "/api/v1/groups", {"name": "by-{role}"}),
    ("change policy", EDITORS, "PATCH", "/api/v1/groups/staff", {"title": "{role}"}),
    ("delete policy", EDITORS, "DELETE", "/api/v1/groups/nobody", None),
    ("add entry", EDITORS, "POST", "/api/v1/lists/games/entries", {"kind": "exact", "value": "{role}.example"}),
    ("read settings", READERS, "GET", "/api/v1/settings", None),
    ("change settings", {ADMIN}, "PATCH", "/api/v1/settings", {"block_page_ipv4": "198.18.0.1"}),
    ("tokens", {ADMIN}, "GET", "/api/v1/tokens", None),
    ("make token", {ADMIN}, "POST", "/api/v1/tokens", {"name": "made-by-{role}", "role": "viewer"}),
    ("audit", READERS, "GET", "/api/v1/audit", None),
    ("list overrides", EVERYONE, "GET", "/api/v1/overrides", None),
    ("make override", {ADMIN, EDITOR, TEACHER}, "POST", "/api/v1/overrides",
     {"group": "class-5a", "name": "{role}.example", "minutes": 10}),
    ("check", READERS, "POST", "/api/v1/check", {"target": "example.org", "client": {"address": "198.18.5.7"}}),
    ("status", READERS, "GET", "/api/v1/status", None),
    ("stats", READERS, "GET", "/api/v1/stats", None),
    ("events", READERS, "GET", "/api/v1/events", None),
    ("metrics", READERS, "GET", "/metrics", None),
    ("apply", EDITORS, "POST", "/api/v1/apply", None),
    ("uploads", READERS, "GET", "/api/v1/uploads", None),
    ("openapi", EVERYONE, "GET", "/api/openapi.json", None),
    ("whoami", EVERYONE, "GET", "/api/v1/whoami", None),
]


def _fill(value: Any, role: str) -> Any:
    if isinstance(value, str):
        return value.replace("{role}", role)
    if isinstance(value, dict):
        return {key: _fill(item, role) for key, item in value.items()}
    return value


@pytest.mark.parametrize("role", [ADMIN, EDITOR, TEACHER, VIEWER])
@pytest.mark.parametrize(("what", "allowed", "method", "path", "body"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_role_against_endpoint(
    school: tuple[LiveApi, dict[str, str]], role: str, what: str, allowed: set[str], method: str, path: str, body: Any
) -> None:
    api, tokens = school
    headers = {"If-Match": "*"} if method in ("PUT", "PATCH", "DELETE") else {}
    response = api.call(method, path, token=tokens[role], json=_fill(body, role), headers=headers)
    if role in allowed:
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text
    else:
        assert "may not" in problem(response, 403)["detail"]


@pytest.mark.parametrize(("what", "allowed", "method", "path", "body"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_no_token_no_entry(
    school: tuple[LiveApi, dict[str, str]], what: str, allowed: set[str], method: str, path: str, body: Any
) -> None:
    api, _ = school
    response = api.call(method, path, token=None, json=body)
    assert problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_only_healthz_answers_without_a_token(school: tuple[LiveApi, dict[str, str]]) -> None:
    api, _ = school
    assert api.get("/healthz", token=None).json() == {"status": "ok"}
    problem(api.get("/api/v1/no-such-thing", token=None), 401)  # no probing of paths without a token
    problem(api.get("/api/v1/no-such-thing"), 404)


def test_teacher_overrides_only_their_groups_within_their_maximum(school: tuple[LiveApi, dict[str, str]]) -> None:
    api, tokens = school
    teacher = tokens[TEACHER]
    mine = api.post("/api/v1/overrides", {"group": "class-5a", "name": "maths.example", "minutes": 50},
                    token=teacher)
    assert mine.status_code == 201, mine.text
    assert mine.json()["created_by"] == api.get("/api/v1/whoami", token=teacher).json()["name"]
    problem(api.post("/api/v1/overrides", {"group": "staff", "name": "a.example", "minutes": 5}, token=teacher), 403)
    too_long = problem(api.post("/api/v1/overrides", {"group": "class-5a", "name": "a.example", "minutes": 51},
                                token=teacher), 422)
    assert too_long["invalid_params"] == [
        {"name": "minutes", "reason": "is more than this token's maximum of 50 minutes"}]

    theirs = api.post("/api/v1/overrides", {"group": "staff", "name": "staff.example", "minutes": 500}).json()
    seen = api.get("/api/v1/overrides", token=teacher).json()["items"]
    assert {item["group"] for item in seen} == {"class-5a"}
    problem(api.get(f"/api/v1/overrides/{theirs['id']}", token=teacher), 403)
    problem(api.call("DELETE", f"/api/v1/overrides/{theirs['id']}", token=teacher, headers={"If-Match": "*"}), 403)
    assert api.change("DELETE", mine.headers["Location"], token=teacher).status_code == 204
    problem(api.get("/api/v1/groups", token=teacher), 403)
    expires = datetime.fromisoformat(theirs["expires_at"]) - datetime.fromisoformat(theirs["starts_at"])
    assert expires.total_seconds() == 500 * 60  # an admin token has no per-token maximum


def test_a_teacher_ends_only_the_overrides_their_token_started(school: tuple[LiveApi, dict[str, str]]) -> None:
    api, tokens = school
    colleague = api.token(TEACHER, groups=("class-5a",), max_minutes=50)
    theirs = api.post("/api/v1/overrides", {"group": "class-5a", "name": "colleague.example", "minutes": 20},
                      token=colleague).json()
    by_admin = api.post("/api/v1/overrides", {"group": "class-5a", "name": "admin.example", "minutes": 20}).json()
    for other in (theirs, by_admin):
        refused = problem(api.call("DELETE", f"/api/v1/overrides/{other['id']}", token=tokens[TEACHER],
                                   headers={"If-Match": "*"}), 403)
        assert "only their own" in refused["detail"]
        assert api.get(f"/api/v1/overrides/{other['id']}").json()["active"]
    assert api.change("DELETE", f"/api/v1/overrides/{theirs['id']}", token=colleague).status_code == 204
    assert api.change("DELETE", f"/api/v1/overrides/{by_admin['id']}", token=tokens[EDITOR]).status_code == 204


@pytest.mark.parametrize("name", ["com", "co.uk", "localhost", "xn--p1ai", "github.io"])
def test_a_teacher_cannot_open_a_public_suffix(school: tuple[LiveApi, dict[str, str]], name: str) -> None:
    api, tokens = school
    refused = problem(api.post("/api/v1/overrides", {"group": "class-5a", "name": name, "minutes": 50},
                               token=tokens[TEACHER]), 422)
    assert "public suffix" in refused["detail"] and repr(name) in refused["detail"]
    assert refused["invalid_params"][0]["name"] == "name"
    assert name not in {item["name"] for item in api.get("/api/v1/overrides").json()["items"]}


def test_list_entries_refuse_a_public_suffix_and_say_so(school: tuple[LiveApi, dict[str, str]]) -> None:
    api, _ = school
    refused = problem(api.post("/api/v1/lists/games/entries", {"kind": "domain", "value": "co.uk"}), 422)
    assert "public suffix" in refused["detail"] and refused["invalid_params"][0]["name"] == "value"
    assert api.post("/api/v1/lists/games/entries", {"kind": "domain", "value": "bbc.co.uk"}).status_code == 201


def test_a_teacher_token_has_a_quota_and_a_rate_of_overrides(tmp_path: Path) -> None:
    api = LiveApi(tmp_path, settings=ApiSettings(port=0, teacher_active_overrides=2, teacher_overrides_per_hour=3))
    try:
        api.post("/api/v1/groups", {"name": "class-5a"})
        teacher = api.token(TEACHER, groups=("class-5a",))
        made = [api.post("/api/v1/overrides", {"group": "class-5a", "name": f"site{n}.example", "minutes": 5},
                         token=teacher) for n in range(2)]
        assert [response.status_code for response in made] == [201, 201]
        full = problem(api.post("/api/v1/overrides", {"group": "class-5a", "name": "x.example", "minutes": 5},
                                token=teacher), 409)
        assert "already holds 2 overrides" in full["detail"]
        assert api.change("DELETE", made[0].headers["Location"], token=teacher).status_code == 204
        assert api.post("/api/v1/overrides", {"group": "class-5a", "name": "y.example", "minutes": 5},
                        token=teacher).status_code == 201  # the third this hour
        api.change("DELETE", made[1].headers["Location"], token=teacher)
        too_fast = api.post("/api/v1/overrides", {"group": "class-5a", "name": "z.example", "minutes": 5},
                            token=teacher)
        assert "3 overrides in the last hour" in problem(too_fast, 429)["detail"] and too_fast.headers["Retry-After"]
        other = api.token(TEACHER, groups=("class-5a",))  # counted per token
        assert api.post("/api/v1/overrides", {"group": "class-5a", "name": "z.example", "minutes": 5},
                        token=other).status_code == 201
        for n in range(4):  # admins and editors have neither limit
            assert api.post("/api/v1/overrides", {"group": "class-5a", "name": f"a{n}.example", "minutes": 5}
                            ).status_code == 201
    finally:
        api.stop()
