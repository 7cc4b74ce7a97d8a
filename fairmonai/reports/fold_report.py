"""The FaMI paper's Table 2 and Figures 2-3 from a finished k-fold experiment grid.

FaMI (Sadri et al., MICCAI 2025, "Mutual Information Regularization for Fairness-aware Deep Imaging
Representations") trains every model on ten cross-validation folds of the training cohort and
reports, per model and metric, the fold mean and sd on the held-out folds ("Train") and the value
on the test cohort ("Test"), with a star where the best FaMI model differs from the closest
alternative at p < 0.005 (Table 2); Figure 2 compares FaMI-ViT with the other ViT models
(per-group AUC, and AUC / EOM / EOdd bars), Figure 3 the training curves of the mutual-information
penalties.

:func:`write_fold_report` reads the per-run table of :func:`fairmonai.experiments.runner.run_experiment`
(columns ``configuration``, ``seed``, ``fold``, ``split``, ``run_dir``) and each run's files:

* ``eval/predictions_val.csv`` (the fold model on its held-out fold) and ``eval/predictions_test.csv``
  (on the test cohort), written by :class:`fairmonai.handlers.PredictionsWriter`;
* ``eval/report_<split>/report.json`` (optional): the bundle's own report of those predictions
  (:func:`fairmonai.reports.write_report`); the attribute's group order, the decision threshold and
  the EOdd generalisation for three groups (strategy, reference group) are read from it, and each
  fold value is checked against it;
* ``eval/penalty_curve.csv`` (:class:`fairmonai.handlers.PenaltyCurveLogger`): the shared k-NN
  estimate ``mi_knn`` of :math:`I(u; v)` and each method's own diagnostic (:data:`DIAGNOSTIC_COLUMNS`).

Every metric value is computed by :func:`fairmonai.metrics.classification_fairness_summary` with the
options :func:`fairmonai.reports.write_report` uses (the predictions checked by the same
:func:`fairmonai.reports._inputs.check_predictions`), so a fold value equals the number in that
run's ``report_val/report.json``. The settings are the experiment file's ``fold_report`` object,
checked by :func:`check_fold_report_settings` (cheap: this module imports neither torch, MONAI nor
matplotlib at import time).

``python -m fairmonai.reports.fold_report <grid.csv> --settings <experiment.json> --out DIR``
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = [
    "FoldReportError",
    "FOLD_METRICS",
    "TEST_COLUMNS",
    "STATISTICS",
    "DIAGNOSTIC_COLUMNS",
    "SETTINGS_KEYS",
    "check_fold_report_settings",
    "write_fold_report",
    "main",
]


class FoldReportError(InputError):
    """Settings, a grid table or run files the fold report cannot use; the message names the key,
    configuration, fold or file at fault."""


#: The metrics a fold report can show: ``name: (section of the summary, higher is better, label)``.
#: ``auc`` is the overall AUC (``metrics.auc.overall`` of report.json); the others are disparity
#: values (``disparities.<name>.value``). EOM is 1 for a fair model (higher is fairer), EOdd and the
#: equalized-odds difference 0 (lower is fairer); see :mod:`fairmonai.metrics._fami_metrics`.
FOLD_METRICS: Mapping[str, tuple[str, bool, str]] = {
    "auc": ("metrics", True, "AUC"),
    "eom": ("disparities", True, "EOM"),
    "eodd": ("disparities", False, "EOdd"),
    "es_auc": ("disparities", True, "ES-AUC"),
    "eo_difference": ("disparities", False, "EO difference"),
}
#: How the Test column is made: the mean of the fold models' probabilities per test case, the fold
#: model with the best validation value, or the model retrained on the whole training cohort (fold -1).
TEST_COLUMNS = ("mean_probability", "best_fold", "retrain")
#: The fold tests of :func:`fairmonai.reports.fold_statistics.compare_folds` (its ``FOLD_TESTS``).
STATISTICS = ("ranksum", "signedrank")
#: Each method's own penalty diagnostic in ``penalty_curve.csv`` (Figure 3, panel 2), in the order
#: looked for: ``msq_sfd`` (FaMI, MIGE: mean squared score-function difference, the squared size of
#: the MI gradient) and ``dv`` (MINE: the Donsker-Varadhan lower bound). ``penalty`` (for FaMI and
#: MIGE the surrogate E[v * SFD], zero by construction) is never plotted.
DIAGNOSTIC_COLUMNS: Mapping[str, str] = {
    "msq_sfd": "mean squared SFD (FaMI, MIGE)",
    "dv": "Donsker-Varadhan estimate (MINE)",
}
#: The keys of an experiment file's ``fold_report`` object and their defaults (``...``: required).
SETTINGS_KEYS: Mapping[str, object] = {
    "attribute": ...,
    "reference_group": None,
    "schema": None,
    "metrics": ["auc", "eom", "eodd"],
    "test_column": "mean_probability",
    "best_fold_metric": "auc",
    "statistic": "ranksum",
    "star_p": 0.005,
    "table_rows": None,
    "second_table_rows": [],
    "labels": {},
    "figure2": None,
    "best_versus_closest": None,
    "figure3": [],
    "moving_average_k": 5,
    "paper": None,
    "n_bootstrap": 1000,
    "seed": 0,
}
_TEST_TEXT = {
    "mean_probability": "per test case the mean of the fold models' probabilities (cases matched by case_id)",
    "best_fold": "the fold model with the best {metric} on its own held-out fold (chosen on validation only)",
    "retrain": "the model retrained on the whole training cohort (fold -1)",
}
_PAPER_VALUE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?:(?:\+-|±|\+/-)\s*"
                          r"((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))?\s*$")


# ----------------------------------------------------------------------------------------------------
# settings


def _bad(where: str, key: str, message: str) -> FoldReportError:
    return FoldReportError(f"{where}.{key}: {message}" if key else f"{where}: {message}")


def _names(where: str, key: str, value: object, configurations: Sequence[str], *, empty: bool = False) -> list[str]:
    if not isinstance(value, list) or (not value and not empty):
        raise _bad(where, key, f"expected a {'' if empty else 'non-empty '}list of configuration names, got {value!r}")
    for v in value:
        if not isinstance(v, str) or v not in configurations:
            raise _bad(where, key, f"{v!r} is not one of the configurations {list(configurations)}")
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        raise _bad(where, key, f"configuration(s) {repeated} named more than once")
    return list(value)


def _one_name(where: str, key: str, value: object, configurations: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in configurations:
        raise _bad(where, key, f"{value!r} is not one of the configurations {list(configurations)}")
    return value


def _object(where: str, key: str, value: object, keys: Sequence[str]) -> Mapping:
    if not isinstance(value, Mapping):
        raise _bad(where, key, f"expected an object with keys {list(keys)}, got {value!r}")
    for k in value:
        if k not in keys:
            raise _bad(where, key, f"unknown key {k!r}; expected {list(keys)}")
    for k in keys:
        if k not in value:
            raise _bad(where, key, f"missing key {k!r}")
    return value


def _int(where: str, key: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(where, key, f"expected an integer >= {low}, got {value!r}")
    return value


def check_fold_report_settings(settings: Mapping, configurations: Sequence[str], *, where: str) -> dict:
    """Check an experiment file's ``fold_report`` object; return it with the defaults filled in.

    Keys (:data:`SETTINGS_KEYS`; any other key is an error):

    * ``attribute`` (required): the sensitive attribute column of the predictions files (``"race"``).
    * ``reference_group``: EOdd's one-vs-rest group for more than two groups. Default ``None``: read
      from the runs' ``report.json`` (``disparities.eodd.details.reference_group``), an error when no
      run has one and the attribute has more than two groups.
    * ``schema``: dataset name or schema path giving the attribute's group order and missing-value
      policy (as the bundle's ``schema``). Default ``None``: the groups of the runs' ``report.json``,
      else the sorted values present; ``unknown`` is then a case in no group.
    * ``metrics``: metrics of the table, from :data:`FOLD_METRICS`. Default ``["auc", "eom", "eodd"]``.
    * ``test_column``: one of :data:`TEST_COLUMNS`. Default ``"mean_probability"``.
    * ``best_fold_metric``: the validation metric of ``test_column`` ``"best_fold"``. Default ``"auc"``.
    * ``statistic``: ``"ranksum"`` (default) or ``"signedrank"`` (:data:`STATISTICS`).
    * ``star_p``: the star's threshold on the raw p, in (0, 1]. Default 0.005 (the paper's).
    * ``table_rows``: configurations of the first table. Default: all ``configurations``.
    * ``second_table_rows``: configurations of a second table. Default ``[]``.
    * ``labels``: ``{configuration: display name}`` (distinct names). Default: the configuration names.
    * ``figure2``: ``{"reference": name, "others": [names]}`` or ``None`` (no Figure 2).
    * ``best_versus_closest``: ``{"candidates": [names], "alternatives": [names]}`` (disjoint) or
      ``None``: Table 2's test of the best candidate against the closest alternative.
    * ``figure3``: configurations of the penalty-curve figure. Default ``[]`` (no Figure 3).
    * ``moving_average_k``: points of the moving average of Figure 3's RMSE, ``>= 1``. Default 5.
    * ``paper``: file name of the paper's values (resolved by the caller) or ``None``.
    * ``n_bootstrap``: bootstrap resamples of Figure 2's per-group AUC intervals, ``>= 0``. Default 1000.
    * ``seed``: bootstrap seed. Default 0.

    Args:
        settings: the ``fold_report`` object.
        configurations: the experiment's configuration names.
        where: start of every error message, e.g. ``"table2.json: fold_report"``.

    Returns:
        A new dict with every key of :data:`SETTINGS_KEYS`.

    Raises:
        FoldReportError: (a ``ValueError``) an unknown or missing key, a value of the wrong type, a
            configuration not among ``configurations``, an unknown metric, test column or statistic;
            the message starts with ``where``, then the key (``"...: fold_report.figure2.reference: ..."``),
            and names the value.

    Example:
        >>> s = check_fold_report_settings({"attribute": "race"}, ["dn", "fami_dn"], where="t.json: fold_report")
        >>> s["table_rows"], s["test_column"], s["star_p"]
        (['dn', 'fami_dn'], 'mean_probability', 0.005)
    """
    configurations = list(configurations)
    if not isinstance(settings, Mapping):
        raise _bad(where, "", f"expected an object, got {type(settings).__name__}")
    for k in settings:
        if k not in SETTINGS_KEYS:
            raise _bad(where, "", f"unknown key {k!r}; expected one of {list(SETTINGS_KEYS)}")
    if "attribute" not in settings:
        raise _bad(where, "", "missing key 'attribute' (the sensitive attribute column, e.g. 'race')")
    s = {k: settings.get(k, v) for k, v in SETTINGS_KEYS.items()}
    for key in ("attribute",):
        if not isinstance(s[key], str) or not s[key]:
            raise _bad(where, key, f"expected a non-empty text, got {s[key]!r}")
    for key in ("reference_group", "schema", "paper"):
        if s[key] is not None and (not isinstance(s[key], str) or not s[key]):
            raise _bad(where, key, f"expected a non-empty text or null, got {s[key]!r}")
    metrics = s["metrics"]
    if not isinstance(metrics, list) or not metrics:
        raise _bad(where, "metrics", f"expected a non-empty list of metric names, got {metrics!r}")
    for m in metrics:
        if m not in FOLD_METRICS:
            raise _bad(where, "metrics", f"unknown metric {m!r}; allowed: {list(FOLD_METRICS)}")
    if len(set(metrics)) < len(metrics):
        raise _bad(where, "metrics", f"a metric is named twice in {metrics!r}")
    s["metrics"] = list(metrics)
    if s["test_column"] not in TEST_COLUMNS:
        raise _bad(where, "test_column", f"unknown test column {s['test_column']!r}; allowed: {list(TEST_COLUMNS)}")
    if s["best_fold_metric"] not in FOLD_METRICS:
        raise _bad(where, "best_fold_metric",
                   f"unknown metric {s['best_fold_metric']!r}; allowed: {list(FOLD_METRICS)}")
    if s["statistic"] not in STATISTICS:
        raise _bad(where, "statistic", f"unknown statistic {s['statistic']!r}; allowed: {list(STATISTICS)}")
    p = s["star_p"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 < p <= 1:
        raise _bad(where, "star_p", f"expected a number in (0, 1], got {p!r}")
    s["star_p"] = float(p)
    s["table_rows"] = _names(where, "table_rows", configurations if s["table_rows"] is None else s["table_rows"],
                             configurations)
    s["second_table_rows"] = _names(where, "second_table_rows", s["second_table_rows"], configurations, empty=True)
    labels = s["labels"]
    if not isinstance(labels, Mapping):
        raise _bad(where, "labels", f"expected an object of configuration: display name, got {labels!r}")
    for k, v in labels.items():
        if k not in configurations:
            raise _bad(where, f"labels.{k}", f"{k!r} is not one of the configurations {configurations}")
        if not isinstance(v, str) or not v:
            raise _bad(where, f"labels.{k}", f"expected a non-empty text, got {v!r}")
    shown = [labels.get(c, c) for c in configurations]
    clash = sorted({x for x in shown if shown.count(x) > 1})
    if clash:
        raise _bad(where, "labels", f"display name(s) {clash} given to more than one configuration")
    s["labels"] = dict(labels)
    if s["figure2"] is not None:
        f2 = _object(where, "figure2", s["figure2"], ("reference", "others"))
        ref = _one_name(where, "figure2.reference", f2["reference"], configurations)
        others = _names(where, "figure2.others", f2["others"], configurations)
        if ref in others:
            raise _bad(where, "figure2.others", f"the reference {ref!r} is also among the others")
        s["figure2"] = {"reference": ref, "others": others}
    if s["best_versus_closest"] is not None:
        b = _object(where, "best_versus_closest", s["best_versus_closest"], ("candidates", "alternatives"))
        cands = _names(where, "best_versus_closest.candidates", b["candidates"], configurations)
        alts = _names(where, "best_versus_closest.alternatives", b["alternatives"], configurations)
        both = [c for c in cands if c in alts]
        if both:
            raise _bad(where, "best_versus_closest.alternatives", f"{both} also among the candidates")
        s["best_versus_closest"] = {"candidates": cands, "alternatives": alts}
    s["figure3"] = _names(where, "figure3", s["figure3"], configurations, empty=True)
    s["moving_average_k"] = _int(where, "moving_average_k", s["moving_average_k"], 1)
    s["n_bootstrap"] = _int(where, "n_bootstrap", s["n_bootstrap"], 0)
    s["seed"] = _int(where, "seed", s["seed"], 0)
    return s


def _paper_value(where: str, key: str, value: object) -> dict | None:
    """``{"text", "mean", "sd"}`` of a paper value: a number, ``"0.80 +- 0.02"`` (or ``±``), or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad(where, key, f"expected a number, a text such as '0.80 +- 0.02', or null; got {value!r}")
    if isinstance(value, str):
        match = _PAPER_VALUE.match(value)
        if not match:
            raise _bad(where, key, f"cannot read {value!r}: expected a number or 'mean +- sd'")
        mean, sd = float(match.group(1)), None if match.group(2) is None else float(match.group(2))
        text = match.group(1) + ("" if sd is None else f" ± {match.group(2)}")
        return {"text": text, "mean": mean, "sd": sd}
    if not math.isfinite(value):
        raise _bad(where, key, f"expected a finite number, got {value!r}")
    return {"text": f"{value:g}", "mean": float(value), "sd": None}


