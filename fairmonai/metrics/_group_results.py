"""Result objects of the group fairness metrics and the between-group aggregation they share.

:class:`GroupMetricResult` holds one metric disaggregated by group, with fairlearn's
``overall`` / ``by_group`` / ``difference`` / ``ratio`` (``fairlearn.metrics.MetricFrame``);
:class:`DisparityResult` holds one scalar fairness index (EOM, EOdd, ES-AUC, ...) with the details
needed to read it. Both turn into plain dicts (``to_dict``) for JSON/CSV reports.

Aggregation over groups (all functions take a leading replicate axis ``b``):

.. math::
    \\text{difference} = \\begin{cases} \\max_g m_g - \\min_g m_g & \\text{between\\_groups} \\\\
        \\max_g |m_g - m_{\\text{overall}}| & \\text{to\\_overall} \\end{cases}
    \\qquad
    \\text{ratio} = \\begin{cases} \\min_g m_g / \\max_g m_g & \\text{between\\_groups} \\\\
        \\min_g \\min(m_g / m_{\\text{overall}}, m_{\\text{overall}} / m_g) & \\text{to\\_overall} \\end{cases}

as ``MetricFrame.difference`` / ``MetricFrame.ratio`` (fairlearn 0.15). Undefined (NaN) group
values are left out. Where fairlearn divides 0 by 0 (every group rate 0) and returns NaN, the
ratio here is 1: the groups are equal.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ._group_bootstrap import BOOTSTRAP_UNDEFINED_MSG, percentile_interval
from ._group_inputs import METHODS, GroupIndex, UndefinedGroupMetricWarning, warn_undefined

__all__ = [
    "GroupMetricResult",
    "DisparityResult",
    "nan_max",
    "nan_min",
    "safe_divide",
    "difference_and_ratio",
    "to_plain",
    "bootstrap_settings",
    "make_group_result",
    "scalar_interval",
    "warn_bootstrap_undefined",
]


def safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float64, NaN where ``den == 0``, without a warning."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    shape = np.broadcast_shapes(num.shape, den.shape)
    out = np.full(shape, np.nan)
    np.divide(num, den, out=out, where=np.broadcast_to(den != 0, shape))
    return out


def nan_max(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Maximum over ``axis`` ignoring NaN; NaN where all are NaN (no warning)."""
    nan = np.isnan(x)
    out = np.where(nan, -np.inf, x).max(axis=axis)
    return np.where(nan.all(axis=axis), np.nan, out)


