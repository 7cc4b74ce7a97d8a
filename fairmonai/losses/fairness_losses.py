"""Hänel et al.'s batch fairness losses as ``_Loss`` modules, their total loss with cross entropy, and
class weights by effective number.

Hänel, Kumar, Schlesinger, Li, Ünal, Eslami, Gumhold, "Enhancing Fairness of Visual Attribute Predictors"
(ACCV 2022, arXiv:2207.05727; code github.com/nish03/FVAP). The values are those of
:mod:`fairmonai.losses.functional`; the modules add configuration (``num_groups``, ``empty``,
``reduction``, ``softmax``) and count the batches with an empty cell.

A bundle trains with::

    "loss": {
        "_target_": "fairmonai.losses.FairnessLossWithCE",
        "fair_loss": {"_target_": "fairmonai.losses.EqualizedOddsL2Loss", "num_groups": 2},
        "lam": "@mu",
        "class_weights": "$fairmonai.losses.effective_number_weights([n_benign, n_malignant])"
    },
    "train#trainer#_target_": "fairmonai.engines.FairSupervisedTrainer",
    "train#trainer#sensitive_key": "@sensitive_key"

:class:`~fairmonai.engines.FairSupervisedTrainer` calls the loss as ``loss(pred, target,
sensitive=u)``, ``u`` the batch's group codes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from ..validation import check_float, check_int
from .functional import (
    TARGET_CODE_MSG,
    _Batch,
    _check_codes,
    _dp_l2_terms,
    _dp_mi_terms,
    _eo_l2_terms,
    _eo_mi_terms,
    _iou_terms,
    _options,
    _prepare,
    _reduce,
    _Terms,
)

__all__ = [
    "BatchFairnessLoss",
    "DemographicParityL2Loss",
    "DemographicParityMILoss",
    "EqualizedOddsL2Loss",
    "EqualizedOddsMILoss",
    "IoUParityLoss",
    "FairnessLossWithCE",
    "effective_number_weights",
    "DPL2Loss",
    "DPMILoss",
    "EOL2Loss",
    "EOMILoss",
    "FairIoULoss",
    "MISSING_SENSITIVE_MSG",
    "FAIR_LOSS_TYPE_MSG",
    "FAIR_LOSS_SOFTMAX_MSG",
    "FAIR_LOSS_REDUCTION_MSG",
    "LOGITS_TYPE_MSG",
    "LOGITS_SHAPE_MSG",
    "LOGITS_NONFINITE_MSG",
    "CLASS_WEIGHTS_MSG",
    "CLASS_WEIGHTS_LENGTH_MSG",
    "COUNTS_MSG",
    "BETA_MSG",
]

MISSING_SENSITIVE_MSG = (
    "{loss} needs the keyword argument sensitive= (the (B,) group codes); got None. Train with "
    "fairmonai.engines.FairSupervisedTrainer(sensitive_key=...){hint}"
)
FAIR_LOSS_TYPE_MSG = (
    "fair_loss must be a fairmonai.losses.BatchFairnessLoss (DemographicParityL2Loss, DemographicParityMILoss, "
    "EqualizedOddsL2Loss, EqualizedOddsMILoss, IoUParityLoss); got {type}"
)
FAIR_LOSS_SOFTMAX_MSG = (
    "fair_loss has softmax=True, but FairnessLossWithCE already passes it softmax probabilities; construct "
    "{loss} with softmax=False"
)
FAIR_LOSS_REDUCTION_MSG = "fair_loss must reduce to a scalar (reduction 'sum' or 'mean'); got reduction={value!r}"
LOGITS_TYPE_MSG = "input must be a floating-point torch.Tensor of logits (B, K_t); got {what}"
LOGITS_SHAPE_MSG = "input must have shape (B, K_t) with B >= 1 and K_t >= 2 (logits); got shape {shape}"
LOGITS_NONFINITE_MSG = "input (logits) must be finite; got {value} at input[{row}, {col}] ({count} non-finite entries)"
CLASS_WEIGHTS_MSG = "class_weights must be None or K_t finite numbers >= 0, not all 0; got {value}"
CLASS_WEIGHTS_LENGTH_MSG = (
    "class_weights has {n} entries but input has K_t = {k} classes (input shape {shape})"
)
COUNTS_MSG = "counts must be a non-empty 1-D sequence of finite class counts > 0; got {value}"
BETA_MSG = "beta must be a finite number in [0, 1); got {value!r}"


class BatchFairnessLoss(_Loss):
    """Base of Hänel et al.'s batch fairness losses (one group statistic per mini-batch).

    ``forward(input, target=None, *, sensitive)`` returns the loss of the batch; the value is the
    functional form's of the same name in :mod:`fairmonai.losses.functional` (see there for the
    equations, empty cells and terms).

    **Counting empty cells.** Every call increments :attr:`n_batches`, and :attr:`n_empty_batches`
    when a cell the loss conditions on had no sample (a group for the DP losses; a (class, group)
    cell for the EO and IoU losses); :attr:`last_empty` is that flag for the last call and
    :attr:`empty_fraction` their ratio. These are Python numbers (the check already synchronises
    with the device), counted on each rank separately under DDP; a handler reads them (e.g. each
    epoch) and calls :meth:`reset_counters`.

    Args:
        num_groups: :math:`K_s`, the number of sensitive groups (codes ``0 .. K_s - 1``; ``-1``:
            excluded), ``>= 2``. Required: a group absent from a batch is only seen as empty when the
            loss knows it exists.
        empty: ``"leave_out"`` (default: the terms of an empty cell are left out) or ``"zero"``
            (the authors' code: the whole loss is 0 on a batch where it divides by an empty count,
            which for the MI losses is only an absent class in :class:`EqualizedOddsMILoss`).
        reduction: ``"sum"`` (default, the paper's sums), ``"mean"`` (over the terms used) or
            ``"none"`` (the terms).
        softmax: apply ``softmax`` over dim 1 to ``input`` first (``input`` are logits); default
            ``False`` (``input`` are probabilities). :class:`FairnessLossWithCE` needs ``False``.

    Raises:
        TypeError: ``num_groups`` not an int; ``softmax`` not a bool; in ``forward``, ``sensitive``
            missing.
        ValueError: ``num_groups < 2``; unknown ``empty`` or ``reduction`` (the allowed values
            listed); in ``forward``, everything the functional form raises for.
    """

    #: whether the loss needs the true classes
    needs_target: bool = False
    _terms_fn: Callable[..., _Terms]

    def __init__(
        self,
        num_groups: int,
        empty: str = "leave_out",
        reduction: LossReduction | str = LossReduction.SUM,
        softmax: bool = False,
    ) -> None:
        empty, reduction = _options(empty, reduction)
        super().__init__(reduction=reduction)
        self.num_groups = check_int(num_groups, "num_groups", 2)
        self.empty = empty
        if not isinstance(softmax, bool):
            raise TypeError(f"softmax must be a bool; got {softmax!r}")
        self.softmax = softmax
        self.n_batches = 0
        self.n_empty_batches = 0
        self.last_empty: bool | None = None

    def _terms(self, batch: _Batch) -> _Terms:
        return type(self)._terms_fn(batch)

    @property
    def empty_fraction(self) -> float:
        """``n_empty_batches / n_batches`` (NaN before the first call)."""
        return self.n_empty_batches / self.n_batches if self.n_batches else float("nan")

    def reset_counters(self) -> None:
        """Set :attr:`n_batches` and :attr:`n_empty_batches` to 0."""
        self.n_batches = 0
        self.n_empty_batches = 0

    def forward(
        self, input: torch.Tensor, target: torch.Tensor | None = None, *, sensitive: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss of the batch.

        Args:
            input: ``(B, K_t)`` probabilities (logits when ``softmax=True``).
            target: ``(B,)`` or ``(B, 1)`` true classes; required by the EO and IoU losses, ignored
                by the DP losses (so a DP loss with ``softmax=True`` also serves as the ``penalty`` of
                :class:`~fairmonai.losses.FairnessRegularizedLoss`).
            sensitive: ``(B,)`` or ``(B, 1)`` group codes (keyword only, required).
        """
        if sensitive is None:
            raise TypeError(MISSING_SENSITIVE_MSG.format(loss=type(self).__name__, hint=""))
        probs = input.softmax(dim=1) if self.softmax else input
        batch = _prepare(probs, sensitive, target if self.needs_target else None, self.num_groups,
                         type(self).__name__, need_targets=self.needs_target)
        terms = self._terms(batch)
        self.n_batches += 1
        self.n_empty_batches += int(terms.empty)
        self.last_empty = terms.empty
        return _reduce(terms, self.empty, self.reduction)

    def extra_repr(self) -> str:
        return (f"num_groups={self.num_groups}, empty={self.empty!r}, reduction={self.reduction!r}, "
                f"softmax={self.softmax}")


class DemographicParityL2Loss(BatchFairnessLoss):
    """:math:`L_{dp}^{l_2}` (Hänel et al., Eq. 3): :func:`fairmonai.losses.functional.dp_l2` as a module.

    .. math::
        \\sum_{a,b} \\left[p(\\hat y = a \\mid s = b) - p(\\hat y = a)\\right]^2

    Empty cell: a group without samples. Arguments and errors: :class:`BatchFairnessLoss`.

    Example:
        >>> loss = DemographicParityL2Loss(num_groups=3)
        >>> p = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [1.0, 0.0, 0.0],
        ...                   [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
        >>> loss(p, sensitive=torch.tensor([0, 0, 1, 1, 2, 2]))
        tensor(0.2500)
    """

    _terms_fn = staticmethod(_dp_l2_terms)


class DemographicParityMILoss(BatchFairnessLoss):
    """:math:`L_{dp}^{MI} = H(\\hat y) + H(s) - H(\\hat y, s)` (Hänel et al., Eq. 4):
    :func:`fairmonai.losses.functional.dp_mi` as a module.

    Empty cell: a group without samples (counted; the value is the MI over the groups present in both
    ``empty`` modes, as the code). Arguments and errors: :class:`BatchFairnessLoss`.
    """

    _terms_fn = staticmethod(_dp_mi_terms)


class EqualizedOddsL2Loss(BatchFairnessLoss):
    """:math:`L_{eo}^{l_2}` (Hänel et al., Eq. 6): :func:`fairmonai.losses.functional.eo_l2` as a module.

    .. math::
        \\sum_{a,b,c} \\left[p(\\hat y = a \\mid y = b, s = c) - p(\\hat y = a \\mid y = b)\\right]^2

    Needs ``target``. Empty cell: a (class, group) cell without samples. Arguments and errors:
    :class:`BatchFairnessLoss`.
    """

    needs_target = True
    _terms_fn = staticmethod(_eo_l2_terms)


class EqualizedOddsMILoss(BatchFairnessLoss):
    """:math:`L_{eo}^{MI} = \\sum_b I(\\hat y; s \\mid y{=}b)`, unweighted (Hänel et al., Eq. 7):
    :func:`fairmonai.losses.functional.eo_mi` as a module.

    Needs ``target``. Empty cells: a class absent (its term left out, or the loss 0 with
    ``empty="zero"``); a (class, group) cell without samples (counted; a zero entry of that class's
    joint). Arguments and errors: :class:`BatchFairnessLoss`.
    """

    needs_target = True
    _terms_fn = staticmethod(_eo_mi_terms)


class IoUParityLoss(BatchFairnessLoss):
    """:math:`L_{IoU} = \\sum_g [\\mathrm{IoU}(g) - \\mathrm{IoU}(\\text{all})]^2` on soft confusion
    matrices (Hänel et al., Eq. 12): :func:`fairmonai.losses.functional.iou_loss` as a module.

    Needs ``target``. ``reduction="mean"`` divides by the number of groups summed (:math:`K_s` when
    none is left out), the authors' code's normalisation; the default ``"sum"`` is Eq. 12. Empty
    cell: a (class, group) cell without samples (see :func:`~fairmonai.losses.functional.iou_loss`
    for what each ``empty`` mode does with it). Arguments and errors: :class:`BatchFairnessLoss`.
    """

    needs_target = True

    def _terms(self, batch: _Batch) -> _Terms:
        return _iou_terms(batch, self.empty)


def _as_weights(class_weights) -> torch.Tensor | None:
    if class_weights is None:
        return None
    try:
        w = torch.as_tensor(class_weights.detach() if isinstance(class_weights, torch.Tensor) else class_weights,
                            dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(CLASS_WEIGHTS_MSG.format(value=class_weights)) from None
    if w.ndim != 1 or w.numel() < 2 or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) \
            or not bool((w > 0).any()):
        raise ValueError(CLASS_WEIGHTS_MSG.format(value=w.tolist() if w.ndim <= 1 else tuple(w.shape)))
    return w.clone()


class FairnessLossWithCE(_Loss):
    """Class-weighted cross entropy plus ``lam`` times a batch fairness loss (Hänel et al.'s total loss).

    .. math::
        \\mathcal L = \\frac{\\sum_n w_{y_n}\\, \\mathrm{CE}(z_n, y_n)}{\\sum_n w_{y_n}}
            + \\lambda\\, L_{fair}\\big(\\mathrm{softmax}(z), y, s\\big)

    with :math:`z` the ``(B, K_t)`` logits, :math:`w` the class weights (all 1 without them, giving
    the plain batch mean) and :math:`L_{fair}` one of :class:`DemographicParityL2Loss`,
    :class:`DemographicParityMILoss`, :class:`EqualizedOddsL2Loss`, :class:`EqualizedOddsMILoss`,
    :class:`IoUParityLoss` on the softmax probabilities. This is what the authors' code optimises
    (``torch.nn.functional.cross_entropy(logits, y, weight=w)``, i.e. PyTorch's weighted mean,
    ``+ fair_loss_weight * fair_loss``).

    **The scale of** ``lam``. The paper's Eq. 14 writes the cross entropy as a *sum* over the batch,
    :math:`\\sum_n \\mathrm{CE}_n + \\lambda_{14} L_{fair}`; dividing by the batch size :math:`B`
    gives this loss with :math:`\\lambda = \\lambda_{14} / B` (unweighted). ``lam`` here is on the
    code's scale (its ``fair_loss_weight``, searched over 1e-7 .. 1e2 in the authors' hyperparameter
    search), so a value read off Eq. 14 must be divided by the batch size. On this scale the cross
    entropy's weight does not grow with the batch size (the fairness term's batch estimates still
    depend on it).

    ``lam = 0`` gives the (weighted) cross entropy; the fairness loss is then still evaluated, without
    gradient, when ``sensitive`` is given (so a baseline run logs it), and ``sensitive`` may be omitted.

    For logging, :attr:`last_terms` holds after each call, as detached 0-d tensors (no host sync
    beyond the input checks): ``ce``, ``lam`` (float64 CPU), and when the fairness loss ran,
    ``fair`` and ``empty`` (1.0 when the batch had an empty cell, float64 CPU).
    :class:`fairmonai.engines.FairSupervisedTrainer` publishes them as ``engine.state.loss_terms``.
    :attr:`n_batches`, :attr:`n_empty_batches`, :attr:`empty_fraction` and :meth:`reset_counters` are
    the fairness loss's counters.

    Args:
        fair_loss: the fairness loss module (``softmax=False``; ``reduction`` ``"sum"`` or ``"mean"``).
        lam: :math:`\\lambda \\ge 0`. Default ``1.0`` (the code's default ``fair_loss_weight``).
        class_weights: ``K_t`` non-negative weights of the cross entropy (e.g.
            :func:`effective_number_weights`), or ``None`` (default). Kept as a buffer, cast to the
            logits' device and dtype.

    Raises:
        TypeError: ``fair_loss`` not a :class:`BatchFairnessLoss`; ``lam`` not a number; in
            ``forward``, ``sensitive`` missing while ``lam > 0``, ``input`` not a floating tensor.
        ValueError: ``fair_loss`` with ``softmax=True`` or ``reduction="none"``; ``lam`` negative or
            not finite; bad ``class_weights``; in ``forward``, ``input`` not ``(B, K_t)`` or not
            finite (the first such entry and its index named), a
            ``class_weights`` length other than ``K_t`` (both named), targets outside ``[0, K_t)``,
            and everything the fairness loss raises for.

    Example:
        >>> loss = FairnessLossWithCE(EqualizedOddsL2Loss(num_groups=2), lam=0.5,
        ...                           class_weights=effective_number_weights([900, 100]))
        >>> logits = torch.randn(8, 2, requires_grad=True)
        >>> value = loss(logits, torch.tensor([0, 1] * 4), sensitive=torch.tensor([0, 0, 1, 1] * 2))
        >>> value.backward()
        >>> sorted(loss.last_terms)
        ['ce', 'empty', 'fair', 'lam']
    """

    def __init__(
        self,
        fair_loss: BatchFairnessLoss,
        lam: float = 1.0,
        class_weights: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(fair_loss, BatchFairnessLoss):
            raise TypeError(FAIR_LOSS_TYPE_MSG.format(type=type(fair_loss).__name__))
        if fair_loss.softmax:
            raise ValueError(FAIR_LOSS_SOFTMAX_MSG.format(loss=type(fair_loss).__name__))
        if fair_loss.reduction == LossReduction.NONE.value:
            raise ValueError(FAIR_LOSS_REDUCTION_MSG.format(value=fair_loss.reduction))
        self.fair_loss = fair_loss
        self.lam = check_float(lam, "lam")
        self.register_buffer("class_weights", _as_weights(class_weights))
        self.last_terms: dict[str, torch.Tensor] = {}

    @property
    def n_batches(self) -> int:
        return self.fair_loss.n_batches

    @property
    def n_empty_batches(self) -> int:
        return self.fair_loss.n_empty_batches

    @property
    def empty_fraction(self) -> float:
        return self.fair_loss.empty_fraction

    def reset_counters(self) -> None:
        self.fair_loss.reset_counters()

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, *, sensitive: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weighted cross entropy of ``input`` plus ``lam`` times the fairness loss of its softmax.

        Args:
            input: ``(B, K_t)`` logits (a half-precision input, e.g. under AMP, is computed in float32).
            target: ``(B,)`` or ``(B, 1)`` class indices (a float tensor of integers is accepted).
            sensitive: ``(B,)`` or ``(B, 1)`` group codes, ``-1`` = excluded; keyword only, required
                when ``lam > 0``.

        Returns:
            the scalar loss.
        """
        if not isinstance(input, torch.Tensor) or not input.is_floating_point():
            what = f"dtype {input.dtype}" if isinstance(input, torch.Tensor) else type(input).__name__
            raise TypeError(LOGITS_TYPE_MSG.format(what=what))
        if input.ndim != 2 or input.shape[0] < 1 or input.shape[1] < 2:
            raise ValueError(LOGITS_SHAPE_MSG.format(shape=tuple(input.shape)))
        finite = torch.isfinite(input.detach())
        if not bool(finite.all()):
            r, c = (int(i) for i in (~finite).nonzero()[0])
            raise ValueError(LOGITS_NONFINITE_MSG.format(value=input[r, c].item(), row=r, col=c,
                                                         count=int((~finite).sum())))
        k = input.shape[1]
        z = input if input.dtype in (torch.float32, torch.float64) else input.float()
        y = _check_codes(target, "targets", z)
        bad = (y < 0) | (y >= k)
        if bool(bad.any()):
            raise ValueError(TARGET_CODE_MSG.format(k=k, bad=sorted(set(y[bad].tolist()))))
        w = None
        if self.class_weights is not None:
            if self.class_weights.numel() != k:
                raise ValueError(CLASS_WEIGHTS_LENGTH_MSG.format(n=self.class_weights.numel(), k=k,
                                                                 shape=tuple(input.shape)))
            w = self.class_weights.to(device=z.device, dtype=z.dtype)
        ce = F.cross_entropy(z, y, weight=w)
        terms: dict[str, torch.Tensor] = {"ce": ce.detach(), "lam": torch.tensor(self.lam, dtype=torch.float64)}
        if sensitive is None:
            if self.lam > 0:
                raise TypeError(MISSING_SENSITIVE_MSG.format(
                    loss=f"FairnessLossWithCE(lam={self.lam})", hint=", or set lam=0 for the cross entropy alone"))
            self.last_terms = terms
            return ce
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.lam > 0):
            fair = self.fair_loss(z.softmax(dim=1), y, sensitive=sensitive)
        terms["fair"] = fair.detach()
        terms["empty"] = torch.tensor(float(bool(self.fair_loss.last_empty)), dtype=torch.float64)
        self.last_terms = terms
        return ce + self.lam * fair if self.lam > 0 else ce

    def extra_repr(self) -> str:
        return f"lam={self.lam}"


def effective_number_weights(counts: Sequence[float] | torch.Tensor, beta: float = 0.9998) -> torch.Tensor:
    """Class weights by the effective number of samples (Cui et al., "Class-Balanced Loss Based on
    Effective Number of Samples", CVPR 2019), normalised to sum to the number of classes :math:`K`.

    .. math::
        E_{n_c} = \\frac{1 - \\beta^{n_c}}{1 - \\beta}, \\qquad
        w_c = K\\, \\frac{1 / E_{n_c}}{\\sum_{k=1}^{K} 1 / E_{n_k}}

    (the authors' code's ``"ens"`` weighting). :math:`\\beta = 0` gives equal weights 1;
    :math:`\\beta \\to 1` approaches inverse class frequency. The default ``beta=0.9998`` is the value of
    the authors' ISIC example (their README: ``--class_weights ens --ens_beta 0.9998``); their
    command-line default is 0.99. Computed in float64
    (:math:`1 - \\beta^n` as ``-expm1(n log beta)``).

    Args:
        counts: the ``K >= 1`` training-set class counts (> 0; real numbers accepted).
        beta: in ``[0, 1)``. Default ``0.9998``.

    Returns:
        ``(K,)`` float64 tensor summing to ``K``, for :class:`FairnessLossWithCE`'s ``class_weights``.

    Raises:
        ValueError: ``counts`` empty, not 1-D, or holding a value that is not finite and > 0 (named);
            ``beta`` outside ``[0, 1)``.
        TypeError: ``counts`` not numbers.

    Example:
        >>> effective_number_weights([1, 2, 3], beta=0.5)  # 3 (1, 2/3, 4/7) / (47/21)
        tensor([1.3404, 0.8936, 0.7660], dtype=torch.float64)
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) \
            or not 0.0 <= beta < 1.0:
        raise ValueError(BETA_MSG.format(value=beta))
    try:
        n = torch.as_tensor(counts.detach() if isinstance(counts, torch.Tensor) else counts, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(COUNTS_MSG.format(value=counts)) from None
    if n.ndim != 1 or n.numel() == 0 or not bool(torch.isfinite(n).all()) or bool((n <= 0).any()):
        raise ValueError(COUNTS_MSG.format(value=n.tolist()))
    if beta == 0.0:
        inv_e = torch.ones_like(n)
    else:
        inv_e = (1.0 - beta) / -torch.expm1(n * math.log(beta))
    return n.numel() * inv_e / inv_e.sum()


# short aliases, as monai/losses/dice.py
DPL2Loss = DemographicParityL2Loss
DPMILoss = DemographicParityMILoss
EOL2Loss = EqualizedOddsL2Loss
EOMILoss = EqualizedOddsMILoss
FairIoULoss = IoUParityLoss
