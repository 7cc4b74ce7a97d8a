"""Executors (executors.py) and the runner on them, with a fake unit runner: no training happens.

The fake stands in for ``run_bundle_unit``: it sleeps (0.2 s by default), records how many units
run at once and the environment each got, writes each asked split's report, and raises
:class:`RunFailed` (with a log file) the first ``fail[name]`` times a unit is called. The Ray test
runs only where Ray is installed (``pip install -e .[ray]``).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from fairmonai.experiments.__main__ import main
from fairmonai.experiments.executors import (RAY_MISSING, ExecutorError, LocalExecutor, estimate_seconds,
                                             format_duration, make_executor, run_units, visible_gpus,
                                             worker_devices)
from fairmonai.experiments.grid import parse_experiment
from fairmonai.experiments.runner import run_experiment
from fairmonai.experiments.runs import BundleRun, RunFailed

R = "eval/report_{split}/report.json"
EXP = {
    "description": "Two configurations, two seeds.",
    "configurations": {"base": {"configs": ["train.json"]}, "fms": {"configs": ["train.json", "m.json"]}},
    "seeds": [0, 1],
    "columns": {"TS": {"json": R, "key": "total_score"}},
}
TS = {"base_seed0": 0.1, "fms_seed0": 0.2, "base_seed1": 0.3, "fms_seed1": 0.4}
ORDER = ["base_seed0", "fms_seed0", "base_seed1", "fms_seed1"]  # the grid's order


class SleepyUnits:
    """A fake ``run_bundle_unit``: sleeps ``sleep[name]`` (default 0.2 s), fails the first ``fail[name]`` calls."""

    def __init__(self, fail=None, sleep=None, seconds=None):
        self.fail, self.sleep, self.seconds = dict(fail or {}), dict(sleep or {}), seconds
        self.lock = threading.Lock()
        self.running = self.max_running = 0
        self.calls: list[str] = []
        self.finished: list[str] = []
        self.envs: dict[str, dict] = {}

    def __call__(self, bundle, out_dir, run, *, echo=True, env=None):
        with self.lock:
            self.calls.append(run.name)
            self.envs[run.name] = dict(env or {})
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            attempt = self.calls.count(run.name)
        try:
            time.sleep(self.sleep.get(run.name, 0.2))
            root = Path(out_dir) / run.name
            if attempt <= self.fail.get(run.name, 0):
                log = root / "logs" / "train.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(f"attempt {attempt}\n")
                raise RunFailed(f"command failed (exit 1); see {log}", log=log)
            for split in run.eval_splits:
                f = root / "eval" / f"report_{split}" / "report.json"
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(json.dumps({"total_score": TS[run.name]}))
            if self.seconds is not None:  # as run_bundle_unit records a real unit's times
                (root / "unit.json").write_text(json.dumps({"spec": run.spec(), "trained": True,
                                                            "seconds": self.seconds}))
        finally:
            with self.lock:
                self.running -= 1
                self.finished.append(run.name)
        return {}


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch):
    """No GPU for the local executor, whatever the machine has (and no torch import to count GPUs)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def _bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    for name in ("train.json", "m.json", "metadata.json"):
        (bundle / "configs" / name).write_text("{}")
    (bundle / "experiments").mkdir()
    (bundle / "experiments" / "two.json").write_text(json.dumps(EXP))
    return bundle


