"""`edufilter hub`: the group's side of multi-site mode (needs the `hub` extra, nats-py):
set up the cluster's buckets, put the group policy or a site's part, read events across
sites; and `hub agent`, a gateway's hub follower without the data path."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from edufilter.commands.types import Subparsers

if TYPE_CHECKING:
    import nats

    from edufilter.config import HubConfig

T = TypeVar("T")


def register(commands: Subparsers) -> None:
    hub = commands.add_parser(
        "hub", help="multi-site mode: the group policy and the sites' parts in NATS JetStream",
        description="Talks to the group's NATS servers as the group admin (or, for `agent`, as a site).",
    )
    actions = hub.add_subparsers(dest="hub_command", required=True, metavar="ACTION")
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--server", action="append", required=True, help="tls://host:port (repeatable)")
    connection.add_argument("--user", default="")
    connection.add_argument("--password-file", default="")
    connection.add_argument("--ca", default="", help="the CA file that signed the servers' certificates")
    scope = argparse.ArgumentParser(add_help=False)
    which = scope.add_mutually_exclusive_group(required=True)
    which.add_argument("--group", action="store_true", help="the group policy")
    which.add_argument("--site", help="a site's part")

    from edufilter.output.database import DEFAULT_RETENTION_DAYS

    init = actions.add_parser("init", parents=[connection],
                              help="create the buckets, the events stream and the per-minute counts' stream")
    init.add_argument("--sites", nargs="+", required=True)
    init.add_argument("--replicas", type=int, default=3)
    init.add_argument("--retention-days", type=int, default=DEFAULT_RETENTION_DAYS,
                      help="the streams' max age: the gateways' [events] retention_days (default %(default)s)")
    init.set_defaults(handler=run_init)

    put = actions.add_parser("put", parents=[connection, scope], help="store a folder of policy TOML files")
    put.add_argument("folder", type=Path)
    put.add_argument("--if-match", type=int, default=0,
                     help="the revision this edit starts from (omitted: only when there is none yet)")
    put.set_defaults(handler=run_put)

    show = actions.add_parser("show", parents=[connection, scope], help="the stored part's revision and files")
    show.set_defaults(handler=run_show)

    events = actions.add_parser("events", parents=[connection], help="block events across sites, JSON lines")
    events.add_argument("--site", help="only this site's")
    events.add_argument("--limit", type=int, default=1000)
    events.set_defaults(handler=run_events)

    agent = actions.add_parser("agent", help="follow the hub for a state folder, without the data path",
                               description="Runs the [hub] part of `edufilter run` alone: policy and events.")
    agent.add_argument("--config", type=Path, required=True)
    agent.set_defaults(handler=run_agent)

    stats = actions.add_parser("stats", parents=[connection],
                               help="per-minute block counts across sites (group, category, kind, action), JSON lines")
    stats.add_argument("--site", help="only this site's")
    stats.add_argument("--limit", type=int, default=1000)
    stats.set_defaults(handler=run_stats)

    server = actions.add_parser(
        "server-config", help="write one of the group's nats-server configurations (JSON, mode 0600)",
        description="TLS for clients and routes, the group admin's user and one restricted user per site: "
                    "one <user>.password file each in --passwords (the sites are the other files' names).")
    server.add_argument("--name", required=True, help="this server's name, unique in the cluster")
    server.add_argument("--listen", required=True, help="host:port for the gateways and the admin (e.g. :4222)")
    server.add_argument("--cluster-listen", required=True, help="host:port for the other servers (e.g. :6222)")
    server.add_argument("--route", action="append", default=[], help="another server's host:port (repeatable)")
    server.add_argument("--store-dir", required=True, help="JetStream's folder")
    server.add_argument("--cert", required=True, help="this server's certificate (for clients and routes)")
    server.add_argument("--key", required=True)
    server.add_argument("--ca", required=True, help="the group's CA: the other servers' certificates are checked")
    server.add_argument("--admin-user", default="group-admin")
    server.add_argument("--passwords", type=Path, required=True, help="folder of <user>.password files")
    server.add_argument("--output", type=Path, required=True)
    server.set_defaults(handler=run_server_config)


def _connection(args: argparse.Namespace) -> HubConfig:
    from edufilter.config import HubConfig, check_hub_server

    return HubConfig(servers=tuple(check_hub_server(url) for url in args.server), user=args.user,
                     password_file=args.password_file, ca_file=args.ca)


def _bucket(args: argparse.Namespace) -> str:
    from edufilter.hub.model import GROUP_BUCKET, site_bucket

    return GROUP_BUCKET if args.group else site_bucket(args.site)


async def _with_client(args: argparse.Namespace, work: Callable[[nats.NATS], Awaitable[int]]) -> int:
    from nats.errors import Error as NatsError

    from edufilter.hub.agent import connect
    from edufilter.hub.model import HubError

    try:
        client = await connect(_connection(args), "edufilter-hub", max_reconnect_attempts=3)
    except (NatsError, OSError, asyncio.TimeoutError) as error:
        raise HubError(f"no server answers: {error}") from error
    try:
        return await work(client)
    except NatsError as error:
        raise HubError(str(error) or type(error).__name__) from error
    finally:
        await client.close()


READ_ATTEMPTS = 5  # a stream's leader election after a server is lost takes a few seconds
# A cluster just started elects its JetStream meta leader first: until then every JetStream
# request times out or answers "temporarily unavailable".
INIT_ATTEMPTS = 20


async def _read(request: Callable[[], Awaitable[T]], attempts: int = READ_ATTEMPTS) -> T:
    """A JetStream request, tried again (a second apart) while its servers elect a leader."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import ServiceUnavailableError

    for _ in range(attempts - 1):
        try:
            return await request()
        except (NatsTimeout, ServiceUnavailableError):
            await asyncio.sleep(1)
    return await request()


