"""QUIC Initial decoder (decode/quic.py, the reference for the fast path's decode/_quic.pyx): RFC test
vectors, real aioquic clients, crafted and random input."""

from __future__ import annotations

import pytest
from aioquic.quic.packet import QuicProtocolVersion
from hypothesis import given, settings
from hypothesis import strategies as st

from edufilter.decode.quic import (
    MAX_CRYPTO_BYTES,
    QUIC_V1,
    QUIC_V2,
    QuicInitialCollector,
    derive_client_initial_keys,
    looks_like_client_initial,
)
from quic_packets import (
    CLIENT,
    OTHER_CLIENT,
    RFC_CLIENT_HELLO,
    RFC_DCID,
    RFC_PAYLOAD,
    RFC_V1_CLIENT_INITIAL,
    RFC_V1_UNPROTECTED_HEADER,
    RFC_V2_CLIENT_INITIAL,
    RFC_V2_UNPROTECTED_HEADER,
    aioquic_datagrams,
    client_hello,
    corrupted_tag,
    crypto_frame,
    initial_packet,
    long_header_packet,
    protect,
    server_name_of,
    varint,
)


# --- RFC test vectors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "key", "iv", "hp"),
    [
        (QUIC_V1, "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c",
         "9f50449e04a0e810283a1e9933adedd2"),
        (QUIC_V2, "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f",
         "45b95e15235d6f45a6b19cbcb0294ba9"),
    ],
)
def test_client_initial_keys_match_rfc_appendix_a1(
    version: int, key: str, iv: str, hp: str
) -> None:
    keys = derive_client_initial_keys(version, RFC_DCID)
    assert (keys.key.hex(), keys.iv.hex(), keys.hp.hex()) == (key, iv, hp)


@pytest.mark.parametrize(
    ("header", "protected", "version"),
    [
        (RFC_V1_UNPROTECTED_HEADER, RFC_V1_CLIENT_INITIAL, QUIC_V1),
        (RFC_V2_UNPROTECTED_HEADER, RFC_V2_CLIENT_INITIAL, QUIC_V2),
    ],
)
def test_test_helper_reproduces_rfc_protected_packet(
    header: bytes, protected: bytes, version: int
) -> None:
    assert protect(header, RFC_PAYLOAD, 2, version, RFC_DCID) == protected


@pytest.mark.parametrize("protected", [RFC_V1_CLIENT_INITIAL, RFC_V2_CLIENT_INITIAL])
def test_rfc_client_initial_yields_its_client_hello(protected: bytes) -> None:
    assert looks_like_client_initial(protected)
    collector = QuicInitialCollector()
    hello = collector.feed(memoryview(protected), CLIENT, now=0.0)
    assert hello == RFC_CLIENT_HELLO
    assert server_name_of(hello) == "example.com"
    assert collector.stats["client_hellos"] == 1
    assert collector.stats["decrypt_failures"] == 0


def test_retransmitted_initial_reports_once_until_timeout() -> None:
    collector = QuicInitialCollector(timeout=10.0)
    assert collector.feed(RFC_V1_CLIENT_INITIAL, CLIENT, now=0.0) == RFC_CLIENT_HELLO
    assert collector.feed(RFC_V1_CLIENT_INITIAL, CLIENT, now=5.0) is None
    assert collector.stats["already_reported"] == 1
    # The other client derives the same keys but is another connection.
    assert collector.feed(RFC_V1_CLIENT_INITIAL, OTHER_CLIENT, now=5.0) == RFC_CLIENT_HELLO
    assert collector.feed(RFC_V1_CLIENT_INITIAL, CLIENT, now=16.0) == RFC_CLIENT_HELLO
    assert collector.stats["expired"] == 2


# --- real client Initials from aioquic -----------------------------------------------------


@pytest.mark.parametrize("version", [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2])
def test_aioquic_client_initial(version: int) -> None:
    datagrams = aioquic_datagrams(version, "www.school.example", ["h3"])
    assert len(datagrams) == 1
    assert looks_like_client_initial(datagrams[0])
    collector = QuicInitialCollector()
    hello = collector.feed(datagrams[0], CLIENT, now=100.0)
    assert hello is not None
    assert server_name_of(hello) == "www.school.example"


