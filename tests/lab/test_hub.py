"""Multi-site mode against real servers: a three-server NATS cluster (JetStream, replicas 3,
TLS) and gateway agents, each in its own namespace behind one router."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("nats", reason="the hub extra (nats-py) is not installed")

from edufilter.hub.agent import APPLIED_FILE, OUTBOX_FILE, hub_dir
from edufilter.hub.model import (
    GROUP_BUCKET,
    SITE_CHANGES,
    SITES_MAY_LOOSEN,
    site_bucket,
)
from edufilter.hub.outbox import Outbox
from edufilter_lab.hub import GroupCluster, nats_server_available, start_group_cluster
from edufilter_lab.netns import Lab
from edufilter.policy.defaults import default_policy_dir
from edufilter.policy.store import PolicyStore
from edufilter.state import StateDir

pytestmark = pytest.mark.lab

SITES = ["ghent", "bruges", "leuven"]


@pytest.fixture(scope="module")
def cluster(require_lab: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GroupCluster]:
    reason = nats_server_available()
    if reason:
        pytest.skip(reason)
    with Lab() as lab:
        group = start_group_cluster(lab, tmp_path_factory.mktemp("hub"), SITES)
        group.hub("init", "--sites", *SITES, "--replicas", "3")
        yield group


def group_folder(folder: Path, extra_block: str = "") -> Path:
    """The bundled policy, with a list of one more name when extra_block."""
    shutil.copytree(default_policy_dir(), folder)
    if extra_block:
        (folder / "extra.toml").write_text(f'[lists.group-extra]\ndomain = ["{extra_block}"]\n')
    return folder


def site_folder(folder: Path, site: str, cidr: str) -> Path:
    """A site's part: its own block list and its pupils' network in the group's primary group."""
    folder.mkdir()
    (folder / "lists.toml").write_text(f'[lists.{site}-block]\ndomain = ["only-{site}.test"]\n')
    (folder / "clients.toml").write_text(f'[[clients.primary]]\ncidr = "{cidr}"\n')
    return folder


def put(cluster: GroupCluster, folder: Path, *scope: str, if_match: int = 0) -> int:
    done = cluster.hub("put", *scope, f"--if-match={if_match}", str(folder))
    return int(done.stdout.strip())


def revision(cluster: GroupCluster, *scope: str) -> int:
    return json.loads(cluster.hub("show", *scope).stdout)["revision"]


def start_agent(cluster: GroupCluster, site: str, state: Path, user: str | None = None) -> subprocess.Popen:
    config = cluster.gateway_config(site, state, user)
    log = open(state.parent / f"{state.name}-agent.log", "ab")
    return cluster.gateways[site].popen([sys.executable, "-m", "edufilter", "hub", "agent", "--config", str(config)],
                                        stdout=log, stderr=log)


def applied(state: Path) -> dict[str, int]:
    try:
        saved = json.loads((hub_dir(state) / APPLIED_FILE).read_text())
    except FileNotFoundError:
        return {}
    return {bucket: part["revision"] for bucket, part in saved.items() if bucket != "rejected"}


def stored_lists(state: Path) -> set[str]:
    if not (StateDir(state).policy_db).exists():
        return set()
    with PolicyStore(StateDir(state).policy_db) as store:
        return {admin_list.name for admin_list in store.load().lists}


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def agent_log_revisions(state: Path, bucket: str) -> list[int]:
    """The revisions of a bucket the agent applied, in the order it applied them."""
    text = (state.parent / f"{state.name}-agent.log").read_text()
    marker = f"hub: {bucket} revision "
    return [int(line.split(marker)[1].split()[0]) for line in text.splitlines()
            if marker in line and " applied as " in line]


def hub_events(cluster: GroupCluster, site: str) -> list[dict]:
    out = cluster.hub("events", f"--site={site}", "--limit=100000").stdout
    return [json.loads(line) for line in out.splitlines()]


def event(site: str, number: int) -> dict:
    return {"time": "2026-12-07T09:00:00.000000+00:00", "group": "primary", "name": f"n{number}.{site}.test",
            "kind": "tls", "action": "block", "client": f"pseudonym-{number}"}


