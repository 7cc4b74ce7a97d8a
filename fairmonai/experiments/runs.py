"""One bundle run as a resumable unit: train, then evaluate on the asked splits, in its own folder.

A unit is a bundle, a list of config files (e.g. ``train.json`` plus overlays) and command-line
overrides. :func:`run_bundle_unit` runs it with ``python -m monai.bundle run`` in
``out_dir/<name>`` (the unit's ``bundle_root``) and keeps its state in ``unit.json`` there:

* a unit whose training finished is not trained again, and an evaluation whose report exists is not
  run again, so calling the same experiment twice costs nothing and a stopped experiment continues
  with the first unfinished unit;
* a unit whose training was interrupted (no "trained" mark, a ``models/checkpoint_*.pt`` present)
  continues from its last epoch with ``--resume True``: the bundles save model, optimiser and
  trainer state every epoch;
* a folder that holds a unit with other configs or overrides is an error, never silently reused.

The full output of each command goes to ``logs/<step>.log`` in the unit's folder (its first line the
command); lines holding the epoch metrics are echoed.

**How a command starts** (``FAIRMONAI_LAUNCHER``): ``fork`` (the default where the platform has a
fork server) runs ``monai.bundle``'s ``__main__`` on the command's arguments, in its folder, with its
output in the log, in a process forked from a server that imported torch, MONAI and fairmonai once;
``subprocess`` starts ``python -m monai.bundle run`` as a fresh interpreter. Both run the same code
on the same arguments; the fork skips the interpreter start and the imports (measured here: 7-8 s of
each command's 9-10 s on 2 idle cores for a tiny run, 78 commands in a 26-unit grid). CUDA is not
initialised in the server, so a child can still be given its GPU through ``CUDA_VISIBLE_DEVICES``;
``OMP_NUM_THREADS`` is applied with ``torch.set_num_threads``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

__all__ = ["BundleNotFound", "BundleRun", "RunFailed", "check_bundle", "run_bundle_unit", "bundle_command",
           "is_finished", "recorded_seconds", "launcher", "LAUNCHERS"]

#: Log lines echoed while a unit runs.
ECHO = ("Metrics --", "SubgroupReweighting: epoch", "written to", "Restored all variables")


class BundleNotFound(InputError):
    """A bundle path that is missing or is not a bundle folder (no ``configs/metadata.json``)."""


def check_bundle(bundle: str | Path, *, option: str = "--bundle") -> Path:
    """The absolute path of the bundle folder ``bundle`` (a relative path is taken from the current
    directory, never from the package's location).

    Raises:
        BundleNotFound: ``bundle`` does not exist or has no ``configs/metadata.json``; the message
            names the path and the option (``option``) that sets it.
    """
    path = Path(bundle).expanduser().resolve()
    if not path.is_dir():
        where = "" if Path(bundle).expanduser().is_absolute() else f" ('{bundle}' taken from the current directory)"
        raise BundleNotFound(f"bundle folder {path} does not exist{where}; pass the bundle's folder with {option}")
    if not (path / "configs" / "metadata.json").is_file():
        raise BundleNotFound(f"{path} is not a bundle folder: it has no configs/metadata.json; pass the bundle's "
                             f"folder with {option}")
    return path


class RunFailed(RuntimeError):
    """A bundle command of a unit exited with an error; the message names its log file, ``log`` holds it."""

    def __init__(self, message: str, log: str | Path | None = None):
        super().__init__(message)
        self.log = log

    def __reduce__(self):  # keeps ``log`` through pickling (process pools, Ray)
        return (RunFailed, (self.args[0], self.log))


@dataclass(frozen=True)
class BundleRun:
    """A unit: ``configs`` (file names in ``bundle/configs``) and ``overrides`` (``--key value``).

    Args:
        name: folder name of the unit under the experiment's output folder.
        configs: config files, in merge order, e.g. ``["train.json", "method_fairmedseg.json"]``.
        overrides: command-line overrides; values are JSON-encoded unless they are strings.
        eval_splits: splits evaluated after training (each with ``evaluate.json`` and
            ``--eval_split <split>``), e.g. ``("test",)`` or ``("val",)``.
    """

    name: str
    configs: tuple[str, ...]
    overrides: Mapping[str, object] = field(default_factory=dict)
    eval_splits: tuple[str, ...] = ("test",)

    def spec(self) -> dict:
        return {"configs": list(self.configs), "overrides": {k: _text(v) for k, v in sorted(self.overrides.items())}}


def _text(v: object) -> str:
    """A value as recorded in ``unit.json`` (JSON)."""
    return v if isinstance(v, str) else json.dumps(v)


def _cli(v: object) -> str:
    """A value on the command line: ``monai.bundle run`` reads its arguments with fire, which parses
    Python literals, so ``False`` stays a bool where JSON's ``false`` would become the string 'false'."""
    return v if isinstance(v, str) else repr(v)


def bundle_command(bundle: Path, configs: Sequence[str], root: Path, overrides: Mapping[str, object]) -> list[str]:
    """The ``python -m monai.bundle run`` command line of ``configs`` of ``bundle`` in ``root``."""
    files = "[" + ",".join(f"'{bundle / 'configs' / c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files,
           "--meta_file", str(bundle / "configs" / "metadata.json"),
           "--logging_file", str(bundle / "configs" / "logging.conf"), "--bundle_root", str(root)]
    for k, v in overrides.items():
        cmd += [f"--{k}", _cli(v)]
    return cmd


#: How bundle commands start: see the module docstring.
LAUNCHERS = ("fork", "subprocess")
#: Modules the fork server imports once.
PRELOAD = ("torch", "monai", "monai.bundle", "ignite.engine", "fairmonai",
           "fairmonai.data", "fairmonai.handlers", "fairmonai.losses", "fairmonai.networks", "fairmonai.bundle_run")
_FORK_CONTEXT = None


def launcher() -> str:
    """The launcher of this process: ``FAIRMONAI_LAUNCHER``, else ``fork`` where a fork server exists.

    Raises:
        InputError: an unknown ``FAIRMONAI_LAUNCHER``.
    """
    import multiprocessing as mp

    kind = os.environ.get("FAIRMONAI_LAUNCHER")
    if kind is None:
        return "fork" if "forkserver" in mp.get_all_start_methods() else "subprocess"
    if kind not in LAUNCHERS:
        raise InputError(f"FAIRMONAI_LAUNCHER={kind!r}: expected one of {list(LAUNCHERS)}")
    return kind


def _fork_context():
    """The fork-server context, its server importing :data:`PRELOAD` (started on first use)."""
    global _FORK_CONTEXT
    if _FORK_CONTEXT is None:
        import multiprocessing as mp

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))
        _FORK_CONTEXT = ctx
    return _FORK_CONTEXT


