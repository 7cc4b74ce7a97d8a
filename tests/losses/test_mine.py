"""MINEPenalty: DV value, convergence to a known MI, gradient reversal, moving average, errors."""

import copy
import math
import re

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from fairmonai.losses import MINEPenalty
from fairmonai.losses._score_estimation import MISSING_SENSITIVE_MSG
from fairmonai.losses.mine import CODE_TOO_LARGE_MSG, IN_FEATURES_MSG




def gen(seed):
    return torch.Generator().manual_seed(seed)


def true_mi_two_gaussians(m):
    """I(u; v) for u ~ Bernoulli(1/2), v | u ~ N(+-m, 1): log 2 - H(u | v), by quadrature (nats)."""

    def cond_entropy_density(v):
        p = 0.5 * np.array([stats.norm.pdf(v, -m), stats.norm.pdf(v, m)])
        post = p / p.sum()
        return -float(sum(pi * np.log(qi) for pi, qi in zip(p, post) if pi > 0))

    return math.log(2) - integrate.quad(cond_entropy_density, -m - 12, m + 12, limit=200)[0]


def batch(n, m, g):
    u = torch.randint(0, 2, (n,), generator=g)
    v = torch.randn(n, 1, generator=g) + torch.where(u == 1, m, -m)[:, None]
    return v, u


def test_dv_value_matches_independent_computation():
    torch.manual_seed(0)
    pen = MINEPenalty(num_groups=3, in_features=2, hidden_size=8, seed=7)
    v = torch.randn(10, 2, generator=gen(1))
    u = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, -1, 2])
    out = pen(v, sensitive=u)
    # the same shuffle: first draw of a generator seeded 7, over the 9 included samples
    perm = torch.randperm(9, generator=gen(7))
    keep = u >= 0
    onehot = torch.nn.functional.one_hot(u[keep], 3).float()
    with torch.no_grad():
        t_joint = pen.critic(torch.cat([v[keep], onehot], 1)).squeeze(-1).double().numpy()
        t_marg = pen.critic(torch.cat([v[keep], onehot[perm]], 1)).squeeze(-1).double().numpy()
    expected = t_joint.mean() - (special.logsumexp(t_marg) - math.log(9))
    assert out.item() == pytest.approx(expected, abs=1e-5)
    assert pen.last_diagnostic["dv"] == pytest.approx(expected, abs=1e-5)
    assert pen.last_diagnostic["ma"] == pytest.approx(math.exp(special.logsumexp(t_marg) - math.log(9)), rel=1e-5)
    assert pen.last_diagnostic["n_used"] == 9 and pen.last_diagnostic["n_excluded"] == 1


def test_critic_alone_reaches_the_true_mi():
    # u ~ Bernoulli(1/2), v | u ~ N(+-2, 1): I = 0.6327 nats (log 2 = 0.6931 is the ceiling).
    # 250 Adam steps on fresh batches of 128, minimising the returned value: the gradient reversal
    # makes that an ascent of the DV bound for the critic. Measured: mean DV of the last 50 = 0.60.
    true_mi = true_mi_two_gaussians(2.0)
    assert true_mi == pytest.approx(0.6327, abs=1e-3)
    torch.manual_seed(0)
    pen = MINEPenalty(num_groups=2, in_features=1, hidden_size=32)
    opt = torch.optim.Adam(pen.parameters(), lr=3e-3)
    g = gen(1)
    history = []
    for _ in range(250):
        v, u = batch(128, 2.0, g)
        opt.zero_grad()
        pen(v, sensitive=u).backward()
        opt.step()
        history.append(pen.last_diagnostic["dv"])
    assert abs(np.mean(history[-50:]) - true_mi) < 0.1
    assert np.mean(history[:10]) < 0.3  # it did have to learn

    # with the trained critic, the gradient w.r.t. v points up the group's side (d(+I)/dv), so a
    # descent step moves each group towards the other: the MI falls
    v, u = batch(512, 2.0, g)
    v.requires_grad_(True)
    pen(v, sensitive=u).backward()
    assert float(v.grad[u == 1].mean()) > 0 > float(v.grad[u == 0].mean())


