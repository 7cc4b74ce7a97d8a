"""DivergenceWeightedLoss: per-sample values of MONAI losses, hand-computed totals and gradients, the
weighted term's gradient, errors."""

import re

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss, GeneralizedDiceLoss, TverskyLoss

from fairmonai.losses import DivergenceWeightedLoss, per_sample_loss
from fairmonai.losses.divergence_weighted import (
    BATCH_MISMATCH_MSG,
    BATCH_POOLED_MSG,
    EMPTY_BATCH_MSG,
    LOSS_CALLABLE_MSG,
    MISSING_WEIGHT_MSG,
    PER_SAMPLE_SHAPE_MSG,
    WEIGHT_SHAPE_MSG,
    WEIGHT_TYPE_MSG,
    WEIGHT_VALUE_MSG,
)


def esc(s):
    return re.escape(s)


def seg_data(b=3, c=2, spatial=(5, 6, 4), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, *spatial, generator=g, dtype=dtype)
    label = torch.randint(0, 2 if c == 1 else c, (b, 1, *spatial), generator=g)
    return logits, label


class Fixed(torch.nn.Module):
    """Stand-in loss: the per-sample loss of sample i is ``input[i, 0]`` (``(B, 1)`` input)."""

    def __init__(self, reduction="none"):
        super().__init__()
        self.reduction = reduction
        self.calls = 0

    def forward(self, input, target):
        self.calls += 1
        out = input[:, 0]
        return out if self.reduction == "none" else out.mean()


