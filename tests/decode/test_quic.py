"""The fast path's QUIC Initial reader (decode/_quic.pyx): RFC vectors, real aioquic clients (one
datagram, two, after a Retry), crafted Initials (several per ClientHello, coalesced, a client
that moves to the server's connection ID, v2), versions it cannot read, and damaged input."""

from __future__ import annotations

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicProtocolVersion, encode_quic_retry
from hypothesis import given, settings
from hypothesis import strategies as st

from edufilter.decode._quic import QuicFlows, QuicStatus
from packets import ipv4, ipv6, udp
from quic_packets import (
    QUIC_V1,
    QUIC_V2,
    RFC_DCID,
    RFC_V1_CLIENT_INITIAL,
    RFC_V2_CLIENT_INITIAL,
    client_hello,
    corrupted_tag,
    crypto_frame,
    initial_packet,
    long_header_packet,
    varint,
)

NAME, PENDING, NO_NAME, UNREADABLE = (QuicStatus.QUIC_NAME, QuicStatus.QUIC_PENDING, QuicStatus.QUIC_NO_NAME,
                                     QuicStatus.QUIC_UNREADABLE)
LONG_ALPN = [f"h3-experiment-{index:02d}-" + "x" * 80 for index in range(12)]  # a ClientHello over two datagrams
HELLO = client_hello("crafted.school.example", filler=1500)  # too big for one 1200-byte Initial
SERVER_CID = bytes.fromhex("5e5e5e5e5e5e5e5e")


def datagram(payload: bytes, sport: int = 50000, v6: bool = False) -> bytes:
    return ipv6(udp(payload, 443, sport=sport), 17) if v6 else ipv4(udp(payload, 443, sport=sport), 17)


def read(flows: QuicFlows, payload: bytes, now: float = 0.0, sport: int = 50000) -> tuple[QuicStatus, str | None]:
    status, name, _ech = flows.read(datagram(payload, sport), now)
    return status, name


def aioquic_client(version: int, server_name: str, alpn: list[str]) -> QuicConnection:
    configuration = QuicConfiguration(is_client=True, server_name=server_name, alpn_protocols=alpn,
                                      supported_versions=[version])
    connection = QuicConnection(configuration=configuration)
    connection.connect(("198.18.0.1", 443), now=100.0)
    return connection


def sent(connection: QuicConnection) -> list[bytes]:
    return [data for data, _address in connection.datagrams_to_send(now=100.0)]


# --- RFC vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "key", "iv", "hp"),
    [
        (QUIC_V1, "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c",
         "9f50449e04a0e810283a1e9933adedd2"),  # RFC 9001 A.1
        (QUIC_V2, "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f",
         "45b95e15235d6f45a6b19cbcb0294ba9"),  # RFC 9369 A.1
    ],
)
def test_client_initial_keys_match_the_rfc_vectors(version: int, key: str, iv: str, hp: str) -> None:
    assert [part.hex() for part in QuicFlows().initial_keys(version, RFC_DCID)] == [key, iv, hp]


@pytest.mark.parametrize("protected", [RFC_V1_CLIENT_INITIAL, RFC_V2_CLIENT_INITIAL])
@pytest.mark.parametrize("v6", [False, True])
def test_the_rfc_client_initial_names_example_com(protected: bytes, v6: bool) -> None:
    flows = QuicFlows()
    status, name, ech = flows.read(datagram(protected, v6=v6), 0.0)
    assert (status, name, ech) == (NAME, "example.com", False)
    assert flows.stats["client_hellos"] == 1
    assert flows.stats["pending"] == 0  # nothing kept once the name is read


# --- real clients --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2])
def test_aioquic_client_initial(version: int) -> None:
    (only,) = sent(aioquic_client(version, "Www.School.Example", ["h3"]))
    assert read(QuicFlows(), only) == (NAME, "www.school.example")