@pytest.mark.parametrize("version", [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2])
@pytest.mark.parametrize("reverse", [False, True])
def test_aioquic_client_hello_across_datagrams(version: int, reverse: bool) -> None:
    alpn_protocols = [f"h3-experiment-{index:02d}-" + "x" * 80 for index in range(12)]
    datagrams = aioquic_datagrams(version, "video.school.example", alpn_protocols)
    assert len(datagrams) == 2
    assert all(looks_like_client_initial(datagram) for datagram in datagrams)
    if reverse:
        datagrams.reverse()
    collector = QuicInitialCollector()
    assert collector.feed(datagrams[0], CLIENT, now=100.0) is None
    hello = collector.feed(datagrams[1], CLIENT, now=100.1)
    assert hello is not None
    assert len(hello) > 1200
    assert server_name_of(hello) == "video.school.example"
    assert collector.stats["initial_packets"] == 2


# --- crafted packets -----------------------------------------------------------------------


HELLO = client_hello("crafted.school.example", filler=600)


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_coalesced_packets_are_walked_by_length(version: int) -> None:
    handshake_type = 0b10 if version == QUIC_V1 else 0b11
    zero_rtt_type = 0b01 if version == QUIC_V1 else 0b10
    datagram = (
        long_header_packet(zero_rtt_type, b"\xaa" * 50, version)
        + initial_packet(crypto_frame(0, HELLO), version=version)
        + long_header_packet(handshake_type, b"\x55" * 300, version)
        + corrupted_tag(initial_packet(b"\x01", version=version, dcid=b"\x77" * 8))
        + bytes(40)
    )
    collector = QuicInitialCollector()
    assert collector.feed(datagram, CLIENT, now=0.0) == HELLO
    assert collector.stats["initial_packets"] == 2
    assert collector.stats["decrypt_failures"] == 1


def test_walk_stops_at_short_header_retry_and_unknown_version() -> None:
    initial = initial_packet(crypto_frame(0, HELLO))
    short_header = b"\x40" + RFC_DCID + bytes(30)
    unknown_version = b"\xc0\x0a\x0a\x0a\x0a" + bytes(30)
    retry = b"\xf0\x00\x00\x00\x01" + bytes(30)
    collector = QuicInitialCollector()
    assert collector.feed(short_header + initial, CLIENT, now=0.0) is None
    assert collector.feed(unknown_version + initial, CLIENT, now=0.0) is None
    assert collector.feed(retry + initial, CLIENT, now=0.0) is None
    assert collector.stats["initial_packets"] == 0
    assert collector.feed(initial + short_header, CLIENT, now=0.0) == HELLO


def test_crypto_frames_out_of_order_overlapping_across_packets() -> None:
    first = initial_packet(
        crypto_frame(700, HELLO[700:]) + b"\x01" + crypto_frame(300, HELLO[300:500]),
        packet_number=1, pad_to=1200,
    )
    second = initial_packet(
        crypto_frame(450, HELLO[450:720])
        + crypto_frame(0, HELLO[:310])
        + crypto_frame(0, HELLO[:10]),
        packet_number=0, pad_to=1200,
    )
    collector = QuicInitialCollector()
    assert collector.feed(first, CLIENT, now=0.0) is None
    assert collector.feed(second, CLIENT, now=0.1) == HELLO


def test_first_received_crypto_bytes_win_over_later_overlaps() -> None:
    forged = HELLO[:100] + b"X" * 50
    collector = QuicInitialCollector()
    assert collector.feed(initial_packet(crypto_frame(100, forged[100:])), CLIENT, now=0.0) is None
    hello = collector.feed(initial_packet(crypto_frame(0, HELLO), packet_number=1), CLIENT, now=0.0)
    assert hello == HELLO[:100] + b"X" * 50 + HELLO[150:]


