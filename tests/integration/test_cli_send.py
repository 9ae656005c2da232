"""`dicomnode send` says per file why it was not sent, and hints --aet when the peer refuses our AE title (issue 16,
item 10). Real peers: a node with [[peers]] and DCMTK's storescp (uncompressed transfer syntaxes only)."""

from __future__ import annotations

import pydicom
import tomli_w
from pydicom.uid import generate_uid

from helpers import SHARED_DATA, UserNode, free_port, run_cli

ABDOMEN_J2K = SHARED_DATA / "abdomen-ct" / "upper_abdomen_j2k"


def test_send_names_each_file_it_cannot_send_and_why(tmp_path, storescp):
    dest = storescp()
    files = sorted(ABDOMEN_J2K.glob("CT.*"))[:3]  # empty SOP Class / Instance UIDs in the dataset
    fixed = tmp_path / "fixed.dcm"  # the same JPEG 2000 image with its UIDs repaired
    ds = pydicom.dcmread(files[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(fixed, enforce_file_format=True)
    plain = SHARED_DATA / "chest-ct" / "A0002_B40f" / "1-01.dcm"  # uncompressed: storescp takes it
    p = run_cli("send", *files, fixed, plain, "--to", f"DEST@127.0.0.1:{dest.port}", "-q", cwd=tmp_path)
    assert p.returncode == 1
    assert "ValueError" not in p.stderr and "Traceback" not in p.stderr
    assert "3 file(s) will not be sent" in p.stderr
    assert "empty SOPClassUID (0008,0016) and empty SOPInstanceUID (0008,0018)" in p.stderr
    for f in files:
        assert str(f) in p.stderr
    assert f"{fixed}: the destination accepted no presentation context for SOP class CT Image Storage" \
           in p.stderr and "JPEG 2000" in p.stderr and "dcmdjp2k" in p.stderr
    assert "sent 1 of 5 file(s)" in p.stdout and len(dest.files()) == 1


def test_send_hints_aet_when_the_peer_refuses_our_calling_ae(tmp_path):
    port = free_port()
    cfg = tmp_path / "n.toml"
    cfg.write_text(tomli_w.dumps({"node": {"bind": "127.0.0.1", "port": port, "data_dir": str(tmp_path / "d")},
                                  "peers": [{"ae_title": "WORKSTATION"}]}))
    node = UserNode(cfg, tmp_path, port).start()
    try:
        one = SHARED_DATA / "chest-ct" / "A0002_B40f" / "1-01.dcm"
        p = run_cli("send", one, "--to", f"DICOMNODE@127.0.0.1:{port}", "-q", cwd=tmp_path)
        assert p.returncode == 1
        assert "Calling AE title not recognised" in p.stderr and "pass --aet" in p.stderr
        assert "ERROR pynetdicom" not in p.stderr  # the command's own line only
        ok = run_cli("send", one, "--to", f"DICOMNODE@127.0.0.1:{port}", "--aet", "WORKSTATION", "-q", cwd=tmp_path)
        assert ok.returncode == 0, ok.stderr
    finally:
        node.stop()
