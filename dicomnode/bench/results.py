"""Benchmark of the way out: load a series, build and save the SEG and the SR.

``dicomnode bench results`` (or ``python -m dicomnode.bench.results``) writes a synthetic CT series like a real one
(300 slices of 512 x 512, int16, CT Image Storage headers) to a temporary folder, makes 6 overlapping segments on
it, then times, in this process, the first ("cold") and a second ("warm") run of each step:
``load_series``, ``build_seg``, SEG ``save_as``, ``build_sr``, SR ``save_as``. The last run also times the same SEG
built with highdicom's own overlap check (``build_seg_highdicom_check_seconds``, checked to give identical pixel data).
It prints one JSON object.

The target (issue "Node core", perf.md): build_seg + build_sr <= 1.5 s warm for this case.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicomnode.analysis.volume import (
    CATEGORY_ANATOMICAL_STRUCTURE,
    CATEGORY_MORPHOLOGICALLY_ABNORMAL,
    CATEGORY_TISSUE,
    Code,
    LabelMap,
    Measurement,
    SegmentInfo,
    Volume,
)

__all__ = ["main", "synthetic_labels", "synthetic_measurements", "write_synthetic_ct"]

_BENCH_ROOT = "1.2.826.0.1.3680043.8.498.77."  # pydicom's root + a branch for throw-away benchmark objects


def write_synthetic_ct(folder: Path, *, n_slices: int = 300, rows: int = 512, columns: int = 512,
                       spacing_mm: tuple[float, float, float] = (1.5, 0.8, 0.8), seed: int = 0) -> list[Path]:
    """Write a synthetic axial CT series, one file per slice, with headers like a real CT.

    The phantom is an elliptic body (soft tissue, 40 HU) in air with two lungs (-850 HU), a spine and ribs-like ring
    (700 HU) and a 3 cm "tumour" (60 HU) in the right lung, plus Gaussian noise (sd 10 HU).

    Parameters
    ----------
    folder : Path
        Existing folder to write ``ct_NNNN.dcm`` into.
    n_slices, rows, columns : int
        Size of the series.
    spacing_mm : tuple of 3 float
        (slice distance, row spacing, column spacing) in mm.
    seed : int
        Seed of the noise.

    Returns
    -------
    list of Path
        The files, in slice order (the file names do not matter to the loader).
    """
    rng = np.random.default_rng(seed)
    dz, dy, dx = spacing_mm
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    cy, cx = rows / 2, columns / 2
    ry, rx = rows * 0.35, columns * 0.45
    body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    lung_r = ((yy - cy + rows * 0.02) / (ry * 0.65)) ** 2 + ((xx - cx + columns * 0.2) / (rx * 0.35)) ** 2 <= 1
    lung_l = ((yy - cy + rows * 0.02) / (ry * 0.65)) ** 2 + ((xx - cx - columns * 0.2) / (rx * 0.35)) ** 2 <= 1
    spine = ((yy - cy - ry * 0.7) / (ry * 0.15)) ** 2 + ((xx - cx) / (rx * 0.1)) ** 2 <= 1
    base = np.full((rows, columns), -1000.0, dtype=np.float32)
    base[body] = 40
    base[lung_r | lung_l] = -850
    base[spine] = 700
    tumour_c = (n_slices * dz / 2, cy, cx - columns * 0.2)  # mm from the first slice, rows, columns

    study_uid, series_uid, for_uid = (generate_uid(prefix=_BENCH_ROOT) for _ in range(3))
    paths = []
    for k in range(n_slices):
        hu = base.copy()
        dist2 = ((k * dz - tumour_c[0]) / 15.0) ** 2 + (((yy - tumour_c[1]) * dy) / 15.0) ** 2 + \
            (((xx - tumour_c[2]) * dx) / 15.0) ** 2
        hu[dist2 <= 1] = 60
        hu += rng.normal(0, 10, size=hu.shape).astype(np.float32)
        stored = np.clip(np.round(hu + 1024), 0, 4095).astype(np.uint16)

        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        sop_uid = generate_uid(prefix=_BENCH_ROOT)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceCreationDate = ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = "BENCH0001"
        ds.Modality = "CT"
        ds.Manufacturer = "dicomnode bench"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "synthetic chest CT"
        ds.SeriesDescription = "synthetic 1.5 mm"
        ds.PatientName = "Bench^Synthetic"
        ds.PatientID = "BENCH-0001"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CHEST"
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{-dx * columns / 2:.3f}", f"{-dy * rows / 2:.3f}", f"{-400 + k * dz:.3f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{-400 + k * dz:.3f}"
        ds.SliceThickness = f"{dz:g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.PixelSpacing = [f"{dy:g}", f"{dx:g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = stored.tobytes()
        path = folder / f"ct_{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def synthetic_labels(volume: Volume) -> LabelMap:
    """Six overlapping segments of the synthetic CT: body, both lungs, lungs together, bone and the tumour."""
    hu = volume.array
    body = hu > -300
    inside = np.logical_or.accumulate(body, axis=2) & np.logical_or.accumulate(body[:, :, ::-1], axis=2)[:, :, ::-1]
    lungs = (hu < -500) & inside  # air enclosed left and right by the body
    half = hu.shape[2] // 2
    lung_right = lungs.copy()
    lung_right[:, :, half:] = False  # image left = patient right
    lung_left = lungs.copy()
    lung_left[:, :, :half] = False
    bone = hu > 300
    tumour = np.zeros_like(body)
    for z in range(hu.shape[0]):  # soft tissue enclosed by the right lung
        if lung_right[z].any():
            tumour[z] = ndi.binary_fill_holes(lung_right[z]) & ~lung_right[z] & (hu[z] > -300)

    def info(number: int, label: str, category: Code, type_: Code) -> SegmentInfo:
        return SegmentInfo(number, label, category, type_, algorithm="bench.threshold")

    return (LabelMap()
            .add(info(1, "body", CATEGORY_ANATOMICAL_STRUCTURE, Code("123037004", "SCT", "Anatomical Structure")),
                 body)
            .add(info(2, "lungs", CATEGORY_ANATOMICAL_STRUCTURE, Code("39607008", "SCT", "Lung")), lungs)
            .add(info(3, "lung_right", CATEGORY_ANATOMICAL_STRUCTURE, Code("3341006", "SCT", "Right lung")),
                 lung_right)
            .add(info(4, "lung_left", CATEGORY_ANATOMICAL_STRUCTURE, Code("44029006", "SCT", "Left lung")),
                 lung_left)
            .add(info(5, "bone", CATEGORY_TISSUE, Code("3138006", "SCT", "Bone tissue")), bone)
            .add(info(6, "tumour", CATEGORY_MORPHOLOGICALLY_ABNORMAL, Code("108369006", "SCT", "Neoplasm")),
                 tumour))


def synthetic_measurements(volume: Volume, labels: LabelMap) -> dict[int, list[Measurement]]:
    """Volume, mean and standard deviation of each segment, as the features step would report them."""
    out: dict[int, list[Measurement]] = {}
    for seg in labels.segments:
        values = volume.array[seg.mask]
        n = int(values.size)
        out[seg.info.number] = [
            Measurement("volume_ml", n * volume.voxel_volume_mm3 / 1000.0, "ml"),
            Measurement("mean", float(values.mean()) if n else 0.0, volume.unit or "1"),
            Measurement("sd", float(values.std()) if n else 0.0, volume.unit or "1"),
            Measurement("voxel_count", float(n), "{voxels}"),
        ]
    return out


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON; returns the process exit status (0)."""
    parser = argparse.ArgumentParser(prog="dicomnode bench results", description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="rows = columns")
    parser.add_argument("--runs", type=int, default=2, help="runs in this process; the first is cold")
    args = parser.parse_args(argv)

    from dicomnode.io.load import load_series
    from dicomnode.results.seg import build_seg
    from dicomnode.results.sr import build_sr
    from dicomnode.results.uids import ResultUids

    report: dict[str, object] = {
        "bench": "results",
        "case": {"slices": args.slices, "rows": args.size, "columns": args.size, "segments": 6},
        "python": platform.python_version(),
        "pydicom": pydicom.__version__,
    }
    import highdicom

    report["highdicom"] = highdicom.__version__
    runs = []
    with tempfile.TemporaryDirectory(prefix="dicomnode-bench-") as tmp:
        tmp_path = Path(tmp)
        src = tmp_path / "ct"
        src.mkdir()
        t0 = time.perf_counter()
        paths = write_synthetic_ct(src, n_slices=args.slices, rows=args.size, columns=args.size)
        report["write_source_seconds"] = round(time.perf_counter() - t0, 3)
        for run in range(max(1, args.runs)):
            times: dict[str, float] = {}
            series, times["load_seconds"] = _timed(load_series, paths)
            labels = synthetic_labels(series.volume)
            measurements = synthetic_measurements(series.volume, labels)
            uids = ResultUids.for_series(None, series.series_uid, "bench", "1")
            seg, times["build_seg_seconds"] = _timed(build_seg, series, labels, uids)
            _, times["save_seg_seconds"] = _timed(seg.save_as, tmp_path / f"seg{run}.dcm", enforce_file_format=True)
            sr, times["build_sr_seconds"] = _timed(build_sr, series, seg, labels, measurements, uids)
            _, times["save_sr_seconds"] = _timed(sr.save_as, tmp_path / f"sr{run}.dcm", enforce_file_format=True)
            times["seg_plus_sr_seconds"] = sum(times[k] for k in ("build_seg_seconds", "save_seg_seconds",
                                                                  "build_sr_seconds", "save_sr_seconds"))
            if run == max(1, args.runs) - 1:  # the same SEG with highdicom's own overlap check, for comparison
                from unittest import mock

                import dicomnode.results.seg as seg_module

                with mock.patch.object(seg_module, "_segmentation_class", lambda overlap: highdicom.seg.Segmentation):
                    plain, times["build_seg_highdicom_check_seconds"] = _timed(build_seg, series, labels, uids)
                assert plain.SegmentsOverlap == seg.SegmentsOverlap and plain.NumberOfFrames == seg.NumberOfFrames
                assert plain.PixelData == seg.PixelData
                del plain
            runs.append({
                "run": "cold" if run == 0 else "warm",
                **{k: round(v, 3) for k, v in times.items()},
                "seg_frames": int(seg.NumberOfFrames),
                "seg_bytes": (tmp_path / f"seg{run}.dcm").stat().st_size,
            })
    report["runs"] = runs
    report["target_seg_plus_sr_seconds"] = 1.5
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
