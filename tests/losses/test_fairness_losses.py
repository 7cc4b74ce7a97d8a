"""Hänel et al.'s batch fairness losses: hand-computed values (K_t = 3, K_s = 3), scikit-learn's mutual
information, independence and planted dependence, empty cells in both modes, gradcheck, excluded codes,
errors; the modules and their counters, FairnessLossWithCE (also inside FairSupervisedTrainer) and the
effective-number class weights."""

import math
import re
from itertools import product

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import mutual_info_score

from fairmonai.losses import (
    DemographicParityL2Loss,
    DemographicParityMILoss,
    DPL2Loss,
    EqualizedOddsL2Loss,
    EqualizedOddsMILoss,
    FairnessLossWithCE,
    FairnessRegularizedLoss,
    IoUParityLoss,
    effective_number_weights,
)
from fairmonai.losses.fairness_losses import (
    BETA_MSG,
    CLASS_WEIGHTS_LENGTH_MSG,
    COUNTS_MSG,
    FAIR_LOSS_REDUCTION_MSG,
    FAIR_LOSS_SOFTMAX_MSG,
    FAIR_LOSS_TYPE_MSG,
    LOGITS_NONFINITE_MSG,
    MISSING_SENSITIVE_MSG,
)
from fairmonai.losses.functional import (
    CODES_NOT_INTEGER_MSG,
    CODES_SHAPE_MSG,
    GROUP_CODE_MSG,
    MISSING_TARGETS_MSG,
    PROBS_NONFINITE_MSG,
    PROBS_NOT_SIMPLEX_MSG,
    TARGET_CODE_MSG,
    dp_l2,
    dp_mi,
    eo_l2,
    eo_mi,
    iou_loss,
    soft_confusion_matrix,
)

DT = torch.float64
LN = math.log


def esc(s):
    return re.escape(s)


def t(x, dtype=DT):
    return torch.tensor(x, dtype=dtype)


E0, E1, E2 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
# nine samples, one per (true class y, group s), y = 0 0 0 1 1 1 2 2 2, s = 0 1 2 0 1 2 0 1 2
Y9 = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
S9 = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
# every sample predicts its class, except (y=0, s=2), which predicts [1/2, 1/2, 0] (soft) or class 1 (hard)
P9_SOFT = t([E0, E0, [0.5, 0.5, 0.0], E1, E1, E1, E2, E2, E2])
P9_HARD = t([E0, E0, E1, E1, E1, E1, E2, E2, E2])


def call(fn, p, y, s, **kw):
    return fn(p, s, **kw) if fn in (dp_l2, dp_mi) else fn(p, y, s, **kw)


ALL = [dp_l2, dp_mi, eo_l2, eo_mi, iou_loss]


# --------------------------------------------------------------------------------------------------
# independent references, written as loops from the equations (numpy float64); "zero" follows the
# authors' code (return 0 at the first empty cell it divides by)


def _h(p):
    p = np.asarray(p, dtype=float).ravel()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def ref(name, p, y, s, k_s, empty="leave_out"):
    p, y, s = np.asarray(p, float), np.asarray(y), np.asarray(s)
    k_t = p.shape[1]
    if name == "dp_l2":
        total = 0.0
        for a, b in product(range(k_t), range(k_s)):
            m = s == b
            if not m.any():
                if empty == "zero":
                    return 0.0
                continue
            total += (p[m, a].mean() - p[:, a].mean()) ** 2
        return total
    if name == "eo_l2":
        total = 0.0
        for a, b, c in product(range(k_t), range(k_t), range(k_s)):
            m = (y == b) & (s == c)
            if not m.any():
                if empty == "zero":
                    return 0.0
                continue
            total += (p[m, a].mean() - p[y == b, a].mean()) ** 2
        return total

    def mi(pp, ss):
        joint = np.array([[pp[ss == c, a].sum() for c in range(k_s)] for a in range(k_t)]) / len(pp)
        return _h(joint.sum(1)) + _h(joint.sum(0)) - _h(joint)

    if name == "dp_mi":
        return mi(p, s)
    if name == "eo_mi":
        total = 0.0
        for b in range(k_t):
            m = y == b
            if not m.any():
                if empty == "zero":
                    return 0.0
                continue
            total += mi(p[m], s[m])
        return total

    def miou(m, classes):
        vals = []
        for c in classes:
            inter = p[m & (y == c), c].sum()
            union = (m & (y == c)).sum() + p[m, c].sum() - inter
            vals.append(inter / union if union > 0 else 0.0)
        return float(np.mean(vals))

    total = 0.0
    present = [c for c in range(k_t) if (y == c).any()]
    classes = range(k_t) if empty == "zero" else present
    for g in range(k_s):
        m = s == g
        if not m.any():
            if empty == "zero":
                return 0.0
            continue
        if empty == "leave_out" and any(not (m & (y == c)).any() for c in present):
            continue
        total += (miou(m, classes) - miou(np.ones_like(m), classes)) ** 2
    return total


