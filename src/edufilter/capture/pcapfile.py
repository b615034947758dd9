"""Reads classic pcap and pcapng files frame by frame, and finds the IP header inside a frame.

Reading is lazy: frames before a damaged or cut-short spot are yielded, then a
CaptureFileError says what is wrong and where.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from edufilter.errors import CaptureFileError

# libpcap's largest snapshot length for every link type that carries IP; a larger
# captured length means a damaged file, and reading it would waste memory.
MAX_CAPTURED_LENGTH = 262_144
# Room for a maximal packet plus generous options (comments) or unknown blocks.
MAX_BLOCK_LENGTH = 16 * 1024 * 1024

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
# DLT_RAW is 12 on most BSDs and 14 on OpenBSD; files written there carry those numbers.
_RAW_LINKTYPES = frozenset({LINKTYPE_RAW, 12, 14})

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
# 802.1Q, 802.1ad and the pre-standard QinQ tag.
_VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
MAX_VLAN_TAGS = 8

AF_INET = 2
# AF_INET6 differs per OS: Linux 10, Windows 23, NetBSD/OpenBSD 24, FreeBSD 28, macOS 30.
_AF_INET6_VALUES = frozenset({10, 23, 24, 28, 30})

_PCAP_MAGICS: dict[bytes, tuple[str, int]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
_PCAP_FILE_HEADER_REST = 20
_PCAP_RECORD_HEADER = 16
# LT_LINKTYPE in libpcap: the upper bits of the header's link type field carry FCS flags.
_PCAP_LINKTYPE_MASK = 0x03FF_FFFF

_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_SHB_BYTES = b"\x0a\x0d\x0d\x0a"
_PCAPNG_IDB = 0x00000001
_PCAPNG_PB = 0x00000002
_PCAPNG_SPB = 0x00000003
_PCAPNG_EPB = 0x00000006
_PCAPNG_PACKET_BLOCKS = frozenset({_PCAPNG_PB, _PCAPNG_SPB, _PCAPNG_EPB})
# Blocks that carry no packet but that Wireshark lists as frames (systemd journal entries,
# sysdig events, custom blocks): they are skipped but keep a number, so that frame numbers
# agree with Wireshark's.
_PCAPNG_NUMBERED_NON_PACKETS = frozenset(
    {0x00000009, 0x00000204, 0x00000208, 0x00000216, 0x00000217, 0x00000221, 0x00000222,
     0x00000BAD, 0x40000BAD}
)
_PCAPNG_BYTE_ORDER_MAGIC = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
_OPT_ENDOFOPT = 0
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14

_U16_BE = struct.Struct(">H")
_U32_LE = struct.Struct("<I")
_U32_BE = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame; timestamp is seconds since the epoch, 0.0 where the file has none."""

    number: int
    timestamp: float
    linktype: int
    data: bytes
    original_length: int


@dataclass(frozen=True, slots=True)
class _Interface:
    linktype: int
    snaplen: int
    units_per_second: int
    offset_seconds: int


def read_frames(path: str | os.PathLike[str]) -> Iterator[Frame]:
    """Yield the frames of a pcap or pcapng file in file order; CaptureFileError if unreadable."""
    name = os.fspath(path)
    try:
        file = open(name, "rb", buffering=1024 * 1024)
    except OSError as error:
        raise CaptureFileError(f"{name}: cannot open capture file: {error.strerror}") from error
    with file:
        try:
            magic = file.read(4)
            if not magic:
                raise CaptureFileError(f"{name}: the file is empty, not a capture file")
            if magic == _PCAPNG_SHB_BYTES:
                yield from _read_pcapng(file, name)
            elif magic in _PCAP_MAGICS:
                endian, units_per_second = _PCAP_MAGICS[magic]
                yield from _read_pcap(file, name, endian, units_per_second)
            else:
                raise CaptureFileError(
                    f"{name}: not a capture file (unknown magic {magic.hex()}; "
                    "expected pcap or pcapng)"
                )
        except OSError as error:
            raise CaptureFileError(f"{name}: cannot read capture file: {error.strerror}") from error


def _cut_short(name: str, number: int) -> CaptureFileError:
    return CaptureFileError(f"{name}: capture file is cut short in the middle of packet {number}")


def _read_pcap(file: BinaryIO, name: str, endian: str, units_per_second: int) -> Iterator[Frame]:
    header = file.read(_PCAP_FILE_HEADER_REST)
    if len(header) < _PCAP_FILE_HEADER_REST:
        raise CaptureFileError(f"{name}: bad pcap header: the file ends inside the file header")
    version_major, version_minor, _thiszone, _sigfigs, _snaplen, network = struct.unpack(
        endian + "HHiIII", header
    )
    if version_major != 2:
        raise CaptureFileError(
            f"{name}: bad pcap header: unsupported version {version_major}.{version_minor}"
        )
    linktype = network & _PCAP_LINKTYPE_MASK
    record_header = struct.Struct(endian + "IIII")
    read = file.read
    number = 0
    while True:
        head = read(_PCAP_RECORD_HEADER)
        if not head:
            return
        number += 1
        if len(head) < _PCAP_RECORD_HEADER:
            raise _cut_short(name, number)
        seconds, fraction, captured_length, original_length = record_header.unpack(head)
        if captured_length > MAX_CAPTURED_LENGTH:
            raise CaptureFileError(
                f"{name}: packet {number} has an inconsistent captured length of "
                f"{captured_length} bytes (the most a pcap record holds is "
                f"{MAX_CAPTURED_LENGTH}); the file is damaged"
            )
        data = read(captured_length)
        if len(data) < captured_length:
            raise _cut_short(name, number)
        yield Frame(
            number, seconds + fraction / units_per_second, linktype, data, original_length
        )


