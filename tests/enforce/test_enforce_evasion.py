"""The classify pass on what a pupil's client can do to hide a name (issue 13): flows with no
name on web ports (and a default-deny egress), unreadable and conflicting names, and every
request on a kept-alive or pipelining plain-HTTP connection. Crafted packets, no queue; the
kernel and real clients are in tests/lab/test_evasion.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edufilter.enforce._enforce import Code, Enforcer, Reason, Slow
from edufilter._fastpath import FlowExtractor
from edufilter.capture._queue import DROP
from packets import (
    SERVER4,
    client_hello_message,
    extension,
    ipv4,
    openssl_client_hello,
    sni_extension,
    tcp,
    tls_records,
    udp,
)
from test_enforce import MASK, compiled_view, set_policy

POLICY = """
[settings]
default_group = "pupils"
[lists.blocked]
domain = ["blocked.test", "blockedsite.test"]
[lists.lessons]
url_prefix = ["blockedsite.test/lessons"]
[lists.school]
cidr = ["198.51.100.0/24"]
[lists.paths]
url_prefix = ["mixed.test/games"]
[groups.pupils]
bypass_shield = true
[[groups.pupils.rules]]
action = "block"
lists = ["blocked", "paths"]
[[groups.pupils.rules]]
action = "allow"
lists = ["school", "lessons"]
[groups.staff]
[[groups.staff.clients]]
cidr = "198.18.40.0/24"
[[groups.staff.rules]]
action = "block"
lists = ["blocked"]
[groups.egress]
bypass_shield = true
unnamed = "block-all"
[[groups.egress.clients]]
cidr = "198.18.50.0/24"
"""
PUPIL, STAFF, EGRESS = "198.18.0.1", "198.18.40.1", "198.18.50.1"


@pytest.fixture()
def enforcer(tmp_path: Path) -> Enforcer:
    loop = Enforcer(None, FlowExtractor(), None, MASK, 16)
    set_policy(loop, compiled_view(tmp_path, POLICY))
    return loop


def run(loop: Enforcer, packets: list[bytes]) -> list[dict]:
    """Classifies packets (at most one batch) and returns the handler's view of each."""
    assert len(packets) <= 16
    loop.classify_offline(packets, 1.0)
    return [loop.packet(index) for index in range(len(packets))]


def stream(payload: bytes, isn: int, sport: int, client: str = PUPIL, dport: int = 443,
           dst: str = SERVER4) -> list[bytes]:
    return [ipv4(tcp(b"", isn, dport=dport, sport=sport, flags=0x02), 6, src=client, dst=dst),
            ipv4(tcp(payload, isn + 1, dport=dport, sport=sport), 6, src=client, dst=dst)]


def hello(*extensions: bytes) -> bytes:
    return tls_records(client_hello_message(list(extensions)))


# ---- flows without a readable name on web ports

def test_tls_without_sni_is_evasion_for_a_shielded_group_and_allowed_otherwise(enforcer: Enforcer) -> None:
    no_sni = hello(extension(16, b"\x00\x03\x02h2"))
    pupil = run(enforcer, stream(no_sni, 100, 41000))[1]
    assert (pupil["code"], pupil["reason"], pupil["slow"]) == (Code.CODE_REJECT, Reason.REASON_EVASION,
                                                               Slow.SLOW_EVENT)
    staff = run(enforcer, stream(no_sni, 200, 41001, client=STAFF))[1]
    assert staff["code"] == Code.CODE_ALLOW
    assert enforcer.stats["evasion"] == 1


def test_other_bytes_on_443_and_a_bare_address_host_are_evasion(enforcer: Enforcer) -> None:
    vpn = run(enforcer, stream(b"\x00\x0e\x38\x8f\x1e\x6a" + bytes(40), 300, 41002))[1]
    assert (vpn["code"], vpn["reason"]) == (Code.CODE_REJECT, Reason.REASON_EVASION)
    by_address = run(enforcer, stream(b"GET / HTTP/1.1\r\nHost: 198.18.0.2\r\n\r\n", 400, 41003, dport=80))[1]
    assert (by_address["code"], by_address["reason"], by_address["slow"]) == (
        Code.CODE_REJECT, Reason.REASON_EVASION, Slow.SLOW_HTTP_BLOCK)


