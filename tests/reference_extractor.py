"""Reference name extractor: a plain, dpkt-based oracle for differential tests and benchmarks.

It reports what `edufilter inspect --json` reports for the non-QUIC mix: DNS query names
(UDP and TCP port 53), TLS ClientHello SNI (with the ECH flag) and HTTP/1.x Host, each
TCP flow reassembled in order. QUIC Initial SNI is deliberately not covered here.
Speed is not a goal: every step is written to be checked by reading it.

Scope, where a choice had to be made: IPv4/IPv6 first fragments are read as they are, later
fragments ignored; a TCP stream is one direction of a connection and gives at most one
name; names with an empty label are invalid; IP literals are dropped from Host only.
extract_file sees what dpkt's readers see: pcap, and pcapng with one link type (the first
interface's) and no simple packet blocks; Ethernet with at most two VLAN tags.
"""

from __future__ import annotations

import ipaddress
import os
import re
import struct
from dataclasses import dataclass, field

import dpkt

STREAM_CAP = 16 * 1024
DNS_PORT = 53
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
# A DNS name may point back into the message; real queries need at most a few jumps.
MAX_COMPRESSION_POINTERS = 16

TLS_CONTENT_TYPE_HANDSHAKE = 22
TLS_HANDSHAKE_CLIENT_HELLO = 1
TLS_EXTENSION_SERVER_NAME = 0x0000
TLS_EXTENSION_ENCRYPTED_CLIENT_HELLO = 0xFE0D
SERVER_NAME_TYPE_HOST_NAME = 0

DNS_FLAG_QR = 0x8000
DNS_OPCODE_QUERY = 0

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
RAW_IP_LINKTYPES = frozenset({12, 14, 101, 228, 229})
# The address families dpkt's Loopback decodes as IP: AF_INET and the BSD AF_INET6 values.
BSD_LOOPBACK_FAMILIES = frozenset({2, 24, 28, 30})

NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_")
# RFC 9110 tchar, the bytes of a method token.
TOKEN_BYTES = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/1\.[0-9]\r?")


class NeedMoreBytes(Exception):
    """The stream prefix ends before a decision can be made."""


class Malformed(Exception):
    """The bytes cannot be what they claim to be; no name comes from them."""


