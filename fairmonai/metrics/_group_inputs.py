"""Input handling shared by the group fairness metrics: labels, scores, group codes, options.

Every group metric takes per-sample arrays (numpy arrays, torch tensors or sequences) and a
keyword-only ``sensitive_features``. This module turns them into numpy arrays, checks them before
any work is done and holds the error messages as constants, so tests can compare exact text.

Group codes follow :mod:`fairmonai.attribute_codes`: integer codes ``0 .. G-1`` index the attribute's
categories and ``-1`` (``EXCLUDED_CODE``) marks a value excluded by the missing-value policy. Such a
sample counts in the overall metric but in no group. The generic argument checks (options, lengths)
are in :mod:`fairmonai.validation`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..attribute_codes import EXCLUDED_CODE

__all__ = [
    "METHODS",
    "AGGS",
    "NEGATIVE_CODE_MSG",
    "CODE_OUT_OF_RANGE_MSG",
    "NO_GROUP_MSG",
    "NOT_BINARY_MSG",
    "NOT_INTEGER_MSG",
    "NEGATIVE_LABEL_MSG",
    "BAD_SHAPE_MSG",
    "GROUP_NAMES_TYPE_MSG",
    "UNKNOWN_GROUP_MSG",
    "UNDEFINED_GROUP_MSG",
    "UndefinedGroupMetricWarning",
    "GroupIndex",
    "to_numpy",
    "as_labels",
    "as_binary_labels",
    "as_binary_scores",
    "encode_groups",
    "resolve_group",
    "warn_undefined",
]

#: allowed values of ``method`` (as fairlearn's ``MetricFrame.difference``).
METHODS = ("between_groups", "to_overall")
#: allowed values of ``agg`` (as fairlearn's ``equalized_odds_difference``).
AGGS = ("worst_case", "mean")

NEGATIVE_CODE_MSG = (
    "sensitive_features holds negative group code(s) {codes}; only -1 (excluded by the missing-value "
    "policy) is allowed"
)
CODE_OUT_OF_RANGE_MSG = "sensitive_features holds group code(s) {codes} but group_names has only {n} names"
NO_GROUP_MSG = "no sample belongs to a group: every sensitive_features value is -1 (excluded)"
NOT_BINARY_MSG = "{name} must hold binary labels 0/1 for {metric}; found label {value}"
NOT_INTEGER_MSG = "{name} must hold integer class labels; found non-integer value {value}"
NEGATIVE_LABEL_MSG = "{name} must hold class labels >= 0; found {value}"
BAD_SHAPE_MSG = "{name} must have shape {expected}; got {shape}"
GROUP_NAMES_TYPE_MSG = "group_names applies to integer group codes only; sensitive_features holds {dtype} values"
UNKNOWN_GROUP_MSG = "unknown {name} {value!r}; groups are {groups}"
UNDEFINED_GROUP_MSG = (
    "{metric} is undefined for group(s) {groups} ({reason}); reported as NaN in by_group and left out "
    "of the difference and ratio"
)


class UndefinedGroupMetricWarning(UserWarning):
    """A per-group value cannot be computed (e.g. a group with no positives has no TPR).

    The value is reported as NaN in ``by_group`` and left out of every disparity computed from it;
    the warning names the group(s) so the omission is never silent.
    """


def to_numpy(x, name: str) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor, pandas object or sequence) as a numpy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch here
        return x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)) and x and hasattr(x[0], "detach"):
        return np.stack([np.asarray(v.detach().cpu().numpy()) for v in x])
    arr = np.asarray(x)
    if arr.dtype == object and arr.ndim == 1 and arr.size and isinstance(arr.flat[0], np.ndarray):
        arr = np.stack(list(arr))
    return arr


def as_labels(y: np.ndarray, name: str, *, threshold: float | None = None) -> np.ndarray:
    """Integer class labels ``(N,)`` from labels, one-hot/scores ``(N, K)`` (argmax) or thresholded scores.

    ``(N,)`` values must be integral (floats such as ``1.0`` are accepted) unless ``threshold`` is
    given, in which case they are scores and ``label = score >= threshold``. ``(N, 1)`` is squeezed;
    ``(N, K)`` with ``K > 1`` is reduced by argmax over classes.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        return np.argmax(y, axis=1).astype(np.int64, copy=False)
    if y.ndim != 1:
        raise ValueError(BAD_SHAPE_MSG.format(name=name, expected="(N,) or (N, K)", shape=tuple(y.shape)))
    if threshold is not None:
        return (y >= threshold).astype(np.int64)
    if y.dtype == bool:
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.number):
            raise ValueError(NOT_INTEGER_MSG.format(name=name, value=y.flat[0] if y.size else None))
        bad = y != np.floor(y)
        if bad.any():
            raise ValueError(NOT_INTEGER_MSG.format(name=name, value=y[np.argmax(bad)]))
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise ValueError(NEGATIVE_LABEL_MSG.format(name=name, value=int(y.min())))
    return y


def as_binary_labels(y: np.ndarray, name: str, metric: str) -> np.ndarray:
    """Labels as :func:`as_labels`, checked to be 0/1."""
    y = as_labels(y, name)
    if y.size and y.max() > 1:
        raise ValueError(NOT_BINARY_MSG.format(name=name, metric=metric, value=int(y.max())))
    return y


