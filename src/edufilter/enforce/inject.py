"""Forged packets: IP headers and transport checksums, and the raw sockets that send them.

The worker answers some packets itself (a DNS answer, a block page, a reset) instead of passing
them on. Those packets are built here around a transport segment and sent from the gateway's
network namespace through header-included raw sockets, with a packet mark so that the daemon's
own rules never queue them again.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Final

from edufilter import logs
from edufilter.errors import EdufilterError

IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
DEFAULT_HOP_LIMIT: Final = 64

_IPV6_HOP_BY_HOP: Final = 0
_IPV6_DESTINATION_OPTIONS: Final = 60
_IPV4_DONT_FRAGMENT: Final = 0x4000
_IPV4_FRAGMENT_BITS: Final = 0x3FFF  # more-fragments flag and fragment offset
_UDP_CHECKSUM_OFFSET: Final = 6
_IPV4_HEADER: Final = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER: Final = struct.Struct("!IHBB16s16s")

log = logging.getLogger(logs.ENFORCE)


class InjectionError(EdufilterError):
    """The raw sockets for forged packets cannot be opened (e.g. CAP_NET_RAW is missing)."""


@dataclass(frozen=True, slots=True)
class IPPacket:
    """One unfragmented IPv4 or IPv6 packet split at its transport header."""

    version: int
    header: bytes  # IPv4 header with options, or IPv6 header with hop-by-hop/destination options
    source: bytes
    destination: bytes
    protocol: int  # IPv6: the next header after the options above (a fragment header stays 44)
    transport: bytes  # transport header and payload, cut to the length the IP header gives


def parse_ip(packet: bytes) -> IPPacket | None:
    """Split packet at its transport header; None when it is truncated, a fragment or not IP."""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        return _parse_ipv4(packet)
    if version == 6:
        return _parse_ipv6(packet)
    return None


def _parse_ipv4(packet: bytes) -> IPPacket | None:
    header_length = (packet[0] & 0x0F) * 4
    total_length, fragment = struct.unpack_from("!H2xH", packet, 2)
    if header_length < 20 or not header_length <= total_length <= len(packet):
        return None
    if fragment & _IPV4_FRAGMENT_BITS:
        return None
    return IPPacket(
        version=4,
        header=packet[:header_length],
        source=packet[12:16],
        destination=packet[16:20],
        protocol=packet[9],
        transport=packet[header_length:total_length],
    )


def _parse_ipv6(packet: bytes) -> IPPacket | None:
    if len(packet) < 40:
        return None
    end = 40 + struct.unpack_from("!H", packet, 4)[0]
    if end > len(packet):
        return None
    next_header, offset = packet[6], 40
    while next_header in (_IPV6_HOP_BY_HOP, _IPV6_DESTINATION_OPTIONS):
        if offset + 8 > end:
            return None
        next_header, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
    if offset > end:
        return None
    return IPPacket(
        version=6,
        header=packet[:offset],
        source=packet[8:24],
        destination=packet[24:40],
        protocol=next_header,
        transport=packet[offset:end],
    )


def internet_checksum(data: bytes) -> int:
    """The RFC 1071 checksum of data (odd lengths padded with a zero byte)."""
    if len(data) % 2:
        data += b"\x00"
    # 2**16 is 1 modulo 0xFFFF, so the one's complement sum of the 16-bit words is the number
    # modulo 0xFFFF, except that a non-zero sum divisible by 0xFFFF is 0xFFFF (negative zero).
    total = int.from_bytes(data, "big") % 0xFFFF
    if total == 0 and any(data):
        total = 0xFFFF
    return ~total & 0xFFFF


def transport_checksum(
    version: int, source: bytes, destination: bytes, protocol: int, segment: bytes
) -> int:
    """The TCP/UDP checksum of segment (its checksum field zeroed) with the pseudo-header."""
    if version == 4:
        pseudo = source + destination + struct.pack("!BBH", 0, protocol, len(segment))
    else:
        pseudo = source + destination + struct.pack("!I3xB", len(segment), protocol)
    return internet_checksum(pseudo + segment)


def udp_segment(
    version: int,
    source: bytes,
    destination: bytes,
    source_port: int,
    destination_port: int,
    payload: bytes,
) -> bytes:
    """A UDP header with length and checksum, followed by payload."""
    segment = struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0) + payload
    checksum = transport_checksum(version, source, destination, IPPROTO_UDP, segment) or 0xFFFF
    offset = _UDP_CHECKSUM_OFFSET
    return segment[:offset] + struct.pack("!H", checksum) + segment[offset + 2 :]


def ip_packet(
    version: int, source: bytes, destination: bytes, protocol: int, transport: bytes
) -> bytes:
    """A new IP packet around transport: IPv4 with DF set, or IPv6; hop limit 64."""
    if version == 4:
        # Identification 0: a raw socket's kernel path fills it in (RFC 6864 atomic datagram).
        header = _IPV4_HEADER.pack(
            0x45, 0, 20 + len(transport), 0, _IPV4_DONT_FRAGMENT, DEFAULT_HOP_LIMIT, protocol,
            0, source, destination,
        )  # fmt: skip
        return _with_ipv4_checksum(header) + transport
    header = _IPV6_HEADER.pack(
        6 << 28, len(transport), protocol, DEFAULT_HOP_LIMIT, source, destination
    )
    return header + transport


def replace_transport(packet: IPPacket, transport: bytes) -> bytes:
    """packet with a new transport segment; its IP header kept, lengths and checksum fixed."""
    header = packet.header
    if packet.version == 4:
        header = header[:2] + struct.pack("!H", len(header) + len(transport)) + header[4:]
        return _with_ipv4_checksum(header) + transport
    payload_length = len(header) - 40 + len(transport)
    return header[:4] + struct.pack("!H", payload_length) + header[6:] + transport


def _with_ipv4_checksum(header: bytes) -> bytes:
    zeroed = header[:10] + b"\x00\x00" + header[12:]
    return zeroed[:10] + struct.pack("!H", internet_checksum(zeroed)) + zeroed[12:]


@dataclass(slots=True)
class SendCounters:
    sent: int = 0
    errors: int = 0  # the kernel refused a packet, or no socket for its family
    malformed: int = 0  # not an IPv4/IPv6 packet: nothing was sent


class RawSender:
    """Header-included raw sockets (IPv4 and IPv6) in the current network namespace.

    send() never raises: failures are counted and each kind is logged once.
    """

    def __init__(self) -> None:
        self.counters = SendCounters()
        self._sockets: dict[int, socket.socket | None] = {
            4: _open_raw_socket(socket.AF_INET),
            6: _open_raw_socket(socket.AF_INET6),
        }
        self._marks: dict[int, int] = {}
        self._logged: set[str] = set()

    def __enter__(self) -> RawSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for sock in self._sockets.values():
            if sock is not None:
                sock.close()
        self._sockets = {4: None, 6: None}

    def send(self, packet: bytes, mark: int) -> bool:
        """Send one whole IP packet with packet mark `mark`; False when it was not sent."""
        version = packet[0] >> 4 if packet else 0
        if version == 4 and len(packet) >= 20:
            address: tuple[str, int] | tuple[str, int, int, int] = (
                socket.inet_ntop(socket.AF_INET, packet[16:20]), 0,
            )  # fmt: skip
        elif version == 6 and len(packet) >= 40:
            address = (socket.inet_ntop(socket.AF_INET6, packet[24:40]), 0, 0, 0)
        else:
            self.counters.malformed += 1
            self._log_once("malformed", "not sending a packet that is neither IPv4 nor IPv6")
            return False
        sock = self._sockets[version]
        if sock is None:
            self.counters.errors += 1
            self._log_once(f"no-socket-{version}", f"no raw socket for IPv{version}")
            return False
        try:
            if self._marks.get(version) != mark:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
                self._marks[version] = mark
            sock.sendto(packet, address)
        except OSError as error:
            self.counters.errors += 1
            name = errno.errorcode.get(error.errno or 0, str(error.errno))
            self._log_once(f"send-{name}", f"sending a forged IPv{version} packet failed: {error}")
            return False
        self.counters.sent += 1
        return True

    def _log_once(self, kind: str, message: str) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning("%s (logged once; see the injection error counters)", message)


def _open_raw_socket(family: socket.AddressFamily) -> socket.socket | None:
    """IPPROTO_RAW implies IP_HDRINCL on Linux for both families; None without IPv6 support."""
    try:
        return socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except OSError as error:
        if family == socket.AF_INET6 and error.errno == errno.EAFNOSUPPORT:
            return None
        raise InjectionError(f"cannot open a raw socket for forged packets: {error}") from error
