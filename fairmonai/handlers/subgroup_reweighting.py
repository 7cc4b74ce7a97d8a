"""FairMedSeg's divergence-aware reweighting: per-case training weights from the subgroups of validation.

E. Poeta et al., "Divergence-Aware Training with Automatic Subgroup Mitigation for Breast Tumor
Segmentation" (FairMedSeg). After each validation run the per-case validation Dice is computed, the
subgroups of the validation metadata (conjunctions of ``attribute=value`` items) are mined with
:func:`fairmonai.metrics.subgroup_divergence`, and every *training* case gets the largest absolute
divergence of the subgroups it belongs to:

.. math::

    \\Delta(S) = \\frac{1}{|S|} \\sum_{i \\in S} \\mathrm{Dice}_i - \\frac{1}{n} \\sum_{i=1}^{n} \\mathrm{Dice}_i,
    \\qquad w_j = \\max_{S \\ni j} |\\Delta(S)|

(:math:`i` runs over the validation cases, :math:`j` over the training cases, membership of a
training case in :math:`S` read from its own metadata). The loss then weights each case of a batch
by :math:`w_j` (``FairSupervisedTrainer(loss_batch_keys={"weight": "sample_weight"})`` hands the
batch's weights to a loss taking ``weight=``, e.g. :class:`fairmonai.losses.DivergenceWeightedLoss`).

The computation is :func:`fairmonai.metrics.divergence_weights`; :class:`SubgroupReweighting` is the
ignite handler that collects the validator's per-case scores, calls it, and puts each training batch's
weights into the batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine
from monai.metrics import compute_dice

from ..attribute_codes import code_key
from ..metrics import divergence_weights
from ._samples import atomic_csv
from .case_collector import CaseCollector, attribute_value, scalar

__all__ = [
    "SubgroupReweighting",
    "TABLE_COLUMNS",
    "HISTORY_COLUMNS",
    "NOT_BINARY_MSG",
    "NAN_SCORE_MSG",
    "UNKNOWN_CASE_MSG",
    "DUPLICATE_IDS_MSG",
    "MISSING_ATTRIBUTE_MSG",
]

#: Columns of the per-epoch subgroup table ``epoch_XXXX.csv``.
TABLE_COLUMNS = ("subgroup", "length", "count", "support", "mean", "divergence")
#: Columns of the long-format ``divergence_history.csv`` (one row per epoch and subgroup).
HISTORY_COLUMNS = ("epoch", "subgroup", "support", "divergence")

# Error messages (tests compare the text).
NOT_BINARY_MSG = (
    "SubgroupReweighting: the {what} of validation case '{case}' is not a binary mask (values {values}); "
    "the default Dice score needs binarised masks: add AsDiscreted(keys='pred', threshold=0.5) (or "
    "argmax=True, to_onehot=C) to the validator's postprocessing, or pass a score_fn for soft predictions"
)
NAN_SCORE_MSG = (
    "SubgroupReweighting: the score of validation case '{case}' is {value}; subgroup divergence needs a "
    "finite score per case (check the case's prediction, label and score_fn)"
)
UNKNOWN_CASE_MSG = (
    "SubgroupReweighting: training batch case id '{case}' is not in train_data ({n} cases, e.g. {examples}); "
    "train_data must be the datalist the training loader reads"
)
DUPLICATE_IDS_MSG = "SubgroupReweighting: train_data has duplicate case ids ({key!r}): {ids}"
MISSING_ATTRIBUTE_MSG = (
    "SubgroupReweighting: attribute '{attr}' is missing from {where} case '{case}': the data lists hold only the "
    "attributes the manifest schema declares; declare '{attr}' in the schema's attributes (categories and "
    "missing-value policy), or remove it from the bundle's attributes"
)


# ----------------------------------------------------------------------------------------------------
# batch helpers
# ----------------------------------------------------------------------------------------------------


def _attribute(record: Mapping, attr: str, case: str, where: str) -> str:
    """An attribute value as subgroup mining sees it (:func:`~fairmonai.handlers.case_collector.attribute_value`)."""
    if attr not in record:
        raise ValueError(MISSING_ATTRIBUTE_MSG.format(attr=attr, where=where, case=case))
    return attribute_value(record[attr], record.get(code_key(attr)))


def _per_case(x) -> list:
    """Predictions or labels as a list of per-case channel-first arrays."""
    if isinstance(x, torch.Tensor):
        return list(torch.unbind(x, dim=0))  # a collated (B, C, ...) batch
    if isinstance(x, (list, tuple)):
        return list(x)
    raise TypeError(f"SubgroupReweighting: output_transform must give lists or batched tensors, got {type(x).__name__}")


def _as_tensor(x) -> torch.Tensor:
    if hasattr(x, "as_tensor"):  # MetaTensor
        x = x.as_tensor()
    return torch.as_tensor(x).detach().cpu()


def _check_binary(x: torch.Tensor, what: str, case: str) -> None:
    if x.dtype == torch.bool:
        return
    if not bool(((x == 0) | (x == 1)).all()):
        values = torch.unique(x)
        shown = values[:5].tolist() + (["..."] if values.numel() > 5 else [])
        raise ValueError(NOT_BINARY_MSG.format(what=what, case=case, values=shown))


def _ids_in_batch(batch, id_key: str) -> list[str]:
    """Case ids of a training batch (a collated dict, or a list of per-sample dicts)."""
    if isinstance(batch, Mapping):
        if id_key not in batch:
            raise ValueError(f"SubgroupReweighting: the training batch has no case id key '{id_key}' "
                             f"(keys: {sorted(map(str, batch))})")
        ids = batch[id_key]
        if isinstance(ids, (torch.Tensor, np.ndarray)):
            ids = ids.reshape(-1).tolist()
        elif isinstance(ids, (str, bytes)):
            ids = [ids]
        return [str(scalar(i)) for i in ids]
    if isinstance(batch, (list, tuple)):
        out = []
        for item in batch:
            if not isinstance(item, Mapping) or id_key not in item:
                raise ValueError(f"SubgroupReweighting: a training sample has no case id key '{id_key}'")
            out.append(str(scalar(item[id_key])))
        return out
    raise TypeError(f"SubgroupReweighting expects the training batch as a dict or a list of dicts, "
                    f"got {type(batch).__name__}")


# ----------------------------------------------------------------------------------------------------
# handler
# ----------------------------------------------------------------------------------------------------


class SubgroupReweighting(CaseCollector):
    """FairMedSeg's divergence-aware sample weights, recomputed after every validation run.

    Attach it to the **trainer** (``train#handlers``); it registers on both engines:

    * on the **validator** (the evaluator ``ValidationHandler`` runs): ``EPOCH_STARTED`` resets;
      ``ITERATION_COMPLETED`` collects, per case, the case id and attribute values from
      ``engine.state.batch`` (a decollated list of dicts or a collated dict) and a score from
      ``output_transform(engine.state.output)`` (``(preds, labels)``, lists of channel-first masks or
      batched tensors); ``EPOCH_COMPLETED`` gathers every rank's rows (:meth:`CaseCollector.gather`:
      ids, attributes and scores stay aligned; a case id repeated by ``DistributedSampler`` padding is
      counted once), computes the weights with :func:`fairmonai.metrics.divergence_weights` on every
      rank (all ranks train with the same weights), stores them in :attr:`weights` and sets ``trainer.state.subgroup_divergence`` (the table) and
      ``trainer.state.sample_weights`` (a summary dict: ``epoch``, ``n_subgroups``,
      ``n_in_no_subgroup``, ``min``, ``mean``, ``max``); on rank ``save_rank``, when ``output_dir``
      is set, it writes into ``output_dir/table_dir``:

      - ``epoch_{epoch:04d}.csv``: the subgroups (:data:`TABLE_COLUMNS`), lowest divergence first;
      - ``divergence_history.csv``: long format (:data:`HISTORY_COLUMNS`), one row per epoch and
        subgroup, appended at each validation (a re-run epoch replaces its rows), to follow how the
        up-weighted subgroups change during training;
      - ``weights_epoch_{epoch:04d}.csv``: ``case_id, weight`` of every training case;

      all written to a temporary file and renamed. ``epoch`` is the trainer's epoch.
    * on the **trainer**: ``ITERATION_STARTED`` (where ``state.batch`` is the collated dict the loader
      gave) sets ``batch[weight_key]`` to a float32 tensor ``(B,)`` of the weights of the batch's
      case ids; the loss reads it (``FairSupervisedTrainer(loss_batch_keys={"weight": weight_key})``).

    **Weights are keyed by case id, never by batch position.** FairMedSeg's released code assigns the
    weight vector by position within the epoch while the training loader shuffles, so the weights land
    on other cases than those whose subgroups earned them; here each batch looks its own case ids up.

    Before the first validation every weight is ``initial_weight`` (1.0). Validation may run only
    every ``val_interval`` epochs (``ValidationHandler(interval=...)``): the weights then stay those of
    the last validation until the next one. ``state_dict()`` / ``load_state_dict()`` hold the weights
    and the epoch they come from; put the handler in a checkpoint's ``save_dict`` so that a resumed
    run reuses them instead of restarting from 1.0.

    Score: by default the per-case Dice, ``monai.metrics.compute_dice(pred[None], label[None],
    include_background=True, ignore_empty=False)`` averaged over channels (an empty label and an
    empty prediction score 1). It needs **binarised** predictions and labels: add
    ``AsDiscreted(keys="pred", threshold=0.5)`` to the validator's postprocessing; a non-binary mask
    raises ``ValueError``. A ``score_fn(pred, label) -> float`` (channel-first tensors of one case)
    replaces it and is not checked for binary input. A non-finite score raises ``ValueError`` naming
    the case.

    Weights: see :func:`fairmonai.metrics.divergence_weights`. A training case in no discovered
    subgroup gets ``fill_value`` (0.0 by default: no evidence of divergence, so it adds nothing to the weighted loss
    until a subgroup of its appears in validation). Raw :math:`|\\Delta|` by default (small numbers,
    e.g. 0.05: the loss scale drops accordingly); ``normalize=True`` rescales them to mean 1 (all zero:
    left at 1.0 with a warning).

    Bundle config (``train#handlers``; ``FairSupervisedTrainer`` with
    ``"loss_batch_keys": {"weight": "sample_weight"}`` and a loss taking ``weight=``)::

        {"_target_": "fairmonai.handlers.SubgroupReweighting",
         "validator": "@validate#evaluator", "train_data": "@train_datalist",
         "attributes": ["age_group", "breast_density"], "output_dir": "@output_dir"}

    Args:
        validator: the MONAI evaluator run during training (``ValidationHandler``'s ``validator``).
        train_data: the training datalist (a list of dicts with ``id_key`` and every attribute, as
            :func:`fairmonai.data.load_datalist` returns; ``"unknown"`` or a ``<attr>_code`` of -1 is
            an excluded value) or a DataFrame with those columns.
        attributes: attribute keys mined (a name or a list).
        id_key: batch / record key of the case id. Defaults to ``"case_id"``.
        weight_key: batch key the weights are written to. Defaults to ``"sample_weight"``.
        minsup: minimum subgroup support, a fraction of the validation cases. Defaults to 0.001.
        fill_value: weight of a training case in no subgroup. Defaults to 0.0.
        normalize: rescale the weights to mean 1 over the training cases. Defaults to False.
        max_len: longest conjunction mined (``None``: no limit).
        ignore_values: attribute values that never form an item (e.g. ``("unknown",)``).
        output_transform: ``engine.state.output -> (preds, labels)``. Defaults to
            ``from_engine(["pred", "label"])``.
        score_fn: ``(pred, label) -> float`` per case; ``None`` for the default Dice.
        output_dir: folder of the files; ``None`` writes nothing.
        table_dir: sub-folder of ``output_dir``. Defaults to ``"subgroups"``.
        initial_weight: every weight before the first validation. Defaults to 1.0.
        save_rank: the rank that writes the files. Defaults to 0.
        name: logger name.

    Raises:
        ValueError: at construction, an empty or repeated attribute list, a case without ``id_key`` or
            an attribute (the message names both), duplicate case ids, an empty ``train_data``, a
            negative ``save_rank``, ``minsup`` outside (0, 1], negative or non-finite ``fill_value`` /
            ``initial_weight``; during the run, a validation case without an attribute, a non-binary
            mask (default score), a NaN score, a training batch case id not in ``train_data``.
        TypeError: ``train_data`` neither a list of dicts nor a DataFrame.
    """

    def __init__(
        self,
        validator: Engine,
        train_data: Sequence[Mapping] | pd.DataFrame,
        attributes: Sequence[str] | str,
        *,
        id_key: str = "case_id",
        weight_key: str = "sample_weight",
        minsup: float = 0.001,
        fill_value: float = 0.0,
        normalize: bool = False,
        max_len: int | None = None,
        ignore_values: Collection[str] = (),
        output_transform: Callable = from_engine(["pred", "label"]),
        score_fn: Callable | None = None,
        output_dir: str | os.PathLike | None = None,
        table_dir: str = "subgroups",
        initial_weight: float = 1.0,
        save_rank: int = 0,
        name: str | None = "fairmonai.handlers.SubgroupReweighting",
    ) -> None:
        super().__init__(attributes, case_id_key=id_key, save_rank=save_rank, name=name)
        if not self.attributes:
            raise ValueError("SubgroupReweighting: attributes is empty")
        if isinstance(minsup, bool) or not isinstance(minsup, (int, float)) or not 0.0 < minsup <= 1.0:
            raise ValueError(f"minsup must be a number in (0, 1], got {minsup!r}")
        for label, v in (("fill_value", fill_value), ("initial_weight", initial_weight)):
            if not math.isfinite(float(v)) or float(v) < 0:
                raise ValueError(f"{label} must be a finite number >= 0, got {v!r}")
        self.validator = validator
        self.id_key = id_key
        self.weight_key = weight_key
        self.minsup = minsup
        self.fill_value = float(fill_value)
        self.normalize = bool(normalize)
        self.max_len = max_len
        self.ignore_values = tuple(ignore_values)
        self.output_transform = output_transform
        self.score_fn = score_fn
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.table_dir = table_dir
        self.initial_weight = float(initial_weight)

        self.train_metadata = self._train_table(train_data)
        self.train_ids: list[str] = self.train_metadata.index.tolist()
        #: case id -> current weight
        self.weights: dict[str, float] = dict.fromkeys(self.train_ids, self.initial_weight)
        #: trainer epoch whose validation gave :attr:`weights` (``None``: initial weights)
        self.weights_epoch: int | None = None
        self.trainer: Engine | None = None
        self._history_checked = False  # whether this process has trimmed divergence_history.csv once

    # ---- training data

    def _train_table(self, train_data) -> pd.DataFrame:
        """The training cases' attribute values (strings, ``unknown`` when excluded), indexed by case id."""
        if isinstance(train_data, pd.DataFrame):
            if self.id_key not in train_data.columns:
                raise ValueError(f"SubgroupReweighting: train_data has no case id column '{self.id_key}' "
                                 f"(columns: {list(train_data.columns)})")
            records = train_data.to_dict(orient="records")
        elif isinstance(train_data, Sequence) and not isinstance(train_data, (str, bytes)):
            records = list(train_data)
        else:
            raise TypeError(f"train_data must be a list of dicts or a DataFrame, got {type(train_data).__name__}")
        if not records:
            raise ValueError("SubgroupReweighting: train_data has no cases")
        ids, rows = [], []
        for pos, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                raise TypeError(f"train_data must hold dicts, got {type(rec).__name__} at position {pos}")
            if self.id_key not in rec:
                raise ValueError(f"SubgroupReweighting: training case at position {pos} has no case id key "
                                 f"'{self.id_key}'")
            case = str(scalar(rec[self.id_key]))
            ids.append(case)
            rows.append([_attribute(rec, a, case, "training") for a in self.attributes])
        counts = pd.Series(ids).value_counts()
        dup = counts[counts > 1]
        if len(dup):
            raise ValueError(DUPLICATE_IDS_MSG.format(key=self.id_key, ids=sorted(dup.index)[:10]))
        return pd.DataFrame(rows, columns=self.attributes, index=pd.Index(ids, name=self.id_key), dtype=object)

    # ---- attach

    def attach(self, engine: Engine) -> None:
        """Register on the trainer ``engine`` (weights into each batch) and on the validator (mining)."""
        self.trainer = engine
        engine.add_event_handler(Events.STARTED, self._publish_initial)
        engine.add_event_handler(Events.ITERATION_STARTED, self._put_weights)
        self.attach_collection(self.validator)

    def _summary(self, n_subgroups: int | None = None, n_unmatched: int | None = None) -> dict:
        w = np.fromiter(self.weights.values(), dtype=np.float64, count=len(self.weights))
        return {"epoch": self.weights_epoch, "n_subgroups": n_subgroups, "n_in_no_subgroup": n_unmatched,
                "min": float(w.min()), "mean": float(w.mean()), "max": float(w.max())}

    def _publish_initial(self, engine: Engine) -> None:
        if getattr(engine.state, "sample_weights", None) is None:
            engine.state.sample_weights = self._summary()

    # ---- trainer side

    def weights_for(self, case_ids: Sequence[str]) -> torch.Tensor:
        """The current weights of ``case_ids`` as a float32 tensor ``(len(case_ids),)``."""
        out = []
        for c in case_ids:
            w = self.weights.get(str(c))
            if w is None:
                raise ValueError(UNKNOWN_CASE_MSG.format(case=c, n=len(self.train_ids), examples=self.train_ids[:3]))
            out.append(w)
        return torch.tensor(out, dtype=torch.float32)

    def _put_weights(self, engine: Engine) -> None:
        batch = engine.state.batch
        w = self.weights_for(_ids_in_batch(batch, self.id_key))
        if isinstance(batch, Mapping):
            batch[self.weight_key] = w
        else:
            for item, wi in zip(batch, w):
                item[self.weight_key] = wi

    # ---- validator side

    def _score(self, pred, label, case: str) -> float:
        if self.score_fn is not None:
            value = self.score_fn(pred, label)
            value = float(value.item() if isinstance(value, torch.Tensor) else value)
        else:
            p, y = _as_tensor(pred), _as_tensor(label)
            _check_binary(p, "prediction", case)
            _check_binary(y, "label", case)
            dice = compute_dice(p[None].float(), y[None].float(), include_background=True, ignore_empty=False)
            value = float(dice.mean().item())
        if not math.isfinite(value):
            raise ValueError(NAN_SCORE_MSG.format(case=case, value=value))
        return value

    def rows(self, engine: Engine) -> list[list]:
        """``[case_id, attributes, score]`` per validation case of this iteration."""
        samples = self.samples(engine.state.batch, [self.id_key, *self.attribute_keys()], keep_none=True)
        preds, labels = self.output_transform(engine.state.output)
        preds, labels = _per_case(preds), _per_case(labels)
        if not len(samples) == len(preds) == len(labels):
            raise ValueError(f"SubgroupReweighting: the validation batch holds {len(samples)} samples but the "
                             f"output {len(preds)} predictions and {len(labels)} labels")
        rows = []
        for b, p, y in zip(samples, preds, labels):
            case = self.case_id(b)
            attrs = [_attribute(b, a, case, "validation") for a in self.attributes]
            rows.append([case, attrs, self._score(p, y, case)])
        return rows

    def _gathered(self) -> tuple[list[str], pd.DataFrame, np.ndarray]:
        cases, _ = self.gather()  # sorted by case id: the same order on every rank, whatever the sampler
        ids = list(cases)
        meta = pd.DataFrame([cases[c][1] for c in ids], columns=self.attributes, dtype=object,
                            index=pd.Index(ids, name=self.id_key))
        scores = np.array([cases[c][2] for c in ids], dtype=np.float64)
        return ids, meta, scores

    def __call__(self, engine: Engine) -> None:
        """Gather the validation rows, recompute the weights, publish and write them."""
        ids, val_meta, scores = self._gathered()
        epoch = int(self.trainer.state.epoch) if self.trainer is not None else int(engine.state.epoch)
        if not ids:
            self.logger.warning("SubgroupReweighting: no validation cases at epoch %d; weights unchanged", epoch)
            return
        w, table = divergence_weights(
            scores, val_meta, self.train_metadata, attributes=self.attributes, minsup=self.minsup,
            fill_value=self.fill_value, normalize=self.normalize, max_len=self.max_len,
            ignore_values=self.ignore_values)
        self.weights = dict(zip(self.train_ids, w.tolist()))
        self.weights_epoch = epoch
        summary = self._summary(len(table), table.attrs["n_train_in_no_subgroup"])
        if self.trainer is not None:
            self.trainer.state.subgroup_divergence = table
            self.trainer.state.sample_weights = summary

        worst = "; ".join(f"{s} ({d:+.4f}, n={c})" for s, d, c in
                          table.nsmallest(3, "divergence")[["subgroup", "divergence", "count"]].itertuples(index=False))
        self.logger.info(
            "SubgroupReweighting: epoch %d: %d validation cases, %d subgroups, most negative: %s; "
            "weights min %.4f mean %.4f max %.4f (%d training cases in no subgroup)",
            epoch, len(ids), len(table), worst or "none", summary["min"], summary["mean"], summary["max"],
            summary["n_in_no_subgroup"])

        if self.output_dir is not None and self.is_save_rank():
            self._write(epoch, table, w)

    def _write(self, epoch: int, table: pd.DataFrame, w: np.ndarray) -> None:
        folder = self.output_dir / self.table_dir
        atomic_csv(table.loc[:, list(TABLE_COLUMNS)], folder / f"epoch_{epoch:04d}.csv")
        atomic_csv(pd.DataFrame({"case_id": self.train_ids, "weight": w}), folder / f"weights_epoch_{epoch:04d}.csv")
        history_path = folder / "divergence_history.csv"
        new = table.loc[:, ["subgroup", "support", "divergence"]].copy()
        new.insert(0, "epoch", epoch)
        new = new.loc[:, list(HISTORY_COLUMNS)]
        if history_path.is_file() and not self._history_checked:
            # first write of this process: drop rows of this epoch or later (a resumed run re-validates
            # them), once; afterwards rows are appended, so an epoch costs O(its subgroups), not O(history)
            old = pd.read_csv(history_path, keep_default_na=False, dtype={"subgroup": str})
            old = old[old["epoch"] < epoch]
            atomic_csv(pd.concat([old, new], ignore_index=True) if len(old) else new, history_path)
        elif history_path.is_file():
            new.to_csv(history_path, mode="a", header=False, index=False, lineterminator="\n")
        else:
            atomic_csv(new, history_path)
        self._history_checked = True

    # ---- checkpointing

    def state_dict(self) -> dict:
        """The weights (``{case id: weight}``) and the trainer epoch they come from (``None``: initial)."""
        return {"weights": dict(self.weights), "epoch": self.weights_epoch}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore :meth:`state_dict`'s weights. Training cases it lacks keep ``initial_weight`` and cases
        it holds that are not in ``train_data`` are dropped, each with a warning.

        Raises:
            ValueError: ``state_dict`` without ``weights`` and ``epoch``, or a non-finite weight.
        """
        if not isinstance(state_dict, Mapping) or not {"weights", "epoch"} <= set(state_dict):
            raise ValueError("SubgroupReweighting.load_state_dict expects a dict with 'weights' and 'epoch', got "
                             f"{sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__}")
        stored = {str(k): float(v) for k, v in dict(state_dict["weights"]).items()}
        bad = [k for k, v in stored.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"SubgroupReweighting.load_state_dict: non-finite weights for cases {bad[:10]}")
        lacking = [c for c in self.train_ids if c not in stored]
        extra = [c for c in stored if c not in self.weights]
        if lacking:
            self.logger.warning("SubgroupReweighting: %d training case(s) not in the loaded weights keep %s "
                                "(e.g. %s)", len(lacking), self.initial_weight, lacking[:3])
        if extra:
            self.logger.warning("SubgroupReweighting: %d loaded case(s) not in train_data ignored (e.g. %s)",
                                len(extra), extra[:3])
        self.weights = {c: stored.get(c, self.initial_weight) for c in self.train_ids}
        epoch = state_dict["epoch"]
        self.weights_epoch = None if epoch is None else int(epoch)
        if self.trainer is not None:
            self.trainer.state.sample_weights = self._summary()
