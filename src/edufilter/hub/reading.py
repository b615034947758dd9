"""Block events across sites, read from the group's events stream: pages in stream order and
counts per site, group, category or action. Pseudonyms are made per site with that site's
keys, so they are never joined across sites: a client filter needs its site, and no count is
per client."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from edufilter.hub.model import EVENTS_STREAM, EVENTS_SUBJECT_PREFIX, events_subject

READ_TIMEOUT = 5.0  # seconds for the next events of a consumer that says more are pending
FETCH_BATCH = 1000
CONSUMER_IDLE = 30.0  # seconds: the server removes a reader's consumer that a crash left behind
COUNT_DIMENSIONS = ("site", "group", "category", "action")
MAX_COUNTED = 500_000  # events one count reads at most; past it the answer says truncated


def events_of(site: str | None) -> str:
    """The subject of one site's events, or of every site's."""
    return events_subject(site) if site else f"{EVENTS_SUBJECT_PREFIX}*"


async def stream_events(client: nats.NATS, subject: str, *, start: int = 1, since: datetime | None = None,
                        most: int) -> AsyncIterator[tuple[int, dict]]:
    """Up to `most` events of `subject` from stream sequence `start` (or from time `since`),
    oldest first, each as (stream sequence, record with its site added)."""
    js = client.jetstream()
    config = (ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since) if since
              else ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start)))
    config.ack_policy = AckPolicy.NONE
    config.inactive_threshold = CONSUMER_IDLE
    # A pull consumer: nothing is delivered before a fetch, so its pending count is the whole answer.
    subscription = await js.pull_subscribe(subject, stream=EVENTS_STREAM, config=config)
    try:
        pending = (await subscription.consumer_info()).num_pending
        read = 0
        while pending and read < most:
            for message in await subscription.fetch(min(FETCH_BATCH, most - read, pending), timeout=READ_TIMEOUT):
                pending = message.metadata.num_pending
                read += 1
                try:
                    record = json.loads(message.data or b"")
                except ValueError:
                    continue  # not an event: the stream takes only sites' publishes, but never trust bytes
                if isinstance(record, dict):
                    record["site"] = message.subject.removeprefix(EVENTS_SUBJECT_PREFIX)
                    yield message.metadata.sequence.stream, record
    finally:
        await subscription.unsubscribe()


@dataclass(frozen=True, slots=True)
class EventPage:
    items: list[dict]
    next_cursor: int | None  # the stream sequence to read on from


async def event_page(client: nats.NATS, site: str | None, matches: Callable[[dict], bool], *, start: int,
                     since: datetime | None, limit: int, most: int) -> EventPage:
    """Up to `limit` matching events, reading at most `most`; the cursor goes on after the last read."""
    items: list[dict] = []
    last = None
    async with aclosing(stream_events(client, events_of(site), start=start, since=since, most=most)) as events:
        async for sequence, record in events:
            last = sequence
            if matches(record):
                items.append(record)
                if len(items) == limit:
                    break
    return EventPage(items, None if last is None else last + 1)


@dataclass(frozen=True, slots=True)
class EventCounts:
    counts: Counter[str]
    read: int
    truncated: bool


async def count_events(client: nats.NATS, site: str | None, by: str, matches: Callable[[dict], bool],
                       since: datetime) -> EventCounts:
    """Events since `since` per value of `by` (one of COUNT_DIMENSIONS)."""
    assert by in COUNT_DIMENSIONS
    counts: Counter[str] = Counter()
    read = 0
    async for _, record in stream_events(client, events_of(site), since=since, most=MAX_COUNTED):
        read += 1
        if matches(record):
            counts[str(record.get(by))] += 1
    return EventCounts(counts, read, read >= MAX_COUNTED)
