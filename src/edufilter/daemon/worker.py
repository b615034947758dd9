"""One worker process: binds one NFQUEUE queue and runs the enforcer loop over it.

The Cython loop (enforce/_enforce.pyx) decides nearly every packet without Python; this module does
the rest: it maps the policy images (and maps new ones, in a thread, while packets keep
flowing), answers the packets the loop flags (DNS answers, safe search, the
block page), re-decides remembered flows after a policy change, and reports events and
counters to the supervisor over its socketpair.

Run by the supervisor as `python -m edufilter.daemon.worker --queue N --control-fd FD ...`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import socket
import struct
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from edufilter._fastpath import FlowExtractor, NameKind
from edufilter.capture._queue import DROP, REPEAT, PacketQueue, queue_counters
from edufilter.classify._classify import RuleAction
from edufilter.classify.engine import Engine
from edufilter.config import Config, load_config
from edufilter.enforce import blockpage, dns
from edufilter.enforce._enforce import Code, Enforcer, Reason, Slow, Unnamed
from edufilter.enforce.blockpage import new_reference
from edufilter.enforce.inject import IPPROTO_TCP, RawSender, parse_ip
from edufilter.enforce.safe_search import SafeSearchAddresses
from edufilter.errors import EdufilterError
from edufilter.rules.marks import INJECTED, MarkLayout
from edufilter.state import StateDir

log = logging.getLogger("edufilter.worker")

STATS_INTERVAL = 1.0
SERVE_SLICE = 0.1  # seconds of packets between looks at the control socket
SAFE_SEARCH_PENDING = 4096  # queries rewritten and not yet answered, per worker
SAFE_SEARCH_TIMEOUT = 10.0
BLOCK_PAGE_MSS = 1200

ACTION_NAMES = {
    RuleAction.ACTION_ALLOW: "allow", RuleAction.ACTION_BLOCK: "block", RuleAction.ACTION_DROP: "drop",
    RuleAction.ACTION_SINKHOLE: "sinkhole", RuleAction.ACTION_MONITOR: "monitor",
}
ACTION_CODES = {name: code for code, name in ACTION_NAMES.items()}
KIND_NAMES = {NameKind.KIND_DNS: "dns", NameKind.KIND_SNI: "sni", NameKind.KIND_HTTP_HOST: "http_host",
              NameKind.KIND_QUIC_INITIAL: "quic_sni"}
REASON_CATEGORIES = {Reason.REASON_DOT: "bypass-shield-dot", Reason.REASON_QUIC: "quic-blocked",
                     Reason.REASON_DNS_TCP: "dns-over-tcp", Reason.REASON_EVASION: "evasion",
                     Reason.REASON_SAFE_SEARCH: "safe-search-bypass"}
UNNAMED_CODES = {"allow": Unnamed.UNNAMED_ALLOW, "block-web": Unnamed.UNNAMED_BLOCK_WEB,
                 "block-all": Unnamed.UNNAMED_BLOCK_ALL}
SERVICE_BINDING_TYPES = (64, 65)  # SVCB, HTTPS: where browsers learn ECH keys and encrypted DNS


def verdict_code(action: int) -> int:
    if action in (RuleAction.ACTION_BLOCK, RuleAction.ACTION_SINKHOLE):
        return Code.CODE_REJECT
    if action == RuleAction.ACTION_DROP:
        return Code.CODE_DROP
    return Code.CODE_ALLOW


@dataclass(frozen=True, slots=True)
class PolicyView:
    """One mapped policy as the worker uses it: the engine and what set_policy needs."""

    engine: Engine
    groups: list[tuple[int, bool, bool, bool, int]]
    url_hosts: list[str]

    @classmethod
    def load(cls, state_dir: Path) -> PolicyView:
        engine = Engine.open(state_dir)
        engine.classifier.set_interface_groups(interface_groups(engine))
        groups = [
            (ACTION_CODES[group["default_action"]], group["safe_search"], group["quic"] == "block",
             group["bypass_shield"], UNNAMED_CODES[group.get("unnamed", "allow")])
            for group in engine.meta["groups"]
        ]
        return cls(engine, groups, sorted(engine.urls))

    @property
    def meta(self) -> dict:
        return self.engine.meta

    def group_name(self, group: int) -> str:
        return self.meta["groups"][group]["name"]

    def list_name(self, list_id: int) -> str | None:
        return self.meta["lists"][list_id]["name"] if list_id >= 0 else None


def interface_groups(engine: Engine) -> dict[int, int]:
    """ifindex -> group for the policy's interface (and VLAN) client matches, resolved on this
    host: a VLAN match names the parent interface and the VLAN id of a VLAN device on it."""
    if not engine.meta["interfaces"]:
        return {}
    from pyroute2 import IPRoute

    found: dict[int, int] = {}
    with IPRoute() as ipr:
        links = ipr.get_links()
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in links}
        for link in links:
            info = link.get_attr("IFLA_LINKINFO")
            vlan = None
            parent = names.get(link.get_attr("IFLA_LINK"))
            if info is not None and info.get_attr("IFLA_INFO_KIND") == "vlan":
                vlan = info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_VLAN_ID")
            name = names[link["index"]]
            group = None
            if vlan is not None and parent is not None:
                group = engine.interface_group(parent, vlan)
            if group is None:
                group = engine.interface_group(name, None)
            if group is not None:
                found[link["index"]] = group
    return found


class SlowPath:
    """The handler the enforcer calls for flagged packets, with the state that needs."""

    def __init__(self, config: Config, sender: RawSender, layout: MarkLayout, worker: int,
                 safe_addresses: SafeSearchAddresses | None = None) -> None:
        self.config = config
        self.sender = sender
        self.safe_addresses = safe_addresses or SafeSearchAddresses(None, worker, 1)
        self.injected_mark = layout.packet_mark(0, INJECTED)
        self.worker = worker
        self.view: PolicyView | None = None
        self.rewritten: OrderedDict[tuple[bytes, int, int], tuple[str, float]] = OrderedDict()
        self.events: list[dict] = []
        self.outbox: list[bytes] = []  # forged packets, sent once the batch's verdicts are out
        self.failures = 0

    def handle(self, enforcer: Enforcer, count: int) -> None:
        now = time.time()
        for index, reason in enforcer.slow_packets(count):
            packet = enforcer.packet(index)
            try:
                self.dispatch(enforcer, index, reason, packet, now)
            except Exception:  # one odd packet must never stop the worker: count it, let it pass
                self.failures += 1
                log.exception("worker %d: handling a %s packet failed", self.worker, Slow(reason).name)

    def after_verdicts(self) -> None:
        for packet in self.outbox:
            self.sender.send(packet, self.injected_mark)
        self.outbox.clear()

    def dispatch(self, enforcer: Enforcer, index: int, reason: int, packet: dict, now: float) -> None:
        if reason == Slow.SLOW_EVENT:
            self.event(packet, now)
            if packet["code"] == Code.CODE_REJECT and packet["protocol"] == IPPROTO_TCP:
                self.reset_server(packet)
        elif reason == Slow.SLOW_DNS_ANSWER:
            self.answer_blocked_query(enforcer, index, packet, now)
        elif reason == Slow.SLOW_DNS_SPECIAL:
            self.special_query(enforcer, index, packet, now)
        elif reason == Slow.SLOW_DNS_REPLY:
            self.restore_reply(enforcer, index, packet, now)
        elif reason == Slow.SLOW_HTTP_URL:
            self.http_url(enforcer, index, packet, now)
        elif reason == Slow.SLOW_HTTP_BLOCK:
            self.block_page(enforcer, index, packet, now)
        elif reason == Slow.SLOW_SAFE_SEARCH:
            self.hold_to_safe_search(enforcer, index, packet, now)

    # ---- DNS

    def answer_blocked_query(self, enforcer: Enforcer, index: int, packet: dict, now: float) -> None:
        settings = self.view.meta["settings"]
        mode = "sinkhole" if packet["action"] == RuleAction.ACTION_SINKHOLE else "nxdomain"
        answer = dns.blocked_answer(packet["payload"], mode, settings["block_page_ipv4"], settings["block_page_ipv6"])
        if answer is not None:
            self.outbox.append(answer)
        enforcer.set_verdict(index, DROP)
        self.event(packet, now)

    def special_query(self, enforcer: Enforcer, index: int, packet: dict, now: float) -> None:
        group = self.view.meta["groups"][packet["group"]]
        name = packet["name"]
        shield = None
        if group["bypass_shield"] and dns.bypass_answer(name):
            shield = "nxdomain"
        elif group["bypass_shield"] and packet["dns_qtype"] in SERVICE_BINDING_TYPES:
            shield = "sinkhole"  # NODATA for these types: no ECH keys, no resolver hints
        target = dns.safe_search_target(name, self.config.dns.youtube) if group["safe_search"] else None
        if packet["protocol"] == IPPROTO_TCP:
            if shield is not None or target is not None:
                self.refuse_over_tcp(enforcer, index, packet, now)
            return
        if shield is not None:
            settings = self.view.meta["settings"]
            answer = dns.blocked_answer(packet["payload"], shield, settings["block_page_ipv4"],
                                        settings["block_page_ipv6"])
            if answer is not None:
                self.outbox.append(answer)
                enforcer.set_verdict(index, DROP)
            return
        rewritten = dns.rewrite_query(packet["payload"], target) if target else None
        if rewritten is None:
            return
        original = dns.query_name(packet["payload"]) or name
        (query_id,) = struct.unpack_from("!H", parse_ip(packet["payload"]).transport, 8)
        self.remember_rewrite((packet["src"], packet["sport"], query_id), original, now)
        # Through the rules again with the safe-search code, so the reply is queued to us.
        enforcer.set_verdict(index, REPEAT, payload=rewritten, code=Code.CODE_SAFE_SEARCH)

    def refuse_over_tcp(self, enforcer: Enforcer, index: int, packet: dict, now: float) -> None:
        """A query safe search would rewrite, or the shield answer, sent over TCP: a stream's
        bytes cannot be replaced by others of another length, nor an answer slipped in, without
        breaking its sequence numbers. The connection is reset instead, so TCP is no way around
        either (their answers are small: a resolver never sends them truncated, which is when
        a stub falls back to TCP)."""
        packet.update(action=RuleAction.ACTION_BLOCK, code=Code.CODE_REJECT, list_id=-1, tier=-1,
                      reason=Reason.REASON_DNS_TCP)
        enforcer.decide_packet(index, RuleAction.ACTION_BLOCK, Code.CODE_REJECT, -1, -1, Reason.REASON_DNS_TCP)
        self.reset_server(packet)
        self.event(packet, now)

    def remember_rewrite(self, key: tuple[bytes, int, int], original: str, now: float) -> None:
        self.rewritten[key] = (original, now)
        self.rewritten.move_to_end(key)
        while len(self.rewritten) > SAFE_SEARCH_PENDING or (
                self.rewritten and now - next(iter(self.rewritten.values()))[1] > SAFE_SEARCH_TIMEOUT):
            self.rewritten.popitem(last=False)

    def restore_reply(self, enforcer: Enforcer, index: int, packet: dict, now: float) -> None:
        parsed = parse_ip(packet["payload"])
        if parsed is None or len(parsed.transport) < 10:
            return
        (query_id,) = struct.unpack_from("!H", parsed.transport, 8)
        pending = self.rewritten.pop((packet["dst"], packet["dport"], query_id), None)
        if pending is None:
            return  # a reply on a safe-search flow to a query we did not rewrite
        target = dns.safe_search_target(pending[0], self.config.dns.youtube)
        if target is not None:
            for address, ttl in dns.answered_addresses(packet["payload"]):
                self.safe_addresses.learn(target, address, ttl, now)
        restored = dns.restore_answer(packet["payload"], pending[0])
        if restored is not None:
            enforcer.set_verdict(index, REPEAT, payload=restored, code=Code.CODE_PASS)

    # ---- plain HTTP

    def http_url(self, enforcer: Enforcer, index: int, packet: dict, now: float) -> None:
        matches = self.view.engine.url_matches(packet["name"], packet["path"] or "/")
        if self.decide_named(enforcer, index, packet, now, matches) == Code.CODE_REJECT:
            self.block_page(enforcer, index, packet, now)

    def decide_named(self, enforcer: Enforcer, index: int, packet: dict, now: float,
                     url_matches: list[tuple[int, int]] = ()) -> int:
        action, tier, _, list_id, _, order, _ = enforcer.classify_name(
            packet["group"], packet["name"], packet["dst"], now, url_matches)
        reason = Reason.REASON_RULE
        if action == RuleAction.NO_RULE:
            action, list_id, tier = ACTION_CODES[self.view.meta["groups"][packet["group"]]["default_action"]], -1, -1
        code = verdict_code(action)
        enforcer.decide_packet(index, action, code, list_id, tier, reason)
        packet.update(action=action, code=code, list_id=list_id, tier=tier, reason=reason)
        if code != Code.CODE_ALLOW or action == RuleAction.ACTION_MONITOR:
            self.event(packet, now)
        return code

    def hold_to_safe_search(self, enforcer: Enforcer, index: int, packet: dict, now: float) -> int:
        """A TLS or QUIC connection named after a name safe search rewrites, in a safe-search
        group: allowed only to an address the gateway's rewrite answered for it, reset
        elsewhere (the pupil resolved the name some other way: DoH, a hosts file, an old cache)."""
        if not self.view.meta["groups"][packet["group"]]["safe_search"]:
            return Code.CODE_ALLOW
        target = dns.safe_search_target(packet["name"], self.config.dns.youtube)
        if target is None or self.safe_addresses.knows(target, packet["dst"], now):
            return Code.CODE_ALLOW
        packet.update(action=RuleAction.ACTION_BLOCK, code=Code.CODE_REJECT, list_id=-1, tier=-1,
                      reason=Reason.REASON_SAFE_SEARCH)
        enforcer.decide_packet(index, RuleAction.ACTION_BLOCK, Code.CODE_REJECT, -1, -1, Reason.REASON_SAFE_SEARCH)
        if packet["protocol"] == IPPROTO_TCP:
            self.reset_server(packet)
        self.event(packet, now)
        return Code.CODE_REJECT

    def reset_server(self, packet: dict) -> None:
        """The kernel resets the client; the server is told too, so it does not wait for a
        ClientHello that never comes."""
        reset = blockpage.reset_to_server(packet["payload"])
        if reset is not None:
            self.outbox.append(reset)

    def block_page(self, enforcer: Enforcer, index: int, packet: dict, now: float) -> None:
        reference = new_reference()
        info = self.block_info(packet, reference, now)
        settings = self.view.meta["settings"]
        # The review form posts to the block-page server, at the address of the client's own family.
        address = settings["block_page_ipv6"] if packet["payload"][0] >> 4 == 6 else settings["block_page_ipv4"]
        status, headers, body = blockpage.render_block_page(
            info, accept_language(packet["payload"]), self.config.blockpage.default_language,
            blockpage.review_url(address, self.config.blockpage.port))
        for segment in blockpage.block_response_segments(packet["payload"], body, BLOCK_PAGE_MSS, status, headers):
            self.outbox.append(segment)
        self.reset_server(packet)
        # The client got its answer and a clean close: drop the rest of the flow quietly (a
        # reset would answer its closing ACK and FIN).
        enforcer.decide_packet(index, packet["action"], Code.CODE_DROP, packet["list_id"], packet["tier"],
                               packet["reason"])
        self.event(packet, now, reference)

    def block_info(self, packet: dict, reference: str, now: float) -> blockpage.BlockInfo:
        meta = self.view.meta
        group = meta["groups"][packet["group"]]
        category = self.view.list_name(packet["list_id"]) or REASON_CATEGORIES.get(packet["reason"], "")
        titles = meta["categories"].get(category, {}).get("titles", {})
        title = titles.get(self.config.blockpage.default_language) or titles.get("en") or category
        return blockpage.BlockInfo(packet["name"] or "", category, title, group["title"] or group["name"],
                                   ACTION_NAMES.get(packet["action"], "block"), reference,
                                   datetime.fromtimestamp(now, timezone.utc), group["name"])

    # ---- events

    def event(self, packet: dict, now: float, reference: str | None = None) -> None:
        list_name = self.view.list_name(packet["list_id"])
        kind = KIND_NAMES.get(packet["kind"]) if packet["name"] else ("address" if packet["tier"] >= 0 else "default")
        destination = None
        if not packet["name"]:
            address = ipaddress.ip_address(packet["dst"])
            destination = f"[{address}]:{packet['dport']}" if address.version == 6 else f"{address}:{packet['dport']}"
        self.events.append({
            "time": now,
            "group": self.view.group_name(packet["group"]),
            "category": list_name or REASON_CATEGORIES.get(packet["reason"]),
            "name": packet["name"],
            "destination": destination,
            "kind": kind,
            "action": ACTION_NAMES.get(packet["action"], "block"),
            "client_address": str(ipaddress.ip_address(packet["src"])),
            "reference": reference or new_reference(),
            "list_id": packet["list_id"],
        })


def accept_language(request_packet: bytes) -> str | None:
    """The Accept-Language header of a request head in this packet, if it carries one."""
    parsed = parse_ip(request_packet)
    if parsed is None or len(parsed.transport) < 20:
        return None
    head = parsed.transport[(parsed.transport[12] >> 4) * 4:]
    for line in head.split(b"\r\n"):
        if line[:16].lower() == b"accept-language:":
            return line[16:].strip().decode("latin-1")
    return None


class Worker:
    """The process: queue, enforcer, slow path, policy reloads and the supervisor link."""

    def __init__(self, config: Config, queue_num: int, worker: int, control: socket.socket) -> None:
        self.config = config
        self.queue_num = queue_num
        self.worker = worker
        self.control = control
        self.layout = MarkLayout(config.marks.mask)
        self.queue = PacketQueue(queue_num, max_length=config.queue.max_length, fail_open=config.queue.fail_open,
                                 batch_size=config.queue.batch)
        self.sender = RawSender()
        self.slow = SlowPath(config, self.sender, self.layout, worker,
                             SafeSearchAddresses(StateDir(config.state_dir).safe_search_addresses, worker, config.worker_count))
        self.enforcer = Enforcer(self.queue, FlowExtractor(verify_checksums=True), self.slow, config.marks.mask,
                                 config.queue.batch)
        self.pending: PolicyView | Exception | None = None
        self.loading: threading.Thread | None = None
        self.decisions: dict[tuple[str, str | None, int], int] = {}
        self.running = True

    def install(self, view: PolicyView) -> None:
        previous_view = self.slow.view
        counts = self.enforcer.set_policy(view.engine.classifier, view.groups, dns.special_names(), view.url_hosts)
        if previous_view is not None:
            self.fold_counts(previous_view, counts)
        self.slow.view = view

    def fold_counts(self, view: PolicyView, counts: dict[tuple[int, int, int], int]) -> None:
        """Decision counters by group and list name, carried across policy versions."""
        for (group, list_id, code), flows in counts.items():
            key = (view.group_name(group), view.list_name(list_id), code)
            self.decisions[key] = self.decisions.get(key, 0) + flows

    def start_reload(self) -> None:
        if self.loading is not None and self.loading.is_alive():
            return

        def load() -> None:
            try:
                self.pending = PolicyView.load(self.config.state_dir)
            except Exception as error:  # reported to the supervisor; the old policy stays
                self.pending = error

        self.loading = threading.Thread(target=load, name="policy-load", daemon=True)
        self.loading.start()

    def finish_reload(self) -> None:
        pending, self.pending = self.pending, None
        if isinstance(pending, Exception):
            self.send({"type": "reload_failed", "error": str(pending)})
            return
        started = time.monotonic()
        old = self.slow.view
        self.install(pending)
        changed = self.redecide(old, pending)
        self.send({"type": "reloaded", "version": pending.engine.version, "redecided": changed,
                   "seconds": round(time.monotonic() - started, 3)})

    def redecide(self, old: PolicyView | None, new: PolicyView) -> int:
        """Flows decided under the old policy whose verdict changes: new conntrack marks now."""
        from edufilter.rules.conntrack import (  # pyroute2: only when needed
            FlowTuple,
            set_code,
        )

        now = time.time()
        changed = 0
        for version, protocol, src, dst, sport, dport, group, code, name in self.enforcer.decided_flows():
            new_group = self.regroup(old, new, group, src)
            decision = new.engine.classifier.decide(new_group, name.encode() if name else None, dst, now)
            action = decision[0] if decision[0] != RuleAction.NO_RULE else new.groups[new_group][0]
            new_code = verdict_code(action)
            if new_code == code or (code == Code.CODE_HTTP_FOLLOW and new_code == Code.CODE_ALLOW):
                continue
            flow = FlowTuple(version, protocol, str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)),
                             sport, dport)
            try:
                if set_code(self.layout, flow, new_code):
                    changed += 1
            except EdufilterError as error:
                log.warning("worker %d: re-deciding %s failed: %s", self.worker, flow, error)
            self.enforcer.update_decided(version, protocol, src, dst, sport, dport, new_code)
        return changed

    @staticmethod
    def regroup(old: PolicyView | None, new: PolicyView, group: int, src: bytes) -> int:
        """The flow's group under the new policy: the same group by name, else by address."""
        if old is not None:
            name = old.group_name(group)
            for index, meta in enumerate(new.meta["groups"]):
                if meta["name"] == name:
                    return index
        return new.engine.classifier.client_group(src)[0]

    # ---- supervisor link

    def send(self, message: dict) -> None:
        try:
            self.control.send(json.dumps(message, separators=(",", ":")).encode())
        except (BlockingIOError, InterruptedError):
            pass  # the supervisor is busy; counters come again in a second, events are retried
        except OSError:
            self.running = False  # the supervisor is gone: stop (the kernel bypasses or drops)

    def read_control(self) -> None:
        while True:
            try:
                data = self.control.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.running = False
                return
            if not data:
                self.running = False
                return
            message = json.loads(data)
            if message.get("type") == "reload":
                self.start_reload()
            elif message.get("type") == "stop":
                self.running = False

    def report(self) -> None:
        if self.slow.events:
            events, self.slow.events = self.slow.events, []
            for start in range(0, len(events), 200):  # datagrams stay well under the socket buffer
                self.send({"type": "events", "worker": self.worker, "events": events[start:start + 200]})
        decisions = dict(self.decisions)
        for (group, list_id, code), flows in self.enforcer.decision_counts().items():
            key = (self.slow.view.group_name(group), self.slow.view.list_name(list_id), code)
            decisions[key] = decisions.get(key, 0) + flows
        self.send({
            "type": "stats", "worker": self.worker, "queue": self.queue_num, "pid": os.getpid(),
            "policy_version": self.slow.view.engine.version,
            "enforcer": self.enforcer.stats, "queue_socket": self.queue.stats,
            "kernel": queue_counters(self.queue_num) or {},
            "slow_path_failures": self.slow.failures, "quic": self.enforcer.quic_stats,
            "injected": asdict(self.sender.counters),
            "decisions": [[group, category, code, flows] for (group, category, code), flows in decisions.items()],
        })

    def run(self) -> None:
        self.install(PolicyView.load(self.config.state_dir))
        self.send({"type": "ready", "worker": self.worker, "pid": os.getpid(),
                   "version": self.slow.view.engine.version})
        next_report = time.monotonic() + STATS_INTERVAL
        while self.running:
            self.enforcer.serve(SERVE_SLICE)
            self.read_control()
            if self.pending is not None:
                self.finish_reload()
            if time.monotonic() >= next_report:
                self.report()
                next_report = time.monotonic() + STATS_INTERVAL
        self.report()
        self.queue.close()
        self.sender.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edufilter-worker")
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--state-dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    control = socket.socket(fileno=args.control_fd)
    control.setblocking(False)
    try:
        config = load_config(args.config, args.state_dir)
        Worker(config, args.queue, args.worker, control).run()
    except EdufilterError as error:
        log.error("worker %d (queue %d): %s", args.worker, args.queue, error)
        try:
            control.send(json.dumps({"type": "fatal", "worker": args.worker, "error": str(error)}).encode())
        except OSError:
            pass
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
