"""The clients, rules, schedules and categories pages in headless Chromium: an editor changes
each (preview first, then Save) and the API shows the change; a viewer sees no edit control;
axe-core finds no serious violation and the CSP holds on every page."""

from __future__ import annotations

from typing import Any

import requests
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

from edufilter.policy.model import Action, Rule, TargetKind
from edufilter.policy.store import PolicyStore


def _api(live: LiveConsole, school: School, path: str) -> Any:
    answer = requests.get(live.base_url + path, headers={"Authorization": f"Bearer {school.secrets['editor']}"},
                          timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _preview_then_save(browser: Any, button: Any) -> None:
    """Press a preview button, check the preview page, save, and wait for the notice."""
    button.click()
    WebDriverWait(browser, 20).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR,
                                                                                      "form.save-change")))
    assert serious_accessibility_violations(browser) == []
    browser.find_element(By.CSS_SELECTOR, "form.save-change button").click()
    WebDriverWait(browser, 20).until(expected_conditions.presence_of_element_located((By.CLASS_NAME, "notice")))


def test_an_editor_changes_rules_clients_and_a_schedule(browser: Any, live: LiveConsole, school: School) -> None:
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        store.add_rule(Rule("class-5a", TargetKind.CATEGORY, "games", Action.MONITOR, "lessons"))
    sign_in(browser, live, school.secrets["editor"], "/console/overview")

    browser.get(live.base_url + "/console/policy/rules?group=class-5a&names=games.example")
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "policy-rules")
    browser.find_element(By.ID, "rule-0-enabled").click()  # off
    browser.find_element(By.CSS_SELECTOR, "#rule-0 button.preview-rule").click()
    WebDriverWait(browser, 20).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR,
                                                                                      "table.foreseen")))
    assert browser.current_url.endswith("#preview-title")  # the answer opens at the preview
    cells = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.foreseen tbody td")]
    assert cells[:2] == ["games.example", "class-5a"] and cells[4] == "changes"
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "policy-rules-preview")
    browser.find_element(By.CSS_SELECTOR, "form.save-change button").click()
    WebDriverWait(browser, 20).until(expected_conditions.presence_of_element_located((By.CLASS_NAME, "notice")))
    assert [rule["enabled"] for rule in _api(live, school, "/api/v1/groups/class-5a/rules")["items"]] == [False, True]
    _preview_then_save(browser, browser.find_element(By.CSS_SELECTOR, "#rule-0 button.move-down"))
    moved = _api(live, school, "/api/v1/groups/class-5a/rules")["items"]
    assert [(rule["target"], rule["enabled"]) for rule in moved] == [("games", True), ("blocked", False)]

    browser.get(live.base_url + "/console/policy/clients")
    assert serious_accessibility_violations(browser) == []
    browser.find_element(By.ID, "client-value").send_keys("198.18.6.0/24")
    browser.find_element(By.CSS_SELECTOR, "#client-group option[value=class-6b]").click()
    _preview_then_save(browser, browser.find_element(By.CSS_SELECTOR, "form.add-client button[type=submit]"))
    clients = _api(live, school, "/api/v1/clients")["items"]
    assert {"group": "class-6b", "cidr": "198.18.6.0/24"}.items() <= next(
        client for client in clients if client["cidr"] == "198.18.6.0/24").items()

    browser.get(live.base_url + "/console/policy/schedules")
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "policy-schedules")
    browser.find_element(By.ID, "schedule-1-5-09:00-09:30").click()  # Saturday, 09:00-09:30
    day = browser.find_element(By.ID, "schedule-1-new-day")
    browser.execute_script("arguments[0].value = '2030-04-07';", day)  # a date field's typing is locale-bound
    browser.find_element(By.ID, "schedule-1-new-hours").send_keys("08:30-12:00")
    _preview_then_save(browser, browser.find_element(By.CSS_SELECTOR, "form.schedule-form button[type=submit]"))
    lessons = _api(live, school, "/api/v1/schedules/lessons")
    assert {"weekday": 5, "start": "09:00", "end": "09:30"} in lessons["slots"]
    assert lessons["exceptions"] == [{"day": "2030-04-07", "slots": [{"start": "08:30", "end": "12:00"}]}]

    browser.get(live.base_url + "/console/policy/categories")
    assert "games" in browser.find_element(By.CSS_SELECTOR, "table.categories").text
    assert serious_accessibility_violations(browser) == []
    assert csp_violations(browser) == []


def test_a_viewer_sees_the_policy_pages_without_edit_controls(browser: Any, live: LiveConsole,
                                                               school: School) -> None:
    sign_in(browser, live, school.secrets["viewer"], "/console/overview")
    for path in ("/console/policy/clients", "/console/policy/rules?group=class-6b", "/console/policy/schedules",
                 "/console/policy/categories"):
        browser.get(live.base_url + path)
        assert browser.find_elements(By.CSS_SELECTOR, "main form[method=post]") == []
        assert browser.find_elements(By.CSS_SELECTOR, "main input[type=checkbox]") == []
        assert serious_accessibility_violations(browser) == [], path
    browser.get(live.base_url + "/console/policy/schedules")
    ticked = browser.find_elements(By.CSS_SELECTOR, "table.week-grid td.on")
    assert len(ticked) == 5 * 14 and ticked[0].text.startswith("✓")  # Monday to Friday, 08:30-15:30 in half hours
    assert csp_violations(browser) == []
