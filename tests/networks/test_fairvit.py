"""FairViT-lite: masks (identity at start, the reference's weight masking, routing, gradient shares,
varsigma projection), eval = the wrapped ViT, aux heads on the block class tokens, the summed CE by
hand, the distance loss and its gradient on a hand example, the calibration line, the calibration
split's sizes by hand, its datalist form (a partition in input order, the cells' shares, a case
without its group named), and the exact error messages."""

import copy
import math

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121, ViT

from fairmonai.networks import FairViTLite, FairViTLoss, FairViTOutput, ViTClassifier
from fairmonai.networks.fairvit import (
    BAD_AUX_MSG,
    BAD_ROUTING_MSG,
    calibration_datalists,
    calibration_split,
    fit_margin_hyperplane,
    Hyperplane,
    hyperplane_distance_loss,
    margin_coordinates,
    MISSING_SENSITIVE_TRAIN_MSG,
    NOT_A_VIT_MSG,
)


def _vit(num_layers=4, seed=0):  # the OCT bundle's smoke sizes, 4 layers for 4 aux heads
    torch.manual_seed(seed)
    return ViTClassifier(in_channels=1, img_size=32, patch_size=16, hidden_size=48, mlp_dim=96,
                         num_layers=num_layers, num_heads=4)


def _x(b=4, seed=1):
    return torch.randn(b, 1, 32, 32, 32, generator=torch.Generator().manual_seed(seed))


