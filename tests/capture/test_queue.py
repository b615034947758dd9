"""The queue module's parts that need no root: /proc parsers, settings checks, and the pure
helpers of the lab workers (payload rewrite with checksums, the baseline's dpkt parse).
The queue itself is tested against the kernel in tests/lab/test_queue_kernel.py."""

from __future__ import annotations

import argparse
import struct

import dpkt
import pytest

from edufilter.capture._queue import (
    ACCEPT,
    DROP,
    REPEAT,
    PacketQueue,
    parse_netlink_sockets,
    parse_queue_counters,
)
from edufilter.errors import EdufilterError, QueueError
from edufilter_lab.baseline_worker import name_of
from edufilter_lab.queue_probe import Mode, parse_mode, rewrite_udp
from packets import dns_query, ipv4, ipv6, openssl_client_hello, tcp, udp

# /proc/net/netfilter/nfnetlink_queue: queue_num peer_portid queue_total copy_mode copy_range
# queue_dropped user_dropped id_sequence 1
PROC_QUEUES_SAMPLE = """\
    0  21840     0 2 65531     0     0   510579  1
    4  21901     3 2  1500    17     2       42  1
"""
PROC_NETLINK_SAMPLE = """\
sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode
0000000067079044 0   0          00000000 0        0        0     2        0        4
00000000a1b2c3d4 12  21840      00000000 2304     0        0     2        7        9911
00000000a1b2c3d5 12  0          00000000 0        0        0     2        0        9912
00000000a1b2c3d6 9   21840      00000000 0        0        0     2        0        9913
"""


def test_queue_counters_parse() -> None:
    assert parse_queue_counters(PROC_QUEUES_SAMPLE, 0) == {
        "queue_num": 0,
        "peer_portid": 21840,
        "queue_total": 0,
        "copy_mode": 2,
        "copy_range": 65531,
        "queue_dropped": 0,
        "user_dropped": 0,
        "id_sequence": 510579,
    }
    assert parse_queue_counters(PROC_QUEUES_SAMPLE, 1) is None
    assert parse_queue_counters("", 0) is None


def test_queue_counters_of_another_queue_and_unreadable_lines() -> None:
    assert parse_queue_counters(PROC_QUEUES_SAMPLE, 4)["queue_dropped"] == 17
    assert parse_queue_counters("garbage\n 7 1 2\n", 7) is None


def test_netlink_sockets_parse() -> None:
    assert parse_netlink_sockets(PROC_NETLINK_SAMPLE) == {
        21840: {"rmem": 2304, "drops": 7},
        0: {"rmem": 0, "drops": 0},
    }
    assert parse_netlink_sockets(PROC_NETLINK_SAMPLE, protocol=9) == {
        21840: {"rmem": 0, "drops": 0}
    }
    assert parse_netlink_sockets("") == {}


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((70000,), "queue number 70000"),
        ((-1,), "queue number -1"),
        ((1,), {"copy_range": 0}),
        ((1,), {"copy_range": 0x10000}),
        ((1,), {"max_length": 0}),
        ((1,), {"batch_size": 0}),
        ((1,), {"batch_size": 4096}),
        ((1,), {"receive_buffer": 100}),
    ],
)
def test_bad_settings_are_refused_before_binding(
    arguments: tuple[int], message: str | dict[str, int]
) -> None:
    options = message if isinstance(message, dict) else {}
    with pytest.raises(QueueError) as raised:
        PacketQueue(*arguments, **options)
    assert isinstance(raised.value, EdufilterError)
    if isinstance(message, str):
        assert message in str(raised.value)


def test_verdict_values() -> None:
    # linux/netfilter.h
    assert (DROP, ACCEPT, REPEAT) == (0, 1, 4)


# --- the probe's modes and payload rewrite --------------------------------------------------


def test_probe_modes() -> None:
    assert parse_mode("accept") == Mode(ACCEPT)
    assert parse_mode("drop") == Mode(DROP)
    assert parse_mode("mark:0x01000000") == Mode(ACCEPT, mark=0x01000000)
    assert parse_mode("repeat-mark:0x5") == Mode(REPEAT, mark=5)
    assert parse_mode("rewrite:a=bc") == Mode(ACCEPT, rewrite=(b"a", b"bc"))
    for bad in ("accept:1", "mark:x", "rewrite:=b", "nothing"):
        with pytest.raises(argparse.ArgumentTypeError, match="unknown mode"):
            parse_mode(bad)


def ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_rewrite_udp_ipv4_makes_lengths_and_checksums_whole() -> None:
    original = ipv4(udp(b"a question?", 9999), 17)
    rewritten = rewrite_udp(original, b"question", b"longer answer")
    assert rewritten is not None
    ip = dpkt.ip.IP(rewritten)
    assert ip.len == len(rewritten)
    assert ones_complement_sum(rewritten[:20]) == 0xFFFF
    segment = rewritten[20:]
    assert segment[8:] == b"a longer answer?"
    assert struct.unpack(">H", segment[4:6])[0] == len(segment)
    pseudo_header = ip.src + ip.dst + struct.pack(">BBH", 0, 17, len(segment))
    assert ones_complement_sum(pseudo_header + segment) == 0xFFFF


def test_rewrite_udp_ipv6_makes_lengths_and_checksums_whole() -> None:
    rewritten = rewrite_udp(ipv6(udp(b"a question?", 9999), 17), b"question", b"answer")
    assert rewritten is not None
    segment = rewritten[40:]
    assert segment[8:] == b"a answer?"
    assert struct.unpack(">H", rewritten[4:6])[0] == len(segment)
    pseudo_header = rewritten[8:40] + struct.pack(">IxxxB", len(segment), 17)
    assert ones_complement_sum(pseudo_header + segment) == 0xFFFF


def test_rewrite_udp_leaves_other_packets() -> None:
    assert rewrite_udp(ipv4(udp(b"nothing here", 9999), 17), b"question", b"x") is None
    assert rewrite_udp(ipv4(tcp(b"a question", 1), 6), b"question", b"x") is None


# --- the baseline's parse -------------------------------------------------------------------


def test_baseline_parses_what_a_policy_needs() -> None:
    assert name_of(ipv4(udp(dns_query("wikipedia.org"), 53), 17)) == ("dns", "wikipedia.org")
    assert name_of(ipv4(tcp(openssl_client_hello("school.test"), 1), 6)) == ("sni", "school.test")
    request = b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"
    assert name_of(ipv6(tcp(request, 1, dport=80), 6)) == ("http_host", "example.org")
    assert name_of(ipv4(tcp(b"", 1), 6)) == ("other", None)
