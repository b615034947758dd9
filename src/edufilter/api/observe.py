"""Handlers that report rather than change: health, status, stats, events, Prometheus
metrics, and the explained decision of `check`."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar

from aiohttp import web

from edufilter.api.connections import CONNECTIONS, RESOURCE_LOG
from edufilter.api.context import APPLIER, METRICS, STORE
from edufilter.api.operations import Call, json_response
from edufilter.api.problems import Problem
from edufilter.api.uploads import UPLOADS
from edufilter.api.validation import Invalid, checked_date_time
from edufilter.errors import EdufilterError, PolicyError
from edufilter.output.events import EventStore
from edufilter.output.stats import StatsRow, prometheus_text
from edufilter.output.status import read_status
from edufilter.policy.model import ClientIdentity, check_mac

log = logging.getLogger(__name__)

T = TypeVar("T")


class Explanation(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


# The decision engine's explain(name_or_url, client, at): a lookup in mapped images, or a
# compile of the policy image for a time outside the live image's window. It runs on a thread.
Explain = Callable[[str, ClientIdentity, datetime], Explanation]
# The daemon's status document (see output/status.py), or None when no daemon reports one.
StatusSource = Callable[[], Awaitable[dict[str, Any] | None]]

MAX_RUNNING_CHECKS = 2  # explains at once, each on a thread: a compile keeps a core busy
MAX_WAITING_CHECKS = 16  # more than these waiting get 503 instead of a place in line
CHECK_RETRY_AFTER = 1


class CheckSlots:
    """A bound on the checks in progress: a few run on threads, a few more wait, the rest
    are turned away, so no number of checks can take every thread or pile up unanswered."""

    def __init__(self, running: int = MAX_RUNNING_CHECKS, waiting: int = MAX_WAITING_CHECKS) -> None:
        self._slots = asyncio.Semaphore(running)
        self._admitted = 0
        self._limit = running + waiting

    @property
    def in_progress(self) -> int:
        """Checks running or waiting."""
        return self._admitted

    async def run(self, work: Callable[[], T]) -> T:
        if self._admitted >= self._limit:
            raise Problem(503, "busy", f"{self._admitted} checks are in progress; try again shortly",
                          headers={"Retry-After": str(CHECK_RETRY_AFTER)})
        self._admitted += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(work)
        finally:
            self._admitted -= 1


EXPLAIN: web.AppKey[Explain | None] = web.AppKey("explain")
CHECKS = web.AppKey("checks", CheckSlots)
STATUS_SOURCE: web.AppKey[StatusSource] = web.AppKey("status_source")
EVENTS: web.AppKey[EventStore | None] = web.AppKey("events")


def status_file_source(path: Path) -> StatusSource:
    """Reads the status file the daemon rewrites every second (<state>/run/status.json)."""

    async def read() -> dict[str, Any] | None:
        return await asyncio.to_thread(read_status, path)

    return read


async def healthz(call: Call) -> web.StreamResponse:
    return json_response({"status": "ok"})


async def status(call: Call) -> web.StreamResponse:
    applier = call.app[APPLIER]
    return json_response(
        {
            "policy_version": await call.app[STORE].read(lambda store: store.version),
            "live_version": applier.live_version,
            "applies": applier.applies,
            "apply_failures": applier.failures,
            "last_apply_error": applier.last_error,
            "uploads_running": call.app[UPLOADS].running,
            "daemon": await call.app[STATUS_SOURCE](),
        }
    )


async def stats(call: Call) -> web.StreamResponse:
    window, by = call.query["window"], call.query["by"]
    store = call.app[EVENTS]
    rows: list[StatsRow] = []
    if store is not None:
        filters = {name: call.query[name] for name in ("group", "category", "verdict") if name in call.query}
        rows = await asyncio.to_thread(store.stats.query, window, by, **filters)
    return json_response(
        {
            "window": window,
            "by": by,
            "rows": [
                {"start": row.start.isoformat(), "key": row.key, "flows": row.flows, "packets": row.packets}
                for row in rows
            ],
        }
    )


_EVENT_FILTERS = ("group", "category", "action", "client", "reference")


async def events(call: Call) -> web.StreamResponse:
    store = call.app[EVENTS]
    if store is None:  # no daemon records events for this process
        return json_response({"items": [], "next_cursor": None, "total": 0})
    filters: dict[str, Any] = {name: call.query[name] for name in _EVENT_FILTERS if name in call.query}
    for name in ("since", "until"):
        if name in call.query:
            filters[name] = checked_date_time(call.query[name])
    found, following = await asyncio.to_thread(
        store.query, limit=call.query["limit"], cursor=call.query.get("cursor"), **filters
    )
    return json_response({"items": [event.to_dict() for event in found], "next_cursor": following, "total": None})


async def check(call: Call) -> web.StreamResponse:
    explain = engine_explain(call.app)
    identity, at = client_identity(call.body["client"]), check_moment(call.body)
    explanation = await call.app[CHECKS].run(lambda: explain(call.body["target"], identity, at))
    return json_response(explanation.to_dict())


def engine_explain(app: web.Application) -> Explain:
    """The decision engine's explain, or 503 where none runs."""
    explain = app[EXPLAIN]
    if explain is None:
        raise Problem(503, "engine-unavailable", "no decision engine is running here (no compiled policy)")
    return explain


