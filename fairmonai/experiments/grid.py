"""Experiment files: a paper's grid as data the bundle carries, ``<bundle>/experiments/<name>.json``.

An experiment file says which bundle runs make up a table and what to read from each; the one
generic runner (:mod:`fairmonai.experiments.runner`, ``python -m fairmonai.experiments run``) trains
and evaluates them as resumable units (:mod:`fairmonai.experiments.runs`) and writes the table. The
format (keys not listed here are errors)::

    {
      "description": "what the experiment reproduces, and its settings",           (required)
      "configurations": {                                                         (required)
        "<name>": {"configs": ["train.json", "method_x.json"],                    (required, in merge order)
                   "overrides": {"<key>": <value>}}                               (optional)
      },
      "default_configurations": ["<name>"], those run when the command names none (default: all)
      "seeds": [0, 1, 2],              every run gets --seed <seed>                (required)
      "folds": [0, 1],                 every run gets --fold <fold>                (optional)
      "grid": {"<key>": [<v1>, <v2>]}, every configuration at every point of the   (optional)
                                       product of these override values
      "overrides": {"<key>": <value>}, every run                                  (optional)
      "splits": ["test"],              evaluated for every run                     (default ["test"])
      "select": {"column": "TS", "split": "val", "goal": "max", "then": ["test"]}, (optional, needs "grid")
      "columns": {"<column>": <source>},                                          (required)
      "transpose": false,              print the summary with one column per configuration
      "notes": ["how to read the table"],  lines printed (and written) after the summary table;
                                       ``{out}`` is the output folder                            (optional)
      "outputs": ["eval/report_{split}/report.md", "eval/report_{split}/*.png"],
                                       files of each run (globs in its folder) listed after the
                                       table, per run and evaluated split                        (optional)
      "plots": [{"kind": "dice_heatmap_comparison", "file": "eval/scores_test.csv",
                 "base": "<configuration>", "method": "<configuration>", "out": "heatmaps/unet"},
                {"kind": "vae_representation", "out": "figures", "min_images": 5}],
      "executor": {"kind": "local", "workers": 2,   where runs go (--executor, --workers win)   (default local, 1)
                   "cpus_per_run": 1, "gpus_per_run": 1},   Ray's resources per run (default 1 CPU; 1 GPU if any)
      "seconds_per_run": 600,          estimated wall time of one run, printed as the grid's estimate
                                       until runs in the output folder recorded their own   (optional)
      "fold_report": {...}             a k-fold comparison report (the FaMI paper's Table 2 and
                                       Figures 2-3), needs "folds" (optional; see below)
    }

**Overrides** are the bundle's ``--key value`` arguments; a later source wins: ``overrides``, then the
configuration's ``overrides``, then the grid point, then ``--set`` of the command line. A string
value may hold ``{out}`` (the experiment's output folder, absolute), ``{seed}`` and ``{fold}``, e.g.
``"dataset_dir": "{out}/data/seed{seed}"`` so that all runs of a seed share one synthetic cohort.
``seed`` and ``fold`` are set only through ``seeds`` and ``folds``.

**Runs.** One run per (seed, fold, configuration, grid point), in that order, in the folder
``<configuration>[_<key><value>...]_seed<seed>[_fold<fold>]`` of the output folder (characters
other than letters, digits, ``.``, ``_`` and ``-`` become ``-``).

**Selection** (a sweep chosen on validation): every run is scored on ``splits``, which must hold
``select.split``; per (configuration, seed, fold), the grid point with the largest (``goal``
``"max"``) or smallest (``"min"``) value of ``select.column`` on ``select.split`` is chosen (ties:
the first in grid order), and only the chosen run is then evaluated on the ``then`` splits (which
``splits`` must not hold: the test split is scored once, for the chosen point only).

**Columns.** Each column is read from a file of a run's folder, ``{split}`` in its path naming the
split of the row (one table row per run and evaluated split):

* ``{"json": "eval/report_{split}/report.json", "key": "attributes.race.disparities.eom.value"}``:
  the value at a dot-separated key path (a number or ``null``, shown ``n/a``); with
  ``"ci": "attributes.race.disparities.eom.ci"`` also the interval ``[low, high]`` at that key path
  (the table gets ``<column>_ci_low`` and ``<column>_ci_high``; a summary cell of one run shows
  ``value [low, high]``, a cell pooled over seeds or folds the mean and sd only);
* ``{"csv": "eval/scores_{split}.csv", "column": "dice", "reduce": "mean"}``: a reduction (``mean``,
  ``sum``, ``min``, ``max``, ``last`` or ``count``) of a CSV column over its rows, optionally only the
  rows whose columns equal all of ``"where": {"age_group": "61-70", "breast_density": "b"}``, not
  those equal to all of ``"unless": {...}``, and from row ``floor(from_fraction * n)`` on
  (``"from_fraction": 0.75``: the last quarter of a training curve).

**Fold report.** With ``fold_report`` (settings: :func:`fairmonai.reports.fold_report.check_fold_report_settings`)
the runner writes :func:`fairmonai.reports.fold_report.write_fold_report` into ``<out>/fold_report``
after the grid. Its ``test_column`` ``"retrain"`` adds one unit per (configuration, seed): the
configuration trained on the whole training part (``--train_split trainval``, no ``--fold``), folder
``<configuration>_seed<seed>_all``, scored on the test split only; its rows have ``fold`` -1.

**Plots.** ``vae_representation`` (:func:`fairmonai.reports.write_vae_report`) pools every run that
finished (the A/B/C x repeats design of the Fitzpatrick17k VAE bundle) into its figures and tests in
``out``. ``dice_heatmap_comparison``
(:func:`fairmonai.reports.dice_heatmap_comparison`) pools the ``file`` of every run of the
``base`` and of the ``method`` configuration and writes the heatmaps to ``out`` in the output folder.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .runs import BundleRun

__all__ = [
    "ExperimentFileError",
    "Experiment",
    "Configuration",
    "Selection",
    "PlannedRun",
    "REDUCTIONS",
    "PLOT_KINDS",
    "experiment_file",
    "list_experiments",
    "load_experiment",
    "parse_experiment",
    "expand",
]

TOP_KEYS = ("description", "configurations", "default_configurations", "seeds", "folds", "grid", "overrides", "splits", "select", "columns",
            "transpose", "plots", "executor", "seconds_per_run", "fold_report", "notes", "outputs")
EXECUTOR_KEYS = ("kind", "workers", "cpus_per_run", "gpus_per_run")
REQUIRED_KEYS = ("description", "configurations", "seeds", "columns")
CONFIGURATION_KEYS = ("configs", "overrides")
SELECT_KEYS = ("column", "split", "goal", "then")
JSON_SOURCE_KEYS = ("json", "key", "ci")
CSV_SOURCE_KEYS = ("csv", "column", "reduce", "where", "unless", "from_fraction")
#: keys each plot kind requires, and those it may have besides (no other key is accepted).
PLOT_REQUIRED = {"dice_heatmap_comparison": ("kind", "file", "base", "method", "out"),
                 "vae_representation": ("kind", "out")}
PLOT_OPTIONAL = {"dice_heatmap_comparison": (), "vae_representation": ("min_images",)}
#: every key some plot kind takes.
PLOT_KEYS = tuple(dict.fromkeys(k for kind in PLOT_REQUIRED for k in PLOT_REQUIRED[kind] + PLOT_OPTIONAL[kind]))
#: Reductions of a CSV column.
REDUCTIONS = ("mean", "sum", "min", "max", "last", "count")
#: Plot kinds of ``plots``.
PLOT_KINDS = tuple(PLOT_REQUIRED)
#: Overrides the runner sets itself (from ``seeds`` and ``folds``).
RESERVED = ("seed", "fold")


class ExperimentFileError(InputError):
    """An experiment file that is missing, not JSON, or breaks the format; the message names the file
    and the key at fault."""


@dataclass(frozen=True)
class Configuration:
    """One named configuration: config files in merge order and its own overrides."""

    name: str
    configs: tuple[str, ...]
    overrides: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    """Choose the grid point maximising (``goal="max"``) ``column`` on ``split``; score it on ``then``."""

    column: str
    split: str
    goal: str
    then: tuple[str, ...]


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file (see the module docstring for the meaning of each field)."""

    name: str
    path: Path
    description: str
    configurations: dict[str, Configuration]
    default_configurations: tuple[str, ...]
    seeds: tuple[int, ...]
    folds: tuple[int, ...] | None
    grid: dict[str, tuple]
    overrides: dict[str, object]
    splits: tuple[str, ...]
    select: Selection | None
    columns: dict[str, dict]
    transpose: bool
    plots: tuple[dict, ...]
    executor: Mapping[str, object] = field(default_factory=dict)
    seconds_per_run: float | None = None
    fold_report: Mapping[str, object] | None = None
    notes: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedRun:
    """One run of an experiment: where it sits in the grid and the unit that runs it."""

    configuration: str
    point: Mapping[str, object]
    seed: int
    fold: int | None
    unit: BundleRun

    @property
    def group(self) -> tuple:
        """What the seeds and folds of a selection or summary are pooled over: configuration and point."""
        return (self.configuration, *self.point.values())


