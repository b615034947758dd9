"""The oracle: the names Wireshark's tshark sees in a capture, in `edufilter inspect` terms.

tshark 4.0 reassembles TCP and QUIC CRYPTO streams and reports a reassembled ClientHello (or
DNS message, or HTTP request) on the frame that completes it, with `tcp.segment.count` there;
it decrypts QUIC v1 and v2 Initial packets itself. Names are normalised as edufilter writes
them: lowercase, no trailing dot, and invalid names dropped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edufilter.errors import EdufilterError

ECH_EXTENSION_TYPE = 0xFE0D
_VALID_NAME = re.compile(r"^[a-z0-9_.-]+$")
_FIELDS = (
    "frame.number",
    "frame.protocols",
    "frame.len",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "tcp.segment.count",
    "dns.flags.response",
    "dns.count.queries",
    "dns.qry.name",
    "tls.handshake.type",
    "tls.handshake.extensions_server_name",
    "tls.handshake.extension.type",
    "http.host",
)
# ICMP errors quote the packet they answer and tshark dissects the quote; it is not traffic.
_DISPLAY_FILTER = (
    "(dns.flags.response == 0 || tls.handshake.type == 1 || http.request)"
    " && !icmp && !icmpv6"
)


class TsharkError(EdufilterError):
    """tshark failed on a capture file."""


@dataclass(frozen=True)
class Observation:
    """One name tshark sees, in the shape of an `edufilter inspect --json` record."""

    frame: int
    kind: str  # "dns" | "sni" | "quic_sni" | "http_host"
    value: str
    src: str
    dst: str
    ech: bool = False  # the ClientHello offered encrypted_client_hello (0xfe0d)
    segments: int = 1  # TCP segments a reassembled message spanned
    frame_length: int = 0  # bytes on the wire of the (completing) frame; > MTU for GSO packets

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.frame, self.kind, self.value)


def normalize_name(raw: str) -> str | None:
    """The name as edufilter reports it, or None when edufilter drops it as invalid."""
    name = raw.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253 or not _VALID_NAME.fullmatch(name):
        return None
    if any(len(label) > 63 for label in name.split(".")):
        return None
    return name


def strip_port(host_header: str) -> str:
    """The host part of an HTTP Host header ("[v6]:port", "name:port" or "name")."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if ":" in host_header else host_header


def _endpoint(layers: dict[str, list[str]], direction: str) -> str:
    port = (layers.get(f"tcp.{direction}port") or layers.get(f"udp.{direction}port") or ["0"])[0]
    if f"ipv6.{direction}" in layers:
        return f"[{layers[f'ipv6.{direction}'][0]}]:{port}"
    return f"{layers.get(f'ip.{direction}', ['?'])[0]}:{port}"


def _dns_query_names(layers: dict[str, list[str]]) -> list[str]:
    # A TCP segment may carry several DNS messages; questions are listed message by message.
    names = layers.get("dns.qry.name", [])
    counts = [int(count) for count in layers.get("dns.count.queries", [])]
    flags = layers.get("dns.flags.response", [])
    queries, start = [], 0
    for response, count in zip(flags, counts):
        if response in ("0", "False"):
            queries += names[start : start + count]
        start += count
    return queries


def _observations_in(layers: dict[str, list[str]]) -> list[Observation]:
    frame = int(layers["frame.number"][0])
    protocols = layers["frame.protocols"][0].split(":")
    src, dst = _endpoint(layers, "src"), _endpoint(layers, "dst")
    segments = int(layers.get("tcp.segment.count", ["1"])[0])
    frame_length = int(layers["frame.len"][0])
    found: list[tuple[str, str, bool]] = []
    if "dns" in protocols:
        found += [("dns", name, False) for name in _dns_query_names(layers)]
    if "1" in layers.get("tls.handshake.type", []):
        kind = "quic_sni" if "quic" in protocols else "sni"
        ech = str(ECH_EXTENSION_TYPE) in layers.get("tls.handshake.extension.type", [])
        names = layers.get("tls.handshake.extensions_server_name", [])
        found += [(kind, name, ech) for name in names]
    found += [("http_host", strip_port(host), False) for host in layers.get("http.host", [])]
    observations = []
    for kind, raw, ech in found:
        name = normalize_name(raw)
        if name is not None:
            observations.append(
                Observation(frame, kind, name, src, dst, ech, segments, frame_length)
            )
    return observations


def decode_as_arguments(
    tls_ports: Iterable[int] = (), quic_ports: Iterable[int] = (), http_ports: Iterable[int] = ()
) -> list[str]:
    """tshark -d options so that non-standard ports are dissected as TLS, QUIC or HTTP."""
    arguments = []
    for ports, table, protocol in (
        (tls_ports, "tcp.port", "tls"),
        (quic_ports, "udp.port", "quic"),
        (http_ports, "tcp.port", "http"),
    ):
        for port in ports:
            arguments += ["-d", f"{table}=={port},{protocol}"]
    return arguments


def observe(
    capture: Path,
    tls_ports: Sequence[int] = (443, 8443),
    quic_ports: Sequence[int] = (443, 8443),
    http_ports: Sequence[int] = (80, 8080),
    timeout: float = 60.0,
) -> list[Observation]:
    """Every DNS query name, TLS/QUIC SNI and HTTP Host tshark finds in capture."""
    argv = ["tshark", "-n", "-r", str(capture), "-Y", _DISPLAY_FILTER, "-T", "json"]
    argv += ["-o", "tcp.desegment_tcp_streams:TRUE", "-o", "tls.desegment_ssl_records:TRUE"]
    argv += decode_as_arguments(tls_ports, quic_ports, http_ports)
    for field in _FIELDS:
        argv += ["-e", field]
    # An empty personal configuration keeps a user's Wireshark preferences out of the oracle.
    with tempfile.TemporaryDirectory(prefix="edufilter-tshark-") as config_dir:
        environment = dict(os.environ, WIRESHARK_CONFIG_DIR=config_dir)
        try:
            completed = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, env=environment
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise TsharkError(f"tshark on {capture}: {error}") from error
    if completed.returncode != 0:
        raise TsharkError(f"tshark on {capture}: {completed.stderr.strip()}")
    packets = json.loads(completed.stdout or "[]")
    observations: list[Observation] = []
    for packet in packets:
        observations += _observations_in(packet["_source"]["layers"])
    return observations


def name_set(observations: Iterable[Observation]) -> set[tuple[int, str, str]]:
    return {observation.key for observation in observations}


def ech_frames(observations: Iterable[Observation]) -> set[int]:
    return {observation.frame for observation in observations if observation.ech}
