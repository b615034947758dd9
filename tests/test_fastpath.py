"""The Cython fast path: IP/transport decoding and name extraction, packet by packet."""

from __future__ import annotations

import struct

import dpkt
import pytest
from packets import (
    client_hello_message,
    dns_query,
    ipv4,
    ipv6,
    openssl_client_hello,
    post_quantum_client_hello,
    segments,
    sni_extension,
    syn,
    tcp,
    tls_records,
    udp,
)

from edufilter._fastpath import FlowExtractor, normalise_name, parse_client_hello


def names(extractor: FlowExtractor, packets: list[bytes], now: float = 1.0) -> list[tuple[int, str, str, bool]]:
    """(packet index, kind, value, ech) for every packet that completes a name."""
    found = []
    for index, packet in enumerate(packets):
        result = extractor.extract(packet, now)
        if result is not None:
            found.append((index, result.kind, result.value, result.ech))
    return found


# ---- names

@pytest.mark.parametrize("raw, expected", [
    (b"WWW.Example.ORG.", "www.example.org"),
    (b"xn--bcher-kva.example", "xn--bcher-kva.example"),
    (b"_dmarc.school.test", "_dmarc.school.test"),
    (b"a" * 63 + b".test", "a" * 63 + ".test"),
    (b"a" * 64 + b".test", None),
    (b"a..b", None),
    (b".", None),
    (b"", None),
    (b"exa mple.org", None),
    (b"b\xc3\xbccher.example", None),
    (b"198.18.0.1", None),
    (b"*.example.org", None),
    (b"a." * 126 + b"b", "a." * 126 + "b"),
    (b"a." * 127, "a." * 126 + "a"),
    (b"a." * 127 + b"b", None),
])
def test_normalise_name(raw, expected):
    assert normalise_name(raw) == expected


# ---- DNS

def test_dns_query_over_udp_ipv4_and_ipv6():
    ex = FlowExtractor()
    v4 = ex.extract(ipv4(udp(dns_query("Www.Wikipedia.org"), 53), 17), 1.0)
    assert (v4.kind, v4.value, v4.sport, v4.dport, v4.dns_qtype) == ("dns", "www.wikipedia.org", 50000, 53, 1)
    assert v4.src == bytes([198, 18, 0, 1]) and v4.ip_version == 4
    v6 = ex.extract(ipv6(udp(dns_query("school.test", dpkt.dns.DNS_AAAA), 53), 17), 1.0)
    assert (v6.kind, v6.value, v6.dns_qtype, len(v6.dst)) == ("dns", "school.test", 28, 16)


def test_dns_responses_and_root_queries_give_no_name():
    ex = FlowExtractor()
    response = dpkt.dns.DNS(id=1, qr=dpkt.dns.DNS_R, qd=[dpkt.dns.DNS.Q(name="example.org")])
    assert ex.extract(ipv4(udp(bytes(response), 53), 17), 1.0) is None
    root = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x00" + b"\x00\x02\x00\x01"
    assert ex.extract(ipv4(udp(root, 53), 17), 1.0) is None
    assert ex.stats["malformed"] == 0


def dns_with_name_bytes(name: bytes) -> bytes:
    return b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"


def test_dns_backward_compression_pointer_is_followed():
    # question name "www" + pointer to "example.org" stored earlier in an (odd) additional label area
    header = b"\xab\xcd\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00"
    first = b"\x07example\x03org\x00\x00\x01\x00\x01"
    second = b"\x03www\xc0\x0c\x00\x01\x00\x01"
    ex = FlowExtractor()
    assert ex.extract(ipv4(udp(header + first + second, 53), 17), 1.0).value == "example.org"
    # a question whose name itself starts with a pointer back to the header area is refused
    loop = dns_with_name_bytes(b"\xc0\x0c")
    assert ex.extract(ipv4(udp(loop, 53), 17), 1.0) is None
    forward = dns_with_name_bytes(b"\xc0\x20")
    assert ex.extract(ipv4(udp(forward, 53), 17), 1.0) is None
    out_of_range = dns_with_name_bytes(b"\xff\xff")
    assert ex.extract(ipv4(udp(out_of_range, 53), 17), 1.0) is None
    assert ex.stats["malformed"] == 3


@pytest.mark.parametrize("name_bytes", [
    b"\x03a.b\x03org\x00",       # a dot inside a label
    b"\x03a b\x03org\x00",       # a space
    b"\x41" + b"a" * 65 + b"\x00",  # extended label type
])
def test_dns_invalid_names_are_not_passed_on(name_bytes):
    ex = FlowExtractor()
    assert ex.extract(ipv4(udp(dns_with_name_bytes(name_bytes), 53), 17), 1.0) is None


