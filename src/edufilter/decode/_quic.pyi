from enum import IntEnum

class QuicStatus(IntEnum):
    QUIC_NAME = 0
    QUIC_PENDING = 1
    QUIC_NO_NAME = 2
    QUIC_UNREADABLE = 3

class QuicFlows:
    def __init__(self, max_flows: int = 4096, max_pending: int = 1024, timeout: float = 10.0) -> None: ...
    def read(self, packet: bytes, now: float) -> tuple[QuicStatus, str | None, bool]: ...
    def initial_keys(self, version: int, dcid: bytes) -> tuple[bytes, bytes, bytes]: ...
    @property
    def stats(self) -> dict[str, int]: ...
