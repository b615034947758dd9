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

from edufilter_lab.hub import ADMIN, GroupCluster, nats_server_available, start_group_cluster
from edufilter_lab.netns import Lab

from edufilter.hub.agent import APPLIED_FILE, OUTBOX_FILE, STATS_OUTBOX_FILE, hub_dir
from edufilter.hub.model import (
    EVENTS_STREAM,
    GROUP_BUCKET,
    SITE_CHANGES,
    SITES_MAY_LOOSEN,
    bucket_stream,
    site_bucket,
)
from edufilter.hub.outbox import Outbox
from edufilter.hub.stats import STATS_STREAM
from edufilter.policy.defaults import default_policy_dir
from edufilter.policy.store import PolicyStore
from edufilter.state import StateDir

pytestmark = pytest.mark.lab

SITES = ["ghent", "bruges", "leuven"]
RETENTION_DAYS = 9  # not the default, so the streams' max age shows where it came from


@pytest.fixture(scope="module")
def cluster(require_lab: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GroupCluster]:
    reason = nats_server_available()
    if reason:
        pytest.skip(reason)
    with Lab() as lab:
        group = start_group_cluster(lab, tmp_path_factory.mktemp("hub"), SITES)
        group.hub("init", "--sites", *SITES, "--replicas", "3", f"--retention-days={RETENTION_DAYS}")
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


def hub_stats(cluster: GroupCluster, site: str) -> list[dict]:
    out = cluster.hub("stats", f"--site={site}", "--limit=100000").stdout
    return [json.loads(line) for line in out.splitlines()]


def event(site: str, number: int, category: str = "games") -> dict:
    return {"time": "2026-12-07T09:00:00.000000+00:00", "group": "primary", "name": f"n{number}.{site}.test",
            "kind": "sni", "action": "block", "client": f"pseudonym-{number}", "category": category}


def minute_record(minute: str, blocks: int) -> bytes:
    return json.dumps({"minute": minute, "counts": [
        {"group": "primary", "category": "games", "kind": "sni", "action": "block", "blocks": blocks}]}).encode()


def queue_minutes(state: Path, records: list[bytes]) -> None:
    """Per-minute counts as the agent closes them, waiting in its stats outbox."""
    Outbox(hub_dir(state) / STATS_OUTBOX_FILE, 10_000).append(records)


ADMIN_PROBE = """
import asyncio, json, sys
from edufilter.config import HubConfig
from edufilter.hub.agent import connect

async def main(ca, password_file, user, stream, *servers):
    client = await connect(HubConfig(servers=servers, user=user, password_file=password_file, ca_file=ca), "probe")
    info = await client.jetstream().stream_info(stream)
    await client.close()
    print(json.dumps({"max_age": info.config.max_age, "leader": info.cluster.leader if info.cluster else None}))

asyncio.run(main(*sys.argv[1:]))
"""


def stream_info(cluster: GroupCluster, stream: str) -> dict:
    """The stream's max age (seconds) and the name of the server that leads it, read as the group admin."""
    done = cluster.router.run([sys.executable, "-c", ADMIN_PROBE, str(cluster.ca), str(cluster.passwords[ADMIN[0]]),
                               ADMIN[0], stream, *cluster.urls], timeout=30)
    return json.loads(done.stdout)


AGENT_PROBE = """
import asyncio, json, sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from edufilter.config import load_config
from edufilter.api.standalone import compiling_applier
from edufilter.hub.agent import GatewayAgent

async def main(config_path, state_dir):
    config = load_config(Path(config_path))
    agent = GatewayAgent(config.hub, Path(state_dir), compiling_applier(Path(state_dir)))
    past = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=2)
    records = [{"time": (past + timedelta(seconds=number)).isoformat(), "group": "primary", "category": category,
                "kind": "sni", "action": "block", "name": f"n{number}.test", "destination": None,
                "client": f"c-{number:012x}", "client_address": None, "reference": "ABCDEFGH", "worker": 0}
               for number, category in enumerate(["games"] * 3 + ["social"] * 2)]
    stopping = asyncio.Event()
    running = asyncio.create_task(agent.run(stopping))
    await asyncio.sleep(0.5)  # running: the minute is closed by the agent's clock
    agent.add_events(records)
    for _ in range(200):
        await asyncio.sleep(0.1)
        if agent.status()["stats_published"] and agent.status()["events_published"] == len(records):
            break
    stopping.set()
    await running
    print(json.dumps({"minute": past.isoformat(), **agent.status()}))

asyncio.run(main(*sys.argv[1:]))
"""


