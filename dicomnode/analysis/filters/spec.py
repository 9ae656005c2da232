"""One IBSI-2 filter as a typed, frozen value, and the function that applies it.

:class:`FilterSpec` mirrors the ``[filter]`` table of the radiomics settings (``dicomnode.config.radiomics``) and the
columns of the IBSI-2 test tables: a kind, its parameters (widths in mm where IBSI-2 gives mm, in voxels where it
gives voxels), the boundary condition, 2D or 3D, rotation invariance with its pooling, and the response map to keep.
:func:`apply_filter` runs it on a (Z, Y, X) image; :func:`filter_margin_voxels` says how far the kernel reaches, so
a caller can filter only the ROI's bounding box plus that margin (same values inside the ROI, far less work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from dicomnode.analysis.filters._common import Boundary, Pooling
from dicomnode.analysis.filters.fourier import riesz, simoncelli, steered_riesz
from dicomnode.analysis.filters.spatial import (
    LAWS_KERNELS,
    WAVELETS,
    GaborResponse,
    gabor,
    laplacian_of_gaussian,
    laws,
    mean,
    separable_wavelet,
)
from dicomnode.errors import ConfigError, ConfigErrors

__all__ = ["FilterKind", "FilterSpec", "apply_filter", "filter_margin_voxels"]


class FilterKind(str, Enum):
    """The IBSI-2 filter families (names as in the IBSI-2 test tables)."""

    MEAN = "mean"
    LAPLACIAN_OF_GAUSSIAN = "laplacian_of_gaussian"
    LAWS = "laws"
    GABOR = "gabor"
    SEPARABLE_WAVELET = "separable_wavelet"
    NONSEPARABLE_WAVELET = "nonseparable_wavelet"  # Simoncelli
    RIESZ_LAPLACIAN_OF_GAUSSIAN = "riesz_laplacian_of_gaussian"
    RIESZ_SIMONCELLI = "riesz_simoncelli"


#: Parameters each kind uses (the TOML keys of ``[filter]`` besides kind, dimensionality and boundary).
PARAMETERS: dict[FilterKind, tuple[str, ...]] = {
    FilterKind.MEAN: ("support_voxels",),
    FilterKind.LAPLACIAN_OF_GAUSSIAN: ("sigma_mm", "truncate_sigma"),
    FilterKind.LAWS: ("laws_kernel", "rotation_invariance", "pooling", "energy_delta_voxels"),
    FilterKind.GABOR: ("gabor_sigma_mm", "gabor_lambda_mm", "gabor_gamma", "gabor_theta_rad", "rotation_invariance",
                       "gabor_dtheta_rad", "pooling", "orthogonal_planes", "response"),
    FilterKind.SEPARABLE_WAVELET: ("wavelet", "wavelet_map", "level", "rotation_invariance", "pooling"),
    FilterKind.NONSEPARABLE_WAVELET: ("wavelet", "wavelet_map", "level"),
    FilterKind.RIESZ_LAPLACIAN_OF_GAUSSIAN: ("sigma_mm", "truncate_sigma", "riesz_order",
                                             "riesz_structure_tensor_sigma_mm"),
    FilterKind.RIESZ_SIMONCELLI: ("wavelet", "wavelet_map", "level", "riesz_order", "riesz_structure_tensor_sigma_mm"),
}


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """An IBSI-2 filter, valid from birth (ConfigError / ConfigErrors named by the ``[filter]`` TOML keys).

    Parameters
    ----------
    kind : FilterKind
    in_plane_only : bool
        ``dimensionality = "2D"``: filter each axial slice; "3D" (False) filters the volume. A 3D Gabor is the 2D
        kernel applied in the three orthogonal planes (``orthogonal_planes``).
    boundary : Boundary
        zero, nearest, periodic or mirror (IBSI names).
    support_voxels : int or None
        Mean filter: odd side of the support, in voxels.
    sigma_mm, truncate_sigma : float or None, float
        LoG (and Riesz of LoG): Gaussian standard deviation in mm and kernel half-width in standard deviations.
    laws_kernel : str or None
        Laws letters in (x, y[, z]) order, e.g. "L5E5E5".
    rotation_invariance : bool
        Pool the responses of rotated filters (Laws, Gabor, separable wavelets).
    pooling : Pooling
        max, average or min.
    energy_delta_voxels : int or None
        Laws energy map half-window, in voxels.
    gabor_sigma_mm, gabor_lambda_mm, gabor_gamma, gabor_theta_rad, gabor_dtheta_rad : float or None
        Gabor parameters (mm, mm, ratio, radians, radians).
    orthogonal_planes : bool
        Gabor: average over the axial, coronal and sagittal planes.
    response : GaborResponse
        Gabor: modulus, real, imaginary or argument.
    wavelet, wavelet_map, level : str, str, int
        Separable: haar / db2 / db3 / coif1 and a map like "LLH"; non-separable: "simoncelli" (map "B").
    riesz_order : tuple of int or None
        Riesz order (l_x, l_y, l_z).
    riesz_structure_tensor_sigma_mm : float or None
        If set, the Riesz transform is steered by the structure tensor with this Gaussian window, in mm.
    """

    kind: FilterKind
    in_plane_only: bool = False
    boundary: Boundary = Boundary.MIRROR
    support_voxels: int | None = None
    sigma_mm: float | None = None
    truncate_sigma: float = 4.0
    laws_kernel: str | None = None
    rotation_invariance: bool = False
    pooling: Pooling = Pooling.AVERAGE
    energy_delta_voxels: int | None = None
    gabor_sigma_mm: float | None = None
    gabor_lambda_mm: float | None = None
    gabor_gamma: float = 1.0
    gabor_theta_rad: float = 0.0
    gabor_dtheta_rad: float | None = None
    orthogonal_planes: bool = False
    response: GaborResponse = GaborResponse.MODULUS
    wavelet: str | None = None
    wavelet_map: str | None = None
    level: int = 1
    riesz_order: tuple[int, ...] | None = None
    riesz_structure_tensor_sigma_mm: float | None = None

    def __post_init__(self) -> None:
        errors = self.problems()
        if errors:
            raise errors[0] if len(errors) == 1 else ConfigErrors(errors, "radiomics settings [filter]")

    def problems(self) -> list[ConfigError]:
        """Every invalid value, as ConfigErrors named ``filter.<key>`` (empty when valid)."""
        errs: list[ConfigError] = []

        def bad(key: str, value: object, fix: str) -> None:
            errs.append(ConfigError(f"filter.{key}", value, fix))

        def positive(x: object) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0

        if not isinstance(self.kind, FilterKind):
            bad("kind", self.kind, f"use one of {[k.value for k in FilterKind]}")
            return errs
        if not isinstance(self.boundary, Boundary):
            bad("boundary", self.boundary, f"use one of {[b.value for b in Boundary]}")
        if not isinstance(self.pooling, Pooling):
            bad("pooling", self.pooling, f"use one of {[p.value for p in Pooling]}")
        k = self.kind
        dims = 2 if self.in_plane_only else 3
        if k is FilterKind.MEAN:
            s = self.support_voxels
            if not (isinstance(s, int) and not isinstance(s, bool) and s >= 1 and s % 2 == 1):
                bad("support_voxels", s, "the mean filter needs an odd support in voxels >= 1, e.g. 5")
        if k in (FilterKind.LAPLACIAN_OF_GAUSSIAN, FilterKind.RIESZ_LAPLACIAN_OF_GAUSSIAN):
            if not positive(self.sigma_mm):
                bad("sigma_mm", self.sigma_mm, "the LoG needs sigma_mm > 0 (mm), e.g. 1.5")
            if not positive(self.truncate_sigma):
                bad("truncate_sigma", self.truncate_sigma, "use a number of standard deviations > 0, e.g. 4")
        if k is FilterKind.LAWS:
            letters = (self.laws_kernel or "").upper()
            parts = [letters[i:i + 2] for i in range(0, len(letters), 2)]
            if len(parts) != dims or any(p not in LAWS_KERNELS for p in parts):
                example = "L5E5" if dims == 2 else "L5E5E5"
                bad("laws_kernel", self.laws_kernel, f"use {dims} of {sorted(LAWS_KERNELS)} in (x, y"
                    f"{', z' if dims == 3 else ''}) order for a {dims}D filter, e.g. {example}")
            d = self.energy_delta_voxels
            if d is not None and not (isinstance(d, int) and not isinstance(d, bool) and d >= 0):
                bad("energy_delta_voxels", d, "use an integer >= 0 (voxels), e.g. 7, or remove the key")
        if k is FilterKind.GABOR:
            for key, example in (("gabor_sigma_mm", "5.0 (mm)"), ("gabor_lambda_mm", "2.0 (mm)"),
                                 ("gabor_gamma", "1.5 (aspect ratio)")):
                if not positive(getattr(self, key)):
                    bad(key, getattr(self, key), f"the Gabor filter needs {key} > 0, e.g. {example}")
            if self.rotation_invariance:
                dt = self.gabor_dtheta_rad
                n = round(2 * math.pi / dt) if positive(dt) else 0
                if n < 1 or abs(n * dt - 2 * math.pi) > 1e-6:
                    bad("gabor_dtheta_rad", dt, "rotation invariance needs an angle step that divides 2 pi, e.g. "
                        "\"pi/8\"")
            if not isinstance(self.response, GaborResponse):
                bad("response", self.response, f"use one of {[r.value for r in GaborResponse]}")
            if self.orthogonal_planes and self.in_plane_only:
                bad("orthogonal_planes", True, "orthogonal-plane averaging is 3D: set dimensionality = \"3D\" or "
                    "orthogonal_planes = false")
        if k is FilterKind.SEPARABLE_WAVELET:
            if self.wavelet not in WAVELETS:
                bad("wavelet", self.wavelet, f"use one of {sorted(WAVELETS)}")
            m = (self.wavelet_map or "").upper()
            if len(m) != dims or set(m) - {"L", "H"}:
                bad("wavelet_map", self.wavelet_map, f"use {dims} letters L/H in (x, y{', z' if dims == 3 else ''}) "
                    f"order, e.g. {'LH' if dims == 2 else 'LLH'}")
        if k in (FilterKind.NONSEPARABLE_WAVELET, FilterKind.RIESZ_SIMONCELLI):
            if self.wavelet != "simoncelli":
                bad("wavelet", self.wavelet, "the non-separable wavelet is \"simoncelli\"")
            if self.wavelet_map not in (None, "B", "b"):
                bad("wavelet_map", self.wavelet_map, "the Simoncelli wavelet has one map, \"B\" (band-pass)")
        if k in (FilterKind.SEPARABLE_WAVELET, FilterKind.NONSEPARABLE_WAVELET, FilterKind.RIESZ_SIMONCELLI):
            if not (isinstance(self.level, int) and not isinstance(self.level, bool) and self.level >= 1):
                bad("level", self.level, "use a decomposition level >= 1, e.g. 1")
        if k in (FilterKind.RIESZ_LAPLACIAN_OF_GAUSSIAN, FilterKind.RIESZ_SIMONCELLI):
            o = self.riesz_order
            if (o is None or len(o) != dims or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                       for v in o) or sum(o) < 1):
                bad("riesz_order", o, f"use {dims} integers >= 0 with a sum >= 1 in (x, y{', z' if dims == 3 else ''})"
                    f" order, e.g. {[1, 0, 0][:dims]}")
            st = self.riesz_structure_tensor_sigma_mm
            if st is not None:
                if not positive(st):
                    bad("riesz_structure_tensor_sigma_mm", st, "use a Gaussian window > 0 mm, e.g. 1.0, or remove it")
                elif self.in_plane_only or (o is not None and sum(o) > 2):
                    bad("riesz_structure_tensor_sigma_mm", st, "steering is implemented in 3D for orders 1 and 2")
        if self.rotation_invariance and k not in (FilterKind.LAWS, FilterKind.GABOR, FilterKind.SEPARABLE_WAVELET):
            bad("rotation_invariance", True, f"{k.value} is already rotation invariant or has none; remove the key")
        return errs

    @property
    def label(self) -> str:
        """Short human-readable description, e.g. ``laplacian_of_gaussian(3D, mirror, sigma_mm=1.5)``."""
        params = [f"{key}={_fmt(getattr(self, key))}" for key in PARAMETERS[self.kind]
                  if getattr(self, key) is not None and _shown(self, key)]
        return f"{self.kind.value}({'2D' if self.in_plane_only else '3D'}, {self.boundary.value}" + \
            (", " + ", ".join(params) if params else "") + ")"

    def parameters(self) -> dict[str, object]:
        """The kind's parameters that are set, as TOML key -> plain value (for reports and the SR)."""
        out: dict[str, object] = {"dimensionality": "2D" if self.in_plane_only else "3D",
                                  "boundary": self.boundary.value}
        for key in PARAMETERS[self.kind]:
            v = getattr(self, key)
            if v is not None and _shown(self, key):
                out[key] = v.value if isinstance(v, Enum) else (list(v) if isinstance(v, tuple) else v)
        return out