@pytest.mark.parametrize("version", [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2])
@pytest.mark.parametrize("reverse", [False, True])
def test_aioquic_client_hello_over_two_datagrams(version: int, reverse: bool) -> None:
    datagrams = sent(aioquic_client(version, "video.school.example", LONG_ALPN))
    assert len(datagrams) == 2
    if reverse:
        datagrams.reverse()
    flows = QuicFlows()
    assert read(flows, datagrams[0]) == (PENDING, None)
    assert flows.stats["pending"] == 1
    # Another client's datagram on another port does not mix in.
    assert read(flows, datagrams[1], sport=50001) == (PENDING, None)
    assert read(flows, datagrams[1], now=0.1) == (NAME, "video.school.example")
    assert flows.stats["pending"] == 1


@pytest.mark.parametrize("version", [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2])
def test_aioquic_client_after_a_retry_uses_keys_of_the_new_connection_id(version: int) -> None:
    client = aioquic_client(version, "retried.school.example", LONG_ALPN)
    first_flight = sent(client)
    original_dcid = client._peer_cid.cid
    retry = encode_quic_retry(version=version, source_cid=SERVER_CID, destination_cid=client.host_cid,
                              original_destination_cid=original_dcid, retry_token=b"retry-token-from-server")
    client.receive_datagram(retry, ("198.18.0.1", 443), now=100.0)
    second_flight = sent(client)
    assert second_flight and all(SERVER_CID in packet[:40] for packet in second_flight)
    flows = QuicFlows()
    assert read(flows, first_flight[0]) == (PENDING, None)  # the server answered this with the Retry
    assert read(flows, second_flight[0]) == (PENDING, None)
    assert read(flows, second_flight[1]) == (NAME, "retried.school.example")
    assert flows.stats["rekeyed"] == 1


# --- crafted Initials ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_a_client_hello_over_three_initials_in_three_datagrams(version: int) -> None:
    thirds = [HELLO[:600], HELLO[600:1200], HELLO[1200:]]
    packets = [initial_packet(crypto_frame(600 * index, part), version=version, packet_number=index, pad_to=1200)
               for index, part in enumerate(thirds)]
    flows = QuicFlows()
    assert [read(flows, packet)[0] for packet in packets[:2]] == [PENDING, PENDING]
    assert read(flows, packets[2]) == (NAME, "crafted.school.example")


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_coalesced_initials_and_other_long_headers_in_one_datagram(version: int) -> None:
    handshake_type = 0b10 if version == QUIC_V1 else 0b11
    zero_rtt_type = 0b01 if version == QUIC_V1 else 0b10
    payload = (
        initial_packet(crypto_frame(700, HELLO[700:]), version=version, packet_number=1)
        + long_header_packet(zero_rtt_type, b"\xaa" * 50, version)
        + long_header_packet(handshake_type, b"\x55" * 30, version)
        + initial_packet(crypto_frame(0, HELLO[:700]), version=version, packet_number=2)
    )
    assert len(payload) >= 1200
    assert read(QuicFlows(), payload) == (NAME, "crafted.school.example")


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_initials_sent_to_the_server_chosen_connection_id_use_the_first_keys(version: int) -> None:
    flows = QuicFlows()
    first = initial_packet(crypto_frame(0, HELLO[:900]), version=version, pad_to=1200)
    # After the server's Initial the client writes the server's connection ID, keys unchanged.
    rest = initial_packet(crypto_frame(900, HELLO[900:]), version=version, packet_number=1, dcid=SERVER_CID,
                          keys_dcid=RFC_DCID, pad_to=1200)
    assert read(flows, first) == (PENDING, None)
    assert read(flows, rest) == (NAME, "crafted.school.example")
    assert flows.stats["rekeyed"] == 0


