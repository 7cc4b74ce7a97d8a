"""Task loss plus a weighted fairness penalty: :math:`\\mathcal{L} = \\mathcal{L}_{task} + \\mu\\,\\mathcal{L}_{MI}`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from ..validation import check_float, look_up_named_option

__all__ = [
    "FairnessRegularizedLoss",
    "TARGET_TRANSFORMS",
    "LOSS_TYPE_MSG",
    "PENALTY_TYPE_MSG",
    "TARGET_TRANSFORM_TYPE_MSG",
    "MISSING_SENSITIVE_LOSS_MSG",
    "REPRESENTATION_MISMATCH_MSG",
    "SENSITIVE_MISMATCH_MSG",
]

#: named values of ``target_transform``.
TARGET_TRANSFORMS = ("auto", "none")

LOSS_TYPE_MSG = "loss must be a torch.nn.Module (e.g. torch.nn.CrossEntropyLoss()); got {type}"
PENALTY_TYPE_MSG = "penalty must be a torch.nn.Module taking forward(v, *, sensitive) or None; got {type}"
TARGET_TRANSFORM_TYPE_MSG = "target_transform must be 'auto', 'none' or a callable; got {value!r}"
MISSING_SENSITIVE_LOSS_MSG = (
    "FairnessRegularizedLoss with penalty {penalty} and mu={mu} needs the keyword argument sensitive= "
    "(the (B,) group codes); got None. Train with fairmonai.engines.FairSupervisedTrainer, or set mu=0 "
    "or penalty=None for the plain loss"
)
REPRESENTATION_MISMATCH_MSG = (
    "batch sizes differ: input has shape {input_shape} but representation has shape {rep_shape}"
)
SENSITIVE_MISMATCH_MSG = "batch sizes differ: input has shape {input_shape} but sensitive has shape {s_shape}"


def _as_term(value: torch.Tensor | float) -> torch.Tensor:
    """A logged loss term as a detached tensor: a tensor is detached (its device and dtype kept), a Python
    number becomes a 0-d float64 CPU tensor (``float()`` gives the number back exactly). No host sync."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    return torch.tensor(value, dtype=torch.float64)


