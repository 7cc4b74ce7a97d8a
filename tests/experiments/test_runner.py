"""The generic runner (runner.py) with a fake unit runner: no training happens.

The fake stands in for ``run_bundle_unit``: it records each unit and writes the report of each asked
split into the unit's folder, with numbers that depend on the unit's settings, so the runner reads
its columns from files as it does after real runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fairmonai.experiments.columns import ColumnError
from fairmonai.experiments.grid import ExperimentFileError, parse_experiment
from fairmonai.experiments.runner import markdown_table, run_experiment
from fairmonai.experiments.runs import BundleRun

R = "eval/report_{split}/report.json"
COLUMNS = {"TS": {"json": R, "key": "total_score"}, "DSC": {"json": R, "key": "mean_dsc"}}


class FakeUnits:
    """Records each call; writes ``report(run, split)`` as the unit's report of each split."""

    def __init__(self, report):
        self.report = report
        self.calls: list[BundleRun] = []

    def __call__(self, bundle, out_dir, run, *, echo=True, env=None):
        self.calls.append(run)
        for split in run.eval_splits:
            f = Path(out_dir) / run.name / "eval" / f"report_{split}" / "report.json"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(self.report(run, split)))
        return {}


# validation TS is highest at (0.5, 0.005) for seed 0 and at (0.8, 0.01) for seed 1;
# test TS would be highest at (0.8, 0.01) for seed 0
VAL_TS = {(0.2, 0.005): 0.5, (0.2, 0.01): 0.5, (0.5, 0.005): 0.7, (0.5, 0.01): 0.5, (0.8, 0.005): 0.5,
          (0.8, 0.01): 0.6}
TEST_TS = {k: 0.4 for k in VAL_TS} | {(0.5, 0.005): 0.55, (0.8, 0.01): 0.9}


def _sweep_report(run, split):
    key = (run.overrides["div_alpha"], run.overrides["minsup"])
    seed = run.overrides["seed"]
    ts = (VAL_TS[key] + (0.2 * (key == (0.8, 0.01)) if seed == 1 else 0.0)) if split == "val" else TEST_TS[key]
    return {"total_score": ts, "mean_dsc": 0.6 if split == "val" else 0.3}


SWEEP = {
    "description": "Sweep of two. Second sentence.\nSecond line.",
    "configurations": {"unet": {"configs": ["train.json", "method_fairmedseg.json"]}},
    "seeds": [0, 1],
    "grid": {"div_alpha": [0.2, 0.5, 0.8], "minsup": [0.005, 0.01]},
    "splits": ["val"],
    "select": {"column": "TS", "split": "val", "goal": "max", "then": ["test"]},
    "columns": COLUMNS,
}


