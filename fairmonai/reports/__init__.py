"""Fairness reports from a predictions file: JSON, CSV, Markdown, figures.

``python -m fairmonai.reports <predictions.csv> --out DIR``; the penalty-curve report is
``python -m fairmonai.reports.penalty_curve LOG.csv``.

The public names load on first use, so running a submodule (the penalty-curve report) does not
import the metrics and MONAI first.
"""

from importlib import import_module

_HOME = {
    "ReportInputError": ".report",
    "detect_task": ".report",
    "dice_matrix": ".report",
    "read_predictions": ".report",
    "write_report": ".report",
    "FIGURE2_PAIRS": ".compare",
    "dice_heatmap_comparison": ".compare",
    "FAIRNESS_LABELS": ".report",
    "fairness_bars": ".report",
    "forest_plot": ".plots",
    "fairness_chart": ".plots",
    "fairness_figure": ".plots",
    "heatmap": ".plots",
    "metric_bar_chart": ".plots",
}
__all__ = list(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'fairmonai.reports' has no attribute {name!r}")
    value = getattr(import_module(_HOME[name], __name__), name)
    globals()[name] = value
    return value
