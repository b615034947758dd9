"""Classify (edufilter/classify/_classify.pyx) at 5 M names, each against its pure-Python baseline on
the same input in the same run:

- DomainTable.count_listed, the batch lookup, against a set of every listed name and the
  natural loop over a name's suffixes, on the lookup mixes of querymix.py;
- the worker's per-packet work without the queue — decode, extract, classify, decide, mark
  and remember: Enforcer.classify_offline, the worker's own classify pass — against a naive
  Python classifier: the dpkt reference extractor, then the same set of suffixes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edufilter.classify._classify import DomainTable
from edufilter.enforce._enforce import Slow
from edufilter.classify.engine import Engine
from edufilter.classify.image import Image
from mixes import FLOWS, MIX_DESCRIPTION, TINY, first_packets_mix
from policyscale import PolicyScale
from querymix import LookupMix, count_listed_python
from reference_extractor import ReferenceExtractor

MIXES = ("realistic", "uniform", "hits", "misses")
FAST_ROUNDS = 3 if TINY else 20
PYTHON_ROUNDS = 1 if TINY else 3
NOW = 1.0


@pytest.fixture(scope="module")
def table(policy_scale: PolicyScale) -> Iterator[DomainTable]:
    image = Image(policy_scale.categories_image)
    yield DomainTable(image.section("names"))


@pytest.fixture(scope="module")
def engine(policy_scale: PolicyScale) -> Engine:
    return policy_scale.engine()


@pytest.fixture(scope="module")
def named_packets(mixes: dict[str, LookupMix]) -> list[bytes]:
    """The first-packets mix, its flows asking for the realistic mix's names."""
    return first_packets_mix(FLOWS, names=[name.decode() for name in mixes["realistic"].names[:FLOWS]])


def fresh(names: list[bytes]) -> tuple[tuple[list[bytes]], dict]:
    """New bytes objects for every round, as names arriving in packets are: a reused object
    would hand Python's set its cached hash and spare the baseline the work real traffic costs."""
    return ([bytes(bytearray(name)) for name in names],), {}


def record(benchmark, figure: str, count: int, unit: str, description: str, **figures: float) -> None:
    benchmark.extra_info.update(rate_figure=figure, count=count, unit=unit, mix=description, figures=figures)


@pytest.mark.parametrize("mix", MIXES)
def test_count_listed(benchmark, table: DomainTable, mixes: dict[str, LookupMix], policy_scale: PolicyScale,
                      mix: str) -> None:
    names = mixes[mix].names
    benchmark.group = f"lookups at {table.entry_count:,} names, {mix} mix"
    hits = table.count_listed(names)
    record(benchmark, f"lookup_{mix}_per_s", len(names), "lookups/s", mixes[mix].description,
           **{f"lookup_{mix}_hit_rate": hits / len(names), "table_names": table.entry_count,
              "real_names": policy_scale.real_names, "synthetic_names": policy_scale.synthetic_names})
    assert benchmark.pedantic(table.count_listed, setup=lambda: fresh(names), rounds=FAST_ROUNDS) == hits


@pytest.mark.parametrize("mix", MIXES)
def test_count_listed_python(benchmark, table: DomainTable, mixes: dict[str, LookupMix], listed_set: set[bytes],
                             mix: str) -> None:
    names = mixes[mix].names
    benchmark.group = f"lookups at {table.entry_count:,} names, {mix} mix"
    record(benchmark, f"lookup_{mix}_python_per_s", len(names), "lookups/s", mixes[mix].description)
    found = benchmark.pedantic(lambda fresh_names: count_listed_python(fresh_names, listed_set),
                               setup=lambda: fresh(names), rounds=PYTHON_ROUNDS)
    assert found == table.count_listed(names), "the compiled table and the Python set disagree"


def test_classify_packets(benchmark, worker_loop, named_packets: list[bytes]) -> None:
    benchmark.group = "decode+extract+classify, first-packets mix"
    names, blocked, _slow = worker_loop().classify_offline(named_packets, NOW)
    record(benchmark, "classify_pps", len(named_packets), "packets/s",
           MIX_DESCRIPTION + "; names from the realistic lookup mix",
           classify_blocked_share=blocked / names)
    result = benchmark.pedantic(lambda loop: loop.classify_offline(named_packets, NOW),
                                setup=lambda: ((worker_loop(),), {}), rounds=FAST_ROUNDS)
    assert result[:2] == (names, blocked)


def test_classify_packets_naive(benchmark, named_packets: list[bytes], listed_set: set[bytes],
                                worker_loop) -> None:
    benchmark.group = "decode+extract+classify, first-packets mix"
    record(benchmark, "classify_naive_pps", len(named_packets), "packets/s",
           MIX_DESCRIPTION + "; names from the realistic lookup mix")

    def run(extractor: ReferenceExtractor) -> tuple[int, int]:
        names = blocked = 0
        for packet in named_packets:
            for found in extractor.extract(packet):
                names += 1
                blocked += count_listed_python([found["value"].encode()], listed_set)
        return names, blocked

    result = benchmark.pedantic(run, setup=lambda: ((ReferenceExtractor(),), {}), rounds=PYTHON_ROUNDS)
    names, blocked, slow = worker_loop().classify_offline(named_packets, NOW)
    # Hosts with URL-prefix rules are decided by the worker's slow path, from the request path.
    listed_by_path = count_listed_python([name.encode() for _, reason, name in slow if reason == Slow.SLOW_HTTP_URL],
                                         listed_set)
    assert result == (names, blocked + listed_by_path), "the worker's loop and the naive classifier disagree"
