"""The SQLite (WAL) index: instances, series, jobs, exports, audit. The only module that speaks SQL.

Files on disk are content; this index says what they are. The spool's renamed file is the commit point of a
received instance (see :mod:`dicomnode.store.spool`); the index row follows off the hot path and is rebuilt from the
spool on start (:meth:`Database.known_instance_paths` + ``Spool.scan``), so the index may run with
``synchronous=NORMAL``.

Every state change that matters is one transaction here and one log line in the caller.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

SCHEMA_VERSION = 3  # 2: jobs.kind + jobs.params (JSON) + jobs.label instead of jobs.profile; series.route
#                     3: series.frame_of_reference_uid (a study's series on one frame of reference: the scene's anatomy)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    modality TEXT NOT NULL DEFAULT '',
    transfer_syntax TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    calling_ae TEXT NOT NULL DEFAULT '',
    peer_host TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS instances_received ON instances(received_at);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT NOT NULL DEFAULT '',
    sop_class_uid TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    instance_count INTEGER NOT NULL DEFAULT 0,
    first_received_at REAL NOT NULL,
    last_received_at REAL NOT NULL,
    completed_at REAL,
    rule TEXT,
    quiet_seconds REAL,
    calling_ae TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    route TEXT,
    frame_of_reference_uid TEXT
);
CREATE INDEX IF NOT EXISTS series_state ON series(state);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS series_last ON series(last_received_at);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    series_uid TEXT NOT NULL,
    generation INTEGER NOT NULL,
    rule TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    label TEXT NOT NULL,
    destinations TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    worker TEXT,
    lease_until REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    error TEXT,
    traceback TEXT,
    result_dir TEXT,
    results TEXT NOT NULL DEFAULT '[]',
    depends_on TEXT,
    UNIQUE(series_uid, generation, kind, label)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, not_before);
CREATE TABLE IF NOT EXISTS exports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER,
    series_uid TEXT NOT NULL DEFAULT '',
    destination TEXT NOT NULL,
    path TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    sent_at REAL,
    UNIQUE(destination, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS exports_state ON exports(state, not_before);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL DEFAULT '',
    series_uid TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
"""


#: Schema 1 kept what a job runs in ``jobs.profile``: the profile of a chain job, the settings of a radiomics job.
#: Version 2 keeps it as parameters under these keys (the job types of :mod:`dicomnode.jobs.spec` read them).
_V1_PARAMETER_OF_KIND = {"chain": "profile", "radiomics": "settings"}

_MIGRATE_1_TO_2 = """
ALTER TABLE series ADD COLUMN route TEXT;
CREATE TABLE jobs_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    series_uid TEXT NOT NULL,
    generation INTEGER NOT NULL,
    rule TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    label TEXT NOT NULL,
    destinations TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    worker TEXT,
    lease_until REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    error TEXT,
    traceback TEXT,
    result_dir TEXT,
    results TEXT NOT NULL DEFAULT '[]',
    depends_on TEXT,
    UNIQUE(series_uid, generation, kind, label)
);
INSERT INTO jobs_v2(id, series_uid, generation, rule, kind, params, label, destinations, state, attempts, not_before,
                    worker, lease_until, created_at, started_at, finished_at, seconds, error, traceback, result_dir,
                    results, depends_on)
    SELECT j.id, j.series_uid, j.generation, j.rule, j.kind, json_object(p.key, j.profile), j.profile, j.destinations,
           j.state, j.attempts, j.not_before, j.worker, j.lease_until, j.created_at, j.started_at, j.finished_at,
           j.seconds, j.error, j.traceback, j.result_dir, j.results, j.depends_on
    FROM jobs j JOIN v1_parameter_of_kind p ON p.kind = j.kind;
DROP TABLE jobs;
ALTER TABLE jobs_v2 RENAME TO jobs;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, not_before);
"""


#: Schema 3 keeps each series' FrameOfReferenceUID (read with its routing header; NULL for series routed before).
_MIGRATE_2_TO_3 = """
ALTER TABLE series ADD COLUMN frame_of_reference_uid TEXT;
"""


class SchemaError(RuntimeError):
    """The index was written by a newer dicomnode (its schema version is higher than this one knows).

    Run the newer version, or move the data folder away and start with an empty one.
    """


class SeriesState(str, Enum):
    OPEN = "open"            # instances still arriving (or the quiet period has not passed)
    COMPLETE = "complete"    # quiet period passed; a job was queued
    UNROUTED = "unrouted"    # complete, but no rule matched: kept, no job
    IGNORED = "ignored"      # complete, not an image series (SEG, SR, RT, PR...) or made by this node: no job


class JobState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