def random_batch(b=30, k_t=3, k_s=3, seed=0, hard=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k_t, generator=g, dtype=DT) * 2
    p = F.one_hot(logits.argmax(1), k_t).to(DT) if hard else logits.softmax(1)
    y = torch.randint(0, k_t, (b,), generator=g)
    s = torch.randint(0, k_s, (b,), generator=g)
    return p, y, s


# --------------------------------------------------------------------------------------------------
# hand-computed values


# K_t = K_s = 3 on P9_SOFT. Overall p(yhat) = [2.5, 3.5, 3] / 9; groups 0 and 1 predict [1/3] * 3, group 2
# [1/6, 1/2, 1/3]: dp_l2 = 2 * 2 (0.5/9)^2 + 2 (1/9)^2 = 1/27. Joint = group means / 3:
# dp_mi = 2/9 (ln 6/5 + ln 6/7) + ln(3/5)/18 + ln(9/7)/6. Within y = 0 the mean is [5/6, 1/6, 0]:
# eo_l2 = 2/36 + 2/36 + 8/36 = 1/3; eo_mi = I within y = 0 = -5/6 ln 5/6 - 1/6 ln 6 + 1/3 ln 3 (the other
# classes are predicted deterministically: 0). IoU: overall per class 5/6, 6/7, 1 (mean 113/126), groups 0
# and 1: 1, group 2: 1/2, 2/3, 1 (mean 13/18): iou = 2 (13/126)^2 + (22/126)^2 = 137/2646.
SOFT_SUMS = {
    dp_l2: 1 / 27,
    dp_mi: 2 / 9 * (LN(6 / 5) + LN(6 / 7)) + LN(3 / 5) / 18 + LN(9 / 7) / 6,
    eo_l2: 1 / 3,
    eo_mi: -5 / 6 * LN(5 / 6) - LN(6) / 6 + LN(3) / 3,
    iou_loss: 137 / 2646,
}
N_TERMS = {dp_l2: 9, dp_mi: 1, eo_l2: 27, eo_mi: 3, iou_loss: 3}
NONE_SHAPES = {dp_l2: (3, 3), dp_mi: (), eo_l2: (3, 3, 3), eo_mi: (3,), iou_loss: (3,)}
# the same with class 1 (hard): groups 0, 1 [1/3]*3 vs overall [2, 4, 3]/9, group 2 [0, 2/3, 1/3]:
# dp_l2 = 2 (2/81) + 8/81 = 4/27; within y = 0 mean [2/3, 1/3, 0]: eo_l2 = 2/9 + 2/9 + 8/9 = 4/3,
# eo_mi = H(2/3, 1/3) = ln 3 - 2/3 ln 2; IoU overall 2/3, 3/4, 1 (29/36), group 2: 0, 1/2, 1 (1/2):
# iou = 2 (7/36)^2 + (11/36)^2 = 219/1296.
HARD_SUMS = {dp_l2: 4 / 27, eo_l2: 4 / 3, eo_mi: LN(3) - 2 / 3 * LN(2), iou_loss: 219 / 1296}


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_hand_values_soft(fn):
    assert call(fn, P9_SOFT, Y9, S9, num_groups=3).item() == pytest.approx(SOFT_SUMS[fn], rel=1e-12)
    assert call(fn, P9_SOFT, Y9, S9, num_groups=3, reduction="mean").item() == pytest.approx(
        SOFT_SUMS[fn] / N_TERMS[fn], rel=1e-12)
    terms = call(fn, P9_SOFT, Y9, S9, num_groups=3, reduction="none")
    assert terms.shape == NONE_SHAPES[fn]
    assert terms.sum().item() == pytest.approx(SOFT_SUMS[fn], rel=1e-12)
    # nothing is empty here, so the code's mode gives the same value
    assert call(fn, P9_SOFT, Y9, S9, num_groups=3, empty="zero").item() == pytest.approx(SOFT_SUMS[fn], rel=1e-12)


