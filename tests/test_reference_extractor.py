"""The reference extractor on hand-built packets, and against tshark on a capture of the same flows."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_extractor import (
    STREAM_CAP,
    ReferenceExtractor,
    dns_query_name,
    extract_file,
    normalise_name,
)

CLIENT4, SERVER4 = "198.18.0.1", "198.18.0.2"
CLIENT6, SERVER6 = "2001:2::1", "2001:2::2"
PUSH_ACK = dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK
SYN = dpkt.tcp.TH_SYN
ISN = 0xFFFFFF00  # close to the wrap, so stream offsets cross 2**32


# --- packet builders ------------------------------------------------------------------------


def ip(src: str, dst: str, protocol: int, transport: bytes, *, fragment_offset: int = 0,
       more_fragments: bool = False) -> bytes:
    if ":" in src:
        packet6 = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src),
                               dst=socket.inet_pton(socket.AF_INET6, dst),
                               nxt=protocol, hlim=64, plen=len(transport), data=transport)
        return bytes(packet6)
    packet = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=protocol, ttl=64,
                        id=7, data=transport)
    packet.offset = fragment_offset
    packet.mf = int(more_fragments)
    return bytes(packet)


def udp(payload: bytes, *, sport: int = 40000, dport: int = 53, src: str = CLIENT4,
        dst: str = SERVER4) -> bytes:
    datagram = dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload)
    return ip(src, dst, dpkt.ip.IP_PROTO_UDP, bytes(datagram))


def tcp(seq: int, payload: bytes = b"", *, flags: int = PUSH_ACK, sport: int = 40000,
        dport: int = 443, src: str = CLIENT4, dst: str = SERVER4) -> bytes:
    segment = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq % 2**32, ack=1, flags=flags,
                           win=65535, data=payload)
    return ip(src, dst, dpkt.ip.IP_PROTO_TCP, bytes(segment))


def dns_message(labels: list[bytes], *, flags: int = 0x0100, qdcount: int = 1,
                question_tail: bytes = b"\x00\x01\x00\x01") -> bytes:
    """A DNS message with one question: RD set by default, QTYPE A, QCLASS IN."""
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    return struct.pack(">HHHHHH", 0x1234, flags, qdcount, 0, 0, 0) + name + question_tail


def dns_query(name: str) -> bytes:
    return dns_message([label.encode() for label in name.split(".")])


def length_prefixed(data: bytes, size: int) -> bytes:
    return len(data).to_bytes(size, "big") + data


def extension(extension_type: int, data: bytes) -> bytes:
    return struct.pack(">H", extension_type) + length_prefixed(data, 2)


def client_hello(server_name: bytes | None, *, ech: bool = False, padding: int = 0) -> bytes:
    """A TLS 1.3-style ClientHello handshake message, header included."""
    extensions = b""
    if server_name is not None:
        entry = b"\x00" + length_prefixed(server_name, 2)
        extensions += extension(0x0000, length_prefixed(entry, 2))
    extensions += extension(0x002B, b"\x02\x03\x04")  # supported_versions: TLS 1.3
    if ech:
        extensions += extension(0xFE0D, b"\x00\x00\x01\x00\x01\x2a" + bytes(40))
    if padding:
        extensions += extension(0x0015, bytes(padding))
    body = (b"\x03\x03" + bytes(range(32)) + length_prefixed(bytes(32), 1)
            + length_prefixed(b"\x13\x01\x13\x02", 2) + b"\x01\x00" + length_prefixed(extensions, 2))
    return b"\x01" + length_prefixed(body, 3)


def tls_records(handshake: bytes, *fragment_sizes: int) -> bytes:
    """Handshake bytes as TLS plaintext records; the last record takes what is left."""
    records = b""
    for size in (*fragment_sizes, len(handshake)):
        fragment, handshake = handshake[:size], handshake[size:]
        records += b"\x16\x03\x01" + length_prefixed(fragment, 2)
        if not handshake:
            break
    return records


def split(data: bytes, *cuts: int) -> list[tuple[int, bytes]]:
    """(stream offset, chunk) pieces of data cut at the given offsets."""
    bounds = [0, *cuts, len(data)]
    return [(start, data[start:end]) for start, end in zip(bounds, bounds[1:])]


def feed(packets: list[bytes]) -> list[tuple[int, dict]]:
    """(1-based packet index, record) for each record, in order."""
    extractor = ReferenceExtractor()
    return [(index, record) for index, packet in enumerate(packets, 1)
            for record in extractor.extract(packet)]


def sni(name: str, src: str = f"{CLIENT4}:40000", dst: str = f"{SERVER4}:443", **extra: object) -> dict:
    return {"kind": "sni", "value": name, "src": src, "dst": dst, **extra}


@pytest.fixture(scope="module")
def real_client_hello() -> bytes:
    """The TLS records Python's ssl module sends first (OpenSSL's ClientHello)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = context.wrap_bio(incoming, outgoing, server_hostname="WWW.Example.ORG")
    with pytest.raises(ssl.SSLWantReadError):
        connection.do_handshake()
    return outgoing.read()


