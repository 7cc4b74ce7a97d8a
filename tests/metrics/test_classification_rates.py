"""Per-group confusion counts, TPR / FPR / selection rate, demographic parity and equalized odds."""

import warnings

import numpy as np
import pytest
import torch
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference as fl_dp_difference,
    demographic_parity_ratio as fl_dp_ratio,
    equalized_odds_difference as fl_eo_difference,
    equalized_odds_ratio as fl_eo_ratio,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)

from fairmonai.metrics._group_inputs import (
    CODE_OUT_OF_RANGE_MSG,
    GROUP_NAMES_TYPE_MSG,
    NEGATIVE_CODE_MSG,
    NO_GROUP_MSG,
    NOT_BINARY_MSG,
    NOT_INTEGER_MSG,
    UndefinedGroupMetricWarning,
)
from fairmonai.metrics._group_rates import (
    confusion_counts_by_group,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_positive_rate_by_group,
    group_rates,
    selection_rate_by_group,
    true_positive_rate_by_group,
)
from fairmonai.validation import BAD_OPTION_MSG, EMPTY_INPUT_MSG, LENGTH_MISMATCH_MSG

# Hand example. Group A (code 0), group B (code 1), one sample excluded (code -1).
#   A: y = 1 1 1 0 0, p = 1 1 0 1 0 -> TP 2, FN 1, FP 1, TN 1: TPR 2/3, FPR 1/2, SR 3/5
#   B: y = 1 0 0 0,   p = 1 0 0 1   -> TP 1, FN 0, FP 1, TN 2: TPR 1,   FPR 1/3, SR 2/4
#   excluded: y = 1, p = 0 (a false negative, counted overall only)
#   overall: TP 3, FN 2, FP 2, TN 3: TPR 3/5, FPR 2/5, SR 5/10
Y = [1, 1, 1, 0, 0, 1, 0, 0, 0, 1]
P = [1, 1, 0, 1, 0, 1, 0, 0, 1, 0]
G = [0, 0, 0, 0, 0, 1, 1, 1, 1, -1]
NAMES = ["A", "B"]

HAND = {
    # rate: (overall, A, B, between diff, between ratio, to_overall diff, to_overall ratio)
    # between: max - min, min / max; to_overall: max |g - overall|, min of g/overall taken below 1
    "tpr": (3 / 5, 2 / 3, 1.0, 1 / 3, 2 / 3, 2 / 5, 3 / 5),  # |1 - 3/5|; (3/5) / 1
    "fpr": (2 / 5, 1 / 2, 1 / 3, 1 / 6, 2 / 3, 1 / 10, 4 / 5),  # |1/2 - 2/5|; (2/5) / (1/2)
    "selection_rate": (1 / 2, 3 / 5, 1 / 2, 1 / 10, 5 / 6, 1 / 10, 5 / 6),  # (1/2) / (3/5)
}


def test_confusion_counts_hand():
    c = confusion_counts_by_group(Y, P, sensitive_features=G, group_names=NAMES)
    assert c.groups == ("A", "B")
    np.testing.assert_array_equal(c.counts[0], [[1, 1], [1, 2]])  # [[TN, FP], [FN, TP]]
    np.testing.assert_array_equal(c.counts[1], [[2, 1], [0, 1]])
    np.testing.assert_array_equal(c.overall, [[3, 2], [2, 3]])
    assert c.n_excluded == 1
    assert c.to_dict()["by_group"]["A"] == [[1.0, 1.0], [1.0, 2.0]]


@pytest.mark.parametrize("rate", ["tpr", "fpr", "selection_rate"])
@pytest.mark.parametrize("method", ["between_groups", "to_overall"])
def test_rates_hand(rate, method):
    ov, a, b, bd, br, od, orat = HAND[rate]
    r = group_rates(Y, P, sensitive_features=G, group_names=NAMES, method=method)[rate]
    assert r.overall == pytest.approx(ov, abs=1e-12)
    assert r.by_group["A"] == pytest.approx(a, abs=1e-12)
    assert r.by_group["B"] == pytest.approx(b, abs=1e-12)
    diff, ratio = (bd, br) if method == "between_groups" else (od, orat)
    assert r.difference == pytest.approx(diff, abs=1e-12)
    assert r.ratio == pytest.approx(ratio, abs=1e-12)
    assert r.group_sizes == {"A": 5, "B": 4}
    assert r.method == method


