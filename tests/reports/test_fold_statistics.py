"""Fold statistics: p values checked by hand (enumerating rank arrangements) and against scipy,
Bonferroni arithmetic, the star, direction, fold validity and the Markdown table."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from fairmonai.reports import (
    ALL_ZERO_NOTE,
    BAD_COUNTS_MSG,
    BAD_LABEL_MSG,
    FAMILY_MSG,
    NON_FINITE_FOLD_MSG,
    PAIRED_LENGTH_MSG,
    TIES_NOTE,
    UNKNOWN_MODEL_MSG,
    ZEROS_NOTE,
    best_versus_closest,
    compare_folds,
    comparison_family,
    family_markdown,
    fold_label_counts,
    fold_validity,
)
from fairmonai.validation import BAD_OPTION_MSG


def _exact_ranksum_p(a, b):
    """Two-sided exact rank-sum p by enumerating every split of the pooled (untied) values' ranks."""
    ranks = stats.rankdata(np.concatenate([a, b]))
    n_a = len(a)
    shift = n_a * (n_a + 1) / 2
    u_obs, mean_u = ranks[:n_a].sum() - shift, n_a * len(b) / 2
    us = np.array([sum(c) for c in itertools.combinations(range(1, len(ranks) + 1), n_a)]) - shift
    return float(np.mean(np.abs(us - mean_u) >= abs(u_obs - mean_u) - 1e-9))


def test_complete_separation_five_folds_cannot_reach_the_paper_threshold():
    r = compare_folds([0.71, 0.72, 0.73, 0.74, 0.75], [0.81, 0.82, 0.83, 0.84, 0.85])
    # two of the C(10, 5) = 252 splits are as extreme: p = 2/252 = 0.00794 > 0.005
    assert r.p == pytest.approx(2 / 252) and r.p == pytest.approx(0.00794, abs=1e-5)
    assert (r.statistic, r.method, r.test, r.n_a, r.n_b, r.note) == (0.0, "exact", "ranksum", 5, 5, "")
    fam = comparison_family({"FaMI": [0.81, 0.82, 0.83, 0.84, 0.85], "ViT": [0.71, 0.72, 0.73, 0.74, 0.75]},
                            reference="FaMI", others=["ViT"], higher_is_better=True)
    assert not fam.rows[0].star


def test_complete_separation_ten_folds():
    a, b = np.arange(10) / 100 + 0.9, np.arange(10) / 100 + 0.5
    r = compare_folds(a, b)
    assert r.p == pytest.approx(2 / 184756) and r.statistic == 100.0 and r.method == "exact"


def test_exact_p_by_enumeration_where_scipy_auto_would_approximate():
    rng = np.random.default_rng(0)
    a, b = np.round(rng.normal(0.80, 0.02, 10), 4), np.round(rng.normal(0.79, 0.02, 10), 4)
    assert np.unique(np.concatenate([a, b])).size == 20
    r = compare_folds(a, b)
    assert r.p == pytest.approx(_exact_ranksum_p(a, b))
    assert r.p == pytest.approx(stats.mannwhitneyu(a, b, method="exact").pvalue)
    # scipy's "auto" uses the normal approximation above 8 per sample: a different number
    assert abs(r.p - stats.mannwhitneyu(a, b).pvalue) > 1e-4


def test_small_exact_case_by_hand():
    # U of [5, 6, 7] against [4, 8, 9] is 3; U <= 3 in 1 + 1 + 2 + 3 = 7 of the 20 splits: p = 2 * 7/20
    r = compare_folds([5, 6, 7], [4, 8, 9])
    assert r.statistic == 3.0 and r.p == pytest.approx(0.7)
    # one-sided: a larger in 7/20 of the splits or more extreme
    assert compare_folds([5, 6, 7], [4, 8, 9], alternative="less").p == pytest.approx(0.35)


def test_ties_use_the_asymptotic_test_and_say_so():
    a, b = [0.80, 0.82, 0.82, 0.85, 0.90], [0.78, 0.80, 0.81, 0.83, 0.84]
    r = compare_folds(a, b)
    ref = stats.mannwhitneyu(a, b, method="asymptotic")
    assert (r.method, r.note) == ("asymptotic", TIES_NOTE)
    assert r.p == pytest.approx(ref.pvalue) and r.statistic == pytest.approx(ref.statistic)


