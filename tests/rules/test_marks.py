"""The mark layout: codes in a configurable field of the 32-bit mark, other bits kept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edufilter.rules.marks import (
    DEFAULT_MASK,
    HTTP_FOLLOW,
    REJECT,
    SAFE_SEARCH,
    UNDECIDED,
    MarkLayout,
)
from edufilter.errors import NetfilterError

marks = st.integers(min_value=0, max_value=0xFFFFFFFF)
codes = st.integers(min_value=UNDECIDED, max_value=HTTP_FOLLOW)


def test_default_layout() -> None:
    layout = MarkLayout()
    assert layout.mask == DEFAULT_MASK == 0x0F000000
    assert layout.shift == 24
    assert layout.value(REJECT) == 0x02000000
    assert layout.packet_mark(0xF0FF00FF, SAFE_SEARCH) == 0xF6FF00FF
    assert layout.code_of(0x15ABCDEF) == 5


@pytest.mark.parametrize(
    ("mask", "shift"), [(0xF, 0), (0x78, 3), (0xF0000000, 28), (0xFFFFFFFF, 0), (0x00F00000, 20)]
)
def test_any_contiguous_mask_of_four_bits_or_more(mask: int, shift: int) -> None:
    layout = MarkLayout(mask)
    assert layout.shift == shift
    assert layout.code_of(layout.packet_mark(0, HTTP_FOLLOW)) == HTTP_FOLLOW


@pytest.mark.parametrize(
    ("mask", "reason"),
    [
        (0, "non-zero"),
        (-1, "non-zero"),
        (1 << 32, "32-bit"),
        (0x0F0F0000, "contiguous"),
        (0x05000000, "contiguous"),
        (0x03000000, "at least 4 bits"),
        (0x80000000, "at least 4 bits"),
        # three bits held codes 0-7; HTTP_FOLLOW (8) needs a fourth
        (0x07000000, "at least 4 bits for codes 0-8"),
    ],
)
def test_bad_masks_are_refused(mask: int, reason: str) -> None:
    with pytest.raises(NetfilterError, match=reason):
        MarkLayout(mask)


def test_a_code_must_fit_the_field() -> None:
    with pytest.raises(ValueError):
        MarkLayout(0xF).value(16)
    with pytest.raises(ValueError):
        MarkLayout().value(-1)
    assert MarkLayout().value(15) == DEFAULT_MASK  # a four-bit field has room for 8-15


@given(mark=marks, code=codes, mask=st.sampled_from([DEFAULT_MASK, 0xF, 0xF0000000, 0x3F00]))
def test_packet_mark_replaces_only_the_code(mark: int, code: int, mask: int) -> None:
    layout = MarkLayout(mask)
    new = layout.packet_mark(mark, code)
    assert layout.code_of(new) == code
    assert new & ~mask == mark & ~mask
    assert 0 <= new <= 0xFFFFFFFF
