"""Session fixtures of the benchmarks: the policy at scale, built once, and the worker loop over
it; EDUFILTER_BENCH_TINY=1 shrinks every input (the test suite's smoke run). The JSON report
says where the category lists came from (bench/listsource.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edufilter.enforce._enforce import Enforcer
from edufilter._fastpath import FlowExtractor
from edufilter.daemon.worker import PolicyView
from edufilter.enforce.dns import special_names
from edufilter.rules.marks import MarkLayout
from listsource import ListSource
from policyscale import PolicyScale, build_policy_scale, list_source, synthetic_names_generator
from querymix import POPULAR, LookupMix, Rankings, lookup_mixes, realistic_rankings

BENCH = Path(__file__).resolve().parent
LOAD_AT_START = pytest.StashKey[tuple[float, float, float]]()
LISTS_USED = pytest.StashKey[ListSource]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[LOAD_AT_START] = os.getloadavg()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """The load average around the run: other work on the machine moves the figures."""
    machine_info["load_average_start"] = [round(load, 2) for load in config.stash.get(LOAD_AT_START, ())]
    machine_info["load_average_end"] = [round(load, 2) for load in os.getloadavg()]


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    if LISTS_USED in config.stash:
        output_json["lists"] = {**config.stash[LISTS_USED].as_report(), "synthetic_names": synthetic_names_generator()}


@pytest.fixture(scope="session")
def worker_loop(policy_scale: PolicyScale) -> Callable[[], Enforcer]:
    """Makes a fresh worker loop (empty flow table and decided flows) over the policy at scale,
    without a queue: Enforcer.classify_offline runs the worker's own classify pass."""
    view = PolicyView.load(policy_scale.state_dir)

    def make() -> Enforcer:
        loop = Enforcer(None, FlowExtractor(), None, MarkLayout().mask, 64)
        loop.set_policy(view.engine.classifier, view.groups, special_names(), view.url_hosts)
        return loop

    return make


@pytest.fixture(scope="session")
def policy_scale(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> PolicyScale:
    lists = list_source()
    request.config.stash[LISTS_USED] = lists
    return build_policy_scale(tmp_path_factory.mktemp("policy-scale") / "state", lists,
                              [name.encode() for name in POPULAR])


@pytest.fixture(scope="session")
def listed_set(policy_scale: PolicyScale) -> set[bytes]:
    return policy_scale.listed_set()


@pytest.fixture(scope="session")
def rankings(policy_scale: PolicyScale, listed_set: set[bytes]) -> Rankings:
    return realistic_rankings(policy_scale, listed_set)


@pytest.fixture(scope="session")
def mixes(rankings: Rankings, listed_set: set[bytes]) -> dict[str, LookupMix]:
    return lookup_mixes(rankings, listed_set)