# --- DNS ------------------------------------------------------------------------------------


def test_dns_query_over_udp() -> None:
    records = feed([udp(dns_query("WWW.Example.ORG"))])
    assert records == [(1, {"kind": "dns", "value": "www.example.org",
                            "src": f"{CLIENT4}:40000", "dst": f"{SERVER4}:53"})]


@pytest.mark.parametrize(
    "message",
    [
        dns_message([b"example", b"org"], flags=0x8180),  # a response
        dns_message([b"example", b"org"], flags=0x2800),  # opcode 5, UPDATE
        dns_message([b"example", b"org"], qdcount=0),
        dns_message([b"example", b"org"], question_tail=b"\x00\x01"),  # QCLASS missing
        dns_message([b"example", b"org"])[:-8],  # name cut short
        dns_message([]),  # the root
        b"\x12\x34\x01\x00\x00\x01",
    ],
    ids=["response", "update", "no-question", "no-qclass", "cut-name", "root", "short-header"],
)
def test_dns_messages_that_are_not_standard_queries(message: bytes) -> None:
    assert feed([udp(message)]) == []


def test_dns_query_to_another_port_is_ignored() -> None:
    assert feed([udp(dns_query("example.org"), dport=5353)]) == []


def test_dns_name_with_compression_pointer() -> None:
    # The question name is "www" followed by a pointer to "example.org" later in the message.
    header = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0)
    pointer_target = 12 + 4 + 2 + 4
    message = header + b"\x03www" + struct.pack(">H", 0xC000 | pointer_target) + b"\x00\x01\x00\x01"
    message += b"\x07example\x03org\x00"
    assert dns_query_name(message) == "www.example.org"
    looping = header + struct.pack(">H", 0xC000 | 12) + b"\x00\x01\x00\x01"
    assert dns_query_name(looping) is None


def test_dns_query_over_tcp_split_after_the_length_prefix() -> None:
    message = length_prefixed(dns_query("Mail.Example.NET"), 2)
    packets = [tcp(ISN, flags=SYN, dport=53)] + [
        tcp(ISN + 1 + offset, chunk, dport=53) for offset, chunk in split(message, 2, 9)
    ]
    assert feed(packets) == [(4, {"kind": "dns", "value": "mail.example.net",
                                  "src": f"{CLIENT4}:40000", "dst": f"{SERVER4}:53"})]


def test_dns_over_tcp_reports_only_the_first_query_of_a_connection() -> None:
    stream = length_prefixed(dns_query("one.example"), 2) + length_prefixed(dns_query("two.example"), 2)
    packets = [tcp(ISN + offset, chunk, dport=53) for offset, chunk in split(stream, 20)]
    assert [record["value"] for _, record in feed(packets)] == ["one.example"]


def ipv6_with_options(next_header_chain: list[int], transport_protocol: int, transport: bytes) -> bytes:
    """IPv6 with hop-by-hop/destination options headers (8 bytes each, PadN filled)."""
    extension_headers = b""
    next_headers = [*next_header_chain[1:], transport_protocol]
    for next_header in next_headers:
        extension_headers += bytes([next_header, 0]) + b"\x01\x04\x00\x00\x00\x00"
    payload = extension_headers + transport
    header = struct.pack(">IHBB", 0x60000000, len(payload), next_header_chain[0], 64)
    return (header + socket.inet_pton(socket.AF_INET6, CLIENT6)
            + socket.inet_pton(socket.AF_INET6, SERVER6) + payload)


