"""QUIC in the worker's classify pass (enforce/_enforce.pyx with decode/_quic.pyx): a QUIC Initial's server
name is decided in the loop like a TLS SNI, and UDP/443 that is no readable v1/v2 Initial is
dropped as evasion for groups with the bypass shield."""

from __future__ import annotations

from pathlib import Path

import pytest
from aioquic.quic.packet import QuicProtocolVersion

from edufilter.enforce._enforce import Code, Enforcer, Reason, Slow
from edufilter._fastpath import FlowExtractor
from packets import ipv4, ipv6, udp
from quic_packets import RFC_V1_CLIENT_INITIAL, aioquic_datagrams, crypto_frame, initial_packet
from test_enforce import MASK, POLICY, compiled_view, set_policy

LONG_ALPN = [f"h3-experiment-{index:02d}-" + "x" * 80 for index in range(12)]
UNSHIELDED_POLICY = POLICY.replace("bypass_shield = true", "bypass_shield = false")
QUIC_BLOCKED_POLICY = POLICY.replace("bypass_shield = true", 'bypass_shield = true\nquic = "block"')


def make_enforcer(state: Path, policy: str) -> Enforcer:
    loop = Enforcer(None, FlowExtractor(), None, MASK, 16)
    set_policy(loop, compiled_view(state, policy))
    return loop


@pytest.fixture
def shielded(tmp_path: Path) -> Enforcer:
    return make_enforcer(tmp_path, POLICY)


def quic(payload: bytes, sport: int, dport: int = 443, v6: bool = False) -> bytes:
    return ipv6(udp(payload, dport, sport=sport), 17) if v6 else ipv4(udp(payload, dport, sport=sport), 17)


def classify_one(loop: Enforcer, packet: bytes, mark: int = 0) -> tuple[list[tuple[int, int, str | None]], int]:
    """The slow-path list of one packet's classify pass, and the reason it was decided for
    (read while the packet, which the batch points into, is still alive)."""
    batch = [packet]
    slow = loop.classify_offline(batch, 1.0, mark)[2]
    return slow, loop.packet(0)["reason"]


def decided(loop: Enforcer, sport: int) -> tuple[int, str | None] | None:
    for flow in loop.decided_flows():
        if flow[1] == 17 and flow[4] == sport:
            return flow[7], flow[8]
    return None


@pytest.mark.parametrize("version", [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2])
@pytest.mark.parametrize("v6", [False, True])
def test_a_quic_name_is_decided_in_the_loop(shielded: Enforcer, version: int, v6: bool) -> None:
    allowed = [quic(data, 50000, v6=v6) for data in aioquic_datagrams(version, "video.allowed.test", ["h3"])]
    blocked = [quic(data, 50001, v6=v6) for data in aioquic_datagrams(version, "www.blocked.test", ["h3"])]
    names, blocks, slow = shielded.classify_offline(allowed + blocked, 1.0)
    assert (names, blocks) == (2, 1)
    assert slow == [(1, Slow.SLOW_EVENT, "www.blocked.test")]  # only the block's event goes to Python
    assert decided(shielded, 50000) == (Code.CODE_ALLOW, "video.allowed.test")
    assert decided(shielded, 50001) == (Code.CODE_REJECT, "www.blocked.test")
    assert shielded.quic_stats["client_hellos"] == 2


def test_a_client_hello_over_two_datagrams_waits_for_the_second(shielded: Enforcer) -> None:
    first, second = (quic(data, 50002) for data in aioquic_datagrams(QuicProtocolVersion.VERSION_1, "two.blocked.test", LONG_ALPN))
    assert shielded.classify_offline([first], 1.0) == (0, 0, [])
    assert decided(shielded, 50002) is None
    assert shielded.stats["undecided"] == 1
    assert shielded.classify_offline([second], 1.0) == (1, 1, [(0, Slow.SLOW_EVENT, "two.blocked.test")])
    assert decided(shielded, 50002) == (Code.CODE_REJECT, "two.blocked.test")


def test_a_quic_initial_on_another_port_is_read_too(shielded: Enforcer) -> None:
    (only,) = aioquic_datagrams(QuicProtocolVersion.VERSION_2, "alt.blocked.test", ["h3"])
    assert shielded.classify_offline([quic(only, 50003, dport=8443)], 1.0)[:2] == (1, 1)


UNREADABLE = {
    "draft-29": b"\xc0\xff\x00\x00\x1d\x08" + bytes(8) + bytes(1186),
    "gquic-q050": b"\xc0Q050\x08" + bytes(8) + bytes(1186),
    "gquic-q043": b"\x0d" + bytes(8) + b"Q043" + bytes(1187),
    "random": bytes(range(256)) * 5,
    "small-initial": RFC_V1_CLIENT_INITIAL[:1199],
}