def _bundle_main(args: list[str], cwd: str, log: str, env: Mapping[str, str]) -> None:
    """In the forked child: output to ``log``, environment, folder and argv as ``python -m monai.bundle`` would
    have them, then ``monai.bundle``'s ``__main__``; its exit status becomes the child's."""
    import runpy

    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:
        import torch

        torch.set_num_threads(max(1, int(env["OMP_NUM_THREADS"])))
    os.chdir(cwd)
    sys.argv = [str(Path(sys.modules["monai.bundle"].__file__).parent / "__main__.py"), *args]
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _echo_new_lines(f, echo: bool) -> None:
    for line in f:
        if echo and any(s in line for s in ECHO):
            print("    " + line.split(" - INFO - ")[-1].rstrip(), flush=True)


def _run_forked(cmd: list[str], cwd: Path, log: Path, echo: bool, env: Mapping[str, str] | None) -> None:
    proc = _fork_context().Process(target=_bundle_main, args=(cmd[3:], str(cwd), str(log), dict(env or {})))
    proc.start()
    try:
        with open(log) as f:
            f.readline()  # the command line the parent wrote
            while proc.is_alive():
                proc.join(0.5)
                _echo_new_lines(f, echo)
            _echo_new_lines(f, echo)
    finally:
        if proc.is_alive():  # interrupted: the unit resumes from its checkpoint next time
            proc.terminate()
            proc.join()
    if proc.exitcode != 0:
        raise RunFailed(f"command failed (exit {proc.exitcode}); see {log}", log=log)


def _run(cmd: list[str], cwd: Path, log: Path, echo: bool, env: Mapping[str, str] | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    if launcher() == "fork" and cmd[1:3] == ["-m", "monai.bundle"]:  # other commands: a plain subprocess
        log.write_text("$ " + shlex.join(cmd) + "\n")
        _run_forked(cmd, cwd, log, echo, env)
        return
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **env} if env else None)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            if echo and any(s in line for s in ECHO):
                print("    " + line.split(" - INFO - ")[-1].rstrip(), flush=True)
        if proc.wait() != 0:
            raise RunFailed(f"command failed (exit {proc.returncode}); see {log}", log=log)


