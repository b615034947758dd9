"""Uploads of whole list files into an admin list, read in the background, with progress."""

from __future__ import annotations

import gzip
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from apiprocess import API_WITHOUT_COMPILE, ApiProcess, megabytes, plain_list
from conftest import LiveApi, conforms, problem

from edufilter.api.settings import ApiSettings
from edufilter.api.uploads import Cancelled, Upload, _ingest
from edufilter.policy.sources import BadLines, ListFormat
from edufilter.policy.store import Actor, PolicyStore

BLOCKLISTS = Path(__file__).resolve().parents[3] / "shared" / "blocklists"
REAL_HOSTS = BLOCKLISTS / "other" / "blocklistproject-redirect.hosts.txt"


def upload(api: LiveApi, list_name: str, data: bytes, content_type: str = "text/plain",
           **params: str) -> dict[str, Any]:
    """Upload a file and poll until the upload is done or failed; returns its last state."""
    accepted = api.call("POST", f"/api/v1/lists/{list_name}/uploads", data=data, params=params,
                        headers={"Content-Type": content_type})
    assert accepted.status_code == 202, accepted.text
    assert conforms(api, accepted, "Upload")["state"] in ("queued", "reading", "storing", "applying", "done")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = api.get(accepted.headers["Location"]).json()
        if state["state"] in ("done", "failed", "cancelled"):
            return state
        time.sleep(0.02)
    raise AssertionError(f"upload still {state['state']} after 60 s")


@pytest.fixture
def blocked(api: LiveApi) -> LiveApi:
    assert api.post("/api/v1/lists", {"name": "blocked"}).status_code == 201
    assert api.post("/api/v1/lists/blocked/entries", {"kind": "domain", "value": "kept.example"}).status_code == 201
    return api


def entries(api: LiveApi) -> list[tuple[str, str]]:
    page = api.get("/api/v1/lists/blocked/entries", params={"limit": 1000}).json()
    return [(item["kind"], item["value"]) for item in page["items"]]


def test_hosts_file_with_bad_lines(blocked: LiveApi) -> None:
    data = b"# a hosts file\n0.0.0.0 ads.example tracker.example\n127.0.0.1 localhost\n0.0.0.0 bad..name\n" \
           b"0.0.0.0 kept.example\n"
    done = upload(blocked, "blocked", data)
    assert done["state"] == "done", done
    assert done["format"] == "hosts"  # sniffed
    assert (done["entries_read"], done["added"], done["bad_line_count"]) == (3, 2, 1)
    assert done["bad_lines"][0]["line_number"] == 4
    assert entries(blocked) == [("domain", "kept.example"), ("domain", "ads.example"), ("domain", "tracker.example")]
    status = blocked.get("/api/v1/status").json()
    assert done["policy_version"] == status["live_version"] == status["policy_version"]
    audit = blocked.get("/api/v1/audit", params={"kind": "list"}).json()["items"][0]
    assert audit["before"]["entry_count"] == 1 and audit["after"]["entry_count"] == 3
    assert audit["after"]["upload"]["added"] == 2 and audit["path"].startswith("/api/v1/lists/blocked/uploads")


def test_gzipped_adblock_file_replacing_the_entries(blocked: LiveApi) -> None:
    data = gzip.compress(b"! title\n||one.example^\n||two.example^$important\n@@||three.example^\n198.18.0.0/15\n")
    done = upload(blocked, "blocked", data, "application/gzip", format="adblock", mode="replace")
    assert done["state"] == "done", done
    assert entries(blocked) == [("domain", "one.example"), ("domain", "two.example")]
    assert done["bad_line_count"] == 2 and done["mode"] == "replace"


def testplain_list_with_networks(blocked: LiveApi) -> None:
    done = upload(blocked, "blocked", b"a.example\n198.18.7.0/24\n2001:2::1\n", "application/octet-stream",
                  format="plain")
    assert done["state"] == "done", done
    assert ("cidr", "198.18.7.0/24") in entries(blocked) and ("cidr", "2001:2::1/128") in entries(blocked)


def test_a_damaged_file_fails_and_changes_nothing(blocked: LiveApi) -> None:
    version = blocked.get("/api/v1/status").json()["policy_version"]
    done = upload(blocked, "blocked", b"\x1f\x8b" + b"not really gzip" * 10, "application/gzip")
    assert done["state"] == "failed" and "damaged" in done["error"]
    assert entries(blocked) == [("domain", "kept.example")]
    assert blocked.get("/api/v1/status").json()["policy_version"] == version
    assert not list((blocked.state_dir / "uploads").iterdir())  # the saved file is gone


