"""Multi-site mode at group scale, against a real three-server cluster (JetStream, replicas 3,
TLS) on loopback: a policy change's propagation to many agents, events from many sites at
their paced rate, and a gateway's worker pass while its agent syncs.

Marked lab (it starts servers); EDUFILTER_BENCH_TINY=1 shrinks it, EDUFILTER_HUB_BENCH_SITE_RATE
sets the events a site offers each second (200, the target). The figures go to extra_info with
their same-run baselines: one admin read's round trip for propagation, the offered rate for
events, the worker pass with the agent stopped for the pass while it syncs."""

from __future__ import annotations

import asyncio
import bisect
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import pytest
from mixes import FLOWS, first_packets_mix
from querymix import LookupMix

pytest.importorskip("nats", reason="the hub extra (nats-py) is not installed")

from edufilter_lab.hub import ADMIN, make_tls, nats_server_available

from edufilter.api.standalone import compiling_applier
from edufilter.config import HubConfig
from edufilter.hub.agent import GatewayAgent, OutboxPublisher, PolicyFollower, connect
from edufilter.hub.model import (
    EVENTS_STREAM,
    EVENTS_SUBJECT_PREFIX,
    GROUP_BUCKET,
    bucket_stream,
    bucket_subject,
    encode_part,
    events_subject,
    read_part,
)
from edufilter.hub.outbox import Outbox
from edufilter.hub.topology import ServerSettings, ensure_group, server_config
from edufilter.policy.defaults import default_policy_dir

pytestmark = pytest.mark.lab

