"""IBSI-2 phase 1: every test of ``../shared/data/ibsi2/phase1/tests.tsv``, one pytest id per IBSI test id.

A test with a consensus response map passes the IBSI rule: every voxel within 1 % of the reference map's range. The
three without a reference (9.b.2, 10.a, 10.b.2: no consensus) are run and their response reported (printed, and in
the table below), with only sanity assertions (shape, finite values, not all zero).

``DICOMNODE_IBSI2_TABLE=path.md python3 -m pytest tests/analysis/features/test_ibsi2_phase1.py -p no:xdist`` writes
the markdown table of docs/radiomics.md (pass/fail, maximum deviation as a share of the range).
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from dicomnode.analysis.filters import Boundary, FilterKind, FilterSpec, Pooling, apply_filter
from dicomnode.analysis.filters.spatial import GaborResponse

IBSI2 = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ibsi2"

_NIFTI_TYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 256: np.int8,
                512: np.uint16, 768: np.uint32}


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A gzipped NIfTI-1 volume as a (k, j, i) = (Z, Y, X) float64 array and its (i, j, k) voxel size in mm."""
    raw = gzip.open(path).read()
    end = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    dim = struct.unpack(end + "8h", raw[40:56])
    dtype = np.dtype(_NIFTI_TYPES[struct.unpack(end + "h", raw[70:72])[0]]).newbyteorder(end)
    pixdim = struct.unpack(end + "8f", raw[76:108])
    offset = int(struct.unpack(end + "f", raw[108:112])[0])
    slope, inter = struct.unpack(end + "2f", raw[112:120])
    shape = dim[1:1 + dim[0]]
    data = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=offset)
    # NIfTI stores i fastest: in C order the array is (k, j, i), i.e. our (Z, Y, X)
    out = data.reshape(shape[::-1]).astype(np.float64)
    if slope not in (0.0, 1.0) or inter != 0.0:
        out = out * (slope or 1.0) + inter
    return out, tuple(float(p) for p in pixdim[1:1 + dim[0]])


def _rows() -> list[dict[str, str]]:
    with open(IBSI2 / "phase1" / "tests.tsv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


ROWS = _rows()
RESULTS: dict[str, tuple[str, float | None, str]] = {}


def _angle(text: str) -> float:
    """ "pi/3", "5*pi/4" -> radians."""
    return float(eval(text, {"__builtins__": {}}, {"pi": math.pi}))  # noqa: S307: table values like 5*pi/4


def spec_of(row: dict[str, str]) -> FilterSpec:
    """The FilterSpec of one phase-1 row (its columns are the ``[filter]`` keys)."""
    kind = FilterKind(row["filter"])
    boundary = Boundary.PERIODIC if row["boundary"].startswith("none") else Boundary.parse(row["boundary"])
    kw: dict = {"kind": kind, "boundary": boundary, "in_plane_only": row["dimensionality"] == "2D"}
    if row["support_voxels"]:
        kw["support_voxels"] = int(row["support_voxels"])
    if row["sigma_mm"]:
        kw["sigma_mm"] = float(row["sigma_mm"])
        kw["truncate_sigma"] = float(row["truncate_sigma"])
    if row["laws_kernel"]:
        kw["laws_kernel"] = row["laws_kernel"]
        kw["in_plane_only"] = len(row["laws_kernel"]) == 4
    if row["rotation_invariance"] == "true":
        kw["rotation_invariance"] = True
        kw["pooling"] = Pooling.parse(row["pooling"])
    if row["energy_delta_voxels"]:
        kw["energy_delta_voxels"] = int(row["energy_delta_voxels"])
    if kind is FilterKind.GABOR:
        kw.update(gabor_sigma_mm=float(row["gabor_sigma_mm"]), gabor_lambda_mm=float(row["gabor_lambda_mm"]),
                  gabor_gamma=float(row["gabor_gamma"]), response=GaborResponse(row["response"]),
                  orthogonal_planes=row["orthogonal_planes"] == "true")
        if row["gabor_theta_rad"]:
            kw["gabor_theta_rad"] = _angle(row["gabor_theta_rad"])
        if row["gabor_dtheta_rad"]:
            kw["gabor_dtheta_rad"] = _angle(row["gabor_dtheta_rad"])
        kw["in_plane_only"] = not kw["orthogonal_planes"]
    if row["wavelet"]:
        kw["wavelet"] = row["wavelet"]
        kw["wavelet_map"] = row["wavelet_map"]
        kw["level"] = int(row["level"])
        if kind is FilterKind.SEPARABLE_WAVELET:
            kw["in_plane_only"] = len(row["wavelet_map"]) == 2
    if row["riesz_order"]:
        kw["riesz_order"] = tuple(int(v) for v in row["riesz_order"].split(","))
    if row["riesz_aligned_structure_tensor_sigma_mm"]:
        kw["riesz_structure_tensor_sigma_mm"] = float(row["riesz_aligned_structure_tensor_sigma_mm"])
    return FilterSpec(**kw)


@pytest.mark.parametrize("row", ROWS, ids=[r["test_id"] for r in ROWS])
def test_phase1_response_map(row: dict[str, str]) -> None:
    image, voxel_mm = read_nifti(IBSI2 / row["phantom_file"])
    spacing_zyx = tuple(reversed(voxel_mm))
    spec = spec_of(row)
    response = apply_filter(image, spacing_zyx, spec)
    assert response.shape == image.shape
    assert np.isfinite(response).all()
    if row["has_reference"] != "true":
        RESULTS[row["test_id"]] = ("run, no reference", None, spec.label)
        print(f"IBSI-2 {row['test_id']} (no reference map): {spec.label}: response min {response.min():.6g}, "
              f"max {response.max():.6g}, mean {response.mean():.6g}")
        assert np.abs(response).max() > 0, "the response map is all zero"
        return
    reference, _ = read_nifti(IBSI2 / row["reference_map"])
    span = float(reference.max() - reference.min())
    share = float(np.abs(response - reference).max() / span)
    RESULTS[row["test_id"]] = ("pass" if share <= 0.01 else "FAIL", share, spec.label)
    assert share <= 0.01, f"{row['test_id']}: max |dev| is {share:.4%} of the reference range (allowed 1 %)"


@pytest.fixture(scope="module", autouse=True)
def _table():
    yield
    path = os.environ.get("DICOMNODE_IBSI2_TABLE")
    if not path or not RESULTS:
        return
    lines = ["| IBSI test | filter | consensus | result | max deviation / range |", "|---|---|---|---|---|"]
    for row in ROWS:
        if row["test_id"] in RESULTS:
            result, share, label = RESULTS[row["test_id"]]
            dev = "n/a" if share is None else f"{share:.1e}"
            lines.append(f"| {row['test_id']} | `{label}` | {row['consensus']} | {result} | {dev} |")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
