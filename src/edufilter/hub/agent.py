"""The gateway agent: follows the group's policy and the site's part in the hub, stores each
revision in the local policy store and applies it as a local change would, in order,
resuming from the last revision applied; publishes the site's block events from the outbox.

The hub being unreachable changes nothing for filtering: the last policy stored stays live,
events wait in the outbox, and both catch up when a server answers again."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from edufilter.api.context import Applier
from edufilter.config import HubConfig
from edufilter.errors import EdufilterError
from edufilter.hub.model import (
    GROUP_BUCKET,
    HubError,
    bucket_stream,
    bucket_subject,
    combined_policy,
    decode_part,
    events_subject,
    site_bucket,
    site_inbox,
)
from edufilter.hub.outbox import Outbox
from edufilter.policy.model import Policy

log = logging.getLogger("edufilter.hub")

HUB_DIR = "hub"
APPLIED_FILE = "applied.json"
OUTBOX_FILE = "outbox.sqlite"
POLL_INTERVAL = 5.0  # a missed change notification costs at most this long
RETRY_DELAY = 1.0
NOTICE_RETRY = 0.02  # a notice with nothing new behind it: read again after 20, 40, ... 1280 ms
NOTICE_RETRY_MAX = 1.5
PING_INTERVAL = 5  # seconds; two unanswered pings (a cut link) and the client reconnects elsewhere
PUBLISH_BATCH = 256


def hub_dir(state_dir: Path) -> Path:
    return Path(state_dir) / HUB_DIR


async def connect(config: HubConfig, name: str, **options: object) -> nats.NATS:
    """A connection to the group's servers that reconnects for ever; TLS when a CA is set."""
    password = Path(config.password_file).read_text().strip() if config.password_file else None
    tls = ssl.create_default_context(cafile=config.ca_file) if config.ca_file else None
    settings: dict = {"allow_reconnect": True, "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5,
                      "connect_timeout": 2, "ping_interval": PING_INTERVAL, "max_outstanding_pings": 2}
    if config.site:
        settings["inbox_prefix"] = site_inbox(config.site)
    settings.update(options)
    return await nats.connect(servers=list(config.servers), name=name, user=config.user or None,
                              password=password, tls=tls, **settings)


@dataclass
class Part:
    revision: int = 0  # the KV revision (stream sequence) this copy is
    files: dict[str, str] = field(default_factory=dict)


class PolicyFollower:
    """Applies every revision of the group's and the site's parts, oldest first."""

    def __init__(self, state_dir: Path, site: str, applier: Applier) -> None:
        self.state_dir = Path(state_dir)
        self.site = site
        self.applier = applier
        self.buckets = (GROUP_BUCKET, site_bucket(site))
        self.parts = {bucket: Part() for bucket in self.buckets}
        self.rejected = 0  # revisions that did not make a valid policy: skipped, the last good one stays
        self.applied = 0
        self.changed = asyncio.Event()
        self._load()

    @property
    def path(self) -> Path:
        return hub_dir(self.state_dir) / APPLIED_FILE

    def _load(self) -> None:
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:  # start over: the revisions are applied again, in order
            log.error("%s: unreadable (%s): following the hub from its first revision", self.path, error)
            return
        for bucket in self.buckets:
            if bucket in saved:
                self.parts[bucket] = Part(int(saved[bucket]["revision"]), dict(saved[bucket]["files"]))
        self.rejected = int(saved.get("rejected", 0))

    def _save(self) -> None:
        saved = {bucket: {"revision": part.revision, "files": part.files} for bucket, part in self.parts.items()}
        saved["rejected"] = self.rejected
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(saved))
        os.replace(temporary, self.path)

    def revisions(self) -> dict[str, int]:
        return {bucket: part.revision for bucket, part in self.parts.items()}

    async def catch_up(self, client: nats.NATS) -> int:
        """Apply every revision newer than the last applied; the number taken."""
        js = client.jetstream()
        taken = 0
        for bucket in self.buckets:
            while True:
                part = self.parts[bucket]
                try:
                    message = await js.get_msg(bucket_stream(bucket), seq=part.revision + 1,
                                               subject=bucket_subject(bucket), next=True)
                except NotFoundError:
                    break
                await self.take(bucket, message.seq, message.data or b"", message.headers or {})
                taken += 1
        return taken

    async def take(self, bucket: str, revision: int, data: bytes, headers: dict) -> None:
        """Make this revision the bucket's latest part and apply the combination; one that
        does not make a policy is counted and the last good policy stays live, while the
        part is kept, so the next revision of either part combines with it."""
        deleted = headers.get("KV-Operation") in ("DEL", "PURGE")
        try:
            self.parts[bucket] = Part(revision, {} if deleted else decode_part(data))
            group, site = (self.parts[b].files for b in self.buckets)
            if not group:
                raise HubError("there is no group policy (yet)")
            policy = combined_policy(group, site)
            await asyncio.to_thread(_store, self.state_dir, policy)
            version = await self.applier()
        except EdufilterError as error:
            self.rejected += 1
            self.parts[bucket].revision = revision
            log.error("hub: %s revision %d not applied (the last good policy stays live): %s", bucket, revision,
                      error)
        else:
            self.applied += 1
            log.info("hub: %s revision %d applied as policy version %d", bucket, revision, version)
        self._save()

    async def follow(self, client: nats.NATS, stopping: asyncio.Event) -> None:
        """Catch up, then again at each change notification (or every POLL_INTERVAL)."""

        async def notified(_message: object) -> None:
            self.changed.set()

        for bucket in self.buckets:
            await client.subscribe(bucket_subject(bucket), cb=notified)
        notified_at_wake = False
        delay = NOTICE_RETRY
        while not stopping.is_set():
            self.changed.clear()
            try:
                taken = await self.catch_up(client)
            except (NatsError, asyncio.TimeoutError, EdufilterError) as error:
                log.warning("hub: cannot read the policy now (%s); filtering goes on with the last one", error)
                await _sleep_unless(stopping, RETRY_DELAY)
                continue
            # The notice can come before the stream's leader has the revision stored: read again soon.
            if notified_at_wake and not taken and delay <= NOTICE_RETRY_MAX:
                await _sleep_unless(stopping, delay)
                delay *= 2
                continue
            delay = NOTICE_RETRY
            try:
                await asyncio.wait_for(self.changed.wait(), POLL_INTERVAL)
                notified_at_wake = True
            except asyncio.TimeoutError:
                notified_at_wake = False