def test_a_new_connection_id_with_its_own_keys_starts_the_client_hello_over() -> None:
    stale = client_hello("stale.school.example", filler=1500)
    flows = QuicFlows()
    assert read(flows, initial_packet(crypto_frame(0, stale[:900]), pad_to=1200)) == (PENDING, None)
    # A Retry's new connection ID and token: the bytes of the first attempt must not mix in.
    token = b"token-from-the-retry"
    for index, (offset, part) in enumerate(((0, HELLO[:900]), (900, HELLO[900:]))):
        packet = initial_packet(crypto_frame(offset, part), dcid=SERVER_CID, token=token, packet_number=index,
                                pad_to=1200)
        status = read(flows, packet)
    assert status == (NAME, "crafted.school.example")


def test_out_of_order_overlapping_crypto_frames_first_bytes_win() -> None:
    forged = HELLO[:100] + b"X" * 50 + HELLO[150:]
    flows = QuicFlows()
    first = initial_packet(crypto_frame(700, HELLO[700:]) + b"\x01" + crypto_frame(100, forged[100:500]),
                           packet_number=1, pad_to=1200)
    second = initial_packet(crypto_frame(450, HELLO[450:720]) + crypto_frame(0, HELLO[:310])
                            + crypto_frame(0, HELLO[:10]), packet_number=0, pad_to=1200)
    assert read(flows, first) == (PENDING, None)
    # The forged bytes (inside the random) were first: kept, as the server's TLS stack keeps them.
    assert read(flows, second) == (NAME, "crafted.school.example")


def test_ping_ack_padding_and_connection_close() -> None:
    ack = b"\x02" + b"".join(varint(value) for value in (5, 10, 2, 1, 0, 1, 0, 0))
    ack_ecn = b"\x03" + b"".join(varint(value) for value in (5, 10, 0, 3, 1, 2, 3))
    hello = client_hello("acked.school.example")
    frames = b"\x00\x00\x01" + ack + b"\x00" + ack_ecn + b"\x01" + crypto_frame(0, hello) + b"\x01"
    assert read(QuicFlows(), initial_packet(frames, pad_to=1200)) == (NAME, "acked.school.example")
    close = b"\x1c" + varint(0x0A) + varint(0) + varint(0)
    flows = QuicFlows()
    assert read(flows, initial_packet(crypto_frame(0, hello[:50]) + close + crypto_frame(50, hello[50:]),
                                      pad_to=1200)) == (PENDING, None)


@pytest.mark.parametrize("bad_frame", [
    b"\x08\x00\x05hello",       # STREAM: not allowed in an Initial
    b"\x1d\x00\x00",            # an application CONNECTION_CLOSE
    b"\x06\x00\x7f\xff\x01",    # CRYPTO longer than the packet
    b"\x02\x00\x00\x7f\xff\x00",  # ACK with more ranges than bytes
])
def test_a_packet_with_a_bad_frame_is_ignored(bad_frame: bytes) -> None:
    flows = QuicFlows()
    hello = client_hello("framed.school.example")
    assert read(flows, initial_packet(crypto_frame(0, hello) + bad_frame, pad_to=1200)) == (UNREADABLE, None)
    assert flows.stats["malformed"] == 1
    assert read(flows, initial_packet(crypto_frame(0, hello), pad_to=1200)) == (NAME, "framed.school.example")


def test_reserved_bits_and_a_bad_tag_are_not_read() -> None:
    hello = client_hello("tagged.school.example")
    flows = QuicFlows()
    assert read(flows, initial_packet(crypto_frame(0, hello), reserved_bits=0b10, pad_to=1200))[0] == UNREADABLE
    assert read(flows, corrupted_tag(initial_packet(crypto_frame(0, hello), pad_to=1200)))[0] == UNREADABLE
    assert flows.stats["decrypt_failures"] == 1
    assert flows.stats["malformed"] == 1
    # Damage on a connection being read leaves it being read.
    assert read(flows, initial_packet(crypto_frame(0, HELLO[:900]), pad_to=1200))[0] == PENDING
    assert read(flows, corrupted_tag(initial_packet(crypto_frame(900, HELLO[900:]), packet_number=1,
                                                    pad_to=1200)))[0] == PENDING
    assert read(flows, initial_packet(crypto_frame(900, HELLO[900:]), packet_number=1, pad_to=1200))[0] == NAME


