"""Experiments that reproduce a paper's tables with a bundle, as data the bundle carries.

An experiment is a file ``<bundle>/experiments/<name>.json`` (format: :mod:`fairmonai.experiments.grid`):
configurations, seeds, folds, a grid, a selection step, the columns to tabulate and the plots. One
generic runner (:mod:`fairmonai.experiments.runner`, ``python -m fairmonai.experiments run <bundle>
<name> --out DIR``) runs each bundle run as a resumable unit (:mod:`fairmonai.experiments.runs`) on an executor
(:mod:`fairmonai.experiments.executors`: local processes or Ray tasks) and reads the columns from
its output files (:mod:`fairmonai.experiments.columns`).
"""

from .columns import ColumnError, column_value, csv_value, json_value
from .executors import ExecutorError, LocalExecutor, RayExecutor, make_executor, worker_devices
from .grid import Experiment, ExperimentFileError, PlannedRun, expand, list_experiments, load_experiment, parse_experiment
from .runner import ExperimentResult, run_experiment, summarise
from .runs import BundleNotFound, BundleRun, RunFailed, check_bundle, run_bundle_unit

__all__ = [
    "BundleNotFound",
    "BundleRun",
    "ColumnError",
    "Experiment",
    "ExperimentFileError",
    "ExperimentResult",
    "ExecutorError",
    "LocalExecutor",
    "RayExecutor",
    "PlannedRun",
    "RunFailed",
    "check_bundle",
    "column_value",
    "csv_value",
    "expand",
    "json_value",
    "list_experiments",
    "load_experiment",
    "make_executor",
    "parse_experiment",
    "run_bundle_unit",
    "run_experiment",
    "summarise",
    "worker_devices",
]
