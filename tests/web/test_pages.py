"""The console's pages over HTTP against the real node (`dicomnode serve` with [http]): every page renders for each
role, every action form works for the role that may use it, with its CSRF token, and says what it did."""

from __future__ import annotations

import re

import httpx
import pytest

from helpers import STS_CT, free_port, storescu, wait_for_port, wait_until
from integration.conftest import NodeProcess, StoreSCP, to_toml

USERS = {"olga": ("operator", "olga-pass-1"), "vic": ("viewer", "vic-pass-1"), "ada": ("admin", "ada-pass-1")}
PAGES = ("/", "/series", "/jobs", "/outbox", "/rules", "/destinations", "/audit", "/config")


def _login(base: str, name: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=60, headers={"Accept": "text/html"})
    form = c.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    r = c.post("/login", data={"username": name, "password": USERS[name][1], "csrf_token": token, "next": "/"})
    assert r.status_code == 303, r.text
    return c


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _outcome(r: httpx.Response) -> str:
    m = re.search(r'id="outcome">([^<]*)<', r.text)
    assert m, r.text[:2000]
    return m.group(1)


@pytest.fixture
def node(tmp_path):
    from dicomnode.web.settings import hash_password
    dest = StoreSCP(free_port(), tmp_path / "dest").start()
    port, http_port = free_port(), free_port()
    doc = {"node": {"ae_title": "DICOMNODE", "bind": "127.0.0.1", "port": port, "data_dir": str(tmp_path / "data")},
           "series": {"quiet_seconds": 600, "check_interval_seconds": 0.2},  # open until forced
           "workers": {"count": 1, "retry_backoff_seconds": [1]},
           "destinations": [{"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}],
           "rules": [{"name": "ct-rule", "match": {"Modality": ["CT"]}, "profile": "basic", "destinations": ["DEST"]}],
           "profiles": {"basic": {"steps": ["foreground", "measure"], "outputs": ["seg", "sr"]}},
           "http": {"enabled": True, "bind": "127.0.0.1", "port": http_port,
                    "users": [{"name": n, "role": r, "password_hash": hash_password(p)}
                              for n, (r, p) in USERS.items()]}}
    cfg = tmp_path / "node.toml"
    cfg.write_text(to_toml(doc))
    n = NodeProcess(cfg, tmp_path / "data", port, tmp_path / "node.log").start()
    wait_for_port(http_port, timeout_s=60)
    yield n, f"http://127.0.0.1:{http_port}"
    n.kill()
    dest.stop()


def test_pages_and_their_actions_for_each_role(node, tmp_path):
    n, base = node
    one = sorted(p for p in STS_CT.iterdir() if p.is_file())[:1]  # one slice: its job fails (no volume)
    assert storescu(n.port, one).returncode == 0
    uid = wait_until(lambda: n.status()["series"] and n.status()["series"][0]["series_uid"], what="series indexed")
    op = _login(base, "olga")

    # an open series: when it completes, and the force-completion form (refused without its CSRF token)
    page = op.get("/series")
    assert page.status_code == 200 and uid in page.text and "Force completion" in page.text
    assert re.search(r"in \d+ s \(", page.text), "when the open series completes"
    assert op.post(f"/series/{uid}/complete").status_code == 403
    assert n.status()["series"][0]["state"] == "open"
    r = op.post(f"/series/{uid}/complete", data={"csrf_token": _csrf(page.text)})
    assert r.status_code == 200 and "completed; job" in _outcome(r)
    job_id = int(re.search(r"job (\d+) queued", _outcome(r)).group(1))

    # the failed job: error, traceback, log lines; no results (the page says why; the picture is a 404)
    wait_until(lambda: n.status()["jobs"]["counts"].get("failed") == 1, timeout_s=120, what="job failed")
    page = op.get(f"/jobs/{job_id}")
    assert "SeriesLoadError" in page.text and "Traceback" in page.text and 'id="log-lines"' in page.text
    assert "Retry" in page.text and "Reprocess" in page.text
    overview = op.get("/").text
    assert f'href="/jobs/{job_id}"' in overview and "SeriesLoadError" in overview  # the overview's last errors
    assert 'id="problems"' in overview and "job_id=" not in overview.split('id="problems"')[0]
    assert op.get(f"/jobs/{job_id}/results").status_code == 200
    assert "no results yet" in op.get(f"/jobs/{job_id}/results").text
    assert op.get(f"/jobs/{job_id}/keyslices.png").status_code == 404
    token = _csrf(page.text)
    r = op.post(f"/jobs/{job_id}/retry", data={"csrf_token": token})
    assert r.status_code == 200 and _outcome(r) == f"job {job_id} queued again"
    r = op.post(f"/series/{uid}/complete", data={"csrf_token": token})  # complete already: refused, 409
    assert r.status_code == 409 and "not open" in r.text and 'href="/series/' in r.text

    # rules: a stored series and an upload; a non-DICOM upload gets a clear answer
    page = op.get(f"/rules?series_uid={uid}")
    assert "Rule <strong>ct-rule</strong> fires" in page.text
    r = op.post("/rules/test", data={"csrf_token": _csrf(page.text)},
                files={"file": ("../../x.dcm", one[0].read_bytes(), "application/dicom")})
    assert r.status_code == 200 and "ct-rule" in r.text and "the uploaded file" in r.text
    r = op.post("/rules/test", data={"csrf_token": _csrf(page.text)}, files={"file": ("x.txt", b"hello", "text/plain")})
    assert r.status_code == 422 and "not a readable DICOM file" in r.text

    # destinations: echo the real storescp
    page = op.get("/destinations")
    r = op.post("/destinations/DEST/echo", data={"csrf_token": _csrf(page.text)})
    assert r.status_code == 200 and re.search(r'id="echo-result" class="ok"', r.text), r.text[:3000]

    # audit: filtered by user and event; a bad time is a 400 with the reason
    page = op.get("/audit", params={"since": "1h", "user": "olga"})
    assert "forced completion" in page.text and "job requeued" in page.text and "destination echoed" in page.text
    assert "received" not in re.sub(r"<datalist.*?</datalist>", "", page.text, flags=re.S).split('id="audit"')[1]
    assert op.get("/audit", params={"since": "yesterday-ish"}).status_code == 400

    # config: shown with secrets redacted; reload is the admin's
    page = op.get("/config")
    assert "[http]" in page.text and "scrypt$" not in page.text
    assert op.post("/config/reload", data={"csrf_token": _csrf(page.text)}).status_code == 403
    adm = _login(base, "ada")
    r = adm.post("/config/reload", data={"csrf_token": _csrf(adm.get("/config").text)})
    assert r.status_code == 200 and "configuration reloaded" in _outcome(r)

    # a viewer reads every page; every action is refused (403) and changes nothing
    vic = _login(base, "vic")
    for p in (*PAGES, f"/series/{uid}", f"/jobs/{job_id}", f"/jobs/{job_id}/results", f"/rules?series_uid={uid}"):
        r = vic.get(p)
        assert r.status_code == 200, (p, r.text[:500])
    token = _csrf(vic.get("/jobs").text)
    wait_until(lambda: n.status()["jobs"]["counts"].get("failed") == 1, timeout_s=120, what="retry failed again")
    for url, data in ((f"/jobs/{job_id}/retry", {}), (f"/jobs/{job_id}/reprocess", {}), ("/outbox/requeue", {}),
                      ("/destinations/DEST/echo", {}), (f"/series/{uid}/reprocess", {"profile": "basic"}),
                      ("/config/reload", {})):
        r = vic.post(url, data={"csrf_token": token, **data})
        assert r.status_code == 403, (url, r.status_code)
    assert n.status()["jobs"]["counts"] == {"failed": 1}

    # unknown things are 404s; ids and UIDs are checked before they reach the index
    assert op.get("/jobs/99999").status_code == 404
    assert op.get("/jobs/99999/keyslices.png").status_code == 404
    assert op.get("/series/1.2.3.4").status_code == 404
    for bad in ("/series/..%2F..%2Fetc", "/series/1.2.x", "/jobs/..%2F1/results", "/jobs/1;rm/results"):
        assert op.get(bad).status_code in (404, 422), bad
    assert op.get("/jobs/abc").status_code == 422
    # not logged in: the login form (401)
    anon = httpx.Client(base_url=base, timeout=30, headers={"Accept": "text/html"})
    for p in PAGES:
        r = anon.get(p)
        assert r.status_code == 401 and 'action="/login"' in r.text