@pytest.mark.parametrize("length,number", [(1, 0), (2, 0x1234), (3, 7), (4, 0x01020304)])
def test_packet_number_lengths_tokens_and_long_connection_ids(length: int, number: int) -> None:
    packet = initial_packet(crypto_frame(0, client_hello("numbered.school.example")), packet_number=number,
                            packet_number_length=length, token=b"t" * 40, dcid=b"\x11" * 20, scid=b"", pad_to=1200)
    assert read(QuicFlows(), packet) == (NAME, "numbered.school.example")


def test_a_client_hello_without_a_name_or_not_a_client_hello() -> None:
    body = b"\x03\x03" + bytes(range(32)) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"  # no extensions
    nameless = b"\x01" + len(body).to_bytes(3, "big") + body
    assert read(QuicFlows(), initial_packet(crypto_frame(0, nameless), pad_to=1200)) == (NO_NAME, None)
    server_hello = b"\x02" + nameless[1:]
    assert read(QuicFlows(), initial_packet(crypto_frame(0, server_hello), pad_to=1200)) == (NO_NAME, None)
    invalid_name = client_hello("bad name.school.example")
    assert read(QuicFlows(), initial_packet(crypto_frame(0, invalid_name), pad_to=1200)) == (NO_NAME, None)


def test_crypto_past_the_bound_or_in_too_many_pieces_is_no_name() -> None:
    flows = QuicFlows()
    assert read(flows, initial_packet(crypto_frame(16384, b"x"), pad_to=1200)) == (NO_NAME, None)
    pieces = b"".join(crypto_frame(4 + 2 * index, b"y") for index in range(40))  # 40 holes
    assert read(flows, initial_packet(crypto_frame(0, HELLO[:4]) + pieces, pad_to=1200)) == (NO_NAME, None)
    assert flows.stats["no_name"] == 2


# --- what it cannot read ---------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b"\xc0\xff\x00\x00\x1d" + bytes([8]) + RFC_DCID + bytes(1186),   # draft-29
    b"\xc0\x51\x30\x35\x30" + bytes([8]) + RFC_DCID + bytes(1186),   # gQUIC Q050
    b"\x0d" + RFC_DCID + b"Q043" + bytes(1187),                        # gQUIC Q043's public header
    b"\xc0\x00\x00\x00\x00" + bytes(1195),                           # version negotiation
    b"\x40" + RFC_DCID + bytes(1191),                                   # a short header
    bytes(range(256)) * 5,                                            # neither
    RFC_V1_CLIENT_INITIAL[:1199],                                     # an Initial in a datagram under 1200 bytes
])
def test_what_is_not_a_readable_v1_or_v2_client_initial(payload: bytes) -> None:
    flows = QuicFlows()
    assert read(flows, payload) == (UNREADABLE, None)
    assert flows.stats["pending"] == 0


@pytest.mark.parametrize("cut", [1, 5, 6, 7, 15, 16, 17, 18, 20, 22, 30, 60, 1199])
def test_a_truncated_initial_is_unreadable(cut: int) -> None:
    assert read(QuicFlows(), RFC_V1_CLIENT_INITIAL[:cut]) == (UNREADABLE, None)


def test_random_payload_on_a_connection_being_read_keeps_it_pending() -> None:
    flows = QuicFlows()
    assert read(flows, initial_packet(crypto_frame(0, HELLO[:900]), pad_to=1200))[0] == PENDING
    assert read(flows, bytes(1300))[0] == PENDING
    assert read(flows, initial_packet(crypto_frame(900, HELLO[900:]), packet_number=1, pad_to=1200))[0] == NAME


# --- the table ----------------------------------------------------------------------------------