def _auto_target(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(B, 1)`` class indices for ``(B, C>1)`` scores become ``(B,)`` long; anything else is unchanged."""
    if (
        target.ndim == input.ndim
        and target.ndim >= 2
        and target.shape[1] == 1
        and input.shape[1] > 1
    ):
        target = target.squeeze(1)
    if target.ndim == input.ndim - 1 and target.dtype != torch.long and not target.dtype.is_complex:
        target = target.long()
    return target


class FairnessRegularizedLoss(_Loss):
    """Task loss plus ``mu`` times a fairness penalty on the output or a representation.

    .. math::
        \\mathcal{L} = \\mathcal{L}_{task}(\\hat y, y) + \\mu\\, P(v, u), \\quad
        v = \\text{representation if given, else } \\hat y

    the FaMI paper's total loss (:math:`\\mathcal{L}_{CE} + \\mu \\mathcal{L}_{MI}`, :math:`\\mu = 0.5`)
    with :math:`P` one of :class:`~fairmonai.losses.FaMIPenalty`,
    :class:`~fairmonai.losses.MIGEPenalty`, :class:`~fairmonai.losses.MINEPenalty` (any module with
    ``forward(v, *, sensitive)`` returning a scalar). ``penalty=None`` or ``mu=0`` gives the plain
    task loss (the penalty is then not called, and ``sensitive`` may be omitted), so the baseline and
    the method share one code path.

    Shapes: ``input`` ``(B, C)`` logits (MONAI notation ``BC``); ``target`` as the task loss wants it.
    With ``target_transform="auto"`` (default) a ``(B, 1)`` class-index target for a ``(B, C > 1)``
    input (MONAI classification bundles) is squeezed to ``(B,)`` and cast to ``long``, a ``(B,)``
    float target for such an input is cast to ``long``, everything else (e.g. one-hot ``(B, C)``
    probabilities, or ``(B, 1)`` targets of a ``(B, 1)`` BCE input) passes unchanged. ``"none"``
    passes the target unchanged; a callable is applied as ``target_transform(input, target)``.

    Reduction: the task loss's own. A non-scalar task loss (``reduction="none"``) gets the scalar
    penalty term added to every element, so the mean that ``SupervisedTrainer`` takes is
    ``mean(task) + mu * P``.

    For logging, :attr:`last_terms` holds after each call, as detached 0-d tensors (``forward``
    converts nothing to a Python number, so it adds no host-device synchronisation): ``task_loss``
    (the mean task loss, on the input's device), ``penalty`` (the surrogate's value: 0 for
    FaMI/MIGE, the DV estimate for MINE; on the device), ``mu`` and the penalty's
    ``last_diagnostic`` entries (``msq_sfd`` or ``dv``, ...; for FaMI and MIGE also
    ``n_fallback``/``n_fallback_groups``, the samples and groups whose SFD was set to 0 because a
    fit was undefined, which :class:`fairmonai.handlers.PenaltyCurveLogger` sums per epoch); Python
    numbers (``mu``, and the entries the penalty gives as numbers) become float64 CPU tensors, so
    ``float()`` returns them unchanged. When the penalty is not computed (``mu = 0`` or no
    penalty) only ``task_loss`` and ``mu`` are set. :class:`fairmonai.engines.FairSupervisedTrainer`
    publishes them each iteration as ``engine.state.loss_terms``.

    A penalty with parameters (MINE) is a submodule, so ``loss.parameters()`` lists them: the
    bundle's optimizer must include them.

    Args:
        loss: the task loss module, e.g. ``torch.nn.CrossEntropyLoss()``.
        penalty: the fairness penalty module, or ``None``. Default ``None``.
        mu: weight ``>= 0`` of the penalty. Default ``0.5`` (the FaMI paper's).
        target_transform: ``"auto"`` (default), ``"none"`` or a callable ``(input, target) -> target``.

    Raises:
        TypeError: ``loss`` or ``penalty`` of the wrong type; ``mu`` not a number; a bad
            ``target_transform`` type; in ``forward``, ``sensitive`` missing while the penalty is
            active (the message names ``sensitive``).
        ValueError: ``mu`` negative or not finite; unknown ``target_transform`` string; in
            ``forward``, batch sizes of ``input`` and ``sensitive`` / ``representation`` differ (both
            shapes named).

    Example:
        >>> from fairmonai.losses import FaMIPenalty
        >>> loss = FairnessRegularizedLoss(torch.nn.CrossEntropyLoss(), FaMIPenalty(), mu=0.5)
        >>> logits = torch.randn(8, 2, requires_grad=True)
        >>> value = loss(logits, torch.randint(0, 2, (8, 1)), sensitive=torch.arange(8) % 2)
        >>> value.backward()
        >>> sorted(loss.last_terms)[:3]
        ['msq_sfd', 'mu', 'n_excluded']
    """

    def __init__(
        self,
        loss: nn.Module,
        penalty: nn.Module | None = None,
        mu: float = 0.5,
        target_transform: str | Callable = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise TypeError(LOSS_TYPE_MSG.format(type=type(loss).__name__))
        if penalty is not None and not isinstance(penalty, nn.Module):
            raise TypeError(PENALTY_TYPE_MSG.format(type=type(penalty).__name__))
        self.mu = check_float(mu, "mu")
        if isinstance(target_transform, str):
            target_transform = look_up_named_option(target_transform, TARGET_TRANSFORMS, "target_transform")
        elif not callable(target_transform):
            raise TypeError(TARGET_TRANSFORM_TYPE_MSG.format(value=target_transform))
        self.loss = loss
        self.penalty = penalty
        self.target_transform = target_transform
        self.last_terms: dict[str, torch.Tensor] = {}

    @property
    def active(self) -> bool:
        """Whether the penalty is computed (a penalty is set and ``mu > 0``)."""
        return self.penalty is not None and self.mu > 0

    def _target(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.target_transform == "none":
            return target
        if self.target_transform == "auto":
            return _auto_target(input, target)
        return self.target_transform(input, target)

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        *,
        sensitive: torch.Tensor | None = None,
        representation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Task loss on ``(input, target)`` plus ``mu * penalty(representation or input, sensitive=...)``.

        Args:
            input: ``(B, C)`` network output (logits).
            target: task-loss target, ``(B,)`` or ``(B, 1)`` class indices, or as the loss wants it.
            sensitive: ``(B,)`` or ``(B, 1)`` integer group codes (``-1`` = excluded); keyword only,
                required when the penalty is active.
            representation: optional ``(B, D)`` features the penalty sees instead of ``input``
                (must share ``input``'s graph for the penalty to reach the network).
        """
        if sensitive is not None:
            n_s = sensitive.shape[0] if hasattr(sensitive, "shape") and len(sensitive.shape) else len(sensitive)
            if n_s != input.shape[0]:
                s_shape = tuple(sensitive.shape) if hasattr(sensitive, "shape") else (len(sensitive),)
                raise ValueError(SENSITIVE_MISMATCH_MSG.format(input_shape=tuple(input.shape), s_shape=s_shape))
        if representation is not None and (representation.ndim == 0 or representation.shape[0] != input.shape[0]):
            raise ValueError(REPRESENTATION_MISMATCH_MSG.format(input_shape=tuple(input.shape),
                                                                rep_shape=tuple(representation.shape)))
        task = self.loss(input, self._target(input, target))
        terms: dict[str, torch.Tensor] = {"task_loss": task.detach().mean(), "mu": _as_term(self.mu)}
        if not self.active:
            self.last_terms = terms
            return task
        if sensitive is None:
            raise TypeError(MISSING_SENSITIVE_LOSS_MSG.format(penalty=type(self.penalty).__name__, mu=self.mu))
        v = representation if representation is not None else input
        pen = self.penalty(v, sensitive=sensitive)
        terms["penalty"] = pen.detach()
        terms.update({str(k): _as_term(x) for k, x in (getattr(self.penalty, "last_diagnostic", {}) or {}).items()})
        self.last_terms = terms
        return task + self.mu * pen

    def extra_repr(self) -> str:
        return f"mu={self.mu}, target_transform={self.target_transform!r}"