def nan_min(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Minimum over ``axis`` ignoring NaN; NaN where all are NaN (no warning)."""
    nan = np.isnan(x)
    out = np.where(nan, np.inf, x).min(axis=axis)
    return np.where(nan.all(axis=axis), np.nan, out)


def _min_over_max(mn: np.ndarray, mx: np.ndarray) -> np.ndarray:
    """``mn / mx`` for non-negative values, 1 where both are 0."""
    return np.where((mx == 0) & (mn == 0), 1.0, safe_divide(mn, mx))


def difference_and_ratio(overall: np.ndarray, by_group: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Difference and ratio of ``by_group`` ``(b, G)`` (and ``overall`` ``(b,)``) by ``method``.

    See the module docstring for the definitions. NaN group values are left out; a replicate
    with no defined group value gets NaN.
    """
    if method == METHODS[0]:
        mx, mn = nan_max(by_group), nan_min(by_group)
        return mx - mn, _min_over_max(mn, mx)
    ov = overall[:, None]
    diff = nan_max(np.abs(by_group - ov))
    r = np.where(ov == 0, np.where(by_group == 0, 1.0, np.inf), safe_divide(by_group, ov))
    r = np.where(r > 1, safe_divide(1.0, r), r)
    r = np.where(np.isnan(by_group), np.nan, r)
    return diff, nan_min(r)


def to_plain(x):
    """Recursively turn numpy scalars/arrays, tuples and dicts into JSON-ready Python values.

    NaN becomes ``None``; dict keys become strings.
    """
    if isinstance(x, Mapping):
        return {str(k): to_plain(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return to_plain(x.tolist())
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


@dataclass(frozen=True)
class GroupMetricResult:
    """One metric, overall and by group, with its between-group difference and ratio.

    Attributes:
        name: metric name (``"auc"``, ``"tpr"``, ``"fpr"``, ``"selection_rate"``, ...).
        overall: the metric on all samples, excluded-group samples (code ``-1``) included.
        by_group: ``{group: value}``; NaN where the metric is undefined for the group.
        difference: ``max - min`` over the defined groups (``between_groups``) or the largest
            ``|group - overall|`` (``to_overall``).
        ratio: ``min / max`` over the defined groups, or the smallest group-to-overall ratio
            taken below 1.
        method: ``"between_groups"`` or ``"to_overall"``.
        group_sizes: ``{group: number of samples}``.
        undefined_groups: the groups whose value is NaN (each was warned about).
        ci: ``None``, or the bootstrap percentile intervals ``{"overall": (lo, hi), "by_group":
            {group: (lo, hi)}, "difference": (lo, hi), "ratio": (lo, hi)}``.
        bootstrap: ``None``, or the settings the intervals came from (``n_bootstrap``,
            ``confidence_level``, ``stratified``, ``seed``).
    """

    name: str
    overall: float
    by_group: dict
    difference: float
    ratio: float
    method: str
    group_sizes: dict
    undefined_groups: tuple = ()
    ci: dict | None = None
    bootstrap: dict | None = None

    def to_dict(self) -> dict:
        """Plain-dict form (NaN as ``None``, keys as strings, tuples as lists)."""
        return to_plain({
            "name": self.name,
            "overall": self.overall,
            "by_group": self.by_group,
            "difference": self.difference,
            "ratio": self.ratio,
            "method": self.method,
            "group_sizes": self.group_sizes,
            "undefined_groups": list(self.undefined_groups),
            "ci": self.ci,
            "bootstrap": self.bootstrap,
        })


@dataclass(frozen=True)
class DisparityResult:
    """A scalar fairness index and what it was computed from.

    Attributes:
        name: index name (``"eom"``, ``"eodd"``, ``"es_auc"``, ``"sigma_iou"``,
            ``"dp_difference"``, ...).
        value: the index.
        strategy: how groups were compared where there is a choice (EOdd: ``"max_pair"`` or
            ``"one_vs_rest"``), else ``None``.
        by_group: per-group values the index summarises, where that applies.
        by_class: per-class terms, where the index is a sum or mean over classes.
        details: other facts needed to read the value (compared groups, ``ddof``, ...).
        ci: ``None`` or the bootstrap percentile interval ``(lo, hi)``.
        bootstrap: ``None`` or the bootstrap settings.
    """

    name: str
    value: float
    strategy: str | None = None
    by_group: dict | None = None
    by_class: dict | None = None
    details: dict = field(default_factory=dict)
    ci: tuple | None = None
    bootstrap: dict | None = None

    def to_dict(self) -> dict:
        """Plain-dict form (NaN as ``None``, keys as strings, tuples as lists)."""
        return to_plain({
            "name": self.name,
            "value": self.value,
            "strategy": self.strategy,
            "by_group": self.by_group,
            "by_class": self.by_class,
            "details": self.details,
            "ci": self.ci,
            "bootstrap": self.bootstrap,
        })


def bootstrap_settings(n_bootstrap: int, confidence_level: float, stratified: bool, seed) -> dict:
    """The settings recorded with bootstrap intervals."""
    return {"n_bootstrap": int(n_bootstrap), "confidence_level": float(confidence_level),
            "stratified": bool(stratified), "seed": seed}


def _interval(samples: np.ndarray, level: float) -> tuple:
    lo, hi = percentile_interval(samples, level)
    return float(lo), float(hi)


def warn_bootstrap_undefined(metric: str, samples: np.ndarray, labels, point: np.ndarray) -> None:
    """Warn for each column of ``samples`` ``(B, G)`` that is NaN on some replicates but not on the data."""
    n = samples.shape[0]
    for j, lab in enumerate(labels):
        k = int(np.count_nonzero(np.isnan(samples[:, j])))
        if k and not np.isnan(point[j]):
            warnings.warn(BOOTSTRAP_UNDEFINED_MSG.format(metric=metric, k=k, n=n, what=f"group {lab!r}"),
                          UndefinedGroupMetricWarning, stacklevel=4)


def make_group_result(
    name: str,
    overall: np.ndarray,
    by_group: np.ndarray,
    method: str,
    gi: GroupIndex,
    reason: str,
    *,
    boot: tuple[np.ndarray, np.ndarray] | None = None,
    settings: dict | None = None,
) -> GroupMetricResult:
    """Build a :class:`GroupMetricResult` from point values and optional bootstrap replicates.

    Args:
        name: metric name.
        overall: ``(1,)`` value on all samples.
        by_group: ``(1, G)`` per-group values, NaN where undefined.
        method: ``between_groups`` or ``to_overall``.
        gi: the group index (labels and sizes).
        reason: why a value can be undefined, for the warning (e.g. ``"no positive samples"``).
        boot: ``(overall (B,), by_group (B, G))`` replicates, or ``None``.
        settings: the bootstrap settings, recorded with the intervals.

    Warns:
        UndefinedGroupMetricWarning: naming each group (or ``"overall"``) whose value is NaN.
    """
    diff, ratio = difference_and_ratio(overall, by_group, method)
    bg = by_group[0]
    undefined = tuple(g for g, v in zip(gi.groups, bg) if np.isnan(v))
    warn_undefined(name, undefined, reason, stacklevel=4)
    if np.isnan(overall[0]):
        warn_undefined(name, ["overall"], reason, stacklevel=4)
    ci = None
    if boot is not None:
        ob, gb = boot
        db, rb = difference_and_ratio(ob, gb, method)
        warn_bootstrap_undefined(name, gb, gi.groups, bg)
        level = settings["confidence_level"]
        lo, hi = percentile_interval(gb, level)
        ci = {
            "overall": _interval(ob, level),
            "by_group": {g: (float(a), float(b)) for g, a, b in zip(gi.groups, lo, hi)},
            "difference": _interval(db, level),
            "ratio": _interval(rb, level),
        }
    sizes = gi.sizes()
    return GroupMetricResult(
        name=name,
        overall=float(overall[0]),
        by_group={g: float(v) for g, v in zip(gi.groups, bg)},
        difference=float(diff[0]),
        ratio=float(ratio[0]),
        method=method,
        group_sizes={g: int(s) for g, s in zip(gi.groups, sizes)},
        undefined_groups=undefined,
        ci=ci,
        bootstrap=settings if boot is not None else None,
    )


def scalar_interval(samples: np.ndarray, level: float) -> tuple:
    """``(lo, hi)`` percentile interval of a scalar statistic's replicates ``(B,)``."""
    return _interval(samples, level)
