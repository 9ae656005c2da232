"""Hostile values from the network shown escaped, and path traversal refused, on every route of the console.

A real CT series goes in by DCMTK storescu with a calling AE title and a SeriesDescription holding markup and
quotes; every page and the JSON API are then read back as an admin."""

from __future__ import annotations

import re
from contextlib import closing
from pathlib import Path

import pytest
from fastapi import HTTPException

from console_helpers import XSS_AE, XSS_DESCRIPTION, app_routes, fill, xss_series
from helpers import STS_CT, storescu, wait_until

from dicomnode.web.app import safe_path

RAW = ["<script>alert(", "<b>\"'&AE"]


@pytest.fixture(scope="module")
def hostile_series(console, tmp_path_factory):
    files = xss_series(tmp_path_factory.mktemp("xss"))
    sent = storescu(console.dicom_port, files, aet=XSS_AE)
    assert sent.returncode == 0, sent.stderr
    with console.client("viewer") as c:
        series = wait_until(lambda: c.get("/api/v1/series").json(), timeout_s=60, what="the series indexed")
    return series[0]["series_uid"]


def test_json_carries_the_values_as_data(console, hostile_series):
    with console.client("viewer") as c:
        one = c.get(f"/api/v1/series/{hostile_series}")
        assert one.headers["content-type"] == "application/json"
        assert one.headers["x-content-type-options"] == "nosniff"
        assert one.json()["senders"][0]["calling_ae"] == XSS_AE
        why = c.get("/api/v1/rules/test", params={"series_uid": hostile_series}).json()
    assert why["rule"] == "ct"
    assert why["checks"][0]["name"] == "chest" and '<script>alert("x")</script>' in why["checks"][0]["why"]


def test_every_page_escapes_them(console, hostile_series):
    pages = [r for r in app_routes() if "GET" in r.methods and not r.in_schema and r.role is not None
             and not r.path.startswith("/api/") and r.path != "/metrics"]
    assert any(r.path == "/" for r in pages)
    c, _ = console.login("admin")
    with closing(c):
        shown = 0
        for r in pages:
            url = fill(r.path, series_uid=hostile_series)
            resp = c.get(url, params={"q": XSS_DESCRIPTION, "series_uid": hostile_series})
            assert resp.status_code < 500, (url, resp.status_code)
            for raw in RAW:
                assert raw not in resp.text, (url, raw)
            shown += "&lt;script&gt;" in resp.text or "&lt;b&gt;" in resp.text
        # reflected values: the login form's `next`, the error page of an unknown page
        if len(pages) > 1:  # the console's pages list series and senders: the values appear, escaped
            assert shown, "no page shows the hostile SeriesDescription or AE title escaped"
        login = c.get("/login", params={"next": '/x"><script>alert(1)</script>'})
    with console.client() as anon:
        form = anon.get("/login", params={"next": '/x"><script>alert(1)</script>'})
        assert "<script>alert(1)" not in form.text and "&#34;&gt;&lt;script&gt;" in form.text
        missing = anon.get("/<script>alert(1)</script>", headers={"Accept": "text/html"})
        assert missing.status_code == 401 and "<script>alert(1)" not in missing.text
    assert login.status_code == 303 and "<script>" not in login.headers["location"]


TRAVERSALS = ["../node.toml", "..%2fnode.toml", "%2e%2e/%2e%2e/node.toml", "..%2f..%2f..%2fetc%2fpasswd",
              "....//....//etc/passwd", "%2fetc%2fpasswd", "..\\..\\node.toml", "%252e%252e%252fnode.toml",
              "static/../../node.toml"]


def _file_routes():
    """GET routes that serve a file: the static mount, and every route with a path-like parameter."""
    names = {"path", "file", "filename", "name", "image", "png", "key"}
    out = ["/static/{path}"]
    for r in app_routes():
        params = re.findall(r"\{(\w+)(?::path)?\}", r.path)
        is_file = re.search(r"\.(png|jpg|dcm|json|csv|txt)$", r.path) is not None
        if "GET" in r.methods and params and (":path}" in r.path or names & set(params) or is_file):
            out.append(r.path)
    return out


