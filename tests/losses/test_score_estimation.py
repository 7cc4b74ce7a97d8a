"""Score estimators (polynomial least squares, SSGE), group SFD and input checks.

Expected values come from hand computation, closed-form Gaussian scores, numpy's covariance, and a
loop-by-loop re-implementation of the SSGE formulas of Shi et al. (2018).
"""

import math
import re
from functools import partial

import numpy as np
import pytest
import torch

from fairmonai.losses._score_estimation import (
    BAD_SENSITIVE_SHAPE_MSG,
    BAD_V_SHAPE_MSG,
    BAD_X_SHAPE_MSG,
    BATCH_MISMATCH_MSG,
    MARGINAL_UNFITTED_MSG,
    MISSING_SENSITIVE_MSG,
    NEGATIVE_CODE_MSG,
    NOT_FLOAT_MSG,
    check_penalty_inputs,
    polynomial_score,
    score_function_difference,
    spectral_stein_score,
)

F64 = torch.float64




def gen(seed):
    return torch.Generator().manual_seed(seed)


def correlated_gaussian(n, seed):
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=F64)
    mean = torch.tensor([1.0, -2.0], dtype=F64)
    x = torch.randn(n, 2, generator=gen(seed), dtype=F64) @ torch.linalg.cholesky(cov).T + mean
    return x, mean, cov


def rel_rms(est, true):
    return float((est - true).pow(2).sum(1).mean().sqrt() / true.pow(2).sum(1).mean().sqrt())


# ------------------------------------------------------------------ polynomial


def test_degree1_hand_computed():
    # x = (-1, 0, 1): mean 0, population variance 2/3, so the Gaussian fit is -x / (2/3) = -1.5 x
    x = torch.tensor([[-1.0], [0.0], [1.0]], dtype=F64)
    fit = polynomial_score(x, degree=1, ridge=0.0)
    assert torch.allclose(fit.score[:, 0], torch.tensor([1.5, 0.0, -1.5], dtype=F64), atol=1e-12)
    assert fit.order == 1 and bool(fit.fitted.all())


def test_degree1_ridge_shrinks_by_one_plus_ridge():
    x = torch.randn(50, 3, generator=gen(0), dtype=F64) * torch.tensor([1.0, 2.0, 0.5], dtype=F64) + 3.0
    fit = polynomial_score(x, degree=1, ridge=0.25)
    expected = -(x - x.mean(0)) / x.var(0, unbiased=False) / 1.25
    assert torch.allclose(fit.score, expected, atol=1e-12)


@pytest.mark.parametrize("basis", ["per_dimension", "multivariate"])
@pytest.mark.parametrize("degree", [2, 3])
def test_sample_stein_identity_holds_for_every_basis_function(basis, degree):
    # ridge 0: the normal equations say mean(s_hat_d * f) = -mean(d f / d z_d) for each basis f
    x = torch.randn(400, 2, generator=gen(1), dtype=F64) ** 3  # skewed, heavy tails
    fit = polynomial_score(x, degree=degree, ridge=0.0, basis=basis)
    z = (x - x.mean(0)) / x.std(0, unbiased=False)
    s_z = fit.score * x.std(0, unbiased=False)
    for d in range(2):
        for k in range(degree + 1):  # f = z_d^k belongs to both bases
            lhs = (s_z[:, d] * z[:, d] ** k).mean()
            rhs = -(k * z[:, d] ** (k - 1)).mean() if k else torch.tensor(0.0, dtype=F64)
            assert float(lhs) == pytest.approx(float(rhs), abs=1e-9)
    if basis == "multivariate":  # a cross term: f = z_0 z_1, d f / d z_0 = z_1
        assert float((s_z[:, 0] * z[:, 0] * z[:, 1]).mean()) == pytest.approx(float(-z[:, 1].mean()), abs=1e-9)


def test_multivariate_degree1_is_inverse_sample_covariance():
    x, _, _ = correlated_gaussian(300, seed=2)
    fit = polynomial_score(x, degree=1, ridge=0.0, basis="multivariate")
    xn = x.numpy()
    expected = -(xn - xn.mean(0)) @ np.linalg.inv(np.cov(xn.T, bias=True))
    np.testing.assert_allclose(fit.score.numpy(), expected, atol=1e-10)


