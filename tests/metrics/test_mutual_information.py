"""knn_mutual_information: Ross's k-NN estimate of I(u; v), per column ("sum") or joint."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.feature_selection import mutual_info_classif

from fairmonai.metrics import KNN_MI_ESTIMATORS, knn_mutual_information


def _separated(n_per_group: int, dim: int, seed: int = 0):
    """Two groups of ``n_per_group`` distinct values each, 1000 apart (no neighbour across groups)."""
    rng = np.random.default_rng(seed)
    u = np.repeat([0, 1], n_per_group)
    v = rng.random((2 * n_per_group, dim)) + 1000.0 * u[:, None]
    return v, u


@pytest.mark.parametrize("estimator", KNN_MI_ESTIMATORS)
@pytest.mark.parametrize("dim", [1, 3])
def test_separated_groups_by_hand(estimator, dim):
    # Ross (2014) eq. 2: I = psi(N) + psi(k) - <psi(N_x)> - <psi(m)>. When every k-neighbourhood stays
    # in its own group, m_i = k (the point and its k - 1 nearest, strictly inside the k-th distance),
    # so I = psi(N) - psi(N_x) = sum_{j=N_x}^{N-1} 1/j. N = 40, N_x = 20 (and dim 1 for "sum", where
    # the sum over columns is one column; dim 3 of "sum" adds three such columns).
    v, u = _separated(20, dim)
    by_hand = float(sum(Fraction(1, j) for j in range(20, 40)))
    expected = by_hand * (dim if estimator == "sum" else 1)
    assert knn_mutual_information(v, u, estimator=estimator) == pytest.approx(expected, rel=1e-12)


def test_sum_is_sklearn_per_column_sum():
    rng = np.random.default_rng(4)
    u = rng.integers(0, 3, 120)
    v = np.stack([u * 0.7 + rng.standard_normal(120), rng.standard_normal(120)], axis=1)
    expected = mutual_info_classif(v, u, n_neighbors=5, random_state=2).sum()
    assert knn_mutual_information(v, u, n_neighbors=5, random_state=2) == expected
    # torch inputs give the same number; -1 codes are dropped before estimating
    assert knn_mutual_information(torch.tensor(v), torch.tensor(u), n_neighbors=5, random_state=2) == expected
    u_missing = np.concatenate([u, -np.ones(30, dtype=int)])
    v_missing = np.concatenate([v, rng.standard_normal((30, 2))])
    assert knn_mutual_information(v_missing, u_missing, n_neighbors=5, random_state=2) == expected


def test_joint_estimator_equals_sum_in_one_dimension():
    rng = np.random.default_rng(1)
    u = rng.integers(0, 3, 150)
    v = u[:, None] * 0.8 + rng.standard_normal((150, 1))
    a = knn_mutual_information(v, u, estimator="sum", random_state=3)
    b = knn_mutual_information(v, u, estimator="joint", random_state=3)
    assert a == pytest.approx(b, abs=1e-12)
    # two copies of the same column: the sum double counts, the joint estimate does not
    v2 = np.concatenate([v, v + 1e-3 * rng.standard_normal((150, 1))], axis=1)
    assert knn_mutual_information(v2, u) > 1.5 * a
    assert knn_mutual_information(v2, u, estimator="joint") < 1.3 * a


def test_undefined_cases_give_nan():
    assert math.isnan(knn_mutual_information(np.full((30, 1), np.nan), np.arange(30) % 2))
    v, u = _separated(10, 1)
    assert math.isnan(knn_mutual_information(v, u, min_samples=21))  # 20 samples < min_samples
    assert not math.isnan(knn_mutual_information(v, u, min_samples=20))
    assert math.isnan(knn_mutual_information(v, np.zeros(20, dtype=int), min_samples=0))  # one group
    assert math.isnan(knn_mutual_information(v, np.r_[np.zeros(19, dtype=int), 1], min_samples=0))  # 1 sample


def test_bad_arguments():
    v, u = _separated(10, 1)
    with pytest.raises(ValueError, match=re.escape("unknown estimator 'ksg'; choose one of ['sum', 'joint']")):
        knn_mutual_information(v, u, estimator="ksg")
    with pytest.raises(ValueError, match="v has 20 samples but u has 19"):
        knn_mutual_information(v, u[:19])