def check_moment(body: dict[str, Any]) -> datetime:
    """A check body's `at`, default now."""
    return checked_date_time(body["at"]) if "at" in body else datetime.now(timezone.utc)


def client_identity(client: dict[str, Any]) -> ClientIdentity:
    """The client of a check body, or 422 naming what is wrong with it."""
    problems = []
    try:
        address = str(ipaddress.ip_address(client["address"]))
    except ValueError as error:
        problems.append(Invalid("client.address", str(error)))
    mac = client.get("mac")
    if mac is not None:
        try:
            mac = check_mac(mac)
        except PolicyError as error:
            problems.append(Invalid("client.mac", str(error)))
    if problems:
        raise Problem(422, "validation-error", "the client is not valid", invalid_params=problems)
    return ClientIdentity(address, mac, client.get("interface"), client.get("vlan"))


# Prometheus text exposition format 0.0.4


async def metrics(call: Call) -> web.StreamResponse:
    applier = call.app[APPLIER]
    counters = call.app[METRICS]
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, int]]) -> None:
        lines.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"))
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    metric("edufilter_policy_version", "gauge", "Policy version stored in the policy database.",
           [("", await call.app[STORE].read(lambda store: store.version))])
    if applier.live_version is not None:
        metric("edufilter_policy_live_version", "gauge", "Policy version the last successful apply made live.",
               [("", applier.live_version)])
    metric("edufilter_api_applies_total", "counter", "Policy applies by the admin API, by result.",
           [('{result="ok"}', applier.applies), ('{result="failed"}', applier.failures)])
    metric("edufilter_api_requests_total", "counter", "Admin API requests answered, by method and status.",
           [(f'{{method="{method}",code="{code}"}}', count)
            for (method, code), count in sorted(counters.requests.items())])
    metric("edufilter_api_auth_failures_total", "counter", "Requests with an unknown or revoked token.",
           [("", counters.auth_failures)])
    metric("edufilter_api_throttled_total", "counter", "Requests refused for too many failed authentications.",
           [("", counters.throttled)])
    connections = call.app[CONNECTIONS]
    metric("edufilter_api_connections", "gauge", "Connections open to the admin API.",
           [("", sum(connections.open.values()))])
    metric("edufilter_api_connections_refused_total", "counter",
           "Connections refused: too many from one address or in all.", [("", connections.refused)])
    metric("edufilter_api_resource_errors_total", "counter",
           "Accepts and requests that failed for want of descriptors or memory.", [("", call.app[RESOURCE_LOG].total)])
    metric("edufilter_api_uploads_running", "gauge", "List uploads being read, stored or applied.",
           [("", call.app[UPLOADS].running)])
    status = await call.app[STATUS_SOURCE]()
    totals = status.get("totals", {}) if isinstance(status, dict) else {}
    for key, name, help_text in (
        ("fail_open", "edufilter_fail_open_packets_total",
         "Packets that passed uninspected: no worker on their queue, or the queue full (fail-open)."),
        ("fail_closed_dropped", "edufilter_fail_closed_dropped_packets_total",
         "Packets dropped because no worker could inspect them (fail-closed)."),
    ):
        if isinstance(totals.get(key), int):
            metric(name, "counter", help_text, [("", totals[key])])
    rules = status.get("rules") if isinstance(status, dict) else None
    if isinstance(rules, dict) and isinstance(rules.get("queued_packets"), int):
        metric("edufilter_queued_packets_total", "counter",
               "Packets the rules handed to the queues (their to_queue counter, read each second).",
               [("", rules["queued_packets"])])
    text = "\n".join(lines) + "\n" + _worker_metrics(status)
    return web.Response(body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _worker_metrics(status: dict[str, Any] | None) -> str:
    """The queue counters of the daemon's status file, as output.stats writes them."""
    queues = status.get("queues") if status else None
    if not isinstance(queues, list):
        return ""
    workers = {str(queue["worker"]): queue for queue in queues if isinstance(queue, dict) and "worker" in queue}
    try:
        return prometheus_text({"workers": workers})
    except EdufilterError as error:
        log.warning("admin API: the daemon's status has unusable counters: %s", error)
        return ""