def test_multivariate_matches_joint_score_per_dimension_does_not():
    # N(m, Sigma) with correlation 0.8: the joint score is -Sigma^{-1}(x - m)
    x, mean, cov = correlated_gaussian(2000, seed=3)
    true = -(x - mean) @ torch.linalg.inv(cov)
    for degree in (1, 3):
        multi = polynomial_score(x, degree=degree, basis="multivariate")
        per_dim = polynomial_score(x, degree=degree, basis="per_dimension")
        assert rel_rms(multi.score, true) < 0.15
        assert rel_rms(per_dim.score, true) > 0.7  # it fits -(x_d - m_d)/Sigma_dd instead


def test_per_dimension_equals_multivariate_in_one_dimension():
    x = torch.randn(100, 1, generator=gen(4), dtype=F64).exp()
    a = polynomial_score(x, degree=3, basis="per_dimension")
    b = polynomial_score(x, degree=3, basis="multivariate")
    assert torch.allclose(a.score, b.score, atol=1e-10)


def test_degree_lowered_to_number_of_samples():
    # small_group="lower_degree" (the default before the option existed; this test used the default)
    fit = partial(polynomial_score, small_group="lower_degree")
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)
    assert fit(x, degree=3).order == 2  # 3 samples: at most 3 basis functions (1, z, z^2)
    two = torch.tensor([[0.0, 1.0], [1.0, 5.0]], dtype=F64)
    assert fit(two, degree=3).order == 1
    assert fit(two, degree=1, basis="multivariate").order == 0  # needs D + 1 = 3 samples
    assert fit(torch.cat([two, two + 0.5]), degree=2, basis="multivariate").order == 1
    # the default ("zero") never lowers the degree: these sets have no fit at the degree asked for
    assert polynomial_score(x, degree=3).order == 0 and polynomial_score(x, degree=2).order == 2
    assert polynomial_score(two, degree=3).order == 0 and polynomial_score(two, degree=1).order == 1
    assert polynomial_score(torch.cat([two, two + 0.5]), degree=2, basis="multivariate").order == 0


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_samples_fits_nothing(n):
    fit = polynomial_score(torch.ones(n, 2, dtype=F64), degree=1)
    assert fit.order == 0 and not bool(fit.fitted.any()) and fit.score.shape == (n, 2)


@pytest.mark.parametrize("basis", ["per_dimension", "multivariate"])
def test_constant_coordinate_is_left_out(basis):
    x = torch.randn(30, 3, generator=gen(5), dtype=F64)
    x[:, 1] = 7.0
    fit = polynomial_score(x, degree=2, basis=basis)
    assert fit.fitted.tolist() == [True, False, True]
    assert bool(torch.all(fit.score[:, 1] == 0)) and bool(torch.isfinite(fit.score).all())
    ref = polynomial_score(x[:, [0, 2]], degree=2, basis=basis)
    assert torch.allclose(fit.score[:, [0, 2]], ref.score)


def test_float32_input_no_nan_float64_output():
    x = torch.randn(64, 2, generator=gen(6))
    fit = polynomial_score(x, degree=3, basis="multivariate")
    assert fit.score.dtype == F64 and bool(torch.isfinite(fit.score).all())


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"degree": 0}, ValueError, "degree must be an int >= 1; got 0"),
        ({"degree": 1.5}, TypeError, "degree must be an int >= 1; got 1.5"),
        ({"degree": True}, TypeError, "degree must be an int >= 1; got True"),
        ({"ridge": -1.0}, ValueError, "ridge must be a finite number >= 0.0; got -1.0"),
        ({"ridge": "big"}, TypeError, "ridge must be a finite number >= 0.0; got 'big'"),
        ({"basis": "joint"}, ValueError, "unknown basis 'joint'"),
    ],
)
def test_polynomial_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        polynomial_score(torch.zeros(5, 1), **kwargs)


def test_polynomial_bad_shape():
    with pytest.raises(ValueError, match=re.escape(BAD_X_SHAPE_MSG.format(shape=(5,)))):
        polynomial_score(torch.zeros(5))


# ------------------------------------------------------------------ SSGE