@pytest.fixture(scope="module")
def gateways(cluster: GroupCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The group policy and each site's part stored, and one agent per site following them."""
    work = tmp_path_factory.mktemp("gateways")
    put(cluster, group_folder(work / "group"), "--group")
    for index, site in enumerate(SITES):
        put(cluster, site_folder(work / f"part-{site}", site, f"198.18.{100 + index}.0/24"), f"--site={site}")
    states = {site: work / site for site in SITES}
    agents = [start_agent(cluster, site, state) for site, state in states.items()]
    yield states
    for agent in agents:
        agent.terminate()
        agent.wait(10)


def test_each_gateway_gets_the_group_policy_and_only_its_own_part(gateways: dict[str, Path]) -> None:
    for site, state in gateways.items():
        wait_for(lambda: applied(state).get(site_bucket(site), 0) > 0)
        lists = stored_lists(state)
        assert "school-block" in lists  # the group's
        assert {f"{other}-block" for other in SITES if other != site}.isdisjoint(lists)
        with PolicyStore(StateDir(state).policy_db) as store:
            cidrs = {client.cidr for client in store.load().clients if client.group == "primary"}
        assert f"198.18.{100 + SITES.index(site)}.0/24" in cidrs
        assert (state / "images" / "policy.img").exists()  # compiled, as a local change is


def test_a_group_change_reaches_every_gateway_and_a_stale_edit_is_refused(
    cluster: GroupCluster, gateways: dict[str, Path], tmp_path: Path
) -> None:
    current = revision(cluster, "--group")
    changed = put(cluster, group_folder(tmp_path / "v2", extra_block="central.test"), "--group", if_match=current)
    assert changed > current
    for state in gateways.values():
        wait_for(lambda: applied(state).get(GROUP_BUCKET) == changed)
        assert "group-extra" in stored_lists(state)

    stale = cluster.hub("put", "--group", f"--if-match={current}", str(tmp_path / "v2"), check=False)
    assert stale.returncode == 2
    assert f"is at revision {changed}, not {current}" in stale.stderr
    assert revision(cluster, "--group") == changed


def test_a_site_part_that_redefines_a_group_item_is_refused(cluster: GroupCluster, tmp_path: Path) -> None:
    part = tmp_path / "bad"
    part.mkdir()
    (part / "lists.toml").write_text('[lists.school-block]\ndomain = ["x.test"]\n')
    before = revision(cluster, "--site=ghent")
    refused = cluster.hub("put", "--site=ghent", f"--if-match={before}", str(part), check=False)
    assert refused.returncode == 2
    assert "school-block" in refused.stderr
    assert revision(cluster, "--site=ghent") == before


def test_a_sites_loosening_is_refused_until_the_group_gives_leave_then_reaches_its_gateway(
    cluster: GroupCluster, gateways: dict[str, Path], tmp_path: Path
) -> None:
    plain = site_folder(tmp_path / "plain", "ghent", "198.18.100.0/24")
    loose = site_folder(tmp_path / "loose", "ghent", "198.18.100.0/24")
    (loose / "allow.toml").write_text('[lists.ghent-allow]\ndomain = ["games.test"]\n')
    (loose / SITE_CHANGES).write_text('[[groups.primary.rules]]\naction = "allow"\nlists = ["ghent-allow"]\n')
    before = revision(cluster, "--site=ghent")
    refused = cluster.hub("put", "--site=ghent", f"--if-match={before}", str(loose), check=False)
    assert refused.returncode == 2 and "loosens group 'primary'" in refused.stderr

    leave = group_folder(tmp_path / "group")
    (leave / SITES_MAY_LOOSEN).write_text("[loosen.primary]\nallow_lists = true\n")
    put(cluster, leave, "--group", if_match=revision(cluster, "--group"))
    loosened = put(cluster, loose, "--site=ghent", if_match=before)
    wait_for(lambda: applied(gateways["ghent"]).get(site_bucket("ghent")) == loosened)
    assert "ghent-allow" in stored_lists(gateways["ghent"])
    # The site's part goes back to plain, so that the later tests' group parts need no leave.
    restored = put(cluster, plain, "--site=ghent", if_match=loosened)
    wait_for(lambda: applied(gateways["ghent"]).get(site_bucket("ghent")) == restored)
    assert "ghent-allow" not in stored_lists(gateways["ghent"])


PROBE = """
import asyncio, json, sys
from pathlib import Path
from edufilter.config import load_config
from edufilter.hub.agent import connect
from edufilter.hub.model import bucket_stream, bucket_subject, events_subject, site_bucket

async def main(config_path, own, other):
    config = load_config(Path(config_path)).hub
    errors = []
    async def error_cb(error):
        errors.append(str(error))
    client = await connect(config, "probe", error_cb=error_cb)
    js = client.jetstream(timeout=2)
    result = {}
    for name, site in (("own", own), ("other", other)):
        try:
            await js.get_last_msg(bucket_stream(site_bucket(site)), bucket_subject(site_bucket(site)))
            result[f"read_{name}"] = "ok"
        except Exception as error:
            result[f"read_{name}"] = type(error).__name__
        try:
            await js.publish(events_subject(site), b"{}")
            result[f"publish_{name}"] = "ok"
        except Exception as error:
            result[f"publish_{name}"] = type(error).__name__
    await asyncio.sleep(0.5)
    result["errors"] = errors
    await client.close()
    print(json.dumps(result))

asyncio.run(main(*sys.argv[1:]))
"""


def test_one_sites_credentials_are_refused_for_another_sites_subjects(
    cluster: GroupCluster, gateways: dict[str, Path], tmp_path: Path
) -> None:
    config = cluster.gateway_config("ghent", tmp_path / "probe")
    done = cluster.gateways["ghent"].run([sys.executable, "-c", PROBE, str(config), "ghent", "bruges"], timeout=30)
    result = json.loads(done.stdout)
    assert result["read_own"] == "ok" and result["publish_own"] == "ok"
    assert result["read_other"] != "ok" and result["publish_other"] != "ok"
    violations = " ".join(result["errors"]).lower()  # nats-py lowercases the server's message
    assert 'violation for publish to "$js.api.stream.msg.get.kv_edufilter-site-bruges"' in violations
    assert 'violation for publish to "edufilter.events.bruges"' in violations

    # a gateway given ghent's credentials but bruges' site name gets nothing of bruges'
    state = tmp_path / "impostor"
    agent = start_agent(cluster, "bruges", state, user="ghent")
    try:
        time.sleep(4)
        assert applied(state).get(site_bucket("bruges"), 0) == 0
        assert not (StateDir(state).policy_db).exists() or "bruges-block" not in stored_lists(state)
    finally:
        agent.terminate()
        agent.wait(10)


def test_a_cut_off_gateway_keeps_its_policy_then_converges_in_order(
    cluster: GroupCluster, gateways: dict[str, Path], tmp_path: Path
) -> None:
    state = gateways["leuven"]
    wait_for(lambda: applied(state).get(GROUP_BUCKET) == revision(cluster, "--group"))
    before = stored_lists(state)
    cluster.link_down("leuven")
    try:
        revisions = []
        for step in range(3):
            revisions.append(put(cluster, group_folder(tmp_path / f"cut{step}", extra_block=f"cut{step}.test"),
                                 "--group", if_match=revision(cluster, "--group")))
        Outbox(hub_dir(state) / OUTBOX_FILE, 10_000).append(
            [json.dumps(event("leuven", number)).encode() for number in range(300)])
        wait_for(lambda: applied(gateways["ghent"])[GROUP_BUCKET] == revisions[-1])
        time.sleep(2)
        assert applied(state)[GROUP_BUCKET] < revisions[0]  # cut off: nothing arrived...
        assert stored_lists(state) == before  # ...and it filters with its last policy
        assert not hub_events(cluster, "leuven")
    finally:
        cluster.link_down("leuven", down=False)
    wait_for(lambda: applied(state)[GROUP_BUCKET] == revisions[-1], timeout=60)
    taken = agent_log_revisions(state, GROUP_BUCKET)
    assert taken[-3:] == revisions  # every change made during the outage, in order
    wait_for(lambda: len(hub_events(cluster, "leuven")) == 300, timeout=60)
    names = [record["name"] for record in hub_events(cluster, "leuven")]
    assert names == [f"n{number}.leuven.test" for number in range(300)]  # in order, none twice


def test_one_server_killed_loses_no_change_and_no_event(
    cluster: GroupCluster, gateways: dict[str, Path], tmp_path: Path
) -> None:
    victim = cluster.servers[0]
    cluster.kill(victim)
    try:
        changed = put(cluster, group_folder(tmp_path / "killed", extra_block="killed.test"), "--group",
                      if_match=revision(cluster, "--group"))
        for site, state in gateways.items():
            Outbox(hub_dir(state) / OUTBOX_FILE, 10_000).append(
                [json.dumps(event(site, 1000 + number)).encode() for number in range(200)])
        for state in gateways.values():
            wait_for(lambda: applied(state)[GROUP_BUCKET] == changed, timeout=60)
        for site in SITES:
            sent = [event(site, 1000 + number)["name"] for number in range(200)]

            def arrived() -> list[str]:
                return [record.get("name") for record in hub_events(cluster, site) if record.get("name") in sent]

            wait_for(lambda: len(arrived()) >= 200, timeout=60)
            assert arrived() == sent  # each once, in order
    finally:
        cluster.start(victim)


def test_a_restarted_agent_resumes_after_the_last_revision_it_applied(
    cluster: GroupCluster, tmp_path: Path
) -> None:
    state = tmp_path / "ghent2"
    agent = start_agent(cluster, "ghent", state)
    try:
        wait_for(lambda: applied(state).get(GROUP_BUCKET) == revision(cluster, "--group"))
    finally:
        agent.terminate()
        agent.wait(10)
    first_run = agent_log_revisions(state, GROUP_BUCKET)
    changed = put(cluster, group_folder(tmp_path / "later", extra_block="later.test"), "--group",
                  if_match=revision(cluster, "--group"))
    agent = start_agent(cluster, "ghent", state)
    try:
        wait_for(lambda: applied(state).get(GROUP_BUCKET) == changed)
    finally:
        agent.terminate()
        agent.wait(10)
    assert agent_log_revisions(state, GROUP_BUCKET) == [*first_run, changed]  # nothing applied twice
    assert "group-extra" in stored_lists(state)