@pytest.mark.parametrize(
    "fn, rate", [(true_positive_rate_by_group, "tpr"), (false_positive_rate_by_group, "fpr"),
                 (selection_rate_by_group, "selection_rate")]
)
def test_single_rate_functions(fn, rate):
    r = fn(Y, P, sensitive_features=G, group_names=NAMES)
    assert r.name == rate
    assert r.overall == pytest.approx(HAND[rate][0])


@pytest.mark.parametrize(
    "method, agg, eo_diff, eo_ratio",
    [
        ("between_groups", "worst_case", 1 / 3, 2 / 3),  # max(1/3, 1/6); min(2/3, 2/3)
        ("between_groups", "mean", 1 / 4, 2 / 3),  # (1/3 + 1/6) / 2; (2/3 + 2/3) / 2
        ("to_overall", "worst_case", 2 / 5, 3 / 5),  # max(2/5, 1/10); min(3/5, 4/5)
        ("to_overall", "mean", 1 / 4, 7 / 10),  # (2/5 + 1/10) / 2; (3/5 + 4/5) / 2
    ],
)
def test_disparities_hand(method, agg, eo_diff, eo_ratio):
    kw = dict(sensitive_features=G, method=method)
    assert equalized_odds_difference(Y, P, agg=agg, **kw) == pytest.approx(eo_diff, abs=1e-12)
    assert equalized_odds_ratio(Y, P, agg=agg, **kw) == pytest.approx(eo_ratio, abs=1e-12)
    assert demographic_parity_difference(Y, P, **kw) == pytest.approx(HAND["selection_rate"][3 if method ==
                                                                                             "between_groups" else 5])
    assert demographic_parity_ratio(Y, P, **kw) == pytest.approx(5 / 6)


def _random(seed, n=400, groups=3, weights=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.7, y, 1 - y)
    g = rng.integers(0, groups, n)
    w = rng.random(n) + 0.1 if weights else None
    return y, p, g, w


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["between_groups", "to_overall"])
@pytest.mark.parametrize("weights", [False, True])
def test_matches_fairlearn(seed, method, weights):
    y, p, g, w = _random(seed, groups=2 + seed, weights=weights)
    fns = {"tpr": true_positive_rate, "fpr": false_positive_rate, "selection_rate": selection_rate}
    mf = MetricFrame(metrics=fns, y_true=y, y_pred=p, sensitive_features=g,
                     sample_params={k: {"sample_weight": w} for k in fns})
    ours = group_rates(y, p, sensitive_features=g, method=method, sample_weight=w)
    for k in fns:
        assert ours[k].overall == pytest.approx(mf.overall[k], abs=1e-12)
        np.testing.assert_allclose(list(ours[k].by_group.values()), mf.by_group[k].to_numpy(), atol=1e-12)
        assert list(ours[k].by_group) == list(mf.by_group.index)
        assert ours[k].difference == pytest.approx(mf.difference(method=method)[k], abs=1e-12)
        assert ours[k].ratio == pytest.approx(mf.ratio(method=method)[k], abs=1e-12)
    kw = dict(sensitive_features=g, method=method, sample_weight=w)
    assert demographic_parity_difference(y, p, **kw) == pytest.approx(fl_dp_difference(y, p, **kw), abs=1e-12)
    assert demographic_parity_ratio(y, p, **kw) == pytest.approx(fl_dp_ratio(y, p, **kw), abs=1e-12)
    for agg in ("worst_case", "mean"):
        assert equalized_odds_difference(y, p, agg=agg, **kw) == pytest.approx(
            fl_eo_difference(y, p, agg=agg, **kw), abs=1e-12)
        assert equalized_odds_ratio(y, p, agg=agg, **kw) == pytest.approx(fl_eo_ratio(y, p, agg=agg, **kw), abs=1e-12)


def test_string_features_match_fairlearn():
    y, p, g, _ = _random(5)
    s = np.array(["white", "black", "asian"])[g]
    ours = group_rates(y, p, sensitive_features=s)["tpr"]
    mf = MetricFrame(metrics=true_positive_rate, y_true=y, y_pred=p, sensitive_features=s)
    assert list(ours.by_group) == list(mf.by_group.index)
    np.testing.assert_allclose(list(ours.by_group.values()), mf.by_group.to_numpy(), atol=1e-12)


