"""The fast path against circumvention tools: split ClientHellos and request heads are read
whole, segments the server would drop are not read, and what could make the gateway read
another stream than the server (differing overlaps, urgent data, too many holes, a handshake
unfinished at the bound) is flagged."""

from __future__ import annotations

import random

import dpkt
import pytest
from evasion_packets import MD5_OPTION, http_request, pieces, segment, syn_segment
from packets import openssl_client_hello, post_quantum_client_hello, tls_records

from edufilter._fastpath import Evasion, FlowExtractor, Handshake

ISN = 5000
NAME = "blocked.school.test"


def hello() -> bytes:
    return tls_records(post_quantum_client_hello(NAME.encode()))


def run(extractor: FlowExtractor, packets: list[bytes], now: float = 1.0) -> list[tuple[int, str, str]]:
    found = []
    for index, packet in enumerate(packets):
        result = extractor.extract(packet, now)
        if result is not None:
            found.append((index, result.kind, result.value))
    return found


def split(stream: bytes, cuts: list[int], **fields) -> list[bytes]:
    return [segment(data, offset, ISN, **fields) for offset, data in pieces(stream, cuts)]


# ---- split streams

@pytest.mark.parametrize("stream, kind, name", [
    (hello(), "sni", NAME),
    (openssl_client_hello(NAME), "sni", NAME),
    (http_request(NAME), "http_host", NAME),
])
def test_one_byte_segments_in_order_yield_the_name_with_the_last_byte(stream, kind, name):
    ex = FlowExtractor(verify_checksums=True)
    packets = [syn_segment(ISN), *split(stream, list(range(1, len(stream))))]
    assert run(ex, packets) == [(len(packets) - 1, kind, name)]
    assert ex.last_evasion == Evasion.EVASION_NONE


@pytest.mark.parametrize("seed", range(5))
def test_segments_in_any_order_with_retransmissions_yield_the_name(seed):
    shuffle = random.Random(seed)
    stream = hello()
    cuts = sorted(shuffle.sample(range(1, len(stream)), 7))   # 8 pieces: a hole count real stacks see
    packets = split(stream, cuts)
    packets += shuffle.sample(packets, 3)                    # retransmitted copies, same bytes
    shuffle.shuffle(packets)
    ex = FlowExtractor(verify_checksums=True)
    found = run(ex, [syn_segment(ISN), *packets])
    assert [(kind, name) for _, kind, name in found] == [("sni", NAME)]
    assert ex.stats["overlaps_differing"] == 0


def test_many_tls_records_of_one_byte_each_yield_the_name():
    message = post_quantum_client_hello(NAME.encode())
    stream = tls_records(message, record_size=1)
    packets = [syn_segment(ISN), *split(stream, list(range(40, len(stream), 40)))]
    assert run(FlowExtractor(), packets)[-1][1:] == ("sni", NAME)


def test_overlap_with_the_same_bytes_is_fine():
    stream = hello()
    first = segment(stream[:600], 0, ISN)
    overlapping = segment(stream[300:1200], 300, ISN)        # half old bytes, half new, all the same
    rest = segment(stream[1200:], 1200, ISN)
    ex = FlowExtractor()
    assert run(ex, [syn_segment(ISN), first, overlapping, rest])[-1][1:] == ("sni", NAME)
    assert ex.stats["overlaps_differing"] == 0 and ex.last_evasion == Evasion.EVASION_NONE


def test_overlap_with_different_bytes_is_flagged():
    stream = hello()
    other = tls_records(post_quantum_client_hello(b"allowed.school.test"))
    ex = FlowExtractor()
    # the tail first (held), then a segment over it whose bytes differ: which one a server keeps
    # depends on its stack, so the flow cannot be judged by either
    run(ex, [syn_segment(ISN), segment(stream[1000:], 1000, ISN)])
    assert ex.last_evasion == Evasion.EVASION_NONE
    run(ex, [segment(other[:len(stream)], 0, ISN)])
    assert ex.last_evasion & Evasion.EVASION_OVERLAP
    assert ex.stats["overlaps_differing"] == 1


