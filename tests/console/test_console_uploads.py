"""Bulk upload of a school list from the console (request level): the form is streamed into
the API's upload operation (its roles, limits and audit), its status page refreshes itself
without script and carries upload.js, the JSON progress it reads, cancel; refused forms."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from console_client import ConsoleClient, Page, School, console, school  # noqa: F401 (fixtures)

from edufilter.api import uploads as api_uploads
from edufilter.policy.sources import Entries, read_list

SLOW_BLOCKS = 200  # of 50 ms each: a reading that lasts 10 s unless it is cancelled


@pytest.fixture
def slow_reading(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Uploads start reading when the returned event is set (or after 10 s), read their file's
    blocks, then go on reading empty ones for 10 s: long enough to watch one under way and
    cancel it, bounded if a test fails."""
    go = threading.Event()

    def slow(path: Path, *args: Any, **kwargs: Any) -> Iterator[Entries]:
        go.wait(10)
        yield from read_list(path, *args, **kwargs)
        for _ in range(SLOW_BLOCKS):
            time.sleep(0.05)
            yield Entries()

    monkeypatch.setattr(api_uploads, "read_list", slow)
    return go


def upload_form(csrf: str, data: bytes, list_name: str = "blocked", mode: str = "append",
                filename: str = "school.txt") -> FormData:
    """The upload form as a browser sends it: the file field last."""
    form = FormData()
    form.add_field("csrf", csrf)
    form.add_field("list", list_name)
    form.add_field("mode", mode)
    form.add_field("format", "auto")
    form.add_field("file", data, filename=filename, content_type="text/plain")
    return form


def post_upload(console: ConsoleClient, data: bytes, csrf: str | None = None, **fields: Any) -> Page:
    page = console.get("/console/uploads")
    assert page.status == 200
    form = upload_form(page.hidden("csrf") if csrf is None else csrf, data, **fields)
    return console.request("POST", "/console/uploads", data=form, allow_redirects=False)


def progress(console: ConsoleClient, location: str) -> dict[str, Any]:
    answer = console.get(f"{location}/progress")
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("application/json")
    return json.loads(answer.text)