def _state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def is_finished(out_dir: str | Path, run: BundleRun) -> bool:
    """Whether ``out_dir/<run.name>`` holds this unit (same spec) trained and evaluated on all its splits,
    so that :func:`run_bundle_unit` would only read it."""
    root = Path(out_dir) / run.name
    state = _state(root / "unit.json")
    return (state.get("spec") == run.spec() and bool(state.get("trained"))
            and all((root / "eval" / f"report_{s}" / "report.json").is_file() for s in run.eval_splits))


def recorded_seconds(out_dir: str | Path) -> list[float]:
    """The wall seconds that finished units in ``out_dir`` recorded (``seconds`` of their ``unit.json``:
    training, summed over resumes, plus each evaluation), one total per trained unit."""
    totals = []
    for f in sorted(Path(out_dir).glob("*/unit.json")):
        try:
            state = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if state.get("trained") and "train" in state.get("seconds", {}):
            totals.append(float(sum(state["seconds"].values())))
    return totals


def run_bundle_unit(bundle: str | Path, out_dir: str | Path, run: BundleRun, *, echo: bool = True,
                    env: Mapping[str, str] | None = None) -> dict[str, dict]:
    """Train ``run`` (unless done), evaluate it on ``run.eval_splits`` (unless done); return the reports.

    ``env`` adds environment variables to the bundle commands (e.g. ``CUDA_VISIBLE_DEVICES``). The
    wall seconds of each command are recorded in ``unit.json`` (``seconds``: ``train``, summed over
    resumes, and ``evaluate_<split>``), which the runner's time estimate reads.

    Returns:
        ``{split: report}``, the ``report.json`` that ``evaluate.json`` wrote to
        ``eval/report_<split>/`` of the unit's folder, with ``scores_file`` added: the per-case CSV of
        a segmentation bundle (``eval/scores_<split>.csv``), or ``None``.

    Raises:
        ValueError: the unit's folder holds a unit with other configs or overrides.
        RunFailed: a bundle command failed (its log is named).
    """
    bundle = Path(bundle).resolve()
    root = (Path(out_dir) / run.name).resolve()
    root.mkdir(parents=True, exist_ok=True)
    state_file = root / "unit.json"
    state = _state(state_file)
    if state and state.get("spec") != run.spec():
        raise ValueError(
            f"{root} holds a run with other settings ({state.get('spec')}); this one is {run.spec()}. "
            "Use another output folder or remove it."
        )
    if not state:  # record the spec before training, so an interrupted folder is not resumed with others
        state = {"spec": run.spec()}
        _save_state(state_file, state)
    if not state.get("trained"):
        resume = any((root / "models").glob("checkpoint_*.pt"))
        print(f"  {run.name}: {'resuming' if resume else 'training'}", flush=True)
        overrides = dict(run.overrides, **({"resume": True} if resume else {}))
        t0 = time.perf_counter()
        try:
            _run(bundle_command(bundle, run.configs, root, overrides), root, root / "logs" / "train.log", echo, env)
        finally:  # an interrupted training's time counts too: the resumed one only adds the rest
            seconds = state.setdefault("seconds", {})
            seconds["train"] = seconds.get("train", 0.0) + time.perf_counter() - t0
            _save_state(state_file, state)
        state["trained"] = True
        _save_state(state_file, state)
    reports = {}
    for split in run.eval_splits:
        report = root / "eval" / f"report_{split}" / "report.json"
        if not report.is_file():
            print(f"  {run.name}: evaluating on {split}", flush=True)
            t0 = time.perf_counter()
            _run(bundle_command(bundle, [*run.configs, "evaluate.json"], root, dict(run.overrides, eval_split=split)),
                 root, root / "logs" / f"evaluate_{split}.log", echo, env)
            state.setdefault("seconds", {})[f"evaluate_{split}"] = time.perf_counter() - t0
            _save_state(state_file, state)
        rep = json.loads(report.read_text())
        per_case = root / "eval" / f"scores_{split}.csv"  # segmentation bundles' per-case scores
        rep["scores_file"] = str(per_case) if per_case.is_file() else None
        reports[split] = rep
    state["evaluated"] = sorted(set(state.get("evaluated", [])) | set(run.eval_splits))
    _save_state(state_file, state)
    return reports
