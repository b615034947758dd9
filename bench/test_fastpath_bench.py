"""Decode + extract (edufilter/_fastpath.pyx): the Cython fast path against the dpkt reference
on the same packets in the same run, without and with QUIC Initials (whose decryption is
Python on both sides: the worker's slow path, decode/quic.py)."""

from __future__ import annotations

import dpkt

from edufilter._enforce import Slow
from edufilter._fastpath import FlowExtractor, parse_client_hello
from edufilter.decode.quic import QuicInitialCollector, looks_like_client_initial
from edufilter.enforce.inject import parse_ip as parse_ip_packet
from mixes import FIRST_PACKETS, MIX_DESCRIPTION, QUIC_MIX_DESCRIPTION, QUIC_PACKETS, QUIC_PORT, TINY
from reference_extractor import ReferenceExtractor, client_hello_names, parse_ip

FAST_ROUNDS = 3 if TINY else 30
REFERENCE_ROUNDS = 1 if TINY else 3
NOW = 1.0


def record(benchmark, figure: str, packets: int, description: str) -> None:
    benchmark.extra_info.update(rate_figure=figure, count=packets, unit="packets/s", mix=description)


def test_fastpath_first_packets(benchmark):
    benchmark.group = "decode+extract, first-packets mix"
    record(benchmark, "fastpath_pps", len(FIRST_PACKETS), MIX_DESCRIPTION)
    found = benchmark.pedantic(
        lambda extractor: extractor.extract_batch(FIRST_PACKETS, NOW),
        setup=lambda: ((FlowExtractor(),), {}),
        rounds=FAST_ROUNDS,
    )
    assert found > 0


def test_reference_first_packets(benchmark):
    benchmark.group = "decode+extract, first-packets mix"
    record(benchmark, "fastpath_reference_pps", len(FIRST_PACKETS), MIX_DESCRIPTION)

    def run(extractor: ReferenceExtractor) -> int:
        return sum(len(extractor.extract(packet)) for packet in FIRST_PACKETS)

    found = benchmark.pedantic(run, setup=lambda: ((ReferenceExtractor(),), {}), rounds=REFERENCE_ROUNDS)
    assert found > 0


def test_fastpath_with_quic(benchmark, worker_loop):
    """The worker's loop flags QUIC client Initials nogil; Python decrypts them, as the worker's
    slow path does."""
    benchmark.group = "decode+extract, first-packets mix with QUIC"
    record(benchmark, "fastpath_quic_pps", len(QUIC_PACKETS), QUIC_MIX_DESCRIPTION)

    def run(loop, quic: QuicInitialCollector) -> int:
        names, _blocked, slow = loop.classify_offline(QUIC_PACKETS, NOW)
        for index, reason, _name in slow:
            if reason != Slow.SLOW_QUIC:
                continue
            packet = parse_ip_packet(QUIC_PACKETS[index])
            source_port = int.from_bytes(packet.transport[:2], "big")
            hello = quic.feed(packet.transport[8:], (packet.source, source_port), NOW)
            if hello is not None and parse_client_hello(hello) is not None:
                names += 1
        return names

    found = benchmark.pedantic(run, setup=lambda: ((worker_loop(), QuicInitialCollector()), {}),
                               rounds=FAST_ROUNDS)
    assert found > 0


def test_reference_with_quic(benchmark):
    benchmark.group = "decode+extract, first-packets mix with QUIC"
    record(benchmark, "fastpath_quic_reference_pps", len(QUIC_PACKETS), QUIC_MIX_DESCRIPTION)

    def run(extractor: ReferenceExtractor, quic: QuicInitialCollector) -> int:
        names = 0
        for packet in QUIC_PACKETS:
            names += len(extractor.extract(packet))
            source, _destination, transport = parse_ip(packet)
            if isinstance(transport, dpkt.udp.UDP) and transport.dport == QUIC_PORT and \
                    looks_like_client_initial(bytes(transport.data)):
                hello = quic.feed(bytes(transport.data), (source, transport.sport), NOW)
                if hello is not None and client_hello_names(hello[4:])[0] is not None:
                    names += 1
        return names

    found = benchmark.pedantic(run, setup=lambda: ((ReferenceExtractor(), QuicInitialCollector()), {}),
                               rounds=REFERENCE_ROUNDS)
    assert found > 0
