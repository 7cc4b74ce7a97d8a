"""``python -m fairmonai.experiments``: one real end-to-end run on the OCT bundle at its smoke settings,
and the command's errors.

The real run copies the OCT bundle's configs into a temporary bundle that carries one tiny experiment
file (a 2-layer ViT, ``smoke.json``: 60 eyes, 32^3, 1 epoch, no workers), runs it through the command's ``main``
(two ``monai.bundle`` subprocesses: train, evaluate), and checks the printed and written table
against the run's own files: the AUC against scikit-learn's on the predictions, ``mi_knn`` against
the last quarter of the penalty curve read with the csv module.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fairmonai.experiments.__main__ import main, parse_set
from fairmonai.errors import InputError

REPO = Path(__file__).resolve().parents[2]
R = "eval/report_{split}/report.json"
TINY = {
    "description": "Tiny: a small ViT at the smoke settings.\nFor the CLI test.",
    "configurations": {"vit": {"configs": ["train.json", "net_vit.json", "smoke.json"]}},
    "seeds": [0],
    "overrides": {"dataset_dir": "{out}/data/seed{seed}", "penalty_log_every": 1},
    "columns": {"AUC": {"json": R, "key": "attributes.race.metrics.auc.overall"},
                "EOdd": {"json": R, "key": "attributes.race.disparities.eodd.value"},
                "mi_knn": {"csv": "eval/penalty_curve.csv", "column": "mi_knn", "reduce": "mean", "from_fraction": 0.75}},
    "transpose": True,
}


@pytest.fixture
def oct_bundle(tmp_path) -> Path:
    bundle = tmp_path / "oct"
    shutil.copytree(REPO / "bundles" / "oct_glaucoma_fami" / "configs", bundle / "configs")
    (bundle / "experiments").mkdir()
    (bundle / "experiments" / "tiny.json").write_text(json.dumps(TINY))
    return bundle


def test_run_tiny_oct_experiment_end_to_end(oct_bundle, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # the bundle path is an argument: nothing is found from the current directory
    assert main(["run", str(oct_bundle), "tiny", "--out", str(out), "--set", "n_bootstrap=10"]) == 0
    printed = capsys.readouterr().out
    run_dir = out / "vit_seed0"
    pred = pd.read_csv(run_dir / "eval" / "predictions_test.csv")
    auc = roc_auc_score(pred["label"], pred["score"])
    with open(run_dir / "eval" / "penalty_curve.csv") as f:
        mi = [float(r["mi_knn"]) for r in csv.DictReader(f)]
    mi_last_quarter = statistics.mean(mi[3 * len(mi) // 4:])
    rows = pd.read_csv(out / "tiny.csv")
    assert rows[["configuration", "seed", "split"]].values.tolist() == [["vit", 0, "test"]]
    assert rows["AUC"].item() == pytest.approx(auc, abs=1e-12)
    assert rows["mi_knn"].item() == pytest.approx(mi_last_quarter, abs=1e-12)
    # the printed table: one column per configuration, one row per tabulated column
    for column in ("AUC", "mi_knn"):
        assert f"| {column.ljust(6)} | {rows[column].item():.3f} |" in printed
    assert printed.rstrip().endswith(f"tables: {out / 'tiny.md'}, {out / 'tiny.csv'}")
    state = json.loads((run_dir / "unit.json").read_text())
    assert state["spec"]["configs"] == ["train.json", "net_vit.json", "smoke.json"]
    assert state["spec"]["overrides"]["n_bootstrap"] == "10" and state["spec"]["overrides"]["seed"] == "0"
    assert state["spec"]["overrides"]["dataset_dir"] == str((out / "data" / "seed0").resolve())
    assert any((out / "data" / "seed0").iterdir())  # the cohort is drawn in the experiment's data folder


def test_list_and_errors(oct_bundle, tmp_path, capsys):
    assert main(["list", str(oct_bundle)]) == 0
    assert capsys.readouterr().out == "tiny: Tiny: a small ViT at the smoke settings.\nFor the CLI test.\n"
    assert main(["run", str(tmp_path / "nope"), "tiny", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (f"error: bundle folder {tmp_path / 'nope'} does not exist; pass the bundle's "
                                       "folder with the bundle argument\n")
    assert main(["run", str(oct_bundle), "table", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (f"error: {oct_bundle}/experiments/table.json: no such experiment file; the "
                                       "bundle's experiments: ['tiny']\n")
    assert main(["run", str(oct_bundle), "tiny", "--out", str(tmp_path / "o"), "--set", "seed=3"]) == 2
    assert capsys.readouterr().err == "error: --set seed=...: 'seed' is set by the experiment's seeds (use --seeds)\n"
    assert not (tmp_path / "o").exists()  # nothing ran


def test_parse_set():
    assert parse_set(["epochs=3", "roi_size=[48,48,32]", "manifest=/data/m.csv", "note=a=b", "amp=false"]) == {
        "epochs": 3, "roi_size": [48, 48, 32], "manifest": "/data/m.csv", "note": "a=b", "amp": False}
    with pytest.raises(InputError, match="^--set expects KEY=VALUE, got 'epochs3'$"):
        parse_set(["epochs3"])
