"""The group's console (`edufilter hub serve`'s /console/) against a real nats-server with TLS
on loopback: sign-in per scope, a site's token kept to its site on every page and form, a
stale edit refused with the conflict shown, no edit form for a viewer, and (in Chromium) the
overview and parts pages free of serious accessibility violations."""

from __future__ import annotations

import asyncio
import html
import json
import re
import ssl
import time
from typing import Any

import pytest
import requests
from headless_chromium import (
    browser,  # noqa: F401 (a fixture)
    csp_violations,
    needs_chromium,
    serious_accessibility_violations,
)

pytest.importorskip("nats", reason="the hub extra (nats-py) is not installed")

import nats
from test_hub_api import (
    Hub,
    hub,  # noqa: F401 (a fixture: the group's API and servers)
)

from edufilter.hub.model import events_subject
from edufilter.hub.stats import stats_subject

SITE_FILE = "lists.toml"
SITE_TEXT = '[lists.ghent-extra]\ndomain = ["extra.test"]\n'


class Visitor:
    """A signed-in console session over plain HTTP requests, as a browser sends them."""

    def __init__(self, group: Hub) -> None:
        self.url = group.url
        self.session = requests.Session()

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.url + path, timeout=60, allow_redirects=False)

    def post(self, path: str, fields: dict[str, str], **headers: str) -> requests.Response:
        return self.session.post(self.url + path, data=fields, headers=headers, timeout=60, allow_redirects=False)

    def sign_in(self, secret: str) -> requests.Response:
        form = self.get("/console/sign-in")
        return self.post("/console/sign-in", {"csrf": csrf_of(form.text), "token": secret})


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def signed_in(group: Hub, who: str) -> Visitor:
    visitor = Visitor(group)
    answer = visitor.sign_in(group.secrets[who])
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/overview", answer.text
    return visitor


@pytest.fixture(scope="module")
def tokens(hub: Hub) -> Hub:  # noqa: F811 (the fixture imported above)
    for name, role, site in (("group-viewer", "viewer", None), ("ghent-editor", "editor", "ghent"),
                             ("ghent-viewer", "viewer", "ghent")):
        assert hub.make_token(name, role, **({} if site is None else {"site": site})).status_code == 201
    return hub


def revision_of(group: Hub, path: str) -> int:
    return group.call("GET", path, "group-admin").json()["revision"]


def test_sign_in_per_scope_shows_the_sites_in_scope(tokens: Hub) -> None:
    overview = signed_in(tokens, "group-admin").get("/console/overview")
    assert overview.status_code == 200
    assert "/console/parts/sites/ghent" in overview.text and "/console/parts/sites/bruges" in overview.text
    assert "/console/parts/group" in overview.text  # the group's part and its revision
    for language, title in (("nl", "Overzicht van de groep"), ("fr", "Vue d'ensemble du groupe"),
                            ("de", "Übersicht der Gruppe")):
        page = signed_in(tokens, "group-admin").get(f"/console/overview?lang={language}").text
        assert f'<html lang="{language}">' in page and title in html.unescape(page)
    mine = signed_in(tokens, "ghent-viewer").get("/console/overview")
    assert "/console/parts/sites/ghent" in mine.text and "bruges" not in mine.text
    assert tokens.secrets["ghent-viewer"] not in mine.text  # the token is never in a page
    refused = Visitor(tokens).sign_in("eft_not-a-token")
    assert refused.status_code == 401 and "edufilter_console" not in refused.cookies
    assert Visitor(tokens).get("/console/overview").status_code == 303  # no session: to the sign-in page


def test_the_overview_counts_blocks_per_site_and_never_shows_a_pupil(tokens: Hub) -> None:
    async def publish() -> None:
        client = await nats.connect(tokens.nats_url, tls=ssl.create_default_context(cafile=str(tokens.ca)))
        js = client.jetstream()
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        for site, count in (("ghent", 4), ("bruges", 1)):
            for number in range(count):
                record = {"time": now, "group": "primary", "category": "games", "name": f"{site}{number}.test",
                          "action": "block", "client": "pupil-pseudonym", "kind": "tls"}
                await js.publish(events_subject(site), json.dumps(record).encode())
            minute = {"minute": now[:17] + "00+00:00", "counts": [
                {"group": "primary", "category": "games", "kind": "tls", "action": "block", "blocks": count}]}
            await js.publish(stats_subject(site), json.dumps(minute).encode())
        await client.close()

    asyncio.run(publish())
    page = signed_in(tokens, "group-viewer").get("/console/overview?window=1h").text
    assert "<desc id=\"chart-site-desc\">ghent: 4; bruges: 1</desc>" in page
    assert "<desc id=\"chart-category-desc\">games: 5</desc>" in page
    assert "<td>bruges</td><td>bruges0.test</td>" in page  # the latest events carry their site
    assert "pupil-pseudonym" not in page  # a pseudonym is one site's: never listed across sites
    ghent = signed_in(tokens, "ghent-viewer").get("/console/overview?window=1h").text
    assert "<desc id=\"chart-site-desc\">ghent: 4</desc>" in ghent and "bruges0.test" not in ghent


