"""FairMedSeg's divergence-weighted segmentation loss (Poeta et al., "Divergence-Aware Training with
Automatic Subgroup Mitigation for Breast Tumor Segmentation").

.. math::
    \\mathcal{L}_{total} = \\alpha\\, \\mathcal{L}_{seg} + (1 - \\alpha)\\, \\mathcal{L}_{\\Delta}, \\qquad
    \\mathcal{L}_{seg} = \\frac{1}{B} \\sum_{i=1}^{B} \\ell(x_i), \\qquad
    \\mathcal{L}_{\\Delta} = \\frac{1}{B} \\sum_{i=1}^{B} w_i\\, \\ell(x_i)

with :math:`\\ell(x_i)` the segmentation loss of sample :math:`i` (:func:`per_sample_loss`) and
:math:`w_i \\ge 0` its weight: the largest :math:`|\\Delta|` (performance divergence) of the subgroups
the sample belongs to, found on the validation set by
:class:`fairmonai.handlers.SubgroupReweighting` and handed to the loss by
:class:`fairmonai.engines.FairSupervisedTrainer` (``loss_batch_keys={"weight": "sample_weight"}``).

Example:
    >>> from monai.losses import DiceFocalLoss
    >>> loss = DivergenceWeightedLoss(DiceFocalLoss(sigmoid=True, reduction="none"), alpha=0.2)
    >>> logits = torch.randn(2, 1, 8, 8, 8, requires_grad=True)
    >>> label = (torch.rand(2, 1, 8, 8, 8) > 0.5).float()
    >>> loss(logits, label, weight=torch.tensor([0.1, 0.9])).backward()
    >>> sorted(loss.last_terms)
    ['seg', 'total', 'weighted']
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from ..validation import check_float

__all__ = [
    "DivergenceWeightedLoss",
    "per_sample_loss",
    "LOSS_CALLABLE_MSG",
    "BATCH_POOLED_MSG",
    "BATCH_MISMATCH_MSG",
    "EMPTY_BATCH_MSG",
    "PER_SAMPLE_SHAPE_MSG",
    "MISSING_WEIGHT_MSG",
    "WEIGHT_TYPE_MSG",
    "WEIGHT_SHAPE_MSG",
    "WEIGHT_VALUE_MSG",
]

LOSS_CALLABLE_MSG = (
    "loss must be a callable segmentation loss (input, target) -> tensor, e.g. "
    "monai.losses.DiceFocalLoss(sigmoid=True, reduction='none'); got {type}"
)
BATCH_POOLED_MSG = (
    "{loss} has batch=True, which pools the Dice over the batch, so it has no per-sample values; "
    "construct it with batch=False (the default)"
)
BATCH_MISMATCH_MSG = "batch sizes differ: input has shape {input_shape} but target has shape {target_shape}"
EMPTY_BATCH_MSG = "input has an empty batch: shape {input_shape}"
PER_SAMPLE_SHAPE_MSG = (
    "{loss} returned shape {out_shape} for input of shape {input_shape}; per-sample values need the "
    "batch dimension first (B = {b})"
)
MISSING_WEIGHT_MSG = (
    "DivergenceWeightedLoss needs the keyword argument weight= (the (B,) per-sample weights, the largest "
    "|divergence| of each sample's subgroups); got None. The weights come from "
    "fairmonai.handlers.SubgroupReweighting through "
    'FairSupervisedTrainer(loss_batch_keys={"weight": "sample_weight"})'
)
WEIGHT_TYPE_MSG = "weight must be a real-valued tensor or sequence of shape (B,); got {type}"
WEIGHT_SHAPE_MSG = (
    "weight must have shape (B,) or (B, 1) with B = {b}: input has shape {input_shape} but weight has "
    "shape {weight_shape}"
)
WEIGHT_VALUE_MSG = "weight must hold finite values >= 0; got weight[{index}] = {value}"


def _loss_name(loss: Callable) -> str:
    return type(loss).__name__ if isinstance(loss, nn.Module) else getattr(loss, "__name__", type(loss).__name__)


def _reduction_of(loss: Callable) -> str | None:
    """The reduction a loss applies: ``"none"`` only if every part of it keeps the batch dimension.

    MONAI's compound losses (``DiceFocalLoss``, ``GeneralizedDiceFocalLoss``, ``DiceCELoss``) pass
    ``reduction`` to their child losses and leave their own ``reduction`` attribute at ``_Loss``'s
    default ``"mean"``, so the children decide when there are any (recursively, so wrappers work).
    ``"mean"`` stands for any batch reduction; ``None``: no ``reduction`` attribute anywhere.
    """
    if isinstance(loss, nn.Module):
        reds = {_reduction_of(c) for c in loss.children()} - {None}
        if reds:
            return "none" if reds == {"none"} else "mean"
    red = getattr(loss, "reduction", None)
    if red is None:
        return None
    red = str(getattr(red, "value", red))
    return "none" if red == "none" else "mean"


def _check_not_pooled(loss: Callable) -> None:
    if isinstance(loss, nn.Module):
        for m in loss.modules():
            if getattr(m, "batch", False) is True:
                raise ValueError(BATCH_POOLED_MSG.format(loss=_loss_name(loss)))


def _reduce_per_sample(out: torch.Tensor, loss: Callable, input: torch.Tensor) -> torch.Tensor:
    b = input.shape[0]
    if out.ndim == 0 or out.shape[0] != b:
        raise ValueError(PER_SAMPLE_SHAPE_MSG.format(loss=_loss_name(loss), out_shape=tuple(out.shape),
                                                     input_shape=tuple(input.shape), b=b))
    return out.reshape(b, -1).mean(dim=1)


def per_sample_loss(loss: Callable, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample values :math:`\\ell(x_i)` of a segmentation loss, shape ``(B,)``, graph kept.

    - A loss with ``reduction="none"`` (e.g. ``DiceLoss``, ``DiceFocalLoss``, ``FocalLoss``,
      ``TverskyLoss`` of MONAI) is called once on the batch. Its output has the batch first and is
      averaged over every other dimension. In MONAI 1.6.1, for a ``BNHW[D]`` input: ``DiceLoss``
      gives ``(B, N, 1, 1[, 1])``, ``GeneralizedDiceLoss`` ``(B, 1, 1, 1[, 1])``, ``TverskyLoss``
      ``(B, N)``, ``FocalLoss`` and ``DiceFocalLoss`` ``(B, N, H, W[, D])`` (Dice term broadcast
      onto the focal map, so the mean is ``mean_N dice + mean_NHWD focal``, the value the loss
      gives with ``reduction="mean"`` on that sample alone).
    - Any other loss (``reduction="mean"`` or ``"sum"``) is called once per sample,
      ``loss(input[i:i+1], target[i:i+1])``, and each result averaged to a scalar. This covers
      ``DiceCELoss``, which rejects ``reduction="none"`` in MONAI 1.6.1 (its cross entropy would
      keep the voxels while its Dice cannot). The loop costs B calls.
    - A callable without a ``reduction`` attribute is called on the batch; a result with the batch
      first is averaged as for ``"none"``, a 0-d result (a batch reduction) makes it run per sample.

    The reduction is read from the loss's child losses when it has any, recursively (MONAI's compound
    losses keep a stale ``reduction="mean"`` on themselves), else from the loss. Looping is correct
    for any loss that treats samples independently; the single call is only faster.

    Args:
        loss: the segmentation loss, ``loss(input, target) -> tensor``.
        input: ``BNHW[D]`` network output (logits, as the loss wants them).
        target: ``BNHW[D]`` or ``B1HW[D]`` label, as the loss wants it.

    Returns:
        ``(B,)`` tensor of per-sample losses.

    Raises:
        ValueError: ``input`` and ``target`` batch sizes differ (both shapes named); an empty batch;
            the loss pools the batch (``batch=True``); a ``"none"`` output without the batch first.
    """
    if target.shape[:1] != input.shape[:1]:
        raise ValueError(BATCH_MISMATCH_MSG.format(input_shape=tuple(input.shape), target_shape=tuple(target.shape)))
    b = input.shape[0]
    if b == 0:
        raise ValueError(EMPTY_BATCH_MSG.format(input_shape=tuple(input.shape)))
    _check_not_pooled(loss)
    reduction = _reduction_of(loss)
    if reduction == "none":
        return _reduce_per_sample(loss(input, target), loss, input)
    if reduction is None:
        out = torch.as_tensor(loss(input, target))
        if out.ndim > 0 or b == 1:
            return _reduce_per_sample(out.reshape(1) if out.ndim == 0 else out, loss, input)
    return torch.stack([torch.as_tensor(loss(input[i : i + 1], target[i : i + 1])).mean() for i in range(b)])