def _fail(path: Path, where: str, message: str) -> ExperimentFileError:
    return ExperimentFileError(f"{path}: {where}: {message}" if where else f"{path}: {message}")


def _keys(path: Path, where: str, obj: object, allowed: Sequence[str], required: Sequence[str] = ()) -> dict:
    if not isinstance(obj, dict):
        raise _fail(path, where, f"expected an object, got {type(obj).__name__}")
    for k in obj:
        if k not in allowed:
            raise _fail(path, where, f"unknown key '{k}'; expected one of {list(allowed)}")
    for k in required:
        if k not in obj:
            raise _fail(path, where, f"missing key '{k}'")
    return obj


def _str_list(path: Path, where: str, obj: object, *, empty: bool = False) -> tuple[str, ...]:
    if not isinstance(obj, list) or not all(isinstance(x, str) and x for x in obj) or (not obj and not empty):
        raise _fail(path, where, f"expected a {'' if empty else 'non-empty '}list of names, got {obj!r}")
    return tuple(obj)


def _int_list(path: Path, where: str, obj: object) -> tuple[int, ...]:
    if not isinstance(obj, list) or not obj or not all(isinstance(x, int) and not isinstance(x, bool) for x in obj):
        raise _fail(path, where, f"expected a non-empty list of integers, got {obj!r}")
    if len(set(obj)) != len(obj):
        raise _fail(path, where, f"repeated value in {obj!r}")
    return tuple(obj)