def _read_pcapng(file: BinaryIO, name: str) -> Iterator[Frame]:
    """Walk the blocks of every section; the caller has consumed the first block type."""
    read = file.read
    endian = "<"
    interfaces: list[_Interface] = []
    number = 0
    offset = 0
    head = _PCAPNG_SHB_BYTES + read(4)
    while head:
        if len(head) < 8:
            raise CaptureFileError(
                f"{name}: capture file is cut short in a block header at byte offset {offset}"
            )
        if head[:4] == _PCAPNG_SHB_BYTES:
            # The block type reads the same in both byte orders; the length needs the magic after it.
            byte_order_magic = read(4)
            endian = _section_byte_order(byte_order_magic, name, offset)
            block_type = _PCAPNG_SHB
            (block_length,) = struct.unpack_from(endian + "I", head, 4)
            _check_block_length(name, offset, block_type, block_length)
            body_and_trailer = byte_order_magic + read(block_length - 12)
        else:
            block_type, block_length = struct.unpack_from(endian + "II", head)
            _check_block_length(name, offset, block_type, block_length)
            body_and_trailer = read(block_length - 8)
        is_packet = block_type in _PCAPNG_PACKET_BLOCKS
        if is_packet:
            number += 1
        if len(body_and_trailer) < block_length - 8:
            if is_packet:
                raise _cut_short(name, number)
            raise CaptureFileError(
                f"{name}: capture file is cut short in the middle of a block of type "
                f"0x{block_type:08x} at byte offset {offset}"
            )
        (trailing_length,) = struct.unpack_from(endian + "I", body_and_trailer, block_length - 12)
        if trailing_length != block_length:
            raise CaptureFileError(
                f"{name}: pcapng block at byte offset {offset} has an inconsistent length "
                f"(it starts with {block_length} and ends with {trailing_length})"
            )
        body = memoryview(body_and_trailer)[:-4]
        if block_type == _PCAPNG_SHB:
            _check_section_version(body, endian, name, offset)
            interfaces = []
        elif block_type == _PCAPNG_IDB:
            interfaces.append(_parse_interface(body, endian, name, offset))
        elif is_packet:
            yield _parse_packet(block_type, body, endian, interfaces, number, name, offset)
        elif block_type in _PCAPNG_NUMBERED_NON_PACKETS:
            number += 1
        offset += block_length
        head = read(8)


def _section_byte_order(byte_order_magic: bytes, name: str, offset: int) -> str:
    endian = _PCAPNG_BYTE_ORDER_MAGIC.get(byte_order_magic)
    if endian is not None:
        return endian
    if len(byte_order_magic) < 4:
        raise CaptureFileError(
            f"{name}: bad pcapng header: the file ends inside the section header "
            f"at byte offset {offset}"
        )
    raise CaptureFileError(
        f"{name}: bad pcapng header: unknown byte-order magic {byte_order_magic.hex()} "
        f"at byte offset {offset}"
    )


def _check_block_length(name: str, offset: int, block_type: int, block_length: int) -> None:
    # An SHB holds at least the byte-order magic, the version and the section length.
    minimum = 28 if block_type == _PCAPNG_SHB else 12
    if block_length < minimum or block_length % 4 or block_length > MAX_BLOCK_LENGTH:
        raise CaptureFileError(
            f"{name}: pcapng block of type 0x{block_type:08x} at byte offset {offset} has an "
            f"inconsistent length of {block_length} bytes"
        )


def _check_section_version(body: memoryview, endian: str, name: str, offset: int) -> None:
    version_major, version_minor = struct.unpack_from(endian + "HH", body, 4)
    if version_major != 1:
        raise CaptureFileError(
            f"{name}: bad pcapng header: unsupported version {version_major}.{version_minor} "
            f"at byte offset {offset}"
        )


def _parse_interface(body: memoryview, endian: str, name: str, offset: int) -> _Interface:
    if len(body) < 8:
        raise _inconsistent_block(name, offset, "interface description")
    linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", body)
    units_per_second = 1_000_000
    offset_seconds = 0
    position = 8
    while position + 4 <= len(body):
        code, length = struct.unpack_from(endian + "HH", body, position)
        position += 4
        if code == _OPT_ENDOFOPT:
            break
        if position + length > len(body):
            raise CaptureFileError(
                f"{name}: pcapng interface description at byte offset {offset} has an option "
                "that runs past the end of its block"
            )
        if code == _OPT_IF_TSRESOL and length == 1:
            resolution = body[position]
            # High bit set: a negative power of two, else a negative power of ten.
            if resolution & 0x80:
                units_per_second = 2 ** (resolution & 0x7F)
            else:
                units_per_second = 10**resolution
        elif code == _OPT_IF_TSOFFSET and length == 8:
            (offset_seconds,) = struct.unpack_from(endian + "q", body, position)
        position += (length + 3) & ~3
    return _Interface(linktype, snaplen, units_per_second, offset_seconds)


