"""Multi-class group fairness indices: EOM, EOdd (dermatology / glaucoma pruning papers), sigma_IoU (FVAP).

All three are computed from hard predictions (argmax of ``(N, K)`` scores, or ``(N,)`` scores
thresholded) through the per-group ``K x K`` confusion matrices of
:func:`fairmonai.metrics._group_rates.count_cells`. Per group :math:`a` and class :math:`c`
(one-vs-rest):

.. math::
    \\mathrm{TPR}_c(a) = \\frac{C_a[c, c]}{\\sum_k C_a[c, k]}, \\quad
    \\mathrm{FPR}_c(a) = \\frac{\\sum_{j \\ne c} C_a[j, c]}{\\sum_{j \\ne c} \\sum_k C_a[j, k]}, \\quad
    \\mathrm{IoU}_c(a) = \\frac{C_a[c, c]}{\\sum_k C_a[c, k] + \\sum_j C_a[j, c] - C_a[c, c]}

``TPR_c`` is the recall of class ``c``. EOM and EOdd are the definitions FaMI reports, taken from
XTranPrune's evaluation code (``Utils/Metrics.py``, ``cal_metrics``), where EOM follows FairDisCo
(Du et al. 2022). A per-class term that cannot be computed for a group (the group has no sample of
that class, say) is left out with an :class:`UndefinedGroupMetricWarning` naming group and class,
as XTranPrune's ``nanmin`` / ``nanmax`` / NaN-skipping sums do.

References:
    A. Ghadiri, M. Pagnucco, Y. Song, "XTranPrune: eXplainability-Aware Transformer Pruning for
    Bias Mitigation in Dermatological Disease Classification", MICCAI 2024.
    S. Du, B. Hers, N. Bayasi, G. Hamarneh, R. Garbi, "FairDisCo: Fairer AI in Dermatology via
    Disentanglement Contrastive Learning", ECCV Workshops 2022.
    T. Hänel, N. Kumar, D. Schlesinger, M. Li, E. Ünal, A. Eslami, S. Gumhold, "Enhancing Fairness
    of Visual Attribute Predictors", ACCV 2022 (sigma_IoU; code github.com/nish03/FVAP).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..validation import check_option
from ._group_bootstrap import check_bootstrap_args
from ._group_inputs import UndefinedGroupMetricWarning, resolve_group, warn_undefined
from ._group_rates import CountData, bootstrap_counts, count_cells, prepare_counts
from ._group_results import DisparityResult, bootstrap_settings, nan_max, nan_min, safe_divide, scalar_interval

__all__ = [
    "EODD_STRATEGIES",
    "REFERENCE_REQUIRED_MSG",
    "REFERENCE_UNUSED_MSG",
    "CLASS_TERM_UNDEFINED_MSG",
    "FEW_GROUPS_MSG",
    "BAD_DDOF_MSG",
    "SIGMA_IOU_DDOF",
    "SIGMA_IOU_ABSENT_CLASS",
    "SIGMA_IOU_ABSENT_CLASS_OPTIONS",
    "class_rates",
    "eom_values",
    "eodd_values",
    "sigma_iou_values",
    "compute_eom",
    "compute_eodd",
    "compute_sigma_iou",
    "eom_result",
    "eodd_result",
    "sigma_iou_result",
    "resolve_eodd_strategy",
    "resolve_reference",
    "check_ddof",
    "check_absent_class",
]

#: how EOdd compares more than two groups.
EODD_STRATEGIES = ("max_pair", "one_vs_rest")
REFERENCE_REQUIRED_MSG = "strategy 'one_vs_rest' needs reference_group (one of {groups})"
REFERENCE_UNUSED_MSG = "reference_group is only used by strategy 'one_vs_rest'; got strategy {strategy!r}"
CLASS_TERM_UNDEFINED_MSG = (
    "{metric}: {quantity} of class {cls} is undefined for group(s) {groups} ({reason}); that class is left "
    "out of the {scope}"
)
FEW_GROUPS_MSG = "{metric} needs at least two groups with samples; found {groups}; the value is NaN"
BAD_DDOF_MSG = "ddof must be 0 (population) or 1 (sample); got {value!r}"
#: sigma_IoU defaults: the value of Hänel et al.'s code (Bessel-corrected deviation; an absent class scores 0).
SIGMA_IOU_DDOF = 1
SIGMA_IOU_ABSENT_CLASS = "zero"
#: what the IoU of a class absent from a group's labels and predictions becomes (see :func:`compute_sigma_iou`).
SIGMA_IOU_ABSENT_CLASS_OPTIONS = ("zero", "leave_out")


def class_rates(c: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest ``tpr``, ``fpr`` and ``iou`` per class ``(..., K)`` from confusion matrices ``(..., K, K)``."""
    diag = np.diagonal(c, axis1=-2, axis2=-1)
    row = c.sum(axis=-1)
    col = c.sum(axis=-2)
    total = row.sum(axis=-1, keepdims=True)
    return {
        "tpr": safe_divide(diag, row),
        "fpr": safe_divide(col - diag, total - row),
        "iou": safe_divide(diag, row + col - diag),
    }


