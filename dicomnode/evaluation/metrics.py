"""Evaluation metrics as pure functions: proportions with Wilson intervals, Dice, ranks, reliability, regions.

Nothing here reads files or knows about DICOM; :mod:`dicomnode.evaluation.run` feeds it numbers and masks.

References
----------
Wilson E.B. Probable inference, the law of succession, and statistical inference. J Am Stat Assoc 1927;22:209-212.
Newcombe R.G. Two-sided confidence intervals for the single proportion: comparison of seven methods. Stat Med
1998;17:857-872 (the Wilson score interval is method 3; its Table I gives worked values).
Cohen J. Statistical Power Analysis for the Behavioral Sciences, 2nd ed. 1988 (the standardised mean difference d,
with the pooled standard deviation). Rose A. Vision: Human and Electronic. 1973 (an object is seen when its
contrast-to-noise ratio exceeds about 3-5).
Dice L.R. Measures of the amount of ecologic association between species. Ecology 1945;26:297-302.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LesionContrast", "Proportion", "ReliabilityBin", "dice", "lesion_contrast", "first_true_rank", "region_agreement", "reliability_table",
           "wilson_interval"]

#: Two-sided 95 % normal quantile.
Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, *, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Parameters
    ----------
    successes, trials : int
        Counts, ``0 <= successes <= trials``.
    z : float, optional
        Normal quantile of the two-sided level. Default 1.96 (95 %).

    Returns
    -------
    (low, high) : tuple of float
        Bounds in [0, 1]; (0.0, 1.0) when ``trials`` is 0 (nothing is known).

    Raises
    ------
    ValueError
        When the counts are negative or ``successes > trials``.
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if z <= 0:
        raise ValueError(f"z must be > 0, got {z}")
    if trials == 0:
        return 0.0, 1.0
    n, p = float(trials), successes / trials
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Proportion:
    """``successes`` of ``trials`` with its 95 % Wilson interval."""

    successes: int
    trials: int

    def __post_init__(self) -> None:
        if self.trials < 0 or not 0 <= self.successes <= self.trials:
            raise ValueError(f"need 0 <= successes <= trials, got {self.successes} of {self.trials}")

    @property
    def fraction(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    def as_dict(self) -> dict[str, object]:
        lo, hi = wilson_interval(self.successes, self.trials)
        frac = self.fraction
        return {"successes": self.successes, "trials": self.trials,
                "fraction": None if frac is None else round(frac, 4),
                "wilson95": [round(lo, 4), round(hi, 4)]}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity coefficient ``2 |A & B| / (|A| + |B|)`` of two boolean masks of one shape.

    Returns 1.0 when both are empty (they agree), 0.0 when exactly one is.
    """
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    a = a.astype(bool, copy=False)
    b = b.astype(bool, copy=False)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


@dataclass(frozen=True, slots=True)
class LesionContrast:
    """How a truth lesion stands out of the tissue around it, in the series' own units and noise.

    Attributes
    ----------
    lesion_mean, lesion_sd : float
        Mean and standard deviation inside the lesion, in the image's unit.
    shell_mean, shell_sd : float
        The same in the shell ``shell_mm`` outside it (other truth lesions left out).
    noise_sd : float
        The image noise in the shell: the robust (MAD) standard deviation of the differences between neighbouring
        voxels along each row, divided by sqrt 2 (what is left when the tissue's own variation is taken out).
    smd : float
        Standardised mean difference ``(lesion_mean - shell_mean) / sqrt((lesion_sd^2 + shell_sd^2) / 2)`` (Cohen's
        d): how far the lesion's signal lies from its surroundings' against the spread of both, texture and
        heterogeneity included. About 0: the lesion has its surroundings' signal (iso-dense, iso-intense).
    cnr : float
        Contrast-to-noise ratio ``(lesion_mean - shell_mean) / noise_sd``: against the image noise alone.
    shell_mm : (float, float)
        The shell's inner and outer distance from the lesion, mm.
    shell_voxels : int
        Voxels in the shell.
    """

    lesion_mean: float
    lesion_sd: float
    shell_mean: float
    shell_sd: float
    noise_sd: float
    smd: float
    cnr: float
    shell_mm: tuple[float, float]
    shell_voxels: int

    def as_dict(self) -> dict[str, object]:
        return {"lesion_mean": _round(self.lesion_mean), "lesion_sd": _round(self.lesion_sd),
                "shell_mean": _round(self.shell_mean), "shell_sd": _round(self.shell_sd),
                "noise_sd": _round(self.noise_sd), "smd": _round(self.smd), "cnr": _round(self.cnr),
                "shell_mm": list(self.shell_mm), "shell_voxels": self.shell_voxels}


