"""Differential tests: the fast path and the dpkt reference extractor agree, packet by
packet, on random flows (random names, segmentation, ordering, retransmission)."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packets import dns_query, ipv4, ipv6, post_quantum_client_hello, segments, syn, tls_records, udp
from reference_extractor import ReferenceExtractor

from edufilter._fastpath import FlowExtractor

label = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=20)
host_names = st.builds(lambda labels, tld: ".".join([*labels, tld]), st.lists(label, min_size=1, max_size=4),
                       st.sampled_from(["test", "org", "be", "nl", "xn--p1ai", "1", "Org."]))


@st.composite
def flows(draw, sport: int) -> list[bytes]:
    """One client flow's packets in the order they reach the gateway."""
    name = draw(host_names)
    v6 = draw(st.booleans())
    isn = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["dns", "dns_tcp", "tls", "http"]))
    if kind == "dns":
        query = udp(dns_query(name), 53, sport=sport)
        return [ipv6(query, 17) if v6 else ipv4(query, 17)]
    if kind == "dns_tcp":
        message = dns_query(name)
        stream, dport = struct.pack("!H", len(message)) + message, 53
    elif kind == "tls":
        record_size = draw(st.sampled_from([16384, 700, 150]))
        stream = tls_records(post_quantum_client_hello(name.encode(), ech=draw(st.booleans()),
                                                       sni_last=draw(st.booleans())), record_size)
        dport = draw(st.sampled_from([443, 8443]))
    else:
        stream = f"GET / HTTP/1.1\r\nHost: {name}:{draw(st.integers(1, 65535))}\r\nAccept: */*\r\n\r\n".encode()
        dport = 80
    cuts = sorted(set(draw(st.lists(st.integers(1, len(stream) - 1), max_size=4))))
    parts = segments(stream, cuts, isn, sport=sport, dport=dport, v6=v6)
    order = draw(st.permutations(range(len(parts))))
    retransmit = draw(st.lists(st.sampled_from(range(len(parts))), max_size=2))
    return [syn(isn, sport=sport, dport=dport, v6=v6)] + [parts[i] for i in order] + [parts[i] for i in retransmit]


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(*(flows(sport=20000 + i) for i in range(n)))),
       st.randoms(use_true_random=False))
def test_fast_path_matches_reference(flow_list, rng):
    # interleave the flows' packets the way concurrent clients would
    queues = [list(flow) for flow in flow_list]
    packets = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        packets.append(queue.pop(0))
    fast, reference = FlowExtractor(), ReferenceExtractor()
    fast_names, reference_names = [], []
    for index, packet in enumerate(packets):
        found = fast.extract(packet, 1.0)
        if found is not None:
            fast_names.append((index, found.kind, found.value, found.ech))
        for record in reference.extract(packet):
            reference_names.append((index, record["kind"], record["value"], record.get("ech", False)))
    assert fast_names == reference_names
