"""Subgroup divergence by frequent-itemset mining (the DivExplorer idea, on mlxtend's miners).

A *subgroup* :math:`S` is a conjunction of ``attribute=value`` items, e.g.
``age_group=71+ & breast_density=d``; its support is the fraction of cases it holds. Every subgroup with
support at least ``minsup`` is mined with mlxtend's ``fpgrowth`` (default) or ``apriori`` on the one-hot
item columns, and its divergence is

.. math::

    \\Delta(S) = \\frac{1}{|S|} \\sum_{i \\in S} s_i - \\frac{1}{n} \\sum_{i=1}^{n} s_i

for per-case scores :math:`s_i` (e.g. Dice), as ``DivergenceExplorer`` (DivExplorer 0.2.6, Pastor et
al., SIGMOD 2021) computes the ``<outcome>_div`` of a quantitative outcome: subgroup mean minus
overall mean. The tests check equal itemsets and divergences against DivExplorer.

Both the per-subgroup sums and the per-case functions use one membership computation: with
:math:`X` the ``n x m`` one-hot item matrix of the cases and :math:`M` the ``k x m`` itemset-item
incidence matrix, case :math:`i` is in itemset :math:`j` exactly when :math:`(M X^T)_{ji}` equals the
itemset's length (one sparse-dense product per block of itemsets, to bound memory). A subgroup's
count and score sum are the row sums of that membership and its product with the scores. The
per-case weight (:func:`max_abs_divergence_per_sample`) depends only on a case's values, so it is
computed once per distinct combination of values and broadcast back. This is the one path: on the
MAMA-MIA table (``benchmarks/bench_subgroups.py``: 1,506 cases, 6 attributes, 3,486 subgroups) the
whole :func:`subgroup_divergence` call takes well under a second on a CPU, about as long as
DivExplorer's, and FairMedSeg's discovery plus reweighting is a negligible share of a training epoch
(``benchmarks/bench_fairmedseg_reweighting.py``).

Conventions:

* Metadata values are compared as strings. A missing value (``None``, NaN, an empty cell or one of
  :data:`fairmonai.attribute_codes.MISSING_TOKENS`) is the item ``<attribute>=unknown``
  (:data:`~fairmonai.attribute_codes.EXCLUDED_VALUE`, as the manifest writes an excluded attribute), a
  subgroup like any other; pass ``ignore_values=("unknown",)`` to mine without those items.
* A subgroup is frequent when its count is at least :math:`\\lceil \\text{minsup} \\cdot n \\rceil`
  (computed with a 1e-9 tolerance, so ``0.1 * 30`` asks for 3 cases, where a bare float ``ceil`` gives
  4). mlxtend and DivExplorer compare ``count / n >= minsup`` for single items but use the bare
  ``ceil`` for longer itemsets; we pass mlxtend a threshold that makes both the same integer count.
* Subgroups of one case are kept when ``minsup`` allows them (``count`` 1); a subgroup's count is never
  0 (the miners only return observed itemsets). The whole cohort (the empty itemset) is not a row; its
  mean is ``table.attrs["overall_mean"]``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlxtend.frequent_patterns import apriori, fpgrowth
from scipy import sparse

from ..attribute_codes import EXCLUDED_VALUE, MISSING_TOKENS

__all__ = [
    "DIVERGENCE_COLUMNS",
    "MINING_ALGORITHMS",
    "subgroup_divergence",
    "subgroup_membership",
    "max_abs_divergence_per_sample",
    "divergence_weights",
    "ALL_ZERO_MSG",
]

#: Columns of the table :func:`subgroup_divergence` returns.
DIVERGENCE_COLUMNS = ("itemset", "subgroup", "length", "count", "support", "mean", "divergence")
#: Frequent-itemset miners from ``mlxtend.frequent_patterns``.
MINING_ALGORITHMS = ("fpgrowth", "apriori")

#: Warning of :func:`divergence_weights` when ``normalize`` meets weights that are all 0.
ALL_ZERO_MSG = (
    "divergence weights are all 0 (no subgroup diverges from the overall mean, or no training case is in "
    "a discovered subgroup): normalize=True leaves every weight at 1.0"
)

_LOGGER = logging.getLogger(__name__)

# itemsets per block when building membership (n x block booleans at a time)
_BLOCK = 4096

# Error messages (tests compare the exact text).
_MSG_ALGORITHM = "algorithm must be one of {allowed}, got {value!r}."
_MSG_MINSUP = "minsup must be a number in (0, 1], got {value!r}."
_MSG_MAX_LEN = "max_len must be None or an integer >= 1, got {value!r}."
_MSG_METADATA_TYPE = "metadata must be a pandas DataFrame, got {type}."
_MSG_METADATA_EMPTY = "metadata has no rows: there is nothing to score."
_MSG_NO_ATTRIBUTES = "no attributes to mine: metadata has no columns (or attributes is empty)."
_MSG_MISSING_COLUMNS = "attribute column(s) {missing} not in metadata (columns: {columns})."
_MSG_SCORES_SHAPE = "scores must be a 1-D array with one value per metadata row, got shape {shape}."
_MSG_LENGTH = "scores has {n_scores} values but metadata has {n_rows} rows."
_MSG_NOT_FINITE = "scores must be finite; NaN or infinite at {count} row(s), the first at metadata index {row!r}."
_MSG_NO_ITEMSET_COLUMN = "divergence_table must have an 'itemset' column (as subgroup_divergence returns)."
_MSG_NO_DIVERGENCE_COLUMN = "divergence_table must be a DataFrame with 'itemset' and 'divergence' columns."
_MSG_BAD_ITEMSET = "itemset {value!r} is not a sequence of (attribute, value) pairs."


# ----------------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------------


def _normalise_value(v: Any) -> str:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return EXCLUDED_VALUE
    t = str(v).strip()
    return EXCLUDED_VALUE if t in MISSING_TOKENS else t


def _normalise_values(col: pd.Series) -> np.ndarray:
    """Strings, stripped; missing values (NaN, None, missing tokens) -> EXCLUDED_VALUE.

    Normalises the distinct values only (``pd.factorize``), then maps the codes.
    """
    codes, uniques = pd.factorize(col.astype(object), use_na_sentinel=True)
    lookup = np.array([_normalise_value(u) for u in uniques] + [EXCLUDED_VALUE], dtype=object)
    return lookup[codes]  # code -1 (missing) -> the last entry


def _categories(col: pd.Series, values: np.ndarray) -> list[str]:
    """Value order of one attribute: a categorical column's categories, else sorted."""
    present = set(values.tolist())
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = [str(c).strip() for c in col.cat.categories]
        return [c for c in cats if c in present] + sorted(present - set(cats))
    return sorted(present)


