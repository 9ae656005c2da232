"""Radiomics settings TOML -> :class:`~dicomnode.analysis.radiomics.RadiomicsSettings`.

The file is read once and checked whole: every error is reported (a :class:`~dicomnode.errors.ConfigErrors` naming
each key, its value and the fix). ``conf/radiomics/`` ships ``ibsi-config-A.toml`` ... ``ibsi-config-E.toml`` (the
five IBSI-1 configurations), ``ibsi2-config-1A.toml`` ... ``ibsi2-config-9B.toml`` (the IBSI-2 phase-2 filter
configurations) and ``default.toml``; :func:`resolve_settings` takes such a name or a path.

Layout (every key optional; intensities in the image's own unit, HU for CT)::

    name = "ibsi-config-C"
    [interpolation]
    method = "linear"                      # none | nearest | linear | cubic
    spacing_mm = 2.0                       # or [z, y, x]
    in_plane_only = false                  # true: keep the slices, interpolate y and x only
    round_intensities = true
    mask_method = "linear"
    mask_partial_volume_threshold = 0.5
    [resegmentation]
    range = [-1000, 400]                   # "-inf" / "inf" leave a side open
    outlier_sd = 3
    [discretisation]
    method = "fixed_bin_size"              # none | fixed_bin_size | fixed_bin_number
    bin_size = 25
    lower = -1000                          # default: the re-segmentation range's lower bound, else the ROI minimum
    n_bins = 32
    [ivh]
    method = "fixed_bin_size"
    bin_size = 2.5
    n_bins = 1000
    [texture]
    dimensions = ["3D"]                    # any of "2D", "2.5D", "3D"
    distance = 1                           # GLCM / NGTDM / NGLDM Chebyshev distance (only 1)
    zone_linkage_distance = 1              # GLSZM / GLDZM (only 1)
    ngldm_coarseness = 0                   # NGLDM alpha (only 0)
    [features]
    families = ["morphology", "GLCM"]      # default: all
    [filter]                               # IBSI-2: features of a filter's response map (after re-segmentation)
    kind = "gabor"                         # mean | laplacian_of_gaussian | laws | gabor | separable_wavelet |
                                           # nonseparable_wavelet | riesz_laplacian_of_gaussian | riesz_simoncelli
    dimensionality = "3D"                  # "2D": each axial slice; "3D": the volume
    boundary = "mirror"                    # zero | nearest | periodic | mirror (edge voxel repeated)
    gabor_sigma_mm = 5.0                   # plus the kind's parameters: support_voxels, sigma_mm, truncate_sigma,
    gabor_lambda_mm = 2.0                  # laws_kernel, energy_delta_voxels, gabor_gamma, gabor_theta_rad,
    gabor_gamma = 1.5                      # wavelet, wavelet_map, level, riesz_order,
    rotation_invariance = true             # riesz_structure_tensor_sigma_mm, response (Gabor: modulus | real |
    gabor_dtheta_rad = "pi/8"              # imaginary | argument); angles in radians or as "pi/8", "5*pi/4"
    pooling = "average"                    # max | average | min (rotation invariance)
    orthogonal_planes = true
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

from dicomnode.analysis.filters import Boundary, FilterKind, FilterSpec, Pooling
from dicomnode.analysis.filters.spatial import GaborResponse
from dicomnode.analysis.filters.spec import PARAMETERS
from dicomnode.analysis.radiomics import ALL_FAMILIES, Discretisation, Interpolation, RadiomicsSettings
from dicomnode.errors import ConfigError, ConfigErrors

__all__ = ["SETTINGS_DIR", "SettingsScope", "builtin_settings", "load_settings", "resolve_settings",
           "settings_from_dict", "settings_scope"]

#: The shipped settings files.
SETTINGS_DIR = Path(__file__).parent.parent / "conf" / "radiomics"  # shipped inside the package (dicomnode/conf)

_KEYS: dict[str, set[str]] = {
    "": {"name", "description", "modalities", "intensity_unit", "interpolation", "resegmentation", "discretisation",
         "ivh", "texture", "features",
         "filter"},
    "interpolation": {"method", "spacing_mm", "in_plane_only", "round_intensities", "mask_method",
                      "mask_partial_volume_threshold"},
    "resegmentation": {"range", "outlier_sd"},
    "discretisation": {"method", "bin_size", "lower", "n_bins"},
    "ivh": {"method", "bin_size", "n_bins"},
    "texture": {"dimensions", "distance", "zone_linkage_distance", "ngldm_coarseness"},
    "features": {"families"},
    "filter": {"kind", "dimensionality", "boundary", "support_voxels", "sigma_mm", "truncate_sigma", "laws_kernel",
               "rotation_invariance", "pooling", "energy_delta_voxels", "gabor_sigma_mm", "gabor_lambda_mm",
               "gabor_gamma", "gabor_theta_rad", "gabor_dtheta_rad", "orthogonal_planes", "response", "wavelet",
               "wavelet_map", "level", "riesz_order", "riesz_structure_tensor_sigma_mm"},
}
_FIXED = {"distance": (1, "only Chebyshev distance 1 is implemented (IBSI default); use 1"),
          "zone_linkage_distance": (1, "only linkage distance 1 is implemented (IBSI default); use 1"),
          "ngldm_coarseness": (0, "only coarseness alpha 0 is implemented (IBSI default); use 0")}


class SettingsScope:
    """What images a settings file is for: ``modalities = ["CT"]`` and ``intensity_unit = "HU"`` at its top level.

    Settings with fixed intensity bins or ranges (``ibsi-config-C``: bins of 25 HU from -1000 HU) give meaningless
    features on another kind of image: on a PET every voxel falls into one bin. ``dicomnode radiomics`` refuses such
    a mismatch unless ``--force``. No ``modalities``: any image (e.g. ``default``, which bins by number).
    """

    __slots__ = ("name", "modalities", "intensity_unit")

    def __init__(self, name: str, modalities: tuple[str, ...], intensity_unit: str) -> None:
        self.name, self.modalities, self.intensity_unit = name, modalities, intensity_unit

    def mismatch(self, modality: str) -> str | None:
        """Why these settings do not suit an image of ``modality``, or None."""
        if not self.modalities or not modality or modality.upper() in self.modalities:
            return None
        unit = f" (intensities in {self.intensity_unit})" if self.intensity_unit else ""
        return (f"settings {self.name} are for {'/'.join(self.modalities)} images{unit}, this image is {modality}: "
                "its fixed bins and ranges would not mean anything here; use settings for this modality (e.g. "
                "default, which bins by number) or --force")


def settings_scope(name_or_path: str | Path | None) -> SettingsScope:
    """The :class:`SettingsScope` of a shipped name or settings file (read after :func:`resolve_settings`)."""
    shipped = builtin_settings()
    key = "default" if name_or_path is None else str(name_or_path)
    path = shipped.get(key, Path(key))
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    mods = data.get("modalities", [])
    return SettingsScope(str(data.get("name", Path(path).stem)), tuple(str(m).upper() for m in mods),
                         str(data.get("intensity_unit", "")))


def builtin_settings() -> dict[str, Path]:
    """The shipped settings: name (file stem, e.g. "ibsi-config-C") -> path."""
    return {p.stem: p for p in sorted(SETTINGS_DIR.glob("*.toml"))}


def resolve_settings(name_or_path: str | Path | None) -> RadiomicsSettings:
    """Load settings by shipped name ("default", "ibsi-config-A" ... "-E", "ibsi2-config-1A" ... "-9B") or a TOML path.

    Raises
    ------
    ConfigError
        When neither a shipped name nor an existing file, or the file is invalid (ConfigErrors lists every error).
    """
    if name_or_path is None:
        name_or_path = "default"
    shipped = builtin_settings()
    if str(name_or_path) in shipped:
        return load_settings(shipped[str(name_or_path)])
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError("settings", str(name_or_path), f"no such file; give a TOML path or one of "
                          f"{sorted(shipped)}")
    return load_settings(path)


def load_settings(path: str | Path) -> RadiomicsSettings:
    """Read a settings TOML file.

    Raises
    ------
    ConfigError
        The file cannot be read or is not TOML; ConfigErrors (a ConfigError) with every invalid key otherwise.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("settings", str(path), f"cannot be read ({exc.strerror}); check the path") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("settings", str(path), f"is not valid TOML: {exc}") from exc
    return settings_from_dict(data, source=str(path), default_name=path.stem)


