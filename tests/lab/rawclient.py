"""A TCP client on raw sockets, as a circumvention tool sends: its own handshake, then the
stream in the pieces a plan gives (any offset, TTL, flags, urgent pointer), then what came
back. Run inside a pupil's namespace, plan on stdin, result on stdout (both JSON):

    plan:   {"src", "dst", "dport", "pieces": [{"offset", "data" (hex), "ttl"?, "flags"?,
             "urgent"?, "delay"?: seconds before it}], "wait": seconds to listen after the last}
    result: {"handshake": bool, "reset": bool, "answer": first bytes the server sent (hex)}

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


def drop_kernel_resets_script(table: str = "rawclient") -> str:
    """The nft script that keeps the namespace's kernel from resetting the raw client's flow."""
    return (f"table inet {table} {{\n\tchain out {{\n\t\ttype filter hook output priority 0; policy accept;\n"
            f"\t\tmeta mark != {CLIENT_MARK:#x} tcp flags & rst == rst drop\n\t}}\n}}\n")


class RawClient:
    def __init__(self, src: str, dst: str, dport: int) -> None:
        self.src, self.dst, self.dport = src, dst, dport
        self.sport = random.randint(20000, 60000)
        self.isn = random.getrandbits(32)
        self.server_isn = 0
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sender.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, CLIENT_MARK)
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)

    def send(self, flags: int, offset: int = 0, data: bytes = b"", ttl: int = 64, urgent: int = 0) -> None:
        """A segment at stream offset `offset` (the SYN at -1)."""
        segment = dpkt.tcp.TCP(sport=self.sport, dport=self.dport, seq=(self.isn + 1 + offset) & SEQUENCE_MASK,
                               ack=(self.server_isn + 1) & SEQUENCE_MASK if flags & dpkt.tcp.TH_ACK else 0,
                               flags=flags, win=65535, urp=urgent, data=data)
        packet = dpkt.ip.IP(src=socket.inet_aton(self.src), dst=socket.inet_aton(self.dst), p=6, ttl=ttl,
                            id=random.getrandbits(16), data=segment)
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

    def run(self, pieces: list[dict], wait: float) -> dict:
        self.send(dpkt.tcp.TH_SYN, -1)
        for segment in self.replies(time.monotonic() + SYN_TIMEOUT):
            if segment.flags & dpkt.tcp.TH_SYN and segment.flags & dpkt.tcp.TH_ACK:
                self.server_isn = segment.seq
                break
        else:
            return {"handshake": False, "reset": False, "answer": ""}
        self.send(dpkt.tcp.TH_ACK)
        for piece in pieces:
            time.sleep(piece.get("delay", 0))
            self.send(piece.get("flags", ACK_PSH), piece["offset"], bytes.fromhex(piece["data"]),
                      piece.get("ttl", 64), piece.get("urgent", 0))
        reset, answer = False, b""
        for segment in self.replies(time.monotonic() + wait):
            reset |= bool(segment.flags & dpkt.tcp.TH_RST)
            answer += segment.data
            if reset or len(answer) >= 16:
                break
        # Close the server's side, so a one-connection-at-a-time server (s_server) takes the next.
        stream_end = max((piece["offset"] + len(piece["data"]) // 2 for piece in pieces), default=0)
        self.send(dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK, stream_end)
        return {"handshake": True, "reset": reset, "answer": answer[:64].hex()}


if __name__ == "__main__":
    plan = json.load(sys.stdin)
    print(json.dumps(RawClient(plan["src"], plan["dst"], plan["dport"]).run(plan["pieces"], plan["wait"])))
