"""The console in a real browser (headless chromium) against the real node: `dicomnode serve` with [http] on free
ports, a series sent by DCMTK storescu, results for a DCMTK storescp that comes up late.

Two tests, each with its own node, so pytest-xdist may run them apart: the operator's day (log in, see a series
arrive, its job finish, its Results page with a key-slice picture that is not blank, requeue its dead-lettered
result once the destination is up; a viewer's clicks on the action buttons refused), and a series whose
SeriesDescription and sender AE hold ``<script>`` and quotes, shown escaped on every page.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pydicom
import pytest
from markupsafe import escape
from PIL import Image
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from helpers import STS_CT, free_port, storescu, wait_for_port, wait_until
from integration.conftest import NodeProcess, StoreSCP, to_toml


PASSWORDS = {"olga": ("operator", "olga-pass-1"), "vic": ("viewer", "vic-pass-1"), "ada": ("admin", "ada-pass-1")}
# segment + detect on STS_001's thigh CT: a SEG with anatomy and the tumour as a finding, in seconds
CONSOLE_PROFILE = {"console": {"steps": ["segment", "correct", "detect"], "outputs": ["seg"],
                               "correct": {"min_volume_ml": 0.5}, "detect": {"method": "auto", "max_findings": 3}}}
BASIC = {"basic": {"steps": ["foreground", "measure"], "outputs": ["seg", "sr"]}}


def _start_node(tmp_path, name: str, extra: dict) -> tuple[NodeProcess, str]:
    from dicomnode.web.settings import hash_password
    port, http_port = free_port(), free_port()
    data_dir = tmp_path / f"{name}-data"
    doc = {"node": {"ae_title": "DICOMNODE", "bind": "127.0.0.1", "port": port, "data_dir": str(data_dir)},
           "series": {"quiet_seconds": 2, "check_interval_seconds": 0.2},
           "workers": {"count": 1, "retry_backoff_seconds": [1]},
           "export": {"retry_backoff_seconds": [0.5], "max_attempts": 2, "timeout_seconds": 5},
           "http": {"enabled": True, "bind": "127.0.0.1", "port": http_port,
                    "viewer_url": "http://viewer.invalid/viewer?StudyInstanceUIDs={study_uid}",
                    "users": [{"name": n, "role": r, "password_hash": hash_password(p)}
                              for n, (r, p) in PASSWORDS.items()]}}
    doc.update(extra)
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(to_toml(doc))
    node = NodeProcess(cfg, data_dir, port, tmp_path / f"{name}.log").start()
    try:
        wait_for_port(http_port, timeout_s=60)
    except TimeoutError:
        node.kill()
        raise AssertionError(f"the console did not start:\n{node.log()}") from None
    return node, f"http://127.0.0.1:{http_port}"


def _login(browser, base: str, name: str) -> None:
    browser.delete_all_cookies()
    browser.get(base + "/login")
    browser.find_element(By.NAME, "username").send_keys(name)
    browser.find_element(By.NAME, "password").send_keys(PASSWORDS[name][1])
    _click_and_wait(browser, (By.CSS_SELECTOR, "form.login button[type=submit]"))
    wait_until(lambda: "/login" not in browser.current_url, timeout_s=30, what=f"{name} logged in")
    assert f"{name} ({PASSWORDS[name][0]})" in browser.find_element(By.CSS_SELECTOR, ".who").text


def _reload_until(browser, url: str, pred, *, timeout_s: float, what: str):
    def check():
        browser.get(url)
        try:
            return pred()
        except StaleElementReferenceException:  # the page changed under the look-up: look again
            return False
    return wait_until(check, timeout_s=timeout_s, interval_s=1.0, what=what)


def _click_and_wait(browser, locator: tuple[str, str]) -> None:
    """Click the submit button found by ``locator`` and wait until the next page has replaced this one.

    The button is looked up again when chromium says the page changed under the look-up (a stale element, or
    "Node with given id does not belong to the document" while the previous navigation settles)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")
    for attempt in range(5):
        try:
            old = browser.find_element(By.TAG_NAME, "html")
            browser.find_element(*locator).click()
            break
        except WebDriverException as e:  # StaleElementReferenceException is one
            changed = isinstance(e, StaleElementReferenceException) or "does not belong to the document" in str(e)
            if not changed or attempt == 4:
                raise
            time.sleep(0.5)
    WebDriverWait(browser, 60).until(EC.staleness_of(old))
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _rows(browser, selector: str) -> list:
    return browser.find_elements(By.CSS_SELECTOR, selector)


