"""Synthetic body-region phantoms: training material for the scene model where real series are scarce.

:func:`scene_phantom` draws one axial slab of a coarse, randomised anatomy (ellipses and rings of tissue:
skin fat, muscle, organs, lungs, bones, brain) for ``head``, ``chest``, ``abdomen``, ``pelvis`` or ``extremity``,
and renders it as CT (HU), T1-weighted MR (arbitrary units, fat bright, cortical bone and air dark) or PET (SUV,
brain hot, blurred). Sizes follow adult anatomy (trunk 28-38 cm wide, head 14-16 cm wide, thigh 12-18 cm across);
a share of the slabs is cropped around a point in the body, as sarcoma series are. The abdomen has a large
homogeneous liver (and spleen, lung bases at the dome) beside textured bowel in fat, lower ribs, kidneys and psoas;
the pelvis has thick iliac wings, textured gluteal muscles, bowel, then hips and bladder. Arms often touch the
trunk; CT is blurred (2 mm) so that edges have partial volume, with 10-35 HU of noise.

These phantoms are deliberately simple. They teach a model the coarse facts the scene descriptors measure (a
skull ring, lungs inside a wide trunk, a femur inside a round limb); they are never used to score a model
(``docs/models.md``). ``neck`` is not drawn: we have no real neck series to check a neck phantom against.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["PHANTOM_MODALITIES", "PHANTOM_REGIONS", "scene_phantom"]

PHANTOM_REGIONS: tuple[str, ...] = ("head", "chest", "abdomen", "pelvis", "extremity")
PHANTOM_MODALITIES: tuple[str, ...] = ("CT", "MR", "PT")

AIR, LUNG, FAT, SOFT, CORTEX, MARROW, BRAIN, CSF = range(8)
#: tissue -> (CT HU, T1 MR a.u., PET SUV)
_VALUES = np.array([
    (-1000.0, 0.0, 0.0),     # air
    (-840.0, 15.0, 0.4),     # lung
    (-100.0, 900.0, 0.35),   # fat
    (45.0, 320.0, 0.9),      # soft tissue (muscle, organs)
    (1100.0, 25.0, 0.5),     # cortical bone
    (200.0, 750.0, 1.1),     # marrow / cancellous bone
    (35.0, 480.0, 7.0),      # brain
    (8.0, 90.0, 0.5),        # CSF
])


def _ellipse(yy, xx, cy, cx, ry, rx, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (dx * c + dy * s) / rx
    v = (-dx * s + dy * c) / ry
    return u * u + v * v <= 1.0


def _bone(sl, yy, xx, cy, cx, r, cortex_mm, rx=None, angle=0.0):
    rx = r if rx is None else rx
    sl[_ellipse(yy, xx, cy, cx, r, rx, angle)] = CORTEX
    if r > cortex_mm + 1 and rx > cortex_mm + 1:
        sl[_ellipse(yy, xx, cy, cx, r - cortex_mm, rx - cortex_mm, angle)] = MARROW


def _trunk(sl, yy, xx, rng, ry, rx, fat_mm):
    sl[_ellipse(yy, xx, 0, 0, ry, rx)] = FAT
    sl[_ellipse(yy, xx, 0, 0, ry - fat_mm, rx - fat_mm)] = SOFT


def _viscera(sl, yy, xx, rng, ry, rx, fat_share, cy=0.0, cx=0.0, angle=0.0, grain_mm=3.0):
    """Bowel loops in mesenteric fat (or a muscle with fat streaks) inside an ellipse: a smoothed random field
    split into fat and soft tissue. Real abdomens are not one homogeneous block: the organ descriptor must see
    texture there and a homogeneous liver beside it."""
    inside = _ellipse(yy, xx, cy, cx, ry, rx, angle)
    pix = float(abs(xx[0, 1] - xx[0, 0])) or 1.0
    field = ndi.gaussian_filter(rng.normal(0, 1, yy.shape), grain_mm / pix)
    cut = np.quantile(field[inside], fat_share) if inside.any() else 0.0
    sl[inside] = np.where(field[inside] < cut, FAT, SOFT)


def _arms(sl, yy, xx, rng, rx):
    for side in (-1, 1):
        r = rng.uniform(38, 50)
        cx = side * (rx + r + rng.uniform(-10, 30))  # arms at the side, often touching the trunk
        cy = rng.uniform(-20, 40)
        sl[_ellipse(yy, xx, cy, cx, r, r * rng.uniform(0.8, 1.0))] = FAT
        sl[_ellipse(yy, xx, cy, cx, r - 8, r * 0.8 - 8)] = SOFT
        _bone(sl, yy, xx, cy, cx, rng.uniform(8, 12), 3)


def _slice(region: str, t: float, p: dict, yy, xx, rng) -> np.ndarray:
    sl = np.zeros(yy.shape, dtype=np.int8)
    if region == "head":
        # t: 0 vertex ... 1 skull base
        scale = np.sqrt(max(0.05, 1 - ((0.75 - t) / 0.8) ** 2)) if t < 0.75 else 1 - 0.5 * (t - 0.75)
        ry, rx = p["ry"] * scale, p["rx"] * scale
        sl[_ellipse(yy, xx, 0, 0, ry, rx)] = FAT
        sl[_ellipse(yy, xx, 0, 0, ry - 4, rx - 4)] = SOFT
        sk = p["skull_mm"]
        sl[_ellipse(yy, xx, 0, 0, ry - 6, rx - 6)] = CORTEX
        sl[_ellipse(yy, xx, 0, 0, ry - 6 - sk / 2, rx - 6 - sk / 2)] = MARROW
        sl[_ellipse(yy, xx, 0, 0, ry - 7 - sk / 2, rx - 7 - sk / 2)] = CORTEX
        inner = (ry - 6 - sk, rx - 6 - sk)
        if inner[0] > 10:
            sl[_ellipse(yy, xx, 0, 0, *inner)] = CSF
            sl[_ellipse(yy, xx, 0, 0, inner[0] - 3, inner[1] - 3)] = BRAIN
            if 0.3 < t < 0.65:
                for side in (-1, 1):
                    sl[_ellipse(yy, xx, -5, side * 8, 22, 5)] = CSF
            if t > 0.7:  # skull base: sinuses and dense bone
                sl[_ellipse(yy, xx, -0.7 * ry, 0, 12, 18)] = AIR
                for side in (-1, 1):
                    _bone(sl, yy, xx, 0.1 * ry, side * 0.45 * rx, 10, 4, rx=20)
    elif region == "chest":
        ry, rx = p["ry"], p["rx"]
        _trunk(sl, yy, xx, rng, ry, rx, p["fat_mm"])
        lung_scale = p["lung"] * (0.55 + 0.45 * np.sin(np.pi * np.clip(0.2 + 0.8 * t, 0, 1)))
        wall = p["fat_mm"] + 15
        for side in (-1, 1):
            lry = (ry - wall) * 0.85 * lung_scale
            lrx = (rx - wall) * 0.42 * lung_scale
            sl[_ellipse(yy, xx, 0.05 * ry, side * (rx - wall) * 0.5, lry, lrx)] = LUNG
        sl[_ellipse(yy, xx, -0.15 * ry, 0.1 * rx, 0.35 * ry, 0.2 * rx)] = SOFT  # heart / mediastinum
        for a in np.linspace(0, 2 * np.pi, 14, endpoint=False):  # ribs around the inner chest wall
            _bone(sl, yy, xx, (ry - wall + 6) * np.sin(a), (rx - wall + 6) * np.cos(a), 5, 2)
        _bone(sl, yy, xx, 0.62 * ry, 0, p["spine_mm"], 3)
        if p["arms"]:
            _arms(sl, yy, xx, rng, rx)
    elif region == "abdomen":
        # t: 0 diaphragm dome ... 1 iliac crest
        ry, rx = p["ry"], p["rx"]
        _trunk(sl, yy, xx, rng, ry, rx, p["fat_mm"])
        iry, irx = ry - p["fat_mm"] - 12, rx - p["fat_mm"] - 12  # inside the abdominal wall muscles
        _viscera(sl, yy, xx, rng, iry, irx, p["visceral_fat"])
        side = p["liver_side"]
        if t < 0.6:  # liver: a large homogeneous organ in the right upper quadrant, shrinking downwards
            f = 1.0 - (t / 0.6) ** 2
            sl[_ellipse(yy, xx, 0.1 * iry, side * 0.35 * irx, iry * (0.45 + 0.45 * f), irx * (0.3 + 0.45 * f),
                        0.3 * side)] = SOFT
        if t < 0.35:  # spleen, posterior on the other side
            sl[_ellipse(yy, xx, 0.4 * iry, -side * 0.6 * irx, 0.35 * iry, 0.2 * irx, -0.6 * side)] = SOFT
        if t < 0.12 and p["lung_bases"]:  # lung bases behind the liver and spleen
            for sd in (-1, 1):
                sl[_ellipse(yy, xx, 0.7 * iry, sd * 0.65 * irx, 0.2 * iry, 0.2 * irx)] = LUNG
        if 0.3 < t < 0.85:  # kidneys in their fat
            for sd in (-1, 1):
                sl[_ellipse(yy, xx, 0.45 * iry, sd * 0.45 * irx, 30, 24)] = FAT
                sl[_ellipse(yy, xx, 0.45 * iry, sd * 0.45 * irx, 25, 19)] = SOFT
        if t > 0.5:  # psoas muscles
            for sd in (-1, 1):
                sl[_ellipse(yy, xx, 0.55 * iry, sd * 40, 18 + 20 * (t - 0.5), 15 + 15 * (t - 0.5))] = SOFT
        for _ in range(p["n_gas"]):
            sl[_ellipse(yy, xx, rng.uniform(-0.6, 0.3) * ry, rng.uniform(-0.6, 0.6) * rx, rng.uniform(3, 12),
                        rng.uniform(3, 15))] = AIR
        _bone(sl, yy, xx, 0.62 * ry, 0, p["spine_mm"], 3)
        if t < 0.45:  # lower ribs: short bony arcs around the wall, more of them higher up
            n_ribs = int(6 + 10 * (0.45 - t) / 0.45)
            for a in np.linspace(-0.85 * np.pi, 0.85 * np.pi, n_ribs):
                _bone(sl, yy, xx, -(ry - p["fat_mm"] - 6) * np.cos(a), (rx - p["fat_mm"] - 6) * np.sin(a),
                      4, 1.5, rx=7, angle=a)
        if p["arms"]:
            _arms(sl, yy, xx, rng, rx)
    elif region == "pelvis":
        # t: 0 iliac crest ... 1 pubis / hips
        ry, rx = p["ry"], p["rx"]
        _trunk(sl, yy, xx, rng, ry, rx, p["fat_mm"])
        iry, irx = ry - p["fat_mm"] - 10, rx - p["fat_mm"] - 10
        _viscera(sl, yy, xx, rng, iry * 0.95, irx * 0.9, p["visceral_fat"])
        for _ in range(p["n_gas"]):
            sl[_ellipse(yy, xx, rng.uniform(-0.3, 0.3) * ry, rng.uniform(-0.4, 0.4) * rx, rng.uniform(3, 10),
                        rng.uniform(3, 12))] = AIR
        for sd in (-1, 1):  # gluteal muscles, posterolateral, with a fat plane and fat streaks
            sl[_ellipse(yy, xx, 0.55 * iry, sd * 0.55 * irx, 0.4 * iry + 4, 0.4 * irx + 4, sd * 0.4)] = FAT
            _viscera(sl, yy, xx, rng, 0.4 * iry, 0.4 * irx, p["muscle_fat"], 0.55 * iry, sd * 0.55 * irx,
                     sd * 0.4, grain_mm=2.0)
        if t < 0.5:  # iliac wings (broad, thick lateral bones) and sacrum
            thick = p["iliac_mm"]
            for sd in (-1, 1):
                _bone(sl, yy, xx, 0.2 * iry, sd * 0.62 * irx, 0.5 * iry * (0.7 + 0.6 * t), 1.5, rx=thick,
                      angle=sd * 0.5)
            _bone(sl, yy, xx, 0.62 * ry, 0, 22, 3, rx=35)
        else:  # acetabula, femoral heads, pubis, bladder
            for sd in (-1, 1):
                _bone(sl, yy, xx, 0.05 * ry, sd * 0.6 * rx, 24, 3)
                _bone(sl, yy, xx, -0.55 * ry, sd * 0.18 * rx, 10, 3, rx=25)
            sl[_ellipse(yy, xx, -0.25 * ry, 0, 0.25 * ry, 0.2 * rx)] = SOFT  # bladder
            _bone(sl, yy, xx, 0.7 * ry, 0, 10, 3, rx=14)
        if p["arms_pelvis"]:
            _arms(sl, yy, xx, rng, rx)
    elif region == "extremity":
        for (cy, cx, r, fat, bones) in p["limbs"]:
            sl[_ellipse(yy, xx, cy, cx, r, r * 0.92)] = FAT
            sl[_ellipse(yy, xx, cy, cx, r - fat, r * 0.92 - fat)] = SOFT
            for (by, bx, br) in bones:
                _bone(sl, yy, xx, cy + by, cx + bx, br, min(5.0, br * 0.4))
    else:
        raise ValueError(f"region must be one of {PHANTOM_REGIONS}, got {region!r}")
    return sl


def _params(region: str, rng: np.random.Generator) -> dict:
    if region == "head":
        return {"ry": rng.uniform(88, 102), "rx": rng.uniform(68, 80), "skull_mm": rng.uniform(5, 9)}
    if region in ("chest", "abdomen", "pelvis"):
        base = {"chest": (rng.uniform(95, 130), rng.uniform(140, 185)),
                "abdomen": (rng.uniform(95, 145), rng.uniform(135, 190)),
                "pelvis": (rng.uniform(100, 135), rng.uniform(160, 200))}[region]
        return {"ry": base[0], "rx": base[1], "fat_mm": rng.uniform(8, 40), "lung": rng.uniform(0.7, 1.1),
                "spine_mm": rng.uniform(15, 22), "arms": bool(rng.random() < 0.35),
                "n_fat": int(rng.integers(2, 9)), "n_gas": int(rng.integers(0, 7)),
                "arms_pelvis": bool(rng.random() < 0.25), "visceral_fat": rng.uniform(0.2, 0.55),
                "liver_side": float(rng.choice([-1.0, 1.0])), "lung_bases": bool(rng.random() < 0.7),
                "iliac_mm": rng.uniform(3, 8), "muscle_fat": rng.uniform(0.1, 0.3)}
    if region == "extremity":
        kind = rng.choice(["thighs", "thigh", "legs", "arm"], p=[0.4, 0.3, 0.15, 0.15])
        limbs = []
        if kind in ("thighs", "thigh"):
            n = 2 if kind == "thighs" else 1
            r = rng.uniform(55, 95)
            for i in range(n):
                cx = (i - (n - 1) / 2) * (2 * r + rng.uniform(0, 25))
                limbs.append((rng.uniform(-10, 10), cx, r * rng.uniform(0.9, 1.1), rng.uniform(5, 25),
                              [(rng.uniform(-15, 15), rng.uniform(-15, 15), rng.uniform(12, 16))]))
        elif kind == "legs":
            r = rng.uniform(40, 60)
            for i in range(2):
                cx = (i - 0.5) * (2 * r + rng.uniform(10, 60))
                limbs.append((0.0, cx, r, rng.uniform(4, 15), [(-0.3 * r, 0.0, rng.uniform(11, 15)),
                                                              (0.1 * r, 0.5 * r, rng.uniform(5, 8))]))
        else:
            r = rng.uniform(35, 55)
            limbs.append((0.0, 0.0, r, rng.uniform(4, 15), [(0.0, 0.0, rng.uniform(9, 13))]))
        return {"limbs": limbs}
    raise ValueError(f"region must be one of {PHANTOM_REGIONS}, got {region!r}")


def scene_phantom(region: str, modality: str, *, rng: np.random.Generator, pixel_mm: float = 2.5,
                  slice_mm: float = 5.0, n_slices: int = 12, fov_mm: float | None = None,
                  crop_probability: float | None = None) -> tuple[np.ndarray, tuple[float, float, float]]:
    """One randomised axial slab of ``region`` rendered as ``modality``.

    Parameters
    ----------
    region : str
        One of :data:`PHANTOM_REGIONS`.
    modality : str
        "CT" (values in HU), "MR" (T1-weighted, arbitrary units) or "PT" (SUV).
    rng : numpy.random.Generator
        Source of every random choice (sizes, position along the body, noise, crop).
    pixel_mm, slice_mm : float, optional
        In-plane pixel size and slice distance, in mm. Defaults 2.5 and 5.
    n_slices : int, optional
        Number of slices. Default 12.
    fov_mm : float, optional
        Square field of view before any crop, in mm. Default: random, as scanners are set up for the region
        (head 220-280 mm, extremity 200-480 mm, trunk 380-500 mm).
    crop_probability : float, optional
        Chance of cropping the slab to a square around a body point (150-230 mm for head and extremity, 260-360 mm
        for the trunk). Default 0.6 for ``extremity`` (sarcoma-like crops), 0.15 otherwise.

    Returns
    -------
    image : (Z, Y, X) float32 ndarray
    spacing_mm : tuple of 3 float
        (slice_mm, pixel_mm, pixel_mm).
    """
    if region not in PHANTOM_REGIONS:
        raise ValueError(f"region must be one of {PHANTOM_REGIONS}, got {region!r}")
    if modality not in PHANTOM_MODALITIES:
        raise ValueError(f"modality must be one of {PHANTOM_MODALITIES}, got {modality!r}")
    if fov_mm is None:
        lo, hi = {"head": (220, 280), "extremity": (200, 480)}.get(region, (380, 500))
        fov_mm = float(rng.uniform(lo, hi))
    if pixel_mm <= 0 or slice_mm <= 0 or n_slices < 2 or fov_mm <= 0:
        raise ValueError("pixel_mm, slice_mm and fov_mm must be > 0 mm and n_slices >= 2")
    n = int(round(fov_mm / pixel_mm))
    c = (np.arange(n) - (n - 1) / 2) * pixel_mm
    yy, xx = np.meshgrid(c, c, indexing="ij")
    p = _params(region, rng)
    span = min(1.0, n_slices * slice_mm / {"head": 200.0, "chest": 250.0, "abdomen": 200.0,
                                            "pelvis": 180.0, "extremity": 400.0}[region])
    t0 = rng.uniform(0, 1 - span) if span < 1 else 0.0
    labels = np.stack([_slice(region, t0 + span * k / max(n_slices - 1, 1), p, yy, xx, rng)
                       for k in range(n_slices)])
    m = PHANTOM_MODALITIES.index(modality)
    img = _VALUES[labels, m].astype(np.float32)
    if modality == "CT":
        img = ndi.gaussian_filter(img, (0, 2.0 / pixel_mm, 2.0 / pixel_mm))  # resolution: partial volume at edges
        if rng.random() < 0.5:  # table
            body_bottom = yy[labels.max(axis=0) > 0].max() if (labels > 0).any() else 0
            img[:, (yy[:, 0] > body_bottom + 15) & (yy[:, 0] < body_bottom + 21), :] = 200.0
        img += rng.normal(0, rng.uniform(10, 35), img.shape).astype(np.float32)
    elif modality == "MR":
        g = rng.normal(0, 1, (3,))
        bias = 1 + 0.15 * (g[0] * yy / fov_mm + g[1] * xx / fov_mm)
        img = img * bias[None].astype(np.float32) * rng.uniform(0.5, 2.0)
        img = np.abs(img + rng.normal(0, 15, img.shape)).astype(np.float32)
    else:
        img = ndi.gaussian_filter(img, (0.5, 6 / pixel_mm / 2.355 * 2, 6 / pixel_mm / 2.355 * 2))
        img = np.clip(img * (1 + rng.normal(0, 0.15, img.shape)), 0, None).astype(np.float32)
    crop_p = (0.6 if region == "extremity" else 0.15) if crop_probability is None else crop_probability
    if rng.random() < crop_p:
        body = np.argwhere(labels[n_slices // 2] > 0)
        if len(body):
            cy, cx = body[rng.integers(len(body))]
            size_mm = rng.uniform(150, 230) if region in ("extremity", "head") else rng.uniform(260, 360)
            h = int(size_mm / pixel_mm / 2)
            y0, x0 = max(0, cy - h), max(0, cx - h)
            img = img[:, y0:cy + h, x0:cx + h]
    return np.ascontiguousarray(img), (float(slice_mm), float(pixel_mm), float(pixel_mm))
