"""``python -m fairmonai.experiments``: run a bundle's experiment file, or list a bundle's experiments.

::

    python -m fairmonai.experiments list bundles/oct_glaucoma_fami
    python -m fairmonai.experiments run bundles/oct_glaucoma_fami demo --out demo_output
    python -m fairmonai.experiments run bundles/mama_mia_fairmedseg table1 --out runs/table1 --seeds 0 1 2 \\
        --set epochs=20 roi_size=[64,64,32]

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
    args = parser.parse_args(argv)
    try:
        bundle = check_bundle(args.bundle, option="the bundle argument")
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