def test_ssge_matches_loop_implementation():
    # re-implements Shi et al.'s formulas with explicit loops over samples
    n, num_eigs = 25, 6
    x = torch.randn(n, 2, generator=gen(7), dtype=F64)
    fit = spectral_stein_score(x, num_eigs=num_eigs)
    dists = [float(torch.linalg.norm(x[i] - x[j])) for i in range(n) for j in range(i + 1, n)]
    sigma = float(np.median(dists))

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma**2))

    gram = torch.tensor([[k(x[i], x[j]) for j in range(n)] for i in range(n)], dtype=F64)
    lam, u = torch.linalg.eigh(gram)
    lam, u = lam.flip(0)[:num_eigs], u.flip(1)[:, :num_eigs]
    beta = torch.zeros(num_eigs, 2, dtype=F64)
    for i in range(n):  # beta_j = -(1/n) sum_i grad psi_j(x_i)
        for m in range(n):
            grad_k = -(x[i] - x[m]) / sigma**2 * k(x[i], x[m])
            beta -= (math.sqrt(n) / lam)[:, None] * u[m][:, None] * grad_k[None, :] / n
    expected = torch.stack(
        [(math.sqrt(n) / lam * (torch.tensor([k(x[i], x[m]) for m in range(n)], dtype=F64) @ u)) @ beta
         for i in range(n)]
    )
    assert torch.allclose(fit.score, expected, atol=1e-10)
    assert fit.order == num_eigs


def test_ssge_one_dimensional_gaussian():
    x = torch.randn(1000, 1, generator=gen(0), dtype=F64) * 2.0 + 1.0
    fit = spectral_stein_score(x)
    true = -(x - 1.0) / 4.0
    inner = (x - 1.0).abs() < 4.0  # within 2 sd; SSGE decays to 0 in the tails
    assert float((fit.score - true)[inner].pow(2).mean().sqrt()) < 0.25 / 2.0


def test_ssge_two_dimensional_correlated_gaussian():
    x, mean, cov = correlated_gaussian(500, seed=1)
    fit = spectral_stein_score(x)
    assert rel_rms(fit.score, -(x - mean) @ torch.linalg.inv(cov)) < 0.35


def test_ssge_options_and_fallbacks():
    x = torch.randn(40, 2, generator=gen(8), dtype=F64)
    assert spectral_stein_score(x, num_eigs=3).order == 3
    assert spectral_stein_score(x, num_eigs=400).order <= 40
    assert spectral_stein_score(x, eig_threshold=0.5).order < spectral_stein_score(x, eig_threshold=0.999).order
    assert spectral_stein_score(x[:1]).order == 0
    same = spectral_stein_score(torch.ones(5, 2, dtype=F64))
    assert same.order == 0 and bool(torch.all(same.score == 0))
    x[:, 0] = 3.0
    fit = spectral_stein_score(x)
    assert fit.fitted.tolist() == [False, True] and bool(torch.all(fit.score[:, 0] == 0))
    assert bool(torch.isfinite(fit.score).all())
    with pytest.raises(ValueError, match=r"eig_threshold must be a finite number in \(0.0, 1.0\]; got 0"):
        spectral_stein_score(x, eig_threshold=0)
    with pytest.raises(ValueError, match="num_eigs must be an int >= 1; got 0"):
        spectral_stein_score(x, num_eigs=0)


# ------------------------------------------------------------------ group SFD


def deg1(x):
    return polynomial_score(x, degree=1, ridge=0.0)


def test_sfd_excluded_samples_enter_no_fit():
    x = torch.randn(20, 2, generator=gen(9), dtype=F64)
    codes = torch.tensor([0, 1] * 8 + [-1] * 4)
    sfd, info = score_function_difference(x, codes, deg1)
    ref, _ = score_function_difference(x[:16], codes[:16], deg1)
    assert torch.equal(sfd[:16], ref)
    assert bool(torch.all(sfd[16:] == 0))
    assert info["n_used"] == 16 and info["n_excluded"] == 4 and info["n_groups"] == 2


def test_sfd_hand_formula_two_groups():
    x = torch.tensor([[0.0], [1.0], [2.0], [4.0], [5.0], [9.0]], dtype=F64)
    codes = torch.tensor([0, 0, 0, 1, 1, 1])

    def gauss(a):
        return -(a - a.mean()) / a.var(unbiased=False)

    expected = torch.cat([gauss(x[:3]), gauss(x[3:])]) - gauss(x)
    sfd, info = score_function_difference(x, codes, deg1)
    assert torch.allclose(sfd, expected, atol=1e-12)
    assert info["msq_sfd"] == pytest.approx(float(expected.pow(2).mean()))


