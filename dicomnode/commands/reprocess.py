"""``dicomnode reprocess SERIES_UID [--profile P]``: queue a stored series for analysis again.

The logic is :func:`dicomnode.admin.reprocess`. Exit codes: 0 queued; 1 it cannot be (unknown or open series,
deleted instances, a job already pending); 2 bad usage (unknown profile, invalid config).
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser(
        "reprocess", help="queue a stored series for analysis again (e.g. with another profile)",
        description="Queue a series the node has stored for analysis again: with the profile of its last job, or "
                    "--profile. Results go to the destinations of its last job (or its rule); result UIDs are "
                    "deterministic, so a destination never gets the same result twice. A running node picks the "
                    "job up within a second.")
    s.add_argument("series_uid", metavar="SERIES_UID", help="the Series Instance UID (`dicomnode status` lists them)")
    s.add_argument("--profile", metavar="P", help="analysis profile; default: the one of the series' last job")
    s.add_argument("--config", "-c", metavar="FILE",
                   help="node configuration (TOML); default: $DICOMNODE_CONFIG or the embedded defaults")
    s.set_defaults(func=cmd_reprocess)


def cmd_reprocess(a: argparse.Namespace) -> int:
    from dicomnode.admin import AdminError, cli_actor, reprocess
    from dicomnode.commands._common import node_db as _db

    cfg, db = _db(a)
    if a.profile is not None and a.profile not in cfg.profiles:
        print(f"dicomnode reprocess: --profile {a.profile}: no such profile; use one of "
              f"{', '.join(sorted(cfg.profiles))}", file=sys.stderr)
        return 2
    try:
        r = reprocess(db, cfg, a.series_uid, profile=a.profile, actor=cli_actor())
    except AdminError as e:
        print(f"dicomnode reprocess: {e}", file=sys.stderr)
        return 1
    print(f"series {a.series_uid}: job {r.job_id} {'queued again' if r.requeued else 'queued'} with profile "
          f"{r.profile}; results to {', '.join(r.destinations) or 'no destination (kept in the data folder)'}")
    return 0
