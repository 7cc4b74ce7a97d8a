"""SubgroupReweighting: FairMedSeg's per-case weights in MONAI engines, checked by hand."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import ValidationHandler
from monai.transforms import AsDiscreted

from fairmonai.engines import FairSupervisedTrainer
from fairmonai.handlers import SubgroupReweighting
from fairmonai.handlers.subgroup_reweighting import HISTORY_COLUMNS, NOT_BINARY_MSG, TABLE_COLUMNS
from fairmonai.metrics import divergence_weights
from fairmonai.metrics._subgroups import ALL_ZERO_MSG

ATTRS = ["age", "density"]

# ---- engines

def _mask(k, n=4):
    """A 1 x 4 x 4 mask with the first k pixels set."""
    m = torch.zeros(16)
    m[:k] = 1
    return m.reshape(1, 4, 4)


def _hand_dice(k_pred, k_label=4):
    """Dice of _mask(k_pred) against _mask(k_label): the first min(k) pixels overlap."""
    if k_pred + k_label == 0:
        return 1.0
    return 2 * min(k_pred, k_label) / (k_pred + k_label)


# validation cases: (id, age, density, pixels predicted); label = 4 pixels
VAL_CASES = [("v0", "young", "a", 4), ("v1", "young", "a", 3), ("v2", "young", "b", 6), ("v3", "young", "b", 4),
             ("v4", "old", "a", 0), ("v5", "old", "a", 2), ("v6", "old", "b", 5), ("v7", "unknown", "b", 4)]


def _val_records():
    # the "network" is the identity, so the image is the prediction (as probabilities, 0.9 / 0.1)
    return [{"case_id": c, "age": a, "density": d, "image": _mask(k) * 0.8 + 0.1, "label": _mask(4)}
            for c, a, d, k in VAL_CASES]


def _train_records(n=12):
    ages, dens = ["young", "old", "middle"], ["a", "b"]
    return [{"case_id": f"t{i:02d}", "age": ages[i % 3], "density": dens[(i // 3) % 2],
             "image": torch.full((1, 4, 4), float(i))} for i in range(n)]


def _evaluator(records, decollate=True, post=True):
    # thresholding is elementwise: also right on a collated batch (decollate=False)
    post = AsDiscreted(keys="pred", threshold=0.5) if post else None
    return SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=DataLoader(records, batch_size=3),
                               network=torch.nn.Identity(), postprocessing=post, decollate=decollate)


def _expected_weights(train):
    dice = [_hand_dice(k) for *_, k in VAL_CASES]
    val_meta = pd.DataFrame([(a, d) for _, a, d, _ in VAL_CASES], columns=ATTRS)
    train_meta = pd.DataFrame([(r["age"], r["density"]) for r in train], columns=ATTRS)
    w, table = divergence_weights(dice, val_meta, train_meta, attributes=ATTRS)
    return dict(zip([r["case_id"] for r in train], w.tolist())), table


def _recording_trainer(train, max_epochs, seed=0):
    seen = []

    def step(engine, batch):
        seen.append((engine.state.epoch, list(batch["case_id"]), batch["sample_weight"].clone()))
        return 0.0

    loader = DataLoader(train, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(seed))
    trainer = Engine(step)
    trainer.state.max_epochs = max_epochs
    return trainer, loader, seen


def test_weights_reach_their_own_cases_under_shuffle(tmp_path):
    train = _train_records()
    validator = _evaluator(_val_records())
    handler = SubgroupReweighting(validator, train, ATTRS, output_dir=tmp_path)
    trainer, loader, seen = _recording_trainer(train, 3)
    handler.attach(trainer)
    ValidationHandler(interval=1, validator=validator, epoch_level=True).attach(trainer)
    trainer.run(loader, max_epochs=3)

    want, table = _expected_weights(train)
    assert len({tuple(ids) for _, ids, _ in seen}) > 3  # the loader really shuffled
    for epoch, ids, w in seen:
        assert w.dtype == torch.float32 and w.shape == (len(ids),)
        if epoch == 1:  # before the first validation
            assert w.tolist() == [1.0] * len(ids)
        else:
            np.testing.assert_allclose(w.numpy(), [want[c] for c in ids], rtol=0, atol=1e-7)
    # weights changed, and differ between subgroups
    assert handler.weights == pytest.approx(want, abs=1e-6) and len(set(want.values())) > 1
    assert handler.weights_epoch == 3
    # hand check of two entries: mean Dice 0.6125 + 0.25 / 8 (see VAL_CASES)
    dice = [_hand_dice(k) for *_, k in VAL_CASES]
    overall = sum(dice) / 8
    old_a = (dice[4] + dice[5]) / 2 - overall  # the worst subgroup, old & a
    assert want["t01"] == pytest.approx(abs(old_a), abs=1e-12)  # t01: old, a
    # t02: middle, a -> in density=a only (age=middle is not in validation)
    dens_a = (dice[0] + dice[1] + dice[4] + dice[5]) / 4 - overall
    assert want["t02"] == pytest.approx(abs(dens_a), abs=1e-12)

    st = trainer.state
    pd.testing.assert_frame_equal(st.subgroup_divergence, table)
    assert st.sample_weights["epoch"] == 3 and st.sample_weights["n_subgroups"] == len(table)
    assert st.sample_weights["max"] == pytest.approx(max(want.values()))

    folder = tmp_path / "subgroups"
    assert sorted(p.name for p in folder.iterdir()) == [
        "divergence_history.csv", "epoch_0001.csv", "epoch_0002.csv", "epoch_0003.csv",
        "weights_epoch_0001.csv", "weights_epoch_0002.csv", "weights_epoch_0003.csv"]
    t1 = pd.read_csv(folder / "epoch_0001.csv", keep_default_na=False)
    assert tuple(t1.columns) == TABLE_COLUMNS
    assert t1["subgroup"].tolist() == table["subgroup"].tolist()
    np.testing.assert_allclose(t1["divergence"], table["divergence"], atol=1e-6)
    row = t1.set_index("subgroup").loc["age=old & density=a"]
    assert row["count"] == 2 and row["support"] == 0.25 and row["mean"] == pytest.approx((dice[4] + dice[5]) / 2)
    assert "age=unknown" in set(t1["subgroup"])  # missing values are the item "unknown"
    hist = pd.read_csv(folder / "divergence_history.csv", keep_default_na=False)
    assert tuple(hist.columns) == HISTORY_COLUMNS
    assert hist["epoch"].tolist() == [1] * len(table) + [2] * len(table) + [3] * len(table)
    wf = pd.read_csv(folder / "weights_epoch_0002.csv", dtype={"case_id": str})
    assert wf["case_id"].tolist() == [r["case_id"] for r in train]
    np.testing.assert_allclose(wf["weight"], [want[r["case_id"]] for r in train], atol=1e-6)
    assert not list(folder.glob(".*tmp"))


def test_val_interval_keeps_weights_and_collated_validator(tmp_path, caplog):
    train = _train_records()
    validator = _evaluator(_val_records(), decollate=False)  # collated batch and output
    handler = SubgroupReweighting(validator, train, ATTRS, output_dir=tmp_path, table_dir="t")
    trainer, loader, seen = _recording_trainer(train, 3, seed=1)
    handler.attach(trainer)
    ValidationHandler(interval=2, validator=validator, epoch_level=True).attach(trainer)
    with caplog.at_level("INFO", logger="fairmonai.handlers.SubgroupReweighting"):
        trainer.run(loader, max_epochs=3)
    want, table = _expected_weights(train)
    for epoch, ids, w in seen:
        expected = [1.0] * len(ids) if epoch <= 2 else [want[c] for c in ids]
        np.testing.assert_allclose(w.numpy(), expected, atol=1e-7)
    assert sorted(p.name for p in (tmp_path / "t").glob("epoch_*.csv")) == ["epoch_0002.csv"]
    assert "epoch 2: 8 validation cases, %d subgroups" % len(table) in caplog.text
    assert "most negative: age=old & density=a" in caplog.text


def test_weights_reach_the_loss_of_fair_supervised_trainer():
    train = _train_records(6)
    validator = _evaluator(_val_records())
    calls = []

    class WeightedL1(torch.nn.Module):
        def forward(self, pred, target, weight=None):
            calls.append((list(trainer.state.batch["case_id"]), weight.detach().clone()))
            per_case = (pred - target).abs().flatten(1).mean(1)
            return (weight * per_case).mean()

    train_loader = DataLoader([dict(r, label=torch.zeros(1, 4, 4)) for r in train], batch_size=4, shuffle=True,
                              generator=torch.Generator().manual_seed(0))
    net = torch.nn.Conv2d(1, 1, 1)
    trainer = FairSupervisedTrainer(
        device=torch.device("cpu"), max_epochs=2, train_data_loader=train_loader, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0), loss_function=WeightedL1(),
        loss_batch_keys={"weight": "sample_weight"},
        train_handlers=[SubgroupReweighting(validator, train, ATTRS),
                        ValidationHandler(interval=1, validator=validator, epoch_level=True)])
    trainer.run()
    want, _ = _expected_weights(train)
    assert len(calls) == 4
    for ids, w in calls[:2]:
        assert w.tolist() == [1.0] * len(ids)
    for ids, w in calls[2:]:
        np.testing.assert_allclose(w.numpy(), [want[c] for c in ids], atol=1e-7)


def test_default_dice_matches_hand_computation():
    validator = _evaluator([])
    handler = SubgroupReweighting(validator, _train_records(3), ATTRS)
    label = torch.tensor([[[1, 1, 0], [0, 1, 0]]], dtype=torch.float32)  # 3 pixels
    pred = torch.tensor([[[1, 0, 0], [1, 1, 1]]], dtype=torch.float32)  # 4 pixels, 2 shared
    assert handler._score(pred, label, "c") == pytest.approx(2 * 2 / (3 + 4), abs=1e-7)
    empty = torch.zeros(1, 2, 3)
    assert handler._score(empty, empty, "c") == 1.0  # ignore_empty=False: both empty score 1
    assert handler._score(pred, empty, "c") == 0.0
    # two channels: the mean of the per-channel Dice
    p2, y2 = torch.cat([pred, 1 - pred]), torch.cat([label, 1 - label])
    inv = 2 * 1 / (3 + 2)  # (1 - pred) has 2 pixels, (1 - label) 3, 1 shared
    assert handler._score(p2, y2, "c") == pytest.approx((4 / 7 + inv) / 2, abs=1e-7)
    # a bool mask and a MetaTensor are read too
    from monai.data import MetaTensor
    assert handler._score(MetaTensor(pred.bool()), label, "c") == pytest.approx(4 / 7, abs=1e-7)


def test_errors_name_the_problem():
    validator = _evaluator(_val_records())
    train = _train_records(4)
    with pytest.raises(ValueError, match=r"train_data has duplicate case ids \('case_id'\): \['t01'\]"):
        SubgroupReweighting(validator, train + [dict(train[1])], ATTRS)
    bad = [dict(r) for r in train]
    del bad[2]["density"]
    with pytest.raises(ValueError, match="attribute 'density' is missing from training case 't02': the data lists "
                                         "hold only the attributes the manifest schema declares; declare 'density'"):
        SubgroupReweighting(validator, bad, ATTRS)
    with pytest.raises(ValueError, match="attribute 'density' is missing from training case 't00'"):
        SubgroupReweighting(validator, pd.DataFrame(train).drop(columns="density"), ATTRS)

    # a training batch with a case id not in train_data
    handler = SubgroupReweighting(validator, train[:3], ATTRS)
    trainer = Engine(lambda e, b: 0.0)
    handler.attach(trainer)
    with pytest.raises(ValueError, match="training batch case id 't03' is not in train_data"):
        trainer.run(DataLoader(train, batch_size=4), max_epochs=1)

    # a validator without thresholding: probabilities are not a binary mask
    validator = _evaluator(_val_records(), post=False)
    handler = SubgroupReweighting(validator, train, ATTRS)
    handler.attach(Engine(lambda e, b: 0.0))
    with pytest.raises(ValueError) as e:
        validator.run()
    assert "the prediction of validation case 'v0' is not a binary mask" in str(e.value)
    assert "AsDiscreted(keys='pred', threshold=0.5)" in str(e.value)
    assert NOT_BINARY_MSG.split("{")[0] in str(e.value)

    # a NaN score (custom score_fn) names the case
    validator = _evaluator(_val_records())
    handler = SubgroupReweighting(validator, train, ATTRS, score_fn=lambda p, y: float("nan"))
    handler.attach(Engine(lambda e, b: 0.0))
    with pytest.raises(ValueError, match="the score of validation case 'v0' is nan"):
        validator.run()
    # a validation case without an attribute
    validator = _evaluator([{k: v for k, v in r.items() if k != "age"} for r in _val_records()])
    SubgroupReweighting(validator, train, ATTRS).attach(Engine(lambda e, b: 0.0))
    with pytest.raises(ValueError, match="attribute 'age' is missing from validation case 'v0'"):
        validator.run()
    with pytest.raises(ValueError, match="attributes named more than once"):
        SubgroupReweighting(validator, train, ["age", "age"])
    with pytest.raises(ValueError, match=r"minsup must be a number in \(0, 1\]"):
        SubgroupReweighting(validator, train, ATTRS, minsup=0)


def test_normalize_and_fill_value_in_handler(caplog):
    train = _train_records()
    validator = _evaluator(_val_records())
    handler = SubgroupReweighting(validator, train, ATTRS, normalize=True)
    trainer = Engine(lambda e, b: 0.0)
    handler.attach(trainer)
    validator.run()
    want, _ = _expected_weights(train)
    mean = np.mean(list(want.values()))
    assert handler.weights == pytest.approx({c: v / mean for c, v in want.items()}, abs=1e-6)
    assert np.mean(list(handler.weights.values())) == pytest.approx(1.0)
    # every Dice equal: no divergence, so all-zero weights; normalize leaves 1.0 and warns
    handler = SubgroupReweighting(validator, train, ATTRS, normalize=True, score_fn=lambda p, y: 0.5)
    handler.attach(Engine(lambda e, b: 0.0))
    with caplog.at_level("WARNING", logger="fairmonai.handlers.SubgroupReweighting"):
        validator.run()
    assert set(handler.weights.values()) == {1.0}
    assert ALL_ZERO_MSG in caplog.text
    # a training value never seen in validation (density "c") gets fill_value
    train2 = train + [{"case_id": "z", "age": "ancient", "density": "c", "image": torch.zeros(1, 4, 4)}]
    handler = SubgroupReweighting(validator, train2, ATTRS, fill_value=0.3)
    handler.attach(Engine(lambda e, b: 0.0))
    validator.run()
    assert handler.weights["z"] == 0.3
    handler = SubgroupReweighting(validator, train2, ATTRS)
    handler.attach(Engine(lambda e, b: 0.0))
    validator.run()
    assert handler.weights["z"] == 0.0


def test_repeated_validation_cases_counted_once():
    recs = _val_records()
    validator = _evaluator(recs + recs[:2])  # as DistributedSampler pads
    handler = SubgroupReweighting(validator, _train_records(), ATTRS)
    handler.attach(Engine(lambda e, b: 0.0))
    validator.run()
    want, table = _expected_weights(_train_records())
    assert handler.weights == pytest.approx(want, abs=1e-6)


def test_state_dict_round_trip(tmp_path, caplog):
    train = _train_records()
    validator = _evaluator(_val_records())
    handler = SubgroupReweighting(validator, train, ATTRS)
    trainer = Engine(lambda e, b: 0.0)
    handler.attach(trainer)
    trainer.state.epoch = 4
    validator.run()
    sd = handler.state_dict()
    assert sd["epoch"] == 4 and sd["weights"] == handler.weights
    path = tmp_path / "ckpt.pt"
    torch.save({"reweighting": sd}, path)
    loaded = torch.load(path, weights_only=True)["reweighting"]  # as MONAI's CheckpointLoader reads it

    fresh = SubgroupReweighting(_evaluator(_val_records()), train, ATTRS)
    assert set(fresh.weights.values()) == {1.0} and fresh.weights_epoch is None
    t2 = Engine(lambda e, b: 0.0)
    fresh.attach(t2)
    Checkpoint.load_objects(to_load={"reweighting": fresh}, checkpoint={"reweighting": loaded})  # as on resume
    assert fresh.weights == handler.weights and fresh.weights_epoch == 4
    assert t2.state.sample_weights["epoch"] == 4
    # the resumed trainer's batches get the loaded weights
    got = {}
    t2.add_event_handler(Events.ITERATION_COMPLETED,
                         lambda e: got.update(zip(e.state.batch["case_id"], e.state.batch["sample_weight"].tolist())))
    t2.run(DataLoader(train, batch_size=5, shuffle=True), max_epochs=1)
    assert got == pytest.approx(handler.weights, abs=1e-7)

    # a changed datalist: missing cases keep the initial weight, unknown ones are dropped, with warnings
    other = SubgroupReweighting(validator, train[:5] + [dict(train[0], case_id="new")], ATTRS)
    with caplog.at_level("WARNING", logger="fairmonai.handlers.SubgroupReweighting"):
        other.load_state_dict(loaded)
    assert other.weights["new"] == 1.0 and other.weights["t01"] == handler.weights["t01"]
    assert "not in the loaded weights" in caplog.text and "not in train_data ignored" in caplog.text
    with pytest.raises(ValueError, match="expects a dict with 'weights' and 'epoch'"):
        other.load_state_dict({"weights": {}})


def _dist_worker(rank, world, init_file, out_dir):
    import json

    import torch.distributed as dist

    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        recs = _val_records()
        part = recs[rank::world] + ([recs[0]] if rank == 1 else [])  # uneven, one case padded twice
        validator = _evaluator(part)
        handler = SubgroupReweighting(validator, _train_records(), ATTRS, output_dir=out_dir, save_rank=1)
        handler.attach(Engine(lambda e, b: 0.0))
        validator.run()
        with open(os.path.join(out_dir, f"weights_rank{rank}.json"), "w") as f:
            json.dump(handler.weights, f)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process(tmp_path):
    import json
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_dist_worker, args=(2, os.path.join(tmp, "init"), str(tmp_path)), nprocs=2, join=True,
                           start_method="fork")
    want, table = _expected_weights(_train_records())
    for rank in (0, 1):  # every rank trains with the same weights
        got = json.loads((tmp_path / f"weights_rank{rank}.json").read_text())
        assert got == pytest.approx(want, abs=1e-6)
    t = pd.read_csv(tmp_path / "subgroups" / "epoch_0000.csv", keep_default_na=False)  # written by rank 1
    assert t["subgroup"].tolist() == table["subgroup"].tolist() and t["count"].sum() == table["count"].sum()


def test_history_is_appended_and_trimmed_once_after_a_resume(tmp_path):
    """Each epoch appends its rows; a new process (a resumed run) first drops rows of epochs it redoes."""
    train = _train_records()
    table = pd.DataFrame({"itemset": [(("age", "old"),), (("density", "a"),)], "subgroup": ["age=old", "density=a"],
                          "length": [1, 1], "count": [2, 4], "support": [0.25, 0.5], "mean": [0.5, 0.6],
                          "divergence": [-0.1, 0.05]})
    w = np.zeros(len(train))
    first = SubgroupReweighting(_evaluator(_val_records()), train, ATTRS, output_dir=tmp_path)
    for epoch in (1, 2, 3):
        first._write(epoch, table, w)
    path = tmp_path / "subgroups" / "divergence_history.csv"
    assert pd.read_csv(path)["epoch"].tolist() == [1, 1, 2, 2, 3, 3]
    resumed = SubgroupReweighting(_evaluator(_val_records()), train, ATTRS, output_dir=tmp_path)
    resumed._write(3, table.assign(divergence=[-0.2, 0.1]), w)  # epoch 3 validated again after a resume
    resumed._write(4, table, w)
    hist = pd.read_csv(path)
    assert hist["epoch"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert hist.loc[hist["epoch"] == 3, "divergence"].tolist() == [-0.2, 0.1]
