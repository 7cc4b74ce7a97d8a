"""FairBatchUpdate: hand-computed cell losses, the rank reduction, the eval pass's modes, an ignite run, resume."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from torch.utils.data import DataLoader, Dataset

from fairmonai.data import FairBatchSampler
from fairmonai.handlers import FairBatchUpdate
from fairmonai.handlers.fairbatch import UNKNOWN_VALUE_MSG, UNSEEN_CELL_MSG

LN2, LN3, LN4, LN43 = math.log(2), math.log(3), math.log(4), math.log(4 / 3)

# (label, group, logits): the network is the identity, so each case's CE is known by hand:
# softmax([0, 0]) = (1/2, 1/2); softmax([ln 3, 0]) = (3/4, 1/4); softmax([0, ln 3]) = (1/4, 3/4)
CASES = [
    (0, 0, [0.0, 0.0]),   # CE ln 2;   toward class 1 (dp): ln 2
    (0, 0, [LN3, 0.0]),   # CE ln 4/3; dp: ln 4
    (0, 1, [0.0, LN3]),   # CE ln 4;   dp: ln 4/3
    (1, 0, [0.0, LN3]),   # CE ln 4/3; dp: ln 4/3
    (1, 1, [0.0, 0.0]),   # CE ln 2;   dp: ln 2
    (1, 1, [LN3, 0.0]),   # CE ln 4;   dp: ln 4
    (1, -1, [9.0, -9.0]),  # excluded: in no cell (its CE of 18 would show in any cell it reached)
]
CE_CELLS = [[(LN2 + LN43) / 2, LN4], [LN43, (LN2 + LN4) / 2]]
DP_CELLS = [[(LN2 + LN4) / 2, LN43], [LN43, (LN2 + LN4) / 2]]


def _loader(cases=CASES, batch=3):
    out = []
    for s in range(0, len(cases), batch):
        part = cases[s:s + batch]
        out.append({"image": torch.tensor([c[2] for c in part]), "label": torch.tensor([c[0] for c in part]),
                    "race_code": torch.tensor([c[1] for c in part])})
    return out


def _sampler(fairness="eqodds", **kw):
    return FairBatchSampler([c[0] for c in CASES], [c[1] for c in CASES], 2, seed=0, fairness=fairness, **kw)


def _engine():
    engine = Engine(lambda e, b: None)
    engine.state.epoch = 1
    return engine


@pytest.mark.parametrize("fairness, expected", [("eqodds", CE_CELLS), ("eqopp", CE_CELLS), ("dp", DP_CELLS)])
def test_cell_losses_hand_computed(fairness, expected):
    h = FairBatchUpdate(_sampler(fairness), loader=_loader(), network=torch.nn.Identity(), group_key="race_code")
    engine = _engine()
    h(engine)
    np.testing.assert_allclose(engine.state.fairbatch_cell_loss, expected, rtol=1e-6)


def test_epoch_step_moves_lambda_as_the_hand_computed_losses_say():
    # eqodds gaps: label 0 ln4 - (ln2 + ln4/3)/2 = 0.896, label 1 (ln2 + ln4)/2 - ln4/3 = 0.752 -> label 0,
    # group 1 (worst) gains alpha: lambda_0 = [2/3, 1/3] -> [2/3 - 0.005, 1/3 + 0.005]
    s = _sampler()
    h = FairBatchUpdate(s, loader=_loader(), network=torch.nn.Identity(), group_key="race_code")
    engine = _engine()
    h(engine)
    np.testing.assert_allclose(engine.state.fairbatch_lambda, [[2 / 3 - 0.005, 1 / 3 + 0.005], [1 / 3, 2 / 3]])


def test_rank_sums_and_counts_are_all_reduced(monkeypatch):
    # this rank evaluates the first 4 cases; the mocked all_reduce adds the other rank's sums and counts:
    # cell (0, 1) CE 1.0 twice, cell (1, 1) CE 5.0 once (the layout is [sums; counts], labels x groups)
    other = torch.tensor([[[0.0, 2.0], [0.0, 5.0]], [[0.0, 2.0], [0.0, 1.0]]], dtype=torch.float64)
    calls = []

    def fake_all_reduce(t):
        calls.append(t.shape)
        return t + other

    import fairmonai.handlers.fairbatch as mod
    monkeypatch.setattr(mod.idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(mod.idist, "all_reduce", fake_all_reduce)
    h = FairBatchUpdate(_sampler(), loader=_loader(CASES[:4], 2), network=torch.nn.Identity(), group_key="race_code")
    engine = _engine()
    h(engine)
    assert calls == [torch.Size([2, 2, 2])]
    np.testing.assert_allclose(engine.state.fairbatch_cell_loss,
                               [[(LN2 + LN43) / 2, (LN4 + 2.0) / 3], [LN43, 5.0]], rtol=1e-6)


def test_unseen_cell_skips_the_step_with_a_warning(caplog):
    s = _sampler()
    h = FairBatchUpdate(s, loader=_loader(CASES[:2] + CASES[3:]), network=torch.nn.Identity(), group_key="race_code")
    engine = _engine()
    with caplog.at_level(logging.WARNING, logger="fairmonai.handlers.fairbatch"):
        h(engine)
    assert caplog.messages == [
        "FairBatchUpdate: epoch 1: no case of populated cell(s) [(0, 1)] (label, group) was evaluated; lambda update "
        "skipped, lambda stays [[0.6667, 0.3333], [0.3333, 0.6667]]"]
    assert caplog.messages[0] == UNSEEN_CELL_MSG.format(epoch=1, cells=[(0, 1)], where="evaluated",
                                                        lam=[[0.6667, 0.3333], [0.3333, 0.6667]])
    np.testing.assert_allclose(s.lambdas, [[2 / 3, 1 / 3], [1 / 3, 2 / 3]])


def test_unknown_group_in_the_loader_is_an_error():
    h = FairBatchUpdate(_sampler(), loader=_loader([(0, 3, [0.0, 0.0])]), network=torch.nn.Identity(),
                        group_key="race_code")
    with pytest.raises(ValueError) as err:
        h(_engine())
    assert str(err.value) == UNKNOWN_VALUE_MSG.format(what="group", values=[3], where="eval batch", known=[0, 1])


def test_options_are_checked():
    with pytest.raises(ValueError, match=r"^source must be one of \('eval', 'running'\), got 'train'$"):
        FairBatchUpdate(_sampler(), group_key="g", source="train")
    with pytest.raises(ValueError, match=r"needs loader"):
        FairBatchUpdate(_sampler(), group_key="g")
    with pytest.raises(TypeError, match=r"^sampler must be a fairmonai.data.FairBatchSampler, got list$"):
        FairBatchUpdate([], group_key="g", loader=[])


# ---- a tiny ignite run


class _Toy(Dataset):
    """Group 0: two well separated classes; group 1: features that are noise (its loss stays high)."""

    def __init__(self, n=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.z = (torch.arange(n) // 2) % 2
        x = torch.randn(n, 2, generator=g)
        x[self.z == 0, 0] += 3.0 * (2 * self.y[self.z == 0] - 1)
        self.x = x

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i], "race_code": self.z[i], "index": i}


def _run(max_epochs, *, source="eval", alpha=0.05, ckpt_dir=None, resume_from=None):
    torch.manual_seed(0)
    ds = _Toy()
    sampler = FairBatchSampler(ds.y, ds.z, 8, seed=1, alpha=alpha)
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    modes = {"train": [], "handler": []}
    net.register_forward_pre_hook(
        lambda m, a: modes["train" if torch.is_grad_enabled() else "handler"].append(m.training))
    log = {"batches": {}, "steps": [], "running": {}}

    def step(engine, batch):  # never calls net.train(): the handler must restore it
        opt.zero_grad()
        pred = net(batch["image"])
        F.cross_entropy(pred, batch["label"]).backward()
        opt.step()
        log["batches"].setdefault(engine.state.epoch, []).append(batch["index"].tolist())
        per_case = F.cross_entropy(pred.detach(), batch["label"], reduction="none")
        for loss, y, z in zip(per_case.tolist(), batch["label"].tolist(), batch["race_code"].tolist()):
            log["running"].setdefault(engine.state.epoch, {}).setdefault((y, z), []).append(loss)
        return {"pred": pred.detach(), "label": batch["label"]}

    engine = Engine(step)
    handler = FairBatchUpdate(sampler, loader=DataLoader(ds, batch_size=16), network=net, group_key="race_code",
                              source=source)
    handler.attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED,
                             lambda e: log["steps"].append((e.state.fairbatch_lambda, e.state.fairbatch_cell_loss)))
    objects = {"trainer": engine, "model": net, "optimizer": opt, "fairbatch": sampler}
    if ckpt_dir is not None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, Checkpoint(
            objects, DiskSaver(ckpt_dir, require_empty=False), n_saved=None,
            global_step_transform=lambda e, _: e.state.epoch))
    if resume_from is not None:
        Checkpoint.load_objects(objects, torch.load(resume_from, weights_only=False))
    engine.run(DataLoader(ds, batch_sampler=sampler), max_epochs=max_epochs)
    return sampler, net, modes, log


def test_ignite_run_restores_train_mode_and_moves_lambda_toward_the_worse_group():
    sampler, net, modes, log = _run(4)
    assert modes["handler"] and not any(modes["handler"])  # the eval pass ran in eval mode
    assert modes["train"] and all(modes["train"])  # every training step found train mode restored
    assert net.training
    init = np.array([[0.5, 0.5], [0.5, 0.5]])
    for epoch, (lam, loss) in enumerate(log["steps"], start=1):
        loss = np.array(loss)
        assert np.all(loss[:, 1] > loss[:, 0])  # the noise group is worse for both labels
        # every step gave alpha to group 1 of one label: the group-1 shares grew by epoch * alpha in all
        np.testing.assert_allclose(np.array(lam)[:, 1].sum() - init[:, 1].sum(), epoch * 0.05, atol=1e-12)
    # each epoch's batches are those of the sampler at (seed, epoch) and that epoch's lambda
    replay = FairBatchSampler(_Toy().y, _Toy().z, 8, seed=1, alpha=0.05)
    lams = [init.tolist()] + [lam for lam, _ in log["steps"]]
    for epoch in range(1, 5):
        replay.load_state_dict({**replay.state_dict(), "lambdas": lams[epoch - 1], "epoch": epoch})
        assert log["batches"][epoch] == list(replay)
    cells, _ = sampler.batch_composition()
    # lambda [[0.35, 0.65], [0.45, 0.55]] (three steps on label 0, one on label 1): targets 4 * lambda =
    # [[1.4, 2.6], [1.8, 2.2]], floors [[1, 2], [1, 2]], the 2 leftover units to the fractions 0.8 and 0.6
    np.testing.assert_allclose(sampler.lambdas, [[0.35, 0.65], [0.45, 0.55]])
    assert cells.tolist() == [[1, 3], [2, 2]]  # from [[2, 2], [2, 2]]: the noise group's share of a batch grew


def test_running_source_averages_the_training_iterations_losses():
    _, net, modes, log = _run(3, source="running")
    assert not modes["handler"]  # no eval pass
    for epoch, (_, loss) in enumerate(log["steps"], start=1):
        expected = [[np.mean(log["running"][epoch][(y, z)]) for z in (0, 1)] for y in (0, 1)]
        np.testing.assert_allclose(loss, expected, rtol=1e-12)


def test_checkpoint_resume_repeats_the_next_batches_and_lambda(tmp_path):
    _, _, _, full = _run(4)
    _run(2, ckpt_dir=tmp_path)
    files = sorted(tmp_path.glob("checkpoint_*.pt"))
    assert [f.name for f in files] == ["checkpoint_1.pt", "checkpoint_2.pt"]
    _, _, _, resumed = _run(4, resume_from=files[-1])
    assert sorted(resumed["batches"]) == [3, 4]
    assert resumed["batches"][3] == full["batches"][3] and resumed["batches"][4] == full["batches"][4]
    np.testing.assert_allclose(resumed["steps"][-1][0], full["steps"][-1][0], rtol=0, atol=0)
