-- An index written by dicomnode's schema 2 (store/db.py before series.frame_of_reference_uid), made with that
-- code: the schema 1 dump (index_v1.sql) opened by it, so the same jobs, series and exports.
BEGIN TRANSACTION;
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL DEFAULT '',
    series_uid TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
INSERT INTO "audit" VALUES(1,170.0,'job done','','1.2.3','{"job_id": 1}');
CREATE TABLE exports (
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
INSERT INTO "exports" VALUES(1,1,'1.2.3','PACS','/data/results/1.2.3/1/seg.dcm','2.25.1','pending',0,0.0,NULL,170.0,NULL);
CREATE TABLE instances (
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
INSERT INTO "instances" VALUES('1.2.3.1','1.2.3','1.2','1.2.840.10008.5.1.4.1.1.2','CT','1.2.840.10008.1.2.1','/data/spool/1.2.3/1.2.3.1.dcm',1000,'PACS','10.0.0.1',101.0);
INSERT INTO "instances" VALUES('1.2.3.2','1.2.3','1.2','1.2.840.10008.5.1.4.1.1.2','CT','1.2.840.10008.1.2.1','/data/spool/1.2.3/1.2.3.2.dcm',1000,'PACS','10.0.0.1',102.0);
INSERT INTO "instances" VALUES('1.2.4.1','1.2.4','1.2','1.2.840.10008.5.1.4.1.1.481.3','RTSTRUCT','1.2.840.10008.1.2.1','/data/spool/1.2.4/1.2.4.1.dcm',500,'TPS','10.0.0.2',105.0);
INSERT INTO "instances" VALUES('1.2.5.1','1.2.5','1.2','1.2.840.10008.5.1.4.1.1.2','CT','1.2.840.10008.1.2.1','/data/spool/1.2.5/1.2.5.1.dcm',1000,'PACS','10.0.0.1',106.0);
CREATE TABLE "jobs" (
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
INSERT INTO "jobs" VALUES(1,'1.2.3',1,'ct','chain','{"profile":"ct"}','ct','["PACS"]','done',1,0.0,'host:1',NULL,140.0,160.0,170.0,10.0,NULL,NULL,'/data/results/1.2.3/1','["/data/results/1.2.3/1/seg.dcm"]',NULL);
INSERT INTO "jobs" VALUES(2,'1.2.4',1,'contours','radiomics','{"settings":"ibsi-config-C"}','ibsi-config-C','["PACS"]','pending',0,0.0,NULL,NULL,150.0,NULL,NULL,NULL,NULL,NULL,NULL,'[]','1.2.3');
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema_version','2');
CREATE TABLE series (
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
    note TEXT NOT NULL DEFAULT ''
, route TEXT);
INSERT INTO "series" VALUES('1.2.3','1.2','CT','1.2.840.10008.5.1.4.1.1.2','complete',1,2,101.0,102.0,140.0,'ct',NULL,'PACS','',NULL);
INSERT INTO "series" VALUES('1.2.4','1.2','RTSTRUCT','1.2.840.10008.5.1.4.1.1.481.3','complete',1,1,105.0,105.0,150.0,'contours',NULL,'TPS','',NULL);
INSERT INTO "series" VALUES('1.2.5','1.2','CT','1.2.840.10008.5.1.4.1.1.2','open',0,1,106.0,106.0,NULL,'ct',30.0,'PACS','',NULL);
CREATE INDEX instances_series ON instances(series_uid);
CREATE INDEX instances_received ON instances(received_at);
CREATE INDEX series_state ON series(state);
CREATE INDEX series_last ON series(last_received_at);
CREATE INDEX exports_state ON exports(state, not_before);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX jobs_state ON jobs(state, not_before);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('exports',1);
INSERT INTO "sqlite_sequence" VALUES('audit',1);
INSERT INTO "sqlite_sequence" VALUES('jobs',2);
COMMIT;
