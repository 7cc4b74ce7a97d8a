"""Resumable bundle units (runs.py).

The tests run ``python -m monai.bundle run`` on a tiny bundle whose ``run`` expressions only write
files (a call log ``calls.txt``, a model file, an evaluation report); they use six subprocesses in all.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fairmonai.experiments.runs import (BundleRun, RunFailed, bundle_command, is_finished, recorded_seconds,
                                       run_bundle_unit)

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
    seconds = state.pop("seconds")  # each command's wall time, which the runner's estimate reads
    assert state == {"spec": {"configs": ["train.json"], "overrides": {"seed": "1"}}, "trained": True,
                     "evaluated": ["test"]}
    assert set(seconds) == {"train", "evaluate_test"} and all(v > 0 for v in seconds.values())
    assert recorded_seconds(out) == [pytest.approx(sum(seconds.values()))]
    assert is_finished(out, run) and not is_finished(out, BundleRun("unit", ("train.json",), {"seed": 1}, ("val",)))
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

    def killed(cmd, cwd, log, echo, env=None):  # training killed after writing its first checkpoint
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


PROBE = {
    "imports": ["$import os", "$import sys", "$import json", "$import pathlib", "$import torch"],
    "run": [
        "$pathlib.Path(@bundle_root, 'probe.json').write_text(json.dumps({'cwd': os.getcwd(), 'argv': sys.argv[1:4], "
        "'omp': os.environ.get('OMP_NUM_THREADS'), 'foo': os.environ.get('FAIRMONAI_PROBE'), "
        "'threads': torch.get_num_threads(), 'seed': @seed}))",
        "$print('probe Metrics -- done', flush=True)",
    ],
}


@pytest.mark.parametrize("kind", ["fork", "subprocess"])
def test_both_launchers_run_the_same_command(bundle, tmp_path, monkeypatch, capsys, kind):
    """The fork-server launcher and a fresh interpreter give the command the same folder, arguments and
    environment (OMP_NUM_THREADS applied as torch's thread count), and the log and echo alike."""
    (bundle / "configs" / "probe.json").write_text(json.dumps(PROBE))
    monkeypatch.setenv("FAIRMONAI_LAUNCHER", kind)
    out = tmp_path / kind
    run_bundle_unit(bundle, out, BundleRun("unit", ("probe.json",), {"seed": 3}, ()), echo=True,
                    env={"OMP_NUM_THREADS": "1", "FAIRMONAI_PROBE": "bar"})
    probe = json.loads((out / "unit" / "probe.json").read_text())
    assert probe == {"cwd": str((out / "unit").resolve()), "argv": ["run", "--config_file", probe["argv"][2]],
                     "omp": "1", "foo": "bar", "threads": 1, "seed": 3}
    assert "probe.json" in probe["argv"][2]
    log = (out / "unit" / "logs" / "train.log").read_text().splitlines()
    assert log[0].startswith("$ ") and "-m monai.bundle run" in log[0] and "probe Metrics -- done" in log
    assert "    probe Metrics -- done" in capsys.readouterr().out


def test_unknown_launcher_is_an_input_error(monkeypatch):
    from fairmonai.errors import InputError
    from fairmonai.experiments.runs import launcher

    monkeypatch.setenv("FAIRMONAI_LAUNCHER", "thread")
    with pytest.raises(InputError, match=r"FAIRMONAI_LAUNCHER='thread': expected one of \['fork', 'subprocess'\]"):
        launcher()