JOB_TRANSITIONS: dict[JobState, set[JobState]] = {
    JobState.PENDING: {JobState.RUNNING},
    JobState.RUNNING: {JobState.DONE, JobState.FAILED, JobState.PENDING},  # -> PENDING: retry, or lease lost
    JobState.FAILED: {JobState.PENDING},                                   # -> PENDING: operator retry
    JobState.DONE: {JobState.PENDING},                                     # -> PENDING: operator re-run
}


class ExportState(str, Enum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"            # dead letter: every attempt failed; listed and requeueable


EXPORT_TRANSITIONS: dict[ExportState, set[ExportState]] = {
    ExportState.PENDING: {ExportState.SENDING},
    ExportState.SENDING: {ExportState.SENT, ExportState.PENDING, ExportState.DEAD},
    ExportState.DEAD: {ExportState.PENDING},
    ExportState.SENT: set(),
}


@dataclass(frozen=True, slots=True)
class SeriesRow:
    series_uid: str
    study_uid: str
    modality: str
    sop_class_uid: str
    state: SeriesState
    generation: int
    instance_count: int
    first_received_at: float
    last_received_at: float
    completed_at: float | None
    rule: str | None
    quiet_seconds: float | None
    calling_ae: str
    note: str
    route: str | None = None        # the routing decision (JSON), made once when the series opened
    frame_of_reference_uid: str | None = None  # from the routing header (None: none, or routed before schema 3)


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to queue: its kind and parameters (as :mod:`dicomnode.jobs.spec` writes them), a label for people
    and metrics (the profile or settings name), where its results go, and a series that must be complete first."""

    rule: str
    kind: str
    params: dict[str, Any]
    label: str
    destinations: tuple[str, ...] = ()
    depends_on: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "kind": self.kind, "params": self.params, "label": self.label,
                "destinations": list(self.destinations), "depends_on": self.depends_on}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NewJob":
        return cls(d["rule"], d["kind"], dict(d["params"]), d["label"], tuple(d.get("destinations", ())),
                   d.get("depends_on"))


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    series_uid: str
    generation: int
    rule: str
    kind: str                       # a JobKind value (dicomnode.jobs.spec)
    params: dict[str, Any]          # the kind's parameters (profile name, radiomics settings, ...)
    label: str                      # what it runs, for people and metrics: the profile or settings name
    destinations: tuple[str, ...]
    state: JobState
    attempts: int
    not_before: float
    worker: str | None
    lease_until: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    seconds: float | None
    error: str | None
    traceback: str | None
    result_dir: str | None
    results: tuple[str, ...]
    depends_on: str | None = None   # a series that must be complete first (the image series of a region)


@dataclass(frozen=True, slots=True)
class ExportRow:
    id: int
    job_id: int | None
    series_uid: str
    destination: str
    path: str
    sop_instance_uid: str
    state: ExportState
    attempts: int
    not_before: float
    last_error: str | None
    created_at: float
    sent_at: float | None


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """What the index keeps of one stored instance (mirrors ``spool.StoredInstance``)."""

    sop_instance_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    modality: str
    transfer_syntax: str
    path: str
    size_bytes: int
    calling_ae: str
    peer_host: str
    received_at: float


class IllegalTransition(RuntimeError):
    pass


def _series(r: sqlite3.Row) -> SeriesRow:
    d = dict(r)
    d["state"] = SeriesState(d["state"])
    return SeriesRow(**d)


def _job(r: sqlite3.Row) -> JobRow:
    d = dict(r)
    d["state"] = JobState(d["state"])
    d["destinations"] = tuple(json.loads(d["destinations"]))
    d["results"] = tuple(json.loads(d["results"]))
    d["params"] = json.loads(d["params"])
    return JobRow(**d)


def _export(r: sqlite3.Row) -> ExportRow:
    d = dict(r)
    d["state"] = ExportState(d["state"])
    return ExportRow(**d)


class Database:
    """Thread-safe access to the index: one connection per thread, WAL, busy timeout."""

    def __init__(self, path: Path | str, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout_s = timeout_s
        self._local = threading.local()
        conn = self._conn()
        fresh = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone() is None
        if not fresh:
            self._migrate(conn)
        conn.executescript(_SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring an index written by an older dicomnode to :data:`SCHEMA_VERSION`, in one transaction."""
        has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if has_meta else None
        version = int(row[0]) if row else 1
        if version > SCHEMA_VERSION:
            raise SchemaError(f"{self.path}: index schema version {version} is newer than this dicomnode's "
                              f"{SCHEMA_VERSION}; run the newer version or start with an empty data folder")
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version < 2:
                conn.execute("CREATE TEMP TABLE v1_parameter_of_kind (kind TEXT PRIMARY KEY, key TEXT NOT NULL)")
                conn.executemany("INSERT INTO v1_parameter_of_kind VALUES (?, ?)", _V1_PARAMETER_OF_KIND.items())
                for statement in _MIGRATE_1_TO_2.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("DROP TABLE temp.v1_parameter_of_kind")
            if version < 3:
                for statement in _MIGRATE_2_TO_3.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- connections and transactions ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False)
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA foreign_keys=ON")
            self._local.conn = c
        return c

    @contextmanager
    def immediate(self) -> Iterator[Any]:
        """BEGIN IMMEDIATE ... COMMIT: one state change, one transaction."""
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            if c.in_transaction:  # SQLite may have rolled back already (e.g. on "database or disk is full")
                c.execute("ROLLBACK")
            raise
        else:
            try:
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

    def durable_commits(self) -> None:
        """Make this thread's commits survive a power cut too (``synchronous=FULL``: the WAL is fsynced on
        each commit). For state that must never be repeated, such as "this result was sent"; the rest of the
        index is rebuilt from the spool and keeps ``NORMAL``, which survives a process crash."""
        self._conn().execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, args).fetchall()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        return self._conn().execute(sql, args).fetchone()

    # -- meta ------------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        r = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if r is None else r["value"]

    def set_meta(self, key: str, value: str) -> None:
        with self.immediate() as tx:
            tx.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       (key, value))

    # -- instances and series ----------------------------------------------------------------------------------
    def add_instances(self, records: Iterable[InstanceRecord],
                      new_series: dict[str, tuple[str | None, float | None]] | None = None
                      ) -> tuple[int, set[str]]:
        """Index stored instances in one transaction.

        New instances open (or re-open) their series and move its quiet-period clock; an instance indexed
        already (a resend) moves the clock of its open series only. ``new_series`` gives, for
        series the caller routed already, (rule name, quiet seconds). Returns (number of new instances, series
        UIDs that were re-opened after completion).
        """
        added = 0
        reopened: set[str] = set()
        with self.immediate() as tx:
            for r in records:
                cur = tx.execute(
                    "INSERT OR IGNORE INTO instances(sop_instance_uid, series_uid, study_uid, sop_class_uid, modality,"
                    " transfer_syntax, path, size_bytes, calling_ae, peer_host, received_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (r.sop_instance_uid, r.series_uid, r.study_uid, r.sop_class_uid, r.modality, r.transfer_syntax,
                     r.path, r.size_bytes, r.calling_ae, r.peer_host, r.received_at))
                if cur.rowcount == 0:
                    # indexed already (a resend): the sender is still at work, so an open series stays open
                    tx.execute("UPDATE series SET last_received_at = MAX(last_received_at, ?)"
                               " WHERE series_uid = ? AND state = ?",
                               (r.received_at, r.series_uid, SeriesState.OPEN.value))
                    continue
                added += 1
                row = tx.execute("SELECT state FROM series WHERE series_uid = ?", (r.series_uid,)).fetchone()
                if row is None:
                    rule, quiet = (new_series or {}).get(r.series_uid, (None, None))
                    tx.execute(
                        "INSERT INTO series(series_uid, study_uid, modality, sop_class_uid, state, generation,"
                        " instance_count, first_received_at, last_received_at, rule, quiet_seconds, calling_ae)"
                        " VALUES (?,?,?,?,?,0,1,?,?,?,?,?)",
                        (r.series_uid, r.study_uid, r.modality, r.sop_class_uid, SeriesState.OPEN.value,
                         r.received_at, r.received_at, rule, quiet, r.calling_ae))
                else:
                    if row["state"] != SeriesState.OPEN.value:
                        reopened.add(r.series_uid)
                    tx.execute(
                        "UPDATE series SET instance_count = instance_count + 1, state = ?,"
                        " last_received_at = MAX(last_received_at, ?) WHERE series_uid = ?",
                        (SeriesState.OPEN.value, r.received_at, r.series_uid))
        return added, reopened

    def restart_quiet_periods(self, now: float) -> int:
        """At start-up: open series get a whole quiet period from ``now``. While the node was down their senders
        could not send, so the silence before the restart says nothing; completing them at once would process a
        series cut short by the outage (and process it again when the sender resends the rest)."""
        with self.immediate() as tx:
            cur = tx.execute("UPDATE series SET last_received_at = ? WHERE state = ? AND last_received_at < ?",
                             (now, SeriesState.OPEN.value, now))
        return cur.rowcount

    def set_series_routing(self, series_uid: str, rule: str | None, quiet_seconds: float | None,
                           route: str | None = None, *, frame_of_reference_uid: str | None = None) -> None:
        """Keep the routing decision with the series: its rule, quiet period and (JSON) what completion does; and
        the FrameOfReferenceUID its routing header gave (kept when a later routing gives none)."""
        with self.immediate() as tx:
            tx.execute("UPDATE series SET rule = ?, quiet_seconds = ?, route = ?,"
                       " frame_of_reference_uid = COALESCE(?, frame_of_reference_uid) WHERE series_uid = ?",
                       (rule, quiet_seconds, route, frame_of_reference_uid, series_uid))

    def study_context(self, series_uid: str, *, limit: int = 8) -> list[tuple[str, str]]:
        """The other series of a series' study on its frame of reference, as (modality, series UID): complete (or
        complete without a rule) and holding instances, not secondary captures; CT first, then MR, then the rest,
        larger series first. Empty when the series has no frame of reference in the index. Made-by-this-node and
        non-image series are ``ignored`` and never listed. The order is
        :func:`dicomnode.analysis.scene_context.modality_rank`'s, written in SQL so that ``limit`` keeps the best
        (the store does not import the analysis); tests/store checks the two agree."""
        rows = self._all(
            "SELECT o.modality, o.series_uid FROM series s JOIN series o ON o.study_uid = s.study_uid"
            " AND o.frame_of_reference_uid = s.frame_of_reference_uid AND o.series_uid != s.series_uid"
            " WHERE s.series_uid = ? AND s.frame_of_reference_uid IS NOT NULL AND s.frame_of_reference_uid != ''"
            " AND o.state IN (?, ?) AND o.instance_count > 0 AND o.sop_class_uid NOT LIKE '1.2.840.10008.5.1.4.1.1.7%'"
            " ORDER BY CASE o.modality WHEN 'CT' THEN 0 WHEN 'MR' THEN 1 ELSE 2 END, o.instance_count DESC,"
            " o.series_uid LIMIT ?",
            (series_uid, SeriesState.COMPLETE.value, SeriesState.UNROUTED.value, limit))
        return [(str(r["modality"]), str(r["series_uid"])) for r in rows]

    def known_instance_paths(self) -> set[str]:
        return {r["path"] for r in self._all("SELECT path FROM instances")}

    def count_instances(self, series_uid: str | None = None) -> int:
        if series_uid is None:
            return int(self._one("SELECT COUNT(*) AS n FROM instances")["n"])
        return int(self._one("SELECT COUNT(*) AS n FROM instances WHERE series_uid = ?", (series_uid,))["n"])

    def instance_paths(self, series_uid: str) -> list[str]:
        return [r["path"] for r in self._all("SELECT path FROM instances WHERE series_uid = ? ORDER BY path",
                                             (series_uid,))]

    def instance_uids(self, series_uid: str) -> list[str]:
        return [r["sop_instance_uid"] for r in
                self._all("SELECT sop_instance_uid FROM instances WHERE series_uid = ? ORDER BY sop_instance_uid",
                          (series_uid,))]

    def get_series(self, series_uid: str) -> SeriesRow | None:
        r = self._one("SELECT * FROM series WHERE series_uid = ?", (series_uid,))
        return None if r is None else _series(r)

    def list_series(self, state: SeriesState | None = None, limit: int = 1000) -> list[SeriesRow]:
        if state is None:
            rows = self._all("SELECT * FROM series ORDER BY last_received_at DESC LIMIT ?", (limit,))
        else:
            rows = self._all("SELECT * FROM series WHERE state = ? ORDER BY last_received_at DESC LIMIT ?",
                             (state.value, limit))
        return [_series(r) for r in rows]

    def open_series_quiet_since(self, now: float, default_quiet_s: float) -> list[SeriesRow]:
        """Open series whose last instance is older than their quiet period."""
        rows = self._all(
            "SELECT * FROM series WHERE state = ? AND last_received_at <= ? - COALESCE(quiet_seconds, ?)",
            (SeriesState.OPEN.value, now, default_quiet_s))
        return [_series(r) for r in rows]

    def complete_series(self, series_uid: str, state: SeriesState, now: float, *, expected_last: float,
                        note: str = "", job: NewJob | None = None) -> int | None:
        """Close an open series (and queue its job, atomically). Returns the job id, if one was queued.

        Does nothing (returns None) when an instance arrived after ``expected_last``: the series stays open.
        """
        with self.immediate() as tx:
            r = tx.execute("SELECT state, generation, last_received_at FROM series WHERE series_uid = ?",
                           (series_uid,)).fetchone()
            if r is None or r["state"] != SeriesState.OPEN.value or r["last_received_at"] > expected_last:
                return None
            gen = r["generation"] + 1
            tx.execute("UPDATE series SET state = ?, generation = ?, completed_at = ?, note = ? WHERE series_uid = ?",
                       (state.value, gen, now, note, series_uid))
            if job is None:
                return None
            cur = self._insert_job(tx, series_uid, gen, job, now, or_ignore=True)
            return int(cur.lastrowid) if cur.rowcount else None

    @staticmethod
    def _insert_job(tx: sqlite3.Connection, series_uid: str, generation: int, job: NewJob, now: float, *,
                    or_ignore: bool, not_before: float = 0.0) -> sqlite3.Cursor:
        return tx.execute(
            f"INSERT {'OR IGNORE ' if or_ignore else ''}INTO jobs(series_uid, generation, rule, kind, params, label,"
            " destinations, state, created_at, not_before, depends_on) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (series_uid, generation, job.rule, job.kind, json.dumps(job.params, sort_keys=True), job.label,
             json.dumps(list(job.destinations)), JobState.PENDING.value, now, not_before, job.depends_on))

    # -- jobs -------------------------------------------------------------------------------------------------
    def get_job(self, job_id: int) -> JobRow | None:
        r = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if r is None else _job(r)

    def list_jobs(self, state: JobState | None = None, limit: int = 1000) -> list[JobRow]:
        if state is None:
            rows = self._all("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._all("SELECT * FROM jobs WHERE state = ? ORDER BY id DESC LIMIT ?", (state.value, limit))
        return [_job(r) for r in rows]

    def count_jobs(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._all("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}

    def claim_job(self, worker: str, lease_seconds: float, now: float) -> JobRow | None:
        with self.immediate() as tx:
            # a job that depends on another series (a region's image series) waits until that one is complete
            r = tx.execute("SELECT id FROM jobs WHERE state = ? AND not_before <= ? AND (depends_on IS NULL OR"
                           " EXISTS (SELECT 1 FROM series s WHERE s.series_uid = jobs.depends_on AND s.state != ?))"
                           " ORDER BY not_before, id LIMIT 1",
                           (JobState.PENDING.value, now, SeriesState.OPEN.value)).fetchone()
            if r is None:
                return None
            tx.execute("UPDATE jobs SET state = ?, worker = ?, lease_until = ?, started_at = ?,"
                       " attempts = attempts + 1 WHERE id = ?",
                       (JobState.RUNNING.value, worker, now + lease_seconds, now, r["id"]))
            row = tx.execute("SELECT * FROM jobs WHERE id = ?", (r["id"],)).fetchone()
        return _job(row)

    def _transition_job(self, tx: sqlite3.Connection, job_id: int, to: JobState) -> sqlite3.Row:
        r = tx.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if r is None:
            raise KeyError(f"no job {job_id}")
        frm = JobState(r["state"])
        if to not in JOB_TRANSITIONS[frm]:
            raise IllegalTransition(f"job {job_id}: {frm.value} -> {to.value} is not allowed")
        return r

    def finish_job(self, job_id: int, now: float, *, result_dir: str, results: Sequence[str], seconds: float,
                   exports: Sequence[tuple[str, str, str]]) -> list[int]:
        """RUNNING -> DONE and queue its exports (destination, path, sop_instance_uid) in one transaction.

        An export whose (destination, SOP instance UID) was queued or sent before is not queued again: results
        have deterministic UIDs, so "already sent" means done. Returns the new export ids.
        """
        ids: list[int] = []
        with self.immediate() as tx:
            job = self._transition_job(tx, job_id, JobState.DONE)
            tx.execute("UPDATE jobs SET state = ?, finished_at = ?, seconds = ?, result_dir = ?, results = ?,"
                       " error = NULL, traceback = NULL, lease_until = NULL WHERE id = ?",
                       (JobState.DONE.value, now, seconds, result_dir, json.dumps(list(results)), job_id))
            for dest, path, sop in exports:
                cur = tx.execute(
                    "INSERT INTO exports(job_id, series_uid, destination, path, sop_instance_uid, state, created_at)"
                    " VALUES (?,?,?,?,?,?,?) ON CONFLICT(destination, sop_instance_uid) DO UPDATE SET"
                    " path = excluded.path, job_id = excluded.job_id,"
                    " state = CASE WHEN exports.state = 'dead' THEN 'pending' ELSE exports.state END,"
                    " attempts = CASE WHEN exports.state = 'dead' THEN 0 ELSE exports.attempts END"
                    " WHERE exports.state != 'sent'",
                    (job_id, job["series_uid"], dest, path, sop, ExportState.PENDING.value, now))
                if cur.rowcount and cur.lastrowid:
                    ids.append(int(cur.lastrowid))
        return ids

    def fail_job(self, job_id: int, now: float, *, error: str, traceback: str, retry_at: float | None) -> JobState:
        """RUNNING -> PENDING (retry at ``retry_at``) or -> FAILED (``retry_at`` None), keeping the traceback."""
        to = JobState.PENDING if retry_at is not None else JobState.FAILED
        with self.immediate() as tx:
            self._transition_job(tx, job_id, to)
            tx.execute("UPDATE jobs SET state = ?, finished_at = ?, error = ?, traceback = ?, not_before = ?,"
                       " lease_until = NULL WHERE id = ?",
                       (to.value, now, error, traceback, retry_at if retry_at is not None else 0, job_id))
        return to

    def add_job(self, series_uid: str, generation: int, job: NewJob, *, now: float) -> int:
        """A new pending job for a stored series (``dicomnode reprocess``); its id."""
        with self.immediate() as tx:
            return int(self._insert_job(tx, series_uid, generation, job, now, or_ignore=False,
                                        not_before=now).lastrowid)

    def requeue_job(self, job_id: int, now: float, *, reset_attempts: bool = True) -> None:
        """FAILED or DONE -> PENDING (operator's retry)."""
        with self.immediate() as tx:
            self._transition_job(tx, job_id, JobState.PENDING)
            tx.execute("UPDATE jobs SET state = ?, not_before = ?, attempts = CASE WHEN ? THEN 0 ELSE attempts END"
                       " WHERE id = ?", (JobState.PENDING.value, now, int(reset_attempts), job_id))

    def release_job(self, job_id: int, now: float, *, not_before: float, note: str = "") -> None:
        """RUNNING -> PENDING without counting the attempt: its worker or the cluster connection was lost."""
        with self.immediate() as tx:
            r = self._transition_job(tx, job_id, JobState.PENDING)
            if r["state"] != JobState.RUNNING.value:
                raise IllegalTransition(f"job {job_id}: only a running job can be released")
            tx.execute("UPDATE jobs SET state = ?, worker = NULL, lease_until = NULL, not_before = ?,"
                       " attempts = MAX(attempts - 1, 0), error = ? WHERE id = ?",
                       (JobState.PENDING.value, not_before, note or None, job_id))

    def expired_running_jobs(self, now: float) -> list[JobRow]:
        """Running jobs whose lease ended before ``now`` (the lease sweep's candidates), oldest lease first."""
        rows = self._all("SELECT * FROM jobs WHERE state = ? AND lease_until IS NOT NULL AND lease_until < ?"
                         " ORDER BY lease_until, id", (JobState.RUNNING.value, now))
        return [_job(r) for r in rows]

    def release_running_jobs(self, *, now: float) -> list[int]:
        """RUNNING -> PENDING for every running job, at start-up and shutdown: the run was cut short by the node
        itself (killed or stopping), not by the job, so its attempt is given back. (A lease that expires while the
        node runs is the dispatcher's lease sweep, :meth:`expired_running_jobs`, and counts as an attempt.)
        """
        with self.immediate() as tx:
            ids = [r["id"] for r in tx.execute("SELECT id FROM jobs WHERE state = ?", (JobState.RUNNING.value,))]
            for i in ids:
                tx.execute("UPDATE jobs SET state = ?, worker = NULL, lease_until = NULL, not_before = ?,"
                           " attempts = MAX(attempts - 1, 0) WHERE id = ?", (JobState.PENDING.value, now, i))
        return ids

    # -- exports ----------------------------------------------------------------------------------------------
    def claim_export(self, now: float) -> ExportRow | None:
        with self.immediate() as tx:
            r = tx.execute("SELECT id FROM exports WHERE state = ? AND not_before <= ? ORDER BY not_before, id LIMIT 1",
                           (ExportState.PENDING.value, now)).fetchone()
            if r is None:
                return None
            tx.execute("UPDATE exports SET state = ?, attempts = attempts + 1 WHERE id = ?",
                       (ExportState.SENDING.value, r["id"]))
            row = tx.execute("SELECT * FROM exports WHERE id = ?", (r["id"],)).fetchone()
        return _export(row)

    def claim_exports_for(self, destination: str, now: float, limit: int) -> list[ExportRow]:
        """Claim up to ``limit`` more due exports of one destination (to share one association)."""
        if limit <= 0:
            return []
        with self.immediate() as tx:
            ids = [r["id"] for r in tx.execute(
                "SELECT id FROM exports WHERE state = ? AND destination = ? AND not_before <= ? ORDER BY id LIMIT ?",
                (ExportState.PENDING.value, destination, now, limit)).fetchall()]
            for i in ids:
                tx.execute("UPDATE exports SET state = ?, attempts = attempts + 1 WHERE id = ?",
                           (ExportState.SENDING.value, i))
            rows = [tx.execute("SELECT * FROM exports WHERE id = ?", (i,)).fetchone() for i in ids]
        return [_export(r) for r in rows]

    def _transition_export(self, tx: sqlite3.Connection, export_id: int, to: ExportState) -> None:
        r = tx.execute("SELECT state FROM exports WHERE id = ?", (export_id,)).fetchone()
        if r is None:
            raise KeyError(f"no export {export_id}")
        frm = ExportState(r["state"])
        if to not in EXPORT_TRANSITIONS[frm]:
            raise IllegalTransition(f"export {export_id}: {frm.value} -> {to.value} is not allowed")

    def export_sent(self, export_id: int, now: float) -> None:
        with self.immediate() as tx:
            self._transition_export(tx, export_id, ExportState.SENT)
            tx.execute("UPDATE exports SET state = ?, sent_at = ?, last_error = NULL WHERE id = ?",
                       (ExportState.SENT.value, now, export_id))

    def export_failed(self, export_id: int, now: float, *, error: str, retry_at: float | None) -> ExportState:
        to = ExportState.PENDING if retry_at is not None else ExportState.DEAD
        with self.immediate() as tx:
            self._transition_export(tx, export_id, to)
            tx.execute("UPDATE exports SET state = ?, last_error = ?, not_before = ? WHERE id = ?",
                       (to.value, error, retry_at if retry_at is not None else 0, export_id))
        return to

    def requeue_export(self, export_id: int, now: float) -> None:
        with self.immediate() as tx:
            self._transition_export(tx, export_id, ExportState.PENDING)
            tx.execute("UPDATE exports SET state = ?, attempts = 0, not_before = ? WHERE id = ?",
                       (ExportState.PENDING.value, now, export_id))

    def release_sending_exports(self, now: float) -> list[int]:
        """SENDING -> PENDING at start-up: the node died before their response came (or before their turn in
        the association). Not a failed attempt: the attempt is given back."""
        with self.immediate() as tx:
            ids = [r["id"] for r in tx.execute("SELECT id FROM exports WHERE state = ?",
                                               (ExportState.SENDING.value,)).fetchall()]
            for i in ids:
                tx.execute("UPDATE exports SET state = ?, not_before = ?, attempts = MAX(attempts - 1, 0)"
                           " WHERE id = ?", (ExportState.PENDING.value, now, i))
        return ids

    def list_exports(self, state: ExportState | None = None, limit: int = 1000) -> list[ExportRow]:
        if state is None:
            rows = self._all("SELECT * FROM exports ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._all("SELECT * FROM exports WHERE state = ? ORDER BY id DESC LIMIT ?", (state.value, limit))
        return [_export(r) for r in rows]

    def count_exports(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._all("SELECT state, COUNT(*) AS n FROM exports GROUP BY state")}

    # -- audit ------------------------------------------------------------------------------------------------
    def audit(self, event: str, *, actor: str = "", series_uid: str = "", detail: dict[str, Any] | None = None,
              now: float | None = None) -> None:
        with self.immediate() as tx:
            tx.execute("INSERT INTO audit(at, event, actor, series_uid, detail) VALUES (?,?,?,?,?)",
                       (time.time() if now is None else now, event, actor, series_uid,
                        json.dumps(detail or {}, sort_keys=True)))

    def list_audit(self, since: float = 0.0, limit: int = 10000) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM audit WHERE at >= ? ORDER BY id LIMIT ?", (since, limit))
        return [dict(r) | {"detail": json.loads(r["detail"])} for r in rows]

    # -- senders, metrics -------------------------------------------------------------------------------------
    def series_senders(self, series_uid: str) -> list[dict[str, Any]]:
        """Who sent a series: calling AE title, address, instances and bytes per sender (for the audit trail)."""
        rows = self._all("SELECT calling_ae, peer_host, COUNT(*) AS instances, SUM(size_bytes) AS bytes"
                         " FROM instances WHERE series_uid = ? GROUP BY calling_ae, peer_host ORDER BY calling_ae",
                         (series_uid,))
        return [{"calling_ae": r["calling_ae"], "peer_host": r["peer_host"], "instances": int(r["instances"]),
                 "bytes": int(r["bytes"] or 0)} for r in rows]

    def count_series(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._all("SELECT state, COUNT(*) AS n FROM series GROUP BY state")}

    def job_duration_histogram(self, bounds_s: Sequence[float]) -> dict[str, tuple[list[int], float, int]]:
        """Finished (done) jobs per label (profile or settings name): cumulative counts at each upper bound
        (seconds), sum, count."""
        cases = ", ".join(f"SUM(CASE WHEN seconds <= {float(b)!r} THEN 1 ELSE 0 END)" for b in bounds_s)
        rows = self._all(f"SELECT label, {cases + ',' if cases else ''} SUM(seconds) AS total, COUNT(*) AS n"
                         " FROM jobs WHERE state = ? AND seconds IS NOT NULL GROUP BY label",
                         (JobState.DONE.value,))
        return {r["label"]: ([int(r[i + 1] or 0) for i in range(len(bounds_s))], float(r["total"] or 0.0),
                               int(r["n"])) for r in rows}

    def activity_since(self, since: float) -> dict[str, Any]:
        """Counts since ``since`` for ``dicomnode status`` (received instances, bytes, series; jobs; sent results)."""
        r = self._one("SELECT COUNT(*) AS n, COALESCE(SUM(size_bytes), 0) AS b, COUNT(DISTINCT series_uid) AS s"
                      " FROM instances WHERE received_at >= ?", (since,))
        j = self._one("SELECT COUNT(*) AS n, AVG(seconds) AS mean, MAX(seconds) AS max FROM jobs"
                      " WHERE state = 'done' AND finished_at >= ?", (since,))
        f = self._one("SELECT COUNT(*) AS n FROM jobs WHERE state = 'failed' AND finished_at >= ?", (since,))
        e = self._one("SELECT COUNT(*) AS n FROM exports WHERE state = 'sent' AND sent_at >= ?", (since,))
        return {"instances": int(r["n"]), "bytes": int(r["b"]), "series": int(r["s"]), "jobs_done": int(j["n"]),
                "job_seconds_mean": None if j["mean"] is None else round(float(j["mean"]), 3),
                "job_seconds_max": None if j["max"] is None else round(float(j["max"]), 3),
                "jobs_failed": int(f["n"]), "results_sent": int(e["n"])}

    # -- retention --------------------------------------------------------------------------------------------
    _RETAINABLE = (
        "s.state != 'open' AND s.completed_at IS NOT NULL AND s.completed_at <= :before"
        " AND s.last_received_at <= :before"
        " AND EXISTS (SELECT 1 FROM instances i WHERE i.series_uid = s.series_uid)"
        " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.series_uid = s.series_uid"
        "   AND (j.state IN ('pending', 'running') OR COALESCE(j.finished_at, j.created_at) > :before))"
        " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.depends_on = s.series_uid"  # e.g. radiomics on its images
        "   AND (j.state IN ('pending', 'running') OR COALESCE(j.finished_at, j.created_at) > :before))"
        " AND NOT EXISTS (SELECT 1 FROM exports e WHERE e.series_uid = s.series_uid"
        "   AND (e.state IN ('pending', 'sending') OR COALESCE(e.sent_at, e.created_at) > :before))"
        " AND (:keep_failed = 0 OR ("
        "   NOT EXISTS (SELECT 1 FROM exports e WHERE e.series_uid = s.series_uid AND e.state = 'dead')"
        "   AND COALESCE((SELECT j.state FROM jobs j WHERE j.series_uid = s.series_uid ORDER BY j.id DESC LIMIT 1),"
        "                '') != 'failed'))"
    )

    def retention_candidates(self, before: float, *, keep_failed: bool, limit: int = 1000) -> list[str]:
        """Series whose received instances may be deleted: handled, and last touched before ``before``.

        Handled means: not open; no job pending or running; no result waiting to be sent; with ``keep_failed``,
        the latest job did not fail and no result was dead-lettered. "Last touched" covers the last instance,
        completion, job end and result sending. See :meth:`purging` for the deletion itself.
        """
        rows = self._all(f"SELECT s.series_uid FROM series s WHERE {self._RETAINABLE}"
                         " ORDER BY s.completed_at LIMIT :limit",
                         {"before": before, "keep_failed": int(keep_failed), "limit": limit})
        return [r["series_uid"] for r in rows]

    @contextmanager
    def purging(self, series_uid: str, before: float, *, keep_failed: bool,
                note: str = "") -> Iterator["PurgePlan | None"]:
        """Delete a series' instance rows, in one transaction with the caller's file removal.

        Yields ``None`` when the series is no longer retainable (an instance arrived, a job was queued...);
        otherwise a :class:`PurgePlan` naming the instance files and the result folders whose results were all
        sent. The caller removes those files inside the ``with`` block; on a normal exit the instance rows are
        deleted and the series row is kept (instance count 0, ``note``), so a late instance re-opens it and its
        next job gets a new generation. On an exception nothing changes in the index (files already removed are
        tolerated by the next pass). The series and job rows, exports and audit stay as history.
        """
        with self.immediate() as tx:
            ok = tx.execute(f"SELECT 1 FROM series s WHERE s.series_uid = :uid AND {self._RETAINABLE}",
                            {"uid": series_uid, "before": before, "keep_failed": int(keep_failed)}).fetchone()
            if ok is None:
                yield None
                return
            inst = tx.execute("SELECT path, size_bytes FROM instances WHERE series_uid = ?", (series_uid,)).fetchall()
            dirs = [r["result_dir"] for r in tx.execute(
                "SELECT j.result_dir FROM jobs j WHERE j.series_uid = ? AND j.state = 'done' AND j.result_dir IS NOT"
                " NULL AND EXISTS (SELECT 1 FROM exports e WHERE e.job_id = j.id)"
                " AND NOT EXISTS (SELECT 1 FROM exports e WHERE e.job_id = j.id AND e.state != 'sent')",
                (series_uid,)).fetchall()]
            yield PurgePlan(series_uid, tuple(r["path"] for r in inst), sum(int(r["size_bytes"]) for r in inst),
                            tuple(dirs))
            tx.execute("DELETE FROM instances WHERE series_uid = ?", (series_uid,))
            tx.execute("UPDATE series SET instance_count = 0, note = ? WHERE series_uid = ?", (note, series_uid))


@dataclass(frozen=True, slots=True)
class PurgePlan:
    """What retention removes for one series (see :meth:`Database.purging`)."""

    series_uid: str
    instance_paths: tuple[str, ...]
    bytes: int
    result_dirs: tuple[str, ...]

