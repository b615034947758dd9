"""pcap/pcapng reading and link-layer stripping, checked against tcpdump, editcap, text2pcap and tshark."""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edufilter.capture.pcapfile import MAX_VLAN_TAGS, Frame, ip_packet, read_frames
from edufilter.errors import CaptureFileError

TOOLS = ("tcpdump", "tshark", "editcap", "mergecap", "text2pcap")
needs_tools = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS),
    reason="needs tcpdump and the Wireshark command-line tools (scripts/install-system-deps.sh)",
)
needs_capture = pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump needs root to capture")

MARKER = b"edufilter pcapfile test datagram"
DATAGRAMS = 6

IPV4_PACKET = bytes.fromhex("4500001c00004000401100007f0000017f000001") + bytes(8)
IPV6_PACKET = bytes.fromhex("6000000000081140") + bytes(15) + b"\x01" + bytes(15) + b"\x01" + bytes(8)
ETHERNET_ADDRESSES = bytes.fromhex("020000000002" "020000000001")


# --- writers for hand-built files ---------------------------------------------------------


def pcap_file(
    records: list[tuple[int, int, bytes]],
    *,
    endian: str = "<",
    nanoseconds: bool = False,
    linktype: int = 1,
) -> bytes:
    """A classic pcap file from (seconds, fraction, data) records."""
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)
    for seconds, fraction, data in records:
        out += struct.pack(endian + "IIII", seconds, fraction, len(data), len(data)) + data
    return out


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def block(block_type: int, body: bytes, endian: str = "<") -> bytes:
    body = pad4(body)
    length = 12 + len(body)
    return struct.pack(endian + "II", block_type, length) + body + struct.pack(endian + "I", length)


def option(code: int, value: bytes, endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + pad4(value)


def section_header(endian: str = "<", version: tuple[int, int] = (1, 0)) -> bytes:
    return block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, *version, -1), endian)


def interface(
    linktype: int, endian: str = "<", tsresol: int | None = None, tsoffset: int | None = None
) -> bytes:
    options = b""
    if tsresol is not None:
        options += option(9, bytes([tsresol]), endian)
    if tsoffset is not None:
        options += option(14, struct.pack(endian + "q", tsoffset), endian)
    if options:
        options += option(0, b"", endian)
    return block(1, struct.pack(endian + "HHI", linktype, 0, 0) + options, endian)


def enhanced_packet(interface_id: int, units: int, data: bytes, endian: str = "<") -> bytes:
    header = struct.pack(endian + "IIIII", interface_id, units >> 32, units & 0xFFFFFFFF, len(data), len(data))
    return block(6, header + data, endian)


def obsolete_packet(interface_id: int, units: int, data: bytes, endian: str = "<") -> bytes:
    header = struct.pack(
        endian + "HHIIII", interface_id, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data)
    )
    return block(2, header + data, endian)


def simple_packet(data: bytes, endian: str = "<") -> bytes:
    return block(3, struct.pack(endian + "I", len(data)) + data, endian)


def ethernet(payload: bytes, ethertype: int = 0x0800, tags: tuple[int, ...] = ()) -> bytes:
    """An Ethernet frame; each tag is a TPID followed by a TCI of VLAN 100."""
    header = ETHERNET_ADDRESSES
    for tpid in tags:
        header += struct.pack(">HH", tpid, 100)
    return header + struct.pack(">H", ethertype) + payload


# --- tools ----------------------------------------------------------------------------------


def run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout


def tshark_frames(path: Path) -> list[tuple[int, float | None, int]]:
    """(frame.number, frame.time_epoch or None when the frame has no time, frame.cap_len)."""
    rows = []
    output = run("tshark", "-r", str(path), "-T", "fields",
                 "-e", "frame.number", "-e", "frame.time_epoch", "-e", "frame.cap_len")
    for line in output.splitlines():
        number, epoch, captured_length = line.split("\t")
        rows.append((int(number), float(epoch) if epoch else None, int(captured_length)))
    return rows