def test_dns_over_ipv6_behind_hop_by_hop_and_destination_options() -> None:
    query = dns_query("IPv6.Example.ORG")
    datagram = bytes(dpkt.udp.UDP(sport=5353, dport=53, ulen=8 + len(query), data=query))
    packet = ipv6_with_options([0, 60], dpkt.ip.IP_PROTO_UDP, datagram)
    assert feed([packet]) == [(1, {"kind": "dns", "value": "ipv6.example.org",
                                   "src": f"[{CLIENT6}]:5353", "dst": f"[{SERVER6}]:53"})]


def test_ipv6_non_first_fragment_is_ignored() -> None:
    query = dns_query("frag.example")
    datagram = bytes(dpkt.udp.UDP(sport=5353, dport=53, ulen=8 + len(query), data=query))
    for offset_units, expected in ((0, 1), (3, 0)):
        fragment_header = struct.pack(">BBHI", dpkt.ip.IP_PROTO_UDP, 0, offset_units << 3, 99)
        payload = fragment_header + datagram
        header = struct.pack(">IHBB", 0x60000000, len(payload), dpkt.ip.IP_PROTO_FRAGMENT, 64)
        packet = (header + socket.inet_pton(socket.AF_INET6, CLIENT6)
                  + socket.inet_pton(socket.AF_INET6, SERVER6) + payload)
        assert len(feed([packet])) == expected


def test_ipv4_non_first_fragment_is_ignored() -> None:
    query = dns_query("frag.example")
    datagram = bytes(dpkt.udp.UDP(sport=5353, dport=53, ulen=8 + len(query), data=query))
    first = ip(CLIENT4, SERVER4, dpkt.ip.IP_PROTO_UDP, datagram, more_fragments=True)
    later = ip(CLIENT4, SERVER4, dpkt.ip.IP_PROTO_UDP, datagram, fragment_offset=185)
    assert [record["value"] for _, record in feed([first])] == ["frag.example"]
    assert feed([later]) == []


# --- TLS ClientHello ------------------------------------------------------------------------


def test_real_client_hello_in_one_segment(real_client_hello: bytes) -> None:
    assert feed([tcp(ISN, real_client_hello)]) == [(1, sni("www.example.org"))]


@pytest.mark.parametrize("cuts", [(100,), (60, 300)], ids=["two-segments", "three-segments"])
def test_client_hello_split_across_segments_in_order(real_client_hello: bytes, cuts: tuple[int, ...]) -> None:
    packets = [tcp(ISN, flags=SYN)] + [
        tcp(ISN + 1 + offset, chunk) for offset, chunk in split(real_client_hello, *cuts)
    ]
    assert feed(packets) == [(len(packets), sni("www.example.org"))]


def test_client_hello_segments_out_of_order(real_client_hello: bytes) -> None:
    first, second, third = (tcp(ISN + 1 + offset, chunk)
                            for offset, chunk in split(real_client_hello, 60, 300))
    packets = [tcp(ISN, flags=SYN), third, first, second]
    assert feed(packets) == [(4, sni("www.example.org"))]


def test_client_hello_without_syn_starts_at_the_first_data_segment(real_client_hello: bytes) -> None:
    first, second, third = (tcp(ISN + offset, chunk) for offset, chunk in split(real_client_hello, 60, 300))
    assert feed([first, third, second]) == [(3, sni("www.example.org"))]
    # Without a SYN, a later segment seen first becomes the start: the name is never found.
    assert feed([second, first, third]) == []


def test_client_hello_with_retransmissions(real_client_hello: bytes) -> None:
    pieces = split(real_client_hello, 60, 300)
    first, second, third = (tcp(ISN + 1 + offset, chunk) for offset, chunk in pieces)
    # The retransmission of the first two segments as one larger segment overlaps the second.
    merged = tcp(ISN + 1, real_client_hello[:300])
    packets = [tcp(ISN, flags=SYN), first, first, merged, third, third, second]
    assert feed(packets) == [(5, sni("www.example.org"))]


def test_client_hello_across_two_tls_records() -> None:
    records = tls_records(client_hello(b"Split.Records.Example"), 50)
    assert records.count(b"\x16\x03\x01") >= 2
    assert feed([tcp(ISN, records)]) == [(1, sni("split.records.example"))]
    one_record_per_segment = [tcp(ISN + offset, chunk) for offset, chunk in split(records, 55)]
    assert feed(one_record_per_segment) == [(2, sni("split.records.example"))]


