from enum import IntEnum

from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

class BodyFraming(IntEnum):
    BODY_NONE = 0
    BODY_LENGTH = 1
    BODY_CHUNKED = 2
    BODY_UNREADABLE = 3
    BODY_TUNNEL = 4

class Evasion(IntEnum):
    EVASION_NONE = 0
    EVASION_DECOY = 1
    EVASION_OVERLAP = 2
    EVASION_URGENT = 4
    EVASION_UNFINISHED = 8
    EVASION_HOLES = 16

class Handshake(IntEnum):
    HANDSHAKE_NONE = 0
    HANDSHAKE_PENDING = 1
    HANDSHAKE_UNFINISHED = 2

class Extraction:
    kind: str  # "dns" | "sni" | "http_host" | "quic_initial"
    value: str | None  # None for "quic_initial"
    ech: bool
    ip_version: int
    protocol: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    dns_qtype: int
    payload: bytes | None  # the UDP payload of a "quic_initial"

class FlowExtractor:
    def __init__(
        self,
        max_flows: int = 65536,
        max_streams: int = 1024,
        buffer_size: int = 16384,
        flow_timeout: float = 30.0,
        handshake_timeout: float = 10.0,
        max_handshake_packets: int = 65536,
        verify_checksums: bool = False,
    ) -> None: ...
    def extract(self, packet: Buffer, now: float) -> Extraction | None: ...
    def extract_batch(self, packets: list[bytes], now: float) -> int: ...
    @property
    def last_evasion(self) -> int: ...  # Evasion bits
    def handshake_after_bound(self, now: float) -> Handshake: ...
    @property
    def stats(self) -> dict[str, int]: ...

def normalise_name(raw: Buffer) -> str | None: ...
def parse_client_hello(message: Buffer) -> tuple[str | None, bool] | None: ...
def parse_request_head(head: Buffer) -> dict[str, object]: ...
def parse_client_hello_names(message: Buffer) -> dict[str, object]: ...
