"""FairBatch: a batch sampler whose per-(label, group) batch shares follow a fairness signal.

Y. Roh, K. Lee, S. E. Whang, C. Suh, "FairBatch: Batch Selection for Model Fairness", ICLR 2021.
FairBatch leaves the loss and the network alone and changes only *which* cases form a batch. For each
label :math:`y` it keeps a weight vector :math:`\\lambda_y` on the simplex over the sensitive groups;
a batch of size :math:`B` holds, from the cell of label :math:`y` and group :math:`g`,

.. math::

    n_{y,g} = B \\, P(y) \\, \\lambda_y[g], \\qquad \\lambda_y[g] \\leftarrow \\frac{N_{y,g}}{N_y}
    \\text{ at the start (the empirical shares)}

cases. Once per epoch the mean loss of every cell is handed to :meth:`FairBatchSampler.update`
(:class:`fairmonai.handlers.FairBatchUpdate` computes it) and one label's :math:`\\lambda` moves by a
step :math:`\\alpha` (the paper's Algorithm 1, its binary rule written for any number of groups):

* ``"eqodds"`` (default, equalised odds): the label whose cells have the largest max-min loss gap
  over the groups; :math:`\\alpha` is added to the group with the highest loss (the worst) and taken
  from the group with the lowest (the best);
* ``"eqopp"`` (equal opportunity): the same move, always on ``positive_label``;
* ``"dp"`` (demographic parity): the cell losses are those of predicting ``positive_label`` for every
  case (the handler computes them so) weighted as the reference does,
  :math:`L'_{y,g} = \\bar\\ell_{y,g} N_{y,g} / N_g`; the label with the largest gap of :math:`L'`
  moves: on ``positive_label`` the group with the highest :math:`L'` (fewest predicted positives)
  gains :math:`\\alpha`, on every other label it loses :math:`\\alpha` to the group with the lowest.

then every entry is clipped to :math:`[0, 1]` and the vector divided by its sum. With two groups this
is the reference's update of ``lb1``/``lb2`` (``lambda_y[1]`` there, ``lambda_y[0] = 1 - lambda_y[1]``)
except when every gap is exactly zero: the reference then still moves ``lb2`` by :math:`-\\alpha`
(its ``else`` branch); here nothing moves, as there is no gap to close.

Choices where the paper and reference code leave room (each tested):

* **Rounding.** The real cell targets (they sum to the global batch) are rounded by largest
  remainders: each is floored, and the leftover units go one each to the largest fractional parts
  (ties to the earlier cell in label-major, group-minor order, the excluded slot of a label after
  its groups). A batch therefore always has exactly ``batch_size`` cases, which the reference's
  independent ``round`` per cell does not guarantee.
* **Replacement.** Each cell is read along a seeded random permutation of its cases, batch after
  batch; when a cell runs out within the epoch (an up-weighted cell) a fresh permutation follows. A
  case repeats only after every case of its cell has been drawn (within one batch only when the
  cell's count exceeds the cell's size). At the initial :math:`\\lambda` an epoch is then close to a
  plain shuffle of the data; the reference's ``replacement=False`` wraps the same permutation
  instead.
* **Excluded cases.** A case with group :data:`~fairmonai.attribute_codes.EXCLUDED_CODE` (-1) is in
  no cell: the excluded cases of label :math:`y` form a slot of fixed share
  :math:`B \\, N_{y,-1} / N` and the cells of :math:`y` share :math:`B \\, N_{y,\\mathrm{known}} / N`
  by :math:`\\lambda_y` (equal to :math:`B P(y) \\lambda_y[g]` when nothing is excluded). They are
  trained on, never weighted by the fairness rule.
* **Empty cells.** A (label, group) cell without cases has :math:`\\lambda = 0`, is never drawn and
  is left out of the update (warned once at construction). A populated cell whose loss is missing
  (``NaN``: no case of it was seen) skips the whole update with a warning.
* **Epochs and ranks.** Epoch ``e``'s batches depend on ``(seed, e)`` and :math:`\\lambda` only
  (:meth:`set_epoch`; the handler calls it at every ``EPOCH_STARTED``), so a run resumed with
  :meth:`load_state_dict` draws the same batches. Under DDP every rank builds the same global batch of
  ``batch_size * num_replicas`` cases and takes the ``rank``-th slice of ``batch_size``; there are
  :math:`\\lfloor N / (B R) \\rfloor` batches per epoch (``drop_last``: a partial batch is never built).

Labels are class indices (what cross-entropy takes); groups are non-negative integer codes, or -1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..attribute_codes import EXCLUDED_CODE, code_key

__all__ = [
    "FairBatchSampler",
    "FAIRNESS_TYPES",
    "EMPTY_CELL_MSG",
    "MISSING_LOSS_MSG",
    "STATE_MISMATCH_MSG",
]

#: the fairness targets :meth:`FairBatchSampler.update` implements.
FAIRNESS_TYPES = ("eqodds", "eqopp", "dp")

# Messages (tests compare the text).
EMPTY_CELL_MSG = (
    "FairBatchSampler: cell(s) {cells} (label, group) have no cases: never sampled, lambda 0, left out of the "
    "update"
)
MISSING_LOSS_MSG = (
    "FairBatchSampler: no loss for populated cell(s) {cells} (label, group); lambda update skipped this time"
)
STATE_MISMATCH_MSG = (
    "FairBatchSampler.load_state_dict: the checkpoint's {what} {saved} differ from this sampler's {mine}; it "
    "was saved for other training data"
)


def _as_int_vector(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one value per case, shape (N,) or (N, 1), got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise TypeError(f"{name} must hold integers, got non-integer values e.g. "
                            f"{arr[~(np.isfinite(arr) & (arr == np.round(arr)))][:3].tolist()}")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _largest_remainder(targets: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to ``total``, each the floor of ``targets`` or one more; the leftover units go
    to the largest fractional parts, ties to the earlier entry."""
    base = np.floor(targets + 1e-9).astype(np.int64)
    rest = int(total - base.sum())
    if rest > 0:
        frac = targets - base
        order = np.argsort(-frac, kind="stable")
        base[order[:rest]] += 1
    return base