def _round(v: float, digits: int = 4) -> float | None:
    return round(v, digits) if math.isfinite(v) else None


def lesion_contrast(image: np.ndarray, lesion: np.ndarray, spacing_mm: Sequence[float], *,
                    shell_mm: tuple[float, float] = (5.0, 10.0), exclude: np.ndarray | None = None) -> LesionContrast:
    """The contrast of a lesion against a shell of tissue around it, from the image and the truth mask alone.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        The series' values in its own unit (HU, SUV, MR signal), as loaded: not denoised.
    lesion : (Z, Y, X) bool ndarray
        The truth lesion on the image's grid.
    spacing_mm : tuple of 3 float
        Voxel spacing (dz, dy, dx), mm.
    shell_mm : (float, float), optional
        The shell's inner and outer distance from the lesion's edge, mm. Default (5, 10): outside the partial volume
        of the edge and of a contour drawn a little wide, still the tissue next to it.
    exclude : (Z, Y, X) bool ndarray, optional
        Voxels left out of the shell (the other truth lesions).

    Returns
    -------
    LesionContrast
        Fields NaN where the lesion or the shell is empty (a lesion filling the field of view).

    Raises
    ------
    ValueError
        On masks of another shape than the image, or a shell with inner >= outer or inner < 0.
    """
    if lesion.shape != image.shape or (exclude is not None and exclude.shape != image.shape):
        raise ValueError(f"lesion and exclude masks must have the image's shape {image.shape}")
    lo, hi = shell_mm
    if not 0 <= lo < hi:
        raise ValueError(f"shell_mm must be (inner, outer) with 0 <= inner < outer, got {shell_mm}")
    from scipy import ndimage as ndi

    lesion = lesion.astype(bool, copy=False)
    nan = float("nan")
    if not lesion.any():
        return LesionContrast(nan, nan, nan, nan, nan, nan, nan, (lo, hi), 0)
    # the distance is computed in the lesion's box grown by the shell only: cheap on a whole-body series
    idx = np.argwhere(lesion)
    grow = [int(math.ceil(hi / s)) + 1 for s in spacing_mm]
    box = tuple(slice(max(0, int(a) - g), min(n, int(b) + 1 + g))
                for a, b, g, n in zip(idx.min(0), idx.max(0), grow, image.shape))
    les = lesion[box]
    dist = ndi.distance_transform_edt(~les, sampling=spacing_mm)
    shell = (dist > lo) & (dist <= hi)
    if exclude is not None:
        shell &= ~exclude[box]
    img = image[box].astype(np.float64)
    inside, around = img[les], img[shell]
    if around.size < 2:
        return LesionContrast(float(inside.mean()), float(inside.std()), nan, nan, nan, nan, nan, (lo, hi),
                              int(around.size))
    pairs = shell[:, :, 1:] & shell[:, :, :-1]
    diffs = (img[:, :, 1:] - img[:, :, :-1])[pairs]
    noise = float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / math.sqrt(2.0)) if diffs.size else nan
    m1, s1, m2, s2 = float(inside.mean()), float(inside.std()), float(around.mean()), float(around.std())
    pooled = math.sqrt((s1 * s1 + s2 * s2) / 2.0)
    smd = (m1 - m2) / pooled if pooled > 0 else nan
    cnr = (m1 - m2) / noise if noise > 0 else nan
    return LesionContrast(m1, s1, m2, s2, noise, smd, cnr, (lo, hi), int(around.size))


