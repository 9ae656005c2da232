"""analysis/detect.py: the faster PET detect step (issue 13) gives exactly the results of the code it replaced.

The oracles below are the functions of ``detect.py`` as they were before they were made cheaper, copied verbatim
(renamed ``old_...``; ``old_hot_regions`` takes the new ``workers`` keyword and ignores it): the largest diameter
from the full (N, N, 3) array of squared distances, regions grown, holes filled and bounded on the whole window,
shells and the liver's closing from distance transforms of the whole box, the liver's holes filled by scipy, the
small scales' noise one after the other, the hot regions filled one after the other, the liver's local spread and the
PET search image over the whole image at once. The new code measures on the
masks' bounding boxes and spreads independent work over the thread budget. On real PETs (the whole-body FDG PET and
STS_001's thigh PET, run through the shipped PET profile up to its detect step), every candidate, with its mask,
features and probability, must come out bit for bit the same, and so must the pieces on real masks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import pytest
from scipy import ndimage as ndi

from dicomnode.analysis import detect
from dicomnode.analysis.blocks import block_mean
from dicomnode.analysis.detect import (LIVER_LESION_REACH_MM, LIVER_PIECE_FRACTION, LIVER_PIECE_LEVEL,
                                       PET_MIN_SNR, PET_NOISE_WINDOW_MM, PET_SNR_CANDIDATES, DetectionSettings, _component_at, _eroded, _fill_holes, _fill_holes_boxed,
                                       _near, _stack_peaks, _cut_fraction, _truncation, _upsample_linear)
from dicomnode.analysis.threads import gaussian_filter as _gaussian
from helpers import SHARED_DATA

PETS = {
    "wholebody": SHARED_DATA / "wholebody-pet-mr" / "PET",
    "sts_001": SHARED_DATA / "sts" / "STS_001" / "PET",
}


# ------------------------------------------------------------------------------ the old code, verbatim (oracles)


def old_max_diameter_mm(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Largest distance between two voxel centres of ``mask`` plus one voxel (mean spacing), mm; 0 when empty."""
    pts = np.argwhere(mask)
    if len(pts) == 0:
        return 0.0
    sp = np.asarray(spacing_mm, dtype=float)
    extra = float(np.mean(sp))
    xyz = pts * sp
    if len(xyz) > 4:
        try:
            from scipy.spatial import ConvexHull
            xyz = xyz[ConvexHull(xyz).vertices]
        except Exception:  # noqa: BLE001 - flat or degenerate point sets: all points, subsampled
            xyz = xyz[:: max(1, len(xyz) // 2000)]
    d2 = ((xyz[:, None, :] - xyz[None, :, :]) ** 2).sum(-1)
    return float(math.sqrt(float(d2.max()))) + extra


def old_grow_region(z: np.ndarray, foreground: np.ndarray, dist_mm: np.ndarray, seed: Sequence[int], *,
                 reach_mm: float, level: float, polarity: int, spacing_mm: Sequence[float],
                 max_seed_mm: float, band_cut: bool = False) -> tuple[np.ndarray, float, bool] | None:
    """The region a blob grows to: the connected part of the foreground beyond ``level`` (above it for
    ``polarity`` 1, below for -1) within ``reach_mm`` of the blob's centre that holds ``seed`` (or lies within
    ``max_seed_mm`` of it), its holes filled.

    Parameters
    ----------
    z : (Z, Y, X) ndarray
        Intensities (z-scores) of a box around the blob.
    foreground : (Z, Y, X) bool ndarray
        Where the region may grow, on the same box.
    dist_mm : (Z, Y, X) ndarray
        Distance of each voxel from the blob's centre, mm (:func:`_distance_mm`).
    seed : sequence of 3 int
        The centre's voxel in the box.
    reach_mm, level, polarity, spacing_mm, max_seed_mm
        Growth limit (mm), threshold (``z``'s unit), 1 (bright) or -1 (dark), voxel spacing (mm), how far the
        region may lie from the seed (mm).

    Returns
    -------
    (region, truncation, closed) or None
        The region (bool, the box's shape); the fraction of its boundary on the growth limit
        (:func:`_truncation`), where it was cut, not closed by its own fall-off; and whether none of it is. None
        when no region lies within ``max_seed_mm`` of the seed.
    """
    cand = foreground & (dist_mm <= reach_mm) & ((z - level) * polarity > 0)
    region = _component_at(cand, seed, spacing_mm, max_seed_mm=max_seed_mm)
    if region is None:
        return None
    region = _fill_holes(region)
    if band_cut:  # the band of the largest spacing (the PET model's definition)
        trunc = _truncation(region, dist_mm, reach_mm, spacing_mm)
    else:  # where the limit stopped the growth (the cut's definition of 2026-12-07)
        trunc = _cut_fraction(region, foreground & (dist_mm > reach_mm) & ((z - level) * polarity > 0))
    return region, trunc, trunc == 0.0


def old_shell(region: np.ndarray, spacing_mm: Sequence[float], width_mm: float) -> np.ndarray:
    d = ndi.distance_transform_edt(~region, sampling=spacing_mm)
    return (d > 0) & (d <= width_mm)


def old_liver_organ(image: np.ndarray, foreground: np.ndarray, spacing_mm: Sequence[float], *, window_mm: float = 10.0,
                 suv_range: tuple[float, float] = (1.0, 4.0), max_cv: float = 0.2, min_volume_ml: float = 500.0,
                 reach_mm: float = LIVER_LESION_REACH_MM) -> tuple[np.ndarray, np.ndarray] | None:
    """The liver on a PET in SUV: ``(core, extent)`` masks, or None when it is not in view.

    ``core``: the homogeneous voxels (local mean over a Gaussian window of ``window_mm`` in ``suv_range``, local SD
    below ``max_cv`` times it) of the largest such region and of the pieces of the same organ a focal lesion split
    off it (within ``reach_mm``, mean level within ``LIVER_PIECE_LEVEL`` of the largest piece's, at least
    ``LIVER_PIECE_FRACTION`` of its size). A lesion, hot or cold, and the window's reach around it are never in the
    core: PERCIST's reference is normal liver. ``extent``: the core closed over ``reach_mm`` with its holes filled
    (a lesion's hole and notch belong to the organ); the organ is in view when the extent is at least
    ``min_volume_ml`` (an adult liver is 1.2-1.8 L; its homogeneous core on a clinical PET a third of that; the
    spleen's core and the heart's blood pool are smaller). Both masks are on the image's grid.
    """
    img = image.astype(np.float32, copy=False)
    sp = np.asarray(spacing_mm, dtype=float)
    sig = [window_mm / s for s in sp]
    # uptake above the highest a liver shows counts as that level: a hot lesion (or organ) beside normal liver
    # raises the local SD only as far as a step to that level does, not by its square (a 6x lesion at SUV 12)
    capped = np.minimum(img, np.float32(suv_range[1]))
    m = _gaussian(capped, sig, mode="reflect")
    capped *= capped
    v = _gaussian(capped, sig, mode="reflect", output=capped)
    del capped
    v -= m * m
    np.clip(v, 0, None, out=v)
    warm = foreground & (m > suv_range[0]) & (m < suv_range[1])
    hom = warm & (v < (max_cv * m) ** 2)
    del m, v
    lab, n = ndi.label(hom)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    k = int(np.argmax(sizes)) + 1
    vox_ml = float(np.prod(sp)) / 1000.0
    # the organ's box: its largest piece grown by twice the reach (a split-off piece starts within one)
    pad = [int(math.ceil(2.0 * reach_mm / s)) + 1 for s in sp]
    objs = ndi.find_objects(lab)
    box = tuple(slice(max(0, b.start - p), min(n_, b.stop + p)) for b, p, n_ in zip(objs[k - 1], pad, img.shape))
    sub = lab[box]
    main = sub == k
    level = float(np.median(img[box][main]))
    gap = ndi.distance_transform_edt(~main, sampling=sp)
    core = main.copy()
    for j in np.unique(sub[(gap <= reach_mm) & (sub > 0)]):
        j = int(j)
        if j == k or sizes[j - 1] < LIVER_PIECE_FRACTION * sizes[k - 1]:
            continue
        piece = sub == j
        if np.count_nonzero(piece) < sizes[j - 1] or gap[piece].max() > 2.0 * reach_mm:
            continue  # a piece the lesion split off lies wholly beside it (not a spine or a bowel loop running off)
        if abs(float(np.median(img[box][piece])) / level - 1.0) <= LIVER_PIECE_LEVEL:
            core |= piece
    # the extent: closed over the reach (distance transforms: dilate, then erode), holes filled; the box is grown
    # by the reach first so that the closing is not cut by it (a crop's edge is the field of view's: closed there)
    grown = ndi.distance_transform_edt(~core, sampling=sp) <= reach_mm
    extent = ndi.distance_transform_edt(grown, sampling=sp) > reach_mm
    extent = ndi.binary_fill_holes(extent | core)
    # the homogeneity test loses the organ's rim (the window's reach, two window widths, from its edge): the organ
    # is its extent grown back by that reach over tissue at the organ's level of uptake
    rim = ndi.distance_transform_edt(~extent, sampling=sp) <= 2.0 * window_mm
    extent |= rim & warm[box]
    if float(np.count_nonzero(extent)) * vox_ml < min_volume_ml:
        return None
    out_core = np.zeros(img.shape, dtype=bool)
    out_core[box] = core
    out_extent = np.zeros(img.shape, dtype=bool)
    out_extent[box] = extent
    return out_core, out_extent


def old_pet_snr_blobs(stack: np.ndarray, radii_mm: Sequence[float], foreground: np.ndarray,
                   spacing_mm: Sequence[float], *, window_mm: float = PET_NOISE_WINDOW_MM,
                   min_snr: float = PET_MIN_SNR, max_candidates: int = PET_SNR_CANDIDATES
                   ) -> list[tuple[tuple[int, int, int], float, float, float]]:
    """Small PET foci by signal-to-noise ratio: local maxima over space and scale of the scale-normalised LoG of
    log2 SUV (``stack``, from :func:`_log_stack`; divided in place) over the local noise of that filter output.

    A 1-2 mL lesion (radius 6-8 mm) blurred to 6-7 mm FWHM is a Gaussian-like blob of 4.5-6 mm SD: the LoG at the
    smallest radii (``r / sqrt(3)`` = the blob's SD) is its matched filter. Its response is compared with what the
    filter gives on the tissue around it, not with the strongest responses of the whole body (the brain, heart,
    kidneys and bladder answer first, and a cold lung's noise is larger in log2 SUV than the liver's): the noise SD at
    each voxel and scale is ``sqrt(2 x local mean of min(response, 0)^2)`` over a Gaussian window of ``window_mm``
    in the foreground (the negative half of a zero-mean response: a hot focus does not raise it, its own negative
    ring little, the ring around a hot organ does, which only lowers the ratio next to it). Under Gaussian noise a
    ratio of 4 is crossed by chance a few times per whole-body series (some 10^4 blob-sized volumes in a trunk;
    Worsley et al. 1996): these are candidates, which the PET model (contrast to the surroundings, peak over the
    local noise) and the organ context then weigh, not findings. The default ratio is 3, where about 18 times as
    many chance peaks as at 4 are expected (the density ``(u^2 - 1) exp(-u^2 / 2)``): tens per series, each grown and
    weighed (docs/models.md).

    Returns
    -------
    list of ((z, y, x), radius_mm, snr, response)
        The ``max_candidates`` highest ratios >= ``min_snr``, highest first; centres in the foreground, balls in
        view; ``response`` is the LoG response there (log2 SUV units).

    References
    ----------
    .. [1] K. J. Worsley et al., "A unified statistical approach for determining significant signals in images of
       cerebral activation", Human Brain Mapping 4, 1996 (expected peaks of a smooth Gaussian field above a level).
    """
    sp = np.asarray(spacing_mm, dtype=float)
    radii = [float(r) for r in radii_mm]
    # the window is wide (30 mm) and smooth: it is made on a grid of blocks about a third of its width and read back
    # at every voxel by linear interpolation (within 1 % of the full-grid window; a tenth of the time)
    f = tuple(max(1, int(window_mm / 3.0 / s)) for s in sp)
    sig = [window_mm / (s * k) for s, k in zip(sp, f)]
    den = block_mean(foreground, f, partial="zeros")  # the far blocks' missing voxels: outside, as mode constant
    ndi.gaussian_filter(den, sig, mode="constant", output=den)
    np.maximum(den, np.float32(1e-3), out=den)
    var = np.empty(stack.shape[1:], dtype=np.float32)
    noise_at: list[dict[int, float]] = []  # per scale, the noise SD where the ratio reaches min_snr (few voxels)
    for i in range(stack.shape[0]):
        np.minimum(stack[i], 0.0, out=var)
        var *= var
        var *= foreground
        coarse = block_mean(var, f, partial="zeros")
        ndi.gaussian_filter(coarse, sig, mode="constant", output=coarse)
        coarse /= den
        coarse *= np.float32(2.0)
        np.sqrt(coarse, out=coarse)
        _upsample_linear(coarse, f, out=var)
        # a floor: a flat, noiseless stretch (a phantom, an air gap) does not make every ripple a candidate
        np.maximum(var, np.float32(0.02), out=var)
        stack[i] /= var
        idx = np.flatnonzero(stack[i] >= min_snr)
        noise_at.append(dict(zip(idx.tolist(), var.ravel()[idx].tolist())))
    del den, var
    peaks = _stack_peaks(stack, radii, sp, polarity=1, min_response=min_snr, allowed=foreground,
                         max_candidates=max_candidates, in_view=True)
    shape = stack.shape[1:]
    return [(c, r, snr, snr * noise_at[radii.index(r)][int(np.ravel_multi_index(c, shape))]) for c, r, snr in peaks]


def old_hot_regions(img: np.ndarray, foreground: np.ndarray, spacing_mm: Sequence[float], threshold: float,
                 settings: DetectionSettings, max_regions: int = 20,
                 workers: int = 1) -> list[tuple[np.ndarray, tuple[slice, ...]]]:  # (workers: the new signature; unused)
    """Connected regions of ``img > threshold`` in the foreground, holes filled (slice by slice, then in 3-D), as
    (mask on its bounding box, bounding box); at least ``settings.min_volume_ml``, the largest first."""
    hot = (img > threshold) & foreground
    lab, n = ndi.label(hot)
    if n == 0:
        return []
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    sizes = np.bincount(lab.ravel())[1:]
    order = [int(k) + 1 for k in np.argsort(-sizes) if sizes[k] * voxel_ml >= settings.min_volume_ml]
    out = []
    # room around each region for its surround shell (the width used by detect_tissue)
    margin = int(math.ceil(max(3.0, 1.5 * max(spacing_mm)) / min(spacing_mm))) + 1
    boxes = ndi.find_objects(lab)
    for k in order[:max_regions]:
        pad = tuple(slice(max(0, b.start - margin), min(b.stop + margin, dim))
                    for b, dim in zip(boxes[k - 1], img.shape))
        region = lab[pad] == k
        for z in range(region.shape[0]):
            region[z] = _fill_holes(region[z])
        out.append((_fill_holes(region), pad))
    return out



def old_pet_search_image(img: np.ndarray, foreground: np.ndarray, med: float) -> np.ndarray:
    """log2 of SUV over the foreground's median, floored at a quarter of it (air, lung edges), 0 outside."""
    floor = np.float32(max(0.25 * med, 1e-3))
    out = np.maximum(img, floor)
    out /= np.float32(med if med > 0 else 1.0)
    np.log2(out, out=out)
    out[~foreground] = 0.0
    return out


OLD = {"max_diameter_mm": old_max_diameter_mm, "_grow_region": old_grow_region, "_shell": old_shell,
       "_liver_organ": old_liver_organ, "_pet_snr_blobs": old_pet_snr_blobs, "_hot_regions": old_hot_regions,
       "_pet_search_image": old_pet_search_image}


# ------------------------------------------------------------------------------------------------------ inputs


@pytest.fixture(scope="module", params=sorted(PETS))
def pet_inputs(request):
    """What the shipped PET profile's detect step hands :func:`detect.detect_tissue` on a real PET (the profile run
    up to its detect step; the arguments copied as they come in)."""
    from dicomnode.analysis.pipeline import Context, run_steps
    from dicomnode.config import load_default_profiles
    from dicomnode.io.load import load_series
    from dicomnode.steps import registry

    registry()
    prof = load_default_profiles()["pet"]
    params = {k: dict(v) for k, v in prof.params.items()}
    files = sorted(p for p in PETS[request.param].iterdir() if p.is_file())
    vol = load_series(files).volume
    calls = []
    real = detect.detect_tissue

    def spy(*args, **kwargs):
        calls.append(([np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args],
                      {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}))
        return real(*args, **kwargs)

    detect.detect_tissue = spy
    try:
        run_steps(Context(volume=vol, original=vol, header={}), list(prof.steps[:prof.steps.index("detect") + 1]),
                  params)
    finally:
        detect.detect_tissue = real
    assert calls, "the PET profile's detect step did not run the tissue search"
    return request.param, calls[0]


def _rows(res):
    """Every candidate (accepted and rejected) of a DetectionResult, all of it, comparable with ``==``."""
    out = []
    for kind, fs in (("accepted", res.findings), ("rejected", res.rejected)):
        for f in fs:
            feats = tuple(sorted((k, "nan" if isinstance(v, float) and math.isnan(v) else v)
                                 for k, v in f.features.items()))
            out.append((kind, f.label, f.probability, tuple((b.start, b.stop) for b in f.box), f.mask.shape,
                        f.mask.tobytes(), feats, f.centroid_zyx, f.volume_ml, f.diameter_mm))
    return out


# ------------------------------------------------------------------------------------------------------- tests


def test_pet_detect_is_the_old_code_bit_for_bit(pet_inputs, monkeypatch):
    """The PET tissue search with the new functions and the thread budget of the machine against the old functions
    in one thread: the same candidates, masks, features (every float), probabilities and notes."""
    name, (args, kwargs) = pet_inputs
    new = detect.detect_tissue(*copy.deepcopy(args), **kwargs)
    monkeypatch.setenv("DICOMNODE_THREADS", "1")
    for fn_name, fn in OLD.items():
        monkeypatch.setattr(detect, fn_name, fn)
    old = detect.detect_tissue(*copy.deepcopy(args), **kwargs)
    assert old.n_candidates == new.n_candidates and old.notes == new.notes
    rows_old, rows_new = _rows(old), _rows(new)
    assert len(rows_old) == len(rows_new) and len(rows_old) >= 10, name
    for a, b in zip(rows_old, rows_new):
        assert a == b, (name, a[:4], b[:4])
    if name == "wholebody":  # the liver is in view: the PET branch (log2 SUV search, SNR blobs, organ context) ran
        assert any("organ context" in n for n in new.notes)


def test_liver_organ_is_the_old_code(pet_inputs):
    """The liver's core and extent on the working image of a real PET: the same voxels (whole-body PET: in view;
    the thigh crop: not in view, None both ways)."""
    name, (args, _) = pet_inputs
    image, spacing, foreground = args[0], args[1], args[2]
    old, new = old_liver_organ(image, foreground, spacing), detect._liver_organ(image, foreground, spacing)
    assert (old is None) == (new is None)
    if name == "wholebody":
        assert new is not None
    if new is not None:
        assert np.array_equal(old[0], new[0]) and np.array_equal(old[1], new[1])


def _real_masks(args, kwargs):
    """Masks of a real PET: the liver's core and extent (when in view), the hot regions above SUV 2.5 and every
    candidate region of the tissue search."""
    image, spacing, foreground = args[0], args[1], args[2]
    masks = []
    organ = detect._liver_organ(image, foreground, spacing)
    if organ is not None:
        masks += list(organ)
    masks += [region for region, _ in detect._hot_regions(image.astype(np.float32), foreground, spacing, 2.5,
                                                          DetectionSettings(min_volume_ml=0.5))]
    res = detect.detect_tissue(*args, **kwargs)
    masks += [f.mask for f in (*res.findings, *res.rejected)]
    return masks


def test_mask_helpers_are_scipys_on_real_masks(pet_inputs):
    """Holes filled, grown, eroded and shelled on each mask's bounding box, and the largest diameter without the
    (N, N, 3) array: the voxels and floats of scipy's whole-array functions and of the old code."""
    _, (args, kwargs) = pet_inputs
    sp = tuple(args[1])
    masks = _real_masks(args, kwargs)
    assert len(masks) >= 10
    for m in masks:
        padded = np.pad(m, 4)  # room around a mask that fills its box
        assert np.array_equal(_fill_holes_boxed(padded), ndi.binary_fill_holes(padded))
        for d_mm in (3.0, 6.1, 20.0, 40.0):
            assert np.array_equal(_near(padded, sp, d_mm), ndi.distance_transform_edt(~padded, sampling=sp) <= d_mm)
            assert np.array_equal(_eroded(padded, sp, d_mm), ndi.distance_transform_edt(padded, sampling=sp) > d_mm)
            assert np.array_equal(detect._shell(padded, sp, d_mm), old_shell(padded, sp, d_mm))
        assert detect.max_diameter_mm(m, sp) == old_max_diameter_mm(m, sp)


def test_mask_helpers_on_masks_that_touch_the_array_edge():
    """Masks cut by the array's edge and empty ones (the boxes clipped to the array): the same voxels."""
    rng = np.random.default_rng(13)
    for i in range(60):
        shape = tuple(int(n) for n in rng.integers(4, 30, 3))
        sp = tuple(float(s) for s in rng.choice([0.8, 1.0, 2.0, 3.27, 4.07], 3))
        m = ndi.gaussian_filter(rng.random(shape), 1.5) > rng.uniform(0.45, 0.6)
        if i % 10 == 0:
            m[...] = False
        assert np.array_equal(_fill_holes_boxed(m), ndi.binary_fill_holes(m))
        d_mm = float(rng.uniform(0.5, 20.0))
        assert np.array_equal(detect._shell(m, sp, d_mm), old_shell(m, sp, d_mm))
        assert np.array_equal(_eroded(m, sp, d_mm), ndi.distance_transform_edt(m, sampling=sp) > d_mm)
        if m.any():
            assert np.array_equal(_near(m, sp, d_mm), ndi.distance_transform_edt(~m, sampling=sp) <= d_mm)
            assert detect.max_diameter_mm(m, sp) == old_max_diameter_mm(m, sp)


def test_pet_search_image_is_the_old_code(pet_inputs):
    """log2 SUV over the median, made in slabs in threads: the same floats on a real PET (and an odd slice count)."""
    _, (args, _) = pet_inputs
    image, foreground = args[0].astype(np.float32), args[2]
    med = float(np.median(image[foreground]))
    for z in (image.shape[0], image.shape[0] - 7):
        assert np.array_equal(detect._pet_search_image(image[:z], foreground[:z], med),
                              old_pet_search_image(image[:z], foreground[:z], med))


def test_max_diameter_on_flat_scattered_and_oblique_masks():
    """Voxels on one oblique plane or line (no 3-D hull: the old code's fallback, taken as it was), scattered
    voxels, single slices and a few voxels: the same floats as the old code."""
    rng = np.random.default_rng(7)
    for i in range(200):
        shape = tuple(int(n) for n in rng.integers(1, 24, 3))
        sp = tuple(float(s) for s in rng.choice([0.8, 1.0, 2.0, 3.27, 4.07], 3))
        zz, yy, xx = np.indices(shape)
        kind = i % 5
        if kind == 0:
            m = (zz + yy + xx == int(rng.integers(0, sum(shape)))) & (rng.random(shape) > 0.3)  # an oblique plane
        elif kind == 1:
            m = (zz == yy) & (yy == xx) & (rng.random(shape) > 0.3)  # an oblique line
        elif kind == 2:
            m = rng.random(shape) > 0.97  # scattered
        elif kind == 3:
            m = np.zeros(shape, dtype=bool)
            m[int(rng.integers(0, shape[0]))] = rng.random(shape[1:]) > 0.4  # one slice
        else:
            m = np.zeros(shape, dtype=bool)
            m[tuple(rng.integers(0, n, 4) for n in shape)] = True  # a few voxels
        assert detect.max_diameter_mm(m, sp) == old_max_diameter_mm(m, sp), (i, kind, int(m.sum()))


def test_max_diameter_of_a_large_region_takes_the_hull_of_its_row_ends():
    """A region with more row ends than detect._MAX_PAIRWISE_POINTS (a solid mass on the full grid): the hull of its
    row ends first, not every pair of them (N^2 / 2 distances); the same float as the old code."""
    zz, yy, xx = np.ogrid[-42:43, -42:43, -42:43]
    m = ((zz + 0.3 * yy) ** 2 / 1.3 + yy ** 2 + 0.8 * (xx - 0.2 * zz) ** 2) <= 40 ** 2  # an oblique ellipsoid
    ends = int(detect._row_ends(m).sum())
    assert ends > detect._MAX_PAIRWISE_POINTS
    for sp in ((1.5, 0.77, 0.77), (3.27, 4.07, 4.07)):
        assert detect.max_diameter_mm(m, sp) == old_max_diameter_mm(m, sp)