def as_binary_scores(s: np.ndarray, name: str) -> np.ndarray:
    """Positive-class scores ``(N,)`` from ``(N,)``, ``(N, 1)`` or two-class ``(N, 2)`` (column 1)."""
    if s.ndim == 2 and s.shape[1] in (1, 2):
        s = s[:, -1]
    if s.ndim != 1:
        raise ValueError(BAD_SHAPE_MSG.format(name=name, expected="(N,), (N, 1) or (N, 2)", shape=tuple(s.shape)))
    return s.astype(np.float64, copy=False)


@dataclass(frozen=True)
class GroupIndex:
    """Compact group codes and the labels of the groups.

    Attributes:
        codes: ``(N,)`` int64, ``0 .. G-1`` or ``-1`` for a sample in no group.
        groups: the ``G`` group labels, in code order (names from ``group_names``, else the values).
        n_excluded: number of samples with code ``-1``.
        counts: ``(G,)`` number of samples in each group.
    """

    codes: np.ndarray
    groups: tuple
    n_excluded: int
    counts: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    def sizes(self) -> np.ndarray:
        """Number of samples in each group, ``(G,)``."""
        return self.counts


def encode_groups(sensitive_features, group_names: Sequence | None = None) -> GroupIndex:
    """Encode ``sensitive_features`` as compact group codes.

    * Integer codes (int, bool, or integral floats): ``-1`` marks an excluded sample. With
      ``group_names`` the groups are ``group_names`` in order (code ``i`` is ``group_names[i]``;
      a name may have no samples); without, the groups are the non-negative codes present, in
      increasing order, labelled by the code.
    * Any other values (e.g. strings): each distinct value is a group, sorted; nothing is excluded.

    Raises:
        ValueError: a code below ``-1``; a code beyond ``group_names``; ``group_names`` with
            non-integer values; no sample in any group; more than one column.
    """
    g = to_numpy(sensitive_features, "sensitive_features")
    if g.ndim == 2 and g.shape[1] == 1:
        g = g[:, 0]
    if g.ndim != 1:
        raise ValueError(BAD_SHAPE_MSG.format(name="sensitive_features", expected="(N,)", shape=tuple(g.shape)))
    integral = g.dtype == bool or np.issubdtype(g.dtype, np.integer)
    if not integral and np.issubdtype(g.dtype, np.floating) and g.size:
        integral = bool(np.all(g == np.floor(g)))
    if not integral:
        if group_names is not None:
            raise ValueError(GROUP_NAMES_TYPE_MSG.format(dtype=g.dtype))
        values, codes = np.unique(g, return_inverse=True)
        codes = codes.astype(np.int64).reshape(-1)
        labels = tuple(v.item() if hasattr(v, "item") else v for v in values)
        return GroupIndex(codes, labels, 0, np.bincount(codes, minlength=len(labels)))
    codes = g.astype(np.int64, copy=False)
    if not codes.size:
        return GroupIndex(codes, () if group_names is None else tuple(group_names), 0,
                          np.zeros(0 if group_names is None else len(group_names), dtype=np.int64))
    lo, hi = int(codes.min()), int(codes.max())
    if lo < EXCLUDED_CODE:
        bad = np.unique(codes[codes < EXCLUDED_CODE])[:5]
        raise ValueError(NEGATIVE_CODE_MSG.format(codes=bad.tolist()))
    if group_names is not None:
        names = tuple(group_names)
        if hi >= len(names):
            bad = np.unique(codes[codes >= len(names)])[:5]
            raise ValueError(CODE_OUT_OF_RANGE_MSG.format(codes=bad.tolist(), n=len(names)))
        counts = np.bincount(codes + 1, minlength=len(names) + 1)
        if counts[0] == codes.size:
            raise ValueError(NO_GROUP_MSG)
        return GroupIndex(codes, names, int(counts[0]), counts[1:])
    counts = np.bincount(codes + 1)
    n_excluded, counts = int(counts[0]), counts[1:]
    present = np.flatnonzero(counts)
    if present.size == 0:
        raise ValueError(NO_GROUP_MSG)
    if present.size != counts.size:  # codes with gaps: remap to 0 .. G-1
        lut = np.full(counts.size + 1, EXCLUDED_CODE, dtype=np.int64)
        lut[present + 1] = np.arange(present.size)
        codes = lut[codes + 1]
    return GroupIndex(codes, tuple(int(c) for c in present), n_excluded, counts[present])


def resolve_group(value, groups: tuple, name: str) -> int:
    """Index of the group labelled ``value``; ``ValueError`` listing the groups if none is."""
    for i, g in enumerate(groups):
        if g == value:
            return i
    raise ValueError(UNKNOWN_GROUP_MSG.format(name=name, value=value, groups=list(groups)))


def warn_undefined(metric: str, groups: Sequence, reason: str, stacklevel: int = 3) -> None:
    """Warn (:class:`UndefinedGroupMetricWarning`) that ``metric`` is undefined for ``groups``."""
    if len(groups):
        warnings.warn(
            UNDEFINED_GROUP_MSG.format(metric=metric, groups=list(groups), reason=reason),
            UndefinedGroupMetricWarning,
            stacklevel=stacklevel,
        )
