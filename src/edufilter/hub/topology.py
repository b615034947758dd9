"""The group's side: a NATS server's configuration (TLS for clients and between servers, the
group's user and one user per site), and the buckets and the streams every gateway expects
(`edufilter hub init`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nats
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StreamConfig
from nats.js.errors import BadRequestError

from edufilter.hub.model import (
    EVENTS_STREAM,
    EVENTS_SUBJECT_PREFIX,
    GROUP_BUCKET,
    KV_HISTORY,
    bucket_stream,
    events_subject,
    site_bucket,
    site_inbox,
)
from edufilter.hub.stats import STATS_STREAM, STATS_SUBJECT_PREFIX, stats_subject
from edufilter.output.database import check_retention

DAY = 86400.0


def site_permissions(site: str) -> dict:
    """What a site's user may do: read its own part and the group's, publish its own events
    and counts, receive the replies to its own requests. Nothing else, so one site's
    credentials are refused for another's subjects."""
    readable = (GROUP_BUCKET, site_bucket(site))
    return {
        "publish": {"allow": [f"$JS.API.STREAM.MSG.GET.{bucket_stream(bucket)}" for bucket in readable]
                    + [events_subject(site), stats_subject(site)]},
        "subscribe": {"allow": [f"$KV.{bucket}.>" for bucket in readable] + [f"{site_inbox(site)}.>"]},
    }


@dataclass(frozen=True, slots=True)
class ServerSettings:
    name: str
    listen: str  # host:port for clients
    cluster_listen: str  # host:port for the other servers
    routes: Sequence[str]  # the other servers' cluster addresses, host:port
    store_dir: str
    certificate: str
    key: str
    ca: str  # the group's CA: a route's certificate must be signed by it


def server_config(server: ServerSettings, admin: tuple[str, str], sites: Mapping[str, str]) -> str:
    """nats-server configuration (JSON is valid there): JetStream clustered; TLS only, for
    clients and for the routes between servers, which must show a certificate of the group's
    CA; the group admin's user with every right and one restricted user per site
    (name -> password)."""
    users = [{"user": admin[0], "password": admin[1]}]
    users += [{"user": site, "password": password, "permissions": site_permissions(site)}
              for site, password in sites.items()]
    config = {
        "server_name": server.name,
        "listen": server.listen,
        "jetstream": {"store_dir": server.store_dir, "max_memory_store": 64 << 20, "max_file_store": 1 << 30},
        "tls": {"cert_file": server.certificate, "key_file": server.key, "timeout": 2},
        "authorization": {"users": users},
        "cluster": {"name": "edufilter", "listen": server.cluster_listen,
                    "routes": [f"nats-route://{route}" for route in server.routes],
                    "tls": {"cert_file": server.certificate, "key_file": server.key, "ca_file": server.ca,
                            "verify": True, "timeout": 2}},
    }
    return json.dumps(config, indent=2)


async def ensure_group(client: nats.NATS, sites: Sequence[str], replicas: int, retention_days: int) -> None:
    """The group's bucket, each site's bucket, the events stream and the per-minute counts'
    stream (both with max age = the events retention), created or brought to these settings."""
    js = client.jetstream()
    for bucket in (GROUP_BUCKET, *(site_bucket(site) for site in sites)):
        await _ensure_stream(js, StreamConfig(
            name=bucket_stream(bucket), subjects=[f"$KV.{bucket}.>"], max_msgs_per_subject=KV_HISTORY,
            discard=DiscardPolicy.NEW, allow_rollup_hdrs=True, deny_delete=True, allow_direct=True,
            num_replicas=replicas, max_msgs=-1, max_bytes=-1, max_age=0, duplicate_window=120.0,
        ))
    for stream, prefix in ((EVENTS_STREAM, EVENTS_SUBJECT_PREFIX), (STATS_STREAM, STATS_SUBJECT_PREFIX)):
        await _ensure_stream(js, StreamConfig(
            name=stream, subjects=[f"{prefix}*"], max_age=check_retention(retention_days) * DAY,
            num_replicas=replicas, duplicate_window=600.0,
        ))


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:  # it exists with other settings
        await js.update_stream(config)
