"""Per-epoch training checkpoints that hold the trainer itself, and resuming from them.

A bundle cannot list ``"trainer": "@train#trainer"`` in the save dict of a handler that is itself
an argument of that trainer (the config parser reports a circular reference). This handler adds the
engine it is attached to as ``"trainer"`` at :meth:`attach` time, then attaches MONAI's own
:class:`~monai.handlers.CheckpointLoader` (when resuming) and :class:`~monai.handlers.CheckpointSaver`
(every ``save_interval`` epochs, keeping ``n_saved`` files named ``<file_prefix>_checkpoint_epoch=N.pt``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ignite.engine import Engine
from monai.handlers import CheckpointLoader, CheckpointSaver

from ..checkpoints import latest_checkpoint

__all__ = ["TrainingCheckpoint"]


class TrainingCheckpoint:
    """Save model, optimiser, loss and trainer state every epoch; optionally resume from the newest file.

    Args:
        save_dir: checkpoint folder.
        save_dict: objects to save besides the trainer, e.g. ``{"model": net, "optimizer": opt,
            "loss": loss}`` (the loss carries MINE's statistics network and moving average).
        resume: load the newest checkpoint of ``save_dir`` before training starts; the trainer
            then continues after the saved epoch. ``FileNotFoundError`` if there is none.
        save: write checkpoints (``False`` on ranks other than 0; loading happens on every rank).
        file_prefix: file name prefix (default ``"checkpoint"``).
        save_interval: epochs between checkpoints (default 1).
        n_saved: files kept (default 1: the newest).
        map_location: ``map_location`` of ``torch.load`` when resuming.

    Raises:
        ValueError: ``save_dict`` already has a ``"trainer"`` entry.
    """

    def __init__(self, save_dir: str | os.PathLike, save_dict: Mapping, *, resume: bool = False, save: bool = True,
                 file_prefix: str = "checkpoint", save_interval: int = 1, n_saved: int = 1, map_location=None) -> None:
        if "trainer" in save_dict:
            raise ValueError("save_dict must not hold 'trainer': the engine the handler is attached to is added")
        self.save_dir = str(save_dir)
        self.save_dict = dict(save_dict)
        self.resume = resume
        self.save = save
        self.file_prefix = file_prefix
        self.save_interval = save_interval
        self.n_saved = n_saved
        self.map_location = map_location
        self.loaded_from: str | None = None

    def attach(self, engine: Engine) -> None:
        objects = {**self.save_dict, "trainer": engine}
        if self.resume:
            self.loaded_from = latest_checkpoint(self.save_dir, self.file_prefix)
            CheckpointLoader(load_path=self.loaded_from, load_dict=objects, map_location=self.map_location).attach(engine)
        if self.save:
            CheckpointSaver(save_dir=self.save_dir, save_dict=objects, file_prefix=self.file_prefix, epoch_level=True,
                            save_interval=self.save_interval, n_saved=self.n_saved).attach(engine)