def test_dns_truncated_question_is_counted():
    ex = FlowExtractor()
    query = dns_query("example.org")
    assert ex.extract(ipv4(udp(query[:-6], 53), 17), 1.0) is None
    assert ex.stats["malformed"] == 1


def test_dns_over_tcp_waits_for_the_whole_message():
    ex = FlowExtractor()
    query = dns_query("Mail.School.test")
    stream = struct.pack("!H", len(query)) + query
    packets = [syn(100, dport=53), *segments(stream, [1, 10], 100, dport=53)]
    assert names(ex, packets) == [(3, "dns", "mail.school.test", False)]


# ---- IP layer

def test_ipv4_options_and_ethernet_padding():
    query = udp(dns_query("example.org"), 53)
    header = dpkt.ip.IP(src=b"\xc6\x12\x00\x01", dst=b"\xc6\x12\x00\x02", p=17, data=query,
                        hl=6, opts=b"\x94\x04\x00\x00")  # router alert option
    packet = bytes(header) + b"\x00" * 12           # trailing Ethernet padding
    assert FlowExtractor().extract(packet, 1.0).value == "example.org"


def test_ipv4_fragments():
    ex = FlowExtractor()
    payload = bytes(udp(dns_query("frag.example.org"), 53))
    first = dpkt.ip.IP(src=b"\xc6\x12\x00\x01", dst=b"\xc6\x12\x00\x02", p=17, mf=1, data=payload[:24])
    later = dpkt.ip.IP(src=b"\xc6\x12\x00\x01", dst=b"\xc6\x12\x00\x02", p=17, offset=3, data=payload[24:])
    assert ex.extract(bytes(first), 1.0) is None      # the question does not fit in 24 bytes
    assert ex.extract(bytes(later), 1.0) is None
    assert ex.stats["fragments"] == 1
    whole_first = dpkt.ip.IP(src=b"\xc6\x12\x00\x01", dst=b"\xc6\x12\x00\x02", p=17, mf=1, data=payload)
    assert ex.extract(bytes(whole_first), 1.0).value == "frag.example.org"


def ipv6_option_header(next_header: int) -> bytes:
    return bytes([next_header, 0]) + b"\x01\x04\x00\x00\x00\x00"   # PadN to 8 bytes


def test_ipv6_extension_header_chain():
    query = bytes(udp(dns_query("six.example.org"), 53))
    chain = ipv6_option_header(43)                            # hop-by-hop -> routing
    chain += bytes([60, 0, 0, 0]) + b"\x00" * 4               # routing (type 0, segments left 0) -> dest opts
    chain += ipv6_option_header(44)                           # destination options -> fragment
    chain += bytes([17, 0, 0, 0]) + b"\x00\x00\x00\x07"       # atomic fragment -> UDP
    packet = ipv6(query, 17, extension_headers=chain, first_next_header=0)
    assert FlowExtractor().extract(packet, 1.0).value == "six.example.org"


def test_ipv6_non_first_fragment_and_no_next_header():
    ex = FlowExtractor()
    query = bytes(udp(dns_query("six.example.org"), 53))
    fragment = bytes([17, 0]) + struct.pack("!H", 8 << 3) + b"\x00\x00\x00\x07"
    assert ex.extract(ipv6(query, 17, extension_headers=fragment, first_next_header=44), 1.0) is None
    assert ex.stats["fragments"] == 1
    assert ex.extract(ipv6(b"", 59), 1.0) is None
    assert ex.stats["other_protocol"] == 1


def test_ipv6_extension_header_past_the_end_is_truncated():
    packet = ipv6(b"", 17, extension_headers=bytes([17, 4]) + b"\x00" * 6, first_next_header=0)
    ex = FlowExtractor()
    assert ex.extract(packet, 1.0) is None
    assert ex.stats["truncated"] == 1


@pytest.mark.parametrize("packet", [b"", b"\x45", b"\x45" + b"\x00" * 10, b"\x60" + b"\x00" * 20, b"\x15" * 40])
def test_short_or_unknown_packets_are_counted(packet):
    ex = FlowExtractor()
    assert ex.extract(packet, 1.0) is None
    assert ex.stats["truncated"] + ex.stats["malformed"] == 1


# ---- TLS

@pytest.mark.parametrize("dport", [443, 8443, 5222])
def test_openssl_client_hello_any_port(dport):
    record = openssl_client_hello("Docs.Example.org")
    ex = FlowExtractor()
    found = names(ex, [syn(7, dport=dport), *segments(record, [], 7, dport=dport)])
    assert found == [(1, "sni", "docs.example.org", False)]


