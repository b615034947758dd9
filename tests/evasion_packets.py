"""Builders for the segments circumvention tools send: split ClientHellos and request heads,
decoys the server drops (low TTL, bad checksum, TCP-MD5, no ACK, far sequence numbers),
differing overlaps and urgent data."""

from __future__ import annotations

import socket
import struct

import dpkt
from packets import ACK_PSH, CLIENT4, CLIENT6, SERVER4, SERVER6, ipv6

SYN_TTL = 64
MD5_OPTION = b"\x13\x12" + b"\x00" * 16  # kind 19, length 18: a TCP-MD5 signature (RFC 2385)


def segment(data: bytes, offset: int, isn: int, sport: int = 40000, dport: int = 443, ttl: int = SYN_TTL,
            flags: int = ACK_PSH, urgent: int = 0, options: bytes = b"", bad_checksum: bool = False,
            v6: bool = False) -> bytes:
    """One client segment carrying `data` at stream offset `offset` (seq isn + 1 + offset)."""
    header = dpkt.tcp.TCP(sport=sport, dport=dport, seq=(isn + 1 + offset) & 0xFFFFFFFF, ack=7777,
                          flags=flags, urp=urgent, opts=options, data=data)
    header.off = (20 + len(options)) // 4
    if v6:
        return _ipv6_with_checksum(header, ttl, bad_checksum)
    packet = dpkt.ip.IP(src=socket.inet_aton(CLIENT4), dst=socket.inet_aton(SERVER4), p=6, ttl=ttl, data=header)
    raw = bytearray(bytes(packet))
    if bad_checksum:
        raw[20 + 16] ^= 0x5A
    return bytes(raw)


def _ipv6_with_checksum(header: dpkt.tcp.TCP, hop_limit: int, bad_checksum: bool) -> bytes:
    body = bytearray(bytes(header))
    pseudo = (socket.inet_pton(socket.AF_INET6, CLIENT6) + socket.inet_pton(socket.AF_INET6, SERVER6)
              + struct.pack("!IxxxB", len(body), 6))
    body[16:18] = b"\x00\x00"
    checksum = dpkt.in_cksum(pseudo + bytes(body))
    body[16:18] = struct.pack("!H", checksum ^ (0x5A5A if bad_checksum else 0))
    packet = bytearray(ipv6(bytes(body), 6))
    packet[7] = hop_limit
    return bytes(packet)


def syn_segment(isn: int, sport: int = 40000, dport: int = 443, ttl: int = SYN_TTL, v6: bool = False) -> bytes:
    header = dpkt.tcp.TCP(sport=sport, dport=dport, seq=isn, flags=dpkt.tcp.TH_SYN)
    if v6:
        return _ipv6_with_checksum(header, ttl, False)
    return bytes(dpkt.ip.IP(src=socket.inet_aton(CLIENT4), dst=socket.inet_aton(SERVER4), p=6, ttl=ttl,
                            data=header))


def pieces(stream: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    """(offset, bytes) of the stream cut at the given offsets."""
    edges = [0, *sorted(set(cuts)), len(stream)]
    return [(start, stream[start:end]) for start, end in zip(edges, edges[1:]) if end > start]


def http_request(host: str, path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/8.5\r\nAccept: */*\r\n\r\n".encode()
