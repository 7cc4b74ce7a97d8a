"""FairnessRegularizedLoss: value and gradient of CE + mu * penalty, plain-loss path, targets, errors."""

import re

import pytest
import torch
from monai.losses import FocalLoss

from fairmonai.losses import FairnessRegularizedLoss, FaMIPenalty, MIGEPenalty, MINEPenalty
from fairmonai.losses.fair_loss import (
    LOSS_TYPE_MSG,
    MISSING_SENSITIVE_LOSS_MSG,
    PENALTY_TYPE_MSG,
    REPRESENTATION_MISMATCH_MSG,
    SENSITIVE_MISMATCH_MSG,
    TARGET_TRANSFORM_TYPE_MSG,
)




def gen(seed):
    return torch.Generator().manual_seed(seed)


def data(b=16, c=2, seed=0):
    g = gen(seed)
    logits = torch.randn(b, c, generator=g)
    target = torch.randint(0, c, (b,), generator=g)
    sensitive = torch.randint(0, 2, (b,), generator=g)
    return logits, target, sensitive


class Boom(torch.nn.Module):
    def forward(self, v, *, sensitive):
        raise AssertionError("the penalty must not be called")


def esc(s):
    return re.escape(s)


@pytest.mark.parametrize("penalty_cls", [FaMIPenalty, MIGEPenalty])
def test_value_and_gradient_fami_mige(penalty_cls):
    logits, target, sensitive = data()
    mu = 0.7
    loss = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), penalty_cls(), mu=mu)
    v = logits.clone().requires_grad_(True)
    total = loss(v, target, sensitive=sensitive)
    (g_total,) = torch.autograd.grad(total, v)
    w = logits.clone().requires_grad_(True)
    ce = torch.nn.functional.cross_entropy(w, target)
    (g_ce,) = torch.autograd.grad(ce, w)
    sfd = loss.penalty.last_sfd
    assert total.item() == ce.item() + mu * 0.0  # the surrogate's value is 0
    assert torch.allclose(g_total, g_ce + mu * sfd / 16, atol=1e-7)
    terms = loss.last_terms  # detached tensors: the loss converts nothing to a Python number
    assert all(isinstance(t, torch.Tensor) and t.ndim == 0 and not t.requires_grad for t in terms.values())
    assert terms["task_loss"].dtype == torch.float32 and float(terms["task_loss"]) == ce.item()
    assert terms["mu"].dtype == torch.float64 and float(terms["mu"]) == mu and float(terms["penalty"]) == 0.0
    assert float(terms["msq_sfd"]) == loss.penalty.last_diagnostic["msq_sfd"] > 0


def test_value_equals_ce_plus_mu_times_mine_dv():
    torch.manual_seed(0)
    logits, target, sensitive = data()
    loss = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), MINEPenalty(num_groups=2), mu=0.5)
    total = loss(logits, target, sensitive=sensitive)
    ce = torch.nn.functional.cross_entropy(logits, target).item()
    assert total.item() == pytest.approx(ce + 0.5 * float(loss.last_terms["dv"]), abs=1e-6)
    assert float(loss.last_terms["penalty"]) == pytest.approx(float(loss.last_terms["dv"]))
    assert loss.last_terms["penalty"].requires_grad is False  # detached from the critic's graph
    assert len(list(loss.parameters())) == 6  # the critic's, for the optimizer


@pytest.mark.parametrize("penalty, mu", [(None, 0.5), (Boom(), 0.0)])
def test_plain_loss_path(penalty, mu):
    logits, target, sensitive = data()
    loss = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), penalty, mu=mu)
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert torch.equal(loss(logits, target), ce)  # no sensitive needed
    assert torch.equal(loss(logits, target, sensitive=sensitive), ce)
    assert not loss.active and set(loss.last_terms) == {"task_loss", "mu"}


def test_targets_b_and_b1_and_float():
    logits, target, sensitive = data()
    loss = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), FaMIPenalty())
    a = loss(logits, target, sensitive=sensitive)
    b = loss(logits, target[:, None], sensitive=sensitive[:, None])
    c = loss(logits, target.float()[:, None], sensitive=sensitive)
    assert a.item() == b.item() == c.item()
    # BCE with (B, 1) logits and (B, 1) float targets passes unchanged
    bce = FairnessRegularizedLoss(torch.nn.BCEWithLogitsLoss(), FaMIPenalty())
    x1 = logits[:, :1]
    y1 = target[:, None].float()
    assert bce(x1, y1, sensitive=sensitive).item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(x1, y1).item())
    # "none" leaves the (B, 1) target alone: CrossEntropyLoss then rejects it
    raw = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), FaMIPenalty(), target_transform="none")
    with pytest.raises(RuntimeError):
        raw(logits, target[:, None], sensitive=sensitive)
    custom = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), None, target_transform=lambda x, y: 1 - y)
    assert custom(logits, target).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, 1 - target).item())


