"""bench/listsource.py: the policy benchmarks take their lists from `lists update` only when
asked, else the real lists beside the project, else the generator; the report says which."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import listgen  # noqa: E402  (bench/ is not a package)
import summary  # noqa: E402
from listsource import (  # noqa: E402
    GENERATED,
    GENERATED_SEED,
    LISTS_URL_VARIABLE,
    SHARED,
    UPDATE_TIMEOUT_SECONDS,
    UPDATED,
    choose_list_source,
    update_into,
)

SCALE = 0.0005


def upstream_folder(tmp_path: Path) -> Path:
    """A folder laid out as the UT1 download site: blacklists.tar.gz of a generated tree and its MD5."""
    tree = listgen.write_ut1_tree(tmp_path / "blacklists", seed=5, scale=SCALE)
    site = tmp_path / "site"
    site.mkdir()
    with tarfile.open(site / "blacklists.tar.gz", "w:gz") as archive:
        archive.add(tree.root, arcname="blacklists")
    digest = hashlib.md5((site / "blacklists.tar.gz").read_bytes(), usedforsecurity=False).hexdigest()
    (site / "MD5SUM.LST").write_text(f"{digest}  blacklists.tar.gz\n")
    return site


def run_lookup_benchmark(tmp_path: Path, lists_url: str) -> dict:
    """One policy benchmark on a tiny input in its own pytest, its cache under tmp_path; its JSON."""
    raw = tmp_path / "raw.json"
    environment = {**os.environ, "EDUFILTER_BENCH_TINY": "1", "EDUFILTER_BENCH_CACHE": str(tmp_path / "cache"),
                   LISTS_URL_VARIABLE: lists_url}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", str(BENCH / "test_classify_bench.py"), "-k", "count_listed and realistic",
         "-q", "-p", "no:cacheprovider", "--benchmark-only", f"--benchmark-json={raw}",
         f"--basetemp={tmp_path / 'bench'}"],
        env=environment, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    return json.loads(raw.read_text())


def closed_loopback_url() -> str:
    """An http URL on loopback where nothing listens: the connection is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_without_the_variable_or_shared_lists_the_generated_set_is_made_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    source = choose_list_source(cache, tmp_path / "no-shared", SCALE, environ={})
    assert source.kind == GENERATED and source.update_failure is None and source.state_dir is None
    assert f"seed {GENERATED_SEED}" in source.detail
    written = {folder.name: (folder / "domains").stat().st_mtime_ns for folder in source.ut1_tree.iterdir()}
    assert set(written) == set(listgen.CATEGORY_SIZES)
    again = choose_list_source(cache, tmp_path / "no-shared", SCALE, environ={LISTS_URL_VARIABLE: " "})
    assert again == source
    assert {folder.name: (folder / "domains").stat().st_mtime_ns for folder in again.ut1_tree.iterdir()} == written


def test_the_real_lists_beside_the_project_come_before_the_generator(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "blocklists"
    (shared / "ut1" / "gambling").mkdir(parents=True)
    source = choose_list_source(tmp_path / "cache", shared, SCALE, environ={})
    assert source.kind == SHARED and source.ut1_tree == shared / "ut1"
    assert not (tmp_path / "cache").exists()


def test_an_asked_for_update_fills_the_cache_state_like_a_school(tmp_path: Path) -> None:
    site = upstream_folder(tmp_path)
    source = choose_list_source(tmp_path / "cache", tmp_path / "no-shared", SCALE,
                                environ={LISTS_URL_VARIABLE: site.as_uri()})
    assert source.kind == UPDATED and source.detail == site.as_uri() and source.update_failure is None
    from edufilter.policy.liststore import ListStore

    stored = {category.name: category.counts.names
              for category in ListStore.in_state_dir(source.state_dir).categories()}
    assert stored == listgen.category_sizes(SCALE)


def test_an_unreachable_list_url_fails_fast_and_falls_back(tmp_path: Path) -> None:
    url = closed_loopback_url()
    started = time.monotonic()
    failure = update_into(tmp_path / "state", url)
    assert time.monotonic() - started < UPDATE_TIMEOUT_SECONDS
    assert failure is not None and url in failure and "cannot fetch" in failure
    source = choose_list_source(tmp_path / "cache", tmp_path / "no-shared", SCALE, environ={LISTS_URL_VARIABLE: url})
    assert source.kind == GENERATED
    assert source.update_failure is not None and url in source.update_failure


def test_the_results_and_the_gate_say_which_lists_were_used(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = choose_list_source(tmp_path / "cache", tmp_path / "no-shared", SCALE, environ={})
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({"machine_info": {"cpu": {"count": 2}}, "benchmarks": [],
                               "lists": {**source.as_report(), "synthetic_names": "bench/listgen.py"}}))
    built = summary.build([raw])
    assert built["lists"]["kind"] == GENERATED and built["lists"]["ut1_tree"] == str(source.ut1_tree)
    assert (f"lists: generated (bench/listgen.py, seed {GENERATED_SEED}, scale {SCALE:g} of UT1's sizes), "
            "synthetic names from bench/listgen.py") in summary.table(built)
    latest = tmp_path / "latest.json"
    latest.write_text(json.dumps(built))
    summary.main(["check", str(latest)])
    assert "lists: generated (" in capsys.readouterr().out
    without = tmp_path / "without.json"
    without.write_text(json.dumps({"machine_info": {}, "benchmarks": []}))
    assert "lists: none" in summary.table(summary.build([without]))


def test_the_policy_benchmarks_run_on_updated_lists_and_report_them(tmp_path: Path) -> None:
    site = upstream_folder(tmp_path)
    report = run_lookup_benchmark(tmp_path, site.as_uri())
    assert report["lists"]["kind"] == UPDATED and report["lists"]["detail"] == site.as_uri()
    figures = report["benchmarks"][0]["extra_info"]["figures"]
    assert figures["real_names"] >= sum(listgen.category_sizes(SCALE).values())  # with ../shared's others
    assert figures["table_names"] == figures["real_names"] + figures["synthetic_names"] > figures["real_names"]
