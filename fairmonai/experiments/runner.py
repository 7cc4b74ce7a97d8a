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
* ``<name>_timing.json``: executor, workers, wall seconds of the grid and of each unit (per
  attempt), and the runner's own seconds (its time not spent waiting on units) and CPU seconds;
* the plots the file declares.

Units run on an executor (:mod:`fairmonai.experiments.executors`): ``local`` (N at once, one GPU
each) or ``ray``; units found finished are not submitted; a failed unit is retried once, then its
columns stay empty and it is listed (``failed``) while the others go on. The rows follow the grid's
order, never the order units finished in.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .columns import column_interval, column_value
from .grid import Experiment, ExperimentFileError, PlannedRun, expand
from .executors import Outcome, make_executor, run_units
from .runs import BundleRun, is_finished, recorded_seconds, run_bundle_unit

__all__ = ["ExperimentResult", "run_experiment", "summarise", "markdown_table"]


@dataclass(frozen=True)
class ExperimentResult:
    """What :func:`run_experiment` wrote: the per-run rows, the summary, the Markdown text, the choices,
    the failed runs (name: log) and the timing."""

    rows: pd.DataFrame
    summary: pd.DataFrame
    markdown: str
    choices: list[dict]
    failed: dict[str, str | None] = field(default_factory=dict)
    timing: dict = field(default_factory=dict)


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
    """A summary cell: the value of one run (with its interval where the column has one), else mean +- sd."""
    if not rec[f"{c}_n"]:
        return "n/a"
    if rec[f"{c}_n"] == 1:
        lo, hi = (_number(rec.get(f"{c}_ci_{end}_mean")) for end in ("low", "high"))
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        return _cell(rec[f"{c}_mean"], 3) + ci
    return f"{rec[f'{c}_mean']:.3f} +- {rec[f'{c}_sd']:.3f}"


def _ci_columns(exp: Experiment) -> list[str]:
    """The table columns that hold the intervals of the columns with a ``ci`` source."""
    return [f"{name}_ci_{end}" for name, src in exp.columns.items() if "ci" in src for end in ("low", "high")]


def _outputs(exp: Experiment, runs: Sequence[PlannedRun], out: Path) -> list[str]:
    """Markdown lines listing, per run and evaluated split, the files of ``exp.outputs`` that exist."""
    lines = []
    for run in runs:
        run_dir = (out / run.unit.name).resolve()
        for split in run.unit.eval_splits:
            files = sorted({str(f) for pattern in exp.outputs
                            for f in run_dir.glob(pattern.replace("{split}", split))})
            if files:
                lines.append(f"- {run.unit.name} ({split}): " + ", ".join(files))
    return lines


def _notes(exp: Experiment, runs: Sequence[PlannedRun], out: Path) -> list[str]:
    """The experiment's notes (``{out}`` filled in) with the outputs listing where a note is ``{outputs}``
    (after the notes when none is)."""
    listing = ["Outputs:", "", *_outputs(exp, runs, out)] if exp.outputs else []
    lines = []
    for note in exp.notes:
        if note.strip() == "{outputs}":
            lines += [*listing, ""]
            listing = []
        else:
            lines += [note.replace("{out}", str(out.resolve())), ""]
    if listing:
        lines += [*listing, ""]
    return lines


def _row(exp: Experiment, run: PlannedRun, out: Path, split: str, failed: bool = False) -> dict:
    run_dir = (out / run.unit.name).resolve()
    row: dict = {"configuration": run.configuration, **run.point, "seed": run.seed}
    if exp.folds is not None:
        row["fold"] = run.fold
    if _retrains(exp):
        row["retrained"] = run.fold == -1
    row["split"] = split
    if exp.select is not None:
        row["selected"] = False
    for name, source in exp.columns.items():
        row[name] = None if failed else column_value(run_dir, split, source)
        if "ci" in source:
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = (
                (None, None) if failed else column_interval(run_dir, split, source))
    row["run_dir"] = str(run_dir)
    return row


def _retrains(exp: Experiment) -> bool:
    """Whether ``exp`` has retrained whole-training-part units (fold -1) beside its fold models."""
    return exp.fold_report is not None and exp.fold_report.get("test_column") == "retrain"


