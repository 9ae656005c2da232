"""Authentication, roles and CSRF on every route of the console, walked from the app itself (a page or endpoint
added later is covered without naming it here), against a real node over loopback."""

from __future__ import annotations

import re
from contextlib import closing

from console_helpers import PASSWORDS, app_routes, fill

OPEN = {("/healthz", "GET"), ("/login", "GET"), ("/login", "POST")}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _routes():
    return [(r, m) for r in app_routes() for m in sorted(r.methods) if m != "HEAD"]


def test_the_walk_sees_the_api_and_the_pages():
    paths = {r.path for r, _ in _routes()}
    assert {"/", "/logout", "/metrics", "/api/v1/status", "/api/v1/jobs/{job_id}/retry",
            "/api/v1/config/reload", "/api/v1/openapi.json"} <= paths
    roles = {(r.path, m): r.role for r, m in _routes()}
    assert roles[("/api/v1/config/reload", "POST")].value == "admin"
    assert roles[("/api/v1/jobs/{job_id}/retry", "POST")].value == "operator"
    assert roles[("/", "GET")].value == "viewer"


def test_every_route_without_auth_is_401(console):
    checked = 0
    with console.client() as c:
        for r, m in _routes():
            if (r.path, m) in OPEN:
                continue
            resp = c.request(m, fill(r.path))
            assert resp.status_code == 401, (m, r.path, resp.status_code, resp.text[:200])
            checked += 1
        # an unknown path says nothing either (no 404 to map the routes), a wrong token is refused
        assert c.get("/api/v1/no-such-thing").status_code == 401
        assert c.get("/api/v1/status", headers={"Authorization": "Bearer dn_wrong"}).status_code == 401
        assert c.get("/healthz").json() == {"status": "ok"}
    assert checked >= 25


def test_a_browser_gets_the_login_form_with_401(console):
    with console.client() as c:
        r = c.get("/jobs", headers={"Accept": "text/html"})
    assert r.status_code == 401 and 'action="/login"' in r.text and 'name="next" value="/jobs"' in r.text


def test_role_checks(console):
    refused = {"viewer": [], "operator": []}
    for r, m in _routes():
        if m not in UNSAFE or (r.path, m) in OPEN or r.role is None:
            continue
        for who in ("viewer", "operator"):
            with console.client(who) as c:
                resp = c.request(m, fill(r.path), json={})
            if r.role.value in ("operator", "admin") and who == "viewer" or r.role.value == "admin":
                assert resp.status_code == 403, (who, m, r.path, resp.status_code, resp.text[:200])
                refused[who].append(r.path)
            else:
                assert resp.status_code != 403, (who, m, r.path, resp.text[:200])
    assert "/api/v1/jobs/{job_id}/retry" in refused["viewer"] and "/api/v1/config/reload" in refused["operator"]
    assert "/api/v1/exports/requeue-dead" in refused["viewer"]
    # a viewer still reads
    with console.client("viewer") as c:
        assert c.get("/api/v1/status").status_code == 200


def test_csrf_on_every_unsafe_route(console):
    c, token = console.login("admin")
    with closing(c):
        for r, m in _routes():
            if m not in UNSAFE or (r.path, m) in OPEN:
                continue
            for headers in ({}, {"X-CSRF-Token": "wrong"}):
                resp = c.request(m, fill(r.path), json={}, headers=headers)
                assert resp.status_code == 403 and "CSRF" in resp.text, (m, r.path, headers, resp.status_code)
            form = c.request(m, fill(r.path), data={"csrf_token": "wrong"})
            assert form.status_code == 403 and "CSRF" in form.text, (m, r.path)
        ok = c.post("/api/v1/jobs/retry-failed", headers={"X-CSRF-Token": token})
        assert ok.status_code == 200 and ok.json()["ok"]
        # the logout form without its token is refused, with it the session ends
        assert c.post("/logout", data={}).status_code == 403
        assert c.post("/logout", data={"csrf_token": token}).status_code == 303
        assert c.get("/api/v1/whoami").status_code == 401


def test_login_form_needs_its_csrf_token_and_rate_limits(console):
    with console.client() as c:
        page = c.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        no_token = c.post("/login", data={"username": "viewer", "password": PASSWORDS["viewer"]})
        assert no_token.status_code == 403
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        codes = []
        for _ in range(6):  # each answer is a new login form with a new token
            token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
            codes.append(c.post("/login", data={"username": "operator", "password": "wrong",
                                                "csrf_token": token}).status_code)
        assert codes == [401] * 5 + [429], codes
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
        blocked = c.post("/login", data={"username": "operator", "password": PASSWORDS["operator"],
                                         "csrf_token": token})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0  # even the right password
    viewer, _ = console.login("viewer")  # another name from the same address still logs in
    viewer.close()


def test_session_cookie_and_security_headers(console):
    with console.client() as c:
        page = c.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = c.post("/login", data={"username": "viewer", "password": PASSWORDS["viewer"], "csrf_token": token,
                                   "next": "//evil.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/"  # never to another site
        cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie" and "dicomnode_session" in v][0]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Secure" not in cookie  # no TLS
        home = c.get("/")
        assert home.status_code == 200
        csp = home.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert home.headers["x-content-type-options"] == "nosniff"


def test_actions_are_audited_with_the_user(console):
    with console.client("operator") as c:
        assert c.post("/api/v1/jobs/retry-failed").status_code == 200
        assert c.post("/api/v1/jobs/99999/retry").status_code == 404
    c, token = console.login("admin")
    with closing(c):
        assert c.post("/api/v1/config/reload", headers={"X-CSRF-Token": token}).status_code == 200
    events = console.audit()
    logins = [e for e in events if e["event"] == "login" and e["actor"] == "admin"]
    assert logins and logins[-1]["detail"]["client"] == "127.0.0.1"
    reload_ = [e for e in events if e["event"] == "config reloaded"][-1]
    assert reload_["actor"] == "admin"
    failed = [e for e in events if e["event"] == "login failed"]
    assert failed and all(e["actor"] == "operator" for e in failed)
    with console.client("viewer") as c:
        mine = c.get("/api/v1/audit", params={"since": "1h", "user": "admin"}).json()
    assert {e["actor"] for e in mine} == {"admin"}