def _overrides(path: Path, where: str, obj: object) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise _fail(path, where, f"expected an object of bundle overrides, got {type(obj).__name__}")
    for k in obj:
        if k in RESERVED:
            raise _fail(path, where, f"'{k}' is set by '{k}s'; remove it here")
    return dict(obj)


def _column_source(path: Path, where: str, src: object) -> dict:
    if isinstance(src, dict) and "json" in src:
        _keys(path, where, src, JSON_SOURCE_KEYS, ("json", "key"))
        for k in ("key", "ci"):
            if k in src and (not isinstance(src[k], str) or not src[k]):
                raise _fail(path, f"{where}.{k}", f"expected a dot-separated key path, got {src[k]!r}")
    elif isinstance(src, dict) and "csv" in src:
        _keys(path, where, src, CSV_SOURCE_KEYS, ("csv", "column", "reduce"))
        if src["reduce"] not in REDUCTIONS:
            raise _fail(path, where + ".reduce", f"unknown reduction {src['reduce']!r}; expected one of {list(REDUCTIONS)}")
        for k in ("where", "unless"):
            if k in src and (not isinstance(src[k], dict) or not src[k]
                             or not all(isinstance(v, str) for v in src[k].values())):
                raise _fail(path, f"{where}.{k}", f"expected a non-empty object of column: text value, got {src[k]!r}")
        f = src.get("from_fraction", 0)
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise _fail(path, where + ".from_fraction", f"expected a number in [0, 1), got {f!r}")
    else:
        raise _fail(path, where, "expected an object with a 'json' or a 'csv' file")
    if not isinstance(src[next(iter(src))], str):
        raise _fail(path, where, "the file must be a path relative to the run's folder")
    return dict(src)


