"""Browser tests of the console: Debian's chromium, driven by Selenium through Debian's chromium-driver.

Nothing is downloaded at run time: the driver is ``/usr/bin/chromedriver`` given explicitly (Selenium Manager is
never asked: ``SE_OFFLINE=true``) and the browser ``/usr/bin/chromium``, headless. Both are installed by CI's apt
line (``.ci/run``: ``chromium chromium-driver``); a missing one fails the tests, never skips them.

Screenshots are test artifacts: saved under ``$DICOMNODE_ARTIFACTS/browser/`` when that variable is set (CI keeps
the folder), else under pytest's temporary folder (``browser-artifacts*``; its path is printed at the end of the
session; CI sets it to ``artifacts/`` in the checkout). A failing browser test leaves a screenshot of the page it
failed on (``FAILED-<test>.png``). ``DICOMNODE_DOCS_IMG=docs/img`` also writes the ones the admin guide shows there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


class Artifacts:
    def __init__(self, folder: Path, docs: Path | None) -> None:
        self.folder = folder
        self.docs = docs
        folder.mkdir(parents=True, exist_ok=True)

    def shot(self, driver, name: str, *, docs: bool = False) -> Path:
        path = self.folder / f"{name}.png"
        driver.save_screenshot(str(path))
        if docs and self.docs is not None:  # for the admin guide: a 256-colour palette keeps the repository small
            from PIL import Image
            self.docs.mkdir(parents=True, exist_ok=True)
            Image.open(path).convert("RGB").quantize(256).save(self.docs / f"console-{name}.png", optimize=True)
        return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Artifacts:
    base = os.environ.get("DICOMNODE_ARTIFACTS")
    folder = Path(base) / "browser" if base else tmp_path_factory.mktemp("browser-artifacts")
    docs = os.environ.get("DICOMNODE_DOCS_IMG")
    a = Artifacts(folder, Path(docs) if docs else None)
    print(f"\nbrowser screenshots: {folder}")
    return a


def _driver():
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    assert CHROMEDRIVER.exists(), f"{CHROMEDRIVER} is missing: apt-get install -y chromium-driver"
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager look for (or download) a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1366,900",
              "--disable-extensions", "--no-first-run", "--disable-background-networking", "--lang=en-US"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    d.set_page_load_timeout(120)
    return d


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing browser test: a screenshot of the page it failed on, beside the others."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    driver, artifacts = item.funcargs.get("browser"), item.funcargs.get("artifacts")
    if driver is None or artifacts is None:
        return
    try:
        path = artifacts.shot(driver, f"FAILED-{item.name}")
        report.sections.append(("browser screenshot", str(path)))
    except Exception as e:  # noqa: BLE001 - the failure itself is what matters
        report.sections.append(("browser screenshot", f"not saved: {type(e).__name__}: {e}"))


@pytest.fixture(scope="module")
def browser():
    d = _driver()
    yield d
    d.quit()
