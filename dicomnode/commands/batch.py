"""``dicomnode batch ROOT --out OUT``: every series under ROOT through the chain, one table of all results.

See :mod:`dicomnode.jobs.batch`. Exit code 0 when every series gave results (or had them already), 1 when some failed
(listed on stderr and in ``OUT/failures.csv``), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser(
        "batch", help="run the chain on every series under a folder; one table of all results",
        description="Find every series under ROOT (by Series Instance UID), run the analysis chain on each into "
                    "OUT/<series UID>/, skip series done before, list bad series in OUT/failures.csv, and write "
                    "OUT/results.parquet and OUT/results.csv (one row per series x segment).")
    s.add_argument("root", metavar="ROOT", help="folder with DICOM files of any number of series")
    s.add_argument("--out", required=True, metavar="OUT", help="output folder")
    s.add_argument("--profile", help="profile for every series; default: the one for each series' modality")
    s.add_argument("--executor", choices=["local", "dask"],
                   help="where the chain runs; default: dask with --scheduler, else workers.backend of the config")
    s.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="a running Dask scheduler (implies dask)")
    s.add_argument("--workers", type=int, metavar="N",
                   help="local processes, or LocalCluster workers with dask and no --scheduler; "
                        "default: workers.count of the config")
    s.add_argument("--transfer", choices=["shared", "bytes"],
                   help="dask: workers read the files (shared folder) or get them as bytes; default: the config's")
    s.add_argument("--config", "-c", metavar="FILE",
                   help="node configuration (profiles, uid_root, [workers]); default: $DICOMNODE_CONFIG or defaults")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_batch)


def cmd_batch(a: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dicomnode.jobs.batch import run_batch
    from dicomnode.config import load_config
    from dicomnode.errors import ConfigError
    from dicomnode.jobs.executors import DaskExecutor, LocalExecutor

    try:
        cfg = load_config(a.config or os.environ.get("DICOMNODE_CONFIG") or None)
    except ConfigError as e:
        print(f"dicomnode: invalid configuration\n{e}", file=sys.stderr)
        return 2
    root = Path(a.root)
    if not root.is_dir():
        print(f"dicomnode batch: {root} is not a folder", file=sys.stderr)
        return 2
    if a.workers is not None and a.workers < 1:
        print("dicomnode batch: --workers must be >= 1", file=sys.stderr)
        return 2
    if a.scheduler and not a.scheduler.startswith(("tcp://", "tls://", "ucx://", "ws://", "wss://")):
        print(f"dicomnode batch: --scheduler {a.scheduler!r}: give a Dask scheduler address such as "
              "tcp://10.0.0.5:8786", file=sys.stderr)
        return 2
    if a.scheduler and a.executor == "local":
        print("dicomnode batch: --scheduler needs --executor dask (or no --executor)", file=sys.stderr)
        return 2
    if a.profile is not None:
        if a.profile not in cfg.profiles:
            print(f"dicomnode batch: --profile {a.profile!r}: no such profile; use one of "
                  f"{', '.join(sorted(cfg.profiles))}", file=sys.stderr)
            return 2
        profile = cfg.profiles[a.profile]
    else:
        def profile(modality: str):
            return cfg.profile_for(None, modality)

    backend = a.executor or ("dask" if a.scheduler else cfg.workers.backend)
    count = a.workers or cfg.workers.count
    w = cfg.workers
    if backend == "dask":
        executor = DaskExecutor(count, a.scheduler or w.scheduler, transfer=a.transfer or w.transfer,
                                memory_limit_mb=w.memory_limit_mb, resources=w.resources,
                                dashboard_address=w.dashboard_address,
                                connect_timeout_seconds=w.connect_timeout_seconds)
        print(f"dask: scheduler {executor.scheduler_address}, dashboard {executor.dashboard_link or '-'}",
              file=sys.stderr)
    else:
        executor = LocalExecutor(count)

    bar = None

    def on_start(n: int) -> None:
        nonlocal bar
        bar = tqdm(total=n, unit="series", desc="batch", file=sys.stderr, disable=a.quiet)

    def on_progress(uid: str, status: str) -> None:
        if bar is not None:
            bar.set_postfix_str(status)
            bar.update(1)

    try:
        report = run_batch(root, a.out, profile, executor, uid_root=cfg.node.uid_root, on_start=on_start,
                           on_progress=on_progress)
    finally:
        if bar is not None:
            bar.close()
        executor.shutdown(wait=True)
    print(f"{report.found} series under {root}: {len(report.done)} done, {len(report.skipped)} done before, "
          f"{len(report.failed)} failed; {report.rows} row(s) in {report.table_parquet} and {report.table_csv} "
          f"({report.seconds:.1f} s)")
    if report.not_dicom or report.not_images:
        print(f"skipped {report.not_dicom} file(s) that are not DICOM and {report.not_images} DICOM object(s) that "
              "are not images", file=sys.stderr)
    if report.failed:
        print(f"{len(report.failed)} failure(s), listed in {report.failures_csv}:", file=sys.stderr)
        for f in report.failed:
            print(f"  {f.series_uid or '(no series UID)'} ({f.files} file(s), e.g. {f.first_file}): {f.reason}",
                  file=sys.stderr)
        return 1
    return 0
