"""The rectal MRI cohort at the FaMI paper's counts: the synthetic ``split_counts`` preset (exact cells,
folds, sites, reproducibility, the planted sex shortcut measured on the images) and the converter's
given split with its split x pCR x sex summary.

Expected counts are hand-counted from the cells in ``PAPER_SPLIT_COUNTS`` or the CSVs below; measured
quantities (the shortcut) are compared with thresholds well clear of the values seen (in comments).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fairmonai.data import read_manifest_table
from fairmonai.data.cohort_cache import ensure_cohort
from fairmonai.data.convert.__main__ import main as convert_main
from fairmonai.data.synth import common, knobs_of, make_cohort
from fairmonai.data.synth.rectal_mri import PAPER_SPLIT_COUNTS, _TUMOUR, _tumour_params, parse_split_counts

SHAPE = [32, 32, 8]  # as a JSON config gives it
# the bundle default, at a tiny shape
PAPER_KNOBS = {"split_counts": "paper", "cue_strength": 3.0, "label_signal": 0.5, "sites": 4, "shape": SHAPE}
# the paper's joint cells (split, sex, pCR) -> cases, as chosen in the module docstring
PAPER_CELLS = {("train", "female", "0"): 21, ("train", "female", "1"): 14, ("train", "male", "0"): 89,
               ("train", "male", "1"): 6, ("test", "female", "0"): 18, ("test", "female", "1"): 4,
               ("test", "male", "0"): 27, ("test", "male", "1"): 7}


def nii(path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def cells(t) -> dict:
    return {k: int(v) for k, v in t.groupby(["split", "sex", "label"]).size().items()}


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def phi(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """The paper preset built as a bundle builds it: ensure_cohort with the config's knobs."""
    out = tmp_path_factory.mktemp("rectal") / "paper"
    return Path(ensure_cohort("rectal_mri", out, seed=0, **PAPER_KNOBS))


# ------------------------------------------------------------------------------------- the paper's counts
def test_paper_preset_exact_cells(paper):
    assert {"split_counts", "label_signal", "sites"} <= set(knobs_of("rectal_mri"))
    t = read_manifest_table(paper)
    assert len(t) == 186
    assert cells(t) == PAPER_CELLS
    # the paper's margins: train 130 (20 pCR / 110; 95 M / 35 F), test 56 (11 / 45; 34 M / 22 F)
    for split, n, pcr, male in [("train", 130, 20, 95), ("test", 56, 11, 34)]:
        part = t[t["split"] == split]
        assert (len(part), (part["label"] == "1").sum(), (part["sex"] == "male").sum()) == (n, pcr, male)
    cohort = json.loads((paper.parent / "cohort.json").read_text())
    assert cohort["split_cells"] == PAPER_SPLIT_COUNTS == cohort["knobs"]["split_counts"]
    assert cohort["splits"] == {"train": 130, "test": 56}
    # four sites, equal counts: 186 = 47 + 47 + 46 + 46 (largest remainder, ties to the lower site)
    assert t["site"].value_counts().sort_index().to_dict() == {"site1": 47, "site2": 47, "site3": 46, "site4": 46}
    assert list(t.columns) == ["case_id", "image", "mask", "label", "sex", "age", "site", "split", "fold"]


def test_paper_preset_folds_stratified(paper):
    t = read_manifest_table(paper)
    train, test = t[t["split"] == "train"], t[t["split"] == "test"]
    assert (test["fold"] == "").all()
    assert train["fold"].value_counts().to_dict() == {str(f): 26 for f in range(5)}  # 130 / 5
    for (sex, label), part in train.groupby(["sex", "label"]):
        per_fold = [int((part["fold"] == str(f)).sum()) for f in range(5)]
        assert max(per_fold) - min(per_fold) <= 1, (sex, label, per_fold)  # e.g. 6 male pCR -> 2,1,1,1,1


def test_ensure_cohort_reuses_and_same_seed_same_cohort(paper, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in paper.parent.rglob("*") if p.is_file()}
    assert ensure_cohort("rectal_mri", paper.parent, seed=0, **PAPER_KNOBS) == str(paper)
    assert {p: p.stat().st_mtime_ns for p in paper.parent.rglob("*") if p.is_file()} == before  # nothing rewritten
    again = make_cohort("rectal_mri", tmp_path / "again", None, 0, **PAPER_KNOBS)
    a, b = all_files(paper.parent), all_files(again.parent)
    a.pop("cohort_request.json")  # written by ensure_cohort only
    assert a.keys() == b.keys() and len(a) == 2 + 2 * 186
    assert all(a[k] == b[k] for k in a)
    # another seed: other cases, same cells
    other = read_manifest_table(make_cohort("rectal_mri", tmp_path / "seed1", None, 1, **PAPER_KNOBS))
    assert cells(other) == PAPER_CELLS
    assert (other["split"] != read_manifest_table(paper)["split"]).any()


