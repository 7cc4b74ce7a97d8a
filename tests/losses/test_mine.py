"""MINEPenalty: DV value, convergence to a known MI, gradient reversal, moving average, errors, DDP."""

import copy
import datetime
import math
import os
import re

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from scipy import integrate, special, stats
from torch.func import functional_call

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
    assert float(pen.last_diagnostic["dv"]) == pytest.approx(expected, abs=1e-5)
    assert float(pen.last_diagnostic["ma"]) == pytest.approx(math.exp(special.logsumexp(t_marg) - math.log(9)), rel=1e-5)
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
    ma1 = float(pen.last_diagnostic["ma"])

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
    assert float(pen.last_diagnostic["ma"]) == pytest.approx(ma2, rel=1e-5)
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
    with pytest.raises(TypeError, match="sync_critic must be a bool; got 1"):
        MINEPenalty(num_groups=2, sync_critic=1)


# ---- the critic as an ordinary module call: bit for bit the former reversal on its parameters


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def _old_forward(pen, v, sensitive):
    """MINEPenalty.forward as it was: functional_call of the critic on reversed parameters."""

    def critic(x, onehot):
        params = {name: _ReverseGrad.apply(p) for name, p in pen.critic.named_parameters()}
        inp = torch.cat([x, onehot], dim=1).to(pen.critic[0].weight.dtype)
        return functional_call(pen.critic, params, (inp,)).squeeze(-1).float()

    v2, codes = v.reshape(v.shape[0], -1), sensitive.reshape(-1)
    included = codes >= 0
    n = int(included.sum())
    if n < 2:
        return v2.sum() * 0.0
    x, u = v2[included], codes[included]
    onehot = F.one_hot(u, pen.num_groups).to(x.dtype)
    perm = torch.randperm(n, generator=pen._generator).to(x.device)
    t_joint, t_marg = critic(x, onehot), critic(x, onehot[perm])
    log_mean_exp = torch.logsumexp(t_marg, 0) - math.log(n)
    dv = t_joint.mean() - log_mean_exp
    with torch.no_grad():
        lme = log_mean_exp.detach().to(pen.log_ma.dtype)
        if pen.training:
            if torch.isinf(pen.log_ma):
                pen.log_ma.copy_(lme)
            else:
                decayed = pen.log_ma + math.log1p(-pen.ma_rate)
                pen.log_ma.copy_(torch.logaddexp(decayed, lme + math.log(pen.ma_rate)))
        log_ma = lme if torch.isinf(pen.log_ma) else pen.log_ma
    corrected = t_joint.mean() - torch.exp(t_marg - log_ma.to(t_marg.dtype)).mean()
    return dv.detach() + (corrected - corrected.detach())


def test_same_value_and_gradients_as_the_parameter_reversal():
    torch.manual_seed(0)
    pen = MINEPenalty(num_groups=3, in_features=2, hidden_size=16, ma_rate=0.25, seed=4)
    old = copy.deepcopy(pen)
    g = gen(8)
    for step in range(4):  # the first call sets the moving average, the others use it
        if step == 3:
            pen.eval(), old.eval()
        v0 = torch.randn(20, 2, generator=g) * 2
        u = torch.randint(-1, 3, (20,), generator=g)
        v_new, v_old = v0.clone().requires_grad_(True), v0.clone().requires_grad_(True)
        pen.zero_grad(), old.zero_grad()
        out_new, out_old = pen(v_new, sensitive=u), _old_forward(old, v_old, u)
        out_new.backward(), out_old.backward()
        # bit-identical, not only close: the single-process path does the same floating-point ops
        assert torch.equal(out_new, out_old)
        assert torch.equal(v_new.grad, v_old.grad)
        for (name, p), q in zip(pen.critic.named_parameters(), old.critic.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=name)
        assert torch.equal(pen.log_ma, old.log_ma)
    assert pen._ddp_critic == []  # no wrapper in a single process
    assert list(pen.state_dict()) == ["log_ma"] + [f"critic.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")]


def test_fewer_than_two_samples_no_nan_and_unchanged_in_one_process():
    torch.manual_seed(0)
    pen = MINEPenalty(num_groups=2, hidden_size=8)
    for codes in ([-1, 0, -1], [-1, -1, -1]):
        v = torch.randn(3, 2, requires_grad=True)
        pen.zero_grad()
        out = pen(v, sensitive=torch.tensor(codes))
        out.backward()
        assert out.item() == 0.0 and pen.last_diagnostic["dv"] == 0.0
        assert torch.equal(v.grad, torch.zeros(3, 2))
        # as before in a single process: the critic is not run (no gradient, so no optimizer step);
        # under DDP it is run and gets a zero gradient (test_two_process_gloo_averages_critic_gradients)
        assert all(p.grad is None for p in pen.critic.parameters())


# ---- two processes, gloo on CPU: the critic's gradients are averaged across ranks


def _small_pen(sync):
    torch.manual_seed(0)  # the same critic on every rank
    return MINEPenalty(num_groups=3, in_features=2, hidden_size=8, ma_rate=0.25, seed=7, sync_critic=sync)


def _rank_batch(rank):
    """A different batch per rank, of different sizes, with excluded samples."""
    g = gen(50 + rank)
    n = 10 if rank == 0 else 7
    return torch.randn(n, 2, generator=g) * (1 + rank), torch.randint(-1, 3, (n,), generator=g)


