"""The side pass a handler makes over a loader between training steps (FairBatch's per-cell losses,
FairViT's calibration logits): the network in eval mode, no gradients, the training's random state
untouched, the previous mode restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["eval_pass", "unwrap_with_device"]


def unwrap_with_device(network: torch.nn.Module, device: torch.device | str | None = None
                       ) -> tuple[torch.nn.Module, torch.device]:
    """``(module, device)``: ``network`` without a ``DistributedDataParallel`` wrapper, and ``device`` or, by
    default, the device of the module's first parameter (the CPU without one)."""
    module = network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network
    if device is None:
        first = next(module.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    return module, torch.device(device)


@contextmanager
def eval_pass(network: torch.nn.Module, device: torch.device | str | None = None
              ) -> Iterator[tuple[torch.nn.Module, torch.device]]:
    """Context for one pass of ``network`` over some batches: yields ``(module, device)``.

    ``module`` is ``network`` without a ``DistributedDataParallel`` wrapper (each rank passes over its
    own batches; nothing is synchronised), switched to eval mode under ``torch.no_grad()``; ``device``
    is ``device`` or, by default, the device of the module's first parameter (the CPU without one).
    On exit, also after an error, the module's previous mode is restored, and the global CPU random
    state and that of ``device`` (when CUDA) are those of before: iterating a ``DataLoader`` draws its
    base seed from them, so a training run is the same whether a handler makes the pass or not.

    Example::

        with eval_pass(net) as (module, device):
            for batch in loader:
                logits = module(batch["image"].to(device))
    """
    module, device = unwrap_with_device(network, device)
    was_training = module.training
    module.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            yield module, device
    finally:
        module.train(was_training)