@pytest.mark.parametrize("payload", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_udp_443_is_dropped_as_evasion_for_shielded_groups(
        shielded: Enforcer, tmp_path: Path, payload: bytes) -> None:
    assert classify_one(shielded, quic(payload, 50004)) == ([(0, Slow.SLOW_EVENT, None)], Reason.REASON_EVASION)
    assert decided(shielded, 50004) == (Code.CODE_DROP, None)
    # Without the shield the group's default (allow) decides, as for any unnamed UDP flow.
    unshielded = make_enforcer(tmp_path / "unshielded", UNSHIELDED_POLICY)
    assert unshielded.classify_offline([quic(payload, 50004)], 1.0) == (0, 0, [])
    assert decided(unshielded, 50004) == (Code.CODE_ALLOW, None)


def test_udp_to_other_ports_is_not_evasion(shielded: Enforcer) -> None:
    assert shielded.classify_offline([quic(bytes(range(256)) * 5, 50005, dport=51820)], 1.0) == (0, 0, [])
    assert decided(shielded, 50005) == (Code.CODE_ALLOW, None)


def test_a_quic_client_hello_without_a_name_is_evasion(shielded: Enforcer) -> None:
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    nameless = initial_packet(crypto_frame(0, b"\x01" + len(body).to_bytes(3, "big") + body), pad_to=1200)
    assert classify_one(shielded, quic(nameless, 50006)) == ([(0, Slow.SLOW_EVENT, None)], Reason.REASON_EVASION)
    assert decided(shielded, 50006) == (Code.CODE_DROP, None)


def test_datagrams_of_a_connection_being_read_pass(shielded: Enforcer) -> None:
    first, second = (quic(data, 50007) for data in aioquic_datagrams(QuicProtocolVersion.VERSION_1, "www.allowed.test", LONG_ALPN))
    zero_rtt_like = quic(b"\xd0\x00\x00\x00\x01\x08" + bytes(8) + b"\x00\x10" + bytes(16), 50007)
    assert shielded.classify_offline([first, zero_rtt_like], 1.0) == (0, 0, [])
    assert decided(shielded, 50007) is None
    assert shielded.classify_offline([second], 1.0)[:2] == (1, 0)
    assert decided(shielded, 50007) == (Code.CODE_ALLOW, "www.allowed.test")


def test_quic_blocked_for_the_group_is_rejected_without_reading(tmp_path: Path) -> None:
    loop = make_enforcer(tmp_path, QUIC_BLOCKED_POLICY)
    (only,) = aioquic_datagrams(QuicProtocolVersion.VERSION_1, "www.allowed.test", ["h3"])
    assert classify_one(loop, quic(only, 50008)) == ([(0, Slow.SLOW_EVENT, None)], Reason.REASON_QUIC)
    assert loop.quic_stats["datagrams"] == 0


def test_a_client_hello_unfinished_at_the_inspection_bound_is_evasion(shielded: Enforcer, tmp_path: Path) -> None:
    first, _second = aioquic_datagrams(QuicProtocolVersion.VERSION_1, "www.allowed.test", LONG_ALPN)
    after_the_bound = MASK & (Code.CODE_BOUND << 24)  # the rules' mark on the packet past inspect_packets
    assert shielded.classify_offline([quic(first, 50009)], 1.0) == (0, 0, [])
    assert classify_one(shielded, quic(bytes(1300), 50009), after_the_bound) == \
        ([(0, Slow.SLOW_EVENT, None)], Reason.REASON_EVASION)
    assert decided(shielded, 50009) == (Code.CODE_DROP, None)
    assert shielded.quic_stats["pending"] == 0
    unshielded = make_enforcer(tmp_path / "unshielded", UNSHIELDED_POLICY)
    unshielded.classify_offline([quic(first, 50009)], 1.0)
    assert classify_one(unshielded, quic(bytes(1300), 50009), after_the_bound)[1] == Reason.REASON_BOUND
    assert decided(unshielded, 50009) == (Code.CODE_ALLOW, None)


def test_quic_to_a_name_safe_search_rewrites_goes_to_the_handler(shielded: Enforcer) -> None:
    """As for TLS: the handler checks that the destination is an address the rewrite answered."""
    datagrams = [quic(data, 50090) for data in aioquic_datagrams(QuicProtocolVersion.VERSION_1, "www.google.com", ["h3"])]
    names, blocks, slow = shielded.classify_offline(datagrams, 1.0)
    assert (names, blocks) == (1, 0)
    assert [(reason, name) for _, reason, name in slow] == [(Slow.SLOW_SAFE_SEARCH, "www.google.com")]
