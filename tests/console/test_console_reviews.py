"""The console's page of review requests from the block page, per role: approve as an
override or a list entry, decline; audited as the API's operations."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone

from console_client import ConsoleClient, School, console, school  # noqa: F401 (fixtures)

from edufilter.api.reviews import queue_review_request
from edufilter.policy.store import PolicyStore


def queue(school: School, name: str, group: str, reference: str, reason: str = "") -> int:
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        request_id = queue_review_request(store, name, "games", group, reference, reason, datetime.now(timezone.utc))
    assert request_id is not None
    return request_id


def forms_of(text: str, request_id: int) -> list[str]:
    return re.findall(rf'action="/console/reviews/{request_id}/(approve|decline)" class="change ([a-z -]+)"', text)


def test_a_teacher_sees_their_groups_requests_and_opens_one_for_the_lesson(console: ConsoleClient,
                                                                           school: School) -> None:
    mine = queue(school, "wiki.example", "class-5a", "AAAAAAAA", "for the <b>project</b>")
    other = queue(school, "maps.example", "class-6b", "BBBBBBBB")
    console.sign_in(school.secrets["ms-peeters"])
    page = console.get("/console/reviews")
    assert page.status == 200 and "wiki.example" in page.text and "maps.example" not in page.text
    assert "for the &lt;b&gt;project&lt;/b&gt;" in page.text
    # a teacher approves as an override only: no list form
    assert forms_of(page.text, mine) == [("approve", "approve"), ("decline", "end decline")]
    too_long = console.post(f"/console/reviews/{mine}/approve", {
        "csrf": page.hidden("csrf"), "etag": page.hidden("etag"), "as": "override", "minutes": "46"})
    assert too_long.status == 422 and "maximum of 45 minutes" in too_long.text
    approved = console.post(f"/console/reviews/{mine}/approve", {
        "csrf": page.hidden("csrf"), "etag": page.hidden("etag"), "as": "override", "minutes": "40"})
    assert approved.url.endswith("/console/reviews") and "The request for wiki.example is approved." in approved.text
    assert "No requests waiting." in approved.text and "approved (opened for a while)" in approved.text
    refused = console.post(f"/console/reviews/{other}/decline", {"csrf": page.hidden("csrf"), "etag": "*"})
    assert refused.status == 403
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        [override] = store.load().overrides
    assert (override.group, override.name, override.created_by) == ("class-5a", "wiki.example", "ms-peeters")
    assert (override.expires_at - override.starts_at).total_seconds() == 40 * 60
    with sqlite3.connect(school.state_dir / "policy.sqlite") as db:
        assert db.execute("SELECT token, method, path, kind FROM audit_log ORDER BY id DESC LIMIT 1").fetchone() == (
            "ms-peeters", "POST", f"/api/v1/review-requests/{mine}/approve", "review_request")


def test_an_editor_adds_a_site_to_a_school_list_and_declines_another(console: ConsoleClient,
                                                                    school: School) -> None:
    first = queue(school, "atlas.example", "class-6b", "CCCCCCCC")
    second = queue(school, "games.example", "class-5a", "DDDDDDDD")
    console.sign_in(school.secrets["editor"])
    page = console.get("/console/reviews")
    assert ("approve", "approve-list") in forms_of(page.text, first)
    etags = dict(re.findall(r'action="/console/reviews/(\d+)/decline" class="[^"]+">\s*'
                            r'<input type="hidden" name="csrf" value="[^"]+">\s*'
                            r'<input type="hidden" name="etag" value="([^"]+)">', page.text))
    added = console.post(f"/console/reviews/{first}/approve", {
        "csrf": page.hidden("csrf"), "etag": etags[str(first)].replace("&#34;", '"'), "as": "allow_list",
        "list": "blocked"})
    assert "The request for atlas.example is approved." in added.text, added.text
    assert "in list blocked" in added.text
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        [admin_list] = store.load().lists
    assert "atlas.example" in [entry.value for entry in admin_list.entries]
    stale = console.post(f"/console/reviews/{second}/decline", {"csrf": page.hidden("csrf"), "etag": '"old"'})
    assert stale.status == 412
    declined = console.post(f"/console/reviews/{second}/decline", {
        "csrf": page.hidden("csrf"), "etag": etags[str(second)].replace("&#34;", '"')})
    assert "The request for games.example is declined." in declined.text and "declined" in declined.text


def test_a_forged_decision_without_the_csrf_token_is_refused(console: ConsoleClient, school: School) -> None:
    request_id = queue(school, "wiki.example", "class-5a", "EEEEEEEE")
    console.sign_in(school.secrets["coordinator"])
    forged = console.post(f"/console/reviews/{request_id}/decline", {"etag": "*"})
    assert forged.status == 403
    with PolicyStore(school.state_dir / "policy.sqlite") as store, store.snapshot() as db:
        assert db.execute("SELECT state FROM review_requests").fetchall() == [("pending",)]
