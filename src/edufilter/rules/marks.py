"""The mark layout: which bits of the packet and conntrack marks carry edufilter's codes.

A code is a small number stored in a contiguous field of the 32-bit mark (`marks.mask`), so
edufilter shares the mark with the school's own routing or shaping marks.
"""

from __future__ import annotations

from dataclasses import dataclass

from edufilter._wire import Code
from edufilter.errors import NetfilterError

# The codes' values and meanings are defined once, in _wire.pxd (Code); the rules know them by these names.
# ALLOW, REJECT and DROP are also the packet mark of a client QUIC Initial on a decided UDP
# flow, which the rules queue with its flow's code: it may start a new connection.
UNDECIDED = Code.CODE_UNDECIDED
ALLOW = Code.CODE_ALLOW
REJECT = Code.CODE_REJECT
DROP = Code.CODE_DROP
PASS = Code.CODE_PASS
BOUND = Code.CODE_BOUND
SAFE_SEARCH = Code.CODE_SAFE_SEARCH
INJECTED = Code.CODE_INJECTED
HTTP_FOLLOW = Code.CODE_HTTP_FOLLOW
INVALID = Code.CODE_INVALID

# Codes a worker's NF_REPEAT verdict puts in the packet mark; the rules save them in conntrack.
VERDICT_CODES = (ALLOW, REJECT, DROP, SAFE_SEARCH, HTTP_FOLLOW)
# How a flow's decision code reads in counters and the status: a reject is a block.
VERDICT_NAMES = {ALLOW: "allow", REJECT: "block", DROP: "drop"}
DEFAULT_MASK = 0x0F000000
# Room for the largest code, INVALID = 9 (HTTP_FOLLOW = 8 took the fourth bit). It was 3 bits
# (codes 0-7) before HTTP_FOLLOW: a configured marks.mask of 3 bits is now refused at start,
# with this message; widen it by one bit.
MIN_FIELD_BITS = 4
MARK_BITS = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class MarkLayout:
    """Where the code lives in a mark: code = (mark & mask) >> shift."""

    mask: int = DEFAULT_MASK

    def __post_init__(self) -> None:
        if not 0 < self.mask <= MARK_BITS:
            raise NetfilterError(f"marks.mask {self.mask:#x}: must be a non-zero 32-bit mask")
        field = self.mask >> self.shift
        if field & (field + 1):
            raise NetfilterError(f"marks.mask {self.mask:#010x}: the bits must be contiguous")
        if field.bit_length() < MIN_FIELD_BITS:
            raise NetfilterError(
                f"marks.mask {self.mask:#010x}: needs at least {MIN_FIELD_BITS} bits for codes 0-{INVALID}"
            )

    @property
    def shift(self) -> int:
        """Position of the mask's lowest set bit."""
        return (self.mask & -self.mask).bit_length() - 1

    def value(self, code: int) -> int:
        """The mark bits that stand for code, within the mask."""
        if not 0 <= code <= self.mask >> self.shift:
            raise ValueError(f"code {code} does not fit mask {self.mask:#010x}")
        return code << self.shift

    def packet_mark(self, old_mark: int, code: int) -> int:
        """old_mark with its code field replaced by code; the other bits are kept."""
        return (old_mark & ~self.mask & MARK_BITS) | self.value(code)

    def code_of(self, mark: int) -> int:
        return (mark & self.mask) >> self.shift
