"""FaMIPenalty: SFD against the analytic Gaussian-mixture SFD, descent on the surrogate, options, errors."""

import re
from functools import partial

import numpy as np
import pytest
import torch

from fairmonai.losses import FaMIPenalty, polynomial_score
from fairmonai.losses._score_estimation import BATCH_MISMATCH_MSG, MISSING_SENSITIVE_MSG

F64 = torch.float64




def gen(seed):
    return torch.Generator().manual_seed(seed)


def analytic_sfd(v, u, means, sd=1.0, priors=(0.5, 0.5)):
    """SFD of v | u ~ N(m_u, sd^2): (m_u - E[m | v]) / sd^2, the posterior from Bayes' rule."""
    m = torch.tensor(means, dtype=F64)
    logits = torch.log(torch.tensor(priors, dtype=F64)) - (v[:, None] - m) ** 2 / (2 * sd**2)
    post = torch.softmax(logits, dim=1)
    return (m[u] - (post * m).sum(1)) / sd**2


def mixture_batch(n, sep, seed):
    g = gen(seed)
    u = torch.randint(0, 2, (n,), generator=g)
    v = torch.randn(n, generator=g, dtype=F64) + torch.tensor([-sep, sep], dtype=F64)[u]
    return v, u


@pytest.mark.parametrize(
    "sep, n, degree, tol",
    [
        (0.5, 4000, 1, 0.08),  # mixture close to Gaussian: degree 1 suffices
        (0.5, 4000, 3, 0.08),
        (1.0, 20000, 3, 0.12),  # bimodal-ish mixture: needs degree 3 (degree 1 is off by ~0.19)
    ],
)
def test_sfd_matches_analytic_gaussian_mixture(sep, n, degree, tol):
    # v | u ~ N(+-sep, 1), u ~ Bernoulli(1/2); RMS error over samples with |v| < 2.
    # The analytic SFD has an RMS of 0.45 (sep 0.5) and 0.67 (sep 1.0).
    v, u = mixture_batch(n, sep, seed=0)
    sfd = FaMIPenalty(degree=degree).estimate_sfd(v, sensitive=u)[:, 0]
    inner = v.abs() < 2
    err = float((sfd - analytic_sfd(v, u, (-sep, sep)))[inner].pow(2).mean().sqrt())
    assert err < tol


@pytest.mark.parametrize("degree, max_ratio", [(1, 0.1), (3, 0.15)])
def test_descent_on_surrogate_pulls_group_means_together(degree, max_ratio):
    # v free parameters, B = 128, groups at -1.5 / +1.5 (initial gap 3.10, 2.96 pooled sd);
    # 200 SGD steps of size 0.05 per sample (lr = 0.05 B on the mean surrogate).
    # Measured: gap 3.10 -> 0.17 (degree 1), 0.31 (degree 3).
    batch = 128
    u = torch.arange(batch) % 2
    v0 = torch.randn(batch, 1, generator=gen(0)) + torch.where(u == 1, 1.5, -1.5)[:, None]
    v = v0.clone().requires_grad_(True)
    pen = FaMIPenalty(degree=degree)
    opt = torch.optim.SGD([v], lr=0.05 * batch)

    def gap(x):
        return float(x[u == 1].mean() - x[u == 0].mean())

    def effect(x):
        return gap(x) / float(((x[u == 1].var() + x[u == 0].var()) / 2).sqrt())

    msq0 = None
    for _ in range(200):
        opt.zero_grad()
        pen(v, sensitive=u).backward()
        opt.step()
        msq0 = msq0 if msq0 is not None else pen.last_diagnostic["msq_sfd"]
    assert abs(gap(v.detach())) < max_ratio * gap(v0)
    assert abs(effect(v.detach())) < max_ratio * effect(v0)
    assert pen.last_diagnostic["msq_sfd"] < 0.01 * msq0


