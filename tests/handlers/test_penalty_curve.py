"""PenaltyCurveLogger: shared k-NN I(u; v) every N iterations, CSV rows, -1 codes, resume."""

from __future__ import annotations

import math
import os
import re
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events
from sklearn.feature_selection import mutual_info_classif
from torch.utils.data import DataLoader

from fairmonai.engines import FairSupervisedTrainer
from fairmonai.handlers.penalty_curve import PenaltyCurveLogger, representation_from_engine


def _toy_batches(delta, n_iter=8, batch=32, seed=0, dim=1, missing=0.0):
    """u in {0, 1}; v = u * delta + noise (the planted dependence); some codes -1 if ``missing``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_iter):
        u = rng.integers(0, 2, batch)
        v = u[:, None] * delta + rng.standard_normal((batch, dim))
        if missing:
            u = np.where(rng.random(batch) < missing, -1, u)
        out.append({"v": torch.tensor(v, dtype=torch.float32), "race_code": torch.tensor(u)})
    return out


def _engine(loss_of=lambda b: float(b["v"].mean())):
    def step(engine, batch):
        return {"pred": batch["v"], "loss": torch.tensor(loss_of(batch))}

    return Engine(step)


def _direct(batches, window, k=3, seed=0):
    v = torch.cat([b["v"] for b in batches]).double().numpy()
    u = torch.cat([b["race_code"] for b in batches]).numpy()
    keep = u >= 0
    v, u = v[keep][-window:], u[keep][-window:]
    return float(mutual_info_classif(v, u, n_neighbors=k, random_state=seed).sum()), len(u)


@pytest.mark.parametrize("dim", [1, 2])
def test_planted_mi_rises_with_delta_and_matches_sklearn(tmp_path, dim):
    values = []
    for delta in [0.0, 1.0, 2.0, 4.0]:
        batches = _toy_batches(delta, n_iter=12, dim=dim)
        engine = _engine()
        logger = PenaltyCurveLogger("race_code", tmp_path / f"d{delta}", every_n=12, window=300, k=3, seed=7)
        logger.attach(engine)
        engine.run(batches, max_epochs=1)
        expected, n = _direct(batches, window=300, k=3, seed=7)
        assert engine.state.metrics["mi_knn"] == expected  # the same estimate on the same buffer
        assert engine.state.penalty_curve["n_samples"] == n == 300
        values.append(expected)
    assert values[0] < 0.05 * dim
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[-1] > 0.4  # I(u; v) <= H(u) = log 2 ~ 0.69 nats


def test_csv_rows_at_expected_iterations(tmp_path):
    batches = _toy_batches(1.0, n_iter=5, batch=16)
    state = {"i": 0}

    def step(engine, batch):
        state["i"] += 1
        engine.state.loss_terms = {"sfd_sq": torch.tensor(0.1 * state["i"]),
                                   "dv": torch.tensor(0.5, dtype=torch.float64)}
        return {"pred": batch["v"], "loss": torch.tensor(float(state["i"]))}

    engine = Engine(step)
    logger = PenaltyCurveLogger("race_code", tmp_path, every_n=3, window=64, min_samples=20)
    logger.attach(engine)
    engine.run(batches, max_epochs=2)  # 10 iterations -> rows at 3, 6, 9
    df = pd.read_csv(tmp_path / "penalty_curve.csv")
    assert list(df.columns) == ["iteration", "epoch", "n_samples", "mi_knn", "sfd_sq", "dv", "loss"]
    assert df["iteration"].tolist() == [3, 6, 9]
    assert df["epoch"].tolist() == [1, 2, 2]
    assert df["n_samples"].tolist() == [48, 64, 64]
    np.testing.assert_allclose(df["sfd_sq"], [0.3, 0.6, 0.9], rtol=1e-6)
    assert df["dv"].tolist() == [0.5] * 3
    assert df["loss"].tolist() == [3.0, 6.0, 9.0]
    assert df["mi_knn"].notna().all()


def test_too_few_samples_or_one_group_give_nan(tmp_path):
    codes = torch.tensor([0, 1, 0, 1])
    batches = [{"v": torch.randn(4, 1), "race_code": codes} for _ in range(3)]
    engine = _engine()
    PenaltyCurveLogger("race_code", tmp_path, every_n=1, min_samples=6).attach(engine)
    engine.run(batches, max_epochs=1)
    df = pd.read_csv(tmp_path / "penalty_curve.csv")
    assert math.isnan(df["mi_knn"][0]) and df["n_samples"][0] == 4  # 4 < min_samples
    assert df["mi_knn"][1:].notna().all() and df["n_samples"].tolist() == [4, 8, 12]

    one_group = [{"v": torch.randn(32, 1), "race_code": torch.ones(32, dtype=torch.long)}]
    engine = _engine()
    PenaltyCurveLogger("race_code", tmp_path / "one", every_n=1).attach(engine)
    engine.run(one_group, max_epochs=1)
    assert math.isnan(engine.state.metrics["mi_knn"])


def test_missing_codes_are_skipped(tmp_path):
    batches = _toy_batches(2.0, n_iter=6, batch=32, missing=0.3)
    engine = _engine()
    logger = PenaltyCurveLogger("race_code", tmp_path, every_n=6, window=100)
    logger.attach(engine)
    engine.run(batches, max_epochs=1)
    expected, n = _direct(batches, window=100)
    v, u = logger.buffer()
    assert (u >= 0).all() and len(u) == n == 100
    assert engine.state.metrics["mi_knn"] == expected


def test_resume_appends(tmp_path):
    batches = _toy_batches(1.0, n_iter=6, batch=16)
    engine = _engine()
    PenaltyCurveLogger("race_code", tmp_path, every_n=2).attach(engine)
    engine.run(batches, max_epochs=1)  # rows at 2, 4, 6

    resumed = _engine()  # a new process resuming from a checkpoint at the end of epoch 1
    resumed.load_state_dict({"iteration": 6, "epoch_length": 6, "max_epochs": 2})
    PenaltyCurveLogger("race_code", tmp_path, every_n=2).attach(resumed)
    resumed.run(batches, max_epochs=2)  # rows at 8, 10, 12
    df = pd.read_csv(tmp_path / "penalty_curve.csv")
    assert df["iteration"].tolist() == [2, 4, 6, 8, 10, 12]
    assert (tmp_path / "penalty_curve.csv").read_text().count("iteration") == 1

    fresh = _engine()
    PenaltyCurveLogger("race_code", tmp_path, every_n=3, append=False).attach(fresh)
    fresh.run(batches, max_epochs=1)
    assert pd.read_csv(tmp_path / "penalty_curve.csv")["iteration"].tolist() == [3, 6]


def test_bad_options_and_missing_key(tmp_path):
    with pytest.raises(ValueError, match=r"unknown estimator 'ksg'; choose one of \['sum', 'joint'\]"):
        PenaltyCurveLogger("race_code", tmp_path, estimator="ksg")
    with pytest.raises(ValueError, match="every_n must be an integer >= 1, got 0"):
        PenaltyCurveLogger("race_code", tmp_path, every_n=0)
    engine = _engine()
    PenaltyCurveLogger("sex_code", tmp_path, every_n=1).attach(engine)
    msg = "no sensitive attribute key 'sex_code'; the batch keys are ['race_code', 'v']"
    with pytest.raises(ValueError, match=re.escape(msg)):
        engine.run(_toy_batches(1.0, n_iter=1), max_epochs=1)
    for terms, msg in ([1.0, "engine.state.loss_terms must be a mapping of scalar tensors, got float"],
                       [{"dv": torch.zeros(2)}, "diagnostic 'dv' must be a scalar, got shape (2,)"]):
        engine = _engine()
        engine.add_event_handler(Events.ITERATION_STARTED, lambda e, t=terms: setattr(e.state, "loss_terms", t))
        PenaltyCurveLogger("race_code", tmp_path / "x", every_n=1).attach(engine)
        with pytest.raises(ValueError, match=re.escape(msg)):
            engine.run(_toy_batches(1.0, n_iter=1), max_epochs=1)


class DiagLoss(torch.nn.Module):
    def forward(self, pred, target, *, sensitive, representation=None):
        task = ((pred - target) ** 2).mean()
        self.last_terms = {"sfd_sq": sensitive.float().mean()}
        return task


def test_with_fair_trainer_logits_and_representation(tmp_path):
    torch.manual_seed(0)
    n = 48
    g = torch.arange(n) % 2
    x = torch.randn(n, 4) + g[:, None].float()
    data = [{"image": x[i], "label": torch.zeros(2), "race_code": int(g[i])} for i in range(n)]
    net = torch.nn.Sequential(OrderedDict(feat=torch.nn.Linear(4, 3), head=torch.nn.Linear(3, 2)))
    pred_log = PenaltyCurveLogger("race_code", tmp_path / "pred", every_n=6, window=48)
    feat_log = PenaltyCurveLogger("race_code", tmp_path / "feat", every_n=6, window=48, log_loss_terms=False,
                                  representation_transform=representation_from_engine, metric_name="mi_knn_feat")
    trainer = FairSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(data, batch_size=8), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0), loss_function=DiagLoss(),
        sensitive_key="race_code", representation_layer="feat", train_handlers=[pred_log, feat_log],
    )
    trainer.run()
    with torch.no_grad():
        expected_pred = mutual_info_classif(net(x).double().numpy(), g.numpy(), n_neighbors=3, random_state=0).sum()
        feats = net.feat(x).double().numpy()
        expected_feat = mutual_info_classif(feats, g.numpy(), n_neighbors=3, random_state=0).sum()
    p = pd.read_csv(tmp_path / "pred" / "penalty_curve.csv")
    f = pd.read_csv(tmp_path / "feat" / "penalty_curve.csv")
    assert p["iteration"].tolist() == [6] and list(p.columns)[4] == "sfd_sq"
    assert p["mi_knn"][0] == pytest.approx(expected_pred, rel=1e-5)
    assert f["mi_knn"][0] == pytest.approx(expected_feat, rel=1e-5)
    assert p["sfd_sq"][0] == pytest.approx(0.5)
    assert list(f.columns) == ["iteration", "epoch", "n_samples", "mi_knn", "loss"]  # log_loss_terms=False
    assert trainer.state.metrics["mi_knn"] == p["mi_knn"][0]
    assert trainer.state.metrics["mi_knn_feat"] == f["mi_knn"][0]


# ------------------------------------------------------------------ small-group fallback per epoch


def _f64(x):
    return torch.tensor(float(x), dtype=torch.float64)


def _fallback_engine(per_iteration, terms_extra=None):
    """Plain engine whose loss terms report the given (n_fallback, n_fallback_groups) per iteration."""
    counts = iter(per_iteration)

    def step(engine, batch):
        rows, groups = next(counts)
        engine.state.loss_terms = {"msq_sfd": _f64(0.5), "n_fallback": _f64(rows), "n_fallback_groups": _f64(groups),
                                   **(terms_extra or {})}
        return {"pred": batch["v"], "loss": torch.tensor(1.0)}

    return Engine(step)


def test_fallback_summed_per_epoch_logged_and_written(tmp_path, caplog):
    per_iteration = [(3, 1), (0, 0), (7, 2), (1, 1), (0, 0), (6, 1)]  # 2 epochs of 3 iterations
    engine = _fallback_engine(per_iteration)
    seen, at_epoch_end = [], []
    logger = PenaltyCurveLogger("race_code", tmp_path, every_n=100, fallback_label="FaMI")
    logger.attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(
        {k: float(t) for k, t in e.state.loss_terms.items()}))
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: at_epoch_end.append(
        (e.state.metrics["sfd_fallback_rows"], e.state.metrics["sfd_fallback_groups"])))
    with caplog.at_level("INFO", logger="fairmonai.handlers.PenaltyCurveLogger"):
        engine.run(_toy_batches(1.0, n_iter=3, batch=8), max_epochs=2)
    # the per-epoch totals are the sums of the per-iteration diagnostics of that epoch
    sums = [(sum(d["n_fallback"] for d in seen[i:i + 3]), sum(d["n_fallback_groups"] for d in seen[i:i + 3]))
            for i in (0, 3)]
    assert at_epoch_end == sums == [(10, 3), (7, 2)]
    lines = [r.getMessage() for r in caplog.records if "small-group fallback" in r.getMessage()]
    assert lines == ["FaMI small-group fallback: 10 rows in 3 group-batches zeroed this epoch (epoch 1, 3 iterations)",
                     "FaMI small-group fallback: 7 rows in 2 group-batches zeroed this epoch (epoch 2, 3 iterations)"]
    df = pd.read_csv(tmp_path / "sfd_fallback.csv")
    assert df.to_dict("list") == {"epoch": [1, 2], "iteration": [3, 6], "iterations": [3, 3], "rows": [10, 7],
                                  "group_batches": [3, 2]}
    assert not (tmp_path / "penalty_curve.csv").exists()  # every_n = 100: no per-iteration row

    # resume: appended below the same header; append=False truncates at the first row
    again = _fallback_engine(per_iteration[:3])
    PenaltyCurveLogger("race_code", tmp_path, every_n=100).attach(again)
    again.run(_toy_batches(1.0, n_iter=3, batch=8), max_epochs=1)
    assert pd.read_csv(tmp_path / "sfd_fallback.csv")["rows"].tolist() == [10, 7, 10]
    fresh = _fallback_engine(per_iteration[:3])
    PenaltyCurveLogger("race_code", tmp_path, every_n=100, append=False).attach(fresh)
    fresh.run(_toy_batches(1.0, n_iter=3, batch=8), max_epochs=1)
    assert pd.read_csv(tmp_path / "sfd_fallback.csv")["rows"].tolist() == [10]


def test_fallback_not_logged_without_the_keys(tmp_path, caplog):
    # MINE: no n_fallback in the loss terms; the baseline: no loss terms at all; or switched off
    for terms, kwargs in (({"dv": _f64(0.1)}, {}), (None, {}), ({"dv": _f64(0.1)}, {"log_fallback": False})):
        engine = _engine()
        if terms is not None:
            engine.add_event_handler(Events.ITERATION_STARTED, lambda e, t=terms: setattr(e.state, "loss_terms", t))
        PenaltyCurveLogger("race_code", tmp_path, every_n=100, **kwargs).attach(engine)
        with caplog.at_level("INFO", logger="fairmonai.handlers.PenaltyCurveLogger"):
            engine.run(_toy_batches(1.0, n_iter=2), max_epochs=1)
        assert "sfd_fallback_rows" not in engine.state.metrics
    assert "small-group fallback" not in caplog.text and not (tmp_path / "sfd_fallback.csv").exists()
    for kwargs in ({"log_fallback": False}, {"log_loss_terms": False}):
        engine = _fallback_engine([(2, 1)] * 2)
        PenaltyCurveLogger("race_code", tmp_path, every_n=100, **kwargs).attach(engine)
        engine.run(_toy_batches(1.0, n_iter=2), max_epochs=1)
        assert "sfd_fallback_rows" not in engine.state.metrics


def _fair_trainer(tmp_path, penalty, max_epochs=2):
    from fairmonai.losses import FairnessRegularizedLoss

    torch.manual_seed(0)
    # batch 1: 6 samples of group 0, 2 of group 1; batch 2: 5 of group 0, 3 of group 1 (batch size 8)
    g = torch.tensor([0] * 6 + [1] * 2 + [0] * 5 + [1] * 3)
    x = torch.randn(16, 4) + g[:, None].float()
    data = [{"image": x[i], "label": torch.tensor([i % 2]), "race_code": int(g[i])} for i in range(16)]
    net = torch.nn.Linear(4, 2)
    loss = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), penalty, mu=0.5)
    logger = PenaltyCurveLogger("race_code", tmp_path, every_n=1, window=64, min_samples=4)
    trainer = FairSupervisedTrainer(
        device="cpu", max_epochs=max_epochs, train_data_loader=DataLoader(data, batch_size=8, shuffle=False),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=loss,
        sensitive_key="race_code", train_handlers=[logger],
    )
    per_iteration, per_epoch = [], []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: per_iteration.append(
        (e.state.epoch, float(e.state.loss_terms["n_fallback"]), float(e.state.loss_terms["n_fallback_groups"]),
         bool(all(torch.isfinite(p.grad).all() for p in net.parameters())))))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: per_epoch.append(
        (e.state.metrics["sfd_fallback_rows"], e.state.metrics["sfd_fallback_groups"])))
    return trainer, net, per_iteration, per_epoch


def test_fami_trainer_counts_small_groups_per_epoch(tmp_path, caplog):
    from fairmonai.losses import FaMIPenalty

    # degree 3 needs 4 distinct values per group: group 1 (2, then 3 samples) is zeroed in each batch,
    # group 0 (6, 5 samples) and the marginal (8) are fitted. By hand: 2 + 3 = 5 rows in 2 group-batches.
    trainer, net, per_iteration, per_epoch = _fair_trainer(tmp_path, FaMIPenalty(degree=3))
    with caplog.at_level("INFO", logger="fairmonai.handlers.PenaltyCurveLogger"):
        trainer.run()
    assert [(r, g) for _, r, g, _ in per_iteration] == [(2, 1), (3, 1)] * 2
    assert per_epoch == [(5, 2), (5, 2)]
    assert all(finite for *_, finite in per_iteration)
    assert all(bool(torch.isfinite(p).all()) for p in net.parameters())
    assert "FaMI small-group fallback: 5 rows in 2 group-batches zeroed this epoch (epoch 2, 2 iterations)" in caplog.text
    df = pd.read_csv(tmp_path / "penalty_curve.csv")  # the per-iteration values are diagnostic columns
    assert df["n_fallback"].tolist() == [2, 3, 2, 3] and df["n_fallback_groups"].tolist() == [1] * 4
    assert pd.read_csv(tmp_path / "sfd_fallback.csv")["rows"].tolist() == [5, 5]


def test_lower_degree_trainer_counts_nothing(tmp_path, caplog):
    from fairmonai.losses import FaMIPenalty

    trainer, net, per_iteration, per_epoch = _fair_trainer(tmp_path, FaMIPenalty(degree=3, small_group="lower_degree"),
                                                           max_epochs=1)
    with caplog.at_level("INFO", logger="fairmonai.handlers.PenaltyCurveLogger"):
        trainer.run()
    assert per_epoch == [(0, 0)] and all(finite for *_, finite in per_iteration)
    assert "FaMI small-group fallback: 0 rows in 0 group-batches zeroed this epoch (epoch 1, 2 iterations)" in caplog.text


def test_mige_label(tmp_path, caplog):
    from fairmonai.losses import MIGEPenalty

    trainer, *_ = _fair_trainer(tmp_path, MIGEPenalty(min_group_size=3), max_epochs=1)
    with caplog.at_level("INFO", logger="fairmonai.handlers.PenaltyCurveLogger"):
        trainer.run()
    # min_group_size 3: the 2-sample group of batch 1 is zeroed, the 3-sample group of batch 2 is not
    assert "MIGE small-group fallback: 2 rows in 1 group-batches zeroed this epoch (epoch 1, 2 iterations)" in caplog.text


def _fallback_dist_worker(rank, world, init_file, out_dir):
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        per_rank = {0: [(3, 1), (0, 0), (1, 1)], 1: [(2, 1), (4, 2), (0, 0)]}[rank]
        engine = _fallback_engine(per_rank)
        PenaltyCurveLogger("race_code", out_dir, every_n=100, fallback_label="FaMI").attach(engine)
        engine.run(_toy_batches(1.0, n_iter=3, batch=8, seed=rank), max_epochs=1)
        with open(os.path.join(out_dir, f"metrics_rank{rank}.json"), "w") as f:
            json.dump({k: engine.state.metrics[k] for k in ("sfd_fallback_rows", "sfd_fallback_groups")}, f)
    finally:
        dist.destroy_process_group()


def test_fallback_summed_over_two_gloo_ranks(tmp_path):
    import json
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_fallback_dist_worker, args=(2, os.path.join(tmp, "init"), str(tmp_path)), nprocs=2,
                           join=True, start_method="fork")
    for rank in (0, 1):  # 4 + 6 rows, 2 + 3 group-batches on every rank
        got = json.loads((tmp_path / f"metrics_rank{rank}.json").read_text())
        assert got == {"sfd_fallback_rows": 10, "sfd_fallback_groups": 5}
    df = pd.read_csv(tmp_path / "sfd_fallback.csv")  # rank 0 only: one row
    assert df.to_dict("list") == {"epoch": [1], "iteration": [3], "iterations": [3], "rows": [10],
                                  "group_batches": [5]}


def test_loss_terms_are_converted_only_on_logged_iterations(tmp_path, monkeypatch):
    from fairmonai.losses import FairnessRegularizedLoss

    class GapPenalty(torch.nn.Module):  # tensor ops only
        def forward(self, v, *, sensitive):
            g0 = (sensitive == 0).to(v.dtype)
            gap = (v[:, 0] * g0).sum() / g0.sum().clamp(min=1) - (v[:, 0] * (1 - g0)).sum() / (1 - g0).sum().clamp(min=1)
            self.last_diagnostic = {"gap": gap.detach()}
            return gap ** 2

    torch.manual_seed(0)
    g = torch.arange(24) % 2
    data = [{"image": torch.randn(4) + g[i], "label": torch.zeros(2), "race_code": int(g[i])} for i in range(24)]
    net = torch.nn.Linear(4, 2)
    loss = FairnessRegularizedLoss(torch.nn.MSELoss(), GapPenalty(), mu=0.5, target_transform="none")
    logger = PenaltyCurveLogger("race_code", tmp_path, every_n=3, window=24, min_samples=4)
    trainer = FairSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(data, batch_size=4), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0), loss_function=loss, sensitive_key="race_code",
        train_handlers=[logger], decollate=False,  # MONAI's decollation would call .item() on the loss itself
    )
    per_iteration, active, expected = [], [False], []
    for name in ("item", "tolist", "__float__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, **k: (
            active[0] and per_iteration.__setitem__(-1, per_iteration[-1] + 1), _o(self, *a, **k))[1])

    def start(e):
        per_iteration.append(0)
        active[0] = True

    def done(e):
        active[0] = False
        expected.append({k: float(t) for k, t in e.state.loss_terms.items()} | {"loss": float(e.state.output["loss"].detach())})

    trainer.add_event_handler(Events.ITERATION_STARTED, start)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, done)  # after the logger's row
    trainer.run()
    monkeypatch.undo()
    assert [n > 0 for n in per_iteration] == [False, False, True] * 2  # conversions on logged iterations only
    df = pd.read_csv(tmp_path / "penalty_curve.csv")
    assert list(df.columns) == ["iteration", "epoch", "n_samples", "mi_knn", "task_loss", "mu", "penalty", "gap",
                                "loss"]
    for row, want in zip(df.to_dict("records"), [expected[2], expected[5]]):
        assert {k: row[k] for k in want} == pytest.approx(want, rel=1e-6)
        assert row["penalty"] == pytest.approx(row["gap"] ** 2, rel=1e-5) and row["mu"] == 0.5
        assert row["loss"] == pytest.approx(row["task_loss"] + 0.5 * row["penalty"], rel=1e-6)
