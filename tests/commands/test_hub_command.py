"""`edufilter hub server-config`: a NATS server's configuration with a user per site."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("nats", reason="nats-py (the hub extra) is not installed")

from edufilter_lab.hub import make_tls  # noqa: E402

from edufilter.cli import main  # noqa: E402


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
