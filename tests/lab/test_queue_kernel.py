"""PacketQueue against the kernel: real traffic through a gateway namespace whose FORWARD chain
queues every packet to a worker running inside it (queue_probe, the C accept-all reference or
the netfilterqueue baseline). Rules live only in the lab's gateway and server namespaces.

This file is also the `surface` worker of test_python_surface, run inside the gateway.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edufilter_lab.netns import Host, IPAddress, Lab, ThreeHostTopology, client_gateway_server
from edufilter_lab.reference_loop import build_accept_all
from edufilter_lab.traffic import wait_for_listener

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("require_lab")]

HELPER = Path(__file__).resolve()
QUEUE = 4
HTTP_PORT = 8080
BULK_FILE = "bulk.bin"
BULK_SIZE = 2 * 1024 * 1024  # server-to-client TCP in TSO-sized GSO packets
UDP_PORT = 9999
FLOOD_PORT = 9
FLOOD_DATAGRAMS = 2000
FULL_QUEUE = 4
MARK_MASK = 0x0F000000
REPEAT_MARK = 0x01000000
ACCEPT_MARK = 0x02000000
NF_INET_FORWARD = 2

# One datagram each way, for the payload replacement test.
RECEIVE_ONE = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as receiver:
    receiver.bind((sys.argv[1], int(sys.argv[2])))
    receiver.settimeout(5)
    print(receiver.recv(2048).decode(), flush=True)
"""
SEND_ONE = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as sender:
    sender.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
"""
# A bounded burst of small datagrams.
FLOOD = """
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
    for _ in range(int(sys.argv[3])):
        sender.sendto(b"x" * 64, (sys.argv[1], int(sys.argv[2])))