def test_upload_refusals(blocked: LiveApi) -> None:
    problem(blocked.call("POST", "/api/v1/lists/nowhere/uploads", data=b"a.example\n",
                         headers={"Content-Type": "text/plain"}), 404)
    problem(blocked.call("POST", "/api/v1/lists/blocked/uploads", data=b"a.example\n",
                         headers={"Content-Type": "image/png"}), 415)
    problem(blocked.call("POST", "/api/v1/lists/blocked/uploads", data=b"a.example\n", params={"format": "csv"},
                         headers={"Content-Type": "text/plain"}), 422)
    problem(blocked.get("/api/v1/uploads/0123456789abcdef"), 404)
    viewer = blocked.token("viewer")
    problem(blocked.call("POST", "/api/v1/lists/blocked/uploads", token=viewer, data=b"a.example\n",
                         headers={"Content-Type": "text/plain"}), 403)


@pytest.mark.skipif(not REAL_HOSTS.is_file(), reason=f"{REAL_HOSTS} not found (see shared/blocklists/README.md)")
def test_a_real_hosts_list(blocked: LiveApi) -> None:
    done = upload(blocked, "blocked", REAL_HOSTS.read_bytes())
    assert done["state"] == "done", done
    assert done["format"] == "hosts" and done["added"] > 50_000
    listed = blocked.get("/api/v1/uploads", params={"list": "blocked"}).json()
    assert listed["items"][0]["id"] == done["id"]
    assert blocked.get("/api/v1/lists/blocked").json()["entry_count"] == done["added"] + 1


def test_an_empty_replacement_is_refused_unless_asked(blocked: LiveApi) -> None:
    problem(blocked.call("POST", "/api/v1/lists/blocked/uploads", params={"mode": "replace"}), 415)  # no type
    refused = problem(blocked.call("POST", "/api/v1/lists/blocked/uploads", params={"mode": "replace"}, data=b"",
                                   headers={"Content-Type": "text/plain"}), 422)
    assert "allow_empty" in refused["detail"]
    only_comments = upload(blocked, "blocked", b"# nothing here\n\n", mode="replace")
    assert only_comments["state"] == "failed" and "would empty list blocked" in only_comments["error"]
    assert entries(blocked) == [("domain", "kept.example")]
    emptied = upload(blocked, "blocked", b"", mode="replace", allow_empty="true")
    assert emptied["state"] == "done" and entries(blocked) == []


def test_public_suffixes_in_a_file_are_refused_and_counted(blocked: LiveApi) -> None:
    done = upload(blocked, "blocked", b"com\nschool.example\nco.uk\nbbc.co.uk\n", format="plain")
    assert done["state"] == "done", done
    assert (done["entries_read"], done["refused_count"]) == (2, 2)
    assert all("public suffix" in reason for reason in done["refused"])
    assert [value for _, value in entries(blocked)] == ["kept.example", "school.example", "bbc.co.uk"]


def test_a_gzip_bomb_is_refused_early(blocked: LiveApi) -> None:
    bomb = gzip.compress(b"bomb.example\n" * 8_000_000)  # 104 MB of lines in about 200 KB
    done = upload(blocked, "blocked", bomb, "application/gzip")
    assert done["state"] == "failed" and "inflates more than 32 times" in done["error"]
    assert entries(blocked) == [("domain", "kept.example")]


def test_the_inflated_size_is_bounded(tmp_path: Path) -> None:
    api = LiveApi(tmp_path, settings=ApiSettings(port=0, max_upload_inflated_bytes=1 << 20))
    try:
        api.post("/api/v1/lists", {"name": "blocked"})
        lines = b"".join(b"n%d.example\n" % number for number in range(200_000))  # 2.6 MB, gzips about 5:1
        done = upload(api, "blocked", gzip.compress(lines), "application/gzip")
        assert done["state"] == "failed" and "more than 1 MiB of list data" in done["error"]
        assert api.get("/api/v1/lists/blocked").json()["entry_count"] == 0
    finally:
        api.stop()


