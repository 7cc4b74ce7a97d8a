"""Classification fairness summary: every group metric of one evaluation in one result object.

:func:`classification_fairness_summary` takes labels, scores and group codes and returns a
:class:`FairnessSummary` with, for a binary task,

* ``metrics`` (:class:`GroupMetricResult`, overall / by group / difference / ratio): ``auc``,
  ``tpr``, ``fpr``, ``selection_rate``, ``accuracy``;
* ``disparities`` (:class:`DisparityResult`): ``dp_difference``, ``dp_ratio`` (demographic parity),
  ``eo_difference``, ``eo_ratio`` (equalized odds, fairlearn's definitions), ``es_auc``
  (Harvard-GF), ``eom``, ``eodd`` (FaMI / XTranPrune) and ``sigma_iou``;

and for a multi-class task (scores ``(N, K)``, ``K > 2``) ``accuracy`` and ``eom``, ``eodd``,
``sigma_iou``. With ``n_bootstrap > 0`` every value gets a percentile interval, all from the same
replicates (so e.g. ES-AUC's interval is of the ratio, not of its parts). ``to_dict`` gives plain
Python values for the report writers; ``scalars`` the flat ``{name: float}`` an ignite engine logs.

:class:`ClassificationFairnessMetric` is the cumulative (MONAI ``CumulativeIterationMetric``)
form: it buffers per-sample ``(score, label, group)``, gathers the buffers across ranks
(``evenly_divisible_all_gather``) and only then computes the summary, so a distributed
evaluation gives exactly the single-process values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric

from ._auc import AUC_UNDEFINED_REASON, auc_values, bootstrap_auc_values, es_auc_result, prepare_auc
from ._fami_metrics import (
    SIGMA_IOU_ABSENT_CLASS,
    SIGMA_IOU_DDOF,
    check_absent_class,
    check_ddof,
    eodd_result,
    eom_result,
    resolve_eodd_strategy,
    resolve_reference,
    sigma_iou_result,
)
from ._group_bootstrap import bootstrap_index_chunks, check_bootstrap_args
from ..validation import EMPTY_INPUT_MSG, LENGTH_MISMATCH_MSG, check_lengths, check_option
from ._group_inputs import AGGS, METHODS, as_binary_scores, to_numpy
from ._group_rates import binary_rates, count_cells, prepare_counts, rate_results
from ._group_results import (
    DisparityResult,
    GroupMetricResult,
    bootstrap_settings,
    difference_and_ratio,
    make_group_result,
    safe_divide,
    scalar_interval,
    to_plain,
)

__all__ = [
    "SENSITIVE_CODES_MSG",
    "FairnessSummary",
    "classification_fairness_summary",
    "ClassificationFairnessMetric",
    "rate_results_multiclass",
]

SENSITIVE_CODES_MSG = (
    "sensitive must hold integer group codes (-1 for a sample in no group), e.g. the manifest's "
    "'<attribute>_code' key; got {value}"
)


@dataclass(frozen=True)
class FairnessSummary:
    """All group metrics of one evaluation.

    Attributes:
        task: ``"binary"`` or ``"multiclass"``.
        groups: the group labels, in code order.
        group_sizes: ``{group: samples}``.
        n_samples: all samples (those in no group included).
        n_excluded: samples with group code ``-1`` (in the overall values only).
        metrics: ``{name: GroupMetricResult}``.
        disparities: ``{name: DisparityResult}``.
        settings: the arguments the summary was computed with.
    """

    task: str
    groups: tuple
    group_sizes: dict
    n_samples: int
    n_excluded: int
    metrics: dict
    disparities: dict
    settings: dict

    def scalars(self) -> dict[str, float]:
        """Flat ``{name: float}``: each metric's overall value (``auc``), ``<metric>_difference``,
        ``<metric>_ratio``, and each disparity's value (``eodd``, ``es_auc``, ...)."""
        out: dict[str, float] = {}
        for name, m in self.metrics.items():
            out[name] = m.overall
            out[f"{name}_difference"] = m.difference
            out[f"{name}_ratio"] = m.ratio
        for name, d in self.disparities.items():
            out[name] = d.value
        return out

    def to_dict(self) -> dict:
        """Plain-dict form (NaN as ``None``, keys as strings) for JSON / CSV / Markdown reports."""
        return to_plain({
            "task": self.task,
            "groups": list(self.groups),
            "group_sizes": self.group_sizes,
            "n_samples": self.n_samples,
            "n_excluded": self.n_excluded,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "disparities": {k: v.to_dict() for k, v in self.disparities.items()},
            "settings": self.settings,
        })


