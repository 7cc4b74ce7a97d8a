"""The one-object classification fairness summary and its cumulative (MONAI) form."""

import json

import numpy as np
import pytest
import torch

from fairmonai.metrics._auc import equity_scaled_auc, roc_auc_by_group
from fairmonai.metrics._classification import (
    SENSITIVE_CODES_MSG,
    ClassificationFairnessMetric,
    classification_fairness_summary,
)
from fairmonai.metrics._fami_metrics import compute_eodd, compute_eom, compute_sigma_iou
from fairmonai.metrics._group_inputs import UndefinedGroupMetricWarning
from fairmonai.metrics._group_rates import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    group_rates,
)
from fairmonai.validation import BAD_OPTION_MSG, EMPTY_INPUT_MSG, LENGTH_MISMATCH_MSG


def _binary(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    g = rng.integers(-1, 3, n)
    return y, s, g


@pytest.mark.parametrize("method, agg", [("between_groups", "worst_case"), ("to_overall", "mean")])
def test_binary_summary_equals_functions(method, agg):
    y, s, g = _binary()
    names = ["a", "b", "c"]
    res = classification_fairness_summary(y, s, sensitive_features=g, group_names=names, method=method, agg=agg,
                                          threshold=0.4)
    p = (s >= 0.4).astype(int)
    kw = dict(sensitive_features=g, group_names=names, method=method)
    assert res.task == "binary"
    assert res.n_samples == 300 and res.n_excluded == int((g == -1).sum())
    assert res.metrics["auc"] == roc_auc_by_group(y, s, **kw)
    rates = group_rates(y, p, rates=("tpr", "fpr", "selection_rate", "accuracy"), **kw)
    for k, v in rates.items():
        assert res.metrics[k] == v
    d = res.disparities
    assert d["dp_difference"].value == demographic_parity_difference(y, p, **kw)
    assert d["dp_ratio"].value == demographic_parity_ratio(y, p, **kw)
    assert d["eo_difference"].value == equalized_odds_difference(y, p, agg=agg, **kw)
    assert d["eo_ratio"].value == equalized_odds_ratio(y, p, agg=agg, **kw)
    assert d["es_auc"] == equity_scaled_auc(y, s, sensitive_features=g, group_names=names)
    assert d["eom"] == compute_eom(y, p, sensitive_features=g, group_names=names)
    assert d["eodd"] == compute_eodd(y, p, sensitive_features=g, group_names=names)
    assert d["sigma_iou"] == compute_sigma_iou(y, p, sensitive_features=g, group_names=names)


def test_bootstrap_intervals_equal_the_functions():
    # the summary draws the same replicates as each function with the same seed
    y, s, g = _binary(1)
    res = classification_fairness_summary(y, s, sensitive_features=g, n_bootstrap=100, seed=9)
    kw = dict(sensitive_features=g, n_bootstrap=100, seed=9)
    assert res.metrics["auc"].ci == roc_auc_by_group(y, s, **kw).ci
    assert res.metrics["tpr"].ci == group_rates(y, (s >= 0.5).astype(int), **kw)["tpr"].ci
    assert res.disparities["es_auc"].ci == equity_scaled_auc(y, s, **kw).ci
    assert res.disparities["eodd"].ci == compute_eodd(y, s, threshold=0.5, **kw).ci
    assert res.disparities["dp_difference"].ci == res.metrics["selection_rate"].ci["difference"]
    lo, hi = res.disparities["eo_difference"].ci
    assert lo <= hi


def test_two_column_scores_and_tensors():
    y, s, g = _binary(2)
    a = classification_fairness_summary(y, s, sensitive_features=g)
    b = classification_fairness_summary(torch.tensor(y), torch.tensor(np.stack([1 - s, s], 1)),
                                        sensitive_features=torch.tensor(g))
    assert a.to_dict() == b.to_dict()


def test_multiclass_summary():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    scores = rng.dirichlet(np.ones(4), 200) + 0.5 * np.eye(4)[y]
    g = rng.integers(0, 3, 200)
    res = classification_fairness_summary(y, scores, sensitive_features=g, reference_group=2)
    p = scores.argmax(1)
    assert res.task == "multiclass"
    assert set(res.metrics) == {"accuracy"}
    assert set(res.disparities) == {"eom", "eodd", "sigma_iou"}
    assert res.disparities["eodd"] == compute_eodd(y, p, sensitive_features=g, reference_group=2)
    assert res.disparities["eodd"].strategy == "one_vs_rest"
    assert res.metrics["accuracy"].by_group[0] == pytest.approx(np.mean(y[g == 0] == p[g == 0]))


def test_to_dict_is_strict_json_and_scalars_flat():
    y, s, g = _binary(4)
    g = np.where(g == 2, 1, g)  # groups 0 and 1
    y = np.where(g == 1, 0, y)  # group 1 has no positives: NaN TPR and AUC
    with pytest.warns(UndefinedGroupMetricWarning):
        res = classification_fairness_summary(y, s, sensitive_features=g, n_bootstrap=20)
    d = res.to_dict()
    json.dumps(d, allow_nan=False)  # NaN became None
    assert d["metrics"]["tpr"]["by_group"]["1"] is None
    sc = res.scalars()
    assert {"auc", "auc_difference", "auc_ratio", "tpr", "eodd", "eom", "es_auc", "dp_difference",
            "sigma_iou"} <= set(sc)
    assert all(isinstance(v, float) for v in sc.values())


def test_summary_errors():
    y, s, g = _binary()

    def message(**kw):
        with pytest.raises(ValueError) as e:
            classification_fairness_summary(kw.pop("y", y), kw.pop("s", s), sensitive_features=g, **kw)
        return str(e.value)

    assert message(method="x") == BAD_OPTION_MSG.format(name="method", value="x",
                                                        allowed=["between_groups", "to_overall"])
    assert message(agg="x") == BAD_OPTION_MSG.format(name="agg", value="x", allowed=["worst_case", "mean"])
    assert message(eodd_strategy="x") == BAD_OPTION_MSG.format(name="strategy", value="x",
                                                               allowed=["max_pair", "one_vs_rest"])
    assert message(s=s[:-1]) == LENGTH_MISMATCH_MSG.format(first="y_true", n_first=300, other="y_score",
                                                           n_other=299)


def test_cumulative_metric_equals_function():
    y, s, g = _binary(5, n=90)
    m = ClassificationFairnessMetric(group_names=["a", "b", "c"], n_bootstrap=20)
    for i in range(0, 90, 16):  # batch-first tensors
        m(torch.tensor(s[i:i + 16]), torch.tensor(y[i:i + 16]), sensitive=torch.tensor(g[i:i + 16]))
    expected = classification_fairness_summary(y, s, sensitive_features=g, group_names=["a", "b", "c"],
                                               n_bootstrap=20)
    assert m.aggregate().to_dict() == expected.to_dict()
    m.reset()
    for i in range(0, 90, 30):  # lists of channel-first tensors (decollated), one-hot labels
        m([torch.tensor([1 - v, v]) for v in s[i:i + 30]], [torch.eye(2)[v] for v in y[i:i + 30]],
          sensitive=[int(v) for v in g[i:i + 30]])
    assert m.aggregate().to_dict() == expected.to_dict()


def test_cumulative_metric_errors():
    m = ClassificationFairnessMetric()
    with pytest.raises(ValueError) as e:
        m(torch.rand(4), torch.ones(4), sensitive=torch.zeros(3))
    assert str(e.value) == LENGTH_MISMATCH_MSG.format(first="y_pred", n_first=4, other="sensitive", n_other=3)
    with pytest.raises(ValueError, match="sensitive= is required"):
        m(torch.rand(4), torch.ones(4))
    with pytest.raises(ValueError) as e:
        m(torch.rand(2), torch.ones(2), sensitive=["Black", "White"])
    assert str(e.value) == SENSITIVE_CODES_MSG.format(value=repr(["Black", "White"]))
    with pytest.raises(ValueError) as e:
        m.aggregate()
    assert str(e.value) == EMPTY_INPUT_MSG.format(name="the metric buffer")
    with pytest.raises(ValueError) as e:
        ClassificationFairnessMetric(method="pairs")
    assert str(e.value) == BAD_OPTION_MSG.format(name="method", value="pairs",
                                                 allowed=["between_groups", "to_overall"])


@pytest.mark.parametrize("module", ["_group_rates", "_auc", "_fami_metrics", "_classification"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"fairmonai.metrics.{module}"))
    assert result.failed == 0 and result.attempted > 0