def _check_scores(scores: Any, metadata: pd.DataFrame) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise ValueError(_MSG_SCORES_SHAPE.format(shape=s.shape))
    if s.shape[0] != len(metadata):
        raise ValueError(_MSG_LENGTH.format(n_scores=s.shape[0], n_rows=len(metadata)))
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        row = metadata.index[bad[0]]
        row = row.item() if isinstance(row, np.generic) else row
        raise ValueError(_MSG_NOT_FINITE.format(count=bad.size, row=row))
    return s


def _check_metadata(metadata: Any, attributes: Sequence[str] | None) -> list[str]:
    if not isinstance(metadata, pd.DataFrame):
        raise TypeError(_MSG_METADATA_TYPE.format(type=type(metadata).__name__))
    attrs = list(metadata.columns) if attributes is None else list(attributes)
    missing = [a for a in attrs if a not in metadata.columns]
    if missing:
        raise ValueError(_MSG_MISSING_COLUMNS.format(missing=missing, columns=list(metadata.columns)))
    if not attrs:
        raise ValueError(_MSG_NO_ATTRIBUTES)
    if len(metadata) == 0:
        raise ValueError(_MSG_METADATA_EMPTY)
    return attrs


def _one_hot(metadata: pd.DataFrame, attrs: list[str], ignore_values: Collection[str]):
    """The cases' one-hot item matrix ``(n, m)`` (bool) and its items, ``(attribute, value)`` per column
    in attribute order, each attribute's values in :func:`_categories` order; ``ignore_values`` form no item."""
    ignored = {str(v) for v in ignore_values}
    columns, items = [], []
    for a in attrs:
        col = metadata[a]
        values = _normalise_values(col)
        for c in _categories(col, values):
            if c not in ignored:
                columns.append(values == c)
                items.append((str(a), c))
    x = np.stack(columns, axis=1) if columns else np.zeros((len(metadata), 0), dtype=bool)
    return x, items