"""


# --- the lab --------------------------------------------------------------------------------


def server_address(network: ThreeHostTopology, family: int = 4) -> IPAddress:
    return network.server_address if family == 4 else network.server_address6


@pytest.fixture(scope="module")
def lab_network(
    require_lab: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreeHostTopology]:
    """client — gateway — server, with an HTTP server holding a bulk file."""
    workdir = tmp_path_factory.mktemp("queue-lab")
    (workdir / BULK_FILE).write_bytes(os.urandom(BULK_SIZE))
    with Lab() as lab:
        topology = client_gateway_server(lab)
        topology.server.popen(
            [sys.executable, "-m", "http.server", "--bind", "::", "--directory", str(workdir),
             str(HTTP_PORT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_listener(topology.server, "tcp", HTTP_PORT)
        yield topology


@pytest.fixture
def network(lab_network: ThreeHostTopology) -> Iterator[ThreeHostTopology]:
    """The lab, with every rule and conntrack entry of a test removed after it, even on failure."""
    yield lab_network
    for tool in ("iptables", "ip6tables"):
        for host, table in (
            (lab_network.gateway, "filter"),
            (lab_network.gateway, "mangle"),
            (lab_network.server, "raw"),
        ):
            host.run([tool, "-t", table, "-F"], check=False)
    lab_network.gateway.run(["conntrack", "-F"], check=False)


def queue_everything(network: ThreeHostTopology, *options: str) -> None:
    for tool in ("iptables", "ip6tables"):
        network.gateway.run(
            [tool, "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", str(QUEUE), *options]
        )


def rule_packets(host: Host, table: str, chain: str) -> int:
    """Packets counted by the first rule of a chain."""
    listing = host.run(["iptables", "-t", table, "-nvxL", chain]).stdout.splitlines()
    return int(listing[2].split()[0])


def ping(network: ThreeHostTopology, family: int = 4, count: int = 2) -> bool:
    completed = network.client.run(
        ["ping", f"-{family}", "-c", str(count), "-i", "0.2", "-W", "1",
         str(server_address(network, family))],
        timeout=10, check=False,
    )  # fmt: skip
    return completed.returncode == 0


def download(network: ThreeHostTopology, path: str = "/") -> tuple[str, int]:
    """HTTP status and bytes received for a GET of path on the server."""
    written = network.client.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
         "--max-time", "10", f"http://{server_address(network)}:{HTTP_PORT}{path}"],
        timeout=15, check=False,
    ).stdout.split()  # fmt: skip
    return (written[0], int(written[1])) if len(written) == 2 else ("", 0)


# --- workers in the gateway -----------------------------------------------------------------


@dataclass
class Worker:
    process: subprocess.Popen[str]
    report: dict[str, Any] | None = None  # its last JSON line, once it has stopped


@contextlib.contextmanager
def running(host: Host, argv: list[str], timeout: float = 10.0) -> Iterator[Worker]:
    """Run a worker that prints "ready" once bound and a JSON report when terminated."""
    process = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = Worker(process)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        if line.strip() != "ready":
            raise AssertionError(f"{argv[:4]} did not start: {line!r}")
        yield worker
    finally:
        process.terminate()
        try:
            output, errors = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            output, errors = process.communicate()
        reports = [line for line in output.splitlines() if line.startswith("{")]
        worker.report = json.loads(reports[-1]) if reports else None
        if worker.report is None:
            print(f"{argv[:4]} left no report; stderr: {errors[-2000:]}")


def probe(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "edufilter_lab.queue_probe", "--queue", str(QUEUE), *arguments]


# --- verdicts -------------------------------------------------------------------------------


def test_accept_passes_traffic_and_gso_packets_whole(network: ThreeHostTopology) -> None:
    queue_everything(network)
    with running(network.gateway, probe("--mode", "accept")) as worker:
        assert ping(network, 4)
        assert ping(network, 6)
        assert download(network, f"/{BULK_FILE}") == ("200", BULK_SIZE)
    assert worker.report is not None
    socket_counters = worker.report["socket"]
    assert socket_counters["packets"] == socket_counters["verdicts"] > 8
    # NFQA_CFG_F_GSO: the server's TSO packets reach the worker unsegmented.
    assert socket_counters["gso_packets"] > 0
    assert socket_counters["batch_messages"] + socket_counters["verdict_messages"] > 0
    assert socket_counters["kernel_errors"] == 0
    assert worker.report["kernel"]["id_sequence"] == socket_counters["packets"]


def test_drop_blocks_traffic(network: ThreeHostTopology) -> None:
    queue_everything(network)
    with running(network.gateway, probe("--mode", "drop")) as worker:
        assert not ping(network, 4)
    assert worker.report is not None
    assert worker.report["socket"]["packets"] >= 2


def test_mark_with_repeat_is_saved_by_a_rule(network: ThreeHostTopology) -> None:
    mark = f"{REPEAT_MARK:#x}/{MARK_MASK:#x}"
    gateway = network.gateway
    gateway.run(["iptables", "-A", "FORWARD", "-m", "mark", "--mark", mark,
                 "-j", "CONNMARK", "--save-mark", "--nfmask", hex(MARK_MASK),
                 "--ctmask", hex(MARK_MASK)])  # fmt: skip
    gateway.run(["iptables", "-A", "FORWARD", "-m", "mark", "--mark", mark, "-j", "ACCEPT"])
    queue_everything(network)
    with running(gateway, probe("--mode", f"repeat-mark:{REPEAT_MARK:#x}")) as worker:
        assert ping(network, 4, count=2)
    flows = gateway.run(["conntrack", "-L", "-p", "icmp"], check=False).stdout
    assert f"mark={REPEAT_MARK}" in flows
    assert worker.report is not None
    # Two requests and two replies, each queued once: the repeat was caught by the rule.
    assert worker.report["socket"]["packets"] == 4


def test_mark_with_accept_reaches_later_hooks(network: ThreeHostTopology) -> None:
    network.gateway.run(["iptables", "-t", "mangle", "-A", "POSTROUTING", "-m", "mark",
                         "--mark", f"{ACCEPT_MARK:#x}/{MARK_MASK:#x}"])  # fmt: skip
    queue_everything(network)
    with running(network.gateway, probe("--mode", f"mark:{ACCEPT_MARK:#x}")):
        assert ping(network, 4, count=1)
    assert rule_packets(network.gateway, "mangle", "POSTROUTING") == 2


@pytest.mark.parametrize("family", [4, 6])
def test_replaced_payload_arrives_changed(network: ThreeHostTopology, family: int) -> None:
    queue_everything(network)
    address = str(server_address(network, family))
    receiver = network.server.popen(
        [sys.executable, "-c", RECEIVE_ONE, address, str(UDP_PORT)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_listener(network.server, "udp", UDP_PORT)
        with running(network.gateway, probe("--mode", "rewrite:question=longer answer")) as worker:
            network.client.run([sys.executable, "-c", SEND_ONE, address, str(UDP_PORT),
                                "a question?"])  # fmt: skip
            received, errors = receiver.communicate(timeout=10)
    finally:
        receiver.kill()
        receiver.communicate()
    # The server's stack checks the UDP checksum the worker recomputed.
    assert received.strip() == "a longer answer?", errors
    assert worker.report is not None
    assert worker.report["socket"]["packets"] == 1
    # The client's checksum was left to offload: the worker saw it partial.
    assert worker.report["socket"]["checksum_not_ready"] == 1


# --- failure modes --------------------------------------------------------------------------


def test_bypass_without_listener_passes(network: ThreeHostTopology) -> None:
    queue_everything(network, "--queue-bypass")
    assert ping(network, 4)


def test_without_bypass_or_listener_drops(network: ThreeHostTopology) -> None:
    queue_everything(network)
    assert not ping(network, 4)


@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
def test_full_queue(network: ThreeHostTopology, fail_open: bool) -> None:
    """A burst into a 4-packet queue while the worker is stopped: fail-open lets the overflow
    pass uninspected (no kernel counter shows it), fail-closed drops it in queue_dropped."""
    network.server.run(["iptables", "-t", "raw", "-A", "PREROUTING", "-p", "udp",
                        "--dport", str(FLOOD_PORT), "-j", "DROP"])  # fmt: skip
    queue_everything(network)
    options = ["--mode", "accept", "--max-length", str(FULL_QUEUE)]
    options += ["--fail-open"] if fail_open else []
    with running(network.gateway, probe(*options)) as worker:
        worker.process.send_signal(signal.SIGSTOP)
        try:
            network.client.run(
                [sys.executable, "-c", FLOOD, str(server_address(network)), str(FLOOD_PORT),
                 str(FLOOD_DATAGRAMS)],
                timeout=30,
            )  # fmt: skip
            passed_while_stopped = rule_packets(network.server, "raw", "PREROUTING")
        finally:
            worker.process.send_signal(signal.SIGCONT)
        time.sleep(0.2)  # the held packets get their verdicts
    assert worker.report is not None
    kernel = worker.report["kernel"]
    assert worker.report["socket"]["packets"] == FULL_QUEUE
    assert rule_packets(network.server, "raw", "PREROUTING") == FLOOD_DATAGRAMS - (
        0 if fail_open else kernel["queue_dropped"]
    )
    if fail_open:
        assert passed_while_stopped == FLOOD_DATAGRAMS - FULL_QUEUE
        assert kernel["queue_dropped"] == 0
    else:
        assert passed_while_stopped == 0
        assert kernel["queue_dropped"] == FLOOD_DATAGRAMS - FULL_QUEUE
    assert kernel["user_dropped"] == 0


def test_second_listener_is_refused(network: ThreeHostTopology) -> None:
    with running(network.gateway, probe("--mode", "accept")):
        second = network.gateway.run(probe("--mode", "accept"), check=False)
    assert second.returncode == 1
    assert f"cannot bind queue {QUEUE}" in second.stderr
    assert "already bound" in second.stderr


# --- the Python surface ---------------------------------------------------------------------


def test_python_surface(network: ThreeHostTopology) -> None:
    queue_everything(network)
    with running(network.gateway, [sys.executable, str(HELPER), "surface"]) as worker:
        assert ping(network, 4, count=2)
    assert worker.report == {
        "hook": NF_INET_FORWARD,
        "family": 2,
        "hw_protocol": 0x0800,
        "interfaces_known": True,
        "hwaddr_length": 6,
        "ip_version": 4,
        "whole": True,
        "second_verdict_refused": True,
        "closed": True,
    }


def surface() -> None:
    """Receive one packet through the Python surface, check it, then accept the rest."""
    from edufilter.capture._queue import ACCEPT, PacketQueue
    from edufilter.errors import QueueError

    def stop(signal_number: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with PacketQueue(QUEUE) as queue:
        print("ready", flush=True)
        packets = []
        deadline = time.monotonic() + 5
        while not packets and time.monotonic() < deadline:
            packets = queue.receive_batch(1, timeout=0.1)
        (packet,) = packets
        queue.verdict(packet.packet_id, ACCEPT)
        try:
            queue.verdict(packet.packet_id, ACCEPT)
            second_verdict_refused = False
        except ValueError:
            second_verdict_refused = True
        with contextlib.suppress(KeyboardInterrupt):
            queue.serve(ACCEPT, seconds=5)
    try:
        queue.fileno()
        closed = False
    except QueueError:
        closed = True
    report = {
        "hook": packet.hook,
        "family": packet.family,
        "hw_protocol": packet.hw_protocol,
        "interfaces_known": packet.indev > 0 and packet.outdev > 0,
        "hwaddr_length": len(packet.hwaddr),
        "ip_version": packet.payload[0] >> 4,
        "whole": not packet.truncated and packet.cap_len == len(packet.payload),
        "second_verdict_refused": second_verdict_refused,
        "closed": closed,
    }
    print(json.dumps(report), flush=True)


# --- the reference and the baseline ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["c-reference", "baseline"])
def test_reference_and_baseline_forward(
    network: ThreeHostTopology, kind: str, tmp_path: Path
) -> None:
    if kind == "c-reference":
        argv = [str(build_accept_all(tmp_path)), "--queue", str(QUEUE)]
    else:
        argv = [sys.executable, "-m", "edufilter_lab.baseline_worker", "--queue", str(QUEUE)]
    queue_everything(network)
    with running(network.gateway, argv) as worker:
        assert ping(network, 4)
        assert download(network)[0] == "200"
    assert worker.report is not None
    assert worker.report["packets"] > 4
    if kind == "baseline":
        assert worker.report["http_host"] >= 1


if __name__ == "__main__":
    if sys.argv[1:] == ["surface"]:
        surface()
    else:
        sys.exit(f"usage: {sys.argv[0]} surface")
