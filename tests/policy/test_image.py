"""The image container: sections at any size and place, damage refused with a clear error."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest

from edufilter.errors import PolicyError
from edufilter.policy.image import ALIGNMENT, Image, SectionSpec, write_image


def test_sections_round_trip_including_empty_ones_at_a_page_edge(tmp_path: Path) -> None:
    # The first section ends exactly on a page boundary, so the empty one after it starts there.
    first = b"x" * (mmap.PAGESIZE - 2 * ALIGNMENT)
    path = write_image(tmp_path / "a.img", [SectionSpec.of_bytes("first", first), SectionSpec.of_bytes("empty", b"")],
                       {"kind": "test"})
    image = Image(path)
    assert bytes(image.section("first")) == first
    assert bytes(image.section("empty")) == b""
    assert image.meta == {"kind": "test"}
    with pytest.raises(PolicyError, match="no 'missing' section"):
        image.section("missing")


@pytest.mark.parametrize("cut", [0, 10, 100])
def test_truncated_images_are_refused(tmp_path: Path, cut: int) -> None:
    path = write_image(tmp_path / "a.img", [SectionSpec.of_bytes("data", b"y" * 5000)], {"kind": "test"})
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(PolicyError):
        Image(path)


def test_a_failed_write_leaves_the_old_image(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.img", [SectionSpec.of_bytes("data", b"old")], {"kind": "test"})

    def explode(view: memoryview, release: object) -> None:
        raise PolicyError("compile failed halfway")

    with pytest.raises(PolicyError, match="halfway"):
        write_image(path, [SectionSpec("data", 10, explode)], {"kind": "test"})
    assert bytes(Image(path).section("data")) == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.img"]