def test_gradient_reversal_and_bias_correction():
    torch.manual_seed(0)
    pen = MINEPenalty(num_groups=2, in_features=2, hidden_size=16, ma_rate=0.25, seed=3)
    ref = copy.deepcopy(pen)  # same critic and generator state
    v0, u = torch.randn(12, 2, generator=gen(2)), torch.arange(12) % 2
    pen(v0, sensitive=u)  # first call sets the moving average
    ref(v0, sensitive=u)
    ma1 = pen.last_diagnostic["ma"]

    v = v0.clone().requires_grad_(True)
    pen.zero_grad()
    pen(v, sensitive=u).backward()
    # independent: the bias-corrected objective through the critic directly, no reversal
    perm = torch.randperm(12, generator=ref._generator)
    onehot = torch.nn.functional.one_hot(u, 2).float()
    w = v0.clone().requires_grad_(True)
    t_joint = ref.critic(torch.cat([w, onehot], 1)).squeeze(-1)
    t_marg = ref.critic(torch.cat([w, onehot[perm]], 1)).squeeze(-1)
    batch_mean = float(torch.exp(t_marg.detach()).mean())
    ma2 = 0.75 * ma1 + 0.25 * batch_mean
    assert pen.last_diagnostic["ma"] == pytest.approx(ma2, rel=1e-5)
    objective = t_joint.mean() - torch.exp(t_marg).mean() / ma2
    ref.zero_grad()
    objective.backward()
    assert torch.allclose(v.grad, w.grad, atol=1e-6)  # the model gets d(+I)/dv
    for p, q in zip(pen.critic.parameters(), ref.critic.parameters()):
        assert torch.allclose(p.grad, -q.grad, atol=1e-6)  # the critic gets d(-I)/dphi


def test_eval_mode_keeps_moving_average_and_state_dict_has_it():
    pen = MINEPenalty(num_groups=2)
    v, u = torch.randn(8, 2, generator=gen(3)), torch.arange(8) % 2
    pen(v, sensitive=u)
    ma = pen.log_ma.clone()
    pen.eval()
    pen(torch.randn(8, 2, generator=gen(4)) * 5, sensitive=u)
    assert torch.equal(pen.log_ma, ma)
    assert "log_ma" in pen.state_dict()


def test_too_few_included_samples():
    pen = MINEPenalty(num_groups=2)
    v = torch.randn(3, 2, requires_grad=True)
    out = pen(v, sensitive=torch.tensor([-1, 0, -1]))
    assert out.item() == 0.0 and pen.last_diagnostic["dv"] == 0.0
    out.backward()
    assert bool(torch.all(v.grad == 0))


def test_excluded_samples_are_dropped():
    torch.manual_seed(0)
    a = MINEPenalty(num_groups=2, seed=5)
    b = copy.deepcopy(a)
    v = torch.randn(10, 2, generator=gen(6))
    u = torch.tensor([0, 1] * 4 + [-1, -1])
    assert a(v, sensitive=u).item() == pytest.approx(b(v[:8], sensitive=u[:8]).item(), abs=1e-6)


def esc(s):
    return re.escape(s)


def test_errors():
    pen = MINEPenalty(num_groups=2, in_features=2)
    with pytest.raises(TypeError, match=esc(MISSING_SENSITIVE_MSG.format(owner="MINEPenalty"))):
        pen(torch.randn(4, 2), sensitive=None)
    with pytest.raises(ValueError, match=esc(IN_FEATURES_MSG.format(expected=2, got=3, shape=(4, 3)))):
        pen(torch.randn(4, 3), sensitive=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=esc(CODE_TOO_LARGE_MSG.format(codes=[2, 5], n=2))):
        pen(torch.randn(4, 2), sensitive=torch.tensor([0, 2, 5, 1]))
    with pytest.raises(ValueError, match="num_groups must be an int >= 1; got 0"):
        MINEPenalty(num_groups=0)
    with pytest.raises(ValueError, match=esc("ma_rate must be a finite number in (0.0, 1.0]; got 0")):
        MINEPenalty(num_groups=2, ma_rate=0)
    with pytest.raises(TypeError, match="hidden_size must be an int >= 1; got 'big'"):
        MINEPenalty(num_groups=2, hidden_size="big")
