"""Fuzzing the fast path: random, truncated and mutated packets never crash it, never
read past the buffer (guard page) and never raise."""

from __future__ import annotations

import struct

from guarded import GuardedArena
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packets import (
    dns_query,
    ipv4,
    ipv6,
    openssl_client_hello,
    post_quantum_client_hello,
    segments,
    syn,
    tcp,
    tls_records,
    udp,
)

from edufilter._fastpath import FlowExtractor, parse_client_hello

ARENA = GuardedArena()
PQ_RECORD = tls_records(post_quantum_client_hello(b"fuzz.school.test", ech=True))
SEEDS: list[bytes] = [
    ipv4(udp(dns_query("seed.example.org"), 53), 17),
    ipv6(udp(dns_query("seed6.example.org"), 53), 17),
    ipv4(tcp(struct.pack("!H", 29) + dns_query("tcp.example.org"), 1, dport=53), 6),
    syn(1),
    *segments(openssl_client_hello("tls.example.org"), [], 1),
    *segments(PQ_RECORD, [900], 1),
    *segments(PQ_RECORD, [900], 1, v6=True),
    *segments(b"GET / HTTP/1.1\r\nHost: http.example.org\r\n\r\n", [10], 1, dport=80),
    ipv4(udp(bytes([0xC3]) + struct.pack("!I", 1) + b"\x08" + b"\x11" * 8 + b"\x00" * 1300, 443), 17),
]

fuzz_settings = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


def mutate(seed: bytes, edits: list[tuple[int, int, int]], cut: int) -> bytes:
    data = bytearray(seed)
    for kind, position, value in edits:
        if not data:
            break
        position %= len(data)
        if kind == 0:
            data[position] = value
        elif kind == 1:
            data.insert(position, value)
        else:
            del data[position]
    return bytes(data[: cut % (len(data) + 1)])


@fuzz_settings
@given(st.lists(st.binary(max_size=1600), max_size=12), st.floats(0, 1e6, allow_nan=False))
def test_random_bytes_never_crash(packets, now):
    ex = FlowExtractor(max_flows=16, max_streams=4, buffer_size=4096)
    for packet in packets:
        ex.extract(ARENA.place(packet), now)
    assert ex.stats["packets"] == len(packets)


@fuzz_settings
@given(
    st.lists(
        st.tuples(
            st.sampled_from(range(len(SEEDS))),
            st.lists(st.tuples(st.integers(0, 2), st.integers(0, 4000), st.integers(0, 255)), max_size=6),
            st.integers(0, 4000),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_mutated_real_packets_never_crash(steps):
    ex = FlowExtractor(max_flows=16, max_streams=4, buffer_size=2048)
    for seed_index, edits, cut in steps:
        found = ex.extract(ARENA.place(mutate(SEEDS[seed_index], edits, cut)), 1.0)
        if found is not None and found.value is not None:
            assert found.value == found.value.lower() and not found.value.endswith(".")


def test_every_prefix_of_every_seed():
    ex = FlowExtractor()
    for seed in SEEDS:
        for end in range(len(seed) + 1):
            ex.extract(ARENA.place(seed[:end]), 1.0)
    assert ex.stats["packets"] == sum(len(seed) + 1 for seed in SEEDS)


@fuzz_settings
@given(st.binary(max_size=3000))
def test_parse_client_hello_random(message):
    result = parse_client_hello(ARENA.place(message)) if message else None
    assert result is None or isinstance(result, tuple)


def test_parse_client_hello_every_prefix():
    message = post_quantum_client_hello(b"prefix.school.test")
    for end in range(1, len(message)):
        assert parse_client_hello(ARENA.place(message[:end])) is None
    assert parse_client_hello(ARENA.place(message)) == ("prefix.school.test", False)
