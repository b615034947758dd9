"""What SIGHUP does and what a worker is handed, without root: SIGHUP maps the images another
process compiled (it compiles nothing), and each worker gets the supervisor's configuration
and images folder in its first message instead of reading the configuration file."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from compiled_policy import POLICY, compiled_view
from test_supervisor import FakeWorkerSupervisor, supervised, wait_for

from edufilter.config import (
    Config,
    ConfigError,
    DnsConfig,
    QueueConfig,
    config_from_dict,
)
from edufilter.daemon import supervisor as supervisor_module
from edufilter.daemon.handover import receive_start, start_message
from edufilter.daemon.supervisor import Supervisor
from edufilter.policy.compile import compile_policy
from edufilter.policy.model import EntryKind, ListEntry
from edufilter.policy.store import PolicyStore


def received(end: socket.socket) -> list[dict]:
    """Every message a worker's end of its control socket holds."""
    end.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(json.loads(end.recv(65536)))
        except BlockingIOError:
            return messages


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Supervisor, list[socket.socket], list[Path]]:
    """A supervisor on a compiled policy, its two workers stand-in sockets, and a record of
    every compile it runs itself."""
    compiled_view(tmp_path, POLICY)
    supervisor = Supervisor(replace(Config(), state_dir=tmp_path, queue=replace(QueueConfig(), workers=2)),
                            serve_api=False)
    supervisor.load_engine()
    ends = []
    for worker in supervisor.workers:
        worker.control, end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ends.append(end)
    compiles: list[Path] = []

    def counted_compile(state_dir: Path) -> object:
        compiles.append(state_dir)
        return compile_policy(state_dir)

    monkeypatch.setattr(supervisor_module, "compile_policy", counted_compile)
    return supervisor, ends, compiles


def change_and_compile(state_dir: Path, name: str) -> int:
    """What `edufilter policy compile` does after a change: store, compile, here; the version."""
    with PolicyStore(state_dir / "policy.sqlite") as store:
        store.add_list_entry("blocked", ListEntry(EntryKind.DOMAIN, name))
    return compile_policy(state_dir).version


def test_a_sighup_storm_maps_the_new_images_once_or_twice_and_compiles_nothing(daemon) -> None:
    supervisor, ends, compiles = daemon
    live = supervisor.engine.version
    version = change_and_compile(supervisor.state_dir, "new.test")
    assert version == live + 1

    async def storm() -> None:
        supervisor.reload_lock = asyncio.Lock()
        for _ in range(100):
            supervisor.on_sighup()
        pending = asyncio.all_tasks() - {asyncio.current_task()}
        await asyncio.gather(*pending)

    asyncio.run(storm())
    assert compiles == [], "a SIGHUP only maps what was compiled where the change was made"
    assert supervisor.engine.version == version
    assert supervisor.status()["policy"]["version"] == version
    told = [[message["type"] for message in received(end)] for end in ends]
    assert told[0] == told[1] and 1 <= len(told[0]) <= 2 and set(told[0]) == {"reload"}, \
        "100 signals: the mapping that runs, then at most one for all the others"


def test_a_change_made_in_the_daemon_is_compiled_there_once(daemon) -> None:
    supervisor, ends, compiles = daemon
    with PolicyStore(supervisor.state_dir / "policy.sqlite") as store:
        store.add_list_entry("blocked", ListEntry(EntryKind.DOMAIN, "api.test"))
        stored = store.version

    async def apply() -> int:
        supervisor.reload_lock = asyncio.Lock()
        return await supervisor.apply()

    assert asyncio.run(apply()) == stored
    assert compiles == [supervisor.state_dir]
    assert [[message["type"] for message in received(end)] for end in ends] == [["reload"], ["reload"]]


def test_images_that_do_not_map_leave_the_live_policy_and_the_workers_alone(daemon) -> None:
    supervisor, ends, compiles = daemon
    live = supervisor.engine.version
    (supervisor.images / "policy.img").write_bytes(b"not an image")

    async def sighup() -> None:
        supervisor.reload_lock = asyncio.Lock()
        await supervisor.remap()

    asyncio.run(sighup())
    assert supervisor.engine.version == live
    assert supervisor.last_reload["result"].startswith("failed")
    assert [received(end) for end in ends] == [[], []] and compiles == []


def test_each_worker_is_handed_the_supervisor_s_configuration_and_images(tmp_path: Path) -> None:
    # A setting no configuration file says: a worker reading a file would filter "strict".
    supervisor = FakeWorkerSupervisor(tmp_path, ["handover", "handover"])
    supervisor.config = replace(supervisor.config, dns=DnsConfig(youtube="moderate"),
                                queue=replace(supervisor.config.queue, workers=0))
    ready: dict[int, dict] = {}
    on_message = supervisor.on_message
    supervisor.on_message = lambda worker, message: (ready.setdefault(worker.index, message),  # type: ignore
                                                     on_message(worker, message))

    async def scenario() -> None:
        await wait_for(lambda: len(ready) == 2, 10, "both workers say what they were handed")

    supervised(supervisor, scenario)
    expected = replace(supervisor.config, queue=replace(supervisor.config.queue, workers=2))
    for index in (0, 1):
        assert config_from_dict(ready[index]["config"], "test") == expected, "the worker count resolved, once"
        assert Path(ready[index]["images"]) == supervisor.images == tmp_path / "images"


def test_a_worker_refuses_a_first_message_that_is_no_start_message() -> None:
    for first in (b'{"type": "reload"}', b"not json",
                  start_message(replace(Config(), queue=replace(QueueConfig(), batch=0)), Path("/images"))):
        supervisor_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with supervisor_end, worker_end:
            supervisor_end.send(first)
            with pytest.raises(ConfigError):
                receive_start(worker_end)
    supervisor_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with supervisor_end, worker_end:
        supervisor_end.send(start_message(Config(), Path("/var/lib/edufilter/images")))
        assert receive_start(worker_end) == (Config(), Path("/var/lib/edufilter/images"))


def test_a_full_disk_problem_clears_once_the_stored_policy_was_compiled_elsewhere_and_mapped(daemon) -> None:
    supervisor, ends, compiles = daemon
    supervisor.image_problem = "image policy.img: the disk is full"
    change_and_compile(supervisor.state_dir, "later.test")
    with PolicyStore(supervisor.state_dir / "policy.sqlite") as store:  # stored after that compile
        store.add_list_entry("blocked", ListEntry(EntryKind.DOMAIN, "newer.test"))

    async def sighup() -> None:
        supervisor.reload_lock = asyncio.Lock()
        await supervisor.remap()

    asyncio.run(sighup())
    assert supervisor.status()["policy"]["problem"], "the live images are still older than the store"
    change_and_compile(supervisor.state_dir, "last.test")
    asyncio.run(sighup())
    assert supervisor.status()["policy"]["problem"] is None and compiles == []
