"""Connections: idle and slow-header ones are closed, each address holds a bounded number,
and running out of descriptors is logged once per interval."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveApi

from edufilter import logs
from edufilter.api.connections import ResourceLog
from edufilter.api.settings import ApiSettings


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[LiveApi]:
    live = LiveApi(tmp_path, settings=ApiSettings(port=0, idle_timeout=0.5, max_connections_per_address=3))
    yield live
    live.stop()


def _connect(api: LiveApi, source: str = "127.0.0.1") -> socket.socket:
    host, port = api.base_url.removeprefix("http://").rsplit(":", 1)
    client = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
    return client


def _answer(client: socket.socket) -> bytes:
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


def test_an_idle_connection_is_closed(strict: LiveApi) -> None:
    with _connect(strict) as client:
        assert _answer(client) == b""  # closed by the server, long before the 10 s socket timeout


def test_a_connection_sending_its_headers_slowly_is_closed(strict: LiveApi) -> None:
    with _connect(strict) as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        with pytest.raises(OSError):
            for _ in range(100):  # 10 s of one header byte every 0.1 s; the server gives 0.5 s
                client.sendall(b"X")
                time.sleep(0.1)


def test_a_connection_that_keeps_asking_stays_open(strict: LiveApi) -> None:
    with _connect(strict) as client:
        for _ in range(4):
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(0.2)


def test_each_address_holds_a_bounded_number_of_connections(strict: LiveApi) -> None:
    held = [_connect(strict) for _ in range(3)]
    try:
        with _connect(strict) as refused:
            answer = _answer(refused)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"application/problem+json" in head
        assert "too many open connections" in json.loads(body)["detail"]
        with _connect(strict, source="127.0.0.2") as other:  # another address is not affected
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            assert _answer(other).startswith(b"HTTP/1.1 200")
    finally:
        for client in held:
            client.close()
    time.sleep(0.2)
    assert strict.get("/healthz", token=None).status_code == 200  # the closed ones no longer count
    assert "edufilter_api_connections_refused_total 1" in strict.get("/metrics").text


def test_resource_errors_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = ResourceLog(60.0, clock=lambda: now[0])
    error = OSError(24, "Too many open files")
    with caplog.at_level(logging.ERROR, logger=logs.API):
        for second in range(120):
            now[0] = float(second)
            for _ in range(100):
                log.report("accept() failed", error)
    assert len(caplog.records) == 2 and log.total == 12_000
    assert "(5999 more since the last report)" in caplog.records[1].getMessage()


_OUT_OF_DESCRIPTORS = textwrap.dedent("""
    import asyncio, os, resource, sys
    from pathlib import Path
    from edufilter.api.app import make_app, start_api
    from edufilter.api.settings import ApiSettings
    from edufilter.policy.model import Group
    from edufilter.policy.store import PolicyStore

    async def main():
        state = Path(sys.argv[1])
        with PolicyStore(state / "policy.sqlite") as store:
            store.add_group(Group("guests"))
        async def apply():
            return 1
        runner = await start_api(make_app(state, apply, settings=ApiSettings(port=0)))
        print(runner.addresses[0][1], flush=True)
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        print("full", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for descriptor in held:
            os.close(descriptor)
        await asyncio.sleep(1.5)
        await runner.cleanup()

    asyncio.run(main())
""")


def test_out_of_descriptors_is_logged_once_not_per_accept(tmp_path: Path) -> None:
    server = subprocess.Popen([sys.executable, "-c", _OUT_OF_DESCRIPTORS, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        assert server.stdout.readline().strip() == "full"
        waiting = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        time.sleep(3.5)  # asyncio retries a failed accept() each second
        server.stdin.write("free\n")
        server.stdin.flush()
        for client in waiting:  # accepted once descriptors are free again
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            assert _answer(client).startswith(b"HTTP/1.1 200")
            client.close()
        _, errors = server.communicate(timeout=30)
    finally:
        server.kill()
    reports = [line for line in errors.splitlines() if "out of system resource" in line]
    assert len(reports) == 1, errors
    assert "Too many open files" in reports[0] and "Traceback" not in errors


def test_a_stalled_request_body_is_refused(tmp_path: Path) -> None:
    api = LiveApi(tmp_path, settings=ApiSettings(port=0, body_timeout=0.5))
    try:
        with _connect(api) as client:
            client.sendall(b"POST /api/v1/groups HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                           b"Authorization: Bearer " + api.admin.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"na")
            head, _, body = _answer(client).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and "sent nothing" in json.loads(body)["detail"]
    finally:
        api.stop()