def _check_paper(paper: Mapping, configurations: Sequence[str], where: str) -> dict:
    p = _object(where, "", paper, ("source", "values"))
    if not isinstance(p["source"], str) or not p["source"]:
        raise _bad(where, "source", f"expected a non-empty text, got {p['source']!r}")
    if not isinstance(p["values"], Mapping):
        raise _bad(where, "values", f"expected an object of configuration: metrics, got {p['values']!r}")
    values: dict = {}
    for conf, metrics in p["values"].items():
        if conf not in configurations:
            raise _bad(where, f"values.{conf}", f"{conf!r} is not one of the configurations {list(configurations)}")
        if not isinstance(metrics, Mapping):
            raise _bad(where, f"values.{conf}", f"expected an object of metric: {{train, test}}, got {metrics!r}")
        values[conf] = {}
        for m, cols in metrics.items():
            if m not in FOLD_METRICS:
                raise _bad(where, f"values.{conf}", f"unknown metric {m!r}; allowed: {list(FOLD_METRICS)}")
            if not isinstance(cols, Mapping) or any(k not in ("train", "test") for k in cols):
                raise _bad(where, f"values.{conf}.{m}",
                           f"expected an object with keys 'train' and 'test', got {cols!r}")
            values[conf][m] = {k: _paper_value(where, f"values.{conf}.{m}.{k}", cols.get(k)) for k in ("train", "test")}
    return {"source": p["source"], "values": values}


