"""GroupFairnessMetric: ignite adapter of the classification fairness summary, single and 2-process."""

import os
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine
from monai.handlers import from_engine

from fairmonai.handlers.fairness_metric import SENSITIVE_SOURCE_MSG, UNKNOWN_SCALAR_MSG, GroupFairnessMetric
from fairmonai.metrics._classification import classification_fairness_summary

N = 64


def _data(seed=0, n=N):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    g = rng.integers(-1, 3, n)
    return y, s, g


def _batches(y, s, g, size=10):
    return [{"pred": torch.tensor(s[i:i + size]), "label": torch.tensor(y[i:i + size]),
             "race_code": torch.tensor(g[i:i + size])} for i in range(0, len(y), size)]


def _engine():
    return Engine(lambda engine, batch: (batch["pred"], batch["label"]))


def test_engine_equals_functional():
    y, s, g = _data()
    engine = _engine()
    metric = GroupFairnessMetric("race_code", group_names=["a", "b", "c"], n_bootstrap=20)
    metric.attach(engine, "val_auc")
    state = engine.run(_batches(y, s, g), max_epochs=2)  # reset each epoch: not doubled
    expected = classification_fairness_summary(y, s, sensitive_features=g, group_names=["a", "b", "c"],
                                               n_bootstrap=20)
    assert state.fairness["val_auc"].to_dict() == expected.to_dict()
    scalars = expected.scalars()
    assert state.metrics["val_auc"] == scalars["auc"]
    for k, v in scalars.items():
        assert state.metrics[f"val_{k}"] == v
    assert state.metrics["val_eodd"] == expected.disparities["eodd"].value


def test_decollated_monai_style_output_and_batch():
    # a MONAI evaluator decollates: output and batch are lists of per-sample dicts
    y, s, g = _data(1)
    batches = [[{"pred": torch.tensor([1 - s[j], s[j]]), "label": torch.tensor(y[j]), "race_code": int(g[j])}
                for j in range(i, min(i + 8, N))] for i in range(0, N, 8)]
    engine = Engine(lambda e, b: b)
    metric = GroupFairnessMetric(batch_transform=from_engine(["race_code"]),
                                 output_transform=from_engine(["pred", "label"]), key="eodd", prefix="test_",
                                 scalars=["auc", "es_auc"], state_attribute="fair")
    metric.attach(engine, "test_eodd")
    state = engine.run(batches)
    expected = classification_fairness_summary(y, s, sensitive_features=g)
    assert state.metrics == {"test_eodd": expected.disparities["eodd"].value,
                             "test_auc": expected.metrics["auc"].overall,
                             "test_es_auc": expected.disparities["es_auc"].value}
    assert state.fair["test_eodd"].to_dict() == expected.to_dict()


def test_monai_evaluator_key_metric():
    from monai.engines import SupervisedEvaluator
    from monai.transforms import Activationsd

    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.normal(size=(24, 3)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 2, 24))
    g = torch.tensor(rng.integers(0, 2, 24))
    data = [{"image": x[i:i + 6], "label": y[i:i + 6], "sex_code": g[i:i + 6]} for i in range(0, 24, 6)]
    net = torch.nn.Linear(3, 2)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=data, network=net, epoch_length=4,
        postprocessing=Activationsd(keys="pred", softmax=True),
        key_val_metric={"val_auc": GroupFairnessMetric("sex_code", output_transform=from_engine(["pred", "label"]))},
    )
    evaluator.run()
    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1)
    expected = classification_fairness_summary(y, probs, sensitive_features=g)
    assert evaluator.state.metrics["val_auc"] == pytest.approx(expected.metrics["auc"].overall, abs=1e-6)
    assert evaluator.state.metrics["val_eodd"] == pytest.approx(expected.disparities["eodd"].value, abs=1e-6)
    assert evaluator.state.best_metric == evaluator.state.metrics["val_auc"]


def test_handler_errors():
    with pytest.raises(ValueError) as e:
        GroupFairnessMetric()
    assert str(e.value) == SENSITIVE_SOURCE_MSG.format(what="neither")
    with pytest.raises(ValueError) as e:
        GroupFairnessMetric("race_code", batch_transform=lambda b: b["race_code"])
    assert str(e.value) == SENSITIVE_SOURCE_MSG.format(what="both")
    y, s, g = _data()
    engine = _engine()
    GroupFairnessMetric("race_code", key="kappa").attach(engine, "val_kappa")
    with pytest.raises(ValueError) as e:
        engine.run(_batches(y, s, g))
    assert str(e.value).startswith(UNKNOWN_SCALAR_MSG.format(what="key", value="kappa", allowed="")[:-1])


# ---- two processes, gloo on CPU, each rank evaluating half of the data


def _dist_worker(rank, world, init_file, out_file):
    os.environ["LOCAL_RANK"] = str(rank)  # as torchrun sets it; ignite reads it
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        y, s, g = _data(3, n=N + 3)  # uneven: ranks hold 34 and 33 samples
        mine = np.arange(rank, y.size, world)  # DistributedSampler-like interleaving
        engine = _engine()
        GroupFairnessMetric("race_code", n_bootstrap=20, group_names=["a", "b", "c"]).attach(engine, "val_auc")
        state = engine.run(_batches(y[mine], s[mine], g[mine], size=7))
        if rank == 0:
            torch.save(state.fairness["val_auc"].to_dict(), out_file)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process():
    y, s, g = _data(3, n=N + 3)
    # all_gather concatenates rank 0's samples then rank 1's: the single-process run on that order
    # must give the same summary, bootstrap intervals included
    order = np.r_[np.arange(0, y.size, 2), np.arange(1, y.size, 2)]
    expected = classification_fairness_summary(y[order], s[order], sensitive_features=g[order],
                                               group_names=["a", "b", "c"], n_bootstrap=20).to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out.pt")
        # fork: the children inherit the imported modules (spawn would re-import MONAI in each, ~10 s)
        mp.start_processes(_dist_worker, args=(2, init_file, out_file), nprocs=2, join=True, start_method="fork")
        got = torch.load(out_file, weights_only=False)
    assert got == expected
    # the point values do not depend on the order at all
    plain = classification_fairness_summary(y, s, sensitive_features=g, group_names=["a", "b", "c"]).to_dict()
    assert {k: v["by_group"] for k, v in got["metrics"].items()} == {k: v["by_group"]
                                                                     for k, v in plain["metrics"].items()}
    assert {k: v["value"] for k, v in got["disparities"].items()} == {k: v["value"]
                                                                      for k, v in plain["disparities"].items()}
