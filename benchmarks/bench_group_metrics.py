"""Group rates and disparities on a million predictions: fairmonai vs fairlearn's MetricFrame.

Draws seeded binary labels, predictions and three group codes; computes per-group TPR, FPR and
selection rate with their between-group differences and ratios, the demographic parity difference
and the equalized odds difference, once with :func:`fairmonai.metrics._group_rates.group_rates`
(one ``bincount`` pass) and once with ``fairlearn.metrics.MetricFrame`` on the same arrays; checks
that every value agrees to 1e-12; prints the median wall time of each and the speedup. A second
row times the public one-number functions (``demographic_parity_difference`` +
``equalized_odds_difference``) of both libraries.

    python benchmarks/bench_group_metrics.py [--n 1000000] [--groups 3] [--repeats 15]
        [--fairlearn-repeats 3] [--seed 0] [--json benchmarks/results/bench_group_metrics.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from fairmonai.metrics import (
    demographic_parity_difference,
    equalized_odds_difference,
    group_rates,
)

RATES = ("tpr", "fpr", "selection_rate")


def make_data(n: int, groups: int, seed: int):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    y = (rng.random(n) < 0.3 + 0.1 * g).astype(np.int64)
    p = np.where(rng.random(n) < 0.8 - 0.05 * g, y, 1 - y)
    return y, p, g


def ours_frame(y, p, g):
    r = group_rates(y, p, sensitive_features=g, rates=RATES)
    return {
        "overall": {k: r[k].overall for k in RATES},
        "by_group": {k: list(r[k].by_group.values()) for k in RATES},
        "difference": {k: r[k].difference for k in RATES},
        "ratio": {k: r[k].ratio for k in RATES},
        "dp_difference": r["selection_rate"].difference,
        "eo_difference": max(r["tpr"].difference, r["fpr"].difference),
    }


def fairlearn_frame(y, p, g):
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate

    fns = {"tpr": true_positive_rate, "fpr": false_positive_rate, "selection_rate": selection_rate}
    mf = MetricFrame(metrics=fns, y_true=y, y_pred=p, sensitive_features=g)
    diff, ratio = mf.difference(), mf.ratio()
    return {
        "overall": {k: float(mf.overall[k]) for k in RATES},
        "by_group": {k: mf.by_group[k].to_list() for k in RATES},
        "difference": {k: float(diff[k]) for k in RATES},
        "ratio": {k: float(ratio[k]) for k in RATES},
        "dp_difference": float(diff["selection_rate"]),
        "eo_difference": float(max(diff["tpr"], diff["fpr"])),
    }


def ours_functions(y, p, g):
    return (demographic_parity_difference(y, p, sensitive_features=g),
            equalized_odds_difference(y, p, sensitive_features=g))


def fairlearn_functions(y, p, g):
    from fairlearn.metrics import demographic_parity_difference as dpd, equalized_odds_difference as eod

    return float(dpd(y, p, sensitive_features=g)), float(eod(y, p, sensitive_features=g))


def timed(fn, args, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def assert_close(a, b, path="", tol=1e-12):
    if isinstance(a, dict):
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}", tol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, z) in enumerate(zip(a, b)):
            assert_close(x, z, f"{path}[{i}]", tol)
    else:
        assert abs(a - b) <= tol, f"{path}: fairmonai {a!r} != fairlearn {b!r}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15, help="runs of fairmonai (median reported)")
    ap.add_argument("--fairlearn-repeats", type=int, default=3, help="runs of fairlearn (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "bench_group_metrics.json"),
                    help="where to write the results ('' to skip)")
    args = ap.parse_args(argv)

    import fairlearn

    y, p, g = make_data(args.n, args.groups, args.seed)
    ours_frame(y, p, g)  # warm-up (imports, page faults)
    rows = []
    for label, ours_fn, fl_fn in (("MetricFrame: TPR, FPR, SR by group + DP, EO diff", ours_frame, fairlearn_frame),
                                  ("DP difference + EO difference functions", ours_functions, fairlearn_functions)):
        t_ours, all_ours, v_ours = timed(ours_fn, (y, p, g), args.repeats)
        t_fl, all_fl, v_fl = timed(fl_fn, (y, p, g), args.fairlearn_repeats)
        assert_close(v_ours, v_fl)
        rows.append({"task": label, "fairmonai_s": t_ours, "fairlearn_s": t_fl, "speedup": t_fl / t_ours,
                     "fairmonai_runs_s": all_ours, "fairlearn_runs_s": all_fl})

    print(f"n = {args.n:,} predictions, {args.groups} groups, seed {args.seed}; "
          f"median of {args.repeats} (fairmonai) / {args.fairlearn_repeats} (fairlearn) runs")
    print("all values equal to 1e-12: yes\n")
    w = max(len(r["task"]) for r in rows)
    print(f"{'task':<{w}}  {'fairmonai':>11}  {'fairlearn':>11}  {'speedup':>9}")
    for r in rows:
        print(f"{r['task']:<{w}}  {r['fairmonai_s'] * 1e3:>9.1f}ms  {r['fairlearn_s']:>10.2f}s  {r['speedup']:>8.0f}x")
    print()
    f = ours_frame(y, p, g)
    print("values: " + ", ".join(f"{k} difference {f['difference'][k]:.6f}" for k in RATES)
          + f", DP {f['dp_difference']:.6f}, EO {f['eo_difference']:.6f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"n": args.n, "groups": args.groups, "seed": args.seed, "rows": rows, "values": f,
                       "python": sys.version.split()[0], "numpy": np.__version__, "fairlearn": fairlearn.__version__,
                       "platform": platform.platform(), "cpu_count": os.cpu_count()}, fh, indent=2)
        print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
