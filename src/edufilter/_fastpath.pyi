from enum import IntEnum

from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

class BodyFraming(IntEnum):
    BODY_NONE = 0
    BODY_LENGTH = 1
    BODY_CHUNKED = 2
    BODY_UNREADABLE = 3
    BODY_TUNNEL = 4

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
    ) -> None: ...
    def extract(self, packet: Buffer, now: float) -> Extraction | None: ...
    def extract_batch(self, packets: list[bytes], now: float) -> int: ...
    @property
    def stats(self) -> dict[str, int]: ...

def normalise_name(raw: Buffer) -> str | None: ...
def parse_client_hello(message: Buffer) -> tuple[str | None, bool] | None: ...
def parse_request_head(head: Buffer) -> dict[str, object]: ...
def parse_client_hello_names(message: Buffer) -> dict[str, object]: ...
