"""Wall time of one small experiment grid through the runner's executors, and the runner's own share.

``python benchmarks/bench_grid_executors.py [--out DIR] [--configurations dn fami_dn vit fami_vit]
[--folds 0 1] [--set epochs=1 ...]``

Runs the OCT bundle's ``table2`` experiment (``bundles/oct_glaucoma_fami/experiments/table2.json``)
restricted to ``--configurations`` x ``--folds`` at the CPU grid size (``--overlay cpu_grid.json``) plus
``--set`` (default: 2 epochs, a 300-eye cohort, 10 bootstrap draws), once per executor setting, each in
a fresh output folder so that no unit is found finished:

* ``local`` with 1 worker, ``local`` with 2 workers, and ``ray`` with 2 tasks in flight on a local Ray
  instance of 2 CPUs (skipped without Ray).

For each it prints and writes to ``<out>/bench_grid_executors.json`` the grid's wall seconds, the sum
of the units' wall seconds, and the runner's own seconds (``runner_s`` of ``table2_timing.json``: its
time not spent waiting on units: expanding the grid, the estimate, progress lines, reading the
columns, writing the tables and the fold report) as a share of the wall time. Compare rows of one
machine only; the units themselves are ``monai.bundle run`` processes, so the executors differ only in
how they start and wait for them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "oct_glaucoma_fami"


def _one(kind: str, workers: int, out: Path, configurations, folds, extra) -> dict:
    from fairmonai.experiments.grid import load_experiment
    from fairmonai.experiments.runner import run_experiment

    if out.exists():
        shutil.rmtree(out)
    exp = load_experiment(BUNDLE, "table2")
    t0 = time.perf_counter()
    result = run_experiment(BUNDLE, exp, out, configurations=configurations, folds=folds, extra=extra,
                            overlays=["cpu_grid.json"], echo=False, executor=kind, workers=workers)
    wall = time.perf_counter() - t0
    t = result.timing
    units = sum(u["wall_s"] for u in t["units"])
    return {"executor": kind, "workers": workers, "units": len(t["units"]), "wall_s": round(wall, 1),
            "unit_wall_sum_s": round(units, 1), "runner_s": round(t["runner_s"], 2),
            "runner_fraction": round(t["runner_fraction"], 4), "failed": len(result.failed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_grid_executors_out")
    ap.add_argument("--configurations", nargs="+", default=["dn", "fami_dn", "vit", "fami_vit"])
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--set", nargs="+", default=["epochs=2", "cohort_size=300", "n_bootstrap=10"])
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    from fairmonai.experiments.__main__ import parse_set

    extra = parse_set(args.set)
    out = Path(args.out)
    rows = []
    settings = [("local", 1), ("local", 2)]
    if not args.skip_ray:
        try:
            import ray

            ray.init(num_cpus=2, include_dashboard=False)
            settings.append(("ray", 2))
        except ImportError:
            print("ray not installed: skipped")
    for kind, workers in settings:
        row = _one(kind, workers, out / f"{kind}_{workers}", args.configurations, args.folds, extra)
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "bench_grid_executors.json").write_text(json.dumps(
        {"configurations": args.configurations, "folds": args.folds, "set": args.set, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
