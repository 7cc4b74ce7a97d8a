"""Rank-based AUC, AUC by group with bootstrap intervals, equity-scaled AUC."""

import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc
from sklearn.metrics import roc_auc_score

from fairmonai.metrics._auc import (
    bootstrap_auc_values,
    equity_scaled_auc,
    mann_whitney_auc,
    prepare_auc,
    roc_auc_by_group,
)
from fairmonai.metrics._group_bootstrap import (
    BAD_CONFIDENCE_MSG,
    BAD_N_BOOTSTRAP_MSG,
    bootstrap_index_chunks,
)
from fairmonai.metrics._group_inputs import BAD_SHAPE_MSG, UndefinedGroupMetricWarning
from fairmonai.validation import BAD_OPTION_MSG, EMPTY_INPUT_MSG, LENGTH_MISMATCH_MSG

# Hand example, two groups:
#   A: y = 0 0 1 1, s = 0.1 0.4 0.35 0.8: positive 0.35 beats 0.1 only, 0.8 beats both -> 3/4
#   B: y = 0 0 1,   s = 0.5 0.7 0.5:      positive 0.5 ties 0.5 (1/2), loses to 0.7   -> 0.5/2 = 1/4
#   overall: positives 0.35, 0.8, 0.5 vs negatives 0.1, 0.4, 0.5, 0.7:
#            0.35 -> 1, 0.8 -> 4, 0.5 -> 1 + 1 + 1/2 = 2.5; (1 + 4 + 2.5) / 12 = 0.625
#   difference 3/4 - 1/4 = 1/2, ratio 1/3
#   ES-AUC = 0.625 / (1 + |0.625 - 0.75| + |0.625 - 0.25|) = 0.625 / 1.5 = 5/12
Y = [0, 0, 1, 1, 0, 0, 1]
S = [0.1, 0.4, 0.35, 0.8, 0.5, 0.7, 0.5]
G = [0, 0, 0, 0, 1, 1, 1]


def test_auc_by_group_hand():
    r = roc_auc_by_group(Y, S, sensitive_features=G, group_names=["A", "B"])
    assert r.overall == pytest.approx(0.625)
    assert r.by_group == pytest.approx({"A": 0.75, "B": 0.25})
    assert r.difference == pytest.approx(0.5)
    assert r.ratio == pytest.approx(1 / 3)
    r = roc_auc_by_group(Y, S, sensitive_features=G, method="to_overall")
    assert r.difference == pytest.approx(0.375)  # |0.25 - 0.625|
    assert r.ratio == pytest.approx(0.4)  # 0.25 / 0.625


def test_es_auc_hand():
    r = equity_scaled_auc(Y, S, sensitive_features=G)
    assert r.value == pytest.approx(5 / 12)
    assert r.details["auc"] == pytest.approx(0.625)
    assert r.details["auc_gap_sum"] == pytest.approx(0.5)


@pytest.mark.parametrize("n, levels", [(7, 3), (50, 4), (500, 10), (500, 1000)])
@pytest.mark.parametrize("seed", [0, 1])
def test_rank_auc_equals_sklearn_and_monai_with_ties(n, levels, seed):
    rng = np.random.default_rng(seed)
    y = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    s = rng.integers(0, levels, n) / levels  # few levels: many ties
    w = rng.random(n)
    assert mann_whitney_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert mann_whitney_auc(y, s, sample_weight=w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert mann_whitney_auc(torch.tensor(y), torch.tensor(s)) == pytest.approx(
        compute_roc_auc(torch.tensor(s), torch.tensor(y)), abs=1e-12)


def test_two_column_scores_use_positive_column():
    s2 = np.stack([1 - np.asarray(S), S], axis=1)
    assert mann_whitney_auc(Y, s2) == pytest.approx(0.625)
    with pytest.raises(ValueError) as e:
        mann_whitney_auc(Y, np.ones((7, 3)))
    assert str(e.value) == BAD_SHAPE_MSG.format(name="y_score", expected="(N,), (N, 1) or (N, 2)", shape=(7, 3))


@pytest.mark.parametrize("seed", [0, 3])
def test_by_group_matches_sklearn_with_exclusions(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) + 0.3 * y, 2)
    g = rng.integers(-1, 3, n)
    r = roc_auc_by_group(y, s, sensitive_features=g)
    assert r.overall == pytest.approx(roc_auc_score(y, s), abs=1e-12)  # excluded samples count overall
    for k in range(3):
        assert r.by_group[k] == pytest.approx(roc_auc_score(y[g == k], s[g == k]), abs=1e-12)
    assert r.group_sizes == {k: int((g == k).sum()) for k in range(3)}


@pytest.mark.parametrize("stratified", [True, False])
def test_vectorised_bootstrap_equals_naive_loop(stratified):
    rng = np.random.default_rng(2)
    n = 60
    y = np.r_[0, 1, 0, 1, rng.integers(0, 2, n - 4)]
    s = rng.integers(0, 6, n) / 6
    g = np.r_[0, 0, 1, 1, rng.integers(0, 2, n - 4)]
    ad = prepare_auc(y, s, g)
    idx = np.concatenate(list(bootstrap_index_chunks(ad.strata() if stratified else None, n, 25, 11)))
    ov, bg = bootstrap_auc_values(idx, ad)
    for b in range(25):
        i = idx[b]
        assert ov[b] == pytest.approx(roc_auc_score(y[i], s[i]), abs=1e-12)
        for k in range(2):
            yk, sk = y[i][g[i] == k], s[i][g[i] == k]
            expected = roc_auc_score(yk, sk) if np.unique(yk).size == 2 else np.nan
            np.testing.assert_allclose(bg[b, k], expected, atol=1e-12)


