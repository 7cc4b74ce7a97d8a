"""Fairness report from a predictions file: JSON, CSV, Markdown and figures.

A predictions file is a CSV with one row per case:

* ``case_id`` (unique) and the sensitive attribute columns (their values; an empty cell, or
  ``unknown`` for an attribute whose schema policy is ``exclude``, is a value excluded by the
  missing-value policy: the case counts in the overall figures but in no group);
* classification: ``label`` (class index) and either ``score`` (probability of class 1, binary
  tasks) or ``prob_0 .. prob_{K-1}`` (class probabilities); an optional ``prediction`` column is
  ignored (predictions are re-derived from the scores so that every metric uses the same rule);
* segmentation: ``dice`` in [0, 1] and ``normhd`` >= 0 (above 1 when written unclipped, as the
  public MAMA-MIA scoring script does) or ``hd95`` (>= 0, ``inf`` for one empty mask; turned into
  NormHD = min(HD95 / 150, 1), this package's default clipping), measured on each case's original
  image grid.

:func:`write_report` first checks the whole file (:func:`fairmonai.reports._inputs.check_predictions`:
every score in its range and finite, each error naming the case and the column; every attribute
value among the schema's categories) with pandas alone, then imports the metrics (torch, MONAI) and
matplotlib, computes every metric of :mod:`fairmonai.metrics` for each attribute and writes into
``out_dir``: ``report.json`` (everything), ``metrics.csv`` (one row per attribute, metric and group),
``report.md`` (tables a person reads) and PNG figures: a forest plot of per-group AUC with bootstrap
confidence intervals and a chart of the fairness metrics per attribute, gaps (fair = 0) and ratios
(fair = 1) in two panels with their intervals, named in words (:data:`FAIRNESS_LABELS`;
classification); a bar chart of the challenge scores with their intervals and a heatmap of mean Dice
for each pair of attributes (segmentation).

Confidence intervals are percentile bootstrap intervals, ``n_bootstrap`` resamples (default 1000) at
``confidence_level`` (0.95) with ``seed`` (0), for both tasks: classification resamples within each
(group, label) stratum (:mod:`fairmonai.metrics._group_bootstrap`); segmentation resamples cases from
the whole set and recomputes every challenge score on each replicate, the group means, gaps and
disparities and PS, FS, TS from them
(:func:`fairmonai.metrics._bootstrap_segmentation.bootstrap_challenge_scores`).
Both files and the CLI say, per attribute, how many cases the schema's missing-value policy left
out of the groups (``exclude``, or an empty cell) or put in the ``unknown`` group (``category``).
The files are written to a temporary folder beside ``out_dir`` and moved there at the end, so a
failure leaves no partial report.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ._inputs import (
    RESERVED_COLUMNS,
    CheckedPredictions,
    ReportInputError,
    check_output_dir,
    check_predictions,
    check_report_options,
    detect_task,
    read_predictions,
)

__all__ = [
    "ReportInputError",
    "read_predictions",
    "detect_task",
    "write_report",
    "dice_matrix",
    "RESERVED_COLUMNS",
    "FAIRNESS_LABELS",
    "GAP_MEASURES",
    "RATIO_MEASURES",
    "fairness_bars",
]

#: Policy names as the report prints them.
_POLICY_TEXT = {"exclude": "exclude", "category": "category", "error": "error", None: "none (no schema entry)"}


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _fmt_ci(ci) -> str:
    if not ci or ci[0] is None or ci[1] is None or math.isnan(ci[0]) or math.isnan(ci[1]):
        return ""
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def _ci_text(n_bootstrap: int, confidence_level: float) -> str:
    """What the figures' intervals are, in words (empty without a bootstrap)."""
    if not n_bootstrap:
        return ""
    return f"black lines: {confidence_level * 100:g} % percentile bootstrap CI, {n_bootstrap} resamples"


# ----------------------------------------------------------------------------------------------------
# classification


def _missing_line(attr: str, m: Mapping) -> str:
    """One sentence: how many cases of ``attr`` the missing-value policy excluded or mapped to unknown."""
    text = f"{m['n_excluded']} excluded (in no group, overall figures only)"
    if m.get("unknown_category") is not None:
        text += f", {m['n_unknown']} mapped to '{m['unknown_category']}' (a group of its own)"
    return f"{attr}: {text}; missing-value policy {_POLICY_TEXT[m['policy']]}."