def test_urgent_data_inside_the_head_is_flagged():
    stream = hello()
    ex = FlowExtractor()
    run(ex, [syn_segment(ISN), segment(stream[:500], 0, ISN)])
    run(ex, [segment(b"X" + stream[500:900], 500, ISN, flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_URG, urgent=1)])
    assert ex.last_evasion & Evasion.EVASION_URGENT and ex.stats["urgent_data"] == 1


def test_an_urgent_flag_without_a_pointer_is_not_urgent_data():
    ex = FlowExtractor()
    stream = http_request(NAME)
    packet = segment(stream, 0, ISN, flags=ACK_PSH_URG, urgent=0)
    assert run(ex, [syn_segment(ISN), packet]) == [(1, "http_host", NAME)]
    assert ex.stats["urgent_data"] == 0


ACK_PSH_URG = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH | dpkt.tcp.TH_URG


def test_more_holes_than_a_real_client_leaves_are_flagged():
    stream = hello()
    every_other = [segment(stream[offset:offset + 1], offset, ISN) for offset in range(1, 80, 2)]
    ex = FlowExtractor()
    run(ex, [syn_segment(ISN), *every_other])
    assert ex.last_evasion & Evasion.EVASION_HOLES and ex.stats["stream_holes_exceeded"] > 0


# ---- decoys: segments the server drops are not read

DECOY_REQUEST = http_request("allowed.school.test")


@pytest.mark.parametrize("decoy_fields, counter", [
    ({"ttl": 3}, "decoys_low_hop_limit"),
    ({"bad_checksum": True}, "decoys_bad_checksum"),
    ({"options": MD5_OPTION + b"\x01\x01"}, "decoys_md5"),
    ({"flags": dpkt.tcp.TH_PUSH}, "decoys_no_ack"),
])
@pytest.mark.parametrize("v6", [False, True])
def test_a_decoy_request_is_not_read_and_the_real_one_is(decoy_fields, counter, v6):
    ex = FlowExtractor(verify_checksums=True)
    decoy = segment(DECOY_REQUEST, 0, ISN, v6=v6, **decoy_fields)
    real = segment(http_request(NAME), 0, ISN, v6=v6)
    assert run(ex, [syn_segment(ISN, v6=v6), decoy]) == []
    assert ex.stats[counter] == 1 and ex.last_evasion & Evasion.EVASION_DECOY
    assert run(ex, [real]) == [(0, "http_host", NAME)]


def test_a_decoy_far_outside_the_window_is_not_read():
    ex = FlowExtractor()
    stream = hello()
    decoy = segment(tls_records(post_quantum_client_hello(b"allowed.school.test")), 1 << 20, ISN)
    found = run(ex, [syn_segment(ISN), segment(stream[:700], 0, ISN), decoy, segment(stream[700:], 700, ISN)])
    assert [name for _, _, name in found] == [NAME]
    assert ex.stats["decoys_outside_window"] == 1


@pytest.mark.parametrize("odd_length", [31, 32, 33])
def test_good_checksums_pass_whatever_the_length(odd_length):
    ex = FlowExtractor(verify_checksums=True)
    head = http_request(NAME)
    padded = head[:-2] + b"X-Pad: " + b"p" * (odd_length - 9) + b"\r\n\r\n"
    for v6 in (False, True):
        assert run(ex, [syn_segment(ISN + odd_length, v6=v6), segment(padded, 0, ISN + odd_length, v6=v6)])
    assert ex.stats["decoys_bad_checksum"] == 0


def test_checksums_are_not_verified_unless_asked():
    ex = FlowExtractor()
    packet = segment(http_request(NAME), 0, ISN, bad_checksum=True)
    assert run(ex, [syn_segment(ISN), packet]) == [(1, "http_host", NAME)]


def test_same_hop_limit_as_the_syn_is_no_decoy():
    ex = FlowExtractor()
    packets = [syn_segment(ISN, ttl=40), *split(hello(), [100], ttl=40)]
    assert run(ex, packets)[-1][1:] == ("sni", NAME)
    assert ex.stats["decoys_low_hop_limit"] == 0


