"""The experiment file format (grid.py): validation errors and the runs a grid expands to.

Expected runs are listed by hand; error messages are asserted whole.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from fairmonai.experiments.grid import ExperimentFileError, expand, list_experiments, load_experiment, parse_experiment
from fairmonai.experiments.runs import BundleRun

REPO = Path(__file__).resolve().parents[2]
F = Path("/b/experiments/x.json")
R = "eval/report_{split}/report.json"

MINIMAL = {
    "description": "A small grid.",
    "configurations": {"base": {"configs": ["train.json"]},
                       "fms": {"configs": ["train.json", "method_fms.json"], "overrides": {"mu": 2}}},
    "seeds": [0, 1],
    "columns": {"TS": {"json": R, "key": "total_score"}},
}


def _with(**changes) -> dict:
    d = copy.deepcopy(MINIMAL)
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


BAD = [
    (_with(seed=[0]), "unknown key 'seed'; expected one of ['description', 'configurations', "
                      "'default_configurations', 'seeds', 'folds', 'grid', 'overrides', 'splits', 'select', "
                      "'columns', 'transpose', 'plots', 'executor', 'seconds_per_run', 'fold_report', "
                      "'notes', 'outputs']"),
    (_with(seeds=None), "missing key 'seeds'"),
    (_with(description=" "), "description: expected a non-empty text"),
    (_with(configurations={}), "configurations: expected an object with at least one configuration"),
    (_with(configurations={"a b": {"configs": ["train.json"]}}),
     "configurations.a b: a configuration name may hold only letters, digits, '.', '_' and '-'"),
    (_with(configurations={"a": {"config": ["train.json"]}}),
     "configurations.a: unknown key 'config'; expected one of ['configs', 'overrides']"),
    (_with(configurations={"a": {"configs": []}}), "configurations.a.configs: expected a non-empty list of names, got []"),
    (_with(configurations={"a": {"configs": ["train.json"], "overrides": {"seed": 1}}}),
     "configurations.a.overrides: 'seed' is set by 'seeds'; remove it here"),
    (_with(default_configurations=["fami"]),
     "default_configurations: 'fami' is not one of the configurations ['base', 'fms']"),
    (_with(seeds=[0, 0]), "seeds: repeated value in [0, 0]"),
    (_with(seeds=["0"]), "seeds: expected a non-empty list of integers, got ['0']"),
    (_with(folds=[]), "folds: expected a non-empty list of integers, got []"),
    (_with(overrides={"fold": 1}), "overrides: 'fold' is set by 'folds'; remove it here"),
    (_with(grid={"mu": 1}), "grid.mu: expected a non-empty list of values, got 1"),
    (_with(splits="test"), "splits: expected a non-empty list of names, got 'test'"),
    (_with(columns={}), "columns: expected an object with at least one column"),
    (_with(columns={"TS": {"json": R}}), "columns.TS: missing key 'key'"),
    (_with(columns={"TS": {"yaml": R}}), "columns.TS: expected an object with a 'json' or a 'csv' file"),
    (_with(columns={"d": {"csv": "s.csv", "column": "dice", "reduce": "median"}}),
     "columns.d.reduce: unknown reduction 'median'; expected one of ['mean', 'sum', 'min', 'max', 'last', 'count']"),
    (_with(columns={"d": {"csv": "s.csv", "column": "dice", "reduce": "mean", "where": {"age": 61}}}),
     "columns.d.where: expected a non-empty object of column: text value, got {'age': 61}"),
    (_with(columns={"d": {"csv": "s.csv", "column": "dice", "reduce": "mean", "from_fraction": 1}}),
     "columns.d.from_fraction: expected a number in [0, 1), got 1"),
    (_with(columns={"d": {"csv": "s.csv", "column": "dice", "reduce": "mean", "filter": {}}}),
     "columns.d: unknown key 'filter'; expected one of ['csv', 'column', 'reduce', 'where', 'unless', "
     "'from_fraction']"),
    (_with(select={"column": "TS", "split": "test", "goal": "max", "then": []}),
     "select: a selection chooses among grid points; the file has no 'grid'"),
    (_with(grid={"mu": [1, 2]}, splits=["val"], select={"column": "DSC", "split": "val", "goal": "max", "then": []}),
     "select.column: 'DSC' is not one of the columns ['TS']"),
    (_with(grid={"mu": [1, 2]}, splits=["val"], select={"column": "TS", "split": "train", "goal": "max", "then": []}),
     "select.split: 'train' is not one of the evaluated splits ['val']"),
    (_with(grid={"mu": [1, 2]}, splits=["val"], select={"column": "TS", "split": "val", "goal": "best", "then": []}),
     "select.goal: expected 'max' or 'min', got 'best'"),
    (_with(grid={"mu": [1, 2]}, splits=["val", "test"],
           select={"column": "TS", "split": "val", "goal": "max", "then": ["test"]}),
     "select.then: 'test' is also in 'splits', so every grid point would be scored on it; list it only in 'then'"),
    (_with(grid={"mu": [1, 2]}, splits=["val"], select={"column": "TS", "split": "val", "goal": "max"}),
     "select: missing key 'then'"),
    (_with(transpose="yes"), "transpose: expected true or false, got 'yes'"),
    (_with(plots=[{"kind": "bars", "file": "s.csv", "base": "base", "method": "fms", "out": "p"}]),
     "plots[0].kind: unknown plot kind 'bars'; expected one of ['dice_heatmap_comparison', 'vae_representation']"),
    (_with(plots=[{"kind": "vae_representation", "out": "p", "base": "base"}]),
     "plots[0]: unknown key 'base'; expected one of ['kind', 'out', 'min_images']"),
    (_with(plots=[{"kind": "dice_heatmap_comparison", "file": "s.csv", "base": "base", "out": "p"}]),
     "plots[0]: missing key 'method'"),
    (_with(plots=[{"kind": "dice_heatmap_comparison", "file": "s.csv", "base": "base", "method": "fairmedseg",
                   "out": "p"}]), "plots[0].method: 'fairmedseg' is not one of the configurations ['base', 'fms']"),
    (_with(executor={"kind": "slurm"}), "executor.kind: unknown executor 'slurm'; expected one of ['local', 'ray']"),
    (_with(executor={"workers": 0}), "executor.workers: expected an integer of at least 1, got 0"),
    (_with(executor={"gpus": 1}),
     "executor: unknown key 'gpus'; expected one of ['kind', 'workers', 'cpus_per_run', 'gpus_per_run']"),
    (_with(executor={"gpus_per_run": -1}), "executor.gpus_per_run: expected a number of at least 0, got -1"),
    (_with(executor={"cpus_per_run": 0}), "executor.cpus_per_run: expected a number above 0, got 0"),
    (_with(seconds_per_run="10 min"), "seconds_per_run: expected a number above 0, got '10 min'"),
]


@pytest.mark.parametrize("data, message", BAD)
def test_format_errors_name_the_file_and_the_key(data, message):
    with pytest.raises(ExperimentFileError) as e:
        parse_experiment(data, F)
    assert str(e.value) == f"{F}: {message}"


def test_bundle_files_missing_json_and_config(tmp_path):
    bundle = tmp_path / "b"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "train.json").write_text("{}")
    (bundle / "experiments").mkdir()
    (bundle / "experiments" / "ok.json").write_text(json.dumps(_with(configurations={"a": {"configs": ["train.json"]}})))
    with pytest.raises(ExperimentFileError) as e:
        load_experiment(bundle, "table")
    assert str(e.value) == f"{bundle}/experiments/table.json: no such experiment file; the bundle's experiments: ['ok']"
    (bundle / "experiments" / "broken.json").write_text("{")
    with pytest.raises(ExperimentFileError, match=re.escape(f"{bundle}/experiments/broken.json: not valid JSON: ")):
        load_experiment(bundle, "broken")
    (bundle / "experiments" / "broken.json").write_text(json.dumps(MINIMAL))
    with pytest.raises(ExperimentFileError) as e:
        load_experiment(bundle, "broken")  # method_fms.json is not in the bundle
    assert str(e.value) == (f"{bundle}/experiments/broken.json: configurations.fms.configs: no file "
                            f"'method_fms.json' in {bundle}/configs")
    (bundle / "experiments" / "broken.json").unlink()
    assert list_experiments(bundle) == {"ok": "A small grid."}


def test_grid_expands_to_the_runs_listed_by_hand(tmp_path):
    exp = parse_experiment(_with(
        configurations={"base": {"configs": ["train.json"], "overrides": {"mu": 1}},
                        "fms": {"configs": ["train.json", "method_fms.json"], "overrides": {"epochs": 3}}},
        grid={"alpha": [0.2, 0.5], "minsup": [0.01]}, folds=[1], overrides={
            "epochs": 2, "dataset_dir": "{out}/data/seed{seed}", "tag": ["f{fold}", {"k": "{seed}"}]}), F)
    out = str(tmp_path.resolve())

    def unit(name, configs, seed, alpha, **over):
        base = {"epochs": 2, "dataset_dir": f"{out}/data/seed{seed}", "tag": ["f1", {"k": str(seed)}]}
        return BundleRun(name, configs, {**base, **over, "alpha": alpha, "minsup": 0.01, "seed": seed, "fold": 1},
                         ("test",))

    runs = expand(exp, tmp_path, seeds=[3, 4], extra={"lr": 0.1, "epochs": 5})
    assert [r.unit for r in runs] == [
        unit("base_alpha0.2_minsup0.01_seed3_fold1", ("train.json",), 3, 0.2, mu=1, lr=0.1, epochs=5),
        unit("base_alpha0.5_minsup0.01_seed3_fold1", ("train.json",), 3, 0.5, mu=1, lr=0.1, epochs=5),
        unit("fms_alpha0.2_minsup0.01_seed3_fold1", ("train.json", "method_fms.json"), 3, 0.2, lr=0.1, epochs=5),
        unit("fms_alpha0.5_minsup0.01_seed3_fold1", ("train.json", "method_fms.json"), 3, 0.5, lr=0.1, epochs=5),
        unit("base_alpha0.2_minsup0.01_seed4_fold1", ("train.json",), 4, 0.2, mu=1, lr=0.1, epochs=5),
        unit("base_alpha0.5_minsup0.01_seed4_fold1", ("train.json",), 4, 0.5, mu=1, lr=0.1, epochs=5),
        unit("fms_alpha0.2_minsup0.01_seed4_fold1", ("train.json", "method_fms.json"), 4, 0.2, lr=0.1, epochs=5),
        unit("fms_alpha0.5_minsup0.01_seed4_fold1", ("train.json", "method_fms.json"), 4, 0.5, lr=0.1, epochs=5),
    ]
    assert [(r.configuration, r.point, r.seed, r.fold) for r in runs[:2]] == [
        ("base", {"alpha": 0.2, "minsup": 0.01}, 3, 1), ("base", {"alpha": 0.5, "minsup": 0.01}, 3, 1)]
    # the configuration's own overrides win over the shared ones (no --set): epochs 3 for fms
    assert expand(exp, tmp_path, configurations=["fms"])[0].unit.overrides["epochs"] == 3
    assert [r.unit.name for r in expand(exp, tmp_path, configurations=["fms"])] == [
        "fms_alpha0.2_minsup0.01_seed0_fold1", "fms_alpha0.5_minsup0.01_seed0_fold1",
        "fms_alpha0.2_minsup0.01_seed1_fold1", "fms_alpha0.5_minsup0.01_seed1_fold1"]


def test_default_configurations_and_folder_names(tmp_path):
    exp = parse_experiment(_with(default_configurations=["fms"], grid={"synthetic_cohort#p": ["a=0.5"]}), F)
    assert [r.unit.name for r in expand(exp, tmp_path)] == ["fms_synthetic_cohort-pa-0.5_seed0",
                                                            "fms_synthetic_cohort-pa-0.5_seed1"]
    assert expand(exp, tmp_path, configurations=["base"])[0].unit.configs == ("train.json",)


@pytest.mark.parametrize("kwargs, message", [
    ({"configurations": ["dro"]}, f"{F}: no configuration 'dro'; expected one of ['base', 'fms']"),
    ({"extra": {"seed": 3}}, "--set seed=...: 'seed' is set by the experiment's seeds (use --seeds)"),
    ({"extra": {"fold": 3}}, "--set fold=...: 'fold' is set by the experiment's folds"),
    ({"extra": {"mu": 3}}, f"--set mu=...: 'mu' is a grid key of {F}; it takes the values [1, 2]"),
])
def test_expand_errors(tmp_path, kwargs, message):
    exp = parse_experiment(_with(grid={"mu": [1, 2]}), F)
    with pytest.raises(ExperimentFileError) as e:
        expand(exp, tmp_path, **kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("bundle, names", [
    ("oct_glaucoma_fami", ["demo", "fami_seeds", "table2"]),
    ("mama_mia_fairmedseg", ["hard_subgroup", "sweep", "table1"]),
])
def test_the_bundles_experiment_files_are_valid(bundle, names):
    found = list_experiments(REPO / "bundles" / bundle)  # validates each, its config files included
    assert sorted(found) == names


def test_the_sweep_file_is_the_papers_grid(tmp_path):
    exp = load_experiment(REPO / "bundles" / "mama_mia_fairmedseg", "sweep")
    runs = expand(exp, tmp_path)
    assert [(r.unit.overrides["div_alpha"], r.unit.overrides["minsup"]) for r in runs] == [
        (0.2, 0.001), (0.2, 0.005), (0.2, 0.01), (0.5, 0.001), (0.5, 0.005), (0.5, 0.01),
        (0.8, 0.001), (0.8, 0.005), (0.8, 0.01)]
    assert all(r.unit.eval_splits == ("val",) for r in runs)
    assert exp.select is not None and (exp.select.split, exp.select.column, exp.select.then) == ("val", "TS", ("test",))