def test_signed_rank_exact_by_hand():
    # all five differences positive, distinct |d|: 2 of 2^5 sign patterns as extreme, p = 2/32
    r = compare_folds([2, 4, 6, 8, 10], [1, 2, 3, 4, 5], test="signedrank")
    assert (r.p, r.statistic, r.method, r.note) == (pytest.approx(0.0625), 0.0, "exact", "")
    # one zero difference is dropped: 4 left, p = 2/16
    r = compare_folds([1, 3, 5, 7, 9], [1, 2, 3, 4, 5], test="signedrank")
    assert r.p == pytest.approx(0.125) and r.note == ZEROS_NOTE.format(k=1)
    assert r.note == "1 zero difference(s) dropped (zero_method 'wilcox')"


def test_signed_rank_ties_and_all_zero():
    a, b = [1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 7, 4]
    r = compare_folds(a, b, test="signedrank")
    assert r.method == "approx" and r.note == TIES_NOTE
    assert r.p == pytest.approx(stats.wilcoxon(a, b, method="approx").pvalue)
    r = compare_folds([1, 2, 3], [1, 2, 3], test="signedrank")
    assert (r.p, r.method, r.note) == (1.0, "none", ALL_ZERO_NOTE)


def test_paired_length_mismatch():
    with pytest.raises(ValueError) as err:
        compare_folds([1, 2, 3], [1, 2], test="signedrank", names=("FaMI-ViT", "ViT"))
    assert str(err.value) == PAIRED_LENGTH_MSG.format(n_a=3, a="FaMI-ViT", n_b=2, b="ViT")
    assert str(err.value) == ("test 'signedrank' pairs the folds and needs equal lengths; "
                              "got 3 values for FaMI-ViT and 2 for ViT")


def test_nan_fold_is_an_error_naming_the_folds():
    with pytest.raises(ValueError) as err:
        compare_folds([0.8, math.nan, 0.7, math.inf], [0.6, 0.7], names=("FIN-ViT", "ViT"))
    assert str(err.value) == NON_FINITE_FOLD_MSG.format(name="FIN-ViT", folds=[1, 3])


@pytest.mark.parametrize("kwargs, name, value, allowed", [
    ({"test": "ttest"}, "test", "ttest", ["ranksum", "signedrank"]),
    ({"alternative": "both"}, "alternative", "both", ["two-sided", "less", "greater"]),
])
def test_ill_opts(kwargs, name, value, allowed):
    with pytest.raises(ValueError) as err:
        compare_folds([1, 2], [3, 4], **kwargs)
    assert str(err.value) == BAD_OPTION_MSG.format(name=name, value=value, allowed=allowed)
    assert str(err.value) == f"unknown {name} {value!r}; allowed values: {allowed}"
    if name == "test":  # checked before the inputs: the bad option wins over a NaN
        with pytest.raises(ValueError, match="unknown test"):
            comparison_family({"a": [math.nan]}, reference="a", others=["b"], higher_is_better=True, test=value)


def _figure2_values():
    sep = np.arange(10) / 1000
    return {"FaMI-ViT": 0.90 + sep, "ViT": 0.80 + sep, "FairBatch-ViT": 0.8955 + sep,
            "FIN-ViT": 0.90 + sep, "FairViT": 0.95 + sep}


def test_bonferroni_star_and_direction():
    fam = comparison_family(_figure2_values(), reference="FaMI-ViT",
                            others=["ViT", "FairBatch-ViT", "FIN-ViT", "FairViT"], higher_is_better=True)
    assert fam.m == 4 and [r.m for r in fam.rows] == [4, 4, 4, 4]
    rows = {r.other: r for r in fam.rows}
    assert rows["ViT"].p_raw == pytest.approx(2 / 184756)
    assert rows["ViT"].p_bonferroni == pytest.approx(4 * 2 / 184756)
    assert rows["ViT"].star and rows["FairViT"].star
    # FairBatch-ViT interleaves with FaMI-ViT: fold i of FaMI beats folds j <= i + 4 of FairBatch, U = 85
    assert rows["FairBatch-ViT"].comparison.statistic == 85.0
    for r in fam.rows:
        if r.comparison.method == "exact":
            ref = _figure2_values()
            assert r.p_raw == pytest.approx(_exact_ranksum_p(ref["FaMI-ViT"], ref[r.other]))
        assert r.p_bonferroni == pytest.approx(min(1.0, 4 * r.p_raw))
    assert rows["FIN-ViT"].p_raw == pytest.approx(1.0) and rows["FIN-ViT"].p_bonferroni == 1.0
    assert not rows["FIN-ViT"].star and rows["FIN-ViT"].comparison.method == "asymptotic"
    assert [rows[k].better for k in ("ViT", "FairBatch-ViT", "FIN-ViT", "FairViT")] == [
        "FaMI-ViT", "FaMI-ViT", None, "FairViT"]
    assert rows["ViT"].mean_reference == pytest.approx(0.9045)
    assert rows["ViT"].sd_other == pytest.approx(np.std(np.arange(10) / 1000, ddof=1))
    # EOdd: lower is better, so the directions flip
    low = comparison_family(_figure2_values(), reference="FaMI-ViT", others=["ViT", "FairViT"],
                            higher_is_better=False)
    assert [r.better for r in low.rows] == ["ViT", "FaMI-ViT"]


