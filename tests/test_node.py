"""node.py: a series is routed once, when it opens; completion uses the decision kept with it (series.route), and a
reload routes the series that are still open again under the new rules."""

from __future__ import annotations

import json
import time
from pathlib import Path


from helpers import STS_CT, stored_instance
from dicomnode.config import parse_config
from dicomnode.jobs.kinds import queued
from dicomnode.jobs.spec import ChainJob
from dicomnode.node import Node
from dicomnode.store.spool import StoredInstance


def _config(tmp_path: Path, profile: str):
    return parse_config({"node": {"data_dir": str(tmp_path / "data")}, "series": {"quiet_seconds": 1},
                         "rules": [{"name": "ct", "match": {"Modality": "CT"}, "profile": profile}]})


def _open_and_route(node: Node, stored: StoredInstance) -> None:
    node._index([stored])
    node.route_series(*node._route_queue.get_nowait())


def test_completion_uses_the_decision_made_when_the_series_opened(tmp_path):
    node = Node(_config(tmp_path, "generic"))
    first = stored_instance(next(p for p in sorted(STS_CT.iterdir()) if p.is_file()), tmp_path / "in")
    _open_and_route(node, first)
    s = node.db.get_series(first.series_uid)
    assert s.rule == "ct" and json.loads(s.route)["job"]["params"] == {"profile": "generic"}
    first.path.write_bytes(b"not DICOM any more")  # completion must not read the header again
    (job_id,) = node.complete_due(time.time() + 60)
    job = node.db.get_job(job_id)
    assert queued(job.kind, job.params) == ChainJob("generic") and job.rule == "ct"
    node.db.close()


def test_a_reload_routes_the_open_series_again(tmp_path):
    node = Node(_config(tmp_path, "generic"))
    first = stored_instance(next(p for p in sorted(STS_CT.iterdir()) if p.is_file()), tmp_path / "in")
    _open_and_route(node, first)
    node.replace_config(_config(tmp_path, "ct"))
    node.route_series(*node._route_queue.get_nowait())
    (job_id,) = node.complete_due(time.time() + 60)
    assert node.db.get_job(job_id).params == {"profile": "ct"}
    node.db.close()


def test_a_series_reopened_by_a_late_instance_is_routed_again(tmp_path):
    node = Node(_config(tmp_path, "generic"))
    files = [p for p in sorted(STS_CT.iterdir()) if p.is_file()][:2]
    _open_and_route(node, stored_instance(files[0], tmp_path / "in"))
    assert len(node.complete_due(time.time() + 60)) == 1
    node.replace_config(_config(tmp_path, "ct"))  # nothing open: nothing to route again now
    assert node._route_queue.empty()
    _open_and_route(node, stored_instance(files[1], tmp_path / "in"))  # a late instance reopens it: the new rules decide
    (job_id,) = node.complete_due(time.time() + 60)
    assert node.db.get_job(job_id).params == {"profile": "ct"}
    node.db.close()