def until_finished(console: ConsoleClient, location: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while not (state := progress(console, location))["finished"]:
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    return state


def entries(console: ConsoleClient, school: School, list_name: str = "blocked") -> list[str]:
    answer = console.get(f"/api/v1/lists/{list_name}/entries", params={"limit": "1000"},
                         headers={"Authorization": f"Bearer {school.secrets['viewer']}"})
    return [entry["value"] for entry in json.loads(answer.text)["items"]]


def test_an_editor_uploads_a_list_and_follows_it_to_the_end(console: ConsoleClient, school: School) -> None:
    console.sign_in(school.secrets["editor"])
    form = console.get("/console/uploads")
    assert 'enctype="multipart/form-data"' in form.text
    assert form.text.index('name="csrf"') < form.text.index('type="file"')  # the file is read after the check
    started = post_upload(console, b"# the school's own\nmaths.example\nchat.example\nbad..name\n")
    assert started.status == 303 and re.fullmatch(r"/console/uploads/[0-9a-f]{16}", started.headers["Location"])
    location = started.headers["Location"]
    final = until_finished(console, location)
    assert (final["state"], final["state_text"], final["progress"]) == ("done", "done", 1000)
    page = console.get(location)
    assert page.status == 200 and "http-equiv" not in page.text and "upload.js" not in page.text  # finished
    assert re.search(r'<dd id="upload-added">2</dd>', page.text) and "Unreadable lines" in page.text
    assert sorted(entries(console, school)) == ["chat.example", "games.example", "maths.example"]
    audit = console.get("/api/v1/audit", params={"kind": "list", "limit": "1"},
                        headers={"Authorization": f"Bearer {school.secrets['coordinator']}"})
    [row] = json.loads(audit.text)["items"]
    assert (row["token"], row["method"], row["path"]) == ("editor", "POST", "/api/v1/lists/blocked/uploads")
    assert row["after"]["upload"]["added"] == 2
    listed = console.get("/console/uploads").text
    assert f'href="{location}"' in listed and "<td>done</td>" in listed


def test_a_running_upload_refreshes_without_script_shows_progress_and_cancels(
        console: ConsoleClient, school: School, slow_reading: threading.Event) -> None:
    console.sign_in(school.secrets["editor"])
    location = post_upload(console, b"".join(b"n%d.example\n" % number for number in range(2000)),
                           mode="replace").headers["Location"]
    waiting = progress(console, location)
    assert (waiting["state"], waiting["progress"], waiting["entries_read"]) == ("reading", 0, 0)
    slow_reading.set()
    deadline = time.monotonic() + 10
    while (state := progress(console, location))["entries_read"] < 2000:
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    assert (state["state"], state["finished"], state["progress"]) == ("reading", False, 1000)
    assert state["entries_read"] == 2000
    page = console.get(location)
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page.text
    assert '<script src="/console/static/upload.js" defer></script>' in page.text
    assert re.search(r'<progress id="upload-bar" max="1000" value="1000"', page.text)
    assert 'action="/console/uploads/' in page.text and "Cancel the upload" in page.text
    script = console.get("/console/static/upload.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert "default-src 'self'" in script.headers["Content-Security-Policy"]
    cancelled = console.post(f"{location}/cancel", {"csrf": page.hidden("csrf")})
    assert cancelled.url.endswith(location) and "The upload is cancelled; the list is unchanged." in cancelled.text
    assert progress(console, location)["state"] == "cancelled" and "http-equiv" not in cancelled.text
    assert entries(console, school) == ["games.example"]  # a replace that never happened
    again = console.post(f"{location}/cancel", {"csrf": page.hidden("csrf")})
    assert again.status == 409 and "already finished" in again.text


def test_the_api_limits_hold_from_the_console(console: ConsoleClient, school: School,
                                              slow_reading: threading.Event) -> None:
    console.sign_in(school.secrets["editor"])
    for number in range(2):  # the API runs two uploads at once
        assert post_upload(console, b"a%d.example\n" % number).status == 303
    third = post_upload(console, b"c.example\n")
    assert third.status == 503 and "2 uploads are under way" in third.text
    assert 'enctype="multipart/form-data"' in third.text  # the form again, to try later


def test_refused_upload_forms(console: ConsoleClient, school: School) -> None:
    console.sign_in(school.secrets["editor"])
    empty = post_upload(console, b"", mode="replace")
    assert empty.status == 422 and "would empty list blocked" in empty.text
    unknown = post_upload(console, b"x.example\n", list_name="nope")
    assert unknown.status == 404 and "list nope does not exist" in unknown.text
    no_file = post_upload(console, b"", filename="")
    assert no_file.status == 422 and "Choose a file." in no_file.text
    forged = post_upload(console, b"x.example\n", csrf="not-the-session-token")
    assert forged.status == 403 and "did not come from this console" in forged.text
    page = console.get("/console/uploads")
    cross_site = console.request("POST", "/console/uploads", data=upload_form(page.hidden("csrf"), b"x.example\n"),
                                 headers={"Origin": "http://evil.example"}, allow_redirects=False)
    assert cross_site.status == 403
    url_encoded = console.post("/console/uploads", {"csrf": page.hidden("csrf"), "list": "blocked"})
    assert url_encoded.status == 415
    assert entries(console, school) == ["games.example"]
    assert "No uploads since the last restart." in console.get("/console/uploads").text


@pytest.mark.parametrize("role", ["viewer", "ms-peeters"])
def test_who_may_not_upload_cannot_from_the_console(console: ConsoleClient, school: School, role: str) -> None:
    console.sign_in(school.secrets[role])
    assert console.get("/console/uploads").status == 403
    page = console.get("/console/check" if role == "viewer" else "/console/overrides")
    refused = console.request("POST", "/console/uploads", allow_redirects=False,
                              data=upload_form(page.hidden("csrf"), b"x.example\n"))
    assert refused.status == 403 and "Your token may not use this page." in refused.text
    assert entries(console, school) == ["games.example"]