@pytest.mark.parametrize("fn", [dp_l2, eo_l2, eo_mi, iou_loss], ids=lambda f: f.__name__)
def test_hand_values_hard(fn):
    assert call(fn, P9_HARD, Y9, S9, num_groups=3).item() == pytest.approx(HARD_SUMS[fn], rel=1e-12)


def test_hand_values_terms():
    # dp_l2 terms [a, b]: group 2 differs by (-1/9, 1/9, 0), groups 0 and 1 by (1/18, -1/18, 0)
    expected = t([[1 / 324, 1 / 324, 1 / 81], [1 / 324, 1 / 324, 1 / 81], [0, 0, 0]])
    torch.testing.assert_close(dp_l2(P9_SOFT, S9, num_groups=3, reduction="none"), expected)
    # eo_l2 terms: only cells (y=0, s=c) differ: c=0,1: (1/6, -1/6, 0), c=2: (-1/3, 1/3, 0)
    none = eo_l2(P9_SOFT, Y9, S9, num_groups=3, reduction="none")
    torch.testing.assert_close(none[:, 0, :], t([[1 / 36, 1 / 36, 1 / 9], [1 / 36, 1 / 36, 1 / 9], [0, 0, 0]]))
    assert none[:, 1:, :].abs().max().item() == 0
    # iou terms per group
    torch.testing.assert_close(iou_loss(P9_SOFT, Y9, S9, num_groups=3, reduction="none"),
                               t([(13 / 126) ** 2, (13 / 126) ** 2, (22 / 126) ** 2]))


def test_hand_values_six_samples():
    # group means [1/2, 1/4, 1/4], [1/2, 1/2, 0], [1/2, 0, 1/2]; overall [1/2, 1/4, 1/4]: 0 + 1/8 + 1/8.
    # Joint = means / 3; only the cells (1, 1) and (2, 2) deviate: MI = 2 * 1/6 ln 2 = ln 2 / 3
    p = t([[0.5, 0.5, 0], [0.5, 0, 0.5], E0, E1, E2, E0])
    s = torch.tensor([0, 0, 1, 1, 2, 2])
    assert dp_l2(p, s, num_groups=3).item() == pytest.approx(0.25, rel=1e-12)
    assert dp_mi(p, s, num_groups=3).item() == pytest.approx(LN(2) / 3, rel=1e-12)


