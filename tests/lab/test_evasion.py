"""`edufilter run` against what circumvention tools do to a pupil's packets, sent by a raw-socket
client (rawclient.py) in the pupil's namespace to real servers (openssl s_server, nginx) behind
a router hop: a ClientHello cut into 8, 40 or 1-byte pieces, an urgent byte inside it, and
decoy HTTP requests the server drops (a TTL that dies at the router, a bad checksum, TCP-MD5,
no ACK, a sequence number outside the window) in a first request and in a later one on a
kept-alive connection, with overlaps and reordered pieces there too. nginx's access log proves
what the server took; the block page's reference finds the `evasion` event."""

from __future__ import annotations

import json
import re
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
PAGE_BYTES = 6000  # the block page with its headers, whole
EVASION_TITLE = b"Hidden site"
_paths = (f"/p{number}" for number in range(1_000_000))  # unique request paths, found in nginx's log

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
        # A decoy with a wrong checksum must die at the server as on a real network card.
        lab.verify_checksums()
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


def send(school: FilteredSchool, pupil: str, dport: int, pieces: list[dict], wait: float = 5.0,
         answer_bytes: int = 16) -> dict:
    host: Host = school.pupils[pupil].host
    plan = {"src": str(school.pupils[pupil].address), "dst": str(UPSTREAM_V4), "dport": dport,
            "pieces": pieces, "wait": wait, "answer_bytes": answer_bytes}
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


