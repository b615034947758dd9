"""The mark layout: which bits of the packet and conntrack marks carry edufilter's codes.

A code is a small number stored in a contiguous field of the 32-bit mark (`marks.mask`), so
edufilter shares the mark with the school's own routing or shaping marks.
"""

from __future__ import annotations

from dataclasses import dataclass

from edufilter.errors import NetfilterError

# Conntrack mark codes (a flow's decision) and packet mark codes (one packet's state).
UNDECIDED = 0
ALLOW = 1
REJECT = 2  # TCP reset, ICMP administratively prohibited otherwise
DROP = 3
# packet mark: let through once, the flow still undecided (a SYN, a DNS query, a fragment).
# Workers repeat such packets (NF_REPEAT) as they do decided ones, and the rules return at
# once; either way the school's own chains follow ours.
PASS = 4
BOUND = 5  # packet mark: an undecided flow past the inspection bound; the worker decides now
SAFE_SEARCH = 6  # conntrack mark: queue this DNS flow's answers so they can be rewritten
INJECTED = 7  # packet mark: sent by edufilter itself, never queued
# conntrack mark: an allowed plain-HTTP flow whose client data (packets carrying bytes) is still
# queued, so every request on the kept-alive connection is judged; the server's bytes never
# are. Packet mark: the rules queue such a packet with it, and a worker repeats it with it.
HTTP_FOLLOW = 8

# Codes a worker's NF_REPEAT verdict puts in the packet mark; the rules save them in conntrack.
VERDICT_CODES = (ALLOW, REJECT, DROP, SAFE_SEARCH, HTTP_FOLLOW)
DEFAULT_MASK = 0x0F000000
# Room for the largest code, HTTP_FOLLOW = 8. It was 3 bits (codes 0-7) before HTTP_FOLLOW: a
# configured marks.mask of 3 bits is now refused at start, with this message; widen it by one bit.
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
                f"marks.mask {self.mask:#010x}: needs at least {MIN_FIELD_BITS} bits for codes 0-{HTTP_FOLLOW}"
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
