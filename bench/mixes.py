"""Recorded-style packet mixes for the fast-path benchmarks, built once per session.

Every flow is new, so a fresh extractor per round does the full work: decode, flow
lookup, reassembly and parsing — nothing is answered from an earlier round's state.
"""

from __future__ import annotations

import os
import random

from packets import (
    dns_query, ipv4, ipv6, openssl_client_hello, post_quantum_client_hello, segments, syn, tcp,
    tls_records, udp,
)

# Benchmarks run on a tiny input when the test suite only checks that they work.
TINY = os.environ.get("EDUFILTER_BENCH_TINY") == "1"

# The first-packets mix, per 10 flows: what reaches user space when only the first
# packets of each flow are queued.
MIX_DESCRIPTION = (
    "per 10 flows: 3 DNS queries (UDP), 3 TLS flows with a one-segment ClientHello (SYN + CH), "
    "1 TLS flow with a 1.8 KB post-quantum ClientHello in two segments (SYN + 2), 1 HTTP request "
    "(SYN + head), 2 established flows' data packets that carry no name (2 x 1400 B each); "
    "1 in 5 flows over IPv6"
)


def first_packets_mix(flows: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    client_hello_cache: dict[str, bytes] = {}
    packets: list[bytes] = []
    for flow in range(flows):
        v6 = flow % 5 == 4
        sport = 1024 + flow % 60000
        isn = rng.getrandbits(32)
        name = f"www{flow}.school{flow % 97}.test"
        slot = flow % 10
        if slot < 3:
            query = udp(dns_query(name), 53, sport=sport)
            packets.append(ipv6(query, 17) if v6 else ipv4(query, 17))
        elif slot < 6:
            # a real OpenSSL ClientHello, re-targeted by name length class to keep setup quick
            key = f"pupil{flow % 50}.example.org"
            if key not in client_hello_cache:
                client_hello_cache[key] = openssl_client_hello(key)
            packets += [syn(isn, sport=sport, v6=v6), *segments(client_hello_cache[key], [], isn, sport=sport, v6=v6)]
        elif slot == 6:
            record = tls_records(post_quantum_client_hello(name.encode()))
            packets += [syn(isn, sport=sport, v6=v6), *segments(record, [1400], isn, sport=sport, v6=v6)]
        elif slot == 7:
            head = f"GET /index.html HTTP/1.1\r\nHost: {name}\r\nUser-Agent: curl/7.88\r\nAccept: */*\r\n\r\n"
            packets += [syn(isn, sport=sport, dport=80, v6=v6),
                        *segments(head.encode(), [], isn, sport=sport, dport=80, v6=v6)]
        else:
            application_data = b"\x17\x03\x03\x05\x73" + rng.randbytes(1395)
            for offset in (0, 1400):
                segment = tcp(application_data, isn + offset, sport=sport)
                packets.append(ipv6(segment, 6) if v6 else ipv4(segment, 6))
    return packets


FLOWS = 200 if TINY else 20_000
FIRST_PACKETS = first_packets_mix(FLOWS)