def test_sfd_single_group_is_exactly_zero():
    x = torch.randn(10, 3, generator=gen(10), dtype=F64)
    sfd, info = score_function_difference(x, torch.full((10,), 2), deg1)
    assert bool(torch.all(sfd == 0)) and info["msq_sfd"] == 0.0


def test_sfd_group_of_one_falls_back_to_marginal():
    x = torch.randn(9, 1, generator=gen(11), dtype=F64)
    codes = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 5])  # group 5 has one sample; codes 2..4 are empty
    sfd, info = score_function_difference(x, codes, deg1)
    assert sfd[8, 0] == 0 and info["n_fallback"] == 1 and info["n_groups"] == 3
    assert bool(torch.isfinite(sfd).all()) and bool(torch.any(sfd[:8] != 0))


def test_sfd_group_constant_in_a_coordinate():
    x = torch.randn(12, 2, generator=gen(12), dtype=F64)
    codes = torch.tensor([0] * 6 + [1] * 6)
    x[:6, 1] = 0.5
    sfd, info = score_function_difference(x, codes, deg1)
    assert bool(torch.all(sfd[:6, 1] == 0)) and bool(torch.all(sfd[:6, 0] != 0))
    assert bool(torch.isfinite(sfd).all()) and info["n_fallback"] == 0


def test_sfd_all_excluded():
    sfd, info = score_function_difference(torch.randn(4, 2, dtype=F64), torch.full((4,), -1), deg1)
    assert bool(torch.all(sfd == 0)) and info == {"msq_sfd": 0.0, "n_used": 0.0, "n_excluded": 4.0,
                                                  "n_groups": 0.0, "n_fallback": 0.0, "n_fallback_groups": 0.0}


# ------------------------------------------------------------------ input checks


def test_inputs_accept_common_layouts():
    v = torch.randn(4, 2)
    v2, codes = check_penalty_inputs(v, torch.tensor([[0], [1], [1], [-1]]), "P")
    assert v2 is v and codes.tolist() == [0, 1, 1, -1] and codes.dtype == torch.long
    v1, codes = check_penalty_inputs(torch.randn(4), [0.0, 1.0, 1.0, 0.0], "P")
    assert v1.shape == (4, 1) and codes.tolist() == [0, 1, 1, 0]
    _, codes = check_penalty_inputs(v, np.array([True, False, True, True]), "P")
    assert codes.tolist() == [1, 0, 1, 1]


def esc(s):
    return re.escape(s)


def test_inputs_errors():
    v = torch.randn(4, 2)
    with pytest.raises(TypeError, match=esc(MISSING_SENSITIVE_MSG.format(owner="P"))):
        check_penalty_inputs(v, None, "P")
    with pytest.raises(TypeError, match=esc(NOT_FLOAT_MSG.format(name="v", dtype=torch.int64))):
        check_penalty_inputs(torch.ones(4, 2, dtype=torch.long), [0, 0, 1, 1], "P")
    with pytest.raises(ValueError, match=esc(BAD_V_SHAPE_MSG.format(name="v", shape=(4, 2, 3)))):
        check_penalty_inputs(torch.randn(4, 2, 3), [0, 0, 1, 1], "P")
    with pytest.raises(ValueError, match=esc(BATCH_MISMATCH_MSG.format(name="v", shape=(4, 2), s_shape=(5,)))):
        check_penalty_inputs(v, torch.zeros(5, dtype=torch.long), "P")
    with pytest.raises(ValueError, match=esc(BAD_SENSITIVE_SHAPE_MSG.format(shape=(4, 2)))):
        check_penalty_inputs(v, torch.zeros(4, 2, dtype=torch.long), "P")
    with pytest.raises(ValueError, match=esc(NEGATIVE_CODE_MSG.format(codes=[-3, -2]))):
        check_penalty_inputs(v, torch.tensor([0, -2, -3, 1]), "P")
    with pytest.raises(TypeError, match="sensitive must hold integer group codes; got non-integer value 0.5"):
        check_penalty_inputs(v, torch.tensor([0.0, 0.5, 1.0, 1.0]), "P")


