"""The block page's review form ("this should not be blocked") and the block-page server's
POST /review: only the form's fields are handed over, bad forms are refused, and requests
are rate-limited per client pseudonym."""

from __future__ import annotations

import asyncio
from datetime import datetime
from html.parser import HTMLParser
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from edufilter.enforce.blockpage import BlockInfo, render_block_page, review_url
from edufilter.enforce.blockpage_server import REVIEWS_PER_HOUR, ReviewForm, ReviewLimiter, make_blockpage_app

INFO = BlockInfo("games.example.test", "games", "Online games", "Pupils year 5", "block", "K7Q2M4AB",
                 datetime(2024, 5, 14, 10, 42), "year-5")
FORM = {"site": "games.example.test", "category": "games", "group": "year-5", "reference": "K7Q2M4AB",
        "reason": "for my\nhistory project"}


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.action = values["action"]
        elif tag in ("input", "textarea"):
            self.fields[str(values["name"])] = values.get("value") or ""


def _form_of(page: str) -> _Form:
    parser = _Form()
    parser.feed(page)
    return parser


def test_an_injected_page_posts_its_fields_to_the_block_page_address_and_the_csp_allows_only_that() -> None:
    action = review_url("198.18.0.1", 80)
    status, headers, body = render_block_page(INFO, "en", review_action=action)
    form = _form_of(body.decode())
    assert status == 403 and form.action == "http://198.18.0.1/review"
    assert form.fields == {"site": "games.example.test", "category": "games", "group": "year-5",
                           "reference": "K7Q2M4AB", "reason": ""}
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert policy.endswith("form-action http://198.18.0.1/review")
    assert "<script" not in body.decode().lower()
    assert review_url("2001:2::1", 8080) == "http://[2001:2::1]:8080/review"
    _, plain_headers, plain = render_block_page(INFO, "en")
    assert "<form" not in plain.decode() and "form-action" not in plain_headers["Content-Security-Policy"]


def _serve(requests: list[tuple[str, str, dict[str, str], Any]], submitted: list[ReviewForm],
           outcome: str = "sent") -> list[tuple[int, dict[str, str], str]]:
    async def submit(form: ReviewForm) -> str:
        submitted.append(form)
        return outcome

    def explain(host: str, client: str, accept_language: str | None) -> BlockInfo | None:
        return INFO if host == INFO.name else None

    async def run() -> list[tuple[int, dict[str, str], str]]:
        app = make_blockpage_app(explain, "nl", submit_review=submit, pseudonym=lambda address: "c-same")
        async with TestClient(TestServer(app)) as client:
            results = []
            for method, path, headers, data in requests:
                response = await client.request(method, path, headers=headers, data=data)
                results.append((response.status, dict(response.headers), await response.text()))
            return results

    return asyncio.run(run())


def test_the_served_page_has_the_form_and_a_post_hands_over_the_fields_only() -> None:
    submitted: list[ReviewForm] = []
    (status, headers, page), (sent_status, sent_headers, sent) = _serve([
        ("GET", "/play", {"Host": INFO.name, "Accept-Language": "en"}, None),
        ("POST", "/review", {"Host": INFO.name, "Accept-Language": "fr", "Cookie": "x=1"}, FORM),
    ], submitted)
    assert status == 403 and _form_of(page).action == "/review"
    assert headers["Content-Security-Policy"].endswith("form-action 'self'")
    assert sent_status == 202 and "Ta demande est envoyée" in sent
    assert sent_headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert submitted == [ReviewForm("games.example.test", "games", "year-5", "K7Q2M4AB",
                                    "for my history project")]


def test_bad_forms_are_refused_before_anything_is_handed_over() -> None:
    submitted: list[ReviewForm] = []
    bad = [
        {**FORM, "pupil": "Ann"},  # an unknown field
        {**FORM, "reference": "k7q2m4ab"},
        {**FORM, "site": "<script>"},
        {**FORM, "group": ""},
        {**FORM, "reason": "x" * 501},
        {**FORM, "reason": "zero\u200bwidth"},
    ]
    answers = _serve([("POST", "/review", {}, form) for form in bad]
                     + [("POST", "/review", {"Content-Type": "application/json"}, b'{"site": "a"}'),
                        ("POST", "/review", {"Content-Type": "application/x-www-form-urlencoded"},
                         b"site=a&" * 1000)], submitted)
    assert [status for status, _, _ in answers] == [400] * (len(bad) + 2)
    assert submitted == []


def test_requests_are_limited_per_pseudonym_and_a_full_queue_says_so() -> None:
    submitted: list[ReviewForm] = []
    answers = _serve([("POST", "/review", {"Accept-Language": "en"}, FORM)] * (REVIEWS_PER_HOUR + 1), submitted)
    assert [status for status, _, _ in answers] == [202] * REVIEWS_PER_HOUR + [429]
    assert "many requests" in answers[-1][2] and len(submitted) == REVIEWS_PER_HOUR
    full = _serve([("POST", "/review", {"Accept-Language": "en"}, FORM)], [], outcome="unavailable")
    assert full[0][0] == 503


def test_the_limiter_counts_by_pseudonym_and_forgets_after_an_hour() -> None:
    now = [0.0]
    limiter = ReviewLimiter(lambda address: "c-" + address.split(".")[0], per_hour=2, clock=lambda: now[0])
    assert [limiter.allow("10.0.0.1"), limiter.allow("10.0.0.2"), limiter.allow("10.0.0.3")] == [True, True, False]
    assert limiter.allow("11.0.0.1")  # another pseudonym
    now[0] = 3600.5
    assert limiter.allow("10.0.0.1")
