"""Decode + extract (edufilter/_fastpath.pyx): the Cython fast path against the dpkt reference
on the same packets in the same run, without and with QUIC Initials (decrypted by the worker's
loop itself, decode/_quic.pyx over libcrypto; by decode/quic.py over `cryptography` in the reference)."""

from __future__ import annotations

from functools import cache

import dpkt

from edufilter._fastpath import FlowExtractor
from edufilter.decode.quic import QuicInitialCollector, looks_like_client_initial
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
    """The worker's loop reads QUIC client Initials nogil, as it reads a TLS SNI."""
    benchmark.group = "decode+extract, first-packets mix with QUIC"
    record(benchmark, "fastpath_quic_pps", len(QUIC_PACKETS), QUIC_MIX_DESCRIPTION)
    found = benchmark.pedantic(lambda loop: loop.classify_offline(QUIC_PACKETS, NOW)[0],
                               setup=lambda: ((worker_loop(),), {}), rounds=FAST_ROUNDS)
    assert found == names_in_quic_mix()


def reference_names_with_quic(extractor: ReferenceExtractor, quic: QuicInitialCollector) -> int:
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


@cache
def names_in_quic_mix() -> int:
    """The names the reference finds in the QUIC mix: the fast path must find the same."""
    return reference_names_with_quic(ReferenceExtractor(), QuicInitialCollector())


def test_reference_with_quic(benchmark):
    benchmark.group = "decode+extract, first-packets mix with QUIC"
    record(benchmark, "fastpath_quic_reference_pps", len(QUIC_PACKETS), QUIC_MIX_DESCRIPTION)
    found = benchmark.pedantic(reference_names_with_quic,
                               setup=lambda: ((ReferenceExtractor(), QuicInitialCollector()), {}),
                               rounds=REFERENCE_ROUNDS)
    assert found == names_in_quic_mix()