def test_excluded_code_left_out_of_groups():
    y, p, g, _ = _random(3)
    g = g.copy()
    g[::7] = -1
    ours = group_rates(y, p, sensitive_features=g)
    keep = g >= 0
    mf = MetricFrame(metrics=true_positive_rate, y_true=y[keep], y_pred=p[keep], sensitive_features=g[keep])
    np.testing.assert_allclose(list(ours["tpr"].by_group.values()), mf.by_group.to_numpy(), atol=1e-12)
    # overall keeps the excluded samples
    assert ours["tpr"].overall == pytest.approx(true_positive_rate(y, p), abs=1e-12)
    assert sum(ours["tpr"].group_sizes.values()) == keep.sum()


def test_torch_and_numpy_agree():
    y, p, g, _ = _random(4)
    a = group_rates(y, p, sensitive_features=g)
    b = group_rates(torch.tensor(y), torch.tensor(p, dtype=torch.float32), sensitive_features=torch.tensor(g))
    assert a["fpr"].to_dict() == b["fpr"].to_dict()


@pytest.mark.parametrize("groups", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_fair_predictor_has_zero_disparity(groups, seed):
    # every group gets the same (y, p) pairs, some groups twice: identical rates per group
    y, p, _, _ = _random(seed, n=60)
    reps = [1 + (k % 2) for k in range(groups)]
    yy = np.concatenate([np.tile(y, r) for r in reps])
    pp = np.concatenate([np.tile(p, r) for r in reps])
    gg = np.concatenate([np.full(y.size * r, k) for k, r in enumerate(reps)])
    for method in ("between_groups", "to_overall"):
        kw = dict(sensitive_features=gg, method=method)
        assert demographic_parity_difference(yy, pp, **kw) == pytest.approx(0, abs=1e-12)
        assert demographic_parity_ratio(yy, pp, **kw) == pytest.approx(1, abs=1e-12)
        assert equalized_odds_difference(yy, pp, **kw) == pytest.approx(0, abs=1e-12)
        assert equalized_odds_ratio(yy, pp, **kw) == pytest.approx(1, abs=1e-12)


def test_group_without_positives_warns_and_is_left_out():
    # group C has only negatives: TPR undefined. A: TPR 2/3, B: TPR 1 -> difference 1/3 from A and B
    y = Y[:9] + [0, 0]
    p = P[:9] + [1, 0]
    g = G[:9] + [2, 2]
    with pytest.warns(UndefinedGroupMetricWarning, match=r"tpr is undefined for group\(s\) \['C'\]"):
        r = group_rates(y, p, sensitive_features=g, group_names=["A", "B", "C"])
    assert np.isnan(r["tpr"].by_group["C"])
    assert r["tpr"].undefined_groups == ("C",)
    assert r["tpr"].difference == pytest.approx(1 / 3)
    assert r["fpr"].by_group["C"] == pytest.approx(0.5)  # FPR stays defined: 1 of 2 negatives selected
    assert r["tpr"].to_dict()["by_group"]["C"] is None


def test_named_group_without_samples_warns():
    with pytest.warns(UndefinedGroupMetricWarning, match=r"selection_rate is undefined for group\(s\) \['C'\]"):
        r = selection_rate_by_group(Y, P, sensitive_features=G, group_names=["A", "B", "C"])
    assert r.group_sizes["C"] == 0
    assert r.difference == pytest.approx(0.1)


def test_no_warning_when_all_defined():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group_rates(Y, P, sensitive_features=G)


def test_all_rates_zero_ratio_is_one():
    # nobody selected: all selection rates 0, the groups are equal (fairlearn: 0/0 = NaN)
    assert demographic_parity_ratio([0, 1, 0, 1], [0, 0, 0, 0], sensitive_features=[0, 0, 1, 1]) == 1.0


def test_bootstrap_intervals():
    y, p, g, _ = _random(0, n=300)
    a = group_rates(y, p, sensitive_features=g, n_bootstrap=200, seed=3)
    b = group_rates(y, p, sensitive_features=g, n_bootstrap=200, seed=3)
    c = group_rates(y, p, sensitive_features=g, n_bootstrap=200, seed=4)
    assert a["tpr"].ci == b["tpr"].ci
    assert a["tpr"].ci != c["tpr"].ci
    for r in a.values():
        lo, hi = r.ci["overall"]
        assert lo <= r.overall <= hi
        for k, (lo, hi) in r.ci["by_group"].items():
            assert lo <= hi
    assert a["tpr"].bootstrap == {"n_bootstrap": 200, "confidence_level": 0.95, "stratified": True, "seed": 3}


@pytest.mark.parametrize("stratified", [True, False])
def test_bootstrap_counts_equal_naive_loop(stratified):
    from fairmonai.metrics._group_bootstrap import bootstrap_index_chunks
    from fairmonai.metrics._group_rates import bootstrap_counts, prepare_counts

    y, p, g, _ = _random(1, n=50)
    cd = prepare_counts(y, p, g, binary_metric="test")
    boot = bootstrap_counts(cd, 30, 7, stratified)
    idx = np.concatenate(list(bootstrap_index_chunks(cd.strata() if stratified else None, 50, 30, 7)))
    for b in range(30):
        i = idx[b]
        c = confusion_counts_by_group(y[i], p[i], sensitive_features=g[i], group_names=[0, 1, 2])
        np.testing.assert_array_equal(boot[b, 1:], c.counts)
        if stratified:  # every (group, label) stratum keeps its size
            np.testing.assert_array_equal(c.counts.sum(axis=2), confusion_counts_by_group(
                y, p, sensitive_features=g).counts.sum(axis=2))


# ---- errors: options first, exact messages


@pytest.mark.parametrize("method", ["between", "overall", None])
def test_unknown_method(method):
    msg = BAD_OPTION_MSG.format(name="method", value=method, allowed=["between_groups", "to_overall"])
    with pytest.raises(ValueError) as e:
        demographic_parity_difference(Y, P[:3], sensitive_features=G, method=method)  # option checked first
    assert str(e.value) == msg


@pytest.mark.parametrize("agg", ["max", "worst"])
def test_unknown_agg(agg):
    with pytest.raises(ValueError) as e:
        equalized_odds_difference(Y, P, sensitive_features=G, agg=agg)
    assert str(e.value) == BAD_OPTION_MSG.format(name="agg", value=agg, allowed=["worst_case", "mean"])


@pytest.mark.parametrize(
    "y, p, g, other, n_other",
    [(Y, P[:-1], G, "y_pred", 9), (Y, P, G[:-2], "sensitive_features", 8)],
)
def test_length_mismatch(y, p, g, other, n_other):
    with pytest.raises(ValueError) as e:
        group_rates(y, p, sensitive_features=g)
    assert str(e.value) == LENGTH_MISMATCH_MSG.format(first="y_true", n_first=10, other=other, n_other=n_other)


def test_empty_input():
    with pytest.raises(ValueError) as e:
        demographic_parity_difference([], [], sensitive_features=[])
    assert str(e.value) == EMPTY_INPUT_MSG.format(name="y_true")


@pytest.mark.parametrize(
    "g, names, msg",
    [
        ([0, -2, 1, 0], None, NEGATIVE_CODE_MSG.format(codes=[-2])),
        ([0, 3, 1, 0], ["a", "b"], CODE_OUT_OF_RANGE_MSG.format(codes=[3], n=2)),
        ([-1, -1, -1, -1], None, NO_GROUP_MSG),
        (["a", "b", "a", "b"], ["a", "b"], GROUP_NAMES_TYPE_MSG.format(dtype=np.array(["a"]).dtype)),
    ],
)
def test_bad_groups(g, names, msg):
    with pytest.raises(ValueError) as e:
        group_rates([0, 1, 0, 1], [0, 1, 1, 1], sensitive_features=g, group_names=names)
    assert str(e.value) == msg


@pytest.mark.parametrize(
    "y, p, msg",
    [
        ([0, 2, 1], [0, 1, 1], NOT_BINARY_MSG.format(name="y_true", metric="group rates", value=2)),
        ([0, 1, 1], [0, 3, 1], NOT_BINARY_MSG.format(name="y_pred", metric="group rates", value=3)),
        ([0, 1, 1], [0.2, 0.7, 1.0], NOT_INTEGER_MSG.format(name="y_pred", value=0.2)),
    ],
)
def test_bad_labels(y, p, msg):
    with pytest.raises(ValueError) as e:
        group_rates(y, p, sensitive_features=[0, 1, 1])
    assert str(e.value) == msg
