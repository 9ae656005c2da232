"""``dicomnode bench pet_lesions``: PET lesion sensitivity and false findings, measured by lesion insertion into a real
whole-body PET (``dicomnode.evaluation.insertion``).

    dicomnode bench pet_lesions [--series ../shared/data/wholebody-pet-mr/PET] [--rtstruct FILE --roi GTV_Mass]
                                (defaults: the shared whole-body PET beside the clone and its GTV_Mass)
                                [--sizes-ml 1 2 5 10 20] [--contrasts 2 3 4 6] [--per-run 4] [--seed 13]
                                [--profile pet] [--breakdown] [--json OUT]

Each run inserts ``--per-run`` lesions (spheres and ellipsoids, partial-volume blurred to 6.5 mm FWHM, Poisson-like
noise matching the local texture) at positions drawn in anatomical regions, then runs the profile's chain up to
``detect`` exactly as a job does (its own thresholds and limits) and scores the reported findings (probability >= the
profile's threshold): an inserted lesion is found when a reported finding's centroid lies in it; a reported
finding is false when its centroid lies in no inserted lesion and not in the series' own drawn tumour
(``--rtstruct``). Every (region, size, contrast) combination is inserted once per seed, regions mixed across runs.

Regions are placed with the liver as landmark (its dome found by :func:`dicomnode.analysis.detect._liver_mask`),
heights along the body in mm, head up, and per slice the trunk's outline (the body component on the trunk's
centre line, so raised arms are left out):

* ``neck``: 230-280 mm above the dome, 12-40 mm beside the midline (cervical nodes beside the airway and vessels);
* ``axilla``: 150-210 mm above the dome, 55-90 % of the trunk's half-width out;
* ``mediastinum``: 75-150 mm above, within 25 mm of the midline, 25-55 % of the depth from the front;
* ``lung``: 40-180 mm above, cold (SUV smoothed over 4 mm between 0.2 and 0.6), 25 % of the half-width or more off the midline;
* ``liver``: the liver eroded by 15 mm;
* ``abdomen``: 120-230 mm below the dome, trunk eroded by 25 mm, within 60 % of the half-width;
* ``pelvis``: 260-350 mm below, trunk eroded by 25 mm;
* ``bone``: the vertebral column, within 6 mm of the midline and 50-80 mm in front of the back, 150 mm either side
  of the dome.

Everywhere, the whole lesion lies inside the trunk (5 mm inside its outline), positions keep 25 mm from physiological hot uptake (smoothed SUV > 2.8: brain, heart, kidneys, bladder,
glands), from the drawn tumour and from each other (40 mm). Figures: sensitivity per region, size and contrast with
Wilson intervals, false findings per run, and the series without insertion. ``--breakdown`` keeps every scored
candidate and says which stage lost each missed lesion (below the threshold, merged, never a candidate), with the
runs scored at lower thresholds too (``threshold_sweep``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REGIONS = ("neck", "axilla", "mediastinum", "lung", "liver", "abdomen", "pelvis", "bone")
_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wholebody-pet-mr"  # beside the clone
_DEFAULT_SERIES = _SHARED / "PET"
_DEFAULT_RTSTRUCT = _SHARED / "PET_rtstruct" / "1-1.dcm"


def _wilson(k: int, n: int, z: float = 1.96) -> list[float] | None:
    if n == 0:
        return None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, c - h), 3), round(min(1.0, c + h), 3)]


def region_masks(suv: np.ndarray, spacing_mm, cranial: int,
                 avoid: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Where lesions of each region may go (module docstring), on the grid of ``suv``; and the depth of each voxel
    inside the trunk (in-plane distance from its outline, mm: a lesion goes where it is deeper than its radius plus
    5 mm)."""
    from dicomnode.analysis.detect import _liver_mask

    sp = np.asarray(spacing_mm, dtype=float)
    sm = ndi.gaussian_filter(suv.astype(np.float32), 1.0)
    body = sm > 0.1
    liver = _liver_mask(suv, body, tuple(sp))
    if liver is None:
        raise SystemExit("bench pet_lesions: no liver found in the series (the regions are placed from it)")
    zs = np.flatnonzero(liver.any(axis=(1, 2)))
    dome = zs[-1] if cranial > 0 else zs[0]
    height = cranial * (np.arange(suv.shape[0]) - dome) * sp[0]  # mm above the liver's dome
    # the trunk's centre line: the body's centre over the liver's slices
    xc0 = float(np.mean([np.flatnonzero(body[k].any(axis=0)).mean() for k in zs]))
    trunk = np.zeros_like(body)
    for k in range(suv.shape[0]):
        lab, n = ndi.label(body[k])
        if n == 0:
            continue
        col = lab[:, int(round(xc0))]
        ids = np.bincount(col[col > 0])
        if ids.size:
            trunk[k] = ndi.binary_fill_holes(lab == int(np.argmax(ids)))
    hot = sm > 2.8
    if avoid is not None:
        hot |= avoid
    far = ndi.distance_transform_edt(~hot, sampling=sp) >= 25.0

    inside_mm = np.zeros(trunk.shape, dtype=np.float32)
    for k in range(trunk.shape[0]):
        if trunk[k].any():
            inside_mm[k] = ndi.distance_transform_edt(trunk[k], sampling=sp[1:])
    zz, yy, xx = np.indices(suv.shape, sparse=True)
    cols = np.where(trunk.any(axis=1), 1, 0)
    has = cols.any(axis=1)
    lo = np.where(has, np.argmax(cols, axis=1), 0)
    hi = np.where(has, cols.shape[1] - 1 - np.argmax(cols[:, ::-1], axis=1), 0)
    xc, hw = 0.5 * (lo + hi), np.maximum(0.5 * (hi - lo), 1.0)
    rows = trunk.any(axis=2)
    y0 = np.where(has, np.argmax(rows, axis=1), 0)
    y1 = np.where(has, rows.shape[1] - 1 - np.argmax(rows[:, ::-1], axis=1), 0)
    dx_mm = np.abs(xx - xc[:, None, None]) * sp[2]
    side = dx_mm / (hw[:, None, None] * sp[2])
    depth = (yy - y0[:, None, None]) / np.maximum(y1 - y0, 1)[:, None, None]
    back_mm = (y1[:, None, None] - yy) * sp[1]
    h = height[:, None, None]
    e8, e10, e25 = inside_mm >= 8.0, inside_mm >= 10.0, inside_mm >= 25.0
    lung_sm = ndi.gaussian_filter(suv.astype(np.float32), [4.0 / s for s in sp])
    lung_like = (lung_sm > 0.2) & (lung_sm < 0.6)
    liver_in = ndi.distance_transform_edt(liver, sampling=sp) >= 15.0
    out = {
        "neck": e8 & (h >= 230) & (h <= 280) & (dx_mm >= 12) & (dx_mm <= 40) & (depth >= 0.25) & (depth <= 0.75),
        "axilla": e10 & (h >= 150) & (h <= 210) & (side >= 0.55) & (side <= 0.9),
        "mediastinum": e10 & (h >= 75) & (h <= 150) & (dx_mm <= 25) & (depth >= 0.25) & (depth <= 0.55),
        "lung": e10 & lung_like & (h >= 40) & (h <= 180) & (side >= 0.25),
        "liver": liver_in,
        "abdomen": e25 & (h <= -120) & (h >= -230) & (side <= 0.6),
        "pelvis": e25 & (h <= -260) & (h >= -350),
        "bone": trunk & (dx_mm <= 6) & (back_mm >= 50) & (back_mm <= 80) & (np.abs(h) <= 150),
    }
    return {k: v & far & trunk for k, v in out.items()}, inside_mm


