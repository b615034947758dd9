"""The supervisor's own logic, with fake worker processes (tests/daemon/fake_worker.py) and a
fake compiler: restarts, the heartbeat, coalesced reloads, a full disk. No root needed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from edufilter.config import Config, QueueConfig
from edufilter.daemon import supervisor as supervisor_module
from edufilter.daemon.supervisor import CRASH_LOOP_DELAY, HEARTBEAT_TIMEOUT, Supervisor, WorkerState
from edufilter.errors import StorageFullError

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")


class FakeWorkerSupervisor(Supervisor):
    """The real supervisor, its workers replaced by fake_worker.py in the given modes."""

    def __init__(self, state_dir: Path, modes: list[str]) -> None:
        super().__init__(replace(Config(), state_dir=state_dir, queue=replace(QueueConfig(), workers=len(modes))),
                         serve_api=False)
        self.modes = modes

    def worker_command(self, worker: WorkerState, control_fd: int) -> list[str]:
        return [sys.executable, str(FAKE_WORKER), "--control-fd", str(control_fd), "--mode", self.modes[worker.index]]


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until condition() holds, polled on the loop."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, what
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def supervised(supervisor: Supervisor, scenario: Callable[[], object]) -> None:
    """Start the workers and their supervising tasks, run the scenario, stop everything."""
    async def run() -> None:
        supervisor.stopping = asyncio.Event()
        for worker in supervisor.workers:
            supervisor.start_worker(worker)
        tasks = [asyncio.get_running_loop().create_task(supervisor.supervise(worker)) for worker in supervisor.workers]
        try:
            await scenario()
        finally:
            supervisor.stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for worker in supervisor.workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait()

    asyncio.run(run())


def test_a_crash_looping_worker_does_not_delay_the_restart_of_another(tmp_path: Path) -> None:
    supervisor = FakeWorkerSupervisor(tmp_path, ["crash", "run"])
    looping, healthy = supervisor.workers

    async def scenario() -> None:
        await wait_for(lambda: healthy.state == "running", 10, "the healthy worker starts")
        await wait_for(lambda: looping.quick_failures >= 3, 10, "the broken worker enters its crash loop")
        killed = healthy.process.pid
        os.kill(killed, signal.SIGKILL)
        back = await wait_for(lambda: healthy.state == "running" and healthy.process.pid != killed, 10,
                              "the killed worker is started again")
        assert back < 1.0, f"restarted after {back:.2f} s, while the other waits {CRASH_LOOP_DELAY} s between tries"
        assert healthy.restarts == 1 and healthy.quick_failures == 0

    supervised(supervisor, scenario)


def test_a_stopped_worker_is_noticed_and_replaced(tmp_path: Path) -> None:
    supervisor = FakeWorkerSupervisor(tmp_path, ["run", "run"])
    stuck, other = supervisor.workers

    async def scenario() -> None:
        await wait_for(lambda: all(worker.state == "running" for worker in supervisor.workers), 10, "workers start")
        stopped, untouched = stuck.process.pid, other.process.pid
        os.kill(stopped, signal.SIGSTOP)
        replaced = await wait_for(lambda: stuck.state == "running" and stuck.process.pid != stopped,
                                  HEARTBEAT_TIMEOUT + 5, "a stopped worker is replaced")
        assert HEARTBEAT_TIMEOUT <= replaced < HEARTBEAT_TIMEOUT + 2
        assert stuck.hangs == 1 and stuck.restarts == 1
        with pytest.raises(ProcessLookupError):
            os.kill(stopped, 0)  # killed, and reaped
        assert other.process.pid == untouched and other.hangs == 0 and other.restarts == 0
        assert [entry["hangs"] for entry in supervisor.status()["queues"]] == [1, 0]

    supervised(supervisor, scenario)


def test_a_storm_of_changes_is_compiled_once_after_the_compile_that_runs(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    supervisor = Supervisor(replace(Config(), state_dir=tmp_path, queue=replace(QueueConfig(), workers=1)),
                            serve_api=False)
    compiles: list[float] = []
    failing = []

    def compile_policy(state_dir: Path) -> None:
        compiles.append(time.monotonic())
        time.sleep(0.2)
        if failing:
            raise StorageFullError("image policy.img: the disk is full")

    monkeypatch.setattr(supervisor_module, "compile_policy", compile_policy)
    monkeypatch.setattr(supervisor, "load_engine", lambda: setattr(supervisor, "engine",
                                                                    SimpleNamespace(version=len(compiles),
                                                                                    categories_image=SimpleNamespace(meta={}))))

    async def run() -> None:
        supervisor.reload_lock = asyncio.Lock()
        storm = [asyncio.get_running_loop().create_task(supervisor.apply()) for _ in range(100)]
        await asyncio.sleep(0)
        versions = await asyncio.gather(*(supervisor.apply() for _ in range(5)))
        assert versions == [2] * 5, "every caller gets the version compiled after its request"
        assert len(compiles) == 2, "105 changes: the one compile running, then one for all the others"
        assert set(await asyncio.gather(*storm)) == {1, 2}
        failing.append(True)
        results = await asyncio.gather(*(supervisor.apply() for _ in range(3)), return_exceptions=True)
        assert all(isinstance(result, StorageFullError) for result in results)
        assert len(compiles) == 4
        assert "disk is full" in supervisor.status()["policy"]["problem"]
        assert supervisor.engine.version == 2, "the images that were live stay live"
        failing.clear()
        assert await supervisor.apply() == 5
        assert supervisor.status()["policy"]["problem"] is None

    asyncio.run(run())


def test_events_lost_to_a_full_disk_are_counted_not_reported_as_bad_messages(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(replace(Config(), state_dir=tmp_path, queue=replace(QueueConfig(), workers=1)),
                            serve_api=False)

    class FullEventStore:
        def record(self, events: list) -> None:
            raise StorageFullError("events.sqlite: database or disk is full")

    supervisor.events = FullEventStore()
    supervisor.pseudonyms = SimpleNamespace(block_event=lambda **fields: fields)
    supervisor.policy_meta = {"groups": [{"name": "pupils", "log_client_address": False}]}
    event = {"time": time.time(), "group": "pupils", "category": "blocked", "name": "blocked.test",
             "destination": None, "kind": "sni", "action": "block", "client_address": "198.18.16.1",
             "reference": None}
    for _ in range(3):
        supervisor.record_events(supervisor.workers[0], [event, event])
    assert supervisor.lost_events == 6 and supervisor.bad_events == 0
    assert supervisor.status()["storage"] == {"full": True, "lost_events": 6}
    assert len([record for record in caplog.records if "not stored" in record.message]) == 1, "logged once"
