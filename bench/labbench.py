"""The lab of the end-to-end benchmarks and its measurements.

    pupil 198.18.16.1 --- gateway --- upstream 198.18.1.2

The gateway runs `edufilter run`, a baseline queue consumer (the netfilterqueue + dpkt
worker, or the C accept-all loop behind an NFQUEUE rule installed here), or nothing (the
unfiltered path). The upstream has the school lab's dnsmasq, plus what is built here: nginx
with TLS on 8443 serving objects of web-like sizes, an iperf3 server, and an nftables
counter that drops the UDP flood on arrival (so it counts forwarded packets and nothing
answers them). Everything stays inside the lab's namespaces on 198.18.0.0/15.

On a 2-core machine the clients, the servers, the kernel's forwarding and the filter would
share the CPUs. As on a real gateway, whose clients and servers are other machines, the lab
gives the gateway one core (GATEWAY_CPU) and the clients and servers the other
(ENDPOINT_CPU), for the filtered and the unfiltered runs alike: the clients and servers are
pinned to theirs, the filter to the gateway's, and each interface's receive processing is
steered (RPS) to the core of its host, so the gateway's forwarding, conntrack and queueing
run on the gateway's core and not on the core of whoever sent the packet.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dpkt

from edufilter.capture._queue import parse_queue_counters
from edufilter_lab.netns import Host, Lab, LabError
from edufilter_lab.reference_loop import build_accept_all
from edufilter_lab.school import UPSTREAM_V4, FilteredSchool, start_filtered_school
from edufilter_lab.traffic import capture, wait_for_listener

BENCH = Path(__file__).resolve().parent
FLOOD_SOURCE = BENCH / "udp_flood.c"
PUPIL_SUBNET = 16
PUPILS_CIDR = "198.18.16.0/20"
FLOOD_PORT = 9
TLS_PORT = 8443
IPERF_PORT = 5201
ENDPOINT_CPU = "0"
GATEWAY_CPU = "1"
BLOCKED_CATEGORY = "bench"
QUEUE = 0
PROC_QUEUES = "/proc/net/netfilter/nfnetlink_queue"
# Bytes a connection carries, as shares of connections: a median page moves about 2 MB
# (HTTP Archive, Web Almanac 2020, Page Weight) over some 70 requests at about 4 requests
# per connection (HTTP Archive discussion "Distribution of HTTP requests per TCP
# connection"): some 17 connections of about 120 KB on average. Mean here: 113 KB.
OBJECT_MIX = {8 << 10: 50, 64 << 10: 30, 256 << 10: 15, 1 << 20: 5}

POLICY = """
[settings]
timezone = "Europe/Brussels"
default_group = "pupils"

[categories.bench]
names = ["{category}"]

[groups.pupils]
title = "Pupils"
default_action = "allow"
[[groups.pupils.clients]]
cidr = "{cidr}"
[[groups.pupils.rules]]
action = "block"
categories = ["{category}"]
"""

# Workers as root: the lab's files live in pytest's private (0700) temporary folders.
NGINX_TLS = """\
daemon off;
user root;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/client-body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen {port} ssl reuseport;
        listen [::]:{port} ssl reuseport;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_session_cache off;
        ssl_session_tickets off;
        ssl_protocols TLSv1.2 TLSv1.3;
        root {workdir}/www;
    }}
}}
"""

UPSTREAM_COUNTER = f"""table inet bench {{
    counter flood {{}}
    chain input {{
        type filter hook input priority 0; policy accept;
        udp dport {FLOOD_PORT} counter name "flood" drop
    }}
}}
"""
FORWARD_COUNTER = """table inet benchforward {
    counter forwarded {}
    chain forward {
        type filter hook forward priority -300; policy accept;
        counter name "forwarded"
    }
}
"""


@dataclass(frozen=True)
class FloodRun:
    sent: int
    received: int
    seconds: float

    @property
    def offered_pps(self) -> float:
        return self.sent / self.seconds

    @property
    def forwarded_pps(self) -> float:
        return self.received / self.seconds

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class Throughput:
    """The highest offered rate forwarded with at most the allowed loss (RFC 2544 style)."""

    pps: float
    generator_bound: bool  # the generator reached its own limit without loss: a lower bound


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def build_flood(out_dir: Path) -> Path:
    """Compile bench/udp_flood.c (gcc -O2), the load generator."""
    compiler = shutil.which("gcc")
    if compiler is None:
        raise LabError("gcc is not installed: the load generator cannot be built")
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "udp_flood"
    subprocess.run([compiler, "-O2", "-Wall", "-o", str(binary), str(FLOOD_SOURCE)], check=True,
                   capture_output=True, timeout=60)
    return binary


def pin(pid: int, cpu: str) -> None:
    """Every thread of a running process onto one core."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(pid)], check=True, capture_output=True, timeout=10)


