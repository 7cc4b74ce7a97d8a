"""Subgroup divergence: hand-computed tables, DivExplorer cross-check, per-sample weights, ill inputs."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from fairmonai.metrics import (
    DIVERGENCE_COLUMNS,
    divergence_weights,
    max_abs_divergence_per_sample,
    subgroup_divergence,
    subgroup_membership,
)
from fairmonai.metrics._subgroups import ALL_ZERO_MSG

# Six cases, two attributes, one missing site (-> the item site=unknown).
#   case  sex  site  score
#   0     F    A     1.0
#   1     F    A     0.8
#   2     F    B     0.6
#   3     M    B     0.4
#   4     M    B     0.2
#   5     M    NaN   0.0
# overall mean = 3.0 / 6 = 0.5
META = pd.DataFrame({"sex": list("FFFMMM"), "site": ["A", "A", "B", "B", "B", np.nan]})
SCORES = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
# minsup = 1/6 keeps every observed subgroup; sorted by divergence (ties: support desc, then name):
#   subgroup                 members   count  mean  divergence
#   sex=M & site=unknown     {5}       1      0.0   -0.5   ("sex=..." sorts before "site=...")
#   site=unknown             {5}       1      0.0   -0.5
#   sex=M                    {3,4,5}   3      0.2   -0.3
#   sex=M & site=B           {3,4}     2      0.3   -0.2
#   site=B                   {2,3,4}   3      0.4   -0.1
#   sex=F & site=B           {2}       1      0.6   +0.1
#   sex=F                    {0,1,2}   3      0.8   +0.3
#   sex=F & site=A           {0,1}     2      0.9   +0.4
#   site=A                   {0,1}     2      0.9   +0.4
HAND = [
    ("sex=M & site=unknown", (("sex", "M"), ("site", "unknown")), 1, 0.0, -0.5),
    ("site=unknown", (("site", "unknown"),), 1, 0.0, -0.5),
    ("sex=M", (("sex", "M"),), 3, 0.2, -0.3),
    ("sex=M & site=B", (("sex", "M"), ("site", "B")), 2, 0.3, -0.2),
    ("site=B", (("site", "B"),), 3, 0.4, -0.1),
    ("sex=F & site=B", (("sex", "F"), ("site", "B")), 1, 0.6, 0.1),
    ("sex=F", (("sex", "F"),), 3, 0.8, 0.3),
    ("sex=F & site=A", (("sex", "F"), ("site", "A")), 2, 0.9, 0.4),
    ("site=A", (("site", "A"),), 2, 0.9, 0.4),
]


@pytest.mark.parametrize("algorithm", ["fpgrowth", "apriori"])
def test_hand_table(algorithm):
    t = subgroup_divergence(SCORES, metadata=META, minsup=1 / 6, algorithm=algorithm)
    assert tuple(t.columns) == DIVERGENCE_COLUMNS
    assert t["subgroup"].tolist() == [h[0] for h in HAND]
    assert t["itemset"].tolist() == [h[1] for h in HAND]
    assert t["count"].tolist() == [h[2] for h in HAND]
    assert t["length"].tolist() == [len(h[1]) for h in HAND]
    np.testing.assert_allclose(t["mean"], [h[3] for h in HAND], atol=1e-12)
    np.testing.assert_allclose(t["divergence"], [h[4] for h in HAND], atol=1e-12)
    np.testing.assert_allclose(t["support"], [h[2] / 6 for h in HAND])
    assert t.attrs["overall_mean"] == pytest.approx(0.5)
    assert t.attrs["n"] == 6 and t.attrs["min_count"] == 1


def test_minsup_threshold_is_an_integer_count():
    # minsup 2/6 -> at least 2 cases: the three one-case subgroups go
    t = subgroup_divergence(SCORES, metadata=META, minsup=2 / 6)
    assert sorted(t["subgroup"]) == sorted(h[0] for h in HAND if h[2] >= 2)
    # 0.1 * 30 is 3.0000000000000004 in floating point; the threshold is still 3 cases
    meta = pd.DataFrame({"a": ["x"] * 3 + ["y"] * 27, "b": ["p"] * 3 + ["q"] * 27})
    t = subgroup_divergence(np.arange(30.0), metadata=meta, minsup=0.1)
    assert t.attrs["min_count"] == 3
    assert "a=x & b=p" in set(t["subgroup"])


def test_sort_order_options_and_max_len():
    t = subgroup_divergence(SCORES, metadata=META, minsup=1 / 6, ascending=False)
    assert t["divergence"].is_monotonic_decreasing
    t1 = subgroup_divergence(SCORES, metadata=META, minsup=1 / 6, max_len=1)
    assert set(t1["length"]) == {1} and len(t1) == 5
    t2 = subgroup_divergence(SCORES, metadata=META, minsup=1 / 6, ignore_values=("unknown",))
    assert not any("unknown" in s for s in t2["subgroup"]) and len(t2) == 7
    t3 = subgroup_divergence(SCORES, metadata=META, minsup=1 / 6, attributes=["site"])
    assert sorted(t3["subgroup"]) == ["site=A", "site=B", "site=unknown"]


def test_inputs_torch_categorical_and_missing_tokens():
    meta = META.copy()
    meta["sex"] = pd.Categorical(meta["sex"], categories=["M", "F"])
    meta["site"] = ["A", "A", "B", "B", "B", ""]  # an empty cell reads as missing -> unknown
    t = subgroup_divergence(torch.tensor(SCORES), metadata=meta, minsup=1 / 6)
    assert t["subgroup"].tolist() == [h[0] for h in HAND]
    # integer-valued attributes are compared as strings
    t = subgroup_divergence(SCORES, metadata=pd.DataFrame({"g": [1, 1, 1, 2, 2, 2]}), minsup=0.5)
    assert t["subgroup"].tolist() == ["g=2", "g=1"]


def test_no_frequent_subgroup_gives_an_empty_table():
    meta = pd.DataFrame({"a": list("abcdef")})
    t = subgroup_divergence(SCORES, metadata=meta, minsup=0.5)
    assert len(t) == 0 and tuple(t.columns) == DIVERGENCE_COLUMNS
    assert t.attrs["overall_mean"] == pytest.approx(0.5)
    assert max_abs_divergence_per_sample(t, metadata=meta).tolist() == [0.0] * 6


def _divexplorer_table(scores, meta, minsup, algorithm="fpgrowth"):
    divexplorer = pytest.importorskip("divexplorer")
    df = meta.copy()
    df["score"] = scores
    with warnings.catch_warnings():  # pandas 3 deprecates the inplace= DivExplorer 0.2.6 uses
        warnings.simplefilter("ignore")
        out = divexplorer.DivergenceExplorer(df).get_pattern_divergence(
            min_support=minsup, quantitative_outcomes=["score"], FPM_algorithm=algorithm)
    # DivExplorer adds the whole cohort as the empty itemset (divergence 0); its score_div is the
    # subgroup mean minus the overall mean, as ours
    return {fs: (d, c) for fs, d, c in zip(out["itemset"], out["score_div"], out["support_count"]) if len(fs)}


@pytest.mark.parametrize("seed,minsup", [(0, 0.03), (1, 0.1), (2, 0.011)])
def test_same_as_divexplorer_on_random_table(seed, minsup):
    # 97 cases: minsup * 97 is never within float error of an integer, where DivExplorer's single-item
    # and longer-itemset thresholds disagree (see the module docstring)
    rng = np.random.default_rng(seed)
    n = 97
    meta = pd.DataFrame({
        "age_group": rng.choice(["0-40", "41-50", "51-60", "61-70", "71+"], n, p=[0.1, 0.3, 0.3, 0.2, 0.1]),
        "menopausal_status": rng.choice(["pre", "post", "unknown"], n),
        "breast_density": rng.choice(["a", "b", "c", "d", "unknown"], n, p=[0.05, 0.2, 0.3, 0.15, 0.3]),
    })
    scores = rng.random(n)
    ours = subgroup_divergence(scores, metadata=meta, minsup=minsup)
    theirs = _divexplorer_table(scores, meta, minsup)
    mine = {frozenset(f"{a}={v}" for a, v in its): (d, c)
            for its, d, c in zip(ours["itemset"], ours["divergence"], ours["count"])}
    assert mine.keys() == theirs.keys()
    for k in mine:
        assert mine[k][0] == pytest.approx(theirs[k][0], abs=1e-12)
        assert mine[k][1] == theirs[k][1]
    # our apriori finds the same
    ours_ap = subgroup_divergence(scores, metadata=meta, minsup=minsup, algorithm="apriori")
    assert set(ours_ap["subgroup"]) == set(ours["subgroup"])


def test_counts_and_means_equal_a_direct_mask_per_subgroup():
    # every subgroup's count and mean against pandas masks built one subgroup at a time
    rng = np.random.default_rng(3)
    meta = pd.DataFrame({c: rng.choice(list("abcd"), 60) for c in "xyz"})
    scores = rng.random(60)
    t = subgroup_divergence(scores, metadata=meta, minsup=0.02)
    assert len(t) > 50
    for its, count, mean, div in zip(t["itemset"], t["count"], t["mean"], t["divergence"]):
        mask = np.logical_and.reduce([meta[a].to_numpy() == v for a, v in its])
        assert count == mask.sum()
        assert mean == pytest.approx(scores[mask].mean(), abs=1e-12)
        assert div == pytest.approx(scores[mask].mean() - scores.mean(), abs=1e-12)


# ----------------------------------------------------------------------------------------------------
# per sample
# ----------------------------------------------------------------------------------------------------

def test_membership_matches_a_direct_check():
    t = subgroup_divergence(SCORES, metadata=META, minsup=1 / 6)
    m = subgroup_membership(t, metadata=META)
    assert m.shape == (6, len(HAND)) and m.dtype == bool
    filled = META.fillna("unknown")
    for j, its in enumerate(t["itemset"]):
        direct = np.logical_and.reduce([filled[a].to_numpy() == v for a, v in its])
        assert (m[:, j] == direct).all()
    np.testing.assert_array_equal(m.sum(axis=0), t["count"])
    # plain itemsets work too; the empty itemset holds every case
    m2 = subgroup_membership([(("sex", "F"),), ()], metadata=META)
    assert m2[:, 0].tolist() == [True] * 3 + [False] * 3 and m2[:, 1].all()


def test_max_abs_divergence_per_sample_hand_values():
    t = subgroup_divergence(SCORES, metadata=META, minsup=1 / 6)
    # case 0, 1: sex=F 0.3, site=A 0.4, sex=F & site=A 0.4        -> 0.4
    # case 2:    sex=F 0.3, site=B 0.1, sex=F & site=B 0.1        -> 0.3
    # case 3, 4: sex=M 0.3, site=B 0.1, sex=M & site=B 0.2        -> 0.3
    # case 5:    sex=M 0.3, site=unknown 0.5, sex=M & unknown 0.5 -> 0.5
    w = max_abs_divergence_per_sample(t, metadata=META)
    np.testing.assert_allclose(w, [0.4, 0.4, 0.3, 0.3, 0.3, 0.5], atol=1e-12)
    # at minsup 2/6 the one-case subgroups are gone: case 5 keeps sex=M only -> 0.3
    w2 = max_abs_divergence_per_sample(subgroup_divergence(SCORES, metadata=META, minsup=2 / 6), metadata=META)
    np.testing.assert_allclose(w2, [0.4, 0.4, 0.3, 0.3, 0.3, 0.3], atol=1e-12)


def test_max_abs_divergence_sample_in_no_subgroup():
    t = subgroup_divergence(SCORES, metadata=META, minsup=1 / 6)
    new = pd.DataFrame({"sex": ["X", "F"], "site": ["C", "C"], "other": [1, 2]})
    # "X"/"C" are in no mined subgroup -> fill_value; ("F", "C") is in sex=F only -> 0.3
    np.testing.assert_allclose(max_abs_divergence_per_sample(t, metadata=new), [0.0, 0.3], atol=1e-12)
    np.testing.assert_allclose(max_abs_divergence_per_sample(t, metadata=new, fill_value=1.0), [1.0, 0.3],
                               atol=1e-12)
    # a filtered table (only pairs)
    pairs = t[t["length"] == 2]
    np.testing.assert_allclose(max_abs_divergence_per_sample(pairs, metadata=META),
                               [0.4, 0.4, 0.1, 0.2, 0.2, 0.5], atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# ill inputs
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs,err,msg",
    [
        ({"algorithm": "eclat"}, ValueError, "algorithm must be one of ['fpgrowth', 'apriori'], got 'eclat'."),
        ({"minsup": 0}, ValueError, "minsup must be a number in (0, 1], got 0."),
        ({"minsup": 1.5}, ValueError, "minsup must be a number in (0, 1], got 1.5."),
        ({"minsup": "0.1"}, ValueError, "minsup must be a number in (0, 1], got '0.1'."),
        ({"max_len": 0}, ValueError, "max_len must be None or an integer >= 1, got 0."),
        ({"metadata": META.to_dict()}, TypeError, "metadata must be a pandas DataFrame, got dict."),
        ({"metadata": META.iloc[:0], "scores": []}, ValueError, "metadata has no rows: there is nothing to score."),
        ({"attributes": []}, ValueError, "no attributes to mine: metadata has no columns (or attributes is empty)."),
        ({"attributes": ["sex", "age"]}, ValueError,
         "attribute column(s) ['age'] not in metadata (columns: ['sex', 'site'])."),
        ({"scores": [0.1, 0.2]}, ValueError, "scores has 2 values but metadata has 6 rows."),
        ({"scores": np.zeros((6, 2))}, ValueError,
         "scores must be a 1-D array with one value per metadata row, got shape (6, 2)."),
        ({"scores": [0.1, 0.2, np.nan, 0.4, np.inf, 0.6]}, ValueError,
         "scores must be finite; NaN or infinite at 2 row(s), the first at metadata index 2."),
        ({"scores": [0.1, 0.2, np.nan, 0.4, 0.5, 0.6], "metadata": META.set_axis(list("uvwxyz"))}, ValueError,
         "scores must be finite; NaN or infinite at 1 row(s), the first at metadata index 'w'."),
    ],
)
def test_ill_inputs(kwargs, err, msg):
    args = {"scores": SCORES, "metadata": META, "minsup": 0.2, **kwargs}
    scores = args.pop("scores")
    with pytest.raises(err) as e:
        subgroup_divergence(scores, **args)
    assert str(e.value) == msg


def test_ill_per_sample_inputs():
    t = subgroup_divergence(SCORES, metadata=META, minsup=0.2)
    with pytest.raises(ValueError) as e:
        subgroup_membership(t, metadata=META[["sex"]])
    assert str(e.value) == "attribute column(s) ['site'] not in metadata (columns: ['sex'])."
    with pytest.raises(ValueError) as e:
        subgroup_membership(t.drop(columns="itemset"), metadata=META)
    assert str(e.value) == "divergence_table must have an 'itemset' column (as subgroup_divergence returns)."
    with pytest.raises(ValueError) as e:
        subgroup_membership([("sex=F",)], metadata=META)
    assert str(e.value) == "itemset ('sex=F',) is not a sequence of (attribute, value) pairs."
    with pytest.raises(ValueError) as e:  # one pair, not an itemset of pairs
        subgroup_membership([("ab", "cd")], metadata=META)
    assert str(e.value) == "itemset ('ab', 'cd') is not a sequence of (attribute, value) pairs."
    with pytest.raises(ValueError) as e:
        max_abs_divergence_per_sample(t[["itemset"]], metadata=META)
    assert str(e.value) == "divergence_table must be a DataFrame with 'itemset' and 'divergence' columns."
    with pytest.raises(TypeError):
        subgroup_divergence(SCORES, META)  # metadata is keyword-only


@pytest.mark.parametrize("options", [{}, {"max_len": 2}, {"ignore_values": ("unknown",)}, {"minsup": 0.05}])
def test_weights_equal_max_abs_divergence_per_sample(options):
    """divergence_weights and max_abs_divergence_per_sample give, per training case, the largest |divergence|
    of the subgroups whose items all match the case (missing values read as unknown), checked by pandas."""
    rng = np.random.default_rng(0)
    cats = {"a": ["p", "q", "r", "s", None], "b": list("xyz") + ["", "unknown"], "c": list("uvw"), "d": ["m", "n"]}
    val = pd.DataFrame({k: rng.choice(np.array(v, dtype=object), 300) for k, v in cats.items()})
    cats["c"] = cats["c"] + ["new"]  # a value never seen in validation
    train = pd.DataFrame({k: rng.choice(np.array(v, dtype=object), 2000) for k, v in cats.items()})
    train.loc[5, "a"] = np.nan
    scores = rng.uniform(0.3, 0.95, 300)
    w, table = divergence_weights(scores, val, train, attributes=list(cats), fill_value=0.01, **options)
    filled = train.apply(lambda col: col.map(lambda v: "unknown" if v is None or v != v or v == "" else v))
    want = np.full(len(train), -np.inf)
    for its, d in zip(table["itemset"], table["divergence"]):
        mask = np.logical_and.reduce([filled[a].to_numpy() == v for a, v in its])
        want[mask] = np.maximum(want[mask], abs(d))
    want[np.isneginf(want)] = 0.01
    np.testing.assert_array_equal(max_abs_divergence_per_sample(table, metadata=train, fill_value=0.01), want)
    np.testing.assert_array_equal(w, want)
    assert table.attrs["n_train_in_no_subgroup"] == int((want == 0.01).sum())


# ----------------------------------------------------------------------------------------------------
# FairMedSeg's training weights (divergence_weights), by hand
# ----------------------------------------------------------------------------------------------------

ATTRS = ["age", "density"]

# ---- the hand-built table
# 8 validation cases; overall mean Dice 5.0 / 8 = 0.625
VAL = pd.DataFrame({
    "age": ["young", "young", "young", "young", "old", "old", "old", "old"],
    "density": ["a", "a", "b", "b", "a", "a", "b", "b"],
})
VAL_DICE = [0.9, 0.7, 0.8, 0.6, 0.5, 0.3, 0.4, 0.8]
# subgroup means - 0.625, by hand
HAND_DIVERGENCE = {
    "age=young": 0.75 - 0.625, "age=old": 0.5 - 0.625,
    "density=a": 0.6 - 0.625, "density=b": 0.65 - 0.625,
    "age=young & density=a": 0.8 - 0.625, "age=young & density=b": 0.7 - 0.625,
    "age=old & density=a": 0.4 - 0.625, "age=old & density=b": 0.6 - 0.625,
}
TRAIN = pd.DataFrame({
    "age": ["young", "old", "old", "young", "middle", "middle", "unknown"],
    "density": ["a", "a", "b", "b", "a", "c", "c"],
})
# max |divergence| over the subgroups each training case is in
HAND_WEIGHTS = [
    0.175,  # young & a: max(0.125, 0.025, 0.175)
    0.225,  # old & a: max(0.125, 0.025, 0.225)
    0.125,  # old & b: max(0.125, 0.025, 0.025)
    0.125,  # young & b: max(0.125, 0.025, 0.075)
    0.025,  # middle & a: only density=a (age=middle is not in validation)
    0.0,    # middle & c: in no subgroup -> fill_value
    0.0,    # unknown & c: in no subgroup -> fill_value
]


def test_divergence_weights_by_hand():
    w, table = divergence_weights(VAL_DICE, VAL, TRAIN, attributes=ATTRS)
    assert len(table) == 8
    got = dict(zip(table["subgroup"], table["divergence"]))
    assert got.keys() == HAND_DIVERGENCE.keys()
    for s, d in HAND_DIVERGENCE.items():
        assert got[s] == pytest.approx(d, abs=1e-12), s
    assert table["subgroup"].iloc[0] == "age=old & density=a"  # lowest Dice first
    assert table["count"].tolist() == [2 if " & " in s else 4 for s in table["subgroup"]]
    np.testing.assert_allclose(w, HAND_WEIGHTS, rtol=0, atol=1e-12)
    assert w.dtype == np.float64 and w.shape == (7,)
    assert table.attrs["n_train_in_no_subgroup"] == 2 and table.attrs["weights_all_zero"] is False


def test_divergence_weights_fill_value_minsup_and_normalize(caplog):
    w, _ = divergence_weights(VAL_DICE, VAL, TRAIN, attributes=ATTRS, fill_value=0.5)
    np.testing.assert_allclose(w, HAND_WEIGHTS[:5] + [0.5, 0.5], atol=1e-12)
    # minsup 0.3 asks for 3 of 8 cases: only the single attributes (4 cases each) remain
    w, table = divergence_weights(VAL_DICE, VAL, TRAIN, attributes=ATTRS, minsup=0.3)
    assert sorted(table["subgroup"]) == ["age=old", "age=young", "density=a", "density=b"]
    np.testing.assert_allclose(w, [0.125, 0.125, 0.125, 0.125, 0.025, 0.0, 0.0], atol=1e-12)
    # normalize: divided by the mean 0.675 / 7
    w, _ = divergence_weights(VAL_DICE, VAL, TRAIN, attributes=ATTRS, normalize=True)
    np.testing.assert_allclose(w, np.array(HAND_WEIGHTS) / (0.675 / 7), atol=1e-12)
    assert w.mean() == pytest.approx(1.0, abs=1e-12)
    # all zero (every Dice equal): normalize leaves 1.0 and warns
    with caplog.at_level("WARNING", logger="fairmonai.metrics._subgroups"):
        w, table = divergence_weights([0.7] * 8, VAL, TRAIN, attributes=ATTRS, normalize=True)
    assert (table["divergence"].abs() < 1e-12).all()
    np.testing.assert_array_equal(w, np.ones(7))
    assert ALL_ZERO_MSG in caplog.text and table.attrs["weights_all_zero"] is True
    # without normalize they stay 0
    w, _ = divergence_weights([0.7] * 8, VAL, TRAIN, attributes=ATTRS)
    np.testing.assert_allclose(w, np.zeros(7), atol=1e-12)


def test_divergence_weights_errors():
    with pytest.raises(ValueError, match=r"attribute column\(s\) \['density'\] not in train_metadata"):
        divergence_weights(VAL_DICE, VAL, TRAIN[["age"]], attributes=ATTRS)
    with pytest.raises(ValueError, match="fill_value must be a finite number >= 0"):
        divergence_weights(VAL_DICE, VAL, TRAIN, attributes=ATTRS, fill_value=-1)
    with pytest.raises(ValueError, match="scores must be finite"):
        divergence_weights([np.nan] + VAL_DICE[1:], VAL, TRAIN, attributes=ATTRS)
