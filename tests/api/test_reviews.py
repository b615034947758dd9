"""Review requests from the block page through the API: list, approve as an override or a
list entry, decline; roles per group; audit rows; the OpenAPI document lists them."""

from __future__ import annotations

from datetime import datetime, timezone

from conftest import LiveApi, conforms, problem, seed

from edufilter.api.reviews import queue_review_request
from edufilter.policy.store import PolicyStore


def _queue(api: LiveApi, name: str, group: str, reference: str, reason: str = "") -> int:
    with PolicyStore(api.database) as store:
        request_id = queue_review_request(store, name, "adult", group, reference, reason, datetime.now(timezone.utc))
    assert request_id is not None
    return request_id


def _decide(api: LiveApi, request_id: int, verb: str, body: object, token: str = "admin"):
    etag = api.get(f"/api/v1/review-requests/{request_id}", token=token).headers["ETag"]
    return api.call("POST", f"/api/v1/review-requests/{request_id}/{verb}", token=token, json=body,
                    headers={"If-Match": etag})


def test_a_queued_request_is_listed_and_approved_as_an_override_that_allows_the_site(api: LiveApi) -> None:
    seed(api)
    request_id = _queue(api, "wiki.example", "class-5a", "ABCDEFGH", "for my project")
    listed = conforms(api, api.get("/api/v1/review-requests?state=pending"), "ReviewRequestPage")
    assert [(row["id"], row["name"], row["reason"]) for row in listed["items"]] == [
        (request_id, "wiki.example", "for my project")]
    # the same reference again (a second press) is the same request
    assert _queue(api, "wiki.example", "class-5a", "ABCDEFGH") == request_id
    applied = api.applier.calls
    answer = _decide(api, request_id, "approve", {"as": "override", "minutes": 30})
    approved = conforms(api, answer, "ReviewRequest")
    assert approved["state"] == "approved" and approved["decision"] == "override"
    override = api.get(f"/api/v1/overrides/{approved['decision_target']}").json()
    assert (override["group"], override["name"], override["action"], override["active"]) == (
        "class-5a", "wiki.example", "allow", True)
    assert api.applier.calls == applied + 1
    problem(_decide(api, request_id, "decline", None), 409)  # decided once only
    audit = api.get("/api/v1/audit?kind=review_request").json()["items"]
    assert [(row["token"], row["method"], row["after"]["state"]) for row in audit] == [
        ("admin", "POST", "approved"), ("block-page", "POST", "pending")]


def test_an_editor_approves_into_a_school_list_and_declines_another(api: LiveApi) -> None:
    seed(api)
    first = _queue(api, "maps.example", "class-5a", "AAAAAAAA")
    second = _queue(api, "games.example", "class-5a", "BBBBBBBB")
    editor = api.token("editor")
    problem(_decide(api, first, "approve", {"as": "allow_list"}, editor), 422)  # which list?
    answer = _decide(api, first, "approve", {"as": "allow_list", "list": "games"}, editor)
    assert answer.status_code == 200, answer.text
    entries = api.get("/api/v1/lists/games/entries?q=maps").json()["items"]
    assert [(entry["kind"], entry["value"]) for entry in entries] == [("domain", "maps.example")]
    declined = _decide(api, second, "decline", None, editor).json()
    assert (declined["state"], declined["decided_by"]) == ("declined", "editor-1")
    assert api.get("/api/v1/review-requests?state=pending").json()["items"] == []


def test_a_teacher_sees_and_handles_only_their_groups_requests_as_overrides(api: LiveApi) -> None:
    seed(api)
    mine = _queue(api, "wiki.example", "class-5a", "CCCCCCCC")
    other = _queue(api, "wiki.example", "staff", "DDDDDDDD")
    teacher = api.token("teacher", groups=("class-5a",), max_minutes=45)
    listed = api.get("/api/v1/review-requests", token=teacher).json()["items"]
    assert [row["id"] for row in listed] == [mine]
    problem(api.get(f"/api/v1/review-requests/{other}", token=teacher), 403)
    problem(api.call("POST", f"/api/v1/review-requests/{other}/decline", token=teacher,
                     headers={"If-Match": "*"}), 403)
    problem(_decide(api, mine, "approve", {"as": "allow_list", "list": "games"}, teacher), 403)
    problem(_decide(api, mine, "approve", {"minutes": 60}, teacher), 422)
    assert _decide(api, mine, "approve", {"minutes": 45}, teacher).json()["state"] == "approved"
    problem(api.get("/api/v1/review-requests", token=api.token("viewer")), 403)


def test_a_decision_needs_if_match_and_the_openapi_document_has_the_operations(api: LiveApi) -> None:
    seed(api)
    request_id = _queue(api, "wiki.example", "class-5a", "EEEEEEEE")
    problem(api.post(f"/api/v1/review-requests/{request_id}/decline"), 428)
    problem(api.call("POST", f"/api/v1/review-requests/{request_id}/decline",
                     headers={"If-Match": '"stale"'}), 412)
    paths = api.get("/api/openapi.json").json()["paths"]
    assert set(paths["/api/v1/review-requests/{id}/approve"]) == {"post"}
    assert paths["/api/v1/review-requests"]["get"]["operationId"] == "list_review_requests"


def test_a_teachers_approvals_count_in_the_override_quota_and_rate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edufilter.api.settings import ApiSettings

    api = LiveApi(tmp_path, settings=ApiSettings(port=0, teacher_active_overrides=1, teacher_overrides_per_hour=2))
    try:
        seed(api)
        teacher = api.token("teacher", groups=("class-5a",), max_minutes=45)
        first = _queue(api, "one.example", "class-5a", "FFFFFFFF")
        second = _queue(api, "two.example", "class-5a", "GGGGGGGG")
        assert _decide(api, first, "approve", {"minutes": 10}, teacher).status_code == 200
        problem(_decide(api, second, "approve", {"minutes": 10}, teacher), 409)  # holds its one override
        held = api.get("/api/v1/overrides", token=teacher).json()["items"][0]
        api.change("DELETE", f"/api/v1/overrides/{held['id']}", token=teacher)
        assert _decide(api, second, "approve", {"minutes": 10}, teacher).status_code == 200
        refused = api.post("/api/v1/overrides", {"group": "class-5a", "name": "three.example", "minutes": 5},
                           token=teacher)
        assert problem(refused, 429)["type"].endswith("too-many-overrides")  # two made this hour
    finally:
        api.stop()