def test_client_hello_across_three_tls_records_and_segments() -> None:
    records = tls_records(client_hello(b"three.example"), 3, 40)
    packets = [tcp(ISN + offset, chunk) for offset, chunk in split(records, 5, 30)]
    assert feed(packets) == [(3, sni("three.example"))]


def test_ech_flag() -> None:
    with_ech = tls_records(client_hello(b"public.example", ech=True))
    without_ech = tls_records(client_hello(b"public.example"))
    assert feed([tcp(ISN, with_ech)]) == [(1, sni("public.example", ech=True))]
    assert feed([tcp(ISN, without_ech)]) == [(1, sni("public.example"))]


def test_ipv6_client_hello() -> None:
    packet = tcp(ISN, tls_records(client_hello(b"v6.example")), src=CLIENT6, dst=SERVER6)
    assert feed([packet]) == [(1, sni("v6.example", src=f"[{CLIENT6}]:40000", dst=f"[{SERVER6}]:443"))]


@pytest.mark.parametrize(
    "handshake",
    [
        client_hello(None),
        client_hello(b"bad name.example"),
        client_hello(b"a" * 64 + b".example"),
        client_hello(b""),
        b"\x02" + client_hello(b"server-hello.example")[1:],
        client_hello(b"cut.example")[:-3],
    ],
    ids=["no-sni", "space", "long-label", "empty", "not-a-client-hello", "inconsistent-lengths"],
)
def test_client_hellos_without_a_valid_name(handshake: bytes) -> None:
    stream = tls_records(handshake)
    # The second segment is not a TLS record, which ends a ClientHello still waiting for bytes.
    assert feed([tcp(ISN, stream), tcp(ISN + len(stream), b"x" * 10)]) == []


def test_client_hello_malformed_extensions_block() -> None:
    hello = bytearray(client_hello(b"ok.example"))
    extensions_length_at = 4 + 2 + 32 + 33 + 2 + 4 + 2
    hello[extensions_length_at:extensions_length_at + 2] = b"\xff\xff"
    assert feed([tcp(ISN, tls_records(bytes(hello)))]) == []


def test_stream_cap() -> None:
    fits = tls_records(client_hello(b"fits.example", padding=STREAM_CAP - 400), 16000)
    too_big = tls_records(client_hello(b"too-big.example", padding=STREAM_CAP), 16000)
    assert len(fits) <= STREAM_CAP < len(too_big)
    fits_packets = [tcp(ISN + offset, chunk) for offset, chunk in split(fits, 8000)]
    assert feed(fits_packets) == [(2, sni("fits.example"))]
    too_big_packets = [tcp(ISN + offset, chunk) for offset, chunk in split(too_big, 8000, 16000)]
    assert feed(too_big_packets) == []


def test_server_to_client_direction_reports_nothing(real_client_hello: bytes) -> None:
    server_hello = b"\x16\x03\x03" + length_prefixed(b"\x02" + length_prefixed(bytes(70), 3), 2)
    packets = [tcp(ISN, server_hello, sport=443, dport=40000, src=SERVER4, dst=CLIENT4),
               tcp(5, b"HTTP/1.1 200 OK\r\nHost: x.example\r\n", sport=80, dport=40001,
                   src=SERVER4, dst=CLIENT4)]
    assert feed(packets) == []


# --- HTTP Host ------------------------------------------------------------------------------


def http_records(stream: bytes, *cuts: int) -> list[tuple[int, dict]]:
    return feed([tcp(ISN + offset, chunk, dport=80) for offset, chunk in split(stream, *cuts)])


def test_http_host_with_port_and_mixed_case() -> None:
    head = b"GET /index.html HTTP/1.1\r\nUser-Agent: test\r\nHOST: WWW.Example.ORG:8080\r\n\r\n"
    assert http_records(head) == [(1, {"kind": "http_host", "value": "www.example.org",
                                       "src": f"{CLIENT4}:40000", "dst": f"{SERVER4}:80"})]


def test_http_head_split_across_segments() -> None:
    head = b"POST /form HTTP/1.0\r\nAccept: */*\r\nHost: split.example\r\nContent-Length: 0\r\n\r\n"
    host_at = head.index(b"Host")
    records = http_records(head, 10, host_at + 2, host_at + 12)
    assert [(index, record["value"]) for index, record in records] == [(4, "split.example")]


