"""Bad requests are refused with a problem that says why, and never reach the store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import requests
from conftest import LiveApi, problem, seed

from edufilter.api.settings import ApiSettings


def _post_raw(api: LiveApi, path: str, data: bytes, content_type: str = "application/json") -> requests.Response:
    return api.call("POST", path, data=data, headers={"Content-Type": content_type})


@pytest.mark.parametrize("data", [b"{", b"", b'{"name": "a",}', b"\xff\xfe{}", b'{"name": NaN}',
                                  b'{"name": "a", "name": "b"}'])
def test_malformed_json(api: LiveApi, data: bytes) -> None:
    assert "JSON" in problem(_post_raw(api, "/api/v1/groups", data), 400)["detail"]


def test_json_only(api: LiveApi) -> None:
    problem(_post_raw(api, "/api/v1/groups", b'{"name": "a"}', "text/plain"), 415)
    problem(_post_raw(api, "/api/v1/groups", b"name=a", "application/x-www-form-urlencoded"), 415)
    problem(api.call("POST", "/api/v1/groups", data=b'{"name": "a"}'), 415)  # no Content-Type


def test_wrong_types_and_unknown_fields_name_the_field(api: LiveApi) -> None:
    refused = problem(api.post("/api/v1/groups", {"name": "a", "safe_search": "yes", "colour": "red"}), 422)
    assert {(item["name"], item["reason"]) for item in refused["invalid_params"]} == {
        ("safe_search", "must be boolean, not string"), ("colour", "is not a known field")}
    problem(api.post("/api/v1/groups", ["a"]), 422)
    problem(api.post("/api/v1/groups", {"title": "no name"}), 422)
    refused = problem(api.post("/api/v1/schedules", {"name": "s", "slots": [{"weekday": True, "start": "8:00",
                                                                             "end": "09:00"}]}), 422)
    assert {item["name"] for item in refused["invalid_params"]} == {"slots[0].weekday", "slots[0].start"}
    refused = problem(api.post("/api/v1/overrides", {"group": "g", "name": "a.example", "minutes": 1.5}), 422)
    assert refused["invalid_params"][0]["name"] == "minutes"
    problem(api.post("/api/v1/groups", {"name": "a", "title": "\ud800"}), 422)  # lone surrogate
    assert api.get("/api/v1/groups").json()["total"] == 1  # the fixture's guests


def test_request_size_limits(tmp_path: Path) -> None:
    api = LiveApi(tmp_path, settings=ApiSettings(port=0, max_json_bytes=4096, max_upload_bytes=8192))
    try:
        huge = b'{"name": "a", "title": "' + b"x" * 5000 + b'"}'
        assert "4096" in problem(_post_raw(api, "/api/v1/groups", huge), 413)["detail"]
        chunked = api.call("POST", "/api/v1/groups", data=iter([huge[:3000], huge[3000:]]),
                           headers={"Content-Type": "application/json"})
        problem(chunked, 413)  # no Content-Length: counted while read
        api.post("/api/v1/lists", {"name": "big"})
        upload = api.call("POST", "/api/v1/lists/big/uploads", data=b"a.example\n" * 1000,
                          headers={"Content-Type": "text/plain"})
        problem(upload, 413)
        assert api.get("/api/v1/groups").json()["total"] == 1  # the fixture's guests
        assert not list((tmp_path / "uploads").iterdir())
    finally:
        api.stop()


def test_default_json_limit_is_one_mebibyte(api: LiveApi) -> None:
    body = b'{"name": "a", "title": "' + b"x" * (1 << 20) + b'"}'
    problem(_post_raw(api, "/api/v1/groups", body), 413)


def test_query_parameters_are_checked(api: LiveApi) -> None:
    seed(api)
    assert problem(api.get("/api/v1/groups", params={"colour": "red"}), 422)["invalid_params"][0]["name"] == "colour"
    problem(api.get("/api/v1/groups", params={"limit": "0"}), 422)
    problem(api.get("/api/v1/groups", params={"limit": "ten"}), 422)
    problem(api.get("/api/v1/groups", params={"limit": ["1", "2"]}), 422)
    problem(api.get("/api/v1/groups", params={"sort": "colour"}), 422)
    problem(api.get("/api/v1/groups", params={"safe_search": "maybe"}), 422)
    problem(api.get("/api/v1/clients/99999999999999999999999"), 404)
    problem(api.get("/api/v1/clients/abc"), 404)


def test_pagination_filtering_and_sorting(api: LiveApi) -> None:
    for number in range(25):
        api.post("/api/v1/groups", {"name": f"class-{number:02d}", "title": f"T{24 - number:02d}",
                                    "safe_search": number % 2 == 0})
    seen, cursor = [], None
    while True:
        params: dict[str, object] = {"limit": 10, "sort": "-name", **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/groups", params={**params, "q": "class-"}).json()
        assert page["total"] == 25
        seen += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted((f"class-{number:02d}" for number in range(25)), reverse=True)
    filtered = api.get("/api/v1/groups", params={"safe_search": "true", "sort": "title", "limit": 3}).json()
    assert filtered["total"] == 13
    assert [item["title"] for item in filtered["items"]] == ["T00", "T02", "T04"]
    assert api.get("/api/v1/groups", params={"q": "CLASS-1"}).json()["total"] == 10


@pytest.mark.parametrize("data", [b'{"a":' * 1000 + b"1" + b"}" * 1000, b"[" * 1000 + b"]" * 1000,
                                  b'{"name": "a", "title": ' + b"[" * 40 + b"]" * 40 + b"}"])
def test_deeply_nested_json_is_refused_not_a_server_error(api: LiveApi, data: bytes) -> None:
    assert "nests" in problem(_post_raw(api, "/api/v1/groups", data), 400)["detail"]


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00+14:00",
                                "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00-14:00"])
def test_moments_at_the_ends_of_time_are_refused(api: LiveApi, at: str) -> None:
    check = {"target": "a.example", "client": {"address": "198.18.0.5"}, "at": at}
    assert problem(api.post("/api/v1/check", check), 422)["invalid_params"][0]["name"] == "at"
    refused = problem(api.get("/api/v1/audit", params={"since": at}), 422)
    assert refused["invalid_params"][0]["name"] == "since"
    assert api.get("/api/v1/events", params={"since": at}).status_code == 422


@pytest.mark.parametrize("at", ["9999-11-30T09:59:59-14:00", "0001-02-01T14:00:00+14:00"])
def test_moments_just_inside_the_range_are_decided(api: LiveApi, at: str) -> None:
    check = {"target": "a.example", "client": {"address": "198.18.0.5"}, "at": at}
    assert api.post("/api/v1/check", check).json()["action"] == "allow"
    assert api.get("/api/v1/audit", params={"since": at}).status_code == 200


@pytest.mark.parametrize("where", ["path", "query", "header"])
def test_a_request_line_or_header_over_8_kib_gets_a_problem(api: LiveApi, where: str) -> None:
    long = "a" * 9000
    if where == "header":
        response = api.get("/api/v1/groups", headers={"X-Long": long})
    else:
        response = api.get(f"/api/v1/groups/{long}" if where == "path" else f"/api/v1/groups?q={long}")
    assert response.status_code in (400, 414, 431)
    assert "malformed" in problem(response, response.status_code)["detail"]


def test_head_answers_as_get_without_a_body_and_with_its_checks(api: LiveApi) -> None:
    got = api.get("/api/v1/groups/guests")
    head = api.call("HEAD", "/api/v1/groups/guests")
    assert head.status_code == 200 and head.content == b"" and head.headers["ETag"] == got.headers["ETag"]
    assert api.call("HEAD", "/healthz", token=None).status_code == 200
    assert api.call("HEAD", "/api/v1/tokens", token=api.token("viewer")).status_code == 403  # roles as for GET
    assert api.call("HEAD", "/api/v1/groups", token=None).status_code == 401
    assert api.call("HEAD", "/api/v1/groups/nothing").status_code == 404


def test_a_whole_number_written_with_a_fraction_is_an_integer(api: LiveApi) -> None:
    api.post("/api/v1/groups", {"name": "class-5a"})
    created = api.post("/api/v1/overrides", {"group": "class-5a", "name": "a.example", "minutes": 50.0})
    assert created.status_code == 201, created.text
    expires = datetime.fromisoformat(created.json()["expires_at"]) - datetime.fromisoformat(created.json()["starts_at"])
    assert expires.total_seconds() == 50 * 60
    assert api.post("/api/v1/overrides", {"group": "class-5a", "name": "b.example", "minutes": 5e1}).status_code == 201
    problem(api.post("/api/v1/overrides", {"group": "class-5a", "name": "c.example", "minutes": 50.5}), 422)


def test_the_schema_states_the_validators_rules(api: LiveApi) -> None:
    schemas = api.get("/api/openapi.json").json()["components"]["schemas"]
    assert schemas["GroupCreate"]["properties"]["name"]["pattern"] == "^[a-z0-9][a-z0-9_.-]{0,63}$"
    assert "pattern" in schemas["OverrideCreate"]["properties"]["name"]
    assert schemas["GroupCreate"]["properties"]["title"]["pattern"] == "^[^\\x00]*$"
    for name in ("Not A Slug", "a/b", "-x"):
        assert problem(api.post("/api/v1/groups", {"name": name}), 422)["invalid_params"][0]["name"] == "name"
    for name in ("a b.example", "a..example", "example.123", "a.example\u0000"):
        refused = problem(api.post("/api/v1/overrides", {"group": "guests", "name": name, "minutes": 5}), 422)
        assert refused["invalid_params"][0]["name"] == "name"
