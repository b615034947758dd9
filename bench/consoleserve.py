"""Serve the admin API and console over a state folder in a process of its own (as the
supervisor does under `edufilter run`), for bench/test_console_bench.py's pollers:

    python bench/consoleserve.py STATE_DIR PORT_FILE

writes the port it listens on (127.0.0.1, a free port) into PORT_FILE; stops on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from edufilter.api.app import make_app, start_api
from edufilter.api.settings import ApiSettings
from edufilter.api.standalone import compiling_applier, image_explain
from edufilter.output.events import EventStore


async def serve(state_dir: Path, port_file: Path) -> None:
    events = EventStore(state_dir / "events.sqlite", None)
    app = make_app(state_dir, compiling_applier(state_dir), explain=image_explain(state_dir), event_store=events,
                   settings=ApiSettings(port=0))
    runner = await start_api(app)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    port_file.write_text(str(runner.addresses[0][1]))
    await stop.wait()
    await runner.cleanup()
    events.close()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), Path(sys.argv[2])))
