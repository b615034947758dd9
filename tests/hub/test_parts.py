"""`edufilter hub`'s JetStream requests against a cluster still electing its leaders (no
servers needed: the request is a stand-in that fails as nats-py does)."""

from __future__ import annotations

import asyncio

import pytest

nats_errors = pytest.importorskip("nats.errors", reason="nats-py (the hub extra) is not installed")
from nats.js.errors import ServiceUnavailableError  # noqa: E402

from edufilter.hub import parts  # noqa: E402


def flaky(failures: list[Exception]):
    calls = []

    async def request() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "done"

    return request, calls


def test_a_request_is_tried_again_while_the_cluster_elects_its_leader(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_wait(_: float) -> None:
        return None

    monkeypatch.setattr(parts.asyncio, "sleep", no_wait)
    request, calls = flaky([nats_errors.TimeoutError(), ServiceUnavailableError(), nats_errors.TimeoutError()])
    assert asyncio.run(parts.with_retries(request, attempts=4)) == "done"
    assert len(calls) == 4
    request, calls = flaky([nats_errors.TimeoutError()] * 3)
    with pytest.raises(nats_errors.TimeoutError):
        asyncio.run(parts.with_retries(request, attempts=3))
    assert len(calls) == 3