def http_get(host: str, path: str = "/") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: raw\r\nAccept: */*\r\n"
            f"Accept-Language: en\r\n\r\n").encode()


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
    alone = send(school, "guest", 80, decoy_then_real("www.allowed.test")[1:])
    assert bytes.fromhex(alone["answer"]).startswith(b"HTTP/1.1 200"), alone


def test_a_low_ttl_decoy_does_not_decide_the_flow(school: FilteredSchool) -> None:
    # Shielded pupils: the decoy is evasion, answered with the block page that says so.
    before = evasion_count(school)
    pupil = send(school, "pupil", 80, decoy_then_real("www.blocked.test"), answer_bytes=PAGE_BYTES)
    assert_evasion_page(school, pupil, before)
    # Unshielded guests: the decoy is not read; the real request decides (the block page).
    guest = send(school, "guest", 80, decoy_then_real("www.blocked.test"), answer_bytes=PAGE_BYTES)
    assert_block_page(guest, "www.blocked.test")


# --- what the gateway answers, and how it counts it --------------------------------------------

def answered(result: dict) -> bytes:
    return bytes.fromhex(result["answer"])


def served(school: FilteredSchool, path: str) -> bool:
    """Whether nginx answered a request for path (its access log: what the server really got;
    a request head cut short by the gateway's reset is logged with 400)."""
    time.sleep(0.2)
    return f'"GET {path} HTTP/1.1" 200 ' in (school.workdir / "nginx" / "nginx-access.log").read_text()


def block_page(result: dict) -> bytes:
    """The block page in what came back (after the answers to earlier requests), or b""."""
    answer = answered(result)
    return answer[answer.index(b"HTTP/1.1 403"):] if b"HTTP/1.1 403" in answer else b""


def assert_block_page(result: dict, name: str) -> None:
    assert f"<bdi>{name}</bdi>".encode() in block_page(result), result


def assert_evasion_page(school: FilteredSchool, result: dict, counted_before: int) -> None:
    """The pupil got the block page giving the evasion reason, and the attempt is counted as
    evasion in the status file (above counted_before) and in the block event the page's
    reference names."""
    page = block_page(result)
    assert EVASION_TITLE in page, result
    reference = re.search(rb"<code>([A-Z2-7]{8})</code>", page).group(1).decode()
    deadline = time.monotonic() + 6
    while not (events := [e for e in school.events() if e["reference"] == reference]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert events and events[0]["category"] == "evasion", events
    assert wait_for_evasion_count(school, counted_before) > counted_before


# --- decoys the server drops, whatever their TTL ----------------------------------------------

PSH_ONLY = 0x08
MD5_OPTION = "0101" + "1312" + "00" * 16   # NOP, NOP, then kind 19 length 18: a TCP-MD5 signature (RFC 2385)
FAR = 1 << 20                               # bytes: beyond any receive window, before or after the stream
DECOYS = {
    "bad-checksum": {"bad_checksum": True},
    "tcp-md5": {"options": MD5_OPTION},
    "no-ack": {"flags": PSH_ONLY},
    "old-sequence": {"offset": -FAR},
    "beyond-window": {"offset": FAR},
}


def decoy(kind: str, host: str, path: str = "/", offset: int = 0) -> dict:
    fields = dict(DECOYS[kind])
    return {"data": http_get(host, path).hex(), **fields, "offset": offset + fields.get("offset", 0)}


def real(host: str, path: str = "/", offset: int = 0, **fields) -> dict:
    return {"offset": offset, "data": http_get(host, path).hex(), **fields}


@pytest.mark.parametrize("kind", DECOYS)
def test_a_decoy_the_server_drops_does_not_decide_the_flow(school: FilteredSchool, kind: str) -> None:
    # The lab's premise: the server drops the decoy (rx checksum offload is off on every link,
    # so a wrong checksum is found as a network card would), and takes the request behind it.
    alone = send(school, "guest", 80, [decoy(kind, "www.allowed.test", path := next(_paths))], wait=1.0)
    assert not alone["reset"] and not alone["answer"] and not served(school, path), alone
    behind = send(school, "guest", 80, [decoy(kind, "www.blocked.test", decoy_path := next(_paths)),
                                        real("www.allowed.test", path := next(_paths))], answer_bytes=200)
    assert b"edufilter lab: www.allowed.test" in answered(behind), behind
    assert served(school, path) and not served(school, decoy_path)
    # The gateway reads the request the server reads, not the decoy: guests get the block page
    # of the real name; for shielded pupils the decoy itself is evasion.
    guest = send(school, "guest", 80, [decoy(kind, "www.allowed.test"), real("www.blocked.test", path := next(_paths))],
                 answer_bytes=PAGE_BYTES)
    assert_block_page(guest, "www.blocked.test")
    before = evasion_count(school)
    pupil = send(school, "pupil", 80, [decoy(kind, "www.allowed.test"), real("www.blocked.test", path)],
                 answer_bytes=PAGE_BYTES)
    assert_evasion_page(school, pupil, before)
    assert not served(school, path)


# --- later requests on a kept-alive plain-HTTP connection --------------------------------------


def later_request(decoy_piece, decoy_host: str, real_host: str) -> tuple[list[dict], str, str]:
    """An allowed first request; once its answer came, a decoy and the real request at the
    offset after it. Returns the pieces and the decoy's and the real request's paths."""
    first, decoy_path, real_path = next(_paths), next(_paths), next(_paths)
    at = len(http_get("www.allowed.test", first))
    pieces = [real("www.allowed.test", first), {**decoy_piece(decoy_host, decoy_path, at), "delay": 0.3},
              real(real_host, real_path, at)]
    return pieces, decoy_path, real_path


@pytest.mark.parametrize("kind", ["low-ttl", *DECOYS])
def test_a_decoy_inside_a_later_request_does_not_decide_it(school: FilteredSchool, kind: str) -> None:
    def decoy_at(host: str, path: str, at: int) -> dict:
        return real(host, path, at, ttl=DECOY_TTL) if kind == "low-ttl" else decoy(kind, host, path, at)

    # the server takes the real later request, never the decoy
    pieces, decoy_path, real_path = later_request(decoy_at, "www.blocked.test", "www.allowed.test")
    guest = send(school, "guest", 80, pieces, answer_bytes=400)
    assert answered(guest).count(b"edufilter lab: www.allowed.test") == 2, guest
    assert served(school, real_path) and not served(school, decoy_path)
    # a blocked real request behind an allowed decoy: guests get the block page of its name
    pieces, _, real_path = later_request(decoy_at, "www.allowed.test", "www.blocked.test")
    guest = send(school, "guest", 80, pieces, answer_bytes=PAGE_BYTES)
    assert b"edufilter lab: www.allowed.test" in answered(guest), guest
    assert_block_page(guest, "www.blocked.test")
    assert not served(school, real_path)
    # shielded pupils: a decoy is evasion; an old sequence number (bytes the server already
    # has: to conntrack and the follower, a retransmission) is not read and leaves the real
    # request to decide
    pieces, _, real_path = later_request(decoy_at, "www.allowed.test", "www.blocked.test")
    before = evasion_count(school)
    pupil = send(school, "pupil", 80, pieces, answer_bytes=PAGE_BYTES)
    assert b"edufilter lab: www.allowed.test" in answered(pupil), pupil
    if kind == "old-sequence":
        assert_block_page(pupil, "www.blocked.test")
    else:
        assert_evasion_page(school, pupil, before)
    assert not served(school, real_path)


def test_an_overlap_inside_a_later_request_is_read_as_the_server_reads_it(school: FilteredSchool) -> None:
    """The follower lets a later request's bytes through in order only, so the server keeps
    the first copy of an overlapped byte (the second is a retransmission to it): the copy the
    gateway read. Both copies are the same length."""
    def overlapped(first_host: str, second_host: str) -> tuple[list[dict], str, str]:
        first, path = next(_paths), next(_paths)
        other = path.replace("/p", "/q")
        at = len(http_get("www.allowed.test", first))
        return ([real("www.allowed.test", first), {**real(first_host, path, at), "delay": 0.3},
                 real(second_host, other, at)], path, other)

    for pupil in ("guest", "pupil"):
        pieces, allowed_path, blocked_path = overlapped("www.allowed.test", "www.blocked.test")
        result = send(school, pupil, 80, pieces, answer_bytes=400)
        assert answered(result).count(b"edufilter lab: www.allowed.test") == 2, result
        assert served(school, allowed_path) and not served(school, blocked_path)
        pieces, blocked_path, allowed_path = overlapped("www.blocked.test", "www.allowed.test")
        result = send(school, pupil, 80, pieces, answer_bytes=PAGE_BYTES)
        assert_block_page(result, "www.blocked.test")
        assert not served(school, blocked_path) and not served(school, allowed_path)


def test_a_later_request_split_and_reordered_is_judged_when_whole(school: FilteredSchool) -> None:
    """Pieces past a hole are dropped until it is filled (the client sends them again, as TCP
    does); the request is judged when its head is whole, in 3 reordered pieces or in 1-byte ones."""
    def later_in_pieces(host: str, size: int, reorder: bool) -> tuple[list[dict], str]:
        first, path = next(_paths), next(_paths)
        at = len(http_get("www.allowed.test", first))
        pieces = [{**piece, "offset": piece["offset"] + at} for piece in split(http_get(host, path), size)]
        if reorder:
            pieces = [pieces[2], pieces[1], *pieces]
        return [real("www.allowed.test", first), {**pieces[0], "delay": 0.3}, *pieces[1:]], path

    third = -(-len(http_get("www.allowed.test", "/p000000")) // 3)
    pieces, path = later_in_pieces("www.allowed.test", third, reorder=True)
    allowed = send(school, "pupil", 80, pieces, answer_bytes=400)
    assert answered(allowed).count(b"edufilter lab: www.allowed.test") == 2 and served(school, path), allowed
    for size, reorder in ((third, True), (1, False)):
        pieces, path = later_in_pieces("www.blocked.test", size, reorder)
        blocked = send(school, "pupil", 80, pieces, answer_bytes=PAGE_BYTES)
        assert_block_page(blocked, "www.blocked.test")
        assert not served(school, path)


def test_evasion_is_counted_in_status_metrics_and_the_status_command(school: FilteredSchool) -> None:
    before = evasion_count(school)
    send(school, "pupil", 80, [decoy("no-ack", "www.allowed.test"), real("www.blocked.test")], answer_bytes=PAGE_BYTES)
    counted = wait_for_evasion_count(school, before)
    assert counted > before
    viewer = school.run_edufilter("token", "create", "--role", "viewer").stdout.strip()
    text = school.gateway.run(["curl", "-sS", "-H", f"Authorization: Bearer {viewer}",
                               "http://127.0.0.1:8470/metrics"]).stdout
    metric = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith("edufilter_evasion_total{"))
    assert metric >= counted, text
    shown = school.gateway.run([sys.executable, "-m", "edufilter", "status", "--config", str(school.config_path)])
    assert re.search(r"evasion: \d+ flows stopped as circumvention attempts", shown.stdout), shown.stdout
