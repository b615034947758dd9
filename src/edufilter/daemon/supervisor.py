"""`edufilter run`: the supervisor of the worker processes, and the control path around them.

At start it claims the state folder and the network namespace (one daemon each), makes sure
a policy is stored (the bundled default when there is none), compiles the images (on a full
disk it keeps the last good ones), installs the daemon's own netfilter rules and starts one
worker per queue. Then, on one asyncio loop: it restarts each worker on its own as soon as it
dies and replaces one that stops answering, recompiles and swaps the policy on SIGHUP or an API
change (requests that arrive during a compile are served by one compile after it), checks the
whole rule table and reinstalls it when another tool changed it, writes block events
(pseudonymised) and counters, keeps the status file, serves the block page and the admin API.
SIGTERM stops the workers and removes the rules.
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
from edufilter.capture._queue import queue_counters
from edufilter.classify.engine import Engine
from edufilter.classify.image import remove_stale_temporaries
from edufilter.config import Config, split_listen
from edufilter.daemon.control import claim_daemon
from edufilter.enforce import blockpage, safe_search
from edufilter.enforce.blockpage import new_reference
from edufilter.enforce.blockpage_server import ReviewForm, make_blockpage_app
from edufilter.errors import EdufilterError, StorageFullError
from edufilter.output.events import EventStore, Pseudonymiser
from edufilter.output.status import write_status
from edufilter.policy.compile import compile_categories, compile_policy
from edufilter.policy.model import Action, ClientIdentity
from edufilter.policy.store import PolicyStore
from edufilter.rules.marks import MarkLayout
from edufilter.rules.netfilter import (
    NFT_TABLE,
    InstalledRules,
    RuleSettings,
    install,
    remove_stale,
)
from edufilter.state import StateDir

log = logging.getLogger("edufilter")

QUICK_FAILURE_DELAY = 0.3  # a worker that died before it was ready; one that ran is restarted at once
CRASH_LOOP_DELAY = 5.0
HEARTBEAT_TIMEOUT = 3.0  # a running worker reports every second; silence this long means it hangs
HEARTBEAT_CHECK = 0.5
STATUS_INTERVAL = 1.0
RULES_CHECK_INTERVAL = 2.0  # the whole table read back and compared (one nft run, ~3 ms)
STORAGE_LOG_INTERVAL = 60.0  # a full disk is logged once a minute, not once per event batch
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
    hangs: int = 0  # times it stopped answering and was replaced
    last_heard: float = 0.0  # time.monotonic() of its last message
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
        self.last_reinstall: str | None = None
        self.next_rules_check = 0.0
        self.apply_requested = 0  # apply() calls so far
        self.apply_served = 0  # of those, the ones the last compile started after
        self.apply_outcome: int | EdufilterError = 0
        self.image_problem: str | None = None  # why the live images are older than the store
        self.lost_events = 0  # block events that could not be stored (a full disk)
        self.storage_logged_at: dict[str, float] = {}
        self.storage_failed_at = -STORAGE_LOG_INTERVAL  # time.monotonic() of the last refused write
        self.hub = None  # the GatewayAgent in multi-site mode

    # ---- start

    def prepare_policy(self) -> None:
        """A stored policy (the bundled default when none) and current images."""
        from edufilter.policy.defaults import default_policy_dir, install_policy

        with PolicyStore(StateDir(self.state_dir).policy_db) as store:
            empty = not store.load().groups
        if empty:
            log.info("no policy stored in %s: installing the bundled default policy", self.state_dir)
            install_policy(self.state_dir, default_policy_dir())
        state = StateDir(self.state_dir)
        images = state.images
        images.mkdir(exist_ok=True)
        for removed in remove_stale_temporaries(images):
            log.warning("removed %s, left by a compile that did not finish", removed)
        # Always compiled: a change stored just before a crash (kill -9 between commit and
        # compile) becomes live now, not at the next change.
        try:
            if not state.categories_image.exists():
                compile_categories(self.state_dir)
            report = compile_policy(self.state_dir)
        except StorageFullError as error:
            if not state.policy_image.exists() or not state.categories_image.exists():
                raise
            self.image_problem = str(error)
            log.error("%s: filtering with the last good images until space is freed and the policy applied again",
                      error)
        else:
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
        worker.process = subprocess.Popen(self.worker_command(worker, child.fileno()), pass_fds=(child.fileno(),))
        child.close()
        parent.setblocking(False)
        if worker.control is not None:
            asyncio.get_running_loop().remove_reader(worker.control.fileno())
            worker.control.close()
        worker.control = parent
        worker.state = "starting"
        worker.decisions = {}
        asyncio.get_running_loop().add_reader(parent.fileno(), self.read_worker, worker)

    def worker_command(self, worker: WorkerState, control_fd: int) -> list[str]:
        command = [sys.executable, "-m", "edufilter.daemon.worker", "--queue", str(worker.queue),
                   "--worker", str(worker.index), "--control-fd", str(control_fd), "--state-dir", str(self.state_dir)]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        return command

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
            worker.last_heard = time.monotonic()
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
            try:
                self.events.stats.add(deltas)
            except EdufilterError as error:
                self.storage_failed("counters", error)

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
            try:
                if self.events is None:
                    raise EdufilterError("the event database could not be opened at start")
                self.events.record(events)
                if self.hub is not None:
                    self.hub.publisher.add([event.to_dict() for event in events])
            except EdufilterError as error:
                self.lost_events += len(events)
                self.storage_failed("events", error)

    def storage_failed(self, what: str, error: EdufilterError) -> None:
        """Block events, counters or the status that could not be stored (a full disk): logged
        once a minute."""
        now = time.monotonic()
        self.storage_failed_at = now
        if now - self.storage_logged_at.get(what, -STORAGE_LOG_INTERVAL) >= STORAGE_LOG_INTERVAL:
            self.storage_logged_at[what] = now
            log.error("%s not stored (%d block events lost so far; filtering goes on): %s", what, self.lost_events,
                      error)

    async def supervise(self, worker: WorkerState) -> None:
        """Keep one worker running, apart from the others: started again as soon as it dies,
        killed and started again when it stops answering (SIGSTOP, a hang)."""
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            if worker.process.poll() is None:  # else already reaped (by status()): no pid to watch
                exited = asyncio.Event()
                pidfd = os.pidfd_open(worker.process.pid)  # the zombie stays until we reap it
                loop.add_reader(pidfd, exited.set)
                try:
                    while not exited.is_set():
                        try:
                            await asyncio.wait_for(exited.wait(), HEARTBEAT_CHECK)
                        except asyncio.TimeoutError:
                            self.check_heartbeat(worker)
                finally:
                    loop.remove_reader(pidfd)
                    os.close(pidfd)
            status = worker.process.wait()
            worker.restarts += 1
            # A worker that keeps dying before it is ready (a broken image, a missing
            # capability) is retried less often, so the log stays readable.
            worker.quick_failures = worker.quick_failures + 1 if worker.state == "starting" else 0
            delay = 0.0 if worker.quick_failures == 0 else (
                QUICK_FAILURE_DELAY if worker.quick_failures < 3 else CRASH_LOOP_DELAY)
            worker.state = "restarting"
            log.error("worker %d (queue %d) exited with status %s; queue %d %s until it is back%s", worker.index,
                      worker.queue, status, worker.queue,
                      "lets traffic pass (fail-open)" if self.config.queue.fail_open else "drops traffic (fail-closed)",
                      f" (failing at start, next try in {delay:.1f} s)" if delay else "")
            if delay:
                try:
                    await asyncio.wait_for(self.stopping.wait(), delay)
                except asyncio.TimeoutError:
                    pass
            if not self.stopping.is_set():
                self.start_worker(worker)

    def check_heartbeat(self, worker: WorkerState) -> None:
        if worker.state != "running":
            return
        self.read_worker(worker)  # what it sent while this loop was busy counts
        silent = time.monotonic() - worker.last_heard
        if silent < HEARTBEAT_TIMEOUT:
            return
        worker.hangs += 1
        worker.state = "hung"
        log.error("worker %d (queue %d, pid %d) has not answered for %.1f s (stopped or hung): killing it to start "
                  "another", worker.index, worker.queue, worker.process.pid, silent)
        worker.process.kill()

    # ---- policy changes

    async def apply(self) -> int:
        """Compile the stored policy and make every worker use it; the version now live.

        Calls made while a compile runs wait for it and are then served together by one
        compile (which reads the store after all of them): a SIGHUP storm compiles twice."""
        self.apply_requested += 1
        request = self.apply_requested
        async with self.reload_lock:
            if self.apply_served < request:
                self.apply_served = self.apply_requested
                self.apply_outcome = await self.compile_and_send()
            if isinstance(self.apply_outcome, EdufilterError):
                raise self.apply_outcome
            return self.apply_outcome

    async def compile_and_send(self) -> int | EdufilterError:
        started = time.monotonic()
        try:
            await asyncio.to_thread(compile_policy, self.state_dir)
            await asyncio.to_thread(self.load_engine)
        except EdufilterError as error:
            self.last_reload = {"at": datetime.now(timezone.utc), "duration_ms": _ms(started),
                                "result": f"failed: {error}"}
            live = self.engine.version if self.engine else None
            if isinstance(error, StorageFullError):
                self.image_problem = str(error)
            log.error("policy not changed: %s (version %s stays live)", error, live)
            return error
        self.image_problem = None
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
            try:  # a failure (a full disk) is logged and tried again next time, never ends the task
                self.pseudonyms.rotate(now)
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + MAINTENANCE_INTERVAL
                    if self.events is not None:
                        await asyncio.to_thread(self.events.purge, now)
                        await asyncio.to_thread(self.events.stats.purge, now)
                    expired = await asyncio.to_thread(expire_overrides, self.state_dir, now)  # opening checks the file
                    if expired:
                        await self.apply()
                if time.monotonic() - last_recompile >= RECOMPILE_INTERVAL:
                    last_recompile = time.monotonic()
                    await self.apply()
            except EdufilterError as error:
                log.error("maintenance: %s", error)
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

    async def watch_rules(self, queues: list[dict]) -> None:
        """Read the rules' queue counter (netlink, no subprocess) each second and the whole
        table every few seconds; install the rules again if another tool removed them (`nft
        flush ruleset`, a firewall reload) or changed them (`nft flush chain ...`), and count
        what went through them to no worker."""
        if self.rules is None or self.rules.removed:
            return
        counted = self.rules.queued_packets()
        if counted is not None:  # else the table is gone: the last reading stays the total
            self.queued = self.queued_earlier + counted
        problem = None
        if counted is None:
            problem = "removed by another tool (a ruleset flush or firewall reload?)"
        elif time.monotonic() >= self.next_rules_check:
            self.next_rules_check = time.monotonic() + RULES_CHECK_INTERVAL
            if await asyncio.to_thread(self.rules.changed):
                problem = "changed by another tool (a chain flushed, a rule deleted, added or edited)"
        if problem is not None:
            log.warning("edufilter's rules were %s; they did not filter as configured until now: installing them "
                        "again", problem)
            self.queued_earlier = self.queued
            self.install_rules()  # also takes away whatever part of our table is left
            self.reinstalls += 1
            self.last_reinstall = problem
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
        totals = {"packets": 0, "flows": 0, "queue_dropped": 0, "user_dropped": 0, "connections_reused": 0,
                  "evasion": 0}
        for worker in self.workers:
            stats = worker.stats
            enforcer = stats.get("enforcer", {})
            kernel = kernel_counters(worker.queue) or stats.get("kernel") or {}
            self.count_enqueued(worker.queue, kernel)
            entry = {
                "worker": worker.index, "queue": worker.queue,
                "pid": worker.process.pid if worker.process is not None and worker.process.poll() is None else None,
                "state": worker.state, "restarts": worker.restarts, "hangs": worker.hangs,
                "policy_version": stats.get("policy_version"),
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
                "connections_reused": enforcer.get("decided_forgotten", 0),
                "evasion": enforcer.get("evasion", 0),
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
                                  if self.engine else None},
                       "problem": self.image_problem},
            "rules": {"backend": self.rules.backend.value, "table": f"inet {NFT_TABLE}", "queued_packets": self.queued,
                      "reinstalled": self.reinstalls, "last_reinstall": self.last_reinstall}
            if self.rules is not None and not self.rules.removed else None,
            "storage": {"full": self.image_problem is not None
                        or time.monotonic() - self.storage_failed_at < STORAGE_LOG_INTERVAL,
                        "lost_events": self.lost_events},
            "queues": queues,
            "totals": totals,
            "last_reload": self.last_reload,
            "hub": self.hub.status() if self.hub is not None else None,
        }

    async def keep_status(self) -> None:
        path = StateDir(self.state_dir).status
        while not self.stopping.is_set():
            status = self.status()
            try:
                await self.watch_rules(status["queues"])
            except EdufilterError as error:
                log.warning("%s", error)
            try:
                write_status(path, status)
            except EdufilterError as error:
                self.storage_failed("status", error)
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
                                   datetime.now(timezone.utc), group["name"])

    async def submit_review(self, form: ReviewForm) -> str:
        """For the block-page server: queue a review request for a block this daemon recorded."""
        if self.events is None:
            return "unavailable"
        found, _ = self.events.query(reference=form.reference, limit=1)
        if not found or (found[0].name, found[0].group) != (form.site, form.group):
            return "refused"
        event = found[0]

        def queue() -> int | None:
            from edufilter.api.reviews import (
                queue_review_request,  # the API's modules load with it
            )

            with PolicyStore(StateDir(self.state_dir).policy_db) as store:
                return queue_review_request(store, form.site, event.category or "", event.group, form.reference,
                                            form.reason, datetime.now(timezone.utc))

        return "sent" if await asyncio.to_thread(queue) is not None else "unavailable"

    def client_pseudonym(self, client: str) -> str:
        assert self.pseudonyms is not None  # made before the web servers start
        return self.pseudonyms.pseudonym(client, datetime.now(timezone.utc))

    async def start_web(self) -> None:
        settings = self.policy_meta["settings"]
        app = make_blockpage_app(self.explain_block, self.config.blockpage.default_language,
                                 submit_review=self.submit_review, pseudonym=self.client_pseudonym)
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
        self.stopping = asyncio.Event()
        self.reload_lock = asyncio.Lock()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        claim = claim_daemon(self.state_dir)
        try:
            return await self.run_claimed()
        finally:
            claim.release()

    async def run_claimed(self) -> int:
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.prepare_policy)
        self.pseudonyms = Pseudonymiser(StateDir(self.state_dir).pseudonym_keys, ZoneInfo(self.policy_meta["settings"]["timezone"]))
        # Filtering does not need the event log: a full or broken disk costs the events only.
        try:
            self.pseudonyms.rotate(datetime.now(timezone.utc))
            self.events = EventStore(StateDir(self.state_dir).events_db,
                                     StateDir(self.state_dir).events_jsonl if self.config.events.jsonl else None,
                                     self.config.events.retention_days, start_over_if_damaged=True)
        except EdufilterError as error:
            log.error("block events are not stored (lost events are counted in the status): %s", error)
        try:
            safe_search.prepare(self.state_dir)
            self.install_rules()
            for worker in self.workers:
                self.start_worker(worker)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self.on_sighup)
            await self.start_web()
            tasks = [loop.create_task(job()) for job in (self.keep_status, self.maintenance)]
            if self.config.hub.enabled:  # multi-site: follow the group's policy, publish the events
                from edufilter.hub.agent import GatewayAgent

                try:
                    self.hub = GatewayAgent(self.config.hub, self.state_dir, self.apply)
                    tasks.append(loop.create_task(self.hub.run(self.stopping)))
                except EdufilterError as error:  # filtering goes on with the stored policy
                    log.error("multi-site mode not started: %s", error)
            tasks += [loop.create_task(self.supervise(worker)) for worker in self.workers]
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
            write_status(StateDir(self.state_dir).status, self.status())
        except EdufilterError:
            pass
        if self.events is not None:
            self.events.close()


def expire_overrides(state_dir: Path, now: datetime) -> int:
    with PolicyStore(StateDir(state_dir).policy_db) as store:
        return store.expire_overrides(now)


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
