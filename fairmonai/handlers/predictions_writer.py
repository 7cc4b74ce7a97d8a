"""Per-case predictions of a classifier, written to the CSV that :mod:`fairmonai.reports` reads.

:class:`PredictionsWriter` is attached to a MONAI evaluator. It collects, for every case of an
evaluation epoch, the case id, the class probabilities, the label (when the data have one) and the
sensitive attribute values, gathers them across ranks and writes one file on one rank; optionally it
then writes the fairness report of that file with :func:`fairmonai.reports.write_report`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from ignite.engine import Engine

from ._samples import atomic_csv
from .case_collector import CaseCollector, scalar

__all__ = ["PredictionsWriter", "NOT_PROBABILITIES_MSG"]

NOT_PROBABILITIES_MSG = (
    "PredictionsWriter expects class probabilities in '{key}', got values {values} for case '{case}' "
    "(outside [0, 1] or not summing to 1); apply the softmax in the evaluator's postprocessing, e.g. "
    "Activationsd(keys='{key}', softmax=True)"
)


def _label_of(value) -> int:
    """Class index of one sample's label: an integer, a one-element tensor, or a one-hot vector."""
    if isinstance(value, torch.Tensor) and value.numel() > 1:
        return int(value.detach().reshape(-1).argmax().item())
    v = scalar(value)
    if isinstance(v, str):
        v = float(v)
    return int(v)


class PredictionsWriter(CaseCollector):
    """Write an evaluator's per-case class probabilities, labels and attributes to a CSV file.

    Attach it to a MONAI ``SupervisedEvaluator`` (as a handler in ``validate#handlers`` or
    ``evaluator#handlers``). Per evaluation epoch it

    * resets on ``EPOCH_STARTED``;
    * on ``ITERATION_COMPLETED`` reads, per sample, ``case_id_key`` and the attributes from
      ``engine.state.batch``, the probabilities from ``engine.state.output[pred_key]`` and the
      label from ``engine.state.batch[label_key]`` when present. Both a decollated list of dicts
      (MONAI's default, ``decollate=True``) and a collated dict (``decollate=False``) are read;
    * on ``EPOCH_COMPLETED`` gathers all ranks' rows (:meth:`CaseCollector.gather`, one row per case),
      and on rank ``save_rank`` writes ``output_dir/filename`` (to a temporary file, then renamed), sets
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
      policy (``<attr>_code == -1``) or a missing value is ``unknown``
      (:data:`~fairmonai.attribute_codes.EXCLUDED_VALUE`, as in the manifest), which the report of an
      attribute whose policy is ``exclude`` counts in the overall figures but in no group.

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
        super().__init__(attributes, case_id_key=case_id_key, save_rank=save_rank, name=name)
        self.output_dir = Path(output_dir)
        self.filename = filename
        self.label_key = label_key
        self.pred_key = pred_key
        self.report = bool(report)
        self.report_dir = report_dir
        self.schema = schema
        self.reference_group = reference_group
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.report_kwargs = dict(report_kwargs or {})

    # ---- collect

    def rows(self, engine: Engine) -> list[list]:
        """``[case_id, attributes, [label, probabilities]]`` per case of this iteration."""
        batch = self.samples(engine.state.batch, [self.case_id_key, self.label_key, *self.attribute_keys()])
        output = self.samples(engine.state.output, [self.pred_key])
        if len(batch) != len(output):
            raise ValueError(f"PredictionsWriter: the batch holds {len(batch)} samples but the output {len(output)}")
        return [self._row(b, o) for b, o in zip(batch, output)]

    def _row(self, b: Mapping, o: Mapping) -> list:
        case = self.case_id(b)
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
        return [case, self.attributes_of(b, case), [label, values]]

    def identity(self, data: list) -> int | None:
        """The label: two rows of one case id with different labels are two cases."""
        return data[0]

    def clash(self, first: list, row: list) -> str:
        return (f"PredictionsWriter: case id '{row[0]}' appears twice with different labels or attributes "
                f"({first[2][0]}, {first[1]} and {row[2][0]}, {row[1]}); case ids must be unique")

    # ---- gather and write

    def _columns(self, rows: list[list]) -> pd.DataFrame:
        n_classes = {len(r[2][1]) for r in rows}
        if len(n_classes) > 1:
            raise ValueError(f"PredictionsWriter: the number of classes differs between cases: {sorted(n_classes)}")
        (c,) = n_classes
        labels = [r[2][0] for r in rows]
        probs = [r[2][1] for r in rows]
        has_label = [lab is not None for lab in labels]
        if any(has_label) and not all(has_label):
            missing = next(r[0] for r in rows if r[2][0] is None)
            raise ValueError(
                f"PredictionsWriter: some cases have a '{self.label_key}' and others not (e.g. '{missing}')"
            )
        table: dict[str, list] = {"case_id": [r[0] for r in rows]}
        if all(has_label):
            table["label"] = labels
        if c <= 2:
            table["score"] = [p[-1] for p in probs]
            table["prediction"] = [int(p[0] >= 0.5) if c == 1 else int(p[1] > p[0]) for p in probs]
        else:
            for k in range(c):
                table[f"prob_{k}"] = [p[k] for p in probs]
            table["prediction"] = [int(max(range(c), key=lambda k, p=p: (p[k], -k))) for p in probs]
        for j, a in enumerate(self.attributes):
            table[a] = [r[1][j] for r in rows]
        return pd.DataFrame(table)

    def __call__(self, engine: Engine) -> None:
        """Gather the rows of every rank and write the file (and the report) on ``save_rank``."""
        cases, _ = self.gather()
        path = self.output_dir / self.filename.format(epoch=engine.state.epoch)
        engine.state.predictions_file = str(path)
        if not self.is_save_rank():
            return
        if not cases:
            self.logger.warning("PredictionsWriter: no cases in this epoch, %s not written", path)
            return
        df = self._columns(list(cases.values()))
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
