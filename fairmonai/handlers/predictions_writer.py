"""Per-case predictions of a classifier, written to the CSV that :mod:`fairmonai.reports` reads.

:class:`PredictionsWriter` is attached to a MONAI evaluator. It collects, for every case of an
evaluation epoch, the case id, the class probabilities, the label (when the data have one) and the
sensitive attribute values, gathers them across ranks and writes one file on one rank; optionally it
then writes the fairness report of that file with :func:`fairmonai.reports.write_report`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import ignite.distributed as idist
import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.utils import string_list_all_gather

from ..data.manifest import EXCLUDED_CODE, is_missing
from ._samples import atomic_csv, per_sample

__all__ = ["PredictionsWriter", "NOT_PROBABILITIES_MSG"]

NOT_PROBABILITIES_MSG = (
    "PredictionsWriter expects class probabilities in '{key}', got values {values} for case '{case}' "
    "(outside [0, 1] or not summing to 1); apply the softmax in the evaluator's postprocessing, e.g. "
    "Activationsd(keys='{key}', softmax=True)"
)


def _scalar(value):
    """A per-sample scalar (python number, 0-d or one-element tensor/array) as a python number."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().reshape(-1)[0].item() if value.numel() == 1 else None
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:  # numpy scalar / array
        return value.item()
    return value


def _label_of(value) -> int:
    """Class index of one sample's label: an integer, a one-element tensor, or a one-hot vector."""
    if isinstance(value, torch.Tensor) and value.numel() > 1:
        return int(value.detach().reshape(-1).argmax().item())
    v = _scalar(value)
    if isinstance(v, str):
        v = float(v)
    return int(v)