def test_an_address_allow_rule_opens_the_schools_own_server(enforcer: Enforcer) -> None:
    no_sni = hello(extension(16, b"\x00\x03\x02h2"))
    school = run(enforcer, stream(no_sni, 500, 41004, dst="198.51.100.9"))[1]
    assert school["code"] == Code.CODE_ALLOW


def test_other_ports_stay_open_unless_the_group_denies_all_egress(enforcer: Enforcer) -> None:
    wireguard = b"\x01\x00\x00\x00" + bytes(144)
    pupil = run(enforcer, [ipv4(udp(wireguard, 51820), 17)])[0]
    assert pupil["code"] == Code.CODE_ALLOW
    egress = run(enforcer, [ipv4(udp(wireguard, 51820, sport=50001), 17, src=EGRESS),
                            ipv4(udp(b"\x16\xfe\xff" + bytes(40), 1194, sport=50002), 17, src=EGRESS),
                            ipv4(udp(b"\x23" + bytes(47), 123, sport=50003), 17, src=EGRESS)])
    # a default-deny egress is an ordinary block, not a circumvention attempt
    assert [(p["code"], p["reason"]) for p in egress] == [
        (Code.CODE_REJECT, Reason.REASON_RULE), (Code.CODE_REJECT, Reason.REASON_RULE),
        (Code.CODE_ALLOW, Reason.REASON_RULE)]
    ssh = run(enforcer, stream(b"SSH-2.0-OpenSSH_9.2\r\n", 600, 41005, client=EGRESS, dport=22))[1]
    assert ssh["code"] == Code.CODE_REJECT
    named = run(enforcer, stream(openssl_client_hello("www.allowed.test"), 700, 41006, client=EGRESS,
                                 dport=8443))[1]
    assert named["code"] == Code.CODE_ALLOW


# ---- names

def test_an_unreadable_sni_is_evasion_for_a_shielded_group(enforcer: Enforcer) -> None:
    utf8 = hello(sni_extension("blocked.tést".encode()))
    pupil = run(enforcer, stream(utf8, 800, 41007))[1]
    assert (pupil["code"], pupil["reason"]) == (Code.CODE_REJECT, Reason.REASON_EVASION)
    nul = hello(sni_extension(b"www.blocked.test\x00.allowed.test"))
    assert run(enforcer, stream(nul, 900, 41008))[1]["reason"] == Reason.REASON_EVASION


def test_two_server_names_the_stricter_wins_and_for_the_shielded_it_is_evasion(enforcer: Enforcer) -> None:
    two = hello(sni_extension(b"www.allowed.test"), sni_extension(b"WWW.Blocked.Test."))
    staff = run(enforcer, stream(two, 1000, 41009, client=STAFF))[1]
    assert (staff["code"], staff["name"], staff["reason"]) == (Code.CODE_REJECT, "www.blocked.test",
                                                               Reason.REASON_RULE)
    pupil = run(enforcer, stream(two, 1100, 41010))[1]
    assert (pupil["code"], pupil["reason"]) == (Code.CODE_REJECT, Reason.REASON_EVASION)


# ---- plain HTTP: every request on the connection