def test_linear_model_drops_the_group_feature():
    # v = w0 z + w1 (2u + noise) + b; descent on the penalty alone drives w1 / w0 from 1 to ~0.
    g = gen(0)
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0]]))
        lin.bias.zero_()
    pen = FaMIPenalty()
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    for _ in range(100):
        u = torch.randint(0, 2, (256,), generator=g)
        x = torch.stack([torch.randn(256, generator=g), 2.0 * u + 0.5 * torch.randn(256, generator=g)], 1)
        opt.zero_grad()
        pen(lin(x), sensitive=u).backward()
        opt.step()
    w0, w1 = lin.weight[0].tolist()
    assert abs(w1 / w0) < 0.2


@pytest.mark.parametrize("basis", ["per_dimension", "multivariate"])
def test_gradient_is_sfd_over_batch_and_value_is_zero(basis):
    v = torch.randn(16, 2, generator=gen(1), requires_grad=True)
    u = torch.tensor([0, 1, 2, -1] * 4)
    pen = FaMIPenalty(degree=1, basis=basis)
    s = pen(v, sensitive=u)
    assert s.item() == 0.0 and s.ndim == 0
    (grad,) = torch.autograd.grad(s, v)
    assert torch.equal(grad, pen.last_sfd / 16)  # B a power of two: bitwise equal
    assert bool(torch.all(pen.last_sfd[u == -1] == 0)) and bool(torch.any(pen.last_sfd != 0))


def test_sign_gradient_points_up_the_group_posterior():
    # d I / d v_i = (m_u - E[m | v]) / B: positive for the upper group, negative for the lower one
    v, u = mixture_batch(400, 1.0, seed=2)
    v = v.float().requires_grad_(True)
    FaMIPenalty()(v, sensitive=u).backward()
    assert float(v.grad[u == 1].mean()) > 0 > float(v.grad[u == 0].mean())


def test_degree1_hand_formula_with_ridge():
    v = torch.tensor([[0.0], [1.0], [2.0], [4.0], [5.0], [9.0]], dtype=F64)
    u = torch.tensor([0, 0, 0, 1, 1, 1])
    ridge = 0.1

    def gauss(a):
        return -(a - a.mean()) / a.var(unbiased=False) / (1 + ridge)

    expected = torch.cat([gauss(v[:3]), gauss(v[3:])]) - gauss(v)
    sfd = FaMIPenalty(degree=1, ridge=ridge).estimate_sfd(v, sensitive=u)
    assert torch.allclose(sfd, expected, atol=1e-12)


def test_degree_changes_the_estimate():
    v, u = mixture_batch(200, 1.0, seed=3)
    a = FaMIPenalty(degree=1).estimate_sfd(v, sensitive=u)
    b = FaMIPenalty(degree=3).estimate_sfd(v, sensitive=u)
    assert not torch.allclose(a, b)


def test_small_group_gets_lowered_degree():
    # small_group="lower_degree" (the former default, which this test used to exercise):
    # group 1 has 2 samples: degree 3 needs 4, so its conditional score is the degree-1 fit
    v = torch.randn(12, 1, generator=gen(4), dtype=F64)
    u = torch.tensor([0] * 10 + [1] * 2)
    pen = FaMIPenalty(degree=3, small_group="lower_degree")
    sfd = pen.estimate_sfd(v, sensitive=u)
    marginal = polynomial_score(v, degree=3, ridge=pen.ridge).score
    cond = polynomial_score(v[10:], degree=1, ridge=pen.ridge)
    assert cond.order == 1
    assert torch.allclose(sfd[10:], cond.score - marginal[10:])
    assert pen.last_diagnostic["n_fallback"] == 0
    # the default zeroes it instead
    pen = FaMIPenalty(degree=3)
    sfd = pen.estimate_sfd(v, sensitive=u)
    assert bool(torch.all(sfd[10:] == 0)) and pen.last_diagnostic["n_fallback"] == 2


