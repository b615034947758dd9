"""The layout's rules, checked on every import in src/edufilter (function-level ones included).

The data path's stages import only stages before them (capture → decode → classify →
enforce/rules → output); the control path (policy) imports the data path's image format and
name normaliser, never the service; the service (daemon, api, console, hub, cli) sits on top.
A worker loads only what maps and reads images: no SQLite, no list sources, no API.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE / "edufilter"

BASE = 0
SERVICE = 9
# A unit is a top-level module or package of edufilter, or one module of policy/.
RANKS = {
    "edufilter": BASE, "errors": BASE, "state": BASE, "progress": BASE,
    "capture": 1,
    "decode": 2,
    # the policy's vocabulary: value types the classifier explains decisions with
    "policy.model": 3, "policy.schedule": 3, "policy.suffixes": 3,
    "classify": 4,
    "enforce": 5, "rules": 5,
    "output": 6,
    # the control path
    "policy.store": 7, "policy.sources": 7, "policy.liststore": 7, "policy.update": 7,
    "policy.compile": 7, "policy.defaults": 7, "policy.check": 7, "policy.publish": 7,
    # the service
    "config": SERVICE, "daemon": SERVICE, "api": SERVICE, "console": SERVICE, "hub": SERVICE,
    "commands": SERVICE, "cli": SERVICE, "__main__": SERVICE, "inspection": SERVICE,
}
# Within the service, these would run back up: the daemon and the API are started by the
# command line, and the API does not reach into a running daemon.
FORBIDDEN_IN_SERVICE = {
    ("api", "daemon"), ("api", "commands"), ("console", "daemon"), ("console", "commands"),
    ("daemon", "commands"), ("hub", "commands"), ("hub", "daemon"), ("config", "commands"),
}
IMPORT = re.compile(r"^\s*(?:from\s+(edufilter(?:\.\w+)*)\s+c?import|c?import\s+(edufilter(?:\.\w+)*))", re.M)


def unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "edufilter"
    if parts[1] == "_fastpath":  # the decode stage's core, kept at the package's top by the project's definition
        return "decode"
    if parts[1] == "policy" and len(parts) > 2:
        return f"policy.{parts[2]}"
    return parts[1]


def imports() -> list[tuple[str, str, str]]:
    """(importing module, its unit, imported unit) for every edufilter import in the source."""
    found = []
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pxd") or "templates" in path.parts:
            continue
        module = ".".join(path.relative_to(SOURCE).with_suffix("").parts)
        for match in IMPORT.finditer(path.read_text()):
            imported = match.group(1) or match.group(2)
            found.append((module, unit(module), unit(imported)))
    return found


def test_every_unit_has_a_place_in_the_layers() -> None:
    units = {unit(module) for module, _, _ in imports()} | {imported for _, _, imported in imports()}
    assert units - RANKS.keys() == set(), "a new package or policy module: give it a rank in tests/test_layering.py"


def test_no_import_runs_back_up() -> None:
    wrong = []
    for module, importer, imported in imports():
        if importer == imported:
            continue
        rank, imported_rank = RANKS[importer], RANKS[imported]
        sibling_allowed = rank in (3, 7) or (rank == SERVICE and (importer, imported) not in FORBIDDEN_IN_SERVICE)
        same_path = rank == imported_rank and sibling_allowed
        if imported_rank > rank or (imported_rank == rank and not same_path):
            wrong.append(f"{module} ({importer}) imports {imported}")
    assert wrong == []


def test_the_rules_catch_an_import_that_runs_back_up() -> None:
    assert RANKS[unit("edufilter.classify.engine")] < RANKS[unit("edufilter.policy.compile")]
    assert ("api", "daemon") in FORBIDDEN_IN_SERVICE
    assert unit("edufilter.policy.store") == "policy.store" and unit("edufilter.capture._queue") == "capture"


@pytest.mark.parametrize("entry", ["edufilter.daemon.worker", "edufilter.enforce._enforce"])
def test_a_worker_loads_only_what_maps_and_reads_images(entry: str) -> None:
    heavy = ["sqlite3", "aiohttp", "jinja2", "nats", "edufilter.api", "edufilter.console", "edufilter.hub",
             "edufilter.policy.store", "edufilter.policy.compile", "edufilter.policy.sources",
             "edufilter.policy.liststore", "edufilter.policy.update", "edufilter.commands"]
    probe = f"import sys, {entry}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(SOURCE)}).stdout.strip()
    assert loaded == "[]"