# ------------------------------------------------------------------------------------- the planted shortcut
def image_is_male(image: np.ndarray) -> bool:
    """Sex read off the image: the stripe cue's cycles across axis 0 (female 5, male 11 at X = 32),
    compared by the amplitude of the mean profile's Fourier coefficients (at ``cue_strength`` 1 this
    misreads 4 of 186; at 3, none)."""
    c_female, c_male = common.cue_cycles(image.shape[0], 2)
    profile = image.mean(axis=(1, 2))
    spectrum = np.abs(np.fft.rfft(profile - profile.mean()))
    return bool(spectrum[c_male] > spectrum[c_female])


def test_planted_sex_shortcut(paper):
    t = read_manifest_table(paper)
    root = paper.parent
    y = (t["label"] == "1").to_numpy().astype(int)
    female = (t["sex"] == "female").to_numpy()
    train = (t["split"] == "train").to_numpy()
    # 1. the cells: sex predicts pCR in train only (hand-computed phi coefficients)
    phi_train = (14 * 89 - 21 * 6) / math.sqrt(35 * 95 * 20 * 110)  # 0.414
    phi_test = (4 * 27 - 18 * 7) / math.sqrt(22 * 34 * 11 * 45)  # -0.030
    assert phi(female[train], y[train]) == pytest.approx(phi_train, abs=1e-9)
    assert phi(female[~train], y[~train]) == pytest.approx(phi_test, abs=1e-9)
    # 2. the image shows sex (the cue), so an image model can use it
    tumour_mean, seen_female = [], []
    for _, r in t.iterrows():
        image, mask = nii(root / r["image"]), nii(root / r["mask"])
        tumour_mean.append(float(image[mask > 0].mean()))
        seen_female.append(not image_is_male(image))
    seen_female = np.array(seen_female)
    assert (seen_female == female).all()  # so the image's sex carries the same phi as the table's
    # 3. a logistic regression on the tumour's mean intensity (the real signal) and the image's sex, fitted
    # on train, leans on sex, and on test that shows as an FPR gap between the sexes it lacks without sex
    X = np.column_stack([tumour_mean, seen_female]).astype(float)
    X = (X - X[train].mean(0)) / X[train].std(0)
    test = ~train

    def fpr_gap(cols):
        model = LogisticRegression(class_weight="balanced").fit(X[train][:, cols], y[train])
        pred = model.predict(X[:, cols])
        fpr = {g: pred[test & (female == g) & (y == 0)].mean() for g in (True, False)}
        return model.coef_[0], fpr[True] - fpr[False]

    coef, gap_with_sex = fpr_gap([0, 1])
    _, gap_without = fpr_gap([0])
    assert coef[0] < -1.0 and coef[1] > 0.8  # seen: -1.90 (darker tumour: pCR), +1.22 (female: pCR)
    assert gap_with_sex >= 0.35  # seen: 0.56 - 0.04 = 0.52
    assert abs(gap_without) <= 0.1  # seen: 0.17 - 0.19 = -0.02


def test_label_signal_moves_tumours_to_their_midpoint(paper):
    assert _tumour_params(True, 1.0) == _TUMOUR["1"] and _tumour_params(False, 1.0) == _TUMOUR["0"]
    (lo1, hi1), mean1, tex1 = _tumour_params(True, 0.0)
    assert (lo1, hi1, mean1, tex1) == pytest.approx((0.155, 0.245, 0.55, 0.055))  # the midpoint ...
    (lo0, hi0), mean0, tex0 = _tumour_params(False, 0.0)
    assert (lo0, hi0, mean0, tex0) == pytest.approx((lo1, hi1, mean1, tex1))  # ... for both classes
    (lo, hi), mean, texture = _tumour_params(True, 0.5)  # a quarter of the way from pCR to non-pCR
    assert (lo, hi, mean, texture) == pytest.approx((0.1425, 0.2275, 0.525, 0.0425))
    cohort = json.loads((paper.parent / "cohort.json").read_text())
    assert cohort["knobs"]["label_signal"] == 0.5
    assert cohort["label"]["tumour"]["1"]["mean"] == pytest.approx(0.525)
    assert cohort["label"]["tumour"]["0"]["mean"] == pytest.approx(0.575)


