"""What the rules need from nf_tables that the nft tool cannot give, or not cheaply: spoken
over nfnetlink directly.

- The queue rule of the xt backend. Kernels whose nf_tables lack the `queue` expression still
  queue through iptables' NFQUEUE target (xt_NFQUEUE), which nf_tables runs through its
  compatibility expression (nft_compat), as iptables-nft does; the nft tool cannot write that
  expression. add_xt_queue_rule() appends `counter` and the target (revision 3: queue range,
  bypass and fanout flags) to a chain, and in the same transaction wakes the table, which nft
  created dormant (hooks not registered): no packet meets the table before its queue rule.
- The counter of the queue rule, read by the supervisor every few seconds: a dump of one
  chain's rules on a socket, where `nft -j list chain` would fork and exec on the gateway's
  busy cores each time.

Both work in the caller's network namespace; install() and the lab tests reach another one
through the command line (`ip netns exec <ns> python -m edufilter.rules.nft_netlink ...`):

    add-xt-queue --table T --chain C --first N --count M [--bypass] [--fanout]
    queued --table T --chain C          prints the packets the chain's counters counted, or
                                        "absent" when there is no such chain
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import struct
import sys
from collections.abc import Iterator

from edufilter.errors import NetfilterError

NETLINK_NETFILTER = 12
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFT_MSG_NEWTABLE = 0
NFT_MSG_NEWRULE = 6
NFT_MSG_GETRULE = 7
NFPROTO_INET = 1
NFTA_TABLE_NAME = 1
NFTA_TABLE_FLAGS = 2
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME = 1
NFTA_EXPR_DATA = 2
NFTA_COUNTER_PACKETS = 2
NFTA_TARGET_NAME = 1
NFTA_TARGET_REV = 2
NFTA_TARGET_INFO = 3
NFQUEUE_REVISION = 3
NFQ_FLAG_BYPASS = 0x01
NFQ_FLAG_CPU_FANOUT = 0x02
HEADER = struct.Struct("=IHHII")  # nlmsghdr
GENERIC_HEADER_SIZE = 4  # nfgenmsg
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
    header = HEADER.pack(HEADER.size + GENERIC_HEADER_SIZE + len(body), kind, flags, seq, 0)
    return header + struct.pack("=BBH", family, 0, socket.htons(res_id)) + body


def _attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type without flags, payload) of each attribute; stops at a malformed one."""
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > len(data):
            return
        yield kind & NLA_TYPE_MASK, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def _messages(answer: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload after nlmsghdr) of each message in one datagram."""
    offset = 0
    while offset + HEADER.size <= len(answer):
        length, kind, _flags, seq, _pid = HEADER.unpack_from(answer, offset)
        if length < HEADER.size or offset + length > len(answer):
            return
        yield kind, seq, answer[offset + HEADER.size:offset + length]
        offset += (length + 3) & ~3


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.settimeout(ANSWER_TIMEOUT)
    return sock


def _failure(what: str, code: int) -> NetfilterError:
    hint = ""
    if code == errno.ENOENT:
        hint = " (is the table there, and are nft_compat and xt_NFQUEUE in the kernel?)"
    return NetfilterError(f"{what}: {os.strerror(code)}{hint}")


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


def add_xt_queue_rule(table: str, chain: str, first: int, count: int, bypass: bool, fanout: bool) -> None:
    """Append the queue rule to table's chain and wake the (dormant) table, in one nf_tables
    transaction: both or neither. NetfilterError with the kernel's reason."""
    wake = _attribute(NFTA_TABLE_NAME, _string(table)) + _attribute(NFTA_TABLE_FLAGS, struct.pack(">I", 0))
    changes = [
        (NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, queue_rule(table, chain, first, count, bypass, fanout)),
        (NFT_MSG_NEWTABLE, 0, wake),
    ]
    batch = [_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, 0, b"", NFNL_SUBSYS_NFTABLES)]
    for seq, (kind, flags, body) in enumerate(changes, start=2):
        batch.append(_message((NFNL_SUBSYS_NFTABLES << 8) | kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq,
                              NFPROTO_INET, body))
    batch.append(_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, len(changes) + 2, 0, b"", NFNL_SUBSYS_NFTABLES))
    try:
        with _socket() as sock:
            sock.sendto(b"".join(batch), (0, 0))
            acknowledged = 0
            while acknowledged < len(changes):
                for kind, seq, payload in _messages(sock.recv(65536)):
                    if kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", payload)
                        if code != 0:
                            raise _failure(f"xt NFQUEUE rule (message {seq})", -code)
                        acknowledged += 1
    except OSError as error:
        raise NetfilterError(f"xt NFQUEUE rule: {error}") from error


def _counted_packets(rule: bytes, table: str, chain: str) -> int | None:
    """Packets of the counter expressions in one NFT_MSG_NEWRULE payload (after nfgenmsg);
    None when the rule is not in table's chain (a kernel that ignores the dump's filter sends
    every rule)."""
    attributes = list(_attributes(rule))
    names = dict(attributes)
    if names.get(NFTA_RULE_TABLE) != _string(table) or names.get(NFTA_RULE_CHAIN) != _string(chain):
        return None
    total = 0
    for kind, expressions in attributes:
        if kind != NFTA_RULE_EXPRESSIONS:
            continue
        for _, element in _attributes(expressions):
            fields = dict(_attributes(element))
            if fields.get(NFTA_EXPR_NAME, b"").rstrip(b"\0") == b"counter":
                counter = dict(_attributes(fields.get(NFTA_EXPR_DATA, b"")))
                if len(counter.get(NFTA_COUNTER_PACKETS, b"")) == 8:
                    total += struct.unpack(">Q", counter[NFTA_COUNTER_PACKETS])[0]
    return total


def queued_packets(table: str, chain: str) -> int | None:
    """The packets the counters of an inet table's chain have counted (a dump of its rules);
    None when the chain has no rule, or there is no such table or chain: another tool flushed
    the ruleset (our queue chain always holds its rule)."""
    request = _message((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, 1,
                       NFPROTO_INET,
                       _attribute(NFTA_RULE_TABLE, _string(table)) + _attribute(NFTA_RULE_CHAIN, _string(chain)))
    total: int | None = None
    try:
        with _socket() as sock:
            sock.sendto(request, (0, 0))
            while True:
                for kind, _seq, payload in _messages(sock.recv(1 << 16)):
                    if kind == NLMSG_DONE:
                        return total
                    if kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", payload)
                        if -code == errno.ENOENT:
                            return None
                        raise _failure(f"reading the counters of {table} {chain}", -code)
                    if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE:
                        counted = _counted_packets(payload[GENERIC_HEADER_SIZE:], table, chain)
                        if counted is not None:
                            total = (total or 0) + counted
    except OSError as error:
        raise NetfilterError(f"reading the counters of {table} {chain}: {error}") from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edufilter-nft-netlink", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-xt-queue")
    queued = commands.add_parser("queued")
    for command in (add, queued):
        command.add_argument("--table", required=True)
        command.add_argument("--chain", required=True)
    add.add_argument("--first", type=int, required=True)
    add.add_argument("--count", type=int, required=True)
    add.add_argument("--bypass", action="store_true")
    add.add_argument("--fanout", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "add-xt-queue":
            add_xt_queue_rule(args.table, args.chain, args.first, args.count, args.bypass, args.fanout)
        else:
            queued = queued_packets(args.table, args.chain)
            print("absent" if queued is None else queued)
    except NetfilterError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