def _missing_markdown(missing: Mapping[str, Mapping]) -> list[str]:
    lines = ["", "## Missing attribute values", "",
             "| attribute | missing-value policy | excluded (in no group) | mapped to the unknown group |",
             "|---|---|---:|---:|"]
    for attr, m in missing.items():
        unknown = f"{m['n_unknown']} ('{m['unknown_category']}')" if m.get("unknown_category") is not None else "-"
        lines.append(f"| {attr} | {_POLICY_TEXT[m['policy']]} | {m['n_excluded']} | {unknown} |")
    return lines


def _classification(checked: CheckedPredictions, out_dir: Path, *, n_bootstrap, confidence_level, seed,
                    threshold, eodd_strategy, reference_group, title):
    from ..metrics._classification import classification_fairness_summary
    from ..metrics._fami_metrics import SIGMA_IOU_DDOF
    from . import plots

    df = checked.df
    y, scores = checked.values["label"], checked.values["scores"]
    result = {"task": "classification", "n_cases": int(len(df)), "attributes": {}}
    csv_rows, md, figures = [], [], {}
    md.append(f"# {title}\n")
    md.append(f"{len(df)} cases. Confidence intervals: {int(confidence_level * 100)} % percentile bootstrap, "
              f"{n_bootstrap} resamples (stratified by group and label), seed {seed}.\n")
    for attr in checked.attributes:
        codes, names = checked.codes[attr], checked.groups[attr]
        ref = reference_group.get(attr) if isinstance(reference_group, Mapping) else reference_group
        strategy = eodd_strategy
        if strategy is None:
            strategy = "one_vs_rest" if ref is not None else "max_pair"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = classification_fairness_summary(
                y, scores, sensitive_features=codes, group_names=names, threshold=threshold,
                eodd_strategy=strategy if len(names) > 2 else None, reference_group=ref if len(names) > 2 else None,
                sigma_ddof=SIGMA_IOU_DDOF, n_bootstrap=n_bootstrap, confidence_level=confidence_level, seed=seed,
            )
        notes = sorted({str(w.message) for w in caught})
        for note in notes:
            warnings.warn(f"{attr}: {note}", stacklevel=3)
        d = summary.to_dict()
        d["warnings"] = notes
        d["missing_values"] = dict(checked.missing[attr])
        result["attributes"][attr] = d
        md += _classification_markdown(attr, d)
        for name, m in d["metrics"].items():
            ci = m.get("ci") or {}
            csv_rows.append({"attribute": attr, "metric": name, "group": "overall", "value": m["overall"],
                             **_ci_cols((ci.get("overall"))), "n": d["n_samples"]})
            for g, v in m["by_group"].items():
                csv_rows.append({"attribute": attr, "metric": name, "group": g, "value": v,
                                 **_ci_cols((ci.get("by_group") or {}).get(g)), "n": d["group_sizes"].get(g)})
            for kind in ("difference", "ratio"):
                csv_rows.append({"attribute": attr, "metric": f"{name}_{kind}", "group": "", "value": m[kind],
                                 **_ci_cols(ci.get(kind)), "n": None})
        for name, disp in d["disparities"].items():
            csv_rows.append({"attribute": attr, "metric": name, "group": disp.get("strategy") or "",
                             "value": disp["value"], **_ci_cols(disp.get("ci")), "n": None})
        if "auc" in d["metrics"]:
            auc = d["metrics"]["auc"]
            ci = auc.get("ci") or {}
            rows = [{"group": g, "value": auc["by_group"][g], "n": d["group_sizes"].get(g),
                     "ci_low": ((ci.get("by_group") or {}).get(g) or (None, None))[0],
                     "ci_high": ((ci.get("by_group") or {}).get(g) or (None, None))[1]} for g in auc["by_group"]]
            ov = ci.get("overall") or (None, None)
            figures[f"forest_auc_{attr}"] = plots.forest_plot(
                rows, out_dir / f"forest_auc_{attr}.png", overall={"value": auc["overall"], "ci_low": ov[0],
                                                                   "ci_high": ov[1]},
                metric_name="AUC", title=f"AUC by {attr}")
        gaps, ratios = fairness_bars(d)
        figures[f"fairness_{attr}"] = plots.fairness_chart(gaps, ratios, out_dir / f"fairness_{attr}.png",
                                                           title=f"Fairness metrics by {attr}",
                                                           ci_text=_ci_text(n_bootstrap, confidence_level))
    return result, csv_rows, md, figures