def test_http_host_line_must_be_complete() -> None:
    assert http_records(b"GET / HTTP/1.1\r\nHost: incomplete.example") == []
    assert http_records(b"GET / HTTP/1.1\nHost: bare-lf.example\n\n")[0][1]["value"] == "bare-lf.example"


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: 198.18.0.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 198.18.0.9:8080\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [2001:2::9]:80\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: example.org:http\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: under score.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\nHost: after-the-head.example\r\n",
        b"GET / HTTP/2.0\r\nHost: h2.example\r\n\r\n",
        b"GET /\r\nHost: http09.example\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x00\x01binary",
    ],
    ids=["ipv4", "ipv4-port", "ipv6", "named-port", "empty", "space", "after-head", "http2",
         "no-version", "ssh", "binary"],
)
def test_http_streams_without_a_valid_host_name(head: bytes) -> None:
    assert http_records(head) == []


def test_one_name_per_flow() -> None:
    two_requests = (b"GET / HTTP/1.1\r\nHost: first.example\r\n\r\n"
                    b"GET / HTTP/1.1\r\nHost: second.example\r\n\r\n")
    assert [record["value"] for _, record in http_records(two_requests, 45)] == ["first.example"]


def test_a_new_syn_starts_a_new_flow() -> None:
    request = b"GET / HTTP/1.1\r\nHost: again.example\r\n\r\n"
    packets = [tcp(100, flags=SYN, dport=80), tcp(101, request, dport=80),
               tcp(900, flags=SYN, dport=80), tcp(901, request, dport=80)]
    assert [index for index, _ in feed(packets)] == [2, 4]


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Example.ORG", "example.org"),
        (b"example.org.", "example.org"),
        (b"xn--bcher-kva.example", "xn--bcher-kva.example"),
        (b"_dmarc.example-1.org", "_dmarc.example-1.org"),
        (b"a" * 63 + b".example", "a" * 63 + ".example"),
        (b".".join([b"a" * 63] * 3 + [b"b" * 61]), ".".join(["a" * 63] * 3 + ["b" * 61])),
        (b"", None),
        (b".", None),
        (b"example.org..", None),
        (b"a..example", None),
        (b".example", None),
        (b"a" * 64 + b".example", None),
        (b".".join([b"a" * 63] * 3 + [b"b" * 62]), None),  # 254 bytes
        (b"exa mple.org", None),
        (b"ex\xc3\xa4mple.org", None),
        (b"example.org/", None),
        (b"*.example.org", None),
    ],
)
def test_normalise_name(raw: bytes, expected: str | None) -> None:
    assert normalise_name(raw) == expected


def test_dns_label_containing_a_dot_is_rejected() -> None:
    assert dns_query_name(dns_message([b"evil.example", b"org"])) is None
    assert dns_query_name(dns_message([b"evil", b"example", b"org"])) == "evil.example.org"


def test_dns_labels_over_63_and_names_over_253_are_rejected() -> None:
    assert dns_query_name(dns_message([b"a" * 63, b"org"])) == "a" * 63 + ".org"
    long_name = [b"a" * 63] * 3 + [b"b" * 62]
    assert dns_query_name(dns_message(long_name)) is None
    # A length byte of 64 has the 0x40 bit set: an extended label type, not a name.
    assert dns_query_name(dns_message([b"a" * 64, b"org"])) is None


# --- robustness -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    extractor = ReferenceExtractor()
    for prefix in (b"", b"\x45", b"\x60"):
        assert isinstance(extractor.extract(prefix + data), list)


# --- files ----------------------------------------------------------------------------------

ETHERNET_HEADER = bytes.fromhex("020000000002" "020000000001")


def ethernet(packet: bytes, vlan_tags: tuple[int, ...] = ()) -> bytes:
    ethertype = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    tags = b"".join(struct.pack(">HH", tpid, 42) for tpid in vlan_tags)
    return ETHERNET_HEADER + tags + struct.pack(">H", ethertype) + packet


