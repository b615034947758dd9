from enum import IntEnum

class FollowStatus(IntEnum):
    FOLLOW_END = 0
    FOLLOW_HEAD = 1
    FOLLOW_GAP = 2
    FOLLOW_UNREADABLE = 3
    FOLLOW_UNKNOWN = 4

class HttpFollower:
    def __init__(self, max_flows: int = 65536, flow_timeout: float = 900.0) -> None: ...
    @property
    def stats(self) -> dict[str, int]: ...