def _nan_mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    ok = ~np.isnan(x)
    return safe_divide(np.where(ok, x, 0.0).sum(axis=axis), ok.sum(axis=axis))


def _nan_sum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    ok = ~np.isnan(x)
    return np.where(ok.any(axis=axis), np.where(ok, x, 0.0).sum(axis=axis), np.nan)


def _warn_class_terms(metric, quantity, undefined: np.ndarray, groups, reason, scope) -> None:
    """``undefined`` ``(G, K)``: warn once per class listing its groups."""
    for cls in range(undefined.shape[1]):
        bad = [g for g, u in zip(groups, undefined[:, cls]) if u]
        if bad:
            warnings.warn(CLASS_TERM_UNDEFINED_MSG.format(metric=metric, quantity=quantity, cls=cls, groups=bad,
                                                          reason=reason, scope=scope),
                          UndefinedGroupMetricWarning, stacklevel=4)


def eom_values(group_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EOM ``(b,)``, its per-class ratios ``(b, K)`` and recalls ``(b, G, K)`` from counts ``(b, G, K, K)``.

    A class's ratio is ``min / max`` of the defined group recalls, 1 when all of them are 0, NaN
    when none is defined (the class is then left out of the mean).
    """
    rec = class_rates(group_counts)["tpr"]
    mn, mx = nan_min(rec, axis=1), nan_max(rec, axis=1)
    ratio = np.where((mx == 0) & (mn == 0), 1.0, safe_divide(mn, mx))
    return _nan_mean(ratio, axis=-1), ratio, rec


def _check_settings(n_bootstrap, confidence_level, stratified, seed):
    check_bootstrap_args(n_bootstrap, confidence_level)
    return bootstrap_settings(n_bootstrap, confidence_level, stratified, seed) if n_bootstrap else None


def compute_eom(
    y_true,
    y_pred,
    *,
    sensitive_features,
    group_names: Sequence | None = None,
    num_classes: int | None = None,
    threshold: float | None = None,
    n_bootstrap: int = 0,
    confidence_level: float = 0.95,
    stratified: bool = True,
    seed: int | None = 0,
) -> DisparityResult:
    """EOM, the equal-opportunity metric: mean over classes of the worst-to-best group recall ratio.

    .. math::
        \\mathrm{EOM} = \\frac{1}{|\\mathcal C|} \\sum_{c \\in \\mathcal C}
            \\frac{\\min_a \\mathrm{TPR}_c(a)}{\\max_a \\mathrm{TPR}_c(a)}

    Higher is fairer; 1 when every group has the same recall in every class. As FairDisCo /
    XTranPrune: groups without samples of class ``c`` are left out of that class's min and max
    (warned); a class no group has is left out of the mean. Where XTranPrune divides 0 by 0 (every
    group's recall of ``c`` is 0) and returns NaN, the class ratio here is 1: the groups are equal.

    Args:
        y_true: ``(N,)`` class labels (or ``(N, K)`` one-hot).
        y_pred: ``(N,)`` predicted labels, ``(N, K)`` scores (argmax), or ``(N,)`` scores with
            ``threshold``.
        sensitive_features: ``(N,)`` group codes (``-1``: in no group) or values.
        group_names: names of codes ``0 .. G-1``.
        num_classes: ``K`` (default: largest label + 1, at least 2).
        threshold: binarise ``(N,)`` scores as ``score >= threshold`` (default ``None``: labels).
        n_bootstrap: bootstrap replicates (default 0), with ``confidence_level`` (0.95),
            ``stratified`` (``True``: within (group, label) strata) and ``seed`` (0).

    Returns:
        :class:`DisparityResult` ``"eom"``: ``by_class`` the class ratios, ``details["recall"]``
        the recall of each class in each group.

    Raises:
        ValueError: inconsistent lengths, empty input, invalid labels or codes.

    Warns:
        UndefinedGroupMetricWarning: a group without samples of a class (naming both).

    Example:
        >>> # group 0 recalls: class 0 1/2, class 1 2/2; group 1: class 0 2/2, class 1 1/2
        >>> r = compute_eom([0, 0, 1, 1, 0, 0, 1, 1], [0, 1, 1, 1, 0, 0, 1, 0],
        ...                 sensitive_features=[0, 0, 0, 0, 1, 1, 1, 1])
        >>> r.value  # mean(0.5 / 1, 0.5 / 1)
        0.5
    """
    settings = _check_settings(n_bootstrap, confidence_level, stratified, seed)
    cd = prepare_counts(y_true, y_pred, sensitive_features, group_names=group_names, num_classes=num_classes,
                        threshold=threshold)
    boot = bootstrap_counts(cd, n_bootstrap, seed, stratified) if settings else None
    return eom_result(count_cells(cd), cd, boot=boot, settings=settings)


def eom_result(counts: np.ndarray, cd: CountData, *, boot: np.ndarray | None = None,
               settings: dict | None = None) -> DisparityResult:
    """:class:`DisparityResult` of :func:`compute_eom` from counts ``(1, G + 1, K, K)`` (and replicates)."""
    value, ratio, rec = eom_values(counts[:, 1:])
    groups = cd.gi.groups
    _warn_class_terms("eom", "recall", np.isnan(rec[0]) & ~np.isnan(ratio[0])[None, :], groups,
                      "no samples of that class", "class's min and max")
    ci = None if boot is None else scalar_interval(eom_values(boot[:, 1:])[0], settings["confidence_level"])
    k = cd.num_classes
    return DisparityResult(
        name="eom",
        value=float(value[0]),
        by_class={c: float(ratio[0, c]) for c in range(k)},
        details={"recall": {g: [float(v) for v in rec[0, i]] for i, g in enumerate(groups)},
                 "left_out_classes": [c for c in range(k) if np.isnan(ratio[0, c])]},
        ci=ci,
        bootstrap=settings,
    )


def eodd_values(group_counts: np.ndarray, strategy: str, reference: int | None = None):
    """EOdd ``(b,)`` and per-class terms from counts ``(b, G, K, K)``.

    Returns ``(value (b,), terms, pair)``: for ``one_vs_rest`` the terms are ``(b, K)`` and
    ``pair`` is ``None``; for ``max_pair`` the terms are ``(b, G, G, K)`` for every pair and
    ``pair`` ``(b, 2)`` the indices of the pair with the largest value.
    """
    if strategy == "one_vs_rest":
        ref = group_counts[:, reference]
        rest = group_counts.sum(axis=1) - ref
        r_ref, r_rest = class_rates(ref), class_rates(rest)
        terms = np.abs((r_ref["tpr"] + r_ref["fpr"]) - (r_rest["tpr"] + r_rest["fpr"]))
        return _nan_sum(terms, axis=-1), terms, None
    r = class_rates(group_counts)
    s = r["tpr"] + r["fpr"]  # (b, G, K)
    terms = np.abs(s[:, :, None, :] - s[:, None, :, :])  # (b, G, G, K)
    totals = _nan_sum(terms, axis=-1)  # (b, G, G)
    g = totals.shape[1]
    upper = np.triu(np.ones((g, g), dtype=bool), k=1)
    flat = np.where(upper[None], totals, np.nan).reshape(totals.shape[0], -1)
    value = nan_max(flat, axis=-1)
    best = np.argmax(np.where(np.isnan(flat), -np.inf, flat), axis=-1)
    return value, terms, np.stack([best // g, best % g], axis=-1)


def compute_eodd(
    y_true,
    y_pred,
    *,
    sensitive_features,
    group_names: Sequence | None = None,
    strategy: str | None = None,
    reference_group=None,
    num_classes: int | None = None,
    threshold: float | None = None,
    n_bootstrap: int = 0,
    confidence_level: float = 0.95,
    stratified: bool = True,
    seed: int | None = 0,
) -> DisparityResult:
    """EOdd as FaMI / XTranPrune report it: summed one-vs-rest equalized-odds gaps of two groups.

    For two groups :math:`a_1, a_0`:

    .. math::
        \\mathrm{EOdd} = \\sum_{c} \\left| \\mathrm{TPR}_c(a_1) - \\mathrm{TPR}_c(a_0)
            + \\mathrm{FPR}_c(a_1) - \\mathrm{FPR}_c(a_0) \\right|

    Note the signed sum inside the absolute value (not :math:`|\\Delta\\mathrm{TPR}| +
    |\\Delta\\mathrm{FPR}|`), and the sum over all classes: a binary task counts both classes, and
    since :math:`\\mathrm{TPR}_0 = 1 - \\mathrm{FPR}_1`, :math:`\\mathrm{FPR}_0 = 1 - \\mathrm{TPR}_1`,
    binary EOdd is :math:`2 |\\Delta\\mathrm{TPR}_1 + \\Delta\\mathrm{FPR}_1|`; this is why the papers
    report values above 1. 0 is fairest. A class whose TPR or FPR is undefined in a compared group is
    left out of the sum with a warning (XTranPrune skips NaN terms).

    More than two groups (e.g. race with three): the papers compare two. Two generalisations:

    * ``"one_vs_rest"``: ``reference_group`` against all other groups pooled, as XTranPrune
      binarises Harvard-GF race as Black vs non-Black;
    * ``"max_pair"``: the largest EOdd over all pairs of groups (the pair is reported).

    With two groups both give the paper's value. ``strategy=None`` picks ``"one_vs_rest"`` when
    ``reference_group`` is given, else ``"max_pair"``; the result's ``strategy`` says which ran.

    Args:
        y_true: ``(N,)`` class labels (or ``(N, K)`` one-hot).
        y_pred: ``(N,)`` labels, ``(N, K)`` scores (argmax), or ``(N,)`` scores with ``threshold``.
        sensitive_features: ``(N,)`` group codes (``-1``: in no group) or values.
        group_names: names of codes ``0 .. G-1``.
        strategy: ``None`` (default), ``"max_pair"`` or ``"one_vs_rest"``.
        reference_group: the group label (a name from ``group_names``, else the code or value)
            compared with the rest; only for ``"one_vs_rest"``.
        num_classes: ``K`` (default: largest label + 1, at least 2).
        threshold: binarise ``(N,)`` scores as ``score >= threshold`` (default ``None``: labels).
        n_bootstrap, confidence_level, stratified, seed: bootstrap interval (default none); the
            ``max_pair`` interval takes the maximum over pairs on each replicate.

    Returns:
        :class:`DisparityResult` ``"eodd"``: ``strategy``; ``by_class`` the class terms of the
        compared pair; ``details["groups_compared"]`` the two sides (``(reference, "rest")`` for
        ``one_vs_rest``) and ``details["reference_group"]``.

    Raises:
        ValueError: unknown ``strategy`` (naming the allowed ones), ``one_vs_rest`` without
            ``reference_group``, ``reference_group`` with ``max_pair``, an unknown reference group,
            inconsistent lengths, empty input, invalid labels or codes.

    Warns:
        UndefinedGroupMetricWarning: a class term left out; fewer than two groups with samples
        (value NaN).

    Example:
        >>> # g1: TPR_1 = 1, FPR_1 = 1/2; g0: TPR_1 = 1/2, FPR_1 = 0. Class 1 term |1/2 + 1/2| = 1,
        >>> # class 0 term |(1/2 - 1) + (0 - 1/2)| = 1
        >>> r = compute_eodd([1, 1, 0, 0, 1, 1, 0, 0], [1, 0, 0, 0, 1, 1, 1, 0],
        ...                  sensitive_features=[0, 0, 0, 0, 1, 1, 1, 1])
        >>> r.value, r.strategy
        (2.0, 'max_pair')
    """
    strategy = resolve_eodd_strategy(strategy, reference_group)
    settings = _check_settings(n_bootstrap, confidence_level, stratified, seed)
    cd = prepare_counts(y_true, y_pred, sensitive_features, group_names=group_names, num_classes=num_classes,
                        threshold=threshold)
    ref = resolve_reference(strategy, reference_group, cd.gi.groups)
    boot = bootstrap_counts(cd, n_bootstrap, seed, stratified) if settings else None
    return eodd_result(count_cells(cd), cd, strategy, ref, boot=boot, settings=settings)


def resolve_eodd_strategy(strategy: str | None, reference_group) -> str:
    """Check ``strategy`` and resolve ``None`` (``one_vs_rest`` with a reference group, else ``max_pair``)."""
    if strategy is not None:
        check_option(strategy, EODD_STRATEGIES, "strategy")
    strategy = strategy or ("one_vs_rest" if reference_group is not None else "max_pair")
    if strategy == "max_pair" and reference_group is not None:
        raise ValueError(REFERENCE_UNUSED_MSG.format(strategy=strategy))
    return strategy


def resolve_reference(strategy: str, reference_group, groups: tuple) -> int | None:
    """Index of the reference group for ``one_vs_rest`` (``None`` for ``max_pair``)."""
    if strategy == "one_vs_rest" and reference_group is None:
        raise ValueError(REFERENCE_REQUIRED_MSG.format(groups=list(groups)))
    return None if reference_group is None else resolve_group(reference_group, groups, "reference_group")


def eodd_result(counts: np.ndarray, cd: CountData, strategy: str, ref: int | None, *,
                boot: np.ndarray | None = None, settings: dict | None = None) -> DisparityResult:
    """:class:`DisparityResult` of :func:`compute_eodd` from counts ``(1, G + 1, K, K)`` (and replicates)."""
    groups = cd.gi.groups
    counts = counts[:, 1:]
    k = cd.num_classes
    sizes = cd.gi.sizes()
    populated = [g for g, n in zip(groups, sizes) if n > 0]
    if len(populated) < 2 or (ref is not None and (sizes[ref] == 0 or sizes.sum() == sizes[ref])):
        warnings.warn(FEW_GROUPS_MSG.format(metric="eodd", groups=populated), UndefinedGroupMetricWarning,
                      stacklevel=3)
        return DisparityResult(name="eodd", value=float("nan"), strategy=strategy,
                               by_class={c: float("nan") for c in range(k)},
                               details={"groups_compared": None,
                                        "reference_group": None if ref is None else groups[ref]},
                               bootstrap=settings,
                               ci=(float("nan"), float("nan")) if settings else None)
    value, terms, pair = eodd_values(counts, strategy, ref)
    r = class_rates(counts[0])
    bad = np.isnan(r["tpr"]) | np.isnan(r["fpr"])  # (G, K)
    reason = "no samples of that class, or only that class"
    if strategy == "one_vs_rest":
        compared = (groups[ref], "rest")
        by_class = terms[0]
        rest = class_rates(counts[0].sum(axis=0) - counts[0, ref])
        bad_rest = np.isnan(rest["tpr"]) | np.isnan(rest["fpr"])
        _warn_class_terms("eodd", "TPR or FPR", np.stack([bad[ref], bad_rest]), [groups[ref], "rest"], reason,
                          "sum")
    else:
        i, j = int(pair[0, 0]), int(pair[0, 1])
        compared = (groups[i], groups[j])
        by_class = terms[0, i, j]
        _warn_class_terms("eodd", "TPR or FPR", bad & (sizes > 0)[:, None], groups, reason,
                          "sum for pairs with that group")
    ci = None
    if boot is not None:
        ci = scalar_interval(eodd_values(boot[:, 1:], strategy, ref)[0], settings["confidence_level"])
    return DisparityResult(
        name="eodd",
        value=float(value[0]),
        strategy=strategy,
        by_class={c: float(by_class[c]) for c in range(k)},
        details={"groups_compared": compared, "reference_group": None if ref is None else groups[ref]},
        ci=ci,
        bootstrap=settings,
    )


def _group_miou(counts: np.ndarray, absent_class: str) -> np.ndarray:
    """Mean class IoU ``(...,)`` of confusion matrices ``(..., K, K)``; NaN for a matrix without samples.

    ``absent_class="zero"``: a class absent from labels and predictions (union 0) scores 0 and the
    mean is over all ``K`` classes; ``"leave_out"``: such a class is left out of the mean.
    """
    iou = class_rates(counts)["iou"]  # NaN where the class's union is 0
    if absent_class == "zero":
        iou = np.where(np.isnan(iou), 0.0, iou)
    miou = _nan_mean(iou, axis=-1)
    return np.where(counts.sum(axis=(-2, -1)) > 0, miou, np.nan)


def sigma_iou_values(overall_counts: np.ndarray, group_counts: np.ndarray, ddof: int = SIGMA_IOU_DDOF,
                     absent_class: str = SIGMA_IOU_ABSENT_CLASS):
    """``(sigma (b,), group mIoU (b, G), overall mIoU (b,))`` from counts ``(b, K, K)`` / ``(b, G, K, K)``.

    Groups without samples (NaN mIoU) are left out of the deviation; with fewer than ``ddof + 1``
    groups left, sigma is NaN.
    """
    iou_g = _group_miou(group_counts, absent_class)
    iou_all = _group_miou(overall_counts, absent_class)
    ok = ~np.isnan(iou_g)
    n = ok.sum(axis=-1)
    mean = safe_divide(np.where(ok, iou_g, 0.0).sum(axis=-1), n)
    ss = np.where(ok, (iou_g - mean[:, None]) ** 2, 0.0).sum(axis=-1)
    return np.sqrt(safe_divide(ss, np.where(n - ddof > 0, n - ddof, 0))), iou_g, iou_all


def compute_sigma_iou(
    y_true,
    y_pred,
    *,
    sensitive_features,
    group_names: Sequence | None = None,
    num_classes: int | None = None,
    threshold: float | None = None,
    ddof: int = SIGMA_IOU_DDOF,
    absent_class: str = SIGMA_IOU_ABSENT_CLASS,
    n_bootstrap: int = 0,
    confidence_level: float = 0.95,
    stratified: bool = True,
    seed: int | None = 0,
) -> DisparityResult:
    """sigma_IoU (Hänel et al. 2022): the standard deviation over groups of each group's mean class IoU.

    Per group :math:`a` with confusion matrix :math:`C_a` (rows: label, columns: prediction) and
    class :math:`c`:

    .. math::
        \\mathrm{IoU}_c(a) = \\frac{C_a[c, c]}{\\sum_k C_a[c, k] + \\sum_j C_a[j, c] - C_a[c, c]},
        \\qquad
        \\mathrm{IoU}(a) = \\frac{1}{K} \\sum_{c=1}^{K} \\mathrm{IoU}_c(a),

    .. math::
        \\sigma_{\\mathrm{IoU}} = \\sqrt{\\frac{1}{G - \\mathrm{ddof}} \\sum_{a=1}^{G}
            \\left(\\mathrm{IoU}(a) - \\overline{\\mathrm{IoU}}\\right)^2},
        \\qquad \\overline{\\mathrm{IoU}} = \\frac{1}{G} \\sum_a \\mathrm{IoU}(a),

    over the :math:`G` groups with samples. Lower is fairer. A class absent from both the labels and
    the predictions of a group has union 0, so :math:`\\mathrm{IoU}_c(a)` is 0/0; ``absent_class``
    says what it becomes.

    **Defaults: the authors' value.** The paper (ACCV 2022) reports sigma_IoU without stating these
    two choices; its code (github.com/nish03/FVAP, ``src/hyperopt.py``) computes one
    ``torchmetrics.JaccardIndex(num_classes=K)`` per group from the argmax predictions and takes
    ``tensor(ious).std()``. With the pinned ``torchmetrics==0.9.1`` that is:

    * ``ddof=1`` (default): ``torch.std`` is Bessel-corrected (divides by :math:`G - 1`);
      ``ddof=0`` gives the population deviation (divides by :math:`G`; this package's earlier
      default);
    * ``absent_class="zero"`` (default): ``JaccardIndex`` (``average="macro"``, ``absent_score=0.0``
      in 0.9.1) scores an absent class 0 and still averages over all :math:`K` classes, which
      pulls down the IoU of a small group missing a class. ``absent_class="leave_out"`` leaves the
      class out of that group's mean (:math:`\\frac{1}{|\\mathcal C_a|}\\sum_{c \\in \\mathcal C_a}`,
      :math:`\\mathcal C_a` the classes in the group's labels or predictions), as
      ``sklearn.metrics.jaccard_score(average="macro")`` without ``labels`` and torchmetrics >= 1.0
      (which gives absent classes weight 0 in the macro mean, whatever ``zero_division``) do
      (this package's earlier default).

    One deviation from the authors' code: a group with no samples at all is left out of the
    deviation (with a warning), where their per-group ``JaccardIndex`` is never updated and
    scores 0.

    Args:
        y_true: ``(N,)`` class labels (or ``(N, K)`` one-hot).
        y_pred: ``(N,)`` labels, ``(N, K)`` scores (argmax), or ``(N,)`` scores with ``threshold``.
        sensitive_features: ``(N,)`` group codes (``-1``: in no group) or values.
        group_names: names of codes ``0 .. G-1``.
        num_classes: ``K`` (default: largest label + 1, at least 2).
        threshold: binarise ``(N,)`` scores as ``score >= threshold`` (default ``None``: labels).
        ddof: ``1`` (sample deviation, the paper's; default) or ``0`` (population).
        absent_class: ``"zero"`` (the paper's; default) or ``"leave_out"``.
        n_bootstrap, confidence_level, stratified, seed: bootstrap interval (default none).

    Returns:
        :class:`DisparityResult` ``"sigma_iou"``: ``by_group`` each group's IoU,
        ``details["overall_iou"]`` the IoU on all samples (same ``absent_class`` rule),
        ``details["ddof"]`` and ``details["absent_class"]``.

    Raises:
        ValueError: ``ddof`` not 0 or 1, ``absent_class`` not ``"zero"`` or ``"leave_out"`` (both
            naming the allowed values), inconsistent lengths, empty input, invalid labels or codes.

    Warns:
        UndefinedGroupMetricWarning: a group without samples (left out of the deviation); fewer
        than two groups with samples when ``ddof=1`` (the value is NaN).

    Example:
        >>> # K = 3. Group 0: y = 0 1, p = 0 0: IoU_0 = 1 / (1 + 2 - 1) = 1/2, IoU_1 = 0, class 2 absent.
        >>> # Group 1: y = 0 1, p = 0 1: IoU_0 = IoU_1 = 1, class 2 absent. Labels 2 only in group 2:
        >>> # y = 2 2, p = 2 2: IoU_2 = 1, classes 0 and 1 absent.
        >>> y, p, g = [0, 1, 0, 1, 2, 2], [0, 0, 0, 1, 2, 2], [0, 0, 1, 1, 2, 2]
        >>> r = compute_sigma_iou(y, p, sensitive_features=g)  # group IoUs 1/6, 2/3, 1/3
        >>> round(r.value, 6)  # sample std of (1/6, 2/3, 1/3) = sqrt(21) / 18
        0.254588
        >>> r = compute_sigma_iou(y, p, sensitive_features=g, ddof=0, absent_class="leave_out")
        >>> round(r.value, 6)  # population std of (1/4, 1, 1) = sqrt(1/8)
        0.353553
    """
    ddof = check_ddof(ddof)
    absent_class = check_absent_class(absent_class)
    settings = _check_settings(n_bootstrap, confidence_level, stratified, seed)
    cd = prepare_counts(y_true, y_pred, sensitive_features, group_names=group_names, num_classes=num_classes,
                        threshold=threshold)
    boot = bootstrap_counts(cd, n_bootstrap, seed, stratified) if settings else None
    return sigma_iou_result(count_cells(cd), cd, ddof, absent_class=absent_class, boot=boot, settings=settings)


def check_ddof(ddof) -> int:
    """``ddof`` if it is 0 or 1, else ``ValueError`` naming the allowed values."""
    if isinstance(ddof, bool) or ddof not in (0, 1):
        raise ValueError(BAD_DDOF_MSG.format(value=ddof))
    return int(ddof)


def check_absent_class(absent_class) -> str:
    """``absent_class`` if it is one of :data:`SIGMA_IOU_ABSENT_CLASS_OPTIONS`, else ``ValueError`` naming them."""
    return check_option(absent_class, SIGMA_IOU_ABSENT_CLASS_OPTIONS, "absent_class")


def sigma_iou_result(counts: np.ndarray, cd: CountData, ddof: int = SIGMA_IOU_DDOF, *,
                     absent_class: str = SIGMA_IOU_ABSENT_CLASS, boot: np.ndarray | None = None,
                     settings: dict | None = None) -> DisparityResult:
    """:class:`DisparityResult` of :func:`compute_sigma_iou` from counts ``(1, G + 1, K, K)`` (and replicates)."""
    ddof = check_ddof(ddof)
    absent_class = check_absent_class(absent_class)
    sigma, iou_g, iou_all = sigma_iou_values(counts.sum(axis=1), counts[:, 1:], ddof, absent_class)
    groups = cd.gi.groups
    empty = [g for g, v in zip(groups, iou_g[0]) if np.isnan(v)]
    warn_undefined("sigma_iou", empty, "no samples; left out of the deviation", stacklevel=3)
    populated = [g for g, v in zip(groups, iou_g[0]) if not np.isnan(v)]
    if len(populated) < 2 and ddof == 1:
        warnings.warn(FEW_GROUPS_MSG.format(metric="sigma_iou (ddof=1)", groups=populated),
                      UndefinedGroupMetricWarning, stacklevel=3)
    ci = None
    if boot is not None:
        ci = scalar_interval(sigma_iou_values(boot.sum(axis=1), boot[:, 1:], ddof, absent_class)[0],
                             settings["confidence_level"])
    return DisparityResult(
        name="sigma_iou",
        value=float(sigma[0]),
        by_group={g: float(v) for g, v in zip(groups, iou_g[0])},
        details={"overall_iou": float(iou_all[0]), "ddof": ddof, "absent_class": absent_class},
        ci=ci,
        bootstrap=settings,
    )
