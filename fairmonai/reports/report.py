"""Fairness report from a predictions file: JSON, CSV, Markdown and figures.

A predictions file is a CSV with one row per case:

* ``case_id`` (unique) and the sensitive attribute columns (their values; an empty cell is a value
  excluded by the missing-value policy: the case counts in the overall figures but in no group);
* classification: ``label`` (class index) and either ``score`` (probability of class 1, binary
  tasks) or ``prob_0 .. prob_{K-1}`` (class probabilities); an optional ``prediction`` column is
  ignored (predictions are re-derived from the scores so that every metric uses the same rule);
* segmentation: ``dice`` and ``normhd`` (or ``hd95``, turned into NormHD = min(HD95 / 150, 1) as the
  MAMA-MIA challenge does), measured on each case's original image grid.

:func:`write_report` computes every metric of :mod:`fairmonai.metrics` for each attribute and
writes into ``out_dir``: ``report.json`` (everything), ``metrics.csv`` (one row per attribute,
metric and group), ``report.md`` (tables a person reads) and PNG figures: a forest plot of per-group
AUC with bootstrap confidence intervals and a bar chart of the fairness metrics per attribute
(classification); a bar chart of the challenge scores and a heatmap of mean Dice for each pair of
attributes (segmentation).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.manifest import is_missing, load_schema
from ..metrics._classification import classification_fairness_summary
from ..metrics._segmentation import HD_MAX, challenge_scores
from . import plots

__all__ = ["ReportInputError", "read_predictions", "detect_task", "write_report"]

RESERVED_COLUMNS = {"case_id", "label", "score", "prediction", "dice", "hd95", "normhd", "split", "fold"}


class ReportInputError(ValueError):
    """A predictions file that cannot be reported on; the message names the file and column."""


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a predictions CSV (cells as strings, nothing dropped) and check ``case_id``."""
    path = Path(path)
    if not path.is_file():
        raise ReportInputError(f"{path}: predictions file not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if len(df) == 0:
        raise ReportInputError(f"{path}: predictions file has no rows")
    if "case_id" not in df.columns:
        raise ReportInputError(f"{path}: missing column 'case_id'")
    dup = df["case_id"].duplicated()
    if dup.any():
        raise ReportInputError(f"{path}: duplicate case_id '{df['case_id'][dup].iloc[0]}'")
    return df


def detect_task(df: pd.DataFrame) -> str:
    """``"segmentation"`` if the file has a ``dice`` column, ``"classification"`` if it has ``label``
    and ``score`` or ``prob_*`` columns."""
    if "dice" in df.columns:
        return "segmentation"
    if "label" in df.columns and ("score" in df.columns or any(c.startswith("prob_") for c in df.columns)):
        return "classification"
    raise ReportInputError(
        "cannot tell the task: expected 'dice' (segmentation) or 'label' with 'score' / 'prob_*' columns "
        f"(classification); columns are {list(df.columns)}"
    )


def _numeric(df: pd.DataFrame, col: str, path) -> np.ndarray:
    raw = df[col]
    bad = raw.map(is_missing)
    if bad.any():
        raise ReportInputError(f"{path}: column '{col}' is empty for case '{df['case_id'][bad].iloc[0]}'")
    try:
        values = raw.astype(float).to_numpy()
    except ValueError as e:
        raise ReportInputError(f"{path}: column '{col}' is not numeric ({e})") from None
    if not np.isfinite(values).all() and col not in ("hd95",):
        i = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ReportInputError(f"{path}: column '{col}' is {values[i]} for case '{df['case_id'].iloc[i]}'")
    return values


def _encode(df: pd.DataFrame, attr: str, categories: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """Group codes of one attribute (``-1`` for an empty cell) and the category names in code order."""
    values = [None if is_missing(v) else str(v).strip() for v in df[attr]]
    present = sorted({v for v in values if v is not None})
    if categories is None:
        categories = present
    else:
        categories = [str(c) for c in categories]
        unknown = [v for v in present if v not in categories]
        if unknown:
            raise ReportInputError(f"column '{attr}' holds {unknown}, not among the categories {categories}")
    index = {c: i for i, c in enumerate(categories)}
    codes = np.array([-1 if v is None else index[v] for v in values], dtype=np.int64)
    return codes, list(categories)


def _attribute_categories(schema, attributes: Sequence[str]) -> dict[str, list[str] | None]:
    """Category order per attribute from the schema (manifest order); ``None`` = sorted values."""
    if schema is None:
        return {a: None for a in attributes}
    s = load_schema(schema)
    out = {}
    for a in attributes:
        spec = s.attributes.get(a)
        out[a] = list(spec.categories) if spec is not None else None
    return out


def _default_attributes(df: pd.DataFrame, schema) -> list[str]:
    if schema is not None:
        attrs = [a for a in load_schema(schema).attributes if a in df.columns]
        if attrs:
            return attrs
    return [c for c in df.columns
            if c not in RESERVED_COLUMNS and not c.startswith("prob_") and not c.endswith("_code")
            and df[c].nunique() <= 20]


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _fmt_ci(ci) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]"


# ----------------------------------------------------------------------------------------------------
# classification


def _classification(df, path, attributes, categories, out_dir, *, n_bootstrap, confidence_level, seed,
                    threshold, eodd_strategy, reference_group, title):
    y = _numeric(df, "label", path)
    if not np.all(y == np.round(y)) or (y < 0).any():
        raise ReportInputError(f"{path}: column 'label' must hold class indices 0, 1, ...")
    prob_cols = sorted((c for c in df.columns if c.startswith("prob_")), key=lambda c: int(c.split("_")[1]))
    if prob_cols:
        scores = np.stack([_numeric(df, c, path) for c in prob_cols], axis=1)
    else:
        scores = _numeric(df, "score", path)
    result = {"task": "classification", "n_cases": int(len(df)), "attributes": {}}
    csv_rows, md, figures = [], [], {}
    md.append(f"# {title}\n")
    md.append(f"{len(df)} cases. Confidence intervals: {int(confidence_level * 100)} % percentile bootstrap, "
              f"{n_bootstrap} resamples (stratified by group and label), seed {seed}.\n")
    for attr in attributes:
        codes, names = _encode(df, attr, categories.get(attr))
        ref = reference_group.get(attr) if isinstance(reference_group, Mapping) else reference_group
        strategy = eodd_strategy
        if strategy is None:
            strategy = "one_vs_rest" if ref is not None else "max_pair"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = classification_fairness_summary(
                y.astype(int), scores, sensitive_features=codes, group_names=names, threshold=threshold,
                eodd_strategy=strategy if len(names) > 2 else None, reference_group=ref if len(names) > 2 else None,
                n_bootstrap=n_bootstrap, confidence_level=confidence_level, seed=seed,
            )
        notes = sorted({str(w.message) for w in caught})
        for note in notes:
            warnings.warn(f"{attr}: {note}", stacklevel=3)
        d = summary.to_dict()
        d["warnings"] = notes
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
        bars, ideal = _fairness_bars(d)
        figures[f"fairness_{attr}"] = plots.metric_bar_chart(bars, out_dir / f"fairness_{attr}.png", ideal=ideal,
                                                             title=f"Fairness metrics by {attr}")
    return result, csv_rows, md, figures


def _ci_cols(ci) -> dict:
    if not ci:
        return {"ci_low": None, "ci_high": None}
    return {"ci_low": ci[0], "ci_high": ci[1]}


def _fairness_bars(d: Mapping) -> tuple[dict, dict]:
    """The fairness indices of a summary dict, and each one's value for a perfectly fair model."""
    bars, ideal = {}, {}
    for name in ("auc", "tpr", "fpr"):  # the selection-rate gap is dp_difference, listed below
        if name in d["metrics"]:
            bars[f"{name} gap"] = d["metrics"][name]["difference"]
            ideal[f"{name} gap"] = 0.0
    for name, disp in d["disparities"].items():
        bars[name] = disp["value"]
        if name == "eom":
            ideal[name] = 1.0
        elif name in ("eodd", "sigma_iou") or name.endswith("difference"):
            ideal[name] = 0.0
        elif name.endswith("ratio"):
            ideal[name] = 1.0
    return bars, ideal


def _classification_markdown(attr: str, d: Mapping) -> list[str]:
    groups = d["groups"]
    metrics = d["metrics"]
    cols = [m for m in ("auc", "tpr", "fpr", "selection_rate", "accuracy") if m in metrics]
    cols += [m for m in metrics if m not in cols]
    lines = [f"\n## {attr}\n",
             f"{d['n_samples']} cases, {d['n_excluded']} without a value (overall figures only).\n",
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
        lines.append(f"| {name} | {_fmt(disp['value'])}{_fmt_ci(disp.get('ci'))} | {how} |")
    if d.get("warnings"):
        lines += ["", "Warnings:", *[f"- {w}" for w in d["warnings"]]]
    return lines


# ----------------------------------------------------------------------------------------------------
# segmentation


def _segmentation(df, path, attributes, categories, out_dir, *, ts_weight, title):
    dsc = _numeric(df, "dice", path)
    if "normhd" in df.columns:
        normhd = _numeric(df, "normhd", path)
    elif "hd95" in df.columns:
        hd95 = _numeric(df, "hd95", path)
        normhd = np.where(np.isinf(hd95), 1.0, np.clip(hd95 / HD_MAX, 0.0, 1.0))
    else:
        raise ReportInputError(f"{path}: segmentation predictions need a 'normhd' or 'hd95' column")
    encoded = {a: _encode(df, a, categories.get(a)) for a in attributes}
    scores = challenge_scores(dsc, normhd, sensitive_features={a: c for a, (c, _) in encoded.items()},
                              group_names={a: n for a, (_, n) in encoded.items()}, ts_weight=ts_weight)
    d = scores.to_dict()
    result = {"task": "segmentation", **d}
    csv_rows = [{"attribute": "", "metric": k, "group": "overall", "value": d[k], "n": d["n_cases"]}
                for k in ("mean_dsc", "mean_normhd", "performance_score", "fairness_score", "total_score")]
    md = [f"# {title}\n", f"{d['n_cases']} cases; NormHD = min(HD95 / {HD_MAX:g}, 1) in voxel units on the original "
          "grid; total score = ts_weight * PS + (1 - ts_weight) * FS.\n",
          "| score | value |", "|---|---:|"]
    md += [f"| {k} | {_fmt(d[k])} |" for k in ("mean_dsc", "mean_normhd", "performance_score", "fairness_score",
                                               "total_score", "ts_weight")]
    figures = {}
    for attr, v in d["variables"].items():
        md += [f"\n## {attr}\n", f"Disparity D = {_fmt(v['disparity'])} (fairness 1 - D = {_fmt(v['fairness'])}); "
               f"{v['n_excluded']} cases without a value.\n", "| group | n | mean DSC | mean NormHD |",
               "|---|---:|---:|---:|"]
        for g, n, m_d, m_h in zip(v["groups"], v["counts"], v["mean_dsc"], v["mean_normhd"]):
            md.append(f"| {g} | {n} | {_fmt(m_d)} | {_fmt(m_h)} |")
            csv_rows.append({"attribute": attr, "metric": "mean_dsc", "group": g, "value": m_d, "n": n})
            csv_rows.append({"attribute": attr, "metric": "mean_normhd", "group": g, "value": m_h, "n": n})
        csv_rows.append({"attribute": attr, "metric": "disparity", "group": "", "value": v["disparity"], "n": None})
    bars = {"mean DSC": d["mean_dsc"], "mean NormHD": d["mean_normhd"], "PS": d["performance_score"],
            "FS": d["fairness_score"], "TS": d["total_score"]}
    bars.update({f"D {a}": v["disparity"] for a, v in d["variables"].items()})
    figures["challenge_scores"] = plots.metric_bar_chart(bars, out_dir / "challenge_scores.png",
                                                         title="MAMA-MIA challenge scores")
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
    """Compute every fairness metric of a predictions file and write the report files.

    Args:
        predictions: the predictions CSV (see the module docstring).
        out_dir: folder to write into (created).
        attributes: sensitive attribute columns (default: the schema's attributes present in the file,
            else every other column with at most 20 distinct values).
        schema: dataset name or schema path; gives each attribute's category order.
        n_bootstrap: bootstrap resamples for confidence intervals (classification; 0 = none).
        confidence_level: interval level.
        seed: bootstrap seed.
        threshold: decision threshold of a binary classifier's score.
        eodd_strategy: EOdd for more than two groups: ``"max_pair"`` (largest value over group pairs) or
            ``"one_vs_rest"`` (``reference_group`` against the others). Default: ``one_vs_rest`` when a
            reference group is given, else ``max_pair``. The report states which was used.
        reference_group: the one-vs-rest group, or ``{attribute: group}``.
        ts_weight: weight of the performance score in the total score (segmentation).
        title: report title.

    Returns:
        ``{name: path}`` of every file written (``json``, ``csv``, ``markdown`` and each figure).

    Raises:
        ReportInputError: a missing file or column, an empty or non-numeric value, a category not in
            the schema.
    """
    path = Path(predictions)
    out = Path(out_dir)
    df = read_predictions(path)
    task = detect_task(df)
    if attributes is None:
        attributes = _default_attributes(df, schema)
    attributes = list(attributes)
    missing = [a for a in attributes if a not in df.columns]
    if missing:
        raise ReportInputError(f"{path}: missing attribute column(s) {missing}")
    if not attributes:
        raise ReportInputError(f"{path}: no sensitive attribute column found; name them with --attributes")
    categories = _attribute_categories(schema, attributes)
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"Fairness report: {path.name}"
    if task == "classification":
        result, csv_rows, md, figures = _classification(
            df, path, attributes, categories, out, n_bootstrap=n_bootstrap, confidence_level=confidence_level,
            seed=seed, threshold=threshold, eodd_strategy=eodd_strategy, reference_group=reference_group,
            title=title)
    else:
        result, csv_rows, md, figures = _segmentation(df, path, attributes, categories, out, ts_weight=ts_weight,
                                                      title=title)
    result["predictions"] = str(path)
    files = {"json": out / "report.json", "csv": out / "metrics.csv", "markdown": out / "report.md"}
    files["json"].write_text(json.dumps(_clean(result), indent=2, allow_nan=False, default=_json_default) + "\n")
    pd.DataFrame(csv_rows).to_csv(files["csv"], index=False)
    md += ["", "Figures: " + ", ".join(f"[{p.name}]({p.name})" for p in figures.values())]
    files["markdown"].write_text("\n".join(md) + "\n")
    files.update(figures)
    return files


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