#: ``--breakdown``: every candidate the detect step scores down to this probability is kept (at most
#: BREAKDOWN_MAX of them, most probable first), so that a miss can be told apart: below the reporting threshold,
#: merged into a larger region, or never a candidate
BREAKDOWN_MIN_PROBABILITY = 0.001
BREAKDOWN_MAX = 60
#: ``--breakdown`` also scores the runs at these reporting thresholds (lesions found, false findings per series): what
#: a lower ``detect.probability_threshold`` would buy and cost on the same candidates
SWEEP_THRESHOLDS = (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1)


def _run_chain(volume, profile, steps, breakdown: bool = False):
    from dicomnode.analysis.pipeline import Context, run_steps

    ctx = Context(volume=volume, original=volume, header={})
    params = {k: dict(v) for k, v in profile.params.items()}
    det = params.get("detect", {})
    thr = float(det.get("probability_threshold", 0.5))
    limit = int(det.get("max_findings", 10))
    if breakdown:  # the limits change only which candidates become findings (detect._split), not their scores
        params["detect"] = {**det, "probability_threshold": BREAKDOWN_MIN_PROBABILITY, "max_findings": BREAKDOWN_MAX}
    run_steps(ctx, steps, params)
    return ctx, thr, limit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dicomnode bench pet_lesions", description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=Path, default=_DEFAULT_SERIES, help="a whole-body PET series folder")
    ap.add_argument("--rtstruct", type=Path, default=_DEFAULT_RTSTRUCT, help="its drawn tumours (not false findings)")
    ap.add_argument("--roi", default="GTV_Mass")
    ap.add_argument("--sizes-ml", type=float, nargs="+", default=[1.0, 2.0, 5.0, 10.0, 20.0])
    ap.add_argument("--contrasts", type=float, nargs="+", default=[2.0, 3.0, 4.0, 6.0])
    ap.add_argument("--regions", nargs="+", default=list(REGIONS), choices=REGIONS)
    ap.add_argument("--per-run", type=int, default=4, help="lesions inserted per run (distinct regions)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13])
    ap.add_argument("--fwhm-mm", type=float, default=6.5)
    ap.add_argument("--profile", default="pet")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--breakdown", action="store_true",
                    help="say for each lesion which stage lost it: 'below_threshold' (a candidate centred in it, "
                         "scored below the reporting threshold), 'merged' (inside a candidate centred elsewhere) or "
                         "'no_candidate'; and its depth in the trunk and distance from hot physiological uptake")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)

    from dicomnode.config import load_default_profiles
    from dicomnode.evaluation.insertion import insert_lesion, sample_positions, semi_axes_mm
    from dicomnode.io.load import load_series
    from dicomnode.io.roi import read_region
    from dicomnode.steps import registry

    registry()
    profile = load_default_profiles()[a.profile]
    steps = list(profile.steps[:profile.steps.index("detect") + 1])
    paths = sorted(p for p in a.series.iterdir() if p.is_file())
    series = load_series([p for p in paths if p.suffix.lower() == ".dcm"] or paths)
    vol = series.volume
    if vol.unit != "SUV":
        raise SystemExit(f"bench pet_lesions: {a.series} is not a PET in SUV (unit {vol.unit!r})")
    sp = tuple(float(s) for s in vol.spacing_mm)
    gtv = read_region(a.rtstruct, series, name=a.roi).mask if a.rtstruct and a.rtstruct.is_file() else None
    dz = float(np.asarray(vol.direction, dtype=float)[2][2])
    cranial = 1 if dz > 0 else -1
    masks, depth = region_masks(vol.array, sp, cranial, gtv)

    def in_gtv_at(c) -> bool:
        idx = tuple(min(max(int(round(x)), 0), n - 1) for x, n in zip(c, vol.shape))
        return bool(gtv is not None and gtv[idx])

    def in_gtv(f) -> bool:
        if gtv is None:
            return False
        idx = tuple(min(max(int(round(c)), 0), n - 1) for c, n in zip(f.centroid_zyx, gtv.shape))
        return bool(gtv[idx])

    def scored(ctx):
        """Every finding of the chain: (centroid, finding dict, mask), most probable first."""
        out = []
        for f in ctx.findings:
            m = ctx.labels.by_label(f["label"]).mask
            out.append((tuple(np.argwhere(m).mean(axis=0)), f, m))
        return out

    def reported(ctx, thr, limit):
        # the findings a job reports: at or above the threshold, at most max_findings (the chain's own order)
        return [(c, f) for c, f, _ in scored(ctx) if f["probability"] >= thr][:limit]

    if a.breakdown:
        hot_mm = ndi.distance_transform_edt(~(ndi.gaussian_filter(vol.array.astype(np.float32), 1.0) > 2.8),
                                            sampling=sp)

    def stage(les, cands, thr, limit) -> dict:
        """Which stage lost (or found) an inserted lesion, from every scored candidate (``--breakdown``)."""
        ci = tuple(min(max(int(round(x)), 0), n - 1) for x, n in zip(les.center_zyx, vol.shape))
        rank = [i for i, (c, _, _) in enumerate(cands) if les.contains(c)]
        above = [i for i, (_, f, _) in enumerate(cands) if f["probability"] >= thr]
        out = {"depth_mm": round(float(depth[ci]), 1), "hot_uptake_mm": round(float(hot_mm[ci]), 1)}
        if rank:
            f = cands[rank[0]][1]
            keep = ("ranking_score", "log10_peak_cnr", "log2_peak_to_percist", "physiological", "truncation",
                    "blob_snr", "symmetric")
            out.update(best_candidate_probability=f["probability"], best_candidate_volume_ml=f["volume_ml"],
                       best_candidate_features={k: v for k, v in f["detect_features"].items() if k in keep})
            if f["probability"] >= thr:
                out["stage"] = "found" if rank[0] in above[:limit] else "beyond_max_findings"
            else:
                out["stage"] = "below_threshold"
            return out
        merged = [f for _, f, m in cands if m[ci]]
        if merged:
            out.update(stage="merged", into_volume_ml=merged[0]["volume_ml"],
                       into_probability=merged[0]["probability"])
        else:
            out["stage"] = "no_candidate"
        return out

    # the series as it is
    t0 = time.perf_counter()
    ctx, thr, limit = _run_chain(vol, profile, steps, a.breakdown)
    base = reported(ctx, thr, limit)
    base_false = 0
    for c, _ in base:
        idx = tuple(min(max(int(round(x)), 0), n - 1) for x, n in zip(c, vol.shape))
        base_false += 0 if (gtv is not None and gtv[idx]) else 1
    seconds = [time.perf_counter() - t0]

    lesions: list[dict] = []
    runs: list[dict] = []
    for seed in a.seeds:
        rng = np.random.default_rng(seed)
        combos = [(r, s, c) for s in a.sizes_ml for c in a.contrasts for r in a.regions]
        rng.shuffle(combos)
        # group into runs of distinct regions
        todo = list(combos)
        while todo:
            batch, used = [], set()
            for item in list(todo):
                if item[0] not in used and len(batch) < a.per_run:
                    batch.append(item)
                    used.add(item[0])
                    todo.remove(item)
            img = vol.array.astype(np.float32, copy=True)
            placed = []
            taken: list[tuple[int, int, int]] = []
            for region, size, contrast in batch:
                ratios = (1.0, 1.0, 1.0) if rng.random() < 0.5 else tuple(rng.uniform(0.7, 1.4, 3))
                reach = max(semi_axes_mm(size, ratios)) + 5.0  # the whole lesion inside the trunk
                pos = sample_positions(masks[region] & (depth >= reach), sp, 1, rng, min_distance_mm=40.0,
                                       avoid=taken)
                if not pos:
                    continue
                taken.append(pos[0])
                img, les = insert_lesion(img, sp, pos[0], volume_ml=size, contrast=contrast, rng=rng,
                                         ratios=ratios, fwhm_mm=a.fwhm_mm)
                placed.append((region, size, contrast, les))
            t0 = time.perf_counter()
            ctx, thr, limit = _run_chain(vol.with_array(img), profile, steps, a.breakdown)
            seconds.append(time.perf_counter() - t0)
            rep = reported(ctx, thr, limit)
            cands = scored(ctx) if a.breakdown else []
            hit_any = [False] * len(rep)
            for region, size, contrast, les in placed:
                hits = [i for i, (c, _) in enumerate(rep) if les.contains(c)]
                for i in hits:
                    hit_any[i] = True
                best = max((rep[i][1]["probability"] for i in hits), default=None)
                lesions.append({"region": region, "volume_ml": size, "contrast": contrast, "seed": seed,
                                "center_zyx": [int(x) for x in les.center_zyx], "background_suv": round(les.background, 3),
                                "found": bool(hits), "probability": best,
                                **(stage(les, cands, thr, limit) if a.breakdown else {})})
            false = 0
            for (c, f), hit in zip(rep, hit_any):
                idx = tuple(min(max(int(round(x)), 0), n - 1) for x, n in zip(c, vol.shape))
                if not hit and not (gtv is not None and gtv[idx]):
                    false += 1
            runs.append({"seed": seed, "inserted": len(placed), "reported": len(rep), "false": false})
            if a.breakdown:  # the same candidates at lower thresholds
                sweep = {}
                for t in SWEEP_THRESHOLDS:
                    at = [(c, f) for c, f, _ in cands if f["probability"] >= t][:limit]
                    n_found = sum(any(les.contains(c) for c, _ in at) for *_, les in placed)
                    n_false = sum(1 for c, _ in at if not any(les.contains(c) for *_, les in placed)
                                  and not in_gtv_at(c))
                    sweep[str(t)] = [n_found, n_false]
                runs[-1]["sweep"] = sweep
            if not a.quiet:
                print(f"run {len(runs)}: {[(r, s, c) for r, s, c, _ in placed]} -> "
                      f"{sum(1 for x in lesions[-len(placed):] if x['found'])}/{len(placed)} found, {false} false",
                      file=sys.stderr)

    def table(key) -> dict:
        out = {}
        for v in sorted({x[key] for x in lesions}, key=str):
            sel = [x for x in lesions if x[key] == v]
            k = sum(x["found"] for x in sel)
            out[str(v)] = {"found": k, "inserted": len(sel), "sensitivity": round(k / len(sel), 3),
                           "ci95": _wilson(k, len(sel))}
        return out

    def cross(key1, key2) -> dict:
        out: dict[str, dict[str, str]] = {}
        for x in lesions:
            out.setdefault(str(x[key1]), {}).setdefault(str(x[key2]), [0, 0])  # type: ignore[arg-type]
            cell = out[str(x[key1])][str(x[key2])]
            cell[0] += int(x["found"])  # type: ignore[index]
            cell[1] += 1  # type: ignore[index]
        return {k: {k2: f"{c[0]}/{c[1]}" for k2, c in v.items()} for k, v in out.items()}  # type: ignore[misc]

    n_found = sum(x["found"] for x in lesions)
    falses = [r["false"] for r in runs]
    ge3 = [x for x in lesions if x["contrast"] >= 3]
    result = {
        "bench": "pet_lesions",
        "series": str(a.series), "profile": a.profile, "shape": list(vol.shape), "spacing_mm": list(sp),
        "fwhm_mm": a.fwhm_mm, "seeds": a.seeds, "per_run": a.per_run,
        "region_voxels": {k: int(v.sum()) for k, v in masks.items()},
        "baseline": {"reported": len(base), "false": base_false},
        "lesions_inserted": len(lesions), "lesions_found": n_found,
        "sensitivity": round(n_found / max(len(lesions), 1), 3), "ci95": _wilson(n_found, len(lesions)),
        "sensitivity_contrast_ge_3": round(sum(x["found"] for x in ge3) / max(len(ge3), 1), 3),
        "ci95_contrast_ge_3": _wilson(sum(x["found"] for x in ge3), len(ge3)),
        "runs": len(runs), "false_per_run_mean": round(float(np.mean(falses)), 3) if falses else None,
        "false_per_run_max": int(max(falses)) if falses else None,
        "runs_with_more_than_2_false": int(sum(f > 2 for f in falses)),
        "by_region": table("region"), "by_volume_ml": table("volume_ml"), "by_contrast": table("contrast"),
        "region_x_volume": cross("region", "volume_ml"), "region_x_contrast": cross("region", "contrast"),
        "chain_seconds_mean": round(float(np.mean(seconds)), 2),
        **({"missed_by_stage": {k: sum(1 for x in lesions if not x["found"] and x["stage"] == k)
                                for k in ("below_threshold", "beyond_max_findings", "merged", "no_candidate")},
            "threshold_sweep": {str(t): {"found": sum(r["sweep"][str(t)][0] for r in runs),
                                         "false_per_run_mean": round(float(np.mean([r["sweep"][str(t)][1]
                                                                                    for r in runs])), 3),
                                         "false_per_run_max": max(r["sweep"][str(t)][1] for r in runs)}
                                for t in SWEEP_THRESHOLDS} if runs else {}}
           if a.breakdown else {}),
        "lesions": lesions,
    }
    text = json.dumps(result, indent=1)
    print(text if not a.quiet else json.dumps({k: v for k, v in result.items() if k != "lesions"}, indent=1))
    if a.json:
        a.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