def request(host: str, target: str = "/", extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n{extra}\r\n".encode()


def http(payload: bytes, seq: int, sport: int, client: str = PUPIL) -> bytes:
    return ipv4(tcp(payload, seq, dport=80, sport=sport), 6, src=client)


def test_an_allowed_http_flow_is_followed_and_a_later_request_for_a_blocked_host_resets_it(
        enforcer: Enforcer) -> None:
    first = request("www.allowed.test")
    opened = run(enforcer, stream(first, 2000, 42000, dport=80))[1]
    assert opened["code"] == Code.CODE_HTTP_FOLLOW
    second = request("www.allowed.test", "/again")
    third = request("www.blocked.test")
    later = run(enforcer, [http(second, 2001 + len(first), 42000),
                           http(third, 2001 + len(first) + len(second), 42000)])
    assert (later[0]["mark_code"], later[0]["slow"]) == (Code.CODE_HTTP_FOLLOW, Slow.SLOW_NONE)
    assert (later[1]["code"], later[1]["name"], later[1]["slow"]) == (Code.CODE_REJECT, "www.blocked.test",
                                                                      Slow.SLOW_HTTP_BLOCK)


def test_pipelined_requests_in_the_first_packet_are_all_judged(enforcer: Enforcer) -> None:
    both = request("www.allowed.test") + request("www.blocked.test")
    packet = run(enforcer, stream(both, 3000, 42001, dport=80))[1]
    assert (packet["code"], packet["name"]) == (Code.CODE_REJECT, "www.blocked.test")


def test_a_request_split_across_segments_later_on_the_connection(enforcer: Enforcer) -> None:
    first = request("www.allowed.test")
    run(enforcer, stream(first, 4000, 42002, dport=80))
    later = request("www.blocked.test")
    base = 4001 + len(first)
    pieces = [http(later[start:start + 7], base + start, 42002) for start in range(0, len(later), 7)]
    views = run(enforcer, pieces[:16])
    assert [view["code"] for view in views[:-1]] == [Code.CODE_UNDECIDED] * (len(views) - 1)
    assert all(view["mark_code"] == Code.CODE_HTTP_FOLLOW for view in views[:-1])
    assert (views[-1]["code"], views[-1]["name"]) == (Code.CODE_REJECT, "www.blocked.test")


def test_a_body_is_skipped_by_its_length_and_chunks_not_read_as_requests(enforcer: Enforcer) -> None:
    decoy = request("www.blocked.test")           # inside a body: the server never reads it as a request
    post = (b"POST /up HTTP/1.1\r\nHost: www.allowed.test\r\nContent-Length: %d\r\n\r\n" % len(decoy)) + decoy
    chunked = (b"POST /up HTTP/1.1\r\nHost: www.allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x;ext=1\r\n" % len(decoy) + decoy + b"\r\n0\r\nTrailer: x\r\n\r\n")
    views = run(enforcer, stream(post + chunked, 5000, 42003, dport=80))
    assert views[1]["code"] == Code.CODE_HTTP_FOLLOW
    after = request("www.blocked.test", "/after")
    last = run(enforcer, [http(after, 5001 + len(post + chunked), 42003)])[0]
    assert (last["code"], last["path"]) == (Code.CODE_REJECT, "/after")


def test_conflicting_hosts_are_evasion_for_the_shielded_and_the_stricter_for_others(enforcer: Enforcer) -> None:
    absolute = b"GET http://www.blocked.test/ HTTP/1.1\r\nHost: www.allowed.test\r\n\r\n"
    pupil = run(enforcer, stream(absolute, 6000, 42004, dport=80))[1]
    assert (pupil["code"], pupil["reason"], pupil["slow"]) == (Code.CODE_REJECT, Reason.REASON_EVASION,
                                                               Slow.SLOW_HTTP_BLOCK)
    two_hosts = b"GET / HTTP/1.1\r\nHost: www.allowed.test\r\nhost:www.blocked.test\r\n\r\n"
    staff = run(enforcer, stream(two_hosts, 6100, 42005, client=STAFF, dport=80))[1]
    assert (staff["code"], staff["name"], staff["reason"]) == (Code.CODE_REJECT, "www.blocked.test",
                                                               Reason.REASON_RULE)


def test_unreadable_framing_is_evasion_for_the_shielded_and_ends_following_for_others(enforcer: Enforcer) -> None:
    smuggle = (b"POST / HTTP/1.1\r\nHost: www.allowed.test\r\nContent-Length: 4\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    pupil = run(enforcer, stream(smuggle, 7000, 42006, dport=80))[1]
    assert (pupil["code"], pupil["reason"]) == (Code.CODE_REJECT, Reason.REASON_EVASION)
    staff = run(enforcer, stream(smuggle, 7100, 42007, client=STAFF, dport=80))[1]
    assert staff["code"] == Code.CODE_ALLOW       # not followed: the kernel takes the flow back


def test_garbage_where_a_request_should_start_is_evasion_for_the_shielded(enforcer: Enforcer) -> None:
    first = request("www.allowed.test")
    run(enforcer, stream(first, 8000, 42008, dport=80))
    garbage = run(enforcer, [http(b"\x16\x03\x01\x00\x10" + bytes(16), 8001 + len(first), 42008)])[0]
    assert (garbage["code"], garbage["reason"]) == (Code.CODE_REJECT, Reason.REASON_EVASION)


def test_a_segment_past_a_hole_is_dropped_until_the_hole_is_filled(enforcer: Enforcer) -> None:
    first = request("www.allowed.test")
    run(enforcer, stream(first, 9000, 42009, dport=80))
    later = request("www.blocked.test")
    base = 9001 + len(first)
    ahead = run(enforcer, [http(later[10:], base + 10, 42009)])[0]
    assert (ahead["verdict"], ahead["code"]) == (DROP, Code.CODE_UNDECIDED)
    filled = run(enforcer, [http(later[:10], base, 42009), http(later[10:], base + 10, 42009)])
    assert filled[0]["mark_code"] == Code.CODE_HTTP_FOLLOW
    assert (filled[1]["code"], filled[1]["name"]) == (Code.CODE_REJECT, "www.blocked.test")


def test_a_later_request_to_a_host_with_url_rules_goes_to_the_slow_path(enforcer: Enforcer) -> None:
    first = request("www.allowed.test")
    run(enforcer, stream(first, 9500, 42010, dport=80))
    later = run(enforcer, [http(request("mixed.test", "/games/1"), 9501 + len(first), 42010)])[0]
    assert (later["slow"], later["name"], later["path"]) == (Slow.SLOW_HTTP_URL, "mixed.test", "/games/1")


def test_unreadable_bytes_later_hand_an_unshielded_flow_to_the_kernel(enforcer: Enforcer) -> None:
    first = request("www.allowed.test")
    assert run(enforcer, stream(first, 9700, 42011, client=STAFF, dport=80))[1]["code"] == Code.CODE_HTTP_FOLLOW
    garbage = run(enforcer, [http(b"\x00garbage" * 8, 9701 + len(first), 42011, client=STAFF)])[0]
    assert (garbage["code"], garbage["mark_code"]) == (Code.CODE_ALLOW, Code.CODE_ALLOW)


def test_a_blocked_host_with_url_rules_still_goes_to_the_slow_path(enforcer: Enforcer) -> None:
    """A URL prefix can allow a path of a host whose name is blocked: the path decides."""
    views = run(enforcer, stream(request("blockedsite.test", "/lessons/1"), 9800, 42012, dport=80))
    assert (views[1]["slow"], views[1]["name"], views[1]["path"]) == (Slow.SLOW_HTTP_URL, "blockedsite.test",
                                                                      "/lessons/1")


@pytest.fixture(scope="module")
def shared_enforcer(tmp_path_factory: pytest.TempPathFactory) -> Enforcer:
    loop = Enforcer(None, FlowExtractor(), None, MASK, 16)
    set_policy(loop, compiled_view(tmp_path_factory.mktemp("state"), POLICY))
    return loop


_ports = iter(range(20000, 60000))


def framed(host: str, body: bytes, chunked: bool, index: int) -> bytes:
    head = f"POST /r{index} HTTP/1.1\r\nHost: {host}\r\n"
    if chunked:
        pieces = [body[i:i + 5] for i in range(0, len(body), 5)]
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"".join(
            b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.tuples(st.sampled_from(["www.allowed.test", "www.blocked.test", "a.allowed.test"]),
                                   st.binary(max_size=40), st.booleans()), min_size=1, max_size=5),
       cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=12))
