"""The one generic runner: run an experiment file's runs as resumable units and write its table.

:func:`run_experiment` expands an :class:`~fairmonai.experiments.grid.Experiment` into runs
(:func:`~fairmonai.experiments.grid.expand`), runs each with
:func:`~fairmonai.experiments.runs.run_bundle_unit` (a finished run is only read again, an interrupted
one resumes), applies the selection step if the file has one (the test split scored once, for the
chosen grid point only), reads the declared columns (:mod:`fairmonai.experiments.columns`) and writes,
in the output folder:

* ``<name>.csv``: one row per run and evaluated split: ``configuration``, the grid keys, ``seed``,
  ``fold`` (with folds), ``split``, ``selected`` (with a selection), the columns, ``run_dir``;
* ``<name>_summary.csv``: per (configuration, grid point, split), each column's mean, sample sd and
  count of values over seeds (and folds); ``<name>.md``: the same as a table (``mean +- sd``, or the
  value alone where there is one) and the per-run table; ``<name>_choice.json`` with a selection;
* the plots the file declares.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .columns import column_value
from .grid import Experiment, ExperimentFileError, PlannedRun, expand
from .runs import BundleRun, run_bundle_unit

__all__ = ["ExperimentResult", "run_experiment", "summarise", "markdown_table"]


@dataclass(frozen=True)
class ExperimentResult:
    """What :func:`run_experiment` wrote: the per-run rows, the summary, the Markdown text, the choices."""

    rows: pd.DataFrame
    summary: pd.DataFrame
    markdown: str
    choices: list[dict]


def _number(v: object) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _cell(v: object, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return str(v) if isinstance(v, int) else f"{v:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table whose cells are padded to their column's width, so it also reads as plain text."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def summarise(rows: pd.DataFrame, group: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Per ``group`` (first-appearance order): ``<column>_mean``, ``<column>_sd`` (sample sd; 0 for one
    value) and ``<column>_n`` over the rows' non-missing values of each column (mean and sd missing
    where there are none)."""
    out = []
    for key, g in rows.groupby(list(group), sort=False, dropna=False):
        rec = dict(zip(group, key if isinstance(key, tuple) else (key,)))
        for c in columns:
            v = [x for x in (_number(y) for y in g[c]) if x is not None]
            one = [y for y in g[c] if _number(y) is not None]
            rec[f"{c}_mean"] = (one[0] if len(v) == 1 else statistics.mean(v)) if v else None  # one value kept as is
            rec[f"{c}_sd"] = (statistics.stdev(v) if len(v) > 1 else 0.0) if v else None
            rec[f"{c}_n"] = len(v)
        out.append(rec)
    return pd.DataFrame(out)


def _mean_sd(rec: Mapping, c: str) -> str:
    if not rec[f"{c}_n"]:
        return "n/a"
    if rec[f"{c}_n"] == 1:
        return _cell(rec[f"{c}_mean"], 3)
    return f"{rec[f'{c}_mean']:.3f} +- {rec[f'{c}_sd']:.3f}"


def _row(exp: Experiment, run: PlannedRun, out: Path, split: str) -> dict:
    run_dir = (out / run.unit.name).resolve()
    row: dict = {"configuration": run.configuration, **run.point, "seed": run.seed}
    if exp.folds is not None:
        row["fold"] = run.fold
    row["split"] = split
    if exp.select is not None:
        row["selected"] = False
    for name, source in exp.columns.items():
        row[name] = column_value(run_dir, split, source)
    row["run_dir"] = str(run_dir)
    return row


def _select(exp: Experiment, runs: list[PlannedRun], rows: list[dict], bundle: Path, out: Path,
            echo: bool) -> list[dict]:
    """Choose per (configuration, seed, fold) the best grid point on the selection split; score it on
    the ``then`` splits (adds those rows to ``rows``); return the choices."""
    sel = exp.select
    assert sel is not None
    by_cell: dict[tuple, list[tuple[PlannedRun, dict]]] = {}
    for run, row in zip(runs, (r for r in rows if r["split"] == sel.split)):
        by_cell.setdefault((run.configuration, run.seed, run.fold), []).append((run, row))
    choices = []
    for (conf, seed, fold), cands in by_cell.items():
        scored = [(run, row) for run, row in cands if _number(row[sel.column]) is not None]
        if not scored:
            raise ExperimentFileError(f"{exp.path}: select: no run of '{conf}' seed {seed} has a value of "
                                      f"'{sel.column}' on '{sel.split}' to choose by")
        pick = max if sel.goal == "max" else min
        best = pick(_number(r[sel.column]) for _, r in scored)
        run, row = next((run, row) for run, row in scored if _number(row[sel.column]) == best)  # first in grid order
        row["selected"] = True
        unit = run.unit
        reports_unit = BundleRun(unit.name, unit.configs, unit.overrides, (*unit.eval_splits, *sel.then))
        run_bundle_unit(bundle, out, reports_unit, echo=echo)
        then_rows = [{**_row(exp, run, out, split), "selected": True} for split in sel.then]
        rows.extend(then_rows)
        choice = {"configuration": conf, "seed": seed, **({"fold": fold} if fold is not None else {}),
                  "chosen": dict(run.point), "selected_on": f"{sel.goal} {sel.column} on the {sel.split} split",
                  sel.split: {c: row[c] for c in exp.columns}}
        choice.update({r["split"]: {c: r[c] for c in exp.columns} for r in then_rows})
        choices.append(choice)
    return choices


