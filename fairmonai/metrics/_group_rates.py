"""Per-group confusion counts and the rates and disparities built on them.

All counts come from one ``bincount`` over the cell index

.. math::
    \\text{cell}_i = ((a_i + 1) K + y_i) K + \\hat y_i

(group code :math:`a_i`, with :math:`-1` for a sample in no group, true class :math:`y_i`, predicted
class :math:`\\hat y_i`, :math:`K` classes), giving a :math:`(G+1) \\times K \\times K` array of
confusion matrices in the layout of ``sklearn.metrics.confusion_matrix`` (rows true, columns
predicted; binary ``[[TN, FP], [FN, TP]]``). The overall matrix is the sum over all :math:`G+1`
slices, so samples excluded from the groups still count overall. Bootstrap replicates add a
replicate offset to the cell index and are counted in the same single ``bincount``.

Binary rates, per group :math:`a` (Hardt et al. 2016; fairlearn ``true_positive_rate``,
``false_positive_rate``, ``selection_rate``):

.. math::
    \\mathrm{TPR}_a = \\frac{TP_a}{TP_a + FN_a}, \\quad
    \\mathrm{FPR}_a = \\frac{FP_a}{FP_a + TN_a}, \\quad
    \\mathrm{SR}_a = \\frac{TP_a + FP_a}{N_a}

Demographic parity difference / ratio are the difference / ratio of the selection rates;
equalized odds difference is, with ``agg="worst_case"``, the larger of the TPR and FPR
differences (``agg="mean"``: their mean), and the ratio the smaller of the two ratios; these are
fairlearn's definitions (``fairlearn.metrics.demographic_parity_difference`` etc., 0.15) and give
the same values on the same arrays, with two stated exceptions: a rate undefined for a group
(no positives for TPR, no negatives for FPR, no samples) is NaN in ``by_group`` and left out of
the difference and ratio with an :class:`UndefinedGroupMetricWarning` (fairlearn reports such a
TPR as 0 through scikit-learn's zero division); a ratio of two zero rates is 1 (fairlearn: NaN).

References:
    M. Hardt, E. Price, N. Srebro, "Equality of Opportunity in Supervised Learning", NeurIPS 2016.
    fairlearn 0.15, ``fairlearn/metrics/_fairness_metrics.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..validation import check_lengths, check_option
from ._group_bootstrap import bootstrap_index_chunks, check_bootstrap_args
from ._group_inputs import (
    AGGS,
    METHODS,
    NOT_BINARY_MSG,
    GroupIndex,
    as_binary_labels,
    as_labels,
    encode_groups,
    to_numpy,
)
from ._group_results import GroupMetricResult, bootstrap_settings, make_group_result, safe_divide, to_plain

__all__ = [
    "LABEL_OUT_OF_RANGE_MSG",
    "RATE_NAMES",
    "CountData",
    "GroupConfusionCounts",
    "prepare_counts",
    "count_cells",
    "bootstrap_counts",
    "binary_rates",
    "rate_results",
    "confusion_counts_by_group",
    "group_rates",
    "true_positive_rate_by_group",
    "false_positive_rate_by_group",
    "selection_rate_by_group",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
]

LABEL_OUT_OF_RANGE_MSG = "{name} holds class {value} but num_classes is {k}"

#: binary rates: name -> why the rate can be undefined for a group.
RATE_NAMES = {
    "tpr": "no positive samples (y_true == 1)",
    "fpr": "no negative samples (y_true == 0)",
    "selection_rate": "no samples",
    "accuracy": "no samples",
}


@dataclass(frozen=True)
class CountData:
    """Samples reduced to what confusion counts need.

    Attributes:
        cells: ``(N,)`` cell index ``((code + 1) * K + y_true) * K + y_pred``.
        num_classes: ``K``.
        gi: the group index.
        y_true: ``(N,)`` int64 labels (kept for stratified resampling).
        sample_weight: ``(N,)`` float64 or ``None``.
    """

    cells: np.ndarray
    num_classes: int
    gi: GroupIndex
    y_true: np.ndarray
    sample_weight: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.cells.shape[0]

    def strata(self) -> np.ndarray:
        """Stratum of each sample for stratified resampling: ``(code + 1) * K + y_true``."""
        return (self.gi.codes + 1) * self.num_classes + self.y_true


def prepare_counts(
    y_true,
    y_pred,
    sensitive_features,
    *,
    group_names: Sequence | None = None,
    sample_weight=None,
    num_classes: int | None = None,
    binary_metric: str | None = None,
    threshold: float | None = None,
) -> CountData:
    """Validate inputs and compute the cell index of every sample.

    Args:
        y_true: ``(N,)`` class labels or ``(N, K)`` one-hot.
        y_pred: ``(N,)`` predicted labels, ``(N, K)`` scores/one-hot (argmax), or ``(N,)`` scores
            when ``threshold`` is given.
        sensitive_features: ``(N,)`` group codes or values (see :func:`encode_groups`).
        group_names: names of the integer codes ``0 .. G-1``.
        sample_weight: ``(N,)`` weights or ``None``.
        num_classes: ``K``; default the largest label + 1 (at least 2).
        binary_metric: name of a binary-only metric; labels must then be 0/1.
        threshold: turn ``(N,)`` scores in ``y_pred`` into labels ``score >= threshold``.

    Raises:
        ValueError: lengths differ (naming both), no samples, labels not integral / negative /
            not binary / beyond ``num_classes``, bad group codes.
    """
    yt = to_numpy(y_true, "y_true")
    yp = to_numpy(y_pred, "y_pred")
    g = to_numpy(sensitive_features, "sensitive_features")
    w = None if sample_weight is None else to_numpy(sample_weight, "sample_weight").astype(np.float64).reshape(-1)
    check_lengths(y_true=yt, y_pred=yp, sensitive_features=g, sample_weight=w)
    if binary_metric is not None:
        yt = as_binary_labels(yt, "y_true", binary_metric)
        yp = as_labels(yp, "y_pred", threshold=threshold)
        if yp.max() > 1:
            raise ValueError(NOT_BINARY_MSG.format(name="y_pred", metric=binary_metric, value=int(yp.max())))
        k = 2
    else:
        yt = as_labels(yt, "y_true")
        yp = as_labels(yp, "y_pred", threshold=threshold)
        top = int(max(yt.max(), yp.max()))
        if num_classes is None:
            k = max(2, top + 1)
        else:
            k = int(num_classes)
            for name, y in (("y_true", yt), ("y_pred", yp)):
                if y.max() >= k:
                    raise ValueError(LABEL_OUT_OF_RANGE_MSG.format(name=name, value=int(y.max()), k=k))
    gi = encode_groups(g, group_names)
    cells = gi.codes + 1  # ((code + 1) * K + y_true) * K + y_pred, in place
    cells *= k
    cells += yt
    cells *= k
    cells += yp
    return CountData(cells=cells, num_classes=k, gi=gi, y_true=yt, sample_weight=w)


def count_cells(cd: CountData, idx: np.ndarray | None = None) -> np.ndarray:
    """Confusion counts ``(b, G + 1, K, K)`` float64; slice 0 holds the samples in no group.

    Args:
        cd: the prepared samples.
        idx: ``(b, N)`` resampling indices (one replicate per row), or ``None`` for the data
            itself (``b = 1``).
    """
    k, g1 = cd.num_classes, cd.gi.n_groups + 1
    n_cells = g1 * k * k
    if idx is None:
        counts = np.bincount(cd.cells, weights=cd.sample_weight, minlength=n_cells)
        return counts.astype(np.float64, copy=False).reshape(1, g1, k, k)
    b = idx.shape[0]
    flat = (cd.cells[idx] + n_cells * np.arange(b)[:, None]).ravel()
    w = None if cd.sample_weight is None else cd.sample_weight[idx].ravel()
    counts = np.bincount(flat, weights=w, minlength=b * n_cells)
    return counts.astype(np.float64, copy=False).reshape(b, g1, k, k)


def bootstrap_counts(cd: CountData, n_bootstrap: int, seed, stratified: bool) -> np.ndarray:
    """Confusion counts of ``n_bootstrap`` replicates, ``(B, G + 1, K, K)``."""
    strata = cd.strata() if stratified else None
    return np.concatenate([count_cells(cd, idx) for idx in bootstrap_index_chunks(strata, cd.n, n_bootstrap, seed)])


def binary_rates(c: np.ndarray, name: str) -> np.ndarray:
    """A binary rate from confusion matrices ``(..., 2, 2)``; NaN where undefined."""
    if name == "tpr":
        return safe_divide(c[..., 1, 1], c[..., 1, 0] + c[..., 1, 1])
    if name == "fpr":
        return safe_divide(c[..., 0, 1], c[..., 0, 0] + c[..., 0, 1])
    total = c.sum(axis=(-2, -1))
    if name == "selection_rate":
        return safe_divide(c[..., 0, 1] + c[..., 1, 1], total)
    return safe_divide(c[..., 0, 0] + c[..., 1, 1], total)  # accuracy


def rate_results(
    counts: np.ndarray,
    gi: GroupIndex,
    names: Sequence[str],
    method: str,
    *,
    boot_counts: np.ndarray | None = None,
    settings: dict | None = None,
) -> dict[str, GroupMetricResult]:
    """:class:`GroupMetricResult` of each binary rate in ``names`` from counts ``(1, G + 1, 2, 2)``."""
    out = {}
    for name in names:
        ov = binary_rates(counts.sum(axis=1), name)
        bg = binary_rates(counts[:, 1:], name)
        boot = None
        if boot_counts is not None:
            boot = (binary_rates(boot_counts.sum(axis=1), name), binary_rates(boot_counts[:, 1:], name))
        out[name] = make_group_result(name, ov, bg, method, gi, RATE_NAMES[name], boot=boot, settings=settings)
    return out


@dataclass(frozen=True)
class GroupConfusionCounts:
    """Confusion matrices per group and overall (sklearn layout: rows true, columns predicted).

    Attributes:
        groups: the group labels.
        counts: ``(G, K, K)``; binary: ``counts[g] = [[TN, FP], [FN, TP]]``.
        overall: ``(K, K)``, all samples including those in no group.
        n_excluded: samples with group code ``-1`` (counted in ``overall`` only).
    """

    groups: tuple
    counts: np.ndarray
    overall: np.ndarray
    n_excluded: int

    def to_dict(self) -> dict:
        """Plain-dict form: ``{"groups", "by_group": {group: K x K list}, "overall", "n_excluded"}``."""
        return to_plain({
            "groups": list(self.groups),
            "by_group": {g: c for g, c in zip(self.groups, self.counts)},
            "overall": self.overall,
            "n_excluded": self.n_excluded,
        })


def confusion_counts_by_group(
    y_true,
    y_pred,
    *,
    sensitive_features,
    group_names: Sequence | None = None,
    num_classes: int | None = None,
    sample_weight=None,
) -> GroupConfusionCounts:
    """Confusion matrix of each group and overall, from one ``bincount`` pass.

    .. math::
        C_a[j, k] = \\sum_i w_i \\, [a_i = a,\\ y_i = j,\\ \\hat y_i = k]

    Args:
        y_true: ``(N,)`` class labels, or ``(N, K)`` one-hot (argmax). Tensor or array.
        y_pred: ``(N,)`` predicted labels, or ``(N, K)`` scores/one-hot (argmax).
        sensitive_features: ``(N,)`` group codes (``-1`` = in no group) or group values.
        group_names: names of codes ``0 .. G-1`` (default: the codes present).
        num_classes: ``K`` (default: largest label + 1, at least 2).
        sample_weight: ``(N,)`` weights (default ``None``: 1 each); counts are then weight sums.

    Returns:
        :class:`GroupConfusionCounts`; integer-valued float64 counts without weights.

    Raises:
        ValueError: inconsistent lengths (naming both), empty input, invalid labels or codes.

    Example:
        >>> c = confusion_counts_by_group([0, 1, 1, 0], [0, 1, 0, 0], sensitive_features=[0, 0, 1, 1])
        >>> c.counts[1].tolist()
        [[1.0, 0.0], [1.0, 0.0]]
    """
    cd = prepare_counts(y_true, y_pred, sensitive_features, group_names=group_names, sample_weight=sample_weight,
                        num_classes=num_classes)
    c = count_cells(cd)[0]
    return GroupConfusionCounts(groups=cd.gi.groups, counts=c[1:], overall=c.sum(axis=0), n_excluded=cd.gi.n_excluded)


def group_rates(
    y_true,
    y_pred,
    *,
    sensitive_features,
    group_names: Sequence | None = None,
    method: str = "between_groups",
    sample_weight=None,
    rates: Sequence[str] = ("tpr", "fpr", "selection_rate"),
    n_bootstrap: int = 0,
    confidence_level: float = 0.95,
    stratified: bool = True,
    seed: int | None = 0,
) -> dict[str, GroupMetricResult]:
    """True positive rate, false positive rate and selection rate by group, in one counting pass.

    .. math::
        \\mathrm{TPR}_a = \\frac{TP_a}{TP_a + FN_a}, \\quad
        \\mathrm{FPR}_a = \\frac{FP_a}{FP_a + TN_a}, \\quad
        \\mathrm{SR}_a = \\frac{TP_a + FP_a}{N_a}, \\quad
        \\mathrm{ACC}_a = \\frac{TP_a + TN_a}{N_a}

    Same values as ``fairlearn.metrics.MetricFrame(metrics={"tpr": true_positive_rate, ...})``
    (``overall``, ``by_group``, ``difference(method)``, ``ratio(method)``), except where a rate is
    undefined for a group (see the module docstring).

    Args:
        y_true: ``(N,)`` binary labels 0/1 (or ``(N, 2)`` one-hot).
        y_pred: ``(N,)`` predicted labels 0/1 (or ``(N, 2)`` scores: argmax).
        sensitive_features: ``(N,)`` group codes (``-1``: counted overall, in no group) or values.
        group_names: names of codes ``0 .. G-1`` (default: the codes present).
        method: ``"between_groups"`` (default) or ``"to_overall"``.
        sample_weight: ``(N,)`` weights (default ``None``).
        rates: which of ``"tpr"``, ``"fpr"``, ``"selection_rate"``, ``"accuracy"``.
        n_bootstrap: bootstrap replicates for percentile intervals (default 0: none).
        confidence_level: interval level (default 0.95).
        stratified: resample within (group, label) strata (default ``True``); see
            :mod:`fairmonai.metrics._group_bootstrap`.
        seed: bootstrap seed (default 0).

    Returns:
        ``{rate: GroupMetricResult}``.

    Raises:
        ValueError: unknown ``method`` or rate (naming the allowed values), inconsistent lengths,
            empty input, non-binary labels.

    Warns:
        UndefinedGroupMetricWarning: a rate undefined for a group, naming the group.
    """
    check_option(method, METHODS, "method")
    for r in rates:
        check_option(r, tuple(RATE_NAMES), "rate")
    check_bootstrap_args(n_bootstrap, confidence_level)
    cd = prepare_counts(y_true, y_pred, sensitive_features, group_names=group_names, sample_weight=sample_weight,
                        binary_metric="group rates")
    boot, settings = None, None
    if n_bootstrap:
        boot = bootstrap_counts(cd, n_bootstrap, seed, stratified)
        settings = bootstrap_settings(n_bootstrap, confidence_level, stratified, seed)
    return rate_results(count_cells(cd), cd.gi, rates, method, boot_counts=boot, settings=settings)


def _single_rate(rate: str):
    def fn(y_true, y_pred, *, sensitive_features, group_names=None, method="between_groups", sample_weight=None,
           n_bootstrap=0, confidence_level=0.95, stratified=True, seed=0) -> GroupMetricResult:
        return group_rates(y_true, y_pred, sensitive_features=sensitive_features, group_names=group_names,
                           method=method, sample_weight=sample_weight, rates=(rate,), n_bootstrap=n_bootstrap,
                           confidence_level=confidence_level, stratified=stratified, seed=seed)[rate]
    return fn


true_positive_rate_by_group = _single_rate("tpr")
true_positive_rate_by_group.__name__ = "true_positive_rate_by_group"
true_positive_rate_by_group.__doc__ = """True positive rate by group: :func:`group_rates` with ``rates=("tpr",)``.