def test_bootstrap_intervals_seeded_and_ordered():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    s = rng.random(n) + 0.5 * y
    g = rng.integers(0, 3, n)
    a = roc_auc_by_group(y, s, sensitive_features=g, n_bootstrap=300, seed=5)
    b = roc_auc_by_group(y, s, sensitive_features=g, n_bootstrap=300, seed=5)
    assert a.ci == b.ci
    lo, hi = a.ci["overall"]
    assert lo < a.overall < hi
    for k in range(3):
        lo, hi = a.ci["by_group"][k]
        assert lo < a.by_group[k] < hi
    e = equity_scaled_auc(y, s, sensitive_features=g, n_bootstrap=300, seed=5)
    assert e.ci[0] < e.ci[1]
    assert e.bootstrap == a.bootstrap


def test_unstratified_bootstrap_warns_on_undefined_replicates():
    # group 1 has one positive among 3 samples: some unstratified replicates lack it
    rng = np.random.default_rng(1)
    y = np.r_[rng.integers(0, 2, 40), 1, 0, 0]
    s = rng.random(43)
    g = np.r_[np.zeros(40, int), 1, 1, 1]
    with pytest.warns(UndefinedGroupMetricWarning, match=r"auc was undefined on \d+ of 200 bootstrap replicates "
                                                         r"for group 1"):
        r = roc_auc_by_group(y, s, sensitive_features=g, n_bootstrap=200, stratified=False)
    assert not np.isnan(r.ci["by_group"][1][0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # stratified: every replicate keeps the positive
        roc_auc_by_group(y, s, sensitive_features=g, n_bootstrap=200, stratified=True)


def test_group_with_one_class_warns_and_is_left_out():
    # group C has only negatives: no AUC; the difference and ES-AUC use A and B
    y, s, g = Y + [0, 0], S + [0.3, 0.9], G + [2, 2]
    with pytest.warns(UndefinedGroupMetricWarning, match=r"auc is undefined for group\(s\) \['C'\]"):
        r = roc_auc_by_group(y, s, sensitive_features=g, group_names=["A", "B", "C"])
    assert np.isnan(r.by_group["C"])
    assert r.difference == pytest.approx(0.5)
    with pytest.warns(UndefinedGroupMetricWarning, match=r"es_auc is undefined for group\(s\) \['C'\]"):
        e = equity_scaled_auc(y, s, sensitive_features=g, group_names=["A", "B", "C"])
    ov = roc_auc_score(y, s)
    assert e.value == pytest.approx(ov / (1 + abs(ov - 0.75) + abs(ov - 0.25)))
    assert e.details["left_out_groups"] == ["C"]


def test_single_class_overall_warns():
    with pytest.warns(UndefinedGroupMetricWarning, match=r"roc_auc is undefined for group\(s\) \['overall'\]"):
        assert np.isnan(mann_whitney_auc([1, 1, 1], [0.2, 0.3, 0.4]))


@pytest.mark.parametrize("groups", [2, 4])
def test_identical_groups_have_no_auc_gap(groups):
    rng = np.random.default_rng(groups)
    y = np.r_[0, 1, rng.integers(0, 2, 30)]
    s = rng.random(32)
    yy, ss = np.tile(y, groups), np.tile(s, groups)
    gg = np.repeat(np.arange(groups), 32)
    r = roc_auc_by_group(yy, ss, sensitive_features=gg)
    assert r.difference == pytest.approx(0, abs=1e-12)
    assert r.ratio == pytest.approx(1, abs=1e-12)
    assert equity_scaled_auc(yy, ss, sensitive_features=gg).value == pytest.approx(r.overall, abs=1e-12)


def test_errors():
    with pytest.raises(ValueError) as e:
        roc_auc_by_group(Y, S, sensitive_features=G, method="pairs")
    assert str(e.value) == BAD_OPTION_MSG.format(name="method", value="pairs",
                                                 allowed=["between_groups", "to_overall"])
    with pytest.raises(ValueError) as e:
        roc_auc_by_group(Y, S[:-1], sensitive_features=G)
    assert str(e.value) == LENGTH_MISMATCH_MSG.format(first="y_true", n_first=7, other="y_score", n_other=6)
    with pytest.raises(ValueError) as e:
        equity_scaled_auc([], [], sensitive_features=[])
    assert str(e.value) == EMPTY_INPUT_MSG.format(name="y_true")
    with pytest.raises(ValueError) as e:
        roc_auc_by_group(Y, S, sensitive_features=G, n_bootstrap=-1)
    assert str(e.value) == BAD_N_BOOTSTRAP_MSG.format(value=-1)
    with pytest.raises(ValueError) as e:
        roc_auc_by_group(Y, S, sensitive_features=G, n_bootstrap=10, confidence_level=95)
    assert str(e.value) == BAD_CONFIDENCE_MSG.format(value=95)
