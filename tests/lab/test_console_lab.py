"""The console against a real `edufilter run` in the namespace lab: a teacher opens a blocked
site from the console's teacher page and the pupil reaches it within a second, then loses it
when the override is ended from the console; a pupil's "this should not be blocked" request
from the injected block page reaches the console, and its approval opens the site."""

from __future__ import annotations

import html
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edufilter_lab.school import UPSTREAM_V4, FilteredSchool
from test_daemon import CURL_RESET_EXITS, api, curl, pupil
from test_daemon import school  # noqa: F401 (the module's own school, built as test_daemon builds it)

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("require_lab")]

CONSOLE = "http://127.0.0.1:8470/console"
BLOCKED_HTTPS = ["https://blocked.test/", "blocked.test", str(UPSTREAM_V4), "-o", "/dev/null", "-w", "%{http_code}"]


class ConsoleSession:
    """A person signed in to the daemon's console with curl on the gateway (cookies in a jar)."""

    def __init__(self, school: FilteredSchool, secret: str, jar: Path) -> None:
        self.school, self.jar = school, jar
        page = self.get("/sign-in")
        self.post("/sign-in", {"csrf": hidden(page, "csrf"), "token": secret})

    def request(self, path: str, form: dict[str, str] | None = None) -> str:
        argv = ["curl", "-sS", "-L", "-c", str(self.jar), "-b", str(self.jar), "--max-time", "5"]
        for name, value in (form or {}).items():
            argv += ["--data-urlencode", f"{name}={value}"]
        return self.school.gateway.run([*argv, CONSOLE + path], timeout=8).stdout

    def get(self, path: str) -> str:
        return self.request(path)

    def post(self, path: str, form: dict[str, str]) -> str:
        return self.request(path, form)


def hidden(page: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} in {page[:2000]}"
    return html.unescape(match[1])


def reached_within(school: FilteredSchool, expected: str, seconds: float) -> None:
    """Until the pupil's curl to blocked.test answers as expected ("200" or "blocked"); fails
    when no curl sent within `seconds` from now does."""
    started = time.monotonic()
    while True:
        sent = time.monotonic() - started
        assert sent < seconds, f"blocked.test is not {expected} for the pupil after {sent:.2f} s"
        result = curl(pupil(school), *BLOCKED_HTTPS, timeout=3)
        got = "200" if result.stdout == "200" else "blocked" if result.returncode in CURL_RESET_EXITS else "other"
        if got == expected:
            return
        time.sleep(0.05)


def test_a_teacher_opens_a_blocked_site_from_the_console_and_ends_it(school: FilteredSchool,
                                                                      tmp_path: Path) -> None:
    secret = school.run_edufilter("token", "create", "--role", "teacher", "--groups", "pupils", "--max-minutes",
                                  "50", "--name", "mr-janssens").stdout.strip()
    assert curl(pupil(school), *BLOCKED_HTTPS).returncode in CURL_RESET_EXITS
    console = ConsoleSession(school, secret, tmp_path / "teacher.jar")
    page = console.get("/overrides")
    assert 'id="site"' in page, page[:2000]
    opened = console.post("/overrides", {"csrf": hidden(page, "csrf"), "group": "pupils", "site": "blocked.test",
                                         "minutes": "50", "reason": "lesson"})
    assert "blocked.test is open for pupils" in opened, opened[:3000]
    reached_within(school, "200", 1.0)
    end = re.search(r'action="(/console/overrides/\d+/end)"', opened)
    assert end, opened[:3000]
    ended = console.post(end[1].removeprefix("/console"), {"csrf": hidden(opened, "csrf"),
                                                           "etag": hidden(opened, "etag")})
    assert "The override has ended." in ended
    reached_within(school, "blocked", 1.0)


class _ReviewForm(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.action = values["action"] or ""
        elif tag == "input":
            self.fields[str(values["name"])] = values.get("value") or ""


def test_a_request_from_the_block_page_reaches_the_console_and_its_approval_opens_the_site(
        school: FilteredSchool, tmp_path: Path) -> None:
    page = curl(pupil(school), "http://blocked.test/", "blocked.test", str(UPSTREAM_V4),
                "-H", "Accept-Language: en").stdout
    form = _ReviewForm()
    form.feed(page)
    block_v4 = school.pupils["pupil"].link.end(school.gateway).address(4)
    assert form.action == f"http://{block_v4}/review", page
    assert form.fields["site"] == "blocked.test" and form.fields["group"] == "pupils"
    viewer = school.run_edufilter("token", "create", "--role", "viewer").stdout.strip()
    deadline = time.monotonic() + 5
    while not api(school, viewer, "GET", f"/api/v1/events?reference={form.fields['reference']}")[1].get("items"):
        assert time.monotonic() < deadline, "the block event is recorded"
        time.sleep(0.2)
    argv = ["curl", "-sS", "--max-time", "5", "-H", "Accept-Language: en", "-w", "\n%{http_code}"]
    for name, value in {**form.fields, "reason": "our history project"}.items():
        argv += ["--data-urlencode", f"{name}={value}"]
    answer = pupil(school).run([*argv, form.action], timeout=8).stdout
    assert answer.endswith("\n202") and "Your request was sent" in answer, answer
    secret = school.run_edufilter("token", "create", "--role", "teacher", "--groups", "pupils", "--max-minutes",
                                  "50", "--name", "ms-claes").stdout.strip()
    console = ConsoleSession(school, secret, tmp_path / "reviewer.jar")
    listed = console.get("/reviews")
    assert "blocked.test" in listed and "our history project" in listed and form.fields["reference"] in listed
    request_path = re.search(r'action="/console(/reviews/\d+/approve)"', listed)
    assert request_path, listed[:3000]
    approved = console.post(request_path[1], {"csrf": hidden(listed, "csrf"), "etag": hidden(listed, "etag"),
                                              "as": "override", "minutes": "30"})
    assert "The request for blocked.test is approved." in approved, approved[:3000]
    try:
        reached_within(school, "200", 1.0)
    finally:
        overrides = api(school, secret, "GET", "/api/v1/overrides?created_by=ms-claes")[1]["items"]
        for override in overrides:
            etag = api(school, secret, "GET", f"/api/v1/overrides/{override['id']}")[2]
            api(school, secret, "DELETE", f"/api/v1/overrides/{override['id']}", None, f"If-Match: {etag}")
    school.wait_for_version(school.stored_version())  # the clean-up is not what this test times
    assert curl(pupil(school), *BLOCKED_HTTPS).returncode in CURL_RESET_EXITS