def settings_from_dict(data: dict[str, Any], *, source: str = "", default_name: str = "custom") -> RadiomicsSettings:
    """Build settings from a parsed TOML document; every error reported at once (ConfigErrors)."""
    errors: list[ConfigError] = []

    def err(key: str, value: object, fix: str) -> None:
        errors.append(ConfigError(key, value, fix))

    for section, allowed in _KEYS.items():
        table = data if section == "" else data.get(section, {})
        if section and not isinstance(table, dict):
            err(section, table, f"must be a table: write [{section}] with its keys below it")
            continue
        for key in table:
            if key not in allowed:
                where = f"{section}.{key}" if section else key
                err(where, table[key], f"unknown key; [{section or 'top level'}] takes {sorted(allowed)}")

    def sec(name: str) -> dict[str, Any]:
        t = data.get(name, {})
        return t if isinstance(t, dict) else {}

    mods = data.get("modalities", [])
    if not isinstance(mods, list) or any(not isinstance(m, str) or not m.strip() for m in mods):
        err("modalities", mods, "a list of DICOM Modality values the settings are for, e.g. [\"CT\"] ([]: any)")
    unit = data.get("intensity_unit", "")
    if not isinstance(unit, str):
        err("intensity_unit", unit, "the unit of the intensities the bins and ranges are in, e.g. \"HU\"")

    kw: dict[str, Any] = {}
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        err("name", name, "use a non-empty string, e.g. \"ibsi-config-C\"")
    else:
        kw["name"] = name

    def enum(section: str, key: str, cls, target: str) -> None:
        t = sec(section)
        if key in t:
            try:
                kw[target] = cls(t[key])
            except ValueError:
                err(f"{section}.{key}", t[key], f"use one of {[m.value for m in cls]}")

    def number(section: str, key: str, target: str, *, integer: bool = False) -> None:
        t = sec(section)
        if key in t:
            v = t[key]
            ok = isinstance(v, int) if integer else isinstance(v, (int, float))
            if isinstance(v, bool) or not ok:
                err(f"{section}.{key}", v, "use an integer, e.g. 32" if integer else "use a number, e.g. 25")
            else:
                kw[target] = v if integer else float(v)

    def boolean(section: str, key: str, target: str) -> None:
        t = sec(section)
        if key in t:
            if isinstance(t[key], bool):
                kw[target] = t[key]
            else:
                err(f"{section}.{key}", t[key], "use true or false")

    # [interpolation]
    enum("interpolation", "method", Interpolation, "interpolation")
    enum("interpolation", "mask_method", Interpolation, "mask_interpolation")
    boolean("interpolation", "in_plane_only", "in_plane_only")
    boolean("interpolation", "round_intensities", "round_intensities")
    number("interpolation", "mask_partial_volume_threshold", "mask_pv_threshold")
    spacing = sec("interpolation").get("spacing_mm")
    if spacing is not None:
        values = [spacing] * 3 if isinstance(spacing, (int, float)) and not isinstance(spacing, bool) else spacing
        if (not isinstance(values, list) or len(values) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            err("interpolation.spacing_mm", spacing, "use one number (isotropic) or [z, y, x] in mm, e.g. 2.0")
        else:
            kw["spacing_mm"] = tuple(float(v) for v in values)
    # [resegmentation]
    rng = sec("resegmentation").get("range")
    if rng is not None:
        bounds = _bounds(rng)
        if bounds is None:
            err("resegmentation.range", rng, "use [lower, upper] in the image's unit, e.g. [-1000, 400]; \"-inf\" "
                "or \"inf\" leaves a side open; remove the key for no range")
        else:
            kw["range_lower"], kw["range_upper"] = bounds
    number("resegmentation", "outlier_sd", "outlier_sd")
    # [discretisation], [ivh]
    enum("discretisation", "method", Discretisation, "discretisation")
    number("discretisation", "bin_size", "bin_size")
    number("discretisation", "lower", "bin_lower")
    number("discretisation", "n_bins", "n_bins", integer=True)
    enum("ivh", "method", Discretisation, "ivh_discretisation")
    number("ivh", "bin_size", "ivh_bin_size")
    number("ivh", "n_bins", "ivh_n_bins", integer=True)
    # A method without its parameter must not silently inherit the dataclass default of another method.
    for section, prefix in (("discretisation", ""), ("ivh", "ivh_")):
        method = kw.get(f"{prefix}discretisation" if prefix else "discretisation")
        if method is not None and method is not Discretisation.FIXED_BIN_NUMBER and "n_bins" not in sec(section):
            kw[f"{prefix}n_bins"] = None
    # [texture]
    t = sec("texture")
    if "dimensions" in t:
        dims = t["dimensions"]
        if not isinstance(dims, list) or not dims or not all(isinstance(d, str) for d in dims):
            err("texture.dimensions", dims, "use a list of \"2D\", \"2.5D\", \"3D\", e.g. [\"3D\"]")
        else:
            kw["dimensions"] = tuple(dims)
    for key, (value, fix) in _FIXED.items():
        if key in t and (isinstance(t[key], bool) or t[key] != value):
            err(f"texture.{key}", t[key], fix)
    # [features]
    fams = sec("features").get("families")
    if fams is not None:
        if not isinstance(fams, list) or not all(isinstance(f, str) for f in fams):
            err("features.families", fams, f"use a list of {list(ALL_FAMILIES)}")
        else:
            unknown = [f for f in fams if f not in ALL_FAMILIES]
            if unknown:
                err("features.families", unknown, f"unknown; use names from {list(ALL_FAMILIES)}")
            else:
                kw["families"] = tuple(dict.fromkeys(fams))

    # [filter]
    if isinstance(data.get("filter"), dict):
        spec = _filter_spec(data["filter"], err)
        if spec is not None:
            kw["filter"] = spec

    settings = None
    try:
        settings = RadiomicsSettings(**kw)
    except ConfigErrors as exc:
        errors.extend(exc.errors)
    except ConfigError as exc:
        errors.append(exc)
    if errors:
        raise ConfigErrors(_dedupe(errors), source)
    assert settings is not None
    return settings


def _bounds(rng: object) -> tuple[float | None, float | None] | None:
    if not isinstance(rng, list) or len(rng) != 2:
        return None
    out: list[float | None] = []
    for v, open_side in zip(rng, ("-inf", "inf")):
        if isinstance(v, str) and v == open_side:
            out.append(None)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
        else:
            return None
    return out[0], out[1]


def _dedupe(errors: list[ConfigError]) -> list[ConfigError]:
    seen, out = set(), []
    for e in errors:
        if str(e) not in seen:
            seen.add(str(e))
            out.append(e)
    return out


_ANGLE = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*\*\s*)?pi\s*(?:/\s*(\d+(?:\.\d+)?))?\s*$")