# ------------------------------------------------------------------------------------- other cells, errors
def test_split_counts_as_text_and_sites(tmp_path):
    spec = "train/female/1=3, train/male/0=5, test/male/1=2"
    m = make_cohort("rectal_mri", tmp_path / "c", 10, 4, shape=SHAPE, split_counts=spec, sites=3)
    t = read_manifest_table(m)
    assert cells(t) == {("train", "female", "1"): 3, ("train", "male", "0"): 5, ("test", "male", "1"): 2}
    assert t["site"].value_counts().sort_index().to_dict() == {"site1": 4, "site2": 3, "site3": 3}
    assert parse_split_counts("PAPER") == PAPER_SPLIT_COUNTS
    assert parse_split_counts({"train": {"male": {0: 2}}})["train"]["male"] == {"0": 2, "1": 0}
    # no sites: no column
    t = read_manifest_table(make_cohort("rectal_mri", tmp_path / "d", None, 4, shape=SHAPE, split_counts=spec))
    assert "site" not in t.columns


@pytest.mark.parametrize("knobs,message", [
    ({"split_counts": "fami"}, "split_counts: unknown preset 'fami'; presets are ['paper']"),
    ({"split_counts": {"val": {"male": {"0": 3}}}},
     "split_counts: unknown split 'val'; expected one of ['train', 'test']"),
    ({"split_counts": "train/other/0=3"},
     "split_counts: unknown group 'other'; the groups of 'sex' are ['female', 'male']"),
    ({"split_counts": "train/male/2=3"}, "split_counts: unknown label '2' in 'train/male'; expected one of ['0', '1']"),
    ({"split_counts": "train/male/0=2.5"}, "split_counts: count 2.5 of 'train/male/0' is not a whole number >= 0"),
    ({"split_counts": "train/male=3"}, "split_counts: item 'train/male=3' is not of the form split/sex/label=count"),
    ({"split_counts": "train/male/0=1,test/male/0=5"},
     "split_counts: the training part has 1 case(s); at least 2 are needed for its folds"),
    ({"split_counts": "paper", "prevalence": "female=0.4"},
     "split_counts fixes the sexes, labels and splits: give none of ['prevalence'] with it"),
    ({"split_counts": "paper", "n": 200}, "split_counts: the cells sum to 186, but n=200"),
    ({"label_signal": 1.5}, "label_signal 1.5 is outside [0, 1]"),
    ({"sites": 2.5}, "sites 2.5 must be a whole number >= 0"),
])
def test_bad_split_knobs_name_the_value(tmp_path, knobs, message):
    n = knobs.pop("n", None if "split_counts" in knobs else 10)
    with pytest.raises(ValueError) as err:
        make_cohort("rectal_mri", tmp_path / "bad", n, 0, shape=SHAPE, **knobs)
    assert message in str(err.value)
    assert not (tmp_path / "bad" / "manifest.csv").exists()


# ------------------------------------------------------------------------------------- the converter
# (id, pcr, sex, split) with hand-counted cells:
#   train: female pCR 2 / non 3, male pCR 1 / non 4 (10); val: female pCR 1, male non 1 (2);
#   test: female non 1, male pCR 1 / non 2 (4); T99 lacks pCR and is dropped
CONVERT_ROWS = [
    ("T01", "1", "F", "train"), ("T02", "0", "M", "test"), ("T03", "0", "f", "Train"), ("T04", "1", "M", "train"),
    ("T05", "0", "M", "train"), ("T06", "1", "F", "val"), ("T07", "0", "F", "train"), ("T08", "0", "M", "VAL"),
    ("T09", "1", "F", "train"), ("T10", "0", "M", "train"), ("T11", "0", "F", "test"), ("T12", "0", "F", "train"),
    ("T13", "1", "M", "test"), ("T14", "0", "M", "train"), ("T15", "0", "M", "test"), ("T16", "0", "m", "train"),
    ("T99", "", "M", "test"),
]
SUMMARY = """note: cases per split x pCR x sex:
split  pcr    female  male  total
train  0           3     4      7
train  1           2     1      3
train  total       5     5     10
val    0           0     1      1
val    1           1     0      1
val    total       1     1      2
test   0           1     2      3
test   1           0     1      1
test   total       1     3      4"""


