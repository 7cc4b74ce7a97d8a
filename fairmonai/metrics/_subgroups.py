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

Per-subgroup sums and counts are computed for all itemsets at once, never in a loop per itemset. The
itemsets are grouped by their set of attributes (at most :math:`2^p - 1` groups for :math:`p`
attributes); within a group every case gets one mixed-radix key from its value codes on those
attributes, one ``np.bincount`` gives the score sum and count of every key, and each itemset reads its
own key's entry. This is exact, costs :math:`O(n)` per attribute combination instead of a dense
``n x k`` membership matrix, and is why the run time is dominated by the miner itself. The per-sample
functions (:func:`subgroup_membership`, :func:`max_abs_divergence_per_sample`) do need membership: with
:math:`X` the ``n x m`` one-hot item matrix and :math:`M` the ``k x m`` itemset-item incidence matrix,
case :math:`i` is in itemset :math:`j` exactly when :math:`(M X^T)_{ji}` equals the itemset's length
(one sparse-dense product per block of itemsets, to bound memory).

Conventions:

* Metadata values are compared as strings. A missing value (``None``, NaN, an empty cell or one of
  :data:`fairmonai.data.manifest.MISSING_TOKENS`) is the item ``<attribute>=unknown``
  (:data:`~fairmonai.data.manifest.EXCLUDED_VALUE`, as the manifest writes an excluded attribute), a
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

import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlxtend.frequent_patterns import apriori, fpgrowth
from scipy import sparse

from fairmonai.data.manifest import EXCLUDED_VALUE, MISSING_TOKENS

__all__ = [
    "DIVERGENCE_COLUMNS",
    "MINING_ALGORITHMS",
    "subgroup_divergence",
    "subgroup_membership",
    "max_abs_divergence_per_sample",
]

#: Columns of the table :func:`subgroup_divergence` returns.
DIVERGENCE_COLUMNS = ("itemset", "subgroup", "length", "count", "support", "mean", "divergence")
#: Frequent-itemset miners from ``mlxtend.frequent_patterns``.
MINING_ALGORITHMS = ("fpgrowth", "apriori")

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


class _Encoded:
    """Attribute codes of the cases and the one-hot item columns built from them."""

    def __init__(self, metadata: pd.DataFrame, attrs: list[str]):
        n = len(metadata)
        self.codes = np.empty((n, len(attrs)), dtype=np.int64)  # case x attribute: value code
        self.cards = np.empty(len(attrs), dtype=np.int64)  # values per attribute
        self.items: list[tuple[str, str]] = []  # item column -> (attribute, value)
        item_attr, item_code = [], []
        for j, a in enumerate(attrs):
            col = metadata[a]
            values = _normalise_values(col)
            cats = _categories(col, values)
            self.codes[:, j] = pd.Categorical(values, categories=cats).codes
            self.cards[j] = len(cats)
            self.items.extend((str(a), c) for c in cats)
            item_attr.extend([j] * len(cats))
            item_code.extend(range(len(cats)))
        self.item_attr = np.asarray(item_attr, dtype=np.int64)
        self.item_code = np.asarray(item_code, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(self.cards)[:-1]])
        self.x = np.zeros((n, int(self.cards.sum())), dtype=bool)  # one-hot items
        self.x[np.arange(n)[:, None], self.codes + offsets] = True

    def keep_items(self, keep: np.ndarray) -> None:
        """Drop item columns (``ignore_values``); the case codes stay."""
        self.x = self.x[:, keep]
        self.items = [it for it, k in zip(self.items, keep) if k]
        self.item_attr, self.item_code = self.item_attr[keep], self.item_code[keep]


# joint-code range up to which the per-combination sums use a dense bincount
_DENSE_KEYS = 1 << 20
# mixed-radix keys must stay below this (int64); beyond it, the membership product is used
_MAX_KEY = 1 << 62