.. math:: \\mathrm{TPR}_a = TP_a / (TP_a + FN_a)

Same arguments as :func:`group_rates` (less ``rates``); returns a :class:`GroupMetricResult`.
"""
false_positive_rate_by_group = _single_rate("fpr")
false_positive_rate_by_group.__name__ = "false_positive_rate_by_group"
false_positive_rate_by_group.__doc__ = """False positive rate by group: :func:`group_rates` with ``rates=("fpr",)``.

.. math:: \\mathrm{FPR}_a = FP_a / (FP_a + TN_a)

Same arguments as :func:`group_rates` (less ``rates``); returns a :class:`GroupMetricResult`.
"""
selection_rate_by_group = _single_rate("selection_rate")
selection_rate_by_group.__name__ = "selection_rate_by_group"
selection_rate_by_group.__doc__ = """Selection rate by group: :func:`group_rates` with ``rates=("selection_rate",)``.

.. math:: \\mathrm{SR}_a = (TP_a + FP_a) / N_a

Same arguments as :func:`group_rates` (less ``rates``); returns a :class:`GroupMetricResult`.
"""


def _rates(y_true, y_pred, sensitive_features, group_names, method, sample_weight, names, metric):
    check_option(method, METHODS, "method")
    cd = prepare_counts(y_true, y_pred, sensitive_features, group_names=group_names, sample_weight=sample_weight,
                        binary_metric=metric)
    return rate_results(count_cells(cd), cd.gi, names, method)


def demographic_parity_difference(
    y_true, y_pred, *, sensitive_features, method: str = "between_groups", sample_weight=None,
    group_names: Sequence | None = None,
) -> float:
    """Demographic parity difference: the difference of the group selection rates.

    .. math::
        \\Delta_{DP} = \\max_a \\mathrm{SR}_a - \\min_a \\mathrm{SR}_a \\quad (\\text{between\\_groups}),
        \\qquad \\max_a |\\mathrm{SR}_a - \\mathrm{SR}| \\quad (\\text{to\\_overall})

    As ``fairlearn.metrics.demographic_parity_difference`` (same arguments and defaults).

    Args:
        y_true: ``(N,)`` binary labels 0/1 (only their count matters).
        y_pred: ``(N,)`` predicted labels 0/1.
        sensitive_features: ``(N,)`` group codes (``-1``: in no group) or values.
        method: ``"between_groups"`` (default) or ``"to_overall"``.
        sample_weight: ``(N,)`` weights (default ``None``).
        group_names: names of codes ``0 .. G-1``.

    Raises:
        ValueError: unknown ``method``, inconsistent lengths, empty input, non-binary labels.

    Example:
        >>> demographic_parity_difference([0, 1, 0, 1], [1, 1, 0, 1], sensitive_features=[0, 0, 1, 1])
        0.5
    """
    return _rates(y_true, y_pred, sensitive_features, group_names, method, sample_weight, ("selection_rate",),
                  "demographic_parity_difference")["selection_rate"].difference


def demographic_parity_ratio(
    y_true, y_pred, *, sensitive_features, method: str = "between_groups", sample_weight=None,
    group_names: Sequence | None = None,
) -> float:
    """Demographic parity ratio: the smallest over the largest group selection rate.

    .. math::
        \\min_a \\mathrm{SR}_a / \\max_a \\mathrm{SR}_a \\quad (\\text{between\\_groups})

    As ``fairlearn.metrics.demographic_parity_ratio``; arguments as
    :func:`demographic_parity_difference`. All rates 0 gives 1 (fairlearn: NaN).
    """
    return _rates(y_true, y_pred, sensitive_features, group_names, method, sample_weight, ("selection_rate",),
                  "demographic_parity_ratio")["selection_rate"].ratio


def _agg(values: list[float], agg: str, worst) -> float:
    v = np.array(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan")
    return float(worst(v)) if agg == "worst_case" else float(v.mean())


def equalized_odds_difference(
    y_true, y_pred, *, sensitive_features, method: str = "between_groups", sample_weight=None,
    agg: str = "worst_case", group_names: Sequence | None = None,
) -> float:
    """Equalized odds difference: the worse (or mean) of the TPR and FPR differences.

    .. math::
        \\Delta_{EO} = \\max(\\Delta_{TPR}, \\Delta_{FPR}) \\quad (\\text{worst\\_case}), \\qquad
        \\tfrac12 (\\Delta_{TPR} + \\Delta_{FPR}) \\quad (\\text{mean})

    with :math:`\\Delta` the difference by ``method``. As
    ``fairlearn.metrics.equalized_odds_difference`` (same arguments and defaults). A difference
    that is undefined (no group with positives, say) is left out of ``agg``.

    Args:
        y_true: ``(N,)`` binary labels 0/1.
        y_pred: ``(N,)`` predicted labels 0/1.
        sensitive_features: ``(N,)`` group codes (``-1``: in no group) or values.
        method: ``"between_groups"`` (default) or ``"to_overall"``.
        sample_weight: ``(N,)`` weights (default ``None``).
        agg: ``"worst_case"`` (default) or ``"mean"``.
        group_names: names of codes ``0 .. G-1``.

    Raises:
        ValueError: unknown ``method`` or ``agg`` (naming the allowed values), inconsistent
            lengths, empty input, non-binary labels.

    Example:
        >>> equalized_odds_difference([1, 1, 0, 1, 1, 0], [1, 1, 0, 1, 0, 1], sensitive_features=[0, 0, 0, 1, 1, 1])
        1.0
    """
    check_option(agg, AGGS, "agg")
    r = _rates(y_true, y_pred, sensitive_features, group_names, method, sample_weight, ("tpr", "fpr"),
               "equalized_odds_difference")
    return _agg([r["tpr"].difference, r["fpr"].difference], agg, np.max)


def equalized_odds_ratio(
    y_true, y_pred, *, sensitive_features, method: str = "between_groups", sample_weight=None,
    agg: str = "worst_case", group_names: Sequence | None = None,
) -> float:
    """Equalized odds ratio: the smaller (or mean) of the TPR and FPR ratios.

    As ``fairlearn.metrics.equalized_odds_ratio``; arguments as :func:`equalized_odds_difference`.
    """
    check_option(agg, AGGS, "agg")
    r = _rates(y_true, y_pred, sensitive_features, group_names, method, sample_weight, ("tpr", "fpr"),
               "equalized_odds_ratio")
    return _agg([r["tpr"].ratio, r["fpr"].ratio], agg, np.min)