def write_csv(path: Path, rows, header="patient_id,pcr,sex,split") -> Path:
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def convert(capsys, *args):
    rc = convert_main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_converter_keeps_given_split_and_prints_cells(capsys, tmp_path):
    csv = write_csv(tmp_path / "clinical.csv", CONVERT_ROWS)
    out = tmp_path / "manifest.csv"
    rc, stdout, err = convert(capsys, "rectal_mri", csv, tmp_path / "img", "--out", out, "--no-check-files",
                              "--folds", "2")
    assert rc == 0, err
    assert "rectal_mri: 16 cases" in stdout and "dropped rows: 1 pCR missing (column 'pcr')" in stdout
    assert "split: train 10, val 2, test 4 | folds of train: 0: 5, 1: 5" in stdout
    assert SUMMARY in stdout
    t = read_manifest_table(out).set_index("case_id")
    given = {cid: split.lower() for cid, _, _, split in CONVERT_ROWS if cid != "T99"}
    assert t["split"].to_dict() == given
    assert (t.loc[t["split"] != "train", "fold"] == "").all()
    for _, part in t[t["split"] == "train"].groupby(["label", "sex"]):  # strata of 2, 3, 1, 4 cases over 2 folds
        per_fold = [int((part["fold"] == f).sum()) for f in ("0", "1")]
        assert max(per_fold) - min(per_fold) <= 1


def test_converter_without_split_column_makes_the_seeded_split(capsys, tmp_path):
    rows = [r[:3] for r in CONVERT_ROWS if r[0] != "T99"]
    csv = write_csv(tmp_path / "c.csv", rows, header="patient_id,pcr,sex")
    out = tmp_path / "m.csv"
    rc, stdout, _ = convert(capsys, "rectal_mri", csv, tmp_path / "img", "--out", out, "--no-check-files")
    assert rc == 0
    # strata: female pCR 3, male pCR 2, female non 4, male non 7; round(0.7 n) = 2, 1, 3, 5 in train (11 of 16)
    assert "split: train 11, test 5" in stdout
    assert "note: split: seeded (seed 0) stratified on pCR x sex" in stdout
    for line in ["train  0           3     5      8", "train  1           2     1      3",
                 "train  total       5     6     11", "test   0           1     2      3",
                 "test   1           1     1      2", "test   total       2     3      5"]:
        assert line in stdout


@pytest.mark.parametrize("bad,line,message", [
    ("holdout", 4, "split 'holdout' is not one of ['train', 'val', 'test']"),
    ("", 4, "split '' is not one of ['train', 'val', 'test']"),
])
def test_converter_bad_split_value_names_the_row(capsys, tmp_path, bad, line, message):
    rows = [("A", "1", "M", "train"), ("B", "0", "F", "train"), ("C", "0", "F", bad)]
    csv = write_csv(tmp_path / "c.csv", rows)
    rc, _, err = convert(capsys, "rectal_mri", csv, tmp_path, "--out", tmp_path / "m.csv", "--no-check-files")
    assert rc == 2 and f"{csv}, row {line}, column 'split': {message}" in err
    assert not (tmp_path / "m.csv").exists()


def test_converter_one_training_case_is_refused(capsys, tmp_path):
    csv = write_csv(tmp_path / "c.csv", [("A", "1", "M", "train"), ("B", "0", "F", "test")])
    rc, _, err = convert(capsys, "rectal_mri", csv, tmp_path, "--out", tmp_path / "m.csv", "--no-check-files")
    assert rc == 2
    assert "column 'split': the split column gives one training case ('A' after dropped rows)" in err


def test_spurious_components_fall_under_the_20_voxel_rule_after_resampling(tmp_path):
    """Every spurious mask box stays under 20 voxels after the 1 mm resampling, so the preprocessing's
    component rule leaves the tumour alone (one kept component per case) and the union box is the
    tumour's; before the bound a 2 x 2 x 2 box (24 voxels at 1 mm) survived."""
    import SimpleITK as sitk

    from fairmonai.data.preprocess import mask_components, read_image, read_mask, resample_isotropic
    from fairmonai.data.synth import make_cohort

    manifest = make_cohort("rectal_mri", tmp_path / "c", 16, 5, shape=(32, 32, 8), spurious_fraction=1.0)
    cohort = json.loads((tmp_path / "c" / "cohort.json").read_text())
    assert len(cohort["spurious_components"]) == 16
    import pandas as pd

    table = pd.read_csv(manifest)
    for r in table.itertuples():
        image = read_image(tmp_path / "c" / r.image, case=r.case_id)
        mask = read_mask(tmp_path / "c" / r.mask, image, case=r.case_id)
        native = sitk.GetArrayFromImage(sitk.ConnectedComponent(mask, False))
        assert native.max() == 1 + cohort["spurious_components"][r.case_id]
        _, mask_1mm = resample_isotropic(image, mask)
        _, info = mask_components(mask_1mm, min_voxels=20, case=r.case_id)
        # a box thinner than 1 mm can fall between the 1 mm centres and vanish: at most as many dropped
        assert info.n_kept == 1 and info.n_dropped <= cohort["spurious_components"][r.case_id], r.case_id
        assert all(size < 20 for size in info.dropped_sizes)