def session_get(driver, url: str) -> tuple[int, bytes, str]:
    """GET ``url`` outside the browser with the browser's session cookie: (status, body, content type)."""
    import urllib.error
    import urllib.request
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
    req = urllib.request.Request(url, headers={"Cookie": cookies, "Accept": "text/html,*/*"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def _series_uid(folder) -> str:
    return str(pydicom.dcmread(next(p for p in sorted(folder.iterdir()) if p.is_file()),
                               stop_before_pixels=True).SeriesInstanceUID)


def test_operator_and_viewer_in_the_browser(tmp_path, browser, artifacts):
    dest = StoreSCP(free_port(), tmp_path / "dest")  # the destination is down at first
    node, base = _start_node(tmp_path, "node", {
        "destinations": [{"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}],
        "rules": [{"name": "head-mr", "match": {"Modality": ["MR"], "BodyPartExamined": ["HEAD", "BRAIN"]},
                   "profile": "basic"},
                  {"name": "thigh-ct", "match": {"Modality": ["CT"]}, "profile": "console", "destinations": ["DEST"]}],
        "profiles": {**CONSOLE_PROFILE, **BASIC}})
    try:
        # log in: an unauthenticated visit lands on the login form
        browser.delete_all_cookies()
        browser.get(base + "/series")
        assert browser.find_elements(By.CSS_SELECTOR, "form.login"), browser.page_source[:2000]
        artifacts.shot(browser, "login")
        _login(browser, base, "olga")
        artifacts.shot(browser, "overview-empty")

        # send a series with DCMTK storescu and see it arrive on the Series page
        uid = _series_uid(STS_CT)
        sent = storescu(node.port, [STS_CT])
        assert sent.returncode == 0, sent.stderr
        row = f"tr[data-series='{uid}']"
        _reload_until(browser, base + "/series", lambda: _rows(browser, row), timeout_s=60, what="series listed")
        text = browser.find_element(By.CSS_SELECTOR, row).text
        assert "CT" in text and "WORKSTATION" in text
        artifacts.shot(browser, "series", docs=True)

        # its job finishes; the Jobs page says done and links its results
        _reload_until(browser, base + "/jobs",
                      lambda: _rows(browser, "tr[data-state='done']") or (_rows(browser, "tr[data-state='failed']")
                                                                          and pytest.fail(node.log()[-3000:])),
                      timeout_s=300, what="job done")
        job_id = int(browser.find_element(By.CSS_SELECTOR, "tr[data-state='done']").get_attribute("data-job"))
        artifacts.shot(browser, "jobs", docs=True)
        browser.get(f"{base}/jobs/{job_id}")
        assert browser.find_element(By.ID, "job-state").text == "done"
        steps = browser.find_element(By.ID, "steps").text
        assert all(s in steps for s in ("load", "segment", "detect", "results"))
        log_lines = browser.find_element(By.ID, "log-lines").text
        assert "job started" in log_lines  # the node's own lines about this job, and its worker process's
        assert all(f"step done step={s} " in log_lines for s in ("load", "segment", "detect", "results")), log_lines
        artifacts.shot(browser, "job", docs=True)

        # the Results page: findings table, key-slice overlay (decoded: present, not blank), the viewer link
        browser.get(f"{base}/jobs/{job_id}/results")
        assert _rows(browser, "#findings tbody tr"), browser.page_source[:3000]
        wait_until(lambda: browser.execute_script(
            "const i = document.getElementById('keyslices'); return i.complete && i.naturalWidth > 0;"),
            timeout_s=120, interval_s=0.5, what="key slices drawn and loaded")
        width = browser.execute_script("return document.getElementById('keyslices').naturalWidth")
        status, body, ctype = session_get(browser, f"{base}/jobs/{job_id}/keyslices.png")
        assert status == 200 and ctype == "image/png"
        img = np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(float)
        assert img.shape[1] == width and img.shape[0] > 300
        assert img.std() > 20, "the key-slice picture is blank"
        assert np.all(img == (255, 50, 50), axis=2).sum() > 20, "no finding marked in red"
        assert np.all(img == (40, 220, 60), axis=2).sum() > 200, "no SEG outline in green"
        link = browser.find_element(By.ID, "viewer-link").get_attribute("href")
        study = str(pydicom.dcmread(next(STS_CT.iterdir()), stop_before_pixels=True).StudyInstanceUID)
        assert link == f"http://viewer.invalid/viewer?StudyInstanceUIDs={study}"
        artifacts.shot(browser, "results", docs=True)

        # the result is dead-lettered (the destination is down): listed with its reason
        _reload_until(browser, base + "/outbox", lambda: _rows(browser, "tr[data-state='dead']"),
                      timeout_s=120, what="dead letter listed")
        assert "association" in browser.find_element(By.CSS_SELECTOR, "tr[data-state='dead']").text.lower()
        artifacts.shot(browser, "outbox-dead", docs=True)

        # a viewer sees the buttons, but the node refuses every action (403), and nothing changes
        _login(browser, base, "vic")
        browser.get(base + "/outbox")
        button = browser.find_element(By.CSS_SELECTOR, "#dead-by-destination button")
        assert "needs-role" in button.get_attribute("class")
        _click_and_wait(browser, (By.CSS_SELECTOR, "#dead-by-destination button"))
        assert browser.find_element(By.TAG_NAME, "h1").text == "403"
        assert "operator" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
        artifacts.shot(browser, "viewer-refused")
        browser.get(f"{base}/jobs/{job_id}")
        _click_and_wait(browser, (By.XPATH, "//form[contains(@action, '/retry')]/button"))
        assert browser.find_element(By.TAG_NAME, "h1").text == "403"
        browser.get(base + "/config")
        _click_and_wait(browser, (By.XPATH, "//form[@action='/config/reload']/button"))
        assert browser.find_element(By.TAG_NAME, "h1").text == "403"
        assert node.status()["outbox"]["counts"].get("dead") == 1
        assert node.status()["jobs"]["counts"] == {"done": 1}

        # the destination comes up; the operator requeues DEST's dead letters and they are sent
        dest.start()
        _login(browser, base, "olga")
        browser.get(base + "/outbox")
        _click_and_wait(browser, (By.CSS_SELECTOR, "#dead-by-destination button"))
        assert "1 dead-lettered export(s) queued again" in browser.find_element(By.ID, "outcome").text
        _reload_until(browser, base + "/outbox",
                      lambda: _rows(browser, "tr[data-state='sent']") and not _rows(browser, "tr[data-state='dead']"),
                      timeout_s=60, what="requeued result sent")
        artifacts.shot(browser, "outbox-sent")
        assert [pydicom.dcmread(f).Modality for f in dest.files()] == ["SEG"]

        # the requeue is in the audit trail, with the user who did it
        browser.get(base + "/audit?since=1h&user=olga")
        assert "exports requeued" in browser.find_element(By.ID, "audit").text
        artifacts.shot(browser, "audit")
        for page in ("/", "/rules", "/destinations", "/config"):
            browser.get(base + page)
            assert not browser.find_elements(By.CSS_SELECTOR, "[role=alert]"), page
        browser.get(base + "/")
        artifacts.shot(browser, "overview", docs=True)
        browser.get(f"{base}/rules?series_uid={uid}")
        outcome = browser.find_element(By.ID, "rule-outcome").text
        assert "Rule thigh-ct fires" in outcome and "head-mr" in outcome  # and why head-mr did not
        artifacts.shot(browser, "rules", docs=True)
    finally:
        dest.stop()
        node.kill()


EVIL_DESCRIPTION = '<script>alert("desc")</script>\'"&'
EVIL_AE = '<i>"q\'&</i>'


def _evil_copy(tmp_path, n: int = 3):
    """A few slices of STS_001 CT as a new series whose description holds markup and quotes."""
    out = tmp_path / "evil"
    out.mkdir()
    series_uid = pydicom.uid.generate_uid(prefix="2.25.")
    for i, p in enumerate(sorted(STS_CT.iterdir())[:n]):
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid(prefix="2.25.")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = EVIL_DESCRIPTION
        ds.save_as(out / f"{i:03d}.dcm", enforce_file_format=True)
    return out, series_uid


def test_markup_in_description_and_sender_ae_is_escaped_on_every_page(tmp_path, browser, artifacts):
    folder, uid = _evil_copy(tmp_path)
    node, base = _start_node(tmp_path, "evil", {
        "rules": [{"name": "all", "match": {}, "profile": "basic"}], "profiles": BASIC})
    try:
        sent = storescu(node.port, [folder], aet=EVIL_AE)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_until(lambda: node.status()["jobs"]["counts"].get("done") == 1, timeout_s=180, what="job done")
        job_id = node.status()["jobs"]["recent"][0]["id"]
        _login(browser, base, "olga")
        pages = ["/", "/series", f"/series/{uid}", "/jobs", f"/jobs/{job_id}", f"/jobs/{job_id}/results", "/outbox",
                 "/rules", f"/rules?series_uid={uid}", "/destinations", "/audit?since=1h", "/config"]
        seen_ae = seen_desc = 0
        for page in pages:
            status, body, ctype = session_get(browser, base + page)
            raw = body.decode()
            assert status == 200 and ctype.startswith("text/html"), (page, status, raw[:500])
            assert "<script" not in raw.lower(), f"{page}: a <script> element in the page"
            assert "<i>" not in raw, f"{page}: the sender AE's markup is not escaped"
            seen_ae += str(escape(EVIL_AE)) in raw
            seen_desc += str(escape(EVIL_DESCRIPTION)) in raw
            # in a browser: the text is shown as text, nothing ran
            browser.get(base + page)
            assert browser.execute_script("return window.__xss === undefined")
            assert not browser.find_elements(By.TAG_NAME, "i")
        assert seen_ae >= 4, "the sender AE is shown on the series, rules and audit pages"
        assert seen_desc >= 2, "the description is shown on the series and results pages"
        browser.get(f"{base}/series/{uid}")
        assert EVIL_DESCRIPTION in browser.find_element(By.ID, "series-detail").text
        assert EVIL_AE in browser.find_element(By.ID, "senders").text
        artifacts.shot(browser, "escaped")
    finally:
        node.kill()