def sample_flows(real_client_hello: bytes) -> list[bytes]:
    """IP packets of a small mixed capture, including multi-segment and out-of-order flows."""
    dns_tcp = length_prefixed(dns_query("tcp.example"), 2)
    tls_pieces = [tcp(ISN + 1 + offset, chunk, sport=40001)
                  for offset, chunk in split(real_client_hello, 60, 300)]
    ech_records = tls_records(client_hello(b"ech.example", ech=True), 80)
    http_head = b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: Mixed.Example:8080\r\n\r\n"
    return [
        udp(dns_query("Udp.Example.ORG")),
        udp(dns_message([b"answer", b"example"], flags=0x8180), sport=53, dport=40000,
            src=SERVER4, dst=CLIENT4),
        tcp(ISN, flags=SYN, dport=53, src=CLIENT6, dst=SERVER6),
        *[tcp(ISN + 1 + offset, chunk, dport=53, src=CLIENT6, dst=SERVER6)
          for offset, chunk in split(dns_tcp, 2)],
        tcp(ISN, flags=SYN, sport=40001),
        tls_pieces[0], tls_pieces[2], tls_pieces[0], tls_pieces[1],
        *[tcp(ISN + offset, chunk, sport=40002) for offset, chunk in split(ech_records, 85)],
        *[tcp(ISN + offset, chunk, sport=40003, dport=80) for offset, chunk in split(http_head, 20, 35)],
        tcp(ISN, b"GET / HTTP/1.1\r\nHost: 198.18.0.2\r\n\r\n", sport=40004, dport=80),
    ]


def write_pcap(path: Path, frames: list[bytes], linktype: int) -> Path:
    with path.open("wb") as file:
        writer = dpkt.pcap.Writer(file, linktype=linktype)
        for number, frame in enumerate(frames):
            writer.writepkt(frame, ts=1_700_000_000 + number / 100)
    return path


def tshark_names(path: Path, *options: str) -> list[tuple[int, str, str, bool]]:
    """(frame, kind, name, ech) as tshark dissects them, normalised the way edufilter does."""
    output = subprocess.run(
        ["tshark", "-r", str(path), "-o", "tcp.reassemble_out_of_order:TRUE", *options, "-T", "fields",
         "-E", "occurrence=a", "-E", "aggregator=,", "-e", "frame.number",
         "-e", "dns.flags.response", "-e", "dns.qry.name", "-e", "tls.handshake.extensions_server_name",
         "-e", "tls.handshake.extension.type", "-e", "http.host"],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    names = []
    for line in output.splitlines():
        number, response, query, server_name, extension_types, host = line.split("\t")
        if query and response in ("0", "False"):
            names.append((int(number), "dns", query.lower(), False))
        if server_name:
            names.append((int(number), "sni", server_name.lower(), "65037" in extension_types.split(",")))
        host_name = host.rsplit(":", 1)[0].lower()
        if host and not host_name.replace(".", "").isdigit():
            names.append((int(number), "http_host", host_name, False))
    return names


def reference_names(path: Path) -> list[tuple[int, str, str, bool]]:
    return [(record["frame"], record["kind"], record["value"], record.get("ech", False))
            for record in extract_file(path)]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_extract_file_agrees_with_tshark(real_client_hello: bytes, tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "mix.pcap", [ethernet(p) for p in sample_flows(real_client_hello)], 1)
    expected = tshark_names(path)
    assert reference_names(path) == expected
    assert {kind for _, kind, _, _ in expected} == {"dns", "sni", "http_host"}
    assert (10, "sni", "www.example.org", False) in expected  # completed by the out-of-order segment
    assert any(ech for *_, ech in expected)


def linux_cooked(packet: bytes) -> bytes:
    return struct.pack(">HHH8sH", 0, 1, 6, bytes(8), 0x86DD if packet[0] >> 4 == 6 else 0x0800) + packet


def linux_cooked_v2(packet: bytes) -> bytes:
    ethertype = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    return struct.pack(">HHIHBB8s", ethertype, 0, 1, 1, 0, 6, bytes(8)) + packet


def bsd_loopback(packet: bytes) -> bytes:
    return struct.pack("=I", 24 if packet[0] >> 4 == 6 else 2) + packet


@pytest.mark.parametrize(
    ("linktype", "encapsulate"),
    [
        (1, lambda packet: ethernet(packet, (0x8100,))),
        (1, lambda packet: ethernet(packet, (0x88A8, 0x8100))),
        (113, linux_cooked),
        (276, linux_cooked_v2),
        (101, lambda packet: packet),
        (0, bsd_loopback),
    ],
    ids=["vlan", "qinq", "sll", "sll2", "raw", "null"],
)
def test_extract_file_link_layers(real_client_hello: bytes, tmp_path: Path, linktype: int, encapsulate) -> None:
    packets = sample_flows(real_client_hello)
    plain = extract_file(write_pcap(tmp_path / "plain.pcap", [ethernet(p) for p in packets], 1))
    wrapped = extract_file(write_pcap(tmp_path / "wrapped.pcap", [encapsulate(p) for p in packets], linktype))
    assert wrapped == plain
    assert len(plain) == 5


@pytest.mark.skipif(shutil.which("editcap") is None, reason="needs editcap")
@pytest.mark.parametrize("file_type", ["pcapng", "nsecpcap"])
def test_extract_file_reads_converted_formats(real_client_hello: bytes, tmp_path: Path, file_type: str) -> None:
    source = write_pcap(tmp_path / "mix.pcap", [ethernet(p) for p in sample_flows(real_client_hello)], 1)
    converted = tmp_path / f"mix.{file_type}"
    subprocess.run(["editcap", "-F", file_type, str(source), str(converted)], check=True, timeout=60)
    assert extract_file(converted) == extract_file(source)


@contextmanager
def tcpdump_on_loopback(path: Path, capture_filter: str) -> Iterator[None]:
    """Run tcpdump on lo around the block; immediate mode, so that SIGINT loses no packet."""
    tcpdump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode",
                                "-w", str(path), capture_filter],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(tcpdump.stderr, selectors.EVENT_READ)
            assert selector.select(timeout=10), "tcpdump did not start"
        started = tcpdump.stderr.readline()
        assert b"listening on" in started, started
        yield
        time.sleep(0.5)
    finally:
        tcpdump.send_signal(signal.SIGINT)
        try:
            tcpdump.wait(timeout=10)
        except subprocess.TimeoutExpired:
            tcpdump.kill()
            tcpdump.wait()
        tcpdump.stderr.close()


