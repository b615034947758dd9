"""The console's operational pages in headless Chromium: an editor uploads a list and watches
its progress bar (static/upload.js under the CSP) to the end, cancels another; the teacher page
per role offers only the token's groups and minutes and lists only the overrides one started;
axe-core finds no serious violation on any of them."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
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
from test_console_uploads import slow_reading  # noqa: F401 (a fixture)

from edufilter.api.tokens import MAX_OVERRIDE_MINUTES
from edufilter.policy.model import Action
from edufilter.policy.store import PolicyStore


def choose_upload(browser: Any, live: LiveConsole, file: Path, mode: str) -> None:
    browser.get(live.base_url + "/console/uploads")
    assert serious_accessibility_violations(browser) == []
    browser.find_element(By.CSS_SELECTOR, f"input[name=mode][value={mode}]").click()
    browser.find_element(By.ID, "upload-file").send_keys(str(file))
    browser.find_element(By.CSS_SELECTOR, "form.upload button[type=submit]").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_matches(r"/console/uploads/[0-9a-f]{16}$"))


def test_an_editor_uploads_a_list_and_the_page_follows_it_to_the_end(browser: Any, live: LiveConsole,
                                                                       school: School, tmp_path: Path) -> None:
    listed = tmp_path / "school-list.txt"
    listed.write_text("".join(f"site{number}.example\n" for number in range(5000)))
    sign_in(browser, live, school.secrets["editor"], "/console/overview")
    choose_upload(browser, live, listed, "append")
    # upload.js reloads the page once the upload has finished: the finished page has no script
    WebDriverWait(browser, 20).until(
        lambda driver: driver.find_element(By.ID, "upload-state").text == "done"
        and not driver.find_elements(By.CSS_SELECTOR, "script[src]"))
    assert browser.find_element(By.ID, "upload-bar").get_attribute("value") == "1000"
    assert browser.find_element(By.ID, "upload-added").text == "5,000"
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "upload-done")
    assert csp_violations(browser) == []


def test_the_progress_bar_moves_without_a_reload_and_cancel_stops_the_upload(
        browser: Any, live: LiveConsole, school: School, tmp_path: Path, slow_reading: threading.Event) -> None:
    listed = tmp_path / "replacement.txt"
    listed.write_text("".join(f"n{number}.example\n" for number in range(3000)))
    sign_in(browser, live, school.secrets["editor"], "/console/overview")
    choose_upload(browser, live, listed, "replace")
    assert browser.find_element(By.ID, "upload-entries").text == "0"  # the reading waits for the test
    assert browser.find_element(By.ID, "upload-bar").get_attribute("value") == "0"
    browser.execute_script("window.stillThisPage = true;")  # gone after any reload
    slow_reading.set()
    WebDriverWait(browser, 10).until(
        lambda driver: driver.find_element(By.ID, "upload-entries").text == "3,000")
    assert browser.execute_script("return window.stillThisPage === true;")
    assert browser.find_element(By.ID, "upload-state").text == "reading"
    assert browser.find_element(By.ID, "upload-bar").get_attribute("value") == "1000"
    assert serious_accessibility_violations(browser) == []
    screenshot(browser, "upload-progress")
    browser.find_element(By.CSS_SELECTOR, "form.cancel-upload button").click()
    WebDriverWait(browser, 15).until(expected_conditions.text_to_be_present_in_element(
        (By.CLASS_NAME, "notice"), "The upload is cancelled; the list is unchanged."))
    assert browser.find_element(By.ID, "upload-state").text == "cancelled"
    assert browser.find_elements(By.CSS_SELECTOR, "form.cancel-upload") == []
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        [blocked] = store.load().lists
        assert [entry.value for entry in blocked.entries] == ["games.example"]
    assert csp_violations(browser) == []


def options(browser: Any) -> list[str]:
    return [option.get_attribute("value") for option in browser.find_elements(By.CSS_SELECTOR, "#group option")]


def test_the_teacher_page_per_role_offers_the_tokens_scope_and_ones_own_overrides(
        browser: Any, live: LiveConsole, school: School) -> None:
    school.token("teacher", name="mr-janssens", groups=("class-5a", "class-6b"), max_minutes=30)
    with PolicyStore(school.state_dir / "policy.sqlite") as store:  # a colleague's, in a shared group
        store.add_override("class-5a", "colleague.example", Action.ALLOW, NOW, NOW + timedelta(minutes=40),
                           "ms-peeters", "their lesson")
    sign_in(browser, live, school.secrets["mr-janssens"], "/console/overrides")
    assert options(browser) == ["class-5a", "class-6b"]
    minutes = browser.find_element(By.ID, "minutes")
    assert (minutes.get_attribute("max"), minutes.get_attribute("value")) == ("30", "30")
    assert "colleague.example" not in browser.page_source
    browser.find_element(By.CSS_SELECTOR, "#group option[value=class-6b]").click()
    browser.find_element(By.ID, "site").send_keys("maps.example")
    browser.find_element(By.CSS_SELECTOR, "form.open-site button[type=submit]").click()
    WebDriverWait(browser, 10).until(expected_conditions.presence_of_element_located((By.CLASS_NAME, "notice")))
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "table.overrides tbody tr")]
    assert len(rows) == 1 and rows[0].startswith("maps.example class-6b allow")
    assert serious_accessibility_violations(browser) == []

    sign_in(browser, live, school.secrets["ms-peeters"], "/console/overrides")
    assert options(browser) == ["class-5a"] and browser.find_element(By.ID, "minutes").get_attribute("max") == "45"
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "table.overrides tbody tr")]
    assert len(rows) == 1 and rows[0].startswith("colleague.example class-5a allow")
    browser.find_element(By.CSS_SELECTOR, "form.end button").click()
    WebDriverWait(browser, 10).until(expected_conditions.text_to_be_present_in_element(
        (By.CLASS_NAME, "notice"), "The override has ended."))

    sign_in(browser, live, school.secrets["editor"], "/console/overview")
    browser.get(live.base_url + "/console/overrides")
    assert options(browser) == ["guests", "class-5a", "class-6b"]
    assert browser.find_element(By.ID, "minutes").get_attribute("max") == str(MAX_OVERRIDE_MINUTES)
    assert "maps.example" not in browser.page_source  # the teacher's, not the editor's
    assert serious_accessibility_violations(browser) == []
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        assert [override.name for override in store.load().overrides] == ["maps.example"]
    assert csp_violations(browser) == []
