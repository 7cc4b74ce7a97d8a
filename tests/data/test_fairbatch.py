"""FairBatchSampler: hand-computed batch compositions and lambda steps, and the reference's binary rule.

``binary_reference_step`` below is written from the FairBatch paper (Roh et al., ICLR 2021, Algorithm 1)
and the semantics of the authors' ``FairBatchSampler.adjust_lambda`` (labels +1/-1, groups 1/0, the
weights ``lb1`` of group 1 among label +1 and ``lb2`` of group 1 among label -1). It shares no code
with :mod:`fairmonai.data.fairbatch`: it works on per-case loss arrays and two scalars.
"""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import torch

from fairmonai.data import FairBatchSampler
from fairmonai.data.fairbatch import EMPTY_CELL_MSG, MISSING_LOSS_MSG, STATE_MISMATCH_MSG


def _data(sizes: dict[tuple[int, int], int]):
    """labels, groups with ``sizes[(label, group)]`` cases per cell, cells interleaved."""
    pairs = [cell for cell, n in sizes.items() for _ in range(n)]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pairs))
    labels = np.array([pairs[i][0] for i in order])
    groups = np.array([pairs[i][1] for i in order])
    return labels, groups


def _composition(batch, labels, groups):
    return Counter((int(labels[i]), int(groups[i])) for i in batch)


# ---- batch composition


def test_cell_counts_hand_computed_with_excluded_cases():
    # N = 20, B = 5. Label 0: 6 in group 0, 4 in group 1, 2 excluded; label 1: 2 in group 0, 6 in group 1.
    # lambda_0 = [0.6, 0.4], lambda_1 = [0.25, 0.75]. Real targets (label 0: g0, g1, excluded; label 1: ...):
    #   5*10/20*0.6 = 1.5, 5*10/20*0.4 = 1.0, 5*2/20 = 0.5, 5*8/20*0.25 = 0.5, 5*8/20*0.75 = 1.5, 0
    # floors 1, 1, 0, 0, 1, 0 (sum 3); the 2 leftover units go to the largest fractions (all 0.5), the
    # first two in order: label 0 group 0 and label 0 excluded -> 2, 1, 1 | 0, 1, 0 (sum 5).
    labels, groups = _data({(0, 0): 6, (0, 1): 4, (0, -1): 2, (1, 0): 2, (1, 1): 6})
    s = FairBatchSampler(labels, groups, batch_size=5, seed=1)
    np.testing.assert_allclose(s.lambdas, [[0.6, 0.4], [0.25, 0.75]])
    cells, excl = s.batch_composition()
    assert cells.tolist() == [[2, 1], [0, 1]]
    assert excl.tolist() == [1, 0]
    batches = list(s)
    assert len(batches) == 4
    for b in batches:
        assert len(b) == 5
        assert _composition(b, labels, groups) == Counter({(0, 0): 2, (0, 1): 1, (0, -1): 1, (1, 1): 1})


def test_batch_size_is_exact_whatever_lambda():
    labels, groups = _data({(0, 0): 7, (0, 1): 5, (0, 2): 3, (1, 0): 4, (1, 1): 6, (1, 2): 2, (1, -1): 3})
    s = FairBatchSampler(labels, groups, batch_size=7, seed=0)
    rng = np.random.default_rng(3)
    for _ in range(50):
        lam = rng.dirichlet(np.ones(3), size=2)
        s.load_state_dict({**s.state_dict(), "lambdas": lam.tolist()})
        cells, excl = s.batch_composition()
        assert cells.sum() + excl.sum() == 7
        targets = np.concatenate([7 * s.cell_sizes.sum(1)[:, None] * lam / s.n, 7 * s.excluded_sizes[:, None] / s.n], 1)
        counts = np.concatenate([cells, excl[:, None]], 1)
        assert np.all(np.abs(counts - targets) < 1)  # each count is its target's floor or ceiling
        assert all(len(b) == 7 for b in s)


@pytest.mark.parametrize("n, batch_size, replicas, expected", [(20, 5, 1, 4), (20, 6, 1, 3), (23, 4, 1, 5),
                                                                (20, 4, 2, 2), (23, 3, 2, 3)])
