"""``dicomnode evaluate``: run a case file's series as the node would and score the results against their truth.

::

    dicomnode evaluate CASES.toml --out DIR [--data-root FOLDER] [--config dicomnode.toml] [--case ID ...]
                       [--leave-one-patient-out] [-q]

Writes ``DIR/evaluation.json`` (per case and a summary with 95 % Wilson intervals and a reliability table),
``DIR/evaluation.csv`` (one row per case), ``DIR/evaluation.md`` (the table, also printed), ``DIR/png/<id>.png``
(key slices: truth in green, findings in red) and each case's chain output under ``DIR/cases/<id>/``.

Case paths are relative to the data root: ``--data-root``, else ``$DICOMNODE_EVAL_DATA``, else the case file's
``data_root`` key (relative to the file), else the case file's folder. The profile of each series is the one the
node's rules (``--config``, default: the embedded defaults) choose, unless the case names one.

``--leave-one-patient-out``: every fitted model a profile uses (the shipped scene model) is fitted again for each
patient on the case file's truths of the *other* patients, and that patient's cases run with it
(:mod:`dicomnode.evaluation.loo`); models that cannot be refitted are named in the notes and the summary.

Exit codes: 0 every case was run and scored (a series the node refuses is a result, scored as such); 1 a case hit
an internal error; 2 a bad case file or configuration (the message names the file, the key and the fix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="score the analysis against truth on a set of cases",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("cases", help="the TOML case file (see docs/evaluation.md)")
    p.add_argument("--out", required=True, help="output folder for evaluation.json, .csv, .md and png/")
    p.add_argument("--data-root", help="folder the case paths are relative to (default: the case file's data_root)")
    p.add_argument("--config", help="node configuration whose rules and profiles are used (default: built-in)")
    p.add_argument("--case", action="append", default=[], metavar="ID", help="only this case (repeatable)")
    p.add_argument("--leave-one-patient-out", action="store_true",
                   help="refit every fitted model without each case's patient and score the case with it")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-case progress lines")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    import logging
    import warnings

    from dicomnode.config import load_config
    from dicomnode.errors import ConfigError
    from dicomnode.evaluation.cases import CaseFileError, load_cases
    from dicomnode.evaluation.report import markdown
    from dicomnode.evaluation.run import evaluate

    try:
        case_file = load_cases(a.cases, data_root=a.data_root)
    except CaseFileError as e:
        print(f"dicomnode evaluate: invalid case file\n{e}", file=sys.stderr)
        return 2
    unknown = sorted(set(a.case) - {c.id for c in case_file.cases})
    if unknown:
        print(f"dicomnode evaluate: --case {', '.join(unknown)}: no such case in {a.cases}; use one of "
              f"{', '.join(c.id for c in case_file.cases)}", file=sys.stderr)
        return 2
    try:
        config = load_config(a.config)
    except ConfigError as e:
        print(f"dicomnode evaluate: invalid configuration\n{e}", file=sys.stderr)
        return 2
    # Library warnings can quote header values (highdicom on person names): not on this console.
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("dicomnode").setLevel(logging.ERROR)

    def progress(r) -> None:  # noqa: ANN001 - CaseResult
        if not a.quiet:
            extra = f" ({r.message})" if r.message else ""
            print(f"{r.id}: {r.status}, {r.seconds:.1f} s{extra}", file=sys.stderr)

    def say(line: str) -> None:
        if not a.quiet:
            print(line, file=sys.stderr)

    doc = evaluate(case_file, config, a.out, only=a.case, progress=progress,
                   leave_one_patient_out=a.leave_one_patient_out, print_fn=say)
    table = markdown(doc)
    (Path(a.out) / "evaluation.md").write_text(table)
    print(table)
    return 1 if doc["summary"]["status"]["error"] else 0