def _ci_cols(ci) -> dict:
    if not ci:
        return {"ci_low": None, "ci_high": None}
    return {"ci_low": ci[0], "ci_high": ci[1]}


#: Words for each fairness measure on the chart, by code name: ``<metric>_difference`` /
#: ``<metric>_ratio`` of a group metric (``max - min`` and ``min / max`` over the groups, the report's
#: ``between_groups`` method), or the name of a disparity index of
#: :func:`fairmonai.metrics.classification_fairness_summary`.
FAIRNESS_LABELS: Mapping[str, str] = {
    "auc_difference": "AUC gap (best - worst group)",
    "tpr_difference": "Equal opportunity gap (TPR difference)",
    "fpr_difference": "False positive rate gap (FPR difference)",
    "dp_difference": "Demographic parity gap (selection rate difference)",
    "eo_difference": "Equalized odds gap (larger of TPR and FPR gaps)",
    "eodd": "EOdd (gap in TPR + FPR, summed over classes)",
    "sigma_iou": "Spread of the groups' mean IoU (sigma_IoU)",
    "auc_ratio": "AUC ratio (worst/best)",
    "tpr_ratio": "True positive rate ratio (min/max)",
    "fpr_ratio": "False positive rate ratio (min/max)",
    "dp_ratio": "Demographic parity ratio (selection rate min/max)",
    "eo_ratio": "Equalized odds ratio (smaller of TPR and FPR ratios)",
    "eom": "Equal opportunity ratio EOM (TPR min/max, mean over classes)",
}
#: The gap panel (a fair model scores 0), top to bottom.
GAP_MEASURES = ("auc_difference", "tpr_difference", "fpr_difference", "dp_difference", "eo_difference", "eodd",
                "sigma_iou")
#: The ratio panel (a fair model scores 1), top to bottom.
RATIO_MEASURES = ("auc_ratio", "tpr_ratio", "fpr_ratio", "dp_ratio", "eo_ratio", "eom")


def _measure(d: Mapping, code: str):
    """``(value, ci)`` of a fairness measure of a summary dict, or ``None`` where the summary lacks it."""
    if code in d["disparities"]:
        disp = d["disparities"][code]
        return disp["value"], disp.get("ci")
    base, _, kind = code.rpartition("_")
    if kind in ("difference", "ratio") and base in d["metrics"]:
        m = d["metrics"][base]
        return m[kind], (m.get("ci") or {}).get(kind)
    return None


def fairness_bars(d: Mapping) -> tuple[list[dict], list[dict]]:
    """The gap and ratio bars of a fairness summary dict (``FairnessSummary.to_dict()``).

    Each bar is ``{"code", "label", "value", "ci_low", "ci_high"}``, the label from
    :data:`FAIRNESS_LABELS`; the gaps are the measures of :data:`GAP_MEASURES` the summary has, the
    ratios those of :data:`RATIO_MEASURES`, in that order. ES-AUC is on neither panel: it is an AUC
    scaled down by the groups' gaps, whose fair value is the overall AUC (it is in the Markdown).
    """
    panels = []
    for codes in (GAP_MEASURES, RATIO_MEASURES):
        rows = []
        for code in codes:
            found = _measure(d, code)
            if found is None:
                continue
            value, ci = found
            rows.append({"code": code, "label": FAIRNESS_LABELS[code], "value": value, **_ci_cols(ci)})
        panels.append(rows)
    return panels[0], panels[1]