def _shown(spec: FilterSpec, key: str) -> bool:
    if key in ("pooling", "gabor_dtheta_rad"):
        return spec.rotation_invariance
    if key == "gabor_theta_rad":
        return not spec.rotation_invariance
    if key == "rotation_invariance":
        return spec.rotation_invariance
    return True


def _fmt(v: object) -> str:
    if isinstance(v, Enum):
        return str(v.value)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return "(" + ",".join(str(x) for x in v) + ")"
    return str(v)


#: Crop margin of the Simoncelli wavelet, in voxels per 2^level: its kernel has no finite support, and its consensus
#: frequency grid (linspace(-pi, pi, n)) depends on the size; with 16 * 2^level the ROI statistics of a sarcoma CT
#: stay within 5 % of their spread of the whole image's, the mean within 0.1 % (tests/analysis/test_radiomics.py).
_FOURIER_REACH = 16


def filter_margin_voxels(spec: FilterSpec, spacing_mm: tuple[float, float, float]) -> tuple[int, int, int]:
    """How far (in voxels, per axis z, y, x) the filter reads beyond a voxel: crop to the ROI plus this margin.

    Exact for the spatial filters; for the Fourier-domain ones (Simoncelli, Riesz) a margin where the kernel has
    decayed (their kernels have no finite support): 16 * 2^level voxels.
    """
    sp = tuple(float(s) for s in spacing_mm)
    k = spec.kind
    if k is FilterKind.MEAN:
        r = [spec.support_voxels // 2] * 3
    elif k is FilterKind.LAPLACIAN_OF_GAUSSIAN:
        r = [int(spec.truncate_sigma * spec.sigma_mm / s + 0.5) + 1 for s in sp]
    elif k is FilterKind.LAWS:
        half = max(len(LAWS_KERNELS[spec.laws_kernel.upper()[i:i + 2]]) for i in range(0, len(spec.laws_kernel), 2))
        r = [half // 2 + (spec.energy_delta_voxels or 0)] * 3
    elif k is FilterKind.GABOR:
        reach = spec.truncate_sigma * spec.gabor_sigma_mm * max(1.0, 1.0 / spec.gabor_gamma)
        r = [int(math.ceil(reach / s)) for s in sp]
        if not spec.orthogonal_planes:
            r[0] = 0
    elif k is FilterKind.SEPARABLE_WAVELET:
        n = len(WAVELETS[spec.wavelet][0]) + 1
        r = [n * (2 ** spec.level - 1)] * 3
    elif k is FilterKind.NONSEPARABLE_WAVELET:
        r = [_FOURIER_REACH * 2 ** spec.level] * 3
    elif k is FilterKind.RIESZ_LAPLACIAN_OF_GAUSSIAN:
        r = [int(spec.truncate_sigma * spec.sigma_mm / s + 0.5) + 1 + 16 for s in sp]
    else:
        r = [_FOURIER_REACH * 2 ** spec.level + 16] * 3
    if spec.in_plane_only:
        r[0] = 0
    return (int(r[0]), int(r[1]), int(r[2]))


def apply_filter(image: np.ndarray, spacing_mm: tuple[float, float, float], spec: FilterSpec) -> np.ndarray:
    """The response map of `spec` on `image`.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the image's unit (HU for CT), never rescaled.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    spec : FilterSpec
        The filter.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        The response map (unit: the image's unit, per voxel^2 for the LoG).
    """
    k, b, plane = spec.kind, spec.boundary, spec.in_plane_only
    if k is FilterKind.MEAN:
        return mean(image, support_voxels=spec.support_voxels, boundary=b, in_plane_only=plane)
    if k is FilterKind.LAPLACIAN_OF_GAUSSIAN:
        return laplacian_of_gaussian(image, spacing_mm, sigma_mm=spec.sigma_mm, truncate=spec.truncate_sigma,
                                     boundary=b, in_plane_only=plane)
    if k is FilterKind.LAWS:
        return laws(image, kernel=spec.laws_kernel, boundary=b, in_plane_only=plane,
                    rotation_invariant=spec.rotation_invariance, pooling=spec.pooling,
                    energy_delta_voxels=spec.energy_delta_voxels)
    if k is FilterKind.GABOR:
        return gabor(image, spacing_mm, sigma_mm=spec.gabor_sigma_mm, wavelength_mm=spec.gabor_lambda_mm,
                     gamma=spec.gabor_gamma, theta_rad=spec.gabor_theta_rad, boundary=b, response=spec.response,
                     rotation_invariant=spec.rotation_invariance, dtheta_rad=spec.gabor_dtheta_rad,
                     pooling=spec.pooling, orthogonal_planes=spec.orthogonal_planes, truncate=spec.truncate_sigma)
    if k is FilterKind.SEPARABLE_WAVELET:
        return separable_wavelet(image, wavelet=spec.wavelet, wavelet_map=spec.wavelet_map, level=spec.level,
                                 boundary=b,
                                 rotation_invariant=spec.rotation_invariance, pooling=spec.pooling)
    if k is FilterKind.NONSEPARABLE_WAVELET:
        return simoncelli(image, level=spec.level, boundary=b, in_plane_only=plane)
    if k is FilterKind.RIESZ_LAPLACIAN_OF_GAUSSIAN:
        base = laplacian_of_gaussian(image, spacing_mm, sigma_mm=spec.sigma_mm, truncate=spec.truncate_sigma,
                                     boundary=b, in_plane_only=plane)
    else:
        base = simoncelli(image, level=spec.level, boundary=b, in_plane_only=plane)
    if spec.riesz_structure_tensor_sigma_mm is not None:
        return steered_riesz(base, image, spacing_mm, order=spec.riesz_order,
                             structure_tensor_sigma_mm=spec.riesz_structure_tensor_sigma_mm, boundary=b)
    return riesz(base, order=spec.riesz_order, boundary=b, in_plane_only=plane)
