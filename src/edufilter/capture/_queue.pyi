from types import TracebackType
from typing import TypeAlias

# (packet_id, verdict[, mark[, replacement payload]])
VerdictTuple: TypeAlias = (
    tuple[int, int] | tuple[int, int, int | None] | tuple[int, int, int | None, bytes | None]
)

ACCEPT: int
DROP: int
REPEAT: int
PROC_QUEUES: str
PROC_NETLINK: str
QUEUE_FIELDS: tuple[str, ...]

class Packet:
    packet_id: int
    hook: int
    family: int
    hw_protocol: int
    mark: int
    indev: int
    outdev: int
    hwaddr: bytes
    skb_info: int
    payload: bytes
    cap_len: int
    @property
    def truncated(self) -> bool: ...
    @property
    def checksum_not_ready(self) -> bool: ...
    @property
    def gso(self) -> bool: ...

class PacketQueue:
    queue_num: int
    copy_range: int
    max_length: int
    fail_open: bool
    batch_verdicts: bool
    receive_buffer_bytes: int
    def __init__(
        self,
        queue_num: int,
        *,
        copy_range: int = 0xFFFF,
        max_length: int = 8192,
        fail_open: bool = False,
        conntrack: bool = False,
        receive_buffer: int | None = None,
        batch_size: int = 64,
        batch_verdicts: bool = True,
    ) -> None: ...
    def fileno(self) -> int: ...
    def receive_batch(self, max_packets: int = 64, timeout: float | None = 0.1) -> list[Packet]: ...
    def verdict(
        self, packet_id: int, verdict: int, mark: int | None = None, payload: bytes | None = None
    ) -> None: ...
    def verdict_batch(self, verdicts: list[VerdictTuple]) -> None: ...
    def serve(
        self, verdict: int = 1, mark: int | None = None, seconds: float | None = None
    ) -> int: ...
    @property
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> PacketQueue: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

def parse_queue_counters(text: str, queue_num: int) -> dict[str, int] | None: ...
def parse_netlink_sockets(text: str, protocol: int = 12) -> dict[int, dict[str, int]]: ...
def queue_counters(queue_num: int) -> dict[str, int]: ...