def test_soft_confusion_matrix():
    c = soft_confusion_matrix(P9_SOFT, Y9)
    torch.testing.assert_close(c, t([[2.5, 0.5, 0], [0, 3, 0], [0, 0, 3]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mi_equals_sklearn_on_one_hot(seed):
    p, y, s = random_batch(b=60, seed=seed, hard=True)
    yhat = p.argmax(1).numpy()
    assert dp_mi(p, s, num_groups=3).item() == pytest.approx(mutual_info_score(s.numpy(), yhat), abs=1e-12)
    expected = sum(mutual_info_score(s.numpy()[y.numpy() == b], yhat[y.numpy() == b]) for b in range(3))
    assert eo_mi(p, y, s, num_groups=3).item() == pytest.approx(expected, abs=1e-12)
    # and on the planted batch (hand value above)
    assert eo_mi(P9_HARD, Y9, S9, num_groups=3).item() == pytest.approx(
        mutual_info_score(S9[:3].numpy(), P9_HARD[:3].argmax(1).numpy()), abs=1e-12)


@pytest.mark.parametrize("empty", ["leave_out", "zero"])
@pytest.mark.parametrize("name", ["dp_l2", "dp_mi", "eo_l2", "eo_mi", "iou_loss"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_loop_reference(name, empty, seed):
    fn = globals()[name]
    for b in (40, 7):  # b = 7: some (class, group) cells are empty
        p, y, s = random_batch(b=b, seed=seed)
        got = call(fn, p, y, s, num_groups=3, empty=empty).item()
        assert got == pytest.approx(ref(name, p, y, s, 3, empty), rel=1e-10, abs=1e-14)


# --------------------------------------------------------------------------------------------------
# independence and planted dependence


def test_zero_when_independent_of_group():
    # every group holds the same three (prediction, class) pairs: DP, EO and IoU all 0
    rows = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]
    p = t(rows * 3)
    y = torch.tensor([0, 1, 2] * 3)
    s = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    for fn in ALL:
        assert abs(call(fn, p, y, s, num_groups=3).item()) < 1e-12, fn.__name__


def test_eo_zero_but_dp_not_when_base_rates_differ():
    # predictions depend on the true class only; group 0 has more class-0 cases than group 2
    by_class = {0: [0.8, 0.1, 0.1], 1: [0.1, 0.8, 0.1], 2: [0.1, 0.1, 0.8]}
    y = torch.tensor([0, 0, 0, 1, 2, 0, 1, 1, 2, 0, 1, 2, 2, 2])
    s = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    p = t([by_class[int(c)] for c in y])
    assert abs(eo_l2(p, y, s, num_groups=3).item()) < 1e-12
    assert abs(eo_mi(p, y, s, num_groups=3).item()) < 1e-12
    assert dp_l2(p, s, num_groups=3).item() > 0.01
    assert dp_mi(p, s, num_groups=3).item() > 0.01


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_grows_with_planted_dependence(fn):
    # group 2's predictions are mixed with class 0 by `shift`: (1 - shift) p + shift e_0
    y = torch.tensor([0, 1, 2] * 6)
    s = torch.tensor([0] * 6 + [1] * 6 + [2] * 6)
    values = []
    for shift in (0.0, 0.1, 0.2, 0.4):
        p = torch.full((18, 3), 0.1, dtype=DT)
        p[torch.arange(18), y] = 0.8
        g2 = s == 2
        p[g2] = (1 - shift) * p[g2] + shift * t(E0)
        values.append(call(fn, p, y, s, num_groups=3).item())
    assert abs(values[0]) < 1e-12
    assert all(b > a + 1e-6 for a, b in zip(values, values[1:])), values


# --------------------------------------------------------------------------------------------------
# empty cells


def _grad(fn, p, y, s, **kw):
    z = p.clamp_min(1e-9).log().clone().requires_grad_(True)
    v = call(fn, z.softmax(1), y, s, **kw)
    v.backward()
    return v, z.grad


def test_absent_group_dp():
    # group 2 absent: the value is the loss with K_s = 2 (sum and mean); the code's mode gives 0 for L2
    p, y, s = random_batch(b=20, seed=3)
    s = s % 2
    for fn in (dp_l2, dp_mi):
        for red in ("sum", "mean"):
            assert fn(p, s, num_groups=3, reduction=red).item() == pytest.approx(
                fn(p, s, num_groups=2, reduction=red).item(), rel=1e-12)
        v, g = _grad(fn, p, y, s, num_groups=3)
        assert torch.isfinite(v) and torch.isfinite(g).all() and g.abs().sum() > 0
    assert dp_l2(p, s, num_groups=3, empty="zero").item() == 0.0
    # the code's MI loss never returns 0: an absent group is a zero column of the joint
    assert dp_mi(p, s, num_groups=3, empty="zero").item() == pytest.approx(dp_mi(p, s, num_groups=2).item())
    assert dp_l2(p, s, num_groups=3, reduction="none")[:, 2].abs().sum().item() == 0


def test_empty_class_group_cell_eo_and_iou():
    # the ISIC situation, K_t = K_s = 3: no sample of class 1 in group 2
    p, y, s = random_batch(b=40, seed=4)
    keep = ~((y == 1) & (s == 2))
    p, y, s = p[keep], y[keep], s[keep]
    assert eo_l2(p, y, s, num_groups=3).item() == pytest.approx(ref("eo_l2", p, y, s, 3), rel=1e-10)
    assert eo_l2(p, y, s, num_groups=3, reduction="mean").item() == pytest.approx(
        ref("eo_l2", p, y, s, 3) / 24, rel=1e-10)  # 27 terms less the cell's 3
    assert eo_l2(p, y, s, num_groups=3, empty="zero").item() == 0.0
    # eo_mi: the cell is a zero entry of class 1's joint; the same value in both modes (as the code)
    v = eo_mi(p, y, s, num_groups=3).item()
    assert v == pytest.approx(eo_mi(p, y, s, num_groups=3, empty="zero").item())
    assert v == pytest.approx(ref("eo_mi", p, y, s, 3), rel=1e-10)
    # iou: group 2 lacks class 1, so its term is left out; the code's mode keeps it (class 1 scores 0 there)
    terms = iou_loss(p, y, s, num_groups=3, reduction="none")
    assert terms[2].item() == 0.0 and terms[:2].min().item() > 0
    assert iou_loss(p, y, s, num_groups=3, reduction="mean").item() == pytest.approx(terms.sum().item() / 2)
    code = iou_loss(p, y, s, num_groups=3, empty="zero").item()
    assert code == pytest.approx(ref("iou_loss", p, y, s, 3, "zero"), rel=1e-10) and code > terms.sum().item()
    for fn in ALL:
        val, g = _grad(fn, p, y, s, num_groups=3)
        assert torch.isfinite(val) and torch.isfinite(g).all(), fn.__name__


def test_isic_like_batch_without_female_malignant():
    # K_t = 2 (benign, malignant), K_s = 2 (female, male), B = 256, 5 malignant cases, all male
    g = torch.Generator().manual_seed(15)
    y = torch.zeros(256, dtype=torch.long)
    y[:5] = 1
    s = torch.randint(0, 2, (256,), generator=g)
    s[:5] = 1
    p = (torch.randn(256, 2, generator=g, dtype=DT) + 2 * F.one_hot(y, 2)).softmax(1)
    for fn in ALL:
        v, grad = _grad(fn, p, y, s, num_groups=2)
        assert torch.isfinite(v) and torch.isfinite(grad).all(), fn.__name__
        assert v.item() == pytest.approx(ref(fn.__name__, p, y, s, 2), rel=1e-9, abs=1e-15)
    for fn in (eo_l2, eo_mi, iou_loss):  # eo_mi: only the female-malignant cell is empty, not a class
        code = call(fn, p, y, s, num_groups=2, empty="zero").item()
        assert code == pytest.approx(ref(fn.__name__, p, y, s, 2, "zero"), rel=1e-9, abs=1e-15)
    assert eo_l2(p, y, s, num_groups=2, empty="zero").item() == 0.0


def test_absent_class():
    p, y, s = random_batch(b=40, seed=5)
    keep = y != 2
    p, y, s = p[keep], y[keep], s[keep]
    # eo_mi: the class-2 term is left out; the code returns 0
    assert eo_mi(p, y, s, num_groups=3, reduction="none")[2].item() == 0.0
    assert eo_mi(p, y, s, num_groups=3).item() == pytest.approx(ref("eo_mi", p, y, s, 3), rel=1e-10)
    assert eo_mi(p, y, s, num_groups=3, reduction="mean").item() == pytest.approx(ref("eo_mi", p, y, s, 3) / 2)
    assert eo_mi(p, y, s, num_groups=3, empty="zero").item() == 0.0
    assert eo_l2(p, y, s, num_groups=3, empty="zero").item() == 0.0
    # iou: the mean IoU runs over classes 0 and 1 (leave_out), over all 3 in the code's mode
    assert iou_loss(p, y, s, num_groups=3).item() == pytest.approx(ref("iou_loss", p, y, s, 3), rel=1e-10)
    assert iou_loss(p, y, s, num_groups=3, empty="zero").item() == pytest.approx(
        ref("iou_loss", p, y, s, 3, "zero"), rel=1e-10)


def test_absent_group_iou_zero_mode():
    p, y, s = random_batch(b=30, seed=6)
    s = s % 2
    assert iou_loss(p, y, s, num_groups=3, empty="zero").item() == 0.0
    assert iou_loss(p, y, s, num_groups=3).item() == pytest.approx(iou_loss(p, y, s, num_groups=2).item())


def test_no_group_at_all_is_zero_and_finite():
    p, y, _ = random_batch(b=6, seed=7)
    s = torch.full((6,), -1)
    for fn in ALL:
        v, g = _grad(fn, p, y, s, num_groups=3)
        assert v.item() == 0.0 and torch.isfinite(g).all()


def test_excluded_code_drops_the_sample():
    p, y, s = random_batch(b=24, seed=8)
    s2 = s.clone()
    s2[:5] = -1
    for fn in ALL:
        assert call(fn, p, y, s2, num_groups=3).item() == pytest.approx(
            call(fn, p[5:], y[5:], s[5:], num_groups=3).item(), rel=1e-12)


def test_num_groups_default_is_largest_code_plus_one():
    p, y, s = random_batch(b=30, seed=9)
    assert dp_l2(p, s).item() == dp_l2(p, s, num_groups=3).item()


# --------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("empty_cell", [False, True])
@pytest.mark.parametrize("empty", ["leave_out", "zero"])
@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_gradcheck(fn, empty, empty_cell):
    g = torch.Generator().manual_seed(11)
    y = torch.tensor([0, 1, 2] * 4)
    s = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2])
    if empty_cell:  # no (class 1, group 2) sample
        s = torch.tensor([0, 0, 0, 1, 1, 1, 2, 0, 2, 0, 1, 2])
    logits = torch.randn(12, 3, generator=g, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: call(fn, z.softmax(1), y, s, num_groups=3, empty=empty), (logits,))


# --------------------------------------------------------------------------------------------------
# errors


def test_group_code_out_of_range():
    p, y, s = random_batch(b=6)
    with pytest.raises(ValueError, match=esc(GROUP_CODE_MSG.format(k=3, excluded=-1, bad=[3, 5]))):
        dp_l2(p, torch.tensor([0, 1, 3, 5, 3, 0]), num_groups=3)
    with pytest.raises(ValueError, match=esc(GROUP_CODE_MSG.format(k=3, excluded=-1, bad=[-2]))):
        eo_l2(p, y, torch.tensor([0, 1, 2, -2, -1, 0]), num_groups=3)


def test_nan_inputs():
    p, y, s = random_batch(b=6)
    p[2, 1] = float("nan")
    with pytest.raises(ValueError, match=esc(PROBS_NONFINITE_MSG.format(value=float("nan"), row=2, col=1, count=1))):
        dp_mi(p, s, num_groups=3)
    p, y, s = random_batch(b=6)
    sf = s.to(DT)
    sf[4] = float("nan")
    with pytest.raises(ValueError, match=esc(CODES_NOT_INTEGER_MSG.format(name="groups", value=float("nan"), index=4))):
        dp_l2(p, sf, num_groups=3)
    yf = y.to(DT)
    yf[1] = 0.5
    with pytest.raises(ValueError, match=esc(CODES_NOT_INTEGER_MSG.format(name="targets", value=0.5, index=1))):
        iou_loss(p, yf, s, num_groups=3)


def test_shape_mismatch():
    p, y, s = random_batch(b=6)
    with pytest.raises(ValueError, match=esc(CODES_SHAPE_MSG.format(probs_shape=(6, 3), name="groups", shape=(5,)))):
        dp_l2(p, s[:5], num_groups=3)
    with pytest.raises(ValueError, match=esc(CODES_SHAPE_MSG.format(probs_shape=(6, 3), name="targets", shape=(6, 2)))):
        eo_mi(p, torch.zeros(6, 2, dtype=torch.long), s, num_groups=3)
    # (B, 1) codes are accepted
    assert eo_l2(p, y[:, None], s[:, None], num_groups=3).item() == eo_l2(p, y, s, num_groups=3).item()


def test_other_input_errors():
    p, y, s = random_batch(b=6)
    with pytest.raises(ValueError, match=esc(TARGET_CODE_MSG.format(k=3, bad=[3]))):
        eo_l2(p, torch.tensor([0, 1, 2, 3, 0, 1]), s, num_groups=3)
    with pytest.raises(ValueError, match=esc(MISSING_TARGETS_MSG.format(loss="iou_loss"))):
        iou_loss(p, None, s, num_groups=3)
    logits = torch.log(p) + 1.0
    with pytest.raises(ValueError, match=esc("row 0 is ")) as err:
        dp_l2(logits, s, num_groups=3)
    assert str(err.value).startswith(PROBS_NOT_SIMPLEX_MSG.split("{row}")[0])
    with pytest.raises(ValueError, match="(?s)unknown empty 'drop'.*leave_out"):
        dp_l2(p, s, num_groups=3, empty="drop")
    with pytest.raises(ValueError, match="unknown reduction 'max'"):
        dp_l2(p, s, num_groups=3, reduction="max")
    with pytest.raises(ValueError, match="num_groups must be an int >= 1; got 0"):
        dp_l2(p, s, num_groups=0)
    with pytest.raises(TypeError, match="probs must be a floating-point"):
        dp_l2(torch.ones(6, 3, dtype=torch.long), s, num_groups=3)


# --------------------------------------------------------------------------------------------------
# modules


MODULES = [
    (DemographicParityL2Loss, dp_l2),
    (DemographicParityMILoss, dp_mi),
    (EqualizedOddsL2Loss, eo_l2),
    (EqualizedOddsMILoss, eo_mi),
    (IoUParityLoss, iou_loss),
]


@pytest.mark.parametrize("cls, fn", MODULES, ids=lambda x: getattr(x, "__name__", ""))
def test_module_equals_functional_and_counts(cls, fn):
    p, y, s = random_batch(b=20, seed=12)
    loss = cls(num_groups=3, reduction="mean")
    assert loss(p, y, sensitive=s).item() == call(fn, p, y, s, num_groups=3, reduction="mean").item()
    assert (loss.n_batches, loss.n_empty_batches, loss.last_empty) == (1, 0, False)
    s_missing = s % 2  # group 2 absent: an empty cell for every loss
    loss(p, y, sensitive=s_missing)
    assert (loss.n_batches, loss.n_empty_batches, loss.last_empty) == (2, 1, True)
    assert loss.empty_fraction == 0.5
    logits = torch.randn(20, 3, dtype=DT)
    on_logits = cls(num_groups=3, softmax=True)(logits, y, sensitive=s)
    assert on_logits.item() == pytest.approx(call(fn, logits.softmax(1), y, s, num_groups=3).item(), rel=1e-12)
    loss.reset_counters()
    assert (loss.n_batches, loss.n_empty_batches) == (0, 0) and math.isnan(loss.empty_fraction)
    with pytest.raises(TypeError, match=esc(MISSING_SENSITIVE_MSG.format(loss=cls.__name__, hint=""))):
        loss(p, y)
    assert "num_groups=3" in repr(loss)


def test_module_options():
    with pytest.raises(ValueError, match="num_groups must be an int >= 2; got 1"):
        EqualizedOddsL2Loss(num_groups=1)
    with pytest.raises(ValueError, match="unknown empty 'skip'"):
        EqualizedOddsL2Loss(num_groups=2, empty="skip")
    assert DPL2Loss is DemographicParityL2Loss
    p, y, s = random_batch(b=10, seed=13)
    with pytest.raises(ValueError, match=esc(MISSING_TARGETS_MSG.format(loss="EqualizedOddsMILoss"))):
        EqualizedOddsMILoss(num_groups=3)(p, sensitive=s)


def test_dp_module_as_penalty_of_fairness_regularized_loss():
    logits = torch.randn(12, 3, dtype=DT, requires_grad=True)
    y = torch.randint(0, 3, (12,))
    s = torch.arange(12) % 3
    loss = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), DemographicParityL2Loss(3, softmax=True), mu=2.0)
    value = loss(logits, y, sensitive=s)
    expected = F.cross_entropy(logits, y) + 2.0 * dp_l2(logits.softmax(1), s, num_groups=3)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)


