"""Session fixtures of the benchmarks: the policy at scale and the bench-only pipeline loop,
each built once; EDUFILTER_BENCH_TINY=1 shrinks every input (the test suite's smoke run)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import edufilter
from policyscale import PolicyScale, blocklists_missing, build_policy_scale
from querymix import POPULAR, LookupMix, Rankings, lookup_mixes, realistic_rankings

BENCH = Path(__file__).resolve().parent
SOURCE_ROOT = Path(edufilter.__file__).resolve().parent.parent
BUILD = BENCH / "results" / "raw" / "build"
PIPELINE_SOURCE = BENCH / "pipeline.pyx"
PIPELINE_INTERFACES = ("_fastpath.pxd", "_classify.pxd")
LOAD_AT_START = pytest.StashKey[tuple[float, float, float]]()
BUILD_SCRIPT = """
import sys
from Cython.Build import cythonize
from setuptools import Extension, setup
source, include, out = sys.argv[1:4]
sys.argv = [sys.argv[0], "build_ext", "--inplace", "--build-temp", out + "/temp", "-q"]
setup(script_args=sys.argv[1:], ext_modules=cythonize(
    [Extension("pipeline", [source], extra_compile_args=["-O3"])], include_path=[include], quiet=True,
    build_dir=out))
"""


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[LOAD_AT_START] = os.getloadavg()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """The load average around the run: other work on the machine moves the figures."""
    machine_info["load_average_start"] = [round(load, 2) for load in config.stash.get(LOAD_AT_START, ())]
    machine_info["load_average_end"] = [round(load, 2) for load in os.getloadavg()]


def build_pipeline() -> ModuleType:
    """bench/pipeline.pyx compiled against the installed fast path and classifier (cached by
    the hash of its source and of the .pxd files it cimports)."""
    digest = hashlib.sha256(PIPELINE_SOURCE.read_bytes())
    for name in PIPELINE_INTERFACES:
        digest.update((SOURCE_ROOT / "edufilter" / name).read_bytes())
    digest.update(sys.version.encode())
    out = BUILD / f"pipeline-{digest.hexdigest()[:16]}"
    built = sorted(out.glob("pipeline*.so"))
    if not built:
        out.mkdir(parents=True, exist_ok=True)
        source = out / "pipeline.pyx"
        source.write_bytes(PIPELINE_SOURCE.read_bytes())
        completed = subprocess.run([sys.executable, "-c", BUILD_SCRIPT, source.name, str(SOURCE_ROOT), str(out)],
                                   cwd=out, capture_output=True, text=True, timeout=600)
        if completed.returncode != 0:
            raise RuntimeError(f"building bench/pipeline.pyx failed:\n{completed.stderr[-3000:]}")
        built = sorted(out.glob("pipeline*.so"))
    spec = importlib.util.spec_from_file_location("pipeline", built[0])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pipeline() -> ModuleType:
    return build_pipeline()


@pytest.fixture(scope="session")
def policy_scale(tmp_path_factory: pytest.TempPathFactory) -> PolicyScale:
    reason = blocklists_missing()
    if reason is not None:
        pytest.skip(f"policy benchmarks skipped: {reason}")
    return build_policy_scale(tmp_path_factory.mktemp("policy-scale") / "state", [name.encode() for name in POPULAR])


@pytest.fixture(scope="session")
def listed_set(policy_scale: PolicyScale) -> set[bytes]:
    return policy_scale.listed_set()


@pytest.fixture(scope="session")
def rankings(policy_scale: PolicyScale, listed_set: set[bytes]) -> Rankings:
    return realistic_rankings(policy_scale, listed_set)


@pytest.fixture(scope="session")
def mixes(rankings: Rankings, listed_set: set[bytes]) -> dict[str, LookupMix]:
    return lookup_mixes(rankings, listed_set)
