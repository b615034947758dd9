"""The admin API in a process of its own, for what only a whole process shows: its peak
memory during an upload, how it stops. Used by tests/api and bench/."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from edufilter.api.tokens import create_token
from edufilter.policy.model import AdminList, Group
from edufilter.policy.store import Actor, PolicyStore


def plain_list(mib: int) -> bytes:
    lines = []
    size = number = 0
    while True:  # up to `mib` MiB
        line = b"host%08d.example%d.org\n" % (number, number % 97)
        if size + len(line) > mib << 20:
            break
        lines.append(line)
        size += len(line)
        number += 1
    return b"".join(lines)


def school_with_a_list(state: Path) -> str:
    """A state folder with the list `big` and an admin token, whose secret is returned."""
    with PolicyStore(state / "policy.sqlite") as store:
        store.add_group(Group("guests"))
        store.add_list(AdminList("big"))
        with store.audited(Actor("test", "admin", "CLI", "token create"), "token", "admin") as change:
            return create_token(change.db, "admin", "admin")[1]


def megabytes(pid: int, key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) >> 10


class ApiProcess:
    """An API process of its own, so that its memory and its exit can be measured."""

    def __init__(self, command: list[str], state: Path) -> None:
        self.secret = school_with_a_list(state)
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        listening = self.process.stderr.readline()
        self.base = "http://127.0.0.1:" + re.search(r":(\d+)/", listening).group(1)  # type: ignore[union-attr]

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.secret}", **kwargs.pop("headers", {})}
        return requests.request(method, self.base + path, headers=headers, timeout=60, **kwargs)

    def upload(self, data: bytes) -> str:
        accepted = self.call("POST", "/api/v1/lists/big/uploads", data=data, headers={"Content-Type": "text/plain"})
        assert accepted.status_code == 202, accepted.text
        return accepted.headers["Location"]

    def wait_for(self, location: str, *states: str) -> dict[str, Any]:
        deadline = time.monotonic() + 300
        while (state := self.call("GET", location).json())["state"] not in states:
            assert time.monotonic() < deadline and state["state"] not in ("done", "failed", "cancelled"), state
            time.sleep(0.05)
        return state

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(60)


# The API with an applier that compiles nothing: what is measured is the upload's own path.
API_WITHOUT_COMPILE = """
import asyncio, signal, sys
from pathlib import Path
from edufilter.api.app import make_app, start_api
from edufilter.api.settings import ApiSettings
from edufilter.api.tokens import create_token
from edufilter.policy.store import PolicyStore

async def main():
    state = Path(sys.argv[1])
    async def apply():
        with PolicyStore(state / "policy.sqlite") as store:
            return store.version
    runner = await start_api(make_app(state, apply, settings=ApiSettings(port=0)))
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}/", file=sys.stderr, flush=True)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await runner.cleanup()

asyncio.run(main())
"""