def test_star_uses_raw_p_and_threshold():
    vals = {"a": [5, 6, 7, 8, 9], "b": [0, 1, 2, 3, 4]}  # p = 2/252 = 0.00794
    assert not comparison_family(vals, reference="a", others=["b"], higher_is_better=True).rows[0].star
    assert comparison_family(vals, reference="a", others=["b"], higher_is_better=True,
                             star_threshold=0.01).rows[0].star
    # raw 0.00794 < 0.01 but adjusted min(1, 0.00794 * 3) = 0.0238 is not: the star stays
    r = comparison_family(vals, reference="a", others=["b"], higher_is_better=True, star_threshold=0.01,
                          n_comparisons=3).rows[0]
    assert r.star and r.m == 3 and r.p_bonferroni == pytest.approx(6 / 252)


def test_family_errors():
    vals = {"a": [1, 2], "b": [3, 4]}
    with pytest.raises(ValueError) as err:
        comparison_family(vals, reference="a", others=["c"], higher_is_better=True)
    assert str(err.value) == UNKNOWN_MODEL_MSG.format(name="c", models=["a", "b"])
    with pytest.raises(ValueError) as err:
        comparison_family(vals, reference="a", others=["a", "b"], higher_is_better=True)
    assert str(err.value) == FAMILY_MSG.format(
        what="others must be distinct models other than the reference 'a'", value=["a", "b"])
    with pytest.raises(ValueError, match="others must name at least one model"):
        comparison_family(vals, reference="a", others=[], higher_is_better=True)
    with pytest.raises(ValueError, match=r"n_comparisons must be an int >= len\(others\) = 1; got 0"):
        comparison_family(vals, reference="a", others=["b"], higher_is_better=True, n_comparisons=0)
    with pytest.raises(ValueError, match=r"star_threshold must be a finite number in \(0.0, 1.0\]; got 0"):
        comparison_family(vals, reference="a", others=["b"], higher_is_better=True, star_threshold=0)
    with pytest.raises(TypeError, match="higher_is_better must be True or False; got 'yes'"):
        comparison_family(vals, reference="a", others=["b"], higher_is_better="yes")


def test_best_versus_closest():
    vals = {"FaMI-DN": [0.80, 0.81, 0.82], "FaMI-ViT": [0.85, 0.86, 0.87],
            "DN": [0.70, 0.71, 0.72], "MINE-DN": [0.83, 0.84, 0.845], "MIGE-ViT": [0.93, 0.94, 0.95]}
    # AUC: FaMI-ViT best (0.86); alternatives' means 0.71, 0.838, 0.94: nearest is MINE-DN (0.022 away)
    fam = best_versus_closest(vals, candidates=["FaMI-DN", "FaMI-ViT"], alternatives=["DN", "MINE-DN", "MIGE-ViT"],
                              higher_is_better=True, n_comparisons=6)
    assert (fam.reference, fam.rows[0].other, fam.m) == ("FaMI-ViT", "MINE-DN", 6)
    assert fam.rows[0].p_raw == pytest.approx(2 / 20) and fam.rows[0].p_bonferroni == pytest.approx(0.6)
    # EOdd: lower is better, FaMI-DN best (0.81); nearest alternative DN (0.10 away; MIGE-ViT 0.13),
    # which is better (lower) than FaMI-DN
    fam = best_versus_closest(vals, candidates=["FaMI-DN", "FaMI-ViT"], alternatives=["DN", "MIGE-ViT"],
                              higher_is_better=False)
    assert (fam.reference, fam.rows[0].other, fam.rows[0].better, fam.m) == ("FaMI-DN", "DN", "DN", 1)
    # ties: the first listed wins
    tied = {"F1": [1, 2], "F2": [2, 1], "A": [0, 1], "B": [2, 3]}  # A and B both 1.0 from 1.5
    fam = best_versus_closest(tied, candidates=["F2", "F1"], alternatives=["B", "A"], higher_is_better=True)
    assert (fam.reference, fam.rows[0].other) == ("F2", "B")
    with pytest.raises(ValueError, match=r"candidates and alternatives must be disjoint; got \['F1'\]"):
        best_versus_closest(tied, candidates=["F1"], alternatives=["F1", "A"], higher_is_better=True)


