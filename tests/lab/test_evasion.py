"""`edufilter run` against what circumvention tools do to a pupil's packets, sent by a raw-socket
client (rawclient.py) in the pupil's namespace to real servers (openssl s_server, nginx) behind
a router hop: a ClientHello cut into 8, 40 or 1-byte pieces, an urgent byte inside it, and a
decoy HTTP request whose TTL lets it pass the gateway but die at the router."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edufilter_lab.netns import Host, Lab
from edufilter_lab.school import UPSTREAM_V4, FilteredSchool, start_filtered_school
from packets import openssl_client_hello
from rawclient import drop_kernel_resets_script

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("require_lab")]

RAW_CLIENT = Path(__file__).resolve().parent / "rawclient.py"
TLS_RECORD_HEADER = "1603"  # a handshake record: the server's ServerHello
DECOY_TTL = 2  # the gateway forwards it with TTL 1; the router drops it

POLICY = """
[settings]
default_group = "guests"

[lists.blocked]
domain = ["blocked.test"]

[groups.pupils]
title = "Pupils"
default_action = "allow"
bypass_shield = true
[[groups.pupils.clients]]
cidr = "198.18.16.0/24"
[[groups.pupils.rules]]
action = "block"
lists = ["blocked"]

[groups.guests]
title = "Guests"
[[groups.guests.rules]]
action = "block"
lists = ["blocked"]
"""


@pytest.fixture(scope="module")
def school(require_lab: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilteredSchool]:
    workdir = tmp_path_factory.mktemp("evasion-lab")
    with Lab() as lab:
        school = start_filtered_school(lab, workdir, router=True)
        for name, subnet in (("pupil", 16), ("guest", 40)):
            host = school.add_pupil(name, subnet).host
            host.run(["nft", "-f", "-"], input=drop_kernel_resets_script())
        policy = workdir / "policy"
        policy.mkdir()
        (policy / "school.toml").write_text(POLICY)
        lan = ", ".join(f'"{school.gateway_interface(name)}"' for name in school.pupils)
        school.start_daemon(policy, f"[network]\nlan_interfaces = [{lan}]\n[queue]\nworkers = 1\n")
        try:
            school.wait_for_workers()
            yield school
        finally:
            school.stop_daemon()


def send(school: FilteredSchool, pupil: str, dport: int, pieces: list[dict], wait: float = 5.0) -> dict:
    host: Host = school.pupils[pupil].host
    plan = {"src": str(school.pupils[pupil].address), "dst": str(UPSTREAM_V4), "dport": dport,
            "pieces": pieces, "wait": wait}
    completed = host.run([sys.executable, str(RAW_CLIENT)], input=json.dumps(plan), timeout=30)
    result = json.loads(completed.stdout)
    assert result["handshake"], "the server never answered the SYN"
    return result


def split(stream: bytes, size: int, **fields) -> list[dict]:
    return [{"offset": start, "data": stream[start:start + size].hex(), **fields}
            for start in range(0, len(stream), size)]


def in_pieces(stream: bytes, count: int) -> list[dict]:
    return split(stream, -(-len(stream) // count))


def evasion_count(school: FilteredSchool) -> int:
    status = school.status() or {}
    return status.get("totals", {}).get("evasion", 0)


def wait_for_evasion_count(school: FilteredSchool, above: int, timeout: float = 6.0) -> int:
    """The status file's evasion total once it exceeds `above` (it is rewritten each second)."""
    deadline = time.monotonic() + timeout
    while (count := evasion_count(school)) <= above and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def http_get(host: str) -> bytes:
    return f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: raw\r\nAccept: */*\r\n\r\n".encode()


def served_tls(result: dict) -> bool:
    return result["answer"].startswith(TLS_RECORD_HEADER) and not result["reset"]


@pytest.mark.parametrize("pieces", [8, 40, 0], ids=["8-pieces", "40-pieces", "1-byte-pieces"])
def test_a_split_client_hello_is_judged_by_its_name(school: FilteredSchool, pieces: int) -> None:
    def cut(name: str) -> list[dict]:
        hello = openssl_client_hello(name)
        return split(hello, 1) if pieces == 0 else in_pieces(hello, pieces)

    allowed = send(school, "pupil", 443, cut("www.allowed.test"))
    assert served_tls(allowed), f"the server did not get the whole ClientHello: {allowed}"
    blocked = send(school, "pupil", 443, cut("www.blocked.test"))
    assert blocked["reset"] and not blocked["answer"], blocked


@pytest.mark.parametrize("pieces", [8, 40])
def test_a_split_request_head_is_judged_by_its_host(school: FilteredSchool, pieces: int) -> None:
    allowed = send(school, "pupil", 80, in_pieces(http_get("www.allowed.test"), pieces))
    assert bytes.fromhex(allowed["answer"]).startswith(b"HTTP/1.1 200"), allowed
    blocked = send(school, "pupil", 80, in_pieces(http_get("www.blocked.test"), pieces))
    assert not bytes.fromhex(blocked["answer"]).startswith(b"HTTP/1.1 200"), blocked
    assert blocked["reset"] or bytes.fromhex(blocked["answer"]).startswith(b"HTTP/1.1 403"), blocked


def test_a_client_hello_unfinished_at_the_time_bound_is_reset(school: FilteredSchool) -> None:
    """Eight pieces, the seventh after the worker's 10 s: past the packet bound and still
    mid-handshake then. (A piece that completes the ClientHello is judged by its name.)"""
    pieces = in_pieces(openssl_client_hello("www.allowed.test"), 8)
    pieces[-2]["delay"] = 11.0
    before = evasion_count(school)
    result = send(school, "pupil", 443, pieces)
    assert result["reset"] and not result["answer"], result
    assert wait_for_evasion_count(school, before) > before


def test_an_urgent_byte_inside_the_client_hello_is_reset(school: FilteredSchool) -> None:
    hello = openssl_client_hello("www.blocked.test")
    before = evasion_count(school)
    # The server's stack takes the urgent byte out of the stream and reads the real ClientHello;
    # the gateway, reading it in, would see garbage where the name is.
    pieces = [{"offset": 0, "data": hello[:100].hex()},
              {"offset": 100, "data": (b"Z" + hello[100:]).hex(), "flags": 0x38, "urgent": 1}]
    result = send(school, "pupil", 443, pieces)
    assert result["reset"] and not result["answer"], result
    assert wait_for_evasion_count(school, before) > before, "counted as evasion in the status"


def decoy_then_real(real_host: str) -> list[dict]:
    return [{"offset": 0, "data": http_get("www.allowed.test").hex(), "ttl": DECOY_TTL},
            {"offset": 0, "data": http_get(real_host).hex()}]


def test_the_decoy_dies_at_the_router(school: FilteredSchool) -> None:
    """The lab's premise: a TTL that passes the gateway does not reach the server."""
    decoy_only = send(school, "guest", 80, decoy_then_real("www.allowed.test")[:1])
    assert not decoy_only["reset"] and not decoy_only["answer"], decoy_only
    real = send(school, "guest", 80, decoy_then_real("www.allowed.test")[1:])
    assert bytes.fromhex(real["answer"]).startswith(b"HTTP/1.1 200"), real


def test_a_low_ttl_decoy_does_not_decide_the_flow(school: FilteredSchool) -> None:
    # Shielded pupils: the decoy alone is evasion, reset.
    before = evasion_count(school)
    pupil = send(school, "pupil", 80, decoy_then_real("www.blocked.test"))
    assert pupil["reset"] and not bytes.fromhex(pupil["answer"]).startswith(b"HTTP/1.1 200"), pupil
    assert wait_for_evasion_count(school, before) > before
    # Unshielded guests: the decoy is not read; the real request decides (the block page).
    guest = send(school, "guest", 80, decoy_then_real("www.blocked.test"))
    assert bytes.fromhex(guest["answer"]).startswith(b"HTTP/1.1 403"), guest