def _subgroup_sums(x: np.ndarray, itemsets: list[list[int]], s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score sum and case count of every itemset (lists of item columns of ``x``), from their membership."""
    inc, lengths = _incidence(itemsets, x.shape[1])
    sums = np.empty(len(itemsets), dtype=np.float64)
    counts = np.empty(len(itemsets), dtype=np.int64)
    for start, member in _membership_blocks(x, inc, lengths):
        stop = start + member.shape[0]
        counts[start:stop] = member.sum(axis=1)
        sums[start:stop] = member.astype(np.float64) @ s
    return sums, counts


def _incidence(itemsets: Sequence[Sequence[int]], m: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    lengths = np.fromiter((len(s) for s in itemsets), dtype=np.int64, count=len(itemsets))
    rows = np.repeat(np.arange(len(itemsets)), lengths)
    cols = np.fromiter((c for s in itemsets for c in s), dtype=np.int64, count=int(lengths.sum()))
    inc = sparse.csr_matrix((np.ones(cols.size, dtype=np.float32), (rows, cols)), shape=(len(itemsets), m))
    return inc, lengths


def _membership_blocks(x: np.ndarray, inc: sparse.csr_matrix, lengths: np.ndarray):
    """Yield ``(start, block)``: ``block[j, i]`` is True when case ``i`` is in itemset ``start + j``."""
    xt = np.ascontiguousarray(x.T, dtype=np.float32)  # m x n
    for start in range(0, inc.shape[0], _BLOCK):
        stop = min(start + _BLOCK, inc.shape[0])
        matched = inc[start:stop] @ xt  # items of each itemset that the case holds
        yield start, matched == lengths[start:stop, None]


# ----------------------------------------------------------------------------------------------------
# divergence table
# ----------------------------------------------------------------------------------------------------


def subgroup_divergence(
    scores: Any,
    *,
    metadata: pd.DataFrame,
    minsup: float = 0.05,
    attributes: Sequence[str] | None = None,
    algorithm: str = "fpgrowth",
    max_len: int | None = None,
    ignore_values: Collection[str] = (),
    ascending: bool = True,
) -> pd.DataFrame:
    """Divergence of every frequent subgroup from the overall mean score.

    .. math::

        \\Delta(S) = \\bar s_S - \\bar s, \\qquad \\operatorname{support}(S) = |S| / n \\ge \\text{minsup}

    Args:
        scores: per-case scores (Dice, NormHD, a loss, a 0/1 error), finite, one per metadata row in
            row order (by position; a Series' index is not aligned with the metadata's).
        metadata: one row per case, one categorical column per attribute (values compared as strings;
            missing values are the item ``unknown``, see the module docstring).
        minsup: minimum support, a fraction of the cases scored, in (0, 1]. Defaults to 0.05.
        attributes: columns to mine; defaults to every column of ``metadata``.
        algorithm: ``"fpgrowth"`` (default) or ``"apriori"`` (mlxtend's miners; same itemsets).
        max_len: longest conjunction mined; ``None`` (default) for no limit.
        ignore_values: attribute values that never form an item (e.g. ``("unknown",)``).
        ascending: sort by divergence ascending (default: the lowest-scoring subgroups first, the worst
            for a higher-is-better score such as Dice) or descending.

    Returns:
        A DataFrame with columns :data:`DIVERGENCE_COLUMNS`: ``itemset`` (a tuple of
        ``(attribute, value)`` pairs in attribute order), ``subgroup`` (``"age_group=71+ &
        breast_density=d"``), ``length``, ``count``, ``support`` (``count / n``), ``mean`` and
        ``divergence``; sorted by divergence, then support (descending), then subgroup. ``attrs`` holds
        ``overall_mean``, ``n``, ``minsup``, ``min_count``, ``attributes`` and ``algorithm``. No
        subgroup reaching ``minsup`` gives an empty table with these columns.

    Raises:
        ValueError: an option out of range (checked first); metadata with no rows or no attributes; a
            named attribute not in metadata; scores of the wrong length; a NaN or infinite score (the
            message names the metadata index of the first such row).
        TypeError: metadata is not a DataFrame.

    Example:
        >>> table = subgroup_divergence(dice, metadata=df[["age_group", "breast_density"]], minsup=0.01)
        >>> table.head()   # the subgroups with the lowest mean Dice
    """
    if algorithm not in MINING_ALGORITHMS:
        raise ValueError(_MSG_ALGORITHM.format(allowed=list(MINING_ALGORITHMS), value=algorithm))
    if isinstance(minsup, bool) or not isinstance(minsup, (int, float)) or not 0.0 < minsup <= 1.0:
        raise ValueError(_MSG_MINSUP.format(value=minsup))
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer))
                                or max_len < 1):
        raise ValueError(_MSG_MAX_LEN.format(value=max_len))
    attrs = _check_metadata(metadata, attributes)
    s = _check_scores(scores, metadata)
    n = s.shape[0]
    overall = float(s.mean())

    x, items = _one_hot(metadata, attrs, ignore_values)

    min_count = max(1, math.ceil(minsup * n - 1e-9))
    attrs_out = {"overall_mean": overall, "n": n, "minsup": float(minsup), "min_count": min_count,
                 "attributes": [str(a) for a in attrs], "algorithm": algorithm}
    if x.shape[1] == 0:
        return _empty_table(attrs_out)
    # Half a case below min_count: mlxtend's float comparison (count / n >= t) and its ceil(t * n)
    # both give exactly min_count.
    threshold = (min_count - 0.5) / n
    onehot = pd.DataFrame(x, columns=pd.RangeIndex(x.shape[1]))
    if algorithm == "fpgrowth":
        found = fpgrowth(onehot, min_support=threshold, use_colnames=False, max_len=max_len)
    else:
        found = apriori(onehot, min_support=threshold, use_colnames=False, max_len=max_len)
    if len(found) == 0:
        return _empty_table(attrs_out)

    itemsets = [sorted(map(int, fs)) for fs in found["itemsets"]]
    sums, counts = _subgroup_sums(x, itemsets, s)
    means = sums / counts
    lengths = np.fromiter((len(t) for t in itemsets), dtype=np.int64, count=len(itemsets))

    item_names = [f"{a}={v}" for a, v in items]
    table = pd.DataFrame({
        "itemset": pd.Series([tuple(items[c] for c in its) for its in itemsets], dtype=object),
        "subgroup": [" & ".join([item_names[c] for c in its]) for its in itemsets],
        "length": lengths,
        "count": counts,
        "support": counts / n,
        "mean": means,
        "divergence": means - overall,
    })
    div = table["divergence"].to_numpy()
    order = np.lexsort((table["subgroup"].to_numpy(dtype=str), -counts, div if ascending else -div))
    table = table.iloc[order].reset_index(drop=True)
    table.attrs.update(attrs_out)
    return table


def _empty_table(attrs: dict) -> pd.DataFrame:
    table = pd.DataFrame({
        "itemset": pd.Series([], dtype=object),
        "subgroup": pd.Series([], dtype=object),
        "length": pd.Series([], dtype=np.int64),
        "count": pd.Series([], dtype=np.int64),
        "support": pd.Series([], dtype=np.float64),
        "mean": pd.Series([], dtype=np.float64),
        "divergence": pd.Series([], dtype=np.float64),
    })
    table.attrs.update(attrs)
    return table


# ----------------------------------------------------------------------------------------------------
# per sample
# ----------------------------------------------------------------------------------------------------


def _itemsets_of(divergence_table: Any) -> list[tuple[tuple[str, str], ...]]:
    if isinstance(divergence_table, pd.DataFrame):
        if "itemset" not in divergence_table.columns:
            raise ValueError(_MSG_NO_ITEMSET_COLUMN)
        raw = divergence_table["itemset"].tolist()
    else:
        raw = list(divergence_table)
    out = []
    for its in raw:
        try:
            ok = not isinstance(its, str) and all(
                not isinstance(p, str) and len(p) == 2 and not isinstance(p[0], (list, tuple)) for p in its)
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(_MSG_BAD_ITEMSET.format(value=its))
        out.append(tuple((str(a), str(v)) for a, v in its))
    return out


def _itemset_columns(divergence_table: Any, metadata: Any):
    """The table's itemsets, the attributes they name (in order) and ``{attribute: metadata column}``.

    Raises:
        TypeError: metadata is not a DataFrame.
        ValueError: a bad itemset; an attribute missing from metadata.
    """
    itemsets = _itemsets_of(divergence_table)
    if not isinstance(metadata, pd.DataFrame):
        raise TypeError(_MSG_METADATA_TYPE.format(type=type(metadata).__name__))
    attrs = list(dict.fromkeys(a for its in itemsets for a, _ in its))
    cols = {str(c): c for c in metadata.columns}
    missing = [a for a in attrs if a not in cols]
    if missing:
        raise ValueError(_MSG_MISSING_COLUMNS.format(missing=missing, columns=list(metadata.columns)))
    return itemsets, attrs, cols


def _membership_inputs(divergence_table: Any, metadata: Any):
    itemsets, attrs, cols = _itemset_columns(divergence_table, metadata)
    # one-hot over the items the table uses only
    vocab = {it: j for j, it in enumerate(dict.fromkeys(it for its in itemsets for it in its))}
    n = len(metadata)
    x = np.zeros((n, len(vocab)), dtype=bool)
    for a in attrs:
        values = _normalise_values(metadata[cols[a]])
        for (attr, value), j in vocab.items():
            if attr == a:
                x[:, j] = values == value
    inc, lengths = _incidence([[vocab[it] for it in its] for its in itemsets], len(vocab))
    return x, inc, lengths


def subgroup_membership(divergence_table: Any, *, metadata: pd.DataFrame) -> np.ndarray:
    """Which cases belong to which subgroups.

    Args:
        divergence_table: a table from :func:`subgroup_divergence` (its ``itemset`` column), or a
            sequence of itemsets, each a sequence of ``(attribute, value)`` pairs.
        metadata: one row per case with the attributes the itemsets name (missing values read as
            ``unknown``, as in :func:`subgroup_divergence`); may be other cases than those mined.

    Returns:
        Boolean array ``(n_cases, n_subgroups)``; column ``j`` is row ``j`` of the table. An empty
        itemset holds every case.

    Raises:
        ValueError: no ``itemset`` column; an itemset that is not (attribute, value) pairs; an
            attribute missing from metadata.
        TypeError: metadata is not a DataFrame.
    """
    x, inc, lengths = _membership_inputs(divergence_table, metadata)
    out = np.zeros((len(metadata), inc.shape[0]), dtype=bool)
    for start, member in _membership_blocks(x, inc, lengths):
        out[:, start:start + member.shape[0]] = member.T
    return out


def max_abs_divergence_per_sample(
    divergence_table: pd.DataFrame,
    *,
    metadata: pd.DataFrame,
    fill_value: float = 0.0,
) -> np.ndarray:
    """Per case, the largest :math:`|\\Delta(S)|` over the subgroups :math:`S` of the table that hold it.

    .. math::

        w_i = \\max_{S \\ni i} |\\Delta(S)|

    the per-sample weight of a FairMedSeg-style reweighting. Membership is that of
    :func:`subgroup_membership`, computed once per distinct combination of the case values (a case's
    weight depends on nothing else), so many cases with few distinct combinations cost little. A case
    in no subgroup of the table (its attribute values are rarer than ``minsup``, or it has values never
    mined) gets ``fill_value``, 0 by default: no subgroup evidence of divergence, i.e. the same weight
    as a case whose subgroups all sit on the overall mean.

    Args:
        divergence_table: a table from :func:`subgroup_divergence` (``itemset`` and ``divergence``
            columns); filter its rows first to use only some subgroups (e.g. ``length <= 2``).
        metadata: one row per case to weight (missing values read as ``unknown``).
        fill_value: the value for a case in no subgroup. Defaults to 0.

    Returns:
        Float64 array ``(n_cases,)``.

    Raises:
        ValueError: as :func:`subgroup_membership`; a table without a ``divergence`` column.
        TypeError: metadata is not a DataFrame.
    """
    if not isinstance(divergence_table, pd.DataFrame) or "divergence" not in divergence_table.columns:
        raise ValueError(_MSG_NO_DIVERGENCE_COLUMN)
    _, attributes, cols = _itemset_columns(divergence_table, metadata)
    if attributes and len(metadata):
        values = pd.DataFrame({a: _normalise_values(metadata[cols[a]]) for a in attributes})
        inverse, distinct = pd.factorize(pd.MultiIndex.from_frame(values))
        distinct = distinct.to_frame(index=False, name=attributes)
    else:  # no attribute to tell cases apart: one row stands for all
        distinct, inverse = metadata.iloc[:1], np.zeros(len(metadata), dtype=np.int64)
    absdiv = np.abs(divergence_table["divergence"].to_numpy(dtype=np.float64))
    best = np.full(len(distinct), -np.inf)
    for start, member in _membership_blocks(*_membership_inputs(divergence_table, distinct)):
        d = absdiv[start:start + member.shape[0], None]
        best = np.maximum(best, np.where(member, d, -np.inf).max(axis=0, initial=-np.inf))
    best = best[inverse]
    return np.where(np.isneginf(best), float(fill_value), best)


# ----------------------------------------------------------------------------------------------------
# FairMedSeg's training weights
# ----------------------------------------------------------------------------------------------------


def divergence_weights(
    val_scores: Any,
    val_metadata: pd.DataFrame,
    train_metadata: pd.DataFrame,
    *,
    attributes: Sequence[str] | str,
    minsup: float = 0.001,
    fill_value: float = 0.0,
    normalize: bool = False,
    max_len: int | None = None,
    ignore_values: Collection[str] = (),
) -> tuple[np.ndarray, pd.DataFrame]:
    """FairMedSeg's per-case training weights from the subgroup divergences of a validation run.

    E. Poeta et al., "Divergence-Aware Training with Automatic Subgroup Mitigation for Breast Tumor
    Segmentation" (FairMedSeg):

    .. math::

        \\Delta(S) = \\bar s_S - \\bar s, \\qquad w_j = \\max_{S \\ni j} |\\Delta(S)|

    The subgroups :math:`S` are mined on the validation cases (``val_scores``, ``val_metadata``) with
    :func:`subgroup_divergence`; :math:`w_j` is, for every training case ``j`` matched by its own
    metadata, :func:`max_abs_divergence_per_sample`.

    Choices where the paper leaves room:

    * ``minsup`` is a fraction of the *validation* cases; at the default 0.001 every conjunction present
      in a validation set of at most 1000 cases is a subgroup (one case suffices).
    * A training case in no discovered subgroup (a value, or combination of values, absent from
      validation, or rarer than ``minsup``) gets ``fill_value``, 0 by default: no evidence of
      divergence, as :func:`max_abs_divergence_per_sample` does.
    * Weights are the raw :math:`|\\Delta|` by default (the formula above). ``normalize=True`` divides
      them by their mean over the training cases, so they average 1 and the loss keeps its scale; if
      they are all 0 (nothing diverges) they are all set to 1.0 and :data:`ALL_ZERO_MSG` is logged as a
      warning.
    * Missing attribute values are the item ``unknown`` (a subgroup like any other) unless
      ``ignore_values=("unknown",)``.

    Args:
        val_scores: per-case validation scores (Dice), finite, one per row of ``val_metadata``.
        val_metadata: one row per validation case with the ``attributes`` columns.
        train_metadata: one row per training case with the ``attributes`` columns.
        attributes: the attribute columns to mine.
        minsup: minimum support of a subgroup, a fraction of the validation cases, in (0, 1].
            Defaults to 0.001.
        fill_value: weight of a training case in no subgroup, finite and >= 0. Defaults to 0.0.
        normalize: rescale the weights to mean 1 over the training cases. Defaults to False.
        max_len: longest conjunction mined (``None``: no limit).
        ignore_values: attribute values that never form an item.

    Returns:
        ``(weights, table)``: float64 array ``(n_train,)`` in ``train_metadata`` row order, and the
        table of :func:`subgroup_divergence` (sorted by divergence, the lowest-Dice subgroups first);
        ``table.attrs["n_train_in_no_subgroup"]`` counts the training cases that got ``fill_value``
        and ``table.attrs["weights_all_zero"]`` is True when ``normalize`` found every weight 0.

    Raises:
        ValueError: as :func:`subgroup_divergence` (bad ``minsup``/``max_len``, scores of the wrong
            length, NaN scores, attributes not in ``val_metadata``); an attribute not in
            ``train_metadata``; a negative or non-finite ``fill_value``.
        TypeError: a metadata argument that is not a DataFrame.

    Example:
        >>> w, table = divergence_weights(dice, val_df, train_df, attributes=["age_group", "density"])
    """
    attributes = [attributes] if isinstance(attributes, str) else list(attributes)
    if not isinstance(train_metadata, pd.DataFrame):
        raise TypeError(f"train_metadata must be a pandas DataFrame, got {type(train_metadata).__name__}")
    missing = [a for a in attributes if a not in train_metadata.columns]
    if missing:
        raise ValueError(
            f"attribute column(s) {missing} not in train_metadata (columns: {list(train_metadata.columns)})")
    fill_value = float(fill_value)
    if not math.isfinite(fill_value) or fill_value < 0:
        raise ValueError(f"fill_value must be a finite number >= 0, got {fill_value!r}")

    table = subgroup_divergence(val_scores, metadata=val_metadata, minsup=minsup, attributes=attributes,
                                max_len=max_len, ignore_values=ignore_values)
    w = max_abs_divergence_per_sample(table, metadata=train_metadata, fill_value=np.nan)  # NaN: in no subgroup
    unmatched = np.isnan(w)
    w[unmatched] = fill_value
    table.attrs["n_train_in_no_subgroup"] = int(unmatched.sum())
    table.attrs["weights_all_zero"] = False
    if normalize and len(w):
        mean = float(w.mean())
        if mean > 0:
            w = w / mean
        else:
            w = np.ones(len(w), dtype=np.float64)
            table.attrs["weights_all_zero"] = True
            _LOGGER.warning(ALL_ZERO_MSG)
    return w, table