def _angle(v: object) -> float | None:
    """Radians from a number or a string like "pi/8", "5*pi/4"; None when neither."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    if isinstance(v, str):
        m = _ANGLE.match(v)
        if m:
            return float(m.group(1) or 1.0) * math.pi / float(m.group(2) or 1.0)
    return None


def _filter_spec(t: dict[str, Any], err) -> FilterSpec | None:
    """The [filter] table as a FilterSpec; every bad key reported through `err`, None when any is bad."""
    bad: set[str] = set()

    def fail(key: str, value: object, fix: str) -> None:
        bad.add(f"filter.{key}")
        err(f"filter.{key}", value, fix)

    kw: dict[str, Any] = {}
    if "kind" not in t:
        fail("kind", None, f"[filter] needs kind = one of {[k.value for k in FilterKind]}")
    else:
        try:
            kw["kind"] = FilterKind(t["kind"])
        except ValueError:
            fail("kind", t["kind"], f"use one of {[k.value for k in FilterKind]}")
    dim = t.get("dimensionality", "3D")
    if dim not in ("2D", "3D"):
        fail("dimensionality", dim, "use \"2D\" (each axial slice) or \"3D\"")
    else:
        kw["in_plane_only"] = dim == "2D"
    for key, parse in (("boundary", Boundary.parse), ("pooling", Pooling.parse), ("response", GaborResponse)):
        if key in t:
            try:
                kw[key] = parse(t[key])
            except ValueError:
                choices = {"boundary": Boundary, "pooling": Pooling, "response": GaborResponse}[key]
                fail(key, t[key], f"use one of {[c.value for c in choices]}")
    for key in ("rotation_invariance", "orthogonal_planes"):
        if key in t:
            if isinstance(t[key], bool):
                kw[key] = t[key]
            else:
                fail(key, t[key], "use true or false")
    for key in ("support_voxels", "energy_delta_voxels", "level"):
        if key in t:
            if isinstance(t[key], int) and not isinstance(t[key], bool):
                kw[key] = t[key]
            else:
                fail(key, t[key], "use an integer, e.g. 1")
    for key in ("sigma_mm", "truncate_sigma", "gabor_sigma_mm", "gabor_lambda_mm", "gabor_gamma",
                "riesz_structure_tensor_sigma_mm"):
        if key in t:
            v = t[key]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                kw[key] = float(v)
            else:
                fail(key, v, "use a number, e.g. 1.5")
    for key in ("gabor_theta_rad", "gabor_dtheta_rad"):
        if key in t:
            a = _angle(t[key])
            if a is None:
                fail(key, t[key], "use radians: a number or a string like \"pi/8\" or \"5*pi/4\"")
            else:
                kw[key] = a
    for key in ("laws_kernel", "wavelet", "wavelet_map"):
        if key in t:
            if isinstance(t[key], str) and t[key]:
                kw[key] = t[key].lower() if key == "wavelet" else t[key].upper()
            else:
                fail(key, t[key], "use a string, e.g. \"L5E5E5\", \"db3\" or \"LLH\"")
    if "riesz_order" in t:
        o = t["riesz_order"]
        if isinstance(o, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in o):
            kw["riesz_order"] = tuple(o)
        else:
            fail("riesz_order", o, "use a list of integers in (x, y, z) order, e.g. [0, 2, 0]")
    if "kind" in kw:
        allowed = set(PARAMETERS[kw["kind"]]) | {"kind", "dimensionality", "boundary"}
        if kw["kind"] is FilterKind.GABOR:
            allowed.add("truncate_sigma")
        for key in t:
            if key in _KEYS["filter"] and key not in allowed:
                fail(key, t[key], f"not a parameter of {kw['kind'].value}; it takes {sorted(allowed - {'kind'})}")
    if "kind" not in kw:
        return None
    try:
        spec = FilterSpec(**kw)
    except ConfigErrors as exc:
        problems = exc.errors
    except ConfigError as exc:
        problems = [exc]
    else:
        return spec if not bad else None
    for e in problems:  # the spec's own checks, except on keys already reported as unreadable
        if e.key not in bad:
            err(e.key, e.value, e.fix)
    return None