def test_ping_ack_and_padding_are_skipped() -> None:
    # Largest Acknowledged, ACK Delay, ACK Range Count, First ACK Range, (Gap, Length)...
    ack = b"\x02" + b"".join(varint(value) for value in (5, 10, 2, 1, 0, 1, 0, 0))
    # ... then ECT0, ECT1 and ECN-CE counts.
    ack_ecn = b"\x03" + b"".join(varint(value) for value in (5, 10, 0, 3, 1, 2, 3))
    frames = b"\x00\x00\x01" + ack + b"\x00" + ack_ecn + b"\x01" + crypto_frame(0, HELLO) + b"\x01"
    collector = QuicInitialCollector()
    assert collector.feed(initial_packet(frames, pad_to=1200), CLIENT, now=0.0) == HELLO


def test_connection_close_ends_the_frames() -> None:
    close = b"\x1c" + varint(0x0A) + varint(0) + varint(0)
    collector = QuicInitialCollector()
    packet = initial_packet(crypto_frame(0, HELLO[:50]) + close + crypto_frame(50, HELLO[50:]))
    assert collector.feed(packet, CLIENT, now=0.0) is None
    assert collector.stats["malformed"] == 0
    rest = initial_packet(crypto_frame(50, HELLO[50:]), packet_number=1)
    assert collector.feed(rest, CLIENT, now=0.0) == HELLO


@pytest.mark.parametrize(
    "bad_frame",
    [
        b"\x08\x00\x05hello",  # STREAM
        b"\x07\x01\x00",  # NEW_TOKEN
        b"\x1d\x00\x00",  # CONNECTION_CLOSE of the application
        b"\x40\x06\x00\x01\x01",  # CRYPTO with a non-minimal frame type encoding
        b"\x06\x00\x44\x00\x01",  # CRYPTO longer than the packet
        b"\x02\x00\x00\x3f\x00",  # ACK with more ranges than bytes
    ],
)
def test_disallowed_or_broken_frame_drops_the_packet(bad_frame: bytes) -> None:
    collector = QuicInitialCollector()
    packet = initial_packet(crypto_frame(0, HELLO) + bad_frame)
    assert collector.feed(packet, CLIENT, now=0.0) is None
    assert collector.stats["malformed"] + collector.stats["truncated"] == 1
    # The packet took no slot: a clean one afterwards still yields the ClientHello.
    clean = initial_packet(crypto_frame(0, HELLO), packet_number=1)
    assert collector.feed(clean, CLIENT, now=0.0) == HELLO


def test_reserved_bits_set_drop_the_packet() -> None:
    collector = QuicInitialCollector()
    packet = initial_packet(crypto_frame(0, HELLO), reserved_bits=0b10)
    assert collector.feed(packet, CLIENT, now=0.0) is None
    assert collector.stats["malformed"] == 1


def test_packet_number_lengths_and_token() -> None:
    for length, number in ((1, 0), (2, 0x1234), (3, 7), (4, 0x01020304)):
        collector = QuicInitialCollector()
        packet = initial_packet(
            crypto_frame(0, HELLO), packet_number=number, packet_number_length=length,
            token=b"retry-token" * 3, dcid=b"\x11" * 20, scid=b"",
        )
        assert collector.feed(packet, CLIENT, now=0.0) == HELLO


@pytest.mark.parametrize(
    ("first_number", "first_length", "second_number"), [(250, 1, 260), (300, 2, 255)]
)
def test_truncated_packet_numbers_decode_against_the_largest_seen(
    first_number: int, first_length: int, second_number: int
) -> None:
    collector = QuicInitialCollector()
    start = initial_packet(
        crypto_frame(0, HELLO[:400]), packet_number=first_number, packet_number_length=first_length
    )
    rest = initial_packet(
        crypto_frame(400, HELLO[400:]), packet_number=second_number, packet_number_length=1
    )
    assert collector.feed(start, CLIENT, now=0.0) is None
    assert collector.feed(rest, CLIENT, now=0.0) == HELLO


def test_other_version_with_the_same_connection_id_is_malformed() -> None:
    collector = QuicInitialCollector()
    assert collector.feed(initial_packet(crypto_frame(0, HELLO[:400])), CLIENT, now=0.0) is None
    rest = initial_packet(crypto_frame(400, HELLO[400:]), version=QUIC_V2, packet_number=1)
    assert collector.feed(rest, CLIENT, now=0.0) is None
    assert collector.stats["malformed"] == 1