def test_selection_picks_the_validation_best_and_scores_test_only_for_it(tmp_path, monkeypatch):
    fake = FakeUnits(_sweep_report)
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", fake)
    exp = parse_experiment(SWEEP, "sweep.json")
    res = run_experiment(tmp_path / "b", exp, tmp_path, echo=False)

    # 6 grid points x 2 seeds on val, then the chosen unit of each seed once more, with test added
    assert len(fake.calls) == 14
    assert all(r.eval_splits == ("val",) for r in fake.calls[:12])
    chosen0, chosen1 = fake.calls[12:]
    assert chosen0.name == "unet_div_alpha0.5_minsup0.005_seed0" and chosen0.eval_splits == ("val", "test")
    assert chosen1.name == "unet_div_alpha0.8_minsup0.01_seed1" and chosen1.eval_splits == ("val", "test")
    assert chosen0 == BundleRun(fake.calls[2].name, fake.calls[2].configs, fake.calls[2].overrides, ("val", "test"))
    tested = sorted(p.parent.parent.parent.name for p in tmp_path.glob("*/eval/report_test/report.json"))
    assert tested == ["unet_div_alpha0.5_minsup0.005_seed0", "unet_div_alpha0.8_minsup0.01_seed1"]

    assert res.choices == [
        {"configuration": "unet", "seed": 0, "chosen": {"div_alpha": 0.5, "minsup": 0.005},
         "selected_on": "max TS on the val split", "val": {"TS": 0.7, "DSC": 0.6}, "test": {"TS": 0.55, "DSC": 0.3}},
        {"configuration": "unet", "seed": 1, "chosen": {"div_alpha": 0.8, "minsup": 0.01},
         "selected_on": "max TS on the val split", "val": {"TS": 0.8, "DSC": 0.6}, "test": {"TS": 0.9, "DSC": 0.3}},
    ]
    assert json.loads((tmp_path / "sweep_choice.json").read_text()) == res.choices
    rows = pd.read_csv(tmp_path / "sweep.csv")
    assert list(rows.columns) == ["configuration", "div_alpha", "minsup", "seed", "split", "selected", "TS", "DSC",
                                  "run_dir"]
    assert len(rows) == 14 and rows["selected"].sum() == 4  # the chosen val rows and their test rows
    test_rows = rows[rows.split == "test"]
    assert test_rows[["div_alpha", "minsup", "seed", "TS"]].values.tolist() == [[0.5, 0.005, 0, 0.55],
                                                                                [0.8, 0.01, 1, 0.9]]
    assert "Chosen for unet, seed 0: div_alpha 0.5, minsup 0.005 (max TS on the val split)" in res.markdown
    assert res.markdown.startswith("# sweep: Sweep of two.\n")


def test_selection_ties_go_to_the_first_point_and_min_goal(tmp_path, monkeypatch):
    ts = {(0.2, 0.005): 0.3, (0.2, 0.01): 0.8, (0.5, 0.005): 0.8, (0.5, 0.01): 0.1, (0.8, 0.005): 0.8,
          (0.8, 0.01): 0.1}
    fake = FakeUnits(lambda run, split: {"total_score": ts[(run.overrides["div_alpha"], run.overrides["minsup"])],
                                         "mean_dsc": None})
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", fake)
    exp = parse_experiment({**SWEEP, "seeds": [0]}, "sweep.json")
    assert run_experiment(tmp_path, exp, tmp_path / "max", echo=False).choices[0]["chosen"] == {
        "div_alpha": 0.2, "minsup": 0.01}
    exp = parse_experiment({**SWEEP, "seeds": [0], "select": {**SWEEP["select"], "goal": "min"}}, "sweep.json")
    assert run_experiment(tmp_path, exp, tmp_path / "min", echo=False).choices[0]["chosen"] == {
        "div_alpha": 0.5, "minsup": 0.01}
    # nothing to choose by: every value missing
    exp = parse_experiment({**SWEEP, "seeds": [0], "select": {**SWEEP["select"], "column": "DSC"}}, "sweep.json")
    with pytest.raises(ExperimentFileError) as e:
        run_experiment(tmp_path, exp, tmp_path / "none", echo=False)
    assert str(e.value) == "sweep.json: select: no run of 'unet' seed 0 has a value of 'DSC' on 'val' to choose by"


TS_OF = {"base": [0.1, 0.2, 0.6], "fms": [0.3, 0.3, 0.3]}
TABLE = {
    "description": "Table.",
    "configurations": {"base": {"configs": ["train.json"]}, "fms": {"configs": ["train.json", "m.json"]}},
    "seeds": [0, 1, 2],
    "overrides": {"dataset_dir": "{out}/data/seed{seed}"},
    "columns": {**COLUMNS, "n": {"json": R, "key": "n_cases"}},
}


def _table_report(run, split):
    seed = run.overrides["seed"]
    method = run.name.split("_")[0]
    return {"total_score": TS_OF[method][seed], "mean_dsc": None if method == "fms" else 0.1 * seed, "n_cases": 4}


