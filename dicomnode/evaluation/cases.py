"""The case file of ``dicomnode evaluate``: which series to run and what the truth is, as typed dataclasses.

::

    # every path below is relative to the data root
    data_root = "../../../shared/data"   # relative to this file; `--data-root` or DICOMNODE_EVAL_DATA override it

    [[cases]]
    id = "sts-001-ct"                    # unique; names the PNG and the rows of the outputs
    series = "sts/STS_001/CT"            # a folder holding one series (files below it, non-DICOM files skipped)
    patient = "STS_001"                  # optional: to group series of one patient
    profile = "ct"                       # optional: default is the profile the node's rules choose
    scene = "extremity"                  # optional: expected scene label (head, neck, chest, abdomen, pelvis,
                                         #   extremity, unknown)
    regions = [{ label = "chest", z_mm = [80, 312] }]   # optional: expected regions along the patient z axis (LPS)
    lesions = [{ rtstruct = "sts/STS_001/CT_rtstruct/RS.dcm", rois = ["GTV_Mass"] }]
    expect_refusal = false               # optional: true when the right answer is refusing the series
    context = ["sts/STS_001/CT"]         # optional: the study's other series folders the scene may read where the
                                         #   series' own image leaves a stretch unknown (same study and frame of
                                         #   reference); default: found among the folders next to `series`; [] none

Lesion truth, one table per source:

* ``{ rtstruct = FILE, rois = [NAME, ...] }``: each named ROI is one lesion;
* ``{ seg = FILE, segments = [NUMBER, ...] }``: each segment is one lesion;
* ``{ voc = FOLDER }``: Pascal VOC XML boxes, one file per slice named ``<SOPInstanceUID>.xml``; boxes that touch
  from slice to slice are one lesion (3-D connected boxes).

:func:`load_cases` reads the file once and raises :class:`CaseFileError` listing every problem, each naming the
file, the key and the fix.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from dicomnode.errors import ConfigError

__all__ = ["Case", "CaseFile", "CaseFileError", "DATA_ROOT_ENV", "ExpectedRegion", "LesionSource", "SCENE_LABELS",
           "TruthKind", "case_profile", "load_cases"]

#: Environment variable naming the data root (below ``--data-root``, above the file's ``data_root`` key).
DATA_ROOT_ENV = "DICOMNODE_EVAL_DATA"
SCENE_LABELS = ("head", "neck", "chest", "abdomen", "pelvis", "extremity", "unknown")


class CaseFileError(ConfigError):
    """One or more problems in a case file; the message names the file, each key and its fix."""

    def __init__(self, path: Path | str, problems: list[tuple[str, object, str]]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        key, value, fix = self.problems[0]
        super().__init__(key, value, fix)
        lines = "\n".join(f"  - {k} = {v!r}: {f}" for k, v, f in self.problems)
        Exception.__init__(self, f"{self.path}: {len(self.problems)} problem(s):\n{lines}")


class TruthKind(str, Enum):
    RTSTRUCT = "rtstruct"
    SEG = "seg"
    VOC = "voc"


@dataclass(frozen=True, slots=True)
class LesionSource:
    """Where the lesions of a case are drawn: an RTSTRUCT's ROIs, a SEG's segments or a folder of VOC boxes."""

    kind: TruthKind
    path: Path
    rois: tuple[str, ...] = ()
    segments: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ExpectedRegion:
    label: str
    z_low_mm: float
    z_high_mm: float


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    series: Path
    patient: str = ""
    profile: str | None = None
    scene: str | None = None
    regions: tuple[ExpectedRegion, ...] = ()
    lesions: tuple[LesionSource, ...] = ()
    expect_refusal: bool = False
    context: tuple[Path, ...] | None = None   # None: the sibling folders of ``series`` (dicomnode.evaluation.context)

    @property
    def expects_chest(self) -> bool:
        return self.scene == "chest" or any(r.label == "chest" for r in self.regions)


@dataclass(frozen=True, slots=True)
class CaseFile:
    path: Path
    data_root: Path
    cases: tuple[Case, ...]


_CASE_KEYS = {"id", "series", "patient", "profile", "scene", "regions", "lesions", "expect_refusal", "context"}


def load_cases(path: Path | str, *, data_root: Path | str | None = None) -> CaseFile:
    """Read and check a case file.

    Parameters
    ----------
    path : path
        The TOML case file.
    data_root : path, optional
        Folder the case paths are relative to. Default: the ``DICOMNODE_EVAL_DATA`` environment variable, else the
        file's ``data_root`` key (relative to the file), else the file's own folder.

    Raises
    ------
    CaseFileError
        Listing every problem (unknown keys, missing series folders or truth files, unknown labels...).
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CaseFileError(path, [("(file)", str(path), "no such case file; give the path of a TOML case file")])
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CaseFileError(path, [("(file)", str(path), f"not valid TOML ({e}); fix the syntax")])
    problems: list[tuple[str, object, str]] = []
    for k in sorted(set(doc) - {"data_root", "cases"}):
        problems.append((k, doc[k], "unknown top-level key; use data_root and [[cases]]"))
    root = _data_root(path, doc, data_root, problems)
    raw_cases = doc.get("cases", [])
    if not isinstance(raw_cases, list) or not raw_cases:
        problems.append(("cases", raw_cases, "add at least one [[cases]] table with id and series"))
        raw_cases = []
    cases: list[Case] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_cases):
        c = _case(f"cases[{i}]", raw, root, problems)
        if c is None:
            continue
        if c.id in seen:
            problems.append((f"cases[{i}].id", c.id, "ids must be unique; rename one of the cases"))
        seen.add(c.id)
        cases.append(c)
    if problems:
        raise CaseFileError(path, problems)
    return CaseFile(path, root, tuple(cases))