def test_two_local_workers_run_two_at_once_in_about_half_the_time(tmp_path, monkeypatch, capsys):
    # the first unit is the slowest, so units finish out of the grid's order
    sleep = {"base_seed0": 0.4}
    exp = parse_experiment(EXP, "two.json")
    serial = SleepyUnits(sleep=sleep)
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", serial)
    t0 = time.perf_counter()
    run_experiment(tmp_path, exp, tmp_path / "serial", echo=False)
    t_serial = time.perf_counter() - t0
    par = SleepyUnits(sleep=sleep)
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", par)
    t0 = time.perf_counter()
    res = run_experiment(tmp_path, exp, tmp_path / "par", echo=True, workers=2)
    t_par = time.perf_counter() - t0

    assert serial.max_running == 1 and par.max_running == 2
    assert t_serial >= 1.0  # 0.4 + 3 x 0.2
    assert t_par < 0.75 * t_serial  # by hand 0.6 s: slot 1 runs base_seed0 (0.4), slot 2 the next two, then fms_seed1
    assert par.finished[0] == "fms_seed0" and par.finished != ORDER
    rows = pd.read_csv(tmp_path / "par" / "two.csv")
    assert rows["run_dir"].map(lambda p: Path(p).name).tolist() == ORDER  # the grid's order, not the finishing order
    assert rows["TS"].tolist() == [TS[n] for n in ORDER]

    timing = json.loads((tmp_path / "par" / "two_timing.json").read_text())
    assert timing["executor"] == "local" and timing["workers"] == 2 and res.timing == timing
    assert [u["name"] for u in timing["units"]] == ORDER and {u["status"] for u in timing["units"]} == {"done"}
    assert timing["units"][0]["wall_s"] == pytest.approx(0.4, abs=0.15)
    assert timing["units"][1]["wall_s"] == pytest.approx(0.2, abs=0.15)
    assert timing["wall_s"] == pytest.approx(t_par, abs=0.05) and 0 <= timing["runner_s"] < 0.2
    assert timing["runner_fraction"] == pytest.approx(timing["runner_s"] / timing["wall_s"])

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("grid: 4 run(s), 0 finished before, 4 to run on local with 2 worker(s)")
    assert lines[0].endswith("; estimated unknown (no run in the output folder recorded its time and the file "
                             "gives no seconds_per_run)")
    progress = [ln for ln in lines if ln.startswith("progress: ")]
    assert len(progress) == 8  # one per change: 4 starts, 4 ends
    assert progress[-1].startswith("progress: 4/4 done, 0 running, 0 failed, 0 queued; elapsed ")
    assert progress[-1].endswith(", ETA 0:00:00: done fms_seed1 (0.2 s)")


def test_a_unit_failing_once_is_retried_and_succeeds(tmp_path, monkeypatch, capsys):
    fake = SleepyUnits(fail={"fms_seed0": 1}, sleep=dict.fromkeys(ORDER, 0.01))
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", fake)
    res = run_experiment(tmp_path, parse_experiment(EXP, "two.json"), tmp_path, workers=2)
    assert fake.calls.count("fms_seed0") == 2 and res.failed == {}
    assert pd.read_csv(tmp_path / "two.csv")["TS"].tolist() == [TS[n] for n in ORDER]
    log = tmp_path / "fms_seed0" / "logs" / "train.log"
    assert (tmp_path / "fms_seed0" / "logs" / "train.log.attempt1").read_text() == "attempt 1\n"  # first log kept
    out = capsys.readouterr().out
    assert f"fms_seed0 failed (command failed (exit 1); see {log}); retrying once" in out
    assert "started fms_seed0 (attempt 2)" in out
    unit = next(u for u in res.timing["units"] if u["name"] == "fms_seed0")
    assert unit["attempts"] == 2 and len(unit["attempt_s"]) == 2 and unit["status"] == "done"


def test_a_unit_failing_twice_is_listed_and_the_command_exits_non_zero(tmp_path, monkeypatch, capsys):
    fake = SleepyUnits(fail={"fms_seed0": 2}, sleep=dict.fromkeys(ORDER, 0.01))
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", fake)
    bundle, out = _bundle(tmp_path), tmp_path / "out"
    assert main(["run", str(bundle), "two", "--out", str(out), "--workers", "2"]) == 1
    log = out / "fms_seed0" / "logs" / "train.log"
    printed = capsys.readouterr()
    assert f"FAILED fms_seed0 after 2 attempts; log: {log}" in printed.out
    assert printed.err == f"error: 1 run(s) failed twice, their columns are empty: fms_seed0 (log: {log})\n"
    assert sorted(fake.calls) == sorted(ORDER + ["fms_seed0"])  # retried once, the others went on
    rows = pd.read_csv(out / "two.csv")
    assert rows["TS"].tolist()[:1] + rows["TS"].tolist()[2:] == [0.1, 0.3, 0.4]
    assert rows["TS"].isna().tolist() == [False, True, False, False]
    summary = pd.read_csv(out / "two_summary.csv")
    assert summary[summary.configuration == "fms"].iloc[0].TS_n == 1
    assert f"Failed (1, their columns empty): fms_seed0 (log: {log})" in (out / "two.md").read_text()


