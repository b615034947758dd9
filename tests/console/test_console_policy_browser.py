"""A policy edit in headless Chromium: an editor types an entry, sees its `check` preview,
saves it; and the overview with its warnings, list freshness and evasion count. axe-core and
the CSP hold on each."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from console_client import (
    NOW,
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
from test_console_overview_more import import_category

from edufilter.policy.model import Action
from edufilter.policy.store import PolicyStore
from edufilter.policy.update import record_update_run


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


def test_the_overview_with_warnings_freshness_and_evasion_is_accessible(browser: Any, live: LiveConsole,
                                                                        school: School) -> None:
    import_category(school, "games", ["a.example", "b.example"], age_days=2)
    import_category(school, "adult", ["c.example"], age_days=9)
    record_update_run(school.state_dir, {})
    assert school.events is not None
    school.events.stats.add([(NOW, "class-5a", "evasion", "block", 3, 12)])
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        store.add_override("class-5a", "maps.example", Action.ALLOW, NOW - timedelta(hours=2),
                           NOW - timedelta(hours=1), "ms-peeters", "lesson")
    sign_in(browser, live, school.secrets["viewer"], "/console/overview")
    warnings = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "section.warnings li")]
    assert "The list adult is 9 days old." in warnings and len(warnings) == 4
    assert warnings[-1].startswith("The rules of class-6b match nothing: no device belongs to the group")
    assert browser.find_element(By.CSS_SELECTOR, "dd.evasion").text == "3"
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.freshness tbody tr")) == 2
    assert serious_accessibility_violations(browser) == []
    assert csp_violations(browser) == []
    screenshot(browser, "overview")