def _data_root(path: Path, doc: dict[str, Any], given: Path | str | None,
               problems: list[tuple[str, object, str]]) -> Path:
    if given is not None:
        root, key = Path(given), "--data-root"
    elif os.environ.get(DATA_ROOT_ENV):
        root, key = Path(os.environ[DATA_ROOT_ENV]), DATA_ROOT_ENV
    elif "data_root" in doc:
        if not isinstance(doc["data_root"], str):
            problems.append(("data_root", doc["data_root"], "give a folder path as a string"))
            return path.parent
        root, key = path.parent / doc["data_root"], "data_root"
    else:
        return path.parent.resolve()
    if not root.is_dir():
        problems.append((key, str(root), "no such folder; point it at the folder the case paths are relative to "
                                         "(e.g. --data-root ../shared/data)"))
    return root.resolve()


def _case(where: str, raw: Any, root: Path, problems: list[tuple[str, object, str]]) -> Case | None:
    if not isinstance(raw, dict):
        problems.append((where, raw, "each case must be a [[cases]] table"))
        return None
    n0 = len(problems)
    for k in sorted(set(raw) - _CASE_KEYS):
        problems.append((f"{where}.{k}", raw[k], f"unknown key; use {', '.join(sorted(_CASE_KEYS))}"))
    cid = raw.get("id")
    if not isinstance(cid, str) or not cid or not all(ch.isalnum() or ch in "-_." for ch in cid):
        problems.append((f"{where}.id", cid, "give a unique id of letters, digits, '-', '_' or '.'"))
    series = raw.get("series")
    series_path = root / series if isinstance(series, str) else root
    if not isinstance(series, str) or not series_path.is_dir():
        problems.append((f"{where}.series", series, f"no such series folder under {root}; give a folder path "
                                                    "relative to the data root"))
    for key in ("patient", "profile"):
        if key in raw and not isinstance(raw[key], str):
            problems.append((f"{where}.{key}", raw[key], "give a string"))
    scene = raw.get("scene")
    if scene is not None and scene not in SCENE_LABELS:
        problems.append((f"{where}.scene", scene, f"use one of {', '.join(SCENE_LABELS)}"))
    regions = []
    raw_regions = raw.get("regions", [])
    if not isinstance(raw_regions, list):
        problems.append((f"{where}.regions", raw_regions, "give a list of { label, z_mm = [low, high] }"))
        raw_regions = []
    for j, r in enumerate(raw_regions):
        w = f"{where}.regions[{j}]"
        z = r.get("z_mm") if isinstance(r, dict) else None
        if (not isinstance(r, dict) or r.get("label") not in SCENE_LABELS or not isinstance(z, list) or len(z) != 2
                or not all(isinstance(v, (int, float)) for v in z) or z[0] == z[1]):
            problems.append((w, r, f"give {{ label = one of {', '.join(SCENE_LABELS)}, z_mm = [low, high] }} with "
                                   "low != high in patient z (mm, LPS)"))
            continue
        regions.append(ExpectedRegion(r["label"], float(min(z)), float(max(z))))
    lesions = []
    raw_lesions = raw.get("lesions", [])
    if not isinstance(raw_lesions, list):
        problems.append((f"{where}.lesions", raw_lesions, "give a list of lesion tables"))
        raw_lesions = []
    for j, t in enumerate(raw_lesions):
        src = _lesion_source(f"{where}.lesions[{j}]", t, root, problems)
        if src is not None:
            lesions.append(src)
    refusal = raw.get("expect_refusal", False)
    if not isinstance(refusal, bool):
        problems.append((f"{where}.expect_refusal", refusal, "give true or false"))
    context: tuple[Path, ...] | None = None
    if "context" in raw:
        folders = raw["context"]
        if not isinstance(folders, list) or not all(isinstance(f, str) and (root / f).is_dir() for f in folders):
            problems.append((f"{where}.context", folders, f"give a list of series folders under {root} (the same "
                                                          "study's other series), or [] for none"))
        else:
            context = tuple(root / f for f in folders)
    if len(problems) > n0:
        return None
    return Case(cid, series_path, raw.get("patient", ""), raw.get("profile"), scene, tuple(regions),
                tuple(lesions), refusal, context)


