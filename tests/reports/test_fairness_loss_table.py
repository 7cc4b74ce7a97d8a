"""Table 3 rows: hand-computed batch losses (empty='zero'), whole-set losses, sigma_IoU, sklearn AUC and MI."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mutual_info_score, roc_auc_score

from fairmonai.reports import batch_averaged_losses, fairness_loss_row, write_fairness_loss_table

# sorted by case id; batches of 3: (c1 c2 c3), (c4 c5 c6)
CASES = pd.DataFrame({
    "case_id": ["c1", "c2", "c3", "c4", "c5", "c6"],
    "label": [0, 1, 0, 1, 0, 1],
    "score": [0.2, 0.6, 0.55, 0.9, 0.1, 0.7],
    "sex": ["female", "female", "male", "male", "female", "male"],
})


@pytest.fixture
def predictions(tmp_path):
    path = tmp_path / "predictions_val.csv"
    df = CASES.assign(prediction=(CASES["score"] >= 0.5).astype(int))
    df.iloc[::-1].to_csv(path, index=False)  # rows in another order: batches follow the case ids
    return path


def _miou(c):
    """mean class IoU of a 2x2 confusion matrix (rows: label), an absent class 0."""
    out = []
    for k in range(2):
        union = c[k].sum() + c[:, k].sum() - c[k, k]
        out.append(c[k, k] / union if union > 0 else 0.0)
    return sum(out) / 2


def _mi(joint):
    """I(yhat; s) of a joint table, by sklearn (natural log)."""
    return mutual_info_score(None, None, contingency=np.asarray(joint) * 1e6)


def test_row_against_hand_computed_values(predictions):
    row = fairness_loss_row(predictions, attribute="sex", schema="isic2020", model="baseline", split="val",
                            batch_size=3)
    # L_dp^l2, batch 1: p(1|f) = 0.4, p(1|m) = 0.55, p(1) = 0.45; batch 2: 0.1, 0.8, 1.7/3; both classes alike
    b1 = 2 * ((0.4 - 0.45) ** 2 + (0.55 - 0.45) ** 2)
    b2 = 2 * ((0.1 - 1.7 / 3) ** 2 + (0.8 - 1.7 / 3) ** 2)
    assert row["dp_l2"] == pytest.approx((b1 + b2) / 2, abs=1e-12)
    # L_eo^l2: batch 1 lacks (y=1, male), batch 2 (y=0, male): both 0 under empty='zero'
    assert row["eo_l2"] == 0.0
    # whole set: p(1|y=0,f) = 0.15, (y=0,m) 0.55, y=0 0.85/3; (y=1,f) 0.6, (y=1,m) 0.8, y=1 2.2/3
    whole = 2 * ((0.15 - 0.85 / 3) ** 2 + (0.55 - 0.85 / 3) ** 2 + (0.6 - 2.2 / 3) ** 2 + (0.8 - 2.2 / 3) ** 2)
    assert row["eo_l2_all"] == pytest.approx(whole, abs=1e-12)
    # p(1|f) = 0.9/3, p(1|m) = 2.15/3, p(1) = 3.05/6
    assert row["dp_l2_all"] == pytest.approx(2 * ((0.9 / 3 - 3.05 / 6) ** 2 + (2.15 / 3 - 3.05 / 6) ** 2), abs=1e-12)
    # L_dp^MI: joint (yhat, s) of batch 1 is independent (0); batch 2: p(1,f) = 0.1/3, p(0,f) = 0.9/3, ...
    mi2 = _mi([[0.9 / 3, 0.4 / 3], [0.1 / 3, 1.6 / 3]])
    assert row["dp_mi"] == pytest.approx((_mi([[1.2 / 3, 0.45 / 3], [0.8 / 3, 0.55 / 3]]) + mi2) / 2, abs=1e-6)
    # L_eo^MI: batch 1: y=0 holds c1 (f, 0.2) and c3 (m, 0.55), y=1 only females (0); batch 2: y=0 only c5 (0),
    # y=1 only males (0)
    eo_b1 = _mi([[0.8 / 2, 0.45 / 2], [0.2 / 2, 0.55 / 2]])
    assert row["eo_mi"] == pytest.approx(eo_b1 / 2, abs=1e-6)
    # L_IoU on soft confusion matrices, batch 1: f rows [.8 .2], [.4 .6]; m [.45 .55], [0 0]; all [1.25 .75], [.4 .6]
    iou_b1 = (_miou(np.array([[.8, .2], [.4, .6]])) - _miou(np.array([[1.25, .75], [.4, .6]]))) ** 2 + \
        (_miou(np.array([[.45, .55], [0, 0]])) - _miou(np.array([[1.25, .75], [.4, .6]]))) ** 2
    assert _miou(np.array([[.45, .55], [0, 0]])) == pytest.approx(0.45 / 2)  # the absent class scores 0
    iou_b2 = (_miou(np.array([[.9, .1], [0, 0]])) - _miou(np.array([[.9, .1], [.4, 1.6]]))) ** 2 + \
        (_miou(np.array([[0, 0], [.4, 1.6]])) - _miou(np.array([[.9, .1], [.4, 1.6]]))) ** 2
    assert row["iou"] == pytest.approx((iou_b1 + iou_b2) / 2, abs=1e-12)
    iou_all = (1.7 / 2.4 + 0.6 / 1.3) / 2, (0.45 / 1.4 + 1.6 / 2.55) / 2, (2.15 / 3.8 + 2.2 / 3.85) / 2
    assert row["iou_all"] == pytest.approx((iou_all[0] - iou_all[2]) ** 2 + (iou_all[1] - iou_all[2]) ** 2, abs=1e-12)
    # hard predictions at 0.5: c3 is the one error (a male negative called positive)
    assert row["accuracy"] == pytest.approx(5 / 6) and row["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert row["auc"] == pytest.approx(roc_auc_score(CASES["label"], CASES["score"]))
    # group mIoU: female 1 (all right), male (IoU_0 0, IoU_1 2/3) = 1/3; std with ddof 1
    assert row["sigma_iou"] == pytest.approx(np.std([1.0, 1 / 3], ddof=1))
    assert row["dp_difference"] == pytest.approx(2 / 3) and row["eo_difference"] == pytest.approx(1.0)
    assert (row["model"], row["split"], row["attribute"], row["n"]) == ("baseline", "val", "sex", 6)


def test_batch_average_of_one_batch_is_the_whole_set(predictions):
    row = fairness_loss_row(predictions, attribute="sex", schema="isic2020", batch_size=256)
    for k in ("dp_l2", "dp_mi", "eo_l2", "eo_mi", "iou"):
        assert row[k] == row[f"{k}_all"]


def test_excluded_cases_are_in_no_group():
    probs = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    with_excluded = batch_averaged_losses(probs, [0, 1, 0], [0, -1, 1], num_groups=2, batch_size=3)
    without = batch_averaged_losses(probs[[0, 2]], [0, 0], [0, 1], num_groups=2, batch_size=2)
    assert with_excluded == without
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        batch_averaged_losses(probs, [0, 1, 0], [0, 1, 1], num_groups=2, batch_size=0)


def test_written_table(predictions, tmp_path):
    rows = [fairness_loss_row(predictions, attribute="sex", schema="isic2020", model=m, split="test", batch_size=3)
            for m in ("baseline", "dp_l2")]
    files = write_fairness_loss_table(rows, tmp_path / "out", batch_size=3)
    table = pd.read_csv(files["csv"])
    assert table["model"].tolist() == ["baseline", "dp_l2"]
    assert table.loc[0, "dp_l2"] == pytest.approx(rows[0]["dp_l2"])
    md = files["markdown"].read_text().splitlines()
    assert md[2].startswith("| Model | Split | Attribute | N | AUC | Acc | Bal. acc | σ_IoU |")
    assert "L_dp^l2 (all)" in md[2] and md[4].startswith("| baseline | test | sex | 6 | ")
    assert "mean over batches of 3 cases" in md[0] and not math.isnan(table.loc[1, "iou_all"])
