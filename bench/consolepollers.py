"""People keeping the console's overview open: each signs in with the token, then reloads
/console/overview every INTERVAL seconds (each at its own phase) while FLAG_FILE exists.

    python bench/consolepollers.py BASE_URL SECRET USERS INTERVAL FLAG_FILE REPORT_FILE

On SIGTERM it writes {"pages": n, "latencies_ms": [...]} of the pages loaded while the flag
was there into REPORT_FILE (JSON) and stops."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp


async def person(base_url: str, secret: str, interval: float, phase: float, flag: Path,
                 latencies: list[float]) -> None:
    async with aiohttp.ClientSession(base_url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get("/console/sign-in") as form:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await form.text())[1]  # type: ignore[index]
        async with session.post("/console/sign-in", data={"csrf": csrf, "token": secret}) as signed_in:
            assert signed_in.status == 200 and "/console/overview" in str(signed_in.url), signed_in.status
        await asyncio.sleep(phase)
        while True:
            if flag.exists():
                started = time.perf_counter()
                async with session.get("/console/overview") as page:
                    await page.read()
                    assert page.status == 200, page.status
                latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(interval)


async def main(base_url: str, secret: str, users: int, interval: float, flag: Path, report: Path) -> None:
    latencies: list[float] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    people = [asyncio.create_task(person(base_url, secret, interval, interval * number / users, flag, latencies))
              for number in range(users)]
    done, _ = await asyncio.wait([*people, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    for task in people:
        task.cancel()
    failed = [task.exception() for task in done if task in people and not task.cancelled() and task.exception()]
    report.write_text(json.dumps({"pages": len(latencies), "latencies_ms": latencies,
                                  "error": repr(failed[0]) if failed else None}))


if __name__ == "__main__":
    url, secret, users, interval, flag, report = sys.argv[1:7]
    asyncio.run(main(url, secret, int(users), float(interval), Path(flag), Path(report)))