def test_corrupted_tag_is_a_decrypt_failure() -> None:
    collector = QuicInitialCollector()
    assert collector.feed(corrupted_tag(RFC_V1_CLIENT_INITIAL), CLIENT, now=0.0) is None
    assert collector.stats["decrypt_failures"] == 1
    assert collector.feed(RFC_V1_CLIENT_INITIAL, CLIENT, now=0.0) == RFC_CLIENT_HELLO


def test_wrong_keys_are_a_decrypt_failure() -> None:
    packet = initial_packet(crypto_frame(0, HELLO), keys_dcid=b"\x99" * 8)
    collector = QuicInitialCollector()
    assert collector.feed(packet, CLIENT, now=0.0) is None
    assert collector.stats["decrypt_failures"] == 1


@pytest.mark.parametrize("cut", [1, 5, 6, 7, 15, 16, 17, 18, 20, 22, 30, 60, 1199])
def test_truncated_datagram(cut: int) -> None:
    collector = QuicInitialCollector()
    assert collector.feed(RFC_V1_CLIENT_INITIAL[:cut], CLIENT, now=0.0) is None
    assert collector.stats["truncated"] == 1


def test_bogus_lengths() -> None:
    collector = QuicInitialCollector()
    header = RFC_V1_CLIENT_INITIAL[:18]
    for datagram in (
        header[:5] + b"\x15" + bytes(40),  # DCID longer than 20 bytes
        header[:14] + b"\x15" + bytes(40),  # SCID longer than 20 bytes
        header[:14] + b"\x00\xbf\xff\xff\xff" + bytes(40),  # token past the end
        header + b"\xff" * 8 + bytes(40),  # Length past the end
        header + b"\x44\x9e",  # Length and nothing else
        header + b"\x0a" + bytes(40),  # Length too short to hold the header protection sample
    ):
        assert collector.feed(datagram, CLIENT, now=0.0) is None
    assert collector.stats["malformed"] == 2
    assert collector.stats["truncated"] == 4


def test_handshake_message_that_is_not_a_client_hello() -> None:
    server_hello = b"\x02" + HELLO[1:]
    collector = QuicInitialCollector()
    assert collector.feed(initial_packet(crypto_frame(0, server_hello)), CLIENT, now=0.0) is None
    assert collector.stats["malformed"] == 1


def test_oversize_crypto_drops_the_connection() -> None:
    collector = QuicInitialCollector()
    beyond = initial_packet(crypto_frame(MAX_CRYPTO_BYTES - 10, bytes(20)))
    assert collector.feed(beyond, CLIENT, now=0.0) is None
    assert collector.stats["oversize"] == 1
    # The dropped connection stays dropped: its ClientHello is no longer looked for.
    retry_from_start = initial_packet(crypto_frame(0, HELLO), packet_number=1)
    assert collector.feed(retry_from_start, CLIENT, now=0.0) is None

    huge_hello = client_hello("huge.example", filler=MAX_CRYPTO_BYTES)
    other = initial_packet(crypto_frame(0, huge_hello[:800]), dcid=b"\x42" * 8)
    assert collector.feed(other, CLIENT, now=0.0) is None
    assert collector.stats["oversize"] == 2


def test_finely_fragmented_crypto_drops_the_connection() -> None:
    collector = QuicInitialCollector()
    frames = b"".join(
        crypto_frame(offset, HELLO[offset : offset + 1]) for offset in range(2, 300, 2)
    )
    assert collector.feed(initial_packet(frames), CLIENT, now=0.0) is None
    assert collector.stats["fragmented"] == 1


def test_oldest_connection_is_evicted() -> None:
    collector = QuicInitialCollector(max_connections=2)
    halves = {}
    for index, dcid in enumerate((b"\x01" * 8, b"\x02" * 8, b"\x03" * 8)):
        assert collector.feed(
            initial_packet(crypto_frame(0, HELLO[:400]), dcid=dcid), CLIENT, now=float(index)
        ) is None
        halves[dcid] = initial_packet(crypto_frame(400, HELLO[400:]), dcid=dcid, packet_number=1)
    assert collector.stats["evicted"] == 1
    assert collector.feed(halves[b"\x01" * 8], CLIENT, now=3.0) is None
    assert collector.feed(halves[b"\x03" * 8], CLIENT, now=3.0) == HELLO


