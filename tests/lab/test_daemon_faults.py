"""`edufilter run` under faults, in the namespace lab: a rule chain flushed by another tool, a
worker stopped (SIGSTOP), a SIGHUP storm, a second daemon, the supervisor killed with -9 (and
started again, as systemd's Restart= does), a full state disk. The state folder is a small
tmpfs of its own, which the full-disk test fills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_daemon import CURL_RESET_EXITS, curl, write_policy

from edufilter_lab.netns import Lab
from edufilter_lab.school import EDUFILTER, UPSTREAM_V4, FilteredSchool, start_filtered_school
from edufilter_lab.traffic import script_environment

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("require_lab")]

STATE_DISK = "32m"
BLOCKED = ("https://blocked.test/", "blocked.test", str(UPSTREAM_V4))
ALLOWED = ("https://www.allowed.test/", "www.allowed.test", str(UPSTREAM_V4), "-o", "/dev/null", "-w", "%{http_code}")


@pytest.fixture(scope="module")
def school(require_lab: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilteredSchool]:
    workdir = tmp_path_factory.mktemp("daemon-faults")
    state = workdir / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STATE_DISK},mode=0755", "edufilter-lab-state", str(state)],
                   check=True)
    try:
        with Lab() as lab:
            school = start_filtered_school(lab, workdir)
            school.add_pupil("pupil", 16)
            school.start_daemon(write_policy(workdir / "policy", school), "[queue]\nworkers = 2\n", lists={})
            try:
                yield school
            finally:
                school.stop_daemon()
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def wait_until(condition: Callable[[], object], timeout: float, what: str, school: FilteredSchool) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}:\n{school.log()[-3000:]}"
        time.sleep(0.1)
    return time.monotonic() - started


def pupil_curl(school: FilteredSchool, *args: str) -> subprocess.CompletedProcess:
    return curl(school.pupils["pupil"].host, *args)


def restart_daemon(school: FilteredSchool) -> None:
    """`edufilter run` again on the same state folder, as systemd's Restart= does."""
    with open(school.log_path, "ab") as log:
        school.daemon = school.gateway.popen([*EDUFILTER, "run", "--config", str(school.config_path)],
                                             stdout=log, stderr=log, env=script_environment())
    school.wait_for_workers()


def edufilter_status(school: FilteredSchool, *extra: str) -> subprocess.CompletedProcess:
    return school.gateway.run([*EDUFILTER, "status", "--config", str(school.config_path), *extra], check=False)


def store_change(school: FilteredSchool, change: Callable) -> int:
    """Commit a change to the store without telling the daemon; the version stored."""
    from edufilter.policy.store import PolicyStore

    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        change(store)
    return school.stored_version()


def add_blocked(name: str) -> Callable:
    from edufilter.policy.model import EntryKind, ListEntry

    return lambda store: store.add_list_entry("blocked", ListEntry(EntryKind.DOMAIN, name))


# --- the rules --------------------------------------------------------------------------------


def test_a_flushed_chain_is_noticed_and_the_table_reinstalled(school: FilteredSchool) -> None:
    assert pupil_curl(school, *BLOCKED).returncode in CURL_RESET_EXITS
    reinstalled = school.status()["rules"]["reinstalled"]
    school.gateway.run(["nft", "flush", "chain", "inet", "edufilter", "forward"])
    assert "queue" not in school.gateway.run(["nft", "list", "chain", "inet", "edufilter", "forward"]).stdout
    wait_until(lambda: school.status()["rules"]["reinstalled"] == reinstalled + 1, 6,
               "a flushed chain is found within the check interval and the table put back", school)
    assert "changed by another tool" in school.status()["rules"]["last_reinstall"]
    assert "ct mark" in school.gateway.run(["nft", "list", "chain", "inet", "edufilter", "forward"]).stdout
    assert pupil_curl(school, *BLOCKED).returncode in CURL_RESET_EXITS
    assert pupil_curl(school, *ALLOWED).stdout == "200"
    assert "changed by another tool" in school.log()
    # an unchanged table is left alone
    time.sleep(3)
    assert school.status()["rules"]["reinstalled"] == reinstalled + 1


def test_a_second_daemon_is_refused_beside_a_live_one(school: FilteredSchool, tmp_path: Path) -> None:
    table = school.gateway.run(["nft", "-j", "list", "table", "inet", "edufilter"]).stdout
    same_folder = school.gateway.run([*EDUFILTER, "run", "--config", str(school.config_path)], check=False, timeout=30)
    assert same_folder.returncode != 0 and "uses the state folder" in same_folder.stderr, same_folder.stderr
    other = tmp_path / "other.toml"
    other.write_text(f'state_dir = "{tmp_path / "state"}"\n[queue]\nfail = "closed"\n')
    same_namespace = school.gateway.run([*EDUFILTER, "run", "--config", str(other)], check=False, timeout=30)
    assert same_namespace.returncode != 0, same_namespace.stderr
    assert "filters in this network namespace" in same_namespace.stderr
    assert school.gateway.run(["nft", "-j", "list", "table", "inet", "edufilter"]).stdout == table, \
        "the live daemon's table is untouched"
    assert school.daemon.poll() is None
    assert pupil_curl(school, *BLOCKED).returncode in CURL_RESET_EXITS


# --- workers, reloads ---------------------------------------------------------------------------