def test_the_streams_keep_what_the_configured_retention_says(cluster: GroupCluster) -> None:
    for stream in (EVENTS_STREAM, STATS_STREAM):
        assert stream_info(cluster, stream)["max_age"] == RETENTION_DAYS * 86400


def test_a_gateways_per_minute_counts_reach_the_group_without_pupils(
    cluster: GroupCluster, gateways: dict[str, Path], tmp_path: Path
) -> None:
    config = cluster.gateway_config("bruges", tmp_path / "counting")
    done = cluster.gateways["bruges"].run([sys.executable, "-c", AGENT_PROBE, str(config), str(tmp_path / "counting")],
                                          timeout=60)
    status = json.loads(done.stdout)
    assert status["stats_waiting"] == 0 and status["events_waiting"] == 0, status
    (record,) = [record for record in hub_stats(cluster, "bruges") if record["minute"] == status["minute"]]
    assert record["site"] == "bruges"
    assert sorted((row["category"], row["blocks"]) for row in record["counts"]) == [("games", 3), ("social", 2)]
    assert "c-0000" not in json.dumps(record) and ".test" not in json.dumps(record)


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
import asyncio, json, socket, ssl, sys
from pathlib import Path
import nats
from edufilter.config import load_config
from edufilter.hub.agent import connect
from edufilter.hub.model import bucket_stream, bucket_subject, events_subject, site_bucket, site_inbox
from edufilter.hub.stats import stats_subject

async def outcome(request):
    try:
        await request
        return "ok"
    except Exception as error:
        return type(error).__name__

async def main(config_path, own, other):
    config = load_config(Path(config_path)).hub
    errors = []
    async def error_cb(error):
        errors.append(str(error))
    client = await connect(config, "probe", error_cb=error_cb)
    js = client.jetstream(timeout=2)
    result = {}
    for name, site in (("own", own), ("other", other)):
        bucket = site_bucket(site)
        result[f"kv_get_{name}"] = await outcome(js.get_last_msg(bucket_stream(bucket), bucket_subject(bucket)))
        result[f"kv_put_{name}"] = await outcome(js.publish(bucket_subject(bucket), b"{}"))
        result[f"events_{name}"] = await outcome(js.publish(events_subject(site), b"{}"))
        result[f"stats_{name}"] = await outcome(js.publish(stats_subject(site), b"not json"))
    await client.subscribe(f"$KV.{site_bucket(other)}.>")
    await client.subscribe(f"{site_inbox(other)}.>")
    await asyncio.sleep(0.5)
    result["errors"] = errors
    await client.close()

    host, port = config.servers[0].removeprefix("tls://").split(":")
    async def refused(**options):
        try:
            await (await nats.connect(servers=list(config.servers), connect_timeout=2, allow_reconnect=False,
                                      max_reconnect_attempts=0, **options)).close()
            return "connected"
        except Exception as error:
            return f"{type(error).__name__}: {error}"
    password = Path(config.password_file).read_text().strip()
    result["untrusted_ca"] = await refused(user=config.user, password=password, tls=ssl.create_default_context())
    result["wrong_password"] = await refused(user=config.user, password="guess",
                                             tls=ssl.create_default_context(cafile=config.ca_file))
    with socket.create_connection((host, int(port)), 2) as plain:  # no TLS at all
        result["plain_info"] = plain.recv(4096).decode(errors="replace")
        plain.sendall(b'CONNECT {"user":"%s","pass":"%s"}\\r\\nPING\\r\\n' % (config.user.encode(),
                                                                         password.encode()))
        result["plain_answer"] = plain.recv(4096).decode(errors="replace")  # "": closed
    print(json.dumps(result))