def _select(exp: Experiment, runs: list[PlannedRun], rows: list[dict], failed: Mapping[str, object]
            ) -> list[tuple[tuple, PlannedRun, dict]]:
    """Choose per (configuration, seed, fold) the best grid point on the selection split (marks its row
    ``selected``); ``[(cell, run, row)]``. A cell whose runs have no value because some failed has no choice."""
    sel = exp.select
    assert sel is not None
    by_cell: dict[tuple, list[tuple[PlannedRun, dict]]] = {}
    for run, row in zip(runs, (r for r in rows if r["split"] == sel.split)):
        by_cell.setdefault((run.configuration, run.seed, run.fold), []).append((run, row))
    chosen = []
    for (conf, seed, fold), cands in by_cell.items():
        scored = [(run, row) for run, row in cands if _number(row[sel.column]) is not None]
        if not scored:
            if any(run.unit.name in failed for run, _ in cands):
                print(f"select: no choice for '{conf}' seed {seed}: its runs with a value failed")
                continue
            raise ExperimentFileError(f"{exp.path}: select: no run of '{conf}' seed {seed} has a value of "
                                      f"'{sel.column}' on '{sel.split}' to choose by")
        pick = max if sel.goal == "max" else min
        best = pick(_number(r[sel.column]) for _, r in scored)
        run, row = next((run, row) for run, row in scored if _number(row[sel.column]) == best)  # first in grid order
        row["selected"] = True
        chosen.append(((conf, seed, fold), run, row))
    return chosen


def _choices(exp: Experiment, chosen: list[tuple[tuple, PlannedRun, dict]], rows: list[dict], out: Path,
             failed: Mapping[str, object]) -> list[dict]:
    """Add the chosen runs' rows on the ``then`` splits to ``rows`` (empty columns where that run
    failed); the choices."""
    sel = exp.select
    assert sel is not None
    choices = []
    for (conf, seed, fold), run, row in chosen:
        then_rows = [{**_row(exp, run, out, split, run.unit.name in failed), "selected": True} for split in sel.then]
        rows.extend(then_rows)
        choice = {"configuration": conf, "seed": seed, **({"fold": fold} if fold is not None else {}),
                  "chosen": dict(run.point), "selected_on": f"{sel.goal} {sel.column} on the {sel.split} split",
                  sel.split: {c: row[c] for c in exp.columns}}
        choice.update({r["split"]: {c: r[c] for c in exp.columns} for r in then_rows})
        choices.append(choice)
    return choices


def _dice_heatmap_plot(p: Mapping, runs: list[PlannedRun], out: Path, failed: Mapping[str, object]) -> None:
    """``dice_heatmap_comparison``: the ``file`` of every finished run of ``base`` against ``method``'s."""
    from ..reports import dice_heatmap_comparison  # imported only when a plot is made: it imports matplotlib

    files = {k: [(out / r.unit.name).resolve() / p["file"] for r in runs
                 if r.configuration == p[k] and r.unit.name not in failed]
             for k in ("base", "method")}
    if not files["base"] or not files["method"]:
        print(f"plot {p['out']}: skipped ({p['base']} or {p['method']} not run)")
        return
    dice_heatmap_comparison(files["base"], files["method"], out / p["out"])


def _vae_representation_plot(p: Mapping, runs: list[PlannedRun], out: Path, failed: Mapping[str, object]) -> None:
    """``vae_representation``: every finished run's folder, pooled into the design's report."""
    from ..reports import write_vae_report

    folders = [(out / r.unit.name).resolve() for r in runs if r.unit.name not in failed]
    if not folders:
        print(f"plot {p['out']}: skipped (no run finished)")
        return
    write_vae_report(folders, out / p["out"], min_images=int(p.get("min_images", 5)))
    print(f"plot {p['out']}: the design's figures and tests written to {out / p['out']}")


#: plot kind (:data:`~fairmonai.experiments.grid.PLOT_KINDS`) -> its function ``(plot, runs, out, failed)``.
_PLOTS = {"dice_heatmap_comparison": _dice_heatmap_plot, "vae_representation": _vae_representation_plot}


def _plots(exp: Experiment, runs: list[PlannedRun], out: Path, failed: Mapping[str, object]) -> None:
    for p in exp.plots:
        _PLOTS[p["kind"]](p, runs, out, failed)


