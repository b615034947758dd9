"""Recorded-style packet mixes for the data-path benchmarks, built once per session.

Every flow is new, so a fresh extractor per round does the full work: decode, flow
lookup, reassembly and parsing — nothing is answered from an earlier round's state.
ClientHellos are real: OpenSSL's (this machine's), a Chromium-sized post-quantum one, and
aioquic's QUIC Initials (protected as on the wire).
"""

from __future__ import annotations

import os
import random
import ssl
from collections.abc import Sequence
from functools import cache

from packets import dns_query, ipv4, ipv6, post_quantum_client_hello, segments, syn, tcp, tls_records, udp

# Benchmarks run on a tiny input when the test suite only checks that they work.
TINY = os.environ.get("EDUFILTER_BENCH_TINY") == "1"

QUIC_PORT = 443
QUIC_VARIANTS = 8 if TINY else 64  # distinct Initials; each flow's own client port makes it a new connection
# ALPN values that push aioquic's ClientHello over two Initial datagrams, as Chromium's
# post-quantum key share does (tests/decode/test_quic.py).
LONG_ALPN = [f"h3-experiment-{index:02d}-" + "x" * 80 for index in range(12)]

MIX_DESCRIPTION = (
    "per 10 flows: 3 DNS queries (UDP), 3 TLS flows with a one-segment OpenSSL ClientHello (SYN + CH), "
    "1 TLS flow with a 1.8 KB post-quantum ClientHello in two segments (SYN + 2), 1 HTTP request "
    "(SYN + head), 2 established flows' data packets that carry no name (2 x 1400 B each); "
    "1 in 5 flows over IPv6"
)
QUIC_MIX_DESCRIPTION = (
    "per 10 flows: 3 DNS queries, 2 TLS one-segment (SYN + CH), 1 TLS post-quantum two-segment, 1 HTTP, "
    "2 QUIC connections from aioquic (one Initial datagram; every other one a ClientHello over two "
    "Initials, as Chromium's post-quantum one), 1 established flow's 2 data packets; 1 in 5 flows over IPv6"
)


class ClientHellos:
    """Real OpenSSL ClientHello records, one per server name, from one client context."""

    def __init__(self) -> None:
        self.context = ssl.create_default_context()

    def record(self, server_name: str) -> bytes:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        connection = self.context.wrap_bio(incoming, outgoing, server_hostname=server_name)
        try:
            connection.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return outgoing.read()


@cache
def quic_initials(server_name: str, two_datagrams: bool) -> tuple[bytes, ...]:
    """A real aioquic client's first datagrams (QUIC v1 Initials)."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    configuration = QuicConfiguration(is_client=True, server_name=server_name,
                                      alpn_protocols=LONG_ALPN if two_datagrams else ["h3"])
    connection = QuicConnection(configuration=configuration)
    connection.connect(("198.18.0.2", QUIC_PORT), now=100.0)
    return tuple(data for data, _address in connection.datagrams_to_send(now=100.0))


def default_name(flow: int) -> str:
    return f"www{flow}.school{flow % 97}.test"


def first_packets_mix(flows: int, seed: int = 7, names: Sequence[str] | None = None,
                      with_quic: bool = False) -> list[bytes]:
    """The first packets of `flows` new flows (layouts: MIX_DESCRIPTION, QUIC_MIX_DESCRIPTION);
    flow i asks for names[i % len(names)], or a name of its own."""
    rng = random.Random(seed)
    hellos = ClientHellos()
    packets: list[bytes] = []
    for flow in range(flows):
        v6 = flow % 5 == 4
        sport = 1024 + flow % 60000
        isn = rng.getrandbits(32)
        name = names[flow % len(names)] if names else default_name(flow)
        slot = flow % 10
        if with_quic and slot in (5, 8):
            variant = flow // 10 % QUIC_VARIANTS
            for datagram in quic_initials(f"video{variant}.school.test", two_datagrams=variant % 2 == 1):
                packet = udp(datagram, QUIC_PORT, sport=sport)
                packets.append(ipv6(packet, 17) if v6 else ipv4(packet, 17))
        elif slot < 3:
            query = udp(dns_query(name), 53, sport=sport)
            packets.append(ipv6(query, 17) if v6 else ipv4(query, 17))
        elif slot < 6:
            packets += [syn(isn, sport=sport, v6=v6), *segments(hellos.record(name), [], isn, sport=sport, v6=v6)]
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
QUIC_PACKETS = first_packets_mix(FLOWS, with_quic=True)