# --------------------------------------------------------------------------------------------------
# total loss


def test_fairness_loss_with_ce_value():
    p, _, _ = random_batch(b=18, seed=14)
    y, s = torch.arange(18) % 3, (torch.arange(18) // 3) % 3  # every (class, group) cell twice
    logits = torch.log(p).clone().requires_grad_(True)
    w = [2.0, 0.5, 1.0]
    loss = FairnessLossWithCE(EqualizedOddsL2Loss(num_groups=3), lam=0.7, class_weights=w)
    value = loss(logits, y.to(DT)[:, None], sensitive=s)  # (B, 1) float targets as MONAI loaders give them
    ce_n = -torch.log(p[torch.arange(18), y])
    wy = t(w)[y]
    ce = (wy * ce_n).sum() / wy.sum()  # PyTorch's (and the authors' code's) weighted mean
    fair = eo_l2(p, y, s, num_groups=3)
    assert value.item() == pytest.approx((ce + 0.7 * fair).item(), rel=1e-10)
    assert loss.last_terms["ce"].item() == pytest.approx(ce.item(), rel=1e-10)
    assert loss.last_terms["fair"].item() == pytest.approx(fair.item(), rel=1e-10)
    assert float(loss.last_terms["lam"]) == 0.7 and float(loss.last_terms["empty"]) == 0.0
    value.backward()
    assert torch.isfinite(logits.grad).all()
    assert (loss.n_batches, loss.n_empty_batches) == (1, 0)


def test_fairness_loss_with_ce_lam_zero_and_errors():
    logits = torch.randn(6, 2)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    base = FairnessLossWithCE(DemographicParityL2Loss(2), lam=0.0)
    assert base(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item())
    assert sorted(base.last_terms) == ["ce", "lam"]
    base(logits, y, sensitive=torch.tensor([0, 0, 0, 1, 1, 1]))  # logged, not in the value
    assert "fair" in base.last_terms and base.n_batches == 1
    loss = FairnessLossWithCE(DemographicParityL2Loss(2), lam=1.0)
    with pytest.raises(TypeError, match=esc("FairnessLossWithCE(lam=1.0) needs the keyword argument sensitive=")):
        loss(logits, y)
    with pytest.raises(TypeError, match=esc(FAIR_LOSS_TYPE_MSG.format(type="CrossEntropyLoss"))):
        FairnessLossWithCE(torch.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match=esc(FAIR_LOSS_SOFTMAX_MSG.format(loss="DemographicParityL2Loss"))):
        FairnessLossWithCE(DemographicParityL2Loss(2, softmax=True))
    with pytest.raises(ValueError, match=esc(FAIR_LOSS_REDUCTION_MSG.format(value="none"))):
        FairnessLossWithCE(DemographicParityL2Loss(2, reduction="none"))
    with pytest.raises(ValueError, match="lam must be a finite number >= 0.0; got -1"):
        FairnessLossWithCE(DemographicParityL2Loss(2), lam=-1)
    with pytest.raises(ValueError, match="class_weights must be None or K_t finite numbers >= 0"):
        FairnessLossWithCE(DemographicParityL2Loss(2), class_weights=[1.0, -1.0])
    three = FairnessLossWithCE(DemographicParityL2Loss(2), class_weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=esc(CLASS_WEIGHTS_LENGTH_MSG.format(n=3, k=2, shape=(6, 2)))):
        three(logits, y, sensitive=y)
    with pytest.raises(ValueError, match=esc(TARGET_CODE_MSG.format(k=2, bad=[2]))):
        loss(logits, torch.tensor([0, 1, 2, 1, 0, 1]), sensitive=y)
    bad = logits.clone()
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match=esc(LOGITS_NONFINITE_MSG.format(value=float("inf"), row=3, col=1, count=1))):
        loss(bad, y, sensitive=y)
    with pytest.raises(ValueError, match=esc(GROUP_CODE_MSG.format(k=2, excluded=-1, bad=[2]))):
        loss(logits, y, sensitive=torch.tensor([0, 1, 2, 1, 0, 1]))