def test_sfd_warns_when_the_marginal_cannot_be_fitted():
    # multivariate degree 1 in D = 8 needs 9 samples; the batch has 6
    x = torch.randn(6, 8, generator=gen(13), dtype=F64)
    fit = partial(polynomial_score, basis="multivariate")
    with pytest.warns(UserWarning, match=re.escape(MARGINAL_UNFITTED_MSG.format(n=6, d=8))):
        sfd, info = score_function_difference(x, torch.arange(6) % 2, fit)
    assert bool(torch.all(sfd == 0)) and info["n_fallback"] == 6 and info["n_fallback_groups"] == 2


# ------------------------------------------------------------------ small sample sets (small_group)


@pytest.mark.parametrize("degree", [1, 2, 3])
@pytest.mark.parametrize("n_distinct", [2, 3, 4, 5])
def test_per_dimension_needs_degree_plus_one_distinct_values(degree, n_distinct):
    # 12 samples taking n_distinct values: the Vandermonde matrix (1, z, ..., z^K) has rank
    # min(n_distinct, K + 1), so the fit is defined iff n_distinct >= K + 1, whatever the sample count
    values = torch.tensor([0.0, 1.0, 3.0, 7.0, 8.0], dtype=F64)[:n_distinct]
    x = values[torch.arange(12) % n_distinct][:, None]
    fit = polynomial_score(x, degree=degree)
    defined = n_distinct >= degree + 1
    assert bool(fit.fitted[0]) == defined and fit.order == (degree if defined else 0)
    if not defined:
        assert bool(torch.all(fit.score == 0))
    old = polynomial_score(x, degree=degree, small_group="lower_degree")  # 12 >= K + 1 samples: no lowering
    assert old.order == degree and bool(old.fitted[0]) and bool(torch.isfinite(old.score).all())


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_per_dimension_needs_degree_plus_one_samples(degree):
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0], [8.0]], dtype=F64)
    for n in range(2, 6):
        assert bool(polynomial_score(x[:n], degree=degree).fitted[0]) == (n >= degree + 1)


def test_degree1_on_two_distinct_values_is_the_gaussian_fit():
    # K + 1 = 2 distinct values suffice at degree 1: -(x - mean) / var, shrunk by 1 + ridge
    x = torch.tensor([[0.1]] * 3 + [[0.6]] * 3, dtype=F64)  # mean 0.35, population variance 0.0625
    fit = polynomial_score(x, degree=1, ridge=0.0)
    assert torch.allclose(fit.score[:, 0], torch.tensor([4.0] * 3 + [-4.0] * 3, dtype=F64), atol=1e-12)


def test_per_dimension_undefined_coordinate_alone_is_left_out():
    x = torch.randn(12, 2, generator=gen(20), dtype=F64)
    x[:, 0] = torch.tensor([0.1, 0.6] * 6, dtype=F64)  # 2 distinct values: undefined at degree 2
    fit = polynomial_score(x, degree=2)
    assert fit.fitted.tolist() == [False, True] and fit.order == 2
    assert bool(torch.all(fit.score[:, 0] == 0))
    ref = polynomial_score(x[:, 1:], degree=2)
    assert torch.allclose(fit.score[:, 1:], ref.score, rtol=1e-12, atol=1e-12)


def test_multivariate_collinear_points_are_undefined():
    # points on a line: the covariance is singular, the Gaussian (degree-1) joint score does not exist
    t = torch.randn(10, generator=gen(21), dtype=F64)
    x = torch.stack([t, 2.0 * t + 1.0], 1)
    fit = polynomial_score(x, degree=1, basis="multivariate")
    assert fit.order == 0 and not bool(fit.fitted.any()) and bool(torch.all(fit.score == 0))
    old = polynomial_score(x, degree=1, basis="multivariate", small_group="lower_degree")
    assert old.order == 1 and bool(torch.isfinite(old.score).all())  # solved through the ridge only
    assert polynomial_score(x, degree=1).fitted.tolist() == [True, True]  # each coordinate alone is fine


