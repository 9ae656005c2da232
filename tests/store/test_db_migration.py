"""store/db.py: an index written by schema 1 or 2 (the checked-in dumps were made by that code) opens as schema 3.

Schema 2 keeps a job's kind and parameters in their own columns (``kind``, ``params`` as JSON, ``label`` for people
and metrics) instead of the ``profile`` column that doubled as the radiomics settings name, and keeps the routing
decision with the series (``series.route``). Schema 3 keeps each series' FrameOfReferenceUID
(``series.frame_of_reference_uid``, NULL for series routed before), which the study context of a chain job reads.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dicomnode.jobs.kinds import queued
from dicomnode.jobs.spec import ChainJob, RadiomicsJob, new_job
from dicomnode.store.db import SCHEMA_VERSION, Database, JobState, SchemaError, SeriesState

V1_DUMP = Path(__file__).parent / "data" / "index_v1.sql"
V2_DUMP = Path(__file__).parent / "data" / "index_v2.sql"


def _v1_index(tmp_path: Path, dump: Path = V1_DUMP) -> Path:
    path = tmp_path / "index.sqlite"
    con = sqlite3.connect(path)
    con.executescript(dump.read_text())
    con.close()
    return path


def test_a_schema_1_index_is_migrated_with_its_jobs_series_and_exports(tmp_path):
    path = _v1_index(tmp_path)
    db = Database(path)
    assert SCHEMA_VERSION == 3 and db.get_meta("schema_version") == "3"
    done, waiting = sorted(db.list_jobs(), key=lambda j: j.id)
    assert (done.id, done.kind, done.params, done.label, done.state) == (1, "chain", {"profile": "ct"}, "ct",
                                                                          JobState.DONE)
    assert done.results == ("/data/results/1.2.3/1/seg.dcm",) and done.destinations == ("PACS",)
    assert queued(done.kind, done.params) == ChainJob("ct")
    assert (waiting.kind, waiting.params, waiting.label, waiting.depends_on) == (
        "radiomics", {"settings": "ibsi-config-C"}, "ibsi-config-C", "1.2.3")
    assert queued(waiting.kind, waiting.params) == RadiomicsJob("ibsi-config-C")
    assert db.get_series("1.2.3").state is SeriesState.COMPLETE and db.get_series("1.2.3").route is None
    assert db.get_series("1.2.5").state is SeriesState.OPEN
    assert [e.sop_instance_uid for e in db.list_exports()] == ["2.25.1"]
    assert db.count_instances() == 4
    assert db.job_duration_histogram([5.0, 20.0]) == {"ct": ([0, 1], 10.0, 1)}  # metrics by label, as by profile
    # the queue works on: the radiomics job is claimed (its image series is complete), new jobs get new ids
    assert db.claim_job("w", 60, 200.0).id == 2
    db.complete_series("1.2.5", SeriesState.COMPLETE, 300.0, expected_last=106.0,
                       job=new_job(ChainJob("ct"), rule="ct", destinations=["PACS"]))
    assert max(j.id for j in db.list_jobs()) == 3
    db.close()
    again = Database(path)  # opening a schema 3 index changes nothing
    assert again.get_meta("schema_version") == "3" and len(again.list_jobs()) == 3


def test_a_schema_2_index_gets_the_frame_of_reference_column_and_keeps_everything(tmp_path):
    path = _v1_index(tmp_path, V2_DUMP)
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    con.close()
    db = Database(path)
    assert db.get_meta("schema_version") == "3"
    s = db.get_series("1.2.3")
    assert s.state is SeriesState.COMPLETE and s.frame_of_reference_uid is None   # routed before: not known
    assert [j.id for j in db.list_jobs()] == [2, 1] and db.count_instances() == 4
    assert db.study_context("1.2.5") == []                   # no frame known: no study context
    db.set_series_routing("1.2.5", "ct", 30.0, None, frame_of_reference_uid="1.2.99")
    db.set_series_routing("1.2.3", "ct", 30.0, None, frame_of_reference_uid="1.2.99")
    assert db.study_context("1.2.5") == [("CT", "1.2.3")]    # same study (1.2), same frame, complete
    assert db.study_context("1.2.3") == []                   # 1.2.5 is still open: not offered
    db.set_series_routing("1.2.3", "ct", 30.0, None)          # routed again without a frame: the frame is kept
    assert db.get_series("1.2.3").frame_of_reference_uid == "1.2.99"


def test_an_index_of_a_newer_dicomnode_is_refused(tmp_path):
    path = _v1_index(tmp_path)
    Database(path).set_meta("schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(SchemaError, match="newer"):
        Database(path)
