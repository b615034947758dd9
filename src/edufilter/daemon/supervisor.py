"""`edufilter run`: the supervisor of the worker processes, and the control path around them.

At start it makes sure a policy is stored (the bundled default when there is none), compiles
the images, installs the daemon's own netfilter rules and starts one worker per queue. Then,
on one asyncio loop: it restarts a worker that dies within a second, recompiles and swaps the
policy on SIGHUP or an API change, writes block events (pseudonymised) and counters, keeps the
status file, serves the block page and the admin API. SIGTERM stops the workers and removes
the rules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web

from edufilter import __version__
from edufilter._queue import queue_counters
from edufilter.config import Config, split_listen
from edufilter.daemon.control import pid_file
from edufilter.enforce import blockpage
from edufilter.enforce.blockpage_server import make_blockpage_app
from edufilter.enforce.marks import MarkLayout
from edufilter.enforce.netfilter import NFT_TABLE, InstalledRules, RuleSettings, install, remove_stale
from edufilter.errors import EdufilterError
from edufilter.output.events import EventStore, Pseudonymiser, new_reference
from edufilter.output.status import status_path, write_status
from edufilter.policy.compile import CATEGORIES_IMAGE, compile_categories, compile_policy, images_dir
from edufilter.policy.engine import Engine
from edufilter.policy.model import Action, ClientIdentity
from edufilter.policy.store import POLICY_DB, PolicyStore

log = logging.getLogger("edufilter")

RESTART_DELAY = 0.3  # a dead worker is started again within a second
CRASH_LOOP_DELAY = 5.0
WATCH_INTERVAL = 0.2
STATUS_INTERVAL = 1.0
MAINTENANCE_INTERVAL = 3600.0
RECOMPILE_INTERVAL = 6 * 3600.0  # the schedule window reaches days ahead; refresh it often
STOP_GRACE = 3.0
CODE_VERDICTS = {1: "allow", 2: "block", 3: "drop"}


@dataclass(slots=True)
class WorkerState:
    index: int
    queue: int
    process: subprocess.Popen | None = None
    control: socket.socket | None = None
    state: str = "starting"
    restarts: int = 0
    quick_failures: int = 0
    stats: dict = field(default_factory=dict)
    decisions: dict[tuple[str, str | None, int], int] = field(default_factory=dict)


class Supervisor:
    def __init__(self, config: Config, config_path: Path | None = None, serve_api: bool = True) -> None:
        self.config = config
        self.config_path = config_path
        self.serve_api = serve_api
        self.state_dir = config.state_dir
        self.layout = MarkLayout(config.marks.mask)
        self.workers = [
            WorkerState(index, config.queue.first_queue + index) for index in range(config.worker_count)
        ]
        self.rules: InstalledRules | None = None
        self.events: EventStore | None = None
        self.pseudonyms: Pseudonymiser | None = None
        self.policy_meta: dict = {}
        self.engine: Engine | None = None
        self.started_at = datetime.now(timezone.utc)
        self.last_reload: dict | None = None
        self.stopping: asyncio.Event | None = None
        self.reload_lock: asyncio.Lock | None = None
        self.runners: list[web.AppRunner] = []
        self.bad_events = 0
        self.enqueued: dict[int, tuple[int, int]] = {}  # queue -> (packets taken in total, last id_sequence)
        self.uninspected = 0
        self.queued = 0  # packets the rules have queued: their to_queue counters, all installs
        self.queued_earlier = 0  # the part counted by rules that another tool has since removed
        self.reinstalls = 0

    # ---- start

    def prepare_policy(self) -> None:
        """A stored policy (the bundled default when none) and current images."""
        from edufilter.commands.policy import install_policy
        from edufilter.policy.defaults import default_policy_dir

        self.state_dir.mkdir(parents=True, exist_ok=True)
        with PolicyStore(self.state_dir / POLICY_DB) as store:
            empty = not store.load().groups
        if empty:
            log.info("no policy stored in %s: installing the bundled default policy", self.state_dir)
            install_policy(self.state_dir, default_policy_dir())
        if not (images_dir(self.state_dir) / CATEGORIES_IMAGE).exists():
            compile_categories(self.state_dir)
        report = compile_policy(self.state_dir)
        for warning in report.warnings:
            log.warning("policy: %s", warning)
        self.load_engine()

    def load_engine(self) -> None:
        self.engine = Engine.open(self.state_dir)
        self.policy_meta = self.engine.meta
        if self.pseudonyms is not None:
            self.pseudonyms.zone = ZoneInfo(self.policy_meta["settings"]["timezone"])

    def install_rules(self) -> None:
        settings = RuleSettings(
            queues=range(self.workers[0].queue, self.workers[-1].queue + 1),
            fail_open=self.config.queue.fail_open,
            inspect_packets=self.config.queue.inspect_packets,
            lan_interfaces=self.config.network.lan_interfaces,
            filter_local=self.config.network.filter_local,
            layout=self.layout,
            ipv6=self.config.network.ipv6,
        )
        if remove_stale():
            log.warning("removed edufilter rules left by an earlier run that did not stop cleanly")
        self.rules = install(settings)
        log.info("netfilter rules installed (%s backend, queues %d-%d, fail-%s)", self.rules.backend.value,
                 settings.queues.start, settings.queues.stop - 1, self.config.queue.fail)

    def start_worker(self, worker: WorkerState) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [sys.executable, "-m", "edufilter.daemon.worker", "--queue", str(worker.queue),
                   "--worker", str(worker.index), "--control-fd", str(child.fileno()),
                   "--state-dir", str(self.state_dir)]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        worker.process = subprocess.Popen(command, pass_fds=(child.fileno(),))
        child.close()
        parent.setblocking(False)
        if worker.control is not None:
            asyncio.get_running_loop().remove_reader(worker.control.fileno())
            worker.control.close()
        worker.control = parent
        worker.state = "starting"
        worker.decisions = {}
        asyncio.get_running_loop().add_reader(parent.fileno(), self.read_worker, worker)

    # ---- workers

    def read_worker(self, worker: WorkerState) -> None:
        while worker.control is not None:
            try:
                data = worker.control.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                asyncio.get_running_loop().remove_reader(worker.control.fileno())
                worker.control.close()
                worker.control = None
                return
            try:
                self.on_message(worker, json.loads(data))
            except (ValueError, KeyError, TypeError, EdufilterError) as error:
                log.warning("worker %d sent a message that could not be used: %s", worker.index, error)

    def on_message(self, worker: WorkerState, message: dict) -> None:
        kind = message.get("type")
        if kind == "ready":
            worker.state = "running"
            log.info("worker %d (queue %d, pid %d) is filtering with policy version %d", worker.index,
                     worker.queue, message["pid"], message["version"])
        elif kind == "stats":
            self.record_decisions(worker, message)
            worker.stats = message
        elif kind == "events":
            self.record_events(worker, message["events"])
        elif kind == "reloaded":
            log.info("worker %d now filters with policy version %d (%d flows re-decided in %.3f s)", worker.index,
                     message["version"], message["redecided"], message["seconds"])
        elif kind == "reload_failed":
            log.error("worker %d kept its policy: the new one could not be mapped: %s", worker.index,
                      message["error"])
        elif kind == "fatal":
            log.error("worker %d cannot run: %s", worker.index, message["error"])

    def record_decisions(self, worker: WorkerState, message: dict) -> None:
        """Counts per group, category and verdict, as deltas since the worker's last report."""
        minute = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        deltas = []
        for group, category, code, flows in message["decisions"]:
            key = (group, category, code)
            delta = flows - worker.decisions.get(key, 0)
            worker.decisions[key] = flows
            if delta > 0:
                deltas.append((minute, group, category, CODE_VERDICTS.get(code, str(code)), delta, delta))
        if deltas and self.events is not None:
            self.events.stats.add(deltas)

    def record_events(self, worker: WorkerState, reported: list[dict]) -> None:
        groups = {group["name"]: group for group in self.policy_meta.get("groups", [])}
        events = []
        for event in reported:
            group = groups.get(event["group"], {})
            try:
                events.append(self.pseudonyms.block_event(
                    time=datetime.fromtimestamp(event["time"], timezone.utc), group=event["group"],
                    category=event["category"], name=event["name"], destination=event["destination"],
                    kind=event["kind"], action=event["action"], client_address=event["client_address"],
                    worker=worker.index, log_client_address=bool(group.get("log_client_address")),
                    reference=event["reference"],
                ))
            except (EdufilterError, KeyError, TypeError, ValueError) as error:
                self.bad_events += 1
                log.warning("worker %d reported an event that cannot be logged: %s", worker.index, error)
        if events:
            self.events.record(events)

    async def watch_workers(self) -> None:
        while not self.stopping.is_set():
            for worker in self.workers:
                if worker.process is None or worker.process.poll() is None:
                    continue
                status = worker.process.returncode
                worker.restarts += 1
                # A worker that keeps dying before it is ready (a broken image, a missing
                # capability) is retried less often, so the log stays readable.
                worker.quick_failures = worker.quick_failures + 1 if worker.state == "starting" else 0
                worker.state = "restarting"
                delay = RESTART_DELAY if worker.quick_failures < 3 else CRASH_LOOP_DELAY
                log.error("worker %d (queue %d) exited with status %s; queue %d %s until it is back%s", worker.index,
                          worker.queue, status, worker.queue,
                          "lets traffic pass (fail-open)" if self.config.queue.fail_open else "drops traffic (fail-closed)",
                          f" (failing at start, next try in {delay:.0f} s)" if delay > RESTART_DELAY else "")
                await asyncio.sleep(delay)
                if not self.stopping.is_set():
                    self.start_worker(worker)
            await asyncio.sleep(WATCH_INTERVAL)

    # ---- policy changes

    async def apply(self) -> int:
        """Compile the stored policy and make every worker use it; the version now live."""
        async with self.reload_lock:
            started = time.monotonic()
            try:
                await asyncio.to_thread(compile_policy, self.state_dir)
                await asyncio.to_thread(self.load_engine)
            except EdufilterError as error:
                self.last_reload = {"at": datetime.now(timezone.utc), "duration_ms": _ms(started),
                                    "result": f"failed: {error}"}
                log.error("policy not changed: %s", error)
                raise
            for worker in self.workers:
                self.send(worker, {"type": "reload"})
            self.last_reload = {"at": datetime.now(timezone.utc), "duration_ms": _ms(started), "result": "ok"}
            log.info("policy version %d compiled and sent to the workers", self.engine.version)
            return self.engine.version

    def send(self, worker: WorkerState, message: dict) -> None:
        if worker.control is None:
            return
        try:
            worker.control.send(json.dumps(message).encode())
        except OSError:
            pass  # a dying worker; its replacement maps the current images when it starts

    def on_sighup(self) -> None:
        async def reload() -> None:
            try:
                await self.apply()
            except EdufilterError:
                pass  # logged; the old policy stays live

        asyncio.get_running_loop().create_task(reload())

    async def maintenance(self) -> None:
        """Pseudonym keys, event retention, expired overrides and the schedule window."""
        last_recompile = time.monotonic()
        next_purge = 0.0
        while not self.stopping.is_set():
            now = datetime.now(timezone.utc)
            self.pseudonyms.rotate(now)
            if time.monotonic() >= next_purge:
                await asyncio.to_thread(self.events.purge, now)
                await asyncio.to_thread(self.events.stats.purge, now)
                with PolicyStore(self.state_dir / POLICY_DB) as store:
                    expired = store.expire_overrides(now)
                if expired:
                    await self.apply()
                next_purge = time.monotonic() + MAINTENANCE_INTERVAL
            if time.monotonic() - last_recompile >= RECOMPILE_INTERVAL:
                await self.apply()
                last_recompile = time.monotonic()
            try:
                await asyncio.wait_for(self.stopping.wait(), 60.0)
            except asyncio.TimeoutError:
                pass

    # ---- status

    def count_enqueued(self, queue: int, kernel: dict) -> int:
        """Packets a queue really took since the daemon started, across worker restarts (a new
        binding starts its id sequence at 0 again)."""
        taken, last = self.enqueued.get(queue, (0, 0))
        sequence = kernel.get("id_sequence", last)
        taken += sequence - last if sequence >= last else sequence
        self.enqueued[queue] = (taken, sequence)
        return taken

    def watch_rules(self, queues: list[dict]) -> None:
        """Read the rules' queue counter (netlink, no subprocess), install the rules again if
        another tool removed them (`nft flush ruleset`, a firewall reload), and count what
        went through them to no worker."""
        if self.rules is None or self.rules.removed:
            return
        counted = self.rules.queued_packets()
        if counted is None:
            log.warning("edufilter's rules were removed by another tool (a ruleset flush or firewall reload?); "
                        "nothing was filtered until now: installing them again")
            self.queued_earlier = self.queued
            self.install_rules()  # also takes away whatever part of our table is left
            self.reinstalls += 1
            counted = 0
        self.queued = self.queued_earlier + counted
        self.count_uninspected(queues)

    def count_uninspected(self, queues: list[dict]) -> None:
        """Packets that went through the queue rules to no worker: while a worker was away, or
        when a queue was full. Fail-open lets them pass, fail-closed drops them; the kernel
        counts neither, so it is the rules' counters less what the queues took and dropped."""
        queued = self.queued
        taken = sum(self.enqueued.get(queue["queue"], (0, 0))[0] + queue["queue_dropped"] for queue in queues)
        uninspected = max(0, queued - taken)
        if uninspected > self.uninspected:
            log.warning("%d packets %s since the daemon started", uninspected,
                        "passed uninspected (fail-open)" if self.config.queue.fail_open else
                        "were dropped with no worker to inspect them (fail-closed)")
        self.uninspected = uninspected

    def status(self) -> dict:
        queues = []
        totals = {"packets": 0, "flows": 0, "queue_dropped": 0, "user_dropped": 0, "evasion": 0}
        for worker in self.workers:
            stats = worker.stats
            enforcer = stats.get("enforcer", {})
            kernel = kernel_counters(worker.queue) or stats.get("kernel") or {}
            self.count_enqueued(worker.queue, kernel)
            entry = {
                "worker": worker.index, "queue": worker.queue,
                "pid": worker.process.pid if worker.process is not None and worker.process.poll() is None else None,
                "state": worker.state, "restarts": worker.restarts, "policy_version": stats.get("policy_version"),
                "packets": enforcer.get("packets", 0),
                "flows": enforcer.get("flows_decided", 0),
                "verdicts": {str(code): enforcer.get(f"code_{code}", 0) for code in (1, 2, 3)},
                "queue_total": kernel.get("queue_total", 0), "queue_dropped": kernel.get("queue_dropped", 0),
                "user_dropped": kernel.get("user_dropped", 0), "decisions": decision_tree(worker.decisions),
                "malformed_dropped": enforcer.get("malformed_dropped", 0),
                "slow_packets": enforcer.get("slow_packets", 0),
                "evasion": enforcer.get("evasion", 0),
                "name_cache_hits": enforcer.get("name_cache_hits", 0),
                "name_cache_misses": enforcer.get("name_cache_misses", 0),
            }
            queues.append(entry)
            for key in totals:
                totals[key] += entry.get(key, 0)
        totals["fail_open" if self.config.queue.fail_open else "fail_closed_dropped"] = self.uninspected
        return {
            "updated_at": datetime.now(timezone.utc),
            "daemon": {"pid": os.getpid(), "started_at": self.started_at, "edufilter": __version__},
            "policy": {"version": self.engine.version if self.engine else None,
                       "images": {"policy": self.engine.version if self.engine else None,
                                  "categories": self.engine.categories_image.meta.get("digest", "")[:12]
                                  if self.engine else None}},
            "rules": {"backend": self.rules.backend.value, "table": f"inet {NFT_TABLE}", "queued_packets": self.queued,
                      "reinstalled": self.reinstalls}
            if self.rules is not None and not self.rules.removed else None,
            "queues": queues,
            "totals": totals,
            "last_reload": self.last_reload,
        }

    async def keep_status(self) -> None:
        path = status_path(self.state_dir)
        while not self.stopping.is_set():
            try:
                status = self.status()
                self.watch_rules(status["queues"])
                write_status(path, status)
            except EdufilterError as error:
                log.warning("%s", error)
            try:
                await asyncio.wait_for(self.stopping.wait(), STATUS_INTERVAL)
            except asyncio.TimeoutError:
                pass

    async def status_source(self) -> dict:
        return json.loads(json.dumps(self.status(), default=str))

    # ---- web

    def explain_block(self, host: str, client: str, accept_language: str | None) -> blockpage.BlockInfo | None:
        """For the block-page server: why `host` is blocked for `client`, logged as an event."""
        try:
            explanation = self.engine.explain(host, ClientIdentity(client), datetime.now(timezone.utc))
        except EdufilterError:
            return None
        if not Action(explanation.action).blocks:
            return None
        reference = new_reference()
        group = next(g for g in self.policy_meta["groups"] if g["name"] == explanation.group)
        self.record_events(self.workers[0], [{
            "time": time.time(), "group": explanation.group, "category": explanation.list, "name": host,
            "destination": None, "kind": "http_host", "action": explanation.action, "client_address": client,
            "reference": reference,
        }])
        return blockpage.BlockInfo(host, explanation.list or "", explanation.list_title or explanation.list or "",
                                   group["title"] or group["name"], explanation.action, reference,
                                   datetime.now(timezone.utc))

    async def start_web(self) -> None:
        settings = self.policy_meta["settings"]
        app = make_blockpage_app(self.explain_block, self.config.blockpage.default_language)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.runners.append(runner)
        for address in (settings["block_page_ipv4"], settings["block_page_ipv6"]):
            try:
                await web.TCPSite(runner, address, self.config.blockpage.port).start()
                log.info("block page served on %s port %d", address, self.config.blockpage.port)
            except OSError as error:
                log.warning("block page not served on %s port %d: %s (is the address on this gateway?)",
                            address, self.config.blockpage.port, error.strerror)
        if self.serve_api:
            await self.start_api()

    async def start_api(self) -> None:
        from edufilter.api.app import make_app, start_api
        from edufilter.api.context import ApiSettings

        host, port = split_listen(self.config.api.listen)
        certificate, key = self.config.api.tls_certificate, self.config.api.tls_key
        settings = ApiSettings(host=host, port=port, tls_cert=Path(certificate) if certificate else None,
                               tls_key=Path(key) if key else None)
        app = make_app(self.state_dir, self.apply, explain=lambda text, client, at: self.engine.explain(text, client, at),
                       status_source=self.status_source, event_store=self.events, settings=settings)
        self.runners.append(await start_api(app))
        log.info("admin API on %s port %d%s", host, port, " (TLS)" if certificate else "")

    # ---- the whole run

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.reload_lock = asyncio.Lock()
        await asyncio.to_thread(self.prepare_policy)
        self.pseudonyms = Pseudonymiser(self.state_dir / "keys", ZoneInfo(self.policy_meta["settings"]["timezone"]))
        self.pseudonyms.rotate(datetime.now(timezone.utc))
        self.events = EventStore(self.state_dir / "events.sqlite",
                                 self.state_dir / "events" if self.config.events.jsonl else None,
                                 self.config.events.retention_days, start_over_if_damaged=True)
        pid_file(self.state_dir).parent.mkdir(parents=True, exist_ok=True)
        pid_file(self.state_dir).write_text(f"{os.getpid()}\n")
        self.install_rules()
        try:
            for worker in self.workers:
                self.start_worker(worker)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self.on_sighup)
            await self.start_web()
            tasks = [loop.create_task(job()) for job in (self.watch_workers, self.keep_status, self.maintenance)]
            await self.stopping.wait()
            log.info("stopping")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        for worker in self.workers:
            self.send(worker, {"type": "stop"})
        deadline = time.monotonic() + STOP_GRACE
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                await asyncio.to_thread(worker.process.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.state = "stopped"
        if self.rules is not None:
            self.rules.remove()
            log.info("netfilter rules removed")
        for runner in self.runners:
            await runner.cleanup()
        try:
            write_status(status_path(self.state_dir), self.status())
        except EdufilterError:
            pass
        pid_file(self.state_dir).unlink(missing_ok=True)
        if self.events is not None:
            self.events.close()


def decision_tree(decisions: dict[tuple[str, str | None, int], int]) -> dict:
    """{group: {category or "": {verdict: {"flows": n}}}} from a worker's decision counts."""
    tree: dict = {}
    for (group, category, code), flows in decisions.items():
        verdict = CODE_VERDICTS.get(code, str(code))
        tree.setdefault(group, {}).setdefault(category or "", {})[verdict] = {"flows": flows}
    return tree


def kernel_counters(queue: int) -> dict:
    """The kernel's counters of a queue; empty while no worker has it bound."""
    try:
        return queue_counters(queue)
    except EdufilterError:
        return {}


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