class FairBatchSampler(Sampler[list[int]]):
    """FairBatch's batch sampler (pass it as a ``DataLoader``'s ``batch_sampler``).

    Yields, per batch, a list of ``batch_size`` dataset indices; ``len()`` is
    :math:`\\lfloor N / (\\text{batch\\_size} \\cdot \\text{num\\_replicas}) \\rfloor`. It knows the
    cases' labels and groups, :math:`\\lambda` and the seed only; the rule, the rounding, the sampling
    and the handling of excluded cases are described in the module docstring.

    Bundle config (``train#dataloader``: ``"batch_sampler": "@train#batch_sampler"``, no
    ``batch_size``/``shuffle``/``sampler``)::

        "train#batch_sampler": {"_target_": "fairmonai.data.FairBatchSampler.from_datalist",
                                "datalist": "@train_datalist", "group_key": "race_code",
                                "batch_size": "@batch_size", "seed": "@seed"}

    Args:
        labels: the class index of each case, shape ``(N,)`` (or ``(N, 1)``), in dataset order.
        groups: each case's group code, shape ``(N,)``; -1 (:data:`~fairmonai.attribute_codes.EXCLUDED_CODE`)
            for a case in no group.
        batch_size: cases per batch on each rank (the global batch is ``batch_size * num_replicas``).
        seed: seed of the draws; epoch ``e`` uses ``(seed, e)``.
        fairness: ``"eqodds"`` (default), ``"eqopp"`` or ``"dp"``.
        alpha: step of the lambda update (default 0.005, the reference's).
        positive_label: the class of eqopp's and dp's positive outcome (default 1).
        num_replicas: DDP world size; ``None``: ``torch.distributed``'s when initialised, else 1.
        rank: this process's rank; ``None``: ``torch.distributed``'s when initialised, else 0.

    Raises:
        TypeError: labels or groups are not integers; ``batch_size``/``seed`` not an integer.
        ValueError: lengths differ, a group code below -1, ``fairness`` not one of :data:`FAIRNESS_TYPES`,
            ``alpha`` not in ``(0, 1]``, ``positive_label`` not among the labels (eqopp, dp), a label whose
            cases are all excluded, a bad rank, or fewer cases than one global batch.

    Example:
        >>> s = FairBatchSampler([0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 0, 1, 1, 1], batch_size=4, seed=0)
        >>> s.lambdas.tolist()
        [[0.75, 0.25], [0.25, 0.75]]
        >>> len(s), [len(b) for b in s]
        (2, [4, 4])
    """

    def __init__(self, labels, groups, batch_size: int, *, seed: int = 0, fairness: str = "eqodds",
                 alpha: float = 0.005, positive_label: int = 1, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        y = _as_int_vector(labels, "labels")
        z = _as_int_vector(groups, "groups")
        if len(y) != len(z):
            raise ValueError(f"labels and groups must have one entry per case, got {len(y)} labels and {len(z)} groups")
        if len(y) and z.min() < EXCLUDED_CODE:
            raise ValueError(f"group codes must be >= 0, or {EXCLUDED_CODE} for an excluded case; got "
                             f"{sorted(set(z[z < EXCLUDED_CODE].tolist()))[:5]}")
        for name, v in (("batch_size", batch_size), ("seed", seed)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an integer, got {v!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if fairness not in FAIRNESS_TYPES:
            raise ValueError(f"fairness must be one of {FAIRNESS_TYPES}, got {fairness!r}")
        if not (isinstance(alpha, (int, float)) and 0 < float(alpha) <= 1):
            raise ValueError(f"alpha must be a number in (0, 1], got {alpha!r}")
        if num_replicas is None or rank is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = (torch.distributed.get_world_size() if dist else 1) if num_replicas is None else num_replicas
            rank = (torch.distributed.get_rank() if dist else 0) if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got rank {rank} with num_replicas {num_replicas}")

        self.n = len(y)
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.global_batch_size = self.batch_size * self.num_replicas
        self.num_batches = self.n // self.global_batch_size
        if self.num_batches == 0:
            raise ValueError(f"FairBatchSampler: {self.n} cases are fewer than one global batch "
                             f"(batch_size {batch_size} x num_replicas {num_replicas})")
        self.seed = int(seed)
        self.fairness = fairness
        self.alpha = float(alpha)
        self.positive_label = int(positive_label)
        self.epoch = 0

        #: the label values (class indices), sorted: rows of :attr:`lambdas`
        self.label_values: list[int] = sorted(set(y.tolist()))
        #: the group codes (excluded left out), sorted: columns of :attr:`lambdas`
        self.group_values: list[int] = sorted(set(z[z != EXCLUDED_CODE].tolist()))
        if fairness in ("eqopp", "dp") and self.positive_label not in self.label_values:
            raise ValueError(f"positive_label {self.positive_label} is not among the labels {self.label_values} "
                             f"(needed by fairness={fairness!r})")
        nl, ng = len(self.label_values), len(self.group_values)
        self._cell_index = [[np.flatnonzero((y == lv) & (z == gv)) for gv in self.group_values]
                            for lv in self.label_values]
        self._excluded_index = [np.flatnonzero((y == lv) & (z == EXCLUDED_CODE)) for lv in self.label_values]
        #: cases per cell, shape ``(labels, groups)``
        self.cell_sizes = np.array([[len(i) for i in row] for row in self._cell_index], dtype=np.int64).reshape(nl, ng)
        #: excluded cases per label, shape ``(labels,)``
        self.excluded_sizes = np.array([len(i) for i in self._excluded_index], dtype=np.int64)
        known = self.cell_sizes.sum(axis=1)
        if np.any(known == 0):
            bad = [self.label_values[i] for i in np.flatnonzero(known == 0)]
            raise ValueError(f"FairBatchSampler: every case of label(s) {bad} is excluded (group {EXCLUDED_CODE}); "
                             f"FairBatch needs at least one case with a group per label")
        self._lambdas = self.cell_sizes / known[:, None]
        empty = self.empty_cells()
        if empty:
            warnings.warn(EMPTY_CELL_MSG.format(cells=empty), UserWarning, stacklevel=2)

    @classmethod
    def from_datalist(cls, datalist: Sequence[Mapping], batch_size: int, *, label_key: str = "label",
                      group_key: str, **kwargs) -> FairBatchSampler:
        """The sampler of a data list (the records the training dataset reads, in its order).

        Args:
            datalist: one dict per case.
            batch_size: as in the constructor.
            label_key: the key of the class index (default ``"label"``).
            group_key: the key of the group code, e.g. ``"race_code"`` (a record's ``"<attribute>_code"``).
            kwargs: the constructor's other arguments.

        Raises:
            ValueError: a record lacks a key (the message names the case's position and the keys it has).
        """
        labels, groups = [], []
        for pos, rec in enumerate(datalist):
            for key in (label_key, group_key):
                if key not in rec:
                    hint = (f"; the group code of attribute 'x' is under '{code_key('x')}'"
                            if key == group_key and not key.endswith("_code") else "")
                    raise ValueError(f"FairBatchSampler.from_datalist: case {pos} has no key '{key}' "
                                     f"(keys: {sorted(map(str, rec))}){hint}")
            labels.append(np.asarray(rec[label_key]).reshape(-1)[0])
            groups.append(np.asarray(rec[group_key]).reshape(-1)[0])
        return cls(np.asarray(labels), np.asarray(groups), batch_size, **kwargs)

    # ---- state

    @property
    def lambdas(self) -> np.ndarray:
        """A copy of :math:`\\lambda`, shape ``(labels, groups)`` in :attr:`label_values` x :attr:`group_values` order."""
        return self._lambdas.copy()

    def empty_cells(self) -> list[tuple[int, int]]:
        """The (label, group) cells without cases."""
        return [(self.label_values[i], self.group_values[j]) for i, j in zip(*np.nonzero(self.cell_sizes == 0))]

    def set_epoch(self, epoch: int) -> None:
        """Draw the batches of ``epoch`` at the next iteration (the same batches for the same epoch and lambda)."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        """``lambdas`` (nested lists), ``epoch``, and the label values, group codes and cell sizes they belong to."""
        return {"lambdas": self._lambdas.tolist(), "epoch": self.epoch, "label_values": list(self.label_values),
                "group_values": list(self.group_values), "cell_sizes": self.cell_sizes.tolist()}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore :meth:`state_dict`'s lambda and epoch.

        Raises:
            ValueError: keys missing, label values, group codes or cell sizes other than this sampler's
                (:data:`STATE_MISMATCH_MSG`), or lambda not of shape ``(labels, groups)`` with finite
                entries in [0, 1] summing to 1 per label, 0 on empty cells.
        """
        need = {"lambdas", "epoch", "label_values", "group_values", "cell_sizes"}
        if not isinstance(state_dict, Mapping) or not need <= set(state_dict):
            raise ValueError(f"FairBatchSampler.load_state_dict expects a dict with {sorted(need)}, got "
                             f"{sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__}")
        for what, mine in (("label_values", self.label_values), ("group_values", self.group_values),
                           ("cell_sizes", self.cell_sizes.tolist())):
            saved = [list(map(int, r)) if isinstance(r, (list, tuple)) else int(r) for r in state_dict[what]]
            if saved != mine:
                raise ValueError(STATE_MISMATCH_MSG.format(what=what, saved=saved, mine=mine))
        lam = np.asarray(state_dict["lambdas"], dtype=np.float64)
        if (lam.shape != self._lambdas.shape or not np.all(np.isfinite(lam)) or lam.min() < 0 or lam.max() > 1
                or not np.allclose(lam.sum(axis=1), 1.0) or np.any(lam[self.cell_sizes == 0] != 0)):
            raise ValueError(f"FairBatchSampler.load_state_dict: lambdas must be shape {self._lambdas.shape}, in [0, 1] "
                             f"and sum to 1 per label, 0 on empty cells; got {lam.tolist()}")
        self._lambdas = lam
        self.epoch = int(state_dict["epoch"])

    # ---- batches

    def batch_composition(self) -> tuple[np.ndarray, np.ndarray]:
        """Cases per global batch at the current lambda: cells ``(labels, groups)`` and excluded slots ``(labels,)``.

        The real targets :math:`B_g N_{y,\\mathrm{known}} \\lambda_y[g] / N` and :math:`B_g N_{y,-1} / N`
        (:math:`B_g` the global batch) rounded by largest remainders, so they sum to :math:`B_g`.
        """
        nl, ng = self._lambdas.shape
        known = self.cell_sizes.sum(axis=1)
        cells = self.global_batch_size * known[:, None] * self._lambdas / self.n
        excl = self.global_batch_size * self.excluded_sizes / self.n
        # slot order: per label its groups, then its excluded slot
        targets = np.concatenate([cells, excl[:, None]], axis=1).reshape(-1)
        counts = _largest_remainder(targets, self.global_batch_size).reshape(nl, ng + 1)
        return counts[:, :ng], counts[:, ng]

    def global_batches(self) -> list[np.ndarray]:
        """The epoch's global batches (each ``batch_size * num_replicas`` indices); every rank computes the same."""
        rng = np.random.default_rng([self.seed, self.epoch])
        cells, excl = self.batch_composition()
        parts = []
        for i in range(len(self.label_values)):
            slots = [(self._cell_index[i][j], int(cells[i, j])) for j in range(len(self.group_values))]
            slots.append((self._excluded_index[i], int(excl[i])))
            for pool, k in slots:
                if k == 0:
                    continue
                need = k * self.num_batches
                perms = [rng.permutation(pool) for _ in range(math.ceil(need / len(pool)))]
                parts.append(np.concatenate(perms)[:need].reshape(self.num_batches, k))
        stacked = np.concatenate(parts, axis=1)
        return [row[rng.permutation(len(row))] for row in stacked]

    def __iter__(self) -> Iterator[list[int]]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.global_batches():
            yield batch[lo:hi].tolist()

    def __len__(self) -> int:
        return self.num_batches

    # ---- the update

    def update(self, cell_losses) -> dict | None:
        """One FairBatch step on :math:`\\lambda` from the cells' mean losses.

        Args:
            cell_losses: shape ``(labels, groups)`` in :attr:`label_values` x :attr:`group_values` order:
                each cell's mean per-case loss, cross-entropy with the true label for eqodds and eqopp,
                with ``positive_label`` as the target for dp; ``NaN`` for a cell nobody measured.

        Returns:
            ``None`` when skipped (a populated cell's loss is missing; warned), else a dict: ``label``
            (the label value moved, ``None`` when every gap is 0), ``gained`` and ``lost`` (group codes),
            ``gaps`` (per label, the max-min of the compared losses over the populated groups).

        Raises:
            ValueError: ``cell_losses`` has another shape.
        """
        loss = np.asarray(cell_losses.detach().cpu() if isinstance(cell_losses, torch.Tensor) else cell_losses,
                          dtype=np.float64)
        if loss.shape != self._lambdas.shape:
            raise ValueError(f"cell_losses must have shape (labels, groups) = {self._lambdas.shape} "
                             f"(labels {self.label_values}, groups {self.group_values}), got {loss.shape}")
        populated = self.cell_sizes > 0
        missing = populated & ~np.isfinite(loss)
        if missing.any():
            cells = [(self.label_values[i], self.group_values[j]) for i, j in zip(*np.nonzero(missing))]
            warnings.warn(MISSING_LOSS_MSG.format(cells=cells), UserWarning, stacklevel=2)
            return None
        if self.fairness == "dp":
            group_sizes = self.cell_sizes.sum(axis=0)
            loss = loss * self.cell_sizes / np.maximum(group_sizes, 1)[None, :]
        hi = np.where(populated, loss, -np.inf)
        lo = np.where(populated, loss, np.inf)
        gaps = np.where(populated.sum(axis=1) > 1, hi.max(axis=1) - lo.min(axis=1), 0.0)
        pos = self.label_values.index(self.positive_label) if self.positive_label in self.label_values else None
        i = pos if self.fairness == "eqopp" else int(np.argmax(gaps))  # ties: the first (smallest) label
        info = {"label": None, "gained": None, "lost": None, "gaps": dict(zip(self.label_values, gaps.tolist()))}
        if not gaps[i] > 0:
            return info
        worst, best = int(np.argmax(hi[i])), int(np.argmin(lo[i]))
        gain, lose = (best, worst) if (self.fairness == "dp" and i != pos) else (worst, best)
        lam = self._lambdas[i].copy()
        lam[gain] += self.alpha
        lam[lose] -= self.alpha
        lam = np.clip(lam, 0.0, 1.0)
        self._lambdas[i] = lam / lam.sum()
        info.update(label=self.label_values[i], gained=self.group_values[gain], lost=self.group_values[lose])
        return info
