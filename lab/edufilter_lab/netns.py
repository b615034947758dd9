"""A lab of network namespaces joined by veth pairs, built with iproute2 and always torn down.

Only namespaces the lab creates are touched: veth pairs are created directly inside them, so
the root namespace never sees a lab interface, address, route or firewall rule. Addresses come
from 198.18.0.0/15 (RFC 2544 benchmarking) and 2001:2::/48 (RFC 5180 benchmarking).
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from edufilter.errors import EdufilterError

PREFIX_FAMILY = "efl-"
IPV6_MIN_MTU = 1280
_HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,10}$")
_IFNAME_MAX = 15
_lab_serial = itertools.count()

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class LabError(EdufilterError):
    """The lab could not be built or a command inside it failed."""


def _ip(*args: str, timeout: float = 10.0) -> str:
    try:
        completed = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise LabError(f"ip {' '.join(args)}: {error}") from error
    if completed.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {completed.stderr.strip()}")
    return completed.stdout


def namespaces_available() -> str | None:
    """Return None when this process can build a lab, else the reason it cannot."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces and veth pairs)"
    try:
        _ip("netns", "list")
    except LabError as error:
        return f"`ip netns` is unavailable: {error}"
    return None


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (those under /run/netns)."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _namespace_pids(netns: str) -> list[int]:
    try:
        return [int(pid) for pid in _ip("netns", "pids", netns).split()]
    except LabError:
        return []


def _kill_namespace_processes(netns: str, grace_seconds: float = 2.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _namespace_pids(netns)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_seconds
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = _namespace_pids(netns)
        if not pids:
            return


def _delete_namespace(netns: str) -> None:
    _kill_namespace_processes(netns)
    try:
        _ip("netns", "delete", netns)
    except LabError:
        # Already gone (e.g. deleted by a concurrent cleanup): nothing left to do.
        pass


def _interface_ready(end: Endpoint) -> bool:
    (state,) = json.loads(_ip("-n", end.host.netns, "-j", "link", "show", "dev", end.ifname))
    return bool(state.get("operstate") == "UP" and state.get("qdisc") != "noop")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(prefix_family: str = PREFIX_FAMILY) -> list[str]:
    """Delete namespaces left by crashed runs: names `<family><pid>-...` whose pid is gone."""
    pattern = re.compile(rf"^{re.escape(prefix_family)}(\d+)-")
    removed = []
    for netns in list_namespaces():
        match = pattern.match(netns)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        _delete_namespace(netns)
        removed.append(netns)
    return removed


@dataclass(frozen=True)
class Endpoint:
    """One end of a link: the interface a host has on it and its addresses."""

    host: Host
    ifname: str
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface | None  # None on links below the IPv6 minimum MTU

    def address(self, family: int = 4) -> IPAddress:
        if family == 4:
            return self.ipv4.ip
        if self.ipv6 is None:
            raise LabError(f"{self.host.name}/{self.ifname} has no IPv6 address")
        return self.ipv6.ip


@dataclass(frozen=True)
class Link:
    """A veth pair between two hosts on subnet 198.18.<index>.0/24 and 2001:2:0:<index>::/64."""

    subnet_index: int
    mtu: int
    a: Endpoint
    b: Endpoint

    def end(self, host: Host) -> Endpoint:
        if host is self.a.host:
            return self.a
        if host is self.b.host:
            return self.b
        raise LabError(f"{host.name} is not on link {self.subnet_index}")

    def peer(self, host: Host) -> Endpoint:
        return self.b if self.end(host) is self.a else self.a


class Host:
    """A network namespace of the lab; commands run in it through `ip netns exec`."""

    def __init__(self, lab: Lab, name: str, netns: str) -> None:
        self.lab = lab
        self.name = name
        self.netns = netns

    def __repr__(self) -> str:
        return f"Host({self.name!r}, netns={self.netns!r})"

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 10.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in this namespace and wait for it (killed after `timeout` seconds)."""
        try:
            completed = subprocess.run(
                self.command(argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                check=False,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as error:
            raise LabError(f"{self.name}: {' '.join(argv)} timed out after {timeout} s") from error
        if check and completed.returncode != 0:
            raise LabError(
                f"{self.name}: {' '.join(argv)} exited {completed.returncode}: "
                f"{completed.stderr.strip()[-2000:]}"
            )
        return completed

    def popen(self, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv in this namespace; the lab stops it at teardown if it still runs."""
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        process = subprocess.Popen(self.command(argv), **popen_kwargs)
        self.lab._started.append(process)
        return process

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])


