"""The enforce rules in a real gateway namespace, with a real NFQUEUE listener deciding flows.

The listener is this file run as a script inside the gateway namespace (`listen`): it logs
every queued packet as a JSON line and decides flows the way a worker does, with an NF_REPEAT
verdict whose packet mark carries the code. The same script serves a trickle and an echo
server, an interactive client (`talk`) and a UDP probe that reads ICMP errors. Everything
happens in lab namespaces; the root namespace's ruleset is compared before and after.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import re
import select
import socket
import socketserver
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edufilter.rules import conntrack, netfilter
from edufilter.rules.marks import (
    ALLOW,
    BOUND,
    DROP,
    REJECT,
    SAFE_SEARCH,
    UNDECIDED,
    MarkLayout,
)
from edufilter.rules.netfilter import Backend, InstalledRules, RuleSettings
from edufilter.errors import NetfilterError
from edufilter_lab.netns import Host, Lab
from edufilter_lab.traffic import (
    SchoolNetwork,
    quic_client,
    start_school_network,
    wait_for_listener,
)

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("require_lab")]

HELPER = Path(__file__).resolve()
LAYOUT = MarkLayout(0x00F00000)  # not the default, so no rule may assume it
BULK_PORT = 8000  # python -m http.server with a large file
BULK_FILE = "bulk.bin"
BULK_SIZE = 2 * 1024 * 1024
TRICKLE_PORT = 8001  # this file's `trickle` server: a small chunk every TRICKLE_INTERVAL
TRICKLE_INTERVAL = 0.05
ECHO_PORT = 8002  # this file's `echo` server, for the `talk` client's interactive session
DNS_NAME = "www.school.test"
CLOSED_UDP_PORT = 9999
# ICMP types and codes seen through IP_RECVERR (linux/errqueue.h, RFC 792, RFC 4443).
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
ICMP_ADMIN_PROHIBITED = (3, 13)
ICMP6_ADMIN_PROHIBITED = (1, 1)
IP_RECVERR, IPV6_RECVERR = 11, 25
CURL_RESET_EXIT = (56, 7, 35)  # receive failure, connect failure, TLS connect failure
CURL_TIMEOUT_EXIT = 28


# --- the lab --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def network(
    require_lab: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SchoolNetwork]:
    """The lab's school network, plus a bulk download, a trickle and an echo server."""
    workdir = tmp_path_factory.mktemp("netfilter-lab")
    (workdir / "www").mkdir()
    (workdir / "www" / BULK_FILE).write_bytes(os.urandom(BULK_SIZE))
    root_before = _root_ruleset()
    with Lab() as lab:
        network = start_school_network(lab, workdir)
        servers = {
            BULK_PORT: ["-m", "http.server", str(BULK_PORT), "--bind", "::", "--directory",
                        str(workdir / "www")],
            TRICKLE_PORT: [str(HELPER), "trickle", str(TRICKLE_PORT)],
            ECHO_PORT: [str(HELPER), "echo", str(ECHO_PORT)],
        }  # fmt: skip
        for port, argv in servers.items():
            network.server.popen(
                [sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            wait_for_listener(network.server, "tcp", port)
        yield network
    # Every rule went into the lab's gateway; the root namespace must look as before.
    assert "edufilter" not in _root_ruleset().lower()
    assert _root_ruleset() == root_before


def gateway_interface(network: SchoolNetwork, toward: Host) -> str:
    """The gateway's interface on its link to `toward`."""
    gateway = network.topology.gateway
    return network.lab.link_between(gateway, toward).end(gateway).ifname


def _root_ruleset() -> str:
    """The root namespace's ruleset, only read (the tests never write there)."""
    return subprocess.run(
        ["nft", "list", "ruleset"], capture_output=True, text=True, timeout=10, check=True
    ).stdout


@pytest.fixture
def gateway_rules(network: SchoolNetwork) -> Iterator[InstallRules]:
    """install(**settings) in the gateway; removed, and conntrack emptied, after the test."""
    gateway = network.topology.gateway
    installed: list[InstalledRules] = []

    def install(backend: Backend = Backend.XT, **options: Any) -> InstalledRules:
        options.setdefault("layout", LAYOUT)
        installed.append(netfilter.install(RuleSettings(**options), backend, gateway.netns))
        return installed[-1]

    try:
        yield install
    finally:
        for rules in installed:
            rules.remove()
        netfilter.remove_stale(gateway.netns)
        gateway.run(["conntrack", "-F"], check=False)


class Listener:
    """The NFQUEUE listener subprocess and the packets it logged."""

    def __init__(self, process: subprocess.Popen[str], log: Path) -> None:
        self.process = process
        self.log = log

    def packets(self, port: int | None = None) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        records = [json.loads(line) for line in lines]
        return [r for r in records if port is None or port in (r["sport"], r["dport"])]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)


InstallRules = Callable[..., InstalledRules]
StartListener = Callable[..., Listener]


@pytest.fixture
def listener(
    network: SchoolNetwork, tmp_path: Path, gateway_rules: InstallRules
) -> Iterator[StartListener]:
    """start(mode, queues) runs a listener in the gateway until the test ends.

    It depends on gateway_rules so that it stops before the rules go, as a worker does.
    """
    started: list[Listener] = []

    def start(mode: str, queues: range = range(1)) -> Listener:
        log = tmp_path / f"listener-{len(started)}.jsonl"
        argv = [sys.executable, str(HELPER), "listen", "--mode", mode, "--log", str(log)]
        argv += ["--mask", hex(LAYOUT.mask), *(f"--queue={q}" for q in queues)]
        process = network.topology.gateway.popen(argv, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready and process.stdout.readline().strip() == "ready", "listener did not start"
        started.append(Listener(process, log))
        return started[-1]

    try:
        yield start
    finally:
        for running in started:
            running.stop()


def url(network: SchoolNetwork, family: int, port: int, path: str = "/") -> str:
    address = network.server_address(family)
    host = f"[{address}]" if family == 6 else str(address)
    return f"http://{host}:{port}{path}"


def curl(
    host: Host, target: str, max_time: float = 5, *extra: str
) -> subprocess.CompletedProcess[str]:
    argv = ["curl", "-sS", "-k", "-o", "/dev/null", "-w", "%{http_code}"]
    argv += ["--max-time", str(max_time), *extra, target]
    return host.run(argv, timeout=max_time + 5, check=False)


def original_packets(gateway: Host, protocol: str, port: int) -> int:
    """Original-direction packets conntrack counted for the flow to port."""
    listing = gateway.run(
        ["conntrack", "-L", "-p", protocol, "--dport", str(port), "-o", "extended"], check=False
    ).stdout
    counts = re.findall(r"packets=(\d+)", listing)
    assert counts, f"no conntrack entry for {protocol}/{port}: {listing}"
    return int(counts[0])


# --- backend and install/remove -------------------------------------------------------------


def test_this_kernel_has_no_nft_queue_so_xt_is_chosen(network: SchoolNetwork) -> None:
    gateway = network.topology.gateway
    before = gateway.run(["nft", "list", "ruleset"]).stdout
    assert netfilter.detect_backend(gateway.netns) is Backend.XT
    assert gateway.run(["nft", "list", "ruleset"]).stdout == before


def test_nft_script_is_valid_but_for_the_missing_queue_expression(network: SchoolNetwork) -> None:
    """nft -c lets the kernel check every rule: only the queue statements may fail here."""
    settings = RuleSettings(
        queues=range(2, 6), fail_open=True, lan_interfaces=("lan0", "lan1"),
        filter_local=True, layout=LAYOUT, ipv6=False, cpu_fanout=True,
    )  # fmt: skip
    script = netfilter.render(settings, Backend.NFT)
    checked = network.topology.gateway.run(["nft", "-c", "-f", "-"], input=script, check=False)
    assert checked.returncode != 0
    failing_lines = {int(n) for n in re.findall(r"^/dev/stdin:(\d+):", checked.stderr, re.M)}
    queue_lines = {n for n, line in enumerate(script.splitlines(), 1) if " queue num " in line}
    assert failing_lines == queue_lines
    assert checked.stderr.count("No such file or directory") == len(queue_lines)
    without_queue = re.sub(r"queue num \S+( \S+)?$", "accept", script, flags=re.M)
    network.topology.gateway.run(["nft", "-c", "-f", "-"], input=without_queue)


def test_nft_install_fails_atomically_on_this_kernel(network: SchoolNetwork) -> None:
    gateway = network.topology.gateway
    before = gateway.run(["nft", "list", "ruleset"]).stdout
    with pytest.raises(NetfilterError, match="No such file or directory"):
        netfilter.install(RuleSettings(layout=LAYOUT), Backend.NFT, netns=gateway.netns)
    assert gateway.run(["nft", "list", "ruleset"]).stdout == before


def test_foreign_rules_survive_and_remove_restores_the_ruleset(network: SchoolNetwork) -> None:
    """The school's iptables rules stay as they are (ours are a table of their own, ahead of
    theirs); remove() leaves the ruleset exactly as install() found it."""
    gateway = network.topology.gateway
    foreign = ["-A", "FORWARD", "-s", "198.18.99.0/24", "-j", "ACCEPT"]
    foreign6 = ["-A", "FORWARD", "-s", "2001:2:0:99::/64", "-j", "ACCEPT"]
    gateway.run(["iptables", *foreign])
    gateway.run(["ip6tables", *foreign6])
    try:
        before = gateway.run(["nft", "list", "ruleset"]).stdout
        school = {tool: gateway.run([tool, "-S"]).stdout for tool in ("iptables", "ip6tables")}
        settings = RuleSettings(
            queues=range(2), lan_interfaces=(gateway_interface(network, network.client),),
            filter_local=True, layout=LAYOUT,
        )  # fmt: skip
        rules = netfilter.install(settings, Backend.XT, netns=gateway.netns)
        assert {tool: gateway.run([tool, "-S"]).stdout for tool in school} == school
        table = netfilter._nft_json(["list", "table", "inet", "edufilter"], gateway.netns)
        chains = {item["chain"]["name"]: item["chain"] for item in table if "chain" in item}
        assert chains["forward"]["hook"] == "forward" and chains["forward"]["prio"] == -10
        assert chains["output"]["hook"] == "output" and chains["output"]["prio"] == -10
        assert "dormant" not in _table_text(gateway)  # woken with its queue rule
        queue_rules = [item["rule"]["expr"] for item in table if "rule" in item and item["rule"]["chain"] == "to_queue"]
        assert queue_rules == [[{"counter": {"packets": 0, "bytes": 0}}, {"xt": {"type": "target", "name": "NFQUEUE"}}]]
        assert rules.queued_packets() == 0
        with pytest.raises(NetfilterError, match="already installed"):
            netfilter.install(settings, Backend.XT, netns=gateway.netns)
        rules.remove()
        assert gateway.run(["nft", "list", "ruleset"]).stdout == before
        assert rules.queued_packets() is None  # how the supervisor sees that its rules are gone
        rules.remove()
        assert gateway.run(["nft", "list", "ruleset"]).stdout == before
    finally:
        netfilter.remove_stale(gateway.netns)
        # The foreign rules made the filter tables; the next test expects none.
        gateway.run(["nft", "delete", "table", "ip", "filter"], check=False)
        gateway.run(["nft", "delete", "table", "ip6", "filter"], check=False)


def test_remove_leaves_an_empty_namespace_empty(network: SchoolNetwork) -> None:
    gateway = network.topology.gateway
    assert gateway.run(["nft", "list", "ruleset"]).stdout == ""
    settings = RuleSettings(filter_local=True, layout=LAYOUT)
    netfilter.install(settings, Backend.XT, netns=gateway.netns).remove()
    assert gateway.run(["nft", "list", "ruleset"]).stdout == ""


def test_remove_stale_after_a_crash(network: SchoolNetwork) -> None:
    gateway = network.topology.gateway
    netfilter.install(RuleSettings(layout=LAYOUT), Backend.XT, netns=gateway.netns)
    # The daemon died without remove(): a new one cleans up before installing again.
    assert netfilter.remove_stale(gateway.netns) is True
    assert gateway.run(["nft", "list", "ruleset"]).stdout == ""
    assert netfilter.remove_stale(gateway.netns) is False


def test_a_failing_queue_rule_takes_the_dormant_table_back_out(
    network: SchoolNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = network.topology.gateway

    def refused(settings: RuleSettings, netns: str | None) -> None:
        assert "\tflags dormant\n" in _table_text(gateway)  # no packet has met it
        raise NetfilterError("xt NFQUEUE rule: refused")

    monkeypatch.setattr(netfilter, "_add_xt_queue_rule", refused)
    with pytest.raises(NetfilterError, match="refused"):
        netfilter.install(RuleSettings(layout=LAYOUT), Backend.XT, netns=gateway.netns)
    assert gateway.run(["nft", "list", "ruleset"]).stdout == ""


def test_the_kernel_refusing_the_queue_rule_is_a_clear_error(network: SchoolNetwork) -> None:
    failed = network.topology.gateway.run(
        [sys.executable, "-m", "edufilter.rules.nft_netlink", "add-xt-queue", "--table", "missing", "--chain",
         "to_queue", "--first", "0", "--count", "1"], check=False)
    assert failed.returncode == 1
    assert "No such file or directory (is the table there" in failed.stderr


def _nft_queue_counter(gateway: Host) -> int:
    listing = netfilter._nft_json(["list", "chain", "inet", "edufilter", "to_queue"], gateway.netns)
    (rule,) = [item["rule"] for item in listing if "rule" in item]
    return rule["expr"][0]["counter"]["packets"]


def _table_text(gateway: Host) -> str:
    """Our table as `nft list` prints it (nft 1.0.6's JSON garbles table flags)."""
    return gateway.run(["nft", "list", "table", "inet", "edufilter"]).stdout


# --- flows and verdicts ---------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_allowed_flow_leaves_the_queue_after_its_first_packets(
    network: SchoolNetwork, gateway_rules: InstallRules, listener: StartListener, family: int
) -> None:
    rules = gateway_rules(queues=range(2))
    worker = listener("allow", queues=range(2))
    completed = curl(network.client, url(network, family, BULK_PORT, f"/{BULK_FILE}"))
    assert completed.stdout == "200", completed.stderr
    queued = worker.packets(BULK_PORT)
    # the to_queue counter, read over netlink as the supervisor reads it, and as nft reads it
    assert rules.queued_packets() == len(worker.packets()) == _nft_queue_counter(network.topology.gateway)
    # SYN and ACK stay undecided; the request decides the flow and nothing follows it.
    assert [p["code"] for p in queued] == [UNDECIDED, UNDECIDED, UNDECIDED]
    assert [p["payload"] > 0 for p in queued] == [False, False, True]
    assert {p["family"] for p in queued} == {family}
    total = original_packets(network.topology.gateway, "tcp", BULK_PORT)
    assert total > 10 * len(queued), total  # the ACKs of a 2 MB download stayed in the kernel
    (flow,) = conntrack.flows_with_code(LAYOUT, ALLOW, network.topology.gateway.netns)
    assert (flow.family, flow.dst, flow.dport) == (
        family, network.server_address(family), BULK_PORT
    )
    print(f"\nIPv{family} HTTP download: {len(queued)} of {total} client packets queued")


def test_https_flow_is_decided_on_its_client_hello(
    network: SchoolNetwork, gateway_rules: InstallRules, listener: StartListener
) -> None:
    gateway_rules()
    worker = listener("allow")
    target = "https://www.school.test/"
    resolve = f"www.school.test:443:{network.server_address(4)}"
    completed = curl(network.client, target, 5, "--resolve", resolve)
    assert completed.stdout == "200", completed.stderr
    queued = worker.packets(443)
    assert len(queued) == 3 and queued[-1]["payload"] > 200  # SYN, ACK, ClientHello
    total = original_packets(network.topology.gateway, "tcp", 443)
    print(f"\nHTTPS with curl: {len(queued)} of {total} client packets queued")


def test_quic_flow_is_decided_on_its_first_initial(
    network: SchoolNetwork, gateway_rules: InstallRules, listener: StartListener
) -> None:
    gateway_rules()
    worker = listener("allow")
    assert quic_client(network.client, network.server_address(4), 443, "quic.school.test") == "200"
    (initial,) = worker.packets(443)
    assert initial["proto"] == socket.IPPROTO_UDP and initial["payload"] >= 1200


@pytest.mark.parametrize("family", [4, 6])
def test_rejected_tcp_flow_is_reset_promptly(
    network: SchoolNetwork, gateway_rules: InstallRules, listener: StartListener, family: int
) -> None:
    gateway_rules()
    listener("reject")
    started = time.monotonic()
    completed = curl(network.client, url(network, family, 80))
    assert completed.returncode in CURL_RESET_EXIT, completed.stderr
    assert "reset" in completed.stderr.lower()
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("family", [4, 6])
def test_rejected_udp_flow_gets_icmp_admin_prohibited(
    network: SchoolNetwork, gateway_rules: InstallRules, listener: StartListener, family: int
) -> None:
    gateway_rules()
    worker = listener("reject")
    probe = network.client.run(
        [sys.executable, str(HELPER), "udp-probe", str(network.server_address(family)),
         str(CLOSED_UDP_PORT)],
        timeout=10,
    )  # fmt: skip
    error = json.loads(probe.stdout)
    expected = (
        (SO_EE_ORIGIN_ICMP, *ICMP_ADMIN_PROHIBITED)
        if family == 4
        else (SO_EE_ORIGIN_ICMP6, *ICMP6_ADMIN_PROHIBITED)
    )
    assert (error["origin"], error["type"], error["code"]) == expected
    assert len(worker.packets(CLOSED_UDP_PORT)) == 1


def test_dropped_flow_times_out(
    network: SchoolNetwork, gateway_rules: InstallRules, listener: StartListener
) -> None:
    gateway_rules()
    worker = listener("drop")
    completed = curl(network.client, url(network, 4, 80), 1.5)
    assert completed.returncode == CURL_TIMEOUT_EXIT, completed.stderr
    assert len(worker.packets(80)) == 3  # later retransmissions are dropped in the kernel


def test_flow_past_the_bound_arrives_with_code_bound(
    network: SchoolNetwork, gateway_rules: InstallRules, listener: StartListener
) -> None:
    gateway_rules(inspect_packets=4)
    worker = listener("bound")  # decides nothing until the rules say the bound is reached
    # The trickle server paces the client's packets, so none is queued while one waits.
    completed = curl(network.client, url(network, 4, TRICKLE_PORT), 1, "--http0.9")
    assert completed.returncode == CURL_TIMEOUT_EXIT, completed.stderr  # still streaming
    codes = [p["code"] for p in worker.packets(TRICKLE_PORT)]
    assert codes == [UNDECIDED] * 4 + [BOUND]
    assert conntrack.flows_with_code(LAYOUT, ALLOW, network.topology.gateway.netns)


@pytest.mark.parametrize("family", [4, 6])
def test_dns_queries_are_queued_every_time(
    network: SchoolNetwork, gateway_rules: InstallRules, listener: StartListener, family: int
) -> None:
    gateway_rules(inspect_packets=2)
    worker = listener("accept")  # a worker answers queries one by one, never deciding the flow
    source = network.topology.client_link.end(network.client).address(family)
    queries = 4  # twice the bound, all on one flow (the same source port)
    for _ in range(queries):
        answer = network.client.run(
            ["dig", f"@{network.server_address(family)}", "-b", f"{source}#5353", DNS_NAME,
             "AAAA" if family == 6 else "A", "+short", "+tries=1", "+time=2"],
        ).stdout.split()  # fmt: skip
        assert answer == [str(network.server_address(family))]
    queued = worker.packets(53)
    assert len(queued) == queries
    assert {(p["sport"], p["dport"], p["code"]) for p in queued} == {(5353, 53, UNDECIDED)}


def test_safe_search_flow_queues_its_answers(
    network: SchoolNetwork, gateway_rules: InstallRules, listener: StartListener
) -> None:
    gateway_rules()
    worker = listener("safe-search")
    source = network.topology.client_link.end(network.client).address(4)
    for _ in range(2):
        network.client.run(
            ["dig", f"@{network.server_address(4)}", "-b", f"{source}#5354", DNS_NAME, "+short",
             "+tries=1", "+time=2"],
        )  # fmt: skip
    queued = [(p["sport"], p["dport"]) for p in worker.packets(5354)]
    # Each query (the first decides SAFE_SEARCH, the next is still seen) and each answer.
    assert queued == [(5354, 53), (53, 5354), (5354, 53), (53, 5354)]
    (flow,) = conntrack.flows_with_code(LAYOUT, SAFE_SEARCH, network.topology.gateway.netns)
    assert (flow.sport, flow.dport) == (5354, 53)


@pytest.mark.parametrize("fail_open", [True, False])
def test_without_a_listener_fail_open_passes_and_fail_closed_drops(
    network: SchoolNetwork, gateway_rules: InstallRules, fail_open: bool
) -> None:
    gateway_rules(fail_open=fail_open)
    completed = curl(network.client, url(network, 6, 80), 1.5)
    if fail_open:
        assert completed.stdout == "200", completed.stderr
    else:
        assert completed.returncode == CURL_TIMEOUT_EXIT


def test_only_flows_from_the_lan_interfaces_are_queued(
    network: SchoolNetwork, gateway_rules: InstallRules
) -> None:
    """Fail-closed and no listener: a queued flow stalls, one that is not queued passes."""
    server_side = gateway_interface(network, network.server)
    rules = gateway_rules(lan_interfaces=(server_side,))
    assert curl(network.client, url(network, 4, 80), 1.5).stdout == "200"
    rules.remove()
    gateway_rules(lan_interfaces=(gateway_interface(network, network.client),))
    assert curl(network.client, url(network, 4, 80), 1.5).returncode == CURL_TIMEOUT_EXIT


def test_filter_local_queues_the_gateways_own_flows(
    network: SchoolNetwork, gateway_rules: InstallRules
) -> None:
    rules = gateway_rules()
    assert curl(network.topology.gateway, url(network, 4, 80), 1.5).stdout == "200"
    rules.remove()
    gateway_rules(filter_local=True)
    assert curl(network.topology.gateway, url(network, 4, 80), 1.5).returncode == CURL_TIMEOUT_EXIT


# --- changing decided flows -----------------------------------------------------------------


def _start_slow_download(network: SchoolNetwork) -> subprocess.Popen[str]:
    """A long transfer from the trickle server: the client acknowledges every chunk."""
    return network.client.popen(
        ["curl", "-sS", "-o", "/dev/null", "--http0.9", "--max-time", "20",
         url(network, 4, TRICKLE_PORT)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_flow(network: SchoolNetwork, code: int) -> conntrack.FlowTuple:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        flows = conntrack.flows_with_code(LAYOUT, code, network.topology.gateway.netns)
        if flows:
            (flow,) = flows
            return flow
        time.sleep(0.05)
    raise AssertionError(f"no flow with code {code}")


def test_set_code_reject_cuts_an_established_allowed_flow(
    network: SchoolNetwork, gateway_rules: InstallRules, listener: StartListener
) -> None:
    """An open session (a line every 0.1 s, echoed) is reset on the client's next line."""
    gateway_rules()
    listener("allow")
    session = network.client.popen(
        [sys.executable, str(HELPER), "talk", str(network.server_address(4)), str(ECHO_PORT)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert session.stdout is not None
    try:
        assert session.stdout.readline().strip() == "echoed"
        flow = _wait_for_flow(network, ALLOW)
        assert session.poll() is None
        assert conntrack.set_code(LAYOUT, flow, REJECT, network.topology.gateway.netns) is True
        cut = time.monotonic()
        ready, _, _ = select.select([session.stdout], [], [], 3)
        assert ready and session.stdout.readline().strip() == "ConnectionResetError"
        assert time.monotonic() - cut < 2
        assert conntrack.count_by_code(LAYOUT, network.topology.gateway.netns).get(REJECT) == 1
    finally:
        session.kill()
        session.communicate()


def test_reset_flows_are_decided_again(
    network: SchoolNetwork, gateway_rules: InstallRules, listener: StartListener
) -> None:
    gateway_rules()
    worker = listener("allow")
    download = _start_slow_download(network)
    try:
        flow = _wait_for_flow(network, ALLOW)
        assert [p["code"] for p in worker.packets(TRICKLE_PORT)] == [UNDECIDED] * 3
        # Other bits of the conntrack mark belong to the school: a reset leaves them alone.
        school_bits = MarkLayout(0xF)
        assert conntrack.set_code(school_bits, flow, 5, network.topology.gateway.netns)
        assert conntrack.reset_codes(LAYOUT, [ALLOW, DROP], network.topology.gateway.netns) == 1
        again = _wait_for_flow(network, ALLOW)  # re-decided on its next packet, past the bound
        assert again == flow
        assert [p["code"] for p in worker.packets(TRICKLE_PORT)] == [UNDECIDED] * 3 + [BOUND]
        assert conntrack.flows_with_code(school_bits, 5, network.topology.gateway.netns) == [flow]
    finally:
        download.kill()
        download.communicate()


def test_codes_of_seeded_conntrack_entries(network: SchoolNetwork) -> None:
    """Entries made with the conntrack tool: filters by code, masked updates, both families."""
    gateway = network.topology.gateway
    school_bit = 0x80000000
    seeds = [  # (protocol, source, destination, source port, mark)
        ("tcp", "198.18.0.1", "198.18.1.2", 40001, LAYOUT.value(ALLOW) | school_bit),
        ("tcp", "198.18.0.1", "198.18.1.2", 40002, LAYOUT.value(DROP)),
        ("udp", "2001:2::1", "2001:2:0:1::2", 40003, LAYOUT.value(ALLOW)),
        ("udp", "198.18.0.1", "198.18.1.2", 40004, school_bit),
    ]
    try:
        for protocol, source, destination, port, mark in seeds:
            state = ["--state", "ESTABLISHED"] if protocol == "tcp" else []
            gateway.run(
                ["conntrack", "-I", "-p", protocol, "-s", source, "-d", destination,
                 "--sport", str(port), "--dport", "443", *state, "-t", "60", "--mark", str(mark)],
            )  # fmt: skip
        assert conntrack.count_by_code(LAYOUT, gateway.netns) == {ALLOW: 2, DROP: 1, UNDECIDED: 1}
        allowed = conntrack.flows_with_code(LAYOUT, ALLOW, gateway.netns)
        assert sorted((f.family, f.proto, f.sport) for f in allowed) == [
            (4, socket.IPPROTO_TCP, 40001), (6, socket.IPPROTO_UDP, 40003)
        ]
        (undecided,) = conntrack.flows_with_code(LAYOUT, UNDECIDED, gateway.netns)
        assert undecided == conntrack.FlowTuple(
            4, socket.IPPROTO_UDP, ipaddress.ip_address("198.18.0.1"),
            ipaddress.ip_address("198.18.1.2"), 40004, 443,
        )  # fmt: skip
        assert conntrack.set_code(LAYOUT, undecided, REJECT, gateway.netns) is True
        assert conntrack.reset_codes(LAYOUT, [ALLOW, DROP], gateway.netns) == 3
        assert conntrack.count_by_code(LAYOUT, gateway.netns) == {UNDECIDED: 3, REJECT: 1}
        marks = re.findall(r"sport=(\d+) .*? mark=(\d+)", gateway.run(["conntrack", "-L"]).stdout)
        assert sorted((int(port), int(mark)) for port, mark in marks) == [
            (40001, school_bit), (40002, 0), (40003, 0),
            (40004, school_bit | LAYOUT.value(REJECT)),
        ]  # fmt: skip
        gone = undecided._replace(sport=1)
        assert conntrack.set_code(LAYOUT, gone, REJECT, gateway.netns) is False
    finally:
        gateway.run(["conntrack", "-F"], check=False)


def test_conntrack_errors_carry_the_errno(require_lab: None) -> None:
    with pytest.raises(conntrack.ConntrackError) as raised:
        conntrack.count_by_code(LAYOUT, netns="efl-no-such-namespace")
    assert raised.value.errno == errno.ENOENT


# --- run as a script: the listener, servers and clients -------------------------------------


def _describe(payload: bytes) -> dict[str, Any]:
    import dpkt

    packet = dpkt.ip.IP(payload) if payload[0] >> 4 == 4 else dpkt.ip6.IP6(payload)
    transport = packet.data
    ports = (transport.sport, transport.dport) if hasattr(transport, "sport") else (0, 0)
    data = transport.data if isinstance(transport, dpkt.Packet) else b""
    return {
        "family": payload[0] >> 4,
        "proto": packet.p if payload[0] >> 4 == 4 else packet.nxt,
        "sport": ports[0],
        "dport": ports[1],
        "payload": len(data),
    }


def _decision(mode: str, record: dict[str, Any]) -> int | None:
    """The code a worker in this mode gives the flow of this packet, or None (undecided)."""
    if mode == "accept":
        return None
    if record["code"] == BOUND:  # the rules say: decide now; the group's default here is allow
        return ALLOW
    if mode == "bound":
        return None
    if mode == "safe-search":
        return SAFE_SEARCH if record["dport"] == 53 else None
    if record["payload"] == 0:  # a handshake packet: no name yet
        return None
    return {"allow": ALLOW, "reject": REJECT, "drop": DROP}[mode]


def _listen(arguments: argparse.Namespace) -> None:
    from netfilterqueue import NetfilterQueue, Packet

    layout = MarkLayout(int(arguments.mask, 16))
    with open(arguments.log, "a", buffering=1) as log:

        def on_packet(packet: Packet) -> None:
            record = _describe(packet.get_payload())
            record["code"] = layout.code_of(packet.get_mark())
            log.write(json.dumps(record) + "\n")
            code = _decision(arguments.mode, record)
            if code is None:
                packet.accept()
            else:
                packet.set_mark(layout.packet_mark(packet.get_mark(), code))
                packet.repeat()

        queues = []
        for number in arguments.queue:
            queue = NetfilterQueue()
            queue.bind(number, on_packet)
            queues.append(queue)
        by_fd = {queue.get_fd(): queue for queue in queues}
        print("ready", flush=True)
        while True:
            ready, _, _ = select.select(list(by_fd), [], [])
            for fd in ready:
                by_fd[fd].run(block=False)


def _udp_probe(address: str, port: int) -> dict[str, int]:
    """Send one datagram and report the ICMP error that comes back (IP_RECVERR)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        if family == socket.AF_INET:
            probe.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        else:
            probe.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        probe.connect((address, port))
        probe.send(b"edufilter probe")
        poller = select.poll()
        poller.register(probe, select.POLLERR)
        if not poller.poll(3000):
            return {"origin": 0, "type": -1, "code": -1}
        _, ancillary, _, _ = probe.recvmsg(512, 512, socket.MSG_ERRQUEUE)
        for _, _, data in ancillary:
            error_number, origin, icmp_type, icmp_code = struct.unpack_from("=IBBB", data)
            return {"errno": error_number, "origin": origin, "type": icmp_type, "code": icmp_code}
    return {"origin": 0, "type": -1, "code": -1}


class _DualStackServer(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6  # IPv4 clients arrive as mapped addresses
    daemon_threads = True
    allow_reuse_address = True


def _trickle(port: int) -> None:
    """An HTTP/0.9-style server that streams a small chunk every TRICKLE_INTERVAL seconds."""
    class Trickle(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(4096)
            for _ in range(int(30 / TRICKLE_INTERVAL)):
                self.request.sendall(b"x" * 512)
                time.sleep(TRICKLE_INTERVAL)

    with _DualStackServer(("::", port), Trickle) as server:
        server.serve_forever()


def _echo(port: int) -> None:
    """Echo every line back, for as long as the client keeps the connection."""
    class Echo(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                self.wfile.write(line)

    with _DualStackServer(("::", port), Echo) as server:
        server.serve_forever()


def _talk(address: str, port: int) -> None:
    """Send a line every 0.1 s and read its echo; print "echoed" once, then how it ended."""
    with socket.create_connection((address, port), timeout=5) as session:
        reader = session.makefile("rb")
        try:
            for sent in range(300):
                session.sendall(b"ping\n")
                if not reader.readline():
                    print("closed", flush=True)
                    return
                if sent == 0:
                    print("echoed", flush=True)
                time.sleep(0.1)
        except OSError as error:
            print(type(error).__name__, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    listen = commands.add_parser("listen")
    listen.add_argument("--queue", type=int, action="append", required=True)
    listen.add_argument("--mode", required=True)
    listen.add_argument("--mask", required=True)
    listen.add_argument("--log", required=True)
    probe = commands.add_parser("udp-probe")
    probe.add_argument("address")
    probe.add_argument("port", type=int)
    for server in ("trickle", "echo"):
        commands.add_parser(server).add_argument("port", type=int)
    talk = commands.add_parser("talk")
    talk.add_argument("address")
    talk.add_argument("port", type=int)
    arguments = parser.parse_args()
    if arguments.command == "listen":
        _listen(arguments)
    elif arguments.command == "trickle":
        _trickle(arguments.port)
    elif arguments.command == "echo":
        _echo(arguments.port)
    elif arguments.command == "talk":
        _talk(arguments.address, arguments.port)
    else:
        print(json.dumps(_udp_probe(arguments.address, arguments.port)))


if __name__ == "__main__":
    main()