@pytest.mark.parametrize("group_size", [0, 1])
def test_tiny_group_uses_marginal(group_size):
    v = torch.randn(9 + group_size, 2, generator=gen(5))
    u = torch.tensor([0, 1] * 4 + [0] + [3] * group_size)
    pen = FaMIPenalty()
    sfd = pen.estimate_sfd(v, sensitive=u)
    assert bool(torch.isfinite(sfd).all())
    if group_size:
        assert bool(torch.all(sfd[-1] == 0)) and pen.last_diagnostic["n_fallback"] == 1
    assert pen.last_diagnostic["n_groups"] == 2 + group_size


def test_multivariate_group_too_small_for_dimension():
    # D = 3 needs 4 samples per group for the multivariate degree-1 fit; group 1 has 3
    v = torch.randn(11, 3, generator=gen(6))
    u = torch.tensor([0] * 8 + [1] * 3)
    pen = FaMIPenalty(basis="multivariate")
    sfd = pen.estimate_sfd(v, sensitive=u)
    assert bool(torch.all(sfd[8:] == 0)) and pen.last_diagnostic["n_fallback"] == 3
    assert bool(torch.all(sfd[:8] != 0))


def test_zero_variance_output():
    u = torch.tensor([0, 1] * 5)
    pen = FaMIPenalty(degree=3)
    sfd = pen.estimate_sfd(torch.full((10, 2), 0.3), sensitive=u)
    assert bool(torch.all(sfd == 0)) and pen.last_diagnostic["msq_sfd"] == 0.0
    v = torch.randn(10, 2, generator=gen(7))
    v[u == 0, 0] = 1.0  # constant within group 0 only
    sfd = pen.estimate_sfd(v, sensitive=u)
    assert bool(torch.all(sfd[u == 0, 0] == 0)) and bool(torch.isfinite(sfd).all())


def test_excluded_codes_are_left_out():
    v = torch.randn(20, 2, generator=gen(8))
    u = torch.tensor([0, 1] * 8 + [-1] * 4)
    pen = FaMIPenalty()
    sfd = pen.estimate_sfd(v, sensitive=u)
    ref = FaMIPenalty().estimate_sfd(v[:16], sensitive=u[:16])
    assert torch.equal(sfd[:16], ref) and bool(torch.all(sfd[16:] == 0))
    assert pen.last_diagnostic["n_used"] == 16 and pen.last_diagnostic["n_excluded"] == 4
    v.requires_grad_(True)
    pen(v, sensitive=u).backward()
    # the surrogate divides by the whole batch (B = 20: equal up to the rounding of 1/20)
    assert torch.allclose(v.grad, pen.last_sfd / 20, rtol=1e-6, atol=0)
    pen(v, sensitive=torch.full((20,), -1))
    assert pen.last_diagnostic["msq_sfd"] == 0.0


def test_shapes_and_dtypes():
    pen = FaMIPenalty()
    v1 = torch.randn(10, generator=gen(9), requires_grad=True)
    pen(v1, sensitive=torch.arange(10) % 2).backward()
    assert v1.grad.shape == (10,) and torch.allclose(v1.grad, pen.last_sfd[:, 0] / 10, rtol=1e-6, atol=0)
    assert pen.last_sfd.dtype == torch.float32
    sfd = pen.estimate_sfd(torch.randn(10, 2, dtype=F64), sensitive=(torch.arange(10) % 2)[:, None])
    assert sfd.dtype == F64


def esc(s):
    return re.escape(s)


