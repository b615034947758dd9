"""A TCP client on raw sockets, as a circumvention tool sends: its own handshake, then the
stream in the pieces a plan gives (any offset, TTL, flags, urgent pointer), then what came
back. Run inside a pupil's namespace, plan on stdin, result on stdout (both JSON):

    plan:   {"src", "dst", "dport", "pieces": [{"offset", "data" (hex), "ttl"?, "flags"?,
             "urgent"?, "options"? (hex TCP options), "bad_checksum"?, "delay"?: seconds before
             it, listening}], "wait": seconds to listen after the last, "answer_bytes"?: stop
             listening once that many came (16)}
    result: {"handshake": bool, "reset": bool, "answer": the server's bytes in order (hex)}

The namespace's own kernel would answer the server's SYN-ACK with a reset (no socket of its
own holds the port): the caller drops outgoing resets in that namespace
(drop_kernel_resets_script).
"""

from __future__ import annotations

import json
import random
import select
import socket
import sys
import time

import dpkt

SEQUENCE_MASK = 0xFFFFFFFF
CLIENT_MARK = 0x5261  # on the raw client's own packets, so the rule below lets its resets out
SYN_TIMEOUT = 3.0
ACK_PSH = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH
IP_HEADER, TCP_CHECKSUM = 20, 16  # where the checksum of the segments sent here lies


def drop_kernel_resets_script(table: str = "rawclient") -> str:
    """The nft script that keeps the namespace's kernel from resetting the raw client's flow."""
    return (f"table inet {table} {{\n\tchain out {{\n\t\ttype filter hook output priority 0; policy accept;\n"
            f"\t\tmeta mark != {CLIENT_MARK:#x} tcp flags & rst == rst drop\n\t}}\n}}\n")


class RawClient:
    def __init__(self, src: str, dst: str, dport: int) -> None:
        self.src, self.dst, self.dport = src, dst, dport
        self.sport = random.randint(20000, 60000)
        self.isn = random.getrandbits(32)
        self.server_isn = self.server_next = 0
        self.reset, self.closed, self.answer = False, False, b""
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sender.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, CLIENT_MARK)
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)

    def send(self, flags: int, offset: int = 0, data: bytes = b"", ttl: int = 64, urgent: int = 0,
             options: bytes = b"", bad_checksum: bool = False) -> None:
        """A segment at stream offset `offset` (the SYN at -1)."""
        segment = dpkt.tcp.TCP(sport=self.sport, dport=self.dport, seq=(self.isn + 1 + offset) & SEQUENCE_MASK,
                               ack=self.server_next if flags & dpkt.tcp.TH_ACK else 0,
                               flags=flags, win=65535, urp=urgent, opts=options, data=data)
        segment.off = (20 + len(options)) // 4
        packet = bytearray(bytes(dpkt.ip.IP(src=socket.inet_aton(self.src), dst=socket.inet_aton(self.dst), p=6,
                                            ttl=ttl, id=random.getrandbits(16), data=segment)))
        if bad_checksum:
            packet[IP_HEADER + TCP_CHECKSUM] ^= 0x5A
        self.sender.sendto(bytes(packet), (self.dst, 0))

    def replies(self, until: float):
        """The server's (or the gateway's, in its name) segments to this flow until `until`."""
        while (left := until - time.monotonic()) > 0:
            ready, _, _ = select.select([self.receiver], [], [], left)
            if not ready:
                return
            packet = dpkt.ip.IP(self.receiver.recv(65535))
            segment = packet.data
            if socket.inet_ntoa(packet.src) == self.dst and isinstance(segment, dpkt.tcp.TCP) \
                    and segment.sport == self.dport and segment.dport == self.sport:
                yield segment

    def run(self, pieces: list[dict], wait: float, answer_bytes: int = 16) -> dict:
        self.send(dpkt.tcp.TH_SYN, -1)
        for segment in self.replies(time.monotonic() + SYN_TIMEOUT):
            if segment.flags & dpkt.tcp.TH_SYN and segment.flags & dpkt.tcp.TH_ACK:
                self.server_isn = segment.seq
                break
        else:
            return {"handshake": False, "reset": False, "answer": ""}
        self.server_next = (self.server_isn + 1) & SEQUENCE_MASK
        self.send(dpkt.tcp.TH_ACK)
        for piece in pieces:
            self.listen(time.monotonic() + piece.get("delay", 0), answer_bytes)
            self.send(piece.get("flags", ACK_PSH), piece["offset"], bytes.fromhex(piece["data"]),
                      piece.get("ttl", 64), piece.get("urgent", 0), bytes.fromhex(piece.get("options", "")),
                      piece.get("bad_checksum", False))
        self.listen(time.monotonic() + wait, answer_bytes)
        # Close the server's side, so a one-connection-at-a-time server (s_server) takes the next.
        stream_end = max((piece["offset"] + len(piece["data"]) // 2 for piece in pieces), default=0)
        self.send(dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK, stream_end)
        return {"handshake": True, "reset": self.reset, "answer": self.answer[:max(64, answer_bytes)].hex()}

    def listen(self, until: float, answer_bytes: int) -> None:
        """Takes the server's bytes in order and acknowledges them, as a client's stack does
        (so an answer to a later request on the connection follows the earlier one), until
        `until`, a reset, the server's FIN, or answer_bytes in all."""
        if self.reset or self.closed or len(self.answer) >= answer_bytes:
            time.sleep(max(until - time.monotonic(), 0))
            return
        for segment in self.replies(until):
            self.reset |= bool(segment.flags & dpkt.tcp.TH_RST)
            if segment.seq == self.server_next and (segment.data or segment.flags & dpkt.tcp.TH_FIN):
                self.answer += segment.data
                self.closed = bool(segment.flags & dpkt.tcp.TH_FIN)
                self.server_next = (self.server_next + len(segment.data) + self.closed) & SEQUENCE_MASK
                self.send(dpkt.tcp.TH_ACK)
            if self.reset or self.closed or len(self.answer) >= answer_bytes:
                return


if __name__ == "__main__":
    plan = json.load(sys.stdin)
    print(json.dumps(RawClient(plan["src"], plan["dst"], plan["dport"]).run(plan["pieces"], plan["wait"],
                                                                              plan.get("answer_bytes", 16))))