def test_table_rows_and_mean_sd_over_seeds(tmp_path, monkeypatch):
    fake = FakeUnits(_table_report)
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", fake)
    res = run_experiment(tmp_path, parse_experiment(TABLE, "t.json"), tmp_path, echo=False)
    assert [r.name for r in fake.calls] == ["base_seed0", "fms_seed0", "base_seed1", "fms_seed1", "base_seed2",
                                            "fms_seed2"]
    assert {r.overrides["dataset_dir"] for r in fake.calls if r.overrides["seed"] == 1} == {
        f"{tmp_path.resolve()}/data/seed1"}
    summary = pd.read_csv(tmp_path / "t_summary.csv")
    base = summary[summary.configuration == "base"].iloc[0]
    # by hand: TS 0.1, 0.2, 0.6 -> mean 0.3, sd sqrt(((-.2)^2 + (-.1)^2 + .3^2) / 2) = sqrt(0.07)
    assert base.TS_mean == pytest.approx(0.3) and base.TS_sd == pytest.approx(0.07 ** 0.5) and base.TS_n == 3
    fms = summary[summary.configuration == "fms"].iloc[0]
    assert fms.TS_mean == pytest.approx(0.3) and fms.TS_sd == pytest.approx(0.0) and fms.DSC_n == 0
    md = res.markdown.splitlines()
    assert md[4:8] == markdown_table(["configuration", "split", "TS", "DSC", "n"], [
        ["base", "test", "0.300 +- 0.265", "0.100 +- 0.100", "4.000 +- 0.000"],
        ["fms", "test", "0.300 +- 0.000", "n/a", "4.000 +- 0.000"]])
    assert "| fms_seed2 " not in res.markdown and "| base          | 2    | test  | 0.6000 | 0.2000 | 4 |" in res.markdown


def test_transposed_table_with_one_seed(tmp_path, monkeypatch):
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", FakeUnits(_table_report))
    exp = parse_experiment({**TABLE, "seeds": [2], "transpose": True}, "demo.json")
    md = run_experiment(tmp_path, exp, tmp_path, echo=False).markdown.splitlines()
    assert md[2] == "2 run(s), seeds [2]; mean +- sd over seeds where there are several."
    assert md[4:9] == ["|     | base  | fms   |", "|-----|-------|-------|", "| TS  | 0.600 | 0.300 |",
                       "| DSC | 0.200 | n/a   |", "| n   | 4     | 4     |"]  # one integer value stays an integer


def test_plots_pool_the_runs_of_each_configuration(tmp_path, monkeypatch):
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", FakeUnits(_table_report))
    calls = []
    kinds = []
    monkeypatch.setattr("fairmonai.reports.dice_heatmap_comparison",
                        lambda b, m, o: kinds.append("dice_heatmap_comparison") or calls.append((b, m, o)))
    plot = {"kind": "dice_heatmap_comparison", "file": "eval/scores_test.csv", "base": "base", "method": "fms",
            "out": "heatmaps/unet"}
    exp = parse_experiment({**TABLE, "seeds": [0, 1], "plots": [plot]}, "t.json")
    run_experiment(tmp_path, exp, tmp_path, echo=False)
    files = {c: [tmp_path.resolve() / f"{c}_seed{s}" / "eval" / "scores_test.csv" for s in (0, 1)] for c in TS_OF}
    assert calls == [(files["base"], files["fms"], tmp_path / "heatmaps" / "unet")]
    assert kinds == ["dice_heatmap_comparison"]
    calls.clear()
    run_experiment(tmp_path, exp, tmp_path / "only", configurations=["base"], echo=False)
    assert calls == []  # the method's runs were not asked for


