"""Real clients across the lab: tshark sees the names each scenario sends, and so must edufilter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edufilter_lab.traffic import SCENARIOS, Recording
from edufilter_lab.tshark import Observation, ech_frames, name_set, observe

pytestmark = pytest.mark.lab

SCENARIO_NAMES = [scenario.name for scenario in SCENARIOS]
EDUFILTER_CLI = Path(sys.executable).parent / "edufilter"
SAMPLE = Path(__file__).resolve().parents[2] / "src" / "edufilter" / "data" / "sample-school.pcapng"
ETHERNET_MTU_FRAME = 1514


def recorded(recordings: dict[str, Recording], name: str) -> Recording:
    if name not in recordings:
        pytest.skip(f"scenario {name} not recorded: chromium is not installed")
    recording = recordings[name]
    if recording.error is not None:
        pytest.fail(f"scenario {name} failed while recording: {recording.error}")
    return recording


def client_hellos(observations: list[Observation]) -> list[Observation]:
    return [o for o in observations if o.kind in ("sni", "quic_sni")]


def inspect_records(capture: Path) -> list[dict[str, Any]]:
    if not EDUFILTER_CLI.exists():
        pytest.fail(f"{EDUFILTER_CLI} not found: install edufilter into this venv")
    completed = subprocess.run(
        [str(EDUFILTER_CLI), "inspect", "--json", str(capture)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_tshark_sees_the_expected_names(recordings: dict[str, Recording], name: str) -> None:
    recording = recorded(recordings, name)
    observations = observe(recording.capture)
    assert {(o.kind, o.value) for o in observations} == recording.scenario.expected


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_ech_appears_only_as_chromium_grease(recordings: dict[str, Recording], name: str) -> None:
    recording = recorded(recordings, name)
    hellos = client_hellos(observe(recording.capture))
    assert {o.ech for o in hellos} <= {recording.scenario.ech_grease}


def test_chromium_client_hello_crosses_as_one_gso_packet(
    recordings: dict[str, Recording],
) -> None:
    hellos = client_hellos(observe(recorded(recordings, "chromium-tls").capture))
    assert hellos
    for hello in hellos:
        assert hello.segments == 1
        assert hello.frame_length > ETHERNET_MTU_FRAME


def test_chromium_client_hello_with_tso_off_spans_two_segments(
    recordings: dict[str, Recording],
) -> None:
    hellos = client_hellos(observe(recorded(recordings, "chromium-tls-tso-off").capture))
    assert hellos
    for hello in hellos:
        assert hello.segments >= 2
        assert hello.frame_length <= ETHERNET_MTU_FRAME


def test_small_mtu_client_hello_spans_several_segments(
    recordings: dict[str, Recording],
) -> None:
    hellos = client_hellos(observe(recorded(recordings, "tls-small-mtu").capture))
    assert [hello.segments >= 2 for hello in hellos] == [True]


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_inspect_matches_tshark(recordings: dict[str, Recording], name: str) -> None:
    capture = recorded(recordings, name).capture
    records = inspect_records(capture)
    seen = {(int(r["frame"]), str(r["kind"]), str(r["value"])) for r in records}
    assert seen == name_set(observe(capture))


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_inspect_endpoints_and_ech_match_tshark(
    recordings: dict[str, Recording], name: str
) -> None:
    capture = recorded(recordings, name).capture
    records = inspect_records(capture)
    observations = observe(capture)
    assert {(r["frame"], r["kind"], r["src"], r["dst"]) for r in records} == {
        (o.frame, o.kind, o.src, o.dst) for o in observations
    }
    assert {int(r["frame"]) for r in records if r.get("ech")} == ech_frames(observations)


def test_sample_capture_has_every_kind() -> None:
    observations = observe(SAMPLE)
    assert {o.kind for o in observations} == {"dns", "sni", "quic_sni", "http_host"}
    assert any(o.segments >= 2 for o in client_hellos(observations))
    assert any(o.src.startswith("[") for o in observations)


def test_inspect_matches_tshark_on_the_sample() -> None:
    assert {
        (int(r["frame"]), str(r["kind"]), str(r["value"])) for r in inspect_records(SAMPLE)
    } == name_set(observe(SAMPLE))