def test_monai_loss_and_reduction_none():
    logits, target, sensitive = data()
    focal = FocalLoss(to_onehot_y=True, use_softmax=True)
    loss = FairnessRegularizedLoss(focal, FaMIPenalty(), target_transform="none")
    assert loss(logits, target[:, None], sensitive=sensitive).item() == pytest.approx(
        focal(logits, target[:, None]).item())
    per_sample = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(reduction="none"), FaMIPenalty())
    v = logits.clone().requires_grad_(True)
    out = per_sample(v, target, sensitive=sensitive)
    assert out.shape == (16,)
    out.mean().backward()
    w = logits.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(w, target).backward()
    assert torch.allclose(v.grad, w.grad + 0.5 * per_sample.penalty.last_sfd / 16, atol=1e-7)


def test_representation_gets_the_penalty():
    g = gen(1)
    x = torch.randn(16, 4, generator=g)
    feat_layer, head = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
    feats = feat_layer(x)
    logits = head(feats)
    target = torch.randint(0, 2, (16,), generator=g)
    sensitive = torch.arange(16) % 2
    loss = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), FaMIPenalty(), mu=2.0)
    (g_feats,) = torch.autograd.grad(loss(logits, target, sensitive=sensitive, representation=feats), feats)
    assert loss.penalty.last_sfd.shape == (16, 3)
    (g_ce,) = torch.autograd.grad(torch.nn.functional.cross_entropy(head(feats), target), feats)
    assert torch.allclose(g_feats, g_ce + 2.0 * loss.penalty.last_sfd / 16, atol=1e-7)


def test_forward_errors():
    logits, target, sensitive = data()
    loss = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), FaMIPenalty(), mu=0.5)
    with pytest.raises(TypeError, match=esc(MISSING_SENSITIVE_LOSS_MSG.format(penalty="FaMIPenalty", mu=0.5))):
        loss(logits, target)
    with pytest.raises(ValueError, match=esc(SENSITIVE_MISMATCH_MSG.format(input_shape=(16, 2), s_shape=(15,)))):
        loss(logits, target, sensitive=sensitive[:15])
    with pytest.raises(ValueError, match=esc(REPRESENTATION_MISMATCH_MSG.format(input_shape=(16, 2),
                                                                                  rep_shape=(8, 5)))):
        loss(logits, target, sensitive=sensitive, representation=torch.randn(8, 5))
    with pytest.raises(TypeError, match="positional"):
        loss(logits, target, sensitive)


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((lambda x, y: 0,), {}, TypeError, esc(LOSS_TYPE_MSG.format(type="function"))),
        ((torch.nn.CrossEntropyLoss(), "fami"), {}, TypeError, esc(PENALTY_TYPE_MSG.format(type="str"))),
        ((torch.nn.CrossEntropyLoss(),), {"mu": -1}, ValueError, "mu must be a finite number >= 0.0; got -1"),
        ((torch.nn.CrossEntropyLoss(),), {"mu": "0.5"}, TypeError, "mu must be a finite number >= 0.0; got '0.5'"),
        ((torch.nn.CrossEntropyLoss(),), {"target_transform": "squeeze"}, ValueError,
         "unknown target_transform 'squeeze'"),
        ((torch.nn.CrossEntropyLoss(),), {"target_transform": 3}, TypeError,
         TARGET_TRANSFORM_TYPE_MSG.format(value=3)),
    ],
)
def test_constructor_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        FairnessRegularizedLoss(*args, **kwargs)


def test_training_with_fami_narrows_the_logit_gap():
    # logistic regression on x = (signal, group proxy); the label depends on the signal and the
    # group; mu = 0 leaves a logit gap between groups, mu = 5 shrinks it (same data, same init).
    g = gen(2)
    n = 512
    u = torch.randint(0, 2, (n,), generator=g)
    signal = torch.randn(n, generator=g)
    y = (signal + 1.0 * u + 0.5 * torch.randn(n, generator=g) > 0.5).long()
    x = torch.stack([signal, u + 0.3 * torch.randn(n, generator=g)], 1)

    def train(mu):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 2)
        loss = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), FaMIPenalty(), mu=mu)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for step in range(60):
            idx = torch.arange(step * 64, step * 64 + 64) % n
            opt.zero_grad()
            loss(model(x[idx]), y[idx], sensitive=u[idx]).backward()
            opt.step()
        with torch.no_grad():
            margin = model(x)[:, 1] - model(x)[:, 0]
        return float(margin[u == 1].mean() - margin[u == 0].mean())

    plain, fair = train(0.0), train(5.0)
    assert plain > 1.0 and abs(fair) < 0.5 * plain
