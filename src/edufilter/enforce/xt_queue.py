"""The queue rule of the xt backend, for kernels whose nf_tables lack the `queue` expression.

Such kernels still queue through iptables' NFQUEUE target (xt_NFQUEUE), which nf_tables runs
through its compatibility expression (nft_compat), as iptables-nft does. The nft tool cannot
write that expression, so this module sends the one rule itself over nfnetlink: `counter`
then the NFQUEUE target (revision 3: queue range, bypass and fanout flags), appended to the
table's `to_queue` chain. The same transaction wakes the table, which nft created dormant
(hooks not registered): no packet meets the table before its queue rule is there.

    python -m edufilter.enforce.xt_queue --table edufilter --chain to_queue --first 0 --count 2 [--bypass] [--fanout]

(how install() runs it inside a network namespace).
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import struct
import sys

from edufilter.errors import NetfilterError

NETLINK_NETFILTER = 12
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFT_MSG_NEWTABLE = 0
NFT_MSG_NEWRULE = 6
NFPROTO_INET = 1
NFTA_TABLE_NAME = 1
NFTA_TABLE_FLAGS = 2
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME = 1
NFTA_EXPR_DATA = 2
NFTA_TARGET_NAME = 1
NFTA_TARGET_REV = 2
NFTA_TARGET_INFO = 3
NFQUEUE_REVISION = 3
NFQ_FLAG_BYPASS = 0x01
NFQ_FLAG_CPU_FANOUT = 0x02
ANSWER_TIMEOUT = 5.0


def _attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _nested(kind: int, *children: bytes) -> bytes:
    return _attribute(kind | NLA_F_NESTED, b"".join(children))


def _string(text: str) -> bytes:
    return text.encode("ascii") + b"\0"


def _message(kind: int, flags: int, seq: int, family: int, body: bytes, res_id: int = 0) -> bytes:
    """nlmsghdr + nfgenmsg (family, version 0, res_id big-endian) + attributes."""
    header = struct.pack("=IHHII", 16 + 4 + len(body), kind, flags, seq, 0)
    return header + struct.pack("=BBH", family, 0, socket.htons(res_id)) + body


def _expression(name: str, *data: bytes) -> bytes:
    return _nested(NFTA_LIST_ELEM, _attribute(NFTA_EXPR_NAME, _string(name)), _nested(NFTA_EXPR_DATA, *data))


def queue_rule(table: str, chain: str, first: int, count: int, bypass: bool, fanout: bool) -> bytes:
    """NFT_MSG_NEWRULE's attributes: `counter` then xt NFQUEUE v3 (struct xt_NFQ_info_v3,
    padded to 8 bytes as x_tables aligns target data)."""
    flags = (NFQ_FLAG_BYPASS if bypass else 0) | (NFQ_FLAG_CPU_FANOUT if fanout else 0)
    info = struct.pack("=HHHxx", first, count, flags)
    target = _expression(
        "target",
        _attribute(NFTA_TARGET_NAME, _string("NFQUEUE")),
        _attribute(NFTA_TARGET_REV, struct.pack(">I", NFQUEUE_REVISION)),
        _attribute(NFTA_TARGET_INFO, info),
    )
    return (_attribute(NFTA_RULE_TABLE, _string(table)) + _attribute(NFTA_RULE_CHAIN, _string(chain))
            + _nested(NFTA_RULE_EXPRESSIONS, _expression("counter"), target))


def _send_transaction(messages: list[tuple[int, int, bytes]]) -> None:
    """One nf_tables transaction (all or nothing); NetfilterError with the kernel's errno."""
    batch = [_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, 0, b"", NFNL_SUBSYS_NFTABLES)]
    for seq, (kind, flags, body) in enumerate(messages, start=2):
        batch.append(_message((NFNL_SUBSYS_NFTABLES << 8) | kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq,
                              NFPROTO_INET, body))
    batch.append(_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, len(messages) + 2, 0, b"", NFNL_SUBSYS_NFTABLES))
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        sock.settimeout(ANSWER_TIMEOUT)
        try:
            sock.sendto(b"".join(batch), (0, 0))
            acknowledged = 0
            while acknowledged < len(messages):
                answer = sock.recv(65536)
                offset = 0
                while offset + 20 <= len(answer):
                    length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", answer, offset)
                    if kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", answer, offset + 16)
                        if code != 0:
                            raise NetfilterError(f"xt NFQUEUE rule (message {seq}): {os.strerror(-code)}"
                                                 + _hint(-code))
                        acknowledged += 1
                    offset += max(16, (length + 3) & ~3)
        except OSError as error:
            raise NetfilterError(f"xt NFQUEUE rule: {error}") from error


def _hint(code: int) -> str:
    if code == errno.ENOENT:
        return " (is the table there, and are nft_compat and xt_NFQUEUE in the kernel?)"
    return ""


def add_queue_rule(table: str, chain: str, first: int, count: int, bypass: bool, fanout: bool) -> None:
    """Append the queue rule to table's chain and wake the (dormant) table, in one transaction."""
    wake = _attribute(NFTA_TABLE_NAME, _string(table)) + _attribute(NFTA_TABLE_FLAGS, struct.pack(">I", 0))
    _send_transaction([
        (NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, queue_rule(table, chain, first, count, bypass, fanout)),
        (NFT_MSG_NEWTABLE, 0, wake),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edufilter-xt-queue", description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--chain", required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--bypass", action="store_true")
    parser.add_argument("--fanout", action="store_true")
    args = parser.parse_args(argv)
    try:
        add_queue_rule(args.table, args.chain, args.first, args.count, args.bypass, args.fanout)
    except NetfilterError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
