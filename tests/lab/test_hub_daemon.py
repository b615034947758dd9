"""A real `edufilter run` in multi-site mode: the group admin's change, put in the NATS
cluster, is live in the gateway's traffic, and the block it causes reaches the group."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("nats", reason="the hub extra (nats-py) is not installed")

from edufilter.hub.agent import APPLIED_FILE, OUTBOX_FILE, hub_dir
from edufilter.hub.model import GROUP_BUCKET
from edufilter.hub.outbox import Outbox
from edufilter_lab.hub import GroupCluster, nats_server_available, start_group_cluster
from edufilter_lab.netns import Lab
from edufilter_lab.school import UPSTREAM_V4, FilteredSchool, start_filtered_school

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("require_lab")]

SITE = "ghent"
POLICY = """
[settings]
timezone = "Europe/Brussels"
default_group = "guests"
block_page_ipv4 = "{block_v4}"
block_page_ipv6 = "{block_v6}"

[lists.blocked]
domain = ["blocked.test"{more}]

[groups.pupils]
title = "Pupils"
[[groups.pupils.clients]]
cidr = "198.18.16.0/23"
[[groups.pupils.rules]]
action = "block"
lists = ["blocked"]

[groups.guests]
title = "Guests"
"""


def write_policy(folder: Path, school: FilteredSchool, *more: str) -> Path:
    end = school.pupils["pupil"].link.end(school.gateway)
    folder.mkdir()
    (folder / "school.toml").write_text(POLICY.format(
        block_v4=end.address(4), block_v6=end.address(6), more="".join(f', "{name}"' for name in more)))
    return folder


@pytest.fixture(scope="module")
def group_school(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GroupCluster, FilteredSchool]]:
    reason = nats_server_available()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("hub-daemon")
    with Lab() as lab:
        school = start_filtered_school(lab, work)
        school.add_pupil("pupil", 16)
        cluster = start_group_cluster(lab, work, [SITE], agent_hosts=False)
        cluster.connect_gateway(SITE, school.gateway)
        cluster.hub("init", "--sites", SITE, "--replicas", "3")
        cluster.hub("put", "--group", "--if-match=0", str(write_policy(work / "group-v1", school)))
        config = cluster.gateway_config(SITE, work / "state").read_text().split("[hub]", 1)[1]
        try:
            school.start_daemon(write_policy(work / "local", school), config="[hub]" + config)
            yield cluster, school
        finally:
            school.stop_daemon()


def https_status(school: FilteredSchool, name: str) -> subprocess.CompletedProcess:
    return school.pupils["pupil"].host.run(
        ["curl", "-k", "-sS", "--max-time", "4", "--resolve", f"{name}:443:{UPSTREAM_V4}", "-o", "/dev/null",
         "-w", "%{http_code}", f"https://{name}/"], timeout=8, check=False)


def test_a_central_change_is_live_in_traffic_and_the_block_reaches_the_group(
    group_school: tuple[GroupCluster, FilteredSchool], tmp_path: Path
) -> None:
    cluster, school = group_school
    applied = hub_dir(school.state_dir) / APPLIED_FILE
    deadline = time.monotonic() + 30
    while not applied.exists() and time.monotonic() < deadline:  # the daemon's agent took revision 1
        time.sleep(0.1)
    assert json.loads(applied.read_text())[GROUP_BUCKET]["revision"] == 1
    assert https_status(school, "www.central.test").stdout == "200"

    changed = cluster.hub("put", "--group", "--if-match=1", str(write_policy(tmp_path / "v2", school,
                                                                            "central.test")))
    assert changed.stdout.strip() == "2"
    deadline = time.monotonic() + 10
    while json.loads(applied.read_text())[GROUP_BUCKET]["revision"] != 2:
        assert time.monotonic() < deadline, school.log()[-3000:]
        time.sleep(0.1)
    school.wait_for_version(school.stored_version())
    blocked = https_status(school, "www.central.test")
    assert blocked.returncode != 0 and "reset" in blocked.stderr.lower(), blocked
    assert https_status(school, "www.other.test").stdout == "200"

    deadline = time.monotonic() + 20
    while True:
        names = [json.loads(line).get("name") for line in cluster.hub("events", f"--site={SITE}").stdout.splitlines()]
        if "www.central.test" in names:
            break
        assert time.monotonic() < deadline, f"no event at the hub: {names}; {school.log()[-2000:]}"
        time.sleep(0.5)
    deadline = time.monotonic() + 5  # the status file is written once a second
    while school.status()["hub"]["events_published"] < 1:
        assert time.monotonic() < deadline, school.status()["hub"]
        time.sleep(0.2)
    hub = school.status()["hub"]
    assert hub["connected"] and hub["revisions"][GROUP_BUCKET] == 2 and hub["events_waiting"] == 0


def revision_applied(school: FilteredSchool) -> int:
    return json.loads((hub_dir(school.state_dir) / APPLIED_FILE).read_text())[GROUP_BUCKET]["revision"]


def test_cut_off_from_the_hub_it_filters_with_its_last_policy_then_takes_the_change(
    group_school: tuple[GroupCluster, FilteredSchool], tmp_path: Path
) -> None:
    cluster, school = group_school
    current = revision_applied(school)
    cluster.link_down(SITE)
    try:
        changed = cluster.hub("put", "--group", f"--if-match={current}",
                              str(write_policy(tmp_path / "v3", school, "central.test", "offline.test")))
        time.sleep(3)
        assert revision_applied(school) == current
        assert https_status(school, "www.offline.test").stdout == "200"  # the change has not arrived...
        blocked = https_status(school, "www.central.test")
        assert blocked.returncode != 0 and "reset" in blocked.stderr.lower()  # ...and the last policy holds
    finally:
        cluster.link_down(SITE, down=False)
    deadline = time.monotonic() + 60
    while revision_applied(school) != int(changed.stdout):
        assert time.monotonic() < deadline, school.log()[-3000:]
        time.sleep(0.2)
    school.wait_for_version(school.stored_version())
    offline = https_status(school, "www.offline.test")
    assert offline.returncode != 0 and "reset" in offline.stderr.lower()


def test_the_daemon_with_its_agent_stops_cleanly(group_school: tuple[GroupCluster, FilteredSchool]) -> None:
    _, school = group_school
    deadline = time.monotonic() + 20  # the last block (www.offline.test) leaves the outbox
    while school.status()["hub"]["events_waiting"]:
        assert time.monotonic() < deadline, school.status()["hub"]
        time.sleep(0.2)
    assert school.stop_daemon() == 0
    assert "Traceback" not in school.log()
    # Events the workers report while stopping stay in the outbox for the next start; the last
    # status counts them.
    waiting = Outbox(hub_dir(school.state_dir) / OUTBOX_FILE, 1000).pending()
    assert school.status()["hub"]["events_waiting"] == waiting
