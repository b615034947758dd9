"""The group's side of the policy parts: read a part's newest revision, check a new one
against the parts it combines with, and store it only over the revision its editor read
(the KV revision is the ETag). Used by `edufilter hub` and the group's API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from edufilter.errors import PolicyError
from edufilter.hub.model import (
    GROUP_BUCKET,
    SITE_BUCKET_PREFIX,
    HubError,
    bucket_stream,
    bucket_subject,
    combined_policy,
    decode_part,
    encode_part,
    site_bucket,
)

T = TypeVar("T")

READ_ATTEMPTS = 5  # a stream's leader election after a server is lost takes a few seconds
WRONG_LAST_SEQUENCE = 10071  # JetStream: Nats-Expected-Last-Subject-Sequence did not match


class PartConflict(HubError):
    """The part changed since the revision an edit started from."""

    def __init__(self, bucket: str, current: int, expected: int) -> None:
        super().__init__(f"conflict: {bucket} is at revision {current}, not {expected}: read it again and edit that")
        self.current = current


async def with_retries(request: Callable[[], Awaitable[T]], attempts: int = READ_ATTEMPTS) -> T:
    """A JetStream request, tried again (a second apart) while its servers elect a leader."""
    for _ in range(attempts - 1):
        try:
            return await request()
        except (NatsTimeout, ServiceUnavailableError):
            await asyncio.sleep(1)
    return await request()


async def latest(client: nats.NATS, bucket: str) -> tuple[int, dict[str, str]]:
    """The newest revision of a part and its files; (0, {}) when there is none."""
    js = client.jetstream()
    try:
        message = await with_retries(lambda: js.get_last_msg(bucket_stream(bucket), bucket_subject(bucket)))
    except NotFoundError:
        return 0, {}
    if (message.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
        return message.seq, {}
    return message.seq, decode_part(message.data or b"")


async def site_names(client: nats.NATS) -> list[str]:
    """The sites the group has made buckets for (`hub init`), sorted."""
    prefix = bucket_stream(SITE_BUCKET_PREFIX)
    streams = await with_retries(lambda: client.jetstream().streams_info())
    return sorted(info.config.name.removeprefix(prefix) for info in streams
                  if info.config.name and info.config.name.startswith(prefix))


async def check_part(client: nats.NATS, site: str | None, files: dict[str, str]) -> None:
    """PolicyError unless the part makes a policy with the parts it combines with as they
    stand: a site's with the group's; the group's with every site's (so the group cannot take
    back a leave a site's part still uses: that site's part changes first)."""
    if site is not None:
        _, group = await latest(client, GROUP_BUCKET)
        if not group:
            raise HubError("no group policy yet: store it first")
        combined_policy(group, files)
        return
    combined_policy(files, {})
    for name in await site_names(client):
        _, part = await latest(client, site_bucket(name))
        if part:
            try:
                combined_policy(files, part)
            except PolicyError as error:
                raise PolicyError(f"site {name}'s part would not make a policy with this group policy: {error}") \
                    from error


async def store_part(client: nats.NATS, bucket: str, files: dict[str, str], expected: int) -> int:
    """Store the part over revision `expected` (0: only when there is none yet); its new revision."""
    try:
        ack = await client.jetstream().publish(bucket_subject(bucket), encode_part(files),
                                               headers={"Nats-Expected-Last-Subject-Sequence": str(expected)})
    except APIError as error:
        if error.err_code != WRONG_LAST_SEQUENCE:
            raise
        current, _ = await latest(client, bucket)
        raise PartConflict(bucket, current, expected) from None
    return ack.seq