def parse_experiment(data: object, path: str | Path, *, bundle: str | Path | None = None) -> Experiment:
    """Validate the parsed JSON ``data`` of the experiment file ``path``.

    With ``bundle``, every config file named must exist in ``bundle/configs``.

    Raises:
        ExperimentFileError: a key is unknown, missing or of the wrong kind; the message names ``path``
            and the key (e.g. ``configurations.dn.configs``).
    """
    path = Path(path)
    d = _keys(path, "", data, TOP_KEYS, REQUIRED_KEYS)
    if not isinstance(d["description"], str) or not d["description"].strip():
        raise _fail(path, "description", "expected a non-empty text")
    confs = d["configurations"]
    if not isinstance(confs, dict) or not confs:
        raise _fail(path, "configurations", "expected an object with at least one configuration")
    configurations = {}
    for name, c in confs.items():
        where = f"configurations.{name}"
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise _fail(path, where, "a configuration name may hold only letters, digits, '.', '_' and '-'")
        _keys(path, where, c, CONFIGURATION_KEYS, ("configs",))
        files = _str_list(path, where + ".configs", c["configs"])
        if bundle is not None:
            for f in files:
                if not (Path(bundle) / "configs" / f).is_file():
                    raise _fail(path, where + ".configs", f"no file '{f}' in {Path(bundle) / 'configs'}")
        configurations[name] = Configuration(name, files, _overrides(path, where + ".overrides",
                                                                     c.get("overrides", {})))
    defaults = _str_list(path, "default_configurations", d.get("default_configurations", list(configurations)))
    for n in defaults:
        if n not in configurations:
            raise _fail(path, "default_configurations", f"'{n}' is not one of the configurations {list(configurations)}")
    seeds = _int_list(path, "seeds", d["seeds"])
    folds = _int_list(path, "folds", d["folds"]) if "folds" in d else None
    overrides = _overrides(path, "overrides", d.get("overrides", {}))
    grid = {}
    for k, values in _overrides(path, "grid", d.get("grid", {})).items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"grid.{k}", f"expected a non-empty list of values, got {values!r}")
        grid[k] = tuple(values)
    splits = _str_list(path, "splits", d.get("splits", ["test"]))
    columns = d["columns"]
    if not isinstance(columns, dict) or not columns:
        raise _fail(path, "columns", "expected an object with at least one column")
    columns = {name: _column_source(path, f"columns.{name}", src) for name, src in columns.items()}
    select = None
    if "select" in d:
        s = _keys(path, "select", d["select"], SELECT_KEYS, SELECT_KEYS)
        if not grid:
            raise _fail(path, "select", "a selection chooses among grid points; the file has no 'grid'")
        if s["column"] not in columns:
            raise _fail(path, "select.column", f"'{s['column']}' is not one of the columns {list(columns)}")
        if s["split"] not in splits:
            raise _fail(path, "select.split", f"'{s['split']}' is not one of the evaluated splits {list(splits)}")
        if s["goal"] not in ("max", "min"):
            raise _fail(path, "select.goal", f"expected 'max' or 'min', got {s['goal']!r}")
        then = _str_list(path, "select.then", s["then"], empty=True)
        scored = [x for x in then if x in splits]
        if scored:
            raise _fail(path, "select.then", f"'{scored[0]}' is also in 'splits', so every grid point would be "
                                             "scored on it; list it only in 'then'")
        select = Selection(s["column"], s["split"], s["goal"], then)
    transpose = d.get("transpose", False)
    if not isinstance(transpose, bool):
        raise _fail(path, "transpose", f"expected true or false, got {transpose!r}")
    plots = []
    for i, p in enumerate(d.get("plots", [])):
        where = f"plots[{i}]"
        _keys(path, where, p, PLOT_KEYS, ("kind",))
        if p["kind"] not in PLOT_KINDS:
            raise _fail(path, where + ".kind", f"unknown plot kind {p['kind']!r}; expected one of {list(PLOT_KINDS)}")
        _keys(path, where, p, PLOT_REQUIRED[p["kind"]] + PLOT_OPTIONAL[p["kind"]], PLOT_REQUIRED[p["kind"]])
        for k in ("base", "method") if p["kind"] == "dice_heatmap_comparison" else ():
            if p[k] not in configurations:
                raise _fail(path, f"{where}.{k}", f"'{p[k]}' is not one of the configurations {list(configurations)}")
        plots.append(dict(p))
    executor = dict(_keys(path, "executor", d.get("executor", {}), EXECUTOR_KEYS))
    if "kind" in executor and executor["kind"] not in ("local", "ray"):
        raise _fail(path, "executor.kind", f"unknown executor {executor['kind']!r}; expected one of ['local', 'ray']")
    if "workers" in executor and (isinstance(executor["workers"], bool) or not isinstance(executor["workers"], int)
                                  or executor["workers"] < 1):
        raise _fail(path, "executor.workers", f"expected an integer of at least 1, got {executor['workers']!r}")
    for k, low in (("cpus_per_run", "above 0"), ("gpus_per_run", "of at least 0"), ("seconds_per_run", "above 0")):
        v = (d if k == "seconds_per_run" else executor).get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                              or (v == 0 and low == "above 0")):
            raise _fail(path, k if k == "seconds_per_run" else f"executor.{k}", f"expected a number {low}, got {v!r}")
    fold_report = None
    if "fold_report" in d:
        if folds is None:
            raise _fail(path, "fold_report", "a fold report compares fold models; the file has no 'folds'")
        from ..reports.fold_report import check_fold_report_settings

        try:
            fold_report = check_fold_report_settings(d["fold_report"], list(configurations), where=f"{path}: fold_report")
        except ValueError as e:
            raise ExperimentFileError(str(e)) from None
    texts = {}
    for k in ("notes", "outputs"):
        v = d.get(k, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            raise _fail(path, k, f"expected a list of non-empty texts, got {v!r}")
        texts[k] = tuple(v)
    for i, pattern in enumerate(texts["outputs"]):
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise _fail(path, f"outputs[{i}]", f"expected a path inside the run's folder, got {pattern!r}")
    return Experiment(path.stem, path, d["description"], configurations, defaults, seeds, folds, grid, overrides, splits,
                      select, columns, transpose, tuple(plots), executor, d.get("seconds_per_run"), fold_report,
                      texts["notes"], texts["outputs"])


def experiment_file(bundle: str | Path, name: str) -> Path:
    """The file of experiment ``name`` of ``bundle``: ``bundle/experiments/<name>.json``.

    Raises:
        ExperimentFileError: no such file; the message lists the bundle's experiments.
    """
    path = Path(bundle) / "experiments" / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (Path(bundle) / "experiments").glob("*.json"))
        raise ExperimentFileError(f"{path}: no such experiment file; the bundle's experiments: {known}")
    return path


