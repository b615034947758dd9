"""The review flow in headless Chromium: a pupil's browser shows the block page, the pupil
presses "This should not be blocked"; the request appears on the teacher's console page and
the teacher's click opens the site for the class. axe-core checks both pages."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from aiohttp import web
from console_client import (
    LiveConsole,
    School,
    school,  # noqa: F401 (a fixture)
)
from test_console_browser import (  # noqa: F401 (fixtures)
    By,
    WebDriverWait,
    browser,
    csp_violations,
    expected_conditions,
    live,
    pytestmark,  # noqa: F401 (skipped without chromium)
    screenshot,
    serious_accessibility_violations,
    sign_in,
)

from edufilter.api.reviews import queue_review_request
from edufilter.enforce.blockpage import BlockInfo
from edufilter.enforce.blockpage_server import ReviewForm, make_blockpage_app
from edufilter.policy.store import PolicyStore


class BlockPageServer:
    """The block-page app on 127.0.0.1 in a thread; every host is blocked as wiki.example."""

    def __init__(self, school: School) -> None:
        self.school = school
        self.reference = "QWERTYUI"
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="block-page", daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def explain(self, host: str, client: str, accept_language: str | None) -> BlockInfo:
        return BlockInfo("wiki.example", "games", "Games", "Class 5A", "block", self.reference,
                         datetime.now(timezone.utc), "class-5a")

    async def submit(self, form: ReviewForm) -> str:
        with PolicyStore(self.school.state_dir / "policy.sqlite") as store:
            queued = queue_review_request(store, form.site, form.category, form.group, form.reference, form.reason,
                                          datetime.now(timezone.utc))
        return "sent" if queued is not None else "unavailable"

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        app = make_blockpage_app(self.explain, "nl", submit_review=self.submit, pseudonym=lambda address: "c-1")
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.base_url = "http://127.0.0.1:%d" % self.runner.addresses[0][1]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def block_page(school: School) -> Iterator[BlockPageServer]:
    served = BlockPageServer(school)
    yield served
    served.stop()


def test_a_pupil_asks_from_the_block_page_and_the_teacher_opens_the_site_from_the_console(
        browser: Any, live: LiveConsole, block_page: BlockPageServer, school: School) -> None:
    browser.get(block_page.base_url + "/any/path")
    assert browser.find_element(By.TAG_NAME, "h1").text == "This website is blocked"
    assert serious_accessibility_violations(browser) == []
    browser.find_element(By.ID, "reason").send_keys("We read about it in history class")
    screenshot(browser, "block-page-review")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    status = WebDriverWait(browser, 10).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "[role=status]")))
    assert status.text == "Your request was sent. Your teacher or the ICT coordinator will look at it."
    assert csp_violations(browser) == []

    sign_in(browser, live, school.secrets["ms-peeters"], "/console/overrides")
    browser.find_element(By.LINK_TEXT, "Requests").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("/console/reviews"))
    cells = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.reviews td")]
    assert cells[1:6] == ["wiki.example", "games", "class-5a", "QWERTYUI", "We read about it in history class"]
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "reviews")
    minutes = browser.find_element(By.CSS_SELECTOR, "form.approve input[name=minutes]")
    minutes.clear()
    minutes.send_keys("30")
    browser.find_element(By.CSS_SELECTOR, "form.approve button").click()
    WebDriverWait(browser, 10).until(expected_conditions.text_to_be_present_in_element(
        (By.CLASS_NAME, "notice"), "The request for wiki.example is approved."))
    assert serious_accessibility_violations(browser) == []
    assert csp_violations(browser) == []
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        [override] = store.load().overrides
    assert (override.group, override.name, override.created_by) == ("class-5a", "wiki.example", "ms-peeters")
