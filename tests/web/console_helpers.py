"""The console against a real node: `dicomnode serve` as a subprocess with [http] on a free loopback port, accounts
of each role (passwords hashed as `dicomnode user add` does), API tokens, a DCMTK storescp destination, DICOM in by
storescu. The HTTP client is httpx over loopback."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import tomli_w

from helpers import STS_CT, UserNode, free_port, wait_for_port, wait_until
from integration.conftest import StoreSCP  # the DCMTK storescp destination the integration tests use

from dicomnode.web.settings import hash_password, new_token, token_sha256

ROLES = ("viewer", "operator", "admin")
PASSWORDS = {r: f"{r}-pass-{r[::-1]}" for r in ROLES}
QUICK = {"quick": {"steps": ["foreground", "measure"], "outputs": ["seg", "sr"]}}
XSS_DESCRIPTION = "<script>alert(\"x\")</script>'\"&"
XSS_AE = "<b>\"'&AE"  # 9 characters: an AE title holds 16, printable, no backslash


@dataclass
class Console:
    node: UserNode
    url: str
    config_path: Path
    dicom_port: int
    dest: StoreSCP
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, role: str | None = None, **kw) -> httpx.Client:
        """A client with the API token of ``role`` (None: anonymous)."""
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, follow_redirects=False, verify=False,
                            **kw)

    def login(self, role: str) -> tuple[httpx.Client, str]:
        """A client logged in through the login form as the account ``role``, and its session's CSRF token."""
        c = httpx.Client(base_url=self.url, timeout=60, follow_redirects=False, verify=False)
        page = c.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = c.post("/login", data={"username": role, "password": PASSWORDS[role], "csrf_token": token, "next": "/"})
        assert r.status_code == 303, r.text
        who = c.get("/api/v1/whoami").json()
        assert who["name"] == role and who["via"] == "session"
        return c, who["csrf_token"]

    def audit(self) -> list[dict]:
        with self.client("admin") as c:
            return c.get("/api/v1/audit", params={"since": "1h"}).json()


def console_config(tmp: Path, *, http_port: int, dicom_port: int, dest_port: int, extra_http: dict | None = None,
                   extra: dict | None = None, extra_node: dict | None = None) -> tuple[dict, dict[str, str]]:
    tokens = {r: new_token() for r in ROLES}
    doc = {
        "node": {"ae_title": "DICOMNODE", "bind": "127.0.0.1", "port": dicom_port, "data_dir": str(tmp / "data"),
                 **(extra_node or {})},
        "series": {"quiet_seconds": 600, "check_interval_seconds": 0.2},  # open until completed by hand
        "workers": {"count": 1, "max_attempts": 1},
        "export": {"max_attempts": 1, "retry_backoff_seconds": [1], "timeout_seconds": 5},
        "destinations": [{"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": dest_port}],
        "profiles": QUICK,
        "rules": [{"name": "chest", "match": {"SeriesDescription": "CHEST*"}, "profile": "quick",
                   "destinations": ["DEST"]},
                  {"name": "ct", "match": {"Modality": "CT"}, "profile": "quick", "destinations": ["DEST"]}],
        "http": {"enabled": True, "bind": "127.0.0.1", "port": http_port, **(extra_http or {}),
                 "users": [{"name": r, "role": r, "password_hash": hash_password(PASSWORDS[r])} for r in ROLES],
                 "tokens": [{"name": f"{r}-token", "role": r, "token_sha256": token_sha256(tokens[r])}
                            for r in ROLES]},
    }
    doc.update(extra or {})
    return doc, tokens


def start_console(tmp: Path, *, extra_http: dict | None = None, extra: dict | None = None,
                  extra_node: dict | None = None, scheme: str = "http") -> Console:
    http_port, dicom_port = free_port(), free_port()
    dest = StoreSCP(free_port(), tmp / "dest")
    doc, tokens = console_config(tmp, http_port=http_port, dicom_port=dicom_port, dest_port=dest.port,
                                 extra_http=extra_http, extra=extra, extra_node=extra_node)
    cfg = tmp / "node.toml"
    cfg.write_text(tomli_w.dumps(doc))
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    node = UserNode(cfg, work, dicom_port).start()
    try:
        wait_for_port(http_port, timeout_s=30)
    except TimeoutError:
        node.stop()
        raise AssertionError(f"the console did not start:\n{node.log()}") from None
    return Console(node, f"{scheme}://127.0.0.1:{http_port}", cfg, dicom_port, dest, tokens)


def app_routes():
    """Every route of the console app (API and pages), from an app built over a node that is not started."""
    from dicomnode.config import parse_config
    from dicomnode.node import Node
    from dicomnode.web.app import create_app, iter_routes

    with tempfile.TemporaryDirectory() as tmp:
        node = Node(parse_config({"node": {"data_dir": tmp}, "http": {"enabled": True}}))
        try:
            return iter_routes(create_app(node, metrics_registry=node.metrics.registry))
        finally:
            node.db.close()


def fill(path: str, **values: str) -> str:
    """A route's path with its parameters filled in (``{series_uid}`` -> a UID, ``{job_id}`` -> 1...)."""
    defaults = {"series_uid": "1.2.3", "job_id": "1", "export_id": "1", "name": "DEST"}
    defaults.update(values)
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: defaults.get(m.group(1), "1"), path)


def xss_series(tmp: Path, n: int = 3) -> list[Path]:
    """``n`` slices of a real CT series, rewritten with a new Series UID and a SeriesDescription holding markup."""
    import pydicom
    from pydicom.uid import generate_uid

    out = tmp / "xss"
    out.mkdir(exist_ok=True)
    series_uid = generate_uid()
    files = []
    for i, f in enumerate(sorted(STS_CT.iterdir())[:n]):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = XSS_DESCRIPTION
        p = out / f"{i}.dcm"
        ds.save_as(p)
        files.append(p)
    return files


def complete_by_hand(client: httpx.Client, series_uid: str, path: str = "/api/v1/series/{uid}/complete"
                     ) -> httpx.Response:
    """Force a series' completion as an operator does: a series shows as its first instance is indexed, and while
    the rest are still being indexed the node answers 409 "try again in a second"; so does this, for up to 60 s."""
    url = path.format(uid=series_uid)
    (r,) = wait_until(lambda: [x for x in [client.post(url)] if x.status_code != 409], timeout_s=60,
                      what=f"completion of {series_uid} accepted")
    return r