def test_uploads_at_once_are_limited(tmp_path: Path) -> None:
    api = LiveApi(tmp_path, settings=ApiSettings(port=0, max_concurrent_uploads=1))
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"first.example\n"
        release.wait(30)
        yield b"second.example\n"

    try:
        api.post("/api/v1/lists", {"name": "blocked"})
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(api.call, "POST", "/api/v1/lists/blocked/uploads", data=slow_body(),
                                headers={"Content-Type": "text/plain"})
            deadline = time.monotonic() + 30
            while True:  # until the first upload's request has begun and holds the one slot
                # An empty replacement is refused (422) after taking a slot: it never holds one.
                refused = api.call("POST", "/api/v1/lists/blocked/uploads", data=b"", params={"mode": "replace"},
                                   headers={"Content-Type": "text/plain"})
                if refused.status_code == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert problem(refused, 503)["type"].endswith("too-many-uploads") and refused.headers["Retry-After"]
            release.set()
            assert first.result(30).status_code == 202
        deadline = time.monotonic() + 30
        while api.get("/api/v1/status").json()["uploads_running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upload(api, "blocked", b"third.example\n")["state"] == "done"
    finally:
        release.set()
        api.stop()


def test_cancelling_a_finished_or_unknown_upload(blocked: LiveApi) -> None:
    done = upload(blocked, "blocked", b"a.example\n")
    assert "already finished" in problem(blocked.post(f"/api/v1/uploads/{done['id']}/cancel"), 409)["detail"]
    problem(blocked.post("/api/v1/uploads/0123456789abcdef/cancel"), 404)
    problem(blocked.post(f"/api/v1/uploads/{done['id']}/cancel", token=blocked.token("viewer")), 403)


class _CancelAtFirstBadLine(BadLines):
    """Bad lines that cancel their upload when the first one is met, mid-file."""

    def __init__(self, cancel: threading.Event) -> None:
        super().__init__()
        self.cancel = cancel

    def add(self, path: Path | str, line_number: int, raw: bytes, reason: str) -> None:
        super().add(path, line_number, raw, reason)
        self.cancel.set()


def test_a_cancelled_upload_stops_between_blocks_and_changes_nothing(blocked: LiveApi, tmp_path: Path) -> None:
    names = [b"n%d.example" % number for number in range(600_000)]  # 8.5 MB: three blocks of 4 MiB
    names[400_000] = b"bad..name"  # in the second block
    path = tmp_path / "list.txt"
    path.write_bytes(b"\n".join(names) + b"\n")
    upload_state = Upload("0123456789abcdef", "blocked", ListFormat.PLAIN, "replace", path.stat().st_size)
    upload_state.bad_lines = _CancelAtFirstBadLine(upload_state.cancel_requested)
    version = blocked.get("/api/v1/status").json()["policy_version"]
    with pytest.raises(Cancelled):
        _ingest(blocked.database, upload_state, path, Actor("test", "editor", "POST", "/"), 1 << 30, 32.0)
    assert 0 < upload_state.entries_read < 600_000  # stopped after the first block
    assert entries(blocked) == [("domain", "kept.example")]
    assert blocked.get("/api/v1/status").json()["policy_version"] == version


def test_an_upload_is_read_and_stored_in_bounded_memory(tmp_path: Path) -> None:
    data = plain_list(16)  # 620,000 names; holding them all as objects took hundreds of MB
    server = ApiProcess([sys.executable, "-c", API_WITHOUT_COMPILE, str(tmp_path)], tmp_path)
    try:
        done = server.wait_for(server.upload(data), "done")
        assert done["added"] == data.count(b"\n")
        peak = megabytes(server.process.pid, "VmHWM")
        assert peak <= 200, f"peak RSS {peak} MB"
    finally:
        server.stop()


def test_sigterm_during_an_upload_cancels_it_and_stops(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "edufilter", "api", "--state-dir", str(tmp_path), "--port", "0"]
    server = ApiProcess(command, tmp_path)
    try:
        location = server.upload(plain_list(32))
        deadline = time.monotonic() + 120
        while server.call("GET", location).json()["entries_read"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0
    finally:
        server.stop()
    with PolicyStore(tmp_path / "policy.sqlite") as store:
        assert [admin_list.entries for admin_list in store.load().lists] == [()]  # cancelled, not stored
    assert not (tmp_path / "uploads").exists()