# ----------------------------------------------------------------------------------------------------
# small helpers


def _num(x) -> float:
    return math.nan if x is None else float(x)


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _plain(o):
    """JSON-ready: NaN and infinities as ``None``, numpy scalars as Python numbers, paths as text."""
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, Mapping):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, np.ndarray)):
        return [_plain(v) for v in o]
    return o


def _g(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and sample sd (ddof 1; NaN for one value) over the finite values, and their number."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan, int(x.size)


def _metric_value(d: Mapping, metric: str) -> float:
    section = FOLD_METRICS[metric][0]
    entry = d[section].get(metric)
    if entry is None:
        return math.nan
    return _num(entry["overall"] if section == "metrics" else entry["value"])


def _lookup(d: object, *keys):
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


# ----------------------------------------------------------------------------------------------------
# predictions and their metrics


class _Scorer:
    """Reads predictions files as :func:`~fairmonai.reports.write_report` does and scores them with
    the same :func:`~fairmonai.metrics.classification_fairness_summary` call."""

    def __init__(self, attribute: str, schema):
        self.attribute = attribute
        self.schema = schema
        self.groups: list[str] | None = None
        self.threshold = 0.5
        self.strategy: str | None = None
        self.reference: str | None = None

    def check(self, path: Path):
        from ._inputs import check_predictions

        checked = check_predictions(path, attributes=[self.attribute], schema=self.schema)
        if checked.task != "classification" or checked.values["scores"].ndim != 1:
            raise FoldReportError(f"{path}: the fold report needs a binary classifier's 'label' and 'score' columns; "
                                  f"columns are {list(checked.df.columns)}")
        for note in checked.warnings:
            warnings.warn(f"{path}: {note}", stacklevel=3)
        return checked

    def arrays(self, checked) -> dict:
        """``case_id``, ``label``, ``score``, ``codes`` (``-1``: in no group) and the raw attribute values."""
        codes = checked.codes[self.attribute]
        if self.schema is None:
            from ._inputs import encode_attribute

            codes = encode_attribute(checked.df, checked.path, self.attribute, None, categories=self.groups)[0]
        return {"case_id": checked.df["case_id"].to_numpy(dtype=str), "label": checked.values["label"],
                "score": checked.values["scores"], "codes": codes,
                "attribute": checked.df[self.attribute].to_numpy(dtype=str), "path": checked.path}

    def summary(self, a: Mapping, *, n_bootstrap: int = 0, seed: int = 0) -> tuple[dict, list[str]]:
        """The summary dict of ``write_report`` (same call, same options) and the warnings it raised."""
        from ..metrics._classification import classification_fairness_summary
        from ..metrics._fami_metrics import SIGMA_IOU_DDOF

        many = len(self.groups) > 2
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = classification_fairness_summary(
                a["label"], a["score"], sensitive_features=a["codes"], group_names=self.groups,
                threshold=self.threshold, eodd_strategy=self.strategy if many else None,
                reference_group=self.reference if many else None, sigma_ddof=SIGMA_IOU_DDOF,
                n_bootstrap=n_bootstrap, confidence_level=0.95, seed=seed)
        return s.to_dict(), sorted({str(w.message) for w in caught})


def _label_counts(a: Mapping, groups: Sequence[str], sides: Mapping[str, str] | None = None) -> dict:
    """Per group (or per side of a one-vs-rest comparison), the ``(n_class0, n_class1)`` counts."""
    from .fold_statistics import fold_label_counts

    keep = a["codes"] >= 0
    names = [groups[c] for c in a["codes"][keep]]
    if sides is not None:
        names = [sides[n] for n in names]
    wanted = list(dict.fromkeys(sides.values())) if sides is not None else list(groups)
    counts = fold_label_counts(a["label"][keep], sensitive_features=names, folds=[0] * len(names)).get(0, {}) \
        if names else {}
    return {g: tuple(int(x) for x in counts.get(g, (0, 0))) for g in wanted}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ----------------------------------------------------------------------------------------------------
# the grid table


_RUN_COLUMNS = ("configuration", "seed", "fold", "split", "run_dir")


def _check_runs(runs: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(runs, pd.DataFrame):
        raise FoldReportError(f"runs must be a pandas DataFrame (the runner's per-run table), got "
                              f"{type(runs).__name__}")
    missing = [c for c in _RUN_COLUMNS if c not in runs.columns]
    if missing:
        raise FoldReportError(f"the grid table lacks column(s) {missing}; it has {list(runs.columns)} "
                              "(expected the runner's <name>.csv)")
    r = runs[list(_RUN_COLUMNS)].copy()
    folds = pd.to_numeric(r["fold"], errors="coerce")
    if folds.isna().any() or not np.all(folds == np.round(folds)):
        bad = r["fold"][folds.isna() | (folds != np.round(folds))].tolist()[:3]
        raise FoldReportError(f"the grid table's 'fold' column must hold integers (-1 for a model retrained on the "
                              f"whole training cohort); got {bad}: is this a k-fold experiment?")
    r["fold"] = folds.astype(int)
    seeds = sorted(set(r["seed"].tolist()))
    if len(seeds) > 1:
        raise FoldReportError(f"the grid table holds several seeds {seeds}; the fold report takes the folds of one "
                              "seed (the CLI's --seed picks one)")
    r["configuration"] = r["configuration"].astype(str)
    r["split"] = r["split"].astype(str)
    dup = r.duplicated(["configuration", "fold", "split"])
    if dup.any():
        row = r[dup].iloc[0]
        raise FoldReportError(f"the grid table has two runs of configuration '{row['configuration']}', fold "
                              f"{row['fold']}, split '{row['split']}'")
    return r


# ----------------------------------------------------------------------------------------------------
# the report


def write_fold_report(
    runs: pd.DataFrame,
    out: str | Path,
    settings: Mapping,
    *,
    paper: Mapping | None = None,
    configurations: Sequence[str] | None = None,
    where: str = "fold_report",
) -> dict:
    """Write Table 2 and Figures 2-3 of a k-fold grid into ``out``; return what ``report.json`` holds.

    **Train column.** For configuration :math:`c` and fold :math:`k = 1..K` (``fold >= 0``), the
    metric :math:`m_{c,k}` of the fold model on its held-out fold (``predictions_val.csv``), then

    .. math::
        \\bar m_c = \\frac{1}{K} \\sum_k m_{c,k}, \\qquad
        s_c = \\sqrt{\\frac{1}{K - 1} \\sum_k (m_{c,k} - \\bar m_c)^2}

    over the folds with a finite value (their number is printed where it is below the grid's).
    Each :math:`m_{c,k}` is :func:`fairmonai.metrics.classification_fairness_summary`'s value with
    :func:`~fairmonai.reports.write_report`'s options (threshold 0.5 or the runs' report's, EOdd for
    more than two groups ``one_vs_rest`` against the reference group, else ``max_pair``), so it equals
    that run's ``report_val/report.json`` (checked where the file exists; a mismatch is warned).

    **Fold validity.** A fold where a group lacks a class gives the metric's defined value and its
    warning (re-emitted as ``"<configuration> fold <k> (val): ..."``); the report states per metric in
    how many folds every group (EOdd ``one_vs_rest``: the reference group and the rest) had both
    classes (:func:`~fairmonai.reports.fold_statistics.fold_validity`), and the **pooled out-of-fold**
    metrics: all folds' validation predictions :math:`\\bigcup_k V_k` scored as one set.

    **Test column** (``settings["test_column"]``): ``"mean_probability"``, per test case :math:`i`
    the mean :math:`\\bar p_i = \\frac1K \\sum_k p_{i,k}` of the fold models' probabilities (cases
    matched by ``case_id``; every fold model must hold the same cases, labels and groups; written
    to ``test_predictions/<configuration>.csv`` and scored like any predictions file);
    ``"best_fold"``, the fold model with the best ``best_fold_metric`` on its own held-out fold
    (validation only; ties: the lowest fold); ``"retrain"``, the run with ``fold == -1``.

    **Statistics** (:mod:`fairmonai.reports.fold_statistics`, test ``settings["statistic"]``): Figure
    2's family, ``figure2.reference`` against each of ``figure2.others`` per metric
    (:func:`~fairmonai.reports.fold_statistics.comparison_family`, Bonferroni ``m = len(others)``);
    Table 2's, the best of ``best_versus_closest.candidates`` against the closest alternative per
    metric (:func:`~fairmonai.reports.fold_statistics.best_versus_closest`, Bonferroni ``m`` = number of
    metrics). ``"signedrank"`` pairs fold ``k`` with fold ``k`` over the folds every model of the
    family has (listed as ``paired_folds``). A star where the raw p < ``star_p``; raw and adjusted p
    and ``m`` are printed. A family that cannot be tested (a NaN fold value) is reported with its
    reason, not starred.

    **Files** in ``out`` (created): ``table.csv`` (one row per table row: per metric Train mean, sd,
    n, Test, paper values, star, best flags), ``table.md`` (the first and second tables with the best
    value per column in bold and the paper's values beside, the EOdd generalisation, pooled
    out-of-fold metrics and fold validity, the families), ``figure2.png`` (per-group test AUC with
    bootstrap 95 % intervals; fold mean ± sd bars of each metric with a star above a model that
    differs from the reference), ``figure3.png`` (panel 1: ``mi_knn`` against the iteration, mean
    over folds, folds faint, TV and RMSE to a ``moving_average_k``-point centred moving average per
    fold as mean ± sd in the legend (:func:`~fairmonai.reports.penalty_curve.total_variation`,
    :func:`~fairmonai.reports.penalty_curve.rmse_to_moving_average`); panel 2: each method's own
    diagnostic column, :data:`DIAGNOSTIC_COLUMNS`), ``test_predictions/`` (mean-probability test
    predictions) and ``report.json`` (every number, the settings, the paper's values, the missing runs).

    A run whose files are missing (a failed run) is skipped and listed, with one warning naming them.

    Args:
        runs: the runner's per-run table: ``configuration``, ``seed`` (one value), ``fold`` (int;
            ``-1`` a retrained model), ``split`` (``"val"`` or ``"test"``; others ignored), ``run_dir``.
        out: output folder.
        settings: the experiment file's ``fold_report`` object (see :func:`check_fold_report_settings`).
        paper: ``{"source": str, "values": {configuration: {metric: {"train": v, "test": v}}}}`` with
            ``v`` a number, ``"0.80 +- 0.02"`` or ``None``; shown beside our values. Default ``None``.
        configurations: the experiment's configuration names, for checking ``settings`` and
            ``paper`` (default: those in ``runs``).
        where: start of settings error messages. Default ``"fold_report"``.

    Returns:
        The ``report.json`` content as a dict (NaN as ``None``).

    Raises:
        FoldReportError: bad settings or paper values (naming the key); a grid table without the
            columns, with several seeds or repeated runs; a configuration the settings name with no
            run in the grid, or with no usable fold (naming it); ``retrain`` without a fold ``-1`` run;
            fold models with different test cases; no reference group for EOdd with three groups.
        ReportInputError: a predictions file that cannot be read (naming the file, case, column).
    """
    r = _check_runs(runs)
    all_confs = list(configurations) if configurations is not None else list(dict.fromkeys(r["configuration"]))
    s = check_fold_report_settings(settings, all_confs, where=where)
    paper_checked = None if paper is None else _check_paper(paper, all_confs, f"{where}: paper")
    used = list(dict.fromkeys([*s["table_rows"], *s["second_table_rows"],
                               *([s["figure2"]["reference"], *s["figure2"]["others"]] if s["figure2"] else []),
                               *([*s["best_versus_closest"]["candidates"], *s["best_versus_closest"]["alternatives"]]
                                 if s["best_versus_closest"] else []),
                               *s["figure3"]]))
    absent = [c for c in used if c not in set(r["configuration"])]
    if absent:
        raise FoldReportError(f"{where}: configuration(s) {absent} have no run in the grid table; it holds "
                              f"{sorted(set(r['configuration']))}")
    label = {c: s["labels"].get(c, c) for c in used}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    missing: list[dict] = []

    # --- files of every run used
    val_files: dict[str, dict[int, Path]] = {c: {} for c in used}
    test_files: dict[str, dict[int, Path]] = {c: {} for c in used}
    run_dirs: dict[str, dict[int, Path]] = {c: {} for c in used}
    reports: list[tuple[str, int, str, Path]] = []
    for row in r[r["configuration"].isin(used)].sort_values(["configuration", "fold"], kind="stable").itertuples():
        if row.split not in ("val", "test"):
            continue
        d = Path(row.run_dir)
        if row.fold >= 0:
            run_dirs[row.configuration][row.fold] = d
        if row.split == "val" and row.fold < 0:
            continue
        f = d / "eval" / f"predictions_{row.split}.csv"
        if not f.is_file():
            missing.append({"configuration": row.configuration, "fold": row.fold, "split": row.split,
                            "file": str(f)})
            continue
        (val_files if row.split == "val" else test_files)[row.configuration][row.fold] = f
        rep = d / "eval" / f"report_{row.split}" / "report.json"
        if rep.is_file():
            reports.append((row.configuration, row.fold, row.split, rep))

    # --- how the bundle scored them: groups, threshold, EOdd generalisation
    scorer = _Scorer(s["attribute"], s["schema"])
    bundle_report = None
    report_values: dict[tuple[str, int, str], dict] = {}
    for conf, fold, split, rep in reports:
        data = _read_json(rep)
        a = _lookup(data, "attributes", s["attribute"])
        if a is None:
            continue
        report_values[(conf, fold, split)] = {m: _metric_value(a, m) for m in FOLD_METRICS
                                              if _lookup(a, FOLD_METRICS[m][0], m) is not None}
        if bundle_report is None:
            eodd = _lookup(a, "disparities", "eodd") or {}
            bundle_report = {"file": str(rep), "groups": list(a.get("groups") or []),
                             "threshold": _lookup(a, "settings", "threshold"),
                             "strategy": eodd.get("strategy"),
                             "reference_group": _lookup(eodd, "details", "reference_group"),
                             "groups_compared": _lookup(eodd, "details", "groups_compared")}
    checked: dict[tuple[str, int, str], object] = {}
    for conf in used:
        for split, files in (("val", val_files[conf]), ("test", test_files[conf])):
            for fold, f in files.items():
                checked[(conf, fold, split)] = scorer.check(f)
    if s["schema"] is not None:
        from ..data.manifest import load_schema

        schema = load_schema(s["schema"])
        if s["attribute"] not in schema.attributes:
            raise FoldReportError(f"{where}.schema: attribute {s['attribute']!r} is not declared in schema "
                                  f"{schema.name!r} (declared: {list(schema.attributes)})")
        scorer.groups = list(schema.attributes[s["attribute"]].categories)
        groups_from = f"schema {schema.name!r}"
    elif bundle_report is not None and bundle_report["groups"]:
        scorer.groups = bundle_report["groups"]
        groups_from = bundle_report["file"]
    else:
        from ..attribute_codes import EXCLUDED_VALUE, is_missing

        values = {v for c in checked.values() for v in c.df[s["attribute"]].tolist()}
        scorer.groups = sorted(v for v in values if not is_missing(v) and v != EXCLUDED_VALUE)
        groups_from = "the values present in the predictions files"
    if bundle_report is not None and bundle_report["threshold"] is not None:
        scorer.threshold = float(bundle_report["threshold"])
    reference, strategy_from = s["reference_group"], "settings"
    if reference is None and bundle_report is not None:
        reference, strategy_from = bundle_report["reference_group"], bundle_report["file"]
    if len(scorer.groups) > 2:
        if reference is not None:
            if reference not in scorer.groups:
                raise FoldReportError(f"{where}.reference_group: {reference!r} is not one of the groups "
                                      f"{scorer.groups} of {s['attribute']!r}")
            scorer.strategy, scorer.reference = "one_vs_rest", reference
        elif bundle_report is not None and bundle_report["strategy"] == "max_pair":
            scorer.strategy = "max_pair"
        else:
            raise FoldReportError(f"{where}.reference_group: not given, and no run's report.json names EOdd's "
                                  f"reference group; {s['attribute']!r} has {len(scorer.groups)} groups "
                                  f"{scorer.groups}: give fold_report.reference_group (the bundle's reference_group)")
    if (s["reference_group"] is not None and bundle_report is not None and bundle_report["reference_group"]
            not in (None, s["reference_group"])):
        warnings.warn(f"{where}.reference_group {s['reference_group']!r} differs from the runs' report.json "
                      f"({bundle_report['reference_group']!r}): EOdd will differ from the runs' reports", stacklevel=2)
    arrays = {key: scorer.arrays(c) for key, c in checked.items()}

    # --- per-fold (Train) values, validity, pooled out-of-fold
    sides = None
    if scorer.strategy == "one_vs_rest":
        sides = {g: (g if g == scorer.reference else "rest") for g in scorer.groups}
    result_confs: dict[str, dict] = {}
    fold_values: dict[str, dict[str, dict[int, float]]] = {m: {} for m in FOLD_METRICS}
    mismatches = []
    for conf in used:
        folds = sorted(val_files[conf])
        if not folds:
            raise FoldReportError(f"configuration '{conf}' has no usable fold: no fold run with "
                                  f"eval/predictions_val.csv (see the missing runs: "
                                  f"{[m['file'] for m in missing if m['configuration'] == conf][:3]})")
        per_fold, counts_all, counts_sides = {}, {}, {}
        for k in folds:
            a = arrays[(conf, k, "val")]
            d, notes = scorer.summary(a)
            for note in notes:
                warnings.warn(f"{conf} fold {k} (val): {note}", stacklevel=2)
            vals = {m: _metric_value(d, m) for m in FOLD_METRICS}
            rec = {"run_dir": str(run_dirs[conf].get(k, "")), "predictions": str(a["path"]), "n_cases": len(a["label"]),
                   **vals, "by_group_auc": d["metrics"]["auc"]["by_group"], "group_sizes": d["group_sizes"],
                   "warnings": notes}
            counts_all[k] = _label_counts(a, scorer.groups)
            rec["label_counts"] = {g: list(c) for g, c in counts_all[k].items()}
            if sides is not None:
                counts_sides[k] = _label_counts(a, scorer.groups, sides)
            theirs = report_values.get((conf, k, "val"))
            if theirs is not None:
                rec["report_json"] = theirs
                rec["matches_report_json"] = all(
                    (math.isnan(v) and math.isnan(vals[m])) or abs(v - vals[m]) <= 1e-9 for m, v in theirs.items())
                if not rec["matches_report_json"]:
                    mismatches.append(f"{conf} fold {k}")
            per_fold[k] = rec
            for m in FOLD_METRICS:
                fold_values[m].setdefault(conf, {})[k] = vals[m]
        from .fold_statistics import fold_validity

        validity = {}
        v_all = fold_validity(counts_all)
        v_sides = fold_validity(counts_sides) if sides is not None else v_all
        for m in s["metrics"]:
            v = v_sides if m == "eodd" else v_all
            who = (f"{scorer.reference} and the rest" if (m == "eodd" and sides is not None) else "every group")
            validity[m] = {"n_valid": v.n_valid, "n_folds": v.n_folds, "valid_folds": list(v.valid),
                           "missing": {str(f): [[g, c] for g, c in lacks] for f, lacks in v.missing.items()},
                           "text": f"folds where {who} had both classes: {v.n_valid} of {v.n_folds}"}
        pooled = {key: np.concatenate([arrays[(conf, k, "val")][key] for k in folds])
                  for key in ("case_id", "label", "score", "codes")}
        n_dup = int(pd.Series(pooled["case_id"]).duplicated().sum())
        if n_dup:
            warnings.warn(f"{conf}: {n_dup} case id(s) appear in more than one held-out fold; the pooled out-of-fold "
                          "metrics count them once per fold", stacklevel=2)
        d_pool, pool_notes = scorer.summary(pooled)
        train = {}
        for m in s["metrics"]:
            mean, sd, n = _mean_sd([fold_values[m][conf][k] for k in folds])
            train[m] = {"mean": mean, "sd": sd, "n": n, "folds": folds,
                        "values": [fold_values[m][conf][k] for k in folds]}
        result_confs[conf] = {
            "label": label[conf], "folds": {str(k): v for k, v in per_fold.items()}, "n_folds": len(folds),
            "train": train, "validity": validity,
            "pooled_oof": {"n_cases": int(len(pooled["label"])), "folds": folds, "warnings": pool_notes,
                           **{m: _metric_value(d_pool, m) for m in s["metrics"]}},
        }
    if mismatches:
        warnings.warn(f"fold values differ from the runs' report_val/report.json for {mismatches}: the settings "
                      "(schema, reference_group) do not match the bundle's", stacklevel=2)

    # --- test column
    test_kind = s["test_column"]
    fig2_confs = [s["figure2"]["reference"], *s["figure2"]["others"]] if s["figure2"] else []
    for conf in used:
        result_confs[conf]["test"] = _test_column(conf, test_kind, s, scorer, arrays, test_files[conf],
                                                  fold_values, out, r, bootstrap=conf in fig2_confs)

    # --- statistics
    families = _families(s, fold_values, label)

    # --- figure 3 (penalty curves)
    fig3, fig3_curves = _figure3_numbers(s, run_dirs, missing) if s["figure3"] else ({}, {})

    # --- the paper's values, tables, figures, report.json
    files = {"json": out / "report.json", "csv": out / "table.csv", "markdown": out / "table.md"}
    eodd_text = _eodd_text(scorer, bundle_report, strategy_from)
    test_text = _TEST_TEXT[test_kind].format(metric=FOLD_METRICS[s["best_fold_metric"]][2])
    table_rows = _table_rows(s, result_confs, families, paper_checked)
    pd.DataFrame(table_rows).to_csv(files["csv"], index=False, lineterminator="\n")
    files["markdown"].write_text(_markdown(s, result_confs, families, paper_checked, table_rows, eodd_text,
                                           test_text, missing, fig3, label))
    if s["figure2"]:
        files["figure2"] = _figure2(s, result_confs, families, label, out / "figure2.png")
    if fig3:
        files["figure3"] = _figure3(s, fig3, fig3_curves, label, out / "figure3.png")
    if missing:
        warnings.warn(f"{len(missing)} run file(s) missing (failed runs?), skipped: "
                      + "; ".join(f"{m['configuration']} fold {m['fold']} {m['split']}" for m in missing),
                      stacklevel=2)
    report = {
        "settings": s,
        "attribute": s["attribute"],
        "groups": scorer.groups,
        "groups_from": groups_from,
        "threshold": scorer.threshold,
        "eodd": {"strategy": scorer.strategy, "reference_group": scorer.reference,
                 "groups_compared": [scorer.reference, "rest"] if scorer.strategy == "one_vs_rest" else None,
                 "from": strategy_from, "report_json": bundle_report, "text": eodd_text},
        "test_column": {"kind": test_kind, "text": test_text},
        "paper": paper_checked,
        "configurations": result_confs,
        "families": families,
        "figure3": fig3,
        "missing": missing,
        "files": {k: str(v) for k, v in files.items()},
    }
    report = _plain(report)
    files["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


def _test_column(conf: str, kind: str, s: Mapping, scorer: _Scorer, arrays: Mapping, files: Mapping[int, Path],
                 fold_values: Mapping, out: Path, runs: pd.DataFrame, *, bootstrap: bool) -> dict:
    """The Test column of one configuration: which predictions, and their metrics."""
    folds = sorted(k for k in files if k >= 0)
    if kind == "retrain":
        has = ((runs["configuration"] == conf) & (runs["fold"] == -1) & (runs["split"] == "test")).any()
        if not has:
            raise FoldReportError(f"test_column 'retrain': configuration '{conf}' has no test run with fold -1 "
                                  "(a model retrained on the whole training cohort); use 'mean_probability' or "
                                  "'best_fold', or add the retrained run")
        if -1 not in files:
            return {"kind": kind, "text": "retrained model: test predictions missing (failed run)",
                    **{m: math.nan for m in s["metrics"]}}
        a, info = arrays[(conf, -1, "test")], {"fold": -1, "text": "model retrained on the whole training cohort"}
    elif kind == "best_fold":
        metric = s["best_fold_metric"]
        higher = FOLD_METRICS[metric][1]
        cands = [(k, fold_values[metric][conf].get(k, math.nan)) for k in folds]
        cands = [(k, v) for k, v in cands if math.isfinite(v)]
        if not cands:
            return {"kind": kind, "text": f"no fold model with a finite validation {metric} and test predictions",
                    **{m: math.nan for m in s["metrics"]}}
        best = max(cands, key=lambda kv: kv[1] if higher else -kv[1])  # max keeps the first (lowest fold) of ties
        a = arrays[(conf, best[0], "test")]
        info = {"fold": best[0], "selected_on": f"validation {metric} {best[1]:.4f}",
                "text": f"fold {best[0]} (best validation {FOLD_METRICS[metric][2]} {best[1]:.3f})"}
    else:
        if not folds:
            return {"kind": kind, "text": "no fold model has test predictions", **{m: math.nan for m in s["metrics"]}}
        a, info = _mean_probability(conf, [arrays[(conf, k, "test")] for k in folds], folds, s["attribute"], out)
        a = scorer.arrays(scorer.check(a))
    d, notes = scorer.summary(a, n_bootstrap=s["n_bootstrap"] if bootstrap else 0, seed=s["seed"])
    for note in notes:
        warnings.warn(f"{conf} test ({kind}): {note}", stacklevel=3)
    auc = d["metrics"]["auc"]
    ci = auc.get("ci") or {}
    return {"kind": kind, **info, "predictions": str(a["path"]), "n_cases": int(len(a["label"])),
            **{m: _metric_value(d, m) for m in s["metrics"]},
            "auc_overall_ci": ci.get("overall"), "by_group_auc": auc["by_group"],
            "by_group_auc_ci": ci.get("by_group"), "group_sizes": d["group_sizes"],
            "n_bootstrap": s["n_bootstrap"] if bootstrap else 0, "warnings": notes}


def _mean_probability(conf: str, models: Sequence[Mapping], folds: Sequence[int], attribute: str,
                      out: Path) -> tuple[Path, dict]:
    """Average the fold models' test scores per case id; write them as a predictions file."""
    first = models[0]
    order = np.argsort(first["case_id"], kind="stable")
    ids = first["case_id"][order]
    ref_label, ref_attr = first["label"][order], first["attribute"][order]
    scores = []
    for k, a in zip(folds, models):
        lacks = sorted(map(str, set(ids) - set(a["case_id"])))
        extra = sorted(map(str, set(a["case_id"]) - set(ids)))
        if lacks or extra:
            raise FoldReportError(
                f"test_column 'mean_probability': configuration '{conf}': the fold models' test predictions hold "
                f"different cases: fold {k} ({a['path']}) lacks {lacks[:5]}{' ...' if len(lacks) > 5 else ''} and "
                f"has {extra[:5]}{' ...' if len(extra) > 5 else ''} compared with fold {folds[0]}")
        o = np.argsort(a["case_id"], kind="stable")
        if not (np.array_equal(a["label"][o], ref_label) and np.array_equal(a["attribute"][o], ref_attr)):
            bad = ids[(a["label"][o] != ref_label) | (a["attribute"][o] != ref_attr)][0]
            raise FoldReportError(f"test_column 'mean_probability': configuration '{conf}': case '{bad}' has another "
                                  f"label or {attribute!r} in fold {k}'s test predictions than in fold {folds[0]}'s")
        scores.append(a["score"][o])
    mean = np.mean(np.stack(scores), axis=0)
    path = out / "test_predictions" / f"{conf}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"case_id": ids, "label": ref_label, "score": mean, "prediction": (mean >= 0.5).astype(int),
                  attribute: ref_attr}).to_csv(path, index=False, lineterminator="\n")
    return path, {"folds": list(folds), "n_models": len(folds),
                  "text": f"mean of {len(folds)} fold models' probabilities (folds {list(folds)})"}


def _families(s: Mapping, fold_values: Mapping, label: Mapping[str, str]) -> dict:
    """Figure 2's and Table 2's comparison families per metric (:mod:`fairmonai.reports.fold_statistics`)."""
    from .fold_statistics import best_versus_closest, comparison_family, family_markdown

    out: dict = {}
    specs = []
    if s["figure2"]:
        specs.append(("figure2", [s["figure2"]["reference"], *s["figure2"]["others"]]))
    if s["best_versus_closest"]:
        b = s["best_versus_closest"]
        specs.append(("table2", [*b["candidates"], *b["alternatives"]]))
    for name, confs in specs:
        out[name] = {}
        for m in s["metrics"]:
            higher = FOLD_METRICS[m][1]
            per = {c: fold_values[m][c] for c in confs}
            if s["statistic"] == "signedrank":  # paired: the folds every model has
                common = sorted(set.intersection(*(set(v) for v in per.values())))
                values = {label[c]: [per[c][k] for k in common] for c in confs}
            else:
                common = None
                values = {label[c]: [per[c][k] for k in sorted(per[c])] for c in confs}
            try:
                if name == "figure2":
                    fam = comparison_family(values, reference=label[s["figure2"]["reference"]],
                                            others=[label[c] for c in s["figure2"]["others"]], higher_is_better=higher,
                                            test=s["statistic"], star_threshold=s["star_p"])
                else:
                    b = s["best_versus_closest"]
                    fam = best_versus_closest(values, candidates=[label[c] for c in b["candidates"]],
                                              alternatives=[label[c] for c in b["alternatives"]],
                                              higher_is_better=higher, test=s["statistic"],
                                              star_threshold=s["star_p"], n_comparisons=len(s["metrics"]))
            except ValueError as e:
                warnings.warn(f"{name} {m}: no test: {e}", stacklevel=3)
                out[name][m] = {"error": str(e)}
                continue
            back = {label[c]: c for c in confs}
            out[name][m] = {
                "reference": back[fam.reference], "test": fam.test, "m": fam.m, "star_threshold": fam.star_threshold,
                "higher_is_better": higher, "paired_folds": common,
                "rows": [{"other": back[r.other], "mean_reference": r.mean_reference, "sd_reference": r.sd_reference,
                          "mean_other": r.mean_other, "sd_other": r.sd_other, "statistic": r.comparison.statistic,
                          "p_raw": r.p_raw, "p_bonferroni": r.p_bonferroni, "method": r.comparison.method,
                          "note": r.comparison.note, "n_reference": r.comparison.n_a, "n_other": r.comparison.n_b,
                          "star": r.star, "better": None if r.better is None else back[r.better]} for r in fam.rows],
                "markdown": family_markdown(fam, metric=FOLD_METRICS[m][2]),
            }
    return out


def _eodd_text(scorer: _Scorer, bundle_report: Mapping | None, source: str) -> str:
    n = len(scorer.groups)
    if scorer.strategy is None:
        return f"EOdd with {n} groups ({', '.join(scorer.groups)}): the two groups compared directly."
    if scorer.strategy == "one_vs_rest":
        how = f"strategy one_vs_rest, groups compared: {scorer.reference} vs rest"
    else:
        how = "strategy max_pair (the largest EOdd over all pairs of groups)"
    text = f"EOdd generalised to {n} groups ({', '.join(scorer.groups)}): {how}"
    if bundle_report is not None and bundle_report.get("strategy"):
        text += (f"; the runs' report.json: strategy {bundle_report['strategy']}, groups_compared "
                 f"{bundle_report.get('groups_compared')} ({bundle_report['file']})")
    else:
        text += f" (from {source}; no run's report.json found)"
    return text + "."


# ----------------------------------------------------------------------------------------------------
# table


def _best(values: Mapping[str, float], higher: bool) -> set[str]:
    finite = {c: v for c, v in values.items() if v is not None and math.isfinite(v)}
    if not finite:
        return set()
    top = max(finite.values()) if higher else min(finite.values())
    return {c for c, v in finite.items() if v == top}


def _table_rows(s: Mapping, confs: Mapping, families: Mapping, paper: Mapping | None) -> list[dict]:
    rows = []
    t2 = families.get("table2", {})
    for table, names in (("first", s["table_rows"]), ("second", s["second_table_rows"])):
        best = {}
        for m in s["metrics"]:
            higher = FOLD_METRICS[m][1]
            best[(m, "train")] = _best({c: confs[c]["train"][m]["mean"] for c in names}, higher)
            best[(m, "test")] = _best({c: confs[c]["test"][m] for c in names}, higher)
        for c in names:
            row = {"table": table, "configuration": c, "label": confs[c]["label"], "n_folds": confs[c]["n_folds"]}
            for m in s["metrics"]:
                tr = confs[c]["train"][m]
                fam = t2.get(m, {})
                star = fam.get("reference") == c and any(x["star"] for x in fam.get("rows", []))
                pv = _lookup(paper, "values", c, m) or {}
                row.update({f"{m}_train_mean": tr["mean"], f"{m}_train_sd": tr["sd"], f"{m}_train_n": tr["n"],
                            f"{m}_test": confs[c]["test"][m],
                            f"{m}_paper_train": (pv.get("train") or {}).get("text"),
                            f"{m}_paper_test": (pv.get("test") or {}).get("text"),
                            f"{m}_star": star, f"{m}_best_train": c in best[(m, "train")],
                            f"{m}_best_test": c in best[(m, "test")]})
            rows.append(row)
    return rows


def _cell_train(row: Mapping, m: str, n_folds_grid: int) -> str:
    mean, sd, n = row[f"{m}_train_mean"], row[f"{m}_train_sd"], row[f"{m}_train_n"]
    text = _fmt(mean) if n < 2 else f"{_fmt(mean)} ± {_fmt(sd)}"
    if n < n_folds_grid:
        text += f" (n={n})"
    if row[f"{m}_best_train"]:
        text = f"**{text}**"
    return text + ("\\*" if row[f"{m}_star"] else "")


def _cell_test(row: Mapping, m: str) -> str:
    text = _fmt(row[f"{m}_test"])
    return f"**{text}**" if row[f"{m}_best_test"] else text


def _cell_paper(row: Mapping, m: str) -> str:
    tr, te = row[f"{m}_paper_train"], row[f"{m}_paper_test"]
    if tr is None and te is None:
        return "-"
    return f"{tr or '-'} / {te or '-'}"


def _markdown(s, confs, families, paper, rows, eodd_text, test_text, missing, fig3, label) -> str:
    metrics = s["metrics"]
    names = {m: FOLD_METRICS[m][2] for m in metrics}
    n_grid = max(c["n_folds"] for c in confs.values())
    direction = ", ".join(f"{names[m]} {'higher' if FOLD_METRICS[m][1] else 'lower'}" for m in metrics)
    md = [f"# Table 2: fairness by {s['attribute']} over {n_grid} folds", "",
          f"Train: each fold model on its held-out fold (predictions_val.csv), mean ± sample sd (ddof 1) over the "
          f"folds (n given where fewer). Test: {test_text}. Paper: "
          + (f"{paper['source']} (train / test)." if paper else "no paper values given (-).")
          + f" Best value of each column of each table in **bold** ({direction} is better; EOM 1 and EOdd 0 are "
          "fair).",
          ""]
    if s["best_versus_closest"]:
        md += [f"\\* the best FaMI model against the closest alternative on the fold values: two-sided "
               f"{_TESTS[s['statistic']]}, raw p < {s['star_p']:g}; raw and Bonferroni-adjusted p (m = {len(metrics)} "
               "metrics) in the family tables below.", ""]
    md += [eodd_text, ""]
    for table, title in (("first", "Table 2"), ("second", "Table 2 (second part)")):
        part = [r for r in rows if r["table"] == table]
        if not part:
            continue
        header = ["model"]
        for m in metrics:
            header += [f"{names[m]} Train", f"{names[m]} Test", f"{names[m]} paper"]
        body = [[r["label"], *[x for m in metrics for x in (_cell_train(r, m, n_grid), _cell_test(r, m),
                                                              _cell_paper(r, m))]] for r in part]
        md += [f"## {title}", "", *markdown_table(header, body), ""]
    shown = list(dict.fromkeys([*s["table_rows"], *s["second_table_rows"], *confs]))
    md += [f"Test predictions ({s['test_column']}):", "",
           *[f"- {confs[c]['label']}: {confs[c]['test']['text']}" for c in shown], ""]
    header = ["model", "folds", "cases", *[f"{names[m]} pooled" for m in metrics],
              *[f"{names[m]}: valid folds" for m in metrics]]
    body = []
    for c in shown:
        p = confs[c]["pooled_oof"]
        body.append([confs[c]["label"], str(confs[c]["n_folds"]), str(p["n_cases"]), *[_fmt(p[m]) for m in metrics],
                     *[f"{confs[c]['validity'][m]['n_valid']} of {confs[c]['validity'][m]['n_folds']}"
                       for m in metrics]])
    some = next(iter(confs.values()))["validity"]
    md += ["## Pooled out-of-fold metrics and fold validity", "",
           "Pooled: all folds' held-out predictions scored as one set. Valid folds: " + "; ".join(
               f"{names[m]}: {some[m]['text'].split(':')[0]}" for m in metrics) + ".", "",
           *markdown_table(header, body), ""]
    for fam_name, title in (("table2", "Table 2 test: best FaMI model against the closest alternative"),
                            ("figure2", "Figure 2 family")):
        if fam_name not in families:
            continue
        md += [f"## {title}", ""]
        for m in metrics:
            f = families[fam_name][m]
            md += [f"### {names[m]}", ""]
            md += [f"not tested: {f['error']}", ""] if "error" in f else [f["markdown"]]
    if fig3:
        md += ["## Figure 3: penalty curves", "",
               f"mi_knn (shared k-NN estimate of I(u; v)); TV and RMSE to a centred {s['moving_average_k']}-point "
               "moving average per fold, mean ± sd over folds.", "",
               *markdown_table(["model", "folds", "TV", "RMSE", "diagnostic (panel 2)"],
                               [[label[c], str(len(v["folds"])), f"{_g(v['tv_mean'])} ± {_g(v['tv_sd'])}",
                                 f"{_g(v['rmse_mean'])} ± {_g(v['rmse_sd'])}", v["diagnostic_column"] or "-"]
                                for c, v in fig3.items()]), ""]
    if missing:
        md += [f"## Missing run files ({len(missing)}, skipped)", "",
               *[f"- {m['configuration']} fold {m['fold']} {m['split']}: {m['file']}" for m in missing], ""]
    return "\n".join(md) + "\n"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table whose cells are padded to their column's width (it also reads as plain text)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


_TESTS = {"ranksum": "Wilcoxon rank-sum (Mann-Whitney U)", "signedrank": "Wilcoxon signed-rank (paired folds)"}


# ----------------------------------------------------------------------------------------------------
# figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure2(s: Mapping, confs: Mapping, families: Mapping, label: Mapping, path: Path) -> Path:
    plt = _pyplot()
    names = [s["figure2"]["reference"], *s["figure2"]["others"]]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    rows = []
    for i, c in enumerate(names):
        t = confs[c]["test"]
        ci = t.get("by_group_auc_ci") or {}
        rows.append((f"{label[c]} overall", t.get("auc"), t.get("auc_overall_ci"), colors[i % len(colors)], "D"))
        for g, v in (t.get("by_group_auc") or {}).items():
            n = (t.get("group_sizes") or {}).get(g)
            rows.append((f"  {g} (n={n})", v, ci.get(g), colors[i % len(colors)], "s"))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 1.5 + 0.3 * max(len(rows), 8)),
                                   gridspec_kw={"width_ratios": [1, 1.2]})
    ys = np.arange(len(rows))[::-1]
    for y, (text, v, ci, color, marker) in zip(ys, rows):
        if v is None or not math.isfinite(v):
            ax1.text(0.5, y, "undefined", va="center", ha="center", color="grey", transform=ax1.get_yaxis_transform())
            continue
        if ci and ci[0] is not None and ci[1] is not None:
            ax1.hlines(y, ci[0], ci[1], color="black", lw=1.5)
        ax1.plot([v], [y], marker, color=color, ms=6)
    ax1.set_yticks(ys)
    ax1.set_yticklabels([r[0] for r in rows], fontsize=8)
    ax1.set_xlabel("test AUC")
    ax1.grid(axis="x", alpha=0.3)
    kind = confs[names[0]]["test"]["kind"]
    ax1.set_title(f"AUC by {s['attribute']} on the test cohort ({kind})\n"
                  f"95 % bootstrap CI, {s['n_bootstrap']} resamples, seed {s['seed']}", fontsize=9)
    metrics = s["metrics"]
    width = 0.8 / len(names)
    fam = families.get("figure2", {})
    top = 0.0
    for i, c in enumerate(names):
        xs = np.arange(len(metrics)) - 0.4 + width * (i + 0.5)
        means = [confs[c]["train"][m]["mean"] for m in metrics]
        sds = [confs[c]["train"][m]["sd"] for m in metrics]
        sds = [0.0 if not math.isfinite(x) else x for x in sds]
        ax2.bar(xs, means, width, yerr=sds, capsize=3, color=colors[i % len(colors)], label=label[c])
        for x, m, mean, sd in zip(xs, metrics, means, sds):
            top = max(top, (mean if math.isfinite(mean) else 0) + sd)
            row = next((r for r in fam.get(m, {}).get("rows", []) if r["other"] == c), None)
            if row is not None and row["star"]:
                ax2.text(x, mean + sd + 0.02, "*", ha="center", va="bottom", fontsize=14)
    ax2.set_ylim(0, top * 1.15 + 0.05)
    ax2.set_xticks(np.arange(len(metrics)))
    ax2.set_xticklabels([FOLD_METRICS[m][2] + (" (higher better)" if FOLD_METRICS[m][1] else " (lower better)")
                         for m in metrics], fontsize=8)
    ax2.set_ylabel("fold mean ± sd (held-out folds)")
    ax2.set_title(f"* raw p < {s['star_p']:g} against {label[names[0]]} ({_TESTS[s['statistic']]})", fontsize=9)
    ax2.legend(fontsize=8)
    ax2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _figure3_numbers(s: Mapping, run_dirs: Mapping, missing: list) -> tuple[dict, dict]:
    """Per configuration of ``figure3``: per fold TV and RMSE of ``mi_knn`` and their mean ± sd; and the
    curves ``{configuration: (mi_knn frames by fold, diagnostic frames by fold)}``."""
    from .penalty_curve import read_penalty_log, rmse_to_moving_average, total_variation

    k = s["moving_average_k"]
    out, frames = {}, {}
    for conf in s["figure3"]:
        folds, curves, diags, diag_col = {}, {}, {}, None
        for fold, d in sorted(run_dirs[conf].items()):
            f = d / "eval" / "penalty_curve.csv"
            if not f.is_file():
                missing.append({"configuration": conf, "fold": fold, "split": "train", "file": str(f)})
                continue
            frame, info = read_penalty_log(f, "mi_knn")
            x = frame["mi_knn"].to_numpy()
            folds[fold] = {"tv": total_variation(x), "rmse_ma": rmse_to_moving_average(x, k), "n_points": len(x),
                           "n_nan_dropped": info["n_nan_dropped"], "sampling": info["sampling"], "file": str(f)}
            curves[fold] = frame
            header = pd.read_csv(f, nrows=0).columns
            col = next((c for c in DIAGNOSTIC_COLUMNS if c in header), None)
            if col is not None:
                diag_col = diag_col or col
                if col == diag_col:
                    diags[fold] = read_penalty_log(f, col)[0]
        if not folds:
            warnings.warn(f"figure3: configuration '{conf}' has no penalty_curve.csv; left out", stacklevel=3)
            continue
        tv = _mean_sd([v["tv"] for v in folds.values()])
        rmse = _mean_sd([v["rmse_ma"] for v in folds.values()])
        out[conf] = {"folds": {str(f): v for f, v in folds.items()}, "tv_mean": tv[0], "tv_sd": tv[1],
                     "rmse_mean": rmse[0], "rmse_sd": rmse[1], "k": k, "moving_average": "centred",
                     "diagnostic_column": diag_col}
        frames[conf] = (curves, diags)
    return out, frames