def test_a_stopped_worker_is_noticed_reported_and_replaced(school: FilteredSchool) -> None:
    queues = school.wait_for_workers()["queues"]
    stopped, other = queues[0]["pid"], queues[1]["pid"]
    os.kill(stopped, signal.SIGSTOP)
    taken = wait_until(lambda: (lambda queue: queue["hangs"] == 1 and queue["state"] == "running"
                                and queue["pid"] not in (None, stopped))(school.status()["queues"][0]),
                       10, "a worker stopped with SIGSTOP is replaced", school)
    assert taken < 8, "noticed before the 8 s the issue's worker stayed stopped"
    assert "has not answered" in school.log()
    assert school.status()["queues"][1]["pid"] == other
    assert pupil_curl(school, *ALLOWED).stdout == "200"
    assert pupil_curl(school, *BLOCKED).returncode in CURL_RESET_EXITS


def test_a_sighup_storm_is_coalesced(school: FilteredSchool) -> None:
    before = school.log().count("compiled and sent to the workers")
    version = store_change(school, add_blocked("storm.test"))
    for _ in range(100):
        school.daemon.send_signal(signal.SIGHUP)
    school.wait_for_version(version)
    time.sleep(2)  # any compile still queued would show by now
    compiles = school.log().count("compiled and sent to the workers") - before
    assert 1 <= compiles <= 3, f"100 SIGHUPs compiled {compiles} times"
    assert pupil_curl(school, "https://storm.test/", "storm.test", str(UPSTREAM_V4)).returncode in CURL_RESET_EXITS


# --- kill -9 of the supervisor, a change stored and not compiled ----------------------------------


def test_after_kill_9_status_tells_the_rules_stay_and_a_restart_catches_up(school: FilteredSchool) -> None:
    images = school.state_dir / "images"
    version = store_change(school, add_blocked("late.test"))  # committed; the compile never came
    os.kill(school.daemon.pid, signal.SIGKILL)
    school.daemon.wait()
    (images / ".policy.img.x7k2p9.tmp").write_bytes(b"\0" * 8192)  # as a compile killed mid-write leaves it
    workers = [queue["pid"] for queue in school.status()["queues"]]
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 5,
               "the workers leave with their supervisor", school)
    shown = edufilter_status(school)
    assert shown.returncode == 3
    assert "NOT running" in shown.stdout and "still installed" in shown.stdout, shown.stdout
    assert "UNFILTERED (fail-open)" in shown.stdout
    assert shown.stdout.count(" dead ") == 2, shown.stdout
    as_json = json.loads(edufilter_status(school, "--json").stdout)
    assert as_json["running"] is False and as_json["rules_installed"] is True
    assert [queue["state"] for queue in as_json["queues"]] == ["dead", "dead"]

    restart_daemon(school)
    school.wait_for_version(version)
    assert pupil_curl(school, "https://late.test/", "late.test", str(UPSTREAM_V4)).returncode in CURL_RESET_EXITS
    assert not list(images.glob(".*.tmp")), "the temporary image of the killed compile is removed"
    assert "left by a compile that did not finish" in school.log()
    assert "still installed" not in edufilter_status(school).stdout


# --- a full state disk --------------------------------------------------------------------------


def fill_state_disk(school: FilteredSchool) -> Path:
    filler = school.state_dir / "filler"
    with open(filler, "ab", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 65536)
        except OSError:
            pass
    with open(filler, "ab", buffering=0) as file:  # the last few blocks too
        try:
            while True:
                file.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_a_full_state_disk_keeps_filtering_with_the_last_good_images(school: FilteredSchool) -> None:
    live = school.status()["policy"]["version"]
    stored = store_change(school, add_blocked("full.test"))
    filler = fill_state_disk(school)
    try:
        school.daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: "disk is full" in school.log(), 10, "the failed compile is logged", school)
        time.sleep(1.5)
        assert school.daemon.poll() is None, "the supervisor survives the failed compile"
        status = school.status()
        assert "disk is full" in (status["policy"]["problem"] or ""), status["policy"]
        assert status["storage"]["full"] is True
        assert all(queue["policy_version"] == live for queue in status["queues"])
        assert pupil_curl(school, *BLOCKED).returncode in CURL_RESET_EXITS, "the old images filter"
        assert pupil_curl(school, "https://full.test/", "full.test", str(UPSTREAM_V4)).returncode == 0
        wait_until(lambda: school.status()["storage"]["lost_events"] > 0, 5,
                   "the block event that could not be stored is counted", school)
        assert "could not be used" not in school.log() and "cannot be logged" not in school.log()

        assert "policy NOT up to date" in edufilter_status(school).stdout

        # A restart on the full disk filters with the last good images.
        assert school.stop_daemon() == 0
        fill_state_disk(school)  # the blocks a clean stop gave back (the events' write-ahead log)
        restart_daemon(school)
        assert "disk is full" in school.log().rpartition("stopping")[2], "this start compiled nothing"
        school.wait_for_version(live)
        assert "table inet edufilter" in school.ruleset()
        assert pupil_curl(school, *BLOCKED).returncode in CURL_RESET_EXITS
        assert pupil_curl(school, *ALLOWED).stdout == "200"
    finally:
        filler.unlink()
    school.daemon.send_signal(signal.SIGHUP)
    school.wait_for_version(stored)
    assert school.status()["policy"]["problem"] is None
    assert pupil_curl(school, "https://full.test/", "full.test", str(UPSTREAM_V4)).returncode in CURL_RESET_EXITS


def test_an_api_change_on_a_full_disk_is_503(school: FilteredSchool) -> None:
    from test_daemon import api

    admin = school.run_edufilter("token", "create", "--role", "admin").stdout.strip()
    filler = fill_state_disk(school)
    try:
        status, problem, _ = api(school, admin, "POST", "/api/v1/groups", {"name": "staff"})
    finally:
        filler.unlink()
    assert status == 503, problem
    assert "disk is full" in problem["detail"]
    status, created, _ = api(school, admin, "POST", "/api/v1/groups", {"name": "staff"})
    assert status == 201, created