def _subgroup_sums(enc: _Encoded, itemsets: list[list[int]], s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score sum and case count of every itemset, without a loop over itemsets.

    Itemsets are grouped by their set of attributes (at most ``2^p - 1`` groups for ``p``
    attributes). Within a group, each case gets one mixed-radix key from its codes on those
    attributes, ``np.bincount`` sums the scores per key, and each itemset reads the entry of its own
    key. Groups whose key range would overflow int64 fall back to the membership-matrix product.
    """
    k = len(itemsets)
    lengths = np.fromiter((len(t) for t in itemsets), dtype=np.int64, count=k)
    width = int(lengths.max())
    cols = np.full((k, width), -1, dtype=np.int64)
    cols[np.arange(width)[None, :] < lengths[:, None]] = np.fromiter(
        (c for t in itemsets for c in t), dtype=np.int64, count=int(lengths.sum()))
    valid = cols >= 0
    attr = np.where(valid, enc.item_attr[np.maximum(cols, 0)], -1)  # sorted, padded with -1
    value = np.where(valid, enc.item_code[np.maximum(cols, 0)], 0)
    attr_sets, group = np.unique(attr, axis=0, return_inverse=True)
    group = group.reshape(-1)

    sums = np.empty(k, dtype=np.float64)
    counts = np.empty(k, dtype=np.int64)
    for g, attr_set in enumerate(attr_sets):
        sel = np.flatnonzero(group == g)
        a_idx = attr_set[attr_set >= 0]
        n_keys = math.prod(int(c) for c in enc.cards[a_idx])
        if n_keys >= _MAX_KEY:
            inc, lens = _incidence([itemsets[j] for j in sel], enc.x.shape[1])
            for start, member in _membership_blocks(enc.x, inc, lens):
                part = sel[start:start + member.shape[0]]
                counts[part] = member.sum(axis=1)
                sums[part] = member.astype(np.float64) @ s
            continue
        radix = np.zeros(len(enc.cards), dtype=np.int64)
        radix[a_idx] = np.concatenate([[1], np.cumprod(enc.cards[a_idx])[:-1]])
        case_keys = enc.codes @ radix
        set_keys = (value[sel] * radix[np.maximum(attr[sel], 0)] * valid[sel]).sum(axis=1)
        if n_keys <= _DENSE_KEYS:
            sums[sel] = np.bincount(case_keys, weights=s, minlength=n_keys)[set_keys]
            counts[sel] = np.bincount(case_keys, minlength=n_keys)[set_keys]
        else:
            uniq, inverse = np.unique(case_keys, return_inverse=True)
            pos = np.searchsorted(uniq, set_keys)  # every mined itemset has at least one case
            sums[sel] = np.bincount(inverse, weights=s)[pos]
            counts[sel] = np.bincount(inverse)[pos]
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

    enc = _Encoded(metadata, attrs)
    if ignore_values:
        ignored = {str(v) for v in ignore_values}
        enc.keep_items(np.array([v not in ignored for _, v in enc.items], dtype=bool))

    min_count = max(1, math.ceil(minsup * n - 1e-9))
    attrs_out = {"overall_mean": overall, "n": n, "minsup": float(minsup), "min_count": min_count,
                 "attributes": [str(a) for a in attrs], "algorithm": algorithm}
    if enc.x.shape[1] == 0:
        return _empty_table(attrs_out)
    # Half a case below min_count: mlxtend's float comparison (count / n >= t) and its ceil(t * n)
    # both give exactly min_count.
    threshold = (min_count - 0.5) / n
    onehot = pd.DataFrame(enc.x, columns=pd.RangeIndex(enc.x.shape[1]))
    if algorithm == "fpgrowth":
        found = fpgrowth(onehot, min_support=threshold, use_colnames=False, max_len=max_len)
    else:
        found = apriori(onehot, min_support=threshold, use_colnames=False, max_len=max_len)
    if len(found) == 0:
        return _empty_table(attrs_out)

    itemsets = [sorted(map(int, fs)) for fs in found["itemsets"]]
    sums, counts = _subgroup_sums(enc, itemsets, s)
    means = sums / counts
    lengths = np.fromiter((len(t) for t in itemsets), dtype=np.int64, count=len(itemsets))

    items = enc.items
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

    the per-sample weight of a FairMedSeg-style reweighting, computed without a cases x subgroups
    membership matrix (:func:`_max_abs_by_keys`: a sorted-key lookup per attribute combination, the same
    numbers as the membership product). A case in no subgroup of the table (its
    attribute values are rarer than ``minsup``, or it has values never mined) gets ``fill_value``,
    0 by default: no subgroup evidence of divergence, i.e. the same weight as a case whose subgroups
    all sit on the overall mean.

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
    itemsets, attributes, cols = _itemset_columns(divergence_table, metadata)
    meta = metadata[[cols[a] for a in attributes]].set_axis(attributes, axis=1)
    best = _max_abs_by_keys(divergence_table.assign(itemset=itemsets), meta, attributes)
    return np.where(np.isneginf(best), float(fill_value), best)


def _max_abs_by_membership(divergence_table: pd.DataFrame, metadata: pd.DataFrame) -> np.ndarray:
    """Per case, max ``|divergence|`` over the subgroups holding it (-inf in none), by the membership
    product of :func:`subgroup_membership` (``O(n k)``; the fallback of :func:`_max_abs_by_keys`)."""
    x, inc, lengths = _membership_inputs(divergence_table, metadata)
    absdiv = np.abs(divergence_table["divergence"].to_numpy(dtype=np.float64))
    best = np.full(len(metadata), -np.inf)
    for start, member in _membership_blocks(x, inc, lengths):
        d = absdiv[start:start + member.shape[0], None]
        best = np.maximum(best, np.where(member, d, -np.inf).max(axis=0, initial=-np.inf))
    return best


def _max_abs_by_keys(table: pd.DataFrame, metadata: pd.DataFrame, attributes: list[str]) -> np.ndarray:
    """Per case of ``metadata``, the largest ``|divergence|`` of the table's subgroups holding it; NaN in none.

    The same numbers as the membership product of :func:`_max_abs_by_membership` (the tests compare
    them), without its ``n_cases x n_subgroups`` cost. A subgroup's items all share one
    attribute set; subgroups are grouped by that set (at most ``2^p - 1`` groups). Per group, each case
    gets one mixed-radix key from its value codes on those attributes (code 0 for a value no subgroup
    uses, so it never matches), each subgroup the key of its own values, and a sorted search finds the
    case's subgroup of that group, if any: ``O(n log k)`` per group instead of ``O(n k)``.
    """
    n = len(metadata)
    if len(table) == 0 or n == 0:
        return np.full(n, -np.inf)
    pos = {str(a): j for j, a in enumerate(attributes)}
    itemsets = [tuple((str(a), str(v)) for a, v in its) for its in table["itemset"]]
    absdiv = np.abs(table["divergence"].to_numpy(dtype=np.float64))
    vocab: list[dict[str, int]] = [{} for _ in attributes]  # value -> code (1, 2, ...) per attribute
    for its in itemsets:
        for a, v in its:
            d = vocab[pos[a]]
            d.setdefault(v, len(d) + 1)
    cards = np.array([len(d) + 1 for d in vocab], dtype=np.int64)
    codes = np.zeros((n, len(attributes)), dtype=np.int64)
    for j, a in enumerate(attributes):
        if vocab[j]:
            values = _normalise_values(metadata[a])  # as subgroup_divergence reads them
            codes[:, j] = pd.Index(list(vocab[j]), dtype=object).get_indexer(values) + 1  # absent: -1 + 1 = 0
    # a case's weight depends only on its codes: work on the distinct code rows, then broadcast back
    if math.prod(int(c) for c in cards) < _MAX_KEY:  # one key per code row, hashed (O(n))
        full_radix = np.concatenate([[1], np.cumprod(cards)[:-1]]).astype(np.int64)
        inverse, keys = pd.factorize(codes @ full_radix)
        codes = (np.asarray(keys, dtype=np.int64)[:, None] // full_radix) % cards
    else:
        codes, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    best = np.full(len(codes), -np.inf)
    groups: dict[tuple[int, ...], list[int]] = {}
    for r, its in enumerate(itemsets):
        groups.setdefault(tuple(sorted(pos[a] for a, _ in its)), []).append(r)
    for attr_idx, rows in groups.items():
        idx = list(attr_idx)
        if math.prod(int(c) for c in cards[idx]) >= _MAX_KEY:
            sub = table.iloc[rows]
            distinct = metadata.iloc[np.unique(inverse, return_index=True)[1]]  # one case per code row
            best = np.maximum(best, _max_abs_by_membership(sub, distinct))
            continue
        radix = np.concatenate([[1], np.cumprod(cards[idx])[:-1]]).astype(np.int64)
        item_codes = np.array([[vocab[pos[a]][v] for a, v in sorted(itemsets[r], key=lambda it: pos[it[0]])]
                               for r in rows], dtype=np.int64)
        item_keys = item_codes @ radix
        order = np.argsort(item_keys, kind="stable")
        keys_sorted, div_sorted = item_keys[order], absdiv[np.asarray(rows)[order]]
        case_keys = codes[:, idx] @ radix
        at = np.minimum(np.searchsorted(keys_sorted, case_keys), len(keys_sorted) - 1)
        hit = keys_sorted[at] == case_keys
        best[hit] = np.maximum(best[hit], div_sorted[at[hit]])
    best = best[inverse]
    return best