def test_length_is_floor_n_over_global_batch(n, batch_size, replicas, expected):
    labels = np.arange(n) % 2
    groups = (np.arange(n) // 2) % 2
    s = FairBatchSampler(labels, groups, batch_size, seed=0, num_replicas=replicas, rank=0)
    assert len(s) == expected
    assert len(list(s)) == expected


def test_fewer_cases_than_a_batch_is_an_error():
    with pytest.raises(ValueError, match=r"^FairBatchSampler: 6 cases are fewer than one global batch "
                                         r"\(batch_size 4 x num_replicas 2\)$"):
        FairBatchSampler([0, 1] * 3, [0, 1, 1, 0, 0, 1], 4, num_replicas=2, rank=1)


def test_initial_lambda_epoch_draws_every_case_once():
    # 4 cells of 4 cases, B = 4: one case per cell per batch, 4 batches = every case exactly once
    labels, groups = _data({(0, 0): 4, (0, 1): 4, (1, 0): 4, (1, 1): 4})
    s = FairBatchSampler(labels, groups, batch_size=4, seed=5)
    drawn = [i for b in s for i in b]
    assert sorted(drawn) == list(range(16))


def test_upweighted_cell_repeats_a_case_only_after_the_whole_cell():
    # label 0: 2 cases in group 0, 6 in group 1; lambda_0 moved to [0.5, 0.5]: 2 cases of the
    # 2-case cell per batch of 8 (label 0 holds 8/16 of B = 8 -> 4 cases, half of them group 0)
    labels, groups = _data({(0, 0): 2, (0, 1): 6, (1, 0): 4, (1, 1): 4})
    s = FairBatchSampler(labels, groups, batch_size=8, seed=2)
    s.load_state_dict({**s.state_dict(), "lambdas": [[0.5, 0.5], [0.5, 0.5]]})
    assert s.batch_composition()[0].tolist() == [[2, 2], [2, 2]]
    small = set(np.flatnonzero((labels == 0) & (groups == 0)).tolist())
    first, second = [[i for i in b if i in small] for b in s]
    assert sorted(first) == sorted(second) == sorted(small)  # both cases in each batch, none twice in one
    # a 6-case cell drawing 2 per batch over 2 batches: 4 distinct cases, no repeat
    big = set(np.flatnonzero((labels == 0) & (groups == 1)).tolist())
    drawn = [i for b in s for i in b if i in big]
    assert len(drawn) == len(set(drawn)) == 4


def test_same_seed_and_epoch_same_batches():
    labels, groups = _data({(0, 0): 9, (0, 1): 5, (1, 0): 3, (1, 1): 7})
    a = FairBatchSampler(labels, groups, 4, seed=11)
    b = FairBatchSampler(labels, groups, 4, seed=11)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    assert list(a) == list(a)  # iterating does not advance anything


def test_ddp_shards_are_disjoint_and_make_the_global_batch():
    labels, groups = _data({(0, 0): 9, (0, 1): 5, (1, 0): 6, (1, 1): 8, (1, -1): 2})
    r0 = FairBatchSampler(labels, groups, 3, seed=4, num_replicas=2, rank=0)
    r1 = FairBatchSampler(labels, groups, 3, seed=4, num_replicas=2, rank=1)
    for s in (r0, r1):
        s.set_epoch(2)
    glob = r0.global_batches()
    assert len(r0) == len(r1) == len(glob) == 30 // 6
    for b0, b1, g in zip(r0, r1, glob):
        assert len(b0) == len(b1) == 3
        assert not set(b0) & set(b1)
        assert b0 + b1 == g.tolist()


def test_ddp_defaults_without_process_group():
    s = FairBatchSampler([0, 1, 0, 1], [0, 0, 1, 1], 2)
    assert (s.num_replicas, s.rank) == (1, 0)


# ---- the update


def test_eqodds_moves_alpha_on_the_label_with_the_larger_gap():
    # label 1 sizes [4, 4, 2] -> lambda_1 = [0.4, 0.4, 0.2]; gaps: label 0 0.5-0.2 = 0.3, label 1 0.9-0.1 = 0.8
    labels, groups = _data({(0, 0): 2, (0, 1): 3, (0, 2): 5, (1, 0): 4, (1, 1): 4, (1, 2): 2})
    s = FairBatchSampler(labels, groups, 5, seed=0)
    before = s.lambdas
    info = s.update([[0.2, 0.5, 0.3], [0.1, 0.9, 0.4]])
    assert info == {"label": 1, "gained": 1, "lost": 0, "gaps": pytest.approx({0: 0.3, 1: 0.8})}
    np.testing.assert_allclose(s.lambdas[0], before[0])
    np.testing.assert_allclose(s.lambdas[1], [0.395, 0.405, 0.2])
    # the other label now has the larger gap
    info = s.update(torch.tensor([[0.2, 0.9, 0.3], [0.1, 0.2, 0.4]]))
    assert (info["label"], info["gained"], info["lost"]) == (0, 1, 0)
    np.testing.assert_allclose(s.lambdas[0], [0.195, 0.305, 0.5])


def test_clipping_then_renormalisation():
    labels, groups = _data({(0, 0): 4, (0, 1): 4, (0, 2): 4, (1, 0): 4, (1, 1): 4, (1, 2): 4})
    s = FairBatchSampler(labels, groups, 4, seed=0)
    s.load_state_dict({**s.state_dict(), "lambdas": [[0.003, 0.5, 0.497], [1 / 3, 1 / 3, 1 / 3]]})
    s.update([[0.1, 0.9, 0.5], [0.3, 0.3, 0.3]])
    # group 0 (best) 0.003 - 0.005 = -0.002 -> 0; group 1 (worst) 0.505; sum 0.505 + 0.497 = 1.002
    np.testing.assert_allclose(s.lambdas[0], [0.0, 0.505 / 1.002, 0.497 / 1.002])
    np.testing.assert_allclose(s.lambdas[1], [1 / 3] * 3)
    # at the upper end with two groups: 0.998 + 0.005 clipped to 1, 0.002 - 0.005 to 0
    labels, groups = _data({(0, 0): 4, (0, 1): 4, (1, 0): 4, (1, 1): 4})
    s = FairBatchSampler(labels, groups, 4, seed=0)
    s.load_state_dict({**s.state_dict(), "lambdas": [[0.5, 0.5], [0.002, 0.998]]})
    s.update([[0.5, 0.5], [0.1, 0.7]])
    np.testing.assert_allclose(s.lambdas, [[0.5, 0.5], [0.0, 1.0]])


def test_eqopp_acts_on_the_positive_label_only():
    labels, groups = _data({(0, 0): 4, (0, 1): 4, (1, 0): 4, (1, 1): 4})
    s = FairBatchSampler(labels, groups, 4, seed=0, fairness="eqopp", alpha=0.01)
    info = s.update([[0.1, 0.9], [0.4, 0.3]])  # label 0's gap is larger, but eqopp moves label 1
    assert (info["label"], info["gained"], info["lost"]) == (1, 0, 1)
    np.testing.assert_allclose(s.lambdas, [[0.5, 0.5], [0.51, 0.49]])


def test_dp_weights_cells_by_group_size_and_reverses_on_the_negative_label():
    # sizes: label 0: [6, 2], label 1: [2, 6]; groups have 8 cases each. dp losses (CE toward class 1)
    # cell means [[0.2, 0.8], [0.5, 0.4]] -> L' = mean * n_cell / n_group = [[0.15, 0.2], [0.125, 0.3]]
    # gaps: label 0 0.05, label 1 0.175 -> label 1 (positive): group 1 (highest L') gains.
    labels, groups = _data({(0, 0): 6, (0, 1): 2, (1, 0): 2, (1, 1): 6})
    s = FairBatchSampler(labels, groups, 4, seed=0, fairness="dp")
    info = s.update([[0.2, 0.8], [0.5, 0.4]])
    assert info["label"] == 1 and info["gained"] == 1
    assert info["gaps"] == pytest.approx({0: 0.05, 1: 0.175})
    np.testing.assert_allclose(s.lambdas, [[0.75, 0.25], [0.245, 0.755]])
    # L' = [[0.15, 0.3], [0.0625, 0.075]]: label 0 (negative) has the larger gap; its highest-L' group 1
    # (fewest predicted positives) loses alpha to group 0
    info = s.update([[0.2, 1.2], [0.25, 0.1]])
    assert (info["label"], info["gained"], info["lost"]) == (0, 0, 1)
    np.testing.assert_allclose(s.lambdas, [[0.755, 0.245], [0.245, 0.755]])


def test_zero_gap_moves_nothing():
    labels, groups = _data({(0, 0): 4, (0, 1): 4, (1, 0): 4, (1, 1): 4})
    s = FairBatchSampler(labels, groups, 4, seed=0)
    info = s.update([[0.3, 0.3], [0.2, 0.2]])
    assert info["label"] is None
    np.testing.assert_allclose(s.lambdas, 0.5)


def test_missing_loss_skips_the_update_with_a_warning():
    labels, groups = _data({(0, 0): 4, (0, 1): 4, (1, 0): 4, (1, 1): 4})
    s = FairBatchSampler(labels, groups, 4, seed=0)
    with pytest.warns(UserWarning) as rec:
        assert s.update([[0.1, float("nan")], [0.2, 0.9]]) is None
    assert str(rec[0].message) == MISSING_LOSS_MSG.format(cells=[(0, 1)])
    assert str(rec[0].message) == ("FairBatchSampler: no loss for populated cell(s) [(0, 1)] (label, group); "
                                   "lambda update skipped this time")
    np.testing.assert_allclose(s.lambdas, 0.5)


def test_empty_cell_warned_never_sampled_and_left_out_of_the_update():
    labels, groups = _data({(0, 0): 4, (0, 1): 4, (0, 2): 4, (1, 0): 6, (1, 1): 6})
    with pytest.warns(UserWarning) as rec:
        s = FairBatchSampler(labels, groups, 6, seed=0)
    assert str(rec[0].message) == ("FairBatchSampler: cell(s) [(1, 2)] (label, group) have no cases: never "
                                   "sampled, lambda 0, left out of the update")
    assert str(rec[0].message) == EMPTY_CELL_MSG.format(cells=[(1, 2)])
    np.testing.assert_allclose(s.lambdas, [[1 / 3] * 3, [0.5, 0.5, 0.0]])
    info = s.update([[0.3, 0.3, 0.3], [0.1, 0.2, float("nan")]])
    assert (info["label"], info["gained"], info["lost"]) == (1, 1, 0)
    np.testing.assert_allclose(s.lambdas[1], [0.495, 0.505, 0.0])


def test_update_shape_error_names_the_order():
    s = FairBatchSampler([0, 1, 0, 1], [0, 0, 1, 1], 2)
    with pytest.raises(ValueError, match=r"^cell_losses must have shape \(labels, groups\) = \(2, 2\) "
                                         r"\(labels \[0, 1\], groups \[0, 1\]\), got \(4,\)$"):
        s.update([0.1, 0.2, 0.3, 0.4])


# ---- the reference's binary rule, written independently


def binary_reference_step(lb1, lb2, losses, labels, groups, fairness, alpha):
    """One step of the reference's lambda adjustment. labels in {+1, -1}, groups in {1, 0}; ``losses`` the
    per-case losses (true-label CE for eqodds/eqopp, CE toward +1 for dp)."""
    def cell_mean(y, z):
        m = (labels == y) & (groups == z)
        return losses[m].sum() / m.sum()

    if fairness == "eqopp":
        lb1 = lb1 + alpha if cell_mean(1, 1) > cell_mean(1, 0) else lb1 - alpha
    else:
        if fairness == "eqodds":
            f = cell_mean
        else:  # dp: the cell's loss sum over its group's size
            def f(y, z):
                return losses[(labels == y) & (groups == z)].sum() / (groups == z).sum()
        d_pos = abs(f(1, 1) - f(1, 0))
        d_neg = abs(f(-1, 1) - f(-1, 0))
        if d_pos > d_neg:
            lb1 = lb1 + alpha if f(1, 1) > f(1, 0) else lb1 - alpha
        elif fairness == "eqodds":
            lb2 = lb2 + alpha if f(-1, 1) > f(-1, 0) else lb2 - alpha
        else:
            lb2 = lb2 - alpha if f(-1, 1) > f(-1, 0) else lb2 + alpha
    return min(max(lb1, 0.0), 1.0), min(max(lb2, 0.0), 1.0)


@pytest.mark.parametrize("fairness", ["eqodds", "eqopp", "dp"])
@pytest.mark.parametrize("alpha", [0.005, 0.05])
def test_two_groups_equal_the_reference_binary_rule(fairness, alpha):
    labels01, groups = _data({(0, 0): 30, (0, 1): 10, (1, 0): 8, (1, 1): 12})
    ref_labels = np.where(labels01 == 1, 1, -1)
    s = FairBatchSampler(labels01, groups, 10, seed=0, fairness=fairness, alpha=alpha)
    n = lambda y, z: ((ref_labels == y) & (groups == z)).sum()  # noqa: E731
    lb1 = n(1, 1) / (n(1, 1) + n(1, 0))
    lb2 = n(-1, 1) / (n(-1, 1) + n(-1, 0))
    rng = np.random.default_rng(7)
    moved_to_bounds = False
    for _epoch in range(60):
        # per-case losses with a random group effect, mostly against group 1: the chosen label and the
        # direction change, and the large step drifts to the clipping bound
        losses = rng.gamma(2.0, 0.3, size=len(groups)) * (1 + (groups == 1) * rng.uniform(-0.4, 1.0))
        lb1, lb2 = binary_reference_step(lb1, lb2, losses, ref_labels, groups, fairness, alpha)
        cell = np.array([[losses[(labels01 == y) & (groups == z)].mean() for z in (0, 1)] for y in (0, 1)])
        s.update(cell)
        np.testing.assert_allclose(s.lambdas[1], [1 - lb1, lb1], atol=1e-12)
        np.testing.assert_allclose(s.lambdas[0], [1 - lb2, lb2], atol=1e-12)
        moved_to_bounds |= lb1 in (0.0, 1.0) or lb2 in (0.0, 1.0)
    assert moved_to_bounds or alpha == 0.005  # the large step reaches the clipping


# ---- state, checkpoints, inputs


def test_state_dict_round_trip_resumes_the_same_batches():
    labels, groups = _data({(0, 0): 9, (0, 1): 5, (1, 0): 6, (1, 1): 8})
    a = FairBatchSampler(labels, groups, 4, seed=3, alpha=0.2)  # a large step, so the cell counts change
    for epoch in (1, 2):
        a.set_epoch(epoch)
        a.update([[0.1 * epoch, 0.5], [0.2, 0.3]])
    buf = io.BytesIO()
    torch.save({"sampler": a.state_dict()}, buf)
    buf.seek(0)
    b = FairBatchSampler(labels, groups, 4, seed=3, alpha=0.2)
    b.load_state_dict(torch.load(buf)["sampler"])
    np.testing.assert_array_equal(a.lambdas, b.lambdas)
    assert b.epoch == 2
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    fresh = FairBatchSampler(labels, groups, 4, seed=3)
    fresh.set_epoch(3)
    assert list(fresh) != list(a)  # lambda moved: the batches differ


def test_state_from_other_data_is_refused():
    a = FairBatchSampler([0, 1, 0, 1], [0, 0, 1, 1], 2)
    b = FairBatchSampler([0, 1, 0, 1, 1], [0, 0, 1, 1, 1], 2)
    with pytest.raises(ValueError) as err:
        b.load_state_dict(a.state_dict())
    assert str(err.value) == STATE_MISMATCH_MSG.format(what="cell_sizes", saved=[[1, 1], [1, 1]], mine=[[1, 1], [1, 2]])
    with pytest.raises(ValueError, match="lambdas must be shape"):
        a.load_state_dict({**a.state_dict(), "lambdas": [[0.7, 0.7], [0.5, 0.5]]})


def test_input_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"^labels and groups must have one entry per case, got 3 labels and 2 groups$"):
        FairBatchSampler([0, 1, 0], [0, 1], 1)
    with pytest.raises(ValueError, match=r"^fairness must be one of \('eqodds', 'eqopp', 'dp'\), got 'eo'$"):
        FairBatchSampler([0, 1], [0, 1], 1, fairness="eo")
    with pytest.raises(TypeError, match=r"^labels must hold integers, got non-integer values e.g. \[0.5\]$"):
        FairBatchSampler([0.5, 1.0], [0, 1], 1)
    with pytest.raises(ValueError, match=r"^group codes must be >= 0, or -1 for an excluded case; got \[-2\]$"):
        FairBatchSampler([0, 1], [-2, 1], 1)
    with pytest.raises(ValueError, match=r"every case of label\(s\) \[1\] is excluded"):
        FairBatchSampler([0, 1, 1], [0, -1, -1], 1)
    with pytest.raises(ValueError, match=r"^positive_label 1 is not among the labels \[0, 2\]"):
        FairBatchSampler([0, 2], [0, 1], 1, fairness="eqopp")


def test_from_datalist_reads_label_and_group_code():
    datalist = [{"label": i % 2, "race_code": (i // 2) % 3, "image": f"{i}.nii"} for i in range(12)]
    s = FairBatchSampler.from_datalist(datalist, 3, group_key="race_code", seed=0)
    assert s.group_values == [0, 1, 2] and s.cell_sizes.tolist() == [[2, 2, 2], [2, 2, 2]]
    with pytest.raises(ValueError, match=r"^FairBatchSampler.from_datalist: case 0 has no key 'race' \(keys: "
                                         r"\['image', 'label', 'race_code'\]\); the group code of attribute 'x' "
                                         r"is under 'x_code'$"):
        FairBatchSampler.from_datalist(datalist, 3, group_key="race")