def test_selection_chooses_among_the_runs_that_did_not_fail(tmp_path, monkeypatch):
    """mu 2 would win on validation but fails twice: mu 1 is chosen and scored on test; with every
    run of the cell failed there is no choice, and no error about missing values."""
    for name, ts in (("u_mu1_seed0", 0.5), ("u_mu2_seed0", 0.9)):
        monkeypatch.setitem(TS, name, ts)
    fake = SleepyUnits(fail={"u_mu2_seed0": 2}, sleep={"u_mu1_seed0": 0.01, "u_mu2_seed0": 0.01})
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", fake)
    sweep = {**EXP, "configurations": {"u": {"configs": ["train.json"]}}, "seeds": [0], "grid": {"mu": [1, 2]},
             "splits": ["val"], "select": {"column": "TS", "split": "val", "goal": "max", "then": ["test"]}}
    res = run_experiment(tmp_path, parse_experiment(sweep, "s.json"), tmp_path / "a", workers=2, echo=False)
    assert [c["chosen"] for c in res.choices] == [{"mu": 1}] and list(res.failed) == ["u_mu2_seed0"]
    assert res.rows[["mu", "split", "selected"]].values.tolist() == [[1, "val", True], [2, "val", False],
                                                                      [1, "test", True]]
    assert res.rows["TS"].fillna(-1).tolist() == [0.5, -1, 0.5]  # the failed run's column empty
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit",
                        SleepyUnits(fail={"u_mu1_seed0": 2, "u_mu2_seed0": 2}, sleep=fake.sleep))
    res = run_experiment(tmp_path, parse_experiment(sweep, "s.json"), tmp_path / "b", echo=False)
    assert res.choices == [] and sorted(res.failed) == ["u_mu1_seed0", "u_mu2_seed0"]


def test_the_estimate_comes_from_recorded_times_else_the_file_else_unknown(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit",
                        SleepyUnits(sleep=dict.fromkeys(ORDER, 0.0), seconds={"train": 30.0, "evaluate_test": 10.0}))
    exp = parse_experiment({**EXP, "seconds_per_run": 600}, "two.json")
    run_experiment(tmp_path, exp, tmp_path / "o", seeds=[0], workers=2)
    # 2 runs of 600 s (the file's) on 2 workers: 600 s
    assert capsys.readouterr().out.splitlines()[0] == (
        "grid: 2 run(s), 0 finished before, 2 to run on local with 2 worker(s), no GPU; estimated 0:10:00 "
        "(600 s a run: the experiment file's seconds_per_run)")
    # settings changed by --set or --overlay: the file's figure does not describe the runs
    run_experiment(tmp_path, exp, tmp_path / "p", seeds=[0], workers=2, extra={"epochs": 1})
    assert capsys.readouterr().out.splitlines()[0] == (
        "grid: 2 run(s), 0 finished before, 2 to run on local with 2 worker(s), no GPU; estimated unknown "
        "(the experiment file's seconds_per_run, 600 s, is for its own settings, not with --set epochs; "
        "an ETA follows the first finished run)")
    run_experiment(tmp_path, exp, tmp_path / "o", seeds=[0, 1], workers=1)
    # the 2 finished runs recorded 30 + 10 s each; 2 runs left on 1 worker: 80 s
    assert capsys.readouterr().out.splitlines()[0] == (
        "grid: 4 run(s), 2 finished before, 2 to run on local with 1 worker(s), no GPU; estimated 0:01:20 "
        f"(40 s a run: mean of 2 run(s) recorded in {tmp_path / 'o'})")


