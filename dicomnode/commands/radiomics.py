"""``dicomnode radiomics``: IBSI-1 features of a region (RTSTRUCT ROI or SEG segment) of an image series.

Single case::

    dicomnode radiomics IMAGE_DIR --roi RS.dcm [--roi-name GTV] [--settings ibsi-config-C] --out features.csv
        [--sr radiomics_sr.dcm]

Batch (one table for all, cases in parallel processes, a progress bar on stderr)::

    dicomnode radiomics --batch cases.csv --out features.csv [--workers 4] [--settings ...]

The batch CSV has a header with the columns ``image_dir``, ``roi_file`` and optionally ``roi_name`` and ``case``
(a file without a header: those three columns in that order); relative paths are relative to the CSV's folder.

Output: one row per value with exactly the columns ``family``, ``feature``, ``aggregation``, ``value`` (named as in
the IBSI reference table) and ``unit``; batch output adds the leading columns ``case``, ``image_dir``, ``roi_file``,
``roi_name``. ``.csv`` (values with full precision, ``nan`` for undefined ones) or ``.json`` (a list of objects,
``null`` for undefined values) by the extension of ``--out``. This output and the shipped settings are a contract.

``unit`` is the value's unit in UCUM, the same string the radiomics SR codes
(:func:`dicomnode.analysis.radiomics.feature_unit`): ``mm3``, ``mm2``, ``mm``, ``/mm`` for morphology, the image's
unit for intensities (``[hnsf'U]`` = HU for CT, ``{SUVbw}g/ml`` for PET in SUV, ``Bq/ml``; ``1`` when the series has
no unit, e.g. MR), its square for variance and energy, ``[hnsf'U].mm3`` for integrated intensity, and ``1`` for
dimensionless values (ratios, intensity-histogram and texture features, which are computed on grey levels).

Exit codes: 0 success; 1 a case failed (in batch mode the others are still written; each failure is reported on
stderr); 2 bad usage or invalid settings.

``dicomnode.cli.build_parser`` finds it like every module of ``dicomnode.commands``; the parser's
``func`` is :func:`main`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from dicomnode.errors import ConfigError, DicomnodeError

__all__ = ["BATCH_COLUMNS", "COLUMNS", "add_parser", "main", "run", "run_case", "write_table"]

COLUMNS = ("family", "feature", "aggregation", "value", "unit")
BATCH_COLUMNS = ("case", "image_dir", "roi_file", "roi_name", *COLUMNS)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``radiomics`` command to the ``dicomnode`` sub-parsers; returns it (``func`` = :func:`main`)."""
    p = subparsers.add_parser(
        "radiomics", help="IBSI-1 radiomics features of an RTSTRUCT/SEG region of an image series",
        description="IBSI-1 features (all families) of a region of an image series, as CSV or JSON.")
    p.add_argument("image_dir", nargs="?", metavar="IMAGE_DIR", help="folder with the image series' files")
    p.add_argument("--roi", metavar="FILE", help="RTSTRUCT or SEG file holding the region")
    p.add_argument("--roi-name", metavar="NAME",
                   help="ROI name / segment label (exact, case-insensitive or a unique prefix); default: the only one")
    p.add_argument("--roi-number", type=int, metavar="N", help="ROI number / segment number instead of the name")
    p.add_argument("--settings", metavar="TOML",
                   help="settings file or shipped name (default, ibsi-config-A ... ibsi-config-E); default: default")
    p.add_argument("--out", required=True, metavar="FILE", help="output table, .csv or .json")
    p.add_argument("--sr", metavar="FILE", help="also write a TID 1500 SR of the features (single case)")
    p.add_argument("--batch", metavar="CSV", help="cases to run: image_dir, roi_file, roi_name per row")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="batch processes (default: CPU count)")
    p.add_argument("--force", action="store_true",
                   help="use the settings even on a modality they are not for (e.g. HU bins on a PET)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    """Run the command; return the exit code."""
    from dicomnode.config.radiomics import resolve_settings

    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".json"):
        return _usage(f"--out {out}: the extension must be .csv or .json")
    try:
        settings = resolve_settings(args.settings)
    except ConfigError as exc:
        print(f"dicomnode radiomics: invalid settings\n{exc}", file=sys.stderr)
        return 2
    from dicomnode.config.radiomics import settings_scope
    scope = settings_scope(args.settings)
    if args.batch:
        if args.image_dir or args.roi or args.sr:
            return _usage("--batch takes its cases from the CSV: give no IMAGE_DIR, --roi or --sr")
        return _batch(args, settings, out, scope)
    if not args.image_dir or not args.roi:
        return _usage("give IMAGE_DIR and --roi FILE (or --batch CSV)")
    why = None if args.force else _scope_mismatch(scope, args.image_dir, args.roi)
    if why:
        return _usage(f"{args.image_dir}: {why}")
    try:
        series, region, values = run_case(args.image_dir, args.roi, args.roi_name, settings, number=args.roi_number)
    except (DicomnodeError, ValueError, OSError) as exc:
        print(f"dicomnode radiomics: {args.image_dir}: {exc}", file=sys.stderr)
        return 1
    write_table(out, _rows(values, series.volume.unit, settings), COLUMNS)
    if args.sr:
        from dicomnode.jobs.radiomics import sr_uids
        from dicomnode.results.radiomics_sr import build_radiomics_sr

        selector = ([args.roi_name] if args.roi_name else []) + ([f"#{args.roi_number}"] if args.roi_number else [])
        uids = sr_uids(None, series, [region.sop_instance_uid], args.settings, settings, selector)
        try:
            sr = build_radiomics_sr(series, [region], [values], uids, settings=settings)
        except DicomnodeError as exc:
            print(f"dicomnode radiomics: --sr: {exc}", file=sys.stderr)
            return 1
        sr.save_as(args.sr, enforce_file_format=True)
    print(f"{len(values)} values of {region.kind} {region.label!r} ({int(region.mask.sum())} voxels) with settings "
          f"{settings.name!r} -> {out}", file=sys.stderr)
    return 0


def _usage(message: str) -> int:
    print(f"dicomnode radiomics: {message}", file=sys.stderr)
    return 2


def run_case(image_dir: str | Path, roi_file: str | Path, roi_name: str | None, settings, *,
             number: int | None = None):
    """Load a series folder and a region, extract the features. Returns (series, region, feature values).

    A folder holding several series (e.g. images and their RTSTRUCT) is narrowed to the image series the region
    references (else: the only image series)."""
    from dicomnode.io.load import load_series
    from dicomnode.io.roi import read_region
    from dicomnode.jobs.radiomics import image_series_files, measure

    series = load_series(image_series_files(Path(image_dir), Path(roi_file)))
    [(region, values)] = measure(series, [read_region(roi_file, series, name=roi_name, number=number)], settings)
    return series, region, values


def _rows(values, volume_unit: str, settings) -> list[dict]:
    """The table rows of a case's feature values; ``volume_unit`` is the series' (``Volume.unit``: "HU", "SUV" ...)."""
    from dicomnode.analysis.radiomics import feature_unit, image_unit_ucum

    image_unit = image_unit_ucum(volume_unit)
    return [{"family": v.family, "feature": v.feature, "aggregation": v.aggregation, "value": float(v.value),
             "unit": feature_unit(v, image_unit, settings)} for v in values]


def write_table(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Write rows as CSV (``repr`` precision, ``nan``) or JSON (a list of objects, NaN as null) by the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        data = [{c: (None if isinstance(r[c], float) and not math.isfinite(r[c]) else r[c]) for c in columns}
                for r in rows]
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in columns])


# ------------------------------------------------------------------------------------------------------ batch
def _read_cases(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r) and not r[0].startswith("#")]
    if not rows:
        raise ConfigError("--batch", str(path), "the CSV has no rows; write image_dir,roi_file,roi_name per case")
    header = [c.strip().lower() for c in rows[0]]
    if "image_dir" in header and "roi_file" in header:
        body = [dict(zip(header, (c.strip() for c in r))) for r in rows[1:]]
    else:
        body = [dict(zip(("image_dir", "roi_file", "roi_name"), (c.strip() for c in r))) for r in rows]
    cases = []
    for i, r in enumerate(body, start=1):
        image_dir, roi_file = r.get("image_dir", ""), r.get("roi_file", "")
        base = path.parent
        cases.append({
            "case": r.get("case") or str(i),
            "image_dir": image_dir,
            "roi_file": roi_file,
            "roi_name": r.get("roi_name", "") or "",
            "_image": str(base / image_dir) if image_dir else "",
            "_roi": str(base / roi_file) if roi_file else "",
        })
    return cases


def _batch_worker(image_dir: str, roi_file: str, roi_name: str, settings) -> list[dict]:
    if not image_dir or not roi_file:
        raise ValueError("the row needs image_dir and roi_file")
    series, _, values = run_case(image_dir, roi_file, roi_name or None, settings)
    return _rows(values, series.volume.unit, settings)


def _scope_mismatch(scope, image_dir: str | Path, roi_file: str | Path) -> str | None:
    """Why the settings do not suit the image series of ``image_dir`` (its Modality), or None."""
    if not scope.modalities:
        return None
    from dicomnode.errors import SeriesLoadError
    from dicomnode.io.load import read_header
    from dicomnode.jobs.radiomics import image_series_files
    try:
        files = image_series_files(Path(image_dir), Path(roi_file))
        modality = str(read_header(files[0]).get("Modality", "") or "")
    except (SeriesLoadError, OSError):
        return None  # the case itself reports what is wrong with its files
    return scope.mismatch(modality)


def _batch(args: argparse.Namespace, settings, out: Path, scope=None) -> int:
    from tqdm import tqdm

    try:
        cases = _read_cases(Path(args.batch))
    except OSError as exc:
        return _usage(f"--batch {args.batch}: cannot be read ({exc.strerror})")
    except ConfigError as exc:
        return _usage(str(exc))
    if args.workers is not None and args.workers < 1:
        return _usage(f"--workers {args.workers}: use 1 or more")
    if scope is not None and not args.force:
        wrong = [(c, w) for c in cases if (w := _scope_mismatch(scope, c["_image"], c["_roi"]))]
        if wrong:
            return _usage("; ".join(f"case {c.get('case') or c['image_dir']}: {w}" for c, w in wrong[:5])
                          + (f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""))
    results: dict[int, list[dict]] = {}
    failures: list[tuple[dict, str]] = []
    bar = tqdm(total=len(cases), unit="case", desc="radiomics", file=sys.stderr, disable=args.quiet)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(_batch_worker, c["_image"], c["_roi"], c["roi_name"], settings): i
                   for i, c in enumerate(cases)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - a failed case is reported, the others go on
                failures.append((cases[i], f"{type(exc).__name__}: {exc}"))
            bar.update(1)
    bar.close()
    rows = []
    for i in sorted(results):
        ident = {k: cases[i][k] for k in ("case", "image_dir", "roi_file", "roi_name")}
        rows.extend({**ident, **r} for r in results[i])
    write_table(out, rows, BATCH_COLUMNS)
    print(f"{len(results)} of {len(cases)} case(s) done with settings {settings.name!r} -> {out}", file=sys.stderr)
    for case, message in failures:
        print(f"  case {case['case']} ({case['image_dir']}, {case['roi_file']}): {message}", file=sys.stderr)
    return 1 if failures else 0


def run(argv: Sequence[str]) -> int:
    """``dicomnode radiomics ARGV...`` without the main CLI (tests, ``python -m dicomnode.commands.radiomics``)."""
    parser = argparse.ArgumentParser(prog="dicomnode")
    add_parser(parser.add_subparsers(dest="cmd", required=True))
    return main(parser.parse_args(["radiomics", *argv]))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
