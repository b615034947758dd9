"""Forged DNS answers, safe search and the block page, seen by real dig and curl.

client — gateway — server: dnsmasq and nginx on the server; on the gateway a small
netfilterqueue listener (this file run as a script) that answers, rewrites or blocks with the
functions of edufilter.enforce, and the aiohttp block-page app at the gateway's LAN address.
The queue rules live in the gateway's namespace only and go away with it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import select
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from edufilter.enforce.blockpage_server import make_blockpage_app
from edufilter.enforce.blockpage import (
    BlockInfo,
    block_response_segments,
    render_block_page,
    reset_to_server,
)
from edufilter.enforce.dns import (
    blocked_answer,
    bypass_answer,
    query_name,
    restore_answer,
    rewrite_query,
    safe_search_target,
)
from edufilter.enforce.inject import IPPROTO_TCP, IPPROTO_UDP, RawSender, parse_ip
from edufilter.rules.marks import INJECTED, MarkLayout
from edufilter_lab.netns import Host, IPAddress, Lab, client_gateway_server
from edufilter_lab.traffic import start_dnsmasq, start_nginx, wait_for_listener

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("require_lab")]

QUEUE = 0
INJECTED_MARK = MarkLayout().packet_mark(0, INJECTED)
SINKHOLE4, SINKHOLE6 = "198.18.0.2", "2001:2::2"  # the gateway's LAN addresses
SINKHOLE_DOMAIN, NXDOMAIN_DOMAIN = "blocked.test", "forbidden.test"
REFERENCE = "LAB42"
CLIENT_TIMEOUT = 10.0

# What the lab's resolver knows. The safe-search names get addresses of their own, so an
# answer shows whether the gateway rewrote the query.
UPSTREAM_ANSWERS = {
    "www.google.com": ["198.18.1.10"],
    "forcesafesearch.google.com": ["198.18.1.120", "2001:2:0:1::120"],
    "www.youtube.com": ["198.18.1.11"],
    "restrict.youtube.com": ["198.18.1.121"],
    "www.bing.com": ["198.18.1.12"],
    "strict.bing.com": ["198.18.1.122"],
    "duckduckgo.com": ["198.18.1.13"],
    "safe.duckduckgo.com": ["198.18.1.123"],
    "use-application-dns.net": ["198.18.1.14"],
    "mask.icloud.com": ["198.18.1.15"],
    "allowed.test": ["198.18.1.2"],
    SINKHOLE_DOMAIN: ["198.18.1.2"],
    NXDOMAIN_DOMAIN: ["198.18.1.2"],
}

QUEUE_RULES = [
    ["-A", "FORWARD", "-p", "udp", "--dport", "53", "-j", "NFQUEUE", "--queue-num", str(QUEUE)],
    ["-A", "FORWARD", "-p", "udp", "--sport", "53", "-j", "NFQUEUE", "--queue-num", str(QUEUE)],
    ["-A", "FORWARD", "-p", "tcp", "--dport", "80", "-j", "NFQUEUE", "--queue-num", str(QUEUE)],
    # Counts what the listener injects: proof that its packets carry the INJECTED mark.
    ["-A", "OUTPUT", "-m", "mark", "--mark", f"{INJECTED_MARK:#x}/{MarkLayout().mask:#x}"],
]


# --- the gateway side, run as `python tests/lab/test_injection.py gateway|blockpage` --------


def _blocked_mode(name: str) -> str | None:
    key = name.lower().removesuffix(".")
    if bypass_answer(key) or key == NXDOMAIN_DOMAIN or key.endswith("." + NXDOMAIN_DOMAIN):
        return "nxdomain"
    if key == SINKHOLE_DOMAIN or key.endswith("." + SINKHOLE_DOMAIN):
        return "sinkhole"
    return None


def _block_info(host: str) -> BlockInfo:
    return BlockInfo(
        name=host, category_id="games", category_title="Online games",
        group_title="Pupils", action="block", reference=REFERENCE, time=datetime.now(),
    )  # fmt: skip


def _request_head(payload: bytes) -> tuple[str, str | None] | None:
    """Host and Accept-Language of a complete HTTP request head, or None."""
    head, separator, _ = payload.partition(b"\r\n\r\n")
    if not separator:
        return None
    fields = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    if "host" not in fields:
        return None
    return fields["host"].rsplit(":", 1)[0].lower(), fields.get("accept-language")


def run_gateway(queue: int) -> None:
    """Decide each queued packet as the worker will: answer, rewrite, inject or accept."""
    from netfilterqueue import NetfilterQueue

    sender = RawSender()
    rewritten: dict[tuple[bytes, int, int], str] = {}  # (client, port, DNS id) -> asked name
    blocked_flows: set[tuple[bytes, int]] = set()

    def decide(packet: object) -> None:
        payload = packet.get_payload()  # type: ignore[attr-defined]
        ip = parse_ip(payload)
        if ip is None or len(ip.transport) < 8:
            packet.accept()  # type: ignore[attr-defined]
            return
        source_port, destination_port = struct.unpack_from("!HH", ip.transport)
        if ip.protocol == IPPROTO_UDP and destination_port == 53:
            name = query_name(payload)
            mode = _blocked_mode(name) if name is not None else None
            if name is not None and mode is not None:
                answer = blocked_answer(
                    payload, mode, SINKHOLE4, SINKHOLE6  # type: ignore[arg-type]
                )
                if answer is not None:
                    sender.send(answer, INJECTED_MARK)
                packet.drop()  # type: ignore[attr-defined]
                return
            target = safe_search_target(name) if name is not None else None
            query = rewrite_query(payload, target) if name and target else None
            if name is not None and query is not None:
                message_id = struct.unpack_from("!H", ip.transport, 8)[0]
                rewritten[(ip.source, source_port, message_id)] = name
                packet.set_payload(query)  # type: ignore[attr-defined]
        elif ip.protocol == IPPROTO_UDP and source_port == 53 and len(ip.transport) >= 10:
            message_id = struct.unpack_from("!H", ip.transport, 8)[0]
            original = rewritten.pop((ip.destination, destination_port, message_id), None)
            restored = restore_answer(payload, original) if original is not None else None
            if restored is not None:
                packet.set_payload(restored)  # type: ignore[attr-defined]
        elif ip.protocol == IPPROTO_TCP:
            flow = (ip.source, source_port)
            if flow in blocked_flows:  # the flow's verdict: drop whatever else the client sends
                packet.drop()  # type: ignore[attr-defined]
                return
            header_length = (ip.transport[12] >> 4) * 4
            request = _request_head(ip.transport[header_length:])
            if request is not None and _blocked_mode(request[0]) is not None:
                status, headers, body = render_block_page(_block_info(request[0]), request[1])
                reset = reset_to_server(payload)
                if reset is not None:
                    sender.send(reset, INJECTED_MARK)
                segments = block_response_segments(payload, body, status=status, headers=headers)
                for segment in segments:
                    sender.send(segment, INJECTED_MARK)
                blocked_flows.add(flow)
                packet.drop()  # type: ignore[attr-defined]
                return
        packet.accept()  # type: ignore[attr-defined]

    queue_handle = NetfilterQueue()
    queue_handle.bind(queue, decide)
    print("ready", flush=True)
    try:
        queue_handle.run()
    finally:
        queue_handle.unbind()


def run_blockpage(addresses: Sequence[str], port: int) -> None:
    from aiohttp import web

    def explain(host: str, client: str, accept_language: str | None) -> BlockInfo | None:
        return _block_info(host) if _blocked_mode(host) is not None else None

    web.run_app(make_blockpage_app(explain), host=list(addresses), port=port, print=None)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("gateway").add_argument("--queue", type=int, default=QUEUE)
    blockpage = commands.add_parser("blockpage")
    blockpage.add_argument("--address", action="append", required=True)
    blockpage.add_argument("--port", type=int, default=80)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if arguments.command == "gateway":
        run_gateway(arguments.queue)
    else:
        run_blockpage(arguments.address, arguments.port)


# --- the lab --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InjectionLab:
    client: Host
    gateway: Host
    server: Host
    resolver4: IPAddress
    resolver6: IPAddress
    workdir: Path

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.workdir.glob("*.log"))
        )


def _start_script(gateway: Host, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "w") as stderr:
        return gateway.popen(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip


def _wait_for_ready(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        raise AssertionError(f"the queue listener did not start: {line!r}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InjectionLab]:
    workdir = tmp_path_factory.mktemp("injection")
    with Lab() as built:
        topology = client_gateway_server(built)
        server, gateway = topology.server, topology.gateway
        resolver4, resolver6 = topology.server_address, topology.server_address6
        start_dnsmasq(server, [resolver4, resolver6], UPSTREAM_ANSWERS, workdir)
        (workdir / "nginx").mkdir()
        start_nginx(server, [80], workdir / "nginx")
        for command in ("iptables", "ip6tables"):
            for rule in QUEUE_RULES:
                gateway.run([command, *rule])
        listener = _start_script(gateway, ["gateway"], workdir / "gateway.log")
        _wait_for_ready(listener)
        _start_script(
            gateway, ["blockpage", "--address", SINKHOLE4, "--address", SINKHOLE6],
            workdir / "blockpage.log",
        )  # fmt: skip
        wait_for_listener(gateway, "tcp", 80, timeout=15.0)
        lab = InjectionLab(topology.client, gateway, server, resolver4, resolver6, workdir)
        yield lab
        print(lab.logs())


@dataclass(frozen=True)
class DigResult:
    status: str
    answers: list[tuple[str, str, str]]  # owner, type, data
    authority: list[tuple[str, str, str]]
    output: str


def dig(lab: InjectionLab, name: str, qtype: str = "A", family: int = 4) -> DigResult:
    server = lab.resolver4 if family == 4 else lab.resolver6
    completed = lab.client.run(
        ["dig", f"@{server}", name, qtype, "+tries=1", "+time=3", "+noall", "+comments",
         "+answer", "+authority"],
        timeout=CLIENT_TIMEOUT, check=False,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    status = re.search(r"status: (\w+)", output)
    if completed.returncode != 0 or status is None or "Warning" in output:
        raise AssertionError(f"dig {name} {qtype} failed:\n{output}\n{lab.logs()}")
    sections: dict[str, list[tuple[str, str, str]]] = {"ANSWER": [], "AUTHORITY": []}
    current = None
    for line in completed.stdout.splitlines():
        header = re.match(r";; (\w+) SECTION:", line)
        if header:
            current = header.group(1)
        elif line and not line.startswith(";") and current in sections:
            owner, _ttl, _class, rtype, data = line.split(None, 4)
            sections[current].append((owner, rtype, data))
    return DigResult(status.group(1), sections["ANSWER"], sections["AUTHORITY"], output)


@pytest.mark.parametrize("family", [4, 6])
def test_blocked_name_gets_nxdomain_with_soa(lab: InjectionLab, family: int) -> None:
    for qtype in ("A", "AAAA"):
        result = dig(lab, "www.Forbidden.test", qtype, family)
        assert result.status == "NXDOMAIN", result.output
        assert result.answers == []
        assert [(owner, rtype) for owner, rtype, _ in result.authority] == [
            ("Forbidden.test.", "SOA")
        ]


@pytest.mark.parametrize("family", [4, 6])
def test_sinkholed_name_gets_the_block_page_address(lab: InjectionLab, family: int) -> None:
    assert dig(lab, "www.blocked.test", "A", family).answers == [
        ("www.blocked.test.", "A", SINKHOLE4)
    ]
    assert dig(lab, "www.blocked.test", "AAAA", family).answers == [
        ("www.blocked.test.", "AAAA", SINKHOLE6)
    ]
    https = dig(lab, "www.blocked.test", "HTTPS", family)  # NODATA: the browser uses A/AAAA
    assert https.status == "NOERROR" and https.answers == []
    assert [rtype for _, rtype, _ in https.authority] == ["SOA"]


@pytest.mark.parametrize(
    ("name", "target", "address"),
    [
        ("www.google.com", "forcesafesearch.google.com", "198.18.1.120"),
        ("www.youtube.com", "restrict.youtube.com", "198.18.1.121"),
        ("www.bing.com", "strict.bing.com", "198.18.1.122"),
        ("duckduckgo.com", "safe.duckduckgo.com", "198.18.1.123"),
    ],
)
def test_safe_search_answers_with_cname_and_address(
    lab: InjectionLab, name: str, target: str, address: str
) -> None:
    result = dig(lab, name)
    assert result.status == "NOERROR"
    assert result.answers == [(f"{name}.", "CNAME", f"{target}."), (f"{target}.", "A", address)]


def test_safe_search_over_ipv6_keeps_the_question_case(lab: InjectionLab) -> None:
    result = dig(lab, "WWW.Google.COM", "AAAA", family=6)
    assert result.answers == [
        ("WWW.Google.COM.", "CNAME", "forcesafesearch.google.com."),
        ("forcesafesearch.google.com.", "AAAA", "2001:2:0:1::120"),
    ]


@pytest.mark.parametrize("name", ["use-application-dns.net", "mask.icloud.com"])
def test_bypass_canaries_get_nxdomain(lab: InjectionLab, name: str) -> None:
    result = dig(lab, name)
    assert result.status == "NXDOMAIN" and result.answers == []


def test_other_names_pass_untouched(lab: InjectionLab) -> None:
    assert dig(lab, "allowed.test").answers == [("allowed.test.", "A", "198.18.1.2")]


def _mark_rule_packets(lab: InjectionLab, command: str) -> int:
    listing = lab.gateway.run([command, "-L", "OUTPUT", "-v", "-x", "-n"]).stdout
    (line,) = [line for line in listing.splitlines() if "mark match" in line.lower()]
    return int(line.split()[0])


def _established_http_connections(server: Host) -> list[str]:
    listing = server.run(["ss", "-tnH", "state", "established", "( sport = :80 )"]).stdout
    return [line for line in listing.splitlines() if line.strip()]


@pytest.mark.parametrize("family", [4, 6])
def test_blocked_http_gets_the_injected_dutch_block_page(lab: InjectionLab, family: int) -> None:
    command = "iptables" if family == 4 else "ip6tables"
    server_address = f"[{lab.resolver6}]" if family == 6 else str(lab.resolver4)
    injected_before = _mark_rule_packets(lab, command)
    completed = lab.client.run(
        ["curl", "-sS", f"-{family}", "--max-time", "5", "-D", "-",
         "--resolve", f"blocked.test:80:{server_address}",
         "-H", "Accept-Language: nl-BE,nl;q=0.9", "http://blocked.test/"],
        timeout=CLIENT_TIMEOUT, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, f"{completed.stderr}\n{lab.logs()}"  # a clean close
    head, _, body = completed.stdout.partition("\n\n")  # text mode: CRLF read as LF
    assert head.startswith("HTTP/1.1 403 Forbidden")
    assert "Connection: close" in head and "Cache-Control: no-store" in head
    assert "Deze website is geblokkeerd" in body and "blocked.test" in body and REFERENCE in body
    # The server got our reset: nginx holds no connection waiting for the request.
    deadline = time.monotonic() + 2.0
    while _established_http_connections(lab.server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _established_http_connections(lab.server) == []
    access_log = (lab.workdir / "nginx" / "nginx-access.log").read_text()
    assert "blocked.test" not in access_log
    # One reset and at least one data segment went out through OUTPUT with the INJECTED mark.
    assert _mark_rule_packets(lab, command) - injected_before >= 2


def test_allowed_http_still_reaches_the_server(lab: InjectionLab) -> None:
    completed = lab.client.run(
        ["curl", "-sS", "--max-time", "5", "--resolve", f"allowed.test:80:{lab.resolver4}",
         "http://allowed.test/"],
        timeout=CLIENT_TIMEOUT,
    )  # fmt: skip
    assert "edufilter lab: allowed.test" in completed.stdout


@pytest.mark.parametrize("family", [4, 6])
def test_block_page_app_answers_at_the_sinkhole_address(lab: InjectionLab, family: int) -> None:
    qtype = "A" if family == 4 else "AAAA"
    ((_, _, address),) = dig(lab, "games.blocked.test", qtype, family).answers
    bracketed = f"[{address}]" if family == 6 else address
    completed = lab.client.run(
        ["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}",
         "--resolve", f"games.blocked.test:80:{bracketed}",
         "-H", "Accept-Language: fr-BE,fr;q=0.9", "http://games.blocked.test/jouer"],
        timeout=CLIENT_TIMEOUT,
    )  # fmt: skip
    body, _, status = completed.stdout.rpartition("\n")
    assert status == "403" and "Ce site est bloqué" in body and "games.blocked.test" in body
    health = lab.client.run(
        ["curl", "-sS", "--max-time", "5", f"http://{bracketed}/healthz"], timeout=CLIENT_TIMEOUT
    )
    assert health.stdout == "ok\n"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
