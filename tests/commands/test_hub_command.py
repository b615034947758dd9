"""`edufilter hub` without a cluster: JetStream requests against one still electing its
leaders (the request is a stand-in that fails as nats-py does), and a server's configuration."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

nats_errors = pytest.importorskip("nats.errors", reason="nats-py (the hub extra) is not installed")
from nats.js.errors import ServiceUnavailableError  # noqa: E402

from edufilter.cli import main  # noqa: E402
from edufilter.commands import hub  # noqa: E402
from edufilter.lab.hub import make_tls  # noqa: E402


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

    monkeypatch.setattr(hub.asyncio, "sleep", no_wait)
    request, calls = flaky([nats_errors.TimeoutError(), ServiceUnavailableError(), nats_errors.TimeoutError()])
    assert asyncio.run(hub._read(request, attempts=4)) == "done"
    assert len(calls) == 4
    request, calls = flaky([nats_errors.TimeoutError()] * 3)
    with pytest.raises(nats_errors.TimeoutError):
        asyncio.run(hub._read(request, attempts=3))
    assert len(calls) == 3


def test_a_server_configuration_nats_server_accepts_with_a_user_per_site(tmp_path: Path) -> None:
    ca, certificate, key = make_tls(tmp_path, ["198.18.61.2"])
    passwords = tmp_path / "passwords"
    passwords.mkdir()
    for user in ("group-admin", "ghent", "bruges"):
        (passwords / f"{user}.password").write_text(f"{user}-secret\n")
    output = tmp_path / "nats1.conf"
    assert main(["hub", "server-config", "--name=nats1", "--listen=198.18.61.2:4222",
                 "--cluster-listen=198.18.61.2:6222", "--route=198.18.62.2:6222", f"--store-dir={tmp_path}/js",
                 f"--cert={certificate}", f"--key={key}", f"--ca={ca}", f"--passwords={passwords}",
                 f"--output={output}"]) == 0
    assert output.stat().st_mode & 0o077 == 0
    config = json.loads(output.read_text())
    users = {user["user"]: user for user in config["authorization"]["users"]}
    assert set(users) == {"group-admin", "ghent", "bruges"} and "permissions" not in users["group-admin"]
    assert "edufilter.events.bruges" not in json.dumps(users["ghent"]["permissions"])
    assert config["cluster"]["tls"]["verify"] is True
    if shutil.which("nats-server"):
        checked = subprocess.run(["nats-server", "-t", "-c", str(output)], capture_output=True, text=True, timeout=20)
        assert checked.returncode == 0, checked.stderr

    (passwords / "Not A Site.password").write_text("x\n")
    assert main(["hub", "server-config", "--name=nats1", "--listen=:4222", "--cluster-listen=:6222",
                 "--store-dir=js", "--cert=c", "--key=k", "--ca=a", f"--passwords={passwords}",
                 f"--output={tmp_path / 'bad.conf'}"]) == 2
