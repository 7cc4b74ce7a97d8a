"""Figures of a fairness report: forest plot, fairness chart (gaps and ratios), bar chart, Dice heatmap.

Each function takes plain numbers and labels (no metric computation here), writes one PNG and
returns its path; :func:`fairness_figure` returns the open figure instead, for tests and notebooks.
Matplotlib runs with the non-interactive Agg backend, so no display is needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["CI_GID", "forest_plot", "fairness_figure", "fairness_chart", "metric_bar_chart", "heatmap"]

#: ``gid`` of the line collection that draws the confidence intervals of a bar panel (one segment
#: ``[(low, y), (high, y)]`` per bar with an interval), so that tests can read them back.
CI_GID = "ci"


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def forest_plot(
    rows: Sequence[Mapping],
    path: str | os.PathLike,
    *,
    overall: Mapping | None = None,
    metric_name: str = "AUC",
    title: str = "",
) -> Path:
    """Per-group estimates with confidence intervals, one row per group, overall as a dashed line.

    Args:
        rows: one mapping per group with keys ``group``, ``value``, optional ``ci_low``, ``ci_high``
            and ``n``. A group whose value is NaN is drawn as a labelled gap ("undefined").
        path: the PNG to write.
        overall: ``{"value", "ci_low", "ci_high"}`` of the whole set.
        metric_name: x-axis label.
        title: figure title.
    """
    path = Path(path)
    n = len(rows)
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.45 * max(n, 1)))
    ys = np.arange(n)[::-1]
    labels = []
    for y, r in zip(ys, rows):
        v, lo, hi = r.get("value"), r.get("ci_low"), r.get("ci_high")
        label = f"{r['group']}" + (f"  (n={r['n']})" if r.get("n") is not None else "")
        labels.append(label)
        if not _finite(v):
            ax.text(0.5, y, "undefined", va="center", ha="center", color="grey", transform=ax.get_yaxis_transform())
            continue
        if _finite(lo) and _finite(hi):
            ax.hlines(y, lo, hi, color="tab:blue", lw=2)
        ax.plot([v], [y], "s", color="tab:blue", ms=7)
    if overall is not None and _finite(overall.get("value")):
        ax.axvline(overall["value"], color="black", ls="--", lw=1, label=f"overall {overall['value']:.3f}")
        if _finite(overall.get("ci_low")) and _finite(overall.get("ci_high")):
            ax.axvspan(overall["ci_low"], overall["ci_high"], color="grey", alpha=0.15)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.set_ylim(-0.8, n - 0.2)
    ax.set_xlabel(metric_name)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _draw_intervals(ax, segments: list) -> None:
    """Intervals ``[(low, y), (high, y)]`` as one line collection (gid :data:`CI_GID`) with caps."""
    if not segments:
        return
    ys = [seg[0][1] for seg in segments]
    ax.hlines(ys, [seg[0][0] for seg in segments], [seg[1][0] for seg in segments], colors="black", lw=1.5,
              gid=CI_GID)
    for end in (0, 1):  # caps
        ax.plot([seg[end][0] for seg in segments], ys, "|", color="black", ms=8)


def _bar_panel(ax, rows: Sequence[Mapping], *, fair: float, xlabel: str) -> None:
    """Horizontal bars from 0 with their intervals (black lines, gid :data:`CI_GID`) and a line at ``fair``."""
    ys = np.arange(len(rows))[::-1]
    segments = []
    for y, r in zip(ys, rows):
        v, lo, hi = r.get("value"), r.get("ci_low"), r.get("ci_high")
        if not _finite(v):
            ax.text(0, y, " n/a", va="center", color="grey")
            continue
        ax.barh(y, v, color="tab:orange" if v < 0 else "tab:blue", height=0.6)
        end = v
        if _finite(lo) and _finite(hi):
            segments.append([(lo, y), (hi, y)])
            end = max(v, hi)
        ax.text(end, y, f" {v:.3f}", va="center", fontsize=8)
    _draw_intervals(ax, segments)
    ax.axvline(fair, color="black", lw=1.0, ls="--" if fair else "-")
    ax.set_yticks(ys)
    ax.set_yticklabels([r["label"] for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def fairness_figure(
    gaps: Sequence[Mapping],
    ratios: Sequence[Mapping],
    *,
    title: str = "Fairness metrics",
    ci_text: str = "",
) -> Figure:
    """Two panels: gaps (a fair model scores 0) above ratios (a fair model scores 1), each bar with its interval.

    Gaps and ratios are on different scales with different fair values, so they get separate axes:
    the gap panel has a solid line at 0, the ratio panel a dashed line at 1. An interval is a black
    line with caps from ``ci_low`` to ``ci_high`` (the segments of the line collection with gid
    :data:`CI_GID`); a percentile interval of a gap can lie beside its value (see
    :mod:`fairmonai.metrics._group_bootstrap`), so it is drawn as it is, not as +- errors.

    Args:
        gaps: one mapping per bar, top to bottom: ``label`` (words), ``value``, optional ``ci_low``,
            ``ci_high``. A NaN value is listed as n/a.
        ratios: the same for the ratio panel.
        title: figure title.
        ci_text: what the intervals are (e.g. ``"95 % bootstrap CI"``), shown under the title.

    Returns:
        The figure (the caller saves and closes it); ``fig.axes`` is ``[gap axis, ratio axis]``.
    """
    n_g, n_r = max(len(gaps), 1), max(len(ratios), 1)
    fig, (ax_g, ax_r) = plt.subplots(2, 1, figsize=(10.0, 2.2 + 0.42 * (n_g + n_r)),
                                     gridspec_kw={"height_ratios": [n_g + 1, n_r + 1]})
    _bar_panel(ax_g, gaps, fair=0.0, xlabel="gap (difference between groups; fair = 0)")
    _bar_panel(ax_r, ratios, fair=1.0, xlabel="ratio (between groups; fair = 1)")
    ax_g.set_title("Gaps: 0 for a fair model", fontsize=9)
    ax_r.set_title("Ratios: 1 for a fair model", fontsize=9)
    for ax, rows, least in ((ax_g, gaps, 0.0), (ax_r, ratios, 1.0)):  # room for the printed values
        right = max([least] + [r[k] for r in rows for k in ("value", "ci_high") if _finite(r.get(k))])
        ax.set_xlim(min([0.0] + [r["value"] for r in rows if _finite(r.get("value"))]), 1.15 * right or 1.0)
    fig.suptitle(title + (f"\n({ci_text})" if ci_text else ""), fontsize=10)
    fig.tight_layout()
    return fig


def fairness_chart(
    gaps: Sequence[Mapping],
    ratios: Sequence[Mapping],
    path: str | os.PathLike,
    *,
    title: str = "Fairness metrics",
    ci_text: str = "",
) -> Path:
    """Write :func:`fairness_figure` to the PNG ``path`` and return the path."""
    path = Path(path)
    fig = fairness_figure(gaps, ratios, title=title, ci_text=ci_text)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def metric_bar_chart(
    values: Mapping[str, float],
    path: str | os.PathLike,
    *,
    ideal: Mapping[str, float] | None = None,
    ci: Mapping[str, Sequence[float]] | None = None,
    title: str = "Fairness metrics",
) -> Path:
    """Horizontal bars, one per metric, value printed at the bar's end; NaN metrics are listed as n/a.

    Args:
        values: metric name -> value.
        path: the PNG to write.
        ideal: optional metric name -> value of a perfectly fair model (drawn as a tick).
        ci: optional metric name -> ``(low, high)`` interval, drawn as a black line with caps (the
            line collection with gid :data:`CI_GID`).
        title: figure title.
    """
    path = Path(path)
    names = list(values)
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.42 * max(len(names), 1)))
    ys = np.arange(len(names))[::-1]
    segments = []
    for y, name in zip(ys, names):
        v = values[name]
        if not _finite(v):
            ax.text(0, y, " n/a", va="center", color="grey")
            continue
        ax.barh(y, v, color="tab:orange" if v < 0 else "tab:blue", height=0.6)
        end = v
        lo, hi = (ci or {}).get(name) or (None, None)
        if _finite(lo) and _finite(hi):
            segments.append([(lo, y), (hi, y)])
            end = max(v, hi)
        ax.text(end, y, f" {v:.3f}", va="center", fontsize=8)
        if ideal and name in ideal:
            ax.plot([ideal[name]] * 2, [y - 0.35, y + 0.35], color="black", lw=1.5)
    _draw_intervals(ax, segments)
    ax.set_yticks(ys)
    ax.set_yticklabels(names)
    ax.axvline(0, color="black", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title + ("  (| = value of a fair model)" if ideal else ""), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def heatmap(
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike,
    *,
    counts: np.ndarray | None = None,
    row_name: str = "",
    col_name: str = "",
    title: str = "Mean Dice",
    diverging: bool = False,
) -> Path:
    """A matrix of means (e.g. Dice over age group x breast density), empty cells shown blank.

    Args:
        matrix: (R, C) values, NaN for cells with no case.
        row_labels, col_labels: category names of the two attributes.
        path: the PNG to write.
        counts: optional (R, C) case counts printed under each value.
        row_name, col_name: axis titles (the attribute names).
        title: figure title.
        diverging: colour map centred on 0 (for a difference of two heatmaps).
    """
    path = Path(path)
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"matrix shape {matrix.shape} does not match labels ({len(row_labels)}, {len(col_labels)})")
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(col_labels), 1.4 + 0.6 * len(row_labels)))
    masked = np.ma.masked_invalid(matrix)
    if diverging:
        lim = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 1.0
        im = ax.imshow(masked, cmap="RdBu", vmin=-lim, vmax=lim)
    else:
        im = ax.imshow(masked, cmap="viridis", vmin=0.0, vmax=1.0)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if np.isfinite(matrix[i, j]):
                text = f"{matrix[i, j]:.2f}" + (f"\nn={int(counts[i, j])}" if counts is not None else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if not diverging else "black")
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels(col_labels)
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels(row_labels)
    ax.set_xlabel(col_name)
    ax.set_ylabel(row_name)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
