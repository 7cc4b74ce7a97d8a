"""Resumable bundle units (runs.py) and the FairMedSeg Table 1 / sweep commands (fairmedseg.py).

The unit tests run ``python -m monai.bundle run`` on a tiny bundle whose ``run`` expressions only write
files (a call log ``calls.txt``, a model file, an evaluation report); they use six subprocesses in
all. The Table 1 / sweep / CLI tests replace ``run_bundle_unit`` with a fake that returns reports
depending on each run's settings.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest

from fairmonai.experiments import fairmedseg
from fairmonai.experiments.fairmedseg import main, sweep, table1
from fairmonai.experiments.runs import BundleRun, RunFailed, bundle_command, run_bundle_unit

REPO = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------------------------
# A tiny bundle: training appends "train resume=<bool> raw=<repr>" to calls.txt and writes
# models/model.pt; evaluation appends "evaluate <split>" and writes eval/report_<split>/report.json
# (fixed numbers) and, for the test split only, eval/scores_<split>.csv.
# ----------------------------------------------------------------------------------------------

TRAIN = {
    "imports": ["$import pathlib", "$import json"],
    "resume": False,
    "calls": "$pathlib.Path(@bundle_root, 'calls.txt')",
    "run": [
        "$@calls.open('a').write('train resume=' + str(bool(@resume)) + ' raw=' + repr(@resume) + '\\n')",
        "$pathlib.Path(@bundle_root, 'models').mkdir(exist_ok=True)",
        "$pathlib.Path(@bundle_root, 'models', 'model.pt').write_text('weights')",
    ],
}
REPORT = {"total_score": 0.75, "mean_dsc": 0.5, "n_cases": 4}
EVALUATE = {
    "eval_split": "test",
    "report_dir": "$pathlib.Path(@bundle_root, 'eval', 'report_' + @eval_split)",
    "run": [
        "$@calls.open('a').write('evaluate ' + @eval_split + '\\n')",
        "$@report_dir.mkdir(parents=True, exist_ok=True)",
        f"$(@report_dir / 'report.json').write_text(json.dumps({REPORT!r}))",
        "$pathlib.Path(@bundle_root, 'eval', 'scores_' + @eval_split + '.csv').write_text('case,dsc\\nA,0.5\\n')"
        " if @eval_split == 'test' else None",
    ],
}
FAIL = {"run": ["$1 / 0"]}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    configs = tmp_path / "bundle" / "configs"
    configs.mkdir(parents=True)
    for name, cfg in {"train.json": TRAIN, "evaluate.json": EVALUATE, "fail.json": FAIL}.items():
        (configs / name).write_text(json.dumps(cfg, indent=2))
    (configs / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))
    shutil.copy(REPO / "bundles" / "oct_glaucoma_fami" / "configs" / "logging.conf", configs / "logging.conf")
    return tmp_path / "bundle"


def _calls(unit: Path) -> list[str]:
    f = unit / "calls.txt"
    return f.read_text().splitlines() if f.is_file() else []


def test_unit_trains_once_evaluates_once_and_refuses_other_spec(bundle, tmp_path):
    out = tmp_path / "out"
    run = BundleRun("unit", ("train.json",), {"seed": 1}, ("test",))
    unit = out / "unit"

    reports = run_bundle_unit(bundle, out, run, echo=False)  # 2 subprocesses
    assert _calls(unit) == ["train resume=False raw=False", "evaluate test"]
    assert set(reports) == {"test"}
    assert reports["test"] == {**REPORT, "scores_file": str((unit / "eval" / "scores_test.csv").resolve())}
    assert (unit / "models" / "model.pt").is_file()
    state = json.loads((unit / "unit.json").read_text())
    assert state == {"spec": {"configs": ["train.json"], "overrides": {"seed": "1"}}, "trained": True,
                     "evaluated": ["test"]}
    log = (unit / "logs" / "train.log").read_text()
    assert log.startswith("$ ") and "monai.bundle run" in log.splitlines()[0]
    assert (unit / "logs" / "evaluate_test.log").is_file()

    # the same unit again: nothing runs, the same reports come back
    assert run_bundle_unit(bundle, out, run, echo=False) == reports
    assert _calls(unit) == ["train resume=False raw=False", "evaluate test"]

    # a new split: only its evaluation runs (1 subprocess); a split without per-case CSV -> None
    both = BundleRun("unit", ("train.json",), {"seed": 1}, ("test", "val"))
    reports = run_bundle_unit(bundle, out, both, echo=False)
    assert _calls(unit) == ["train resume=False raw=False", "evaluate test", "evaluate val"]
    assert reports["val"] == {**REPORT, "scores_file": None}
    assert reports["test"]["scores_file"] == str((unit / "eval" / "scores_test.csv").resolve())
    assert json.loads((unit / "unit.json").read_text())["evaluated"] == ["test", "val"]

    # other overrides / other configs in the same folder: refused before anything runs
    for other in (BundleRun("unit", ("train.json",), {"seed": 2}, ("test",)),
                  BundleRun("unit", ("train.json", "fail.json"), {"seed": 1}, ("test",))):
        with pytest.raises(ValueError, match="other settings") as e:
            run_bundle_unit(bundle, out, other, echo=False)
        assert str(unit.resolve()) in str(e.value)
    assert len(_calls(unit)) == 3


@pytest.mark.parametrize("state", [None, "untrained"], ids=["no-unit-json", "trained-false"])
def test_interrupted_unit_resumes(bundle, tmp_path, state):
    out = tmp_path / "out"
    run = BundleRun("unit", ("train.json",), {"seed": 1}, ())  # no evaluation: 1 subprocess
    unit = out / "unit"
    (unit / "models").mkdir(parents=True)
    (unit / "models" / "checkpoint_epoch=1.pt").write_text("state")
    if state == "untrained":
        (unit / "unit.json").write_text(json.dumps({"spec": run.spec(), "trained": False}))

    assert run_bundle_unit(bundle, out, run, echo=False) == {}
    assert len(_calls(unit)) == 1 and _calls(unit)[0].startswith("train resume=True")
    assert "--resume" in (unit / "logs" / "train.log").read_text().splitlines()[0]
    assert json.loads((unit / "unit.json").read_text())["trained"] is True


def test_failing_command_raises_run_failed_naming_its_log(bundle, tmp_path):
    out = tmp_path / "out"
    run = BundleRun("unit", ("train.json", "fail.json"), {"seed": 1}, ("test",))
    log = (out / "unit" / "logs" / "train.log").resolve()
    with pytest.raises(RunFailed, match="exit 1") as e:
        run_bundle_unit(bundle, out, run, echo=False)  # 1 subprocess
    assert str(log) in str(e.value)
    text = log.read_text()
    first = text.splitlines()[0]
    assert first.startswith("$ ") and "monai.bundle run" in first and "fail.json" in first and "--seed 1" in first
    assert "ZeroDivisionError" in text
    state_file = out / "unit" / "unit.json"
    assert not (state_file.is_file() and json.loads(state_file.read_text()).get("trained"))
    assert not (out / "unit" / "eval").exists()


def test_interrupted_unit_folder_refuses_other_spec(tmp_path, monkeypatch):
    calls = []

    def killed(cmd, cwd, log, echo):  # training killed after writing its first checkpoint
        calls.append(cmd)
        (cwd / "models").mkdir(exist_ok=True)
        (cwd / "models" / "checkpoint_epoch=1.pt").write_text("state")
        raise RunFailed("killed")

    monkeypatch.setattr("fairmonai.experiments.runs._run", killed)
    bundle = tmp_path / "bundle"
    with pytest.raises(RunFailed):
        run_bundle_unit(bundle, tmp_path, BundleRun("unit", ("train.json",), {"seed": 1}), echo=False)
    with pytest.raises(ValueError, match="other settings"):
        run_bundle_unit(bundle, tmp_path, BundleRun("unit", ("train.json",), {"seed": 2}), echo=False)
    assert len(calls) == 1


def test_overrides_reach_the_bundle_with_their_types():
    from fire.parser import DefaultParseValue  # how `python -m monai.bundle run` parses an override

    values = {"amp": False, "resume": True, "manifest": None, "epochs": 3, "lr": 1e-4,
              "roi_size": [48, 48, 32], "opts": {"a": True}, "name": "x"}
    cmd = bundle_command(Path("/b"), ["train.json"], Path("/r"), values)
    parsed = {cmd[i][2:]: DefaultParseValue(cmd[i + 1]) for i in range(cmd.index("--bundle_root") + 2, len(cmd), 2)}
    assert parsed == values


def test_bundle_command_layout():
    cmd = bundle_command(Path("/b"), ["train.json", "net.json"], Path("/r"), {"epochs": 3, "manifest": "/m.csv",
                                                                               "roi_size": [4, 4, 2]})
    assert cmd[1:4] == ["-m", "monai.bundle", "run"]
    assert cmd[cmd.index("--config_file") + 1] == "['/b/configs/train.json','/b/configs/net.json']"
    assert cmd[cmd.index("--meta_file") + 1] == "/b/configs/metadata.json"
    assert cmd[cmd.index("--logging_file") + 1] == "/b/configs/logging.conf"
    assert cmd[cmd.index("--bundle_root") + 1] == "/r"
    assert cmd[-6:] == ["--epochs", "3", "--manifest", "/m.csv", "--roi_size", "[4, 4, 2]"]


# ----------------------------------------------------------------------------------------------
# Table 1 / sweep / CLI with a fake run_bundle_unit
# ----------------------------------------------------------------------------------------------


def _report(ts: float, dsc: float = 0.5) -> dict:
    return {"mean_dsc": dsc, "mean_normhd": 0.2, "performance_score": 0.65, "fairness_score": 0.9,
            "total_score": ts, "scores_file": None}


class FakeRuns:
    """Stands in for run_bundle_unit: records each call, returns ``report(run, split)`` per split."""

    def __init__(self, report):
        self.report = report
        self.calls: list[tuple[Path, Path, BundleRun]] = []

    def __call__(self, bundle, out_dir, run, *, echo=True):
        self.calls.append((Path(bundle), Path(out_dir), run))
        return {split: self.report(run, split) for split in run.eval_splits}


# sweep values: validation TS is highest at (0.5, 0.005); test TS would be highest at (0.8, 0.01)
VAL_TS = {(a, m): 0.5 for a in fairmedseg.SWEEP_ALPHAS for m in fairmedseg.SWEEP_MINSUPS}
VAL_TS[(0.5, 0.005)] = 0.7
VAL_TS[(0.8, 0.01)] = 0.6
TEST_TS = {k: 0.4 for k in VAL_TS}
TEST_TS[(0.5, 0.005)] = 0.55
TEST_TS[(0.8, 0.01)] = 0.9


def _sweep_report(run, split):
    key = (run.overrides["div_alpha"], run.overrides["minsup"])
    return _report(VAL_TS[key] if split == "val" else TEST_TS[key], dsc=0.6 if split == "val" else 0.3)


@pytest.mark.parametrize("score_test", [False, True])
def test_sweep_chooses_by_validation_ts(tmp_path, monkeypatch, score_test):
    fake = FakeRuns(_sweep_report)
    monkeypatch.setattr("fairmonai.experiments.fairmedseg.run_bundle_unit", fake)
    out = tmp_path / "sweep"
    df, choice = sweep(out, net="segresnet", seed=3, score_test=score_test, overrides={"epochs": 2}, echo=False)

    assert (choice["alpha"], choice["minsup"]) == (0.5, 0.005)
    assert choice["validation"]["TS"] == 0.7 and choice["validation"]["DSC"] == 0.6
    assert choice["selected_on"] == "validation total score"
    assert len(df) == 9 and list(zip(df["alpha"], df["minsup"])) == list(VAL_TS)
    assert df["val_TS"].tolist() == list(VAL_TS.values())

    sweep_runs = [r for _, _, r in fake.calls[:9]]
    assert all(r.eval_splits == ("val",) for r in sweep_runs)
    assert all(r.configs == ("train.json", "method_fairmedseg.json", "net_segresnet.json") for r in sweep_runs)
    data = str((out / "data" / "seed3").resolve())
    assert all(r.overrides == {"seed": 3, "dataset_dir": data, "epochs": 2, "div_alpha": a, "minsup": m}
               for r, (a, m) in zip(sweep_runs, VAL_TS))
    assert len({r.name for r in sweep_runs}) == 9
    assert sweep_runs[0].name == "segresnet_fairmedseg_a0.2_m0.001_seed3"

    test_calls = [r for _, _, r in fake.calls if "test" in r.eval_splits]
    saved = json.loads((out / "sweep_choice.json").read_text())
    if score_test:
        assert len(fake.calls) == 10 and len(test_calls) == 1
        chosen = next(r for r in sweep_runs if (r.overrides["div_alpha"], r.overrides["minsup"]) == (0.5, 0.005))
        assert test_calls[0] == BundleRun(chosen.name, chosen.configs, chosen.overrides, ("val", "test"))
        assert choice["test"]["TS"] == 0.55 and choice["test"]["DSC"] == 0.3  # not the best test TS (0.9)
        assert "Chosen pair on the test split" in (out / "sweep.md").read_text()
    else:
        assert len(fake.calls) == 9 and test_calls == [] and "test" not in choice
        assert "test split" not in (out / "sweep.md").read_text()
    assert saved == choice
    assert pd.read_csv(out / "sweep.csv")["val_TS"].tolist() == list(VAL_TS.values())
    assert "alpha 0.5, minsup 0.005" in (out / "sweep.md").read_text()


def test_sweep_tie_goes_to_first_pair(tmp_path, monkeypatch):
    ts = {(0.2, 0.01): 0.6, (0.5, 0.001): 0.8, (0.5, 0.01): 0.8, (0.8, 0.001): 0.8, (0.8, 0.01): 0.1,
          (0.2, 0.001): 0.3}
    fake = FakeRuns(lambda run, split: _report(ts[(run.overrides["div_alpha"], run.overrides["minsup"])]))
    monkeypatch.setattr("fairmonai.experiments.fairmedseg.run_bundle_unit", fake)
    _, choice = sweep(tmp_path, alphas=(0.2, 0.5, 0.8), minsups=(0.001, 0.01), echo=False)
    assert (choice["alpha"], choice["minsup"]) == (0.5, 0.001)
    # reversed sweep order: the first of the tied pairs is now (0.8, 0.001)
    _, choice = sweep(tmp_path / "rev", alphas=(0.8, 0.5, 0.2), minsups=(0.001, 0.01), echo=False)
    assert (choice["alpha"], choice["minsup"]) == (0.8, 0.001)


TS_OF = {("unet", "base"): [0.50, 0.60, 0.70], ("unet", "fairmedseg"): [0.55, 0.65, 0.95],
         ("swinunetr", "base"): [0.10, 0.20, 0.60], ("swinunetr", "fairmedseg"): [0.30, 0.30, 0.30]}


def _table_report(run, split):
    assert split == "test"
    net, method, seed = run.name.split("_")
    return _report(TS_OF[(net, method)][int(seed.removeprefix("seed"))], dsc=0.1 * int(seed.removeprefix("seed")))


def test_table1(tmp_path, monkeypatch):
    fake = FakeRuns(_table_report)
    monkeypatch.setattr("fairmonai.experiments.fairmedseg.run_bundle_unit", fake)
    heatmaps = []
    monkeypatch.setattr("fairmonai.reports.compare.dice_heatmap_comparison",
                        lambda base, method, out_dir: heatmaps.append((base, method, out_dir)))
    out = tmp_path / "t1"
    df = table1(out, seeds=(0, 1, 2), nets=("unet", "swinunetr"), overrides={"epochs": 3}, bundle=tmp_path / "b",
                echo=False)

    # one unit per (net, method, seed), test split only, in the given bundle and output folder
    assert len(fake.calls) == 12
    assert all(b == tmp_path / "b" and o == out and r.eval_splits == ("test",) for b, o, r in fake.calls)
    runs = {r.name: r for _, _, r in fake.calls}
    assert runs["unet_base_seed0"].configs == ("train.json",)
    assert runs["unet_fairmedseg_seed1"].configs == ("train.json", "method_fairmedseg.json")
    assert runs["swinunetr_base_seed2"].configs == ("train.json", "net_swinunetr.json")
    assert runs["swinunetr_fairmedseg_seed2"].configs == ("train.json", "method_fairmedseg.json",
                                                          "net_swinunetr.json")
    for seed in (0, 1, 2):
        same = {r.overrides["dataset_dir"] for r in runs.values() if r.overrides["seed"] == seed}
        assert same == {str((out / "data" / f"seed{seed}").resolve())}
    assert all(r.overrides["epochs"] == 3 for r in runs.values())

    csv = pd.read_csv(out / "table1.csv")
    assert len(csv) == 12 and list(csv.columns) == ["net", "method", "seed", "DSC", "NormHD", "PS", "FS", "TS",
                                                    "run_dir"]
    assert not csv.duplicated(["net", "method", "seed"]).any()
    row = csv[(csv.net == "swinunetr") & (csv.method == "base") & (csv.seed == 2)].iloc[0]
    assert row.TS == 0.6 and row.DSC == pytest.approx(0.2)
    assert row.run_dir == str((out / "swinunetr_base_seed2").resolve())
    pd.testing.assert_frame_equal(csv, df, check_dtype=False)

    md = (out / "table1.md").read_text()
    # by hand: swinunetr base TS 0.1, 0.2, 0.6 -> mean 0.3, sd sqrt(((-.2)^2 + (-.1)^2 + .3^2) / 2) = sqrt(.07)
    assert statistics.stdev([0.1, 0.2, 0.6]) == pytest.approx(0.07 ** 0.5)
    line = next(x for x in md.splitlines() if x.startswith("| swinunetr | base |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == ["swinunetr", "base", "0.100 +- 0.100", "0.200 +- 0.000", "0.650 +- 0.000",
                     "0.900 +- 0.000", "0.300 +- 0.265"]
    assert "| swinunetr | fairmedseg | 0.100 +- 0.100 | 0.200 +- 0.000 | 0.650 +- 0.000 | 0.900 +- 0.000 | " \
           "0.300 +- 0.000 |" in md
    unet_base = next(x for x in md.splitlines() if x.startswith("| unet | base |"))
    assert unet_base.endswith("| 0.600 +- 0.100 |")  # TS 0.5, 0.6, 0.7
    assert "| swinunetr | base | 2 | 0.2000 | 0.2000 | 0.6500 | 0.9000 | 0.6000 |" in md
    assert sum(" +- " in x for x in md.splitlines()[1:]) == 4  # one mean +- sd row per (net, method)

    # Figure 2 (both methods run): one comparison per network, the test score files of its seeds
    def files(net, method):
        return [(out / f"{net}_{method}_seed{s}").resolve() / "eval" / "scores_test.csv" for s in (0, 1, 2)]

    assert heatmaps == [(files(net, "base"), files(net, "fairmedseg"), out / "heatmaps" / net)
                        for net in ("unet", "swinunetr")]

    heatmaps.clear()
    table1(tmp_path / "base_only", seeds=(0,), nets=("unet",), methods=("base",), echo=False)
    assert heatmaps == []  # no Figure 2 without both methods


def test_table1_writes_figure2_from_the_score_files(tmp_path, monkeypatch):
    def report(run, split):  # the unit's per-case scores, as the segmentation bundle's evaluation writes
        csv = tmp_path / run.name / "eval" / "scores_test.csv"
        csv.parent.mkdir(parents=True)
        dice = 0.5 if run.name.startswith("unet_base") else 0.8
        pd.DataFrame({"case_id": ["a", "b"], "dice": [dice, dice], "age_group": ["71+", "0-40"],
                      "breast_density": ["d", "a"], "menopausal_status": ["post", "pre"]}).to_csv(csv, index=False)
        return _report(0.5)

    monkeypatch.setattr("fairmonai.experiments.fairmedseg.run_bundle_unit", FakeRuns(report))
    table1(tmp_path, seeds=(0,), nets=("unet",), echo=False)
    cells = pd.read_csv(tmp_path / "heatmaps" / "unet" / "subgroup_dice.csv").set_index(["pair", "row", "column"])
    c = cells.loc[("age_group x breast_density", "71+", "d")]
    assert (c.n_base, c.n_method) == (1, 1) and c.difference == pytest.approx(0.3)
    assert (tmp_path / "heatmaps" / "unet" / "heatmap_age_group_x_breast_density_difference.png").is_file()


def test_unknown_network_or_method(tmp_path, monkeypatch):
    fake = FakeRuns(_table_report)
    monkeypatch.setattr("fairmonai.experiments.fairmedseg.run_bundle_unit", fake)
    with pytest.raises(ValueError, match=r"unknown network 'vnet'; expected one of \['unet', 'segresnet', 'swinunetr'\]"):
        table1(tmp_path, nets=("vnet",), echo=False)
    with pytest.raises(ValueError, match="unknown network 'vnet'"):
        sweep(tmp_path, net="vnet", echo=False)
    with pytest.raises(ValueError, match="unknown method 'dro'"):
        table1(tmp_path, methods=("dro",), echo=False)
    assert fake.calls == []


def test_main_set_overrides(tmp_path, monkeypatch, capsys):
    fake = FakeRuns(_table_report)
    monkeypatch.setattr("fairmonai.experiments.fairmedseg.run_bundle_unit", fake)
    rc = main(["table1", "--out", str(tmp_path), "--seeds", "1", "--nets", "unet", "--methods", "base",
               "--set", "epochs=3", "--set", "roi_size=[48,48,32]", "--set", "manifest=/data/m.csv",
               "--set", "note=a=b"])
    assert rc == 0
    (_, _, run), = fake.calls
    assert run.overrides["epochs"] == 3 and isinstance(run.overrides["epochs"], int)
    assert run.overrides["roi_size"] == [48, 48, 32]
    assert run.overrides["manifest"] == "/data/m.csv" and run.overrides["note"] == "a=b"
    assert "| unet | base |" in capsys.readouterr().out

    fake = FakeRuns(_sweep_report)
    monkeypatch.setattr("fairmonai.experiments.fairmedseg.run_bundle_unit", fake)
    assert main(["sweep", "--out", str(tmp_path / "s"), "--alphas", "0.5", "0.8", "--minsups", "0.005", "0.01",
                 "--score-test", "--set", "epochs=2"]) == 0
    assert len(fake.calls) == 5 and fake.calls[-1][2].eval_splits == ("val", "test")
    assert fake.calls[-1][2].overrides["div_alpha"] == 0.5 and fake.calls[-1][2].overrides["minsup"] == 0.005
    assert "chosen by validation TS: alpha 0.5, minsup 0.005" in capsys.readouterr().out


def test_main_bad_set_and_failed_run(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit, match="--set expects key=value, got 'epochs3'"):
        main(["table1", "--out", str(tmp_path), "--set", "epochs3"])

    def failing(bundle, out_dir, run, *, echo=True):
        raise RunFailed("command failed (exit 1); see /x/logs/train.log")

    monkeypatch.setattr("fairmonai.experiments.fairmedseg.run_bundle_unit", failing)
    assert main(["table1", "--out", str(tmp_path), "--seeds", "0", "--nets", "unet", "--methods", "base"]) == 2
    assert "error: command failed (exit 1); see /x/logs/train.log" in capsys.readouterr().err