def assert_matches_tshark(path: Path, records_without_packets: frozenset[int] = frozenset()) -> list[Frame]:
    frames = list(read_frames(path))
    expected = [row for row in tshark_frames(path) if row[0] not in records_without_packets]
    assert [(frame.number, len(frame.data)) for frame in frames] == [
        (number, captured_length) for number, _epoch, captured_length in expected
    ]
    for frame, (_number, epoch, _captured_length) in zip(frames, expected):
        assert frame.timestamp == pytest.approx(0.0 if epoch is None else epoch, abs=1e-6)
    return frames


def hexdump(frames: list[bytes]) -> str:
    """text2pcap input: each frame as offset-prefixed lines of 16 bytes."""
    lines = []
    for frame in frames:
        for offset in range(0, len(frame), 16):
            lines.append(f"{offset:06x}  {frame[offset:offset + 16].hex(' ')}")
        lines.append("")
    return "\n".join(lines) + "\n"


def text2pcap(tmp_path: Path, name: str, frames: list[bytes], linktype: int) -> Path:
    source = tmp_path / f"{name}.txt"
    source.write_text(hexdump(frames))
    output = tmp_path / f"{name}.pcap"
    run("text2pcap", "-q", "-F", "pcap", "-l", str(linktype), str(source), str(output))
    return output


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def capture_datagrams(path: Path, interface_name: str, *options: str) -> Path:
    """tcpdump DATAGRAMS loopback UDP datagrams (IPv4 and IPv6), sending until it has them."""
    port = free_udp_port()
    command = ["tcpdump", "-i", interface_name, "-n", "-U", "-c", str(DATAGRAMS),
               "-w", str(path), *options, f"udp dst port {port}"]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as tcpdump:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ipv4, \
                    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as ipv6:
                for _ in range(200):  # at most 10 s; tcpdump needs a moment to start
                    if tcpdump.poll() is not None:
                        break
                    ipv4.sendto(MARKER, ("127.0.0.1", port))
                    ipv6.sendto(MARKER, ("::1", port))
                    time.sleep(0.05)
            tcpdump.wait(timeout=10)
        finally:
            if tcpdump.poll() is None:
                tcpdump.kill()
                tcpdump.wait()
        assert tcpdump.returncode == 0, tcpdump.stderr.read().decode()
    return path


@pytest.fixture(scope="module")
def loopback_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return capture_datagrams(tmp_path_factory.mktemp("lo") / "lo.pcap", "lo")


@pytest.fixture(scope="module")
def cooked_v2_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return capture_datagrams(tmp_path_factory.mktemp("any") / "sll2.pcap", "any", "-y", "LINUX_SLL2")


def assert_carries_marker(frames: list[Frame]) -> None:
    versions = set()
    for frame in frames:
        packet = ip_packet(frame)
        assert packet is not None, frame
        assert bytes(packet).endswith(MARKER)
        versions.add(packet[0] >> 4)
    assert versions == {4, 6}


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def read_until_error(path: Path) -> tuple[list[Frame], str]:
    frames: list[Frame] = []
    with pytest.raises(CaptureFileError) as error:
        for frame in read_frames(path):
            frames.append(frame)
    return frames, str(error.value)


# --- files written by real tools ------------------------------------------------------------


@needs_tools
@needs_capture
def test_tcpdump_loopback_capture_matches_tshark(loopback_capture: Path) -> None:
    assert loopback_capture.read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"
    frames = assert_matches_tshark(loopback_capture)
    assert len(frames) == DATAGRAMS
    assert [frame.number for frame in frames] == list(range(1, DATAGRAMS + 1))
    assert {frame.linktype for frame in frames} == {1}
    assert all(frame.original_length == len(frame.data) for frame in frames)
    assert_carries_marker(frames)


