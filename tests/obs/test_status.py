"""obs/status.py: what ``dicomnode status`` shows, over a real index (no node running)."""

from __future__ import annotations

import time

from dicomnode.config import parse_config
from dicomnode.obs.status import status_dict
from dicomnode.store.db import Database, InstanceRecord, SeriesState


def test_status_dict_shows_the_node_its_series_and_jobs(tmp_path):
    cfg = parse_config({"node": {"data_dir": str(tmp_path), "ae_title": "STATUSNODE"}, "series": {"quiet_seconds": 5}})
    db = Database(tmp_path / "index.sqlite")
    now = time.time()
    db.add_instances([InstanceRecord("1.2.3.1", "1.2.3", "1.2", "1.2.840.10008.5.1.4.1.1.2", "CT", "1.2.840.10008.1.2.1",
                                     str(tmp_path / "a.dcm"), 10, "PACS", "127.0.0.1", now)])
    st = status_dict(cfg, db)
    assert st["node"] == {"ae_title": "STATUSNODE", "port": 11112, "data_dir": str(tmp_path), "quiet_seconds": 5}
    assert st["instances"] == 1
    [series] = st["series"]
    assert series["series_uid"] == "1.2.3" and series["state"] == SeriesState.OPEN.value
    assert 0 < series["completes_in_s"] <= 5  # the quiet period has not passed yet
    assert st["jobs"]["recent"] == [] and not any(st["jobs"]["counts"].values())
    assert st["failed_jobs"] == [] and st["outbox"]["dead"] == []
    assert "cluster" not in st  # local workers: no cluster section