def test_path_traversal_is_refused_on_every_file_route(console):
    secret = console.config_path.read_text()
    assert "password_hash" in secret
    c, _ = console.login("admin")
    with closing(c):
        assert c.get("/static/console.css").status_code == 200
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
        assert raw_get(console.url, "/static/console.css", cookie)[0] == 200
        assert raw_get(console.url, "/api/v1/whoami", cookie)[0] == 200  # the session works on raw requests
        tried = 0
        for route in _file_routes():
            last = re.findall(r"\{(\w+)(?::path)?\}", route)[-1]
            for t in TRAVERSALS:
                url = fill(re.sub(r"\{" + last + r"(?::path)?\}", lambda m: t, route))
                status, body = raw_get(console.url, url, cookie)  # byte for byte: httpx would normalise ../
                assert status in (400, 403, 404, 422), (url, status)
                assert "password_hash" not in body and "root:x:" not in body, url
                tried += 1
    assert tried >= len(TRAVERSALS)


def raw_get(base_url: str, path: str, cookie: str) -> tuple[int, str]:
    """GET ``path`` sent exactly as written (http.client does not touch it), with the session cookie."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": cookie})
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_safe_path(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"png")
    (tmp_path / "outside").write_text("secret")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "outside")
    assert safe_path(tmp_path / "a", "x.png") == (tmp_path / "a" / "x.png").resolve()
    for bad in ("..", "../outside", "/etc/passwd", "", ".", "a\\..", "x\0y", "link"):
        with pytest.raises(HTTPException) as e:
            safe_path(tmp_path / "a", bad)
        assert e.value.status_code == 404, bad
    assert Path(safe_path(tmp_path, "a", "x.png")).read_bytes() == b"png"


def test_rule_test_upload(console):
    """The rule test reads an uploaded file (saved under a name of the node's choosing) and says which rule fires;
    a file that is not DICOM is a 422 naming it, never a 5xx."""
    from helpers import STS_CT
    f = sorted(STS_CT.iterdir())[0]
    c, token = console.login("viewer")
    with closing(c):
        r = c.post("/api/v1/rules/test", files={"file": ("../../etc/passwd", f.read_bytes())},
                   headers={"X-CSRF-Token": token})
        assert r.status_code == 200 and r.json()["rule"] == "ct", r.text
        assert [x["name"] for x in r.json()["checks"]] == ["chest", "ct"]
        bad = c.post("/api/v1/rules/test", files={"file": ("x.dcm", b"not dicom")}, headers={"X-CSRF-Token": token})
        assert bad.status_code == 422 and "not a readable DICOM file" in bad.json()["detail"]


def test_an_oversized_body_is_refused_before_it_is_read(console):
    import http.client
    from urllib.parse import urlsplit
    u = urlsplit(console.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:  # announce 1 GiB, send nothing: the answer comes at once
        conn.putrequest("POST", "/api/v1/rules/test")
        conn.putheader("Authorization", f"Bearer {console.tokens['viewer']}")
        conn.putheader("Content-Type", "multipart/form-data; boundary=x")
        conn.putheader("Content-Length", str(2**30))
        conn.endheaders()
        r = conn.getresponse()
        assert r.status == 413 and b"MiB" in r.read()
    finally:
        conn.close()


def _chunked_post(console, path: str, *, total_bytes: int, headers: dict[str, str], chunk_bytes: int = 2**20,
                  first: bytes = b"", last: bytes = b"") -> tuple[int, bytes, int, bool]:
    """POST ``path`` with ``Transfer-Encoding: chunked`` (no Content-Length): ``first``, then zeros in chunks up to
    ``total_bytes``, then ``last``, stopping as soon as the server answers. Returns (status, body, bytes sent
    before the answer, whether sending more then failed because the server closed the connection)."""
    import select
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(console.url)
    sock = socket.create_connection((u.hostname, u.port), timeout=60)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: {u.hostname}:{u.port}", "Transfer-Encoding: chunked",
                *(f"{k}: {v}" for k, v in headers.items())]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent, answered = 0, False
        zeros = total_bytes - len(first) - len(last)
        pieces = [first] * bool(first) + [b"\0" * chunk_bytes] * (zeros // chunk_bytes) + \
            [b"\0" * (zeros % chunk_bytes)] * bool(zeros % chunk_bytes) + [last] * bool(last)  # one zeros object
        for piece in pieces:
            if select.select([sock], [], [], 0)[0]:
                answered = True
                break
            try:
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                answered = True
                break
            sent += len(piece)
        if not answered:
            sock.sendall(b"0\r\n\r\n")
        sock.settimeout(60)
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
        header, _, rest = data.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = int(re.search(rb"(?im)^content-length: *(\d+)", header).group(1))
        while len(rest) < length:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
        closed = False
        if answered:  # the server stopped reading: the rest of the body goes nowhere
            try:
                for _ in range(64):
                    sock.sendall(b"%x\r\n" % chunk_bytes + b"\0" * chunk_bytes + b"\r\n")
                closed = sock.recv(1) == b""
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        return status, rest, sent, closed
    finally:
        sock.close()


def test_a_chunked_body_is_refused_once_over_the_limit(console):
    """No Content-Length: the body is counted as it arrives; the server answers 413 once past the limit, without
    reading (or spooling) the rest, and closes the connection. Under the limit a chunked upload works."""
    from dicomnode.web.app import MAX_BODY_BYTES, MAX_FORM_BYTES

    auth = {"Authorization": f"Bearer {console.tokens['viewer']}"}
    boundary = "dicomnodeboundary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.dcm\"\r\n"
            "Content-Type: application/dicom\r\n\r\n").encode()
    end = f"\r\n--{boundary}--\r\n".encode()
    multipart = {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    # 3x the limit offered: refused past the limit, long before the end
    status, body, sent, closed = _chunked_post(console, "/api/v1/rules/test", total_bytes=3 * MAX_BODY_BYTES,
                                               headers=multipart, first=part, last=end)
    assert status == 413 and b"MiB" in body, (status, body)
    assert MAX_BODY_BYTES < sent < 2 * MAX_BODY_BYTES, sent  # the socket buffers hold a few MiB more, no more
    assert closed, "the server kept reading the body after refusing it"
    # the page's upload form: the same bound
    status, body, sent, closed = _chunked_post(console, "/rules/test", total_bytes=3 * MAX_BODY_BYTES,
                                               headers={**multipart, "Accept": "text/html"}, first=part, last=end)
    assert status == 413 and closed and sent < 2 * MAX_BODY_BYTES, (status, body[:300])
    # any other route that takes a body: a JSON action, the login form (anonymous)
    status, body, sent, closed = _chunked_post(console, "/api/v1/exports/requeue-dead",
                                               total_bytes=64 * MAX_FORM_BYTES,
                                               headers={**auth, "Content-Type": "application/json"},
                                               first=b'{"destination": "', last=b'"}', chunk_bytes=64 * 1024)
    assert status == 413 and b"1 MiB" in body, (status, body)
    assert sent < 32 * MAX_FORM_BYTES and closed, sent
    status, _, sent, closed = _chunked_post(console, "/login", total_bytes=64 * MAX_FORM_BYTES,
                                            headers={"Content-Type": "application/x-www-form-urlencoded"},
                                            first=b"username=", chunk_bytes=64 * 1024)
    assert status == 413 and sent < 32 * MAX_FORM_BYTES and closed
    # under the limit, chunked: a real DICOM file is tested as usual
    f = sorted(STS_CT.iterdir())[0].read_bytes()
    status, body, _, _ = _chunked_post(console, "/api/v1/rules/test", total_bytes=len(part) + len(f) + len(end),
                                       headers=multipart, first=part + f, last=end)
    assert status == 200 and b'"rule":"ct"' in body.replace(b" ", b""), body[:500]