def partial(port: int) -> bytes:
    return datagram(initial_packet(crypto_frame(0, HELLO[:900]), pad_to=1200), sport=port)


def rest_of_hello() -> bytes:
    return initial_packet(crypto_frame(900, HELLO[900:]), packet_number=1, pad_to=1200)


def test_a_connection_quiet_past_the_timeout_is_forgotten() -> None:
    flows = QuicFlows(timeout=10.0)
    assert flows.read(partial(50000), 0.0)[0] == PENDING
    assert read(flows, rest_of_hello(), now=11.0)[0] == PENDING  # a new flow: only this half
    assert flows.stats["flows_expired"] == 1


def test_the_pool_of_connections_being_read_is_bounded() -> None:
    flows = QuicFlows(max_flows=8, max_pending=2)
    for port in (50000, 50001, 50002):
        assert flows.read(partial(port), 0.0)[0] == PENDING
    assert flows.stats["pending"] == 2
    assert flows.stats["pool_full"] == 1
    assert read(flows, rest_of_hello(), sport=50000) == (NAME, "crafted.school.example")


def test_garbage_takes_no_slot() -> None:
    flows = QuicFlows(max_flows=8, max_pending=1)
    assert flows.read(partial(50000), 0.0)[0] == PENDING
    for port in range(40000, 40064):
        assert read(flows, corrupted_tag(initial_packet(crypto_frame(0, HELLO[:900]), pad_to=1200)),
                    sport=port)[0] == UNREADABLE
    assert read(flows, rest_of_hello()) == (NAME, "crafted.school.example")


# --- never a crash ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500))
def test_random_datagrams_never_raise(payload: bytes) -> None:
    assert read(QuicFlows(), payload)[0] == UNREADABLE


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([QUIC_V1, QUIC_V2]), st.binary(min_size=1, max_size=80), st.integers(1150, 1400))
def test_random_bytes_after_a_long_header_never_raise(version: int, tail: bytes, size: int) -> None:
    first = 0xC0 if version == QUIC_V1 else 0xD0
    payload = bytes([first]) + version.to_bytes(4, "big") + tail
    assert read(QuicFlows(), payload + bytes(max(0, size - len(payload))))[0] == UNREADABLE


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1199), st.integers(1, 255)), min_size=1, max_size=8))
def test_a_damaged_initial_never_yields_another_name(mutations: list[tuple[int, int]]) -> None:
    damaged = bytearray(RFC_V1_CLIENT_INITIAL)
    for position, flip in mutations:
        damaged[position] ^= flip
    status, name = read(QuicFlows(), bytes(damaged))
    assert name in (None, "example.com")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 2))
def test_random_frames_in_an_authentic_packet_never_raise(frames: bytes, halves: int) -> None:
    flows = QuicFlows()
    if halves:
        read(flows, initial_packet(crypto_frame(0, HELLO[:900]), pad_to=1200))
    status, _name = read(flows, initial_packet(frames, packet_number=1, pad_to=1200))
    assert status in (NAME, PENDING, NO_NAME, UNREADABLE)
    assert flows.stats["pending"] <= 1


@settings(max_examples=100, deadline=None)
@given(st.permutations(range(6)), st.sets(st.integers(0, 5), max_size=3))
def test_any_order_of_pieces_with_repeats_yields_the_name(order: list[int], repeated: set[int]) -> None:
    cuts = [0, 300, 650, 900, 1200, 1500, len(HELLO)]
    pieces = [initial_packet(crypto_frame(cuts[index], HELLO[cuts[index]:cuts[index + 1]]), packet_number=number,
                             pad_to=1200) for number, index in enumerate(range(6))]
    flows = QuicFlows()
    statuses = [read(flows, pieces[index])[0] for index in order]
    statuses += [read(flows, pieces[index])[0] for index in sorted(repeated)]
    assert statuses[:5] == [PENDING] * 5
    assert statuses[5] == NAME