def _from_group_result(name: str, src: GroupMetricResult, field: str, boot_values: np.ndarray | None,
                       settings: dict | None) -> DisparityResult:
    """A disparity that is one field (difference or ratio) of a :class:`GroupMetricResult`."""
    ci = None if boot_values is None else scalar_interval(boot_values, settings["confidence_level"])
    return DisparityResult(name=name, value=getattr(src, field), by_group=dict(src.by_group),
                           details={"metric": src.name, "method": src.method}, ci=ci, bootstrap=settings)


def _agg(values: np.ndarray, agg: str, worst) -> np.ndarray:
    """Aggregate ``(b, 2)`` (TPR, FPR) values by ``agg``, leaving NaN out."""
    ok = ~np.isnan(values)
    if agg == "worst_case":
        fill = -np.inf if worst is np.max else np.inf
        out = worst(np.where(ok, values, fill), axis=1)
    else:
        out = np.where(ok, values, 0.0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)
    return np.where(ok.any(axis=1), out, np.nan)


def classification_fairness_summary(
    y_true,
    y_score,
    *,
    sensitive_features,
    group_names: Sequence | None = None,
    threshold: float = 0.5,
    method: str = "between_groups",
    agg: str = "worst_case",
    eodd_strategy: str | None = None,
    reference_group=None,
    num_classes: int | None = None,
    sigma_ddof: int = SIGMA_IOU_DDOF,
    sigma_absent_class: str = SIGMA_IOU_ABSENT_CLASS,
    n_bootstrap: int = 0,
    confidence_level: float = 0.95,
    stratified: bool = True,
    seed: int | None = 0,
) -> FairnessSummary:
    """Group fairness of a classifier's scores: AUC, rates, parity gaps, ES-AUC, EOM, EOdd, sigma_IoU.

    Binary task (``y_score`` ``(N,)``, ``(N, 1)`` or ``(N, 2)``, probabilities of the positive
    class in the last column): predictions are :math:`\\hat y = [s \\ge t]` with ``threshold``
    :math:`t`; AUC uses the scores. Multi-class (``(N, K)``, ``K > 2``): :math:`\\hat y =
    \\arg\\max_k s_k`, and the binary-only metrics (AUC, TPR, FPR, selection rate, parity gaps,
    ES-AUC) are left out. Definitions: :func:`group_rates`, :func:`demographic_parity_difference`,
    :func:`equalized_odds_difference`, :func:`roc_auc_by_group`, :func:`equity_scaled_auc`,
    :func:`compute_eom`, :func:`compute_eodd`, :func:`compute_sigma_iou`; each value here equals
    what that function returns on the same arrays.

    Args:
        y_true: ``(N,)`` class labels (or ``(N, K)`` one-hot). Tensor or array.
        y_score: ``(N,)`` positive-class probabilities, ``(N, 2)`` two-class or ``(N, K)``
            multi-class probabilities (pass probabilities, not logits: ``threshold`` applies to them).
        sensitive_features: ``(N,)`` group codes (``-1``: in the overall values, in no group) or
            group values.
        group_names: names of codes ``0 .. G-1`` (default: the codes present).
        threshold: decision threshold of a binary task (default 0.5).
        method: ``"between_groups"`` (default) or ``"to_overall"``: how differences and ratios
            compare groups.
        agg: ``"worst_case"`` (default) or ``"mean"``: how ``eo_difference`` / ``eo_ratio``
            combine the TPR and FPR gaps.
        eodd_strategy: ``None``, ``"max_pair"`` or ``"one_vs_rest"`` (see :func:`compute_eodd`).
        reference_group: reference group of ``"one_vs_rest"``.
        num_classes: ``K`` of a multi-class task (default: from ``y_score``).
        sigma_ddof: 1 (sample, default: the paper's) or 0 (population) standard deviation for ``sigma_iou``.
        sigma_absent_class: ``"zero"`` (default: the paper's) or ``"leave_out"``: the IoU of a class absent
            from a group's labels and predictions (see :func:`compute_sigma_iou`).
        n_bootstrap: bootstrap replicates (default 0: no intervals).
        confidence_level: interval level (default 0.95).
        stratified: resample within (group, label) strata (default ``True``).
        seed: bootstrap seed (default 0).

    Returns:
        :class:`FairnessSummary`.

    Raises:
        ValueError: an unknown ``method`` / ``agg`` / ``eodd_strategy`` (naming the allowed
            values), inconsistent lengths (naming both), empty input, invalid labels or codes.

    Warns:
        UndefinedGroupMetricWarning: for each value undefined for a group, naming the group.

    Example:
        >>> s = classification_fairness_summary([0, 1, 0, 1], [0.2, 0.9, 0.6, 0.4], sensitive_features=[0, 0, 1, 1])
        >>> s.metrics["auc"].by_group, s.disparities["dp_difference"].value
        ({0: 1.0, 1: 0.0}, 0.0)
    """
    check_option(method, METHODS, "method")
    check_option(agg, AGGS, "agg")
    eodd_strategy = resolve_eodd_strategy(eodd_strategy, reference_group)
    sigma_ddof = check_ddof(sigma_ddof)
    sigma_absent_class = check_absent_class(sigma_absent_class)
    check_bootstrap_args(n_bootstrap, confidence_level)
    yt = to_numpy(y_true, "y_true")
    ys = to_numpy(y_score, "y_score")
    g = to_numpy(sensitive_features, "sensitive_features")
    n = check_lengths(y_true=yt, y_score=ys, sensitive_features=g)
    binary = ys.ndim == 1 or (ys.ndim == 2 and ys.shape[1] <= 2)
    if binary:
        ys = as_binary_scores(ys, "y_score")
        y_pred = (ys >= threshold).astype(np.int64)
        cd = prepare_counts(yt, y_pred, g, group_names=group_names, binary_metric="a binary summary")
        ad = prepare_auc(cd.y_true, ys, g, group_names=group_names)
    else:
        y_pred = np.argmax(ys, axis=1)
        cd = prepare_counts(yt, y_pred, g, group_names=group_names,
                            num_classes=num_classes if num_classes is not None else ys.shape[1])
        ad = None
    ref = resolve_reference(eodd_strategy, reference_group, cd.gi.groups)
    settings = bootstrap_settings(n_bootstrap, confidence_level, stratified, seed) if n_bootstrap else None

    counts = count_cells(cd)
    boot_counts = boot_auc = None
    if n_bootstrap:
        strata = cd.strata() if stratified else None
        parts_c, parts_a = [], []
        for idx in bootstrap_index_chunks(strata, n, n_bootstrap, seed):
            parts_c.append(count_cells(cd, idx))
            if ad is not None:
                parts_a.append(bootstrap_auc_values(idx, ad))
        boot_counts = np.concatenate(parts_c)
        if ad is not None:
            boot_auc = (np.concatenate([p[0] for p in parts_a]), np.concatenate([p[1] for p in parts_a]))

    metrics: dict[str, GroupMetricResult] = {}
    disparities: dict[str, DisparityResult] = {}
    if binary:
        ov, bg = auc_values(ad)
        metrics["auc"] = make_group_result("auc", ov, bg, method, cd.gi, AUC_UNDEFINED_REASON, boot=boot_auc,
                                           settings=settings)
        metrics.update(rate_results(counts, cd.gi, ("tpr", "fpr", "selection_rate", "accuracy"), method,
                                    boot_counts=boot_counts, settings=settings))
        boot_dr = {}
        if boot_counts is not None:
            for name in ("tpr", "fpr", "selection_rate"):
                boot_dr[name] = difference_and_ratio(binary_rates(boot_counts.sum(axis=1), name),
                                                     binary_rates(boot_counts[:, 1:], name), method)
        sel = metrics["selection_rate"]
        disparities["dp_difference"] = _from_group_result("dp_difference", sel, "difference",
                                                          boot_dr["selection_rate"][0] if boot_dr else None, settings)
        disparities["dp_ratio"] = _from_group_result("dp_ratio", sel, "ratio",
                                                     boot_dr["selection_rate"][1] if boot_dr else None, settings)
        for name, field, worst, pos in (("eo_difference", "difference", np.max, 0), ("eo_ratio", "ratio", np.min, 1)):
            point = np.array([[getattr(metrics["tpr"], field), getattr(metrics["fpr"], field)]])
            ci = None
            if boot_dr:
                both = np.stack([boot_dr["tpr"][pos], boot_dr["fpr"][pos]], axis=1)
                ci = scalar_interval(_agg(both, agg, worst), confidence_level)
            disparities[name] = DisparityResult(
                name=name, value=float(_agg(point, agg, worst)[0]),
                details={"tpr": float(point[0, 0]), "fpr": float(point[0, 1]), "agg": agg, "method": method},
                ci=ci, bootstrap=settings)
        disparities["es_auc"] = es_auc_result(ov, bg, cd.gi, boot_auc, settings)
    else:
        metrics.update(rate_results_multiclass(counts, cd, method, boot_counts, settings))
    disparities["eom"] = eom_result(counts, cd, boot=boot_counts, settings=settings)
    disparities["eodd"] = eodd_result(counts, cd, eodd_strategy, ref, boot=boot_counts, settings=settings)
    disparities["sigma_iou"] = sigma_iou_result(counts, cd, sigma_ddof, absent_class=sigma_absent_class,
                                                boot=boot_counts, settings=settings)

    sizes = cd.gi.sizes()
    return FairnessSummary(
        task="binary" if binary else "multiclass",
        groups=cd.gi.groups,
        group_sizes={gr: int(s) for gr, s in zip(cd.gi.groups, sizes)},
        n_samples=int(n),
        n_excluded=cd.gi.n_excluded,
        metrics=metrics,
        disparities=disparities,
        settings={"threshold": threshold if binary else None, "method": method, "agg": agg,
                  "eodd_strategy": eodd_strategy, "reference_group": reference_group,
                  "num_classes": cd.num_classes, "sigma_ddof": sigma_ddof,
                  "sigma_absent_class": sigma_absent_class, "bootstrap": settings},
    )