def test_post_quantum_client_hello_across_two_segments_sni_in_the_second():
    record = tls_records(post_quantum_client_hello(b"www.school.test"))
    assert len(record) > 1400 and record.index(b"www.school.test") > 1400
    for v6 in (False, True):
        ex = FlowExtractor()
        packets = [syn(1000, v6=v6), *segments(record, [1400], 1000, v6=v6)]
        assert names(ex, packets) == [(2, "sni", "www.school.test", False)]
        assert ex.stats["streams_in_use"] == 0


def test_client_hello_out_of_order_with_retransmission_and_overlap():
    record = tls_records(post_quantum_client_hello(b"ooo.school.test"))
    first, second, third = segments(record, [700, 1400], 5000)
    overlap = segments(record, [600, 1500], 5000)[1]      # bytes 600..1500, overlapping both
    ex = FlowExtractor()
    assert names(ex, [syn(5000), third, second, second, overlap, first]) == [(5, "sni", "ooo.school.test", False)]
    # and a retransmitted ClientHello after the decision reports nothing new
    assert names(ex, [first, second, third]) == []


def test_client_hello_without_syn_across_segments():
    record = tls_records(post_quantum_client_hello(b"late.school.test"))
    ex = FlowExtractor()
    assert names(ex, segments(record, [1000], 77)) == [(1, "sni", "late.school.test", False)]


def test_client_hello_split_across_tls_records_and_segments():
    message = post_quantum_client_hello(b"records.school.test")
    record = tls_records(message, record_size=500)
    assert record.count(b"\x16\x03\x01") >= 4
    ex = FlowExtractor()
    assert names(ex, [syn(1), *segments(record, [3, 502, 1200], 1)])[-1] == (4, "sni", "records.school.test", False)
    # the handshake header itself straddling two records
    tiny = tls_records(message, record_size=2)
    assert parse_client_hello(message) == ("records.school.test", False)
    assert names(FlowExtractor(), [syn(1), *segments(tiny, [], 1)]) == [(1, "sni", "records.school.test", False)]


def test_ech_flag_and_outer_sni():
    record = tls_records(post_quantum_client_hello(b"public.example.net", ech=True, sni_last=False))
    ex = FlowExtractor()
    assert names(ex, [syn(9), *segments(record, [1300], 9)]) == [(2, "sni", "public.example.net", True)]
    assert ex.stats["ech"] == 1


def test_client_hello_without_sni_settles_the_flow():
    record = tls_records(client_hello_message([]))
    ex = FlowExtractor()
    assert names(ex, [syn(3), *segments(record, [], 3)]) == []
    assert ex.stats["names_sni"] == 0 and ex.stats["streams_in_use"] == 0


def test_malformed_client_hellos_are_counted_not_raised():
    message = bytearray(client_hello_message([sni_extension(b"x.test")]))
    message[38] = 200                                    # session id length far too long
    ex = FlowExtractor()
    assert names(ex, [syn(1), *segments(tls_records(bytes(message)), [], 1)]) == []
    assert ex.stats["malformed"] == 1


def test_non_tls_non_http_streams_are_settled_at_once():
    ex = FlowExtractor()
    assert names(ex, [syn(1, dport=22), *segments(b"SSH-2.0-OpenSSH_9.2\r\n", [], 1, dport=22)]) == []
    assert ex.stats["streams_buffered"] == 0


def test_stream_bigger_than_the_buffer_is_an_overflow():
    message = client_hello_message([sni_extension(b"big.test"), b"\x00\x15" + struct.pack("!H", 3000) + b"\0" * 3000])
    record = tls_records(message)
    ex = FlowExtractor(buffer_size=2048)
    assert names(ex, [syn(1), *segments(record, [1000, 2000], 1)]) == []
    assert ex.stats["stream_overflows"] == 1 and ex.stats["streams_in_use"] == 0


def test_far_away_segment_cannot_end_a_flow_before_its_name():
    record = tls_records(post_quantum_client_hello(b"evade.school.test"))
    first, second = segments(record, [1000], 10)
    bogus = ipv4(tcp(b"\x00" * 100, 10 + 1 + 900_000), 6)
    ex = FlowExtractor()
    assert names(ex, [syn(10), first, bogus, second]) == [(3, "sni", "evade.school.test", False)]
    # that far from the stream start it is outside any window: a decoy, not read at all
    assert ex.stats["decoys_outside_window"] == 1 and ex.stats["segments_outside_window"] == 0


# ---- HTTP