def _inconsistent_block(name: str, offset: int, what: str) -> CaptureFileError:
    return CaptureFileError(
        f"{name}: pcapng {what} block at byte offset {offset} is too short for its own fields"
    )


def _parse_packet(
    block_type: int,
    body: memoryview,
    endian: str,
    interfaces: list[_Interface],
    number: int,
    name: str,
    offset: int,
) -> Frame:
    if block_type == _PCAPNG_SPB:
        if len(body) < 4:
            raise _inconsistent_block(name, offset, "simple packet")
        (original_length,) = struct.unpack_from(endian + "I", body)
        interface = _interface(interfaces, 0, number, name)
        captured_length = original_length
        if interface.snaplen:
            captured_length = min(original_length, interface.snaplen)
        data_start = 4
        # A simple packet block has no timestamp.
        timestamp = 0.0
    else:
        if len(body) < 20:
            raise _inconsistent_block(name, offset, "packet")
        if block_type == _PCAPNG_EPB:
            interface_id, high, low, captured_length, original_length = struct.unpack_from(
                endian + "IIIII", body
            )
        else:
            interface_id, _drops, high, low, captured_length, original_length = (
                struct.unpack_from(endian + "HHIIII", body)
            )
        interface = _interface(interfaces, interface_id, number, name)
        timestamp = ((high << 32) | low) / interface.units_per_second + interface.offset_seconds
        data_start = 20
    if data_start + captured_length > len(body):
        raise CaptureFileError(
            f"{name}: packet {number} claims {captured_length} captured bytes but its block at "
            f"byte offset {offset} holds only {len(body) - data_start}"
        )
    return Frame(
        number,
        timestamp,
        interface.linktype,
        bytes(body[data_start : data_start + captured_length]),
        original_length,
    )


def _interface(interfaces: list[_Interface], interface_id: int, number: int, name: str) -> _Interface:
    if interface_id >= len(interfaces):
        raise CaptureFileError(
            f"{name}: packet {number} refers to interface {interface_id}, which its section "
            "does not describe"
        )
    return interfaces[interface_id]


def ip_packet(frame: Frame) -> memoryview | None:
    """The frame from its IP header on, or None if it carries no IPv4/IPv6 or is cut short."""
    data = frame.data
    linktype = frame.linktype
    if linktype == LINKTYPE_ETHERNET:
        return _after_ethertype(data, 12, 14)
    if linktype in _RAW_LINKTYPES:
        if data and data[0] >> 4 == 6:
            return _ip_at(data, 0, 6)
        return _ip_at(data, 0, 4)
    if linktype == LINKTYPE_LINUX_SLL:
        return _after_ethertype(data, 14, 16)
    if linktype == LINKTYPE_LINUX_SLL2:
        return _after_ethertype(data, 0, 20)
    if linktype == LINKTYPE_IPV4:
        return _ip_at(data, 0, 4)
    if linktype == LINKTYPE_IPV6:
        return _ip_at(data, 0, 6)
    if linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
        return _after_address_family(data)
    return None


def _after_ethertype(data: bytes, type_offset: int, payload_offset: int) -> memoryview | None:
    if len(data) < payload_offset:
        return None
    (ethertype,) = _U16_BE.unpack_from(data, type_offset)
    for _ in range(MAX_VLAN_TAGS):
        if ethertype not in _VLAN_TPIDS:
            break
        # A tag is the TCI followed by the next ethertype.
        if len(data) < payload_offset + 4:
            return None
        (ethertype,) = _U16_BE.unpack_from(data, payload_offset + 2)
        payload_offset += 4
    if ethertype == ETHERTYPE_IPV4:
        return _ip_at(data, payload_offset, 4)
    if ethertype == ETHERTYPE_IPV6:
        return _ip_at(data, payload_offset, 6)
    return None


def _after_address_family(data: bytes) -> memoryview | None:
    """BSD loopback: a 4-byte address family in the capturing host's byte order (NULL) or big-endian (LOOP)."""
    if len(data) < 4:
        return None
    (family,) = _U32_LE.unpack_from(data)
    if family > 0xFFFF:
        (family,) = _U32_BE.unpack_from(data)
    if family == AF_INET:
        return _ip_at(data, 4, 4)
    if family in _AF_INET6_VALUES:
        return _ip_at(data, 4, 6)
    return None


def _ip_at(data: bytes, offset: int, version: int) -> memoryview | None:
    if len(data) <= offset or data[offset] >> 4 != version:
        return None
    return memoryview(data)[offset:]
