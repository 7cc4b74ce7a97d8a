"""The OCT bundle's Table 2 grid (experiments/table2.json) end to end at the smallest size that runs.

All 13 configurations x 2 folds, each fold model trained for exactly 1 iteration at the CPU grid's
size (cpu_grid.json: 32^3, small DenseNet and ViT) on a 120-case synthetic cohort, and evaluated on
val and test by real ``monai.bundle`` commands: fold 0 through the ``local`` executor (2 workers),
then the whole grid in the same output folder through a local Ray instance (2 CPUs, 2 actors), where
the runner finds the 13 fold-0 units finished and runs the 13 fold-1 ones, then writes the grid's table,
its timing and the fold report (Table 2, Figures 2-3). Both executors start the bundle commands from a
fork server (the runner's, or each Ray actor's: 2-3 s a command instead of about 10 s).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fairmonai.experiments.grid import load_experiment
from fairmonai.experiments.runner import run_experiment

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "oct_glaucoma_fami"
CONFIGURATIONS = ["dn", "vit", "fairbatch_dn", "fairbatch_vit", "fin_dn", "fin_vit", "fairvit", "mine_dn",
                  "mine_vit", "mige_dn", "mige_vit", "fami_dn", "fami_vit"]
#: The smallest settings that run every configuration. 120 cases: a test part of 36 and a training part of
#: 84, of which folds 0 and 1 (of 10, made here: table2.json sets manifest_folds False; stratified on label x
#: race) each hold out 9 with both classes in each race (100 cases left a race without one class). One
#: iteration, logged on the penalty curve (every iteration); its k-NN estimate needs at least 20 buffered
#: cases (PenaltyCurveLogger's min_samples), hence batch 24.
SETTINGS = {"epochs": 1, "train#trainer#epoch_length": 1, "cohort_size": 120, "batch_size": 24,
            "n_bootstrap": 10, "penalty_log_every": 1}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """``(out, first result, second result)``: fold 0 through local, then the grid (fold 1 left) through Ray."""
    ray = pytest.importorskip("ray")
    out = tmp_path_factory.mktemp("table2")
    exp = load_experiment(BUNDLE, "table2")
    assert list(exp.configurations) == CONFIGURATIONS
    common = dict(extra=SETTINGS, overlays=["cpu_grid.json"], workers=2, echo=False)
    # the fold report needs the folds compared; the first call only trains fold 0
    first = run_experiment(BUNDLE, dataclasses.replace(exp, fold_report=None), out, folds=[0], executor="local",
                           **common)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        second = run_experiment(BUNDLE, exp, out, folds=[0, 1], executor="ray", **common)
    finally:
        ray.shutdown()
    return out, first, second


def _units(fold: int) -> list[str]:
    return [f"{c}_seed0_fold{fold}" for c in CONFIGURATIONS]


def test_every_unit_trained_one_iteration_and_was_scored_on_both_splits(grid):
    out, first, second = grid
    assert first.failed == {} and second.failed == {}
    runs = sorted(p.parent.name for p in out.glob("*/unit.json"))
    assert runs == sorted(_units(0) + _units(1))
    for name in runs:
        d = out / name
        assert json.loads((d / "unit.json").read_text())["trained"] is True, name
        for split in ("val", "test"):
            assert (d / "eval" / f"predictions_{split}.csv").is_file(), (name, split)
        # exactly one iteration: one training-loss line, and one row on the penalty curve (logged every iteration)
        log = (d / "logs" / "train.log").read_text()
        iters = re.findall(r"Epoch: (\d+)/(\d+), Iter: (\d+)/(\d+) -- train_loss", log)
        assert iters == [("1", "1", "1", "1")], (name, iters)
        curve = pd.read_csv(d / "eval" / "penalty_curve.csv")
        assert curve["iteration"].tolist() == [1], name


def test_each_validation_part_has_both_classes_and_every_race(grid):
    out, _, _ = grid
    for name in _units(0) + _units(1):
        val = pd.read_csv(out / name / "eval" / "predictions_val.csv")
        assert set(val["label"]) == {0, 1}, name
        assert set(val["race"]) == {"Asian", "Black", "White"}, name
        assert all(set(g["label"]) == {0, 1} for _, g in val.groupby("race")), name


def test_the_table_has_a_row_per_configuration_fold_and_split(grid):
    out, _, _ = grid
    table = pd.read_csv(out / "table2.csv")
    assert len(table) == 13 * 2 * 2
    assert sorted(zip(table["configuration"], table["fold"], table["split"])) == sorted(
        (c, f, s) for c in CONFIGURATIONS for f in (0, 1) for s in ("val", "test"))
    # the auc column is the bundle's report of the run's own predictions
    for row in table.itertuples():
        pred = pd.read_csv(Path(row.run_dir) / "eval" / f"predictions_{row.split}.csv")
        assert row.auc == pytest.approx(roc_auc_score(pred["label"], pred["score"]), abs=1e-9), row.run_dir


def test_the_second_call_ran_only_fold_1(grid):
    out, first, second = grid
    assert first.timing["executor"] == "local" and first.timing["workers"] == 2
    assert second.timing["executor"] == "ray" and second.timing["workers"] == 2
    assert [(u["name"], u["status"]) for u in first.timing["units"]] == [(n, "done") for n in _units(0)]
    timing = json.loads((out / "table2_timing.json").read_text())
    assert timing == json.loads(json.dumps(second.timing))
    status = {u["name"]: u["status"] for u in timing["units"]}
    assert sorted(status) == sorted(_units(0) + _units(1))
    assert sorted(n for n, s in status.items() if s == "done") == sorted(_units(1))
    assert sorted(n for n, s in status.items() if s == "finished before") == sorted(_units(0))


def test_the_fold_report_has_table2_and_both_figures(grid):
    out, _, _ = grid
    report = out / "fold_report"
    table = pd.read_csv(report / "table.csv")
    assert sorted(table["configuration"]) == sorted(CONFIGURATIONS)
    for conf in CONFIGURATIONS:
        row = table.set_index("configuration").loc[conf]
        preds = {k: pd.read_csv(out / f"{conf}_seed0_fold{k}" / "eval" / "predictions_test.csv") for k in (0, 1)}
        both = preds[0].merge(preds[1], on="case_id", suffixes=("_0", "_1"))
        assert len(both) == len(preds[0]) == len(preds[1])
        # Test column: the AUC of the mean of the two fold models' probabilities per test case
        mean_auc = roc_auc_score(both["label_0"], (both["score_0"] + both["score_1"]) / 2)
        assert row["auc_test"] == pytest.approx(mean_auc, abs=1e-9), conf
        # Train column: the mean over folds of each fold model's AUC on its held-out fold
        val_aucs = [roc_auc_score(v["label"], v["score"]) for v in
                    (pd.read_csv(out / f"{conf}_seed0_fold{k}" / "eval" / "predictions_val.csv") for k in (0, 1))]
        assert row["auc_train_mean"] == pytest.approx(np.mean(val_aucs), abs=1e-9), conf
        assert row["auc_train_n"] == 2, conf
    for name in ("figure2.png", "figure3.png"):
        data = (report / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name
