"""Hänel et al.'s Table 3 for one model: performance, sigma_IoU, parity gaps and the five fairness losses.

Hänel, Kumar, Schlesinger, Li, Ünal, Eslami, Gumhold, "Enhancing Fairness of Visual Attribute Predictors"
(ACCV 2022, arXiv:2207.05727). Their tables score each trained model by its accuracy, sigma_IoU and the
values of the five differentiable fairness losses (:mod:`fairmonai.losses.functional`) on held-out
data. :func:`fairness_loss_row` computes one model's row from the predictions file a bundle's
evaluation writes (:class:`~fairmonai.handlers.PredictionsWriter`); :func:`write_fairness_loss_table`
writes it as CSV and Markdown.

Columns (one row per model and split):

* ``n``, ``auc`` (ROC AUC of the melanoma score), ``accuracy`` and ``balanced_accuracy`` (mean of
  TPR and TNR) at ``threshold``;
* ``sigma_iou``: :func:`fairmonai.metrics.compute_sigma_iou` (the authors' ddof 1, absent class 0);
* ``dp_difference``, ``eo_difference``: fairlearn's demographic-parity and equalized-odds differences
  (:func:`fairmonai.metrics.classification_fairness_summary`);
* ``dp_l2``, ``dp_mi``, ``eo_l2``, ``eo_mi``, ``iou``: each loss **averaged over batches** of
  ``batch_size`` (default 256) cases in the file's order (sorted by ``case_id``, so the same cases form
  the same batches for every model), each batch with ``empty="zero"`` (a batch that lacks a cell the
  loss divides by counts 0, as in the authors' code) and the paper's sums (``reduction="sum"``): the
  paper's definition of the table's loss values, batch estimates as in training. The last batch may
  be smaller; each batch counts once in the mean (the authors' code averages per-batch values);
* ``dp_l2_all`` ... ``iou_all``: the same losses on the whole set at once (one batch of ``n``), with
  ``empty="zero"``: the population value the batch estimates approximate (with ``n`` in the thousands
  every cell is filled, so the two ``empty`` rules agree).

Cases in no group of the attribute (code ``-1``, e.g. an excluded missing value) are in ``n``, the
AUC and the accuracies, and left out of every group quantity (as the losses exclude them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "FAIRNESS_LOSSES",
    "TABLE_COLUMNS",
    "fairness_loss_row",
    "batch_averaged_losses",
    "write_fairness_loss_table",
    "write_fairness_loss_report",
]

#: the five losses, in the paper's order, with their functional forms' names
FAIRNESS_LOSSES = ("dp_l2", "dp_mi", "eo_l2", "eo_mi", "iou")
TABLE_COLUMNS = (("model", "split", "attribute", "n", "auc", "accuracy", "balanced_accuracy", "sigma_iou",
                  "dp_difference", "eo_difference") + FAIRNESS_LOSSES + tuple(f"{k}_all" for k in FAIRNESS_LOSSES))
_HEADERS = {"model": "Model", "split": "Split", "attribute": "Attribute", "n": "N", "auc": "AUC",
            "accuracy": "Acc", "balanced_accuracy": "Bal. acc", "sigma_iou": "σ_IoU", "dp_difference": "DP diff",
            "eo_difference": "EO diff", "dp_l2": "L_dp^l2", "dp_mi": "L_dp^MI", "eo_l2": "L_eo^l2",
            "eo_mi": "L_eo^MI", "iou": "L_IoU"}


def _loss_fn(name: str):
    from ..losses import functional as F

    return {"dp_l2": F.dp_l2, "dp_mi": F.dp_mi, "eo_l2": F.eo_l2, "eo_mi": F.eo_mi, "iou": F.iou_loss}[name]


def _one(name: str, probs, y, g, num_groups: int, empty: str) -> float:
    fn = _loss_fn(name)
    if name.startswith("dp"):
        return float(fn(probs, g, num_groups=num_groups, empty=empty))
    return float(fn(probs, y, g, num_groups=num_groups, empty=empty))


def batch_averaged_losses(probs, targets, groups, *, num_groups: int, batch_size: int = 256,
                          empty: str = "zero") -> dict[str, float]:
    """Each of :data:`FAIRNESS_LOSSES` on consecutive batches of ``batch_size`` cases (in the given order),
    averaged over the batches (each batch counts once; the last one may be smaller).

    Args:
        probs: ``(N, K_t)`` probabilities.
        targets: ``(N,)`` class indices.
        groups: ``(N,)`` group codes (``-1``: excluded).
        num_groups: :math:`K_s`.
        batch_size: cases per batch (``>= 1``; ``>= N`` gives the whole-set values).
        empty: ``"zero"`` (default, the authors' code) or ``"leave_out"``.

    Returns:
        ``{loss: mean over batches}``.

    Raises:
        ValueError: ``batch_size < 1``; what the losses raise for.
    """
    import torch

    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    p = torch.as_tensor(np.asarray(probs), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    g = torch.as_tensor(np.asarray(groups), dtype=torch.long)
    starts = range(0, len(p), int(batch_size))
    return {name: float(np.mean([_one(name, p[i:i + batch_size], y[i:i + batch_size], g[i:i + batch_size],
                                      num_groups, empty) for i in starts]))
            for name in FAIRNESS_LOSSES}


def fairness_loss_row(
    predictions: str | os.PathLike,
    *,
    attribute: str,
    schema: str | os.PathLike | None = None,
    model: str = "",
    split: str = "",
    batch_size: int = 256,
    threshold: float = 0.5,
) -> dict:
    """One model's Table 3 row (see the module docstring) from a binary classifier's predictions file.

    Args:
        predictions: the predictions CSV (``case_id``, ``label``, ``score``, the attribute column).
        attribute: the sensitive attribute column (e.g. ``"sex"``, ``"age_group"``).
        schema: dataset name or schema path (group order and missing-value policy).
        model: the row's label (e.g. the method).
        split: the split scored (``"val"``, ``"test"``).
        batch_size: cases per batch of the batch-averaged losses (default 256, the paper's).
        threshold: decision threshold on ``score`` for the accuracies and sigma_IoU.

    Returns:
        ``{column: value}`` with the keys of :data:`TABLE_COLUMNS` (NaN where a value is undefined).

    Raises:
        ReportInputError: a bad predictions file (see :func:`fairmonai.reports.write_report`).
        ValueError: not a binary task; fewer than two groups.
    """
    from ..metrics import classification_fairness_summary
    from ._inputs import check_predictions

    checked = check_predictions(predictions, attributes=[attribute], schema=schema)
    if checked.task != "classification":
        raise ValueError(f"{predictions}: a classification predictions file is needed, got {checked.task}")
    y = np.asarray(checked.values["label"]).astype(int)
    scores = np.asarray(checked.values["scores"], dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"{predictions}: Table 3 is for a binary classifier (one score column); got {scores.shape}")
    order = np.argsort(checked.df["case_id"].to_numpy(), kind="stable")  # the file's order is by case id
    y, scores, codes = y[order], scores[order], np.asarray(checked.codes[attribute])[order]
    names = checked.groups[attribute]
    if len(names) < 2:
        raise ValueError(f"{predictions}: attribute {attribute!r} needs at least two groups, got {names}")
    summary = classification_fairness_summary(y, scores, sensitive_features=codes, group_names=names,
                                              threshold=threshold).scalars()
    tpr, fpr = summary.get("tpr", math.nan), summary.get("fpr", math.nan)
    probs = np.stack([1.0 - scores, scores], axis=1)
    row = {"model": model, "split": split, "attribute": attribute, "n": int(len(y)), "auc": summary.get("auc"),
           "accuracy": summary.get("accuracy"), "balanced_accuracy": 0.5 * (tpr + 1.0 - fpr),
           "sigma_iou": summary.get("sigma_iou"), "dp_difference": summary.get("dp_difference"),
           "eo_difference": summary.get("eo_difference")}
    row.update(batch_averaged_losses(probs, y, codes, num_groups=len(names), batch_size=batch_size))
    whole = batch_averaged_losses(probs, y, codes, num_groups=len(names), batch_size=max(len(y), 1))
    row.update({f"{k}_all": v for k, v in whole.items()})
    return {k: (math.nan if row[k] is None else row[k]) for k in TABLE_COLUMNS}


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def write_fairness_loss_table(rows: Sequence[Mapping] | Mapping, out_dir: str | os.PathLike,
                              name: str = "table3", *, batch_size: int = 256) -> dict[str, Path]:
    """Write rows of :func:`fairness_loss_row` as ``<name>.csv`` and ``<name>.md`` (Table 3 layout: one row
    per model, batch-averaged losses, then the whole-set values) in ``out_dir`` (created).

    Returns:
        ``{"csv": path, "markdown": path}``.
    """
    rows = [rows] if isinstance(rows, Mapping) else list(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame([{k: r.get(k) for k in TABLE_COLUMNS} for r in rows], columns=list(TABLE_COLUMNS))
    csv = out / f"{name}.csv"
    table.to_csv(csv, index=False)
    head = list(TABLE_COLUMNS[:10]) + list(FAIRNESS_LOSSES) + [f"{k}_all" for k in FAIRNESS_LOSSES]
    titles = [_HEADERS.get(k, _HEADERS.get(k.removesuffix("_all"), k) + " (all)") for k in head]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in head) + " |" for r in rows]
    md = out / f"{name}.md"
    md.write_text(
        "Hänel et al.'s Table 3 layout. L_*: mean over batches of " + str(batch_size) + " cases (sorted by case "
        "id), each batch with empty='zero' (a batch lacking a cell the loss divides by counts 0); (all): the "
        "loss on the whole split at once. σ_IoU: ddof 1, an absent class scores 0. Accuracies at threshold 0.5.\n\n"
        + "\n".join(lines) + "\n")
    return {"csv": csv, "markdown": md}


def write_fairness_loss_report(predictions: str | os.PathLike, out_dir: str | os.PathLike, *, attribute: str,
                               schema: str | os.PathLike | None = None, model: str = "", split: str = "",
                               batch_size: int = 256, name: str = "table3") -> dict:
    """:func:`fairness_loss_row` of ``predictions`` written by :func:`write_fairness_loss_table` into ``out_dir``
    (``<name>.csv``, ``<name>.md``): one evaluation's step in a bundle's ``run`` list. Returns the row."""
    row = fairness_loss_row(predictions, attribute=attribute, schema=schema, model=model, split=split,
                            batch_size=batch_size)
    write_fairness_loss_table([row], out_dir, name, batch_size=batch_size)
    return row