def test_multivariate_points_on_a_circle_need_degree_below_two():
    # 8 points on the unit circle: z1^2 + z2^2 is constant, so the 6 monomials of degree <= 2 are
    # linearly dependent (rank 5) although there are 8 samples. At degree 1 the fit exists and is
    # the Gaussian one by hand: mean 0, covariance I / 2, score -2 x.
    angle = torch.arange(8, dtype=F64) * (2 * math.pi / 8)
    x = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    assert polynomial_score(x, degree=2, basis="multivariate").order == 0
    fit = polynomial_score(x, degree=1, basis="multivariate", ridge=0.0)
    assert fit.order == 1 and torch.allclose(fit.score, -2.0 * x, atol=1e-12)


def test_multivariate_needs_as_many_distinct_points_as_basis_functions():
    # degree 2 in D = 2: P = 6 monomials
    x = torch.randn(6, 2, generator=gen(22), dtype=F64)
    assert polynomial_score(x, degree=2, basis="multivariate").order == 2  # 6 generic points: rank 6
    assert polynomial_score(x[:5], degree=2, basis="multivariate").order == 0  # 5 < 6 samples
    lowered = polynomial_score(x[:5], degree=2, basis="multivariate", small_group="lower_degree")
    assert lowered.order == 1
    repeated = x[:3].repeat(4, 1)  # 12 samples, 3 distinct points: rank 3 < 6
    assert polynomial_score(repeated, degree=2, basis="multivariate").order == 0
    old = polynomial_score(repeated, degree=2, basis="multivariate", small_group="lower_degree")
    assert old.order == 2 and bool(torch.isfinite(old.score).all())


@pytest.mark.parametrize("basis", ["per_dimension", "multivariate"])
@pytest.mark.parametrize("degree", [1, 2, 3])
def test_zero_and_lower_degree_agree_where_defined(basis, degree):
    x = torch.randn(50, 2, generator=gen(23), dtype=F64) ** 3
    a = polynomial_score(x, degree=degree, basis=basis)
    b = polynomial_score(x, degree=degree, basis=basis, small_group="lower_degree")
    assert torch.equal(a.score, b.score) and a.order == b.order == degree


@pytest.mark.parametrize("scale", [1e-3, 1e4])  # above the constant test's eps (1e-6)
def test_rank_test_does_not_depend_on_scale(scale):
    x = torch.randn(12, 2, generator=gen(24), dtype=F64)
    x[:, 0] = torch.tensor([0.1, 0.6, 0.9] * 4, dtype=F64)  # 3 distinct values: defined at 2, not at 3
    for degree, fitted in ((2, [True, True]), (3, [False, True])):
        ref = polynomial_score(x, degree=degree)
        fit = polynomial_score(scale * x, degree=degree)
        assert ref.fitted.tolist() == fit.fitted.tolist() == fitted
        torch.testing.assert_close(fit.score, ref.score / scale, rtol=1e-9, atol=0)


def test_small_group_bad_option():
    with pytest.raises(ValueError, match="unknown small_group 'drop'") as err:
        polynomial_score(torch.randn(5, 1), small_group="drop")
    assert "'zero'" in str(err.value) and "'lower_degree'" in str(err.value)


def deg3(x, **kw):
    return polynomial_score(x, degree=3, **kw)


def test_sfd_fallback_counts_hand_checked():
    # degree 3 per dimension; groups: 0 (20 samples), 1 (3 samples: < 4), 2 (6 samples, 2 distinct
    # values: < 4), 3 (8 samples), 4 (1 sample), and 2 excluded samples.
    # Zeroed by hand: groups 1, 2, 4 -> 3 + 6 + 1 = 10 rows in 3 groups.
    x = torch.cat([
        torch.randn(20, 1, generator=gen(30), dtype=F64),
        torch.tensor([[0.2], [0.35], [0.5]], dtype=F64),
        torch.tensor([[0.1]] * 3 + [[0.6]] * 3, dtype=F64),
        torch.randn(8, 1, generator=gen(31), dtype=F64),
        torch.tensor([[0.3]], dtype=F64),
        torch.tensor([[5.0], [-5.0]], dtype=F64),
    ])
    codes = torch.tensor([0] * 20 + [1] * 3 + [2] * 6 + [3] * 8 + [4] + [-1] * 2)
    sfd, info = score_function_difference(x, codes, deg3)
    assert info["n_fallback"] == 10 and info["n_fallback_groups"] == 3
    assert info["n_groups"] == 5 and info["n_used"] == 38 and info["n_excluded"] == 2
    zeroed = (codes == 1) | (codes == 2) | (codes == 4) | (codes == -1)
    assert bool(torch.all(sfd[zeroed] == 0)) and bool(torch.all(sfd[~zeroed] != 0))
    # the fitted groups: their own fit minus the marginal fitted on all 38 included samples
    marginal = deg3(x[codes >= 0]).score
    for g in (0, 3):
        idx = torch.nonzero(codes == g).flatten()
        assert torch.equal(sfd[idx], deg3(x[idx]).score - marginal[idx])  # the excluded rows are last
    assert info["msq_sfd"] == pytest.approx(float(sfd[codes >= 0].pow(2).sum() / 38), rel=1e-12)
    # the former behaviour zeroes only the one-sample group
    _, old = score_function_difference(x, codes, partial(deg3, small_group="lower_degree"))
    assert old["n_fallback"] == 1 and old["n_fallback_groups"] == 1


