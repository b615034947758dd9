"""Tokens: stored hashed, revocable; failed authentication throttled; TLS; loopback default."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import requests
from conftest import LiveApi, problem

from edufilter.api.settings import ApiSettings


def test_only_a_digest_of_each_token_is_stored(api: LiveApi) -> None:
    secret = api.token("viewer", name="reader")
    with sqlite3.connect(api.database) as db:
        rows = db.execute("SELECT * FROM api_tokens").fetchall()
    assert not any(secret in str(value) for row in rows for value in row)
    assert hashlib.sha256(secret.encode()).hexdigest() in {value for row in rows for value in row}


def test_revoked_tokens_stop_working_at_once(api: LiveApi) -> None:
    made = api.post("/api/v1/tokens", {"name": "temp", "role": "editor"}).json()
    assert api.get("/api/v1/groups", token=made["token"]).status_code == 200
    assert api.change("DELETE", "/api/v1/tokens/temp").status_code == 204
    problem(api.get("/api/v1/groups", token=made["token"]), 401)
    listed = api.get("/api/v1/tokens/temp").json()
    assert listed["revoked_at"] is not None
    problem(api.call("DELETE", "/api/v1/tokens/temp", headers={"If-Match": "*"}), 409)
    problem(api.post("/api/v1/tokens", {"name": "temp", "role": "editor"}), 409)  # names are not reused


def test_revoking_from_the_command_line_takes_effect_in_the_running_api(api: LiveApi) -> None:
    secret = api.token("viewer", name="laptop")
    assert api.get("/api/v1/groups", token=secret).status_code == 200
    subprocess.run([sys.executable, "-m", "edufilter", "token", "revoke", "laptop", "--state-dir", str(api.state_dir)],
                   check=True, capture_output=True, timeout=60)
    problem(api.get("/api/v1/groups", token=secret), 401)


def test_failed_authentication_is_throttled_per_address(tmp_path: Path) -> None:
    api = LiveApi(tmp_path, settings=ApiSettings(port=0, auth_failures=3, auth_window=0.5))
    try:
        for attempt in range(3):
            problem(api.get("/api/v1/groups", token=f"eft_guess{attempt}"), 401)
        throttled = problem(api.get("/api/v1/groups", token="eft_guess3"), 429)
        assert "too many failed" in throttled["detail"]
        again = api.get("/api/v1/groups", token="eft_guess-again")
        assert problem(again, 429) and again.headers["Retry-After"] == "1"
        assert api.get("/healthz", token=None).status_code == 200
        time.sleep(0.6)
        problem(api.get("/api/v1/groups", token="eft_guess4"), 401)
        metrics = api.get("/metrics").text
        assert "edufilter_api_auth_failures_total 6" in metrics
        assert "edufilter_api_throttled_total 2" in metrics
    finally:
        api.stop()


def test_a_valid_token_is_never_throttled_by_failures_from_its_address(tmp_path: Path) -> None:
    """A pupil guessing from the ICT room's address does not lock the coordinator out."""
    api = LiveApi(tmp_path, settings=ApiSettings(port=0, auth_failures=3, auth_window=60))
    try:
        for attempt in range(10):
            api.get("/api/v1/groups", token=f"eft_guess{attempt}")
        problem(api.get("/api/v1/groups", token="eft_guess-last"), 429)
        assert api.get("/api/v1/groups").status_code == 200
        viewer = api.token("viewer")
        assert api.get("/api/v1/status", token=viewer).status_code == 200
        problem(api.get("/api/v1/tokens", token=viewer), 403)  # refused by its role, not throttled
    finally:
        api.stop()


def test_missing_or_malformed_authorization(api: LiveApi) -> None:
    for header in ("", "Basic dXNlcjpwYXNz", "Bearer", "Bearer " + "x" * 500, "bearer nope"):
        response = api.call("GET", "/api/v1/groups", token=None, headers={"Authorization": header} if header else {})
        problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="edufilter"')


def test_listens_on_loopback_by_default() -> None:
    assert ApiSettings().host == "127.0.0.1"


def test_serves_tls_with_a_given_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "api.pem", tmp_path / "api.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    state = tmp_path / "state"
    state.mkdir()
    api = LiveApi(state, settings=ApiSettings(port=0, tls_cert=cert, tls_key=key))
    try:
        assert api.base_url.startswith("https://")
        assert api.get("/api/v1/groups", verify=str(cert)).status_code == 200
        plain = api.base_url.replace("https://", "http://")
        try:
            answer = requests.get(plain + "/healthz", timeout=10)
        except requests.ConnectionError:
            pass  # refused: no plain HTTP on the TLS port
        else:
            assert answer.status_code == 400
    finally:
        api.stop()


def test_the_last_admin_token_cannot_be_revoked(api: LiveApi) -> None:
    refused = problem(api.change("DELETE", "/api/v1/tokens/admin"), 409)
    assert "last live admin token" in refused["detail"]
    second = api.post("/api/v1/tokens", {"name": "second-admin", "role": "admin"}).json()["token"]
    assert api.change("DELETE", "/api/v1/tokens/admin", token=second).status_code == 204
    problem(api.change("DELETE", "/api/v1/tokens/second-admin", token=second), 409)
    assert api.get("/api/v1/whoami", token=second).status_code == 200
