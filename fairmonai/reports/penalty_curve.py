"""Penalty-curve figures from training logs: total variation and RMSE to a moving average.

``python -m fairmonai.reports.penalty_curve LOG.csv [LOG2.csv ...] --column mi_knn --k 5 --out DIR``

A log is the CSV written by :class:`fairmonai.handlers.penalty_curve.PenaltyCurveLogger` (any CSV
with an ``iteration`` column and a numeric value column works). For the chosen column (default
``mi_knn``, the shared k-NN estimate of I(u; v)) and each log, with ``L_1 .. L_n`` its values in
iteration order:

.. math::

    \\mathrm{TV} = \\sum_{t=1}^{n-1} |L_{t+1} - L_t|, \\qquad
    \\mathrm{RMSE}_{k} = \\sqrt{\\frac{1}{n} \\sum_{t=1}^{n} (L_t - \\bar L^{(k)}_t)^2}

where :math:`\\bar L^{(k)}_t` is the moving average of ``k`` points. TV measures how much the curve
moves in total (trend plus oscillation); RMSE to the moving average measures the oscillation
around the local trend (its jitter).

Choices (stated again in every output):

* **Moving average**: centred by default, the window of point ``t`` being points
  ``t - (k-1)//2 .. t + k//2`` (symmetric for odd ``k``; for even ``k`` one more point after
  ``t``); ``--moving-average trailing`` uses ``t - k + 1 .. t``. **Edges**: the window is cut to the
  points that exist and the mean is taken over those (no padding, no edge points dropped), so every
  point contributes to the RMSE. ``k = 1`` gives RMSE 0.
* **Rows**: a log is read in file order; when an iteration appears more than once (a run resumed
  from a checkpoint re-logs iterations the killed run had logged) the last row is kept; rows are
  then sorted by iteration. Rows whose value is NaN or infinite (``mi_knn`` is NaN while the
  buffer is too small or holds fewer than two groups) are dropped before computing; the numbers
  of dropped and duplicate rows are reported.
* **Sampling**: the logging interval is read from the ``iteration`` column, over all logged rows
  before NaN rows are dropped (``every_n_iterations``: the common difference between consecutive
  logged iterations, or their median with ``sampling_regular: false`` when they differ); TV and
  RMSE are computed over the kept points only, so a dropped row joins its neighbours. TV and RMSE depend
  on it (a curve logged twice as often has a larger TV), so compare logs taken at the same interval.

Outputs in ``--out``: ``penalty_curve_summary.json`` (settings and one entry per log),
``penalty_curve_summary.csv`` (one row per log) and ``penalty_curve.png`` (one line per log,
labelled by file stem, or by ``--labels``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "PenaltyCurveInputError",
    "MOVING_AVERAGES",
    "moving_average",
    "total_variation",
    "rmse_to_moving_average",
    "read_penalty_log",
    "summarize_penalty_log",
    "write_penalty_curve_report",
    "main",
]

MOVING_AVERAGES = ("centred", "trailing")
EDGE_RULE = "window cut to the existing points at the edges (mean over the points available)"


class PenaltyCurveInputError(ValueError):
    """A log that cannot be summarised; the message names the file and the column."""


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise PenaltyCurveInputError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _check_mode(mode: str) -> str:
    if mode not in MOVING_AVERAGES:
        raise PenaltyCurveInputError(f"unknown moving average {mode!r}; choose one of {list(MOVING_AVERAGES)}")
    return mode


def moving_average(values: Sequence[float] | np.ndarray, k: int, mode: str = "centred") -> np.ndarray:
    """Moving average of ``k`` points, ``"centred"`` (points ``t-(k-1)//2 .. t+k//2``) or ``"trailing"``
    (``t-k+1 .. t``); at the edges the mean is over the points that exist."""
    k, mode = _check_k(k), _check_mode(mode)
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    before, after = ((k - 1) // 2, k // 2) if mode == "centred" else (k - 1, 0)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(n)
    lo = np.maximum(idx - before, 0)
    hi = np.minimum(idx + after, n - 1) + 1
    return (csum[hi] - csum[lo]) / (hi - lo)


def total_variation(values: Sequence[float] | np.ndarray) -> float:
    """``sum_t |L_{t+1} - L_t|`` (0 for fewer than two points)."""
    x = np.asarray(values, dtype=np.float64)
    return float(np.abs(np.diff(x)).sum()) if len(x) > 1 else 0.0


def rmse_to_moving_average(values: Sequence[float] | np.ndarray, k: int, mode: str = "centred") -> float:
    """Root mean squared difference between the values and their ``k``-point moving average."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return float("nan")
    return float(np.sqrt(np.mean((x - moving_average(x, k, mode)) ** 2)))


def read_penalty_log(path: str | os.PathLike, column: str = "mi_knn") -> tuple[pd.DataFrame, dict]:
    """Read a log; return the ``iteration``/``column`` rows used (deduplicated, sorted, finite) and counts.

    Returns:
        ``(frame, info)``: ``frame`` has columns ``iteration`` (int) and ``column`` (float);
        ``info`` has ``n_rows``, ``n_duplicate_iterations``, ``n_nan_dropped`` and the sampling of the
        log (``every_n_iterations``, ``sampling_regular``, ``first_iteration``, ``last_iteration``,
        ``sampling``: a sentence), read from all its iterations before NaN rows are dropped.

    Raises:
        PenaltyCurveInputError: a missing or empty file; a missing ``iteration`` or ``column`` (the
            message lists the columns); non-numeric values; no finite value left.
    """
    path = Path(path)
    if not path.is_file():
        raise PenaltyCurveInputError(f"{path}: log file not found")
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise PenaltyCurveInputError(f"{path}: cannot read the log as CSV ({e})") from None
    for needed in ("iteration", column):
        if needed not in df.columns:
            raise PenaltyCurveInputError(f"{path}: no column {needed!r}; the columns are {list(df.columns)}")
    if len(df) == 0:
        raise PenaltyCurveInputError(f"{path}: the log has no rows")
    try:
        it = pd.to_numeric(df["iteration"], errors="raise")
        val = pd.to_numeric(df[column], errors="raise").astype(np.float64)
    except (ValueError, TypeError) as e:
        raise PenaltyCurveInputError(f"{path}: column 'iteration' or {column!r} is not numeric ({e})") from None
    if it.isna().any() or not np.all(np.mod(it, 1) == 0):
        raise PenaltyCurveInputError(f"{path}: column 'iteration' must hold integers")
    frame = pd.DataFrame({"iteration": it.astype(np.int64), column: val})
    n_rows = len(frame)
    frame = frame.drop_duplicates("iteration", keep="last")
    n_dup = n_rows - len(frame)
    frame = frame.sort_values("iteration", kind="stable")
    sampling = _sampling(frame["iteration"].to_numpy())  # the log's own interval, before dropping NaN rows
    finite = np.isfinite(frame[column].to_numpy())
    n_nan = int((~finite).sum())
    frame = frame[finite].reset_index(drop=True)
    if len(frame) == 0:
        raise PenaltyCurveInputError(f"{path}: column {column!r} has no finite value ({n_nan} NaN rows)")
    return frame, {"n_rows": n_rows, "n_duplicate_iterations": n_dup, "n_nan_dropped": n_nan, **sampling}


def _sampling(iterations: np.ndarray) -> dict:
    steps = np.diff(iterations)
    if len(steps) == 0:
        every, regular = None, True
    else:
        regular = bool(np.all(steps == steps[0]))
        every = int(steps[0]) if regular else float(np.median(steps))
    first, last = int(iterations[0]), int(iterations[-1])
    if every is None:
        text = f"one point at iteration {first}"
    elif regular:
        text = f"every {every} iterations (iterations {first}..{last}, {len(iterations)} points)"
    else:
        text = (f"irregular, median step {every:g} iterations (iterations {first}..{last}, "
                f"{len(iterations)} points)")
    return {"every_n_iterations": every, "sampling_regular": regular, "first_iteration": first,
            "last_iteration": last, "sampling": text}


def summarize_penalty_log(
    path: str | os.PathLike, *, column: str = "mi_knn", k: int = 5, mode: str = "centred", label: str | None = None
) -> dict:
    """TV and RMSE to the ``k``-point moving average of one log's ``column``, with the sampling stated."""
    k, mode = _check_k(k), _check_mode(mode)
    frame, info = read_penalty_log(path, column)
    x = frame[column].to_numpy()
    out = {"label": label if label is not None else Path(path).stem, "path": str(path), "column": column,
           "k": k, "moving_average": mode, "n_points": len(x), **info,
           "tv": total_variation(x), "rmse_ma": rmse_to_moving_average(x, k, mode),
           "mean": float(np.mean(x)), "last": float(x[-1])}
    out["_frame"] = frame
    return out


def _default_labels(paths: Sequence[Path]) -> list[str]:
    stems = [p.with_suffix("") for p in paths]
    depth_max = max(len(s.parts) for s in stems)
    for depth in range(1, depth_max + 1):
        labels = ["/".join(s.parts[-depth:]) for s in stems]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def _plot(summaries: list[dict], column: str, k: int, mode: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for s in summaries:
        f = s["_frame"]
        ax.plot(f["iteration"], f[column], marker="o", markersize=2.5, linewidth=1.2,
                label=f"{s['label']} (TV {s['tv']:.3g}, RMSE {s['rmse_ma']:.3g})")
    ax.set_xlabel("iteration")
    ax.set_ylabel(column)
    ax.set_title(f"{column} during training (RMSE to a {mode} {k}-point moving average)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def write_penalty_curve_report(
    logs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    column: str = "mi_knn",
    k: int = 5,
    mode: str = "centred",
    labels: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Summarise each log (:func:`summarize_penalty_log`) and write JSON, CSV and a PNG into ``out_dir``.

    Args:
        logs: one or more log CSVs.
        out_dir: output folder (created).
        column: the value column (default ``"mi_knn"``).
        k: points of the moving average (default 5).
        mode: ``"centred"`` (default) or ``"trailing"``.
        labels: one label per log (default: file stems, with parent folders added until unique).

    Returns:
        ``{"json": ..., "csv": ..., "png": ...}`` paths.

    Raises:
        PenaltyCurveInputError: no logs, a wrong number of labels, a bad ``k`` or ``mode``, or any
            error of :func:`read_penalty_log`.
    """
    k, mode = _check_k(k), _check_mode(mode)
    paths = [Path(p) for p in logs]
    if not paths:
        raise PenaltyCurveInputError("no log files given")
    if labels is None:
        labels = _default_labels(paths)
    elif len(labels) != len(paths):
        raise PenaltyCurveInputError(f"{len(labels)} labels for {len(paths)} logs; give one label per log")
    summaries = [summarize_penalty_log(p, column=column, k=k, mode=mode, label=lab) for p, lab in zip(paths, labels)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{key: v for key, v in s.items() if key != "_frame"} for s in summaries]
    settings = {"column": column, "k": k, "moving_average": mode,
                "window": ("points t-(k-1)//2 .. t+k//2" if mode == "centred" else "points t-k+1 .. t"),
                "edges": EDGE_RULE,
                "nan_rows": "rows with a NaN or infinite value are dropped before computing (counted in n_nan_dropped)",
                "duplicates": "the last row of a repeated iteration is kept (counted in n_duplicate_iterations)",
                "tv": "sum_t |L_{t+1} - L_t| over the kept points in iteration order",
                "rmse_ma": "sqrt(mean_t (L_t - MA_k(L)_t)^2) over the kept points"}
    files = {"json": out / "penalty_curve_summary.json", "csv": out / "penalty_curve_summary.csv",
             "png": out / "penalty_curve.png"}
    files["json"].write_text(json.dumps({"settings": settings, "logs": rows}, indent=2, allow_nan=True) + "\n")
    pd.DataFrame(rows).to_csv(files["csv"], index=False)
    _plot(summaries, column, k, mode, files["png"])
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fairmonai.reports.penalty_curve",
        description="Total variation and RMSE to a moving average of penalty curves (PenaltyCurveLogger logs).",
    )
    parser.add_argument("logs", nargs="+", help="log CSV(s) with an 'iteration' column")
    parser.add_argument("--column", default="mi_knn", help="value column (default mi_knn)")
    parser.add_argument("--k", type=int, default=5, help="points of the moving average (default 5)")
    parser.add_argument("--moving-average", choices=list(MOVING_AVERAGES), default="centred",
                        help="centred (default) or trailing window")
    parser.add_argument("--labels", nargs="+", help="one label per log (default: file stems)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        files = write_penalty_curve_report(args.logs, args.out, column=args.column, k=args.k,
                                           mode=args.moving_average, labels=args.labels)
    except (PenaltyCurveInputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = json.loads(files["json"].read_text())
    for s in summary["logs"]:
        print(f"{s['label']}: TV {s['tv']:.6g}, RMSE to {args.moving_average} MA(k={args.k}) {s['rmse_ma']:.6g}; "
              f"{s['sampling']}; {s['n_nan_dropped']} NaN rows dropped")
    for name, path in files.items():
        print(f"  {name:<5} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
