"""The baseline of the queue benchmarks: a plain python-netfilterqueue worker whose Python
callback parses every packet with dpkt (IP, TCP/UDP, then DNS query name, TLS SNI or HTTP
Host) and accepts it, one verdict per packet, as a first filter would be written.

    python -m edufilter_lab.baseline_worker --queue N [--max-length 8192] [--seconds S]

Prints "ready" once bound, and a JSON line of counters when it stops (SIGTERM, SIGINT or
after --seconds). Lab tool: run it inside a lab namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
from collections import Counter
from types import FrameType

import dpkt
from netfilterqueue import NetfilterQueue, Packet

DNS_PORT = 53
TLS_HANDSHAKE = 22
TLS_EXTENSION_SERVER_NAME = 0
HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"CONNECT ")


def server_name(extension_data: bytes) -> str | None:
    """The host name of a server_name extension (RFC 6066 3)."""
    if len(extension_data) < 5 or extension_data[2] != 0:
        return None
    (length,) = struct.unpack_from(">H", extension_data, 3)
    return extension_data[5 : 5 + length].decode("ascii", "replace")


def name_of(payload: bytes) -> tuple[str, str | None]:
    """What a policy would look at in one IP packet: (kind, name)."""
    ip: dpkt.Packet = dpkt.ip.IP(payload) if payload[0] >> 4 == 4 else dpkt.ip6.IP6(payload)
    transport = ip.data
    if isinstance(transport, dpkt.udp.UDP) and DNS_PORT in (transport.sport, transport.dport):
        questions = dpkt.dns.DNS(transport.data).qd
        return "dns", questions[0].name if questions else None
    if not isinstance(transport, dpkt.tcp.TCP) or not transport.data:
        return "other", None
    data = transport.data
    if data[0] == TLS_HANDSHAKE:
        handshake = dpkt.ssl.TLSHandshake(dpkt.ssl.TLSRecord(data).data)
        if isinstance(handshake.data, dpkt.ssl.TLSClientHello):
            for extension_type, extension_data in handshake.data.extensions:
                if extension_type == TLS_EXTENSION_SERVER_NAME:
                    return "sni", server_name(extension_data)
        return "tls", None
    if data.startswith(HTTP_METHODS):
        return "http_host", dpkt.http.Request(data).headers.get("host")
    return "other", None


class BaselineWorker:
    """Counts what the callback saw; every packet is accepted."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()

    def handle(self, packet: Packet) -> None:
        try:
            kind, _name = name_of(packet.get_payload())
        except (dpkt.UnpackError, IndexError, struct.error, UnicodeDecodeError):
            kind = "unparsed"
        self.kinds[kind] += 1
        packet.accept()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--max-length", type=int, default=8192)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args(argv)
    worker = BaselineWorker()
    queue = NetfilterQueue()
    queue.bind(args.queue, worker.handle, max_len=args.max_length)

    def report_and_exit(signal_number: int, frame: FrameType | None) -> None:
        # An exception raised here would be lost inside netfilterqueue's callback under
        # load, so the handler reports and leaves itself; the kernel drops what is queued.
        print(json.dumps({"packets": sum(worker.kinds.values()), **worker.kinds}), flush=True)
        os._exit(0)

    for stop_signal in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(stop_signal, report_and_exit)
    if args.seconds is not None:
        signal.setitimer(signal.ITIMER_REAL, args.seconds)
    print("ready", flush=True)
    queue.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
