"""DN vs FaMI-DN on the synthetic OCT cohort over several seeds: AUC, EOM, EOdd on the test split.

Each seed is one :func:`fairmonai.bundle_demo.run_bundle_demo` (a fresh cohort drawn with that seed,
both models trained with the demo settings, the last model scored once on the test split). Runs that
already have both reports are reused, so the experiment resumes where it stopped. Prints the
per-seed values and mean +- sd, and writes them to ``--out/summary.json``.

    python benchmarks/experiment_oct_fami.py --seeds 0 1 2 --epochs 10 --out benchmarks/results/oct_fami

Diagnosis columns: ``dp_diff`` (demographic-parity difference of the test predictions) and ``mi_knn``,
the shared k-nearest-neighbour estimate of I(race; logits) that the penalty-curve logger records during
training, averaged over the last quarter of training. ``--prevalence 0.5`` draws a cohort whose
glaucoma prevalence is the same in every race (the race shortcut and the harder group stay), so that
independence of the logits from race no longer conflicts with predicting the label.

``--set key=value`` overrides any bundle config value on top of the demo settings, e.g. the paper's
batch of 64: ``--set batch_size=64 learning_rate=0.02 --epochs 30``. ``--models`` picks the pairs to
train (``dn fami_dn`` by default; ``vit fami_vit`` adds ``net_vit.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pandas as pd

from fairmonai.bundle_demo import ALL_MODELS, MODELS, run_bundle_demo

KEYS = {"auc": ("metrics", "auc", "overall"), "eom": ("disparities", "eom", "value"),
        "eodd": ("disparities", "eodd", "value"), "es_auc": ("disparities", "es_auc", "value"),
        "dp_diff": ("disparities", "dp_difference", "value")}
DIAGNOSTICS = ("mi_knn",)


def _mi_last_quarter(curve: Path) -> float:
    """Mean kNN estimate of I(race; logits) over the last quarter of the training log."""
    d = pd.read_csv(curve)
    return float(d["mi_knn"].iloc[3 * len(d) // 4:].mean())


def _value(report: dict, path: tuple) -> float:
    a, b, c = path
    return report["attributes"]["race"][a][b][c]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--bundle", default="bundles/oct_glaucoma_fami",
                        help="the bundle's folder (default: bundles/oct_glaucoma_fami, from the current directory)")
    parser.add_argument("--out", default="benchmarks/results/oct_fami")
    parser.add_argument("--prevalence", default=None,
                        help="synthetic_cohort prevalence override, e.g. 0.5 (default: the bundle's per-race values)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="bundle config overrides on top of the demo settings, e.g. batch_size=64")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(ALL_MODELS))
    args = parser.parse_args()
    out = Path(args.out)
    extra = {} if args.prevalence is None else {"synthetic_cohort#prevalence": args.prevalence}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        extra[key] = value
    models = {m: ALL_MODELS[m] for m in args.models}
    results: dict[str, dict[str, list]] = {m: {k: [] for k in (*KEYS, *DIAGNOSTICS)} for m in models}
    for seed in args.seeds:
        run_dir = out / f"seed{seed}"
        files = {m: run_dir / m / "eval" / "report_test" / "report.json" for m in models}
        if not all(f.is_file() for f in files.values()):
            run_bundle_demo(run_dir, epochs=args.epochs, seed=seed, extra=extra, models=models, reuse=True,
                            bundle=args.bundle)
        for m, f in files.items():
            rep = json.loads(f.read_text())
            for k, path in KEYS.items():
                results[m][k].append(_value(rep, path))
            results[m]["mi_knn"].append(_mi_last_quarter(run_dir / m / "eval" / "penalty_curve.csv"))
    cols = (*KEYS, *DIAGNOSTICS)
    print(f"\nseeds {args.seeds}, {args.epochs} epochs, test split, EOdd Black vs rest"
          + (f", prevalence {args.prevalence}" if args.prevalence else "")
          + "".join(f", {k}={v}" for k, v in extra.items() if k != "synthetic_cohort#prevalence"))
    print(f"{'model':<10}" + "".join(f"{k:>22}" for k in cols))
    for m, vals in results.items():
        cells = []
        for k in cols:
            v = [x for x in vals[k] if x is not None]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.3f} +- {sd:.3f}" if v else "n/a")
        print(f"{m:<10}" + "".join(f"{c:>22}" for c in cells))
        print(f"{'':<10}" + "".join(f"{' '.join(f'{x:.3f}' if x is not None else 'n/a' for x in vals[k]):>22}"
                                     for k in cols))
    (out / "summary.json").write_text(json.dumps({"seeds": args.seeds, "epochs": args.epochs,
                                                  "prevalence": args.prevalence, "overrides": extra, "results": results}, indent=2))


if __name__ == "__main__":
    main()
