"""The network's weights of the epoch with the best validation value, put back when training completes.

MONAI's :class:`~monai.handlers.CheckpointSaver` keeps a best-on-validation model as a *file*, written
during training; the bundles' ``model.pt`` is written only when training completes
(:class:`~fairmonai.handlers.FinalCheckpointSaver`), and evaluation and inference read only that file.
:class:`BestWeights` makes ``model.pt`` the best epoch's model instead of the last one: it keeps a
copy of the weights of the best epoch so far (by a metric of the validator, e.g. the validation
loss, lowest first) and loads them into the network on ``COMPLETED``, before the final checkpoint
is saved. Its state (best value, epoch and weights) goes into the per-epoch training checkpoint, so
a resumed run selects among all its epochs.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["BestWeights", "BEST_MODES", "UNKNOWN_METRIC_MSG", "MODE_MSG"]

BEST_MODES = ("min", "max")
MODE_MSG = "mode must be one of {allowed}; got {value!r}"
UNKNOWN_METRIC_MSG = (
    "BestWeights: the validator has no metric {name!r} after epoch {epoch}; its metrics are {known} (metric_name "
    "must name a key_val_metric or additional_metrics entry of the validator)"
)


class BestWeights:
    """Keep the weights of the epoch whose validation ``metric_name`` is lowest (``mode="min"``) or highest,
    and load them into ``network`` when the trainer completes.

    Attach it to the trainer *after* the :class:`~monai.handlers.ValidationHandler` (so the validator has
    run when this handler reads its metrics on ``EPOCH_COMPLETED``), before the
    :class:`~fairmonai.handlers.TrainingCheckpoint` (whose per-epoch file then holds this epoch's
    choice; list this handler in its ``save_dict``) and before the
    :class:`~fairmonai.handlers.FinalCheckpointSaver` (which then writes the restored weights).

    * ``EPOCH_COMPLETED``: when the validator ran for this epoch (its ``state.epoch`` equals the
      trainer's; with ``val_interval > 1`` other epochs are skipped), its
      ``state.metrics[metric_name]`` is compared with the best so far; a strictly better value (ties keep
      the earlier epoch; a NaN never wins) replaces the kept copy (on the CPU) of
      ``network.state_dict()``.
    * ``COMPLETED``: the kept weights are loaded into ``network``; the log names the epoch and value.
      Without any validation (fewer epochs than ``val_interval``) the last weights stay, with a warning.

    ``engine.state.best_weights`` is ``{"metric", "mode", "epoch", "value"}`` after each update.

    Bundle config (train handlers, after ValidationHandler)::

        {"_target_": "fairmonai.handlers.BestWeights", "network": "@network", "validator": "@validate#evaluator",
         "metric_name": "val_loss", "mode": "min", "enabled": "@select_best"}

    Args:
        network: the trained network (a ``DistributedDataParallel`` wrapper is fine: the same object saves
            and loads).
        validator: the evaluator the ``ValidationHandler`` runs.
        metric_name: the validator's metric to select on.
        mode: ``"min"`` (default) or ``"max"``.
        enabled: ``False`` attaches nothing, and the last weights are kept (a fine-tuning run that
            reports its final model).

    Raises:
        ValueError: an unknown ``mode``; during the run, ``metric_name`` not among the validator's metrics.
    """

    def __init__(self, network: torch.nn.Module, validator: Engine, metric_name: str = "val_loss", mode: str = "min",
                 enabled: bool = True) -> None:
        if mode not in BEST_MODES:
            raise ValueError(MODE_MSG.format(allowed=list(BEST_MODES), value=mode))
        self.network = network
        self.validator = validator
        self.metric_name = metric_name
        self.mode = mode
        self.enabled = bool(enabled)
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.weights: dict[str, torch.Tensor] | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def epoch_completed(self, engine: Engine) -> None:
        state = self.validator.state
        if getattr(state, "epoch", None) != engine.state.epoch:
            return  # no validation this epoch
        metrics = getattr(state, "metrics", {}) or {}
        if self.metric_name not in metrics:
            raise ValueError(UNKNOWN_METRIC_MSG.format(name=self.metric_name, epoch=engine.state.epoch,
                                                       known=sorted(metrics)))
        value = float(metrics[self.metric_name])
        if self._better(value):
            self.best_value, self.best_epoch = value, int(engine.state.epoch)
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}
        engine.state.best_weights = {"metric": self.metric_name, "mode": self.mode, "epoch": self.best_epoch,
                                     "value": self.best_value}

    def completed(self, engine: Engine) -> None:
        if self.weights is None:
            self.logger.warning("BestWeights: no validation ran in %d epochs: the last weights are kept",
                                engine.state.epoch)
            return
        self.network.load_state_dict(self.weights)
        self.logger.info("BestWeights: restored the weights of epoch %d (%s %s %.6g) after %d epochs",
                         self.best_epoch, self.metric_name, "lowest" if self.mode == "min" else "highest",
                         self.best_value, engine.state.epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = state.get("best_value")
        self.best_epoch = state.get("best_epoch")
        self.weights = state.get("weights")
