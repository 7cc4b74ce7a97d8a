"""Bootstrap intervals of the challenge scores: equal to scipy's percentile bootstrap with the same draws."""

import warnings

import numpy as np
import pytest
from scipy.stats import bootstrap

from fairmonai.metrics._bootstrap_segmentation import FEW_GROUPS_REPLICATES_MSG, bootstrap_challenge_scores
from fairmonai.metrics._group_bootstrap import BAD_N_BOOTSTRAP_MSG, bootstrap_index_chunks
from fairmonai.metrics._group_inputs import UndefinedGroupMetricWarning
from fairmonai.metrics._segmentation import challenge_scores


def _data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random(n), 0.5 * rng.random(n), rng.integers(0, 3, n), rng.integers(-1, 2, n)


def test_scalar_intervals_equal_scipy_percentile_bootstrap():
    # scipy draws rng.integers(0, n, (n_resamples, n)) from the same Generator, so the replicates
    # are the same cases and the percentile intervals must agree to the last bit
    d, h, a, b = _data()
    ci = bootstrap_challenge_scores(d, h, sensitive_features={"a": a, "b": b}, n_bootstrap=500, seed=7,
                                    ts_weight=0.3)
    assert ci["bootstrap"] == {"n_bootstrap": 500, "confidence_level": 0.95, "stratified": False, "seed": 7}
    for key, x in (("mean_dsc", d), ("mean_normhd", h)):
        ref = bootstrap((x,), np.mean, method="percentile", n_resamples=500, rng=np.random.default_rng(7))
        assert ci[key] == pytest.approx(list(ref.confidence_interval), abs=1e-12)

    def scores(d_, h_, a_, b_):
        return challenge_scores(d_, h_, sensitive_features={"a": a_.astype(int), "b": b_.astype(int)}, ts_weight=0.3)

    stats = {
        "fairness_score": lambda *s: scores(*s).fairness_score,
        "total_score": lambda *s: scores(*s).total_score,
        "performance_score": lambda *s: scores(*s).performance_score,
    }
    for key, stat in stats.items():
        ref = bootstrap((d, h, a.astype(float), b.astype(float)), stat, paired=True, vectorized=False,
                        method="percentile", n_resamples=500, rng=np.random.default_rng(7))
        assert ci[key] == pytest.approx(list(ref.confidence_interval), abs=1e-12), key
    for key, stat in (("disparity", lambda *s: scores(*s).variables["b"].disparity),
                      ("dsc_gap", lambda *s: scores(*s).variables["b"].dsc_gap)):
        ref = bootstrap((d, h, a.astype(float), b.astype(float)), stat, paired=True, vectorized=False,
                        method="percentile", n_resamples=500, rng=np.random.default_rng(7))
        assert ci["variables"]["b"][key] == pytest.approx(list(ref.confidence_interval), abs=1e-12), key
    # a group mean: group 1 of "a"
    ref = bootstrap((d, a.astype(float)), lambda d_, a_: d_[a_ == 1].mean(), paired=True, vectorized=False,
                    method="percentile", n_resamples=500, rng=np.random.default_rng(7))
    assert ci["variables"]["a"]["mean_dsc"][1] == pytest.approx(list(ref.confidence_interval), abs=1e-12)
    assert ci["variables"]["a"]["fairness"] == pytest.approx(
        [1 - ci["variables"]["a"]["disparity"][1], 1 - ci["variables"]["a"]["disparity"][0]], abs=1e-12)


def test_level_and_seed():
    d, h, a, _ = _data()
    ref = bootstrap((d,), np.mean, method="percentile", n_resamples=300, confidence_level=0.8,
                    rng=np.random.default_rng(3))
    ci = bootstrap_challenge_scores(d, h, sensitive_features={"a": a}, n_bootstrap=300, confidence_level=0.8, seed=3)
    assert ci["mean_dsc"] == pytest.approx(list(ref.confidence_interval), abs=1e-12)
    again = bootstrap_challenge_scores(d, h, sensitive_features={"a": a}, n_bootstrap=300, confidence_level=0.8,
                                       seed=3)
    assert again == ci


def test_four_cases_by_hand():
    # group 0-40: DSC 0.8, 0.6. On every replicate where the group has a case its mean lies in
    # [0.6, 0.8]; it is exactly 0.6 on about 27 % of them (all its draws are case 2), so the 2.5th
    # and 97.5th percentiles are the two extremes. The group is empty where all 4 draws are cases
    # 3 and 4: counted here from the same draws.
    dsc, hd = [0.8, 0.6, 0.4, 0.2], [0.1, 0.2, 1.0, 0.0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ci = bootstrap_challenge_scores(dsc, hd, sensitive_features={"age": [0, 0, 1, 1]},
                                        group_names={"age": ["0-40", "41-50"]}, n_bootstrap=1000, seed=0)
    assert ci["variables"]["age"]["mean_dsc"][0] == pytest.approx([0.6, 0.8], abs=1e-12)
    assert ci["variables"]["age"]["mean_normhd"][0] == pytest.approx([0.1, 0.2], abs=1e-12)
    idx = np.concatenate(list(bootstrap_index_chunks(None, 4, 1000, 0)))
    empty0 = int(np.all(idx >= 2, axis=1).sum())
    empty1 = int(np.all(idx < 2, axis=1).sum())
    messages = [str(w.message) for w in caught]
    assert (f"age mean DSC and NormHD was undefined on {empty0} of 1000 bootstrap replicates for group '0-40'; "
            "its interval uses the other replicates") in messages
    assert FEW_GROUPS_REPLICATES_MSG.format(name="age", k=empty0 + empty1, n=1000) in messages
    assert any(w.category is UndefinedGroupMetricWarning for w in caught)


def test_codes_without_names_and_stratified():
    # codes 3 and 7 without names: groups '3', '7' as challenge_scores numbers them; stratified
    # resampling keeps group sizes, so the one-case group 7 has a point interval
    dsc, hd, codes = [0.8, 0.6, 0.4, 0.9], [0.1, 0.2, 1.0, 0.3], [3, 3, 7, -1]
    ci = bootstrap_challenge_scores(dsc, hd, sensitive_features={"v": codes}, n_bootstrap=200, stratified=True)
    assert ci["variables"]["v"]["mean_dsc"][1] == [0.4, 0.4]
    assert ci["variables"]["v"]["mean_normhd"][1] == [1.0, 1.0]
    assert ci["bootstrap"]["stratified"] is True
    # the excluded case is its own stratum: the overall mean still varies
    assert ci["mean_dsc"][0] < ci["mean_dsc"][1]


@pytest.mark.parametrize("n_bootstrap,msg", [(-1, BAD_N_BOOTSTRAP_MSG.format(value=-1)),
                                             (0, "n_bootstrap must be > 0 for bootstrap intervals; got 0")])
def test_bad_n_bootstrap(n_bootstrap, msg):
    with pytest.raises(ValueError) as err:
        bootstrap_challenge_scores([0.5], [0.1], sensitive_features={"v": [0]}, n_bootstrap=n_bootstrap)
    assert str(err.value) == msg
