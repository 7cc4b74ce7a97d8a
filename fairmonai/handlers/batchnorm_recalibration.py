"""Re-estimate the BatchNorm running statistics of the current weights before they are used in eval mode.

In training mode BatchNorm normalises with the batch's own statistics and keeps an exponential
moving average (momentum 0.1) for eval mode. When the weights move fast (a large learning rate with
momentum, few steps per epoch) the average mixes activations of older weights and no longer matches
the current network: eval-mode logits shift by a constant, the model keeps its ranking (AUC) but
predicts one class at the 0.5 threshold, and every hard-prediction fairness index (EOM, EOdd, parity
gaps) is then computed on near-constant predictions (the OCT bundle's docs/experiments.md describes
the demo model that did this).

The remedy here is the "precise BatchNorm" of Wu & Johnson (2021): with the weights fixed, pass the
training data through the network in training mode under ``torch.no_grad()`` with a cumulative
average (``momentum=None``), via :func:`torch.optim.swa_utils.update_bn`. Each running mean becomes
the mean of the batch means and each running variance the mean of the batch (unbiased) variances,
i.e. the statistics the network was trained with. The weights, the gradients and the training
trajectory are untouched (running statistics are not used by a training-mode forward), the global
random state is restored afterwards, and only the buffers change.

Not in the paper (FaMI trains 150 epochs at lr 1e-4 without momentum, where the moving average keeps
up with the weights); it is an opt-in switch of the bundles (``bn_recalibration``).

Reference:
    Y. Wu, J. Johnson, "Rethinking 'Batch' in BatchNorm", arXiv:2105.07576, 2021 (Section 3, PreciseBN).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from torch.optim.swa_utils import update_bn

from ._eval_pass import unwrap_with_device

__all__ = ["BatchNormRecalibration", "recalibrate_batchnorm", "NOT_A_TENSOR_MSG"]

NOT_A_TENSOR_MSG = "BatchNormRecalibration: batch[{key!r}] must be a torch.Tensor; got {type}"


def _batchnorm_layers(network: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _average_across_ranks(layers) -> None:
    """Mean of every running statistic over the ranks (each rank saw its shard of the data)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    world = dist.get_world_size()
    for m in layers:
        for buf in (m.running_mean, m.running_var):
            if buf is not None:
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(world)


def recalibrate_batchnorm(network: torch.nn.Module, batches: Iterable, *, image_key: str = "image",
                          device: torch.device | str | None = None) -> int:
    """Recompute the running statistics of every BatchNorm layer of ``network`` on ``batches``.

    Args:
        network: the model (a ``DistributedDataParallel`` wrapper is unwrapped: the statistics are
            computed on each rank's batches and then averaged over the ranks).
        batches: an iterable of dict batches (``batch[image_key]`` is the ``(B, C, *spatial)``
            input) or of input tensors.
        image_key: the input's key in a dict batch.
        device: where to move each input (default: the device of the network's first parameter).

    Returns:
        The number of BatchNorm layers recalibrated (0: nothing to do, ``batches`` not read).

    The global CPU and CUDA random states are the same after the call as before it (iterating a
    ``DataLoader`` draws its base seed from them).
    """
    module, device = unwrap_with_device(network, device)
    layers = _batchnorm_layers(module)
    if not layers:
        return 0

    def inputs():
        for batch in batches:
            x = batch[image_key] if isinstance(batch, dict) else batch
            if not isinstance(x, torch.Tensor):
                raise TypeError(NOT_A_TENSOR_MSG.format(key=image_key, type=type(x).__name__))
            yield x.to(device)

    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        update_bn(inputs(), module)
    _average_across_ranks(layers)
    return len(layers)


class BatchNormRecalibration:
    """ignite handler: :func:`recalibrate_batchnorm` on the training data after every epoch.

    Attach it *before* the validation handler and the checkpoint savers (handlers of one event run in
    the order they were attached), so validation, the per-epoch checkpoint and the final model all
    see the recalibrated statistics. It runs at ``EPOCH_COMPLETED`` (every ``interval`` epochs) and
    always at ``COMPLETED`` unless the last epoch was just done.

    Args:
        loader: the training data, e.g. ``@train#dataloader`` (the same shard per rank under DDP;
            iterating it again does not change training: the sampler is seeded per epoch and the
            random state is restored).
        network: the model (default: the engine's ``network``).
        image_key: the input's key in a batch. Default ``"image"``.
        interval: epochs between recalibrations. Default 1.

    Example (bundle config, before ``ValidationHandler``)::

        {"_target_": "fairmonai.handlers.BatchNormRecalibration", "loader": "@train#dataloader",
         "_disabled_": "$not @bn_recalibration"}
    """

    def __init__(self, loader: Iterable, network: torch.nn.Module | None = None, *, image_key: str = "image",
                 interval: int = 1) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be an int >= 1; got {interval!r}")
        self.loader = loader
        self.network = network
        self.image_key = image_key
        self.interval = interval
        self._done_at: int | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self._at_completion)

    def _at_completion(self, engine: Engine) -> None:
        if self._done_at != engine.state.epoch:
            self(engine)

    def __call__(self, engine: Engine) -> None:
        network = self.network if self.network is not None else engine.network
        n = recalibrate_batchnorm(network, self.loader, image_key=self.image_key)
        self._done_at = engine.state.epoch
        if n:
            engine.logger.info(f"BatchNorm statistics of {n} layers recalibrated on the training data "
                               f"(epoch {engine.state.epoch})")
