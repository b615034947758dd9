"""The console in a real browser: headless Chromium through Selenium WebDriver. A teacher opens
a site for a class and sees it listed; a viewer sees no change form; a form posted from another
origin is refused; no page breaks its Content-Security-Policy; axe-core finds no serious or
critical accessibility violation on any page.

EDUFILTER_CONSOLE_SCREENSHOTS=<dir> also saves a screenshot of each main page there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_client import (
    LiveConsole,
    School,
    school,  # noqa: F401 (a fixture)
)
from headless_chromium import (
    browser,  # noqa: F401 (a fixture)
    csp_violations,
    needs_chromium,
    serious_accessibility_violations,
)

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (pip install selenium)")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

pytestmark = needs_chromium


@pytest.fixture
def live(school: School) -> Iterator[LiveConsole]:
    served = LiveConsole(school.app())
    yield served
    served.stop()


def sign_in(browser: Any, live: LiveConsole, secret: str, lands_on: str) -> None:
    browser.delete_all_cookies()
    browser.get(live.base_url + "/console/sign-in")
    field = browser.find_element(By.ID, "token")
    field.send_keys(secret)
    field.send_keys(Keys.ENTER)
    WebDriverWait(browser, 10).until(expected_conditions.url_contains(lands_on))


def screenshot(browser: Any, name: str) -> None:
    folder = os.environ.get("EDUFILTER_CONSOLE_SCREENSHOTS")
    if folder:  # the whole page, at most 1600 pixels high
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1000, "height": min(height, 1600), "deviceScaleFactor": 1, "mobile": False})
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_teacher_opens_a_site_for_a_class_and_sees_it_listed(browser: Any, live: LiveConsole,
                                                               school: School) -> None:
    sign_in(browser, live, school.secrets["ms-peeters"], "/console/overrides")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Open a site for a class"
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "teacher")
    browser.find_element(By.ID, "site").send_keys("youtube.com")
    minutes = browser.find_element(By.ID, "minutes")
    minutes.clear()
    minutes.send_keys("40")
    browser.find_element(By.CSS_SELECTOR, "form.open-site button[type=submit]").click()
    notice = WebDriverWait(browser, 10).until(
        expected_conditions.presence_of_element_located((By.CLASS_NAME, "notice")))
    assert notice.text.startswith("youtube.com is open for class-5a until")
    cells = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.overrides td")]
    assert cells[:5] == ["youtube.com", "class-5a", "allow", cells[3], "active"]
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "teacher-opened")
    # the stylesheet loaded under the CSP: the button has the console's colours
    button = browser.find_element(By.CSS_SELECTOR, "form.open-site button")
    assert button.value_of_css_property("background-color") == "rgba(11, 79, 138, 1)"
    assert csp_violations(browser) == []
    browser.find_element(By.CSS_SELECTOR, "form.end button").click()
    WebDriverWait(browser, 10).until(expected_conditions.text_to_be_present_in_element(
        (By.CLASS_NAME, "notice"), "The override has ended."))
    assert browser.find_elements(By.CSS_SELECTOR, "table.overrides") == []


def test_a_viewer_sees_no_change_forms_and_every_page_is_accessible(browser: Any, live: LiveConsole,
                                                                     school: School) -> None:
    sign_in(browser, live, school.secrets["viewer"], "/console/overview")
    for path, name in (("/console/overview", "overview"), ("/console/policy", "policy"), ("/console/check", "check"),
                       ("/console/audit", "audit")):
        browser.get(live.base_url + path)
        assert browser.find_elements(By.CSS_SELECTOR, "form.change") == [], path
        assert serious_accessibility_violations(browser) == [], path
        screenshot(browser, name)
    assert [link.text for link in browser.find_elements(By.CSS_SELECTOR, "header nav a")] == \
        ["Overview", "Policy", "Check", "Audit log"]
    browser.get(live.base_url + "/console/overrides")
    assert "Your token may not use this page." in browser.find_element(By.TAG_NAME, "main").text
    browser.get(live.base_url + "/console/check")
    browser.find_element(By.ID, "target").send_keys("games.example")
    browser.find_element(By.ID, "address").send_keys("198.18.5.7")
    browser.find_element(By.CSS_SELECTOR, "form.check button").click()
    heading = WebDriverWait(browser, 10).until(
        expected_conditions.presence_of_element_located((By.ID, "result-heading")))
    assert heading.text == "Decision: block"
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "check-result")
    assert csp_violations(browser) == []


def test_the_sign_in_page_is_accessible_and_keyboard_first(browser: Any, live: LiveConsole) -> None:
    browser.get(live.base_url + "/console/sign-in?lang=nl")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "nl"
    assert browser.switch_to.active_element.get_attribute("id") == "token"  # autofocus on the one field
    screenshot(browser, "sign-in")
    backwards = []
    for _ in range(3):
        ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
        active = browser.switch_to.active_element
        backwards.append(active.get_attribute("id") or active.get_attribute("class") or active.tag_name)
    assert backwards == ["button", "language", "skip"]  # the first stop skips to the content
    assert serious_accessibility_violations(browser) == []


def test_a_form_posted_from_another_origin_is_refused(browser: Any, live: LiveConsole, school: School) -> None:
    sign_in(browser, live, school.secrets["ms-peeters"], "/console/overrides")
    forged = (f'<form id="f" method="post" action="{live.base_url}/console/overrides">'
              '<input name="csrf" value="guess"><input name="group" value="class-5a">'
              '<input name="site" value="evil.example"><input name="minutes" value="45"></form>')
    browser.get("data:text/html;charset=utf-8," + forged)
    browser.execute_script("document.getElementById('f').submit()")
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("/console/overrides"))
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "Your session has ended" in main or "did not come from this console" in main
    browser.get(live.base_url + "/console/overrides")
    assert "evil.example" not in browser.page_source and "None yet." in browser.page_source


def test_every_page_of_an_admin_is_accessible(browser: Any, live: LiveConsole, school: School) -> None:
    sign_in(browser, live, school.secrets["coordinator"], "/console/overview")
    links = [link.get_attribute("href") for link in browser.find_elements(By.CSS_SELECTOR, "header nav a")]
    assert [link.removeprefix(live.base_url) for link in links] == [
        "/console/overview", "/console/overrides", "/console/reviews", "/console/policy", "/console/uploads",
        "/console/check", "/console/audit", "/console/tokens"]
    for link in links:
        browser.get(link)
        assert serious_accessibility_violations(browser) == [], link
    browser.find_element(By.ID, "name").send_keys("mr-janssens")
    browser.find_element(By.CSS_SELECTOR, "input[name=groups][value=class-6b]").click()
    browser.find_element(By.CSS_SELECTOR, "form.make-token button[type=submit]").click()
    secret = WebDriverWait(browser, 10).until(expected_conditions.presence_of_element_located((By.ID, "made-secret")))
    assert secret.get_attribute("value").startswith("eft_")
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "tokens")
    assert csp_violations(browser) == []
