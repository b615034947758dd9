"""Headless Chromium through Selenium WebDriver for the consoles' browser tests (the school's
and the group's): the driver fixture, and what a page broke (its Content-Security-Policy,
axe-core's serious or critical accessibility rules)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="the browser tests need Debian's chromium and chromium-driver (apt-get install chromium-driver)",
)
AXE = Path(__file__).parent / "data" / "axe.min.js"
SERIOUS = ("serious", "critical")


@pytest.fixture
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1100,900", "--lang=en-GB", "--no-first-run"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def csp_violations(browser: Any) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]


def serious_accessibility_violations(browser: Any) -> list[str]:
    browser.execute_script(AXE.read_text(encoding="utf-8"))
    violations = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(result => done(result.violations),"
        " error => done([{id: 'axe-error', impact: 'critical', help: String(error), nodes: []}]));"
    )
    return [f"{item['id']} ({item['impact']}): {item['help']} at {[node['target'] for node in item['nodes']]}"
            for item in violations if item["impact"] in SERIOUS]