def run_init(args: argparse.Namespace) -> int:
    from edufilter.hub.topology import ensure_group

    async def work(client: nats.NATS) -> int:
        await _read(lambda: ensure_group(client, args.sites, args.replicas, args.retention_days), INIT_ATTEMPTS)
        print(f"group bucket, {len(args.sites)} site buckets and the events stream ready")
        return 0

    return asyncio.run(_with_client(args, work))


async def latest(client: nats.NATS, bucket: str) -> tuple[int, dict[str, str]]:
    """The newest revision of a part and its files; (0, {}) when there is none."""
    from nats.js.errors import NotFoundError

    from edufilter.hub.model import bucket_stream, bucket_subject, decode_part

    try:
        js = client.jetstream()
        message = await _read(lambda: js.get_last_msg(bucket_stream(bucket), bucket_subject(bucket)))
    except NotFoundError:
        return 0, {}
    if (message.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
        return message.seq, {}
    return message.seq, decode_part(message.data or b"")


def run_put(args: argparse.Namespace) -> int:
    from nats.js.errors import APIError

    from edufilter.hub.model import GROUP_BUCKET, HubError, bucket_subject, combined_policy, encode_part, read_part
    from edufilter.policy.defaults import load_policy_dir

    files = read_part(args.folder)
    bucket = _bucket(args)

    async def work(client: nats.NATS) -> int:
        if args.group:
            load_policy_dir(args.folder)
        else:  # a site's part must make a policy with the group's as it stands
            _, group = await latest(client, GROUP_BUCKET)
            if not group:
                raise HubError("no group policy yet: put it first (hub put --group)")
            combined_policy(group, files)
        try:
            ack = await client.jetstream().publish(
                bucket_subject(bucket), encode_part(files),
                headers={"Nats-Expected-Last-Subject-Sequence": str(args.if_match)})
        except APIError as error:
            if error.err_code != 10071:
                raise
            current, _ = await latest(client, bucket)
            raise HubError(f"conflict: {bucket} is at revision {current}, not {args.if_match}: read it again "
                           "(hub show) and edit that") from None
        print(ack.seq)
        return 0

    return asyncio.run(_with_client(args, work))


def run_show(args: argparse.Namespace) -> int:
    async def work(client: nats.NATS) -> int:
        revision, files = await latest(client, _bucket(args))
        print(json.dumps({"revision": revision, "files": sorted(files)}))
        return 0

    return asyncio.run(_with_client(args, work))


def run_events(args: argparse.Namespace) -> int:
    from nats.js.errors import NotFoundError

    from edufilter.hub.model import EVENTS_STREAM, EVENTS_SUBJECT_PREFIX, events_subject

    subject = events_subject(args.site) if args.site else f"{EVENTS_SUBJECT_PREFIX}*"

    async def work(client: nats.NATS) -> int:
        js = client.jetstream()
        sequence = 0
        for _ in range(args.limit):
            try:
                message = await _read(lambda: js.get_msg(EVENTS_STREAM, seq=sequence + 1, subject=subject, next=True))
            except NotFoundError:
                break
            sequence = message.seq
            record = json.loads(message.data or b"{}")
            record["site"] = message.subject.removeprefix(EVENTS_SUBJECT_PREFIX)
            sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
        return 0

    return asyncio.run(_with_client(args, work))


def run_agent(args: argparse.Namespace) -> int:
    import logging
    import signal

    from edufilter.api.standalone import compiling_applier
    from edufilter.config import load_config
    from edufilter.errors import EdufilterError
    from edufilter.hub.agent import GatewayAgent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config(args.config)
    if not config.hub.enabled:
        raise EdufilterError(f"{args.config}: no [hub] servers")

    async def main() -> int:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await GatewayAgent(config.hub, config.state_dir, compiling_applier(config.state_dir)).run(stopping)
        return 0

    return asyncio.run(main())


def run_stats(args: argparse.Namespace) -> int:
    """The per-minute counts (of one site, or all), oldest first, as JSON lines with the site
    added; a record that is no JSON object (a site may publish any bytes) is skipped, counted."""
    from nats.js.errors import NotFoundError

    from edufilter.hub.model import check_site_name
    from edufilter.hub.stats import STATS_STREAM, STATS_SUBJECT_PREFIX

    subject = STATS_SUBJECT_PREFIX + (check_site_name(args.site) if args.site else "*")

    async def work(client: nats.NATS) -> int:
        js = client.jetstream()
        sequence = 0
        unreadable = 0
        for _ in range(args.limit):
            try:
                message = await _read(lambda: js.get_msg(STATS_STREAM, seq=sequence + 1, subject=subject, next=True))
            except NotFoundError:
                break
            sequence = message.seq
            try:
                record = json.loads(message.data or b"")
            except ValueError:
                record = None
            if not isinstance(record, dict):
                unreadable += 1
                continue
            record["site"] = message.subject.removeprefix(STATS_SUBJECT_PREFIX)
            sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
        if unreadable:
            print(f"skipped {unreadable} record(s) that are no JSON object", file=sys.stderr)
        return 0

    return asyncio.run(_with_client(args, work))


def run_server_config(args: argparse.Namespace) -> int:
    import os

    from edufilter.hub.model import HubError, check_site_name
    from edufilter.hub.topology import ServerSettings, server_config

    passwords = {path.stem: path.read_text().strip() for path in sorted(args.passwords.glob("*.password"))}
    if args.admin_user not in passwords:
        raise HubError(f"{args.passwords}: no {args.admin_user}.password (the group admin's)")
    admin = (args.admin_user, passwords.pop(args.admin_user))
    sites = {check_site_name(site): password for site, password in passwords.items()}
    if not all(admin[1:] + tuple(sites.values())):
        raise HubError(f"{args.passwords}: an empty password file")
    settings = ServerSettings(name=args.name, listen=args.listen, cluster_listen=args.cluster_listen,
                              routes=args.route, store_dir=args.store_dir, certificate=args.cert, key=args.key,
                              ca=args.ca)
    descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the passwords
    os.fchmod(descriptor, 0o600)
    with open(descriptor, "w") as output:
        output.write(server_config(settings, admin, sites))
    print(f"{args.output}: {args.name}, {len(sites)} sites")
    return 0
