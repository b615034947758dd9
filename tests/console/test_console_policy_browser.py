"""A policy edit in headless Chromium: an editor types an entry, sees its `check` preview,
saves it; axe-core and the CSP hold on the preview."""

from __future__ import annotations

from typing import Any

from console_client import LiveConsole, School
from console_client import school  # noqa: F401 (a fixture)
from test_console_browser import (  # noqa: F401 (fixtures)
    By,
    WebDriverWait,
    browser,
    csp_violations,
    expected_conditions,
    live,
    screenshot,
    serious_accessibility_violations,
    sign_in,
)
from test_console_browser import pytestmark  # noqa: F401 (skipped without chromium)

from edufilter.policy.store import PolicyStore


def test_an_editor_previews_an_entry_and_saves_it(browser: Any, live: LiveConsole, school: School) -> None:
    sign_in(browser, live, school.secrets["editor"], "/console/overview")
    browser.get(live.base_url + "/console/policy")
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "policy")
    browser.find_element(By.ID, "entry-value").send_keys("chat.example")
    browser.find_element(By.ID, "entry-names").send_keys("www.chat.example")
    browser.find_element(By.CSS_SELECTOR, "form.add-entry button[type=submit]").click()
    WebDriverWait(browser, 10).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR,
                                                                                      "table.foreseen")))
    rows = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "table.foreseen tbody tr")]
    assert ["chat.example", "class-5a", "allow (group default)", "block", "the list's rule decides"] in rows
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "policy-preview")
    browser.find_element(By.CSS_SELECTOR, "form.save-entry button").click()
    WebDriverWait(browser, 10).until(expected_conditions.text_to_be_present_in_element(
        (By.CLASS_NAME, "notice"), "chat.example is now in the list blocked."))
    assert csp_violations(browser) == []
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        [blocked] = store.load().lists
    assert "chat.example" in [entry.value for entry in blocked.entries]
