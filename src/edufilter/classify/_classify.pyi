from enum import IntEnum

from typing_extensions import Buffer

SECTION_MAGIC: int
ALWAYS_SCHEDULE: int
RULE_ENTRY_SIZE: int
NO_GROUP: int

class HashCollision(Exception): ...
class TableFormatError(ValueError): ...

class RuleAction(IntEnum):
    NO_RULE = 0
    ACTION_ALLOW = 1
    ACTION_BLOCK = 2
    ACTION_DROP = 3
    ACTION_SINKHOLE = 4
    ACTION_MONITOR = 5

class Tier(IntEnum):
    TIER_OVERRIDE = 0
    TIER_ADMIN = 1
    TIER_CATEGORY = 2
    TIER_DEFAULT = 3

class MatchKind(IntEnum):
    MATCH_URL = 0
    MATCH_NAME = 1
    MATCH_ADDRESS = 2
    MATCH_NONE = 3

class DomainTable:
    def __init__(self, section: Buffer) -> None: ...
    @property
    def entry_count(self) -> int: ...
    @property
    def bucket_count(self) -> int: ...
    @property
    def seed(self) -> int: ...
    def find(self, name: bytes) -> int | None: ...
    def matches(self, name: bytes) -> list[tuple[int, int]]: ...
    def set_members(self, set_id: int) -> list[tuple[int, bool]]: ...
    def count_listed(self, names: list[bytes]) -> int: ...

class DomainTableBuilder:
    invalid_names: int
    names_read: int
    def __init__(
        self,
        tlds: list[bytes] | tuple[bytes, ...] = (),
        seed: int = 0,
        entries_per_bucket: float = 8.0,
        fingerprint_mask: int = 0xFFFF,
        blob_bytes_per_pass: int = 16 << 20,
    ) -> None: ...
    def add_source(self, list_id: int, exact: bool, chunks: object) -> None: ...
    def prepare(self) -> int: ...
    def write(self, out: Buffer, checkpoint: object = None) -> None: ...

class AddressTable:
    def __init__(self, section: Buffer, width: int) -> None: ...
    def lookup(self, address: bytes) -> int | None: ...

# (action, tier, match_kind, list_id, matched, order, rule_entry)
DecisionTuple = tuple[int, int, int, int, int, int, int]

class Classifier:
    group_count: int
    list_count: int
    schedule_count: int
    default_group: int
    def __init__(
        self,
        categories: dict[str, Buffer],
        lists: dict[str, Buffer],
        policy: dict[str, Buffer],
        group_count: int,
        list_count: int,
        schedule_count: int,
        window_start_minute: int,
        window_minutes: int,
        default_group: int,
        list_base: int,
    ) -> None: ...
    def set_interface_groups(self, groups: dict[int, int]) -> None: ...
    def client_group(self, address: bytes, mac: bytes | None = None, ifindex: int = 0) -> tuple[int, str]: ...
    def decide(
        self, group: int, name: bytes | None, address: bytes | None, now: float,
        url_matches: list[tuple[int, int]] | tuple[()] = (),
    ) -> DecisionTuple: ...
