"""Uploads of whole list files into an admin list, read in the background, with progress."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import LiveApi, conforms, problem

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
        if state["state"] in ("done", "failed"):
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


def test_plain_list_with_networks(blocked: LiveApi) -> None:
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
