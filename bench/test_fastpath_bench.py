"""Decode + extract throughput: the Cython fast path against the dpkt reference on the
same packets in the same run (python bench/summary.py turns the JSON into ratios)."""

from __future__ import annotations

from edufilter._fastpath import FlowExtractor
from mixes import FIRST_PACKETS, MIX_DESCRIPTION, TINY
from reference_extractor import ReferenceExtractor


def test_fastpath_first_packets(benchmark):
    benchmark.group = "decode+extract, first-packets mix"
    benchmark.extra_info.update(packets=len(FIRST_PACKETS), mix=MIX_DESCRIPTION, role="fast")
    found = benchmark.pedantic(
        lambda extractor: extractor.extract_batch(FIRST_PACKETS, 1.0),
        setup=lambda: ((FlowExtractor(),), {}),
        rounds=3 if TINY else 30,
    )
    assert found > 0


def test_reference_first_packets(benchmark):
    benchmark.group = "decode+extract, first-packets mix"
    benchmark.extra_info.update(packets=len(FIRST_PACKETS), mix=MIX_DESCRIPTION, role="baseline")

    def run(extractor: ReferenceExtractor) -> int:
        return sum(len(extractor.extract(packet)) for packet in FIRST_PACKETS)

    found = benchmark.pedantic(run, setup=lambda: ((ReferenceExtractor(),), {}), rounds=1 if TINY else 3)
    assert found > 0