def _markdown(exp: Experiment, rows: pd.DataFrame, summary: pd.DataFrame, group: list[str],
              choices: list[dict], seeds: Sequence[int], failed: Mapping[str, object] = {},
              notes: Sequence[str] = ()) -> str:
    cols = list(exp.columns)
    title = exp.description.strip().splitlines()[0].split(". ")[0].rstrip(".") + "."  # the first sentence
    pooled = "seeds" + (" and folds" if exp.folds else "")
    md = [f"# {exp.name}: {title}", "",
          f"{rows['run_dir'].nunique()} run(s), seeds {list(seeds)}" + (f", folds {list(exp.folds)}" if exp.folds else "")
          + f"; mean +- sd over {pooled} where there are several.", ""]
    if failed:
        md[-1:-1] = [f"Failed ({len(failed)}, their columns empty): "
                     + "; ".join(f"{name} (log: {log})" for name, log in failed.items()), ""]
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
    if notes:
        md += ["", *notes]
        while md[-1] == "":
            md.pop()
    keys = [k for k in rows.columns if k not in (*cols, *_ci_columns(exp), "run_dir")]
    md += ["", "Per run:", ""]
    md += markdown_table([*keys, *cols], [[*(str(r[k]) for k in keys), *(_cell(r[c], 4) for c in cols)]
                                          for r in rows.to_dict("records")])
    return "\n".join(md) + "\n"


def _fold_report(exp: Experiment, bundle: Path, frame: pd.DataFrame, out: Path, say) -> None:
    """The experiment's fold report into ``out/fold_report``; the paper's values are read from the
    ``paper`` file next to the experiment file, when it names one."""
    missing = [c for c in exp.configurations if c not in set(frame["configuration"])]
    if missing:
        say(f"fold report: not written, it compares all {len(exp.configurations)} configurations and {missing} "
            f"did not run (python -m fairmonai.reports.fold_report writes it from {out / (exp.name + '.csv')} "
            "with settings naming only those that ran)")
        return
    from ..reports.fold_report import write_fold_report

    settings = dict(exp.fold_report or {})
    paper = None
    if settings.get("paper"):
        path = exp.path.parent / str(settings["paper"])
        if not path.is_file():
            raise ExperimentFileError(f"{exp.path}: fold_report.paper: no file {path}")
        paper = json.loads(path.read_text())
    write_fold_report(frame, out / "fold_report", settings, paper=paper, configurations=list(exp.configurations),
                      where=f"{exp.path}: fold_report")
    say(f"fold report: {out / 'fold_report'}")


def _estimate(exp: Experiment, out: Path, changed: Sequence[str] = ()) -> tuple[float | None, str]:
    """Seconds one run takes, and where that comes from: the runs of ``out`` that recorded their time,
    else the file's ``seconds_per_run`` unless ``changed`` (the call's ``--overlay`` files and ``--set``
    keys, which change what a run does, e.g. the CPU size of a paper grid), else unknown (the progress
    lines give an ETA once a run finished)."""
    recorded = recorded_seconds(out)
    if recorded:
        mean = statistics.mean(recorded)
        return mean, f"{mean:.0f} s a run: mean of {len(recorded)} run(s) recorded in {out}"
    if exp.seconds_per_run is not None and changed:
        return None, (f"the experiment file's seconds_per_run, {exp.seconds_per_run:g} s, is for its own settings, "
                      f"not with {', '.join(changed)}; an ETA follows the first finished run")
    if exp.seconds_per_run is not None:
        return float(exp.seconds_per_run), f"{exp.seconds_per_run:g} s a run: the experiment file's seconds_per_run"
    return None, "no run in the output folder recorded its time and the file gives no seconds_per_run"