def test_sfd_group_zeroed_in_some_coordinates_only_is_not_counted():
    x = torch.randn(20, 2, generator=gen(32), dtype=F64)
    x[12:, 0] = torch.tensor([0.1, 0.6] * 4, dtype=F64)  # group 1: 2 distinct values in coordinate 0
    codes = torch.tensor([0] * 12 + [1] * 8)
    sfd, info = score_function_difference(x, codes, deg3)
    assert bool(torch.all(sfd[12:, 0] == 0)) and bool(torch.all(sfd[12:, 1] != 0))
    assert info["n_fallback"] == 0 and info["n_fallback_groups"] == 0


def test_sfd_coordinate_constant_over_the_batch_is_not_a_fallback():
    x = torch.randn(23, 2, generator=gen(33), dtype=F64)
    x[:, 1] = 0.5  # constant over the batch: SFD 0 by definition in every group
    codes = torch.tensor([0] * 20 + [1] * 3)
    sfd, info = score_function_difference(x, codes, deg3)
    assert info["n_fallback"] == 3 and info["n_fallback_groups"] == 1  # group 1 is zeroed where the batch varies
    assert bool(torch.all(sfd[:, 1] == 0)) and bool(torch.all(sfd[:20, 0] != 0))
    _, info = score_function_difference(torch.full((23, 2), 0.5, dtype=F64), codes, deg3)
    assert info["n_fallback"] == 0  # nothing varies: no fallback


def test_sfd_marginal_undefined_zeroes_the_batch():
    # a last batch of 3 samples at degree 3: the marginal (all rows) fit is undefined too
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)
    codes = torch.tensor([0, 0, 1])
    with pytest.warns(UserWarning, match=re.escape(MARGINAL_UNFITTED_MSG.format(n=3, d=1))):
        sfd, info = score_function_difference(x, codes, deg3)
    assert bool(torch.all(sfd == 0)) and info["n_fallback"] == 3 and info["n_fallback_groups"] == 2
    # lower_degree: marginal at degree 2, group 0 at degree 1, group 1 (one sample) zeroed
    sfd, info = score_function_difference(x, codes, partial(deg3, small_group="lower_degree"))
    assert bool(torch.all(sfd[:2] != 0)) and sfd[2, 0] == 0 and info["n_fallback"] == 1


@pytest.mark.parametrize("small_group", ["zero", "lower_degree"])
def test_sfd_needs_both_scores(small_group):
    # multivariate degree 1 in D = 3: the 3-sample batch has no marginal fit (needs 4), but group 0
    # varies in coordinate 0 only and has a 1-D fit of its own. Its SFD is 0, not its score alone.
    x = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 2.0], [0.5, 3.0, -1.0]], dtype=F64)
    codes = torch.tensor([0, 0, 1])
    fit = partial(polynomial_score, basis="multivariate", small_group=small_group)
    assert fit(x[:2]).fitted.tolist() == [True, False, False]
    with pytest.warns(UserWarning, match="marginal score could not be fitted"):
        sfd, info = score_function_difference(x, codes, fit)
    assert bool(torch.all(sfd == 0)) and info["n_fallback"] == 3 and info["n_fallback_groups"] == 2
