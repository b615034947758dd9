"""A small worker on edufilter's PacketQueue, for lab tests and the queue benchmark.

    python -m edufilter_lab.queue_probe --queue N --mode MODE [--fail-open] [--max-length L]

Modes: accept, drop, mark:0xMARK (accept with that packet mark), repeat-mark:0xMARK (NF_REPEAT
with that mark, so a rule can save it to conntrack) run the nogil serve loop;
rewrite:OLD=NEW replaces the bytes OLD by NEW in UDP payloads (lengths and checksums made
whole again) through the Python surface. Prints "ready" once bound and a JSON line with the
socket's and the kernel's counters when it stops (SIGTERM, SIGINT or after --seconds).
Lab tool: run it inside a lab namespace.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType

import dpkt

from edufilter.capture._queue import ACCEPT, DROP, REPEAT, PacketQueue, queue_counters
from edufilter.errors import QueueError


@dataclass(frozen=True)
class Mode:
    verdict: int
    mark: int | None = None
    rewrite: tuple[bytes, bytes] | None = None


def parse_mode(text: str) -> Mode:
    """accept | drop | mark:0x.. | repeat-mark:0x.. | rewrite:OLD=NEW."""
    name, _, argument = text.partition(":")
    try:
        if name == "accept" and not argument:
            return Mode(ACCEPT)
        if name == "drop" and not argument:
            return Mode(DROP)
        if name == "mark":
            return Mode(ACCEPT, mark=int(argument, 0))
        if name == "repeat-mark":
            return Mode(REPEAT, mark=int(argument, 0))
        if name == "rewrite" and "=" in argument:
            old, new = argument.split("=", 1)
            if old:
                return Mode(ACCEPT, rewrite=(old.encode(), new.encode()))
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"unknown mode {text!r}")


def rewrite_udp(packet: bytes, old: bytes, new: bytes) -> bytes | None:
    """packet with old replaced by new in its UDP payload, lengths and checksums recomputed.

    The queue leaves checksum offload partial (SKB_CSUM_NOT_READY), and a replaced payload
    loses the offload, so both checksums are computed whole here.
    """
    ip: dpkt.ip.IP | dpkt.ip6.IP6 = (
        dpkt.ip.IP(packet) if packet[0] >> 4 == 4 else dpkt.ip6.IP6(packet)
    )
    datagram = ip.data
    if not isinstance(datagram, dpkt.udp.UDP) or old not in datagram.data:
        return None
    datagram.data = datagram.data.replace(old, new)
    datagram.ulen = len(datagram)
    datagram.sum = 0
    if isinstance(ip, dpkt.ip.IP):
        ip.len = len(ip)
        ip.sum = 0
    else:
        ip.plen = len(datagram)
    return bytes(ip)


def serve_rewrites(queue: PacketQueue, old: bytes, new: bytes, deadline: float | None) -> None:
    while deadline is None or time.monotonic() < deadline:
        verdicts = []
        for packet in queue.receive_batch(64, timeout=0.1):
            try:
                replaced = rewrite_udp(packet.payload, old, new)
            except (dpkt.UnpackError, IndexError):
                replaced = None
            verdicts.append((packet.packet_id, ACCEPT, None, replaced))
        queue.verdict_batch(verdicts)


def _stop(signal_number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--mode", type=parse_mode, default=Mode(ACCEPT))
    parser.add_argument("--fail-open", action="store_true")
    parser.add_argument("--max-length", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=64, help="packets per receive")
    parser.add_argument("--no-batch-verdicts", action="store_true",
                        help="one NFQNL_MSG_VERDICT per packet, never a VERDICT_BATCH")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    try:
        queue = PacketQueue(
            args.queue,
            max_length=args.max_length,
            fail_open=args.fail_open,
            batch_size=args.batch,
            batch_verdicts=not args.no_batch_verdicts,
        )
    except QueueError as error:
        print(f"queue_probe: {error}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    with queue:
        try:
            if args.mode.rewrite is not None:
                deadline = None if args.seconds is None else time.monotonic() + args.seconds
                serve_rewrites(queue, *args.mode.rewrite, deadline)
            else:
                queue.serve(args.mode.verdict, args.mode.mark, args.seconds)
        except KeyboardInterrupt:
            pass
        report = {"socket": queue.stats, "kernel": queue_counters(args.queue)}
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