def _store(state_dir: Path, policy: Policy) -> None:
    from edufilter.policy.defaults import store_policy

    store_policy(state_dir, policy)


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except asyncio.TimeoutError:
        pass


class EventPublisher:
    """Sends the outbox to the site's events subject, oldest first; an event leaves the
    outbox only once the stream acknowledged it (stored on a quorum of servers)."""

    def __init__(self, outbox: Outbox, site: str) -> None:
        self.outbox = outbox
        self.site = site
        self.subject = events_subject(site)
        self.published = 0
        self.lost = 0  # events the outbox could not take (a full disk); stored locally all the same
        self.waiting_count = outbox.pending()  # kept here: the status is read after the outbox closes
        self.dropped_count = outbox.dropped()
        self.waiting = asyncio.Event()

    def add(self, records: Sequence[dict]) -> None:
        try:
            self.outbox.append([json.dumps(record, sort_keys=True).encode() for record in records])
        except EdufilterError as error:
            self.lost += len(records)
            log.error("hub: %d block events not queued for the hub (%d so far): %s", len(records), self.lost, error)
            return
        self.count()
        self.waiting.set()

    def count(self) -> None:
        self.waiting_count = self.outbox.pending()
        self.dropped_count = self.outbox.dropped()

    async def drain(self, client: nats.NATS) -> int:
        js = client.jetstream()
        sent = 0
        while batch := await asyncio.to_thread(self.outbox.oldest, PUBLISH_BATCH):
            acks = [js.publish(self.subject, payload, headers={"Nats-Msg-Id": f"{self.site}-{event_id}"})
                    for event_id, payload in batch]
            await asyncio.gather(*acks)  # the id makes a resend after a lost ack a duplicate, dropped by the stream
            await asyncio.to_thread(self.outbox.remove_through, batch[-1][0])
            self.count()
            sent += len(batch)
            self.published += len(batch)
        return sent

    async def run(self, client: nats.NATS, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            self.waiting.clear()
            try:
                await self.drain(client)
            except (NatsError, asyncio.TimeoutError, EdufilterError) as error:
                log.warning("hub: events wait in the outbox (%d): %s", self.waiting_count, error)
                await _sleep_unless(stopping, RETRY_DELAY)
                continue
            try:
                await asyncio.wait_for(self.waiting.wait(), POLL_INTERVAL)
            except asyncio.TimeoutError:
                pass


class GatewayAgent:
    """The policy follower and the event publisher of one gateway, on one connection."""

    def __init__(self, config: HubConfig, state_dir: Path, applier: Applier) -> None:
        self.config = config
        self.follower = PolicyFollower(state_dir, config.site, applier)
        self.publisher = EventPublisher(Outbox(hub_dir(state_dir) / OUTBOX_FILE, config.outbox_limit), config.site)
        self.connected = False

    def status(self) -> dict:
        return {"site": self.config.site, "connected": self.connected, "revisions": self.follower.revisions(),
                "applied": self.follower.applied, "rejected": self.follower.rejected,
                "events_published": self.publisher.published, "events_waiting": self.publisher.waiting_count,
                "events_dropped": self.publisher.dropped_count, "events_lost": self.publisher.lost}

    async def run(self, stopping: asyncio.Event) -> None:
        client = None
        while client is None and not stopping.is_set():
            try:
                client = await connect(self.config, f"edufilter-{self.config.site}",
                                       disconnected_cb=self._down, reconnected_cb=self._up)
            except (NatsError, OSError, asyncio.TimeoutError) as error:
                log.warning("hub: no server answers (%s); filtering with the stored policy, trying again", error)
                await _sleep_unless(stopping, RETRY_DELAY)
        if client is None:
            return
        self.connected = True
        try:
            await asyncio.gather(self.follower.follow(client, stopping), self.publisher.run(client, stopping))
        finally:
            # The outbox stays open: the workers' last events arrive while the daemon stops,
            # and they go out at the next start.
            await client.close()

    async def _down(self) -> None:
        self.connected = False
        log.warning("hub: connection lost; filtering goes on with the last policy")

    async def _up(self) -> None:
        self.connected = True
        self.follower.changed.set()
        self.publisher.waiting.set()
