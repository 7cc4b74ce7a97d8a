"""Fairness reports from a predictions file: JSON, CSV, Markdown, figures.

``python -m fairmonai.reports <predictions.csv> --out DIR``.
"""

from .plots import forest_plot, heatmap, metric_bar_chart
from .report import ReportInputError, detect_task, dice_matrix, read_predictions, write_report

__all__ = [
    "ReportInputError",
    "detect_task",
    "dice_matrix",
    "read_predictions",
    "write_report",
    "forest_plot",
    "heatmap",
    "metric_bar_chart",
]
