"""PenaltyCurveLogger: shared k-NN I(u; v) every N iterations, CSV rows, -1 codes, resume."""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine
from sklearn.feature_selection import mutual_info_classif
from torch.utils.data import DataLoader

from fairmonai.engines import FairSupervisedTrainer
from fairmonai.handlers.penalty_curve import PenaltyCurveLogger, knn_mutual_information, representation_from_engine


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
    class Loss:
        last_diagnostic = None

    loss = Loss()
    batches = _toy_batches(1.0, n_iter=5, batch=16)
    state = {"i": 0}

    def step(engine, batch):
        state["i"] += 1
        loss.last_diagnostic = {"sfd_sq": torch.tensor(0.1 * state["i"]), "dv": 0.5}
        return {"pred": batch["v"], "loss": torch.tensor(float(state["i"]))}

    engine = Engine(step)
    engine.loss_obj = loss
    logger = PenaltyCurveLogger("race_code", tmp_path, every_n=3, window=64, min_samples=20,
                                diagnostic_getter="loss_obj.last_diagnostic")
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
    assert math.isnan(knn_mutual_information(np.full((30, 1), np.nan), np.arange(30) % 2))


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


def test_joint_estimator_equals_sum_in_one_dimension():
    rng = np.random.default_rng(1)
    u = rng.integers(0, 3, 150)
    v = u[:, None] * 0.8 + rng.standard_normal((150, 1))
    a = knn_mutual_information(v, u, estimator="sum", random_state=3)
    b = knn_mutual_information(v, u, estimator="joint", random_state=3)
    assert a == pytest.approx(b, abs=1e-12)
    # two copies of the same column: the sum double counts, the joint estimate does not
    v2 = np.concatenate([v, v + 1e-3 * rng.standard_normal((150, 1))], axis=1)
    assert knn_mutual_information(v2, u) > 1.5 * a
    assert knn_mutual_information(v2, u, estimator="joint") < 1.3 * a


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
    engine = _engine()
    getter = "base_loss_function.last"
    PenaltyCurveLogger("race_code", tmp_path / "x", every_n=1, diagnostic_getter=getter).attach(engine)
    with pytest.raises(ValueError, match="Engine has no attribute 'base_loss_function'"):
        engine.run(_toy_batches(1.0, n_iter=1), max_epochs=1)


class DiagLoss(torch.nn.Module):
    def forward(self, pred, target, *, sensitive, representation=None):
        task = ((pred - target) ** 2).mean()
        self.last_diagnostic = {"sfd_sq": float(sensitive.float().mean())}
        return task


def test_with_fair_trainer_logits_and_representation(tmp_path):
    torch.manual_seed(0)
    n = 48
    g = torch.arange(n) % 2
    x = torch.randn(n, 4) + g[:, None].float()
    data = [{"image": x[i], "label": torch.zeros(2), "race_code": int(g[i])} for i in range(n)]
    net = torch.nn.Sequential(OrderedDict(feat=torch.nn.Linear(4, 3), head=torch.nn.Linear(3, 2)))
    pred_log = PenaltyCurveLogger("race_code", tmp_path / "pred", every_n=6, window=48,
                                  diagnostic_getter="base_loss_function.last_diagnostic")
    feat_log = PenaltyCurveLogger("race_code", tmp_path / "feat", every_n=6, window=48,
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
    assert trainer.state.metrics["mi_knn"] == p["mi_knn"][0]
    assert trainer.state.metrics["mi_knn_feat"] == f["mi_knn"][0]