@needs_tools
@needs_capture
@pytest.mark.parametrize(
    ("file_type", "magic"),
    [("nsecpcap", b"\x4d\x3c\xb2\xa1"), ("pcapng", b"\x0a\x0d\x0d\x0a"), ("pcap", b"\xd4\xc3\xb2\xa1")],
)
def test_editcap_conversions_keep_frames(
    loopback_capture: Path, tmp_path: Path, file_type: str, magic: bytes
) -> None:
    converted = tmp_path / f"converted.{file_type}"
    run("editcap", "-F", file_type, str(loopback_capture), str(converted))
    assert converted.read_bytes()[:4] == magic
    frames = assert_matches_tshark(converted)
    original = list(read_frames(loopback_capture))
    assert [(f.number, f.data, f.linktype) for f in frames] == [
        (f.number, f.data, f.linktype) for f in original
    ]
    assert [f.timestamp for f in frames] == pytest.approx([f.timestamp for f in original], abs=1e-6)


@needs_tools
@needs_capture
def test_tcpdump_nanosecond_file(loopback_capture: Path, tmp_path: Path) -> None:
    nano = tmp_path / "nano.pcap"
    run("tcpdump", "-r", str(loopback_capture), "--time-stamp-precision=nano", "-w", str(nano))
    assert nano.read_bytes()[:4] == b"\x4d\x3c\xb2\xa1"
    frames = assert_matches_tshark(nano)
    assert_carries_marker(frames)


@needs_tools
@needs_capture
@pytest.mark.parametrize(("linktype_name", "linktype"), [("LINUX_SLL", 113), ("LINUX_SLL2", 276)])
def test_tcpdump_any_interface_cooked_captures(tmp_path: Path, linktype_name: str, linktype: int) -> None:
    path = capture_datagrams(tmp_path / "any.pcap", "any", "-y", linktype_name)
    frames = assert_matches_tshark(path)
    assert {frame.linktype for frame in frames} == {linktype}
    assert_carries_marker(frames)


@needs_tools
@needs_capture
@pytest.mark.parametrize(
    ("encapsulation", "linktype", "display_filter"),
    [("rawip", 101, ""), ("rawip4", 228, "ip"), ("rawip6", 229, "ipv6")],
)
def test_raw_ip_files_from_editcap(
    loopback_capture: Path, tmp_path: Path, encapsulation: str, linktype: int, display_filter: str
) -> None:
    source = loopback_capture
    if display_filter:
        source = tmp_path / "filtered.pcap"
        run("tshark", "-r", str(loopback_capture), "-Y", display_filter, "-F", "pcap", "-w", str(source))
    raw = tmp_path / "raw.pcap"
    run("editcap", "-C", "14", "-T", encapsulation, "-F", "pcap", str(source), str(raw))
    frames = assert_matches_tshark(raw)
    assert {frame.linktype for frame in frames} == {linktype}
    ethernet_packets = [bytes(ip_packet(frame) or b"") for frame in read_frames(source)]
    assert [bytes(ip_packet(frame) or b"") for frame in frames] == ethernet_packets
    assert all(packet.endswith(MARKER) for packet in ethernet_packets)


@needs_tools
@needs_capture
def test_mergecap_pcapng_with_two_linktypes(
    loopback_capture: Path, cooked_v2_capture: Path, tmp_path: Path
) -> None:
    merged = tmp_path / "merged.pcapng"
    run("mergecap", "-F", "pcapng", "-w", str(merged), str(loopback_capture), str(cooked_v2_capture))
    frames = assert_matches_tshark(merged)
    interface_ids = run("tshark", "-r", str(merged), "-T", "fields", "-e", "frame.interface_id").split()
    linktype_of_interface = {"0": 1, "1": 276}
    assert [frame.linktype for frame in frames] == [linktype_of_interface[i] for i in interface_ids]
    assert len(frames) == 2 * DATAGRAMS
    assert_carries_marker(frames)


@needs_tools
@pytest.mark.parametrize(
    ("linktype", "family_header", "packet"),
    [
        (0, struct.pack("<I", 2), IPV4_PACKET),
        (0, struct.pack(">I", 2), IPV4_PACKET),
        (0, struct.pack("<I", 24), IPV6_PACKET),
        (0, struct.pack("<I", 28), IPV6_PACKET),
        (0, struct.pack(">I", 30), IPV6_PACKET),
        (108, struct.pack(">I", 2), IPV4_PACKET),
        (108, struct.pack(">I", 24), IPV6_PACKET),
    ],
)
def test_bsd_loopback_files_from_text2pcap(
    tmp_path: Path, linktype: int, family_header: bytes, packet: bytes
) -> None:
    path = text2pcap(tmp_path, "loopback", [family_header + packet, struct.pack("<I", 7) + packet], linktype)
    frames = assert_matches_tshark(path)
    assert [frame.linktype for frame in frames] == [linktype, linktype]
    assert bytes(ip_packet(frames[0]) or b"") == packet
    assert ip_packet(frames[1]) is None  # AF 7 is not an IP family


