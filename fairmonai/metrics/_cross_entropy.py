"""Class-weighted cross entropy of predicted probabilities over a whole evaluation, as a MONAI metric.

The validation loss of Hänel et al.'s training (their checkpoint is the epoch with the lowest
validation loss), computed from what the bundles' evaluators output: class probabilities after the
softmax postprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

__all__ = ["WeightedCrossEntropyMetric", "weighted_cross_entropy", "CE_PROBS_MSG", "CE_LABELS_MSG"]

CE_PROBS_MSG = "y_pred must be (B, K) class probabilities with K >= 2; got shape {shape}"
CE_LABELS_MSG = "y must hold class indices in [0, {k}) of shape (B,), (B, 1) or one-hot (B, {k}); got {what}"


def _class_indices(y: torch.Tensor, k: int, b: int) -> torch.Tensor:
    if y.ndim == 2 and y.shape == (b, k) and k > 1:
        return y.argmax(dim=1)
    flat = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if flat.ndim != 1 or flat.shape[0] != b:
        raise ValueError(CE_LABELS_MSG.format(k=k, what=f"shape {tuple(y.shape)} for {b} predictions"))
    idx = flat.long()
    if bool(((idx < 0) | (idx >= k) | (flat != idx)).any()):
        raise ValueError(CE_LABELS_MSG.format(k=k, what=f"values {sorted(set(flat.tolist()))}"))
    return idx


def _terms(probs: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None) -> torch.Tensor:
    """``(B, 2)``: per case ``[w_y * (-log p(y)), w_y]``."""
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(CE_PROBS_MSG.format(shape=tuple(probs.shape)))
    p = probs.float() if probs.dtype not in (torch.float32, torch.float64) else probs
    idx = _class_indices(torch.as_tensor(y, device=p.device), p.shape[1], p.shape[0])
    p_true = p.gather(1, idx[:, None])[:, 0].clamp_min(torch.finfo(p.dtype).tiny)
    w = torch.ones_like(p_true) if class_weights is None else class_weights.to(p)[idx]
    return torch.stack([-w * torch.log(p_true), w], dim=1)


def weighted_cross_entropy(probs: torch.Tensor, y: torch.Tensor,
                           class_weights: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """:math:`\\sum_n w_{y_n} (-\\log p_n(y_n)) / \\sum_n w_{y_n}`: PyTorch's
    ``F.cross_entropy(logits, y, weight=w)`` (reduction ``"mean"``) written on the probabilities
    ``p = softmax(logits)``. A probability of exactly 0 is raised to the dtype's smallest positive
    number (float32: :math:`-\\log p` at most 87.3), where the logits' loss would be finite but larger.

    Args:
        probs: ``(B, K)`` class probabilities.
        y: ``(B,)``, ``(B, 1)`` class indices or ``(B, K)`` one-hot.
        class_weights: ``K`` weights (default: all 1, the mean cross entropy).

    Returns:
        0-d tensor.
    """
    w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float64)
    t = _terms(probs, y, w)
    return t[:, 0].sum() / t[:, 1].sum()


class WeightedCrossEntropyMetric(CumulativeIterationMetric):
    """:func:`weighted_cross_entropy` over every case of an evaluation (not a mean of batch means).

    Buffers per case ``[w_y * (-log p(y)), w_y]``, gathers the buffers across ranks
    (``Cumulative.get_buffer``) and divides the sums, so a distributed evaluation gives the
    single-process value. Use it through MONAI's ``IgniteMetricHandler``::

        "additional_metrics": {"val_loss": {"_target_": "IgniteMetricHandler",
            "metric_fn": {"_target_": "fairmonai.metrics.WeightedCrossEntropyMetric", "class_weights": "@class_weight"},
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])", "save_details": false}}

    Args:
        class_weights: ``K`` class weights (as the training loss's), or ``None``.

    Raises:
        ValueError: probabilities not ``(B, K)``, labels of another shape or outside ``[0, K)``.
    """

    def __init__(self, class_weights: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.class_weights = None if class_weights is None else torch.as_tensor(
            class_weights.detach() if isinstance(class_weights, torch.Tensor) else class_weights, dtype=torch.float64)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("WeightedCrossEntropyMetric needs the labels y")
        return _terms(y_pred, y, self.class_weights)

    def aggregate(self) -> torch.Tensor:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            return torch.tensor(float("nan"))
        return data[:, 0].sum() / data[:, 1].sum()