def test_forward_errors():
    pen = FaMIPenalty()
    v = torch.randn(4, 2)
    with pytest.raises(TypeError, match="sensitive"):
        pen(v)
    with pytest.raises(TypeError, match=esc(MISSING_SENSITIVE_MSG.format(owner="FaMIPenalty"))):
        pen(v, sensitive=None)
    with pytest.raises(TypeError, match="positional"):
        pen(v, torch.zeros(4))
    with pytest.raises(ValueError, match=esc(BATCH_MISMATCH_MSG.format(name="v", shape=(4, 2), s_shape=(3,)))):
        pen(v, sensitive=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=esc("v must have shape (B,) or (B, D); got (4, 2, 2)")):
        pen(torch.randn(4, 2, 2), sensitive=torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"degree": 0}, ValueError, "degree must be an int >= 1; got 0"),
        ({"degree": "3"}, TypeError, "degree must be an int >= 1; got '3'"),
        ({"ridge": -0.1}, ValueError, "ridge must be a finite number >= 0.0; got -0.1"),
        ({"ridge": float("nan")}, ValueError, "ridge must be a finite number >= 0.0; got nan"),
        ({"basis": "full"}, ValueError, "unknown basis 'full'"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        FaMIPenalty(**kwargs)


def test_diagnostic_is_loggable():
    pen = FaMIPenalty()
    pen(torch.randn(8, 2), sensitive=torch.arange(8) % 2)
    assert set(pen.last_diagnostic) == {"msq_sfd", "n_used", "n_excluded", "n_groups", "n_fallback",
                                        "n_fallback_groups"}
    # counts are floats; msq_sfd a detached 0-d tensor (logged without a host sync), a finite number either way
    assert all(isinstance(x, float) or (isinstance(x, torch.Tensor) and x.ndim == 0 and not x.requires_grad)
               for x in pen.last_diagnostic.values())
    assert all(np.isfinite(float(x)) for x in pen.last_diagnostic.values())
    assert isinstance(pen.last_diagnostic["msq_sfd"], torch.Tensor)
    assert "degree=1" in repr(pen) and "small_group='zero'" in repr(pen)


@pytest.mark.parametrize("degree,basis", [(1, "per_dimension"), (3, "per_dimension"), (2, "multivariate")])
@pytest.mark.parametrize("scale", [0.03, 40.0])
def test_sfd_scales_inversely_with_the_output(degree, basis, scale):
    """I(u; c v) = I(u; v), so its gradient w.r.t. c v is the gradient w.r.t. v divided by c.

    The estimator standardises v before the fit, so this holds exactly (not only in expectation):
    small logits (a freshly initialised head) get a large SFD, and the SFD fades as a network's
    logits spread while it fits its training data.
    """
    g = torch.Generator().manual_seed(5)
    u = torch.arange(64) % 3
    v = torch.randn(64, 2, generator=g, dtype=torch.float64) + 0.7 * u[:, None]
    pen = FaMIPenalty(degree=degree, basis=basis)
    sfd = pen.estimate_sfd(v, sensitive=u)
    msq = float(pen.last_diagnostic["msq_sfd"])
    sfd_scaled = pen.estimate_sfd(scale * v, sensitive=u)
    assert sfd.abs().max() > 0.1
    torch.testing.assert_close(sfd_scaled, sfd / scale, rtol=1e-9, atol=1e-12)
    assert float(pen.last_diagnostic["msq_sfd"]) == pytest.approx(msq / scale**2, rel=1e-9)


def test_degree1_is_blind_to_groups_that_differ_only_in_shape():
    """Degree 1 sees each group's mean and variance only; degree 3 also sees shape.

    Two groups with the same mean (0) and variance (1): one bimodal (two tight clusters at -1 and
    +1, like the logits of a fitted classifier), one unimodal. The degree-1 SFD is 0 (up to rounding)
    although the group is perfectly decodable from v; degree 3 gives a clear SFD. This is why the
    OCT bundle's docs report that degree-1 FaMI can leave, or let the network put, race information
    into the shape of the logit distribution.
    """
    g = torch.Generator().manual_seed(0)
    bimodal = torch.cat([-1 + 0.05 * torch.randn(32, generator=g, dtype=torch.float64),
                         1 + 0.05 * torch.randn(32, generator=g, dtype=torch.float64)])
    unimodal = 0.5 * torch.randn(64, generator=g, dtype=torch.float64)

    def standardise(x):
        return (x - x.mean()) / x.std(unbiased=False)

    v = torch.cat([standardise(bimodal), standardise(unimodal)])[:, None]
    u = torch.cat([torch.zeros(64, dtype=torch.long), torch.ones(64, dtype=torch.long)])
    sfd1 = FaMIPenalty(degree=1).estimate_sfd(v, sensitive=u)
    sfd3 = FaMIPenalty(degree=3).estimate_sfd(v, sensitive=u)
    assert sfd1.abs().max() < 1e-9
    assert (sfd3 ** 2).mean() > 0.5


# ------------------------------------------------------------------ small groups (small_group)


def big_group(n, d, seed):
    return torch.randn(n, d, generator=gen(seed), dtype=F64)


def three_row_batch():
    """29 standard normal samples (group 0) and a group of 3 at 0.2, 0.35, 0.5 (fewer than 4 = K + 1)."""
    v = torch.cat([big_group(29, 1, 0), torch.tensor([[0.2], [0.35], [0.5]], dtype=F64)])
    return v, torch.tensor([0] * 29 + [1] * 3)


def two_value_batch():
    """29 standard normal samples and a group of 6 taking 2 distinct values (fewer than 4)."""
    v = torch.cat([big_group(29, 1, 0), torch.tensor([[0.1]] * 3 + [[0.6]] * 3, dtype=F64)])
    return v, torch.tensor([0] * 29 + [1] * 6)


def multivariate_batch():
    """D = 2, degree 2 (P = 6): 40 standard normal samples and a group of 5."""
    v = torch.cat([big_group(40, 2, 1), 0.3 * big_group(5, 2, 2) + 0.5])
    return v, torch.tensor([0] * 40 + [1] * 5)


SMALL_CASES = {
    "three_rows": (three_row_batch, {"degree": 3}, 29),
    "two_values": (two_value_batch, {"degree": 3}, 29),
    "multivariate": (multivariate_batch, {"degree": 2, "basis": "multivariate"}, 40),
}

# SFD of the small group (rows in order) and the first 3 rows of group 0, and msq_sfd, computed with
# the implementation before the small_group option (git 6b454c5, the lowered-degree default);
# small_group="lower_degree" must reproduce them.
PREVIOUS = {
    "three_rows": (
        [[10.18129002902415], [0.23431123145252894], [-9.702235871155825]],
        [[0.3672457809952747], [-0.13202964226018302], [-0.1815659786808641]],
        6.2044059030037415,
    ),
    "two_values": (
        [[8.117055762325862]] * 3 + [[-7.607633592097354]] * 3,
        [[0.661188427957395], [-0.25780193053234013], [-0.34058412174631103]],
        10.677534958027977,
    ),
    "multivariate": (
        [[0.7874479470337516, -2.461553716795027], [4.125767308899329, 3.6921376614309755],
         [-13.765032221000807, 8.40545614245466], [4.455013412712402, -10.496969152920506],
         [6.77820783075804, 1.0008885607067364]],
        [[-0.19989099892097245, -0.09165149664844707], [-0.20100854032144677, -0.04531135331211961],
         [-0.21196500507060076, -0.0705915272678489]],
        10.60671616657687,
    ),
}


@pytest.mark.parametrize("case", list(SMALL_CASES))
def test_lower_degree_reproduces_the_previous_values(case):
    make, kwargs, n0 = SMALL_CASES[case]
    v, u = make()
    pen = FaMIPenalty(small_group="lower_degree", **kwargs)
    sfd = pen.estimate_sfd(v, sensitive=u)
    small, head, msq = PREVIOUS[case]
    torch.testing.assert_close(sfd[n0:], torch.tensor(small, dtype=F64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sfd[:3], torch.tensor(head, dtype=F64), rtol=1e-12, atol=1e-12)
    assert pen.last_diagnostic["msq_sfd"] == pytest.approx(msq, rel=1e-12)
    assert pen.last_diagnostic["n_fallback"] == 0 and pen.last_diagnostic["n_fallback_groups"] == 0


@pytest.mark.parametrize("case", list(SMALL_CASES))
def test_undefined_small_group_gets_zero_and_is_counted(case):
    make, kwargs, n0 = SMALL_CASES[case]
    v, u = make()
    n_small = v.shape[0] - n0
    pen = FaMIPenalty(**kwargs)  # small_group="zero", the default
    sfd = pen.estimate_sfd(v, sensitive=u)
    assert bool(torch.all(sfd[n0:] == 0))
    assert pen.last_diagnostic["n_fallback"] == n_small and pen.last_diagnostic["n_fallback_groups"] == 1
    # Exact: group 0's SFD is its own fit minus the marginal fitted on ALL rows, small group included
    fit = partial(polynomial_score, ridge=pen.ridge, **kwargs)
    assert torch.equal(sfd[:n0], fit(v[:n0]).score - fit(v).score[:n0])
    # so it is the same whatever the small group's fallback ...
    old = FaMIPenalty(small_group="lower_degree", **kwargs).estimate_sfd(v, sensitive=u)
    assert torch.equal(sfd[:n0], old[:n0])
    # ... but it is not the SFD of the batch without the small group: that batch has one group (SFD 0),
    # and even beside another group the marginal would change. Here group 0's SFD is the gap between
    # its own fit and the all-rows marginal, small but not 0.
    alone = FaMIPenalty(**kwargs).estimate_sfd(v[:n0], sensitive=u[:n0])
    assert bool(torch.all(alone == 0)) and float(sfd[:n0].abs().max()) > 0.1
    assert pen.last_diagnostic["msq_sfd"] == pytest.approx(float(sfd[:n0].pow(2).sum() / v.shape[0]), rel=1e-12)


def test_other_groups_do_not_see_the_small_group_fit():
    # three groups; the tiny group 2 enters only through the marginal. Replacing its fallback (zero vs
    # lower degree) leaves groups 0 and 1 bitwise unchanged; moving its samples changes them (marginal).
    v = torch.cat([big_group(20, 1, 3), big_group(20, 1, 4) + 0.8, torch.tensor([[0.2], [0.35], [0.5]], dtype=F64)])
    u = torch.tensor([0] * 20 + [1] * 20 + [2] * 3)
    a = FaMIPenalty(degree=3).estimate_sfd(v, sensitive=u)
    b = FaMIPenalty(degree=3, small_group="lower_degree").estimate_sfd(v, sensitive=u)
    assert torch.equal(a[:40], b[:40]) and bool(torch.all(a[40:] == 0)) and bool(torch.all(b[40:] != 0))
    moved = v.clone()
    moved[40:] += 1.0
    c = FaMIPenalty(degree=3).estimate_sfd(moved, sensitive=u)
    assert not torch.allclose(a[:40], c[:40]) and bool(torch.all(c[40:] == 0))


@pytest.mark.parametrize("small_group", ["zero", "lower_degree"])
@pytest.mark.parametrize("case", list(SMALL_CASES))
def test_gradients_finite_with_small_groups(case, small_group):
    make, kwargs, n0 = SMALL_CASES[case]
    v64, u = make()
    v = v64.float().requires_grad_(True)
    pen = FaMIPenalty(small_group=small_group, **kwargs)
    pen(v, sensitive=u).backward()
    assert bool(torch.isfinite(v.grad).all())
    torch.testing.assert_close(v.grad, pen.last_sfd / v.shape[0], rtol=1e-6, atol=0)
    if small_group == "zero":
        assert bool(torch.all(v.grad[n0:] == 0))


def test_small_group_option_is_checked():
    with pytest.raises(ValueError, match="unknown small_group 'drop'") as err:
        FaMIPenalty(small_group="drop")
    assert "'zero'" in str(err.value) and "'lower_degree'" in str(err.value)
    assert FaMIPenalty(small_group="lower_degree").small_group == "lower_degree"
