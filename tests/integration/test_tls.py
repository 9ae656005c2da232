"""DICOM TLS on both sides, against DCMTK: echoscu/storescu +tls to the node; the node's outbox to storescp +tls.

Certificates are made per test with openssl: a CA, a node certificate, a client certificate, and a rogue CA with a
client certificate of its own (a peer the node must refuse).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from helpers import STS_CT, dcmtk, dcmtk_env, free_port, storescu, wait_for_port, wait_until

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _openssl(*args: str, cwd: Path) -> None:
    p = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d: Path, name: str, ca: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                   "extendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    assert Path(OPENSSL).exists(), "openssl is missing: apt-get install -y openssl"
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    for name in ("node", "client", "dest"):
        _leaf(d, name, "ca")
    _ca(d, "rogue-ca")
    _leaf(d, "rogue", "rogue-ca")
    return d


def _tls_node(make_node, pki: Path, extra: dict | None = None):
    cfg = {"node": {"tls": {"enabled": True, "certificate": str(pki / "node.pem"),
                            "private_key": str(pki / "node.key"), "ca_certificates": str(pki / "ca.pem"),
                            "require_peer_certificate": True}},
           "series": {"quiet_seconds": 3600}}
    cfg.update(extra or {})
    return make_node(cfg)


def _echoscu(port: int, *tls: str) -> subprocess.CompletedProcess:
    return subprocess.run([dcmtk("echoscu"), "-aet", "WORKSTATION", "-aec", "DICOMNODE", *tls, "127.0.0.1",
                           str(port)], capture_output=True, text=True, env=dcmtk_env(), timeout=60)


def _all_sent(node):  # noqa: ANN001
    """The status once the one job is done and all its results (SEG, SR, derived...) were sent; else None."""
    s = node.status()
    done = [j for j in s["jobs"]["recent"] if j["state"] == "done"]
    return s if len(done) == 1 and s["outbox"]["counts"] == {"sent": len(done[0]["results"])} else None


def test_dcmtk_echoscu_and_storescu_over_tls_to_the_node(make_node, pki):
    node = _tls_node(make_node, pki)
    client = ["+tls", str(pki / "client.key"), str(pki / "client.pem"), "+cf", str(pki / "ca.pem")]
    echo = _echoscu(node.port, *client)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    files = sorted(p for p in STS_CT.iterdir() if p.is_file())[:10]
    sent = storescu(node.port, files, extra=client)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_until(lambda: node.status()["instances"] == len(files), timeout_s=30, what="instances indexed")


def test_peers_without_a_valid_certificate_are_refused(make_node, pki):
    node = _tls_node(make_node, pki)
    ca = ["+cf", str(pki / "ca.pem")]
    rogue = _echoscu(node.port, "+tls", str(pki / "rogue.key"), str(pki / "rogue.pem"), *ca)
    assert rogue.returncode != 0, "a certificate from another CA was accepted"
    anonymous = _echoscu(node.port, "+tla", *ca)
    assert anonymous.returncode != 0, "a peer without a certificate was accepted"
    plain = _echoscu(node.port)
    assert plain.returncode != 0, "a peer without TLS was accepted"
    sent = storescu(node.port, sorted(STS_CT.iterdir())[:2], extra=["+tla", *ca])
    assert sent.returncode != 0
    # the node is still up and serves a valid peer
    ok = _echoscu(node.port, "+tls", str(pki / "client.key"), str(pki / "client.pem"), *ca)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert node.status()["instances"] == 0
    # each refused peer is a log line saying who and why (four failed handshakes: rogue, anonymous, plain, storescu)
    failed = [line for line in node.log().splitlines() if "TLS handshake failed from 127.0.0.1:" in line]
    reasons = sorted(line.split(": ")[2].split(";")[0] for line in failed)
    assert reasons == ["CERTIFICATE_VERIFY_FAILED", "PEER_DID_NOT_RETURN_A_CERTIFICATE",
                       "PEER_DID_NOT_RETURN_A_CERTIFICATE", "not TLS (a plain DICOM peer?)"], node.log()[-3000:]


def test_node_sends_results_over_tls_to_dcmtk_storescp(make_node, pki, tmp_path):
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    # storescp requires a client certificate signed by our CA (-rc is its default with +tls; say it anyway)
    scp = subprocess.Popen([dcmtk("storescp"), "-aet", "DEST", "+tls", str(pki / "dest.key"), str(pki / "dest.pem"),
                            "+cf", str(pki / "ca.pem"), "-rc", "-od", str(out), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dcmtk_env())
    try:
        wait_for_port(port)
        # TLS for sending only: the node presents its certificate and verifies DEST against the CA
        node = make_node({"node": {"tls": {"enabled": False, "certificate": str(pki / "node.pem"),
                                           "private_key": str(pki / "node.key"),
                                           "ca_certificates": str(pki / "ca.pem")}},
                          "destinations": [{"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": port,
                                            "tls": True}],
                          "rules": [{"name": "all", "match": {"Modality": "CT"}, "destinations": ["DEST"]}],
                          "series": {"quiet_seconds": 1}})
        sent = storescu(node.port, [STS_CT])
        assert sent.returncode == 0, sent.stderr
        st = wait_until(lambda: _all_sent(node), timeout_s=120, what=f"results sent over TLS\n{node.log()[-3000:]}")
        got = [pydicom.dcmread(f, stop_before_pixels=True).Modality for f in out.iterdir()]
        assert len(got) == len(st["jobs"]["recent"][0]["results"]) and {"SEG", "SR"} <= set(got)
    finally:
        scp.terminate()
        try:
            scp.wait(10)
        except subprocess.TimeoutExpired:
            scp.kill()


def test_dicomnode_echo_and_send_speak_tls(make_node, pki, tmp_path):
    import sys

    node = _tls_node(make_node, pki)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dicomnode", *args], capture_output=True, text=True, timeout=120)

    tls = ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key")]
    peer = ["127.0.0.1", str(node.port), "--aet", "WORKSTATION", "--aec", "DICOMNODE"]
    ok = run("echo", *peer, *tls)
    assert ok.returncode == 0 and "(success)" in ok.stdout, ok.stdout + ok.stderr
    no_cert = run("echo", *peer, "--tls-ca", str(pki / "ca.pem"))  # the node requires a client certificate
    assert no_cert.returncode == 1 and "aborted (over TLS: the peer may have refused our certificate" in no_cert.stderr
    assert no_cert.stderr.startswith("dicomnode echo: association with DICOMNODE@127.0.0.1:"), no_cert.stderr
    rogue = run("echo", *peer, "--tls-ca", str(pki / "rogue-ca.pem"), "--tls-cert", str(pki / "client.pem"),
                "--tls-key", str(pki / "client.key"))  # we must not trust a node our CA did not sign
    assert rogue.returncode == 1 and "not established: [SSL: CERTIFICATE_VERIFY_FAILED]" in rogue.stderr, rogue.stderr
    missing = run("echo", *peer, "--tls-ca", str(tmp_path / "nope.pem"))
    assert missing.returncode == 2 and f"--tls-ca {tmp_path / 'nope.pem'}: no such file" in missing.stderr
    wrong_key = run("echo", *peer, "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "rogue.key"))
    assert wrong_key.returncode == 2 and "--tls-key" in wrong_key.stderr, wrong_key.stderr

    files = [str(p) for p in sorted(STS_CT.glob("*.dcm"))[:3]]
    sent = run("send", *files, "--to", f"DICOMNODE@127.0.0.1:{node.port}", "--aet", "WORKSTATION", "-q", *tls)
    assert sent.returncode == 0 and "sent 3 of 3" in sent.stdout, sent.stdout + sent.stderr
    wait_until(lambda: node.status()["instances"] == 3, timeout_s=30, what="3 instances stored over TLS")
    plain = run("send", *files, "--to", f"DICOMNODE@127.0.0.1:{node.port}", "--aet", "WORKSTATION", "-q")
    assert plain.returncode == 1 and "a peer that requires TLS would drop" in plain.stderr, plain.stdout + plain.stderr
