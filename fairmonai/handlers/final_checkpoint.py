"""The final model file, written only when training completes.

MONAI's :class:`~monai.handlers.CheckpointSaver` with ``save_final=True`` writes ``final_filename``
on ``COMPLETED`` *and* on ``EXCEPTION_RAISED``: a run that stops on an error (a NaN loss, a bad
batch, running out of memory) leaves a ``model.pt`` of a half-trained network under the name the
evaluation and inference configs load, and nothing in the file says so. Here the final file is the
model of a finished run only; an interrupted run is continued from the per-epoch
:class:`~fairmonai.handlers.TrainingCheckpoint` instead.
"""

from __future__ import annotations

from ignite.engine import Engine
from monai.handlers import CheckpointSaver

__all__ = ["FinalCheckpointSaver", "NOT_WRITTEN_MSG"]

NOT_WRITTEN_MSG = (
    "training stopped at epoch {epoch}, iteration {iteration} on {error}: the final checkpoint {name} was NOT "
    "written (resume from the per-epoch training checkpoint in {folder})"
)


class FinalCheckpointSaver(CheckpointSaver):
    """:class:`~monai.handlers.CheckpointSaver` with ``save_final=True`` that does not save on an exception.

    The arguments are CheckpointSaver's; ``save_final`` is always on. On ``EXCEPTION_RAISED`` it logs
    a warning naming the epoch, the iteration and the error, writes nothing, and re-raises; any final
    file already in ``save_dir`` is left untouched (it belongs to an earlier, finished run).

    Example (bundle config)::

        {"_target_": "fairmonai.handlers.FinalCheckpointSaver", "save_dir": "@ckpt_dir",
         "save_dict": {"model": "@network"}, "final_filename": "model.pt"}
    """

    def __init__(self, save_dir: str, save_dict: dict, **kwargs) -> None:
        kwargs.pop("save_final", None)
        super().__init__(save_dir, save_dict, save_final=True, **kwargs)

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        if e is getattr(self, "_reported", None):  # ignite fires the event again for the same error
            raise e
        self._reported = e
        name = self._final_filename or "final checkpoint"
        self.logger.warning(NOT_WRITTEN_MSG.format(epoch=engine.state.epoch, iteration=engine.state.iteration,
                                                   error=type(e).__name__, name=name, folder=self.save_dir))
        raise e
