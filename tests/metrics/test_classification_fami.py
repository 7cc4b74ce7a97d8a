"""EOM, EOdd (both multi-group strategies) and sigma_IoU."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, jaccard_score, recall_score

from fairmonai.metrics._fami_metrics import (
    BAD_DDOF_MSG,
    FEW_GROUPS_MSG,
    REFERENCE_REQUIRED_MSG,
    REFERENCE_UNUSED_MSG,
    SIGMA_IOU_ABSENT_CLASS,
    SIGMA_IOU_ABSENT_CLASS_OPTIONS,
    SIGMA_IOU_DDOF,
    compute_eodd,
    compute_eom,
    compute_sigma_iou,
)
from fairmonai.metrics._group_inputs import UNKNOWN_GROUP_MSG, UndefinedGroupMetricWarning
from fairmonai.metrics._group_rates import LABEL_OUT_OF_RANGE_MSG
from fairmonai.validation import BAD_OPTION_MSG, EMPTY_INPUT_MSG, LENGTH_MISMATCH_MSG

# Three classes, three groups.
# G0: y = 0 0 1 1 2 2,       p = 0 0 1 0 2 1
#     confusion (rows true) [[2,0,0],[1,1,0],[0,1,1]], N 6, row sums 2 2 2, column sums 3 2 1
#     TPR (recall) 1, 1/2, 1/2; FPR = (col - diag) / (N - row): 1/4, 1/4, 0; TPR + FPR: 5/4, 3/4, 1/2
#     IoU = diag / (row + col - diag): 2/3, 1/3, 1/2 -> mean 1/2
# G1: y = 0 0 0 0 1 1 2 2,   p = 0 0 0 1 1 1 2 0
#     confusion [[3,1,0],[0,2,0],[1,0,1]], N 8, rows 4 2 2, columns 4 3 1
#     TPR 3/4, 1, 1/2; FPR 1/4, 1/6, 0; TPR + FPR: 1, 7/6, 1/2
#     IoU 3/5, 2/3, 1/2 -> mean 53/90
# G2: y = 0 1 2,             p = 1 1 2
#     confusion [[0,1,0],[0,1,0],[0,0,1]], N 3, rows 1 1 1, columns 0 2 1
#     TPR 0, 1, 1; FPR 0, 1/2, 0; TPR + FPR: 0, 3/2, 1
Y0, P0 = [0, 0, 1, 1, 2, 2], [0, 0, 1, 0, 2, 1]
Y1, P1 = [0, 0, 0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1, 2, 0]
Y2, P2 = [0, 1, 2], [1, 1, 2]
Y2G, P2G, G2G = Y0 + Y1, P0 + P1, [0] * 6 + [1] * 8
Y3G, P3G, G3G = Y2G + Y2, P2G + P2, G2G + [2] * 3


def test_eom_hand_two_groups():
    # class ratios min/max of recalls: c0 (3/4)/1, c1 (1/2)/1, c2 (1/2)/(1/2) -> mean (3/4 + 1/2 + 1) / 3 = 3/4
    r = compute_eom(Y2G, P2G, sensitive_features=G2G)
    assert r.value == pytest.approx(0.75)
    assert r.by_class == pytest.approx({0: 0.75, 1: 0.5, 2: 1.0})
    assert r.details["recall"][1] == pytest.approx([0.75, 1.0, 0.5])


def test_eom_hand_three_groups():
    # recalls G0 (1, 1/2, 1/2), G1 (3/4, 1, 1/2), G2 (0, 1, 1):
    # c0 0/1, c1 (1/2)/1, c2 (1/2)/1 -> mean 1/3
    assert compute_eom(Y3G, P3G, sensitive_features=G3G).value == pytest.approx(1 / 3)


def test_eom_matches_xtranprune_formula_on_random_data():
    # XTranPrune: eo = correct / labels per (group, class); mean over classes of nanmin / nanmax over groups
    rng = np.random.default_rng(0)
    y, g = rng.integers(0, 4, 500), rng.integers(0, 3, 500)
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, 4, 500))
    rec = np.array([recall_score(y[g == k], p[g == k], average=None, labels=range(4)) for k in range(3)])
    expected = np.mean(rec.min(axis=0) / rec.max(axis=0))
    assert compute_eom(y, p, sensitive_features=g).value == pytest.approx(expected, abs=1e-12)


def test_eodd_hand_two_groups():
    # |(TPR+FPR)_G1 - (TPR+FPR)_G0| per class: |1 - 5/4| + |7/6 - 3/4| + |1/2 - 1/2| = 1/4 + 5/12 = 2/3
    r = compute_eodd(Y2G, P2G, sensitive_features=G2G)
    assert r.value == pytest.approx(2 / 3)
    assert r.by_class == pytest.approx({0: 0.25, 1: 5 / 12, 2: 0.0})
    assert r.strategy == "max_pair"
    assert r.details["groups_compared"] == (0, 1)
    # with two groups, one-vs-rest is the same comparison
    assert compute_eodd(Y2G, P2G, sensitive_features=G2G, reference_group=1).value == pytest.approx(2 / 3)


def test_eodd_hand_three_groups_max_pair():
    # pairs: (G0, G1) 2/3; (G0, G2) |5/4 - 0| + |3/4 - 3/2| + |1/2 - 1| = 5/4 + 3/4 + 1/2 = 5/2;
    #        (G1, G2) |1 - 0| + |7/6 - 3/2| + |1/2 - 1| = 1 + 1/3 + 1/2 = 11/6  -> max 5/2 for (G0, G2)
    r = compute_eodd(Y3G, P3G, sensitive_features=G3G, group_names=["a", "b", "c"], strategy="max_pair")
    assert r.value == pytest.approx(2.5)
    assert r.details["groups_compared"] == ("a", "c")
    assert r.by_class == pytest.approx({0: 1.25, 1: 0.75, 2: 0.5})


def test_eodd_hand_three_groups_one_vs_rest():
    # rest = G0 + G1: confusion [[5,1,0],[1,3,0],[1,1,2]], N 14, rows 6 4 4, columns 7 5 2
    #   TPR 5/6, 3/4, 1/2; FPR (7-5)/(14-6) = 1/4, (5-3)/(14-4) = 1/5, 0; TPR + FPR 13/12, 19/20, 1/2
    # G2 (TPR + FPR 0, 3/2, 1): 13/12 + |3/2 - 19/20| + 1/2 = 13/12 + 11/20 + 1/2 = 32/15
    r = compute_eodd(Y3G, P3G, sensitive_features=G3G, group_names=["a", "b", "c"], reference_group="c")
    assert r.strategy == "one_vs_rest"
    assert r.value == pytest.approx(32 / 15)
    assert r.details["groups_compared"] == ("c", "rest")
    assert r.by_class == pytest.approx({0: 13 / 12, 1: 11 / 20, 2: 0.5})


def test_eodd_binary_is_twice_signed_gap():
    # binary: class 0 and class 1 terms are equal, EOdd = 2 |dTPR + dFPR|; values above 1 are possible
    rng = np.random.default_rng(1)
    y, g = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    p = (rng.random(300) < 0.2 + 0.6 * g).astype(int)  # group 1 selected far more often, whatever y
    (tn0, fp0), (fn0, tp0) = confusion_matrix(y[g == 0], p[g == 0])
    (tn1, fp1), (fn1, tp1) = confusion_matrix(y[g == 1], p[g == 1])
    d = tp1 / (tp1 + fn1) - tp0 / (tp0 + fn0) + fp1 / (fp1 + tn1) - fp0 / (fp0 + tn0)
    r = compute_eodd(y, p, sensitive_features=g)
    assert r.value == pytest.approx(2 * abs(d), abs=1e-12)
    assert r.value > 1
    # thresholded scores give the same as the labels
    scores = np.where(p == 1, 0.8, 0.3)
    assert compute_eodd(y, scores, sensitive_features=g, threshold=0.5).value == pytest.approx(r.value)


def test_sigma_iou_hand():
    # every class is in every group, so absent_class does not matter here.
    # group IoUs 1/2 and 53/90, gap 4/45: sample std (default, ddof 1) = (4/45) / sqrt(2); population = 2/45
    r = compute_sigma_iou(Y2G, P2G, sensitive_features=G2G)
    assert r.by_group == pytest.approx({0: 0.5, 1: 53 / 90})
    assert r.value == pytest.approx(4 / 45 / np.sqrt(2))
    assert r.details["ddof"] == 1 and r.details["absent_class"] == "zero"
    assert compute_sigma_iou(Y2G, P2G, sensitive_features=G2G, ddof=0).value == pytest.approx(2 / 45)
    for absent in SIGMA_IOU_ABSENT_CLASS_OPTIONS:
        assert compute_sigma_iou(Y2G, P2G, sensitive_features=G2G, absent_class=absent).by_group == pytest.approx(
            {0: 0.5, 1: 53 / 90})


# K = 3; each group lacks at least one class in both its labels and its predictions.
# G0: y = 0 1, p = 0 0: IoU_0 = 1 / (1 + 2 - 1) = 1/2, IoU_1 = 0 / 1 = 0, class 2 absent
# G1: y = 0 1, p = 0 1: IoU_0 = IoU_1 = 1, class 2 absent
# G2: y = 2 2, p = 2 2: IoU_2 = 1, classes 0 and 1 absent
# absent_class "zero" (mean over K = 3): 1/6, 2/3, 1/3; mean 7/18, squared deviations (16 + 25 + 1) / 324 = 42/324
#   ddof 1: sqrt(21/324) = sqrt(21)/18; ddof 0: sqrt(14/324) = sqrt(14)/18
# absent_class "leave_out" (mean over present classes): 1/4, 1, 1; mean 3/4, squared deviations 1/4 + 2/16 = 3/8
#   ddof 1: sqrt(3/16) = sqrt(3)/4; ddof 0: sqrt(1/8)
# overall (all classes present): IoU 2/3, 1/2, 1 -> 13/18 in both conventions
YA, PA, GA = [0, 1, 0, 1, 2, 2], [0, 0, 0, 1, 2, 2], [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize(
    "absent,ddof,by_group,value",
    [
        ("zero", 1, [1 / 6, 2 / 3, 1 / 3], np.sqrt(21) / 18),
        ("zero", 0, [1 / 6, 2 / 3, 1 / 3], np.sqrt(14) / 18),
        ("leave_out", 1, [1 / 4, 1, 1], np.sqrt(3) / 4),
        ("leave_out", 0, [1 / 4, 1, 1], np.sqrt(1 / 8)),
    ],
)
def test_sigma_iou_absent_class_hand(absent, ddof, by_group, value):
    r = compute_sigma_iou(YA, PA, sensitive_features=GA, ddof=ddof, absent_class=absent)
    assert list(r.by_group.values()) == pytest.approx(by_group, abs=1e-12)
    assert r.value == pytest.approx(value, abs=1e-12)
    assert r.details == pytest.approx({"overall_iou": 13 / 18, "ddof": ddof, "absent_class": absent})


def test_sigma_iou_default_is_the_papers():
    # defaults: Bessel-corrected deviation and an absent class scored 0 (FVAP: torch std, torchmetrics 0.9.1
    # JaccardIndex absent_score=0)
    assert compute_sigma_iou(YA, PA, sensitive_features=GA).value == pytest.approx(np.sqrt(21) / 18, abs=1e-12)
    assert (SIGMA_IOU_DDOF, SIGMA_IOU_ABSENT_CLASS) == (1, "zero")


def _random_groups_missing_classes(seed, n=200, k=5):
    rng = np.random.default_rng(seed)
    y, g = rng.integers(0, k, n), rng.integers(0, 3, n)
    p = np.where(rng.random(n) < 0.5, y, rng.integers(0, k, n))
    y[g == 2] = np.minimum(y[g == 2], 2)  # group 2 lacks classes 3 and 4 in its labels and predictions
    p[g == 2] = np.minimum(p[g == 2], 2)
    return y, p, g, k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigma_iou_zero_matches_sklearn_jaccard(seed):
    # the paper's convention = sklearn jaccard over all K labels with zero_division=0, numpy std with ddof=1
    y, p, g, k = _random_groups_missing_classes(seed)
    r = compute_sigma_iou(y, p, sensitive_features=g)
    per_group = [jaccard_score(y[g == j], p[g == j], labels=range(k), average="macro", zero_division=0)
                 for j in range(3)]
    assert list(r.by_group.values()) == pytest.approx(per_group, abs=1e-12)
    assert r.value == pytest.approx(np.std(per_group, ddof=1), abs=1e-12)
    assert r.details["overall_iou"] == pytest.approx(
        jaccard_score(y, p, labels=range(k), average="macro", zero_division=0), abs=1e-12)
    # group 2 misses two classes: the two conventions differ there only, by the factor 3/5
    leave = compute_sigma_iou(y, p, sensitive_features=g, absent_class="leave_out").by_group
    assert r.by_group[2] == pytest.approx(leave[2] * 3 / 5, abs=1e-12)
    assert r.by_group[0] == pytest.approx(leave[0], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigma_iou_leave_out_matches_sklearn_jaccard(seed):
    # the earlier convention = sklearn's macro jaccard over the classes present in the group, population std
    y, p, g, _ = _random_groups_missing_classes(seed)
    r = compute_sigma_iou(y, p, sensitive_features=g, ddof=0, absent_class="leave_out")
    per_group = [jaccard_score(y[g == j], p[g == j], average="macro") for j in range(3)]
    assert list(r.by_group.values()) == pytest.approx(per_group, abs=1e-12)
    assert r.value == pytest.approx(np.std(per_group, ddof=0), abs=1e-12)
    assert r.details["overall_iou"] == pytest.approx(jaccard_score(y, p, average="macro"), abs=1e-12)


def test_sigma_iou_one_group_ddof1_is_nan_with_warning():
    with pytest.warns(UndefinedGroupMetricWarning, match=r"sigma_iou \(ddof=1\) needs at least two groups"):
        r = compute_sigma_iou(Y0, P0, sensitive_features=[0] * 6)
    assert np.isnan(r.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_sigma_iou(Y0, P0, sensitive_features=[0] * 6, ddof=0).value == 0.0


@pytest.mark.parametrize("groups", [2, 3])
@pytest.mark.parametrize("classes", [2, 4])
def test_fair_predictor(groups, classes):
    # identical (y, p) in every group (group k repeated k + 1 times): EOM 1, EOdd 0, sigma_IoU 0
    rng = np.random.default_rng(classes)
    y = np.r_[np.arange(classes), rng.integers(0, classes, 40)]
    p = np.where(rng.random(y.size) < 0.6, y, rng.integers(0, classes, y.size))
    yy = np.concatenate([np.tile(y, k + 1) for k in range(groups)])
    pp = np.concatenate([np.tile(p, k + 1) for k in range(groups)])
    gg = np.concatenate([np.full(y.size * (k + 1), k) for k in range(groups)])
    assert compute_eom(yy, pp, sensitive_features=gg).value == pytest.approx(1, abs=1e-12)
    assert compute_eodd(yy, pp, sensitive_features=gg).value == pytest.approx(0, abs=1e-12)
    assert compute_eodd(yy, pp, sensitive_features=gg, reference_group=0).value == pytest.approx(0, abs=1e-12)
    assert compute_sigma_iou(yy, pp, sensitive_features=gg).value == pytest.approx(0, abs=1e-12)


def test_argmax_of_scores():
    scores = np.eye(3)[P2G] * 0.7 + 0.1
    assert compute_eom(Y2G, scores, sensitive_features=G2G).value == pytest.approx(0.75)
    assert compute_eom(np.eye(3)[Y2G], scores, sensitive_features=G2G).value == pytest.approx(0.75)


def test_class_missing_in_a_group_warns_and_is_left_out():
    # G2 without class-2 samples: its class-2 recall is undefined; class 2 ratio uses G0 and G1 only
    y, p, g = Y3G[:-1], P3G[:-1], G3G[:-1]
    with pytest.warns(UndefinedGroupMetricWarning, match=r"eom: recall of class 2 is undefined for group\(s\) \[2\]"):
        r = compute_eom(y, p, sensitive_features=g)
    # recalls: c0 (1, 3/4, 0), c1 (1/2, 1, 1), c2 (1/2, 1/2, -) -> ratios 0, 1/2, 1
    assert r.by_class == pytest.approx({0: 0.0, 1: 0.5, 2: 1.0})
    assert np.isnan(r.details["recall"][2][2])
    with pytest.warns(UndefinedGroupMetricWarning, match=r"eodd: TPR or FPR of class 2 is undefined for group\(s\) "
                                                         r"\[2\]"):
        e = compute_eodd(y, p, sensitive_features=g, strategy="max_pair")
    assert not np.isnan(e.value)


def test_eodd_single_group_is_nan_with_warning():
    with pytest.warns(UndefinedGroupMetricWarning, match=FEW_GROUPS_MSG.format(metric="eodd", groups=[0])[:40]):
        r = compute_eodd(Y0, P0, sensitive_features=[0] * 6)
    assert np.isnan(r.value)


def test_sigma_iou_empty_group_warns():
    with pytest.warns(UndefinedGroupMetricWarning, match=r"sigma_iou is undefined for group\(s\) \['z'\]"):
        r = compute_sigma_iou(Y2G, P2G, sensitive_features=G2G, group_names=["x", "y", "z"])
    assert r.value == pytest.approx(4 / 45 / np.sqrt(2))  # the empty group is left out, not scored 0


def test_no_warning_when_defined():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_eom(Y3G, P3G, sensitive_features=G3G)
        compute_eodd(Y3G, P3G, sensitive_features=G3G)
        compute_sigma_iou(Y3G, P3G, sensitive_features=G3G)


def test_excluded_code_left_out():
    # the same data plus excluded samples: group values unchanged
    y, p, g = Y2G + [2, 2, 0], P2G + [0, 1, 2], G2G + [-1, -1, -1]
    assert compute_eodd(y, p, sensitive_features=g).value == pytest.approx(2 / 3)
    assert compute_eom(y, p, sensitive_features=g).value == pytest.approx(0.75)
    assert compute_sigma_iou(y, p, sensitive_features=g).by_group == pytest.approx({0: 0.5, 1: 53 / 90})


def test_bootstrap_interval():
    a = compute_eodd(Y3G * 5, P3G * 5, sensitive_features=G3G * 5, n_bootstrap=100, seed=1)
    b = compute_eodd(Y3G * 5, P3G * 5, sensitive_features=G3G * 5, n_bootstrap=100, seed=1)
    assert a.ci == b.ci and a.ci[0] <= a.ci[1]
    for fn in (compute_eom, compute_sigma_iou):
        r = fn(Y3G * 5, P3G * 5, sensitive_features=G3G * 5, n_bootstrap=50)
        assert r.ci[0] <= r.ci[1]
        assert r.to_dict()["bootstrap"]["n_bootstrap"] == 50


def test_errors():
    def message(fn, *args, **kw):
        with pytest.raises(ValueError) as e:
            fn(*args, **kw)
        return str(e.value)

    assert message(compute_eodd, Y3G, P3G, sensitive_features=G3G, strategy="pairs") == BAD_OPTION_MSG.format(
        name="strategy", value="pairs", allowed=["max_pair", "one_vs_rest"])
    assert message(compute_eodd, Y3G, P3G, sensitive_features=G3G, strategy="one_vs_rest") == \
        REFERENCE_REQUIRED_MSG.format(groups=[0, 1, 2])
    assert message(compute_eodd, Y3G, P3G, sensitive_features=G3G, strategy="max_pair", reference_group=1) == \
        REFERENCE_UNUSED_MSG.format(strategy="max_pair")
    assert message(compute_eodd, Y3G, P3G, sensitive_features=G3G, reference_group="Black") == \
        UNKNOWN_GROUP_MSG.format(name="reference_group", value="Black", groups=[0, 1, 2])
    assert message(compute_sigma_iou, Y3G, P3G, sensitive_features=G3G, ddof=2) == BAD_DDOF_MSG.format(value=2)
    assert BAD_DDOF_MSG.format(value=2) == "ddof must be 0 (population) or 1 (sample); got 2"
    assert message(compute_sigma_iou, Y3G, P3G, sensitive_features=G3G, absent_class="nan") == \
        "unknown absent_class 'nan'; allowed values: ['zero', 'leave_out']"
    assert message(compute_eom, Y3G, P3G[:-1], sensitive_features=G3G) == LENGTH_MISMATCH_MSG.format(
        first="y_true", n_first=17, other="y_pred", n_other=16)
    assert message(compute_eom, [], [], sensitive_features=[]) == EMPTY_INPUT_MSG.format(name="y_true")
    assert message(compute_eom, Y3G, P3G, sensitive_features=G3G, num_classes=2) == LABEL_OUT_OF_RANGE_MSG.format(
        name="y_true", value=2, k=2)