def _figure3(s: Mapping, fig3: Mapping, frames: Mapping, label: Mapping, path: Path) -> Path:
    plt = _pyplot()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    spans = []
    for i, (conf, v) in enumerate(fig3.items()):
        color = colors[i % len(colors)]
        curves, diags = frames[conf]
        for frame in curves.values():
            ax1.plot(frame["iteration"], frame["mi_knn"], color=color, alpha=0.2, lw=0.8)
        mean = pd.concat(curves.values()).groupby("iteration")["mi_knn"].mean()
        ax1.plot(mean.index, mean.to_numpy(), color=color, lw=1.8,
                 label=f"{label[conf]}: TV {_g(v['tv_mean'])} ± {_g(v['tv_sd'])}, "
                       f"RMSE {_g(v['rmse_mean'])} ± {_g(v['rmse_sd'])} ({len(curves)} folds)")
        col = v["diagnostic_column"]
        if col is not None and diags:
            dm = pd.concat(diags.values()).groupby("iteration")[col].mean()
            ax2.plot(dm.index, dm.to_numpy(), color=color, lw=1.5, label=f"{label[conf]}: {col}")
            spans.append(float(np.nanmax(np.abs(dm.to_numpy()))))
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("mi_knn: k-NN estimate of I(u; v)")
    ax1.set_title(f"Shared k-NN estimate of I(u; v): mean over folds, folds faint\nTV; RMSE to a centred "
                  f"{s['moving_average_k']}-point moving average (per fold, mean ± sd)", fontsize=9)
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    ax2.set_xlabel("iteration")
    if spans and max(spans) > 100 * max(min(spans), 1e-12):
        ax2.set_yscale("symlog", linthresh=max(min(spans), 1e-6))
        ax2.set_ylabel("method's own diagnostic (symlog scale)")
    else:
        ax2.set_ylabel("method's own diagnostic")
    ax2.set_title("Each method's own diagnostic, mean over folds\n" + "; ".join(
        f"{c}: {t}" for c, t in DIAGNOSTIC_COLUMNS.items()), fontsize=9)
    if spans:
        ax2.legend(fontsize=7)
    else:
        ax2.text(0.5, 0.5, "no method diagnostic in these logs", ha="center", transform=ax2.transAxes, color="grey")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------