class PredictionsWriter:
    """Write an evaluator's per-case class probabilities, labels and attributes to a CSV file.

    Attach it to a MONAI ``SupervisedEvaluator`` (as a handler in ``validate#handlers`` or
    ``evaluator#handlers``). Per evaluation epoch it

    * resets on ``EPOCH_STARTED``;
    * on ``ITERATION_COMPLETED`` reads, per sample, ``case_id_key`` and the attributes from
      ``engine.state.batch``, the probabilities from ``engine.state.output[pred_key]`` and the
      label from ``engine.state.batch[label_key]`` when present. Both a decollated list of dicts
      (MONAI's default, ``decollate=True``) and a collated dict (``decollate=False``) are read;
    * on ``EPOCH_COMPLETED`` gathers all ranks' rows (each row serialised to one JSON string and
      gathered with ``monai.utils.string_list_all_gather``, so the columns stay aligned), and on
      rank ``save_rank`` writes ``output_dir/filename`` (to a temporary file, then renamed), sets
      ``engine.state.predictions_file`` to its path (on every rank), and, when ``report=True``,
      writes the fairness report into ``output_dir/report_dir`` (``engine.state.predictions_report``).

    **The writer expects probabilities**, not logits: ``pred`` of each sample has shape ``(C,)`` and
    the evaluator's postprocessing applies the activation, ``Activationsd(keys="pred", softmax=True)``
    (``sigmoid=True`` for a single-channel binary output). Values outside ``[0, 1]`` or (``C >= 2``)
    rows not summing to 1 raise ``ValueError``. With ``decollate=False`` the postprocessing sees the
    collated ``(B, C)`` batch, where MONAI's ``Activationsd`` (channel = dim 0 of one sample) would
    normalise over the batch; there apply the softmax over dim 1 (e.g. ``Lambdad``).

    File layout (one row per case, sorted by ``case_id``, read by :func:`fairmonai.reports.write_report`):

    * ``case_id``;
    * ``label`` (class index), only when the batches hold ``label_key`` (absent at inference);
    * ``C <= 2``: ``score``, the probability of class 1 (``C == 1``: the single probability);
      ``C > 2``: ``prob_0 .. prob_{C-1}``;
    * ``prediction``: the argmax (``C == 1``: ``score >= 0.5``);
    * one column per attribute with its value; a value excluded by the manifest's missing-value
      policy (``<attr>_code == -1``, value ``"unknown"``) or a missing value is an empty cell, which
      the report counts in the overall figures but in no group.

    A case id seen twice (``DistributedSampler`` pads ranks with repeated cases when
    ``even_divisible``) is written once, the first occurrence kept; two rows of one case id with
    different labels or attribute values raise ``ValueError`` (two cases sharing an id).

    Bundle config (evaluate.json / inference.json)::

        "validate#handlers": [
            ...,
            {"_target_": "fairmonai.handlers.PredictionsWriter",
             "output_dir": "@output_dir", "attributes": ["@sensitive_key"],
             "report": true, "schema": "oct_glaucoma", "n_bootstrap": 1000, "seed": "@seed"}]

    Args:
        output_dir: folder of the predictions file (created).
        filename: file name; may hold ``{epoch}`` (the engine's epoch), e.g. ``"predictions_{epoch}.csv"``.
        attributes: attribute names read from the batch (their value strings) and written as columns.
        case_id_key: batch key of the case id.
        label_key: batch key of the label (a class index or a one-hot vector).
        pred_key: output key of the class probabilities.
        report: also write the fairness report of the file (needs labels; without them it is skipped
            with a warning).
        report_dir: sub-folder of ``output_dir`` of the report.
        schema: dataset name or schema path for the report (category order of each attribute).
        reference_group: the report's one-vs-rest group, or ``{attribute: group}``.
        n_bootstrap: bootstrap resamples of the report's confidence intervals.
        seed: bootstrap seed of the report.
        report_kwargs: other keyword arguments of :func:`fairmonai.reports.write_report`
            (``confidence_level``, ``threshold``, ``eodd_strategy``, ``title``).
        save_rank: the rank that writes (default 0).
        name: logger name.

    Raises:
        ValueError: at construction, ``save_rank`` negative or an attribute named twice; during the
            run, a missing case id or attribute in the batch, predictions that are not probabilities,
            a number of classes that changes between cases, labels on some cases only, one case id
            on two different cases.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        filename: str = "predictions.csv",
        attributes: Sequence[str] | str | None = None,
        *,
        case_id_key: str = "case_id",
        label_key: str = "label",
        pred_key: str = "pred",
        report: bool = False,
        report_dir: str = "report",
        schema: str | os.PathLike | None = None,
        reference_group: str | Mapping[str, str] | None = None,
        n_bootstrap: int = 1000,
        seed: int = 0,
        report_kwargs: Mapping | None = None,
        save_rank: int = 0,
        name: str | None = "fairmonai.handlers.PredictionsWriter",
    ) -> None:
        if isinstance(attributes, str):
            attributes = [attributes]
        self.attributes = [str(a) for a in (attributes or [])]
        if len(set(self.attributes)) != len(self.attributes):
            raise ValueError(f"attributes named more than once: {self.attributes}")
        if save_rank < 0:
            raise ValueError(f"save_rank must be >= 0, got {save_rank}")
        self.output_dir = Path(output_dir)
        self.filename = filename
        self.case_id_key = case_id_key
        self.label_key = label_key
        self.pred_key = pred_key
        self.report = bool(report)
        self.report_dir = report_dir
        self.schema = schema
        self.reference_group = reference_group
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.report_kwargs = dict(report_kwargs or {})
        self.save_rank = save_rank
        self.logger = logging.getLogger(name)
        self._rows: list[str] = []

    def attach(self, engine: Engine) -> None:
        """Register the reset, collect and write steps on ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _started(self, _engine: Engine) -> None:
        self._rows = []

    # ---- collect

    def _collect(self, engine: Engine) -> None:
        batch_keys = [self.case_id_key, self.label_key]
        for a in self.attributes:
            batch_keys += [a, f"{a}_code"]
        batch = per_sample(engine.state.batch, batch_keys, "PredictionsWriter")
        output = per_sample(engine.state.output, [self.pred_key], "PredictionsWriter")
        if len(batch) != len(output):
            raise ValueError(f"PredictionsWriter: the batch holds {len(batch)} samples but the output {len(output)}")
        for b, o in zip(batch, output):
            self._rows.append(json.dumps(self._row(b, o)))

    def _row(self, b: Mapping, o: Mapping) -> list:
        if self.case_id_key not in b:
            raise ValueError(f"PredictionsWriter: the batch has no case id key '{self.case_id_key}'")
        case = str(_scalar(b[self.case_id_key]))
        if self.pred_key not in o:
            raise ValueError(f"PredictionsWriter: the output of case '{case}' has no key '{self.pred_key}'")
        probs = o[self.pred_key]
        probs = probs.as_tensor() if hasattr(probs, "as_tensor") else torch.as_tensor(probs)
        probs = probs.detach().cpu().reshape(-1)
        if probs.numel() == 0:
            raise ValueError(f"PredictionsWriter: empty '{self.pred_key}' for case '{case}'")
        # float32 (or float64) values written exactly; half precision (amp) widened to float32
        values = probs.to(torch.float64 if probs.dtype == torch.float64 else torch.float32).tolist()
        total = math.fsum(values)
        if (not all(0.0 <= v <= 1.0 for v in values)) or (len(values) > 1 and abs(total - 1.0) > 1e-3):
            raise ValueError(NOT_PROBABILITIES_MSG.format(key=self.pred_key, values=values, case=case))
        label = _label_of(b[self.label_key]) if self.label_key in b else None
        attrs = []
        for a in self.attributes:
            if a not in b:
                raise ValueError(
                    f"PredictionsWriter: attribute '{a}' is not in the batch of case '{case}' "
                    f"(keys read: {sorted(b)})"
                )
            value = _scalar(b[a])
            code = _scalar(b.get(f"{a}_code", 0))
            excluded = is_missing(value) or (code is not None and int(code) == EXCLUDED_CODE)
            attrs.append("" if excluded else str(value).strip())
        return [case, label, values, attrs]

    # ---- gather and write

    def _columns(self, rows: list[list]) -> pd.DataFrame:
        n_classes = {len(r[2]) for r in rows}
        if len(n_classes) > 1:
            raise ValueError(f"PredictionsWriter: the number of classes differs between cases: {sorted(n_classes)}")
        (c,) = n_classes
        has_label = [r[1] is not None for r in rows]
        if any(has_label) and not all(has_label):
            missing = next(r[0] for r in rows if r[1] is None)
            raise ValueError(
                f"PredictionsWriter: some cases have a '{self.label_key}' and others not (e.g. '{missing}')"
            )
        table: dict[str, list] = {"case_id": [r[0] for r in rows]}
        if all(has_label):
            table["label"] = [r[1] for r in rows]
        if c <= 2:
            table["score"] = [r[2][-1] for r in rows]
            table["prediction"] = [int(r[2][0] >= 0.5) if c == 1 else int(r[2][1] > r[2][0]) for r in rows]
        else:
            for k in range(c):
                table[f"prob_{k}"] = [r[2][k] for r in rows]
            table["prediction"] = [int(max(range(c), key=lambda k, p=r[2]: (p[k], -k))) for r in rows]
        for j, a in enumerate(self.attributes):
            table[a] = [r[3][j] for r in rows]
        return pd.DataFrame(table)

    def __call__(self, engine: Engine) -> None:
        """Gather the rows of every rank and write the file (and the report) on ``save_rank``."""
        ws = idist.get_world_size()
        if self.save_rank >= ws:
            raise ValueError(f"save_rank {self.save_rank} is not below the number of ranks ({ws})")
        rows = string_list_all_gather(strings=self._rows) if ws > 1 else list(self._rows)
        path = self.output_dir / self.filename.format(epoch=engine.state.epoch)
        engine.state.predictions_file = str(path)
        if idist.get_rank() != self.save_rank:
            return
        rows = [s for s in rows if s]  # a rank without rows contributes one empty string
        seen: dict[str, list] = {}
        for s in rows:
            r = json.loads(s)
            first = seen.setdefault(r[0], r)
            if (first[1], first[3]) != (r[1], r[3]):
                raise ValueError(
                    f"PredictionsWriter: case id '{r[0]}' appears twice with different labels or attributes "
                    f"({first[1]}, {first[3]} and {r[1]}, {r[3]}); case ids must be unique"
                )
        if not seen:
            self.logger.warning("PredictionsWriter: no cases in this epoch, %s not written", path)
            return
        if len(seen) < len(rows):
            self.logger.info("PredictionsWriter: %d repeated case(s) written once", len(rows) - len(seen))
        df = self._columns([seen[k] for k in sorted(seen)])
        atomic_csv(df, path)
        self.logger.info("PredictionsWriter: %d cases written to %s", len(df), path)
        if self.report:
            self._write_report(engine, path, df)

    def _write_report(self, engine: Engine, path: Path, df: pd.DataFrame) -> None:
        if "label" not in df.columns:
            self.logger.warning("PredictionsWriter: no labels, so no fairness report for %s", path)
            return
        from ..reports import write_report  # the report pulls in plotting: import only when asked

        out = self.output_dir / self.report_dir
        write_report(
            path, out, attributes=self.attributes or None, schema=self.schema, n_bootstrap=self.n_bootstrap,
            seed=self.seed, reference_group=self.reference_group, **self.report_kwargs,
        )
        engine.state.predictions_report = str(out)
        self.logger.info("PredictionsWriter: fairness report written to %s", out)