def test_a_sites_token_cannot_open_or_post_to_another_sites_part(tokens: Hub) -> None:
    editor = signed_in(tokens, "ghent-editor")
    assert editor.get("/console/parts/sites/ghent").status_code == 200
    other = editor.get("/console/parts/sites/bruges")
    assert other.status_code == 403 and "bruges" in html.unescape(other.text)
    assert signed_in(tokens, "group-admin").get("/console/parts/sites/nowhere").status_code == 404
    before = revision_of(tokens, "/api/v1/sites/bruges/part")
    csrf = csrf_of(editor.get("/console/parts/sites/ghent?file=").text)
    forged = {"csrf": csrf, "file": SITE_FILE, "text": SITE_TEXT, "revision": str(before)}
    assert editor.post("/console/parts/sites/bruges", forged).status_code == 403  # a valid form, another site
    assert editor.post("/console/parts/sites/ghent", {**forged, "csrf": "guessed"}).status_code == 403
    assert editor.post("/console/parts/sites/ghent", forged, Origin="http://evil.test").status_code == 403
    assert editor.post("/console/parts/group", {**forged, "revision": "1"}).status_code == 403  # group tokens only
    assert revision_of(tokens, "/api/v1/sites/bruges/part") == before
    assert editor.get("/console/parts/group?file=lists.toml").status_code == 403  # no edit form either


def test_a_stale_edit_is_refused_and_shows_the_conflict(tokens: Hub) -> None:
    editor = signed_in(tokens, "ghent-editor")
    path = "/api/v1/sites/ghent/part"
    start = revision_of(tokens, path)
    form = editor.get("/console/parts/sites/ghent?file=").text
    fields = {"csrf": csrf_of(form), "file": SITE_FILE, "text": SITE_TEXT,
              "revision": re.search(r'name="revision" value="(\d+)"', form).group(1)}
    assert int(fields["revision"]) == start
    saved = editor.post("/console/parts/sites/ghent", fields)
    assert saved.status_code == 303 and saved.headers["Location"] == "/console/parts/sites/ghent"
    stored = tokens.call("GET", path, "group-admin").json()
    assert stored["files"] == {SITE_FILE: SITE_TEXT} and stored["revision"] > start
    assert f"revision {stored['revision']}" in editor.get("/console/parts/sites/ghent").text  # the notice

    stale = editor.post("/console/parts/sites/ghent", {**fields, "text": SITE_TEXT + "# mine\n"})  # same old revision
    assert stale.status_code == 412
    assert f"since you opened revision {start} (it is now revision {stored['revision']})" in stale.text
    assert "# mine" in stale.text  # the editor's text is kept
    assert revision_of(tokens, path) == stored["revision"]
    audit = signed_in(tokens, "group-admin").get("/console/audit").text
    assert "<td>ghent</td><td>ghent-editor (editor)</td>" in audit


def test_a_viewer_sees_no_edit_form(tokens: Hub) -> None:
    for who, path in (("group-viewer", "/console/parts/group"), ("ghent-viewer", "/console/parts/sites/ghent")):
        viewer = signed_in(tokens, who)
        page = viewer.get(path)
        assert page.status_code == 200 and "<details>" in page.text
        assert "<textarea" not in page.text and "?file=" not in page.text
        assert viewer.get(path + "?file=policy.toml").status_code == 403
    editor_view = signed_in(tokens, "group-admin").get("/console/parts/group")
    assert "?file=" in editor_view.text  # the same page offers an editor the files to edit


@needs_chromium
def test_the_overview_and_parts_pages_are_accessible(tokens: Hub, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(tokens.url + "/console/sign-in")
    field = browser.find_element(By.ID, "token")
    field.send_keys(tokens.secrets["group-admin"])
    field.send_keys(Keys.ENTER)  # keyboard only
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("/console/overview"))
    for path in ("/console/overview", "/console/parts", "/console/parts/group",
                 "/console/parts/sites/ghent?file=" + SITE_FILE, "/console/audit"):
        browser.get(tokens.url + path)
        assert serious_accessibility_violations(browser) == [], path
    assert csp_violations(browser) == []
