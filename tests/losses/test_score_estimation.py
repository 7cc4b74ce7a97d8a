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
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)
    assert polynomial_score(x, degree=3).order == 2  # 3 samples: at most 3 basis functions (1, z, z^2)
    two = torch.tensor([[0.0, 1.0], [1.0, 5.0]], dtype=F64)
    assert polynomial_score(two, degree=3).order == 1
    assert polynomial_score(two, degree=1, basis="multivariate").order == 0  # needs D + 1 = 3 samples
    assert polynomial_score(torch.cat([two, two + 0.5]), degree=2, basis="multivariate").order == 1


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
                                                  "n_groups": 0.0, "n_fallback": 0.0}


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
    assert bool(torch.all(sfd == 0)) and info["n_fallback"] == 6
