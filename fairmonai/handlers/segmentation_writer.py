"""Per-case segmentation scores of an evaluator, written to the CSV that :mod:`fairmonai.reports` reads.

:class:`SegmentationScoresWriter` is the segmentation counterpart of
:class:`~fairmonai.handlers.PredictionsWriter`. It is attached to a MONAI evaluator and scores, for
every case of an evaluation epoch, the binary prediction against the reference mask as the MAMA-MIA
challenge does (:func:`fairmonai.metrics.case_scores`: DSC, HD95, NormHD), keeps the case id and the
sensitive attribute values, gathers the rows across ranks and writes one file on one rank; optionally
it then writes the segmentation fairness report of that file with :func:`fairmonai.reports.write_report`.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.engines import IterationEvents, Workflow

from ..metrics._segmentation import HD_MAX, _check_hd_method, case_scores
from ._samples import atomic_csv
from .case_collector import CaseCollector

__all__ = ["SegmentationScoresWriter", "SCORE_COLUMNS", "INFERENCE_COLUMNS"]

#: The score columns of the file, in order (then one column per attribute).
SCORE_COLUMNS = ("dice", "hd95", "normhd", "pred_voxels", "label_voxels")
#: The columns with ``label_key=None`` (inference): the mask's voxel count and the file ``SaveImaged``
#: wrote it to (``pred.meta["saved_to"]``, empty when the mask was not saved before this handler ran).
INFERENCE_COLUMNS = ("pred_voxels", "segmentation_file")

# Error messages (tests compare the text).
_MSG_NO_LABEL = (
    "SegmentationScoresWriter: case '{case}' has no '{key}' in the batch or the output (keys: {keys}); the "
    "writer scores predictions against reference masks, so it needs labels and cannot be used at inference"
)
_MSG_NO_PRED = "SegmentationScoresWriter: case '{case}' has no '{key}' in the output (keys: {keys})"
_MSG_CHANNEL = (
    "SegmentationScoresWriter: '{key}' of case '{case}' must be a channel-first binary mask with one channel, "
    "(1, X, Y, Z) or (1, X, Y), got shape {shape}; turn a prediction into one with AsDiscreted(argmax=True) "
    "or AsDiscreted(threshold=0.5)"
)
_MSG_SHAPES = (
    "SegmentationScoresWriter: case '{case}': '{pred_key}' has shape {pred} but '{label_key}' has shape {label}; "
    "scores are computed on the original image grid, so invert the preprocessing of the prediction first "
    "(Invertd in the evaluator's postprocessing) and compare it with the label as loaded from its file"
)
_MSG_SCORE = (
    "SegmentationScoresWriter: case '{case}': {error} Binarise the prediction in the evaluator's postprocessing "
    "(AsDiscreted(argmax=True) or AsDiscreted(threshold=0.5); Invertd with nearest interpolation)."
)
_MSG_CLASH = (
    "SegmentationScoresWriter: case id '{case}' appears twice with different reference masks or attributes "
    "(label_voxels {a_vox}, {a_attr} and {b_vox}, {b_attr}); case ids must be unique"
)
_MSG_LABEL_KEY_NONE = (
    "SegmentationScoresWriter: label_key is None (inference: no reference masks), so there are no scores to "
    "report; set report=False"
)
_MSG_REPORT_ATTRS = (
    "SegmentationScoresWriter: report=True needs the attributes to report on (attributes=[...]); "
    "the report's challenge scores are computed per attribute"
)


def _short_float(value: torch.Tensor) -> float:
    """A score as written to the CSV: the float64 value itself (``repr`` is already the shortest decimal that
    reads back the same), so the file holds exactly what the challenge's scoring computes."""
    return float(value.item())


def _remove_written(files: list[str]) -> None:
    """Delete the segmentation files of an evaluation epoch that did not complete, then the folders
    they leave empty; ``files`` is emptied."""
    folders = []
    for f in files:
        p = Path(f)
        try:
            p.unlink(missing_ok=True)
        except OSError:
            continue
        if p.parent not in folders:
            folders.append(p.parent)
    files.clear()
    for d in folders:
        try:
            d.rmdir()  # only when empty: files of earlier runs stay
        except OSError:
            pass


def _as_mask(value: Any, key: str, case: str) -> torch.Tensor:
    t = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
    t = t.detach()
    if t.ndim not in (3, 4) or t.shape[0] != 1:
        raise ValueError(_MSG_CHANNEL.format(key=key, case=case, shape=tuple(t.shape)))
    return t