def _plotter(kind: str):
    """The function of a plot kind (imported only when a plot is made: plotting imports matplotlib)."""
    assert kind == "dice_heatmap_comparison"
    from ..reports import dice_heatmap_comparison

    return dice_heatmap_comparison


def _plots(exp: Experiment, runs: list[PlannedRun], out: Path) -> None:
    for p in exp.plots:
        files = {k: [(out / r.unit.name).resolve() / p["file"] for r in runs if r.configuration == p[k]]
                 for k in ("base", "method")}
        if not files["base"] or not files["method"]:
            print(f"plot {p['out']}: skipped ({p['base']} or {p['method']} not run)")
            continue
        _plotter(p["kind"])(files["base"], files["method"], out / p["out"])


def _markdown(exp: Experiment, rows: pd.DataFrame, summary: pd.DataFrame, group: list[str],
              choices: list[dict], seeds: Sequence[int]) -> str:
    cols = list(exp.columns)
    title = exp.description.strip().splitlines()[0].split(". ")[0].rstrip(".") + "."  # the first sentence
    pooled = "seeds" + (" and folds" if exp.folds else "")
    md = [f"# {exp.name}: {title}", "",
          f"{rows['run_dir'].nunique()} run(s), seeds {list(seeds)}" + (f", folds {list(exp.folds)}" if exp.folds else "")
          + f"; mean +- sd over {pooled} where there are several.", ""]
    if exp.transpose:
        keys = [g for g in group if g != "split" or summary["split"].nunique() > 1]
        labels = [" ".join(_cell(rec[k], 4) if not isinstance(rec[k], str) else rec[k] for k in keys)
                  for rec in summary.to_dict("records")]
        md += markdown_table(["", *labels], [[c, *(_mean_sd(rec, c) for rec in summary.to_dict("records"))]
                                             for c in cols])
    else:
        md += markdown_table([*group, *cols], [[*(str(rec[g]) for g in group), *(_mean_sd(rec, c) for c in cols)]
                                               for rec in summary.to_dict("records")])
    for ch in choices:
        point = ", ".join(f"{k} {v}" for k, v in ch["chosen"].items())
        md += ["", f"Chosen for {ch['configuration']}, seed {ch['seed']}: {point} ({ch['selected_on']})"]
    keys = [k for k in rows.columns if k not in (*cols, "run_dir")]
    md += ["", "Per run:", ""]
    md += markdown_table([*keys, *cols], [[*(str(r[k]) for k in keys), *(_cell(r[c], 4) for c in cols)]
                                          for r in rows.to_dict("records")])
    return "\n".join(md) + "\n"


def run_experiment(bundle: str | Path, exp: Experiment, out: str | Path, *, seeds: Sequence[int] | None = None,
                   configurations: Sequence[str] | None = None, extra: Mapping[str, object] | None = None,
                   overlays: Sequence[str] = (), echo: bool = True) -> ExperimentResult:
    """Run every run of ``exp`` with ``bundle`` in ``out``, select if asked, write the tables and plots.

    ``seeds`` replaces the file's seeds, ``configurations`` keeps only those, ``extra`` overrides every
    run (``--set``), ``overlays`` are config files of the bundle added to every run (``--overlay``).

    Raises:
        ExperimentFileError: see :func:`~fairmonai.experiments.grid.expand`; or no run has a value to select by.
        ColumnError: a run lacks a column's file or key.
        RunFailed: a bundle command failed (its log is named).
    """
    bundle, out = Path(bundle), Path(out)
    for name in overlays:
        if not (bundle / "configs" / name).is_file():
            known = sorted(p.name for p in (bundle / "configs").glob("*.json"))
            raise ExperimentFileError(f"--overlay {name}: {bundle / 'configs'} has no such file; its config files: "
                                      f"{known}")
    runs = expand(exp, out, seeds=seeds, configurations=configurations, extra=extra, overlays=overlays)
    rows: list[dict] = []
    for i, run in enumerate(runs, 1):
        if echo:
            print(f"[{i}/{len(runs)}] {run.unit.name}", flush=True)
        run_bundle_unit(bundle, out, run.unit, echo=echo)
        rows.extend(_row(exp, run, out, split) for split in exp.splits)
    choices = _select(exp, runs, rows, bundle, out, echo) if exp.select else []
    frame = pd.DataFrame(rows)
    group = ["configuration", *exp.grid, "split"]
    summary = summarise(frame, group, list(exp.columns))
    used_seeds = list(exp.seeds if seeds is None else seeds)
    md = _markdown(exp, frame, summary, group, choices, used_seeds)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / f"{exp.name}.csv", index=False, lineterminator="\n")
    summary.to_csv(out / f"{exp.name}_summary.csv", index=False, lineterminator="\n")
    (out / f"{exp.name}.md").write_text(md)
    if exp.select:
        (out / f"{exp.name}_choice.json").write_text(json.dumps(choices, indent=2))
    _plots(exp, runs, out)
    return ExperimentResult(frame, summary, md, choices)
