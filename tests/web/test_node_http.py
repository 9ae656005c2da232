"""The one HTTP server in the node: /healthz and /metrics, HTTPS with the DICOM certificate, the metrics-only
server of [metrics] port, clean shutdown; and the API's actions on real work: a series sent by storescu, completed
by hand, its results dead-lettered while the destination is down, requeued by destination once it is up."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from contextlib import closing
from pathlib import Path

import httpx
import tomli_w

from console_helpers import PASSWORDS, complete_by_hand, start_console
from helpers import STS_CT, UserNode, free_port, storescu, wait_until

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_healthz_metrics_and_clean_shutdown(console):
    port = int(console.url.rsplit(":", 1)[1])
    with console.client() as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
        assert anon.get("/metrics").status_code == 401  # [metrics] public is not set
    with console.client("viewer") as c:
        m = c.get("/metrics")
        assert m.status_code == 200 and "dicomnode_disk_free_bytes" in m.text
        status = c.get("/api/v1/status").json()
        assert status["summary"]["metrics_url"] == f"{console.url}/metrics"
    assert console.node.stop() == 0
    assert _port_closed(port) and _port_closed(console.dicom_port)
    assert "http server stopped" in console.node.log()


def test_operator_actions_on_real_work(tmp_path):
    c = start_console(tmp_path)  # quiet_seconds 600: the series stays open until completed by hand
    try:
        files = sorted(p for p in STS_CT.iterdir() if p.is_file())
        assert storescu(c.dicom_port, files).returncode == 0
        with c.client("operator") as op, c.client("viewer") as viewer:
            (s,) = wait_until(lambda: viewer.get("/api/v1/series").json(), timeout_s=60, what="series indexed")
            assert s["state"] == "open" and s["completes_in_s"] > 60
            uid = s["series_uid"]
            assert viewer.post(f"/api/v1/series/{uid}/complete").status_code == 403
            done = complete_by_hand(op, uid)
            assert done.status_code == 200, done.text
            (job_id,) = done.json()["ids"]
            assert op.post(f"/api/v1/series/{uid}/complete").status_code == 409  # not open any more
            # the destination is down: the results are dead-lettered (export.max_attempts = 1)
            dead = wait_until(lambda: viewer.get("/api/v1/exports", params={"state": "dead"}).json(),
                              timeout_s=300, what="dead letters")
            job = viewer.get(f"/api/v1/jobs/{job_id}").json()
            assert job["state"] == "done" and len(dead) == len(job["results"]) >= 2
            assert all(e["destination"] == "DEST" and e["last_error"] for e in dead)
            echo = op.post("/api/v1/destinations/DEST/echo").json()
            assert echo["ok"] is False and echo["error"]
            c.dest.start()
            assert op.post("/api/v1/destinations/DEST/echo").json()["ok"] is True
            assert op.post("/api/v1/exports/requeue-dead", json={"destination": "NOPE"}).status_code == 404
            again = op.post("/api/v1/exports/requeue-dead", json={"destination": "DEST"})
            assert again.status_code == 200 and sorted(again.json()["ids"]) == sorted(e["id"] for e in dead)
            wait_until(lambda: len(viewer.get("/api/v1/exports", params={"state": "sent"}).json()) == len(dead),
                       timeout_s=120, what="results sent")
            assert len(c.dest.files()) == len(dead)
            # a done job again: retried by id; reprocess while it is pending is refused
            assert op.post(f"/api/v1/jobs/{job_id}/retry").status_code == 200
            assert op.post(f"/api/v1/series/{uid}/reprocess", json={}).status_code in (200, 409)
            assert op.post(f"/api/v1/series/{uid}/reprocess", json={"profile": "nope"}).status_code == 400
        events = c.audit()
        by = {(e["event"], e["actor"]) for e in events}
        for pair in (("forced completion", "operator-token"), ("exports requeued", "operator-token"),
                     ("destination echoed", "operator-token"), ("job requeued", "operator-token")):
            assert pair in by, pair
        forced = [e for e in events if e["event"] == "series complete"][0]
        assert forced["series_uid"] == uid and forced["detail"]["job_id"] == job_id
    finally:
        c.node.stop()
        c.dest.stop()


def test_reload_puts_a_new_account_in_force(tmp_path):
    c = start_console(tmp_path)
    try:
        add = subprocess.run(["python3", "-m", "dicomnode", "user", "add", "newbie", "--role", "viewer",
                              "--password-stdin", "-c", str(c.config_path)], input="newbie-pass\n",
                             capture_output=True, text=True, timeout=60)
        assert add.returncode == 0, add.stderr
        with c.client() as anon:
            page = anon.get("/login")
            token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
            assert anon.post("/login", data={"username": "newbie", "password": "newbie-pass",
                                             "csrf_token": token}).status_code == 401
        with c.client("operator") as op:
            assert op.post("/api/v1/config/reload").status_code == 403
        with c.client("admin") as admin:
            assert admin.post("/api/v1/config/reload").status_code == 200
        s, _ = c.login("admin")
        s.close()
        PASSWORDS["newbie"] = "newbie-pass"
        try:
            who, _ = c.login("newbie")
            with closing(who):
                assert who.get("/api/v1/whoami").json()["role"] == "viewer"
        finally:
            del PASSWORDS["newbie"]
        # an invalid file: refused, the running configuration kept
        c.config_path.write_text(c.config_path.read_text() + "\n[nonsense]\n")
        with c.client("admin") as admin:
            bad = admin.post("/api/v1/config/reload")
            assert bad.status_code == 400 and "nonsense" in bad.json()["detail"]
            assert admin.get("/api/v1/whoami").status_code == 200
    finally:
        c.node.stop()
        c.dest.stop()


def _certificate(folder: Path) -> tuple[Path, Path]:
    key, cert = folder / "node.key", folder / "node.pem"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=120)
    return cert, key


def test_https_with_the_dicom_certificate(tmp_path):
    assert Path(OPENSSL).exists(), "openssl is missing: apt-get install -y openssl"
    cert, key = _certificate(tmp_path)
    c = start_console(tmp_path, extra_http={"tls": True}, scheme="https", extra={"metrics": {"public": True}},
                      extra_node={"tls": {"certificate": str(cert), "private_key": str(key)}})  # DICOM TLS stays off
    try:
        with httpx.Client(base_url=c.url, verify=ssl.create_default_context(cafile=str(cert)), timeout=30) as anon:
            assert anon.get("/healthz").json() == {"status": "ok"}
            assert anon.get("/metrics").status_code == 200  # [metrics] public = true
            assert anon.get("/api/v1/status").status_code == 401
            page = anon.get("/login")
            token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
            r = anon.post("/login", data={"username": "viewer", "password": PASSWORDS["viewer"], "csrf_token": token})
            assert r.status_code == 303
            cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie" and "dicomnode_session" in v][0]
            assert "Secure" in cookie and "HttpOnly" in cookie
            assert r.headers["strict-transport-security"].startswith("max-age=")
        with closing(socket.create_connection(("127.0.0.1", int(c.url.rsplit(":", 1)[1])), timeout=5)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP on the HTTPS port: no answer in clear
            assert b"ok" not in s.recv(100)
    finally:
        c.node.stop()
        c.dest.stop()


def test_metrics_port_alone_serves_only_metrics_and_healthz(tmp_path):
    port, mport = free_port(), free_port()
    cfg = tmp_path / "node.toml"
    cfg.write_text(tomli_w.dumps({"node": {"bind": "127.0.0.1", "port": port, "data_dir": str(tmp_path / "data")},
                                  "metrics": {"port": mport, "bind": "127.0.0.1"}}))
    (tmp_path / "work").mkdir()
    node = UserNode(cfg, tmp_path / "work", port).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{mport}", timeout=30) as anon:
            assert anon.get("/metrics").status_code == 200  # public, as before the console
            assert anon.get("/healthz").status_code == 200
            for path in ("/api/v1/status", "/login", "/"):
                assert anon.get(path).status_code == 404, path
    finally:
        assert node.stop() == 0
    assert _port_closed(mport)