asyncio.run(main(*sys.argv[1:]))
"""


def test_one_sites_credentials_are_refused_for_another_sites_subjects(
    cluster: GroupCluster, gateways: dict[str, Path], tmp_path: Path
) -> None:
    config = cluster.gateway_config("ghent", tmp_path / "probe")
    done = cluster.gateways["ghent"].run([sys.executable, "-c", PROBE, str(config), "ghent", "bruges"], timeout=60)
    result = json.loads(done.stdout)
    assert result["kv_get_own"] == "ok" and result["events_own"] == "ok" and result["stats_own"] == "ok"
    assert result["kv_put_own"] != "ok"  # a site changes no policy, not even its own part
    for action in ("kv_get", "kv_put", "events", "stats"):
        assert result[f"{action}_other"] != "ok", action
    violations = " ".join(result["errors"]).lower()  # nats-py lowercases the server's message
    for refused in ('publish to "$js.api.stream.msg.get.kv_edufilter-site-bruges"',
                    'publish to "$kv.edufilter-site-ghent.policy"', 'publish to "$kv.edufilter-site-bruges.policy"',
                    'publish to "edufilter.events.bruges"', 'publish to "edufilter.stats.bruges"',
                    'subscription to "$kv.edufilter-site-bruges.>"', 'subscription to "_inbox_bruges.>"'):
        assert f"violation for {refused}" in violations, refused
    assert "certificate verify failed" in result["untrusted_ca"]  # the client checks the server
    assert "authorization" in result["wrong_password"].lower()
    # no clear-text client, not even with a good password: the server closes on it
    assert '"tls_required":true' in result["plain_info"] and result["plain_answer"] == ""

    # what a site's credentials let it publish is checked by the readers: the probe's bytes that
    # are no JSON object are skipped, never printed as a count
    counts = cluster.hub("stats", "--site=ghent")
    assert counts.returncode == 0
    assert all(isinstance(json.loads(line), dict) for line in counts.stdout.splitlines())

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
        queue_minutes(state, [minute_record(f"2026-12-07T10:{minute:02d}:00+00:00", 5) for minute in range(30)])
        wait_for(lambda: applied(gateways["ghent"])[GROUP_BUCKET] == revisions[-1])
        time.sleep(2)
        assert applied(state)[GROUP_BUCKET] < revisions[0]  # cut off: nothing arrived...
        assert stored_lists(state) == before  # ...and it filters with its last policy
        assert not hub_events(cluster, "leuven") and not hub_stats(cluster, "leuven")
    finally:
        cluster.link_down("leuven", down=False)
    wait_for(lambda: applied(state)[GROUP_BUCKET] == revisions[-1], timeout=60)
    taken = agent_log_revisions(state, GROUP_BUCKET)
    assert taken[-3:] == revisions  # every change made during the outage, in order
    wait_for(lambda: len(hub_events(cluster, "leuven")) == 300, timeout=60)
    names = [record["name"] for record in hub_events(cluster, "leuven")]
    assert names == [f"n{number}.leuven.test" for number in range(300)]  # in order, none twice
    wait_for(lambda: len(hub_stats(cluster, "leuven")) == 30, timeout=60)
    assert [record["minute"] for record in hub_stats(cluster, "leuven")] == [
        f"2026-12-07T10:{minute:02d}:00+00:00" for minute in range(30)]


def test_one_server_killed_loses_no_change_and_no_event(
    cluster: GroupCluster, gateways: dict[str, Path], tmp_path: Path
) -> None:
    # The worst one to lose: the leader of the group policy's stream.
    leader = stream_info(cluster, bucket_stream(GROUP_BUCKET))["leader"]
    (victim,) = [server for server in cluster.servers if server.host.name == leader]
    cluster.kill(victim)
    try:
        changed = put(cluster, group_folder(tmp_path / "killed", extra_block="killed.test"), "--group",
                      if_match=revision(cluster, "--group"))
        for site, state in gateways.items():
            Outbox(hub_dir(state) / OUTBOX_FILE, 10_000).append(
                [json.dumps(event(site, 1000 + number)).encode() for number in range(200)])
            queue_minutes(state, [minute_record(f"2026-12-07T11:{minute:02d}:00+00:00", minute + 1)
                                  for minute in range(20)])
        for state in gateways.values():
            wait_for(lambda: applied(state)[GROUP_BUCKET] == changed, timeout=60)
        for site in SITES:
            sent = [event(site, 1000 + number)["name"] for number in range(200)]

            def arrived() -> list[str]:
                return [record.get("name") for record in hub_events(cluster, site) if record.get("name") in sent]

            wait_for(lambda: len(arrived()) >= 200, timeout=60)
            assert arrived() == sent  # each once, in order

            def minutes() -> list[str]:
                return [record["minute"] for record in hub_stats(cluster, site) if "T11:" in record.get("minute", "")]

            wait_for(lambda: len(minutes()) >= 20, timeout=60)
            assert minutes() == [f"2026-12-07T11:{minute:02d}:00+00:00" for minute in range(20)]
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
