"""Bootstrap percentile intervals of the MAMA-MIA challenge scores: group means, gaps, PS, FS, TS.

A replicate draws ``N`` cases with replacement from the ``N`` scored cases (each case carries its
DSC, its NormHD and its group in every variable together) and recomputes *everything* with
:func:`fairmonai.metrics._segmentation.challenge_scores`, the one definition of the scores: the group
means, each variable's gaps and disparity :math:`D_v`, and from them

.. math::

    PS^* = \\tfrac12(\\overline{DSC}^* + 1 - \\overline{NormHD}^*), \\quad
    FS^* = \\operatorname{mean}_v (1 - D_v^*), \\quad TS^* = w\\,PS^* + (1 - w)\\,FS^*.

So the interval of FS (a function of subgroup means, maxima and minima over groups) is that of the
whole statistic, not a combination of the intervals of its parts. The interval is the percentile
interval of the replicates (Efron and Tibshirani 1993, ch. 13), with the resampling indices of
:func:`fairmonai.metrics._group_bootstrap.bootstrap_index_chunks` and the percentiles of
:func:`~fairmonai.metrics._group_bootstrap.percentile_interval` (``numpy`` linear interpolation), as
the classification report's intervals.

Choices:

* **Unstratified by default** (``stratified=False``): cases are drawn from the whole set, so group
  sizes vary between replicates as they would between test sets, and the gaps' intervals include that
  variation. ``stratified=True`` resamples within each combination of all the variables' groups (the
  cases excluded from a variable forming their own combination), which keeps every group's size; a
  combination with one case then contributes no variance, so intervals are narrower.
* **A group with no case in a replicate** has no mean there: its mean's interval uses the other
  replicates (an :class:`~fairmonai.metrics._group_inputs.UndefinedGroupMetricWarning` gives the count),
  and that replicate's gaps are taken over the non-empty groups, as for the point estimate.
* **A variable left with fewer than two non-empty groups** in a replicate has :math:`D_v^* = 0` there,
  the challenge convention of the point estimate (a ``UserWarning`` gives the count). This pulls the
  interval of :math:`D_v` towards 0 when a group is very small.
* Gaps (max - min over groups) are biased upwards under resampling (noise only widens the spread of
  group means), so the interval of :math:`D_v` can lie above the point estimate rather than around it;
  read it as the sampling spread of the index, not as a test of :math:`D_v = 0`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..attribute_codes import EXCLUDED_CODE
from ._group_bootstrap import bootstrap_index_chunks, check_bootstrap_args, percentile_interval
from ._group_results import bootstrap_settings, warn_bootstrap_undefined
from ._segmentation import challenge_scores

__all__ = ["SCALAR_SCORES", "VARIABLE_SCORES", "FEW_GROUPS_REPLICATES_MSG", "bootstrap_challenge_scores"]

#: the set-level scores that get an interval, as named in :meth:`ChallengeScores.to_dict`.
SCALAR_SCORES = ("mean_dsc", "mean_normhd", "performance_score", "fairness_score", "total_score")
#: the per-variable scalars that get an interval, as named in :meth:`VariableDisparity.to_dict`.
VARIABLE_SCORES = ("dsc_gap", "normhd_gap", "disparity", "fairness")

FEW_GROUPS_REPLICATES_MSG = (
    "sensitive feature '{name}' had fewer than two non-empty groups on {k} of {n} bootstrap replicates; "
    "its disparity is 0 on those replicates (the challenge convention)"
)


def _codes(values: Any, named: bool) -> np.ndarray:
    """``(N,)`` int64 codes ``0 .. G-1`` (``-1`` excluded), numbered as :func:`challenge_scores` numbers them."""
    a = np.asarray(values).reshape(-1).astype(np.int64)
    if named:  # the codes index the given names
        return a
    kept = a != EXCLUDED_CODE  # without names the groups are the observed codes, sorted
    out = np.full_like(a, EXCLUDED_CODE)
    out[kept] = np.searchsorted(np.unique(a[kept]), a[kept])
    return out


def _pair(lo, hi) -> list:
    return [float(lo), float(hi)]


def bootstrap_challenge_scores(
    dsc: Any,
    normhd: Any,
    *,
    sensitive_features: Mapping[str, Any],
    group_names: Mapping[str, Sequence[str]] | None = None,
    ts_weight: float = 0.5,
    n_bootstrap: int = 1000,
    confidence_level: float = 0.95,
    seed: int | None = 0,
    stratified: bool = False,
) -> dict:
    """Percentile bootstrap intervals of every score of :func:`challenge_scores`, resampling cases.

    Args:
        dsc: per-case DSC, shape ``(N,)``.
        normhd: per-case NormHD, shape ``(N,)``.
        sensitive_features: ``{variable: (N,) integer group codes}`` (``-1`` = excluded from that
            variable), as :func:`challenge_scores` takes them (codes, not values: a report encodes
            values first).
        group_names: ``{variable: group names}`` of the codes (so empty groups are listed too).
        ts_weight: weight of PS in TS, in [0, 1]. Defaults to 0.5 (the challenge).
        n_bootstrap: replicates (default 1000, the report's default). Must be > 0.
        confidence_level: interval level (default 0.95).
        seed: seed of the resampling (default 0); the same seed and data give the same intervals.
        stratified: resample within each combination of the variables' groups (default ``False``:
            from the whole set). See the module docstring.

    Returns:
        A JSON-ready dict::

            {"bootstrap": {"n_bootstrap", "confidence_level", "stratified", "seed"},
             "mean_dsc": [lo, hi], "mean_normhd": [lo, hi], "performance_score": [lo, hi],
             "fairness_score": [lo, hi], "total_score": [lo, hi],
             "variables": {variable: {"mean_dsc": [[lo, hi], ...],  # one per group, in group order
                                      "mean_normhd": [[lo, hi], ...],
                                      "dsc_gap": [lo, hi], "normhd_gap": [lo, hi],
                                      "disparity": [lo, hi], "fairness": [lo, hi]}}}

        A bound is NaN where the value is undefined on every replicate (an empty group).

    Raises:
        ValueError: ``n_bootstrap`` not a positive integer, ``confidence_level`` outside (0, 1), and
            every error of :func:`challenge_scores` (checked on the data before resampling).

    Warns:
        UndefinedGroupMetricWarning: a non-empty group that is empty on some replicates.
        UserWarning: a variable with fewer than two non-empty groups on some replicates.

    Example:
        >>> ci = bootstrap_challenge_scores([0.9, 0.7, 0.8, 0.6], [0.1, 0.3, 0.2, 0.2],
        ...                                 sensitive_features={"age_group": [0, 0, 1, 1]}, n_bootstrap=200)
        >>> lo, hi = ci["fairness_score"]
    """
    check_bootstrap_args(n_bootstrap, confidence_level)
    if n_bootstrap == 0:
        raise ValueError("n_bootstrap must be > 0 for bootstrap intervals; got 0")
    point = challenge_scores(dsc, normhd, sensitive_features=sensitive_features, ts_weight=ts_weight,
                             group_names=group_names)  # validates the inputs once
    d = np.asarray(dsc, dtype=np.float64).reshape(-1)
    h = np.asarray(normhd, dtype=np.float64).reshape(-1)
    given = dict(group_names or {})
    codes = {k: _codes(v, k in given) for k, v in sensitive_features.items()}
    names = {k: list(point.variables[k].groups) for k in codes}
    n = d.shape[0]

    strata = None
    if stratified:  # one stratum per combination of groups (excluded = its own group)
        strata = np.unique(np.stack(list(codes.values()), axis=1), axis=0, return_inverse=True)[1].reshape(-1)

    scalars = np.empty((n_bootstrap, len(SCALAR_SCORES)))
    per_var = {k: np.empty((n_bootstrap, len(VARIABLE_SCORES))) for k in codes}
    group_dsc = {k: np.empty((n_bootstrap, len(names[k]))) for k in codes}
    group_hd = {k: np.empty((n_bootstrap, len(names[k]))) for k in codes}
    few = dict.fromkeys(codes, 0)
    row = 0
    with warnings.catch_warnings():
        # a replicate with < 2 non-empty groups warns once per replicate; counted below instead
        warnings.simplefilter("ignore", UserWarning)
        for idx in bootstrap_index_chunks(strata, n, n_bootstrap, seed):
            for i in idx:
                s = challenge_scores(d[i], h[i], sensitive_features={k: c[i] for k, c in codes.items()},
                                     ts_weight=ts_weight, group_names=names)
                scalars[row] = [getattr(s, k) for k in SCALAR_SCORES]
                for k, v in s.variables.items():
                    per_var[k][row] = [getattr(v, f) for f in VARIABLE_SCORES]
                    group_dsc[k][row] = v.mean_dsc
                    group_hd[k][row] = v.mean_normhd
                    few[k] += int(np.count_nonzero(np.asarray(v.counts) > 0) < 2)
                row += 1

    for k, v in point.variables.items():
        # a group is empty on the same replicates for DSC and NormHD: one warning for both
        warn_bootstrap_undefined(f"{k} mean DSC and NormHD", group_dsc[k], v.groups, np.asarray(v.mean_dsc))
        if few[k] and sum(c > 0 for c in v.counts) >= 2:
            warnings.warn(FEW_GROUPS_REPLICATES_MSG.format(name=k, k=few[k], n=n_bootstrap), UserWarning, stacklevel=2)

    level = float(confidence_level)
    lo, hi = percentile_interval(scalars, level)
    out = {"bootstrap": bootstrap_settings(n_bootstrap, level, stratified, seed)}
    out.update({k: _pair(a, b) for k, a, b in zip(SCALAR_SCORES, lo, hi)})
    out["variables"] = {}
    for k in codes:
        vlo, vhi = percentile_interval(per_var[k], level)
        dlo, dhi = percentile_interval(group_dsc[k], level)
        hlo, hhi = percentile_interval(group_hd[k], level)
        out["variables"][k] = {
            "mean_dsc": [_pair(a, b) for a, b in zip(dlo, dhi)],
            "mean_normhd": [_pair(a, b) for a, b in zip(hlo, hhi)],
            **{f: _pair(a, b) for f, a, b in zip(VARIABLE_SCORES, vlo, vhi)},
        }
    return out
