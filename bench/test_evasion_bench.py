"""What reading a flow as its server would costs the fast path: decode + extract of the IPv4
first-packets mix with TCP checksums verified (the daemon's setting, FlowExtractor(
verify_checksums=True)) against without, on the same packets in the same run."""

from __future__ import annotations

import pytest
from mixes import FIRST_PACKETS, MIX_DESCRIPTION, TINY

from edufilter._fastpath import FlowExtractor

FAST_ROUNDS = 3 if TINY else 30
NOW = 1.0
# The mix's IPv6 packets carry no checksum (its builder leaves it 0): verified, they would be
# decoys and take a shorter path.
IPV4_PACKETS = [packet for packet in FIRST_PACKETS if packet[0] >> 4 == 4]


@pytest.mark.parametrize("verify", [False, True], ids=["checksums-trusted", "checksums-verified"])
def test_first_packets_with_checksums(benchmark, verify: bool) -> None:
    benchmark.group = "decode+extract, IPv4 first-packets mix, TCP checksums"
    benchmark.extra_info.update(rate_figure=f"fastpath_v4_{'verified' if verify else 'trusted'}_pps",
                                count=len(IPV4_PACKETS), unit="packets/s", mix=MIX_DESCRIPTION + "; IPv4 only")
    found = benchmark.pedantic(lambda extractor: extractor.extract_batch(IPV4_PACKETS, NOW),
                               setup=lambda: ((FlowExtractor(verify_checksums=verify),), {}), rounds=FAST_ROUNDS)
    reference = FlowExtractor()
    assert found == reference.extract_batch(IPV4_PACKETS, NOW) > 0