def _set_scores(net, group, seed=2, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.masks.values():
            p[group] = scale * torch.randn(p.shape[1], generator=g)


# --- masks -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("routing", ["shared", "sample"])
def test_masks_are_identity_at_start(routing):
    vit = _vit()
    net = FairViTLite(vit, num_groups=2, routing=routing).train()
    x = _x()
    out = net(x, sensitive=torch.tensor([0, 1, 1, 0]))
    assert isinstance(out, FairViTOutput)
    assert torch.equal(out.logits, vit(x))  # s = 0: m = 1 exactly (dropout 0, so train = eval)
    assert all(torch.equal(p, torch.zeros_like(p)) for p in net.masks.values())
    assert torch.equal(net.varsigma, torch.tensor([2.0, 2.0]))


def test_mask_shapes_per_layer():
    net = FairViTLite(_vit(), num_groups=3)
    shapes = {k: tuple(p.shape) for k, p in net.masks.items()}
    assert len(shapes) == 4 * 4
    assert shapes["block0_qkv"] == (3, 4)  # one entry per head
    assert shapes["block3_out_proj"] == (3, 48)
    assert shapes["block1_linear1"] == (3, 96)
    assert shapes["block2_linear2"] == (3, 48)


def test_sample_routing_changes_only_the_groups_cases():
    vit = _vit()
    net = FairViTLite(vit, num_groups=2, routing="sample").train()
    _set_scores(net, group=1)
    x, codes = _x(), torch.tensor([0, 1, 0, 1])
    out = net(x, sensitive=codes).logits
    plain = vit(x)
    assert torch.equal(out[codes == 0], plain[codes == 0])  # group 0's mask is still 1
    assert (out[codes == 1] - plain[codes == 1]).abs().min() > 1e-4


def _scaled_copy(vit, net, group_weights):
    """The reference's weight masking: each Linear's weight rows and bias times m = 1 + sum_j w_j s_j."""
    ref = copy.deepcopy(vit)
    sig = net.varsigma.detach()
    with torch.no_grad():
        for b, blk in enumerate(ref.vit.blocks):
            for name, layer in (("qkv", blk.attn.qkv), ("out_proj", blk.attn.out_proj),
                                ("linear1", blk.mlp.linear1), ("linear2", blk.mlp.linear2)):
                s = net.masks[f"block{b}_{name}"].detach()
                m = 1 + sum(group_weights[j] * sig[j] * s[j] for j in range(s.shape[0]))
                if name == "qkv":  # head h covers channels h*12 .. h*12+11 of each of q, k, v
                    m = m.repeat_interleave(12).repeat(3)
                layer.weight.mul_(m[:, None])
                if layer.bias is not None:
                    layer.bias.mul_(m)
    return ref


def test_shared_routing_equals_the_references_weight_masking():
    vit = _vit()
    net = FairViTLite(vit, num_groups=2, routing="shared").train()
    _set_scores(net, group=0, seed=3)
    _set_scores(net, group=1, seed=4)
    with torch.no_grad():
        net.varsigma.copy_(torch.tensor([1.5, 3.0]))
    x = _x()
    out = net(x, sensitive=torch.tensor([0, 0, 0, 1])).logits
    ref = _scaled_copy(vit, net, group_weights=[1.0, 1.0])  # forward: the full sum, whatever the batch
    assert torch.allclose(out, ref(x), atol=1e-5)
    assert (out - vit(x)).abs().max() > 1e-3


def test_sample_routing_equals_weight_masking_per_group():
    vit = _vit()
    net = FairViTLite(vit, num_groups=2, routing="sample").train()
    _set_scores(net, group=1, seed=5)
    x = _x()
    out = net(x, sensitive=torch.tensor([1, 1, 1, 1])).logits
    ref = _scaled_copy(vit, net, group_weights=[0.0, 1.0])
    assert torch.allclose(out, ref(x), atol=1e-5)


def test_shared_routing_scales_gradients_by_the_groups_batch_share():
    # batch of groups [0, 0, 0, 1]: shares 0.75 and 0.25. With s_1 = 0 the forward mask is 1 + 2 s_0, as in a
    # one-group model with the same s; there every gradient has share 1, so here grad s_0 and grad varsigma_0
    # are 0.75 times the one-group model's, and grad s_1 is 0.25 * varsigma_1 / varsigma_0 = 0.25 times it.
    vit = _vit()
    two = FairViTLite(copy.deepcopy(vit), num_groups=2).train()
    one = FairViTLite(copy.deepcopy(vit), num_groups=1).train()
    _set_scores(two, group=0, seed=6)
    with torch.no_grad():
        for k in one.masks:
            one.masks[k][0] = two.masks[k][0]
    x = _x()
    two(x, sensitive=torch.tensor([0, 0, 0, 1])).logits.sum().backward()
    one(x, sensitive=torch.tensor([0, 0, 0, 0])).logits.sum().backward()
    for k in ("block0_qkv", "block3_linear1"):
        g_one = one.masks[k].grad[0]
        assert g_one.abs().max() > 1e-4
        assert torch.allclose(two.masks[k].grad[0], 0.75 * g_one, rtol=1e-4, atol=1e-7)
        assert torch.allclose(two.masks[k].grad[1], 0.25 * g_one, rtol=1e-4, atol=1e-7)
    assert torch.allclose(two.varsigma.grad[0], 0.75 * one.varsigma.grad[0], rtol=1e-4)
    assert two.varsigma.grad[1].item() == 0.0  # s_1 = 0


def test_varsigma_is_projected_into_its_range():
    net = FairViTLite(_vit(), num_groups=3).train()
    _set_scores(net, group=0, seed=7)
    with torch.no_grad():
        net.varsigma.copy_(torch.tensor([5.0, -1.0, 2.5]))  # as if an optimizer step had left (0, 4)
    out = net(_x(), sensitive=torch.tensor([0, 1, 2, 0])).logits
    assert net.varsigma.tolist() == pytest.approx([4.0 - 1e-6, 1e-8, 2.5], abs=0, rel=1e-7)
    # the same model built with the projected values gives the same output
    clean = _vit()
    clean.load_state_dict(net.backbone.state_dict())
    ref = FairViTLite(clean, num_groups=3).train()
    with torch.no_grad():
        ref.masks.load_state_dict(net.masks.state_dict())
        ref.varsigma.copy_(torch.tensor([4.0 - 1e-6, 1e-8, 2.5]))
    assert torch.equal(out, ref(_x(), sensitive=torch.tensor([0, 1, 2, 0])).logits)


def test_learn_varsigma_false_freezes_it():
    net = FairViTLite(_vit(), num_groups=2, learn_varsigma=False)
    assert not net.varsigma.requires_grad
    assert net.varsigma.tolist() == [2.0, 2.0]


def test_deepcopy_masks_with_the_copys_parameters():
    net = FairViTLite(_vit(), num_groups=2, routing="sample").train()
    twin = copy.deepcopy(net)
    _set_scores(twin, group=1, seed=8)  # only the copy's masks change
    x, codes = _x(), torch.tensor([1, 1, 0, 0])
    assert torch.equal(net(x, sensitive=codes).logits, net.backbone(x))
    assert not torch.equal(twin(x, sensitive=codes).logits, net.backbone(x))


# --- eval mode -----------------------------------------------------------------------------------------

def test_eval_ignores_masks_and_groups():
    vit = _vit()
    net = FairViTLite(vit, num_groups=2)
    _set_scores(net, group=0, seed=9)
    _set_scores(net, group=1, seed=10)
    net.eval()
    x = _x()
    with torch.no_grad():
        expected = vit(x)
        assert torch.equal(net(x), expected)
        assert torch.equal(net(x, sensitive=torch.tensor([1, 0, 1, 0])), expected)
    assert torch.equal(vit(x), expected)  # hooks off outside a FairViTLite training forward


def test_backbone_called_alone_is_not_masked_after_training_forward():
    vit = _vit()
    net = FairViTLite(vit, num_groups=2).train()
    _set_scores(net, group=0, seed=11)
    x = _x()
    net(x, sensitive=torch.tensor([0, 0, 0, 0]))
    plain = _vit()
    plain.load_state_dict(vit.state_dict())
    assert torch.equal(vit(x), plain(x))


# --- aux heads -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("layers,heads,blocks", [(4, 4, (0, 1, 2, 3)), (2, 2, (0, 1)), (4, 2, (2, 3)), (4, 0, ())])
def test_aux_heads_count_shapes_and_inputs(layers, heads, blocks):
    vit = _vit(num_layers=layers)
    net = FairViTLite(vit, num_groups=2, num_aux_heads=heads).train()
    assert net.aux_blocks == blocks and len(net.aux_heads) == heads
    seen = {}
    for b in blocks:
        vit.vit.blocks[b].register_forward_hook(lambda m, i, o, b=b: seen.__setitem__(b, o))
    out = net(_x(b=3), sensitive=torch.tensor([0, 1, 0]))
    assert out.logits.shape == (3, 2)
    assert out.aux_logits.shape == (3, heads, 2)
    for k, b in enumerate(blocks):
        norm, lin = net.aux_heads[k]
        assert torch.allclose(out.aux_logits[:, k], lin(norm(seen[b][:, 0])), atol=1e-6)


def test_aux_blocks_explicit_and_errors():
    assert FairViTLite(_vit(), num_groups=2, aux_blocks=[1, 3]).aux_blocks == (1, 3)
    with pytest.raises(ValueError) as e:
        FairViTLite(_vit(num_layers=2), num_groups=2)  # 4 aux heads on 2 blocks
    assert str(e.value) == BAD_AUX_MSG.format(n=2, got="the last 4")
    with pytest.raises(ValueError) as e:
        FairViTLite(_vit(), num_groups=2, aux_blocks=[3, 3])
    assert str(e.value) == "aux_blocks must be distinct block indices in [0, 4) (the ViT has 4 blocks), got [3, 3]"


# --- FairViTLoss ---------------------------------------------------------------------------------------

def _ce(z, t):  # by hand: log-sum-exp minus the true logit
    return math.log(sum(math.exp(v) for v in z)) - z[t]


def test_summed_ce_by_hand():
    main = torch.tensor([[2.0, 0.0], [0.0, math.log(3.0)]])
    aux = torch.tensor([[[0.0, 0.0], [1.0, -1.0]], [[0.5, 0.0], [0.0, 0.0]]])  # (B=2, K=2, C=2)
    t = torch.tensor([0, 1])
    # main: ln(1 + e^-2) and ln(4/3); aux head 0 (case 0 (0, 0), case 1 (0.5, 0)): ln 2 and ln(1 + e^0.5);
    # aux head 1 (case 0 (1, -1), case 1 (0, 0)): ln(1 + e^-2) and ln 2; each a batch mean
    expected = ((math.log(1 + math.exp(-2)) + math.log(4 / 3)) / 2 + (math.log(2) + math.log(1 + math.exp(0.5))) / 2
                + (math.log(1 + math.exp(-2)) + math.log(2)) / 2)
    by_hand = (sum(_ce(main[i].tolist(), int(t[i])) for i in range(2)) / 2
               + sum(sum(_ce(aux[i, k].tolist(), int(t[i])) for i in range(2)) / 2 for k in range(2)))
    assert by_hand == pytest.approx(expected, abs=1e-7)  # ln 3 in float32
    loss = FairViTLoss()(FairViTOutput(main, aux), t)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert FairViTLoss()(main, t).item() == pytest.approx((math.log(1 + math.exp(-2)) + math.log(4 / 3)) / 2,
                                                          abs=1e-6)  # eval-mode logits: main CE only


# Hand example for the distance loss, theta = (3, 4), b = -5, |theta| = 5:
#   A label 0, logits (3, 1):  x = 3,  y = 1: d = (9 + 4 - 5)/5 = 1.6   -> -0.5 * 1.6 = -0.8
#   B label 1, logits (2, 0):  x = 0,  y = 2: d = (0 + 8 - 5)/5 = 0.6   -> -0.3
#   C label 0, logits (0, 0):  x = 0,  y = 0: d = -1 (wrong side)       -> +1
#   D label 1, logits (0, 20): x = 20, y = 0: d = 11 >= 10              -> -2
#   sum -2.1, times alpha 0.1 = -0.21; mean -0.0525
HAND_LOGITS = [[3.0, 1.0], [2.0, 0.0], [0.0, 0.0], [0.0, 20.0]]
HAND_LABELS = [0, 1, 0, 1]
HAND_PLANE = Hyperplane(3.0, 4.0, -5.0)


def test_margin_coordinates_by_hand():
    assert margin_coordinates(torch.tensor(HAND_LOGITS), torch.tensor(HAND_LABELS)).tolist() == [
        [3.0, 1.0], [0.0, 2.0], [0.0, 0.0], [20.0, 0.0]]
    z = torch.tensor([[1.0, 5.0, 3.0]] * 3)  # 3 classes: true class outside the top two -> both competitors
    assert margin_coordinates(z, torch.tensor([0, 1, 2])).tolist() == [[1.0, 8.0], [5.0, 3.0], [3.0, 5.0]]


@pytest.mark.parametrize("reduction,expected", [("sum", -0.21), ("mean", -0.0525)])
def test_distance_loss_by_hand(reduction, expected):
    z = torch.tensor(HAND_LOGITS, requires_grad=True)
    loss = hyperplane_distance_loss(z, torch.tensor(HAND_LABELS), HAND_PLANE, reduction=reduction)
    assert loss.item() == pytest.approx(expected, abs=1e-7)
    if reduction == "sum":
        loss.backward()
        # A (correct side): d(-0.5 d)/dx = -0.5 * 3/5, /dy = -0.5 * 4/5; C (wrong side): -3/5, -4/5; D: 0
        expected_grad = 0.1 * torch.tensor([[-0.3, -0.4], [-0.4, -0.3], [-0.6, -0.8], [0.0, 0.0]])
        assert torch.allclose(z.grad, expected_grad, atol=1e-7)  # B: x is logit 1, y is logit 0


def test_distance_loss_none_and_options():
    per = hyperplane_distance_loss(torch.tensor(HAND_LOGITS), torch.tensor(HAND_LABELS), HAND_PLANE,
                                   reduction="none", alpha=1.0, gamma=1.0, offset=5.0)
    # offset 5 moves d by -1: 0.6, -0.4, -2, 10 -> -0.6, +0.4, +2, -2
    assert per.tolist() == pytest.approx([-0.6, 0.4, 2.0, -2.0], abs=1e-6)
    with pytest.raises(ValueError, match="theta1 = theta2 = 0"):
        hyperplane_distance_loss(torch.tensor(HAND_LOGITS), torch.tensor(HAND_LABELS), (0.0, 0.0, 1.0))


def test_loss_adds_distance_only_with_a_line():
    main = torch.tensor(HAND_LOGITS)
    aux = torch.zeros(4, 1, 2)
    t = torch.tensor(HAND_LABELS)
    crit = FairViTLoss()
    base = crit(FairViTOutput(main, aux), t).item()
    crit.hyperplane = HAND_PLANE
    assert crit(FairViTOutput(main, aux), t).item() == pytest.approx(base - 0.21, abs=1e-6)
    assert crit(main, t).item() == pytest.approx(FairViTLoss()(main, t).item())  # eval logits: no distance


def _calibration_logits(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    z = 2 * torch.randn(n, 2, generator=g)
    return z, labels, z.argmax(1) == labels


def test_fit_margin_hyperplane_separates_right_from_wrong():
    # two classes: correct iff true logit x > competitor y, i.e. the line x - y = 0
    z, y, correct = _calibration_logits()
    plane = fit_margin_hyperplane(z, y, seed=0)
    assert plane.theta1 > 0 > plane.theta2  # higher true logit: correct side; higher competitor: wrong side
    assert plane.theta1 / -plane.theta2 == pytest.approx(1.0, abs=0.2)
    xy = margin_coordinates(z, y)
    side = plane.theta1 * xy[:, 0] + plane.theta2 * xy[:, 1] + plane.bias > 0
    assert (side == correct).float().mean() > 0.97
    assert fit_margin_hyperplane(z, y, seed=0) == plane


def test_fit_with_one_class_returns_none_and_refit_is_off_in_epoch_0():
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    with pytest.warns(UserWarning, match="all 2 calibration cases are correctly classified"):
        assert fit_margin_hyperplane(z, torch.tensor([0, 1]), seed=0) is None
    crit = FairViTLoss()
    zc, yc, _ = _calibration_logits()
    assert crit.refit(zc, yc, epoch=0) is None and crit.hyperplane is None
    assert isinstance(crit.refit(zc, yc, epoch=1), Hyperplane) and crit.hyperplane is not None


def test_fit_tiny_calibration_set():
    z = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    y = torch.tensor([0, 0, 0, 1, 1])  # correct: 1, 1, 0, 1, 0 -> two wrong: cv = 2
    assert isinstance(fit_margin_hyperplane(z, y, seed=0), Hyperplane)
    y = torch.tensor([0, 0, 0, 1, 0])  # one wrong case: plain logistic regression
    assert isinstance(fit_margin_hyperplane(z, y, seed=0), Hyperplane)


# --- calibration split ------------------------------------------------------------------------------------

def _cohort(sizes):
    labels, groups = [], []
    for (lab, grp), n in sizes.items():
        labels += [lab] * n
        groups += [grp] * n
    return np.arange(100, 100 + len(labels)), np.array(labels), np.array(groups)


def test_calibration_split_sizes_and_strata():
    idx, y, g = _cohort({(0, 0): 40, (0, 1): 20, (1, 0): 30, (1, 1): 10})
    train, cal = calibration_split(idx, y, g, fraction=0.1, seed=0)
    assert len(cal) == 10 and len(train) == 90
    assert sorted(np.concatenate([train, cal]).tolist()) == idx.tolist()
    pos = cal - 100
    cells = sorted(zip(y[pos].tolist(), g[pos].tolist()))
    assert cells == [(0, 0)] * 4 + [(0, 1)] * 2 + [(1, 0)] * 3 + [(1, 1)]  # 10 % of each cell


def test_calibration_split_largest_remainder():
    # 25 cases, cells 12, 8, 5: n_cal = round(2.5) = 3; exact quotas 1.44, 0.96, 0.60 -> floors 1, 0, 0 and the
    # two largest remainders (0.96, 0.60) get one each: 1, 1, 1
    idx, y, g = _cohort({(0, 0): 12, (0, 1): 8, (1, 0): 5})
    _, cal = calibration_split(idx, y, g, fraction=0.1, seed=3)
    pos = cal - 100
    assert sorted(zip(y[pos].tolist(), g[pos].tolist())) == [(0, 0), (0, 1), (1, 0)]


def test_calibration_split_is_seeded():
    idx, y, g = _cohort({(0, 0): 40, (0, 1): 20, (1, 0): 30, (1, 1): 10})
    a = calibration_split(idx, y, g, seed=7)
    b = calibration_split(idx, y, g, seed=7)
    c = calibration_split(idx, y, g, seed=8)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_calibration_split_errors():
    idx, y, g = _cohort({(0, 0): 5, (1, 1): 5})
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\), got 1.0"):
        calibration_split(idx, y, g, fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="indices, labels and groups must be 1-D of one length"):
        calibration_split(idx, y[:-1], g, seed=0)
    with pytest.raises(ValueError, match="indices must be distinct"):
        calibration_split(np.zeros(10, int), y, g, seed=0)


def _datalist(sizes, group_key="race_code"):
    """A bundle-like datalist, cases in input order ``case000``, ``case001``, ... by cell (label, group)."""
    idx, y, g = _cohort(sizes)
    return [{"case_id": f"case{i - 100:03d}", "image": f"img{i}.nii.gz", "label": int(lab), group_key: int(grp)}
            for i, lab, grp in zip(idx, y, g)]


@pytest.mark.parametrize("sizes,n_cal,cells", [
    # 100 cases: 10 % of each cell (4, 2, 3, 1)
    ({(0, 0): 40, (0, 1): 20, (1, 0): 30, (1, 1): 10}, 10, {(0, 0): 4, (0, 1): 2, (1, 0): 3, (1, 1): 1}),
    # 45 cases: 4.5 rounds half up to 5 (Python's round would give 4); exact quotas 5 * (20, 10, 10, 5) / 45 =
    # 2.22, 1.11, 1.11, 0.56 -> floors 2, 1, 1, 0 and the one left to the largest remainder (0.56)
    ({(0, 0): 20, (0, 1): 10, (1, 0): 10, (1, 1): 5}, 5, {(0, 0): 2, (0, 1): 1, (1, 0): 1, (1, 1): 1}),
])
def test_calibration_datalists_partition_order_and_cells(sizes, n_cal, cells):
    data = _datalist(sizes)
    train, cal = calibration_datalists(data, group_key="race_code", fraction=0.1, seed=0)
    ids = [d["case_id"] for d in data]
    train_ids, cal_ids = [d["case_id"] for d in train], [d["case_id"] for d in cal]
    assert len(cal) == n_cal and len(train) == len(data) - n_cal
    assert sorted(train_ids + cal_ids) == sorted(ids)  # no case lost
    assert not set(train_ids) & set(cal_ids) and len(set(train_ids + cal_ids)) == len(data)  # none repeated
    assert train_ids == [i for i in ids if i in set(train_ids)]  # both keep the input order
    assert cal_ids == [i for i in ids if i in set(cal_ids)]
    got = {}
    for d in cal:
        got[(d["label"], d["race_code"])] = got.get((d["label"], d["race_code"]), 0) + 1
    assert got == cells
    assert all(d is data[ids.index(d["case_id"])] for d in train + cal)  # the cases themselves, unchanged
    # the same split as calibration_split on the positions
    pos_train, pos_cal = calibration_split(np.arange(len(data)), [d["label"] for d in data],
                                           [d["race_code"] for d in data], fraction=0.1, seed=0)
    assert cal_ids == [ids[i] for i in pos_cal] and train_ids == [ids[i] for i in pos_train]


def test_calibration_datalists_is_seeded():
    data = _datalist({(0, 0): 40, (0, 1): 20, (1, 0): 30, (1, 1): 10})
    a = calibration_datalists(data, group_key="race_code", seed=3)
    b = calibration_datalists(list(data), group_key="race_code", seed=3)
    c = calibration_datalists(data, group_key="race_code", seed=4)
    assert a == b
    assert [d["case_id"] for d in a[1]] != [d["case_id"] for d in c[1]]


def test_calibration_datalists_names_a_case_without_the_group_key():
    data = _datalist({(0, 0): 5, (1, 1): 5})
    del data[7]["race_code"]
    with pytest.raises(KeyError) as e:
        calibration_datalists(data, group_key="race_code", seed=0)
    assert e.value.args[0] == ("calibration_datalists: case case007 has no key 'race_code' (keys: ['case_id', "
                               "'image', 'label'])")
    del data[2]["case_id"], data[2]["label"]
    with pytest.raises(KeyError, match="case #2 has no key 'label'"):  # no case_id: its position
        calibration_datalists(data, group_key="race_code", seed=0)


# --- errors --------------------------------------------------------------------------------------------

def test_densenet_raises():
    with pytest.raises(TypeError) as e:
        FairViTLite(DenseNet121(spatial_dims=3, in_channels=1, out_channels=2), num_groups=2)
    assert str(e.value) == (
        "FairViTLite needs a fairmonai.networks.ViTClassifier (its masks act on the transformer blocks' qkv, "
        "out_proj, linear1 and linear2), got DenseNet121: FairViT has no DenseNet or CNN form; give it a ViT "
        "backbone (in a bundle, the ViT network overlay)")
    assert str(e.value) == NOT_A_VIT_MSG.format(
        type="DenseNet121", hint="; give it a ViT backbone (in a bundle, the ViT network overlay)")


def test_plain_monai_vit_raises_with_hint():
    vit = ViT(in_channels=1, img_size=32, patch_size=16, hidden_size=48, mlp_dim=96, num_layers=1, num_heads=4)
    with pytest.raises(TypeError, match=r"got ViT: .* \(wrap a MONAI ViT as fairmonai.networks.ViTClassifier\)"):
        FairViTLite(vit, num_groups=2)


def test_training_without_groups_raises():
    net = FairViTLite(_vit(), num_groups=2).train()
    with pytest.raises(ValueError) as e:
        net(_x())
    assert str(e.value) == MISSING_SENSITIVE_TRAIN_MSG
    with pytest.raises(ValueError, match=r"got code\(s\) \[2\] at batch position\(s\) \[1\]"):
        net(_x(b=2), sensitive=torch.tensor([0, 2]))


def test_bad_routing():
    with pytest.raises(ValueError) as e:
        FairViTLite(_vit(), num_groups=2, routing="per-group")
    assert str(e.value) == BAD_ROUTING_MSG.format(allowed=["shared", "sample"], got="per-group")


# --- in a MONAI trainer ------------------------------------------------------------------------------------

def test_in_a_supervised_trainer_with_the_groups_as_network_input():
    from monai.data import DataLoader, Dataset
    from monai.engines import PrepareBatchExtraInput, SupervisedTrainer

    data = [{"image": _x(b=1, seed=20 + i)[0], "label": i % 2, "race_code": i % 3} for i in range(4)]
    net = FairViTLite(_vit(), num_groups=3, num_aux_heads=2, routing="sample")
    _set_scores(net, group=2, seed=12)
    crit = FairViTLoss()
    crit.hyperplane = HAND_PLANE
    before = copy.deepcopy(net).train()  # the same parameters as the trainer's first forward
    x = torch.stack([d["image"] for d in data])
    expected = crit(before(x, sensitive=torch.tensor([0, 1, 2, 0])), torch.tensor([0, 1, 0, 1])).item()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader(Dataset(data), batch_size=4),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=crit,
        prepare_batch=PrepareBatchExtraInput({"sensitive": "race_code"}))
    trainer.run()
    assert float(trainer.state.output[0]["loss"]) == pytest.approx(expected, abs=1e-5)
    logits_0, aux_0 = trainer.state.output[0]["pred"]  # decollated per case: [logits (C,), aux (K, C)]
    assert logits_0.shape == (2,) and aux_0.shape == (2, 2)
    assert not torch.equal(net.masks["block0_linear1"][2], before.masks["block0_linear1"][2])  # masks trained