def steer(host: Host, ifname: str, cpus: Sequence[str]) -> None:
    """Receive processing of an interface on these cores (RPS), as if its host were a
    machine of its own."""
    mask = sum(1 << int(cpu) for cpu in cpus)
    host.run(["sh", "-c", f"echo {mask:x} > /sys/class/net/{ifname}/queues/rx-0/rps_cpus"])


def on_endpoint_core(argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", ENDPOINT_CPU, *argv]


class BenchLab:
    """The school of edufilter_lab.school, with the benchmark's servers, tools and counters."""

    def __init__(self, lab: Lab, workdir: Path, blocked_names: Sequence[str]) -> None:
        self.lab = lab
        self.workdir = workdir
        self.blocked_names = list(blocked_names)
        self.school: FilteredSchool = start_filtered_school(lab, workdir)
        self.pupil: Host = self.school.add_pupil("pupil", PUPIL_SUBNET).host
        self.gateway, self.upstream = self.school.gateway, self.school.upstream
        self.lan_interface = self.school.gateway_interface("pupil")
        self.pupil.sysctl("net.ipv4.tcp_tw_reuse", "1")
        self.pupil.sysctl("net.ipv4.ip_local_port_range", "10000 65000")
        self.flood_binary = build_flood(workdir / "build")
        self.accept_all_binary = build_accept_all(workdir / "build")
        self.next_flow = 0
        self._start_tls_server()
        self.upstream.popen(["iperf3", "-s", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
        wait_for_listener(self.upstream, "tcp", IPERF_PORT)
        self.upstream.run(["nft", "-f", "-"], input=UPSTREAM_COUNTER)
        for pid in self.upstream.run(["ip", "netns", "pids", self.upstream.netns]).stdout.split():
            pin(int(pid), ENDPOINT_CPU)  # the servers: dnsmasq, nginx, s_server, aioquic, iperf3
        for link in self.lab.links:
            for end in (link.a, link.b):
                if end.host is not self.gateway:
                    steer(end.host, end.ifname, [ENDPOINT_CPU])
        self.steer_gateway([GATEWAY_CPU])
        self.policy_dir = workdir / "policy"
        self.policy_dir.mkdir()
        (self.policy_dir / "school.toml").write_text(POLICY.format(category=BLOCKED_CATEGORY, cidr=PUPILS_CIDR))

    def _start_tls_server(self) -> None:
        tls = self.workdir / "nginx-tls"
        (tls / "www").mkdir(parents=True)
        (tls / "www" / "index.html").write_text("<html><body>edufilter bench</body></html>\n")
        for size in OBJECT_MIX:
            (tls / "www" / f"object-{size}").write_bytes(random.Random(size).randbytes(size))
        config = tls / "nginx.conf"
        certificate = self.school.certificate
        config.write_text(NGINX_TLS.format(workdir=tls, port=TLS_PORT, cert=certificate.cert, key=certificate.key))
        self.upstream.popen(["nginx", "-p", str(tls), "-c", str(config), "-e", str(tls / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_listener(self.upstream, "tcp", TLS_PORT)

    def steer_gateway(self, cpus: Sequence[str]) -> None:
        """The gateway's receive processing (forwarding, conntrack, queueing) on these cores."""
        for link in self.lab.links:
            steer(self.gateway, link.end(self.gateway).ifname, cpus)

    @contextlib.contextmanager
    def gateway_on_all_cores(self) -> Iterator[None]:
        cores = [str(core) for core in sorted(os.sched_getaffinity(0))]
        self.steer_gateway(cores)
        try:
            yield
        finally:
            self.steer_gateway([GATEWAY_CPU])

    # ---- what filters the gateway

    @contextlib.contextmanager
    def edufilter(self, workers: int, fail: str = "open", pinned: bool = True) -> Iterator[list[int]]:
        """`edufilter run` with the bench policy, on the gateway's core unless pinned is False;
        yields the pids of its processes (supervisor and workers)."""
        config = (f'[network]\nlan_interfaces = ["{self.lan_interface}"]\n'
                  f'[queue]\nworkers = {workers}\nfail = "{fail}"\n')
        self.school.start_daemon(self.policy_dir, config, lists={BLOCKED_CATEGORY: self.blocked_names})
        try:
            pids = [self.school.daemon.pid, *(queue["pid"] for queue in self.school.status()["queues"])]
            if pinned:
                for pid in pids:
                    pin(pid, GATEWAY_CPU)
            yield pids
        finally:
            self.school.stop_daemon()
            self.flush_conntrack()

    @contextlib.contextmanager
    def baseline(self, kind: str, queues: int = 1) -> Iterator[list[int]]:
        """A baseline consumer per queue ("dpkt": netfilterqueue + dpkt, "c": the C accept-all
        loop) on the gateway's core, behind one NFQUEUE rule for the pupils' UDP, conntrack on
        as under edufilter."""
        target = f"--queue-num {QUEUE}" if queues == 1 else f"--queue-balance {QUEUE}:{QUEUE + queues - 1}"
        rule = ["FORWARD", "-i", self.lan_interface, "-p", "udp", "-m", "conntrack", "--ctdir", "ORIGINAL",
                "-j", "NFQUEUE", *target.split()]
        processes = []
        self.gateway.run(["iptables", "-A", *rule])
        try:
            for queue in range(QUEUE, QUEUE + queues):
                if kind == "dpkt":
                    argv = [sys.executable, "-m", "edufilter_lab.baseline_worker", "--queue", str(queue)]
                else:
                    argv = [str(self.accept_all_binary), "--queue", str(queue)]
                process = self.gateway.popen(["taskset", "-c", GATEWAY_CPU, *argv], stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True)
                ready = process.stdout.readline().strip()
                if ready != "ready":
                    raise LabError(f"{kind} consumer did not start: {ready} {process.stderr.read()[-2000:]}")
                processes.append(process)
            yield [process.pid for process in processes]
        finally:
            for process in processes:
                process.terminate()
                process.communicate(timeout=10)
            self.gateway.run(["iptables", "-D", *rule])
            self.flush_conntrack()

    def flush_conntrack(self) -> None:
        """Forget the flood's flows (there are more than the table holds)."""
        self.gateway.run(["conntrack", "-F"], check=False, timeout=30)

    # ---- counters

    def _nft_counter(self, host: Host, table: str, name: str) -> int:
        listing = json.loads(host.run(["nft", "-j", "list", "counter", "inet", table, name]).stdout)
        return next(item["counter"]["packets"] for item in listing["nftables"] if "counter" in item)

    def flood_received(self) -> int:
        return self._nft_counter(self.upstream, "bench", "flood")

    def queued(self, queues: int) -> int:
        """Packets the kernel has handed to the gateway's queues since they were bound."""
        text = self.gateway.run(["cat", PROC_QUEUES]).stdout
        found = [parse_queue_counters(text, queue) for queue in range(QUEUE, QUEUE + queues)]
        return sum(counters["id_sequence"] for counters in found if counters)

    # ---- load

    def flood(self, seconds: float, rate: float = 0, batch: int = 64, pinned: bool = True, count: int = 0) -> FloodRun:
        """UDP packets from the pupils' network, each a new flow; what reached the upstream."""
        argv = [str(self.flood_binary), "--destination", str(UPSTREAM_V4), "--source-net", "198.18.16.0",
                "--sources", "64", "--port", str(FLOOD_PORT), "--first", str(self.next_flow),
                "--seconds", str(seconds), "--rate", str(rate), "--batch", str(batch), "--count", str(count)]
        if pinned:
            argv = on_endpoint_core(argv)
        received_before = self.flood_received()
        result = json.loads(self.pupil.run(argv, timeout=seconds + 30).stdout)
        self.next_flow = result["next"]
        time.sleep(0.3)  # what is still queued comes out
        return FloodRun(result["sent"], self.flood_received() - received_before, result["seconds"])

    def throughput(self, seconds: float, loss: float, start: float, bisections: int, pinned: bool = True) -> Throughput:
        """The highest rate of the flood forwarded with at most `loss` lost: the rate doubles
        from `start` until too much is lost, then `bisections` halvings close in on it.
        Overload is not measured directly: past its capacity a gateway core spends itself on
        packets it then drops (receive livelock), which says nothing about the filter."""
        good, bad, rate = 0.0, None, start
        while bad is None:
            self.flush_conntrack()
            run = self.flood(seconds, rate=rate, pinned=pinned)
            if run.loss > loss:
                bad = rate
            elif run.offered_pps < 0.95 * rate:
                return Throughput(max(good, run.offered_pps), generator_bound=True)
            else:
                good, rate = run.offered_pps, rate * 2
        for _ in range(bisections):
            rate = (max(good, bad / 2) + bad) / 2
            self.flush_conntrack()
            run = self.flood(seconds, rate=rate, pinned=pinned)
            if run.loss > loss:
                bad = rate
            else:
                good = max(good, run.offered_pps)
        return Throughput(good, generator_bound=False)

    def iperf_bits_per_second(self, seconds: float) -> float:
        output = self.pupil.run(on_endpoint_core(["iperf3", "-c", str(UPSTREAM_V4), "-p", str(IPERF_PORT),
                                                  "-t", str(seconds), "-J"]), timeout=seconds + 30).stdout
        return json.loads(output)["end"]["sum_received"]["bits_per_second"]

    def https_connections_per_second(self, count: int, parallel: int = 4, offset: int = 0) -> float:
        """curl makes `count` new TLS connections (each to a name of its own, so none is
        reused) and fetches a small page on each."""
        started = time.monotonic()
        completed = self.pupil.run(on_endpoint_core(
            ["curl", "-sk", "--no-progress-meter", "--resolve", f"*:{TLS_PORT}:{UPSTREAM_V4}", "-Z",
             "--parallel-max", str(parallel), "-o", "/dev/null", "-w", "%{http_code}\n",
             f"https://n[{offset + 1}-{offset + count}].school.test:{TLS_PORT}/index.html"]),
            timeout=300, check=False)
        elapsed = time.monotonic() - started
        succeeded = completed.stdout.split().count("200")
        if succeeded < count * 0.99:
            raise LabError(f"only {succeeded} of {count} HTTPS connections succeeded (curl exit {completed.returncode}): "
                           f"{completed.stderr[-500:]} {completed.stdout[-200:]}")
        return succeeded / elapsed

    def dns_queries_per_second(self, query_file: Path, seconds: float) -> float:
        output = self.pupil.run(on_endpoint_core(["dnsperf", "-s", str(UPSTREAM_V4), "-d", str(query_file),
                                                  "-l", str(seconds), "-c", "4", "-q", "200"]),
                                timeout=seconds + 30).stdout
        for line in output.splitlines():
            if "Queries per second" in line:
                return float(line.split()[-1])
        raise LabError(f"dnsperf printed no rate:\n{output[-1000:]}")

    def transit_delays(self, count: int, rate: float) -> list[float]:
        """Seconds each of `count` new-flow packets spent crossing the gateway (tcpdump on its
        two interfaces: arrival from the pupil, departure to the upstream)."""
        upstream_interface = self.lab.link_between(self.gateway, self.upstream).end(self.gateway).ifname
        inbound, outbound = self.workdir / "in.pcap", self.workdir / "out.pcap"
        with capture(self.gateway, self.lan_interface, inbound), capture(self.gateway, upstream_interface, outbound):
            self.flood(count / rate + 5, rate=rate, batch=1, count=count)
        arrived, left = _flood_times(inbound), _flood_times(outbound)
        return [left[index] - arrived[index] for index in arrived if index in left]

    def browse(self, pages: int, seed: int = 3) -> None:
        """Web-like traffic: per connection one DNS query, then a new TLS connection that
        fetches one object, its size drawn from OBJECT_MIX."""
        rng = random.Random(seed)
        sizes = rng.choices(list(OBJECT_MIX), weights=list(OBJECT_MIX.values()), k=pages)
        names = [f"page{index}.school.test" for index in range(pages)]
        queries = self.workdir / "browse-queries"
        queries.write_text("".join(f"{name} A\n" for name in names))
        self.pupil.run(on_endpoint_core(["dnsperf", "-s", str(UPSTREAM_V4), "-d", str(queries), "-n", "1",
                                         "-Q", "2000"]), timeout=60)
        urls = [f"https://{name}:{TLS_PORT}/object-{size}" for name, size in zip(names, sizes)]
        config = self.workdir / "browse-urls"
        config.write_text("".join(f'url = "{url}"\noutput = "/dev/null"\n' for url in urls))
        self.pupil.run(on_endpoint_core(["curl", "-sk", "--no-progress-meter", "--resolve",
                                         f"*:{TLS_PORT}:{UPSTREAM_V4}", "-Z", "--parallel-max", "8", "-K", str(config)]),
                       timeout=300)

    @contextlib.contextmanager
    def wire_sized_packets(self) -> Iterator[None]:
        """Offloads off on both links, so packets are counted as they are on a wire."""
        ends = [link.a for link in self.lab.links] + [link.b for link in self.lab.links]
        for end in ends:
            self.lab.set_offloads(end.host, end.ifname)
        try:
            yield
        finally:
            for end in ends:
                self.lab.set_offloads(end.host, end.ifname, tso=True, gso=True, gro=True)

    @contextlib.contextmanager
    def forwarded_counter(self) -> Iterator[Callable[[], int]]:
        """A counter of every packet the gateway forwards; yields a function reading it."""
        self.gateway.run(["nft", "-f", "-"], input=FORWARD_COUNTER)
        try:
            yield lambda: self._nft_counter(self.gateway, "benchforward", "forwarded")
        finally:
            self.gateway.run(["nft", "delete", "table", "inet", "benchforward"])


def _flood_times(path: Path) -> dict[int, float]:
    """The flood packets of a capture: packet index (from the payload) -> capture time."""
    times = {}
    with open(path, "rb") as file:
        for timestamp, frame in dpkt.pcap.Reader(file):
            ip = dpkt.ethernet.Ethernet(frame).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.udp.UDP) and len(ip.data.data) >= 8:
                times[int.from_bytes(ip.data.data[:8], "little")] = timestamp
    return times
