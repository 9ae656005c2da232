"""``dicomnode audit``: --since parsing and the text/JSON output over a real index."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
import tomli_w

from dicomnode.cli import main
from dicomnode.commands.audit import parse_since
from dicomnode.store.db import Database


def test_since_accepts_ages_and_local_iso_times():
    now = 1_000_000.0
    assert parse_since("90s", now=now) == now - 90
    assert parse_since("15m", now=now) == now - 900
    assert parse_since("1h", now=now) == now - 3600
    assert parse_since("7d", now=now) == now - 7 * 86400
    assert parse_since("2026-11-25T10:00") == datetime(2026, 11, 25, 10, 0).timestamp()
    with pytest.raises(ValueError, match="1h"):
        parse_since("last tuesday")


def test_audit_command_lists_who_sent_what_and_where_results_went(tmp_path, capsys):
    data = tmp_path / "data"
    cfg = tmp_path / "node.toml"
    cfg.write_text(tomli_w.dumps({"node": {"data_dir": str(data)}}))
    db = Database(data / "index.sqlite")
    now = time.time()
    db.audit("received", actor="PACS", series_uid="1.2.3", now=now - 7200,
             detail={"modality": "CT", "instances": 2, "bytes": 2_000_000, "outcome": "job",
                     "senders": [{"calling_ae": "PACS", "peer_host": "10.0.0.1", "instances": 2, "bytes": 2_000_000}]})
    db.audit("result sent", actor="PACS@10.0.0.1:104", series_uid="1.2.3", now=now - 60,
             detail={"sop_instance_uid": "9.9", "export_id": 1, "status": 0})
    assert main(["audit", "--config", str(cfg), "--since", "3h"]) == 0
    out = capsys.readouterr().out
    assert "from PACS@10.0.0.1 (2): CT 2 instances, 2.0 MB" in out and "-> PACS@10.0.0.1:104  SOP 9.9" in out
    assert main(["audit", "--config", str(cfg), "--since", "1h", "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [e["event"] for e in events] == ["result sent"]
    assert main(["audit", "--config", str(cfg), "--since", "3h", "--event", "received", "--json"]) == 0
    assert [e["event"] for e in json.loads(capsys.readouterr().out)] == ["received"]
    assert main(["audit", "--config", str(cfg), "--since", "soon"]) == 2
