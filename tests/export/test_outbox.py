"""export/: the outbox sends through a Sender chosen by the destination's kind; the DIMSE sender is the default."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

import pydicom
import pytest

from helpers import STS_CT, dcmtk, dcmtk_env, free_port, wait_for_port

from dicomnode.config import Destination, DestinationKind, NodeConfig, parse_config
from dicomnode.errors import ConfigErrors, SendError
from dicomnode.export.outbox import Outbox
from dicomnode.export.senders import DimseSender, Sender, SendResult, sender_for
from dicomnode.jobs.spec import ChainJob, new_job
from dicomnode.store.db import Database, ExportState, InstanceRecord, SeriesState


class FolderSender:
    """A second, real Sender: copies each file into a folder named after the destination."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[str, int]] = []

    def send(self, destination: Destination, paths: Sequence[Path | str], *,
             on_sent: Callable[[SendResult], None]) -> None:
        self.calls.append((destination.name, len(paths)))
        folder = self.root / destination.name
        if not self.root.exists():
            raise SendError(f"{self.root} does not exist")  # nothing could be sent: the outbox retries all
        folder.mkdir(exist_ok=True)
        for p in map(Path, paths):
            sop = str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            shutil.copyfile(p, folder / f"{sop}.dcm")
            on_sent(SendResult(str(p), sop, None, True))


def _queue_results(db: Database, files: list[Path], destination: str) -> None:
    db.add_instances([InstanceRecord("1.1", "1.2", "1.3", "1.2.840.10008.5.1.4.1.1.2", "CT", "1.2.840.10008.1.2",
                                     "/x", 1000, "PACS", "10.0.0.1", 100.0)])
    job = db.complete_series("1.2", SeriesState.COMPLETE, 200.0, expected_last=100.0,
                             job=new_job(ChainJob("ct"), rule="r", destinations=[destination]))
    db.claim_job("w", 60, 201.0)
    exports = [(destination, str(f), str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)) for f in files]
    db.finish_job(job, 204.0, result_dir=str(files[0].parent), results=[str(f) for f in files], seconds=1.0,
                  exports=exports)


def _config(tmp_path: Path, port: int) -> NodeConfig:
    return parse_config({"node": {"data_dir": str(tmp_path), "ae_title": "NODE"},
                         "destinations": [{"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": port}],
                         "export": {"timeout_seconds": 10}})


def test_outbox_sends_through_the_injected_sender(tmp_path):
    files = sorted(STS_CT.glob("*.dcm"))[:3]
    db = Database(tmp_path / "index.sqlite")
    _queue_results(db, files, "DEST")
    cfg = _config(tmp_path, free_port())  # nobody listens there: only the folder sender can deliver
    out = tmp_path / "out"
    folder = FolderSender(out)
    outbox = Outbox(db, lambda: cfg, senders=lambda dest, config: folder)

    assert outbox.send_due() is True  # out/ does not exist yet: the sender raises, every row is retried later
    assert {r.state for r in db.list_exports()} == {ExportState.PENDING}
    assert all(r.last_error and "does not exist" in r.last_error for r in db.list_exports())

    out.mkdir()
    assert outbox.send_due(now=time.time() + 3600) is True
    assert {r.state for r in db.list_exports()} == {ExportState.SENT}
    sent = sorted(p.name for p in (out / "DEST").iterdir())
    assert sent == sorted(f"{pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID}.dcm" for f in files)
    assert folder.calls == [("DEST", 3), ("DEST", 3)]
    assert outbox.send_due(now=time.time() + 7200) is False  # sent is done: nothing goes twice


def test_default_sender_is_dimse_c_store_to_a_real_storescp(tmp_path):
    port = free_port()
    received = tmp_path / "storescp"
    received.mkdir()
    scp = subprocess.Popen([dcmtk("storescp"), "-aet", "DEST", "+B", "-od", str(received), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dcmtk_env())
    try:
        wait_for_port(port)
        files = sorted(STS_CT.glob("*.dcm"))[:2]
        db = Database(tmp_path / "index.sqlite")
        _queue_results(db, files, "DEST")
        cfg = _config(tmp_path, port)
        dest = cfg.destination("DEST")
        assert dest.kind is DestinationKind.DICOM
        assert isinstance(sender_for(dest, cfg), DimseSender)
        assert isinstance(sender_for(dest, cfg), Sender)  # a structural (runtime_checkable) check
        outbox = Outbox(db, lambda: cfg)
        assert outbox.send_due() is True
        assert {r.state for r in db.list_exports()} == {ExportState.SENT}
        assert len([p for p in received.iterdir() if p.is_file()]) == 2
    finally:
        scp.terminate()
        scp.wait(10)


def test_destination_kind_is_checked_with_the_fix_named():
    cfg = parse_config({"destinations": [{"name": "A", "kind": "dicom", "ae_title": "A", "host": "h", "port": 104}]})
    assert cfg.destination("A").kind is DestinationKind.DICOM
    assert parse_config({"destinations": [{"name": "A", "ae_title": "A", "host": "h", "port": 104}]}
                        ).destination("A").kind is DestinationKind.DICOM
    with pytest.raises(ConfigErrors) as e:
        parse_config({"destinations": [{"name": "A", "kind": "stow", "ae_title": "A", "host": "h", "port": 104}]})
    text = str(e.value)
    assert "destinations[0].kind" in text and "stow" in text and "dicom" in text