def test_eta_arithmetic_on_a_hand_example():
    # 10 s a run, 2 workers, running for 4 s and 6 s, 3 queued: slots free at 6 and 4 s, the queued
    # runs end at 4+10=14, 6+10=16 and 14+10=24 s
    assert estimate_seconds(10, 2, 3, [4, 6]) == 24
    assert estimate_seconds(10, 2, 3) == 20  # before the start: two waves of 10 s
    assert estimate_seconds(10, 2, 0, [12]) == 0  # a run past the estimate counts as ending now
    assert estimate_seconds(10, 4, 1) == 10
    assert [format_duration(s) for s in (0, 59.6, 3725, None)] == ["0:00:00", "0:01:00", "1:02:05", "unknown"]


class ScriptedExecutor:
    """Two slots; ``wait`` finishes the oldest running unit after ``durations[name]`` seconds of its own."""

    kind, workers = "scripted", 2

    def __init__(self, clock, durations):
        self.clock, self.durations, self.started = clock, durations, {}

    def describe(self):
        return "scripted"

    def submit(self, fn, bundle, out, unit, echo):
        self.started[unit.name] = self.clock[0]
        return unit.name, None

    def wait(self, handles):
        name = min(handles, key=lambda h: self.started[h] + self.durations[h])
        self.clock[0] = self.started[name] + self.durations[name]
        return [(name, (True, self.durations[name], None, None))]


def test_progress_lines_on_a_hand_example():
    """a, b, c on 2 slots, 10 s a run expected. a takes 8 s: the mean is 8 s, so b (started at 0) is
    expected at 8 and c, starting then, at 16: ETA 8 s. b takes 10 s: the mean is 9 s and c, at 2 s
    of its 9, has 7 s left."""
    clock = [0.0]
    lines: list[str] = []
    units = [BundleRun(n, ("train.json",)) for n in "abc"]
    ex = ScriptedExecutor(clock, {"a": 8.0, "b": 10.0, "c": 8.0})
    outcomes, _ = run_units(ex, None, Path("b"), Path("o"), units, per_run=10, source="hand",
                            say=lines.append, clock=lambda: clock[0])
    assert lines == [
        "grid: 3 run(s), 0 finished before, 3 to run on scripted; estimated 0:00:20 (hand)",
        "progress: 0/3 done, 1 running, 0 failed, 2 queued; elapsed 0:00:00, ETA 0:00:20: started a",
        "progress: 0/3 done, 2 running, 0 failed, 1 queued; elapsed 0:00:00, ETA 0:00:20: started b",
        "progress: 1/3 done, 1 running, 0 failed, 1 queued; elapsed 0:00:08, ETA 0:00:08: done a (8.0 s)",
        "progress: 1/3 done, 2 running, 0 failed, 0 queued; elapsed 0:00:08, ETA 0:00:08: started c",
        "progress: 2/3 done, 1 running, 0 failed, 0 queued; elapsed 0:00:10, ETA 0:00:07: done b (10.0 s)",
        "progress: 3/3 done, 0 running, 0 failed, 0 queued; elapsed 0:00:16, ETA 0:00:00: done c (8.0 s)",
    ]
    assert [(o.name, o.status, o.attempts) for o in outcomes] == [("a", "done", 1), ("b", "done", 1), ("c", "done", 1)]