def test_vae_representation_plot_gets_every_finished_run(tmp_path, monkeypatch):
    """The kind needs no base/method: the report pools every run's folder, with the file's min_images."""
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", FakeUnits(_table_report))
    calls = []
    monkeypatch.setattr("fairmonai.reports.write_vae_report",
                        lambda folders, out, min_images: calls.append((list(folders), out, min_images)))
    exp = parse_experiment({**TABLE, "seeds": [0, 1], "plots": [{"kind": "vae_representation", "out": "figures",
                                                                 "min_images": 3}]}, "t.json")
    run_experiment(tmp_path, exp, tmp_path, echo=False)
    assert calls == [([tmp_path.resolve() / f"{c}_seed{s}" for s in (0, 1) for c in TS_OF], tmp_path / "figures", 3)]


def test_overlays_follow_each_configurations_configs_and_must_exist(tmp_path, monkeypatch):
    """--overlay data_x.json (a real-data overlay) is appended to every run's config files, after the
    configuration's own; a file the bundle does not have is refused before any run, naming those it has."""
    fake = FakeUnits(_table_report)
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", fake)
    (tmp_path / "configs").mkdir()
    for name in ("train.json", "m.json", "data_x.json"):
        (tmp_path / "configs" / name).write_text("{}")
    exp = parse_experiment(TABLE, "t.json")
    run_experiment(tmp_path, exp, tmp_path / "out", seeds=[0], overlays=["data_x.json"], echo=False)
    assert [r.configs for r in fake.calls] == [("train.json", "data_x.json"), ("train.json", "m.json", "data_x.json")]
    with pytest.raises(ExperimentFileError) as err:
        run_experiment(tmp_path, exp, tmp_path / "out2", overlays=["data_y.json"], echo=False)
    assert str(err.value) == (f"--overlay data_y.json: {tmp_path / 'configs'} has no such file; its config files: "
                              "['data_x.json', 'm.json', 'train.json']")
    assert not (tmp_path / "out2").exists()


def _ci_report(run, split):
    seed = run.overrides["seed"]
    ts = TS_OF[run.name.split("_")[0]][seed]
    return {"total_score": ts, "ts_ci": [ts - 0.05, ts + 0.125] if run.name.startswith("base") else None,
            "mean_dsc": 0.5, "n_cases": 4}


CI_TABLE = {**TABLE, "columns": {"TS": {"json": R, "key": "total_score", "ci": "ts_ci"},
                                  "DSC": {"json": R, "key": "mean_dsc"}}}


def test_an_interval_is_shown_beside_a_single_runs_value_and_kept_in_the_tables(tmp_path, monkeypatch):
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", FakeUnits(_ci_report))
    exp = parse_experiment({**CI_TABLE, "seeds": [2], "transpose": True}, "demo.json")
    res = run_experiment(tmp_path, exp, tmp_path, echo=False)
    md = res.markdown.splitlines()
    # base seed 2: TS 0.6, interval [0.55, 0.725]; fms holds null for its interval: the value alone
    assert md[4:8] == ["|     | base                 | fms   |", "|-----|----------------------|-------|",
                       "| TS  | 0.600 [0.550, 0.725] | 0.300 |", "| DSC | 0.500                | 0.500 |"]
    rows = pd.read_csv(tmp_path / "demo.csv")
    assert rows["TS_ci_low"].tolist()[0] == pytest.approx(0.55) and rows["TS_ci_high"].tolist()[0] == pytest.approx(0.725)
    assert rows["TS_ci_low"].isna().tolist() == [False, True]
    # the per-run table keys are the run's coordinates, not the interval columns
    per_run = res.markdown.split("Per run:")[1].strip().splitlines()[0]
    assert per_run.split("|")[1:-1] == [" configuration ", " seed ", " split ", " TS     ", " DSC    "]


def test_over_seeds_the_cell_is_mean_and_sd_without_an_interval(tmp_path, monkeypatch):
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", FakeUnits(_ci_report))
    res = run_experiment(tmp_path, parse_experiment(CI_TABLE, "t.json"), tmp_path, echo=False)
    assert res.markdown.splitlines()[6].startswith("| base          | test  | 0.300 +- 0.265 |")
    summary = pd.read_csv(tmp_path / "t_summary.csv").set_index("configuration")
    # by hand: lows 0.05, 0.15, 0.55 -> mean 0.25
    assert summary.loc["base", "TS_ci_low_mean"] == pytest.approx(0.25)