@pytest.mark.parametrize("head, expected", [
    (b"GET / HTTP/1.1\r\nHost: WWW.School.Test\r\n\r\n", "www.school.test"),
    (b"POST /x HTTP/1.0\r\nUser-Agent: t\r\nhost:\tfoo.example:8080  \r\nAccept: */*\r\n\r\n", "foo.example"),
    (b"GET http://Proxy.Example/a HTTP/1.1\r\nHost: other.example\r\n\r\n", "proxy.example"),
    (b"GET / HTTP/1.1\nHost: lf-only.example\n\n", "lf-only.example"),
    (b"GET / HTTP/1.1\r\nHost: [2001:2::2]:80\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nHost: 198.18.0.2\r\n\r\n", None),
    (b"GET / HTTP/1.0\r\n\r\n", None),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None),
])
def test_http_host(head, expected):
    ex = FlowExtractor()
    found = names(ex, [syn(1, dport=8080), *segments(head, [], 1, dport=8080)])
    assert found == ([(1, "http_host", expected, False)] if expected else [])


def test_http_head_across_segments_reports_on_the_completing_one():
    head = b"GET /index.html HTTP/1.1\r\nUser-Agent: curl/8\r\nHost: split.example\r\nAccept: */*\r\n\r\n"
    ex = FlowExtractor()
    packets = [syn(1, dport=80), *segments(head, [5, 30, 60], 1, dport=80)]
    assert names(ex, packets) == [(4, "http_host", "split.example", False)]


# ---- QUIC hand-off

def test_quic_initial_is_handed_off_with_its_payload():
    datagram = bytes([0xC3]) + struct.pack("!I", 1) + b"\x08" + b"\x11" * 8 + b"\x00" + b"\x00" * 1200
    ex = FlowExtractor()
    found = ex.extract(ipv4(udp(datagram, 443), 17), 1.0)
    assert found.kind == "quic_initial" and found.value is None and found.payload == datagram
    short = ex.extract(ipv4(udp(datagram[:600], 443), 17), 1.0)
    v2_handshake_type = bytes([0xC3 | 0x20]) + struct.pack("!I", 0x6B3343CF) + datagram[5:]
    assert short is None and ex.extract(ipv4(udp(v2_handshake_type, 443), 17), 1.0) is None


# ---- the flow table

def test_flow_table_evicts_and_expires():
    ex = FlowExtractor(max_flows=8, max_streams=2, flow_timeout=5.0)
    record = tls_records(post_quantum_client_hello(b"a.school.test"))
    for sport in range(40000, 40020):
        ex.extract(syn(1, sport=sport), 1.0)
    assert ex.stats["flows_evicted"] == 12
    # three partial ClientHellos: the third finds the pool full
    for sport in (41000, 41001, 41002):
        ex.extract(segments(record, [1000], 1, sport=sport)[0], 2.0)
    assert ex.stats["streams_in_use"] == 2 and ex.stats["stream_pool_full"] == 1
    # after the timeout, new partial flows get the expired flows' buffers
    ex.extract(segments(record, [1000], 1, sport=42000)[0], 10.0)
    ex.extract(segments(record, [1000], 1, sport=42001)[0], 10.0)
    assert ex.stats["streams_buffered"] == 4 and ex.stats["stream_pool_full"] == 1
    assert ex.stats["streams_in_use"] == 2 and ex.stats["flows_expired"] >= 2


def test_extract_accepts_memoryview_and_bytearray():
    packet = ipv4(udp(dns_query("view.example"), 53), 17)
    ex = FlowExtractor()
    assert ex.extract(memoryview(packet), 1.0).value == "view.example"
    assert ex.extract(bytearray(packet), 1.0).value == "view.example"
    assert ex.extract(memoryview(b""), 1.0) is None


def test_extract_batch_counts_names():
    packets = [ipv4(udp(dns_query(f"n{i}.example"), 53), 17) for i in range(10)] + [b"\x00" * 3]
    ex = FlowExtractor()
    assert ex.extract_batch(packets, 1.0) == 10
    with pytest.raises(TypeError):
        ex.extract_batch([bytearray(b"x")], 1.0)


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError):
        FlowExtractor(buffer_size=10)


def test_the_servers_side_of_a_tls_flow_is_neither_parsed_nor_buffered():
    server_hello = b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03" + b"\x00" * 200
    ex = FlowExtractor()
    packet = ipv4(tcp(server_hello, 1, dport=40000, sport=443), 6, src="198.18.0.2", dst="198.18.0.1")
    assert ex.extract(packet, 1.0) is None
    assert ex.stats["malformed"] == 0 and ex.stats["streams_buffered"] == 0
