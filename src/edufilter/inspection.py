"""Offline inspection: the names in a capture file, as the gateway would see them.

The pipeline is the data path's first half — capture (a pcap file) → decode (the fast
path, then QUIC Initials in Python) — with each name reported on the frame that completes it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edufilter._fastpath import FlowExtractor, parse_client_hello
from edufilter.capture.pcapfile import ip_packet, read_frames
from edufilter.decode.quic import QuicInitialCollector
from edufilter.classify.engine import Explanation


@dataclass(frozen=True, slots=True)
class NameRecord:
    """One extracted name and the flow it was seen in."""

    frame: int
    kind: str  # "dns" | "sni" | "http_host" | "quic_sni"
    value: str
    src: str  # "ip:port", IPv6 as "[ip]:port"
    dst: str
    ech: bool = False

    def to_json(self, verdict: Verdict | None = None) -> str:
        record: dict[str, object] = {
            "frame": self.frame,
            "kind": self.kind,
            "value": self.value,
            "src": self.src,
            "dst": self.dst,
        }
        if self.ech:
            record["ech"] = True
        if verdict is not None:
            record["verdict"] = verdict.to_dict()
        return json.dumps(record)

    def to_text(self, verdict: Verdict | None = None) -> str:
        ech = "  ech" if self.ech else ""
        decided = f"  {verdict.to_text()}" if verdict is not None else ""
        return f"{self.frame:>7}  {self.kind:<9}  {self.value}  {self.src} -> {self.dst}{ech}{decided}"

    @property
    def client(self) -> str:
        return self.src.rpartition(":")[0].strip("[]")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy does with a record's name for its client (edufilter inspect --policy)."""

    action: str
    group: str
    decided_by: str
    list: str | None

    @classmethod
    def of(cls, explanation: Explanation) -> Verdict:
        return cls(explanation.action, explanation.group, explanation.decided_by, explanation.list)

    def to_dict(self) -> dict[str, object]:
        return {"action": self.action, "group": self.group, "decided_by": self.decided_by, "list": self.list}

    def to_text(self) -> str:
        by = f"{self.decided_by} {self.list}" if self.list else self.decided_by
        return f"{self.action.upper()} ({self.group}, {by})"


@dataclass(slots=True)
class InspectionSummary:
    """What one inspection run read and skipped."""

    frames: int = 0
    non_ip_frames: int = 0
    names: dict[str, int] = field(default_factory=dict)
    decoder: dict[str, int] = field(default_factory=dict)
    quic: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_packets(self) -> int:
        """Packets counted as malformed or truncated by the decoders."""
        return (
            self.decoder.get("malformed", 0)
            + self.decoder.get("truncated", 0)
            + self.quic.get("malformed", 0)
            + self.quic.get("decrypt_failures", 0)
        )

    def to_text(self) -> str:
        names = ", ".join(f"{kind} {count}" for kind, count in sorted(self.names.items())) or "none"
        return (
            f"{self.frames} frames, {sum(self.names.values())} names ({names}); "
            f"skipped: {self.non_ip_frames} non-IP frames, "
            f"{self.decoder.get('malformed', 0)} malformed and "
            f"{self.decoder.get('truncated', 0)} truncated packets, "
            f"{self.quic.get('malformed', 0) + self.quic.get('decrypt_failures', 0)} QUIC Initials not decryptable with client keys (server replies or damage)"
        )


def endpoint(address: bytes, port: int) -> str:
    ip = ipaddress.ip_address(address)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def inspect_capture(path: str | Path, summary: InspectionSummary | None = None) -> Iterator[NameRecord]:
    """Yields the names found in a capture file; raises CaptureFileError for a bad file
    (after yielding what came before the damage)."""
    summary = summary if summary is not None else InspectionSummary()
    extractor = FlowExtractor()
    quic = QuicInitialCollector()
    try:
        for frame in read_frames(path):
            summary.frames += 1
            packet = ip_packet(frame)
            if packet is None:
                summary.non_ip_frames += 1
                continue
            found = extractor.extract(packet, frame.timestamp)
            if found is None:
                continue
            kind, value, ech = found.kind, found.value, found.ech
            if kind == "quic_initial":
                client_hello = quic.feed(found.payload, (found.src, found.sport), frame.timestamp)
                parsed = parse_client_hello(client_hello) if client_hello is not None else None
                if parsed is None or parsed[0] is None:
                    continue
                kind, (value, ech) = "quic_sni", parsed
            summary.names[kind] = summary.names.get(kind, 0) + 1
            yield NameRecord(
                frame=frame.number,
                kind=kind,
                value=value,
                src=endpoint(found.src, found.sport),
                dst=endpoint(found.dst, found.dport),
                ech=ech,
            )
    finally:
        summary.decoder = extractor.stats
        summary.quic = quic.stats