def test_garbage_does_not_evict_real_connections() -> None:
    collector = QuicInitialCollector(max_connections=1)
    assert collector.feed(initial_packet(crypto_frame(0, HELLO[:400])), CLIENT, now=0.0) is None
    for index in range(20):
        forged = initial_packet(
            crypto_frame(0, HELLO), dcid=bytes([index]) * 8, keys_dcid=b"\xff" * 8
        )
        assert collector.feed(forged, CLIENT, now=0.0) is None
    assert collector.stats["evicted"] == 0
    rest = initial_packet(crypto_frame(400, HELLO[400:]), packet_number=1)
    assert collector.feed(rest, CLIENT, now=0.0) == HELLO


def test_partial_connection_expires() -> None:
    collector = QuicInitialCollector(timeout=10.0)
    start = initial_packet(crypto_frame(0, HELLO[:400]))
    rest = initial_packet(crypto_frame(400, HELLO[400:]), packet_number=1)
    assert collector.feed(start, CLIENT, now=0.0) is None
    assert collector.feed(rest, CLIENT, now=10.5) is None
    assert collector.stats["expired"] == 1
    assert collector.feed(start, CLIENT, now=21.0) is None
    assert collector.stats["expired"] == 2
    assert collector.feed(rest, CLIENT, now=30.0) == HELLO


# --- the cheap structural check ------------------------------------------------------------


@pytest.mark.parametrize(
    ("datagram", "expected"),
    [
        (RFC_V1_CLIENT_INITIAL, True),
        (RFC_V2_CLIENT_INITIAL, True),
        (RFC_V1_CLIENT_INITIAL[:1199], False),  # not padded to 1200
        (b"\x40" + RFC_V1_CLIENT_INITIAL[1:], False),  # short header
        (b"\x80" + RFC_V1_CLIENT_INITIAL[1:], False),  # fixed bit clear
        (b"\xe0" + RFC_V1_CLIENT_INITIAL[1:], False),  # v1 Handshake
        (b"\xc0" + RFC_V2_CLIENT_INITIAL[1:], False),  # v2 Retry type bits
        (RFC_V1_CLIENT_INITIAL[:1] + b"\xff\x00\x00\x1d" + RFC_V1_CLIENT_INITIAL[5:], False),
        (RFC_V1_CLIENT_INITIAL[:5] + b"\x15" + RFC_V1_CLIENT_INITIAL[6:], False),  # DCID > 20
        (bytes(1500), False),
    ],
)
def test_looks_like_client_initial(datagram: bytes, expected: bool) -> None:
    assert looks_like_client_initial(datagram) is expected
    assert looks_like_client_initial(memoryview(datagram)) is expected


# --- bad input never raises ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500))
def test_random_bytes_never_raise(datagram: bytes) -> None:
    collector = QuicInitialCollector()
    assert collector.feed(datagram, CLIENT, now=0.0) is None
    looks_like_client_initial(datagram)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_random_bytes_after_a_long_header_never_raise(tail: bytes) -> None:
    collector = QuicInitialCollector()
    for packet in (RFC_V1_CLIENT_INITIAL, RFC_V2_CLIENT_INITIAL):
        for prefix_length in (5, 7, 18):
            assert collector.feed(packet[:prefix_length] + tail, CLIENT, now=0.0) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1199), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_initial_never_raises(mutations: list[tuple[int, int]]) -> None:
    packet = bytearray(RFC_V1_CLIENT_INITIAL)
    for position, value in mutations:
        packet[position] = value
    collector = QuicInitialCollector()
    hello = collector.feed(bytes(packet), CLIENT, now=0.0)
    assert hello is None or hello == RFC_CLIENT_HELLO


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_frames_in_an_authentic_packet_never_raise(frames: bytes) -> None:
    collector = QuicInitialCollector()
    hello = collector.feed(initial_packet(frames), CLIENT, now=0.0)
    assert hello is None or hello[0] == 1