@needs_tools
def test_vlan_frames_from_text2pcap(tmp_path: Path) -> None:
    frames_in = [
        ethernet(IPV4_PACKET),
        ethernet(IPV4_PACKET, tags=(0x8100,)),
        ethernet(IPV6_PACKET, 0x86DD, tags=(0x88A8, 0x8100)),
        ethernet(IPV4_PACKET, tags=(0x9100, 0x8100)),
        ethernet(IPV4_PACKET, tags=(0x88A8, 0x8100, 0x8100)),
        ethernet(bytes(28), 0x0806),  # ARP
    ]
    path = text2pcap(tmp_path, "vlan", frames_in, 1)
    frames = assert_matches_tshark(path)
    sources = run("tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=l",
                  "-e", "ip.src", "-e", "ipv6.src").splitlines()
    for frame, tshark_sources in zip(frames, sources):
        packet = ip_packet(frame)
        if packet is None:
            assert not tshark_sources.strip()
            continue
        family = socket.AF_INET if packet[0] >> 4 == 4 else socket.AF_INET6
        source = packet[12:16] if family == socket.AF_INET else packet[8:24]
        assert socket.inet_ntop(family, bytes(source)) in tshark_sources.split("\t")
    assert [ip_packet(frame) is not None for frame in frames] == [True] * 5 + [False]


@needs_tools
def test_truncated_file_yields_frames_before_the_cut_like_tshark(tmp_path: Path) -> None:
    whole = pcap_file([(1_700_000_000 + i, i, ethernet(IPV4_PACKET)) for i in range(3)])
    path = write(tmp_path / "cut.pcap", whole[:-10])
    frames, message = read_until_error(path)
    assert [frame.number for frame in frames] == [1, 2]
    assert "cut short in the middle of packet 3" in message
    result = subprocess.run(["tshark", "-r", str(path)], capture_output=True, text=True, timeout=60)
    assert len(result.stdout.splitlines()) == 2
    assert "cut short in the middle of a packet" in result.stderr


# --- hand-built files -----------------------------------------------------------------------


@needs_tools
@pytest.mark.parametrize("nanoseconds", [False, True])
@pytest.mark.parametrize("endian", ["<", ">"])
def test_classic_pcap_byte_orders_and_resolutions(tmp_path: Path, endian: str, nanoseconds: bool) -> None:
    fraction = 123_456_789 if nanoseconds else 123_456
    records = [(1_700_000_000, fraction, ethernet(IPV4_PACKET)), (1_700_000_001, 0, ethernet(IPV6_PACKET, 0x86DD))]
    path = write(tmp_path / "hand.pcap", pcap_file(records, endian=endian, nanoseconds=nanoseconds))
    frames = assert_matches_tshark(path)
    expected_first = 1_700_000_000 + fraction / (1e9 if nanoseconds else 1e6)
    assert frames[0] == Frame(1, expected_first, 1, ethernet(IPV4_PACKET), len(ethernet(IPV4_PACKET)))
    assert bytes(ip_packet(frames[1]) or b"") == IPV6_PACKET


def test_pcap_linktype_field_ignores_fcs_bits(tmp_path: Path) -> None:
    data = pcap_file([(1, 0, ethernet(IPV4_PACKET))], linktype=0x1000_0000 | 1)
    (frame,) = read_frames(write(tmp_path / "fcs.pcap", data))
    assert frame.linktype == 1