def load_experiment(bundle: str | Path, name: str) -> Experiment:
    """Read and validate experiment ``name`` of ``bundle`` (see :func:`parse_experiment`).

    Raises:
        ExperimentFileError: the file is missing, is not JSON, or breaks the format.
    """
    path = experiment_file(bundle, name)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ExperimentFileError(f"{path}: not valid JSON: {e}") from None
    return parse_experiment(data, path, bundle=bundle)


def list_experiments(bundle: str | Path) -> dict[str, str]:
    """``{name: description}`` of the experiment files of ``bundle``, by name.

    Raises:
        ExperimentFileError: a file is not valid (the message names it).
    """
    return {p.stem: load_experiment(bundle, p.stem).description
            for p in sorted((Path(bundle) / "experiments").glob("*.json"))}


def _fill(value: object, names: Mapping[str, str]) -> object:
    """``value`` with ``{out}``, ``{seed}``, ``{fold}`` replaced in its strings (nested ones too)."""
    if isinstance(value, str):
        for k, v in names.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


def _label(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _folder(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)


def expand(exp: Experiment, out: str | Path, *, seeds: Sequence[int] | None = None,
           configurations: Sequence[str] | None = None, extra: Mapping[str, object] | None = None,
           overlays: Sequence[str] = (), folds: Sequence[int] | None = None) -> list[PlannedRun]:
    """The runs of ``exp``: one per (seed, fold, configuration, grid point), in that order, then the
    retrained whole-training-part units of a fold report whose ``test_column`` is ``"retrain"``
    (``fold`` -1).

    Each unit is evaluated on ``exp.splits``. ``seeds`` replaces the file's seeds, ``folds`` its folds
    (each must be one of them), ``configurations`` the file's ``default_configurations``, ``extra``
    (``--set``) overrides every run last, and ``overlays`` (``--overlay``, config files of the bundle
    such as a real-data overlay ``data_mama_mia.json``) follow every configuration's own config files.

    Raises:
        ExperimentFileError: an unknown configuration or fold, or ``extra`` setting ``seed``, ``fold`` or
            a grid key.
    """
    if folds is not None:
        unknown = [f for f in folds if exp.folds is None or f not in exp.folds]
        if unknown:
            raise ExperimentFileError(f"{exp.path}: --folds {unknown}: not among the file's folds "
                                      f"{list(exp.folds) if exp.folds else '(none)'}")
    out = str(Path(out).resolve())
    names = list(exp.default_configurations if configurations is None else configurations)
    for n in names:
        if n not in exp.configurations:
            raise ExperimentFileError(f"{exp.path}: no configuration '{n}'; expected one of {list(exp.configurations)}")
    extra = dict(extra or {})
    for k in extra:
        if k in RESERVED:
            raise ExperimentFileError(f"--set {k}=...: '{k}' is set by the experiment's {k}s"
                                      + (" (use --seeds)" if k == "seed" else ""))
        if k in exp.grid:
            raise ExperimentFileError(f"--set {k}=...: '{k}' is a grid key of {exp.path}; it takes the values "
                                      f"{list(exp.grid[k])}")
    runs = []
    for seed in exp.seeds if seeds is None else seeds:
        for fold in (folds if folds is not None else exp.folds) or (None,):
            fill = {"out": out, "seed": str(seed), "fold": "" if fold is None else str(fold)}
            for name in names:
                conf = exp.configurations[name]
                for values in itertools.product(*exp.grid.values()):
                    point = dict(zip(exp.grid, values))
                    folder = name + "".join(f"_{k}{_label(v)}" for k, v in point.items()) + f"_seed{seed}"
                    folder = _folder(folder + ("" if fold is None else f"_fold{fold}"))
                    overrides = {**exp.overrides, **conf.overrides, **point, **extra}
                    overrides = {k: _fill(v, fill) for k, v in overrides.items()}
                    overrides["seed"] = seed
                    if fold is not None:
                        overrides["fold"] = fold
                    runs.append(PlannedRun(name, point, seed, fold,
                                           BundleRun(folder, (*conf.configs, *overlays), overrides, exp.splits)))
    if exp.fold_report is not None and exp.fold_report.get("test_column") == "retrain":
        for seed in exp.seeds if seeds is None else seeds:
            fill = {"out": out, "seed": str(seed), "fold": "all"}
            for name in names:
                conf = exp.configurations[name]
                overrides = {k: _fill(v, fill) for k, v in {**exp.overrides, **conf.overrides, **extra}.items()}
                overrides.update(seed=seed, train_split="trainval")
                runs.append(PlannedRun(name, {}, seed, -1, BundleRun(_folder(f"{name}_seed{seed}_all"),
                                                                     (*conf.configs, *overlays), overrides, ("test",))))
    return runs