def run_experiment(bundle: str | Path, exp: Experiment, out: str | Path, *, seeds: Sequence[int] | None = None,
                   configurations: Sequence[str] | None = None, extra: Mapping[str, object] | None = None,
                   overlays: Sequence[str] = (), echo: bool = True, executor: str | None = None,
                   workers: int | None = None, folds: Sequence[int] | None = None) -> ExperimentResult:
    """Run every run of ``exp`` with ``bundle`` in ``out``, select if asked, write the tables and plots.

    ``seeds`` replaces the file's seeds, ``folds`` its folds, ``configurations`` keeps only those,
    ``extra`` overrides every run (``--set``), ``overlays`` are config files of the bundle added to every
    run (``--overlay``). With a ``fold_report`` the report is written to ``out/fold_report``
    (:func:`fairmonai.reports.fold_report.write_fold_report`).
    ``executor`` (``local`` or ``ray``) and ``workers`` replace the file's ``executor`` settings
    (default: local, 1 worker); see :mod:`fairmonai.experiments.executors`. With ``echo`` the estimate
    and a progress line per change are printed. A run whose bundle command fails twice is listed in
    ``failed`` (with its log), its columns are empty and the others go on. ``<name>_timing.json``
    records each unit's wall seconds and the runner's own (``runner_s``: its time not spent waiting on units).

    Raises:
        ExperimentFileError: see :func:`~fairmonai.experiments.grid.expand`; or no run has a value to select by.
        ColumnError: a run lacks a column's file or key.
        ExecutorError: an unknown executor, ``workers`` below 1, or Ray not installed.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    bundle, out = Path(bundle), Path(out)
    for name in overlays:
        if not (bundle / "configs" / name).is_file():
            known = sorted(p.name for p in (bundle / "configs").glob("*.json"))
            raise ExperimentFileError(f"--overlay {name}: {bundle / 'configs'} has no such file; its config files: "
                                      f"{known}")
    runs = expand(exp, out, seeds=seeds, configurations=configurations, extra=extra, overlays=overlays, folds=folds)
    kind = executor or str(exp.executor.get("kind", "local"))
    n = workers if workers is not None else int(exp.executor.get("workers", 1))  # type: ignore[call-overload]
    pool = make_executor(kind, n, cpus_per_run=exp.executor.get("cpus_per_run", 1),  # type: ignore[arg-type]
                         gpus_per_run=exp.executor.get("gpus_per_run"))  # type: ignore[arg-type]
    changed = [f"--overlay {o}" for o in overlays] + [f"--set {k}" for k in (extra or {})]
    per_run, source = _estimate(exp, out, changed)
    say = print if echo else (lambda _: None)
    outcomes: list[Outcome] = []
    waited = 0.0

    def execute(units: list[BundleRun]) -> None:
        nonlocal waited
        done, w = run_units(pool, run_bundle_unit, bundle, out, units,
                            finished=[is_finished(out, u) for u in units], per_run=per_run, source=source,
                            echo=echo, say=say)
        outcomes.extend(done)
        waited += w

    try:
        execute([r.unit for r in runs])
        failed = {o.name: o.log for o in outcomes if o.status == "failed"}
        rows: list[dict] = [_row(exp, run, out, split, run.unit.name in failed)
                            for run in runs for split in run.unit.eval_splits]
        choices = []
        if exp.select:
            chosen = _select(exp, runs, rows, failed)
            then = [BundleRun(u.name, u.configs, u.overrides, (*u.eval_splits, *exp.select.then))
                    for u in (run.unit for _, run, _ in chosen)]
            if then:
                say(f"selection: the {len(then)} chosen run(s) scored on {list(exp.select.then)}")
                execute(then)
            failed = {o.name: o.log for o in outcomes if o.status == "failed"}
            choices = _choices(exp, chosen, rows, out, failed)
    finally:
        pool.close()
    frame = pd.DataFrame(rows)
    group = ["configuration", *exp.grid, *(["retrained"] if _retrains(exp) else []), "split"]
    summary = summarise(frame, group, [*exp.columns, *_ci_columns(exp)])
    used_seeds = list(exp.seeds if seeds is None else seeds)
    md = _markdown(exp, frame, summary, group, choices, used_seeds, failed, _notes(exp, runs, out))
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / f"{exp.name}.csv", index=False, lineterminator="\n")
    summary.to_csv(out / f"{exp.name}_summary.csv", index=False, lineterminator="\n")
    (out / f"{exp.name}.md").write_text(md)
    if exp.select:
        (out / f"{exp.name}_choice.json").write_text(json.dumps(choices, indent=2))
    _plots(exp, runs, out, failed)
    if exp.fold_report is not None:
        _fold_report(exp, bundle, frame, out, say)
    wall = time.perf_counter() - t0
    timing = {"executor": pool.kind, "workers": pool.workers, "wall_s": wall, "runner_s": wall - waited,
              "runner_fraction": (wall - waited) / wall if wall > 0 else 0.0,
              "runner_cpu_s": time.process_time() - cpu0,
              "units": [{"name": o.name, "status": o.status, "attempts": o.attempts, "wall_s": o.seconds,
                         "attempt_s": o.attempt_seconds, "device": o.device, "log": o.log} for o in outcomes]}
    (out / f"{exp.name}_timing.json").write_text(json.dumps(timing, indent=2))
    return ExperimentResult(frame, summary, md, choices, failed, timing)