def test_fairness_loss_with_ce_in_fair_supervised_trainer():
    from fairmonai.engines import FairSupervisedTrainer

    torch.manual_seed(0)
    data = [{"image": torch.randn(4), "label": torch.tensor([i % 2]), "sex": (i // 2) % 2} for i in range(12)]
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    net = torch.nn.Linear(4, 2)
    loss = FairnessLossWithCE(EqualizedOddsL2Loss(num_groups=2), lam=1.0,
                              class_weights=effective_number_weights([6, 6]))
    trainer = FairSupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=loader, network=net,
                                    optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=loss,
                                    sensitive_key="sex")
    trainer.run()
    assert loss.n_batches == 3
    assert sorted(trainer.state.loss_terms) == ["ce", "empty", "fair", "lam"]


# --------------------------------------------------------------------------------------------------
# class weights


def test_effective_number_weights_by_hand():
    # beta = 1/2: 1/E_n = (1 - b) / (1 - b^n) = 1, 2/3, 4/7 for n = 1, 2, 3; sum 47/21; times 3 / sum
    torch.testing.assert_close(effective_number_weights([1, 2, 3], beta=0.5), t([63 / 47, 42 / 47, 36 / 47]))
    # default beta 0.9998, counts 100 and 1000: E = (1 - b^n) / (1 - b) = 99.0164..., 906.4281...
    b = 0.9998
    e = [(1 - b**n) / (1 - b) for n in (100, 1000)]
    w = effective_number_weights(torch.tensor([100, 1000]))
    torch.testing.assert_close(w, t([2 * e[1] / (e[0] + e[1]), 2 * e[0] / (e[0] + e[1])]))
    assert w.tolist() == pytest.approx([1.803039, 0.196961], abs=1e-6)
    torch.testing.assert_close(effective_number_weights([5, 50, 500], beta=0.0), t([1.0, 1.0, 1.0]))


def test_effective_number_weights_errors():
    with pytest.raises(ValueError, match=esc(COUNTS_MSG.format(value=[10.0, 0.0]))):
        effective_number_weights([10, 0])
    with pytest.raises(ValueError, match=esc(COUNTS_MSG.format(value=[]))):
        effective_number_weights([])
    with pytest.raises(ValueError, match=esc(BETA_MSG.format(value=1.0))):
        effective_number_weights([1, 2], beta=1.0)
