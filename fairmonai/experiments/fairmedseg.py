"""The FairMedSeg paper's outputs as commands: Table 1 and the (alpha, minsup) sweep.

Table 1 (Poeta et al., "Divergence-Aware Training with Automatic Subgroup Mitigation for Breast Tumor
Segmentation"): UNet, SegResNet and SwinUNETR, each as the base model and with FairMedSeg, scored with
the MAMA-MIA challenge's DSC, NormHD, performance score PS, fairness score FS and total score TS on
the test split, over the given seeds (each seed recorded in the table)::

    python -m fairmonai.experiments.fairmedseg table1 --out runs/table1 --seeds 0 1 2

The sweep that chose the method's settings: FairMedSeg with alpha in {0.2, 0.5, 0.8} x minsup in
{0.001, 0.005, 0.01}. Every pair is scored on the **validation** split and the pair with the highest
validation TS is chosen; only the chosen pair is then scored on the test split (``--score-test``),
once. (Choosing on the test split would make the test score optimistic; STYLE.md section 6.)::

    python -m fairmonai.experiments.fairmedseg sweep --out runs/sweep --net unet --seed 0 --score-test

Both commands take the bundle's folder with ``--bundle`` (default ``bundles/mama_mia_fairmedseg``,
relative to the current directory, i.e. run from the repository's root); a missing folder, or one
without ``configs/metadata.json``, is an error naming the path.

Each (network, method, seed[, alpha, minsup]) is a :class:`~fairmonai.experiments.runs.BundleRun` in its
own folder: calling the command again skips finished runs and resumes an interrupted one. Runs with
the same seed share one data folder (``<out>/data/seed<seed>``), so a synthetic cohort is drawn once
per seed. ``--set key=value`` passes further overrides to every run (e.g. ``--set manifest=/data/mama_mia.csv``
for the real data, or ``--set roi_size=[64,64,32] --set epochs=20`` for a CPU run). Outputs:
``table1.csv`` / ``table1.md`` (per run and mean +- sd), ``sweep.csv`` / ``sweep.md`` and ``sweep_choice.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .runs import BundleRun, RunFailed, check_bundle, run_bundle_unit

__all__ = [
    "DEFAULT_BUNDLE",
    "NETWORKS",
    "METHODS",
    "SCORES",
    "SWEEP_ALPHAS",
    "SWEEP_MINSUPS",
    "table1",
    "sweep",
    "scores_of",
    "main",
]

#: The bundle used when none is given: a path relative to the current directory (this is the
#: repository's layout; run from its root, or pass ``bundle=`` / ``--bundle``).
DEFAULT_BUNDLE = "bundles/mama_mia_fairmedseg"
#: Network overlays of the bundle.
NETWORKS = {"unet": (), "segresnet": ("net_segresnet.json",), "swinunetr": ("net_swinunetr.json",)}
#: Method overlays of the bundle.
METHODS = {"base": (), "fairmedseg": ("method_fairmedseg.json",)}
#: The challenge scores of Table 1: column -> key of the segmentation report.
SCORES = {"DSC": "mean_dsc", "NormHD": "mean_normhd", "PS": "performance_score", "FS": "fairness_score",
          "TS": "total_score"}
SWEEP_ALPHAS = (0.2, 0.5, 0.8)
SWEEP_MINSUPS = (0.001, 0.005, 0.01)


def scores_of(report: Mapping) -> dict[str, float]:
    """The Table 1 scores of a segmentation ``report.json``."""
    return {col: float(report[key]) for col, key in SCORES.items()}


def _configs(net: str, method: str) -> tuple[str, ...]:
    if net not in NETWORKS:
        raise ValueError(f"unknown network '{net}'; expected one of {list(NETWORKS)}")
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; expected one of {list(METHODS)}")
    return ("train.json", *METHODS[method], *NETWORKS[net])


def _overrides(out: Path, seed: int, extra: Mapping[str, object]) -> dict[str, object]:
    return {"seed": seed, "dataset_dir": str((out / "data" / f"seed{seed}").resolve()), **extra}


def _mean_sd(values: Sequence[float]) -> str:
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return "n/a"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.3f} +- {sd:.3f}"


def _write(df: pd.DataFrame, out: Path, stem: str, md_lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"{stem}.csv", index=False, lineterminator="\n")
    (out / f"{stem}.md").write_text("\n".join(md_lines) + "\n")


def table1(out: str | Path, *, seeds: Sequence[int] = (0, 1, 2), nets: Sequence[str] = tuple(NETWORKS),
           methods: Sequence[str] = tuple(METHODS), overrides: Mapping[str, object] | None = None,
           bundle: str | Path = DEFAULT_BUNDLE, echo: bool = True) -> pd.DataFrame:
    """Train and test-score every (network, method, seed); write ``table1.csv`` and ``table1.md``, and
    (with both methods) the Figure 2 heatmaps per network: test Dice per age group x breast density and
    age group x menopausal status cell for base, FairMedSeg and their difference, pooled over the seeds
    (``heatmaps/<net>/``, :func:`fairmonai.reports.dice_heatmap_comparison`).

    Returns:
        One row per run: ``net``, ``method``, ``seed``, the :data:`SCORES` columns, ``run_dir``.

    ``bundle`` is the MAMA-MIA bundle's folder; a relative path is taken from the current directory.

    Raises:
        ValueError: an unknown network or method.
    """
    out = Path(out)
    extra = dict(overrides or {})
    rows = []
    for net in nets:
        for method in methods:
            for seed in seeds:
                run = BundleRun(f"{net}_{method}_seed{seed}", _configs(net, method), _overrides(out, seed, extra),
                                ("test",))
                rep = run_bundle_unit(bundle, out, run, echo=echo)["test"]
                rows.append({"net": net, "method": method, "seed": seed, **scores_of(rep),
                             "run_dir": str((out / run.name).resolve())})
    df = pd.DataFrame(rows)
    md = [f"Table 1: test split, seeds {list(seeds)}, mean +- sd over seeds", "",
          "| network | method | " + " | ".join(SCORES) + " |", "|---|---|" + "---|" * len(SCORES)]
    for (net, method), g in df.groupby(["net", "method"], sort=False):
        md.append(f"| {net} | {method} | " + " | ".join(_mean_sd(g[c].tolist()) for c in SCORES) + " |")
    md += ["", "Per run:", "", "| network | method | seed | " + " | ".join(SCORES) + " |",
           "|---|---|---|" + "---|" * len(SCORES)]
    md += [f"| {r.net} | {r.method} | {r.seed} | " + " | ".join(f"{getattr(r, c):.4f}" for c in SCORES) + " |"
           for r in df.itertuples()]
    _write(df, out, "table1", md)
    if {"base", "fairmedseg"} <= set(methods):
        from ..reports.compare import dice_heatmap_comparison  # plotting: import only when used

        for net in nets:
            files = {m: [Path(r) / "eval" / "scores_test.csv" for r in df.loc[(df.net == net) & (df.method == m),
                                                                                  "run_dir"]] for m in METHODS}
            dice_heatmap_comparison(files["base"], files["fairmedseg"], out / "heatmaps" / net)
    return df


def sweep(out: str | Path, *, net: str = "unet", seed: int = 0, alphas: Sequence[float] = SWEEP_ALPHAS,
          minsups: Sequence[float] = SWEEP_MINSUPS, score_test: bool = False,
          overrides: Mapping[str, object] | None = None, bundle: str | Path = DEFAULT_BUNDLE,
          echo: bool = True) -> tuple[pd.DataFrame, dict]:
    """FairMedSeg over ``alphas x minsups``, each scored on the validation split; choose by validation TS.

    Ties in validation TS go to the first pair in sweep order. With ``score_test`` the chosen pair (only
    it) is then scored on the test split.

    Returns:
        ``(table, choice)``: one row per pair with the validation scores; ``choice`` with the chosen
        ``alpha``, ``minsup``, its validation scores and (``score_test``) its test scores, also written to
        ``sweep_choice.json``.

    ``bundle`` is the MAMA-MIA bundle's folder; a relative path is taken from the current directory.

    Raises:
        ValueError: an unknown ``net``.
    """
    out = Path(out)
    extra = dict(overrides or {})
    rows, runs = [], {}
    for alpha in alphas:
        for minsup in minsups:
            run = BundleRun(f"{net}_fairmedseg_a{alpha:g}_m{minsup:g}_seed{seed}", _configs(net, "fairmedseg"),
                            {**_overrides(out, seed, extra), "div_alpha": alpha, "minsup": minsup}, ("val",))
            rep = run_bundle_unit(bundle, out, run, echo=echo)["val"]
            runs[(alpha, minsup)] = run
            rows.append({"alpha": alpha, "minsup": minsup, **{f"val_{c}": v for c, v in scores_of(rep).items()},
                         "run_dir": str((out / run.name).resolve())})
    df = pd.DataFrame(rows)
    best = int(df["val_TS"].to_numpy().argmax())
    alpha, minsup = float(df.loc[best, "alpha"]), float(df.loc[best, "minsup"])
    choice = {"net": net, "seed": seed, "alpha": alpha, "minsup": minsup, "selected_on": "validation total score",
              "validation": {c: float(df.loc[best, f"val_{c}"]) for c in SCORES}}
    if score_test:
        chosen = runs[(alpha, minsup)]
        test_run = BundleRun(chosen.name, chosen.configs, chosen.overrides, ("val", "test"))
        choice["test"] = scores_of(run_bundle_unit(bundle, out, test_run, echo=echo)["test"])
    md = [f"FairMedSeg sweep, {net}, seed {seed}: validation scores; chosen by validation TS: "
          f"alpha {alpha:g}, minsup {minsup:g}", "",
          "| alpha | minsup | " + " | ".join(f"val {c}" for c in SCORES) + " |", "|---|---|" + "---|" * len(SCORES)]
    md += [f"| {r['alpha']:g} | {r['minsup']:g} | " + " | ".join(f"{r[f'val_{c}']:.4f}" for c in SCORES) + " |"
           for r in rows]
    if "test" in choice:
        md += ["", "Chosen pair on the test split (scored once): "
               + ", ".join(f"{c} {v:.4f}" for c, v in choice["test"].items())]
    _write(df, out, "sweep", md)
    (out / "sweep_choice.json").write_text(json.dumps(choice, indent=2))
    return df, choice


def _parse_set(items: Sequence[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got '{item}'")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairmonai.experiments.fairmedseg",
                                     description="The FairMedSeg paper's Table 1 and sweep with the MAMA-MIA bundle.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table1", help="UNet / SegResNet / SwinUNETR x base / FairMedSeg, test split")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--nets", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    t.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    s = sub.add_parser("sweep", help="FairMedSeg alpha x minsup, chosen on the validation split")
    s.add_argument("--net", default="unet", choices=list(NETWORKS))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--alphas", type=float, nargs="+", default=list(SWEEP_ALPHAS))
    s.add_argument("--minsups", type=float, nargs="+", default=list(SWEEP_MINSUPS))
    s.add_argument("--score-test", action="store_true", help="score the chosen pair on the test split, once")
    for p in (t, s):
        p.add_argument("--out", required=True, help="output folder (one sub-folder per run)")
        p.add_argument("--bundle", default=DEFAULT_BUNDLE,
                       help=f"the MAMA-MIA bundle's folder (default: {DEFAULT_BUNDLE}, relative to the current directory)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="bundle override for every run (JSON values), e.g. epochs=20")
    args = parser.parse_args(argv)
    extra = _parse_set(args.set)
    try:
        args.bundle = check_bundle(args.bundle)
        if args.command == "table1":
            table1(args.out, seeds=args.seeds, nets=args.nets, methods=args.methods, overrides=extra,
                   bundle=args.bundle)
            print((Path(args.out) / "table1.md").read_text())
        else:
            sweep(args.out, net=args.net, seed=args.seed, alphas=args.alphas, minsups=args.minsups,
                  score_test=args.score_test, overrides=extra, bundle=args.bundle)
            print((Path(args.out) / "sweep.md").read_text())
    except (RunFailed, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
