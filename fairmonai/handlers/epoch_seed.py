"""Re-seed the random number generators at the start of every epoch, so a resumed run repeats them.

``monai.utils.set_determinism`` in a bundle's ``initialize`` seeds the generators once, at the start of
the process. A run resumed from the checkpoint of epoch ``e`` starts a new process: its generators
restart from the seed while the uninterrupted run's have moved on, so the random augmentations (and
dropout) of epoch ``e + 1`` differ and the two runs drift apart. :class:`EpochSeed` makes every epoch's
random streams a function of ``(seed, epoch)`` only.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.utils import MAX_SEED

__all__ = ["EpochSeed", "epoch_seed"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of ``epoch`` (1-based) of a run seeded with ``seed``: distinct per epoch, below MONAI's ``MAX_SEED``."""
    return (int(seed) * 1_000_003 + int(epoch)) % MAX_SEED


class EpochSeed:
    """On ``EPOCH_STARTED``, seed torch, numpy, python's ``random`` and the dataset's random transforms.

    The seed of epoch ``e`` is :func:`epoch_seed` ``(seed, e)``. ``EPOCH_STARTED`` fires before ignite
    creates the epoch's data-loader iterator, so:

    * with ``num_workers=0`` the random transforms of ``dataset`` (every ``Randomizable`` in it, found
      as ``monai.data.utils.set_rnd`` finds them; pass the dataset or its transform) draw from the
      epoch's seed;
    * with workers, each worker's seed comes from torch's generator in the main process when the
      iterator is created (MONAI's ``DataLoader`` then seeds the worker's transforms from it), which
      this handler has just seeded;
    * dropout and any other torch randomness in the epoch follow the seed as well.

    The data order is not touched: a ``DistributedSampler`` with a seed orders each epoch by
    ``(seed, epoch)`` already (MONAI's trainers call its ``set_epoch``).

    Bundle config (train handlers)::

        {"_target_": "fairmonai.handlers.EpochSeed", "seed": "@seed", "dataset": "@train#dataset"}

    Args:
        seed: the run's seed.
        dataset: the training dataset (or transform) whose random transforms are re-seeded; ``None``
            seeds the global generators only.

    Raises:
        TypeError: ``seed`` is not an integer.
    """

    def __init__(self, seed: int, dataset: Any = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.dataset = dataset

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        s = epoch_seed(self.seed, engine.state.epoch)
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)
        if self.dataset is not None:
            set_rnd(self.dataset, s)
