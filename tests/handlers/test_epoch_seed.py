"""EpochSeed: an epoch's random streams depend on (seed, epoch) only, so a resumed run repeats them."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd, RandScaleIntensityd

from fairmonai.handlers import EpochSeed
from fairmonai.handlers.epoch_seed import epoch_seed


def _dataset():
    data = [{"image": torch.arange(8.0).reshape(1, 2, 2, 2) + i} for i in range(6)]
    transform = Compose([RandFlipd(keys="image", prob=0.5, spatial_axis=0),
                         RandScaleIntensityd(keys="image", factors=0.5, prob=1.0)])
    return Dataset(data, transform)


def _run(start_epoch: int, max_epochs: int, seed: int = 3, num_workers: int = 0):
    """Images seen per epoch, with torch noise (as dropout would draw) appended."""
    ds = _dataset()
    seen: dict[int, list] = {}

    def step(engine, batch):
        seen.setdefault(engine.state.epoch, []).append(
            torch.cat([batch["image"].flatten(), torch.rand(1)]))

    engine = Engine(step)
    EpochSeed(seed, ds).attach(engine)
    loader = DataLoader(ds, batch_size=2, num_workers=num_workers)
    if start_epoch:
        engine.load_state_dict({"epoch": start_epoch, "max_epochs": max_epochs, "epoch_length": len(loader)})
    engine.run(loader, max_epochs=max_epochs)
    return {e: torch.stack(v) for e, v in seen.items()}


def test_resumed_epoch_repeats_the_uninterrupted_one():
    straight = _run(0, 3)
    resumed = _run(2, 3)  # a new "process" that starts at epoch 3
    assert set(resumed) == {3}
    assert torch.equal(straight[3], resumed[3])
    # and the epochs differ from one another (the transforms are random at all)
    assert not torch.equal(straight[1], straight[2])


def test_without_the_handler_a_resumed_epoch_differs():
    def run(start):
        ds = _dataset()
        torch.manual_seed(0)
        ds.transform.set_random_state(0)
        out = []
        engine = Engine(lambda e, b: out.append((e.state.epoch, b["image"].clone())))
        loader = DataLoader(ds, batch_size=2, num_workers=0)
        if start:
            engine.load_state_dict({"epoch": start, "max_epochs": 3, "epoch_length": len(loader)})
        engine.run(loader, max_epochs=3)
        return torch.stack([b for e, b in out if e == 3])

    assert not torch.equal(run(0), run(2))


def test_epoch_seeds_are_distinct_and_valid():
    """The properties the handler needs: every (seed, epoch) of a realistic grid (seeds 0-99, 500 epochs)
    gets its own seed, and each is one numpy and MONAI accept (0 <= s < MAX_SEED)."""
    import numpy as np
    from monai.utils import MAX_SEED

    seeds = [epoch_seed(s, e) for s in range(100) for e in range(1, 501)]
    assert len(set(seeds)) == len(seeds)
    assert min(seeds) >= 0 and max(seeds) < MAX_SEED
    np.random.RandomState(max(seeds))  # accepted


def test_seed_errors():
    with pytest.raises(TypeError, match="seed must be an integer, got '0'"):
        EpochSeed("0")
