"""Per epoch, the share of training batches in which a batch fairness loss met an empty cell.

Hänel et al.'s losses are estimated on each mini-batch; a batch without one of the cells a loss
divides by (a sensitive group for the DP losses, a class x group cell for the EO and IoU losses:
about 23 % of ISIC batches of 256 lack a female or a male melanoma) gives that loss's terms no
estimate, so the loss either leaves them out or, as the authors' code, returns 0 for the batch
(``empty``; :mod:`fairmonai.losses.functional`). How often that happens says how much of the
fine-tuning the fairness term actually steers: :class:`EmptyCellShare` reports it.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import torch
from ignite.engine import Engine, Events

__all__ = ["EmptyCellShare"]


class EmptyCellShare:
    """Log, per training epoch, how many batches had an empty cell in the fairness loss, then reset its counters.

    Reads :attr:`n_batches` and :attr:`n_empty_batches` of ``loss`` (a
    :class:`~fairmonai.losses.BatchFairnessLoss` or :class:`~fairmonai.losses.FairnessLossWithCE`, which
    count every call), summed over the ranks under DDP, at ``EPOCH_COMPLETED``:

    * logs ``epoch E: K of N training batches had an empty cell in the fairness loss (S %)``;
    * sets ``engine.state.metrics[metric_name]`` to ``K / N`` (NaN for an epoch without a call);
    * appends ``epoch, batches, empty_batches, share`` to ``output_dir/filename`` (rank 0; a resumed run
      appends its epochs after the earlier ones);
    * calls ``loss.reset_counters()``, so each row counts one epoch.

    Bundle config (train handlers; disabled for a loss without counters, e.g. the baseline's cross entropy)::

        {"_target_": "fairmonai.handlers.EmptyCellShare", "loss": "@loss", "output_dir": "@output_dir",
         "_disabled_": "$not hasattr(@loss, 'n_empty_batches')"}

    Args:
        loss: the counting loss.
        output_dir: folder of the CSV; ``None`` writes none.
        filename: the CSV's name. Default ``"empty_cells.csv"``.
        metric_name: key in ``engine.state.metrics``. Default ``"empty_cell_share"``.

    Raises:
        TypeError: ``loss`` without the counters.
    """

    def __init__(self, loss, output_dir: str | Path | None = None, filename: str = "empty_cells.csv",
                 metric_name: str = "empty_cell_share") -> None:
        missing = [a for a in ("n_batches", "n_empty_batches", "reset_counters") if not hasattr(loss, a)]
        if missing:
            raise TypeError(f"EmptyCellShare: the loss {type(loss).__name__} does not count empty cells (no {missing})")
        self.loss = loss
        self.path = Path(output_dir) / filename if output_dir is not None else None
        self.metric_name = metric_name
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        import ignite.distributed as idist

        counts = torch.tensor([self.loss.n_batches, self.loss.n_empty_batches], dtype=torch.float64)
        if idist.get_world_size() > 1:
            counts = idist.all_reduce(counts.to(idist.device())).cpu()
        n, k = int(counts[0]), int(counts[1])
        share = k / n if n else math.nan
        engine.state.metrics[self.metric_name] = share
        epoch = engine.state.epoch
        self.logger.info(f"epoch {epoch}: {k} of {n} training batches had an empty cell in the fairness loss"
                         f" ({100 * share:.1f} %)" if n else f"epoch {epoch}: the fairness loss was not called")
        if self.path is not None and idist.get_rank() == 0:
            new = not self.path.is_file()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(["epoch", "batches", "empty_batches", "share"])
                w.writerow([epoch, n, k, share])
        self.loss.reset_counters()