def test_fold_validity_by_hand():
    counts = [
        {"White": (40, 10), "Black": (8, 2), "Asian": (5, 1)},
        {"White": (41, 9), "Black": (10, 0), "Asian": (6, 1)},  # Black has no positive
        {"White": (40, 10), "Black": (9, 2)},                   # Asian absent: neither class
        {"White": (40, 10), "Black": (9, 1), "Asian": (0, 2)},  # Asian has no negative
        {"White": (39, 11), "Black": (8, 3), "Asian": (4, 2)},
    ]
    v = fold_validity(counts)
    assert v.valid == (0, 4) and (v.n_valid, v.n_folds) == (2, 5)
    assert dict(v.missing) == {1: (("Black", 1),), 2: (("Asian", 0), ("Asian", 1)), 3: (("Asian", 0),)}
    assert v.summary() == "folds where every group had both classes: 2 of 5"
    # fold labels from a mapping
    v = fold_validity({"fold3": counts[0], "fold7": counts[1]})
    assert v.folds == ("fold3", "fold7") and v.valid == ("fold3",)
    with pytest.raises(ValueError) as err:
        fold_validity([{"A": (3, -1)}])
    assert str(err.value) == BAD_COUNTS_MSG.format(group="A", fold=0, value=(3, -1))


def test_fold_label_counts_feeds_fold_validity():
    y = [0, 1, 1, 0, 0, 1, 1, 0]
    g = ["A", "A", "B", "B", "A", "A", "B", "B"]
    f = [0, 0, 0, 0, 1, 1, 1, 1]
    counts = fold_label_counts(y, sensitive_features=g, folds=f)
    assert counts == {0: {"A": (1, 1), "B": (1, 1)}, 1: {"A": (1, 1), "B": (1, 1)}}
    counts = fold_label_counts([0, 1, 1, 1], sensitive_features=["A", "A", "B", "B"], folds=[0, 0, 0, 1])
    assert counts == {0: {"A": (1, 1), "B": (0, 1)}, 1: {"B": (0, 1)}}
    assert fold_validity(counts).summary() == "folds where every group had both classes: 0 of 2"
    with pytest.raises(ValueError) as err:
        fold_label_counts([0, 2], sensitive_features=["A", "B"], folds=[0, 0])
    assert str(err.value) == BAD_LABEL_MSG.format(top=1, values=[0, 2])
    assert str(err.value) == "y_true must hold class labels 0 .. 1; got [0, 2]"


def test_family_markdown():
    vals = {"FaMI": [0.9, 0.8, 0.7], "ViT": [0.1, 0.2, 0.3], "FIN": [0.9, 0.8, 0.7]}
    md = family_markdown(comparison_family(vals, reference="FaMI", others=["ViT", "FIN"], higher_is_better=True),
                         metric="AUC", digits=2)
    assert md.splitlines() == [
        "| model | AUC mean ± sd | p raw | p Bonferroni | m | star | better |",
        "|---|---|---|---|---|---|---|",
        "| FaMI | 0.80 ± 0.10 | (reference) | | | | |",
        "| ViT | 0.20 ± 0.10 | 0.1 | 0.2 | 2 |  | FaMI |",
        "| FIN | 0.80 ± 0.10 | 1 | 1 | 2 |  | equal means |",
        "",
        "FaMI against each row: two-sided Wilcoxon rank-sum (Mann-Whitney U), p asymptotic, exact; "
        "* raw p < 0.005; p Bonferroni = min(1, m p) with m = 2; higher is better.",
        f"FIN: {TIES_NOTE}.",
    ]
