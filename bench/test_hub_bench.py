"""Multi-site mode at group scale, against a real three-server cluster (JetStream, replicas 3,
TLS) on loopback: a policy change's propagation to many agents, and events from many sites.

Marked lab (it starts servers); EDUFILTER_BENCH_TINY=1 shrinks it. The figures go to
extra_info with their same-run baselines: one admin read's round trip for propagation, plain
(unacknowledged) publishing for events."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("nats", reason="the hub extra (nats-py) is not installed")

from edufilter.config import HubConfig
from edufilter.hub.agent import EventPublisher, PolicyFollower, connect
from edufilter.hub.model import (
    EVENTS_STREAM,
    GROUP_BUCKET,
    bucket_stream,
    bucket_subject,
    encode_part,
    read_part,
)
from edufilter.hub.outbox import Outbox
from edufilter.hub.topology import ServerSettings, ensure_group, server_config
from edufilter_lab.hub import ADMIN, make_tls, nats_server_available
from edufilter.policy.defaults import default_policy_dir

pytestmark = pytest.mark.lab

TINY = os.environ.get("EDUFILTER_BENCH_TINY") == "1"
AGENTS = 5 if TINY else 50
CHANGES = 3 if TINY else 20
SITES = 5 if TINY else 50
EVENTS_PER_SITE = 50 if TINY else 400


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LoopbackCluster:
    urls: list[str]
    ca: Path
    passwords: dict[str, Path]

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
            store_dir=str(folder / f"store{index}"), certificate=str(certificate), key=str(key))
        config = folder / f"bench{index}.conf"
        config.write_text(server_config(settings, ADMIN, {site: users[site] for site in sites}))
        log = open(folder / f"bench{index}.log", "ab")
        processes.append(subprocess.Popen(["nats-server", "-c", str(config)], stdout=log, stderr=log))
    group = LoopbackCluster([f"tls://127.0.0.1:{client}" for client, _ in ports], ca, passwords)

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


def test_events_from_many_sites_accepted_without_loss(benchmark, cluster: LoopbackCluster, tmp_path: Path) -> None:
    record = {"time": "2026-12-07T09:00:00.000000+00:00", "group": "primary", "kind": "tls", "action": "block",
              "client": "0123456789abcdef", "category": "games"}

    async def measure() -> dict:
        admin = await connect(cluster.config(ADMIN[0]), "bench-admin")
        js = admin.jetstream()
        before = (await js.stream_info(EVENTS_STREAM)).state.messages
        publishers, clients = [], []
        for index in range(SITES):
            site = f"site{index}"
            outbox = Outbox(tmp_path / site / "outbox.sqlite", 1_000_000)
            publisher = EventPublisher(outbox, site)
            publisher.add([{**record, "name": f"n{number}.test"} for number in range(EVENTS_PER_SITE)])
            publishers.append(publisher)
            clients.append(await connect(cluster.config(site, site), site))
        started = time.perf_counter()
        sent = await asyncio.gather(*(p.drain(c) for p, c in zip(publishers, clients)))
        hub_seconds = time.perf_counter() - started
        after = (await js.stream_info(EVENTS_STREAM)).state.messages
        payload = json.dumps({**record, "name": "n0.test"}).encode()
        started = time.perf_counter()
        for number in range(SITES * EVENTS_PER_SITE):  # baseline: plain publishing, no acknowledgement
            await admin.publish("bench.baseline", payload)
        await admin.flush()
        plain_seconds = time.perf_counter() - started
        for client in (*clients, admin):
            await client.close()
        total = SITES * EVENTS_PER_SITE
        return {"sites": SITES, "events": total, "stored": after - before, "sent": sum(sent),
                "hub_events_per_s": total / hub_seconds, "plain_publish_per_s": total / plain_seconds,
                "hub_over_plain": plain_seconds / hub_seconds,
                "hub_over_target_10k_per_s": total / hub_seconds / 10_000}

    figures = benchmark.pedantic(lambda: asyncio.run(measure()), rounds=1, iterations=1)
    benchmark.extra_info["figures"] = figures
    print(json.dumps(figures))
    assert figures["stored"] == figures["events"] == figures["sent"]  # none lost, none twice
