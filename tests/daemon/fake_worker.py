"""A stand-in for edufilter.daemon.worker in the supervisor's tests: over its control socket it
says it is ready, then reports every 0.2 s like a real worker; `--mode crash` exits at once,
before it is ready (a worker failing at start); `--mode handover` first reads the start message
as a real worker does and says in its ready message what it was handed."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

REPORT_INTERVAL = 0.2


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--mode", choices=("run", "crash", "handover"), required=True)
    args = parser.parse_args()
    control = socket.socket(fileno=args.control_fd)
    if args.mode == "crash":
        return 1
    ready = {"type": "ready", "pid": os.getpid(), "version": 1}
    if args.mode == "handover":
        from edufilter.config import config_to_dict
        from edufilter.daemon.handover import receive_start

        config, images = receive_start(control)
        control.setblocking(True)
        ready.update(config=config_to_dict(config), images=str(images))
    control.send(json.dumps(ready).encode())
    deadline = time.monotonic() + 60  # never outlives a test that forgot it
    while time.monotonic() < deadline:
        try:
            control.send(json.dumps({"type": "stats", "decisions": []}).encode())
        except OSError:
            return 0  # the supervisor is gone
        time.sleep(REPORT_INTERVAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
