"""Fixtures for the network-namespace lab: root-only, and always torn down."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edufilter_lab.netns import Lab, cleanup_stale, namespaces_available
from edufilter_lab.traffic import (
    SCENARIOS,
    Recording,
    chromium_available,
    record_scenarios,
    start_school_network,
)

# Set to a directory to keep the captures of a run (e.g. lab-out/, which git ignores).
KEEP_CAPTURES_ENV = "EDUFILTER_LAB_OUT"


@pytest.fixture(scope="session")
def require_lab() -> None:
    """Skip unless this process can build namespaces; remove leftovers of crashed runs."""
    reason = namespaces_available()
    if reason is not None:
        pytest.skip(f"lab tests skipped: {reason}")
    cleanup_stale()


@pytest.fixture(scope="session")
def recordings(
    require_lab: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Recording]]:
    """Every capture scenario, recorded once per session across one school network."""
    kept = os.environ.get(KEEP_CAPTURES_ENV)
    directory = Path(kept) if kept else tmp_path_factory.mktemp("lab-captures")
    directory.mkdir(parents=True, exist_ok=True)
    scenarios = [s for s in SCENARIOS if chromium_available() or not s.needs_chromium]
    started = time.monotonic()
    with Lab() as lab:
        network = start_school_network(lab, tmp_path_factory.mktemp("lab-servers"))
        recorded = record_scenarios(network, directory, scenarios)
    print(f"\nlab: recorded {len(recorded)} scenarios in {time.monotonic() - started:.1f} s")
    yield recorded
