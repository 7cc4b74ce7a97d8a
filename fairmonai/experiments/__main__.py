"""``python -m fairmonai.experiments``: run a bundle's experiment file, or list a bundle's experiments.

::

    python -m fairmonai.experiments list bundles/oct_glaucoma_fami
    python -m fairmonai.experiments run bundles/oct_glaucoma_fami demo --out demo_output
    python -m fairmonai.experiments run bundles/mama_mia_fairmedseg table1 --out runs/table1 --seeds 0 1 2 \\
        --set epochs=20 roi_size=[64,64,32]
    python -m fairmonai.experiments lambda-search bundles/isic2020_fairness_losses --method iou --out runs/iou_search

``lambda-search`` (optuna, the optional extra ``search``) searches a method overlay's ``fair_lambda``
(:mod:`fairmonai.experiments.lambda_search`); ``--trials``, ``--low``, ``--high``, ``--storage``,
``--seed``, ``--overlay`` and ``--set`` as below.

The bundle's folder is the first argument (a relative path is taken from the current directory); the
experiment is ``<bundle>/experiments/<name>.json`` (format: :mod:`fairmonai.experiments.grid`).
``--set KEY=VALUE`` overrides a bundle value in every run (VALUE read as JSON, else as text);
``--seeds`` replaces the file's seeds, ``--folds`` runs only some of its folds; ``--configurations`` runs only some of its configurations.
``--executor local|ray`` and ``--workers N`` choose where runs go and how many at once (they replace
the file's ``executor``; default local, 1; :mod:`fairmonai.experiments.executors`).
A second call with the same output folder only reads the finished runs and resumes an interrupted one.
The estimated grid time is printed first, then a progress line per change. At the end the summary
table is printed; the files written are listed under :mod:`fairmonai.experiments.runner`.
Exit status 1 when runs failed twice (they are named with their logs; the table holds the others),
2 on an error in the input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from .executors import EXECUTORS
from .grid import list_experiments, load_experiment
from .runner import run_experiment
from .runs import RunFailed, check_bundle

__all__ = ["main", "parse_set"]


def parse_set(items: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` items as overrides: VALUE parsed as JSON, else kept as text.

    Raises:
        InputError: an item without ``=`` or with an empty key.
    """
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got '{item}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairmonai.experiments",
                                     description="Run a bundle's experiment file (experiments/<name>.json).")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="the bundle's experiments and their descriptions")
    ls.add_argument("bundle", help="the bundle's folder")
    run = sub.add_parser("run", help="run an experiment and write its table")
    run.add_argument("bundle", help="the bundle's folder")
    run.add_argument("name", help="the experiment: <bundle>/experiments/<name>.json")
    run.add_argument("--out", required=True, help="output folder (one sub-folder per run, the tables)")
    run.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                     help="bundle override for every run (JSON values), e.g. epochs=20")
    run.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the file's seeds")
    run.add_argument("--folds", type=int, nargs="+", default=None, help="run only these of the file's folds")
    run.add_argument("--configurations", nargs="+", default=None, help="run only these configurations")
    run.add_argument("--overlay", nargs="+", action="extend", default=[], metavar="FILE",
                     help="config files of the bundle added to every run, e.g. data_mama_mia.json for the real data")
    run.add_argument("--executor", choices=EXECUTORS, default=None,
                     help="where runs go: local processes or Ray tasks (default: the file's, else local)")
    run.add_argument("--workers", type=int, default=None,
                     help="runs at once (local: one GPU each when there are GPUs; default: the file's, else 1)")
    search = sub.add_parser("lambda-search", help="search a method overlay's fair_lambda with Optuna (extra 'search')")
    search.add_argument("bundle", help="the bundle's folder")
    search.add_argument("--method", required=True, help="the overlay method_<METHOD>.json, e.g. iou")
    search.add_argument("--out", required=True, help="output folder (baseline, trials, study, search.csv/json/png)")
    search.add_argument("--trials", type=int, default=20, help="trials in the study in all (20)")
    search.add_argument("--low", type=float, default=0.1, help="smallest lambda (0.1)")
    search.add_argument("--high", type=float, default=1000.0, help="largest lambda (1000)")
    search.add_argument("--storage", default=None, help="Optuna storage URL (sqlite:///<out>/search.db)")
    search.add_argument("--seed", type=int, default=0, help="the sampler's and the runs' seed (0)")
    search.add_argument("--overlay", nargs="+", action="extend", default=[], metavar="FILE",
                        help="config files of the bundle added to every run, e.g. cpu.json")
    search.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="bundle override for every run (JSON values)")
    args = parser.parse_args(argv)
    try:
        bundle = check_bundle(args.bundle, option="the bundle argument")
        if args.command == "lambda-search":
            from .lambda_search import search_lambda

            result = search_lambda(bundle, args.out, method=args.method, n_trials=args.trials, low=args.low,
                                   high=args.high, storage=args.storage, seed=args.seed, overlays=args.overlay,
                                   overrides=parse_set(args.set))
            print(f"best fair_lambda {result['best_fair_lambda']:.6g} (validation sigma_IoU "
                  f"{result['best_sigma_iou']:.4f}, {result['n_trials']} trials); "
                  f"{Path(args.out) / 'search.json'}, search.csv, figure3.png")
            return 0
        if args.command == "list":
            for name, text in list_experiments(bundle).items():
                print(f"{name}: {text}")
            return 0
        exp = load_experiment(bundle, args.name)
        result = run_experiment(bundle, exp, args.out, seeds=args.seeds, configurations=args.configurations,
                                extra=parse_set(args.set), overlays=args.overlay, executor=args.executor,
                                workers=args.workers, folds=args.folds)
    except (InputError, RunFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n" + result.markdown.split("\nPer run:")[0].rstrip())
    print(f"\ntables: {Path(args.out) / (exp.name + '.md')}, {Path(args.out) / (exp.name + '.csv')}")
    if result.failed:
        print(f"error: {len(result.failed)} run(s) failed twice, their columns are empty: "
              + "; ".join(f"{name} (log: {log})" for name, log in result.failed.items()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