# ---- bounds: the handshake may take bytes and time, not forever

def test_a_pending_handshake_past_the_packet_bound_is_held_until_the_time_bound():
    ex = FlowExtractor(handshake_timeout=5.0)
    stream = hello()
    run(ex, [syn_segment(ISN)], now=100.0)
    run(ex, [segment(stream[:10], 0, ISN)], now=101.0)
    assert ex.handshake_after_bound(101.0) == Handshake.HANDSHAKE_PENDING
    run(ex, [segment(stream[10:20], 10, ISN)], now=106.5)    # 5.5 s after its first byte
    assert ex.handshake_after_bound(106.5) == Handshake.HANDSHAKE_UNFINISHED
    assert ex.last_evasion & Evasion.EVASION_UNFINISHED and ex.stats["handshakes_unfinished"] == 1


def test_the_packet_bound_of_a_pending_handshake():
    ex = FlowExtractor(max_handshake_packets=3)
    stream = hello()
    run(ex, [syn_segment(ISN)])
    states = []
    for offset in range(4):
        run(ex, [segment(stream[offset:offset + 1], offset, ISN)])
        states.append(ex.handshake_after_bound(1.0))
    assert states == [Handshake.HANDSHAKE_PENDING] * 3 + [Handshake.HANDSHAKE_UNFINISHED]


def test_a_handshake_that_fills_the_buffer_is_unfinished():
    stream = tls_records(post_quantum_client_hello(NAME.encode()))
    ex = FlowExtractor(buffer_size=1024)
    run(ex, [syn_segment(ISN), *split(stream, [600, 1200])[:2]])    # 1200 bytes: the buffer is full
    assert ex.stats["handshakes_unfinished"] == 1 and ex.last_evasion & Evasion.EVASION_UNFINISHED


def test_past_the_bound_before_any_client_byte():
    ex = FlowExtractor(handshake_timeout=5.0)
    ack = dpkt.tcp.TH_ACK
    run(ex, [syn_segment(ISN)], now=1.0)
    # empty ACKs that acknowledge nothing new: padding, the ClientHello still to come
    run(ex, [segment(b"", 0, ISN, flags=ack)], now=1.0)
    assert ex.handshake_after_bound(1.0) == Handshake.HANDSHAKE_PENDING
    run(ex, [segment(b"", 0, ISN, flags=ack)], now=7.0)
    assert ex.handshake_after_bound(7.0) == Handshake.HANDSHAKE_UNFINISHED


def test_past_the_bound_while_the_server_sends_is_no_handshake():
    """A server that speaks first (or a download): the client's ACK number moves."""
    ex = FlowExtractor()
    run(ex, [syn_segment(ISN)])
    for ack_number in (1000, 2000):
        packet = bytearray(segment(b"", 0, ISN, flags=dpkt.tcp.TH_ACK))
        packet[28:32] = ack_number.to_bytes(4, "big")
        run(ex, [bytes(packet)])
        state = ex.handshake_after_bound(1.0)
    assert state == Handshake.HANDSHAKE_NONE


def test_a_decided_flow_is_no_handshake():
    ex = FlowExtractor()
    run(ex, [syn_segment(ISN), segment(http_request(NAME), 0, ISN)])
    run(ex, [segment(b"more", 200, ISN)])
    assert ex.handshake_after_bound(1.0) == Handshake.HANDSHAKE_NONE


def test_a_new_syn_forgets_the_evasion_of_the_old_connection():
    ex = FlowExtractor()
    run(ex, [syn_segment(ISN), segment(DECOY_REQUEST, 0, ISN, ttl=2)])
    assert ex.last_evasion & Evasion.EVASION_DECOY
    assert run(ex, [syn_segment(ISN + 99), segment(http_request(NAME), 0, ISN + 99)]) == [(1, "http_host", NAME)]
    assert ex.last_evasion == Evasion.EVASION_NONE
