"""The group's API (`edufilter hub serve`) against a real nats-server (JetStream) on loopback:
scoped tokens on every operation, revision ETags, the site in the audit log, and events and
counts across sites that never follow a pupil across them."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

pytest.importorskip("nats", reason="the hub extra (nats-py) is not installed")

import nats

from edufilter.hub.api import HUB_OPERATIONS
from edufilter.hub.model import SITE_CHANGES, SITES_MAY_LOOSEN, events_subject, read_part
from edufilter_lab.hub import nats_server_available
from edufilter.policy.defaults import default_policy_dir

SITES = ("ghent", "bruges")
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
LOOSENING = {"lists.toml": '[lists.ghent-allow]\ndomain = ["games.test"]\n',
             SITE_CHANGES: '[[groups.primary.rules]]\naction = "allow"\nlists = ["ghent-allow"]\n'}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def edufilter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edufilter", *args], env=ENV, capture_output=True, text=True,
                          timeout=120, check=True)


class Hub:
    """The group's API as served by `edufilter hub serve`, with one token per role and scope."""

    def __init__(self, url: str, nats_url: str, admin: str) -> None:
        self.url = url
        self.nats_url = nats_url
        self.secrets = {"group-admin": admin}
        self.session = requests.Session()

    def call(self, method: str, path: str, who: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.secrets[who]}", **kwargs.pop("headers", {})}
        return self.session.request(method, self.url + path, headers=headers, timeout=60, **kwargs)

    def make_token(self, name: str, role: str, by: str = "group-admin", **extra: Any) -> requests.Response:
        answer = self.call("POST", "/api/v1/tokens", by, json={"name": name, "role": role, **extra})
        if answer.status_code == 201:
            self.secrets[name] = answer.json()["token"]
        return answer

    def put(self, path: str, who: str, files: dict[str, str], revision: int | None) -> requests.Response:
        precondition = {"If-None-Match": "*"} if revision is None else {"If-Match": f'"{revision}"'}
        return self.call("PUT", path, who, json={"files": files}, headers=precondition)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    reason = nats_server_available()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("hub-api")
    nats_port, api_port = free_port(), free_port()
    server = subprocess.Popen(["nats-server", "-js", "-sd", str(folder / "js"), "-a", "127.0.0.1", "-p",
                               str(nats_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = None
    try:
        nats_url = f"nats://127.0.0.1:{nats_port}"
        edufilter("hub", "init", "--server", nats_url, "--sites", *SITES, "--replicas", "1")
        admin = edufilter("token", "create", "--state-dir", str(folder / "hub"), "--role", "admin",
                          "--name", "group-admin").stdout.strip()
        log = open(folder / "serve.log", "wb")
        api = subprocess.Popen([sys.executable, "-m", "edufilter", "hub", "serve", "--server", nats_url,
                                "--state-dir", str(folder / "hub"), "--port", str(api_port)],
                               env=ENV, stdout=log, stderr=log)
        group = Hub(f"http://127.0.0.1:{api_port}", nats_url, admin)
        deadline = time.monotonic() + 30
        while True:
            try:
                group.call("GET", "/api/v1/whoami", "group-admin")
                break
            except requests.ConnectionError:
                assert api.poll() is None and time.monotonic() < deadline, (folder / "serve.log").read_text()
                time.sleep(0.2)
        assert group.put("/api/v1/group/part", "group-admin", read_part(default_policy_dir()), None).ok
        for site in SITES:
            assert group.make_token(f"{site}-admin", "admin", site=site).status_code == 201
        yield group
    finally:
        if api is not None:
            api.terminate()
            api.wait(10)
        server.terminate()
        server.wait(10)


def test_tokens_carry_a_scope_and_a_teacher_teaches_a_sites_groups(hub: Hub) -> None:
    assert hub.call("GET", "/api/v1/whoami", "ghent-admin").json()["site"] == "ghent"
    assert hub.make_token("ghent-editor", "editor", by="ghent-admin").json()["site"] == "ghent"  # its own site
    assert hub.make_token("ghent-viewer", "viewer", by="ghent-admin").status_code == 201
    assert hub.make_token("group-viewer", "viewer").json()["site"] is None
    teacher = hub.make_token("ghent-teacher", "teacher", by="ghent-admin", groups=["primary"])
    assert (teacher.status_code, teacher.json()["groups"]) == (201, ["primary"])
    assert hub.make_token("ghent-teacher2", "teacher", by="ghent-admin", groups=["nosuch"]).status_code == 422
    assert hub.make_token("group-teacher", "teacher", groups=["primary"]).status_code == 422  # no site
    assert hub.make_token("elsewhere", "viewer", site="nosuchsite").status_code == 404
    # A site admin makes tokens of its site only, and sees its site's tokens only.
    assert hub.make_token("sneaky", "admin", by="ghent-admin", site="bruges").status_code == 403
    names = {row["name"] for row in hub.call("GET", "/api/v1/tokens?limit=1000", "ghent-admin").json()["items"]}
    assert names == {"ghent-admin", "ghent-editor", "ghent-viewer", "ghent-teacher"}
    assert hub.call("GET", "/api/v1/tokens/bruges-admin", "ghent-admin").status_code == 404
    revoke = hub.call("DELETE", "/api/v1/tokens/bruges-admin", "ghent-admin", headers={"If-Match": "*"})
    assert revoke.status_code == 404
    assert hub.call("GET", "/api/v1/group/part", "ghent-teacher").status_code == 403  # teachers read no policy


def test_a_site_admin_cannot_touch_another_sites_part(hub: Hub) -> None:
    ghent = "/api/v1/sites/ghent/part"
    current = hub.call("GET", ghent, "ghent-admin")
    revision = int(current.headers["ETag"].strip('"'))
    assert current.json()["revision"] == revision == 0  # no part yet
    own = {"lists.toml": '[lists.ghent-block]\ndomain = ["only-ghent.test"]\n'}
    stored = hub.put(ghent, "ghent-editor", own, None)
    assert stored.status_code == 200, stored.text
    revision = int(stored.headers["ETag"].strip('"'))
    # A stale revision is refused as the API refuses a stale ETag; so is an edit without one.
    stale = hub.put(ghent, "ghent-admin", own, revision - 1)
    assert (stale.status_code, stale.json()["current_revision"]) == (412, revision)
    assert hub.call("PUT", ghent, "ghent-admin", json={"files": own}).status_code == 428
    for bad in ({"../x.toml": ""}, {"x.toml": 1}, {}, {"x.toml": "[lists.school-block]\n"}):  # redefines the group's
        assert hub.put(ghent, "ghent-admin", bad, revision).status_code == 422, bad
    assert hub.put(ghent, "ghent-viewer", own, revision).status_code == 403  # a viewer changes nothing
    # Another site's part, the group's policy, another site's events: refused.
    bruges_files = {"lists.toml": '[lists.bruges-block]\ndomain = ["x.test"]\n'}
    assert hub.put("/api/v1/sites/bruges/part", "ghent-admin", bruges_files, None).status_code == 403
    assert hub.call("GET", "/api/v1/sites/bruges/part", "ghent-admin").status_code == 403
    group = hub.call("GET", "/api/v1/group/part", "ghent-admin")
    assert group.status_code == 200  # read: a site builds on it
    assert hub.put("/api/v1/group/part", "ghent-admin", group.json()["files"],
                   int(group.headers["ETag"].strip('"'))).status_code == 403
    assert [row["site"] for row in hub.call("GET", "/api/v1/sites", "ghent-admin").json()["items"]] == ["ghent"]
    assert hub.put("/api/v1/sites/bruges/part", "bruges-admin", bruges_files, None).status_code == 200


def test_every_operation_naming_a_site_refuses_another_sites_token(hub: Hub) -> None:
    """The scope check runs before every operation (its body unread): each with a {site} path
    or a `site` query, called by bruges's admin about ghent, is refused whatever its role allows."""
    checked = 0
    for operation in HUB_OPERATIONS:
        if "{site}" in operation.path:
            path = operation.path.replace("{site}", "ghent")
        elif "site" in operation.query:
            path = f"{operation.path}?site=ghent"
        else:
            continue
        answer = hub.call(operation.method, path, "bruges-admin", json={}, headers={"If-Match": '"1"'})
        assert answer.status_code == 403, (operation.method, path, answer.text)
        checked += 1
    assert checked >= 6


def test_a_sites_loosening_needs_the_groups_leave_and_the_group_cannot_take_back_a_leave_in_use(hub: Hub) -> None:
    ghent = "/api/v1/sites/ghent/part"
    revision = hub.call("GET", ghent, "ghent-admin").json()["revision"]
    refused = hub.put(ghent, "ghent-admin", LOOSENING, revision)
    assert refused.status_code == 422 and "loosens group 'primary'" in refused.json()["detail"]

    group = hub.call("GET", "/api/v1/group/part", "group-admin").json()
    with_leave = {**group["files"], SITES_MAY_LOOSEN: "[loosen.primary]\nallow_lists = true\n"}
    given = hub.put("/api/v1/group/part", "group-admin", with_leave, group["revision"])
    assert given.status_code == 200, given.text
    assert hub.put(ghent, "ghent-admin", LOOSENING, revision).status_code == 200

    taken_back = hub.put("/api/v1/group/part", "group-admin", group["files"], given.json()["revision"])
    assert taken_back.status_code == 422 and "site ghent's part" in taken_back.json()["detail"]


def test_a_teacher_overrides_the_sites_groups_and_allows_only_with_the_groups_leave(hub: Hub) -> None:
    path = "/api/v1/sites/ghent/overrides"

    def override(group: str, action: str, who: str = "ghent-teacher", site_path: str = path) -> requests.Response:
        return hub.call("POST", site_path, who, json={"group": group, "name": "video.test", "minutes": 30,
                                                      "action": action, "reason": "lesson \"film\""})

    refused = override("primary", "allow")
    assert refused.status_code == 422 and "overrides = true" in refused.json()["detail"]
    blocked = override("primary", "block")  # tightens: always taken
    assert blocked.status_code == 201, blocked.text
    assert override("secondary", "block").status_code == 403  # not the teacher's group
    assert override("primary", "block", site_path="/api/v1/sites/bruges/overrides").status_code == 403

    group = hub.call("GET", "/api/v1/group/part", "group-admin").json()
    leave = "[loosen.primary]\nallow_lists = true\noverrides = true\n"
    assert hub.put("/api/v1/group/part", "group-admin", {**group["files"], SITES_MAY_LOOSEN: leave},
                   group["revision"]).status_code == 200
    allowed = override("primary", "allow")
    assert allowed.status_code == 201 and allowed.json()["revision"] > blocked.json()["revision"]
    listed = hub.call("GET", path, "ghent-teacher").json()["items"]
    assert [(row["action"], row["created_by"], row["reason"]) for row in listed] == [
        ("block", "ghent-teacher", 'lesson "film"'), ("allow", "ghent-teacher", 'lesson "film"')]
    assert hub.call("GET", path, "bruges-admin").status_code == 403
    # A teacher holds at most the school API's quota of live overrides (10), at a site as at a school.
    codes = [override("primary", "block").status_code for _ in range(9)]
    assert codes == [201] * 8 + [409]


def test_the_audit_log_records_the_site_and_a_site_reads_its_own(hub: Hub) -> None:
    everything = hub.call("GET", "/api/v1/audit?limit=1000", "group-admin").json()["items"]
    parts = [(row["kind"], row["site"], row["token"]) for row in everything if row["kind"].endswith("_part")]
    assert ("site_part", "ghent", "ghent-editor") in parts
    assert ("site_part", "bruges", "bruges-admin") in parts
    assert ("group_part", None, "group-admin") in parts
    assert {(row["site"], row["token"]) for row in everything if row["kind"] == "override"} == {
        ("ghent", "ghent-teacher")}
    tokens = {row["object_id"]: row["site"] for row in everything if row["kind"] == "token"}
    assert tokens["ghent-admin"] == "ghent" and tokens["group-viewer"] is None  # the site a token is for
    ghent_part = next(row for row in everything if row["kind"] == "site_part" and row["site"] == "ghent")
    assert ghent_part["after"]["files"] and "revision" in ghent_part["before"]

    own = hub.call("GET", "/api/v1/audit?limit=1000", "ghent-admin").json()["items"]
    assert own and {row["site"] for row in own} == {"ghent"}
    viewed = hub.call("GET", "/api/v1/audit?limit=1000", "group-viewer").json()["items"]
    assert {row["site"] for row in viewed} >= {"ghent", "bruges"}
    assert "token" not in {row["kind"] for row in viewed}  # tokens are an admin's alone


def test_events_and_counts_across_sites_never_follow_a_pupil_across_them(hub: Hub) -> None:
    async def publish() -> None:  # the same pseudonym at two sites: made with other keys, so not one pupil
        client = await nats.connect(hub.nats_url)
        js = client.jetstream()
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        for site, count, group in (("ghent", 3, "primary"), ("bruges", 2, "secondary")):
            for number in range(count):
                record = {"time": now, "group": group, "category": "games", "name": f"g{number}.test",
                          "action": "block", "client": "same-pseudonym", "kind": "tls"}
                await js.publish(events_subject(site), json.dumps(record).encode())
        await client.close()

    asyncio.run(publish())
    by_site = hub.call("GET", "/api/v1/stats?by=site", "group-viewer").json()
    assert {row["key"]: row["events"] for row in by_site["rows"]} == {"ghent": 3, "bruges": 2}
    by_group = hub.call("GET", "/api/v1/stats?by=group&category=games", "group-admin").json()
    assert {row["key"]: row["events"] for row in by_group["rows"]} == {"primary": 3, "secondary": 2}
    ghent_only = hub.call("GET", "/api/v1/stats?by=site", "ghent-viewer").json()
    assert {row["key"]: row["events"] for row in ghent_only["rows"]} == {"ghent": 3}
    assert hub.call("GET", "/api/v1/stats?by=client", "group-viewer").status_code == 422  # no count per pupil

    across = hub.call("GET", "/api/v1/events?client=same-pseudonym", "group-viewer")
    assert across.status_code == 422 and "its site" in across.json()["detail"]
    one_site = hub.call("GET", "/api/v1/events?client=same-pseudonym&site=bruges", "group-viewer").json()
    assert [row["site"] for row in one_site["items"]] == ["bruges", "bruges"]
    mine = hub.call("GET", "/api/v1/events?client=same-pseudonym", "ghent-viewer").json()  # its site implied
    assert [row["site"] for row in mine["items"]] == ["ghent"] * 3
    page = hub.call("GET", "/api/v1/events?limit=2", "group-viewer").json()
    rest = hub.call("GET", f"/api/v1/events?limit=100&cursor={page['next_cursor']}", "group-viewer").json()
    assert len(page["items"]) == 2 and len(rest["items"]) == 3
