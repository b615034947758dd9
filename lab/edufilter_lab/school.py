"""A filtered school in network namespaces: pupils' hosts, the gateway running `edufilter run`,
and an upstream "internet" with a real resolver and real servers — for the daemon's tests,
the demo and the end-to-end benchmarks.

    pupil hosts --- gateway (edufilter run) --- upstream (dnsmasq, nginx, openssl s_server, aioquic)

With router=True a router namespace sits between the gateway and the upstream: one more hop,
where a packet that left the gateway with TTL/hop limit 1 dies (a circumvention tool's decoy).

Every name resolves to the upstream host (dnsmasq answers `#`), the safe-search names to
addresses of their own on it, so a test can tell a rewritten answer from a plain one. Only
198.18.0.0/15 and 2001:2::/48 are used; nothing leaves the namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edufilter_lab.netns import Host, Lab, LabError, Link
from edufilter_lab.traffic import (
    Certificate,
    make_self_signed_certificate,
    script_environment,
    start_nginx,
    start_quic_server,
    start_tls_server,
    wait_for_listener,
)
from edufilter.state import StateDir

UPSTREAM_SUBNET = 1
ROUTER_SUBNET = 2  # gateway --- router, when there is one
PUPIL_NETWORKS = ((4, "198.18.0.0/15"), (6, "2001:2::/48"))
UPSTREAM_V4 = ipaddress.ip_address("198.18.1.2")
UPSTREAM_V6 = ipaddress.ip_address("2001:2:0:1::2")
# The safe-search names resolve here (extra addresses of the upstream host).
SAFE_SEARCH_ADDRESSES = {
    "forcesafesearch.google.com": ("198.18.1.20", "2001:2:0:1::20"),
    "restrict.youtube.com": ("198.18.1.21", "2001:2:0:1::21"),
    "restrictmoderate.youtube.com": ("198.18.1.22", "2001:2:0:1::22"),
    "strict.bing.com": ("198.18.1.23", "2001:2:0:1::23"),
    "safe.duckduckgo.com": ("198.18.1.24", "2001:2:0:1::24"),
}
ECH_NAME = "ech.test"
ECH_HTTPS_RECORD = "00010000050004deadbeef"  # priority 1, target ".", ech=0xdeadbeef
TLS_PORTS = (443, 853)  # 853: DNS over TLS, which the bypass shield blocks
HTTP_PORTS = (80,)
QUIC_PORTS = (443,)
EDUFILTER = [sys.executable, "-m", "edufilter"]
DAEMON_START_TIMEOUT = 30.0


@dataclass
class Pupil:
    host: Host
    link: Link
    address: ipaddress.IPv4Address
    address6: ipaddress.IPv6Address


@dataclass
class FilteredSchool:
    lab: Lab
    gateway: Host
    upstream: Host
    workdir: Path
    certificate: Certificate
    pupils: dict[str, Pupil] = field(default_factory=dict)
    daemon: subprocess.Popen | None = None
    state_dir: Path | None = None
    config_path: Path | None = None
    log_path: Path | None = None

    # ---- hosts

    def add_pupil(self, name: str, subnet_index: int, ipv6_prefix: str | None = None,
                  offloads: bool = True) -> Pupil:
        """A pupil's host on its own link to the gateway (198.18.<index>.1 / 2001:2:0:<index:x>::1,
        or the ::1 of ipv6_prefix when a policy names another /64 for it)."""
        host = self.lab.add_host(name)
        link = self.lab.link(host, self.gateway, subnet_index)
        self.lab.wait_until_up()
        end, gateway_end = link.end(host), link.end(self.gateway)
        address6 = end.address(6)
        if ipv6_prefix is not None:
            network = ipaddress.ip_network(ipv6_prefix)
            address6, gateway6 = network[1], network[2]
            host.run(["ip", "-6", "address", "add", f"{address6}/{network.prefixlen}", "dev", end.ifname, "nodad"])
            self.gateway.run(["ip", "-6", "address", "add", f"{gateway6}/{network.prefixlen}", "dev",
                              gateway_end.ifname, "nodad"])
            host.run(["ip", "-6", "route", "add", "default", "via", str(gateway6), "dev", end.ifname])
            host.run(["ip", "-4", "route", "add", "default", "via", str(gateway_end.address(4)), "dev", end.ifname])
        else:
            self.lab.route(host, self.gateway)
        if not offloads:
            self.lab.set_offloads(host, end.ifname)
        pupil = Pupil(host, link, end.address(4), address6)
        self.pupils[name] = pupil
        return pupil

    def gateway_interface(self, pupil: str) -> str:
        return self.pupils[pupil].link.end(self.gateway).ifname

    # ---- the daemon

    def start_daemon(self, policy_dir: Path, config: str = "", lists: dict[str, list[str]] | None = None,
                     ut1: Path | None = None) -> None:
        """Install the policy (and category lists) into a fresh state folder, then `edufilter run`.

        lists: category -> names, imported as plain lists; ut1: a UT1 tree to import.
        """
        self.state_dir = self.workdir / "state"
        self.run_edufilter("policy", "install-defaults", str(policy_dir))
        for category, names in (lists or {}).items():
            path = self.workdir / f"{category}.list"
            path.write_text("".join(f"{name}\n" for name in names))
            self.run_edufilter("lists", "import", "plain", str(path), "--category", category)
        if ut1 is not None:
            self.run_edufilter("lists", "import", "ut1", str(ut1), timeout=300)
        self.config_path = self.workdir / "edufilter.toml"
        self.config_path.write_text(f'state_dir = "{self.state_dir}"\n{config}')
        self.log_path = self.workdir / "daemon.log"
        with open(self.log_path, "ab") as log:
            self.daemon = self.gateway.popen([*EDUFILTER, "run", "--config", str(self.config_path)],
                                             stdout=log, stderr=log, env=script_environment())
        self.wait_for_workers()

    def wait_for_workers(self, timeout: float = DAEMON_START_TIMEOUT) -> dict:
        """Until every worker reports running (the rules are in place by then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemon is not None and self.daemon.poll() is not None:
                raise LabError(f"edufilter run exited {self.daemon.returncode}:\n{self.log()[-3000:]}")
            status = self.status()
            if status and status["queues"] and all(q["state"] == "running" for q in status["queues"]):
                return status
            time.sleep(0.1)
        raise LabError(f"edufilter workers not running after {timeout} s:\n{self.log()[-3000:]}")

    def stop_daemon(self) -> int:
        if self.daemon is None:
            return 0
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        code = self.daemon.returncode
        self.daemon = None
        return code

    def reload(self) -> None:
        """SIGHUP, then wait until every worker mapped the new policy version."""
        version = self.stored_version()
        self.daemon.send_signal(signal.SIGHUP)
        self.wait_for_version(version)

    def wait_for_version(self, version: int, timeout: float = 10.0) -> None:
        """Until every worker filters with this policy version."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status and all(queue.get("policy_version") == version for queue in status["queues"]):
                return
            time.sleep(0.05)
        raise LabError(f"policy version {version} not live after {timeout} s:\n{self.log()[-3000:]}")

    def run_edufilter(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.gateway.run([*EDUFILTER, *args, "--state-dir", str(self.state_dir)], timeout=timeout)

    def stored_version(self) -> int:
        with sqlite3.connect(StateDir(self.state_dir).policy_db) as db:
            return int(db.execute("SELECT version FROM policy_version").fetchone()[0])

    def status(self) -> dict | None:
        try:
            return json.loads(StateDir(self.state_dir).status.read_text())
        except (OSError, ValueError):
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def events(self) -> list[dict[str, Any]]:
        """The block events the daemon logged, oldest first, as the API shows them."""
        from edufilter.output.events import EventStore

        path = StateDir(self.state_dir).events_db
        if not path.exists():
            return []
        with EventStore(path, None) as store:
            events, cursor = store.query(limit=1000)
        return [event.to_dict() for event in reversed(events)]

    def ruleset(self) -> str:
        return self.gateway.run(["nft", "list", "ruleset"]).stdout


def start_filtered_school(lab: Lab, workdir: Path, router: bool = False) -> FilteredSchool:
    """The gateway and the upstream with its servers (behind a router hop with router=True);
    pupils are added by the caller."""
    gateway = lab.add_host("gateway")
    upstream = lab.add_host("upstream")
    lab.enable_forwarding(gateway)
    upstream_peer = gateway
    if router:
        upstream_peer = lab.add_host("router")
        lab.enable_forwarding(upstream_peer)
        lab.link(gateway, upstream_peer, ROUTER_SUBNET)
        lab.route(gateway, upstream_peer)
    lab.link(upstream_peer, upstream, UPSTREAM_SUBNET)
    lab.route(upstream, upstream_peer)
    lab.wait_until_up()
    upstream_if = lab.link_between(upstream_peer, upstream).end(upstream).ifname
    for v4, v6 in SAFE_SEARCH_ADDRESSES.values():
        upstream.run(["ip", "address", "add", f"{v4}/32", "dev", upstream_if])
        upstream.run(["ip", "-6", "address", "add", f"{v6}/128", "dev", upstream_if, "nodad"])
    # Pupils' networks are routed back through the gateway (and the router).
    for family, network in PUPIL_NETWORKS:
        peer_end = lab.link_between(upstream_peer, upstream).end(upstream_peer)
        upstream.run(["ip", f"-{family}", "route", "replace", network, "via", str(peer_end.address(family))])
        if router:
            gateway_end = lab.link_between(gateway, upstream_peer).end(gateway)
            upstream_peer.run(["ip", f"-{family}", "route", "replace", network, "via",
                               str(gateway_end.address(family))])
    certificate = make_self_signed_certificate(workdir, ["*.test", "*.example", "*.example.org", "example.org",
                                                         "*.google.com", "*.youtube.com", "*.bing.com"])
    _start_resolver(upstream, workdir)
    for port in TLS_PORTS:
        start_tls_server(upstream, port, certificate)
    nginx_dir = workdir / "nginx"
    nginx_dir.mkdir(exist_ok=True)
    start_nginx(upstream, HTTP_PORTS, nginx_dir)
    start_quic_server(upstream, QUIC_PORTS, certificate, workdir)
    return FilteredSchool(lab, gateway, upstream, workdir, certificate)


def _start_resolver(upstream: Host, workdir: Path) -> subprocess.Popen[Any]:
    argv = [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--bind-interfaces", "--port=53", f"--pid-file={workdir / 'dnsmasq.pid'}", "--log-facility=-",
        f"--listen-address={UPSTREAM_V4}", f"--listen-address={UPSTREAM_V6}",
    ]  # fmt: skip
    for name, (v4, v6) in SAFE_SEARCH_ADDRESSES.items():
        argv += [f"--address=/{name}/{v4}", f"--address=/{name}/{v6}"]
    # An HTTPS record with an "ech" parameter: what a browser would learn ECH keys from.
    argv.append(f"--dns-rr={ECH_NAME},65,{ECH_HTTPS_RECORD}")
    argv += [f"--address=/#/{UPSTREAM_V4}", f"--address=/#/{UPSTREAM_V6}"]
    with open(workdir / "dnsmasq.log", "w") as log:
        process = upstream.popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    wait_for_listener(upstream, "udp", 53)
    return process