def _grads_and_value(pen, v, u):
    v = v.clone().requires_grad_(True)
    pen.zero_grad()
    out = pen(v, sensitive=u)
    out.backward()
    grads = [None if p.grad is None else p.grad.clone() for p in pen.critic.parameters()]
    return {"value": out.detach().clone(), "grads": grads, "v_grad": v.grad.clone()}


def _gloo_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    try:
        torch.set_num_threads(1)
        res = {}
        v, u = _rank_batch(rank)
        for sync in (True, False):
            pen = _small_pen(sync)
            res[f"one_{sync}"] = _grads_and_value(pen, v, u)
            res[f"keys_{sync}"] = list(pen.state_dict())
            res[f"n_params_{sync}"] = len(list(pen.parameters()))
            res[f"wrapped_{sync}"] = len(pen._ddp_critic)
            copy.deepcopy(pen)  # the process-bound wrapper stays behind
        # fewer than 2 included samples on rank 1 (one, then none), then on both ranks
        for key, few in (("few_one", [-1, 1, -1]), ("few_none", [-1, -1, -1])):
            args = (v, u) if rank == 0 else (torch.randn(3, 2), torch.tensor(few))
            res[key] = _grads_and_value(_small_pen(True), *args)
        res["few_all"] = _grads_and_value(_small_pen(True), torch.randn(2, 2), torch.tensor([[-1, 1], [-1, -1]][rank]))
        # training: the network wrapped in DDP by the user, the critic by the penalty; one optimizer
        for sync in (True, False):
            pen = _small_pen(sync)
            torch.manual_seed(1)
            net = torch.nn.Linear(3, 2)
            ddp_net = torch.nn.parallel.DistributedDataParallel(net)
            opt = torch.optim.SGD(list(net.parameters()) + list(pen.parameters()), lr=0.1)
            g = gen(100 + rank)
            for _ in range(3):
                x, y = torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)
                logits = ddp_net(x + y[:, None])
                loss = F.cross_entropy(logits, y) + 0.5 * pen(logits, sensitive=y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            res[f"train_critic_{sync}"] = [p.detach().clone() for p in pen.critic.parameters()]
            res[f"train_net_{sync}"] = [p.detach().clone() for p in net.parameters()]
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_averages_critic_gradients(tmp_path):
    # fork: the children inherit the imported modules; a failing child must not hang the test
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_gloo_worker, args=(r, 2, str(tmp_path / "init"), str(tmp_path)))
             for r in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert [proc.exitcode for proc in procs] == [0, 0]
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    # the reference, in this process without distribution: each rank's batch on its own
    ref = [_grads_and_value(_small_pen(True), *_rank_batch(r)) for r in range(2)]
    mean = [(a + b) / 2 for a, b in zip(ref[0]["grads"], ref[1]["grads"])]
    assert not torch.allclose(ref[0]["grads"][0], ref[1]["grads"][0], atol=1e-3)
    for r in range(2):
        synced, plain = got[r]["one_True"], got[r]["one_False"]
        # (a) synced: every rank's critic gradient is the mean of the per-rank gradients
        for p, q in zip(synced["grads"], mean):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
        # ... while the value and v's gradient stay the rank's own (v's net is DDP's business)
        torch.testing.assert_close(synced["value"], ref[r]["value"], rtol=0, atol=1e-6)
        torch.testing.assert_close(synced["v_grad"], ref[r]["v_grad"], rtol=0, atol=1e-6)
        # (b) without sync: each rank's own gradient (the one-process path, bit for bit)
        for p, q in zip(plain["grads"], ref[r]["grads"]):
            assert torch.equal(p, q)
        assert got[r]["wrapped_True"] == 1 and got[r]["wrapped_False"] == 0
        for sync in (True, False):  # the wrapper is no submodule: checkpoints and optimizers unchanged
            assert got[r][f"keys_{sync}"] == list(_small_pen(sync).state_dict())
            assert got[r][f"n_params_{sync}"] == 6
    # (the last bias has a zero gradient at the first call, where the moving average is the batch mean)
    for p, q in list(zip(got[0]["one_False"]["grads"], got[1]["one_False"]["grads"]))[:5]:
        assert not torch.allclose(p, q, atol=1e-3)

    # fewer than 2 included samples on rank 1: it still joins the all-reduce with a zero gradient,
    # value 0 and no NaN; both ranks get half of rank 0's gradient
    for key in ("few_one", "few_none"):
        assert got[1][key]["value"].item() == 0.0
        assert torch.equal(got[1][key]["v_grad"], torch.zeros_like(got[1][key]["v_grad"]))
        for r in range(2):
            for p, q in zip(got[r][key]["grads"], ref[0]["grads"]):
                torch.testing.assert_close(p, q / 2, rtol=0, atol=1e-6)
    for r in range(2):  # too few on both ranks: gradients exist and are zero
        assert got[r]["few_all"]["value"].item() == 0.0
        assert all(p is not None and torch.equal(p, torch.zeros_like(p)) for p in got[r]["few_all"]["grads"])
        assert not torch.isnan(got[r]["few_all"]["v_grad"]).any()

    # (c) after 3 SGD steps on different batches: identical critics with sync, different without;
    # the DDP-wrapped network is identical either way
    for p, q in zip(got[0]["train_critic_True"], got[1]["train_critic_True"]):
        assert torch.equal(p, q)
    assert any(not torch.allclose(p, q, atol=1e-4) for p, q in zip(got[0]["train_critic_False"],
                                                                   got[1]["train_critic_False"]))
    for sync in (True, False):
        for p, q in zip(got[0][f"train_net_{sync}"], got[1][f"train_net_{sync}"]):
            assert torch.equal(p, q)
