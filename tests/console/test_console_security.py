"""The console's security properties, request by request: cookie flags, headers on every
answer, CSRF and cross-origin refusal, sessions, throttled sign-in, no token in any page."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
import requests
from console_client import ConsoleClient, LiveConsole, School, console, school  # noqa: F401 (fixtures)

from edufilter.api.settings import ApiSettings
from edufilter.console.app import CONTENT_SECURITY_POLICY
from edufilter.console.sessions import SessionStore
from edufilter.console.visit import SESSION_COOKIE, SESSIONS, SIGN_IN_COOKIE
from edufilter.policy.store import PolicyStore

PAGES = ("/console/overview", "/console/overrides", "/console/policy", "/console/check", "/console/audit",
         "/console/tokens")


def overrides_in(school: School) -> list[tuple[str, str]]:
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        return [(override.group, override.name) for override in store.load().overrides]


def assert_hardened(page_headers: object) -> None:
    headers = page_headers  # a CIMultiDictProxy
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY  # type: ignore[index]
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert headers["X-Frame-Options"] == "DENY"  # type: ignore[index]
    assert headers["X-Content-Type-Options"] == "nosniff"  # type: ignore[index]
    assert headers["Referrer-Policy"] == "same-origin"  # type: ignore[index]


def test_the_session_cookie_is_httponly_samesite_strict_and_not_secure_over_plain_http(
        console: ConsoleClient, school: School) -> None:
    signed_in = console.sign_in(school.secrets["editor"])
    assert signed_in.status == 200 and signed_in.url.endswith("/console/overview")
    cookie = console.cookie(SESSION_COOKIE)
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console"
    assert not cookie["secure"]


def test_over_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    cert, key = tmp_path / "api.pem", tmp_path / "api.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    state = tmp_path / "state"
    state.mkdir()
    school = School(state)
    live = LiveConsole(school.app(ApiSettings(port=0, tls_cert=cert, tls_key=key)))
    try:
        base = live.base_url.replace("http://", "https://")
        with requests.Session() as browser:
            form = browser.get(base + "/console/sign-in", verify=str(cert), timeout=10)
            nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
            answer = browser.post(base + "/console/sign-in", data={"csrf": nonce, "token": school.secrets["viewer"]},
                                  verify=str(cert), timeout=10, allow_redirects=False)
        assert answer.status_code == 303
        cookie = answer.headers["Set-Cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=") and "; Secure" in cookie and "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
    finally:
        live.stop()
        school.close()


def test_every_console_answer_carries_the_security_headers(console: ConsoleClient, school: School) -> None:
    answers = [console.get("/console/sign-in"), console.get("/console/static/console.css"),
               console.get("/console/no-such-page")]
    signed_in = console.sign_in(school.secrets["coordinator"])
    answers += [signed_in, *(console.get(path) for path in PAGES)]
    answers.append(console.post("/console/overrides", {"csrf": "forged", "group": "class-5a", "site": "a.example",
                                                       "minutes": "5"}))
    # an unknown path gets the API's answer (a token first, then 404), with the headers too
    assert [answer.status for answer in answers] == [200, 200, 401, 200, 200, 200, 200, 200, 200, 200, 403]
    for answer in answers:
        assert_hardened(answer.headers)
    assert all(answer.headers["Cache-Control"] == "no-store" for answer in answers[3:])


def test_pages_use_no_inline_script_or_style(console: ConsoleClient, school: School) -> None:
    console.sign_in(school.secrets["coordinator"])
    for path in PAGES:
        text = console.get(path).text
        assert "<script" not in text and "<style" not in text and " style=" not in text
        assert not re.search(r" on[a-z]+=", text)  # no event-handler attributes
        assert "http://" not in text and "https://" not in text  # every asset from the console itself


def test_a_forged_form_without_or_with_a_wrong_csrf_token_is_refused(console: ConsoleClient, school: School) -> None:
    page = console.sign_in(school.secrets["ms-peeters"])
    form = {"group": "class-5a", "site": "youtube.com", "minutes": "10"}
    for csrf in (None, "wrong", page.hidden("csrf") + "x"):
        answer = console.post("/console/overrides", form if csrf is None else {**form, "csrf": csrf})
        assert answer.status == 403 and "did not come from this console" in answer.text
    assert overrides_in(school) == []
    assert console.post("/console/overrides", {**form, "csrf": page.hidden("csrf")}).status == 200
    assert overrides_in(school) == [("class-5a", "youtube.com")]


def test_a_cross_origin_post_is_refused_even_with_the_right_csrf_token(console: ConsoleClient, school: School) -> None:
    csrf = console.sign_in(school.secrets["ms-peeters"]).hidden("csrf")
    form = {"csrf": csrf, "group": "class-5a", "site": "youtube.com", "minutes": "10"}
    assert console.post("/console/overrides", form, headers={"Origin": "https://evil.example"}).status == 403
    assert console.post("/console/overrides", form, headers={"Sec-Fetch-Site": "cross-site"}).status == 403
    assert console.post("/console/overrides", form, headers={"Sec-Fetch-Site": "same-site"}).status == 403
    assert overrides_in(school) == []
    same = console.post("/console/overrides", form, headers={"Sec-Fetch-Site": "same-origin"})
    assert same.status == 200 and overrides_in(school) == [("class-5a", "youtube.com")]


def test_sign_in_needs_the_form_it_was_served_with(console: ConsoleClient, school: School) -> None:
    forged = console.post("/console/sign-in", {"token": school.secrets["coordinator"]})
    assert forged.status == 403 and console.cookie(SESSION_COOKIE) is None
    nonce = console.get("/console/sign-in").hidden("csrf")
    cross = console.post("/console/sign-in", {"csrf": nonce, "token": school.secrets["coordinator"]},
                         headers={"Origin": "https://evil.example"})
    assert cross.status == 403 and console.cookie(SESSION_COOKIE) is None


def test_signing_in_needs_a_valid_token_and_pages_need_a_session(console: ConsoleClient, school: School) -> None:
    for path in PAGES:
        answer = console.get(path)
        assert answer.url.endswith("/console/sign-in") and "<h1>Sign in</h1>" in answer.text
    refused = console.sign_in("eft_not-a-token")
    assert refused.status == 401 and "not valid" in refused.text and console.cookie(SESSION_COOKIE) is None
    assert console.get("/api/v1/groups").status == 401  # the console's cookie-free pages open nothing in the API


def test_failed_sign_ins_are_throttled_like_bad_bearer_tokens(school: School) -> None:
    app = school.app(ApiSettings(port=0, auth_failures=3, auth_window=60))
    console = ConsoleClient(app)
    try:
        assert [console.sign_in(f"eft_guess{number}").status for number in range(3)] == [401, 401, 401]
        throttled = console.sign_in("eft_guess3")
        assert throttled.status == 429 and int(throttled.headers["Retry-After"]) >= 1
        assert "Too many failed sign-ins" in throttled.text
        # one throttle for both doors: the API refuses this address's bad bearer tokens too
        assert console.get("/api/v1/groups", headers={"Authorization": "Bearer eft_guess4"}).status == 429
        assert console.sign_in(school.secrets["viewer"]).status == 200  # a valid token still signs in
    finally:
        console.close()


def test_only_the_sha256_of_a_session_id_is_kept(console: ConsoleClient, school: School) -> None:
    console.sign_in(school.secrets["viewer"])
    session_id = console.cookie(SESSION_COOKIE).value
    kept = set(console.app[SESSIONS]._sessions)
    assert kept == {hashlib.sha256(session_id.encode()).hexdigest()} and session_id not in kept


def test_no_token_secret_or_session_id_appears_in_any_page_or_url(school: School) -> None:
    for name, secret in school.secrets.items():
        console = ConsoleClient(school.app())
        try:
            answers = [console.sign_in(secret), *(console.get(path) for path in PAGES)]
            session_id = console.cookie(SESSION_COOKIE).value
            for answer in answers:
                assert secret not in answer.text and secret not in answer.url, name
                assert session_id not in answer.text and session_id not in answer.url, name
        finally:
            console.close()


def test_signing_out_ends_the_session_on_the_server(console: ConsoleClient, school: School) -> None:
    page = console.sign_in(school.secrets["editor"])
    session_id = console.cookie(SESSION_COOKIE).value
    out = console.post("/console/sign-out", {"csrf": page.hidden("csrf")})
    assert out.url.endswith("/console/sign-in?out=1") and "You are signed out." in out.text
    replayed = console.get("/console/overview", cookies={SESSION_COOKIE: session_id})
    assert replayed.url.endswith("/console/sign-in?ended=1")


def test_a_session_expires_when_idle_and_after_its_lifetime(school: School) -> None:
    now = [1000.0]
    app = school.app()
    app[SESSIONS] = SessionStore(idle=60, lifetime=300, clock=lambda: now[0])
    console = ConsoleClient(app)
    try:
        console.sign_in(school.secrets["editor"])
        for _ in range(5):
            now[0] += 50  # active: each page within the idle time
            assert console.get("/console/overview").url.endswith("/console/overview")
        now[0] += 51  # 301 s after signing in: past the lifetime
        assert console.get("/console/overview").url.endswith("/console/sign-in?ended=1")
        console.sign_in(school.secrets["editor"])
        now[0] += 61
        ended = console.get("/console/overview")
        assert ended.url.endswith("/console/sign-in?ended=1") and "Your session has ended" in ended.text
    finally:
        console.close()


def test_revoking_the_token_ends_its_sessions_at_the_next_page(console: ConsoleClient, school: School) -> None:
    console.sign_in(school.secrets["editor"])
    assert console.get("/console/overview").url.endswith("/console/overview")
    revoked = console.request("DELETE", "/api/v1/tokens/editor",
                              headers={"Authorization": f"Bearer {school.secrets['coordinator']}", "If-Match": "*"})
    assert revoked.status == 204
    assert console.get("/console/overview").url.endswith("/console/sign-in?ended=1")


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_a_post_the_api_would_refuse_is_refused_by_the_console(console: ConsoleClient, school: School,
                                                               role: str) -> None:
    csrf = console.sign_in(school.secrets[role]).hidden("csrf")
    answer = console.post("/console/overrides", {"csrf": csrf, "group": "class-5a", "site": "youtube.com",
                                                  "minutes": "10"})
    if role == "viewer":  # the API's roles: a viewer may not create overrides
        assert answer.status == 403 and overrides_in(school) == []
    else:
        assert answer.status == 200 and overrides_in(school) == [("class-5a", "youtube.com")]


def test_signing_in_again_replaces_the_session(console: ConsoleClient, school: School) -> None:
    console.sign_in(school.secrets["viewer"])
    first = console.cookie(SESSION_COOKIE).value
    assert console.get("/console/sign-in").url.endswith("/console/overview")  # signed in: no form
    console.post("/console/sign-in", {"csrf": "paired", "token": school.secrets["editor"]},
                 cookies={SIGN_IN_COOKIE: "paired"})
    second = console.cookie(SESSION_COOKIE).value
    assert first != second and len(console.app[SESSIONS]) == 1
    replayed = console.get("/console/overview", cookies={SESSION_COOKIE: first})
    assert replayed.url.endswith("/console/sign-in?ended=1")


def test_forms_must_be_url_encoded_and_small(console: ConsoleClient, school: School) -> None:
    csrf = console.sign_in(school.secrets["ms-peeters"]).hidden("csrf")
    too_big = console.post("/console/overrides", {"csrf": csrf, "group": "class-5a", "site": "a.example",
                                                  "minutes": "5", "reason": "x" * 70_000})
    assert too_big.status == 413
    as_json = console.request("POST", "/console/overrides", json={"csrf": csrf, "group": "class-5a",
                                                                  "site": "a.example", "minutes": 5})
    assert as_json.status == 415
    assert overrides_in(school) == []
