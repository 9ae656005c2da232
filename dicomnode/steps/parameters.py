"""The parameters every profile step accepts, as data: checked when a configuration is loaded (``config check``).

A step table (``[profiles.NAME.STEP]``) is checked key by key against :data:`STEP_PARAMETERS`: an unknown key, a
value of the wrong type or one out of range is a :class:`~dicomnode.errors.ConfigError` naming the key and the fix,
before any job runs. Steps with a ``method`` accept the keys of that method (``segment`` with ``method = "auto"``
accepts those of both methods it may pick). Every step accepts ``optional`` (a failure is noted, the job goes on).

This module imports nothing heavy (no analysis, no scikit-learn), so loading a configuration stays cheap; a test
checks that the keys here are exactly the keyword parameters of the functions the step adapters call, so the two
cannot drift apart. The adapters still check their values themselves when a job runs (a value may depend on the
image, e.g. a window on an image in HU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Param", "STEP_METHODS", "STEP_PARAMETERS", "check_step_params"]


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: its kind, its range and an example value for messages.

    ``kind``: ``number`` (int or float), ``integer``, ``boolean``, ``text``, ``choice`` (one of ``choices``),
    ``choices`` (a list drawn from ``choices``), ``pair`` (``[low, high]`` numbers, low < high), ``texts`` (a list of
    strings), ``pairs`` (a list of ``["a", "b"]`` string pairs). ``none`` lists the strings that also mean "none"
    (``bin_width = "none"``).
    """

    kind: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    example: str = ""
    none: tuple[str, ...] = ()
    exclusive_minimum: bool = False  # value must be > minimum (not >=)

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` and how to fix it, or None."""
        if isinstance(value, str) and value in self.none:
            return None
        e = f", e.g. {self.example}" if self.example else ""
        k = self.kind
        if k in ("number", "integer"):
            if isinstance(value, bool) or not isinstance(value, int if k == "integer" else (int, float)):
                alt = f" or \"{self.none[0]}\"" if self.none else ""
                return f"must be {'a whole number' if k == 'integer' else 'a number'}{alt}{e}"
            if self.minimum is not None and (value <= self.minimum if self.exclusive_minimum else value < self.minimum):
                return f"must be {'>' if self.exclusive_minimum else '>='} {self.minimum:g}{e}"
            if self.maximum is not None and value > self.maximum:
                return f"must be <= {self.maximum:g}{e}"
            return None
        if k == "boolean":
            return None if isinstance(value, bool) else "must be true or false (no quotes)"
        if k == "text":
            return None if isinstance(value, str) and value else f"must be a non-empty string in quotes{e}"
        if k == "choice":
            return None if value in self.choices else f"use one of: {', '.join(map(str, self.choices))}"
        if k == "choices":
            if isinstance(value, list) and all(v in self.choices for v in value):
                return None
            return f"a list drawn from: {', '.join(self.choices)}{e}"
        if k == "texts":
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return None
            return f"a list of strings{e}"
        if k == "pair":
            if (isinstance(value, list) and len(value) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                    and value[0] < value[1]):
                return None
            return f"a list of two numbers [low, high], low < high{e}"
        if k == "two_numbers":
            if (isinstance(value, list) and len(value) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                return None
            return f"a list of two numbers{e}"
        if k == "pairs":
            if isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str)
                                                                                          for x in p) for p in value):
                return None
            return f"a list of [label_a, label_b] pairs{e}"
        raise AssertionError(f"unknown parameter kind {k!r}")


def _n(minimum: float | None = None, maximum: float | None = None, example: str = "", *, above: bool = False,
       none: tuple[str, ...] = ()) -> Param:
    return Param("number", minimum, maximum, example=example, exclusive_minimum=above, none=none)


def _i(minimum: float | None = None, maximum: float | None = None, example: str = "") -> Param:
    return Param("integer", minimum, maximum, example=example)


_B = Param("boolean")
_FRACTION = _n(0, 1, "0.25")
_ANISOTROPY = _n(1, None, "2.5")
_PAIR = Param("pair", example="[200, 3000]")
_OPTIONAL = {"optional": _B}

_SEGMENT_CT = {
    "body_threshold_hu": _n(example="-500"), "lung_threshold_hu": _n(example="-400"),
    "bone_range_hu": _PAIR, "adipose_range_hu": _PAIR, "soft_tissue_range_hu": _PAIR,
    "coarse_mm": _n(0, None, "3", above=True), "table_max_thickness_mm": _n(0, None, "16", above=True),
    "min_body_part_fraction": _FRACTION, "min_lung_volume_ml": _n(0, None, "30"),
    "lung_parenchyma_hu": _n(example="-950"), "min_lung_parenchyma_fraction": _FRACTION,
    "trachea_max_area_mm2": _n(0, None, "700", above=True), "trachea_midline_mm": _n(0, None, "30", above=True),
    "fov_inside_body_fraction": _FRACTION, "padding_below_hu": _n(example="-1500"),
    "lung_envelope_closing_mm": _n(0, None, "30"),
}
_SEGMENT_GENERIC = {
    "n_classes": _i(2, 16, "3"), "foreground_threshold": _n(example="100"), "min_part_fraction": _FRACTION,
    "max_samples": _i(100, None, "50000"), "fov_inside_body_fraction": _FRACTION,
    "chunk_voxels": _i(1, None, "1000000"),
}
_DETECT_LIMITS = {
    "min_diameter_mm": _n(0, None, "4"), "min_volume_ml": _n(0, None, "0.03"), "max_findings": _i(0, None, "10"),
    "probability_threshold": _n(0, 1, "0.5"),
}
_DETECT_LUNG = {
    "closing_mm": _n(0, None, "25"), "tissue_range_hu": Param("pair", example="[-400, 200]"),
    "parenchyma_hu": _n(example="-850"), "max_radius_mm": _n(0, None, "40", above=True),
    "coarse_mm": _n(0, None, "2.5", above=True), "min_response_hu": _n(0, None, "100"),
    "vessel_opening_mm": _n(0, None, "1.5"), "max_candidates": _i(1, None, "40"), "mirror_axis": _i(0, 2, "2"),
}
_DETECT_TISSUE = {
    "model": Param("text", example="\"hand-set\", \"calibrated\", \"findings\", a calibration .json file or the path "
                                   "of a .skops file"),
    "polarity": Param("choice", choices=("both", "bright", "dark")),
    "window": Param("pair", example="[-200, 250]"), "max_radius_mm": _n(0, None, "45", above=True),
    "coarse_mm": _n(0, None, "4", above=True), "min_response": _n(0, None, "1"), "z_clip": _n(0, None, "8", above=True),
    "max_candidates": _i(1, None, "20"), "work_mm": _n(0, None, "2", above=True),
    "hot_threshold": _n(example="2.5"), "mirror_axis": _i(0, 2, "2"), "symmetric_max": _n(0, 1, "0.3"),
    "symmetric_factor": _n(0, 1, "0.1"), "percist_liver": _B,
    "cranial": Param("choice", choices=(1, -1)),  # type: ignore[arg-type]
    "calibration": Param("two_numbers", example="[1.0, 0.0] (Platt slope, intercept)"),
    "no_data_below": _n(example="-1500"),
}

#: step -> method -> {key: Param}; the method ``None`` holds a step without methods. ``method`` itself is in
#: :data:`STEP_METHODS` (the default first).
STEP_PARAMETERS: Mapping[str, Mapping[str | None, Mapping[str, Param]]] = {
    "foreground": {None: {"threshold": _n(example="-500")}},
    "enhance": {
        "background_blend": {"alpha": _n(0, None, "1.5"), "background_sigma_mm": _n(0, None, "20", above=True),
                             "max_anisotropy": _ANISOTROPY},
        "window": {"center": _n(example="40"), "width": _n(0, None, "400", above=True), "normalise": _B},
        "clahe": {"clip_limit": _n(0, 1, "0.01", above=True), "kernel_size_mm": _n(0, None, "50", above=True),
                  "value_range": Param("pair", example="[-1000, 1000]"), "nbins": _i(2, None, "256"),
                  "max_anisotropy": _ANISOTROPY},
    },
    "denoise": {
        "gaussian": {"sigma_mm": _n(0, None, "1.0"), "max_anisotropy": _ANISOTROPY},
        "box_mean": {"size_mm": _n(0, None, "3", above=True), "n": _i(1, None, "3"), "max_anisotropy": _ANISOTROPY},
        "median": {"size_mm": _n(0, None, "2", above=True), "max_anisotropy": _ANISOTROPY},
        "nl_means": {"h_factor": _n(0, None, "0.8", above=True), "patch_size": _i(1, None, "5"),
                     "patch_distance": _i(1, None, "6"), "fast_mode": _B, "sigma": _n(0, None, "10", above=True),
                     "max_anisotropy": _ANISOTROPY, "max_sigma_slices": _i(1, None, "16")},
    },
    "segment": {
        "auto": {**_SEGMENT_CT, **_SEGMENT_GENERIC},
        "ct": _SEGMENT_CT,
        "generic": _SEGMENT_GENERIC,
        "foreground": {"threshold": _n(example="-500")},
    },
    "correct": {None: {
        "min_volume_ml": _n(0, None, "0.5"), "fill_holes": _B, "slice_wise": _B,
        "hole_filled_labels": Param("texts", example="[\"body\", \"lung_left\", \"lung_right\"]"),
        "connectivity": _i(1, 3, "1"), "posterior_sigma_mm": _n(0, None, "1.5"), "posterior_iterations": _i(1, None, "3"),
    }},
    "features": {None: {
        "families": Param("choices", choices=("morphology", "intensity statistics", "intensity histogram",
                                              "intensity-volume histogram", "local intensity", "texture"),
                          example="[\"morphology\", \"intensity statistics\"]"),
        "bin_width": _n(0, None, "25 (image units), or \"none\" to use n_bins", above=True, none=("none",)),
        "bin_lower": _n(example="-1000"),
        "n_bins": _i(2, None, "32"),
        "morphology_max_voxels": _i(1, None, "1000000"), "moran_max_voxels": _i(1, None, "100000"),
        "local_max_voxels": _i(1, None, "2000000"),
        "texture_aggregations": Param("choices", choices=("2D", "2.5D", "3D", "2D, averaged", "2D, slice-merged",
                                                          "2.5D, direction-merged", "2.5D, merged", "3D, averaged",
                                                          "3D, merged"), example="[\"3D\"]"),
    }},
    "measure": {None: {}},
    "detect": {
        "auto": {**_DETECT_LIMITS, **_DETECT_LUNG, **_DETECT_TISSUE},
        "lung": {**_DETECT_LIMITS, **_DETECT_LUNG,
                 "model": Param("text", example="\"hand-set\", \"calibrated\" or a calibration .json file"),
                 "calibration": _DETECT_TISSUE["calibration"]},
        "tissue_model": {**_DETECT_LIMITS, **_DETECT_TISSUE},
    },
    "synthesize": {None: {
        "projections": Param("choices", choices=("mip", "minip", "avg"), example="[\"mip\"]"),
        "slab_mm": _n(0, None, "10", above=True), "spacing_mm": _n(0, None, "10", above=True),
        "source": Param("choice", choices=("original", "working")), "include_working": _B,
    }},
    "scene": {None: {"model": Param("text", example="\"scene\" or the path of a .skops file")}},
    "classify": {None: {"model": Param("text", example="the path of a .skops file from `dicomnode train`"),
                        "segment": Param("text", example="\"lung_left\"")}},
    "match": {None: {"pairs": Param("pairs", example="[[\"lung_left\", \"lung_right\"]]"),
                     "n_bins": _i(2, None, "64")}},
}

#: step -> its methods, the default first (steps without methods are absent)
STEP_METHODS: Mapping[str, tuple[str, ...]] = {
    "enhance": ("background_blend", "window", "clahe"),
    "denoise": ("gaussian", "box_mean", "median", "nl_means"),
    "segment": ("auto", "ct", "generic", "foreground"),
    "detect": ("auto", "lung", "tissue_model"),
}

#: keys a step cannot do without
_REQUIRED: Mapping[tuple[str, str | None], tuple[str, ...]] = {
    ("enhance", "window"): ("center", "width"),
    ("enhance", "clahe"): ("value_range",),
    ("classify", None): ("model",),
}


def check_step_params(step: str, params: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """Every problem of one step table: ``(key, value, fix)``, the key relative to the table (``""``: the table).

    Unknown steps give no problem here (the profile's ``steps`` check names them).
    """
    spec = STEP_PARAMETERS.get(step)
    if spec is None:
        return []
    out: list[tuple[str, Any, str]] = []
    method: str | None = None
    methods = STEP_METHODS.get(step)
    if methods:
        method = params.get("method", methods[0])
        if method not in methods:
            out.append(("method", method, f"unknown method of step {step}; use one of: {', '.join(methods)}"))
            return out
    elif "method" in params:
        out.append(("method", params["method"], f"step {step} has no methods; remove `method`"))
    allowed = {**spec[method], **_OPTIONAL}
    for key, value in params.items():
        if key == "method" and methods:
            continue
        p = allowed.get(key)
        if p is None:
            if key == "method":
                continue
            where = f"step {step}" + (f" with method = \"{method}\"" if method else "")
            keys = ", ".join(sorted(allowed) + (["method"] if methods else []))
            out.append((key, value, f"unknown parameter of {where}; allowed: {keys}"))
            continue
        why = p.problem(value)
        if why is not None:
            out.append((key, value, why))
    for key in _REQUIRED.get((step, method), ()):
        if key not in params:
            out.append((key, None, f"required by step {step}" + (f" with method = \"{method}\"" if method else "")
                        + f"; add it{', e.g. ' + allowed[key].example if allowed[key].example else ''}"))
    if step == "denoise" and method == "box_mean" and ("size_mm" in params) == ("n" in params):
        out.append(("", dict(params), "box_mean takes exactly one of size_mm (mm) or n (voxels)"))
    return out
