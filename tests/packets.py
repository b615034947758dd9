"""Builders for test packets: real IP/TCP/UDP headers (dpkt) around real or crafted payloads."""

from __future__ import annotations

import socket
import ssl
import struct

import dpkt

CLIENT4, SERVER4 = "198.18.0.1", "198.18.0.2"
CLIENT6, SERVER6 = "2001:2::1", "2001:2::2"
ACK_PSH = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH


def ipv4(l4: dpkt.Packet, proto: int, src: str = CLIENT4, dst: str = SERVER4, **fields: int) -> bytes:
    packet = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, data=l4, **fields)
    return bytes(packet)


def ipv6(l4: dpkt.Packet | bytes, next_header: int, src: str = CLIENT6, dst: str = SERVER6,
         extension_headers: bytes = b"", first_next_header: int | None = None) -> bytes:
    """An IPv6 packet; extension_headers are raw bytes already chained to next_header."""
    payload = extension_headers + bytes(l4)
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(payload),
        first_next_header if first_next_header is not None else next_header,
        64,
        socket.inet_pton(socket.AF_INET6, src),
        socket.inet_pton(socket.AF_INET6, dst),
    )
    return header + payload


def udp(payload: bytes, dport: int, sport: int = 50000) -> dpkt.udp.UDP:
    segment = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    segment.ulen = 8 + len(payload)
    return segment


def tcp(payload: bytes, seq: int, dport: int = 443, sport: int = 40000, flags: int = ACK_PSH) -> dpkt.tcp.TCP:
    return dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, flags=flags, data=payload)


def dns_query(name: str, qtype: int = dpkt.dns.DNS_A) -> bytes:
    return bytes(dpkt.dns.DNS(id=0x1234, rd=1, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)]))


def openssl_client_hello(server_name: str) -> bytes:
    """A real ClientHello record from this machine's OpenSSL, with SNI server_name."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        connection.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def extension(ext_type: int, body: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(body)) + body


def sni_extension(name: bytes) -> bytes:
    entry = b"\x00" + struct.pack("!H", len(name)) + name
    return extension(0, struct.pack("!H", len(entry)) + entry)


def client_hello_message(extensions: list[bytes], session_id: bytes = b"\x11" * 32) -> bytes:
    """A ClientHello handshake message with the given extensions, in that order."""
    body = (
        b"\x03\x03"
        + b"\x42" * 32
        + bytes([len(session_id)]) + session_id
        + struct.pack("!H", 6) + b"\x13\x01\x13\x02\x13\x03"
        + b"\x01\x00"
    )
    all_extensions = b"".join(extensions)
    body += struct.pack("!H", len(all_extensions)) + all_extensions
    return b"\x01" + len(body).to_bytes(3, "big") + body


def post_quantum_client_hello(server_name: bytes, ech: bool = False, sni_last: bool = True) -> bytes:
    """A browser-sized (~1.8 KB) ClientHello message: an X25519MLKEM768 key share
    (1216 + 32 bytes) before the SNI, as a Chromium with shuffled extensions may send."""
    key_share_entry = struct.pack("!HH", 0x11EC, 1216) + b"\x5a" * 1216
    key_share_entry += struct.pack("!HH", 0x001D, 32) + b"\x3c" * 32
    key_share = extension(51, struct.pack("!H", len(key_share_entry)) + key_share_entry)
    extensions = [extension(43, b"\x02\x03\x04"), key_share]
    if ech:
        extensions.append(extension(0xFE0D, b"\x00" + b"\x00\x01\x00\x01" + b"\x07" + b"\x00\x20" + b"\x01" * 32
                                    + b"\x00\x90" + b"\x02" * 144))
    extensions.append(extension(16, b"\x00\x0c\x02h2\x08http/1.1"))
    extensions.append(extension(0x44CD, b"\x00\x03\x02h2"))          # ALPS
    extensions.append(extension(21, b"\x00" * 400))                   # padding (RFC 7685)
    if sni_last:
        extensions.append(sni_extension(server_name))
    else:
        extensions.insert(0, sni_extension(server_name))
    return client_hello_message(extensions)


def tls_records(message: bytes, record_size: int = 16384) -> bytes:
    """Wraps a handshake message in TLS handshake records of at most record_size bytes."""
    out = b""
    for start in range(0, len(message), record_size):
        chunk = message[start:start + record_size]
        out += b"\x16\x03\x01" + struct.pack("!H", len(chunk)) + chunk
    return out


def segments(stream: bytes, cuts: list[int], isn: int, sport: int = 40000, dport: int = 443,
             v6: bool = False) -> list[bytes]:
    """The stream cut at the given offsets into TCP segments (seq numbers from isn + 1)."""
    edges = [0, *cuts, len(stream)]
    out = []
    for start, end in zip(edges, edges[1:]):
        segment = tcp(stream[start:end], isn + 1 + start, dport=dport, sport=sport)
        out.append(ipv6(segment, 6) if v6 else ipv4(segment, 6))
    return out


def syn(isn: int, sport: int = 40000, dport: int = 443, v6: bool = False) -> bytes:
    segment = tcp(b"", isn, dport=dport, sport=sport, flags=dpkt.tcp.TH_SYN)
    return ipv6(segment, 6) if v6 else ipv4(segment, 6)