class Counting(torch.nn.Module):
    """Wraps a loss and counts its calls (its reduction is the child's)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, input, target):
        self.calls += 1
        return self.inner(input, target)


def loop(loss, input, target):
    return torch.stack([loss(input[i : i + 1], target[i : i + 1]) for i in range(input.shape[0])])


# per-sample values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, kwargs, c",
    [
        (DiceLoss, {"sigmoid": True}, 1),
        (DiceLoss, {"softmax": True, "to_onehot_y": True}, 3),
        (DiceLoss, {"softmax": True, "to_onehot_y": True, "include_background": False}, 3),
        (DiceFocalLoss, {"sigmoid": True}, 1),
        (DiceFocalLoss, {"softmax": True, "to_onehot_y": True}, 2),
        (FocalLoss, {"use_softmax": True, "to_onehot_y": True}, 2),
        (GeneralizedDiceLoss, {"softmax": True, "to_onehot_y": True}, 2),
        (TverskyLoss, {"softmax": True, "to_onehot_y": True}, 2),
    ],
)
@pytest.mark.parametrize("spatial", [(6, 5), (5, 6, 4)])
def test_per_sample_reduction_none_equals_loop_of_mean(cls, kwargs, c, spatial):
    logits, label = seg_data(b=3, c=c, spatial=spatial)
    counted = Counting(cls(reduction="none", **kwargs))
    per = per_sample_loss(counted, logits, label)
    assert per.shape == (3,) and counted.calls == 1  # vectorised
    expected = loop(cls(reduction="mean", **kwargs), logits, label)
    assert torch.allclose(per, expected.to(per.dtype), atol=1e-6, rtol=0)
    assert not torch.allclose(per, per.mean().expand(3))  # the samples differ


@pytest.mark.parametrize("sigmoid, c", [(True, 1), (False, 2)])
def test_per_sample_dice_ce_loops_and_matches_dice_plus_ce(sigmoid, c):
    # DiceCELoss has no reduction="none": it is called per sample; compare with an independent
    # per-sample Dice (reduction="none") + voxel-mean (B)CE from torch.
    logits, label = seg_data(b=3, c=c)
    kw = {"sigmoid": True} if sigmoid else {"softmax": True, "to_onehot_y": True}
    with pytest.raises(ValueError, match="Unsupported option 'none'"):
        DiceCELoss(reduction="none", **kw)  # MONAI 1.6.1
    counted = Counting(DiceCELoss(**kw))
    per = per_sample_loss(counted, logits, label)
    assert per.shape == (3,) and counted.calls == 3  # one call per sample
    dice = DiceLoss(reduction="none", **kw)(logits, label).reshape(3, -1).mean(1)
    if sigmoid:
        ce = F.binary_cross_entropy_with_logits(logits, label.to(logits.dtype), reduction="none")
    else:
        ce = F.cross_entropy(logits, label[:, 0], reduction="none")
    assert torch.allclose(per, dice + ce.reshape(3, -1).mean(1), atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "loss, shape",
    [
        (DiceLoss(sigmoid=True, reduction="none"), (3, 2, 1, 1, 1)),
        (GeneralizedDiceLoss(sigmoid=True, reduction="none"), (3, 1, 1, 1, 1)),
        (TverskyLoss(sigmoid=True, reduction="none"), (3, 2)),
        (FocalLoss(reduction="none"), (3, 2, 5, 6, 4)),
        (DiceFocalLoss(sigmoid=True, reduction="none"), (3, 2, 5, 6, 4)),
    ],
)
def test_monai_reduction_none_shapes(loss, shape):
    # the shapes per_sample_loss's docstring states for MONAI 1.6.1 (input (3, 2, 5, 6, 4))
    logits, label = seg_data(b=3, c=2)
    onehot = torch.cat([label == 0, label == 1], 1).to(logits.dtype)
    assert tuple(loss(logits, onehot).shape) == shape
    assert per_sample_loss(loss, logits, onehot).shape == (3,)


def test_dice_focal_own_reduction_attribute_is_stale():
    # why the reduction is read from the child losses
    loss = DiceFocalLoss(sigmoid=True, reduction="none")
    assert loss.reduction == "mean" and loss.dice.reduction == loss.focal.reduction == "none"


def test_per_sample_scalar_losses_and_plain_callables():
    x = torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64)
    y = torch.zeros(3, 1)
    mean_loss = Fixed("mean")
    assert per_sample_loss(mean_loss, x, y).tolist() == [1.0, 2.0, 4.0] and mean_loss.calls == 3
    assert per_sample_loss(lambda a, b: a[:, 0], x, y).tolist() == [1.0, 2.0, 4.0]  # batch first: once
    assert per_sample_loss(lambda a, b: a.mean(), x, y).tolist() == [1.0, 2.0, 4.0]  # 0-d: per sample
    assert per_sample_loss(lambda a, b: a.mean(), x[:1], y[:1]).tolist() == [1.0]
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert torch.allclose(per_sample_loss(torch.nn.MSELoss(reduction="none"), a, b), ((a - b) ** 2).mean((1, 2)))
    assert torch.allclose(per_sample_loss(torch.nn.MSELoss(), a, b), ((a - b) ** 2).mean((1, 2)))
    # "sum" losses loop too: the per-sample value is the sample's sum
    assert torch.allclose(per_sample_loss(torch.nn.MSELoss(reduction="sum"), a, b), ((a - b) ** 2).sum((1, 2)))


# values ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_hand_computed_total_and_gradient(reduction):
    # l = (1, 2, 4), w = (0, 0.5, 2), alpha = 0.2:
    # seg = 7/3, weighted = (0 + 1 + 8)/3 = 3, total = 0.2 * 7/3 + 0.8 * 3 = 43/15;
    # d total / d l_i = (alpha + (1 - alpha) w_i) / 3 = (0.2, 0.6, 1.8) / 3 = (1/15, 1/5, 3/5).
    x = torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64, requires_grad=True)
    loss = DivergenceWeightedLoss(Fixed(reduction), alpha=0.2)
    total = loss(x, torch.zeros(3, 1), weight=torch.tensor([0.0, 0.5, 2.0]))
    assert total.dtype == torch.float64 and total.ndim == 0
    assert total.item() == pytest.approx(43 / 15, abs=1e-14)
    terms = loss.last_terms  # detached 0-d tensors of the loss's dtype: no host sync in forward
    assert all(isinstance(t, torch.Tensor) and t.ndim == 0 and t.dtype == torch.float64 and not t.requires_grad
               for t in terms.values())
    assert {k: float(t) for k, t in terms.items()} == pytest.approx(
        {"seg": 7 / 3, "weighted": 3.0, "total": 43 / 15}, abs=1e-14)
    total.backward()
    assert torch.allclose(x.grad[:, 0], torch.tensor([1 / 15, 1 / 5, 3 / 5], dtype=torch.float64), atol=1e-14)


def test_weights_are_used_raw_and_in_any_form():
    x = torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64)
    loss = DivergenceWeightedLoss(Fixed(), alpha=0.0)
    y = torch.zeros(3, 1)
    # not normalised: doubling the weights doubles the weighted term
    assert loss(x, y, weight=torch.tensor([0.0, 1.0, 4.0])).item() == pytest.approx(2 * 3.0, abs=1e-14)
    for w in ([0.0, 0.5, 2.0], torch.tensor([[0.0], [0.5], [2.0]]), torch.tensor([0.0, 0.5, 2.0], dtype=torch.float16),
              torch.tensor([0.0, 0.5, 2.0], requires_grad=True)):
        assert loss(x, y, weight=w).item() == pytest.approx(3.0, abs=1e-14)
    assert loss(x, y, weight=torch.tensor([0, 1, 4])).item() == pytest.approx(6.0, abs=1e-14)  # integers


def test_alpha_one_and_unit_weights_give_the_plain_loss():
    logits, label = seg_data(b=4, c=2, seed=3)
    kw = {"softmax": True, "to_onehot_y": True}
    plain = DiceFocalLoss(**kw)(logits, label).item()
    w = torch.tensor([0.3, 0.0, 2.5, 1.1])
    assert DivergenceWeightedLoss(DiceFocalLoss(reduction="none", **kw), alpha=1.0)(
        logits, label, weight=w).item() == pytest.approx(plain, abs=1e-6)
    for alpha in (0.0, 0.2, 0.7):
        got = DivergenceWeightedLoss(DiceFocalLoss(reduction="none", **kw), alpha=alpha)(
            logits, label, weight=torch.ones(4))
        assert got.item() == pytest.approx(plain, abs=1e-6)
    # and other weights change it
    other = DivergenceWeightedLoss(DiceFocalLoss(reduction="none", **kw))(logits, label, weight=w)
    assert abs(other.item() - plain) > 1e-3


# gradients -------------------------------------------------------------------------------------------


def _model_grads(weight, alpha, seed=0, detach_weighted=False, analytic=False):
    """Parameter gradients of a tiny Conv3d on one fixed batch (float64).

    ``analytic``: alpha * grad(mean l) + (1 - alpha) * grad(mean w l), each by autograd on the plain
    per-sample loop of DiceLoss(reduction="mean"); ``detach_weighted``: only the alpha term, the paper
    code's gradient (its weighted term is a constant).
    """
    torch.manual_seed(seed)
    net = torch.nn.Conv3d(1, 1, 3, padding=1).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(2, 1, 6, 6, 6, generator=g, dtype=torch.float64)
    y = (torch.rand(2, 1, 6, 6, 6, generator=g) > 0.6).double()
    params = list(net.parameters())
    if not analytic and not detach_weighted:
        total = DivergenceWeightedLoss(DiceLoss(sigmoid=True, reduction="none"), alpha=alpha)(
            net(x), y, weight=weight)
        return torch.autograd.grad(total, params)
    per = loop(DiceLoss(sigmoid=True), net(x), y)
    g_seg = torch.autograd.grad(per.mean(), params, retain_graph=True)
    if detach_weighted:
        return tuple(alpha * a for a in g_seg)
    g_w = torch.autograd.grad((torch.as_tensor(weight, dtype=per.dtype) * per).mean(), params)
    return tuple(alpha * a + (1 - alpha) * b for a, b in zip(g_seg, g_w))


def _close(ga, gb, atol=1e-10):
    return all(torch.allclose(a, b, atol=atol, rtol=0) for a, b in zip(ga, gb))


@pytest.mark.parametrize("weight, alpha", [((0.1, 0.9), 0.2), ((1.0, 1.0), 0.2), ((0.1, 0.9), 1.0), ((2.0, 0.0), 0.5)])
def test_gradient_equals_analytic_combination(weight, alpha):
    w = torch.tensor(weight)
    assert _close(_model_grads(w, alpha), _model_grads(w, alpha, analytic=True), atol=1e-6)


def test_weighted_term_changes_the_gradient_and_is_not_detached():
    g_a = _model_grads(torch.tensor([0.1, 0.9]), 0.2)
    g_b = _model_grads(torch.tensor([1.0, 1.0]), 0.2)
    g_c = _model_grads(torch.tensor([0.1, 0.9]), 1.0)
    assert not _close(g_a, g_b, atol=1e-6) and not _close(g_a, g_c, atol=1e-6)
    # the paper's code would give only alpha * grad(mean l)
    detached = _model_grads(torch.tensor([0.1, 0.9]), 0.2, detach_weighted=True)
    assert not _close(g_a, detached, atol=1e-6)
    assert max((a - b).abs().max().item() for a, b in zip(g_a, detached)) > 1e-3


def test_dice_focal_gradient_equals_analytic_combination():
    logits, label = seg_data(b=3, c=2, seed=5)
    kw = {"softmax": True, "to_onehot_y": True}
    w, alpha = torch.tensor([0.0, 0.5, 2.0]), 0.2
    a = logits.clone().requires_grad_(True)
    loss = DivergenceWeightedLoss(DiceFocalLoss(reduction="none", **kw), alpha)
    (g,) = torch.autograd.grad(loss(a, label, weight=w), a)
    b = logits.clone().requires_grad_(True)
    per = loop(DiceFocalLoss(**kw), b, label)
    (g_ref,) = torch.autograd.grad(alpha * per.mean() + (1 - alpha) * (w.double() * per).mean(), b)
    assert torch.allclose(g, g_ref.to(g.dtype), atol=1e-6, rtol=0)


# errors ----------------------------------------------------------------------------------------------


def test_missing_weight_message():
    x = torch.ones(3, 1)
    loss = DivergenceWeightedLoss(Fixed())
    with pytest.raises(ValueError, match=esc(MISSING_WEIGHT_MSG)):
        loss(x, x)
    assert MISSING_WEIGHT_MSG.endswith(
        "The weights come from fairmonai.handlers.SubgroupReweighting through "
        'FairSupervisedTrainer(loss_batch_keys={"weight": "sample_weight"})'
    )
    with pytest.raises(TypeError, match="positional"):
        loss(x, x, torch.ones(3))


@pytest.mark.parametrize(
    "weight, exc, message",
    [
        (torch.ones(2), ValueError,
         "weight must have shape (B,) or (B, 1) with B = 3: input has shape (3, 1) but weight has shape (2,)"),
        (torch.ones(3, 2), ValueError, WEIGHT_SHAPE_MSG.format(b=3, input_shape=(3, 1), weight_shape=(3, 2))),
        (torch.tensor(1.0), ValueError, WEIGHT_SHAPE_MSG.format(b=3, input_shape=(3, 1), weight_shape=())),
        (torch.tensor([1.0, -0.5, 2.0]), ValueError, "weight must hold finite values >= 0; got weight[1] = -0.5"),
        (torch.tensor([1.0, 0.5, float("nan")]), ValueError, WEIGHT_VALUE_MSG.format(index=2, value=float("nan"))),
        (torch.tensor([float("inf"), 0.5, 1.0]), ValueError, WEIGHT_VALUE_MSG.format(index=0, value=float("inf"))),
        (["a", "b", "c"], TypeError, "weight must be a real-valued tensor or sequence of shape (B,); got list"),
        (torch.ones(3, dtype=torch.bool), TypeError, WEIGHT_TYPE_MSG.format(type="Tensor of torch.bool")),
    ],
)
def test_weight_errors(weight, exc, message):
    loss = DivergenceWeightedLoss(Fixed())
    with pytest.raises(exc, match=f"^{esc(message)}$"):
        loss(torch.ones(3, 1), torch.ones(3, 1), weight=weight)
    assert loss.loss.calls == 0  # checked before the loss runs


@pytest.mark.parametrize(
    "args, kwargs, exc, message",
    [
        ((Fixed(),), {"alpha": -0.1}, ValueError, "alpha must be a finite number in [0.0, 1.0]; got -0.1"),
        ((Fixed(),), {"alpha": 1.5}, ValueError, "alpha must be a finite number in [0.0, 1.0]; got 1.5"),
        ((Fixed(),), {"alpha": float("nan")}, ValueError, "alpha must be a finite number in [0.0, 1.0]; got nan"),
        ((Fixed(),), {"alpha": "0.2"}, TypeError, "alpha must be a finite number in [0.0, 1.0]; got '0.2'"),
        (("dice",), {}, TypeError, LOSS_CALLABLE_MSG.format(type="str")),
        ((DiceLoss(sigmoid=True, batch=True, reduction="none"),), {}, ValueError,
         "DiceLoss has batch=True, which pools the Dice over the batch, so it has no per-sample values; "
         "construct it with batch=False (the default)"),
        ((DiceFocalLoss(sigmoid=True, batch=True),), {}, ValueError, BATCH_POOLED_MSG.format(loss="DiceFocalLoss")),
    ],
)
def test_constructor_errors(args, kwargs, exc, message):
    with pytest.raises(exc, match=f"^{esc(message)}$"):
        DivergenceWeightedLoss(*args, **kwargs)


def test_per_sample_errors():
    x = torch.ones(3, 1)
    with pytest.raises(ValueError, match=esc(BATCH_MISMATCH_MSG.format(input_shape=(3, 1), target_shape=(2, 1)))):
        DivergenceWeightedLoss(Fixed())(x, torch.ones(2, 1), weight=torch.ones(3))
    with pytest.raises(ValueError, match=esc(EMPTY_BATCH_MSG.format(input_shape=(0, 1)))):
        per_sample_loss(Fixed(), torch.ones(0, 1), torch.ones(0, 1))
    bad = Fixed()
    bad.forward = lambda a, b: a.reshape(-1)[:2]
    with pytest.raises(ValueError, match=esc(
            "Fixed returned shape (2,) for input of shape (3, 1); per-sample values need the batch dimension "
            "first (B = 3)")):
        per_sample_loss(bad, x, x)
    with pytest.raises(ValueError, match=esc(PER_SAMPLE_SHAPE_MSG.format(
            loss="<lambda>", out_shape=(1,), input_shape=(3, 1), b=3))):
        per_sample_loss(lambda a, b: a.sum().reshape(1), x, x)
    with pytest.raises(ValueError, match=esc(BATCH_POOLED_MSG.format(loss="DiceLoss"))):
        per_sample_loss(DiceLoss(batch=True), x, x)


def test_repr():
    assert "alpha=0.2" in repr(DivergenceWeightedLoss(DiceLoss(reduction="none")))