class ByteReader:
    """Reads big-endian fields from a buffer, raising Malformed on overrun."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def take(self, length: int) -> bytes:
        end = self.position + length
        if end > len(self.data):
            raise Malformed
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> ByteReader:
        return ByteReader(self.take(self.uint(length_size)))

    def at_end(self) -> bool:
        return self.position >= len(self.data)


def normalise_name(raw: bytes) -> str | None:
    """Lowercase, strip one trailing dot; None unless every label is 1..63 bytes of [a-z0-9_-]."""
    name = raw.lower()
    if name.endswith(b"."):
        name = name[:-1]
    if not name or len(name) > MAX_NAME_LENGTH:
        return None
    labels = name.split(b".")
    for label in labels:
        if not label or len(label) > MAX_LABEL_LENGTH or not set(label) <= NAME_BYTES:
            return None
    if labels[-1].isdigit():
        return None  # an all-digit top label is an IP literal, not a name (RFC 3696 2)
    return name.decode("ascii")


def dns_query_name(message: bytes) -> str | None:
    """The first question name of a standard query (QR=0, opcode 0), else None."""
    if len(message) < 12:
        return None
    _id, flags, qdcount = struct.unpack_from(">HHH", message)
    opcode = (flags >> 11) & 0xF
    if flags & DNS_FLAG_QR or opcode != DNS_OPCODE_QUERY or qdcount == 0:
        return None
    try:
        labels, question_end = read_dns_name(message, 12)
    except Malformed:
        return None
    if question_end + 4 > len(message):  # QTYPE and QCLASS
        return None
    if any(b"." in label for label in labels):
        return None
    return normalise_name(b".".join(labels))


def read_dns_name(message: bytes, position: int) -> tuple[list[bytes], int]:
    """The labels of the name at position, and where the field ends in the message."""
    labels: list[bytes] = []
    field_end: int | None = None
    pointers_followed = 0
    while True:
        if position >= len(message):
            raise Malformed
        length = message[position]
        if length == 0:
            position += 1
            break
        if length & 0xC0 == 0xC0:
            if position + 1 >= len(message) or pointers_followed == MAX_COMPRESSION_POINTERS:
                raise Malformed
            if field_end is None:
                field_end = position + 2
            pointers_followed += 1
            position = ((length & 0x3F) << 8) | message[position + 1]
            continue
        if length & 0xC0:
            raise Malformed  # extended label types (RFC 6891) never name a host
        label = message[position + 1 : position + 1 + length]
        if len(label) < length:
            raise Malformed
        labels.append(label)
        position += 1 + length
    return labels, field_end if field_end is not None else position


def client_hello_verdict(prefix: bytes) -> tuple[str | None, bool]:
    """(SNI, ECH present) once the stream prefix holds a whole ClientHello; NeedMoreBytes before."""
    handshake = b""
    position = 0
    while True:
        if handshake and handshake[0] != TLS_HANDSHAKE_CLIENT_HELLO:
            return None, False
        if len(handshake) >= 4:
            body_length = int.from_bytes(handshake[1:4], "big")
            if len(handshake) >= 4 + body_length:
                return client_hello_names(handshake[4 : 4 + body_length])
        if len(prefix) < position + 5:
            raise NeedMoreBytes
        content_type, version_major, _version_minor, length = struct.unpack_from(
            ">BBBH", prefix, position
        )
        if content_type != TLS_CONTENT_TYPE_HANDSHAKE or version_major != 3:
            return None, False
        if len(prefix) < position + 5 + length:
            raise NeedMoreBytes
        handshake += prefix[position + 5 : position + 5 + length]
        position += 5 + length


def client_hello_names(body: bytes) -> tuple[str | None, bool]:
    """Parse a ClientHello body (RFC 8446 4.1.2): first host_name in server_name, and ECH."""
    hello = ByteReader(body)
    try:
        hello.take(2 + 32)  # legacy_version, random
        hello.vector(1)  # legacy_session_id
        hello.vector(2)  # cipher_suites
        hello.vector(1)  # legacy_compression_methods
        if hello.at_end():
            return None, False
        extensions = hello.vector(2)
        server_name: bytes | None = None
        has_ech = False
        while not extensions.at_end():
            extension_type = extensions.uint(2)
            extension_data = extensions.vector(2)
            if extension_type == TLS_EXTENSION_SERVER_NAME and server_name is None:
                server_name = first_host_name(extension_data)
            elif extension_type == TLS_EXTENSION_ENCRYPTED_CLIENT_HELLO:
                has_ech = True
    except Malformed:
        return None, False
    if server_name is None:
        return None, has_ech
    return normalise_name(server_name), has_ech


def first_host_name(extension_data: ByteReader) -> bytes | None:
    server_name_list = extension_data.vector(2)
    while not server_name_list.at_end():
        name_type = server_name_list.uint(1)
        name = server_name_list.vector(2).data
        if name_type == SERVER_NAME_TYPE_HOST_NAME:
            return name
    return None


def http_host_verdict(prefix: bytes) -> str | None:
    """Host of an HTTP/1.x request once the whole head is in (as Wireshark reports it):
    the authority of an absolute-form target, else the first Host header."""
    head_end = min((i for i in (prefix.find(b"\r\n\r\n"), prefix.find(b"\n\n")) if i >= 0), default=-1)
    if head_end < 0:
        raise NeedMoreBytes
    lines = [line.rstrip(b"\r") for line in prefix[:head_end].split(b"\n")]
    if not REQUEST_LINE.fullmatch(lines[0]):
        return None
    target = lines[0].split(b" ")[1]
    if target.startswith(b"http://"):
        authority = re.split(rb"[/?#]", target[len(b"http://"):])[0]
        return host_header_name(authority.rpartition(b"@")[2])
    for line in lines[1:]:
        field_name, colon, value = line.partition(b":")
        if colon and field_name.lower() == b"host":
            return host_header_name(value.strip(b" \t"))
    return None


def host_header_name(value: bytes) -> str | None:
    """The name in a Host value (port stripped); None for IP literals and invalid names."""
    if value.startswith(b"["):
        return None  # IPv6 literal
    host, colon, port = value.partition(b":")
    if colon and port and not port.isdigit():
        return None
    name = normalise_name(host)
    if name is None or is_ip_literal(name):
        return None
    return name


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def endpoint(address: bytes, port: int) -> str:
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        return f"[{ip}]:{port}"
    return f"{ip}:{port}"


@dataclass
class Stream:
    """One direction of a TCP connection: payload by offset from the first sequence number."""

    base: int | None = None
    segments: dict[int, bytes] = field(default_factory=dict)
    finished: bool = False

    def add(self, seq: int, payload: bytes) -> None:
        if self.base is None:
            self.base = seq
        offset = (seq - self.base) % 2**32
        if offset >= STREAM_CAP:  # beyond the cap, or before the stream start (wrapped)
            return
        payload = payload[: STREAM_CAP - offset]
        if len(payload) > len(self.segments.get(offset, b"")):
            self.segments[offset] = payload

    def contiguous_prefix(self) -> bytes:
        prefix = b""
        while True:
            extension = b""
            for offset, payload in self.segments.items():
                end = offset + len(payload)
                if offset <= len(prefix) < end and end - len(prefix) > len(extension):
                    extension = payload[len(prefix) - offset :]
            if not extension:
                return prefix
            prefix += extension


class ReferenceExtractor:
    """Feed IP packets in capture order; each call returns the names that packet completes."""

    def __init__(self) -> None:
        self.streams: dict[tuple[bytes, int, bytes, int], Stream] = {}

    def extract(self, ip_packet: bytes) -> list[dict]:
        parsed = parse_ip(ip_packet)
        if parsed is None:
            return []
        source, destination, transport = parsed
        if isinstance(transport, dpkt.udp.UDP):
            if transport.dport != DNS_PORT:
                return []
            name = dns_query_name(bytes(transport.data))
            return self.record("dns", name, source, destination, transport)
        if isinstance(transport, dpkt.tcp.TCP):
            return self.extract_tcp(source, destination, transport)
        return []

    def extract_tcp(self, source: bytes, destination: bytes, segment: dpkt.tcp.TCP) -> list[dict]:
        key = (source, segment.sport, destination, segment.dport)
        payload_seq = segment.seq
        if segment.flags & dpkt.tcp.TH_SYN:
            # The SYN takes one sequence number; a new SYN starts a new connection.
            payload_seq = (segment.seq + 1) % 2**32
            self.streams[key] = Stream(base=payload_seq)
        stream = self.streams.setdefault(key, Stream())
        payload = bytes(segment.data)
        if stream.finished or not payload:
            return []
        stream.add(payload_seq, payload)
        prefix = stream.contiguous_prefix()
        try:
            kind, name, has_ech = stream_verdict(prefix, segment.dport)
        except NeedMoreBytes:
            if len(prefix) >= STREAM_CAP:
                stream.finished = True
            return []
        stream.finished = True
        stream.segments.clear()
        return self.record(kind, name, source, destination, segment, ech=has_ech)

    @staticmethod
    def record(
        kind: str,
        name: str | None,
        source: bytes,
        destination: bytes,
        transport: dpkt.udp.UDP | dpkt.tcp.TCP,
        ech: bool = False,
    ) -> list[dict]:
        if name is None:
            return []
        record: dict = {
            "kind": kind,
            "value": name,
            "src": endpoint(source, transport.sport),
            "dst": endpoint(destination, transport.dport),
        }
        if ech:
            record["ech"] = True
        return [record]


def stream_verdict(prefix: bytes, server_port: int) -> tuple[str, str | None, bool]:
    """(kind, name, ECH present) decided by the start of a client stream; NeedMoreBytes if too early."""
    if not prefix:
        raise NeedMoreBytes
    if server_port == DNS_PORT:
        return "dns", dns_over_tcp_verdict(prefix), False
    if prefix[0] == TLS_CONTENT_TYPE_HANDSHAKE:
        name, has_ech = client_hello_verdict(prefix)
        return "sni", name, has_ech
    if prefix[0] in TOKEN_BYTES:
        return "http_host", http_host_verdict(prefix), False
    return "", None, False


def dns_over_tcp_verdict(prefix: bytes) -> str | None:
    """RFC 1035 4.2.2: a two-byte length, then the message."""
    if len(prefix) < 2:
        raise NeedMoreBytes
    length = int.from_bytes(prefix[:2], "big")
    if len(prefix) < 2 + length:
        raise NeedMoreBytes
    return dns_query_name(prefix[2 : 2 + length])


def parse_ip(ip_packet: bytes) -> tuple[bytes, bytes, object] | None:
    """(source, destination, transport) of a first or only fragment; None otherwise."""
    if not ip_packet:
        return None
    try:
        if ip_packet[0] >> 4 == 4:
            ip = dpkt.ip.IP(ip_packet)
            if ip.offset != 0:
                return None
        elif ip_packet[0] >> 4 == 6:
            ip = dpkt.ip6.IP6(ip_packet)
            fragment = ip.extension_hdrs.get(dpkt.ip.IP_PROTO_FRAGMENT)
            if fragment is not None and fragment.frag_off != 0:
                return None
        else:
            return None
    except dpkt.UnpackError:
        return None
    except AttributeError:
        return None  # dpkt's IP6 trips over an ESP header behind a fragment header
    return ip.src, ip.dst, ip.data


def strip_link_layer(linktype: int, frame: bytes) -> bytes | None:
    """The frame from its IP header on, as dpkt decodes the link layer; None if not IP."""
    try:
        if linktype == LINKTYPE_ETHERNET:
            link = dpkt.ethernet.Ethernet(frame)
            if link.type <= 1500 or hasattr(link, "mpls_labels"):
                return None  # 802.3/LLC and MPLS are outside the reference
            header_length = 14 + 4 * len(getattr(link, "vlan_tags", []))
        elif linktype == LINKTYPE_LINUX_SLL:
            link, header_length = dpkt.sll.SLL(frame), 16
        elif linktype == LINKTYPE_LINUX_SLL2:
            link, header_length = dpkt.sll2.SLL2(frame), 20
        elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            link, header_length = dpkt.loopback.Loopback(frame), 4
            if link.family not in BSD_LOOPBACK_FAMILIES:
                return None  # dpkt decodes any other family as Ethernet
        elif linktype in RAW_IP_LINKTYPES:
            return frame
        else:
            return None
    except dpkt.UnpackError:
        return None
    if not isinstance(link.data, (dpkt.ip.IP, dpkt.ip6.IP6)):
        return None
    return frame[header_length:]


def extract_file(path: str | os.PathLike[str]) -> list[dict]:
    """Every record in a pcap or pcapng file (read by dpkt), each with its 1-based frame number."""
    extractor = ReferenceExtractor()
    records: list[dict] = []
    with open(path, "rb") as file:
        reader = dpkt.pcap.UniversalReader(file)
        linktype = reader.datalink()
        for number, (_timestamp, frame) in enumerate(reader, start=1):
            ip_packet = strip_link_layer(linktype, frame)
            if ip_packet is None:
                continue
            for record in extractor.extract(ip_packet):
                records.append({"frame": number, **record})
    return records
