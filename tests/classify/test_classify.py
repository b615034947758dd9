"""The compiled domain table against a Python set of suffixes, and damaged sections."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edufilter.classify._classify import DomainTable, DomainTableBuilder, TableFormatError

LABELS = ["a", "b", "www", "cdn", "xn--bcher-kva", "x" * 63, "1-2"]
TLDS = ["com", "org", "be", "nl"]

names = st.builds(lambda labels, tld: ".".join([*labels, tld]), st.lists(st.sampled_from(LABELS), max_size=4),
                  st.sampled_from(TLDS))


def section_of(listed: list[str], tlds: list[str] = TLDS, **options: object) -> bytes:
    builder = DomainTableBuilder(tlds=[t.encode() for t in tlds], **options)
    builder.add_source(3, False, lambda: ["\n".join(listed).encode() + b"\n"])
    section = bytearray(builder.prepare())
    builder.write(section)
    return bytes(section)


def build(listed: list[str], tlds: list[str] = TLDS, **options: object) -> DomainTable:
    return DomainTable(section_of(listed, tlds, **options))


def listed_suffix(name: str, listed: set[str]) -> bool:
    if len(name) > 253:  # not a host name: never listed (test_invalid_and_oversized_names_are_never_listed)
        return False
    labels = name.split(".")
    return any(".".join(labels[i:]) in listed for i in range(len(labels)))


@settings(max_examples=300, deadline=None)
@given(st.lists(names, max_size=40), st.lists(names, min_size=1, max_size=80), st.booleans(), st.integers(0, 3))
def test_batch_lookup_matches_a_set_of_suffixes(listed: list[str], asked: list[str], bare_tld: bool,
                                                seed: int) -> None:
    if bare_tld:
        listed = [*listed, "nl"]  # a listed TLD turns the zone filter off
    table = build(listed, seed=seed)
    expected = [listed_suffix(name, set(listed)) for name in asked]
    assert table.count_listed([name.encode() for name in asked]) == sum(expected)
    for name, hit in zip(asked, expected):
        assert table.count_listed([name.encode()]) == int(hit), name
        assert bool(table.matches(name.encode())) == hit
        assert (table.find(name.encode()) is not None) == (name in set(listed) and len(name) <= 253)


def test_large_table_batches_agree_with_single_lookups() -> None:
    rng = random.Random(5)
    listed = sorted({f"{rng.choice(LABELS[:5])}{i}.{rng.choice(TLDS)}" for i in range(20_000)})
    table = build(listed)
    asked = [rng.choice(["", "www.", "m.a."]) + rng.choice(listed) for _ in range(3000)]
    asked += [f"w{i}.nothing{i}.{rng.choice(TLDS)}" for i in range(3000)]
    rng.shuffle(asked)
    encoded = [name.encode() for name in asked]
    assert table.count_listed(encoded) == sum(table.count_listed([name]) for name in encoded) == 3000


def test_names_asked_again_are_answered_exactly_from_the_name_cache() -> None:
    """count_listed answers a name seen before in the same call from its name cache, whose
    entries are checked byte for byte: names of every length around the cached 48 bytes,
    each also asked with one character changed, never borrow another name's answer, in one
    call over all of them and in 300-odd small calls after it (the cache is kept between
    calls, its entries marked with their call; the marks run out and start again at 255)."""
    rng = random.Random(3)
    listed = []
    for length in range(1, 70):
        labels, left = [], length
        while left > 0:
            labels.append("".join(rng.choice("abcdef") for _ in range(min(left, 20))))
            left -= 21
        listed.append(".".join(labels) + ".nl")
    asked = list(listed)
    for name in listed:
        for position in range(0, len(name) - 3, 3):
            if name[position] != ".":
                changed = "f" if name[position] != "f" else "e"
                asked.append(name[:position] + changed + name[position + 1:])
    table = build(listed[::2])
    expected = {name: listed_suffix(name, set(listed[::2])) for name in asked}
    everything = asked * 3
    rng.shuffle(everything)
    assert table.count_listed([name.encode() for name in everything]) == sum(expected[name] for name in everything)
    calls = 0
    for start in range(0, len(asked), 3):
        small = asked[start:start + 3] * 4
        calls += 1
        assert table.count_listed([name.encode() for name in small]) == sum(expected[name] for name in small)
    assert calls > 255


def test_placing_names_a_hash_range_at_a_time_builds_the_same_section() -> None:
    rng = random.Random(8)
    listed = sorted({f"{rng.choice(LABELS[:5])}{i}.{rng.choice(TLDS)}" for i in range(5000)} | {"nl", "a.b"})
    checkpoints: list[int] = []
    builder = DomainTableBuilder(tlds=[t.encode() for t in TLDS], blob_bytes_per_pass=1000)
    builder.add_source(3, False, lambda: ["\n".join(listed[:2000]).encode() + b"\n", "\n".join(listed[2000:]).encode()])
    builder.add_source(4, True, lambda: ["\n".join(listed[::7]).encode()])
    section = bytearray(builder.prepare())
    builder.write(section, lambda: checkpoints.append(1))
    one_pass = DomainTableBuilder(tlds=[t.encode() for t in TLDS])
    one_pass.add_source(3, False, lambda: ["\n".join(listed).encode()])
    one_pass.add_source(4, True, lambda: ["\n".join(listed[::7]).encode()])
    whole = bytearray(one_pass.prepare())
    one_pass.write(whole)
    assert section == whole
    assert len(checkpoints) > 20  # one per range: the moments the written pages can be dropped
    assert DomainTable(bytes(section)).count_listed([f"www.{name}".encode() for name in listed]) == len(listed)


def test_a_list_that_changes_between_ranges_fails_the_compile() -> None:
    reads = []

    def chunks() -> list[bytes]:
        reads.append(1)
        return [b"a.example\nb.example\n" if len(reads) < 3 else b"a.example\n"]

    builder = DomainTableBuilder(blob_bytes_per_pass=1)
    builder.add_source(1, False, chunks)
    section = bytearray(builder.prepare())
    with pytest.raises(ValueError, match="changed while it was being compiled"):
        builder.write(section)


def test_invalid_and_oversized_names_are_never_listed() -> None:
    table = build(["example.org"])
    assert table.count_listed([b"", b"x" * 300, b"EXAMPLE.ORG", b"example.org."]) == 0
    with pytest.raises(TypeError):
        table.count_listed(["example.org"])


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_damaged_sections_are_refused_or_safe(data: st.DataObject) -> None:
    """Flipped, cut or zeroed bytes: a TableFormatError, or a table whose lookups stay in bounds."""
    section = bytearray(section_of(["a.example.org", "b.example.org", "www.x.be", "nl"]))
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(section) - 1))
        section[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.sampled_from([len(section), len(section) - 1, 200, 10]))
    try:
        table = DomainTable(bytes(section[:cut]))
    except TableFormatError:
        return
    table.count_listed([b"a.example.org", b"www.x.be", b"q.nl", b"zz.zz"])
