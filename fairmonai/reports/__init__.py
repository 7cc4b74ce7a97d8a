"""Fairness reports from a predictions file: JSON, CSV, Markdown, figures.

``python -m fairmonai.reports <predictions.csv> --out DIR``; the penalty-curve report is
``python -m fairmonai.reports.penalty_curve LOG.csv``.

The public names load on first use, so running a submodule (the penalty-curve report) does not
import the metrics and MONAI first.
"""

from importlib import import_module

_HOME = {
    "FAIRNESS_LOSSES": ".fairness_loss_table",
    "batch_averaged_losses": ".fairness_loss_table",
    "fairness_loss_row": ".fairness_loss_table",
    "write_fairness_loss_table": ".fairness_loss_table",
    "write_fairness_loss_report": ".fairness_loss_table",
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
    "FOLD_TESTS": ".fold_statistics",
    "FOLD_ALTERNATIVES": ".fold_statistics",
    "PAPER_STAR_THRESHOLD": ".fold_statistics",
    "NON_FINITE_FOLD_MSG": ".fold_statistics",
    "PAIRED_LENGTH_MSG": ".fold_statistics",
    "UNKNOWN_MODEL_MSG": ".fold_statistics",
    "FAMILY_MSG": ".fold_statistics",
    "BAD_COUNTS_MSG": ".fold_statistics",
    "BAD_LABEL_MSG": ".fold_statistics",
    "ZEROS_NOTE": ".fold_statistics",
    "TIES_NOTE": ".fold_statistics",
    "ALL_ZERO_NOTE": ".fold_statistics",
    "FoldComparison": ".fold_statistics",
    "FamilyRow": ".fold_statistics",
    "ComparisonFamily": ".fold_statistics",
    "FoldValidity": ".fold_statistics",
    "compare_folds": ".fold_statistics",
    "comparison_family": ".fold_statistics",
    "best_versus_closest": ".fold_statistics",
    "fold_validity": ".fold_statistics",
    "fold_label_counts": ".fold_statistics",
    "family_markdown": ".fold_statistics",
    "FoldReportError": ".fold_report",
    "check_fold_report_settings": ".fold_report",
    "write_fold_report": ".fold_report",
    "collect_runs": ".vae_representation",
    "gap_test": ".vae_representation",
    "ordering_checks": ".vae_representation",
    "condition_prevalence": ".vae_representation",
    "fine_label_table": ".vae_representation",
    "write_vae_report": ".vae_representation",
}
__all__ = list(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'fairmonai.reports' has no attribute {name!r}")
    value = getattr(import_module(_HOME[name], __name__), name)
    globals()[name] = value
    return value