def test_any_segmentation_of_a_kept_alive_stream_finds_the_first_blocked_request(
        shared_enforcer: Enforcer, requests: list[tuple[str, bytes, bool]], cuts: list[int]) -> None:
    """Bodies that hold request-like bytes never count as requests; the first blocked request
    is found wherever the segments are cut."""
    opening = request("www.allowed.test")
    stream_bytes = b"".join(framed(host, body.replace(b"\r", b"") + request("www.blocked.test"), chunked, index)
                            for index, (host, body, chunked) in enumerate(requests))
    sport, isn = next(_ports), 1000
    assert run(shared_enforcer, stream(opening, isn, sport, dport=80))[1]["code"] == Code.CODE_HTTP_FOLLOW
    edges = sorted({0, len(stream_bytes), *(cut for cut in cuts if cut < len(stream_bytes))})
    base = isn + 1 + len(opening)
    segments_ = [http(stream_bytes[start:end], base + start, sport) for start, end in zip(edges, edges[1:])]
    verdicts = []
    for start in range(0, len(segments_), 16):
        verdicts += run(shared_enforcer, segments_[start:start + 16])
    blocked = [index for index, (host, _, _) in enumerate(requests) if host == "www.blocked.test"]
    rejected = [view for view in verdicts if view["code"] == Code.CODE_REJECT]
    if blocked:
        assert rejected and rejected[0]["name"] == "www.blocked.test"
        assert rejected[0]["path"] == f"/r{blocked[0]}"
    else:
        assert not rejected
        assert all(view["mark_code"] == Code.CODE_HTTP_FOLLOW for view in verdicts)
