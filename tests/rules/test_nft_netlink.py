"""The nfnetlink messages of rules/nft_netlink.py, built and read without a kernel (the lab
tests in tests/lab/test_netfilter.py send them to one)."""

from __future__ import annotations

import struct

import pytest

from edufilter.rules import nft_netlink
from edufilter.rules.nft_netlink import (
    NFTA_COUNTER_PACKETS,
    NFTA_EXPR_DATA,
    NFTA_EXPR_NAME,
    NFTA_LIST_ELEM,
    NFTA_RULE_CHAIN,
    NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_TABLE,
    NFTA_TARGET_INFO,
    NFTA_TARGET_NAME,
    NFTA_TARGET_REV,
)


def expressions(rule: bytes) -> list[tuple[str, dict[int, bytes]]]:
    found = []
    for kind, payload in nft_netlink._attributes(rule):
        if kind == NFTA_RULE_EXPRESSIONS:
            for element_kind, element in nft_netlink._attributes(payload):
                assert element_kind == NFTA_LIST_ELEM
                fields = dict(nft_netlink._attributes(element))
                found.append((fields[NFTA_EXPR_NAME].rstrip(b"\0").decode(),
                              dict(nft_netlink._attributes(fields[NFTA_EXPR_DATA]))))
    return found


@pytest.mark.parametrize(("bypass", "fanout", "flags"), [(False, False, 0), (True, False, 1), (True, True, 3)])
def test_the_queue_rule_is_a_counter_then_nfqueue_v3(bypass: bool, fanout: bool, flags: int) -> None:
    rule = nft_netlink.queue_rule("edufilter", "to_queue", 4, 2, bypass, fanout)
    names = dict(nft_netlink._attributes(rule))
    assert names[NFTA_RULE_TABLE] == b"edufilter\0" and names[NFTA_RULE_CHAIN] == b"to_queue\0"
    (counter_name, counter), (target_name, target) = expressions(rule)
    assert (counter_name, counter, target_name) == ("counter", {}, "target")
    assert target[NFTA_TARGET_NAME] == b"NFQUEUE\0"
    assert target[NFTA_TARGET_REV] == struct.pack(">I", 3)
    # struct xt_NFQ_info_v3 {u16 queuenum, queues_total, flags}, padded to 8 bytes
    assert target[NFTA_TARGET_INFO] == struct.pack("=HHHxx", 4, 2, flags)


def rule_with_counter(table: str, chain: str, packets: int) -> bytes:
    counter = nft_netlink._expression("counter", nft_netlink._attribute(NFTA_COUNTER_PACKETS,
                                                                        struct.pack(">Q", packets)))
    return (nft_netlink._attribute(NFTA_RULE_TABLE, nft_netlink._string(table))
            + nft_netlink._attribute(NFTA_RULE_CHAIN, nft_netlink._string(chain))
            + nft_netlink._nested(NFTA_RULE_EXPRESSIONS, counter))


def test_a_counted_rule_is_read_only_in_its_own_chain() -> None:
    rule = rule_with_counter("edufilter", "to_queue", 123_456_789_012)
    assert nft_netlink._counted_packets(rule, "edufilter", "to_queue") == 123_456_789_012
    assert nft_netlink._counted_packets(rule, "edufilter", "forward") is None
    assert nft_netlink._counted_packets(rule, "other", "to_queue") is None


def test_a_truncated_or_garbled_answer_never_raises() -> None:
    rule = rule_with_counter("edufilter", "to_queue", 7)
    for end in range(len(rule)):
        assert nft_netlink._counted_packets(rule[:end], "edufilter", "to_queue") in (None, 0)
    garbled = bytearray(rule)
    for index in range(0, len(garbled), 3):
        garbled[index] ^= 0xFF
        nft_netlink._counted_packets(bytes(garbled), "edufilter", "to_queue")
    message = nft_netlink._message(0x0A06, 0, 1, nft_netlink.NFPROTO_INET, rule)
    for end in range(len(message)):
        list(nft_netlink._messages(message[:end]))