def _lesion_source(w: str, t: Any, root: Path, problems: list[tuple[str, object, str]]) -> LesionSource | None:
    kinds = [k for k in TruthKind if isinstance(t, dict) and k.value in t]
    if len(kinds) != 1:
        problems.append((w, t, "give exactly one of { rtstruct = FILE, rois = [...] }, { seg = FILE, segments = "
                               "[...] } or { voc = FOLDER }"))
        return None
    kind = kinds[0]
    allowed = {TruthKind.RTSTRUCT: {"rtstruct", "rois"}, TruthKind.SEG: {"seg", "segments"},
               TruthKind.VOC: {"voc"}}[kind]
    for k in sorted(set(t) - allowed):
        problems.append((f"{w}.{k}", t[k], f"unknown key for {kind.value} truth; use {', '.join(sorted(allowed))}"))
    p = t[kind.value]
    full = root / p if isinstance(p, str) else root
    if not isinstance(p, str) or not (full.is_dir() if kind is TruthKind.VOC else full.is_file()):
        what = "folder of VOC XML files" if kind is TruthKind.VOC else "file"
        problems.append((f"{w}.{kind.value}", p, f"no such {what} under {root}; give a path relative to the data "
                                                 "root"))
        return None
    if kind is TruthKind.RTSTRUCT:
        rois = t.get("rois")
        if not isinstance(rois, list) or not rois or not all(isinstance(r, str) and r for r in rois):
            problems.append((f"{w}.rois", rois, "list the ROI names that are lesions, e.g. [\"GTV_Mass\"]"))
            return None
        return LesionSource(kind, full, rois=tuple(rois))
    if kind is TruthKind.SEG:
        segs = t.get("segments")
        if not isinstance(segs, list) or not segs or not all(isinstance(s, int) and s > 0 for s in segs):
            problems.append((f"{w}.segments", segs, "list the segment numbers that are lesions, e.g. [1]"))
            return None
        return LesionSource(kind, full, segments=tuple(segs))
    return LesionSource(kind, full)


def case_profile(case: Case, config: Any, first_file: Path) -> Any:
    """The profile a case runs with: its ``profile`` key, else the one the node's routing picks for the series' first
    file (``config``: a :class:`dicomnode.config.NodeConfig`). Raises :class:`dicomnode.errors.DicomnodeError` when
    neither gives one."""
    from dicomnode.errors import DicomnodeError

    if case.profile is not None:
        if case.profile not in config.profiles:
            raise DicomnodeError(f"profile {case.profile!r} is not configured; use one of "
                                 f"{', '.join(sorted(config.profiles))}")
        return config.profiles[case.profile]
    from dicomnode.io.headers import read_tags
    from dicomnode.routing import route

    decision = route(config, read_tags(first_file), is_image=True)
    if decision.profile is None:
        raise DicomnodeError(f"the node would run no job on this series ({decision.reason}); give profile = NAME "
                             "in the case to evaluate it anyway")
    return decision.profile
