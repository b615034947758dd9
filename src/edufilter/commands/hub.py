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
from typing import TYPE_CHECKING

from edufilter.commands.types import Subparsers, state_dir_option

if TYPE_CHECKING:
    import nats

    from edufilter.config import HubConfig


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

    init = actions.add_parser("init", parents=[connection], help="create the buckets and the events stream")
    init.add_argument("--sites", nargs="+", required=True)
    init.add_argument("--replicas", type=int, default=3)
    init.add_argument("--retention-days", type=int, default=14)
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

    serve = actions.add_parser(
        "serve", parents=[connection, state_dir_option()],
        help="serve the group's API: the parts, events and counts across sites, scoped tokens",
        description="Serve the group's API against the cluster. Tokens and the audit log are kept in "
        "--state-dir; make the first (a group admin) with `edufilter token create --state-dir DIR --role admin`.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8471, help="TCP port (default 8471)")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate (chain) to serve HTTPS with")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    serve.set_defaults(handler=run_serve)

    agent = actions.add_parser("agent", help="follow the hub for a state folder, without the data path",
                               description="Runs the [hub] part of `edufilter run` alone: policy and events.")
    agent.add_argument("--config", type=Path, required=True)
    agent.set_defaults(handler=run_agent)


def _connection(args: argparse.Namespace) -> HubConfig:
    from edufilter.config import HubConfig

    return HubConfig(servers=tuple(args.server), user=args.user, password_file=args.password_file,
                     ca_file=args.ca)


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


# A cluster just started elects its JetStream meta leader first: until then every JetStream
# request times out or answers "temporarily unavailable".
INIT_ATTEMPTS = 20


def run_init(args: argparse.Namespace) -> int:
    from edufilter.hub.parts import with_retries
    from edufilter.hub.topology import ensure_group

    async def work(client: nats.NATS) -> int:
        await with_retries(lambda: ensure_group(client, args.sites, args.replicas, args.retention_days), INIT_ATTEMPTS)
        print(f"group bucket, {len(args.sites)} site buckets and the events stream ready")
        return 0

    return asyncio.run(_with_client(args, work))


def run_put(args: argparse.Namespace) -> int:
    from edufilter.hub.model import read_part
    from edufilter.hub.parts import check_part, store_part

    files = read_part(args.folder)

    async def work(client: nats.NATS) -> int:
        await check_part(client, None if args.group else args.site, files)
        print(await store_part(client, _bucket(args), files, args.if_match))
        return 0

    return asyncio.run(_with_client(args, work))


def run_show(args: argparse.Namespace) -> int:
    from edufilter.hub.parts import latest

    async def work(client: nats.NATS) -> int:
        revision, files = await latest(client, _bucket(args))
        print(json.dumps({"revision": revision, "files": sorted(files)}))
        return 0

    return asyncio.run(_with_client(args, work))


def run_events(args: argparse.Namespace) -> int:
    from edufilter.hub.parts import with_retries
    from edufilter.hub.reading import events_of, stream_events

    async def work(client: nats.NATS) -> int:
        async def read() -> list[dict]:
            return [record async for _, record in stream_events(client, events_of(args.site), most=args.limit)]

        for record in await with_retries(read):
            sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
        return 0

    return asyncio.run(_with_client(args, work))


def run_serve(args: argparse.Namespace) -> int:
    import signal

    from edufilter.api.app import start_api
    from edufilter.api.settings import ApiSettings
    from edufilter.hub.api import make_hub_app

    settings = ApiSettings(host=args.host, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key)
    args.state_dir.mkdir(parents=True, exist_ok=True)

    async def serve() -> int:
        runner = await start_api(make_hub_app(args.state_dir, _connection(args), settings))
        scheme = "https" if settings.tls_cert else "http"
        for host, port, *_ in runner.addresses:
            print(f"edufilter hub: the group's API on {scheme}://{host}:{port}/ (Ctrl-C or SIGTERM stops)",
                  file=sys.stderr, flush=True)
        stopping = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
        try:
            await stopping.wait()
        finally:
            await runner.cleanup()
        return 0

    return asyncio.run(serve())


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
