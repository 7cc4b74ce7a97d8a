"""Tests of the synthetic cohorts (fairmonai.data.synth): schema validity, reproducibility, and that each
bias knob does what it says, measured on the images it writes.

Expected counts below were worked out by hand from the documented rules (largest-remainder group
sizes, ``round_half_up(n_g * p_g)`` positives); measured quantities (noise, cue, contrast) are
compared with the declared multiples within a tolerance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from fairmonai.data import load_manifest, load_schema, read_manifest_table
from fairmonai.data.synth import DATASETS, common, make_cohort
from fairmonai.data.synth.__main__ import main

# tiny shapes: every cohort here takes well under a second to write
TINY = {
    "oct_glaucoma": {"shape": (16, 16, 24)},
    "rectal_mri": {"shape": (32, 32, 8)},
    "mama_mia": {"shape": (24, 24, 12)},
    "isic2020": {"shape": (32, 32)},
    "fitzpatrick17k": {"shape": (32, 32)},
}
SPACING = {"oct_glaucoma": (1.0, 1.0, 1.0), "rectal_mri": (0.75, 0.75, 3.0), "mama_mia": (1.0, 1.0, 1.0)}
IMAGE_COLUMNS = {
    "oct_glaucoma": ["image"],
    "rectal_mri": ["image", "mask"],
    "mama_mia": ["image_pre", "image_post1", "image_post2", "label"],
    "isic2020": ["image"],
    "fitzpatrick17k": ["image"],
}


def nii(path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64) / 255.0


def cv_accuracy(features, y, balanced: bool = False) -> float:
    """5-fold cross-validated accuracy of a logistic regression on standardised features."""
    X = np.asarray(features, dtype=float)
    X = (X - X.mean(0)) / (X.std(0) + 1e-12)
    scoring = "balanced_accuracy" if balanced else "accuracy"
    return float(cross_val_score(LogisticRegression(max_iter=2000), X, np.asarray(y), cv=5, scoring=scoring).mean())


def corners(img: np.ndarray) -> list[np.ndarray]:
    """The four (H // 8, W // 8) corner blocks (lesion-free skin in the photo cohorts, air in rectal MRI)."""
    H, W = img.shape[:2]
    h, w = H // 8, W // 8
    return [img[:h, :w], img[:h, -w:], img[-h:, :w], img[-h:, -w:]]


def photo_noise(channel: np.ndarray) -> float:
    """Noise sd from horizontal neighbour differences in the corners (immune to the linear illumination)."""
    d = np.concatenate([np.diff(c, axis=1).ravel() for c in corners(channel)])
    return float(d.std() / np.sqrt(2.0))


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("synth")


# ----------------------------------------------------------------------------- validity, reproducibility
def test_datasets_are_the_schema_datasets():
    assert DATASETS == ("oct_glaucoma", "rectal_mri", "mama_mia", "isic2020", "fitzpatrick17k")
    for d in DATASETS:
        assert load_schema(d).name == d


@pytest.mark.parametrize("dataset", DATASETS)
def test_manifest_valid_files_declared_and_reproducible(tmp, dataset):
    a = make_cohort(dataset, tmp / dataset / "a", 30, 0, **TINY[dataset])
    b = make_cohort(dataset, tmp / dataset / "b", 30, 0, **TINY[dataset])
    c = make_cohort(dataset, tmp / dataset / "c", 30, 1, **TINY[dataset])
    records = load_manifest(a, dataset)  # checks every file exists
    assert len(records) == 30
    cohort = json.loads((a.parent / "cohort.json").read_text())
    assert cohort["n"] == 30 and cohort["seed"] == 0 and cohort["dataset"] == dataset
    assert tuple(cohort["image"]["shape"]) == TINY[dataset]["shape"]
    for r in records[:5]:
        for col in IMAGE_COLUMNS[dataset]:
            if dataset in SPACING:
                img = nib.load(r[col])
                assert img.shape == TINY[dataset]["shape"]
                np.testing.assert_allclose(img.header.get_zooms(), SPACING[dataset])
                np.testing.assert_allclose(np.diag(img.affine)[:3], SPACING[dataset])
                is_mask = col in ("mask", "label")
                assert img.get_data_dtype() == (np.uint8 if is_mask else np.float32)
            else:
                with Image.open(r[col]) as im:
                    assert im.mode == "RGB" and im.size == TINY[dataset]["shape"][::-1]
    # same seed: byte-identical manifest, cohort.json and images; another seed: different
    files_a, files_b = all_files(a.parent), all_files(b.parent)
    assert files_a.keys() == files_b.keys()
    assert all(files_a[k] == files_b[k] for k in files_a)
    files_c = all_files(c.parent)
    image_keys = [k for k in files_a if k.startswith("images")]
    assert sum(files_a[k] != files_c[k] for k in image_keys) == len(image_keys)


# ----------------------------------------------------------------------------- exact representation, prevalence
def test_exact_group_counts_and_prevalence(tmp):
    m = make_cohort("oct_glaucoma", tmp / "oct_exact", 60, 3, shape=(16, 16, 24),
                    group_proportions="Asian=0.2,Black=0.3,White=0.5", prevalence="Black=0.5,White=0.3,Asian=0.25")
    t = read_manifest_table(m)
    # 60 x (0.2, 0.3, 0.5) = 12, 18, 30; positives 12 x 0.25 = 3, 18 x 0.5 = 9, 30 x 0.3 = 9
    assert t["race"].value_counts().to_dict() == {"White": 30, "Black": 18, "Asian": 12}
    assert t[t["label"] == "1"]["race"].value_counts().to_dict() == {"Black": 9, "White": 9, "Asian": 3}
    cohort = json.loads((m.parent / "cohort.json").read_text())
    assert cohort["counts"] == {"Asian": {"0": 9, "1": 3}, "Black": {"0": 9, "1": 9}, "White": {"0": 21, "1": 9}}


def test_group_counts_knob_and_default_prevalence(tmp):
    m = make_cohort("rectal_mri", tmp / "rect_counts", None, 0, shape=(32, 32, 8), group_counts="female=7,male=13")
    t = read_manifest_table(m)
    assert len(t) == 20 and t["sex"].value_counts().to_dict() == {"male": 13, "female": 7}
    # default pCR prevalence 0.3: 7 x 0.3 = 2.1 -> 2, 13 x 0.3 = 3.9 -> 4
    assert t[t["label"] == "1"]["sex"].value_counts().to_dict() == {"male": 4, "female": 2}


def test_fitzpatrick_exact_three_class_counts(tmp):
    m = make_cohort("fitzpatrick17k", tmp / "fitz_exact", 60, 0, shape=(32, 32),
                    group_proportions="1=0.3,2=0.3,3=0.2,4=0.1,5=0.05,6=0.05")
    t = read_manifest_table(m)
    got = {g: Counter(t[t["fitzpatrick"] == g]["label"]) for g in "123456"}
    # sizes 18, 18, 12, 6, 3, 3; malignant round_half_up(n x 0.2); benign round_half_up(rest x 0.25)
    expected = {  # (benign, malignant, non-neoplastic)
        "1": (4, 4, 10),  # 18 x .2 = 3.6 -> 4; 14 x .25 = 3.5 -> 4
        "2": (4, 4, 10),
        "3": (3, 2, 7),  # 12 x .2 = 2.4 -> 2; 10 x .25 = 2.5 -> 3
        "4": (1, 1, 4),  # 6 x .2 = 1.2 -> 1; 5 x .25 = 1.25 -> 1
        "5": (1, 1, 1),  # 3 x .2 = 0.6 -> 1; 2 x .25 = 0.5 -> 1
        "6": (1, 1, 1),
    }
    for g, (b, mal, non) in expected.items():
        assert (got[g]["benign"], got[g]["malignant"], got[g]["non-neoplastic"]) == (b, mal, non), g


def test_apportion_largest_remainder_and_rounding():
    assert common.apportion(10, {"A": 0.25, "B": 0.25, "C": 0.5}, ["A", "B", "C"]) == {"A": 3, "B": 2, "C": 5}
    assert common.apportion(7, {g: 1 / 3 for g in "ABC"}, ["A", "B", "C"]) == {"A": 3, "B": 2, "C": 2}
    assert [common.round_half_up(x) for x in (0.5, 1.5, 2.5, 2.4999)] == [1, 2, 3, 2]
    # 3 x (0.6, 0.3, 0.1) = 1.8, 0.9, 0.3: floors 1, 0, 0; the 2 left go to B (.9) and A (.8): C gets none
    with pytest.raises(ValueError, match=r"n=3 is too small to give group 'C' \(proportion 0.1\) one case"):
        common.apportion(3, {"A": 0.6, "B": 0.3, "C": 0.1}, ["A", "B", "C"])


# ----------------------------------------------------------------------------- splits
def test_splits_stratified_and_folds_on_train_only(tmp):
    m = make_cohort("oct_glaucoma", tmp / "oct_split", 90, 7, shape=(16, 16, 24),
                    group_proportions="Asian=0.2,Black=0.3,White=0.5", prevalence="Black=0.6,White=0.3,Asian=0.3")
    t = read_manifest_table(m)
    for (race, label), s in t.groupby(["race", "label"]):
        n_train = int((s["split"] == "train").sum())
        assert abs(n_train - 0.7 * len(s)) <= 0.5 + 1e-9, (race, label, n_train, len(s))
    train, test = t[t["split"] == "train"], t[t["split"] == "test"]
    assert set(t["split"]) == {"train", "test"}
    assert (test["fold"] == "").all()
    assert sorted(set(train["fold"])) == ["0", "1", "2", "3", "4"]
    sizes = train["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1


def test_isic_patients_and_patient_level_split(tmp):
    m = make_cohort("isic2020", tmp / "isic_pat", 60, 2, shape=(32, 32))
    t = read_manifest_table(m)
    per_patient = t.groupby("patient_id")
    assert per_patient.size().max() <= 4 and (per_patient.size() > 1).sum() >= 5
    assert (per_patient["split"].nunique() == 1).all()  # a patient never straddles train and test
    assert (per_patient["sex"].nunique() == 1).all()
    assert (per_patient["age_approx"].nunique() == 1).all()
    ages = t["age_approx"].astype(float)
    expected = np.where(ages <= 30, "0-30", np.where(ages <= 60, "31-60", "61+"))
    assert (t["age_group"] == expected).all() and set(expected) == {"0-30", "31-60", "61+"}
    p_train = (per_patient["split"].first() == "train").mean()
    assert 0.6 <= p_train <= 0.8


def test_isic_val_fraction_gives_a_patient_level_val_part(tmp):
    m = make_cohort("isic2020", tmp / "isic_val", 60, 2, shape=(32, 32), val_fraction=0.2)
    t = read_manifest_table(m)
    per_patient = t.groupby("patient_id")
    assert (per_patient["split"].nunique() == 1).all()
    shares = per_patient["split"].first().value_counts(normalize=True)
    assert set(shares.index) == {"train", "val", "test"}
    assert 0.6 <= shares["train"] <= 0.8 and 0.1 <= shares["val"] <= 0.3
    plain = read_manifest_table(make_cohort("isic2020", tmp / "isic_plain", 60, 2, shape=(32, 32)))
    # the same training patients as without a val part; images are identical
    assert (plain["split"] == "train").tolist() == (t["split"] == "train").tolist()


# ----------------------------------------------------------------------------- the group cue
def _cue_features(dataset, path, cycles):
    if dataset == "oct_glaucoma":
        profile = nii(path).mean(axis=(1, 2))  # along axis 0
    else:
        profile = png(path).mean(axis=(0, 2))  # along the width
    power = np.abs(np.fft.rfft(profile - profile.mean())) ** 2
    return power[cycles] / power.sum()


@pytest.mark.parametrize("dataset,shape,attribute,chance_max", [
    ("oct_glaucoma", (32, 16, 24), "race", 0.55),  # 3 groups: chance 1/3
    ("fitzpatrick17k", (32, 32), "fitzpatrick", 0.45),  # 6 groups: chance 1/6
])
def test_cue_strength_controls_group_recovery(tmp, dataset, shape, attribute, chance_max):
    axis_len = shape[0] if dataset == "oct_glaucoma" else shape[1]
    n_groups = len(load_schema(dataset).attributes[attribute].categories)
    cycles = common.cue_cycles(axis_len, n_groups)
    acc = {}
    for strength in (0.0, 1.0):
        m = make_cohort(dataset, tmp / f"cue_{dataset}_{strength}", 60, 5, shape=shape, cue_strength=strength)
        recs = load_manifest(m, dataset)
        acc[strength] = cv_accuracy([_cue_features(dataset, r["image"], cycles) for r in recs],
                                    [r[attribute] for r in recs])
    assert acc[1.0] >= 0.9, acc
    assert acc[0.0] <= chance_max, acc


def test_stripe_cue_profile():
    np.testing.assert_array_equal(common.stripe_cue(32, 1, 3, 0.0, 0.3), np.ones(32, dtype=np.float32))
    prof = common.stripe_cue(32, 1, 3, 2.0, 0.0)
    assert common.cue_cycles(32, 3) == [4, 8, 12]
    np.testing.assert_allclose(prof, 1 + 0.2 * np.sin(2 * np.pi * 8 * np.arange(32) / 32), atol=1e-6)


# ----------------------------------------------------------------------------- difficulty
def _noise_oct(r):
    v = nii(r["image"])
    return float(v[:, :, : int(0.12 * v.shape[2])].std())  # pure vitreous


def _noise_rectal(r):
    return float(np.concatenate([c.ravel() for c in corners(nii(r["image"]))]).std())  # air


def _noise_photo(r):
    return photo_noise(png(r["image"])[..., 1])


@pytest.mark.parametrize("dataset,shape,attribute,hard,base,measure", [
    ("oct_glaucoma", (16, 16, 24), "race", "Black", 0.1, _noise_oct),
    ("rectal_mri", (32, 32, 8), "sex", "male", 0.05, _noise_rectal),
    ("fitzpatrick17k", (32, 32), "fitzpatrick", "4", 0.03, _noise_photo),
])
def test_difficulty_multiplies_noise_sd(tmp, dataset, shape, attribute, hard, base, measure):
    m = make_cohort(dataset, tmp / f"diff_{dataset}", 36, 2, shape=shape, difficulty=f"{hard}=2.0")
    sd = {}
    for r in load_manifest(m, dataset):
        sd.setdefault(r[attribute] == hard, []).append(measure(r))
    hard_sd, other_sd = np.mean(sd[True]), np.mean(sd[False])
    assert hard_sd / other_sd == pytest.approx(2.0, rel=0.1)
    assert other_sd == pytest.approx(base, rel=0.1)
    assert hard_sd == pytest.approx(2.0 * base, rel=0.1)


# ----------------------------------------------------------------------------- the label is learnable
def test_oct_glaucoma_learnable_from_rnfl(tmp):
    m = make_cohort("oct_glaucoma", tmp / "learn_oct", 60, 3, shape=(16, 16, 24))
    recs = load_manifest(m, "oct_glaucoma")
    # share of bright (> 0.75) voxels in the upper half of the depth: the RNFL, thinner with glaucoma
    feats = [[(nii(r["image"])[:, :, :12] > 0.75).mean()] for r in recs]
    assert cv_accuracy(feats, [r["label"] for r in recs]) >= 0.85


def test_rectal_pcr_learnable_and_spurious_components(tmp):
    m = make_cohort("rectal_mri", tmp / "learn_rect", 40, 3, shape=(32, 32, 8), spurious_fraction=0.5)
    cohort = json.loads((m.parent / "cohort.json").read_text())
    assert len(cohort["spurious_components"]) == 20  # round_half_up(40 x 0.5)
    feats, y = [], []
    for r in load_manifest(m, "rectal_mri"):
        image, mask = nii(r["image"]), nii(r["mask"])
        lab, nc = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(lab.ravel())[1:]
        assert nc == 1 + cohort["spurious_components"].get(r["case_id"], 0)
        assert sorted(sizes)[:-1] == [s for s in sorted(sizes)[:-1] if s < 20]  # spurious: < 20 voxels
        assert sizes.max() >= 27  # the tumour
        tumour = lab == np.argmax(sizes) + 1
        feats.append([tumour.sum(), image[tumour].mean()])
        y.append(r["label"])
    assert cv_accuracy(feats, y) >= 0.85


def test_isic_melanoma_learnable(tmp):
    m = make_cohort("isic2020", tmp / "learn_isic", 60, 3, shape=(32, 32))
    feats, y = [], []
    for r in load_manifest(m, "isic2020"):
        im = png(r["image"])
        lum = im.mean(axis=2)
        rel = lum / np.mean([c.mean() for c in corners(lum)])
        lesion = rel < 0.85
        darkness = np.sort(rel.ravel())[: rel.size // 10].mean()
        colour_spread = (im[..., 2] - im[..., 0])[lesion].std()
        feats.append([darkness, colour_spread])
        y.append(r["label"])
    assert cv_accuracy(feats, y) >= 0.85


def test_fitzpatrick_condition_learnable(tmp):
    m = make_cohort("fitzpatrick17k", tmp / "learn_fitz", 60, 3, shape=(32, 32), prevalence=0.34,
                    benign_fraction=0.5)
    feats, y = [], []
    for r in load_manifest(m, "fitzpatrick17k"):
        im = png(r["image"])
        skin = np.array([np.mean([c.mean() for c in corners(im[..., ch])]) for ch in range(3)])
        od = -np.log(np.clip(im / skin, 1e-3, None))  # optical density relative to the skin
        lum, red = od.mean(axis=2), od[..., 1] - od[..., 0]
        feats.append([np.sort(lum.ravel())[-lum.size // 20:].mean(), red.max(), (lum > 0.15).mean(),
                      (red > 0.15).mean()])
        y.append(r["label"])
    assert cv_accuracy(feats, y, balanced=True) >= 0.8  # chance: 1/3


# ----------------------------------------------------------------------------- mama_mia: hard subgroup, bbox, pCR
@pytest.fixture(scope="module")
def mama_hard(tmp):
    m = make_cohort("mama_mia", tmp / "mama_hard", None, 4, shape=(24, 24, 12), prevalence=0.5,
                    group_counts="0-40=10,41-50=10,51-60=5,61-70=5,71+=10", hard_subgroup="age_group=71+",
                    hard_strength=1.0)
    return m, load_manifest(m, "mama_mia")


def test_mama_hard_subgroup_lower_contrast_more_noise(mama_hard):
    m, recs = mama_hard
    cohort = json.loads((m.parent / "cohort.json").read_text())
    assert cohort["hard_subgroup"]["n_cases"] == 10
    assert sorted(cohort["hard_subgroup"]["case_ids"]) == sorted(r["case_id"] for r in recs if r["age_group"] == "71+")
    enh, sd, vol = {}, {}, {}
    for r in recs:
        pre, post1, post2 = (nii(r[c]).astype(float) for c in ("image_pre", "image_post1", "image_post2"))
        mask = nii(r["label"]) > 0
        hard = r["age_group"] == "71+"
        enh.setdefault(hard, []).append((post1 - pre)[mask].mean())
        air = int(0.1 * pre.shape[1])
        sd.setdefault(hard, []).append(np.mean([p[:, :air].std() for p in (pre, post1, post2)]))
        vol.setdefault(hard, []).append(mask.sum())
    # hard_strength s = 1: enhancement / 2, noise x 2, tumour volume / 2 (before clipping to the breast)
    assert np.mean(enh[True]) / np.mean(enh[False]) == pytest.approx(0.5, abs=0.07)
    assert np.mean(sd[True]) / np.mean(sd[False]) == pytest.approx(2.0, rel=0.1)
    # (at this tiny shape the 1.5-voxel minimum radius keeps the shrinkage short of 1 / 2)
    assert np.mean(vol[True]) / np.mean(vol[False]) < 0.9


def test_mama_tumour_segmentable_bbox_and_pcr_learnable(mama_hard):
    _, recs = mama_hard
    dice, ratio, pcr = [], [], []
    for r in recs:
        pre, post1, post2 = (nii(r[c]).astype(float) for c in ("image_pre", "image_post1", "image_post2"))
        mask = nii(r["label"]) > 0
        b = [int(r[f"bbox_{a}_{e}"]) for a in "xyz" for e in ("min", "max")]
        for axis in range(3):
            assert 0 <= b[2 * axis] < b[2 * axis + 1] <= pre.shape[axis]
        box = np.zeros_like(mask)
        box[b[0]:b[1], b[2]:b[3], b[4]:b[5]] = True  # max exclusive
        assert not (mask & ~box).any()  # the tumour lies in the box
        assert 0.25 < (b[1] - b[0]) / pre.shape[0] < 0.6  # one breast, not both
        if r["age_group"] != "71+":
            seg = ndimage.uniform_filter(post1 - pre, 3) > 0.2  # thresholded enhancement
            dice.append(2 * (seg & mask).sum() / (seg.sum() + mask.sum()))
        ratio.append([np.median(((post2 - pre) / (post1 - pre))[mask])])
        pcr.append(r["pcr"])
    assert np.mean(dice) >= 0.7
    assert cv_accuracy(ratio, pcr) >= 0.85  # wash-out (pCR) vs persistent enhancement


# ----------------------------------------------------------------------------- --metadata-from
def _mama_fixture(path: Path) -> pd.DataFrame:
    ages = [35] * 8 + [45] * 12 + [55] * 10 + [65] * 6 + [75] * 3 + [None]
    groups = ["0-40"] * 8 + ["41-50"] * 12 + ["51-60"] * 10 + ["61-70"] * 6 + ["71+"] * 3 + [""]
    meno = ["pre" if (a or 0) <= 45 else "post" for a in ages]
    meno = [("unknown" if i % 5 == 0 else m) for i, m in enumerate(meno)]
    density = [("" if i % 5 in (1, 3) else "abcd"[i % 4]) for i in range(40)]  # 16 missing
    df = pd.DataFrame({
        "case_id": [f"real_{i:03d}" for i in range(40)],
        **{c: [f"nowhere/{i}_{c}.nii.gz" for i in range(40)]
           for c in ("image_pre", "image_post1", "image_post2", "label")},
        "age": ["" if a is None else str(a) for a in ages], "age_group": groups, "menopausal_status": meno,
        "breast_density": density, "pcr": [("" if i == 7 else str(int(i % 3 == 0))) for i in range(40)],
    })
    df.to_csv(path, index=False)
    return df


def test_metadata_from_mama_follows_real_joint_distribution(tmp):
    real = _mama_fixture(tmp / "real_mama.csv")
    assert (real["breast_density"] == "").sum() == 16
    key = ["age_group", "menopausal_status", "breast_density", "pcr"]
    real_joint = Counter(map(tuple, real[key].values))
    # n = 2 x 40: every real row is used exactly twice
    m = make_cohort("mama_mia", tmp / "meta_mama80", 80, 0, shape=(24, 24, 12), metadata_from=tmp / "real_mama.csv")
    synth = read_manifest_table(m)
    assert Counter(map(tuple, synth[key].values)) == Counter({k: 2 * v for k, v in real_joint.items()})
    assert (synth["breast_density"] == "").sum() == 32
    # n = 50: 40 rows + 10 drawn without replacement -> shares within 0.1 of the real ones
    m = make_cohort("mama_mia", tmp / "meta_mama50", 50, 1, shape=(24, 24, 12), metadata_from=tmp / "real_mama.csv")
    synth = read_manifest_table(m)
    assert len(synth) == 50
    for col in ("age_group", "menopausal_status", "breast_density"):
        r_share = real[col].value_counts(normalize=True)
        s_share = synth[col].value_counts(normalize=True).reindex(r_share.index, fill_value=0.0)
        assert (s_share - r_share).abs().max() <= 0.1, col
    records = load_manifest(m, "mama_mia")
    assert sum(r["breast_density_code"] == -1 for r in records) == (synth["breast_density"] == "").sum() > 0


def test_metadata_from_fitzpatrick_keeps_missing_types(tmp):
    types = ["1"] * 8 + ["2"] * 7 + ["3"] * 5 + ["4"] * 4 + ["5"] * 2 + ["6"] * 1 + [""] * 3
    labels = [["benign", "malignant", "non-neoplastic"][i % 3] for i in range(30)]
    pd.DataFrame({"case_id": [f"r{i}" for i in range(30)], "image": [f"x/{i}.jpg" for i in range(30)],
                  "label": labels, "fitzpatrick": types}).to_csv(tmp / "real_fitz.csv", index=False)
    m = make_cohort("fitzpatrick17k", tmp / "meta_fitz", 60, 0, shape=(32, 32), metadata_from=tmp / "real_fitz.csv")
    synth = read_manifest_table(m)
    assert Counter(zip(synth["fitzpatrick"], synth["label"])) == Counter({k: 2 * v for k, v in
                                                                         Counter(zip(types, labels)).items()})
    cohort = json.loads((m.parent / "cohort.json").read_text())
    assert len(cohort["missing_fitzpatrick_rendered_as"]) == 6
    # a prevalence knob on top: applied exactly within the real groups (type 1: 16 x 0.5 = 8 malignant)
    m = make_cohort("fitzpatrick17k", tmp / "meta_fitz_prev", 60, 0, shape=(32, 32),
                    metadata_from=tmp / "real_fitz.csv", prevalence="1=0.5")
    synth = read_manifest_table(m)
    assert ((synth["fitzpatrick"] == "1") & (synth["label"] == "malignant")).sum() == 8
    with pytest.raises(ValueError, match="at most one of group_proportions, group_counts and metadata_from"):
        make_cohort("fitzpatrick17k", tmp / "x", 60, 0, metadata_from=tmp / "real_fitz.csv", group_proportions="1=1")


# ----------------------------------------------------------------------------- errors, CLI, atomicity
@pytest.mark.parametrize("dataset,knobs,message", [
    ("oct_glaucoma", {"prevalence": "Hispanic=0.3"},
     "prevalence: unknown group 'Hispanic'; the groups of 'race' are ['Asian', 'Black', 'White']"),
    ("oct_glaucoma", {"group_proportions": "Asian=0.5,Black=0.2"},
     "group_proportions: the proportions {'Asian': 0.5, 'Black': 0.2} sum to 0.7, not 1"),
    ("oct_glaucoma", {"prevalence": "Black=1.5"}, "prevalence: 1.5 for group 'Black' is outside [0, 1]"),
    ("oct_glaucoma", {"difficulty": "White=0"}, "difficulty: 0.0 for group 'White' must be > 0"),
    ("oct_glaucoma", {"cue_strength": "-1"}, "cue_strength -1.0 must be >= 0"),
    ("oct_glaucoma", {"prevalence": "Black=high"}, "prevalence: 'high' is not a number"),
    ("rectal_mri", {"group_counts": "female=3,male=4", "n": 10},
     "group_counts: the counts {'female': 3, 'male': 4} sum to 7, but n=10"),
    ("mama_mia", {"hard_subgroup": "age_group=90+"},
     "hard_subgroup: value '90+' of 'age_group' is not one of ['0-40', '41-50', '51-60', '61-70', '71+']"),
    ("oct_glaucoma", {"hard_subgroup": "age_group=71+"}, "knob(s) ['hard_subgroup'] do not apply to dataset"),
    ("isic2020", {"shape": (8, 8)}, "shape '(8, 8)' is too small"),
])
def test_bad_knobs_raise_value_error_naming_the_value(tmp, dataset, knobs, message):
    knobs = {"n": 30, **knobs}
    n = knobs.pop("n")
    with pytest.raises(ValueError) as err:
        make_cohort(dataset, tmp / "bad", n, 0, **knobs)
    assert message in str(err.value)
    assert not (tmp / "bad" / "manifest.csv").exists()


def test_n_too_small_for_every_group(tmp):
    with pytest.raises(ValueError, match=r"n=2 is too small to give group 'White' \(proportion 0.333333\) one case"):
        make_cohort("oct_glaucoma", tmp / "bad", 2, 0)
    with pytest.raises(ValueError, match="unknown dataset 'chest_xray'"):
        make_cohort("chest_xray", tmp / "bad", 10, 0)


@pytest.mark.parametrize("argv,fragment", [
    (["oct_glaucoma", "--out", "OUT", "--n", "30", "--prevalence", "Hispanic=0.3"], "unknown group 'Hispanic'"),
    (["oct_glaucoma", "--out", "OUT", "--n", "30", "--group-proportions", "Asian=0.5,Black=0.2"],
     "sum to 0.7, not 1"),
    (["oct_glaucoma", "--out", "OUT", "--n", "30", "--prevalence", "Black=1.5"], "prevalence: 1.5 for group 'Black'"),
    (["fitzpatrick17k", "--out", "OUT", "--n", "10", "--group-proportions", "1=0.95,6=0.05"],
     "n=10 is too small to give group '6'"),
    (["oct_glaucoma", "--out", "OUT", "--n", "30", "--cue-strength", "strong"],
     "cue_strength: 'strong' is not a number"),
    (["oct_glaucoma", "--out", "OUT", "--n", "30", "--hard-subgroup", "age_group=71+"],
     "unrecognized arguments: --hard-subgroup"),
    (["rectal_mri", "--n", "30"], "the following arguments are required: --out"),
    ([], "the following arguments are required: dataset"),
    (["chest_xray", "--out", "OUT"], "argument dataset: invalid choice: 'chest_xray'"),
])
def test_cli_bad_knob_one_line_exit_2(tmp, capsys, argv, fragment):
    out = tmp / "cli_bad"
    code = main([str(out) if a == "OUT" else a for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("fairmonai-synth: error: ") and err.count("\n") == 1, err
    assert fragment in err
    assert not (out / "manifest.csv").exists()


def test_cli_writes_cohort_and_summary(tmp, capsys):
    out = tmp / "cli_ok"
    code = main(["isic2020", "--out", str(out), "--n", "20", "--seed", "4", "--shape", "32,32",
                 "--prevalence", "female=0.5,male=0.2", "--cue-strength", "1"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == (f"isic2020: wrote 20 cases to {out / 'manifest.csv'} | "
                         "sex: female n=10 melanoma=0.50, male n=10 melanoma=0.20")
    assert len(load_manifest(out / "manifest.csv", "isic2020")) == 20
    assert json.loads((out / "cohort.json").read_text())["knobs"]["cue_strength"] == 1.0


def test_cli_subprocess_exit_codes(tmp):
    cmd = [sys.executable, "-m", "fairmonai.data.synth", "oct_glaucoma", "--out", str(tmp / "sub"), "--n", "6",
           "--shape", "16,16,24", "--quiet"]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout == "" and ok.stderr == "", ok.stderr
    bad = subprocess.run(cmd + ["--prevalence", "White=2"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr == "fairmonai-synth: error: prevalence: 2.0 for group 'White' is outside [0, 1]\n"
    assert "Traceback" not in bad.stderr


def test_failure_mid_run_leaves_no_manifest(tmp, monkeypatch):
    out = tmp / "atomic"
    make_cohort("isic2020", out, 10, 0, shape=(32, 32))
    assert (out / "manifest.csv").exists()
    calls = {"n": 0}
    real = common.write_png

    def failing(path, rgb):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        real(path, rgb)

    monkeypatch.setattr(common, "write_png", failing)
    with pytest.raises(OSError, match="disk full"):
        make_cohort("isic2020", out, 10, 1, shape=(32, 32))
    assert not (out / "manifest.csv").exists() and not (out / "cohort.json").exists()


def test_mama_mia_age_ranges_cover_the_schema_bins():
    """The synthetic ages of each age group are drawn in a range that age_to_group maps back to that group,
    and the ranges name exactly the schema's groups, in its order."""
    from fairmonai.data.attributes import age_to_group
    from fairmonai.data.synth.mama_mia import _AGE_RANGE

    assert list(_AGE_RANGE) == list(load_schema("mama_mia").attributes["age_group"].categories)
    for group, (lo, hi) in _AGE_RANGE.items():
        assert age_to_group(lo) == age_to_group(hi) == group
