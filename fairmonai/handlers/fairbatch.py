"""FairBatch's epoch step: per-cell mean losses measured on the training set, handed to the sampler.

Y. Roh et al., "FairBatch: Batch Selection for Model Fairness", ICLR 2021. The batch sampler
(:class:`fairmonai.data.FairBatchSampler`) holds :math:`\\lambda`; :class:`FairBatchUpdate`, attached to
the trainer, measures after every epoch the mean per-case loss of every (label, group) cell,

.. math::

    \\bar\\ell_{y,g} = \\frac{1}{N_{y,g}} \\sum_{i:\\, y_i = y,\\, z_i = g} \\mathrm{CE}(f(x_i), t_i),
    \\qquad t_i = y_i \\text{ (eqodds, eqopp)}, \\quad t_i = \\text{positive label (dp)}

and calls :meth:`~fairmonai.data.FairBatchSampler.update`, which moves :math:`\\lambda` for the next
epoch's batches. Cases with group -1 are in no cell and left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import ignite.distributed as idist
import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.engines.utils import default_prepare_batch

from ..attribute_codes import EXCLUDED_CODE
from ..data.fairbatch import FairBatchSampler
from ._eval_pass import eval_pass

__all__ = ["FairBatchUpdate", "SOURCES", "UNSEEN_CELL_MSG", "UNKNOWN_VALUE_MSG"]

#: where the cell losses come from.
SOURCES = ("eval", "running")

# Messages (tests compare the text).
UNSEEN_CELL_MSG = (
    "FairBatchUpdate: epoch {epoch}: no case of populated cell(s) {cells} (label, group) was {where}; lambda "
    "update skipped, lambda stays {lam}"
)
UNKNOWN_VALUE_MSG = (
    "FairBatchUpdate: {what} {values} of the {where} are not among the sampler's {what}s {known}; the loader must "
    "read the same training data as the sampler"
)


def _column(data, key: str, where: str) -> torch.Tensor:
    """``data[key]`` of a collated dict, or stacked from a decollated list of dicts, as a tensor."""
    if isinstance(data, Mapping):
        if key not in data:
            raise KeyError(f"FairBatchUpdate: the {where} has no key '{key}' (keys: {sorted(map(str, data))})")
        value = data[key]
        return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, Mapping) for d in data):
        missing = [i for i, d in enumerate(data) if key not in d]
        if missing:
            raise KeyError(f"FairBatchUpdate: sample {missing[0]} of the {where} has no key '{key}' "
                           f"(keys: {sorted(map(str, data[missing[0]]))})")
        return torch.stack([torch.as_tensor(d[key]) for d in data])
    raise TypeError(f"FairBatchUpdate expects the {where} as a dict or a list of dicts, got {type(data).__name__}")


def _cross_entropy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(pred, target, reduction="none")


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else x  # MetaTensor -> Tensor


class FairBatchUpdate:
    """Measure the per-cell mean loss after every epoch and take FairBatch's lambda step.

    Attach it to the **trainer** whose loader draws from ``sampler`` (``train#handlers``). It registers:

    * ``STARTED``: ``engine.state.fairbatch_lambda`` = the current lambda (nested list, labels x groups);
    * ``EPOCH_STARTED``: ``sampler.set_epoch(engine.state.epoch)`` (ignite creates the epoch's loader
      iterator after it), so epoch ``e``'s batches depend on ``(seed, e)`` and lambda only;
    * ``ITERATION_COMPLETED`` (``source="running"`` only): the per-case losses of the iteration's
      predictions, ``output_transform(engine.state.output)`` = ``(pred, label)`` (logits ``BC``),
      with the groups from ``engine.state.batch[group_key]``; predictions made before that iteration's
      optimiser step, with training-mode dropout and augmentation, on the FairBatch-drawn cases only
      (a cell drawn in no batch has no loss that epoch);
    * ``EPOCH_COMPLETED``: with ``source="eval"`` (default, the reference's choice) a pass over
      ``loader`` (the training set, unshuffled, without augmentation) under ``torch.no_grad()`` with
      ``network.eval()``, the network's previous mode restored afterwards even on error; the per-cell
      loss sums and counts are summed over ranks (``ignite.distributed.all_reduce``; each rank passes
      over its own share of the training set, e.g. a ``DistributedSampler``, whose padding repeats a few
      cases), so every rank takes the same step; then ``sampler.update``. The result is logged and put
      on ``engine.state.fairbatch_lambda`` and ``engine.state.fairbatch_cell_loss`` (nested lists,
      ``sampler.label_values`` x ``sampler.group_values``; NaN for an unseen cell).

    A populated cell with no measured case skips the step with a warning (:data:`UNSEEN_CELL_MSG`).

    The loss per case is ``loss_fn(pred, target)`` with ``pred`` the logits ``(B, C)`` and ``target``
    the class indices ``(B,)``: the true label for eqodds and eqopp, ``sampler.positive_label`` for dp;
    default cross-entropy (``reduction="none"``), computed in float32.

    Lambda is the sampler's state: put the sampler in the checkpoint (``"fairbatch":
    "@train#batch_sampler"`` in a ``CheckpointSaver``/``CheckpointLoader`` save dict); its
    ``state_dict``/``load_state_dict`` carry lambda and the epoch.

    Bundle config (``train#handlers``)::

        {"_target_": "fairmonai.handlers.FairBatchUpdate", "sampler": "@train#batch_sampler",
         "loader": "@train#eval_loader", "group_key": "race_code"}

    Args:
        sampler: the trainer's :class:`~fairmonai.data.FairBatchSampler`.
        group_key: the batch key of the group code (e.g. ``"race_code"``).
        loader: the training set for the eval pass (required with ``source="eval"``).
        network: the network; ``None``: ``engine.network`` (MONAI trainers).
        source: ``"eval"`` (default) or ``"running"``.
        label_key: the batch key of the class index (default ``"label"``).
        loss_fn: per-case loss ``(pred (B, C), target (B,)) -> (B,)``; default cross-entropy.
        prepare_batch: MONAI's ``prepare_batch`` for the eval pass: ``(batch, device, non_blocking)`` ->
            ``(inputs, targets)`` or ``(inputs, targets, args, kwargs)``, the extras passed to the network
            (default ``monai.engines.utils.default_prepare_batch``, keys ``image``/``label``).
        device: device of the eval pass; ``None``: ``engine.state.device``, else the network's.
        output_transform: ``engine.state.output`` -> ``(pred, label)`` for ``source="running"``; default
            reads ``"pred"``/``"label"`` of the (collated or decollated) output.

    Raises:
        TypeError: ``sampler`` is not a ``FairBatchSampler``.
        ValueError: ``source`` not one of :data:`SOURCES`, or ``source="eval"`` without ``loader``.
    """

    def __init__(self, sampler: FairBatchSampler, *, group_key: str, loader=None, network=None,
                 source: str = "eval", label_key: str = "label", loss_fn: Callable | None = None,
                 prepare_batch: Callable = default_prepare_batch, device=None,
                 output_transform: Callable | None = None) -> None:
        if not isinstance(sampler, FairBatchSampler):
            raise TypeError(f"sampler must be a fairmonai.data.FairBatchSampler, got {type(sampler).__name__}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if source == "eval" and loader is None:
            raise ValueError("FairBatchUpdate: source='eval' needs loader (the training set, unshuffled)")
        self.sampler = sampler
        self.group_key = group_key
        self.loader = loader
        self.network = network
        self.source = source
        self.label_key = label_key
        self.loss_fn = loss_fn
        self.prepare_batch = prepare_batch
        self.device = device
        self.output_transform = output_transform
        self.logger = logging.getLogger(__name__)
        shape = (len(sampler.label_values), len(sampler.group_values))
        self._sums = torch.zeros(shape, dtype=torch.float64)
        self._counts = torch.zeros(shape, dtype=torch.float64)

    # ---- attach

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._publish)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        if self.source == "running":
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect_running)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _publish(self, engine: Engine) -> None:
        engine.state.fairbatch_lambda = self.sampler.lambdas.tolist()

    def _epoch_started(self, engine: Engine) -> None:
        self.sampler.set_epoch(engine.state.epoch)
        self._reset()

    def _reset(self) -> None:
        self._sums.zero_()
        self._counts.zero_()

    # ---- accumulation

    def _index(self, values: torch.Tensor, known: Sequence[int], what: str, where: str) -> torch.Tensor:
        """Positions of ``values`` in ``known`` (-1 for the excluded code)."""
        values = values.detach().cpu().reshape(-1).long()
        table = {v: i for i, v in enumerate(known)}
        if what == "group":
            table[EXCLUDED_CODE] = -1
        unknown = sorted({int(v) for v in values.tolist()} - set(table))
        if unknown:
            raise ValueError(UNKNOWN_VALUE_MSG.format(what=what, values=unknown, where=where, known=list(known)))
        return torch.tensor([table[int(v)] for v in values.tolist()], dtype=torch.long)

    def add(self, pred: torch.Tensor, labels, groups, where: str = "batch") -> None:
        """Add the per-case losses of ``pred`` (logits ``(B, C)``) to the cell sums.

        Raises:
            ValueError: sizes differ, or a label or group not known to the sampler.
        """
        pred = _plain(pred).detach()
        labels = _plain(torch.as_tensor(labels)).reshape(-1)
        groups = _plain(torch.as_tensor(groups)).reshape(-1)
        if pred.ndim != 2 or not pred.shape[0] == labels.numel() == groups.numel():
            raise ValueError(f"FairBatchUpdate: pred must be logits (B, C) with one label and group per case; got "
                             f"pred {tuple(pred.shape)}, {labels.numel()} labels, {groups.numel()} groups")
        li = self._index(labels, self.sampler.label_values, "label", where)
        gi = self._index(groups, self.sampler.group_values, "group", where)
        if self.sampler.fairness == "dp":
            target = torch.full((pred.shape[0],), self.sampler.positive_label, dtype=torch.long, device=pred.device)
        else:
            target = labels.to(pred.device).long()
        with torch.no_grad():
            loss = (self.loss_fn or _cross_entropy)(pred.float(), target)
        loss = loss.detach().reshape(-1).cpu().double()
        if loss.numel() != pred.shape[0]:
            raise ValueError(f"FairBatchUpdate: loss_fn must give one loss per case ({pred.shape[0]}), got shape "
                             f"{tuple(loss.shape)}")
        keep = gi >= 0
        ng = len(self.sampler.group_values)
        flat = li[keep] * ng + gi[keep]
        size = self._sums.numel()
        self._sums += torch.bincount(flat, weights=loss[keep], minlength=size).reshape(self._sums.shape)
        self._counts += torch.bincount(flat, minlength=size).double().reshape(self._counts.shape)

    def _collect_running(self, engine: Engine) -> None:
        output = engine.state.output
        if self.output_transform is not None:
            pred, label = self.output_transform(output)
            if isinstance(pred, (list, tuple)):
                pred, label = torch.stack(list(pred)), torch.stack([torch.as_tensor(x) for x in label])
        else:
            pred, label = _column(output, "pred", "output"), _column(output, "label", "output")
        groups = _column(engine.state.batch, self.group_key, "training batch")
        self.add(pred, label, groups, "training batch")

    def evaluate(self, engine: Engine | None = None) -> None:
        """The eval pass over ``loader`` (:func:`~fairmonai.handlers._eval_pass.eval_pass`: eval mode, no gradients,
        random state and previous mode restored)."""
        net = self.network if self.network is not None else getattr(engine, "network", None)
        if net is None:
            raise ValueError("FairBatchUpdate: no network (pass network=, or attach to a MONAI trainer)")
        device = self.device or getattr(getattr(engine, "state", None), "device", None)
        with eval_pass(net, device) as (module, device):
            for batch in self.loader:
                prepared = self.prepare_batch(batch, device, False)
                inputs, args, kwargs = prepared[0], (), {}
                if len(prepared) == 4:
                    args, kwargs = tuple(prepared[2]), dict(prepared[3])
                pred = module(inputs, *args, **kwargs)
                labels = _column(batch, self.label_key, "eval batch")
                self.add(pred, labels, _column(batch, self.group_key, "eval batch"), "eval batch")

    # ---- the step

    def cell_losses(self) -> np.ndarray:
        """The mean loss per cell from this rank's sums and counts, summed over ranks; NaN where no case was seen."""
        stats = torch.stack([self._sums, self._counts])
        if idist.get_world_size() > 1:
            stats = idist.all_reduce(stats)
        sums, counts = stats[0].numpy(), stats[1].numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def __call__(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: measure (eval pass or running sums), step lambda, publish and log."""
        epoch = int(engine.state.epoch)
        if self.source == "eval":
            self._reset()
            self.evaluate(engine)
        losses = self.cell_losses()
        engine.state.fairbatch_cell_loss = losses.tolist()
        unseen = (self.sampler.cell_sizes > 0) & ~np.isfinite(losses)
        if unseen.any():
            cells = [(self.sampler.label_values[i], self.sampler.group_values[j]) for i, j in zip(*np.nonzero(unseen))]
            self.logger.warning(UNSEEN_CELL_MSG.format(
                epoch=epoch, cells=cells, where="evaluated" if self.source == "eval" else "drawn this epoch",
                lam=np.round(self.sampler.lambdas, 4).tolist()))
            info = None
        else:
            info = self.sampler.update(losses)
        lam = self.sampler.lambdas
        engine.state.fairbatch_lambda = lam.tolist()
        if info is not None:
            moved = ("no gap, unchanged" if info["label"] is None else
                     f"label {info['label']}: group {info['gained']} +{self.sampler.alpha:g}, "
                     f"group {info['lost']} -{self.sampler.alpha:g}")
            self.logger.info("FairBatch: epoch %d: %s; cell loss %s; lambda %s (labels %s x groups %s)", epoch, moved,
                             np.round(losses, 4).tolist(), np.round(lam, 4).tolist(), self.sampler.label_values,
                             self.sampler.group_values)
