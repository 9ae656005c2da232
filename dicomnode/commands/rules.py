"""``dicomnode rules test FILE... [--config F]``: which rule fires for each file, and why the earlier ones did not.

The decision is the node's own (:func:`dicomnode.routing.route`, through :func:`dicomnode.admin.explain_route`).
Exit codes: 0 every file was explained; 1 a file could not be read; 2 bad usage or an invalid configuration.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser("rules", help="test the routing rules against files",
                              description="The [[rules]] of the configuration: tried in order, the first match "
                                          "applies.")
    rs = s.add_subparsers(dest="rules_cmd", required=True, metavar="ACTION")
    t = rs.add_parser("test", help="which rule fires for each file, and why the earlier rules did not",
                      description="For each DICOM file (for a folder: one file of each series in it), show the rule "
                                  "that fires (profile or radiomics settings, destinations) and, for each rule "
                                  "before it, the keyword that did not match and the value the file has.")
    t.add_argument("files", nargs="+", metavar="FILE", help="DICOM files or folders")
    t.add_argument("--config", "-c", metavar="FILE",
                   help="node configuration (TOML); default: $DICOMNODE_CONFIG or the embedded defaults")
    t.set_defaults(func=cmd_test)


def cmd_test(a: argparse.Namespace) -> int:
    from pathlib import Path

    from dicomnode.admin import explain_route
    from dicomnode.commands._common import config_or_exit as _config_or_exit
    from dicomnode.net.scu import iter_dicom_files

    cfg = _config_or_exit(a.config)
    missing = [f for f in a.files if not Path(f).exists()]
    if missing:
        print(f"dicomnode rules test: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    files = []
    for f in a.files:
        if Path(f).is_dir():
            from dicomnode.jobs.batch import find_series
            found = find_series(f)
            files += [fs[0] for _, fs in sorted(found.series.items())]
        else:
            files.append(Path(f))
    rc = 0
    for f in files:
        try:
            decision, checks = explain_route(cfg, str(f))
        except Exception as e:  # noqa: BLE001 - named per file
            print(f"{f}: cannot read it as DICOM ({e})", file=sys.stderr)
            rc = 1
            continue
        print(f"{f}:")
        for c in checks:
            print(f"  rules[{c.index}] {c.name}: " + ("FIRES" if c.fires else f"no: {c.why}"))
        if decision.runs_job:
            runs = (f"radiomics {decision.radiomics}" if decision.radiomics
                    else f"profile {decision.profile.name}")
            print(f"  -> {decision.reason}: {runs}; results to "
                  f"{', '.join(decision.destinations) or 'no destination (kept in the data folder)'}")
        else:
            print(f"  -> no job: {decision.reason}")
    return rc
