"""Subgroup discovery on the real MAMA-MIA clinical table: fairmonai vs DivExplorer.

Reads the table (1,506 cases), derives the challenge's attributes (age group, menopausal status,
breast density; missing -> ``unknown``) and, for the wider run, dataset, ethnicity and BMI group;
draws seeded random per-case scores; mines every subgroup at ``minsup`` with
:func:`fairmonai.metrics.subgroup_divergence` and with DivExplorer's
``DivergenceExplorer.get_pattern_divergence`` (same fpgrowth miner, same threshold); checks that both
find the same itemsets with equal divergences; prints the median time of several runs of each.

    python benchmarks/bench_subgroups.py [--table PATH] [--minsup 0.001] [--repeats 5] [--seed 0]

The table is read where it lies (default: ../shared/real_metadata/mama_mia/... beside the
repository, or ``--table PATH``); it is not copied into the repository.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd

from fairmonai.attribute_codes import EXCLUDED_VALUE
from fairmonai.data.attributes import age_to_group, normalise_density, normalise_menopause
from fairmonai.metrics import subgroup_divergence

#: The shared data folder beside the repository (``../shared``), found from this script, not a machine path.
DEFAULT_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "shared",
                             "real_metadata", "mama_mia", "clinical_and_imaging_info_v2_dataset_info.csv")
CHALLENGE_ATTRIBUTES = ["age_group", "menopausal_status", "breast_density"]
WIDE_ATTRIBUTES = CHALLENGE_ATTRIBUTES + ["dataset", "ethnicity", "bmi_group"]


def load_attributes(path: str) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    meta = pd.DataFrame(index=raw.index)
    meta["age_group"] = [age_to_group(v) or EXCLUDED_VALUE for v in raw["age"]]
    meta["menopausal_status"] = [normalise_menopause(v) for v in raw["menopause"]]
    meta["breast_density"] = [normalise_density(v) or EXCLUDED_VALUE for v in raw["breast_density"]]
    for col in ["dataset", "ethnicity", "bmi_group"]:
        v = raw[col].str.strip().str.lower()
        meta[col] = v.where(v != "", EXCLUDED_VALUE)
    return meta


def run_ours(scores, meta, attrs, minsup):
    return subgroup_divergence(scores, metadata=meta[attrs], minsup=minsup)


def run_divexplorer(scores, meta, attrs, minsup):
    from divexplorer import DivergenceExplorer

    df = meta[attrs].copy()
    df["score"] = scores
    with warnings.catch_warnings():  # DivExplorer 0.2.6 uses inplace= that pandas 3 deprecates
        warnings.simplefilter("ignore")
        return DivergenceExplorer(df).get_pattern_divergence(min_support=minsup, quantitative_outcomes=["score"])


def median_time(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def compare(ours: pd.DataFrame, theirs: pd.DataFrame) -> tuple[bool, float]:
    a = {frozenset(f"{k}={v}" for k, v in its): d for its, d in zip(ours["itemset"], ours["divergence"])}
    b = {fs: d for fs, d in zip(theirs["itemset"], theirs["score_div"]) if len(fs) > 0}
    same = a.keys() == b.keys()
    err = max((abs(a[k] - b[k]) for k in a.keys() & b.keys()), default=0.0)
    return same, err


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=DEFAULT_TABLE, help="MAMA-MIA clinical_and_imaging_info CSV")
    ap.add_argument("--minsup", type=float, default=0.001)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    meta = load_attributes(args.table)
    scores = np.random.default_rng(args.seed).random(len(meta))
    try:
        import divexplorer  # noqa: F401
        have_dx = True
    except ImportError:
        have_dx = False
        print("divexplorer is not installed: timing fairmonai only", file=sys.stderr)

    rows = []
    ok = True
    for attrs in (CHALLENGE_ATTRIBUTES, WIDE_ATTRIBUTES):
        t_ours, ours = median_time(lambda: run_ours(scores, meta, attrs, args.minsup), args.repeats)
        row = {"attributes": len(attrs), "cases": len(meta), "subgroups": len(ours), "fairmonai_s": t_ours}
        if have_dx:
            t_dx, theirs = median_time(lambda: run_divexplorer(scores, meta, attrs, args.minsup), args.repeats)
            same, err = compare(ours, theirs)
            ok &= same and err < 1e-9
            row.update({"divexplorer_s": t_dx, "speedup": t_dx / t_ours, "same_itemsets": same, "max_abs_diff": err})
        rows.append(row)

    print(f"MAMA-MIA subgroup divergence, minsup={args.minsup}, median of {args.repeats} runs, seed {args.seed}")
    print(f"table: {args.table}")
    header = ["attributes", "cases", "subgroups", "fairmonai_s", "divexplorer_s", "speedup", "same_itemsets",
              "max_abs_diff"]
    header = [h for h in header if h in rows[0]]
    fmt = {"fairmonai_s": "{:.3f}", "divexplorer_s": "{:.3f}", "speedup": "{:.1f}x", "max_abs_diff": "{:.1e}"}
    cells = [[fmt.get(h, "{}").format(r[h]) for h in header] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))
    for attrs, r in zip((CHALLENGE_ATTRIBUTES, WIDE_ATTRIBUTES), rows):
        print(f"  {r['attributes']} attributes: {', '.join(attrs)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