@needs_tools
def test_pcapng_sections_interfaces_and_block_kinds(tmp_path: Path) -> None:
    """Two sections of opposite byte order, per-interface link types, resolutions, skipped blocks."""
    name_resolution = block(4, struct.pack("<HH", 0, 0))
    interface_statistics = block(5, struct.pack("<III", 0, 0, 0))
    custom = block(0x00000BAD, struct.pack("<I", 32473) + b"private")
    first_section = (
        section_header("<")
        + interface(1, "<")
        + name_resolution
        + interface(101, "<", tsresol=9, tsoffset=100)
        + enhanced_packet(0, 1_700_000_000_250_000, ethernet(IPV4_PACKET))
        + custom
        + enhanced_packet(1, 1_600_000_000_123_456_789, IPV6_PACKET)
        + interface_statistics
    )
    second_section = (
        section_header(">")
        + interface(229, ">", tsresol=0x80 | 20)
        + obsolete_packet(0, 3 * 2**20 + 2**19, IPV6_PACKET, ">")
        + simple_packet(IPV6_PACKET, ">")
        + enhanced_packet(0, 2**20, IPV6_PACKET, ">")
    )
    path = write(tmp_path / "sections.pcapng", first_section + second_section)
    frames = assert_matches_tshark(path, records_without_packets=frozenset({2}))
    # Wireshark lists the custom block as frame 2; it is skipped but keeps its number.
    assert [(f.number, f.linktype) for f in frames] == [(1, 1), (3, 101), (4, 229), (5, 229), (6, 229)]
    assert [f.timestamp for f in frames] == pytest.approx(
        [1_700_000_000.25, 1_600_000_100.123456789, 3.5, 0.0, 1.0], abs=1e-6
    )
    assert [bytes(ip_packet(f) or b"") for f in frames] == [IPV4_PACKET] + [IPV6_PACKET] * 4


@needs_tools
def test_pcapng_non_packet_records_keep_wireshark_frame_numbers(tmp_path: Path) -> None:
    journal_entry = b"__CURSOR=s;i=1\n__REALTIME_TIMESTAMP=1700000000000000\nMESSAGE=hi\n\n"
    data = (
        section_header()
        + interface(101)
        + enhanced_packet(0, 1, IPV4_PACKET)
        + block(0x00000009, journal_entry)
        + enhanced_packet(0, 2, IPV4_PACKET)
        + block(0x40000BAD, struct.pack("<I", 32473) + b"opaque")
        + enhanced_packet(0, 3, IPV4_PACKET)
        + block(0x0000000A, struct.pack("<II", 0x544C534B, 4) + b"keys")  # decryption secrets
        + enhanced_packet(0, 4, IPV4_PACKET)
    )
    path = write(tmp_path / "records.pcapng", data)
    protocols = run("tshark", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "frame.protocols")
    packet_numbers = [int(line.split("\t")[0]) for line in protocols.splitlines() if "ip" in line.split("\t")[1]]
    assert [frame.number for frame in read_frames(path)] == packet_numbers == [1, 3, 5, 6]


def test_pcapng_simple_packet_is_cut_to_the_interface_snaplen(tmp_path: Path) -> None:
    idb = block(1, struct.pack("<HHI", 101, 0, 20))
    body = struct.pack("<I", 1500) + IPV4_PACKET  # original 1500 bytes, 20 kept
    path = write(tmp_path / "snap.pcapng", section_header() + idb + block(3, body))
    (frame,) = read_frames(path)
    assert frame.data == IPV4_PACKET[:20]
    assert frame.original_length == 1500


# --- damaged files --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureFileError, match="cannot open capture file"):
        list(read_frames(tmp_path / "absent.pcap"))


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureFileError, match="cannot open capture file"):
        list(read_frames(tmp_path))


def test_zero_length_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureFileError, match="empty, not a capture file"):
        list(read_frames(write(tmp_path / "empty.pcap", b"")))


