"""analysis/scene.py (session scene4): the CT paired-limbs landmark and the diffusion-image guard, on real shared
series and on synthetic profiles. Light: each test loads one or two series and uses the shipped model or none."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.analysis.pipeline import Context, run_steps
from dicomnode.analysis.scene import (SceneDescriptors, SceneProfile, limb_bone, paired_limbs, profile_slabs,
                                      recognise, scene_profile)
from dicomnode.commands.train import load_volume
from dicomnode.io.headers import header_strings
from dicomnode.steps import registry
from dicomnode.steps.recognition import diffusion_image
from helpers import SHARED_DATA

warnings.filterwarnings("ignore", category=UserWarning)


def _slabs_of(series: str):
    v = load_volume(SHARED_DATA / series)
    prof = scene_profile(v.array, v.spacing_mm, direction=v.direction, origin_mm=v.origin_mm, modality=v.modality,
                         unit=v.unit)
    return v, prof, profile_slabs(prof)


def test_paired_limbs_found_on_the_thigh_cts_and_on_no_trunk_or_head_ct():
    """Two or more separate parts smaller than a trunk, a limb's bones, no lungs: the lower slabs of both thigh CTs
    (STS_001: two thighs with a femur; STS_003: the two thighs below the gluteal fold, their femora outside the
    crop), and none of the chest CT (its body is one piece and holds lungs), the head CT or the STS_002 CT (a crop
    of the pelvis: one piece)."""
    for series, lowest in (("sts/STS_001/CT", 2), ("sts/STS_003/CT", 2)):
        _, _, slabs = _slabs_of(series)
        flags = [paired_limbs(d) for _, _, d in slabs]
        assert all(flags[-lowest:]), (series, flags)
        for (_, _, d), f in zip(slabs, flags):
            if f:
                assert d.values["n_components"] >= 2 and d.values["area_cm2"] < 300, d.values
    for series in ("chest-ct/A0002_B40f", "head-ct/CT", "sts/STS_002/CT"):
        _, _, slabs = _slabs_of(series)
        assert not any(paired_limbs(d) for _, _, d in slabs), series


def test_limb_bone_ring_found_on_the_femur_and_on_no_trunk_or_head_ct():
    """STS_001's CT shows the femur's cortical ring around its marrow in the thigh (its lower four slabs); the
    STS_003 crop holds no femur (the femora lie outside it), the STS_002 crop the iliac wing and sacrum; the chest
    CT (vertebrae, ribs), its 20 cm crops and the head CT none."""
    from dicomnode.scene_training import crop_fov

    _, prof, slabs = _slabs_of("sts/STS_001/CT")
    assert np.nansum(prof.per_slice["limb_ring"]) >= 8
    assert [limb_bone(d) for _, _, d in slabs][-4:] == [True] * 4
    for series in ("sts/STS_002/CT", "sts/STS_003/CT", "chest-ct/A0002_B40f", "head-ct/CT"):
        v, prof, slabs = _slabs_of(series)
        assert np.nansum(prof.per_slice["limb_ring"]) == 0 and not any(limb_bone(d) for _, _, d in slabs), series
        if series.startswith("chest"):
            for where in ((0.45, 0.3), (0.45, 0.7), (0.5, 0.5)):
                c = crop_fov(v, 200.0, where)
                cp = scene_profile(c.array, c.spacing_mm, direction=c.direction, origin_mm=c.origin_mm,
                                   modality="CT", unit="HU")
                assert np.nansum(cp.per_slice["limb_ring"]) == 0, where


def _limb_slice(bone: str) -> np.ndarray:
    """A 0.8 mm axial CT slice: a round limb of muscle (40 HU, 140 mm across) in air with one bone at its centre:
    a femur's cortical ring (outer 28 mm, marrow 14 mm of fat), a solid disc of the same size, a rib-sized ring, or
    a disc with its hole 6 mm off centre (a vertebral body ringed by its arch round the canal behind it)."""
    n, px = 256, 0.8
    yy, xx = (np.mgrid[:n, :n] - n / 2) * px
    r = np.hypot(yy, xx)
    img = np.where(r < 70, 40.0, -1000.0)
    outer, inner = {"femur": (14.0, 7.0), "disc": (14.0, 0.0), "rib": (6.0, 3.0), "vertebra": (14.0, 6.0)}[bone]
    hole = np.hypot(yy - (6.0 if bone == "vertebra" else 0.0), xx) < inner
    img[(r < outer) & ~hole] = 1200.0
    img[hole] = -60.0
    return img.astype(np.float32)


@pytest.mark.parametrize("bone, ring", [("femur", 1.0), ("disc", 0.0), ("rib", 0.0), ("vertebra", 0.0)])
def test_limb_ring_is_a_cortical_ring_of_a_long_bone_size(bone, ring):
    img = np.stack([_limb_slice(bone)] * 24)
    prof = scene_profile(img, (10.0, 0.8, 0.8), modality="CT", unit="HU")
    assert np.nanmedian(prof.per_slice["limb_ring"]) == ring


def test_limb_ring_needs_few_bones_in_the_largest_part():
    """The same femur ring among five more bone pieces (a trunk's vertebra and ribs) is no limb."""
    img = _limb_slice("femur")
    for k in range(5):
        a = 2 * np.pi * k / 5
        cy, cx = int(128 + 60 * np.sin(a)), int(128 + 60 * np.cos(a))
        img[cy - 4:cy + 4, cx - 4:cx + 4] = 1200.0
    prof = scene_profile(np.stack([img] * 24), (10.0, 0.8, 0.8), modality="CT", unit="HU")
    assert np.nanmax(prof.per_slice["limb_ring"]) == 0.0
    assert not limb_bone(SceneDescriptors({"limb_ring": 1.0, "dark_blob": 0.3}))  # lungs: a chest
    assert not limb_bone(SceneDescriptors({"limb_ring": 1.0, "dark_blob": 0.0}), is_ct=False)


def test_paired_limbs_needs_parts_a_limb_size_no_lungs_and_few_bones():
    legs = SceneDescriptors({"area_cm2": 220.0, "n_components": 2.0, "dark_blob": 0.01, "bone_pieces": 2.0})
    assert paired_limbs(legs)
    assert not paired_limbs(legs, is_ct=False)  # MR: two breasts are two small parts too
    for change in ({"n_components": 1.0},  # one piece: a crop of a trunk or a single limb
                   {"area_cm2": 650.0},  # a trunk with the arms beside it
                   {"dark_blob": 0.2},  # lungs: a chest with an arm in view
                   {"bone_pieces": 9.0}):  # ribs, the pelvic ring
        assert not paired_limbs(SceneDescriptors({**legs.values, **change})), change


def _flat_profile(n: int = 20) -> SceneProfile:
    """A featureless MR trunk profile from z 0 to -190 mm (test_scene's :func:`_profile`)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_scene import _profile

    return _profile(np.linspace(0.0, -190.0, n))


def test_paired_limbs_raise_extremity_on_ct_only_where_the_model_gives_some():
    """Likelihood ratio 10 on the odds: 0.3 -> 0.81; 0.05 stays below 0.5 (the landmark alone names nothing)."""
    z = np.linspace(0.0, -190.0, 20)
    per = {"area_cm2": np.full(20, 200.0), "n_components": np.full(20, 2.0), "solidity": np.full(20, 0.9),
           "minor_major_ratio": np.full(20, 0.8), "edge_fraction": np.full(20, 0.5)}
    prof = SceneProfile(z, per, True, 10.0, 20, "CT")
    d = SceneDescriptors({"area_cm2": 200.0, "n_components": 2.0, "edge_fraction": 0.5, "dark_blob": 0.0,
                          "bone_pieces": 0.0, "ring_bright": 0.0})
    slabs = [(zc - 30, zc + 30, d) for zc in np.linspace(-30.0, -160.0, 4)]
    classes = ("abdomen", "extremity", "pelvis")
    res = recognise(prof, slabs, np.tile([0.5, 0.3, 0.2], (4, 1)), classes)
    assert res.label == "extremity" and res.probabilities["extremity"] == pytest.approx(0.3 * 10 / (1 + 0.3 * 9 + 0.0),
                                                                                           abs=0.02), res
    assert any("CT limbs" in n for n in res.notes)
    weak = recognise(prof, slabs, np.tile([0.6, 0.05, 0.35], (4, 1)), classes)
    assert weak.label == "unknown", weak  # abdomen vetoed (two parts), extremity 0.34: no region


def test_diffusion_image_read_from_the_header():
    adc = next(p for p in sorted((SHARED_DATA / "abdomen-mr" / "ADC").rglob("*")) if p.is_file())
    t2 = next(p for p in sorted((SHARED_DATA / "abdomen-mr" / "T2_ax").rglob("*")) if p.is_file())
    assert diffusion_image(header_strings(pydicom.dcmread(adc, stop_before_pixels=True))) == "ImageType ADC"
    assert diffusion_image(header_strings(pydicom.dcmread(t2, stop_before_pixels=True))) is None
    assert diffusion_image({"Modality": "MR", "ImageType": "ORIGINAL\\PRIMARY\\DIFFUSION\\TRACEW"}) \
        == "ImageType DIFFUSION"
    assert diffusion_image({"Modality": "MR", "SeriesDescription": "ep2d_diff_b50_800"}) is not None
    assert diffusion_image({"Modality": "MR", "SeriesDescription": "t1_vibe_fs_tra"}) is None
    assert diffusion_image({"Modality": "CT", "ImageType": "ADC"}) is None


def test_diffusion_image_named_only_by_landmarks():
    """The slab model alone names no slab of a diffusion image; the vertex (a landmark on the outline) still does."""
    prof = _flat_profile()
    d = SceneDescriptors({"area_cm2": 600.0, "n_components": 1.0, "edge_fraction": 0.0, "dark_blob": 0.2})
    slabs = [(zc - 30, zc + 30, d) for zc in np.linspace(-30.0, -160.0, 4)]
    P = np.tile([0.1, 0.9], (4, 1))
    assert recognise(prof, slabs, P, ("abdomen", "chest")).label == "chest"
    res = recognise(prof, slabs, P, ("abdomen", "chest"), diffusion_map="ImageType ADC")
    assert res.label == "unknown" and any("diffusion image" in n for n in res.notes), res
    # a head: the body ends as a cap at its top (the vertex); head-sized one-part sections below it
    z = np.linspace(0.0, -190.0, 20)
    per = {"area_cm2": np.r_[np.nan, np.nan, 40.0, 100.0, np.full(16, 180.0)], "n_components": np.ones(20),
           "solidity": np.full(20, 0.9), "minor_major_ratio": np.full(20, 0.8), "edge_fraction": np.zeros(20)}
    head = SceneProfile(z, per, False, 10.0, 20, "MR")
    hd = SceneDescriptors({"area_cm2": 180.0, "n_components": 1.0, "edge_fraction": 0.0, "dark_blob": 0.05})
    hslabs = [(zc - 30, zc + 30, hd) for zc in np.linspace(-50.0, -160.0, 4)]
    res = recognise(head, hslabs, np.tile([0.2, 0.4, 0.4], (4, 1)), ("chest", "extremity", "head"),
                    diffusion_map="ImageType ADC")
    assert res.label == "head", res


def test_abdomen_adc_through_the_step_is_unknown_with_a_note():
    """The shipped model saw this patient's ADC in training (in-sample), yet through the step, with its header, the
    map is named only by landmarks that do not read intensities: none fires, unknown, and the note says why."""
    folder = SHARED_DATA / "abdomen-mr" / "ADC"
    v = load_volume(folder)
    first = next(p for p in sorted(Path(folder).rglob("*")) if p.is_file())
    header = header_strings(pydicom.dcmread(first, stop_before_pixels=True))
    registry()
    ctx = Context(volume=v, original=v, header=header)
    run_steps(ctx, ["scene"], {"scene": {"model": "scene"}})
    assert ctx.scene["label"] == "unknown", ctx.scene
    assert any("a diffusion image or map (ImageType ADC)" in n for n in ctx.notes), ctx.notes


def test_above_paired_limbs_is_the_pelvis_reach_above_the_thighs_parting():
    """Slab centres within 72 mm (40 % of an adult pelvis' 180 mm) above a paired-limbs slab's centre, not below it,
    not the limb slabs themselves."""
    from dicomnode.analysis.scene import _ABOVE_LIMBS_MM, above_paired_limbs

    assert _ABOVE_LIMBS_MM == pytest.approx(72.0)
    centres = np.array([-700.0, -730.0, -760.0, -790.0, -820.0, -850.0])
    limbs = np.array([False, False, False, True, True, False])
    assert above_paired_limbs(centres, limbs).tolist() == [False, True, True, False, False, False]
    assert not above_paired_limbs(centres, np.zeros(6, dtype=bool)).any()


def _ct_thigh_crop():
    """A CT crop (edge on the border) from z -690 to -850 mm: five slabs, the lower two two separate limbs."""
    z = np.linspace(-690.0, -850.0, 17)
    per = {"area_cm2": np.full(17, 200.0), "n_components": np.r_[np.ones(11), np.full(6, 2.0)],
           "solidity": np.full(17, 0.9), "minor_major_ratio": np.full(17, 0.8), "edge_fraction": np.full(17, 0.7)}
    prof = SceneProfile(z, per, True, 10.0, 40, "CT")
    trunk = {"area_cm2": 200.0, "n_components": 1.0, "edge_fraction": 0.7, "dark_blob": 0.02, "bone_pieces": 0.0,
             "ring_bright": 0.0}
    legs = {**trunk, "n_components": 2.0}
    centres = np.array([-713.0, -746.0, -776.0, -802.0, -822.0])
    slabs = [(c - 30, c + 30, SceneDescriptors(legs if i >= 3 else trunk)) for i, c in enumerate(centres)]
    return prof, slabs


def test_above_the_thighs_only_pelvis_or_extremity():
    """A slab the model calls abdomen right above two separate thighs is conditioned on pelvis or extremity (the
    abdomen starts at the iliac crest, a pelvis' length higher): the series is named, with no abdomen in it; where
    the model gives pelvis and extremity together less than 1/K, the slab stays unknown."""
    prof, slabs = _ct_thigh_crop()
    classes = ("abdomen", "chest", "extremity", "head", "pelvis")
    P = np.array([[0.02, 0.05, 0.27, 0.06, 0.60],
                  [0.22, 0.03, 0.25, 0.01, 0.50],
                  [0.82, 0.01, 0.12, 0.00, 0.05],
                  [0.65, 0.07, 0.27, 0.00, 0.01],
                  [0.51, 0.07, 0.41, 0.00, 0.00]])
    res = recognise(prof, slabs, P, classes)
    labels = [r.label for r in res.regions]
    assert res.label == "extremity" and res.probabilities["extremity"] >= 0.5, res
    assert "abdomen" not in labels and labels[-1] == "extremity", res.regions
    assert any("can only be pelvis or extremity" in n for n in res.notes), res.notes
    # without the rule the same posteriors gave abdomen above the thighs (vetoed as a lone slab): the rule only
    # removes classes anatomy forbids there, it does not invent a limb where the model sees none
    P2 = P.copy()
    P2[1:3] = [0.90, 0.05, 0.02, 0.02, 0.01]
    res2 = recognise(prof, slabs, P2, classes)
    assert all(r.label != "abdomen" for r in res2.regions), res2.regions
    assert res2.label in ("unknown", "extremity"), res2


def test_sts003_thigh_ct_is_extremity_with_the_pelvic_outlet_above():
    """STS_003's CT crop: the pelvic outlet (ischial tuberosity, coccyx, rectum) over its upper slabs, the
    buttocks and the two thighs below; through the step with the shipped model it is extremity, and no stretch is
    called abdomen (before this rule one abdomen slab above the thighs cut the recognised length to 37 %)."""
    v = load_volume(SHARED_DATA / "sts" / "STS_003" / "CT")
    registry()
    ctx = Context(volume=v, original=v, header={"Modality": "CT"})
    run_steps(ctx, ["scene"], {"scene": {"model": "scene"}})
    assert ctx.scene["label"] == "extremity" and ctx.scene["probabilities"]["extremity"] >= 0.5, ctx.scene
    labels = [r["label"] for r in ctx.scene["regions"]]
    assert "abdomen" not in labels and labels[-1] == "extremity", ctx.scene["regions"]
    assert any("can only be pelvis or extremity" in n for n in ctx.notes), ctx.notes


def test_no_pelvis_or_limb_restriction_below_a_vertex():
    """Within a head's length below a vertex, two or more separate parts are the head and the raised arms, not the
    thighs: the slabs above them keep the model's head."""
    z = np.linspace(0.0, -190.0, 20)
    per = {"area_cm2": np.r_[np.nan, np.nan, 40.0, 100.0, np.full(16, 180.0)], "n_components": np.ones(20),
           "solidity": np.full(20, 0.9), "minor_major_ratio": np.full(20, 0.8), "edge_fraction": np.zeros(20)}
    prof = SceneProfile(z, per, True, 10.0, 20, "CT")
    head = SceneDescriptors({"area_cm2": 180.0, "n_components": 1.0, "edge_fraction": 0.0, "dark_blob": 0.0,
                             "bone_pieces": 1.0, "ring_bright": 0.5})
    arms = SceneDescriptors({**head.values, "area_cm2": 260.0, "n_components": 3.0, "bone_pieces": 5.0})
    assert paired_limbs(arms)
    slabs = [(c - 30, c + 30, d) for c, d in zip(np.linspace(-50.0, -160.0, 4), (head, head, arms, arms))]
    classes = ("extremity", "head", "pelvis")
    res = recognise(prof, slabs, np.tile([0.2, 0.7, 0.1], (4, 1)), classes)
    assert not any("can only be pelvis or extremity" in n for n in res.notes), res.notes
    assert res.regions[0].label == "head", res.regions
