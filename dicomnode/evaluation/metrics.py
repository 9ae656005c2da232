"""Evaluation metrics as pure functions: proportions with Wilson intervals, Dice, ranks, reliability, regions.

Nothing here reads files or knows about DICOM; :mod:`dicomnode.evaluation.run` feeds it numbers and masks.

References
----------
Wilson E.B. Probable inference, the law of succession, and statistical inference. J Am Stat Assoc 1927;22:209-212.
Newcombe R.G. Two-sided confidence intervals for the single proportion: comparison of seven methods. Stat Med
1998;17:857-872 (the Wilson score interval is method 3; its Table I gives worked values).
Dice L.R. Measures of the amount of ecologic association between species. Ecology 1945;26:297-302.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Proportion", "ReliabilityBin", "dice", "first_true_rank", "region_agreement", "reliability_table",
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
