"""Gradient-norm clipping for MONAI trainers, between ``backward`` and the optimizer step.

MONAI 1.6.1's ``SupervisedTrainer._iteration`` fires ``IterationEvents.BACKWARD_COMPLETED`` after
``loss.backward()`` and before ``optimizer.step()`` (or ``scaler.step(optimizer)`` with amp), so a
handler on that event clips the gradient the step will use without copying ``_iteration``.
With gradient accumulation the trainer steps only on some iterations; :func:`should_step`
reproduces its rule, and the handler clips only there, i.e. once on the accumulated gradient.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["GradientClipping", "should_step", "MAX_NORM_MSG", "NORM_TYPE_MSG"]

MAX_NORM_MSG = "max_norm must be a positive number, got {value!r}"
NORM_TYPE_MSG = "norm_type must be a positive number or 'inf', got {value!r}"


def should_step(iteration: int, accumulation_steps: int = 1, epoch_length: int | None = None) -> bool:
    """Whether MONAI's ``SupervisedTrainer`` steps the optimizer at ``iteration`` (1-based, global).

    The rule of ``SupervisedTrainer._iteration`` (MONAI 1.6.1): with ``accumulation_steps`` ``a > 1``
    it steps after every ``a``-th iteration of an epoch, and after the last iteration of an epoch
    whose length is known (the flush of a partial accumulation); the count restarts each epoch.
    Without a known epoch length the count runs over the global iteration. With ``a == 1`` it
    steps on every iteration.

    Args:
        iteration: ``engine.state.iteration`` (1-based, counting over epochs).
        accumulation_steps: ``engine.accumulation_steps``.
        epoch_length: ``engine.state.epoch_length`` (``None`` when unknown).
    """
    acc = int(accumulation_steps)
    if acc <= 1:
        return True
    if epoch_length is not None:
        local_iter = (iteration - 1) % epoch_length
        return (local_iter + 1) % acc == 0 or (local_iter + 1) == epoch_length
    return iteration % acc == 0


class GradientClipping:
    """Clip the total gradient norm of a trainer's parameters before each optimizer step.

    Attached to ``IterationEvents.BACKWARD_COMPLETED`` of a MONAI ``SupervisedTrainer``, it calls
    ``torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type)`` after ``backward`` and
    before the optimizer step. It writes the total norm *before* clipping to
    ``engine.state.metrics[metric_name]`` (``"grad_norm"``), which ``StatsHandler`` and
    ``TensorBoardStatsHandler`` log.

    * **Gradient accumulation** (``engine.accumulation_steps > 1``): it clips only on the iterations
      where the trainer steps (:func:`should_step`), so the accumulated gradient is clipped once,
      as a whole; the metric keeps the value of the last step in between.
    * **amp with a GradScaler** (``engine.amp`` and ``engine.scaler``): before clipping (only on a
      stepping iteration) it calls ``engine.scaler.unscale_(engine.optimizer)`` so the norm is that
      of the true gradient; ``scaler.step`` then does not unscale again. Where the scaled gradient
      overflowed, the norm is ``inf``/``nan`` and ``scaler.step`` skips the step as usual.

    Bundle config (``train#handlers``)::

        {"_target_": "fairmonai.handlers.GradientClipping", "max_norm": 1.0}

    A ``StatsHandler`` or ``TensorBoardStatsHandler`` on the trainer then logs ``grad_norm`` with the
    other ``engine.state.metrics`` at each epoch end (the norm of the epoch's last step).

    Args:
        max_norm: largest total gradient norm (> 0).
        norm_type: the p of the p-norm (> 0), or ``"inf"``; default 2.
        parameters: the parameters to clip (a module or an iterable of tensors); default ``None``:
            ``engine.network.parameters()`` at each call.
        error_if_nonfinite: raise when the total norm is ``nan`` or ``inf`` (``clip_grad_norm_``'s
            option; keep ``False`` with a GradScaler, which skips such steps itself).
        foreach: ``clip_grad_norm_``'s ``foreach`` option.
        metric_name: the ``engine.state.metrics`` key of the pre-clip norm (``None``: not recorded).

    Raises:
        ValueError: ``max_norm`` or ``norm_type`` not a positive number (naming it).
        TypeError: ``parameters`` neither a module nor an iterable of tensors.
    """

    def __init__(
        self,
        max_norm: float,
        norm_type: float | str = 2.0,
        parameters: torch.nn.Module | Iterable[torch.Tensor] | None = None,
        *,
        error_if_nonfinite: bool = False,
        foreach: bool | None = None,
        metric_name: str | None = "grad_norm",
    ) -> None:
        try:
            max_norm_f = float(max_norm)
        except (TypeError, ValueError):
            raise ValueError(MAX_NORM_MSG.format(value=max_norm)) from None
        if not (max_norm_f > 0 and math.isfinite(max_norm_f)):
            raise ValueError(MAX_NORM_MSG.format(value=max_norm))
        try:
            norm_type_f = float(norm_type)
        except (TypeError, ValueError):
            raise ValueError(NORM_TYPE_MSG.format(value=norm_type)) from None
        if not norm_type_f > 0:
            raise ValueError(NORM_TYPE_MSG.format(value=norm_type))
        if parameters is None or isinstance(parameters, torch.nn.Module):
            self.parameters = parameters
        else:
            params = list(parameters)  # a generator (``$@network.parameters()``) is read once
            if not all(isinstance(p, torch.Tensor) for p in params):
                raise TypeError("parameters must be a torch.nn.Module or an iterable of tensors")
            self.parameters = params
        self.max_norm = max_norm_f
        self.norm_type = norm_type_f
        self.error_if_nonfinite = error_if_nonfinite
        self.foreach = foreach
        self.metric_name = metric_name

    def attach(self, engine: Engine) -> None:
        """Register on ``IterationEvents.BACKWARD_COMPLETED`` (MONAI workflows register these events)."""
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def _parameters(self, engine: Engine):
        if self.parameters is None:
            return engine.network.parameters()
        if isinstance(self.parameters, torch.nn.Module):
            return self.parameters.parameters()
        return self.parameters

    def __call__(self, engine: Engine) -> None:
        """Clip the gradient when the trainer steps on this iteration."""
        acc = getattr(engine, "accumulation_steps", 1)
        if not should_step(engine.state.iteration, acc, engine.state.epoch_length):
            return
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        total = torch.nn.utils.clip_grad_norm_(
            self._parameters(engine), self.max_norm, norm_type=self.norm_type,
            error_if_nonfinite=self.error_if_nonfinite, foreach=self.foreach,
        )
        if self.metric_name is not None:
            engine.state.metrics[self.metric_name] = float(total)
