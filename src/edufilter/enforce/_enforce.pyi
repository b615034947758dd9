from enum import IntEnum
from typing import Protocol

from edufilter.classify._classify import Classifier, DecisionTuple
from edufilter._fastpath import FlowExtractor
from edufilter.capture._queue import PacketQueue

class Code(IntEnum):
    CODE_UNDECIDED = 0
    CODE_ALLOW = 1
    CODE_REJECT = 2
    CODE_DROP = 3
    CODE_PASS = 4
    CODE_BOUND = 5
    CODE_SAFE_SEARCH = 6
    CODE_INJECTED = 7
    CODE_HTTP_FOLLOW = 8

class Slow(IntEnum):
    SLOW_NONE = 0
    SLOW_EVENT = 1
    SLOW_DNS_ANSWER = 2
    SLOW_DNS_SPECIAL = 3
    SLOW_DNS_REPLY = 4
    SLOW_HTTP_BLOCK = 6
    SLOW_HTTP_URL = 7
    SLOW_SAFE_SEARCH = 8

class Reason(IntEnum):
    REASON_RULE = 0
    REASON_BOUND = 1
    REASON_DOT = 3
    REASON_QUIC = 4
    REASON_DNS_TCP = 5
    REASON_EVASION = 6
    REASON_SAFE_SEARCH = 7

class Unnamed(IntEnum):
    UNNAMED_ALLOW = 0
    UNNAMED_BLOCK_WEB = 1
    UNNAMED_BLOCK_ALL = 2

class Handler(Protocol):
    def handle(self, enforcer: Enforcer, count: int) -> None: ...
    def after_verdicts(self) -> None: ...

class Enforcer:
    def __init__(
        self, queue: PacketQueue | None, extractor: FlowExtractor, handler: Handler | None, mark_mask: int,
        batch_size: int = 64, decided_flows: int = 65536, decided_lifetime: float = 86400.0,
    ) -> None: ...
    def set_policy(
        self, classifier: Classifier, groups: list[tuple[int, bool, bool, bool, int]], special_names: object,
        url_hosts: object,
    ) -> dict[tuple[int, int, int], int]: ...
    def serve(self, seconds: float, timeout_ms: int = 50) -> int: ...
    def slow_packets(self, count: int) -> list[tuple[int, int]]: ...
    def packet(self, i: int) -> dict[str, object]: ...
    def decide_packet(self, i: int, action: int, code: int, list_id: int = -1, tier: int = -1,
                      reason: int = 0) -> None: ...
    def set_name(self, i: int, name: str) -> None: ...
    def set_verdict(self, i: int, verdict: int, payload: bytes | None = None, code: int | None = None) -> None: ...
    def classify_name(self, group: int, name: str, address: bytes, now: float,
                      url_matches: list[tuple[int, int]] | tuple[()] = ()) -> DecisionTuple: ...
    def decided_flows(self) -> list[tuple[int, int, bytes, bytes, int, int, int, int, str | None]]: ...
    def update_decided(self, ip_version: int, protocol: int, src: bytes, dst: bytes, sport: int, dport: int,
                       code: int) -> None: ...
    def classify_offline(
        self, packets: list[bytes], now: float, mark: int = 0
    ) -> tuple[int, int, list[tuple[int, int, str | None]]]: ...
    def decision_counts(self) -> dict[tuple[int, int, int], int]: ...
    @property
    def stats(self) -> dict[str, int]: ...
    @property
    def quic_stats(self) -> dict[str, int]: ...
