"""`edufilter inspect --policy`: each name of a real capture with the verdict for its client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edufilter.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "edufilter" / "data" / "sample-school.pcapng"
POLICY = """
[settings]
default_group = "pupils"
[lists.blocked]
domain = ["wikipedia.org"]
[groups.pupils]
[[groups.pupils.rules]]
action = "block"
lists = ["blocked"]
"""


def test_inspect_with_policy_adds_verdicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "school.toml").write_text(POLICY)
    state = tmp_path / "state"
    assert main(["policy", "install-defaults", str(tmp_path / "policy"), "--state-dir", str(state)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(SAMPLE), "--json", "-q", "--policy", str(state)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    verdicts = {record["value"]: record["verdict"] for record in records}
    assert verdicts["www.wikipedia.org"] == {"action": "block", "group": "pupils", "decided_by": "admin list",
                                             "list": "blocked"}
    assert verdicts["www.school.test"]["action"] == "allow"
    assert all(set(record) >= {"frame", "kind", "value", "src", "dst"} for record in records)


def test_inspect_without_policy_keeps_the_exact_record_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(SAMPLE), "--json", "-q"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert set(first) == {"frame", "kind", "value", "src", "dst"}


def test_inspect_reads_quic_initials_as_the_gateway_does(capsys: pytest.CaptureFixture[str]) -> None:
    """The sample's two HTTP/3 connections (one with ECH), read by the worker's own QUIC reader."""
    assert main(["inspect", str(SAMPLE), "--json", "-q"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    quic = [(record["frame"], record["value"], record.get("ech", False)) for record in records
            if record["kind"] == "quic_sni"]
    assert quic == [(161, "video.school.test", True), (175, "video.school.test", False)]
