"""`edufilter api`: serve the admin API on its own, beside the daemon (for development)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edufilter.commands.types import Subparsers, state_dir_option

if TYPE_CHECKING:
    from edufilter.api.settings import ApiSettings


def register(commands: Subparsers) -> None:
    from edufilter.api.settings import ApiSettings

    defaults = ApiSettings()
    api = commands.add_parser(
        "api",
        parents=[state_dir_option()],
        help="serve the admin API alone (development; `edufilter run` serves it with the daemon)",
        description="Serve the admin API over the policy database of --state-dir. Each change is compiled "
        "into <state-dir>/images/policy.img and a running daemon is asked to reload it.",
    )
    api.add_argument("--host", default=defaults.host, help=f"address to listen on (default {defaults.host})")
    api.add_argument("--port", type=int, default=defaults.port, help=f"TCP port (default {defaults.port})")
    api.add_argument("--tls-cert", type=Path, help="PEM certificate (chain) to serve HTTPS with")
    api.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    api.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edufilter.api.settings import ApiSettings

    settings = ApiSettings(host=args.host, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve(args.state_dir, settings))
    return 0


async def _serve(state_dir: Path, settings: ApiSettings) -> None:
    from edufilter.api.app import make_app, start_api
    from edufilter.api.standalone import compiling_applier, image_explain
    from edufilter.policy.publish import catch_up_images

    await asyncio.to_thread(catch_up_images, state_dir)
    app = make_app(state_dir, compiling_applier(state_dir), explain=image_explain(state_dir), settings=settings)
    runner = await start_api(app)
    scheme = "https" if settings.tls_cert else "http"
    for host, port, *_ in runner.addresses:
        print(f"edufilter api: listening on {scheme}://{host}:{port}/ (Ctrl-C or SIGTERM stops)", file=sys.stderr)
    # Handlers of our own: a shell that starts a job in the background hands SIGINT on
    # ignored, and SIGTERM (systemd's stop) would otherwise end the process without cleanup.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()