@pytest.mark.parametrize(
    "content",
    [
        bytes(random.Random(7).randrange(256) for _ in range(4096)),
        b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n",
        b"\xd4\xc3",
        b"\x0a\x0d\x0d",
    ],
    ids=["random", "text", "half-magic", "three-bytes"],
)
def test_not_a_capture_file(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(CaptureFileError, match="not a capture file"):
        list(read_frames(write(tmp_path / "garbage", content)))


def test_random_garbage_never_escapes_as_another_error(tmp_path: Path) -> None:
    """Garbage behind a valid magic still ends in a CaptureFileError, never another exception."""
    rng = random.Random(11)
    for attempt in range(300):
        magic = rng.choice([b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"])
        tail = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        if magic == b"\x0a\x0d\x0d\x0a" and rng.random() < 0.5:
            tail = struct.pack("<I", rng.choice([28, 32, 36])) + b"\x4d\x3c\x2b\x1a" + tail
        path = write(tmp_path / f"garbage{attempt}", magic + tail)
        try:
            for frame in read_frames(path):
                ip_packet(frame)
        except CaptureFileError:
            pass


def test_pcap_header_cut_short(tmp_path: Path) -> None:
    path = write(tmp_path / "header.pcap", pcap_file([])[:15])
    with pytest.raises(CaptureFileError, match="bad pcap header: the file ends inside the file header"):
        list(read_frames(path))


def test_pcap_unsupported_version(tmp_path: Path) -> None:
    data = bytearray(pcap_file([]))
    data[4:6] = struct.pack("<H", 3)
    with pytest.raises(CaptureFileError, match="bad pcap header: unsupported version 3.4"):
        list(read_frames(write(tmp_path / "version.pcap", bytes(data))))


def test_pcap_header_only_has_no_frames(tmp_path: Path) -> None:
    assert list(read_frames(write(tmp_path / "none.pcap", pcap_file([])))) == []


@pytest.mark.parametrize("cut", [4, 16, 30], ids=["record-header", "record-data-start", "record-data"])
def test_pcap_cut_short_in_the_third_record(tmp_path: Path, cut: int) -> None:
    two = pcap_file([(1, 0, ethernet(IPV4_PACKET)), (2, 0, ethernet(IPV4_PACKET))])
    three = pcap_file([(1, 0, ethernet(IPV4_PACKET))] * 2 + [(3, 0, ethernet(IPV6_PACKET, 0x86DD))])
    path = write(tmp_path / "cut.pcap", three[: len(two) + cut])
    frames, message = read_until_error(path)
    assert [frame.number for frame in frames] == [1, 2]
    assert message == f"{path}: capture file is cut short in the middle of packet 3"


def test_pcap_record_with_impossible_length(tmp_path: Path) -> None:
    data = pcap_file([(1, 0, ethernet(IPV4_PACKET))]) + struct.pack("<IIII", 2, 0, 0xFFFFFFF0, 60)
    frames, message = read_until_error(write(tmp_path / "long.pcap", data + bytes(64)))
    assert len(frames) == 1
    assert "packet 2 has an inconsistent captured length" in message


def pcapng_with_packets(count: int) -> bytes:
    return section_header() + interface(1) + b"".join(
        enhanced_packet(0, i * 1_000_000, ethernet(IPV4_PACKET)) for i in range(count)
    )


def test_pcapng_cut_short_in_a_packet(tmp_path: Path) -> None:
    data = pcapng_with_packets(3)
    frames, message = read_until_error(write(tmp_path / "cut.pcapng", data[:-20]))
    assert [frame.number for frame in frames] == [1, 2]
    assert message.endswith("capture file is cut short in the middle of packet 3")


def test_pcapng_cut_short_in_a_block_header(tmp_path: Path) -> None:
    data = pcapng_with_packets(2) + enhanced_packet(0, 0, IPV4_PACKET)[:5]
    frames, message = read_until_error(write(tmp_path / "cut.pcapng", data))
    assert len(frames) == 2
    assert "cut short in a block header" in message


def test_pcapng_cut_short_in_an_interface_block(tmp_path: Path) -> None:
    data = section_header() + interface(1, tsresol=9)[:-6]
    frames, message = read_until_error(write(tmp_path / "cut.pcapng", data))
    assert frames == []
    assert "cut short in the middle of a block of type 0x00000001" in message


def test_pcapng_cut_short_in_the_section_header(tmp_path: Path) -> None:
    for cut in (6, 10, 20):
        path = write(tmp_path / f"shb{cut}.pcapng", section_header()[:cut])
        with pytest.raises(CaptureFileError, match="cut short|bad pcapng header"):
            list(read_frames(path))


def with_length(block_bytes: bytes, leading: int, trailing: int | None = None) -> bytes:
    return (
        block_bytes[:4]
        + struct.pack("<I", leading)
        + block_bytes[8:-4]
        + struct.pack("<I", leading if trailing is None else trailing)
    )


@pytest.mark.parametrize(
    ("bad_block", "message"),
    [
        (with_length(enhanced_packet(0, 0, IPV4_PACKET), 66), "inconsistent length of 66 bytes"),
        (with_length(enhanced_packet(0, 0, IPV4_PACKET), 8), "inconsistent length of 8 bytes"),
        (with_length(enhanced_packet(0, 0, IPV4_PACKET), 0x7FFFFFF0), "inconsistent length of 2147483632"),
        (with_length(enhanced_packet(0, 0, IPV4_PACKET), 60, 64), "starts with 60 and ends with 64"),
        (block(6, struct.pack("<IIIII", 0, 0, 0, 500, 500) + IPV4_PACKET), "claims 500 captured bytes"),
        (block(6, struct.pack("<III", 0, 0, 0)), "too short for its own fields"),
        (enhanced_packet(3, 0, IPV4_PACKET), "refers to interface 3, which its section does not describe"),
        (block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 40)), "option that runs past"),
    ],
    ids=["not-multiple-of-4", "below-minimum", "huge", "trailer-mismatch", "captured-beyond-block",
         "short-packet-body", "unknown-interface", "option-overrun"],
)
def test_pcapng_inconsistent_blocks(tmp_path: Path, bad_block: bytes, message: str) -> None:
    path = write(tmp_path / "bad.pcapng", pcapng_with_packets(1) + bad_block + pcapng_with_packets(1))
    frames, error = read_until_error(path)
    assert [frame.number for frame in frames] == [1]
    assert message in error


def test_pcapng_packet_before_any_interface(tmp_path: Path) -> None:
    path = write(tmp_path / "noidb.pcapng", section_header() + simple_packet(IPV4_PACKET))
    frames, message = read_until_error(path)
    assert frames == []
    assert "packet 1 refers to interface 0" in message


def test_pcapng_interfaces_do_not_outlive_their_section(tmp_path: Path) -> None:
    data = pcapng_with_packets(1) + section_header(">") + enhanced_packet(0, 0, IPV4_PACKET, ">")
    frames, message = read_until_error(write(tmp_path / "sections.pcapng", data))
    assert len(frames) == 1
    assert "packet 2 refers to interface 0" in message


def test_pcapng_bad_byte_order_magic(tmp_path: Path) -> None:
    data = bytearray(pcapng_with_packets(1))
    data[8:12] = b"\x11\x22\x33\x44"
    with pytest.raises(CaptureFileError, match="unknown byte-order magic 11223344"):
        list(read_frames(write(tmp_path / "bom.pcapng", bytes(data))))


def test_pcapng_unsupported_version(tmp_path: Path) -> None:
    data = section_header(version=(2, 0)) + interface(1)
    with pytest.raises(CaptureFileError, match="unsupported version 2.0"):
        list(read_frames(write(tmp_path / "version.pcapng", data)))


def test_pcapng_section_header_too_short(tmp_path: Path) -> None:
    data = block(0x0A0D0D0A, struct.pack("<I", 0x1A2B3C4D))
    with pytest.raises(CaptureFileError, match="inconsistent length of 16 bytes"):
        list(read_frames(write(tmp_path / "short.pcapng", data)))


# --- ip_packet ------------------------------------------------------------------------------


def frame(linktype: int, data: bytes) -> Frame:
    return Frame(1, 0.0, linktype, data, len(data))


def sll(protocol: int, payload: bytes) -> bytes:
    return struct.pack(">HHH8sH", 0, 772, 6, bytes(8), protocol) + payload


def sll2(protocol: int, payload: bytes) -> bytes:
    return struct.pack(">HHIHBB8s", protocol, 0, 1, 772, 0, 6, bytes(8)) + payload


IP_PACKET_CASES = [
    (1, ethernet(IPV4_PACKET), IPV4_PACKET),
    (1, ethernet(IPV6_PACKET, 0x86DD), IPV6_PACKET),
    (1, ethernet(IPV4_PACKET, tags=(0x8100,)), IPV4_PACKET),
    (1, ethernet(IPV6_PACKET, 0x86DD, tags=(0x88A8, 0x8100)), IPV6_PACKET),
    (1, ethernet(IPV4_PACKET, tags=(0x9100,) * MAX_VLAN_TAGS), IPV4_PACKET),
    (1, ethernet(IPV4_PACKET, tags=(0x8100,) * (MAX_VLAN_TAGS + 1)), None),
    (1, ethernet(IPV4_PACKET, tags=(0x8100,))[:16], None),
    (1, ethernet(IPV4_PACKET)[:13], None),
    (1, ethernet(b""), None),
    (1, ethernet(IPV6_PACKET), None),  # ethertype and IP version disagree
    (1, ethernet(IPV4_PACKET, 0x0806), None),
    (113, sll(0x0800, IPV4_PACKET), IPV4_PACKET),
    (113, sll(0x86DD, IPV6_PACKET), IPV6_PACKET),
    (113, sll(0x8100, struct.pack(">HH", 5, 0x0800) + IPV4_PACKET), IPV4_PACKET),
    (113, sll(0x0800, b"")[:15], None),
    (113, sll(0x0806, IPV4_PACKET), None),
    (276, sll2(0x0800, IPV4_PACKET), IPV4_PACKET),
    (276, sll2(0x86DD, IPV6_PACKET), IPV6_PACKET),
    (276, sll2(0x86DD, IPV6_PACKET)[:19], None),
    (101, IPV4_PACKET, IPV4_PACKET),
    (101, IPV6_PACKET, IPV6_PACKET),
    (101, b"\x50" + IPV4_PACKET[1:], None),
    (101, b"", None),
    (12, IPV4_PACKET, IPV4_PACKET),
    (14, IPV6_PACKET, IPV6_PACKET),
    (228, IPV4_PACKET, IPV4_PACKET),
    (228, IPV6_PACKET, None),
    (229, IPV6_PACKET, IPV6_PACKET),
    (229, IPV4_PACKET, None),
    (0, struct.pack("<I", 2) + IPV4_PACKET, IPV4_PACKET),
    (0, struct.pack(">I", 2) + IPV4_PACKET, IPV4_PACKET),
    (0, struct.pack("<I", 30) + IPV6_PACKET, IPV6_PACKET),
    (0, struct.pack("<I", 23) + IPV6_PACKET, IPV6_PACKET),
    (0, struct.pack("<I", 2)[:3], None),
    (0, struct.pack("<I", 17) + IPV4_PACKET, None),
    (108, struct.pack(">I", 28) + IPV6_PACKET, IPV6_PACKET),
    (108, struct.pack(">I", 2) + IPV4_PACKET, IPV4_PACKET),
    (105, IPV4_PACKET, None),  # 802.11: not handled
]


@pytest.mark.parametrize(("linktype", "data", "expected"), IP_PACKET_CASES)
def test_ip_packet(linktype: int, data: bytes, expected: bytes | None) -> None:
    packet = ip_packet(frame(linktype, data))
    if expected is None:
        assert packet is None
    else:
        assert isinstance(packet, memoryview)
        assert bytes(packet) == expected


def test_frames_are_immutable_values() -> None:
    first = frame(1, b"x")
    with pytest.raises(AttributeError):
        first.number = 2  # type: ignore[misc]
    assert first == frame(1, b"x")


def test_read_frames_is_lazy(tmp_path: Path) -> None:
    frames: Iterator[Frame] = read_frames(tmp_path / "created-later.pcap")
    write(tmp_path / "created-later.pcap", pcap_file([(5, 0, IPV4_PACKET)], linktype=101))
    assert [f.timestamp for f in frames] == [5.0]
