"""Reports: the numbers written equal independent computations; bad input gets a clear error."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fairmonai.reports import ReportInputError, dice_matrix, write_report
from fairmonai.reports.__main__ import main


def _classification_file(tmp_path, n=120, seed=0):
    rng = np.random.default_rng(seed)
    sex = np.array(["female", "male"] * (n // 2))
    y = rng.integers(0, 2, n)
    score = np.clip(0.4 * y + 0.3 + 0.2 * rng.standard_normal(n), 0, 1)
    sex_cells = sex.astype(object)
    sex_cells[:3] = ""  # three cases without a value: overall figures only
    df = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "label": y, "score": score, "sex": sex_cells})
    p = tmp_path / "pred.csv"
    df.to_csv(p, index=False)
    return p, y, score, sex


def test_classification_report_matches_sklearn(tmp_path):
    p, y, score, sex = _classification_file(tmp_path)
    with pytest.warns(UserWarning, match="sex: 3 case\\(s\\) without a value although the schema's missing-value "
                                         "policy is 'error'"):
        files = write_report(p, tmp_path / "rep", schema="isic2020", n_bootstrap=50)
    rep = json.loads(files["json"].read_text())
    d = rep["attributes"]["sex"]
    assert d["n_samples"] == 120 and d["n_excluded"] == 3
    assert rep["missing_values"]["sex"] == {"policy": "error", "n_excluded": 3, "n_unknown": 0,
                                            "unknown_category": None}
    # sigma_IoU with the paper's conventions (ddof 1, an absent class scores 0), stated in both files
    assert rep["attributes"]["sex"]["disparities"]["sigma_iou"]["details"]["ddof"] == 1
    assert rep["attributes"]["sex"]["disparities"]["sigma_iou"]["details"]["absent_class"] == "zero"
    auc = d["metrics"]["auc"]
    assert auc["overall"] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    for g in ("female", "male"):
        m = (sex == g)
        m[:3] = False
        assert auc["by_group"][g] == pytest.approx(roc_auc_score(y[m], score[m]), abs=1e-12)
    # TPR at threshold 0.5, by hand from the arrays
    pred = score >= 0.5
    m = (sex == "male")
    m[:3] = False
    tpr_male = (pred & (y == 1) & m).sum() / ((y == 1) & m).sum()
    assert d["metrics"]["tpr"]["by_group"]["male"] == pytest.approx(tpr_male)
    # CSV rows carry the same values; Markdown shows them
    csv = pd.read_csv(files["csv"])
    row = csv[(csv.attribute == "sex") & (csv.metric == "auc") & (csv.group == "female")].iloc[0]
    assert row["value"] == pytest.approx(auc["by_group"]["female"])
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    md = files["markdown"].read_text()
    assert "std of the groups' mean class IoU, ddof 1; a class absent from a group: zero" in md
    assert "| sex | error | 3 | - |" in md
    assert f"| overall | 120 | {auc['overall']:.3f} [" in md and "| female | 58 |" in md and "| male | 59 |" in md
    for key in ("forest_auc_sex", "fairness_sex"):
        assert files[key].stat().st_size > 1000 and files[key].read_bytes()[:4] == b"\x89PNG"


def test_eodd_strategy_is_stated(tmp_path):
    rng = np.random.default_rng(1)
    n = 90
    race = np.repeat(["Asian", "Black", "White"], 30)
    y = np.tile([0, 1], 45)
    pd.DataFrame({"case_id": range(n), "label": y, "score": rng.random(n), "race": race}).to_csv(tmp_path / "p.csv",
                                                                                              index=False)
    files = write_report(tmp_path / "p.csv", tmp_path / "a", schema="oct_glaucoma", n_bootstrap=0,
                         reference_group="Black")
    d = json.loads(files["json"].read_text())["attributes"]["race"]["disparities"]["eodd"]
    assert d["strategy"] == "one_vs_rest"
    assert "one_vs_rest (reference group Black)" in files["markdown"].read_text()
    files = write_report(tmp_path / "p.csv", tmp_path / "b", schema="oct_glaucoma", n_bootstrap=0)
    assert json.loads(files["json"].read_text())["attributes"]["race"]["disparities"]["eodd"]["strategy"] == "max_pair"


def test_dice_matrix_by_hand():
    dsc = np.array([0.2, 0.4, 0.9, 0.5, 1.0])
    a = np.array([0, 0, 1, -1, 1])
    b = np.array([0, 0, 1, 1, 0])
    mean, count = dice_matrix(dsc, a, b, 2, 2)
    # cell (0,0): 0.2, 0.4 -> 0.3; (1,1): 0.9; (1,0): 1.0; (0,1): empty; the a=-1 case is left out
    assert count.tolist() == [[2, 0], [1, 1]]
    assert mean[0, 0] == pytest.approx(0.3) and np.isnan(mean[0, 1])
    assert mean[1, 0] == pytest.approx(1.0) and mean[1, 1] == pytest.approx(0.9)


def test_segmentation_report_by_hand(tmp_path):
    # four cases; age group 0-40: dice 0.8, 0.6 (mean 0.7), normhd from hd95 15, 30 -> 0.1, 0.2 (mean 0.15)
    #             41-50: dice 0.4, 0.2 (mean 0.3), hd95 300 -> clipped 1.0, and 0 -> 0.0 (mean 0.5)
    # D_age = 0.5 (|0.7-0.3| + |0.15-0.5|) = 0.5 (0.4 + 0.35) = 0.375; FS = 0.625
    # PS = 0.5 (mean dice 0.5 + 1 - mean normhd 0.325) = 0.5875; TS = 0.5 PS + 0.5 FS = 0.60625
    df = pd.DataFrame({"case_id": list("abcd"), "dice": [0.8, 0.6, 0.4, 0.2], "hd95": [15, 30, 300, 0],
                       "age_group": ["0-40", "0-40", "41-50", "41-50"]})
    df.to_csv(tmp_path / "seg.csv", index=False)
    files = write_report(tmp_path / "seg.csv", tmp_path / "rep", attributes=["age_group"])
    rep = json.loads(files["json"].read_text())
    assert rep["fairness_score"] == pytest.approx(0.625)
    assert rep["performance_score"] == pytest.approx(0.5875)
    assert rep["total_score"] == pytest.approx(0.60625)
    assert rep["variables"]["age_group"]["disparity"] == pytest.approx(0.375)
    # with the default 1000 resamples each group mean has an interval: the 0-40 group's mean lies
    # between its two cases' values on every replicate where it has a case, and is each extreme on
    # about 27 % of them, so the 95 % interval is [0.6, 0.8] for DSC and [0.1, 0.2] for NormHD
    assert "| 0-40 | 2 | 0.700 [0.600, 0.800] | 0.150 [0.100, 0.200] |" in files["markdown"].read_text()


def test_segmentation_heatmaps_for_each_pair(tmp_path):
    df = pd.DataFrame({"case_id": list("abcd"), "dice": [0.8, 0.6, 0.4, 0.2], "normhd": [0.1, 0.2, 0.3, 0.4],
                       "age_group": ["0-40", "0-40", "41-50", "41-50"], "menopausal_status": ["pre", "post", "", "pre"],
                       "breast_density": ["a", "", "", "d"]})
    df.to_csv(tmp_path / "seg.csv", index=False)
    files = write_report(tmp_path / "seg.csv", tmp_path / "rep", schema="mama_mia")
    assert {k for k in files if k.startswith("heatmap_")} == {
        "heatmap_age_group_x_menopausal_status", "heatmap_age_group_x_breast_density",
        "heatmap_menopausal_status_x_breast_density"}
    rep = json.loads(files["json"].read_text())
    # breast density: empty cells are excluded (2 of 4 cases)
    assert rep["variables"]["breast_density"]["n_excluded"] == 2


@pytest.mark.parametrize(
    "frame,kwargs,fragment",
    [
        ({"case_id": ["a", "a"], "label": [0, 1], "score": [0.1, 0.2], "sex": ["male", "female"]}, {},
         "duplicate case_id 'a' (lines 2 and 3)"),
        ({"case_id": ["a", "b"], "label": [0, 1], "score": [0.1, ""], "sex": ["male", "female"]}, {},
         "case 'b', column 'score': value '' is missing (empty or NaN)"),
        ({"case_id": ["a", "b"], "label": [0, 1], "score": [0.1, 0.3], "sex": ["male", "other"]},
         {"schema": "isic2020"}, "case 'b', column 'sex': value 'other' is not one of the schema's categories "
                                 "['female', 'male']"),
        ({"case_id": ["a", "b"], "label": [0, 1], "score": [0.1, 0.3]}, {"attributes": ["sex"]},
         "missing attribute column(s) ['sex']"),
        ({"case_id": ["a", "b"], "y": [0, 1]}, {}, "cannot tell the task"),
    ],
)
def test_bad_input(tmp_path, frame, kwargs, fragment):
    pd.DataFrame(frame).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ReportInputError) as err:
        write_report(tmp_path / "p.csv", tmp_path / "out", n_bootstrap=0, **kwargs)
    assert fragment in str(err.value)


def test_cli_exit_codes(tmp_path, capsys):
    p, *_ = _classification_file(tmp_path)
    assert main([str(p), "--out", str(tmp_path / "cli"), "--schema", "isic2020", "--n-bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "report written to" in out
    assert "  sex: 3 excluded (missing-value policy error)" in out
    # an input error: status 1, one line
    assert main([str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing.csv'}: predictions file not found\n"
    # a usage error: status 2, as argparse
    with pytest.raises(SystemExit) as e:
        main([str(p), "--out", str(tmp_path / "y"), "--reference-group", "female", "male"])
    assert e.value.code == 2
    assert "--reference-group 'female': use GROUP, or ATTRIBUTE=GROUP" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
