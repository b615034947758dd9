"""QUIC through `edufilter run`, judged by real aioquic clients against a real HTTP/3 server:
ClientHellos over two Initials, a client that sends the rest of its ClientHello to the
server's connection ID, a server that sends a Retry, v1 and v2; and UDP/443 that is no QUIC
v1/v2 Initial, dropped for the shielded pupils (an aioquic server answers it with a Version
Negotiation packet, which only the guests get). Also runs as a script in a namespace (`probe`).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edufilter_lab.netns import Host, Lab, LabError
from edufilter_lab.school import UPSTREAM_V4, FilteredSchool
from edufilter_lab.traffic import chromium, chromium_available, quic_client, start_quic_server
from test_daemon import build_school, pupil

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("require_lab")]

SCRIPT = Path(__file__).resolve()
RETRY_PORT = 4433
DRAFT_29 = 0xFF00001D


@pytest.fixture(scope="module")
def quic_school(require_lab: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilteredSchool]:
    workdir = tmp_path_factory.mktemp("quic-lab")
    with Lab() as lab:
        school = build_school(lab, workdir)
        start_quic_server(school.upstream, [RETRY_PORT], school.certificate, workdir, retry=True)
        try:
            yield school
        finally:
            school.stop_daemon()


def events_for(school: FilteredSchool, name: str | None, category: str | None = None) -> list[dict]:
    time.sleep(1.5)  # events reach the store in the worker's next report
    return [event for event in school.events()
            if event["name"] == name and (category is None or event["category"] == category)]


def block_event_kinds(school: FilteredSchool, name: str) -> set[str]:
    """Where the block events of name found it: {"quic_sni"} when only QUIC Initials named it."""
    return {event["kind"] for event in events_for(school, name)}


@pytest.mark.parametrize("version", [1, 2])
def test_a_client_hello_over_two_initials(quic_school: FilteredSchool, version: int) -> None:
    host = pupil(quic_school)
    assert quic_client(host, UPSTREAM_V4, 443, "big.allowed.test", version, large_hello=True) == "200"
    with pytest.raises(LabError):
        quic_client(host, UPSTREAM_V4, 443, f"big{version}.blocked.test", version, large_hello=True)
    assert block_event_kinds(quic_school, f"big{version}.blocked.test") == {"quic_sni"}  # read in the loop


@pytest.mark.parametrize("version", [1, 2])
def test_a_client_that_sends_the_rest_to_the_servers_connection_id(quic_school: FilteredSchool,
                                                                   version: int) -> None:
    host = pupil(quic_school)
    assert quic_client(host, UPSTREAM_V4, 443, "moved.allowed.test", version, lose_second_initial=True) == "200"
    with pytest.raises(LabError):
        quic_client(host, UPSTREAM_V4, 443, f"moved{version}.blocked.test", version, lose_second_initial=True)
    assert block_event_kinds(quic_school, f"moved{version}.blocked.test") == {"quic_sni"}


def test_a_server_that_sends_a_retry(quic_school: FilteredSchool) -> None:
    host = pupil(quic_school)
    assert quic_client(host, UPSTREAM_V4, RETRY_PORT, "retried.allowed.test", large_hello=True) == "200"
    with pytest.raises(LabError):
        quic_client(host, UPSTREAM_V4, RETRY_PORT, "retried.blocked.test", large_hello=True)
    assert block_event_kinds(quic_school, "retried.blocked.test") == {"quic_sni"}


@pytest.mark.skipif(not chromium_available(), reason="Chromium is not installed")
def test_chromium_over_quic(quic_school: FilteredSchool, tmp_path: Path) -> None:
    """Chromium's post-quantum ClientHello, forced onto QUIC (no TCP fallback for the origin)."""
    host = pupil(quic_school)
    dom = chromium(host, "https://video.allowed.test/", UPSTREAM_V4, tmp_path / "allowed", quic=True,
                   certificate=quic_school.certificate)
    assert "edufilter lab over QUIC" in dom  # the HTTP/3 server's page
    with pytest.raises(LabError):
        chromium(host, "https://video.blocked.test/", UPSTREAM_V4, tmp_path / "blocked", quic=True,
                 certificate=quic_school.certificate)
    assert block_event_kinds(quic_school, "video.blocked.test") == {"quic_sni"}


def probe(host: Host, address: str, payload: str) -> str:
    return host.run([sys.executable, str(SCRIPT), "probe", address, payload], timeout=10).stdout.strip()


@pytest.mark.parametrize("payload", ["draft-29", "gquic-q050"])
def test_udp_443_that_is_no_v1_or_v2_initial_is_dropped_for_pupils(quic_school: FilteredSchool,
                                                                   payload: str) -> None:
    assert probe(pupil(quic_school, "guest"), str(UPSTREAM_V4), payload) == "version negotiation"
    assert probe(pupil(quic_school), str(UPSTREAM_V4), payload) == "no answer"
    assert [event["group"] for event in events_for(quic_school, None, "evasion")].count("pupils") >= 1
    # A real client on a new flow still gets through.
    assert quic_client(pupil(quic_school), UPSTREAM_V4, 443, "www.allowed.test") == "200"


# --- the probe, run inside a namespace -------------------------------------------------------------


def long_header_datagram(kind: str) -> bytes:
    """A client's first datagram of another QUIC version: draft-29, or gQUIC Q050's long header."""
    version = DRAFT_29.to_bytes(4, "big") if kind == "draft-29" else b"Q050"
    connection_id = bytes(range(1, 9))
    return (b"\xc0" + version + b"\x08" + connection_id + b"\x00" + b"\x00" + b"\x44\xd0").ljust(1250, b"\x00")


def send_probe(address: str, kind: str) -> None:
    """Sends the datagram to UDP 443 and says whether a Version Negotiation packet came back."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.5)
        sock.sendto(long_header_datagram(kind), (address, 443))
        try:
            answer = sock.recv(2048)
        except TimeoutError:
            print("no answer")
            return
    print("version negotiation" if answer[0] & 0x80 and answer[1:5] == bytes(4) else f"answer {answer[:8].hex()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    probe_command = commands.add_parser("probe")
    probe_command.add_argument("address")
    probe_command.add_argument("kind", choices=["draft-29", "gquic-q050"])
    arguments = parser.parse_args()
    send_probe(arguments.address, arguments.kind)