def test_device_assignment_one_gpu_per_worker(tmp_path, monkeypatch):
    assert worker_devices(2, ["0", "1"]) == ["0", "1"]
    assert worker_devices(2, []) == [None, None]  # no GPU: the environment is left alone
    assert worker_devices(3, ["2", "3"]) == ["2", "3", "2"]  # more workers than GPUs: round-robin
    with pytest.raises(ExecutorError, match="^--workers must be at least 1, got 0$"):
        worker_devices(0, [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert visible_gpus() == ["2", "3"]

    units = [BundleRun(n, ("train.json",), {}, ()) for n in ORDER]
    for gpus, expected in ((["0", "1"], {"0", "1"}), ([], set())):
        fake = SleepyUnits(sleep=dict.fromkeys(ORDER, 0.05))
        ex = LocalExecutor(2, gpus)
        outcomes, _ = run_units(ex, fake, tmp_path, tmp_path, units, say=lambda _: None)
        ex.close()
        assert {e.get("CUDA_VISIBLE_DEVICES") for e in fake.envs.values()} - {None} == expected
        assert [o.device for o in outcomes][:2] == (["0", "1"] if gpus else [None, None])  # the two first run together
        assert all(("CUDA_VISIBLE_DEVICES" in e) == bool(gpus) for e in fake.envs.values())


def test_the_device_reaches_the_bundle_command(tmp_path):
    from fairmonai.experiments.runs import _run

    log = tmp_path / "log.txt"
    _run(["sh", "-c", "echo gpu=$CUDA_VISIBLE_DEVICES path=${PATH:+set}"], tmp_path, log, False,
         {"CUDA_VISIBLE_DEVICES": "1"})
    assert log.read_text().splitlines()[1] == "gpu=1 path=set"  # added to the environment, not replacing it
    with pytest.raises(RunFailed) as e:
        _run(["sh", "-c", "exit 3"], tmp_path, log, False)
    assert str(e.value) == f"command failed (exit 3); see {log}" and e.value.log == log


def test_ray_missing_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    assert RAY_MISSING == ("the 'ray' executor needs Ray, an optional extra of fairmonai: pip install -e .[ray] "
                           "(or use --executor local)")
    with pytest.raises(ExecutorError) as e:
        make_executor("ray", 2)
    assert str(e.value) == RAY_MISSING
    with pytest.raises(ExecutorError, match=r"^unknown executor 'slurm'; expected one of \['local', 'ray'\]$"):
        make_executor("slurm", 1)
    bundle = _bundle(tmp_path)
    monkeypatch.setattr("fairmonai.experiments.runner.run_bundle_unit", SleepyUnits())
    assert main(["run", str(bundle), "two", "--out", str(tmp_path / "o"), "--executor", "ray"]) == 2
    assert capsys.readouterr().err == f"error: {RAY_MISSING}\n"
    assert not (tmp_path / "o").exists()  # nothing ran


def test_ray_runs_real_units_as_tasks(tmp_path):
    """A tiny grid through a local Ray instance with 2 CPUs: the units are real ``monai.bundle``
    commands of a bundle whose train and evaluate only write files."""
    ray = pytest.importorskip("ray")
    import shutil

    bundle = _bundle(tmp_path)
    train = {"imports": ["$import pathlib", "$import json"], "total_score": 0.5,
             "run": ["$pathlib.Path(@bundle_root, 'models').mkdir(exist_ok=True)"]}
    evaluate = {"eval_split": "test",
                "report_dir": "$pathlib.Path(@bundle_root, 'eval', 'report_' + @eval_split)",
                "run": ["$@report_dir.mkdir(parents=True, exist_ok=True)",
                        "$(@report_dir / 'report.json').write_text(json.dumps({'total_score': @total_score}))"]}
    (bundle / "configs" / "train.json").write_text(json.dumps(train))
    (bundle / "configs" / "evaluate.json").write_text(json.dumps(evaluate))
    shutil.copy(Path(__file__).resolve().parents[2] / "bundles" / "oct_glaucoma_fami" / "configs" / "logging.conf",
                bundle / "configs" / "logging.conf")
    exp = parse_experiment({**EXP, "configurations": {"base": {"configs": ["train.json"]}},
                            "overrides": {"total_score": 0.25}}, "two.json")
    ray.init(num_cpus=2)
    try:
        res = run_experiment(bundle, exp, tmp_path / "out", executor="ray", workers=2, echo=False)
    finally:
        ray.shutdown()
    assert res.rows["TS"].tolist() == [0.25, 0.25] and res.failed == {}
    assert res.timing["executor"] == "ray" and [u["status"] for u in res.timing["units"]] == ["done", "done"]