def _check_weight(weight, input: torch.Tensor) -> torch.Tensor:
    """``weight`` as a detached ``(B,)`` tensor, checked for shape and values."""
    try:
        w = weight.detach() if isinstance(weight, torch.Tensor) else torch.as_tensor(weight)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(WEIGHT_TYPE_MSG.format(type=type(weight).__name__)) from None
    if w.dtype == torch.bool or w.is_complex():
        raise TypeError(WEIGHT_TYPE_MSG.format(type=f"{type(weight).__name__} of {w.dtype}"))
    b = input.shape[0]
    if tuple(w.shape) not in ((b,), (b, 1)):
        raise ValueError(WEIGHT_SHAPE_MSG.format(b=b, input_shape=tuple(input.shape), weight_shape=tuple(w.shape)))
    w = w.reshape(b)
    bad = ~torch.isfinite(w) | (w < 0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(WEIGHT_VALUE_MSG.format(index=i, value=w[i].item()))
    return w


class DivergenceWeightedLoss(_Loss):
    """FairMedSeg's loss: the segmentation loss plus its divergence-weighted per-sample version.

    .. math::
        \\mathcal{L}_{total} = \\alpha\\, \\frac{1}{B} \\sum_{i=1}^{B} \\ell(x_i)
        + (1 - \\alpha)\\, \\frac{1}{B} \\sum_{i=1}^{B} w_i\\, \\ell(x_i)

    :math:`\\ell(x_i)` is ``loss`` on sample :math:`i` (see :func:`per_sample_loss`), :math:`w_i
    \\ge 0` the sample's weight (the largest :math:`|\\Delta|` of its subgroups, computed by
    :class:`fairmonai.handlers.SubgroupReweighting`, passed as ``weight=``).

    Choices where the paper and its code leave room:

    - **Batch mean, not sum.** The paper writes :math:`\\mathcal{L}_{\\Delta}` as a sum over the
      batch at its batch size of 1 (its code sums too). A sum would grow with B against the batch-mean
      :math:`\\mathcal{L}_{seg}` and change what :math:`\\alpha` means; the mean keeps
      :math:`\\alpha` the same trade-off at any batch size and equals the paper's loss at B = 1.
    - **The weighted term carries gradient.** The paper's released code multiplies the weight by
      ``loss.item()``, so :math:`\\mathcal{L}_{\\Delta}` is a constant there and only rescales the
      reported loss. We follow the paper's equation: gradients flow through :math:`\\ell(x_i)` in
      both terms, so the total gradient is
      :math:`\\alpha \\nabla \\mathcal{L}_{seg} + (1 - \\alpha) \\nabla \\mathcal{L}_{\\Delta}`.
    - The weights are data: used raw (normalising them is an option of the reweighting handler,
      not of the loss) and detached.

    ``alpha = 1`` gives the plain batch-mean loss, as do weights all equal to 1 for any ``alpha``.
    The result is always a scalar (the batch mean is part of the definition).

    Shapes: ``input`` ``BNHW[D]`` logits (or whatever ``loss`` expects); ``target`` ``BNHW[D]`` or
    ``B1HW[D]``; ``weight`` ``(B,)`` or ``(B, 1)``.

    For logging, :attr:`last_terms` holds after each call ``seg`` (:math:`\\mathcal{L}_{seg}`),
    ``weighted`` (:math:`\\mathcal{L}_{\\Delta}`) and ``total``, as detached 0-d tensors on the loss's
    device (no host-device synchronisation in ``forward``);
    :class:`fairmonai.engines.FairSupervisedTrainer` publishes them as ``engine.state.loss_terms``.

    Args:
        loss: the segmentation loss with per-sample values: preferably a MONAI loss constructed with
            ``reduction="none"`` (``DiceLoss``, ``DiceFocalLoss``, ``FocalLoss``, ...), called once
            per batch; a loss with ``reduction="mean"`` (``DiceCELoss``, which has no ``"none"``) is
            called once per sample. Must not pool the batch (``batch=True``).
        alpha: weight of the plain loss, in ``[0, 1]``. Default ``0.2`` (the paper's).

    Raises:
        TypeError: ``loss`` not callable; ``alpha`` not a number; in ``forward``, ``weight`` not a
            real-valued tensor or sequence.
        ValueError: ``alpha`` outside ``[0, 1]`` or not finite; ``loss`` has ``batch=True``; in
            ``forward``, ``weight`` missing (the message says where it comes from), of the wrong
            shape (both shapes named), or holding a negative, NaN or infinite value (its index
            named); ``input`` and ``target`` batch sizes differ.

    Example:
        >>> from monai.losses import DiceCELoss
        >>> loss = DivergenceWeightedLoss(DiceCELoss(to_onehot_y=True, softmax=True))
        >>> logits = torch.randn(3, 2, 8, 8, 8, requires_grad=True)
        >>> label = torch.randint(0, 2, (3, 1, 8, 8, 8))
        >>> total = loss(logits, label, weight=torch.tensor([0.0, 0.5, 2.0]))
        >>> total.backward()
        >>> float(loss.last_terms["total"]) == total.item()
        True
    """

    def __init__(self, loss: nn.Module | Callable, alpha: float = 0.2) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(LOSS_CALLABLE_MSG.format(type=type(loss).__name__))
        _check_not_pooled(loss)
        self.alpha = check_float(alpha, "alpha", low=0.0, high=1.0)
        self.loss = loss
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, *, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:math:`\\alpha\\, \\text{mean}_i\\, \\ell(x_i) + (1 - \\alpha)\\, \\text{mean}_i\\, w_i \\ell(x_i)`.

        Args:
            input: ``BNHW[D]`` network output (logits).
            target: ``BNHW[D]`` or ``B1HW[D]`` label.
            weight: ``(B,)`` or ``(B, 1)`` finite non-negative per-sample weights (keyword only,
                required); moved to the loss values' device and dtype.

        Returns:
            the scalar total loss.
        """
        if weight is None:
            raise ValueError(MISSING_WEIGHT_MSG)
        w = _check_weight(weight, input)
        per = per_sample_loss(self.loss, input, target)
        w = w.to(device=per.device, dtype=per.dtype)
        seg = per.mean()
        weighted = (w * per).mean()
        total = self.alpha * seg + (1.0 - self.alpha) * weighted
        self.last_terms = {"seg": seg.detach(), "weighted": weighted.detach(), "total": total.detach()}
        return total

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
