"""ROC AUC overall and by group, its bootstrap intervals, and the equity-scaled AUC.

The AUC is computed as the Mann-Whitney statistic with midranks for ties (Hanley & McNeil 1982),
which equals the area under the empirical ROC curve with ties interpolated (scikit-learn's
``roc_auc_score``, MONAI's ``compute_roc_auc``):

.. math::
    \\mathrm{AUC} = \\frac{1}{W_+ W_-} \\sum_{i: y_i = 1} \\sum_{j: y_j = 0} w_i w_j
        \\left([s_i > s_j] + \\tfrac12 [s_i = s_j]\\right)

with sample weights :math:`w` (1 by default). The scores are sorted once; a set of bootstrap
replicates is then a ``(b, N)`` matrix of resampling multiplicities (times the weights), and the
AUC of every replicate comes from block sums over the tie blocks of the sorted scores and one
cumulative sum, with no per-replicate sort. MONAI's ``compute_roc_auc`` loops over samples in
Python and scikit-learn's ``roc_auc_score`` re-sorts per call, too slow for thousands of replicates;
the tests check this implementation against both, ties included.

Equity-scaled AUC (Luo et al. 2023, Harvard-GF, Eq. 4 of the paper's fairness metrics):

.. math::
    \\text{ES-AUC} = \\frac{\\mathrm{AUC}}{1 + \\sum_a |\\mathrm{AUC} - \\mathrm{AUC}_a|}

References:
    J. A. Hanley, B. J. McNeil, "The meaning and use of the area under a receiver operating
    characteristic (ROC) curve", Radiology 143(1), 1982.
    Y. Luo, Y. Tian, M. Shi, L. R. Pasquale, L. Q. Shen, N. Zebardast, T. Elze, M. Wang,
    "Harvard Glaucoma Fairness: A Retinal Nerve Disease Dataset for Fairness Learning and Fair
    Identity Normalization", IEEE TMI 2024 (arXiv:2306.09264, 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..validation import check_lengths, check_option
from ._group_bootstrap import bootstrap_index_chunks, check_bootstrap_args
from ._group_inputs import (
    METHODS,
    GroupIndex,
    as_binary_labels,
    as_binary_scores,
    encode_groups,
    to_numpy,
    warn_undefined,
)
from ._group_results import (
    DisparityResult,
    GroupMetricResult,
    bootstrap_settings,
    make_group_result,
    safe_divide,
    scalar_interval,
    warn_bootstrap_undefined,
)

__all__ = [
    "AUC_UNDEFINED_REASON",
    "AucData",
    "prepare_auc",
    "auc_values",
    "bootstrap_auc_values",
    "es_auc_values",
    "es_auc_result",
    "mann_whitney_auc",
    "roc_auc_by_group",
    "equity_scaled_auc",
]

AUC_UNDEFINED_REASON = "only one class present; the AUC needs positive and negative samples"


def _weighted_sorted_auc(y: np.ndarray, starts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of each row of ``weights`` ``(b, m)`` over samples sorted by score.

    Args:
        y: ``(m,)`` 0/1 labels in ascending score order.
        starts: first column of each tie block (equal scores).
        weights: ``(b, m)`` non-negative weights (multiplicities).
    """
    if y.size == 0:
        return np.full(weights.shape[0], np.nan)
    pos = np.add.reduceat(weights * y, starts, axis=1)
    neg = np.add.reduceat(weights * (1 - y), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    return safe_divide(num, pos.sum(axis=1) * neg.sum(axis=1))


@dataclass(frozen=True)
class AucData:
    """Scores sorted once, overall and within each group.

    Attributes:
        y_true: ``(N,)`` 0/1 labels. y_score: ``(N,)`` scores. gi: the group index.
        sample_weight: ``(N,)`` or ``None``.
        columns: for the overall set then each group, the sample indices in ascending score
            order (stable). starts: the tie-block starts of each of those.
    """

    y_true: np.ndarray
    y_score: np.ndarray
    gi: GroupIndex
    sample_weight: np.ndarray | None
    columns: tuple
    starts: tuple

    @property
    def n(self) -> int:
        return self.y_true.shape[0]

    def strata(self) -> np.ndarray:
        return (self.gi.codes + 1) * 2 + self.y_true


def _blocks(sorted_scores: np.ndarray) -> np.ndarray:
    if sorted_scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def prepare_auc(y_true, y_score, sensitive_features=None, *, group_names=None, sample_weight=None) -> AucData:
    """Validate and sort. ``sensitive_features=None`` puts every sample in one group."""
    yt = to_numpy(y_true, "y_true")
    ys = to_numpy(y_score, "y_score")
    g = None if sensitive_features is None else to_numpy(sensitive_features, "sensitive_features")
    w = None if sample_weight is None else to_numpy(sample_weight, "sample_weight").astype(np.float64).reshape(-1)
    check_lengths(y_true=yt, y_score=ys, sensitive_features=g, sample_weight=w)
    yt = as_binary_labels(yt, "y_true", "roc_auc")
    ys = as_binary_scores(ys, "y_score")
    gi = encode_groups(np.zeros(yt.shape[0], dtype=np.int64) if g is None else g, group_names)
    order = np.argsort(ys, kind="stable")
    codes_sorted = gi.codes[order]
    columns = [order] + [order[codes_sorted == k] for k in range(gi.n_groups)]
    starts = tuple(_blocks(ys[c]) for c in columns)
    return AucData(yt, ys, gi, w, tuple(columns), starts)


def auc_values(ad: AucData, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """AUC overall ``(b,)`` and by group ``(b, G)`` for weight rows ``(b, N)`` (default: the data)."""
    if weights is None:
        weights = np.ones((1, ad.n)) if ad.sample_weight is None else ad.sample_weight[None]
    vals = [_weighted_sorted_auc(ad.y_true[c], s, weights[:, c]) for c, s in zip(ad.columns, ad.starts)]
    return vals[0], np.stack(vals[1:], axis=1)


def bootstrap_auc_values(idx: np.ndarray, ad: AucData) -> tuple[np.ndarray, np.ndarray]:
    """AUC overall and by group of the replicates given by resampling indices ``idx`` ``(b, N)``."""
    b, n = idx.shape
    mult = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
    weights = mult.astype(np.float64)
    if ad.sample_weight is not None:
        weights *= ad.sample_weight
    return auc_values(ad, weights)


def es_auc_values(overall: np.ndarray, by_group: np.ndarray) -> np.ndarray:
    """ES-AUC ``(b,)`` from ``overall`` ``(b,)`` and ``by_group`` ``(b, G)``; NaN groups left out."""
    gaps = np.abs(overall[:, None] - by_group)
    return overall / (1.0 + np.where(np.isnan(gaps), 0.0, gaps).sum(axis=1))


def mann_whitney_auc(y_true, y_score, *, sample_weight=None) -> float:
    """ROC AUC as the (weighted) Mann-Whitney statistic, ties counted one half.

    .. math::
        \\mathrm{AUC} = \\frac{1}{W_+ W_-} \\sum_{y_i = 1} \\sum_{y_j = 0} w_i w_j
            \\left([s_i > s_j] + \\tfrac12 [s_i = s_j]\\right)

    Equal to ``sklearn.metrics.roc_auc_score(y_true, y_score, sample_weight=...)``.

    Args:
        y_true: ``(N,)`` labels 0/1 (or ``(N, 2)`` one-hot). Tensor or array.
        y_score: ``(N,)`` positive-class scores, or ``(N, 2)`` two-class probabilities (column 1).
        sample_weight: ``(N,)`` weights (default ``None``).

    Returns:
        The AUC; NaN (with a warning) when only one class is present.

    Raises:
        ValueError: inconsistent lengths, empty input, non-binary labels.

    Example:
        >>> mann_whitney_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    ad = prepare_auc(y_true, y_score, sample_weight=sample_weight)
    value = float(auc_values(ad)[0][0])
    if np.isnan(value):
        warn_undefined("roc_auc", ["overall"], AUC_UNDEFINED_REASON)
    return value


def _auc_with_bootstrap(ad: AucData, n_bootstrap: int, seed, stratified: bool):
    ov, bg = auc_values(ad)
    if not n_bootstrap:
        return ov, bg, None
    strata = ad.strata() if stratified else None
    parts = [bootstrap_auc_values(idx, ad) for idx in bootstrap_index_chunks(strata, ad.n, n_bootstrap, seed)]
    return ov, bg, (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def roc_auc_by_group(
    y_true,
    y_score,
    *,
    sensitive_features,
    group_names: Sequence | None = None,
    method: str = "between_groups",
    sample_weight=None,
    n_bootstrap: int = 0,
    confidence_level: float = 0.95,
    stratified: bool = True,
    seed: int | None = 0,
) -> GroupMetricResult:
    """ROC AUC overall and in each group, with optional percentile-bootstrap intervals.

    .. math::
        \\mathrm{AUC}_a = \\mathrm{AUC}(\\{(y_i, s_i) : a_i = a\\})

    (see the module docstring for the AUC). ``overall`` uses every sample, those with group code
    ``-1`` included. A group with only one class has no AUC: NaN in ``by_group``, left out of the
    difference and ratio, with a warning naming it.

    Args:
        y_true: ``(N,)`` labels 0/1 (or ``(N, 2)`` one-hot).
        y_score: ``(N,)`` positive-class scores or ``(N, 2)`` probabilities (column 1 used).
        sensitive_features: ``(N,)`` group codes (``-1``: in no group) or values.
        group_names: names of codes ``0 .. G-1`` (default: the codes present).
        method: ``"between_groups"`` (default) or ``"to_overall"`` for difference and ratio.
        sample_weight: ``(N,)`` weights (default ``None``).
        n_bootstrap: number of bootstrap replicates (default 0: no intervals).
        confidence_level: level of the percentile intervals (default 0.95).
        stratified: resample within each (group, label) stratum (default ``True``): every
            replicate keeps the group sizes and class counts, so every group AUC defined on the
            data stays defined. ``False`` resamples the whole set.
        seed: seed of the resampling (default 0); same seed, same intervals.

    Returns:
        :class:`GroupMetricResult` named ``"auc"``; ``ci`` filled when ``n_bootstrap > 0``.

    Raises:
        ValueError: unknown ``method``, inconsistent lengths, empty input, non-binary labels,
            bad ``n_bootstrap`` / ``confidence_level``.

    Warns:
        UndefinedGroupMetricWarning: a group (or the whole set) with one class only.

    Example:
        >>> r = roc_auc_by_group([0, 1, 0, 1], [0.2, 0.9, 0.6, 0.4], sensitive_features=[0, 0, 1, 1])
        >>> r.by_group, r.difference
        ({0: 1.0, 1: 0.0}, 1.0)
    """
    check_option(method, METHODS, "method")
    check_bootstrap_args(n_bootstrap, confidence_level)
    ad = prepare_auc(y_true, y_score, sensitive_features, group_names=group_names, sample_weight=sample_weight)
    ov, bg, boot = _auc_with_bootstrap(ad, n_bootstrap, seed, stratified)
    settings = bootstrap_settings(n_bootstrap, confidence_level, stratified, seed) if n_bootstrap else None
    return make_group_result("auc", ov, bg, method, ad.gi, AUC_UNDEFINED_REASON, boot=boot, settings=settings)


def es_auc_result(ov, bg, gi: GroupIndex, boot=None, settings=None) -> DisparityResult:
    """:class:`DisparityResult` of the ES-AUC from AUC values (see :func:`equity_scaled_auc`)."""
    value = es_auc_values(ov, bg)
    undefined = [g for g, v in zip(gi.groups, bg[0]) if np.isnan(v)]
    warn_undefined("es_auc", undefined, AUC_UNDEFINED_REASON + "; left out of the sum", stacklevel=4)
    ci = None
    if boot is not None:
        warn_bootstrap_undefined("auc", boot[1], gi.groups, bg[0])
        ci = scalar_interval(es_auc_values(*boot), settings["confidence_level"])
    return DisparityResult(
        name="es_auc",
        value=float(value[0]),
        by_group={g: float(v) for g, v in zip(gi.groups, bg[0])},
        details={"auc": float(ov[0]), "auc_gap_sum": float(np.nansum(np.abs(ov[0] - bg[0]))),
                 "left_out_groups": undefined},
        ci=ci,
        bootstrap=settings,
    )


def equity_scaled_auc(
    y_true,
    y_score,
    *,
    sensitive_features,
    group_names: Sequence | None = None,
    sample_weight=None,
    n_bootstrap: int = 0,
    confidence_level: float = 0.95,
    stratified: bool = True,
    seed: int | None = 0,
) -> DisparityResult:
    """Equity-scaled AUC (Luo et al. 2023, Harvard-GF).

    .. math::
        \\text{ES-AUC} = \\frac{\\mathrm{AUC}}{1 + \\sum_a |\\mathrm{AUC} - \\mathrm{AUC}_a|}

    :math:`\\mathrm{AUC}` is the overall AUC (all samples, group code ``-1`` included) and the sum
    runs over the groups. It equals the AUC when every group matches it and falls as groups
    depart from it. A group whose AUC is undefined (one class only) is left out of the sum, with a
    warning naming it. The bootstrap interval recomputes the whole ratio on each replicate.

    Args:
        y_true: ``(N,)`` labels 0/1 (or ``(N, 2)`` one-hot).
        y_score: ``(N,)`` positive-class scores or ``(N, 2)`` probabilities.
        sensitive_features: ``(N,)`` group codes (``-1``: in no group) or values.
        group_names: names of codes ``0 .. G-1``.
        sample_weight: ``(N,)`` weights (default ``None``).
        n_bootstrap, confidence_level, stratified, seed: as :func:`roc_auc_by_group`.

    Returns:
        :class:`DisparityResult` ``"es_auc"`` with ``by_group`` the group AUCs and ``details``
        the overall AUC, the gap sum and the groups left out.

    Raises:
        ValueError: as :func:`roc_auc_by_group`.

    Example:
        >>> r = equity_scaled_auc([0, 1, 0, 1], [0.2, 0.9, 0.6, 0.4], sensitive_features=[0, 0, 1, 1])
        >>> r.value  # AUC 0.75; groups 1.0 and 0.0: 0.75 / (1 + 0.25 + 0.75)
        0.375
    """
    check_bootstrap_args(n_bootstrap, confidence_level)
    ad = prepare_auc(y_true, y_score, sensitive_features, group_names=group_names, sample_weight=sample_weight)
    ov, bg, boot = _auc_with_bootstrap(ad, n_bootstrap, seed, stratified)
    settings = bootstrap_settings(n_bootstrap, confidence_level, stratified, seed) if n_bootstrap else None
    return es_auc_result(ov, bg, ad.gi, boot, settings)