def test_a_bad_interval_names_the_file_and_key(tmp_path, monkeypatch):
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit",
                        FakeUnits(lambda run, split: {"total_score": 0.5, "ts_ci": 0.1, "mean_dsc": 0.5}))
    exp = parse_experiment({**CI_TABLE, "seeds": [0]}, "t.json")
    with pytest.raises(ColumnError, match=r"report_test/report.json: 'ts_ci' is 0.1, not an interval \[low, high\]$"):
        run_experiment(tmp_path, exp, tmp_path, echo=False)


def test_notes_and_outputs_follow_the_table_in_the_printed_part(tmp_path, monkeypatch):
    class WithFigures(FakeUnits):
        def __call__(self, bundle, out_dir, run, *, echo=True, env=None):
            super().__call__(bundle, out_dir, run, echo=echo, env=env)
            for split in run.eval_splits:
                d = Path(out_dir) / run.name / "eval" / f"report_{split}"
                (d / "report.md").write_text("# report\n")
                (d / "b.png").write_bytes(b"")
                (d / "a.png").write_bytes(b"")

    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", WithFigures(_table_report))
    exp = parse_experiment({**TABLE, "seeds": [0], "transpose": True,
                            "notes": ["Read it so.", "{outputs}", "Again: run it in {out}/again"],
                            "outputs": ["eval/report_{split}/report.md", "eval/report_{split}/*.png",
                                        "eval/none_{split}.csv"]}, "demo.json")
    md = run_experiment(tmp_path, exp, tmp_path, echo=False).markdown
    printed = md.split("\nPer run:")[0].rstrip().splitlines()
    rep = {c: tmp_path.resolve() / f"{c}_seed0" / "eval" / "report_test" for c in ("base", "fms")}
    assert printed[-8:] == [
        "Read it so.", "", "Outputs:", "",
        f"- base_seed0 (test): {rep['base'] / 'a.png'}, {rep['base'] / 'b.png'}, {rep['base'] / 'report.md'}",
        f"- fms_seed0 (test): {rep['fms'] / 'a.png'}, {rep['fms'] / 'b.png'}, {rep['fms'] / 'report.md'}",
        "", f"Again: run it in {tmp_path.resolve()}/again"]


@pytest.mark.parametrize("key, value, message", [
    ("notes", "read it", r"t.json: notes: expected a list of non-empty texts, got 'read it'$"),
    ("notes", ["ok", " "], r"t.json: notes: expected a list of non-empty texts, got \['ok', ' '\]$"),
    ("outputs", ["/abs/report.md"], r"t.json: outputs\[0\]: expected a path inside the run's folder, got '/abs/report.md'$"),
    ("outputs", ["eval/../../x"], r"t.json: outputs\[0\]: expected a path inside the run's folder, got 'eval/../../x'$"),
])
def test_bad_notes_or_outputs_name_the_key(key, value, message):
    with pytest.raises(ExperimentFileError, match=message):
        parse_experiment({**TABLE, key: value}, "t.json")


def test_a_ci_key_path_must_be_text():
    with pytest.raises(ExperimentFileError, match=r"t.json: columns.TS.ci: expected a dot-separated key path, got 3$"):
        parse_experiment({**TABLE, "columns": {"TS": {"json": R, "key": "total_score", "ci": 3}}}, "t.json")


def test_every_plot_kind_the_file_format_accepts_has_a_plot_function():
    from fairmonai.experiments import grid, runner

    assert tuple(runner._PLOTS) == grid.PLOT_KINDS == ("dice_heatmap_comparison", "vae_representation")
    assert grid.PLOT_KEYS == ("kind", "file", "base", "method", "out", "min_images")