# command line


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2 (from main), no usage block
        raise _UsageError(message)


def main(argv: list[str] | None = None) -> int:
    """``python -m fairmonai.reports.fold_report <grid.csv> --settings <experiment.json> --out DIR``.

    ``<grid.csv>`` is the runner's per-run table (``<out>/<name>.csv``); the settings are the
    experiment file's ``fold_report`` object, its ``paper`` file resolved beside the experiment file
    (a missing one is warned about and left out; ``--paper`` names another). Returns 0 when the
    report is written, 2 for bad input (one line on stderr, ``error: ...``).
    """
    parser = _Parser(prog="python -m fairmonai.reports.fold_report",
                     description="Table 2 and Figures 2-3 of the FaMI paper from a k-fold experiment grid.")
    parser.add_argument("grid", help="the runner's per-run CSV (<out>/<name>.csv)")
    parser.add_argument("--settings", required=True, help="the experiment file (its 'fold_report' object)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--test-column", choices=list(TEST_COLUMNS), help="replaces the settings' test_column")
    parser.add_argument("--seed", type=int, help="the grid seed to report (when the grid has several)")
    parser.add_argument("--paper", help="JSON file of the paper's values (default: the settings' 'paper')")
    try:
        args = parser.parse_args(argv)
        exp_path = Path(args.settings)
        try:
            data = json.loads(exp_path.read_text())
        except OSError as e:
            raise FoldReportError(f"{exp_path}: cannot read the experiment file ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise FoldReportError(f"{exp_path}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or "fold_report" not in data:
            raise FoldReportError(f"{exp_path}: no 'fold_report' object")
        settings = dict(data["fold_report"])
        if args.test_column:
            settings["test_column"] = args.test_column
        grid_path = Path(args.grid)
        try:
            runs = pd.read_csv(grid_path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise FoldReportError(f"{grid_path}: cannot read the grid CSV ({' '.join(str(e).split())})") from None
        if args.seed is not None and "seed" in runs.columns:
            runs = runs[runs["seed"] == args.seed]
            if runs.empty:
                raise FoldReportError(f"{grid_path}: no run of seed {args.seed}")
        configurations = list(data["configurations"]) if isinstance(data.get("configurations"), dict) else None
        paper = None
        paper_file = Path(args.paper) if args.paper else None
        if paper_file is None and isinstance(settings.get("paper"), str):
            paper_file = exp_path.parent / settings["paper"]
            if not paper_file.is_file():
                print(f"warning: {exp_path}: fold_report.paper: {paper_file} not found; no paper values shown",
                      file=sys.stderr)
                paper_file = None
        if paper_file is not None:
            try:
                paper = json.loads(paper_file.read_text())
            except OSError as e:
                raise FoldReportError(f"{paper_file}: cannot read the paper's values ({e.strerror})") from None
            except json.JSONDecodeError as e:
                raise FoldReportError(f"{paper_file}: not valid JSON ({e})") from None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = write_fold_report(runs, args.out, settings, paper=paper, configurations=configurations,
                                       where=f"{exp_path.name}: fold_report")
    except _UsageError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except (InputError, ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for note in dict.fromkeys(str(w.message) for w in caught):
        print(f"warning: {note}", file=sys.stderr)
    print(f"test column: {report['test_column']['text']}")
    print(report["eodd"]["text"])
    for name, path in report["files"].items():
        print(f"  {name:<8} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