def first_true_rank(probabilities: Sequence[float], is_true: Sequence[bool]) -> int | None:
    """1-based rank of the first true item when sorted by decreasing probability; None when none is true.

    Ties keep the given order (a stable sort), so a list already ordered by the producer keeps its ranks.
    """
    if len(probabilities) != len(is_true):
        raise ValueError(f"{len(probabilities)} probabilities but {len(is_true)} truth flags")
    order = sorted(range(len(probabilities)), key=lambda i: -float(probabilities[i]))
    for rank, i in enumerate(order, start=1):
        if is_true[i]:
            return rank
    return None


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """Predicted probabilities in ``[low, high)`` (the last bin includes 1.0) against the observed fraction."""

    low: float
    high: float
    count: int
    mean_predicted: float | None
    observed: Proportion

    def as_dict(self) -> dict[str, object]:
        return {"low": self.low, "high": self.high, "count": self.count,
                "mean_predicted": None if self.mean_predicted is None else round(self.mean_predicted, 4),
                "observed": self.observed.as_dict()}


def reliability_table(probabilities: Sequence[float], outcomes: Sequence[bool], *,
                      edges: Sequence[float] = (0.0, 0.5, 0.7, 0.9, 0.99, 1.0)) -> list[ReliabilityBin]:
    """Bins of predicted probability against the observed fraction of true outcomes (a calibration table).

    Parameters
    ----------
    probabilities : sequence of float
        Predicted probabilities in [0, 1].
    outcomes : sequence of bool
        Whether each prediction was true.
    edges : sequence of float, optional
        Increasing bin edges from 0 to 1. Default (0, 0.5, 0.7, 0.9, 0.99, 1): the reporting threshold is 0.5.
    """
    e = [float(x) for x in edges]
    if len(e) < 2 or any(b <= a for a, b in zip(e, e[1:])) or e[0] < 0 or e[-1] > 1:
        raise ValueError(f"edges must increase within [0, 1], got {list(edges)}")
    if len(probabilities) != len(outcomes):
        raise ValueError(f"{len(probabilities)} probabilities but {len(outcomes)} outcomes")
    bins = []
    for k, (lo, hi) in enumerate(zip(e, e[1:])):
        last = k == len(e) - 2
        sel = [i for i, p in enumerate(probabilities) if lo <= p < hi or (last and p == hi)]
        mean = float(np.mean([probabilities[i] for i in sel])) if sel else None
        bins.append(ReliabilityBin(lo, hi, len(sel), mean, Proportion(sum(bool(outcomes[i]) for i in sel), len(sel))))
    return bins


def region_agreement(predicted: Sequence[tuple[str, float, float]],
                     truth: Sequence[tuple[str, float, float]]) -> float | None:
    """Fraction of the truth's extent along z (mm) covered by a predicted region of the same label.

    Parameters
    ----------
    predicted, truth : sequence of (label, z_low_mm, z_high_mm)
        Regions along the patient's z axis (either order of the two bounds).

    Returns
    -------
    float or None
        In [0, 1]; None when the truth has no extent.
    """
    total = sum(abs(hi - lo) for _, lo, hi in truth)
    if total <= 0:
        return None
    agree = 0.0
    for label, tlo, thi in truth:
        tlo, thi = min(tlo, thi), max(tlo, thi)
        spans = sorted((max(tlo, min(plo, phi)), min(thi, max(plo, phi)))
                       for plab, plo, phi in predicted if plab == label)
        covered, reach = 0.0, tlo  # union of the overlaps, so that overlapping predictions count once
        for lo, hi in spans:
            lo = max(lo, reach)
            if hi > lo:
                covered += hi - lo
                reach = hi
        agree += covered
    return agree / total