TINY = os.environ.get("EDUFILTER_BENCH_TINY") == "1"
AGENTS = 5 if TINY else 50
CHANGES = 3 if TINY else 20
SITES = 5 if TINY else 50
PUBLISHER_PROCESSES = 1 if TINY else 5  # the sites spread over processes, as they are over machines
SITE_RATE = int(os.environ.get("EDUFILTER_HUB_BENCH_SITE_RATE", "200"))  # events a second from each site
OFFER_SECONDS = 2 if TINY else 10
PACE_TICK = 0.05  # events are handed to the outbox in batches this far apart, as the workers hand them over
DRAIN_LIMIT = 120.0  # seconds after the offer for the last acknowledgements
SYNC_SITE = "site0"
SYNC_CHANGE_TICKS = 20  # a group change every 20 ticks (1 s of the agent's running time): far busier than admins
PHASES = 2 if TINY else 6  # the worker pass alone and while the agent syncs, alternated
PHASE_SECONDS = 0.5 if TINY else 2.0
NOW = 1.0
EVENT = {"time": "2026-12-07T09:00:00.000000+00:00", "group": "primary", "kind": "tls", "action": "block",
         "client": "0123456789abcdef", "category": "games"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LoopbackCluster:
    urls: list[str]
    ca: Path
    passwords: dict[str, Path]
    server_pids: list[int]

    def config(self, user: str, site: str = "") -> HubConfig:
        return HubConfig(servers=tuple(self.urls), site=site, user=user, password_file=str(self.passwords[user]),
                         ca_file=str(self.ca))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    reason = nats_server_available()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("hub-bench")
    ca, certificate, key = make_tls(folder, ["127.0.0.1"])
    sites = [f"site{index}" for index in range(max(AGENTS, SITES))]
    users = {ADMIN[0]: ADMIN[1], **{site: f"{site}-secret" for site in sites}}
    passwords = {}
    for user, password in users.items():
        passwords[user] = folder / f"{user}.password"
        passwords[user].write_text(password)
    ports = [(free_port(), free_port()) for _ in range(3)]
    processes = []
    for index, (client_port, cluster_port) in enumerate(ports):
        settings = ServerSettings(
            name=f"bench{index}", listen=f"127.0.0.1:{client_port}", cluster_listen=f"127.0.0.1:{cluster_port}",
            routes=[f"127.0.0.1:{other}" for _, other in ports if other != cluster_port],
            store_dir=str(folder / f"store{index}"), certificate=str(certificate), key=str(key), ca=str(ca))
        config = folder / f"bench{index}.conf"
        config.write_text(server_config(settings, ADMIN, {site: users[site] for site in sites}))
        log = open(folder / f"bench{index}.log", "ab")
        processes.append(subprocess.Popen(["nats-server", "-c", str(config)], stdout=log, stderr=log))
    group = LoopbackCluster([f"tls://127.0.0.1:{client}" for client, _ in ports], ca, passwords,
                            [process.pid for process in processes])

    async def prepare() -> None:
        client = await connect(group.config(ADMIN[0]), "bench-admin")
        deadline = time.monotonic() + 30
        while True:  # the cluster elects its meta leader after the routes are up
            try:
                await ensure_group(client, sites, 3, 14)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        await client.close()

    try:
        time.sleep(1)
        asyncio.run(prepare())
        yield group
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


class TimedFollower(PolicyFollower):
    """Records when each revision reaches the agent; the local compile is benchmarked elsewhere."""

    def __init__(self, state_dir: Path, site: str) -> None:
        super().__init__(state_dir, site, applier=None)  # type: ignore[arg-type]
        self.arrivals: dict[int, float] = {}

    async def take(self, bucket: str, revision: int, data: bytes, headers: dict) -> None:
        self.arrivals[revision] = time.perf_counter()
        self.parts[bucket].revision = revision


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_policy_change_propagation_to_many_agents(benchmark, cluster: LoopbackCluster, tmp_path: Path) -> None:
    part = encode_part(read_part(default_policy_dir()))

    async def measure() -> dict:
        admin = await connect(cluster.config(ADMIN[0]), "bench-admin")
        js = admin.jetstream()
        await js.publish(bucket_subject(GROUP_BUCKET), part)  # the baseline reads it
        stopping = asyncio.Event()
        followers, clients = [], []
        for index in range(AGENTS):
            site = f"site{index}"
            follower = TimedFollower(tmp_path / site, site)
            client = await connect(cluster.config(site, site), site)
            followers.append(follower)
            clients.append(client)
        tasks = [asyncio.create_task(f.follow(c, stopping)) for f, c in zip(followers, clients)]
        await asyncio.sleep(1)  # every agent caught up with the revisions before
        round_trips, latencies = [], []
        for _ in range(CHANGES):
            started = time.perf_counter()
            await js.get_last_msg(bucket_stream(GROUP_BUCKET), bucket_subject(GROUP_BUCKET))
            round_trips.append(time.perf_counter() - started)
            put_at = time.perf_counter()
            revision = (await js.publish(bucket_subject(GROUP_BUCKET), part)).seq
            deadline = time.monotonic() + 30
            while not all(revision in f.arrivals for f in followers):
                assert time.monotonic() < deadline, "a change did not reach every agent"
                await asyncio.sleep(0.005)
            latencies += [f.arrivals[revision] - put_at for f in followers]
        stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in (*clients, admin):
            await client.close()
        read = sorted(round_trips)[len(round_trips) // 2]  # the median
        return {"agents": AGENTS, "changes": CHANGES, "propagation_p99_s": p99(latencies),
                "propagation_max_s": max(latencies), "admin_read_rtt_s": read,
                "p99_over_read_rtt": p99(latencies) / read}

    figures = benchmark.pedantic(lambda: asyncio.run(measure()), rounds=1, iterations=1)
    benchmark.extra_info["figures"] = figures
    print(json.dumps(figures))
    assert figures["propagation_p99_s"] > 0


def offer_events(cluster: LoopbackCluster, sites: list[str], folder: Path, start: Barrier, results: Queue) -> None:
    """One publishing process (its sites' gateways): puts its figures on results."""
    results.put(asyncio.run(_offer_events(cluster, sites, folder, start)))


async def _offer_events(cluster: LoopbackCluster, sites: list[str], folder: Path, start: Barrier) -> dict:
    """Each site offers SITE_RATE events a second for OFFER_SECONDS, through its own outbox and
    publisher as a gateway's agent does; the lag is the age of the oldest event a site still
    waits to have acknowledged, looked at every tick."""
    publishers = [OutboxPublisher(Outbox(folder / site / "outbox.sqlite", 10_000_000), events_subject(site))
                  for site in sites]
    clients = [await connect(cluster.config(site, site), site) for site in sites]
    await asyncio.to_thread(start.wait)  # every process connected
    cpu_started = time.process_time()
    stopping = asyncio.Event()
    runs = [asyncio.create_task(p.run(c, stopping)) for p, c in zip(publishers, clients)]
    per_site = SITE_RATE * OFFER_SECONDS
    offered_at: list[float] = []  # when each batch was offered...
    offered: list[int] = []  # ...and every site's count offered with it
    acknowledged_at_offer_end = 0
    worst_lag = 0.0
    started = time.monotonic()
    while True:
        now = time.monotonic()
        done = offered[-1] if offered else 0
        due = min(per_site, int((now - started) * SITE_RATE))
        if due > done:
            for publisher in publishers:
                publisher.add([{**EVENT, "name": f"n{number}.test"} for number in range(done, due)])
            offered_at.append(now)
            offered.append(due)
            if due == per_site:
                acknowledged_at_offer_end = sum(p.published for p in publishers)
        for publisher in publishers:
            oldest = bisect.bisect_right(offered, publisher.published)
            if oldest < len(offered):
                worst_lag = max(worst_lag, now - offered_at[oldest])
        if all(p.published == per_site for p in publishers):
            break
        assert now < started + OFFER_SECONDS + DRAIN_LIMIT, "the events were not all acknowledged in time"
        await asyncio.sleep(PACE_TICK)
    finished = time.monotonic() - started
    cpu_seconds = time.process_time() - cpu_started
    stopping.set()
    for publisher in publishers:
        publisher.waiting.set()
    await asyncio.gather(*runs)
    for client in clients:
        await client.close()
    for publisher in publishers:
        publisher.outbox.close()
    return {"offered": per_site * len(sites), "sent": sum(p.published for p in publishers),
            "lost": sum(p.lost for p in publishers), "offer_seconds": offered_at[-1] - started,
            "acknowledged_at_offer_end": acknowledged_at_offer_end, "all_acknowledged_seconds": finished,
            "worst_lag_s": worst_lag, "cpu_s": cpu_seconds}


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def machine_busy_seconds() -> tuple[float, float]:
    """CPU seconds busy and in all, summed over the cores, since boot."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK"), sum(ticks) / os.sysconf("SC_CLK_TCK")


def stored_per_site(cluster: LoopbackCluster) -> dict[str, int]:
    async def read() -> dict[str, int]:
        admin = await connect(cluster.config(ADMIN[0]), "bench-admin")
        info = await admin.jetstream().stream_info(EVENTS_STREAM, subjects_filter=EVENTS_SUBJECT_PREFIX + ">")
        await admin.close()
        return dict(info.state.subjects or {})

    return asyncio.run(read())


def test_events_from_many_sites_accepted_without_loss(benchmark, cluster: LoopbackCluster, tmp_path: Path) -> None:
    sites = [f"site{index}" for index in range(SITES)]

    def servers_cpu() -> float:
        return sum(process_cpu_seconds(pid) for pid in cluster.server_pids)

    def measure() -> dict:
        before = stored_per_site(cluster)
        context = multiprocessing.get_context("spawn")
        start, results = context.Barrier(PUBLISHER_PROCESSES + 1, timeout=120), context.Queue()
        processes = [context.Process(target=offer_events,
                                     args=(cluster, sites[index::PUBLISHER_PROCESSES], tmp_path, start, results))
                     for index in range(PUBLISHER_PROCESSES)]
        for process in processes:
            process.start()
        try:
            start.wait()  # the cores' use is read over the offer and its acknowledgements, from here
            servers_before, (busy_before, all_before) = servers_cpu(), machine_busy_seconds()
            outcomes = [results.get(timeout=OFFER_SECONDS + DRAIN_LIMIT + 60) for _ in processes]
            servers_seconds, (busy_after, all_after) = servers_cpu() - servers_before, machine_busy_seconds()
        finally:
            for process in processes:
                process.join(30)
        after = stored_per_site(cluster)
        offered = sum(o["offered"] for o in outcomes)
        offer_seconds = max(o["offer_seconds"] for o in outcomes)
        acknowledged_rate = sum(o["acknowledged_at_offer_end"] for o in outcomes) / offer_seconds
        window = (all_after - all_before) / (os.cpu_count() or 1)  # wall seconds, from the kernel's ticks
        stored = {site: after.get(events_subject(site), 0) - before.get(events_subject(site), 0) for site in sites}
        return {"sites": SITES, "processes": PUBLISHER_PROCESSES, "site_rate": SITE_RATE,
                "offered": offered, "sent": sum(o["sent"] for o in outcomes), "lost": sum(o["lost"] for o in outcomes),
                "stored": sum(stored.values()), "sites_stored_exactly_once": sum(
                    count == SITE_RATE * OFFER_SECONDS for count in stored.values()),
                "offered_per_s": offered / offer_seconds, "acknowledged_per_s_during_offer": acknowledged_rate,
                "acknowledged_over_offered": acknowledged_rate * offer_seconds / offered,
                "backlog_at_offer_end_s": (offered - acknowledged_rate * offer_seconds) / (offered / offer_seconds),
                "all_acknowledged_s": max(o["all_acknowledged_seconds"] for o in outcomes),
                "worst_lag_s": max(o["worst_lag_s"] for o in outcomes),
                # what the CPU went to, in cores, from the start to the last acknowledgement
                "publishers_cores": sum(o["cpu_s"] for o in outcomes) / window,
                "servers_cores": servers_seconds / window,
                "machine_busy_cores": (busy_after - busy_before) / window, "machine_cores": os.cpu_count(),
                "offered_over_target_10k_per_s": offered / offer_seconds / 10_000}

    figures = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info["figures"] = figures
    print(json.dumps(figures))
    assert figures["stored"] == figures["offered"] == figures["sent"]  # none lost...
    assert figures["sites_stored_exactly_once"] == SITES  # ...and none twice


def sync_gateway(cluster: LoopbackCluster, folder: Path, ready: Event, stop: Event, results: Queue) -> None:
    """A gateway's agent syncing, in a process of its own as in the daemon: puts its figures on results."""
    results.put(asyncio.run(_sync_gateway(cluster, folder, ready, stop)))


async def _sync_gateway(cluster: LoopbackCluster, folder: Path, ready: Event, stop: Event) -> dict:
    """GatewayAgent with the compiling applier, as `edufilter hub agent` runs it, handed SITE_RATE
    block events a second and following a group change every SYNC_CHANGE_TICKS (published by
    the group's admin from here). Paced in ticks of running time: a stopped process offers
    nothing and catches nothing up."""
    state = folder / "gateway"
    agent = GatewayAgent(cluster.config(SYNC_SITE, SYNC_SITE), state, compiling_applier(state))
    admin = await connect(cluster.config(ADMIN[0]), "bench-admin")
    js = admin.jetstream()
    part = encode_part(read_part(default_policy_dir()))
    stopping = asyncio.Event()
    running = asyncio.create_task(agent.run(stopping))
    latest = (await js.publish(bucket_subject(GROUP_BUCKET), part)).seq  # the revisions before it, caught up
    while agent.follower.revisions()[GROUP_BUCKET] < latest and not stop.is_set():
        await asyncio.sleep(PACE_TICK)
    ready.set()
    applied_before, changes, offered, ticks = agent.follower.applied, 0, 0, 0
    while not stop.is_set():
        agent.add_events([{**EVENT, "name": f"n{number}.test"} for number in range(int(SITE_RATE * PACE_TICK))])
        offered += int(SITE_RATE * PACE_TICK)
        if ticks % SYNC_CHANGE_TICKS == 0:
            await js.publish(bucket_subject(GROUP_BUCKET), part)
            changes += 1
        ticks += 1
        await asyncio.sleep(PACE_TICK)
    stopping.set()
    for waiting in (agent.follower.changed, agent.events.waiting, agent.stats.waiting):
        waiting.set()
    await running
    await admin.close()
    return {"changes_published": changes, "changes_applied": agent.follower.applied - applied_before,
            "events_offered": offered, "events_published": agent.events.published}


def test_worker_pass_while_gateway_agent_syncs(benchmark, cluster: LoopbackCluster, worker_loop,
                                               mixes: dict[str, LookupMix], tmp_path: Path) -> None:
    """The worker's classify pass (bench/test_classify_bench.py's input) in phases alternated
    with the agent's process stopped (SIGSTOP) and running; the servers share the cores too,
    so the ratio bounds from below what a gateway, whose hub is elsewhere, would see."""
    packets = first_packets_mix(FLOWS, names=[name.decode() for name in mixes["realistic"].names[:FLOWS]])

    def phase() -> float:
        passes, spent = 0, 0.0
        while spent < PHASE_SECONDS:
            loop = worker_loop()
            started = time.perf_counter()
            loop.classify_offline(packets, NOW)
            spent += time.perf_counter() - started
            passes += 1
        return passes * len(packets) / spent

    def measure() -> dict:
        context = multiprocessing.get_context("spawn")
        ready, stop, results = context.Event(), context.Event(), context.Queue()
        agent = context.Process(target=sync_gateway, args=(cluster, tmp_path, ready, stop, results))
        agent.start()
        pid = agent.pid
        assert pid is not None
        alone, syncing = [], []
        try:
            assert ready.wait(120), "the gateway agent did not catch up with the group's policy"
            for _ in range(PHASES):
                os.kill(pid, signal.SIGSTOP)
                alone.append(phase())
                os.kill(pid, signal.SIGCONT)
                syncing.append(phase())
        finally:
            os.kill(pid, signal.SIGCONT)
            stop.set()
            synced = results.get(timeout=60)
            agent.join(30)
        alone_pps, syncing_pps = sorted(alone)[len(alone) // 2], sorted(syncing)[len(syncing) // 2]
        return {"packets": len(packets), "phases": PHASES, "phase_s": PHASE_SECONDS,
                "worker_pps_alone": alone_pps, "worker_pps_syncing": syncing_pps,
                "syncing_over_alone": syncing_pps / alone_pps, **synced}

    figures = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info["figures"] = figures
    print(json.dumps(figures))
    assert figures["changes_applied"] > 0 and figures["events_published"] > 0  # it did sync