class SegmentationScoresWriter(CaseCollector):
    """Write an evaluator's per-case DSC, HD95, NormHD and attributes to a CSV file.

    Attach it to a MONAI ``SupervisedEvaluator`` (``validate#handlers`` or ``evaluator#handlers``).
    Per evaluation epoch it

    * resets on ``EPOCH_STARTED``;
    * on ``ITERATION_COMPLETED`` reads, per case, the case id, the attributes, the binary prediction
      ``pred_key`` and the reference mask ``label_key`` from ``engine.state.batch`` and
      ``engine.state.output`` (a key of the output wins, as in MONAI's postprocessing, which stores
      the keys it creates in the output). Both a decollated list of dicts (``decollate=True``, the
      default) and a collated dict are read. Each case is scored with
      :func:`fairmonai.metrics.case_scores` (the MAMA-MIA challenge's rules; HD95 in voxels);
    * on ``EPOCH_COMPLETED`` gathers all ranks' rows (:meth:`CaseCollector.gather`, one row per case),
      and on rank ``save_rank`` writes ``output_dir/filename``
      (to a temporary file, then renamed), sets ``engine.state.scores_file`` to its path (on every
      rank) and, when ``report=True``, writes the segmentation fairness report into
      ``output_dir/report_dir`` (``engine.state.scores_report``).

    **No partial segmentations.** The segmentation files that ``SaveImaged`` writes during the epoch
    (``pred.meta["saved_to"]``, noted right after the postprocessing) are kept only when the epoch
    completes. When it stops on an error (an unreadable image, a mask that does not fit), they are
    deleted, with their folder when it is left empty: at the next epoch's start, or when the writer is
    collected or the interpreter exits, whichever comes first. The scores file and the report are
    written only at the end (the file to a temporary name, then renamed).

    **Masks on the original image grid.** The MAMA-MIA scores are defined on each case's original
    grid (HD95 in voxel units), so ``pred_key`` and ``label_key`` must both be channel-first binary
    masks with one channel, ``(1, X, Y, Z)``, of the same shape: invert the preprocessing of the
    prediction in the evaluator's postprocessing (``Invertd``, nearest interpolation, then
    ``AsDiscreted``), and compare it with the label as loaded from its file (e.g. a
    ``"label_original"`` key made by ``LoadImaged`` + ``EnsureChannelFirstd`` in the postprocessing;
    the preprocessed ``"label"`` is on the resampled grid). Different shapes, more than one channel or
    non-binary values raise ``ValueError`` naming the case. A case without ``label_key`` raises too:
    the writer needs reference masks and is not for inference.

    File layout (one row per case, sorted by ``case_id``, read by :func:`fairmonai.reports.write_report`):

    * ``case_id``;
    * ``dice``, ``hd95`` (voxels; ``inf`` when exactly one mask has no contour, i.e. is empty or, with
      ``hd_method="challenge"``, fills the image; written ``inf``), ``normhd``
      (``min(HD95 / hd_max, 1)``; 1 for ``inf``), ``pred_voxels``, ``label_voxels`` (foreground
      voxel counts);
    * one column per attribute with its value; a value excluded by the manifest's missing-value
      policy (``<attr>_code == -1``) or a missing value is ``unknown``
      (:data:`~fairmonai.attribute_codes.EXCLUDED_VALUE`, as in the manifest), which the report of an
      attribute whose policy is ``exclude`` counts in PS but in none of that attribute's groups.

    A case id seen twice (``DistributedSampler`` pads ranks with repeated cases when
    ``even_divisible``) is written once, the first occurrence kept. Two rows of one case id whose
    ``label_voxels`` or attribute values differ raise ``ValueError`` (two cases sharing an id); rows
    that differ only in the prediction's scores (a repeated case inferred again on another rank with
    non-deterministic kernels) keep the first, with a warning.

    Bundle config (evaluate.json)::

        "validate#handlers": [
            ...,
            {"_target_": "fairmonai.handlers.SegmentationScoresWriter",
             "output_dir": "@output_dir", "label_key": "label_original",
             "attributes": ["age_group", "menopausal_status", "breast_density"],
             "report": true, "schema": "mama_mia"}]

    Attach it on **every rank** (no ``_disabled_`` on the other ranks): the gather on
    ``EPOCH_COMPLETED`` is a collective that every rank must join; only ``save_rank`` writes.

    Args:
        output_dir: folder of the scores file (created).
        filename: file name; may hold ``{epoch}`` (the engine's epoch), e.g. ``"scores_{epoch}.csv"``.
        attributes: attribute names read from the batch (their value strings) and written as columns.
        case_id_key: batch key of the case id.
        pred_key: key of the binary prediction (output, or batch).
        label_key: key of the binary reference mask (output, or batch).
        hd_max: HD95 that maps to NormHD 1. Defaults to 150 (the challenge's).
        clip_normhd: clip NormHD to [0, 1] (default ``True``; ``False`` reproduces the public scoring
            script, where NormHD can exceed 1).
        hd_method: HD95 of :func:`fairmonai.metrics.case_scores`: ``"challenge"`` (default; the
            challenge's ``LabelContour`` contours, the image border is no contour) or ``"monai"``
            (MONAI's ``compute_hausdorff_distance``, the outside of the image as background).
        report: also write the segmentation fairness report of the file (needs ``attributes``).
        report_dir: sub-folder of ``output_dir`` of the report.
        schema: dataset name or schema path for the report (category order of each attribute).
        ts_weight: weight of PS in the report's total score. Defaults to 0.5 (the challenge).
        report_kwargs: other keyword arguments of :func:`fairmonai.reports.write_report` (``title``).
        save_rank: the rank that writes (default 0).
        name: logger name.

    Raises:
        ValueError: at construction, ``save_rank`` negative, an attribute named twice, ``hd_max`` not
            positive, ``hd_method`` not ``"challenge"`` or ``"monai"``, ``ts_weight`` outside [0, 1],
            ``label_key`` ``None`` (inference), or ``report=True`` without attributes; during the run, a
            missing case id, attribute, prediction or label, masks of different shapes, more than one
            channel or non-binary values, one case id on two cases.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        filename: str = "scores.csv",
        attributes: Sequence[str] | str | None = None,
        *,
        case_id_key: str = "case_id",
        pred_key: str = "pred",
        label_key: str | None = "label",
        hd_max: float = HD_MAX,
        clip_normhd: bool = True,
        hd_method: str = "challenge",
        report: bool = False,
        report_dir: str = "report",
        schema: str | os.PathLike | None = None,
        ts_weight: float = 0.5,
        report_kwargs: Mapping | None = None,
        save_rank: int = 0,
        name: str | None = "fairmonai.handlers.SegmentationScoresWriter",
    ) -> None:
        super().__init__(attributes, case_id_key=case_id_key, save_rank=save_rank, name=name)
        clash = sorted({"case_id", *SCORE_COLUMNS} & set(self.attributes))
        if clash:
            raise ValueError(f"attribute name(s) {clash} clash with the file's columns")
        if label_key is None and report:
            raise ValueError(_MSG_LABEL_KEY_NONE)
        if isinstance(hd_max, bool) or not isinstance(hd_max, (int, float)) or not 0 < hd_max < math.inf:
            raise ValueError(f"hd_max must be a positive number, got {hd_max!r}")
        _check_hd_method(hd_method)
        if isinstance(ts_weight, bool) or not isinstance(ts_weight, (int, float)) or not 0.0 <= ts_weight <= 1.0:
            raise ValueError(f"ts_weight must be a number in [0, 1], got {ts_weight!r}")
        if report and not self.attributes:
            raise ValueError(_MSG_REPORT_ATTRS)
        self.output_dir = Path(output_dir)
        self.filename = filename
        self.pred_key = pred_key
        self.label_key = label_key
        self.hd_max = float(hd_max)
        self.clip_normhd = bool(clip_normhd)
        self.hd_method = hd_method
        self.report = bool(report)
        self.report_dir = report_dir
        self.schema = schema
        self.ts_weight = float(ts_weight)
        self.report_kwargs = dict(report_kwargs or {})
        # segmentation files written this epoch (pred.meta["saved_to"]), kept once the epoch completes;
        # an epoch that does not complete leaves none: they are deleted at the next epoch's start, or
        # when this writer is collected or the interpreter exits (after an uncaught exception)
        self._written: list[str] = []
        weakref.finalize(self, _remove_written, self._written)

    def attach(self, engine: Engine) -> None:
        """Register the reset, collect and write steps on ``engine``, and the noting of the files written."""
        # right after the postprocessing (SaveImaged) on a MONAI engine, before metrics can raise
        track_on = IterationEvents.MODEL_COMPLETED if isinstance(engine, Workflow) else Events.ITERATION_COMPLETED
        engine.add_event_handler(track_on, self._track)
        self.attach_collection(engine)

    def reset(self, _engine: Engine | None = None) -> None:
        """Forget the rows, and delete the segmentation files left by an epoch that did not complete."""
        super().reset()
        _remove_written(self._written)

    def _track(self, engine: Engine) -> None:
        """Note the segmentation files the postprocessing wrote for this iteration's cases."""
        for d in self.samples(engine.state.output, [self.pred_key]):
            saved = (getattr(d.get(self.pred_key), "meta", None) or {}).get("saved_to")
            if saved and str(saved) not in self._written:
                self._written.append(str(saved))

    # ---- collect

    def rows(self, engine: Engine) -> list[list]:
        """``[case_id, attributes, scores]`` per case of this iteration (:data:`SCORE_COLUMNS`, or at
        inference the voxel count and the segmentation file)."""
        keys = [self.case_id_key, self.pred_key] + ([self.label_key] if self.label_key is not None else [])
        keys += self.attribute_keys()
        batch = self.samples(engine.state.batch, keys)
        output = self.samples(engine.state.output, keys)
        if batch and output and len(batch) != len(output):
            raise ValueError(
                f"SegmentationScoresWriter: the batch holds {len(batch)} cases but the output {len(output)}"
            )
        rows = []
        for i in range(max(len(batch), len(output))):
            case = dict(batch[i]) if batch else {}
            case.update(output[i] if output else {})
            rows.append(self._row(case))
        return rows

    def _row(self, d: Mapping) -> list:
        case = self.case_id(d)
        if self.pred_key not in d:
            raise ValueError(_MSG_NO_PRED.format(case=case, key=self.pred_key, keys=sorted(d)))
        if self.label_key is not None and self.label_key not in d:
            raise ValueError(_MSG_NO_LABEL.format(case=case, key=self.label_key, keys=sorted(d)))
        pred = _as_mask(d[self.pred_key], self.pred_key, case)
        if self.label_key is None:  # inference: the mask's size and where SaveImaged wrote it
            meta = getattr(d[self.pred_key], "meta", None) or {}
            saved = meta.get("saved_to", "")
            return [case, self.attributes_of(d, case), [None, None, None, int(pred.count_nonzero()), None, str(saved)]]
        label = _as_mask(d[self.label_key], self.label_key, case)
        if pred.shape != label.shape:
            raise ValueError(_MSG_SHAPES.format(case=case, pred_key=self.pred_key, label_key=self.label_key,
                                                pred=tuple(pred.shape), label=tuple(label.shape)))
        try:
            dsc, hd95, normhd = case_scores(pred[None], label[None], hd_max=self.hd_max,
                                            clip_normhd=self.clip_normhd, hd_method=self.hd_method)
        except ValueError as e:
            raise ValueError(_MSG_SCORE.format(case=case, error=e)) from None
        scores = [_short_float(dsc[0]), _short_float(hd95[0]), _short_float(normhd[0]),
                  int(pred.count_nonzero()), int(label.count_nonzero())]
        return [case, self.attributes_of(d, case), scores]

    def identity(self, data: list) -> int | None:
        """The reference mask's voxel count: two rows of one case id with different masks are two cases."""
        return data[4]

    def clash(self, first: list, row: list) -> str:
        return _MSG_CLASH.format(case=row[0], a_vox=first[2][4], a_attr=first[1], b_vox=row[2][4], b_attr=row[1])

    # ---- gather and write

    def __call__(self, engine: Engine) -> None:
        """Gather the rows of every rank and write the file (and the report) on ``save_rank``."""
        seen, n_differ = self.gather()
        path = self.output_dir / self.filename.format(epoch=engine.state.epoch)
        engine.state.scores_file = str(path)
        if not self.is_save_rank():
            self._written.clear()  # the epoch completed: its segmentation files stay
            return
        if not seen:
            self.logger.warning("SegmentationScoresWriter: no cases in this epoch, %s not written", path)
            return
        if n_differ:
            self.logger.warning(
                "SegmentationScoresWriter: %d repeated case(s) scored differently on another rank "
                "(non-deterministic inference); the first scores are kept", n_differ)
        table: dict[str, list] = {"case_id": sorted(seen)}
        columns = SCORE_COLUMNS if self.label_key is not None else INFERENCE_COLUMNS
        for j, col in enumerate(SCORE_COLUMNS + ("segmentation_file",)):
            if col in columns:
                table[col] = [seen[k][2][j] for k in table["case_id"]]
        for j, a in enumerate(self.attributes):
            table[a] = [seen[k][1][j] for k in table["case_id"]]
        df = pd.DataFrame(table)
        atomic_csv(df, path)  # HD95 inf is written "inf"
        if self.label_key is None:
            self.logger.info("SegmentationScoresWriter: %d cases written to %s", len(df), path)
        else:
            self.logger.info("SegmentationScoresWriter: %d cases written to %s (mean DSC %.4f)", len(df), path,
                             float(df["dice"].mean()))
        if self.report:
            from ..reports import write_report  # the report pulls in plotting: import only when asked

            out = self.output_dir / self.report_dir
            write_report(path, out, attributes=self.attributes, schema=self.schema, ts_weight=self.ts_weight,
                         **self.report_kwargs)
            engine.state.scores_report = str(out)
            self.logger.info("SegmentationScoresWriter: fairness report written to %s", out)
        self._written.clear()  # the epoch completed: its segmentation files stay