def _classification_markdown(attr: str, d: Mapping) -> list[str]:
    groups = d["groups"]
    metrics = d["metrics"]
    cols = [m for m in ("auc", "tpr", "fpr", "selection_rate", "accuracy") if m in metrics]
    cols += [m for m in metrics if m not in cols]
    lines = [f"\n## {attr}\n",
             f"{d['n_samples']} cases. " + _missing_line(attr, d["missing_values"]).split(": ", 1)[1] + "\n",
             "| group | n | " + " | ".join(cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for g in ["overall", *groups]:
        cells = []
        for m in cols:
            res = metrics[m]
            ci = res.get("ci") or {}
            if g == "overall":
                cells.append(_fmt(res["overall"]) + _fmt_ci(ci.get("overall")))
            else:
                cells.append(_fmt(res["by_group"].get(g)) + _fmt_ci((ci.get("by_group") or {}).get(g)))
        n = d["n_samples"] if g == "overall" else d["group_sizes"].get(g, 0)
        lines.append(f"| {g} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "| fairness metric | value | how groups are compared |", "|---|---:|---|"]
    for m in cols:
        ci = metrics[m].get("ci") or {}
        lines.append(f"| {m} difference (max - min) | {_fmt(metrics[m]['difference'])}{_fmt_ci(ci.get('difference'))} "
                     f"| {metrics[m]['method']} |")
    for name, disp in d["disparities"].items():
        how = disp.get("strategy") or ""
        details = disp.get("details") or {}
        if details.get("reference_group") is not None:
            how += f" (reference group {details['reference_group']})"
        if name == "sigma_iou" and "ddof" in details:
            how = (f"std of the groups' mean class IoU, ddof {details['ddof']}; a class absent from a group: "
                   f"{details.get('absent_class', 'leave_out')}")
        lines.append(f"| {name} | {_fmt(disp['value'])}{_fmt_ci(disp.get('ci'))} | {how} |")
    if d.get("warnings"):
        lines += ["", "Warnings:", *[f"- {w}" for w in d["warnings"]]]
    return lines


# ----------------------------------------------------------------------------------------------------
# segmentation


#: The challenge scores' rows of the Markdown table (and of the CSV), in order.
_SEG_SCORES = ("mean_dsc", "mean_normhd", "performance_score", "fairness_score", "total_score")
#: Words for the challenge scores on the chart.
_SEG_LABELS = {"mean_dsc": "Mean DSC", "mean_normhd": "Mean NormHD", "performance_score": "Performance score (PS)",
               "fairness_score": "Fairness score (FS)", "total_score": "Total score (TS)"}


def _segmentation(checked: CheckedPredictions, out_dir: Path, *, ts_weight, title, n_bootstrap=0,
                  confidence_level=0.95, seed=0):
    from ..metrics import bootstrap_challenge_scores
    from ..metrics._segmentation import HD_MAX, challenge_scores
    from . import plots

    dsc = checked.values["dice"]
    if "normhd" in checked.values:
        normhd = checked.values["normhd"]
    else:
        hd95 = checked.values["hd95"]
        normhd = np.where(np.isinf(hd95), 1.0, np.clip(hd95 / HD_MAX, 0.0, 1.0))
    encoded = {a: (checked.codes[a], checked.groups[a]) for a in checked.attributes}
    features = {a: c for a, (c, _) in encoded.items()}
    group_names = {a: n for a, (_, n) in encoded.items()}
    scores = challenge_scores(dsc, normhd, sensitive_features=features, group_names=group_names, ts_weight=ts_weight)
    d = scores.to_dict()
    ci = None
    if n_bootstrap:
        ci = bootstrap_challenge_scores(dsc, normhd, sensitive_features=features, group_names=group_names,
                                        ts_weight=ts_weight, n_bootstrap=n_bootstrap,
                                        confidence_level=confidence_level, seed=seed)
        d["bootstrap"] = ci["bootstrap"]
        d["ci"] = {k: ci[k] for k in _SEG_SCORES}
    for attr, v in d["variables"].items():
        v["missing_values"] = dict(checked.missing[attr])
        if ci is not None:
            v["ci"] = ci["variables"][attr]
    top_ci = d.get("ci") or {}
    result = {"task": "segmentation", **d}
    csv_rows = [{"attribute": "", "metric": k, "group": "overall", "value": d[k], **_ci_cols(top_ci.get(k)),
                 "n": d["n_cases"]} for k in _SEG_SCORES]
    if "normhd" in checked.values:
        source = "NormHD from the file's 'normhd' column" + (
            " (values above 1 present: not clipped, as the public scoring script)" if (normhd > 1).any() else "")
    else:
        source = f"NormHD = min(HD95 / {HD_MAX:g}, 1) from the file's 'hd95' column"
    intervals = ("" if ci is None else
                 f" Confidence intervals: {int(confidence_level * 100)} % percentile bootstrap, {n_bootstrap} "
                 f"resamples of the cases (not stratified), seed {seed}; every score recomputed on each resample.")
    md = [f"# {title}\n", f"{d['n_cases']} cases; {source}; HD95 in voxel units on the original "
          "grid; total score = ts_weight * PS + (1 - ts_weight) * FS." + intervals + "\n",
          "| score | value |", "|---|---:|"]
    md += [f"| {k} | {_fmt(d[k])}{_fmt_ci(top_ci.get(k))} |" for k in _SEG_SCORES]
    md.append(f"| ts_weight | {_fmt(d['ts_weight'])} |")
    figures = {}
    for attr, v in d["variables"].items():
        vci = v.get("ci") or {}
        n_groups = len(v["groups"])
        dsc_ci, hd_ci = vci.get("mean_dsc") or [None] * n_groups, vci.get("mean_normhd") or [None] * n_groups
        md += [f"\n## {attr}\n", f"Disparity D = {_fmt(v['disparity'])}{_fmt_ci(vci.get('disparity'))} "
               f"(fairness 1 - D = {_fmt(v['fairness'])}{_fmt_ci(vci.get('fairness'))}). "
               + _missing_line(attr, v["missing_values"]).split(": ", 1)[1] + "\n",
               "| group | n | mean DSC | mean NormHD |",
               "|---|---:|---:|---:|"]
        for g, n, m_d, m_h, c_d, c_h in zip(v["groups"], v["counts"], v["mean_dsc"], v["mean_normhd"], dsc_ci, hd_ci):
            md.append(f"| {g} | {n} | {_fmt(m_d)}{_fmt_ci(c_d)} | {_fmt(m_h)}{_fmt_ci(c_h)} |")
            csv_rows.append({"attribute": attr, "metric": "mean_dsc", "group": g, "value": m_d, **_ci_cols(c_d),
                             "n": n})
            csv_rows.append({"attribute": attr, "metric": "mean_normhd", "group": g, "value": m_h, **_ci_cols(c_h),
                             "n": n})
        csv_rows.append({"attribute": attr, "metric": "disparity", "group": "", "value": v["disparity"],
                         **_ci_cols(vci.get("disparity")), "n": None})
    bars = {_SEG_LABELS[k]: d[k] for k in _SEG_SCORES}
    bar_ci = {_SEG_LABELS[k]: top_ci[k] for k in _SEG_SCORES if k in top_ci}
    for a, v in d["variables"].items():
        bars[f"Disparity D ({a})"] = v["disparity"]
        if v.get("ci"):
            bar_ci[f"Disparity D ({a})"] = v["ci"]["disparity"]
    figures["challenge_scores"] = plots.metric_bar_chart(
        bars, out_dir / "challenge_scores.png", ci=bar_ci,
        title="MAMA-MIA challenge scores" + (f"\n({_ci_text(n_bootstrap, confidence_level)})" if ci else ""))
    names = list(encoded)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (ca, na), (cb, nb) = encoded[a], encoded[b]
            mean, count = dice_matrix(dsc, ca, cb, len(na), len(nb))
            figures[f"heatmap_{a}_x_{b}"] = plots.heatmap(
                mean, na, nb, out_dir / f"heatmap_{a}_x_{b}.png", counts=count, row_name=a, col_name=b,
                title=f"Mean Dice: {a} x {b}")
    return result, csv_rows, md, figures


def dice_matrix(dsc: np.ndarray, codes_a: np.ndarray, codes_b: np.ndarray, n_a: int, n_b: int):
    """Mean Dice and case count per (a, b) cell; NaN where a cell has no case; code -1 left out.

    Returns:
        ``(mean, count)``, arrays of shape ``(n_a, n_b)``.
    """
    keep = (codes_a >= 0) & (codes_b >= 0)
    cell = codes_a[keep] * n_b + codes_b[keep]
    count = np.bincount(cell, minlength=n_a * n_b).reshape(n_a, n_b)
    total = np.bincount(cell, weights=dsc[keep], minlength=n_a * n_b).reshape(n_a, n_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean, count


# ----------------------------------------------------------------------------------------------------


def write_report(
    predictions: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    attributes: Sequence[str] | None = None,
    schema: str | os.PathLike | None = None,
    n_bootstrap: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    threshold: float = 0.5,
    eodd_strategy: str | None = None,
    reference_group: str | Mapping[str, str] | None = None,
    ts_weight: float = 0.5,
    title: str | None = None,
) -> dict[str, Path]:
    """Check a predictions file, compute every fairness metric and write the report files.

    The whole file is checked first (pandas only, nothing written; see
    :func:`fairmonai.reports._inputs.check_predictions`); the metrics and plotting libraries are
    imported only for a valid file. The files are written to a temporary folder beside ``out_dir``
    and moved into ``out_dir`` at the end: a failure leaves no report folder and no partial report.

    Args:
        predictions: the predictions CSV (see the module docstring).
        out_dir: folder to write into (created; files of an earlier report are replaced).
        attributes: sensitive attribute columns (default: the schema's attributes present in the file,
            else every other column with at most 20 distinct values).
        schema: dataset name or schema path; gives each attribute's category order and missing-value
            policy (``exclude``: an empty cell or ``unknown`` is in no group; ``category``: an empty
            cell is the ``missing_category`` group). The report counts both per attribute.
        n_bootstrap: bootstrap resamples for confidence intervals (both tasks; 0 = none). Segmentation
            recomputes every challenge score on each resample, about 0.5 ms per resample for a few
            hundred cases.
        confidence_level: interval level, in (0, 1).
        seed: bootstrap seed.
        threshold: decision threshold of a binary classifier's score, in [0, 1].
        eodd_strategy: EOdd for more than two groups: ``"max_pair"`` (largest value over group pairs) or
            ``"one_vs_rest"`` (``reference_group`` against the others). Default: ``one_vs_rest`` when a
            reference group is given, else ``max_pair``. The report states which was used.
        reference_group: the one-vs-rest group, or ``{attribute: group}``.
        ts_weight: weight of the performance score in the total score (segmentation), in [0, 1].
        title: report title.

    Returns:
        ``{name: path}`` of every file written (``json``, ``csv``, ``markdown`` and each figure).

    Raises:
        ReportInputError: a missing, empty or unparseable file; a missing column; a score out of range,
            empty, NaN or infinite (naming the case and the column); a category not in the schema; an
            option out of range; ``out_dir`` an existing file.
        ManifestError: the schema cannot be loaded.
    """
    check_report_options(n_bootstrap=n_bootstrap, confidence_level=confidence_level, threshold=threshold,
                         eodd_strategy=eodd_strategy, ts_weight=ts_weight)
    out = check_output_dir(out_dir)
    checked = check_predictions(predictions, attributes=attributes, schema=schema)
    path = checked.path
    title = title or f"Fairness report: {path.name}"
    for note in checked.warnings:
        warnings.warn(note, stacklevel=2)

    created = _make_parents(out.parent)
    tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"  # mode from the umask
    tmp.mkdir()
    try:
        if checked.task == "classification":
            result, csv_rows, md, figures = _classification(
                checked, tmp, n_bootstrap=n_bootstrap, confidence_level=confidence_level, seed=seed,
                threshold=threshold, eodd_strategy=eodd_strategy, reference_group=reference_group, title=title)
        else:
            result, csv_rows, md, figures = _segmentation(checked, tmp, ts_weight=ts_weight, title=title,
                                                          n_bootstrap=n_bootstrap, confidence_level=confidence_level,
                                                          seed=seed)
        result["predictions"] = str(path)
        result["missing_values"] = {a: dict(m) for a, m in checked.missing.items()}
        result["input_warnings"] = list(checked.warnings)
        files = {"json": tmp / "report.json", "csv": tmp / "metrics.csv", "markdown": tmp / "report.md"}
        files["json"].write_text(json.dumps(_clean(result), indent=2, allow_nan=False, default=_json_default) + "\n")
        pd.DataFrame(csv_rows).to_csv(files["csv"], index=False)
        md += _missing_markdown(checked.missing)
        md += ["", "Figures: " + ", ".join(f"[{p.name}]({p.name})" for p in figures.values())]
        files["markdown"].write_text("\n".join(md) + "\n")
        files.update(figures)
        return _move_into(tmp, out, files)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created is not None:
            _remove_empty_dirs(created, out.parent)
        raise


def _make_parents(folder: Path) -> Path | None:
    """Create ``folder`` and its missing parents; return the topmost folder created (``None`` if none)."""
    top = None
    p = folder
    while not p.exists():
        top = p
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return top


def _remove_empty_dirs(top: Path, bottom: Path) -> None:
    """Remove ``bottom`` and its parents up to ``top`` (included) while they are empty."""
    p = bottom
    while True:
        try:
            p.rmdir()
        except OSError:
            return
        if p == top:
            return
        p = p.parent


def _move_into(tmp: Path, out: Path, files: Mapping[str, Path]) -> dict[str, Path]:
    """Move the finished report from ``tmp`` to ``out`` (one rename when ``out`` does not exist)."""
    if not out.exists():
        os.replace(tmp, out)
    else:
        for p in files.values():
            os.replace(p, out / p.name)
        shutil.rmtree(tmp, ignore_errors=True)
    return {k: out / p.name for k, p in files.items()}


def _clean(o):
    """NaN and infinities as ``None`` (JSON has no NaN), recursively."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if math.isnan(o) else float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
