"""Report intervals: the fairness chart shows gaps and ratios apart, in words, with the summary's CIs;
the segmentation report carries the challenge scores' bootstrap intervals."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection

from fairmonai.metrics import classification_fairness_summary
from fairmonai.metrics._bootstrap_segmentation import bootstrap_challenge_scores
from fairmonai.reports import plots, write_report
from fairmonai.reports.report import FAIRNESS_LABELS, GAP_MEASURES, RATIO_MEASURES, fairness_bars


@pytest.fixture(scope="module")
def summary():
    rng = np.random.default_rng(0)
    n = 200
    g = np.repeat([0, 1], n // 2)
    y = rng.integers(0, 2, n)
    score = np.clip(0.35 * y + 0.1 * g + 0.3 + 0.2 * rng.standard_normal(n), 0, 1)
    s = classification_fairness_summary(y, score, sensitive_features=g, group_names=["female", "male"],
                                        n_bootstrap=100, seed=0)
    return s.to_dict()


def _tick_labels(ax):
    return [t.get_text() for t in ax.get_yticklabels()]


def _intervals(ax):
    """{tick label: (low, high)} read back from the CI line collection."""
    labels = dict(zip(ax.get_yticks(), _tick_labels(ax)))
    (coll,) = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_gid() == plots.CI_GID]
    return {labels[seg[0][1]]: (seg[0][0], seg[1][0]) for seg in coll.get_segments()}


def _bar_widths(ax):
    labels = dict(zip(ax.get_yticks(), _tick_labels(ax)))
    return {labels[p.get_y() + p.get_height() / 2]: p.get_width() for p in ax.patches}


def test_labels_cover_both_panels():
    assert set(FAIRNESS_LABELS) == set(GAP_MEASURES) | set(RATIO_MEASURES)
    assert not set(GAP_MEASURES) & set(RATIO_MEASURES)
    assert FAIRNESS_LABELS["tpr_difference"] == "Equal opportunity gap (TPR difference)"
    assert FAIRNESS_LABELS["auc_ratio"] == "AUC ratio (worst/best)"


def test_fairness_chart_two_panels_words_and_intervals(summary):
    gaps, ratios = fairness_bars(summary)
    fig = plots.fairness_figure(gaps, ratios, title="t")
    try:
        assert len(fig.axes) == 2
        ax_gap, ax_ratio = fig.axes
        # the words, in the panels' order; the gap panel holds only difference measures (fair = 0)
        assert _tick_labels(ax_gap) == [
            "AUC gap (best - worst group)", "Equal opportunity gap (TPR difference)",
            "False positive rate gap (FPR difference)", "Demographic parity gap (selection rate difference)",
            "Equalized odds gap (larger of TPR and FPR gaps)", "EOdd (gap in TPR + FPR, summed over classes)",
            "Spread of the groups' mean IoU (sigma_IoU)"]
        assert _tick_labels(ax_ratio) == [
            "AUC ratio (worst/best)", "True positive rate ratio (min/max)", "False positive rate ratio (min/max)",
            "Demographic parity ratio (selection rate min/max)",
            "Equalized odds ratio (smaller of TPR and FPR ratios)",
            "Equal opportunity ratio EOM (TPR min/max, mean over classes)"]
        # expected bar values and intervals, read from the summary dict independently of fairness_bars
        m, disp = summary["metrics"], summary["disparities"]
        expected_gap = {
            "AUC gap (best - worst group)": (m["auc"]["difference"], m["auc"]["ci"]["difference"]),
            "Equal opportunity gap (TPR difference)": (m["tpr"]["difference"], m["tpr"]["ci"]["difference"]),
            "False positive rate gap (FPR difference)": (m["fpr"]["difference"], m["fpr"]["ci"]["difference"]),
            "Demographic parity gap (selection rate difference)": (disp["dp_difference"]["value"],
                                                                   disp["dp_difference"]["ci"]),
            "Equalized odds gap (larger of TPR and FPR gaps)": (disp["eo_difference"]["value"],
                                                                disp["eo_difference"]["ci"]),
            "EOdd (gap in TPR + FPR, summed over classes)": (disp["eodd"]["value"], disp["eodd"]["ci"]),
            "Spread of the groups' mean IoU (sigma_IoU)": (disp["sigma_iou"]["value"], disp["sigma_iou"]["ci"]),
        }
        expected_ratio = {
            "AUC ratio (worst/best)": (m["auc"]["ratio"], m["auc"]["ci"]["ratio"]),
            "True positive rate ratio (min/max)": (m["tpr"]["ratio"], m["tpr"]["ci"]["ratio"]),
            "False positive rate ratio (min/max)": (m["fpr"]["ratio"], m["fpr"]["ci"]["ratio"]),
            "Demographic parity ratio (selection rate min/max)": (disp["dp_ratio"]["value"], disp["dp_ratio"]["ci"]),
            "Equalized odds ratio (smaller of TPR and FPR ratios)": (disp["eo_ratio"]["value"],
                                                                     disp["eo_ratio"]["ci"]),
            "Equal opportunity ratio EOM (TPR min/max, mean over classes)": (disp["eom"]["value"],
                                                                            disp["eom"]["ci"]),
        }
        for ax, expected in ((ax_gap, expected_gap), (ax_ratio, expected_ratio)):
            widths, intervals = _bar_widths(ax), _intervals(ax)
            assert set(widths) == set(intervals) == set(expected)
            for label, (value, ci) in expected.items():
                assert widths[label] == pytest.approx(value, abs=1e-12), label
                assert intervals[label] == pytest.approx(tuple(ci), abs=1e-12), label
        # the fair values: a vertical line at 0 on the gap panel, at 1 on the ratio panel
        assert any(list(ln.get_xdata()) == [0.0, 0.0] for ln in ax_gap.lines)
        assert any(list(ln.get_xdata()) == [1.0, 1.0] for ln in ax_ratio.lines)
    finally:
        plots.plt.close(fig)


def test_fairness_chart_without_bootstrap_has_no_intervals():
    rng = np.random.default_rng(2)
    y, g = rng.integers(0, 2, 60), np.repeat([0, 1], 30)
    d = classification_fairness_summary(y, rng.random(60), sensitive_features=g).to_dict()
    gaps, ratios = fairness_bars(d)
    assert all(r["ci_low"] is None and r["ci_high"] is None for r in gaps + ratios)
    fig = plots.fairness_figure(gaps, ratios)
    try:
        assert not [c for ax in fig.axes for c in ax.collections if c.get_gid() == plots.CI_GID]
    finally:
        plots.plt.close(fig)


def test_segmentation_report_intervals(tmp_path):
    rng = np.random.default_rng(5)
    n = 30
    df = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "dice": rng.random(n).round(3),
                       "normhd": (0.5 * rng.random(n)).round(3),
                       "age_group": rng.choice(["0-40", "41-50", "51-60"], n)})
    df.to_csv(tmp_path / "seg.csv", index=False)
    files = write_report(tmp_path / "seg.csv", tmp_path / "rep", attributes=["age_group"], n_bootstrap=200, seed=4)
    rep = json.loads(files["json"].read_text())
    groups = rep["variables"]["age_group"]["groups"]
    codes = np.array([groups.index(v) for v in df["age_group"]])
    ref = bootstrap_challenge_scores(df["dice"].to_numpy(), df["normhd"].to_numpy(),
                                     sensitive_features={"age_group": codes}, group_names={"age_group": groups},
                                     n_bootstrap=200, seed=4)
    assert rep["bootstrap"] == {"n_bootstrap": 200, "confidence_level": 0.95, "stratified": False, "seed": 4}
    for k in ("mean_dsc", "mean_normhd", "performance_score", "fairness_score", "total_score"):
        assert rep["ci"][k] == pytest.approx(ref[k], abs=1e-12)
    assert rep["variables"]["age_group"]["ci"] == ref["variables"]["age_group"]
    # the overall mean DSC interval is scipy's percentile bootstrap of the mean (same draws)
    from scipy.stats import bootstrap
    sp = bootstrap((df["dice"].to_numpy(),), np.mean, method="percentile", n_resamples=200,
                   rng=np.random.default_rng(4))
    assert rep["ci"]["mean_dsc"] == pytest.approx(list(sp.confidence_interval), abs=1e-12)
    md = files["markdown"].read_text()
    lo, hi = rep["ci"]["fairness_score"]
    assert f"| fairness_score | {rep['fairness_score']:.3f} [{lo:.3f}, {hi:.3f}] |" in md
    assert "95 % percentile bootstrap, 200 resamples of the cases (not stratified), seed 4" in md
    csv = pd.read_csv(files["csv"])
    row = csv[(csv.metric == "disparity") & (csv.attribute == "age_group")].iloc[0]
    assert [row.ci_low, row.ci_high] == pytest.approx(rep["variables"]["age_group"]["ci"]["disparity"], abs=1e-12)


def test_segmentation_report_without_bootstrap(tmp_path):
    df = pd.DataFrame({"case_id": list("abcd"), "dice": [0.8, 0.6, 0.4, 0.2], "normhd": [0.1, 0.2, 1.0, 0.0],
                       "age_group": ["0-40", "0-40", "41-50", "41-50"]})
    df.to_csv(tmp_path / "seg.csv", index=False)
    files = write_report(tmp_path / "seg.csv", tmp_path / "rep", attributes=["age_group"], n_bootstrap=0)
    rep = json.loads(files["json"].read_text())
    assert "ci" not in rep and "ci" not in rep["variables"]["age_group"]
    assert "| 0-40 | 2 | 0.700 | 0.150 |" in files["markdown"].read_text()
