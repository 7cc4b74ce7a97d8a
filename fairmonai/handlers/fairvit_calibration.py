"""FairViT-lite's epoch step: refit the distance loss's line on the calibration split.

:class:`fairmonai.networks.FairViTLoss` pulls the main head's logits towards a line, fitted by
logistic regression, that separates correctly from wrongly classified cases in the (true-class logit,
competitor logit) plane (:func:`fairmonai.networks.fairvit.fit_margin_hyperplane`). The reference
refits it every epoch; :class:`FairViTCalibration` does so at the start of each epoch from the
eval-mode logits of a calibration split that is held out of the fold's training part
(:func:`fairmonai.networks.fairvit.calibration_datalists`), so the line never sees the held-out fold
or the test cohort. In epochs before the loss's ``start_epoch`` (default: the first) the line is unset
and the distance term is off.

The refit is a function of the weights and the epoch only, so a resumed run refits the same line as
an uninterrupted one; the global random state is restored after the pass (iterating a ``DataLoader``
draws from it), so the training batches do not change either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from ignite.engine import Engine, Events

from ..networks.fairvit import FairViTLoss
from ._eval_pass import eval_pass

__all__ = ["FairViTCalibration"]

logger = logging.getLogger(__name__)


class FairViTCalibration:
    """ignite handler: at every ``EPOCH_STARTED``, ``loss.refit`` on the calibration split's logits.

    Args:
        loss: the trainer's :class:`~fairmonai.networks.FairViTLoss`.
        loader: the calibration split, unshuffled, without augmentation: batches of dicts with
            ``image_key`` ``(B, C, *spatial)`` and ``label_key`` ``(B,)``.
        network: the model (default: the engine's ``network``); run in eval mode (the plain ViT with
            its main head: ``(B, num_classes)`` logits) under ``torch.no_grad()``, mode restored after.
        image_key, label_key: batch keys. Defaults ``"image"``, ``"label"``.

    The fitted line is logged at INFO and kept as ``engine.state.fairvit_hyperplane`` (``None`` while
    the distance term is off).

    Example (bundle config)::

        {"_target_": "fairmonai.handlers.FairViTCalibration", "loss": "@loss",
         "loader": "@train#calibration_loader", "network": "@network"}

    Raises:
        TypeError: ``loss`` is not a :class:`~fairmonai.networks.FairViTLoss`.
        ValueError: the calibration split is empty.
    """

    def __init__(self, loss: FairViTLoss, loader: Iterable, network: torch.nn.Module | None = None, *,
                 image_key: str = "image", label_key: str = "label") -> None:
        if not isinstance(loss, FairViTLoss):
            raise TypeError(f"FairViTCalibration refits a fairmonai.networks.FairViTLoss, got {type(loss).__name__}")
        self.loss, self.loader, self.network = loss, loader, network
        self.image_key, self.label_key = image_key, label_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def logits(self, network: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, C), labels (N,))`` of the calibration split, eval mode, on the CPU."""
        logits, labels = [], []
        with eval_pass(network) as (module, device):
            for batch in self.loader:
                logits.append(module(batch[self.image_key].to(device)).detach().float().cpu())
                labels.append(torch.as_tensor(batch[self.label_key]).reshape(-1).long())
        if not logits:
            raise ValueError("FairViTCalibration: the calibration loader gave no batch (empty calibration split)")
        return torch.cat(logits), torch.cat(labels)

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch - 1  # ignite counts from 1, FairViTLoss from 0
        if epoch < self.loss.start_epoch:
            self.loss.hyperplane = None  # the distance term is off before start_epoch: no pass needed
        else:
            logits, labels = self.logits(self.network if self.network is not None else engine.network)
            self.loss.refit(logits, labels, epoch=epoch)
        engine.state.fairvit_hyperplane = self.loss.hyperplane
        h = self.loss.hyperplane
        logger.info("FairViT epoch %d: %s", engine.state.epoch, "distance loss off" if h is None else
                    f"line {h.theta1:.4g} x + {h.theta2:.4g} y + {h.bias:.4g} = 0 on the calibration split")