class Lab:
    """Hosts, links and routes in namespaces named `<prefix><host>`; a context manager."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or f"{PREFIX_FAMILY}{os.getpid()}-{next(_lab_serial)}-"
        self.hosts: dict[str, Host] = {}
        self.links: list[Link] = []
        self._started: list[subprocess.Popen[Any]] = []
        self._closed = False
        atexit.register(self.close)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add_host(self, name: str) -> Host:
        """Create a namespace with loopback up and IPv6 duplicate address detection off."""
        if not _HOST_NAME.fullmatch(name):
            raise LabError(f"host name {name!r}: use 1-11 lowercase letters and digits")
        if name in self.hosts:
            raise LabError(f"host {name!r} already exists")
        netns = self.prefix + name
        _ip("netns", "add", netns)
        host = Host(self, name, netns)
        self.hosts[name] = host
        _ip("-n", netns, "link", "set", "lo", "up")
        # Addresses are usable at once: no DAD on interfaces created later in this namespace.
        host.sysctl("net.ipv6.conf.default.accept_dad", "0")
        host.sysctl("net.ipv6.conf.all.accept_dad", "0")
        return host

    def link(self, a: Host, b: Host, subnet_index: int, mtu: int = 1500) -> Link:
        """Join a and b by a veth pair: a gets .1/::1 and b gets .2/::2 on the subnet.

        Links with an MTU below 1280 carry IPv4 only, since Linux disables IPv6 there.
        """
        if not 0 <= subnet_index <= 255:
            raise LabError(f"subnet index {subnet_index} outside 0-255")
        if any(link.subnet_index == subnet_index for link in self.links):
            raise LabError(f"subnet index {subnet_index} is already used")
        with_ipv6 = mtu >= IPV6_MIN_MTU
        ends = []
        for host, peer, host_number in ((a, b, 1), (b, a, 2)):
            ends.append(
                Endpoint(
                    host=host,
                    ifname=f"v{subnet_index}-{peer.name}"[:_IFNAME_MAX],
                    ipv4=ipaddress.IPv4Interface(f"198.18.{subnet_index}.{host_number}/24"),
                    ipv6=(
                        ipaddress.IPv6Interface(f"2001:2:0:{subnet_index:x}::{host_number}/64")
                        if with_ipv6
                        else None
                    ),
                )
            )
        end_a, end_b = ends
        _ip(
            "link", "add", end_a.ifname, "netns", a.netns, "type", "veth",
            "peer", "name", end_b.ifname, "netns", b.netns,
        )  # fmt: skip
        for end in ends:
            netns = end.host.netns
            _ip("-n", netns, "link", "set", "dev", end.ifname, "mtu", str(mtu))
            _ip("-n", netns, "address", "add", str(end.ipv4), "dev", end.ifname)
            if end.ipv6 is not None:
                _ip("-n", netns, "address", "add", str(end.ipv6), "dev", end.ifname, "nodad")
            _ip("-n", netns, "link", "set", "dev", end.ifname, "up")
        link = Link(subnet_index=subnet_index, mtu=mtu, a=end_a, b=end_b)
        self.links.append(link)
        return link

    def wait_until_up(self, timeout: float = 5.0) -> None:
        """Wait until every link end is operationally up and has its real qdisc.

        The kernel activates a new interface's queue from its link-watch work, up to a second
        after `ip link set up`; until then packets are silently dropped.
        """
        deadline = time.monotonic() + timeout
        pending = [end for link in self.links for end in (link.a, link.b)]
        while pending:
            pending = [end for end in pending if not _interface_ready(end)]
            if pending and time.monotonic() > deadline:
                names = ", ".join(f"{end.host.name}/{end.ifname}" for end in pending)
                raise LabError(f"links not up after {timeout} s: {names}")
            if pending:
                time.sleep(0.05)

    def link_between(self, host: Host, other: Host) -> Link:
        for link in self.links:
            if {link.a.host, link.b.host} == {host, other}:
                return link
        raise LabError(f"no link between {host.name} and {other.name}")

    def route(
        self, host: Host, via_host: Host, destinations: Iterable[str] = ("default",)
    ) -> None:
        """Route destinations from host through via_host's address on their shared link.

        "default" means both the IPv4 and the IPv6 default route.
        """
        link = self.link_between(host, via_host)
        device = link.end(host).ifname
        gateway = link.peer(host)
        for destination in destinations:
            if destination == "default":
                families = [4, 6] if gateway.ipv6 is not None else [4]
                targets = [(f, "default") for f in families]
            else:
                network: IPNetwork = ipaddress.ip_network(destination)
                targets = [(network.version, str(network))]
            for family, target in targets:
                _ip(
                    "-n", host.netns, f"-{family}", "route", "add", target,
                    "via", str(gateway.address(family)), "dev", device,
                )  # fmt: skip

    def enable_forwarding(self, host: Host) -> None:
        host.sysctl("net.ipv4.ip_forward", "1")
        host.sysctl("net.ipv6.conf.all.forwarding", "1")

    def set_offloads(
        self, host: Host, ifname: str, tso: bool = False, gso: bool = False, gro: bool = False
    ) -> None:
        """Switch segmentation/receive offloads of one interface (ethtool -K)."""

        def state(enabled: bool) -> str:
            return "on" if enabled else "off"

        host.run(
            ["ethtool", "-K", ifname, "tso", state(tso), "gso", state(gso), "gro", state(gro)]
        )

    def close(self) -> None:
        """Stop everything started in the lab and delete its namespaces; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for process in self._started:
            if process.poll() is None:
                process.terminate()
        for process in self._started:
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=2.0)
        for host in self.hosts.values():
            _delete_namespace(host.netns)
        self.hosts.clear()
        self.links.clear()


@dataclass(frozen=True)
class ThreeHostTopology:
    """client — gateway — server, with forwarding on the gateway.

    client 198.18.0.1 / 2001:2:0:0::1, gateway 198.18.0.2 and 198.18.1.1,
    server 198.18.1.2 / 2001:2:0:1::2.
    """

    client: Host
    gateway: Host
    server: Host
    client_link: Link
    server_link: Link

    @property
    def server_address(self) -> ipaddress.IPv4Address:
        return self.server_link.end(self.server).ipv4.ip

    @property
    def server_address6(self) -> IPAddress:
        return self.server_link.end(self.server).address(6)


def client_gateway_server(lab: Lab, mtu: int = 1500) -> ThreeHostTopology:
    client = lab.add_host("client")
    gateway = lab.add_host("gateway")
    server = lab.add_host("server")
    lab.enable_forwarding(gateway)
    client_link = lab.link(client, gateway, subnet_index=0, mtu=mtu)
    server_link = lab.link(gateway, server, subnet_index=1, mtu=mtu)
    lab.route(client, gateway)
    lab.route(server, gateway)
    lab.wait_until_up()
    return ThreeHostTopology(client, gateway, server, client_link, server_link)
