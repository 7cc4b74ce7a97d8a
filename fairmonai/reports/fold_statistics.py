"""Tests on per-fold metric values, Bonferroni families, and which folds every group could be scored in.

FaMI (Sadri et al.) reports each model's metric over ten cross-validation folds and marks a
difference with a star at p < 0.005. This module gives the pieces of that report:

* :func:`compare_folds`: two models' fold values, two-sided Wilcoxon rank-sum (Mann-Whitney U;
  ``scipy.stats.mannwhitneyu``) by default, exact when no value is tied; the paired signed-rank test
  (``scipy.stats.wilcoxon``) on request.
* :func:`comparison_family`: one reference model against several others (Figure 2: FaMI-ViT against
  ViT, FairBatch-ViT, FIN-ViT, FairViT), raw and Bonferroni-adjusted p, the number of comparisons,
  the star and which model is better.
* :func:`best_versus_closest`: Table 2's comparison of the best FaMI model with the closest
  alternative, for one metric and cohort.
* :func:`fold_validity` (and :func:`fold_label_counts`): the folds in which every group had both
  classes, so the report can say "folds where every group had both classes: k of 10".
* :func:`family_markdown`: a family as a Markdown table with its test, threshold and notes.

The exact two-sided rank-sum p of complete separation is ``2 / C(n_a + n_b, n_a)``: ``2/252 =
0.0079`` for 5 against 5 folds, so five folds can never reach the paper's 0.005; ``2/184756 =
1.1e-5`` for 10 against 10.

Fold values are never dropped silently: a NaN (or infinite) fold value is an error naming the
model and the folds, since dropping folds changes ``n`` and the exact p. A fold metric that is
undefined because a group lacks a class has its defined value and warning in the metric itself;
the caller states the folds concerned with :func:`fold_validity`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..validation import EMPTY_INPUT_MSG, check_float, check_option

__all__ = [
    "FOLD_TESTS",
    "FOLD_ALTERNATIVES",
    "PAPER_STAR_THRESHOLD",
    "NON_FINITE_FOLD_MSG",
    "PAIRED_LENGTH_MSG",
    "UNKNOWN_MODEL_MSG",
    "FAMILY_MSG",
    "BAD_COUNTS_MSG",
    "BAD_LABEL_MSG",
    "TIES_NOTE",
    "ZEROS_NOTE",
    "ALL_ZERO_NOTE",
    "FoldComparison",
    "FamilyRow",
    "ComparisonFamily",
    "FoldValidity",
    "compare_folds",
    "comparison_family",
    "best_versus_closest",
    "fold_validity",
    "fold_label_counts",
    "family_markdown",
]

#: The tests :func:`compare_folds` runs: Wilcoxon rank-sum (unpaired) and signed-rank (paired folds).
FOLD_TESTS = ("ranksum", "signedrank")
#: scipy's alternatives: ``"greater"`` means the first sample tends to be larger.
FOLD_ALTERNATIVES = ("two-sided", "less", "greater")
#: The paper's star: p < 0.005.
PAPER_STAR_THRESHOLD = 0.005

NON_FINITE_FOLD_MSG = (
    "{name} has non-finite value(s) at fold(s) {folds}; fold values are not dropped (that changes n and "
    "the exact p): give the metric's defined value or leave those folds out explicitly"
)
PAIRED_LENGTH_MSG = (
    "test 'signedrank' pairs the folds and needs equal lengths; got {n_a} values for {a} and {n_b} for {b}"
)
UNKNOWN_MODEL_MSG = "unknown model {name!r}; values_by_model has {models}"
FAMILY_MSG = "{what}; got {value!r}"
BAD_COUNTS_MSG = (
    "label counts of group {group!r} in fold {fold!r} must be >= 2 non-negative integers (one per class); "
    "got {value!r}"
)
BAD_LABEL_MSG = "y_true must hold class labels 0 .. {top}; got {values}"
TIES_NOTE = "tied values: exact p unavailable, normal approximation with tie and continuity correction"
ZEROS_NOTE = "{k} zero difference(s) dropped (zero_method 'wilcox')"
ALL_ZERO_NOTE = "all differences are zero: p = 1"


@dataclass(frozen=True)
class FoldComparison:
    """Result of :func:`compare_folds`.

    Attributes:
        statistic: scipy's statistic: U of the first sample (rank-sum) or the smaller of the signed
            rank sums (signed-rank, two-sided; scipy's ``statistic`` otherwise).
        p: the p value.
        test: ``"ranksum"`` or ``"signedrank"``.
        alternative: ``"two-sided"``, ``"less"`` or ``"greater"``.
        n_a: number of values of the first sample.
        n_b: number of values of the second sample.
        method: how p was computed: ``"exact"``, ``"asymptotic"`` (rank-sum with ties), ``"approx"``
            (signed-rank with ties) or ``"none"`` (signed-rank, every difference zero).
        note: why the method is not exact, or what was dropped; empty otherwise.
    """

    statistic: float
    p: float
    test: str
    alternative: str
    n_a: int
    n_b: int
    method: str
    note: str = ""


@dataclass(frozen=True)
class FamilyRow:
    """One comparison of a family: the reference model against ``other``.

    Attributes:
        reference, other: model names.
        mean_reference, sd_reference, mean_other, sd_other: fold mean and sample sd (ddof 1; NaN
            with one fold).
        comparison: the :class:`FoldComparison` (reference first).
        p_raw: its p.
        p_bonferroni: ``min(1, m * p_raw)``.
        m: number of comparisons in the family.
        star: ``p_raw < star_threshold`` (the paper's star is on the unadjusted p).
        better: the model with the better mean given ``higher_is_better``; ``None`` for equal means.
    """

    reference: str
    other: str
    mean_reference: float
    sd_reference: float
    mean_other: float
    sd_other: float
    comparison: FoldComparison
    p_raw: float
    p_bonferroni: float
    m: int
    star: bool
    better: str | None


@dataclass(frozen=True)
class ComparisonFamily:
    """The comparisons that share one Bonferroni correction.

    Attributes:
        reference: the model every row compares with.
        rows: one :class:`FamilyRow` per other model, in the order given.
        m: number of comparisons the Bonferroni correction counts.
        test: ``"ranksum"`` or ``"signedrank"``.
        star_threshold: the star's threshold on the raw p.
        higher_is_better: direction of the metric.
    """

    reference: str
    rows: tuple[FamilyRow, ...]
    m: int
    test: str
    star_threshold: float
    higher_is_better: bool


@dataclass(frozen=True)
class FoldValidity:
    """Which folds had every class in every group; from :func:`fold_validity`.

    Attributes:
        folds: the fold labels, in order.
        valid: the folds where every group had every class.
        missing: per other fold, the ``(group, class)`` pairs with no sample.
    """

    folds: tuple[Hashable, ...]
    valid: tuple[Hashable, ...]
    missing: Mapping[Hashable, tuple[tuple[Hashable, int], ...]]

    @property
    def n_valid(self) -> int:
        return len(self.valid)

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def summary(self) -> str:
        """``"folds where every group had both classes: k of n"``."""
        return f"folds where every group had both classes: {self.n_valid} of {self.n_folds}"


def _fold_values(values: Sequence[float], name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).reshape(-1)
    if x.size == 0:
        raise ValueError(EMPTY_INPUT_MSG.format(name=name))
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(NON_FINITE_FOLD_MSG.format(name=name, folds=bad.tolist()))
    return x


def compare_folds(
    a: Sequence[float],
    b: Sequence[float],
    *,
    test: str = "ranksum",
    alternative: str = "two-sided",
    names: tuple[str, str] = ("a", "b"),
) -> FoldComparison:
    """Compare two models' per-fold metric values with a Wilcoxon test.

    ``"ranksum"`` is ``scipy.stats.mannwhitneyu(a, b, method=...)``: ``"exact"`` when no value of
    the pooled sample is tied (scipy's ``"auto"`` would use the normal approximation above 8 values
    per sample, so the method is passed explicitly), ``"asymptotic"`` (tie-corrected, continuity
    correction) otherwise, said in :attr:`FoldComparison.note`. Its statistic is U of ``a``.

    ``"signedrank"`` is ``scipy.stats.wilcoxon(a, b, method=...)`` on the paired differences
    ``a - b`` (fold ``k`` of one model with fold ``k`` of the other): zero differences are dropped
    (scipy's default ``zero_method="wilcox"``, counted in the note), then ``"exact"`` when no two
    absolute differences tie, ``"approx"`` otherwise. With every difference zero p is 1 (method
    ``"none"``).

    With complete separation the exact two-sided rank-sum p is ``2 / C(n_a + n_b, n_a)``: 0.0079
    for 5 against 5 folds (never below the paper's 0.005), 1.08e-5 for 10 against 10.

    Args:
        a: the first model's fold values (finite).
        b: the second model's fold values (finite; as many as ``a`` for ``"signedrank"``).
        test: ``"ranksum"`` (default) or ``"signedrank"``.
        alternative: ``"two-sided"`` (default), ``"less"`` or ``"greater"`` (``a`` tends to be larger).
        names: names of ``a`` and ``b`` in error messages. Default ``("a", "b")``.

    Returns:
        A :class:`FoldComparison`.

    Raises:
        ValueError: ``test`` or ``alternative`` not among :data:`FOLD_TESTS` / :data:`FOLD_ALTERNATIVES`
            (checked first); an empty sample; a NaN or infinite value (:data:`NON_FINITE_FOLD_MSG`,
            naming the folds); ``"signedrank"`` with different lengths (:data:`PAIRED_LENGTH_MSG`).

    Example:
        >>> r = compare_folds([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
        >>> round(r.p, 5), r.method
        (0.00794, 'exact')
    """
    check_option(test, FOLD_TESTS, "test")
    check_option(alternative, FOLD_ALTERNATIVES, "alternative")
    x, y = _fold_values(a, names[0]), _fold_values(b, names[1])
    if test == "ranksum":
        tied = np.unique(np.concatenate([x, y])).size < x.size + y.size
        method = "asymptotic" if tied else "exact"
        res = stats.mannwhitneyu(x, y, alternative=alternative, method=method)
        return FoldComparison(float(res.statistic), float(res.pvalue), test, alternative, x.size, y.size, method,
                              TIES_NOTE if tied else "")
    if x.size != y.size:
        raise ValueError(PAIRED_LENGTH_MSG.format(n_a=x.size, a=names[0], n_b=y.size, b=names[1]))
    d = x - y
    nonzero = np.abs(d[d != 0])
    if nonzero.size == 0:
        return FoldComparison(0.0, 1.0, test, alternative, x.size, y.size, "none", ALL_ZERO_NOTE)
    tied = np.unique(nonzero).size < nonzero.size
    method = "approx" if tied else "exact"
    res = stats.wilcoxon(x, y, alternative=alternative, method=method)
    notes = [TIES_NOTE] if tied else []
    if nonzero.size < d.size:
        notes.append(ZEROS_NOTE.format(k=d.size - nonzero.size))
    return FoldComparison(float(res.statistic), float(res.pvalue), test, alternative, x.size, y.size, method,
                          "; ".join(notes))


def _mean_sd(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def _lookup(values_by_model: Mapping[str, Sequence[float]], name: str) -> np.ndarray:
    if name not in values_by_model:
        raise ValueError(UNKNOWN_MODEL_MSG.format(name=name, models=list(values_by_model)))
    return _fold_values(values_by_model[name], name)


def _better(ref: str, other: str, m_ref: float, m_other: float, higher_is_better: bool) -> str | None:
    if m_ref == m_other:
        return None
    return ref if (m_ref > m_other) == higher_is_better else other


def comparison_family(
    values_by_model: Mapping[str, Sequence[float]],
    *,
    reference: str,
    others: Sequence[str],
    higher_is_better: bool,
    test: str = "ranksum",
    star_threshold: float = PAPER_STAR_THRESHOLD,
    n_comparisons: int | None = None,
) -> ComparisonFamily:
    """Compare ``reference`` with each of ``others`` (two-sided), Bonferroni-corrected over the family.

    For each other model: :func:`compare_folds` (``reference`` first), the raw p, the adjusted
    :math:`p_\\mathrm{Bonf} = \\min(1, m\\,p)` with ``m = len(others)`` comparisons (or
    ``n_comparisons`` when the family is wider than these rows), the star, and the better model by
    fold mean. The star uses the **raw** p, ``p < star_threshold``, as the paper does (p < 0.005,
    with no correction stated); the adjusted p is reported beside it so a reader can apply the
    correction. Figure 2's family is FaMI-ViT against ViT, FairBatch-ViT, FIN-ViT and FairViT
    (``m = 4``).

    Args:
        values_by_model: fold values per model name (finite; the same folds for every model).
        reference: the model compared with every other.
        others: the compared models, in row order; no repeats, not ``reference``.
        higher_is_better: ``True`` for AUC and EOM, ``False`` for EOdd; decides :attr:`FamilyRow.better`.
        test: ``"ranksum"`` (default) or ``"signedrank"`` (see :func:`compare_folds`).
        star_threshold: the star's threshold on the raw p, in (0, 1]. Default 0.005 (the paper's).
        n_comparisons: Bonferroni's ``m`` if larger than ``len(others)``. Default ``None`` (``len(others)``).

    Returns:
        A :class:`ComparisonFamily`.

    Raises:
        ValueError: a bad ``test``, ``star_threshold`` or ``n_comparisons`` (checked first); no
            other model, a repeated one or ``reference`` among them (:data:`FAMILY_MSG`); a model
            not in ``values_by_model`` (:data:`UNKNOWN_MODEL_MSG`); any error of :func:`compare_folds`.
        TypeError: ``higher_is_better`` is not a bool.

    Example:
        >>> fam = comparison_family({"FaMI": [5, 6, 7], "ViT": [1, 2, 3], "FIN": [4, 8, 9]},
        ...                         reference="FaMI", others=["ViT", "FIN"], higher_is_better=True)
        >>> [(r.other, round(r.p_raw, 3), round(r.p_bonferroni, 3), r.better) for r in fam.rows]
        [('ViT', 0.1, 0.2, 'FaMI'), ('FIN', 0.7, 1.0, 'FIN')]
    """
    check_option(test, FOLD_TESTS, "test")
    threshold = check_float(star_threshold, "star_threshold", low=0.0, high=1.0, strict=True)
    if not isinstance(higher_is_better, bool):
        raise TypeError(FAMILY_MSG.format(what="higher_is_better must be True or False", value=higher_is_better))
    others = list(others)
    if not others:
        raise ValueError(FAMILY_MSG.format(what="others must name at least one model", value=others))
    if len(set(others)) < len(others) or reference in others:
        raise ValueError(FAMILY_MSG.format(what=f"others must be distinct models other than the reference "
                                                f"{reference!r}", value=others))
    m = len(others)
    if n_comparisons is not None:
        if isinstance(n_comparisons, bool) or not isinstance(n_comparisons, int) or n_comparisons < m:
            raise ValueError(FAMILY_MSG.format(what=f"n_comparisons must be an int >= len(others) = {m}",
                                               value=n_comparisons))
        m = n_comparisons
    ref = _lookup(values_by_model, reference)
    data = {o: _lookup(values_by_model, o) for o in others}
    m_ref, sd_ref = _mean_sd(ref)
    rows = []
    for o in others:
        c = compare_folds(ref, data[o], test=test, names=(reference, o))
        m_o, sd_o = _mean_sd(data[o])
        rows.append(FamilyRow(reference, o, m_ref, sd_ref, m_o, sd_o, c, c.p, min(1.0, c.p * m), m,
                              c.p < threshold, _better(reference, o, m_ref, m_o, higher_is_better)))
    return ComparisonFamily(reference, tuple(rows), m, test, threshold, higher_is_better)


def best_versus_closest(
    values_by_model: Mapping[str, Sequence[float]],
    *,
    candidates: Sequence[str],
    alternatives: Sequence[str],
    higher_is_better: bool,
    test: str = "ranksum",
    star_threshold: float = PAPER_STAR_THRESHOLD,
    n_comparisons: int = 1,
) -> ComparisonFamily:
    """Table 2's test for one metric and cohort: the best candidate against the closest alternative.

    The best candidate (a FaMI model) has the best fold mean given ``higher_is_better``; the
    closest alternative is the one whose fold mean is nearest to that candidate's (when the
    candidate beats every alternative, this is the best alternative). Ties go to the model listed
    first in ``candidates`` / ``alternatives``. The result is a one-row family; Bonferroni's ``m``
    is ``n_comparisons``, which the caller sets to the number of such tests the table marks (for
    instance 3 metrics x 2 cohorts = 6).

    Args:
        values_by_model: fold values per model name.
        candidates: the models a best one is picked from (FaMI-DN, FaMI-ViT).
        alternatives: the models compared against; disjoint from ``candidates``.
        higher_is_better: ``True`` for AUC and EOM, ``False`` for EOdd.
        test: ``"ranksum"`` (default) or ``"signedrank"``.
        star_threshold: the star's threshold on the raw p. Default 0.005.
        n_comparisons: Bonferroni's ``m``. Default 1.

    Returns:
        A :class:`ComparisonFamily` with ``reference`` the best candidate and one row.

    Raises:
        ValueError: as :func:`comparison_family`; empty ``candidates`` or ``alternatives``, or a
            model in both (:data:`FAMILY_MSG`).
        TypeError: ``higher_is_better`` is not a bool.

    Example:
        >>> fam = best_versus_closest({"FaMI-DN": [3, 4], "FaMI-ViT": [5, 6], "DN": [1, 2], "MINE": [4, 5]},
        ...                           candidates=["FaMI-DN", "FaMI-ViT"], alternatives=["DN", "MINE"],
        ...                           higher_is_better=True)
        >>> fam.reference, fam.rows[0].other
        ('FaMI-ViT', 'MINE')
    """
    check_option(test, FOLD_TESTS, "test")
    if not isinstance(higher_is_better, bool):
        raise TypeError(FAMILY_MSG.format(what="higher_is_better must be True or False", value=higher_is_better))
    candidates, alternatives = list(candidates), list(alternatives)
    if not candidates or not alternatives:
        raise ValueError(FAMILY_MSG.format(what="candidates and alternatives must each name a model",
                                           value=(candidates, alternatives)))
    both = [c for c in candidates if c in alternatives]
    if both:
        raise ValueError(FAMILY_MSG.format(what="candidates and alternatives must be disjoint", value=both))
    means = {name: _lookup(values_by_model, name).mean() for name in candidates + alternatives}
    sign = 1.0 if higher_is_better else -1.0
    best = max(candidates, key=lambda c: sign * means[c])  # max keeps the first of equal keys
    closest = min(alternatives, key=lambda o: abs(means[o] - means[best]))
    return comparison_family(values_by_model, reference=best, others=[closest], higher_is_better=higher_is_better,
                             test=test, star_threshold=star_threshold, n_comparisons=n_comparisons)


def fold_validity(
    label_counts: Sequence[Mapping[Hashable, Sequence[int]]] | Mapping[Hashable, Mapping[Hashable, Sequence[int]]],
) -> FoldValidity:
    """The folds in which every group has at least one sample of every class.

    Args:
        label_counts: per fold (a sequence, folds numbered from 0, or a mapping from fold label),
            a mapping from group to its per-class sample counts ``(n_class0, n_class1, ...)``. A group
            seen in some fold but absent from another counts as having no sample there.

    Returns:
        A :class:`FoldValidity`; ``summary()`` gives the report's sentence.

    Raises:
        ValueError: counts that are not at least two non-negative integers (:data:`BAD_COUNTS_MSG`),
            or no fold (:data:`~fairmonai.validation.EMPTY_INPUT_MSG`).

    Example:
        >>> v = fold_validity([{"A": (3, 2), "B": (4, 1)}, {"A": (3, 0), "B": (2, 2)}])
        >>> v.summary(), dict(v.missing)
        ('folds where every group had both classes: 1 of 2', {1: (('A', 1),)})
    """
    items = list(label_counts.items()) if isinstance(label_counts, Mapping) else list(enumerate(label_counts))
    if not items:
        raise ValueError(EMPTY_INPUT_MSG.format(name="label_counts"))
    n_classes = 0
    for fold, groups in items:
        for g, counts in groups.items():
            c = list(counts)
            if len(c) < 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in c):
                raise ValueError(BAD_COUNTS_MSG.format(group=g, fold=fold, value=counts))
            n_classes = max(n_classes, len(c))
    all_groups = list(dict.fromkeys(g for _, groups in items for g in groups))
    valid, missing = [], {}
    for fold, groups in items:
        lacks = []
        for g in all_groups:
            c = list(groups.get(g, ()))
            c += [0] * (n_classes - len(c))
            lacks += [(g, k) for k in range(n_classes) if c[k] == 0]
        if lacks:
            missing[fold] = tuple(lacks)
        else:
            valid.append(fold)
    return FoldValidity(tuple(f for f, _ in items), tuple(valid), missing)


def fold_label_counts(
    y_true: Sequence[int], *, sensitive_features: Sequence[Hashable], folds: Sequence[Hashable], num_classes: int = 2
) -> dict[Hashable, dict[Hashable, tuple[int, ...]]]:
    """Per fold and group, the number of samples of each class: the input of :func:`fold_validity`.

    Only groups with a sample in a fold appear under it; :func:`fold_validity` treats a missing
    group as having no sample.

    Args:
        y_true: class labels ``0 .. num_classes - 1``, one per sample.
        sensitive_features: group of each sample.
        folds: fold of each sample (the held-out fold it is scored in).
        num_classes: number of classes. Default 2.

    Raises:
        ValueError: inputs of different lengths or empty (``check_lengths``), or a label outside
            ``0 .. num_classes - 1`` (:data:`BAD_LABEL_MSG`).

    Example:
        >>> fold_label_counts([0, 1, 1, 0], sensitive_features=["A", "A", "B", "B"], folds=[0, 0, 0, 1])
        {0: {'A': (1, 1), 'B': (0, 1)}, 1: {'B': (1, 0)}}
    """
    from ..validation import check_lengths

    y = np.asarray(y_true)
    g, f = np.asarray(sensitive_features, dtype=object), np.asarray(folds, dtype=object)
    check_lengths(y_true=y, sensitive_features=g, folds=f)
    if not np.all((y >= 0) & (y < num_classes) & (y == np.round(y))):
        raise ValueError(BAD_LABEL_MSG.format(top=num_classes - 1, values=sorted(set(y.tolist()))))
    out: dict[Hashable, dict[Hashable, list[int]]] = {}
    for label, group, fold in zip(y.astype(int).tolist(), g.tolist(), f.tolist()):
        out.setdefault(fold, {}).setdefault(group, [0] * num_classes)[label] += 1
    return {fold: {grp: tuple(c) for grp, c in groups.items()} for fold, groups in out.items()}


_TEST_NAMES = {"ranksum": "Wilcoxon rank-sum (Mann-Whitney U)", "signedrank": "Wilcoxon signed-rank (paired folds)"}


def _p(p: float) -> str:
    return f"{p:.3g}"


def family_markdown(family: ComparisonFamily, *, metric: str | None = None, digits: int = 3) -> str:
    """A family as a Markdown table: model, mean ± sd, p raw, p Bonferroni, m, star, better.

    The reference model is the first row (no p); below the table, the test and how its p was
    computed, the star's rule (on the raw p) and the Bonferroni rule, and any notes (ties, dropped
    zero differences).

    Args:
        family: from :func:`comparison_family` or :func:`best_versus_closest`.
        metric: the metric's name for the header (``None``: "mean ± sd").
        digits: decimals of the means and sds. Default 3.

    Example:
        >>> fam = comparison_family({"FaMI": [5, 6, 7], "ViT": [1, 2, 3]}, reference="FaMI", others=["ViT"],
        ...                         higher_is_better=True)
        >>> print(family_markdown(fam, metric="AUC", digits=1).splitlines()[3])
        | ViT | 2.0 ± 1.0 | 0.1 | 0.1 | 1 |  | FaMI |
    """
    head = f"{metric} mean ± sd" if metric else "mean ± sd"
    lines = [f"| model | {head} | p raw | p Bonferroni | m | star | better |",
             "|---|---|---|---|---|---|---|"]

    def ms(mean: float, sd: float) -> str:
        return f"{mean:.{digits}f} ± {sd:.{digits}f}"

    if family.rows:
        r0 = family.rows[0]
        lines.append(f"| {family.reference} | {ms(r0.mean_reference, r0.sd_reference)} | (reference) | | | | |")
    for r in family.rows:
        lines.append(f"| {r.other} | {ms(r.mean_other, r.sd_other)} | {_p(r.p_raw)} | {_p(r.p_bonferroni)} | {r.m} "
                     f"| {'*' if r.star else ''} | {r.better or 'equal means'} |")
    methods = sorted({r.comparison.method for r in family.rows})
    lines += ["",
              f"{family.reference} against each row: two-sided {_TEST_NAMES[family.test]}, p {', '.join(methods)}; "
              f"* raw p < {family.star_threshold:g}; p Bonferroni = min(1, m p) with m = {family.m}; "
              f"{'higher' if family.higher_is_better else 'lower'} is better."]
    lines += [f"{r.other}: {r.comparison.note}." for r in family.rows if r.comparison.note]
    return "\n".join(lines) + "\n"