def rate_results_multiclass(counts, cd, method, boot_counts, settings) -> dict[str, GroupMetricResult]:
    """``accuracy`` by group of a multi-class task from counts ``(1, G + 1, K, K)``."""

    def acc(c):
        return safe_divide(np.trace(c, axis1=-2, axis2=-1), c.sum(axis=(-2, -1)))

    boot = None
    if boot_counts is not None:
        boot = (acc(boot_counts.sum(axis=1)), acc(boot_counts[:, 1:]))
    return {"accuracy": make_group_result("accuracy", acc(counts.sum(axis=1)), acc(counts[:, 1:]), method, cd.gi,
                                          "no samples", boot=boot, settings=settings)}


def _batch_first(x, name: str) -> torch.Tensor:
    """A batch-first tensor from a tensor, array, or list of per-sample tensors / numbers."""
    if isinstance(x, torch.Tensor):
        return x.as_tensor().detach() if hasattr(x, "as_tensor") else x.detach()  # MetaTensor -> Tensor
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return torch.stack([v.as_tensor().detach() if hasattr(v, "as_tensor") else v.detach() for v in x])
    return torch.as_tensor(np.asarray(x))


class ClassificationFairnessMetric(CumulativeIterationMetric):
    """Cumulative classification fairness: buffer ``(score, label, group)`` per sample, summarise at the end.

    Call it once per batch as ``metric(y_pred, y, sensitive=groups)``; ``aggregate()`` gathers the
    buffers of all ranks (MONAI's ``Cumulative`` uses ``evenly_divisible_all_gather``) and returns
    :func:`classification_fairness_summary` of the gathered samples.

    Args:
        group_names, threshold, method, agg, eodd_strategy, reference_group, num_classes,
        sigma_ddof, sigma_absent_class, n_bootstrap, confidence_level, stratified, seed: passed to
        :func:`classification_fairness_summary` (same defaults).

    Raises:
        ValueError: an unknown option (at construction); a batch whose items differ in length.

    Example:
        >>> m = ClassificationFairnessMetric()
        >>> _ = m(torch.tensor([0.2, 0.9]), torch.tensor([0, 1]), sensitive=torch.tensor([0, 0]))
        >>> _ = m(torch.tensor([0.6, 0.4]), torch.tensor([0, 1]), sensitive=torch.tensor([1, 1]))
        >>> m.aggregate().metrics["auc"].overall
        0.75
    """

    def __init__(
        self,
        *,
        group_names: Sequence | None = None,
        threshold: float = 0.5,
        method: str = "between_groups",
        agg: str = "worst_case",
        eodd_strategy: str | None = None,
        reference_group=None,
        num_classes: int | None = None,
        sigma_ddof: int = SIGMA_IOU_DDOF,
        sigma_absent_class: str = SIGMA_IOU_ABSENT_CLASS,
        n_bootstrap: int = 0,
        confidence_level: float = 0.95,
        stratified: bool = True,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        check_option(method, METHODS, "method")
        check_option(agg, AGGS, "agg")
        resolve_eodd_strategy(eodd_strategy, reference_group)
        check_ddof(sigma_ddof)
        check_absent_class(sigma_absent_class)
        check_bootstrap_args(n_bootstrap, confidence_level)
        self.summary_kwargs = dict(
            group_names=group_names, threshold=threshold, method=method, agg=agg, eodd_strategy=eodd_strategy,
            reference_group=reference_group, num_classes=num_classes, sigma_ddof=sigma_ddof,
            sigma_absent_class=sigma_absent_class,
            n_bootstrap=n_bootstrap, confidence_level=confidence_level, stratified=stratified, seed=seed,
        )

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs):  # type: ignore[override]
        return y_pred, y, kwargs["sensitive"]

    def __call__(self, y_pred, y=None, *, sensitive=None):  # type: ignore[override]
        """Buffer one batch.

        Args:
            y_pred: ``(B,)``, ``(B, 1)`` or ``(B, K)`` probabilities, or a list of per-sample tensors.
            y: ``(B,)`` labels, ``(B, 1)``, or ``(B, K)`` one-hot; or a list of per-sample tensors.
            sensitive: ``(B,)`` integer group codes (``-1``: in no group), a tensor or sequence;
                codes, not names, because the buffers are gathered across ranks as tensors.

        Returns:
            ``(scores, labels, groups)`` as buffered.
        """
        if sensitive is None:
            raise ValueError("sensitive= is required: the group code of every sample")
        if y is None:
            raise ValueError("y is required: the label of every sample")
        scores = _batch_first(y_pred, "y_pred").to(torch.float64)
        labels = _batch_first(y, "y")
        try:
            groups = _batch_first(sensitive, "sensitive").reshape(-1).to(torch.int64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(SENSITIVE_CODES_MSG.format(value=repr(sensitive)[:80])) from None
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        elif labels.ndim == 2:
            labels = labels.argmax(dim=1)
        labels = labels.reshape(-1).to(torch.int64)
        if scores.ndim == 0:
            scores = scores.reshape(1)
        for name, t in (("y", labels), ("sensitive", groups)):
            if t.shape[0] != scores.shape[0]:
                raise ValueError(LENGTH_MISMATCH_MSG.format(first="y_pred", n_first=scores.shape[0], other=name,
                                                            n_other=t.shape[0]))
        self.extend(scores.cpu(), labels.cpu(), groups.cpu())
        return scores, labels, groups

    def aggregate(self) -> FairnessSummary:  # type: ignore[override]
        """Gather the buffers across ranks and return the :class:`FairnessSummary`.

        Raises:
            ValueError: nothing was buffered.
        """
        buffers = self.get_buffer()
        if buffers is None:
            raise ValueError(EMPTY_INPUT_MSG.format(name="the metric buffer"))
        scores, labels, groups = buffers
        return classification_fairness_summary(labels, scores, sensitive_features=groups, **self.summary_kwargs)