def answer_one_connection(listener: socket.socket, reply: bytes) -> threading.Thread:
    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(5)
            connection.recv(65536)
            connection.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump needs root to capture")
@pytest.mark.skipif(any(shutil.which(tool) is None for tool in ("tcpdump", "tshark", "curl", "dig")),
                    reason="needs tcpdump, tshark, curl and dig")
def test_extract_file_on_real_clients_agrees_with_tshark(tmp_path: Path) -> None:
    """dig, curl over HTTPS and curl over HTTP against loopback listeners, captured by tcpdump."""
    path = tmp_path / "real.pcap"
    with socket.create_server(("127.0.0.1", 0)) as tls_listener, \
            socket.create_server(("127.0.0.1", 0)) as http_listener:
        tls_listener.settimeout(10)
        http_listener.settimeout(10)
        tls_port = tls_listener.getsockname()[1]
        http_port = http_listener.getsockname()[1]
        capture_filter = f"host 127.0.0.1 and (udp dst port 53 or tcp port {tls_port} or tcp port {http_port})"
        with tcpdump_on_loopback(path, capture_filter):
            subprocess.run(["dig", "+tries=1", "+timeout=1", "@127.0.0.1", "Dig.Example.ORG", "A"],
                           capture_output=True, timeout=30)
            tls_server = answer_one_connection(tls_listener, b"")
            subprocess.run(["curl", "-sS", "-m", "5", "--resolve", f"tls.example:{tls_port}:127.0.0.1",
                            f"https://tls.example:{tls_port}/"], capture_output=True, timeout=30)
            http_server = answer_one_connection(
                http_listener, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            subprocess.run(["curl", "-sS", "-m", "5", "-H", "Host: Http.Example:8080",
                            f"http://127.0.0.1:{http_port}/"], capture_output=True, timeout=30)
            tls_server.join(timeout=10)
            http_server.join(timeout=10)
    expected = tshark_names(path, "-d", f"tcp.port=={tls_port},tls", "-d", f"tcp.port=={http_port},http")
    assert reference_names(path) == expected
    assert [(kind, name) for _, kind, name, _ in expected] == [
        ("dns", "dig.example.org"), ("sni", "tls.example"), ("http_host", "http.example")]
