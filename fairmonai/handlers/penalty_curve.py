"""Penalty curves: one shared k-NN estimate of I(u; v) logged during training, for every method alike.

The fairness penalties of FaMI, MIGE and MINE cannot be compared through their own values (E[v * SFD]
is zero by construction; a Donsker-Varadhan bound is on another scale), so the penalty curves (the
FaMI paper's Figure 3) plot one estimate computed the same way for every method and for the
baseline: the mutual information between the sensitive attribute ``u`` and the model output ``v``
(the logits, or a feature layer), estimated by scikit-learn's k-nearest-neighbour estimator on the
last ``window`` training samples (:func:`fairmonai.metrics.knn_mutual_information`). Each method's
own diagnostic (mean squared SFD for FaMI and MIGE, the Donsker-Varadhan value for MINE), read from
``engine.state.loss_terms`` where :class:`fairmonai.engines.FairSupervisedTrainer` publishes the
loss's terms, is logged beside it, and the SFD penalties' small-group fallback (samples and groups
whose SFD was set to 0) is summed per epoch.

:class:`PenaltyCurveLogger` writes the rows to a CSV that
``python -m fairmonai.reports.penalty_curve`` summarises (total variation, RMSE to a moving average)
and plots.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines import IterationEvents

from ..metrics import KNN_MI_ESTIMATORS, knn_mutual_information

__all__ = [
    "PenaltyCurveLogger",
    "representation_from_engine",
    "ESTIMATORS",
    "BASE_COLUMNS",
    "FALLBACK_KEYS",
    "FALLBACK_METRICS",
    "FALLBACK_COLUMNS",
]

ESTIMATORS = KNN_MI_ESTIMATORS
BASE_COLUMNS = ("iteration", "epoch", "n_samples", "mi_knn")
LOSS_COLUMN = "loss"
#: diagnostic keys of the SFD penalties' fallback (rows, groups of one call), summed per epoch.
FALLBACK_KEYS = ("n_fallback", "n_fallback_groups")
#: ``engine.state.metrics`` keys of the per-epoch sums of :data:`FALLBACK_KEYS`.
FALLBACK_METRICS = ("sfd_fallback_rows", "sfd_fallback_groups")
#: columns of the per-epoch fallback CSV.
FALLBACK_COLUMNS = ("epoch", "iteration", "iterations", "rows", "group_batches")


def representation_from_engine(engine: Engine) -> torch.Tensor:
    """``engine.last_representation``: the feature-layer tap of
    :class:`fairmonai.engines.FairSupervisedTrainer` (``representation_layer`` set).

    Raises:
        ValueError: the engine has no representation tap, or it holds nothing this iteration.
    """
    v = getattr(engine, "last_representation", None)
    if v is None:
        raise ValueError(
            "no representation to log: use fairmonai.engines.FairSupervisedTrainer with representation_layer "
            f"set (engine is {type(engine).__name__}, last_representation is None)"
        )
    return v


def _pred_from_output(output: Any) -> Any:
    """Default ``output_transform``: ``pred`` of a MONAI output dict, or of a decollated list of dicts.

    A network that returns a named tuple of outputs in training (FairViT-lite's
    :class:`~fairmonai.networks.FairViTOutput` ``(logits, aux_logits)``) gives its first field, the main
    output."""
    if isinstance(output, Mapping):
        pred = output["pred"]
        return pred[0] if isinstance(pred, tuple) and hasattr(pred, "_fields") else pred
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
        return torch.stack([torch.as_tensor(o["pred"]) for o in output])
    if isinstance(output, (list, tuple)):
        return output[0]
    return output


def _loss_from_output(output: Any) -> torch.Tensor | None:
    """The iteration's loss as a detached float tensor on its device (converted only when a row is written)."""
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
        output = output[0]  # decollated: the scalar loss is replicated into every item
    value = output.get("loss") if isinstance(output, Mapping) else None
    if value is None:
        return None
    return torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value).float().mean()


def _check_clash(names: Any) -> None:
    clash = [n for n in names if n in BASE_COLUMNS or n == LOSS_COLUMN]
    if clash:
        raise ValueError(f"diagnostic names {clash} clash with the fixed columns {list(BASE_COLUMNS) + [LOSS_COLUMN]}")


def _check_one(name: str, value: Any) -> None:
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ValueError(f"diagnostic {name!r} must be a scalar, got shape {tuple(value.shape)}")


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """Scalars (tensors on any device, numbers or ``None``) as Python floats (``None``: NaN), each
    rounded through float32 as the logged values always were; the values on an accelerator are
    stacked and copied to the host together (one sync)."""
    out: dict[str, float] = {}
    on_device: list[tuple[str, torch.Tensor]] = []
    for name, value in values.items():
        if value is None:
            out[name] = float("nan")
            continue
        t = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value)
        _check_one(name, t)
        if t.device.type == "cpu":
            out[name] = float(t.float().item())
        else:
            out[name] = float("nan")  # placeholder, keeps the column order
            on_device.append((name, t))
    if on_device:
        device = on_device[0][1].device
        host = torch.stack([t.reshape(()).float().to(device) for _, t in on_device]).cpu().tolist()
        out.update(zip((name for name, _ in on_device), host))
    return out


class PenaltyCurveLogger:
    """Log a shared k-NN estimate of I(u; v) every ``every_n`` iterations, beside the loss's diagnostic.

    Per iteration it keeps ``v`` (the model output ``pred``, detached, float, flattened to
    ``(B, -1)``; or a feature layer through ``representation_transform``) and the group codes
    ``u = engine.state.batch[sensitive_key]`` in a ring buffer of the last ``window`` samples with a
    code >= 0 (``-1``, in no group, is never counted). ``v`` stays on its device until a row is
    written, and the loss and its terms stay tensors, so an iteration that writes no row converts
    nothing to a Python number (no host-device sync). Every ``every_n`` iterations (at
    ``ITERATION_COMPLETED`` with ``iteration % every_n == 0``) it

    * computes ``mi_knn`` = :func:`fairmonai.metrics.knn_mutual_information` of the buffer
      (``estimator="sum"``: the sum over v's columns of ``mutual_info_classif(v, u, n_neighbors=k,
      random_state=seed)``; see there), NaN when the buffer has fewer than ``min_samples`` samples
      or fewer than 2 groups;
    * reads the method's diagnostic from ``engine.state.loss_terms`` (a ``dict[str, Tensor]`` of
      scalars that :class:`fairmonai.engines.FairSupervisedTrainer` publishes after each loss call;
      absent for a plain ``SupervisedTrainer``: no diagnostic columns), converting each value to a
      float here, once per written row;
    * appends one row ``iteration, epoch, n_samples, mi_knn, <diagnostics...>, loss`` to
      ``output_dir/filename`` (rank 0 only; the file is opened, appended and closed for each row, so
      a killed run keeps every row written). ``loss`` is ``engine.state.output["loss"]`` of that
      iteration (MONAI's unscaled value: what the loss function returned, penalty included);
    * sets ``engine.state.metrics[metric_name]`` (for ``StatsHandler``/TensorBoard, which print
      metrics at epoch end: the latest value) and ``engine.state.<state_attribute>`` (the last row
      as a dict).

    The buffer is filled on ``LOSS_COMPLETED`` when the engine is a MONAI workflow (the batch still
    collated, the output holding ``pred`` and ``loss``), else on ``ITERATION_COMPLETED`` (a collated
    dict or a decollated list of dicts both work). The same configuration serves FaMI, MIGE, MINE
    and the baseline (a plain ``SupervisedTrainer`` whose batch holds the codes), so their curves are
    comparable. Under gradient accumulation each loader batch (micro-batch) is one iteration.

    Distributed: each rank buffers its own samples; at a logging iteration the buffers are gathered
    (``evenly_divisible_all_gather``; every rank must reach the same iterations, as with any
    collective), so the estimate uses up to ``window * world_size`` samples; only rank 0 writes.

    Resume: an existing file is appended to, never truncated (its header is kept; columns it lacks
    are dropped with a warning), so a run resumed from a checkpoint continues the same log; a
    resumed run may re-log iterations after the checkpoint that the killed run had already logged
    (the report keeps the last row per iteration). Start a fresh run in a fresh ``output_dir``, or
    pass ``append=False`` to truncate the file at this handler's first row.

    Diagnostic columns: one column per key of ``engine.state.loss_terms`` (a ``None`` value gives
    NaN). Without ``diagnostic_names`` the columns are the keys of the first row; later keys outside
    them are dropped with one warning, missing ones are NaN. ``log_loss_terms=False`` writes none.

    Bundle config (train handlers; the same for every method)::

        {"_target_": "fairmonai.handlers.penalty_curve.PenaltyCurveLogger",
         "sensitive_key": "@sensitive_key", "output_dir": "@output_dir", "every_n": 50, "window": 512,
         "k": 3, "seed": "@seed"}

    With :class:`fairmonai.losses.FairnessRegularizedLoss` as the trainer's loss the columns are
    ``task_loss``, ``mu``, ``penalty`` and the penalty's ``last_diagnostic`` (``msq_sfd`` for FaMI
    and MIGE, ``dv`` for MINE, ...); the baseline (a plain ``SupervisedTrainer``) has none. For the
    feature-layer curve add ``"representation_transform":
    "$fairmonai.handlers.penalty_curve.representation_from_engine"`` (and a distinct
    ``metric_name``).

    Small-group fallback of FaMI and MIGE (``log_fallback``, on by default): when the diagnostic
    holds ``n_fallback`` and ``n_fallback_groups`` (the samples and groups whose SFD the penalty set
    to 0 in that call because a fit was undefined; see :class:`fairmonai.losses.FaMIPenalty`), they
    are read at *every* iteration (the capture event, not only every ``every_n``) and summed over
    the epoch. At ``EPOCH_COMPLETED`` the sums (over ranks too, by ``all_reduce``, when a process
    group is initialised) go to ``engine.state.metrics["sfd_fallback_rows"]`` and
    ``["sfd_fallback_groups"]``, to the log (rank 0, ``logger.info``):
    ``"FaMI small-group fallback: N rows in M group-batches zeroed this epoch (epoch E, I iterations)"``
    (a group-batch is one group in one iteration's batch; the label is the penalty's class name
    without ``Penalty``, read from ``engine.base_loss_function.penalty``, or ``fallback_label``),
    and as one row ``epoch, iteration, iterations, rows, group_batches`` (``iterations``: those of
    rank 0 whose diagnostic had the keys; ``rows`` and ``group_batches`` summed over ranks) to
    ``output_dir/fallback_filename`` (rank 0; appended as the main CSV, and truncated at its first
    row when ``append=False``). The per-epoch total is a different row type from the per-iteration
    rows of the main CSV, hence the second file; the main CSV already has each logged iteration's
    ``n_fallback`` and ``n_fallback_groups`` as diagnostic columns. Nothing is logged for a
    diagnostic without these keys (MINE, the baseline, a penalty with ``mu = 0``) or with
    ``log_loss_terms=False``. The per-iteration counts are summed as tensors and converted at the
    epoch's end. Under DDP the line ends ``(epoch E, I iterations per rank, summed over W
    ranks)``. An epoch resumed in its middle counts its iterations after the resume only (the
    ``iterations`` column says how many).

    Do not give it ``"_disabled_": "@is_not_rank0"``: it writes on rank 0 only by itself, and in a
    distributed run every rank must attach it because it gathers the buffers across ranks.

    Args:
        sensitive_key: key of the integer group codes in the batch.
        output_dir: folder of the CSV (created on rank 0).
        every_n: log every ``every_n`` iterations (iteration counted from the start of training).
        window: ring-buffer size in samples (per rank).
        k: ``n_neighbors`` of the estimator.
        seed: ``random_state`` of the estimator (the same at every logging step).
        estimator: ``"sum"`` (default) or ``"joint"``, see :func:`fairmonai.metrics.knn_mutual_information`.
        min_samples: fewer buffered samples give ``mi_knn`` NaN (default 20).
        output_transform: maps ``engine.state.output`` to ``v`` ``(B, ...)``; default: ``pred``.
        representation_transform: maps the engine to ``v`` instead (e.g.
            :func:`representation_from_engine`, the trainer's feature-layer tap); takes precedence.
        log_loss_terms: write ``engine.state.loss_terms`` as diagnostic columns (default ``True``;
            an engine without ``loss_terms`` gives no columns).
        diagnostic_names: fix the diagnostic columns (default: the first row's keys).
        filename: CSV file name (default ``"penalty_curve.csv"``).
        append: append to an existing file (default) or truncate it at the first row.
        metric_name: the ``engine.state.metrics`` key (default ``"mi_knn"``).
        state_attribute: the ``engine.state`` attribute holding the last row.
        log_fallback: sum the penalty's small-group fallback per epoch (default ``True``; needs
            ``log_loss_terms`` and loss terms holding ``n_fallback``/``n_fallback_groups``).
        fallback_filename: the per-epoch fallback CSV (default ``"sfd_fallback.csv"``); ``None``
            writes none (the metrics and the log line stay).
        fallback_label: the method's name in the log line; default ``None``: the penalty's class
            name without ``Penalty`` (``"FaMI"``, ``"MIGE"``), or ``"SFD"`` if there is none.
        name: logger name (default ``"fairmonai.handlers.PenaltyCurveLogger"``).

    Raises:
        ValueError: a bad option (at construction); during the run, a batch without
            ``sensitive_key``, ``v`` and ``u`` of different lengths, ``engine.state.loss_terms`` not a
            mapping or holding a non-scalar, a diagnostic name clashing with a fixed column.
    """

    def __init__(
        self,
        sensitive_key: str,
        output_dir: str | os.PathLike,
        *,
        every_n: int = 50,
        window: int = 512,
        k: int = 3,
        seed: int = 0,
        estimator: str = "sum",
        min_samples: int = 20,
        output_transform: Callable = _pred_from_output,
        representation_transform: Callable | None = None,
        log_loss_terms: bool = True,
        diagnostic_names: Sequence[str] | None = None,
        filename: str = "penalty_curve.csv",
        append: bool = True,
        metric_name: str = "mi_knn",
        state_attribute: str = "penalty_curve",
        log_fallback: bool = True,
        fallback_filename: str | None = "sfd_fallback.csv",
        fallback_label: str | None = None,
        name: str | None = "fairmonai.handlers.PenaltyCurveLogger",
    ) -> None:
        checks = (("every_n", every_n, 1), ("window", window, 2), ("k", k, 1), ("min_samples", min_samples, 0))
        for arg, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of {list(ESTIMATORS)}")
        self.sensitive_key = sensitive_key
        self.output_dir = Path(output_dir)
        self.every_n = every_n
        self.window = window
        self.k = k
        self.seed = seed
        self.estimator = estimator
        self.min_samples = min_samples
        self.output_transform = output_transform
        self.representation_transform = representation_transform
        self.log_loss_terms = bool(log_loss_terms)
        self.diagnostic_names = None if diagnostic_names is None else list(diagnostic_names)
        self.filename = filename
        self.append = append
        self.metric_name = metric_name
        self.state_attribute = state_attribute
        self.log_fallback = bool(log_fallback)
        self.fallback_filename = fallback_filename
        self.fallback_label = fallback_label
        self.logger = logging.getLogger(name)
        # this epoch, this rank: the summed (rows, group-batches) as a float64 tensor where the terms live
        # (converted at the epoch's end), and the iterations whose terms had the keys
        self._fallback_sum: torch.Tensor | None = None
        self._fallback_iterations = 0
        self._fallback_file_started = False
        # ring buffer: chunks (v (b, D) float on its device, u (b,) int64, kept-count), newest last
        self._chunks: list[tuple[torch.Tensor, np.ndarray, int]] = []
        self._last_loss: torch.Tensor | None = None
        self._columns: list[str] | None = None
        self._warned: set[str] = set()

    @property
    def path(self) -> Path:
        """The CSV file."""
        return self.output_dir / self.filename

    @property
    def fallback_path(self) -> Path | None:
        """The per-epoch fallback CSV, or ``None``."""
        return None if self.fallback_filename is None else self.output_dir / self.fallback_filename

    @property
    def _tracks_fallback(self) -> bool:
        # decided by the configuration alone, so every rank takes part in the same collectives
        return self.log_fallback and self.log_loss_terms

    def attach(self, engine: Engine) -> None:
        """Buffer on ``LOSS_COMPLETED`` (MONAI workflows) or ``ITERATION_COMPLETED``; log every ``every_n``;
        sum the fallback counts per epoch."""
        allowed = getattr(engine, "_allowed_events", [])
        capture = Events.ITERATION_COMPLETED
        if IterationEvents.LOSS_COMPLETED in allowed:
            capture = IterationEvents.LOSS_COMPLETED
        engine.add_event_handler(capture, self.capture)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n), self.log)
        if self._tracks_fallback:
            engine.add_event_handler(Events.EPOCH_STARTED, self.reset_fallback)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.log_fallback_epoch)

    # buffering ------------------------------------------------------------------------------------
    def _codes(self, batch: Any) -> np.ndarray:
        if isinstance(batch, Mapping):
            if self.sensitive_key not in batch:
                raise ValueError(f"the batch has no sensitive attribute key {self.sensitive_key!r}; "
                                 f"the batch keys are {sorted(map(str, batch))}")
            raw = batch[self.sensitive_key]
        elif isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Mapping):
            if self.sensitive_key not in batch[0]:
                raise ValueError(f"the batch has no sensitive attribute key {self.sensitive_key!r}; "
                                 f"the batch keys are {sorted(map(str, batch[0]))}")
            raw = [torch.as_tensor(b[self.sensitive_key]).reshape(-1) for b in batch]
            raw = torch.cat(raw) if raw else torch.zeros(0)
        else:
            raise ValueError(f"cannot read {self.sensitive_key!r} from a batch of type {type(batch).__name__}")
        u = torch.as_tensor(raw.detach().cpu() if isinstance(raw, torch.Tensor) else raw)
        if hasattr(u, "as_tensor"):  # MetaTensor
            u = u.as_tensor()
        return u.reshape(-1).to(torch.int64).numpy()

    def capture(self, engine: Engine) -> None:
        """Add this iteration's ``(v, u)`` to the ring buffer and remember the loss."""
        if self.representation_transform is not None:
            v = self.representation_transform(engine)
        else:
            v = self.output_transform(engine.state.output)
        if isinstance(v, (list, tuple)):
            v = torch.stack([torch.as_tensor(x) for x in v])
        if hasattr(v, "as_tensor"):  # MetaTensor
            v = v.as_tensor()
        v = torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v).float()  # stays on its device
        v = v.reshape(v.shape[0], -1) if v.ndim > 0 else v.reshape(1, 1)
        u = self._codes(engine.state.batch)
        if len(u) != len(v):
            raise ValueError(f"v has {len(v)} samples but batch[{self.sensitive_key!r}] has {len(u)}")
        if self._chunks and self._chunks[0][0].shape[1] != v.shape[1]:
            self._chunks = []
        self._chunks.append((v, u, int(np.count_nonzero(u >= 0))))
        kept = sum(c[2] for c in self._chunks)
        while kept - self._chunks[0][2] >= self.window:  # the newer chunks hold the window without it
            kept -= self._chunks.pop(0)[2]
        self._last_loss = _loss_from_output(engine.state.output)
        if self._tracks_fallback:
            self._add_fallback(self._terms(engine))

    # small-group fallback -------------------------------------------------------------------------
    def reset_fallback(self, engine: Engine | None = None) -> None:
        """Zero this epoch's fallback sums (``EPOCH_STARTED``)."""
        self._fallback_sum = None
        self._fallback_iterations = 0

    def _add_fallback(self, terms: Mapping[str, Any]) -> None:
        """Add this iteration's ``n_fallback``, ``n_fallback_groups`` (a missing or non-finite one: 0) to
        the epoch's sums, as tensors (no sync)."""
        present = [k for k in FALLBACK_KEYS if k in terms and terms[k] is not None]
        if not present:
            return
        first = terms[present[0]]
        device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
        values = []
        for key in FALLBACK_KEYS:
            value = terms.get(key)
            _check_one(key, value)
            values.append(torch.as_tensor(0.0 if value is None else value, dtype=torch.float64,
                                          device=device).reshape(()))
        counts = torch.stack(values)
        counts = torch.where(torch.isfinite(counts), counts, torch.zeros_like(counts))
        self._fallback_sum = counts if self._fallback_sum is None else self._fallback_sum + counts
        self._fallback_iterations += 1

    def _fallback_counts(self) -> torch.Tensor:
        """``(rows, group-batches, iterations)`` of this rank and epoch, float64 on the CPU."""
        sums = torch.zeros(2, dtype=torch.float64) if self._fallback_sum is None else self._fallback_sum.cpu()
        return torch.cat([sums, torch.tensor([float(self._fallback_iterations)], dtype=torch.float64)])

    def fallback_totals(self) -> dict[str, int]:
        """This rank's sums since the epoch started: ``rows``, ``group_batches``, ``iterations``."""
        rows, groups, iters = (int(round(x)) for x in self._fallback_counts().tolist())
        return {"rows": rows, "group_batches": groups, "iterations": iters}

    def _fallback_label(self, engine: Engine) -> str:
        if self.fallback_label is not None:
            return self.fallback_label
        for owner in (getattr(engine, "base_loss_function", None), getattr(engine, "loss_function", None)):
            penalty = getattr(owner, "penalty", None)
            if penalty is not None:
                label = type(penalty).__name__
                return label[: -len("Penalty")] if label.endswith("Penalty") and label != "Penalty" else label
        return "SFD"

    def log_fallback_epoch(self, engine: Engine) -> None:
        """Sum the epoch's fallback counts over ranks; set the metrics, log one line, write one row (rank 0)."""
        totals = self._fallback_counts()
        import torch.distributed as dist

        world = 1
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import ignite.distributed as idist

            world = dist.get_world_size()
            totals = idist.all_reduce(totals.clone())  # sum over ranks
        rows, groups, seen = (int(round(float(x))) for x in totals.cpu())
        if seen == 0:  # no iteration of this epoch had the keys (e.g. mu = 0, or not an SFD penalty)
            return
        iters = self.fallback_totals()["iterations"]
        engine.state.metrics[FALLBACK_METRICS[0]] = rows
        engine.state.metrics[FALLBACK_METRICS[1]] = groups
        rank = getattr(engine.state, "rank", None)
        if rank is None:
            import ignite.distributed as idist

            rank = idist.get_rank()
        if rank != 0:
            return
        epoch, iteration = engine.state.epoch, engine.state.iteration
        ranks = f" per rank, summed over {world} ranks" if world > 1 else ""
        self.logger.info(
            "%s small-group fallback: %d rows in %d group-batches zeroed this epoch (epoch %d, %d iterations%s)",
            self._fallback_label(engine), rows, groups, epoch, iters, ranks,
        )
        path = self.fallback_path
        if path is None:
            return
        row = [epoch, iteration, iters, rows, groups]
        if not self._fallback_file_started:
            self._fallback_file_started = True
            path.parent.mkdir(parents=True, exist_ok=True)
            if not (self.append and path.is_file() and path.stat().st_size > 0):
                with open(path, "w", newline="") as f:
                    csv.writer(f).writerow(FALLBACK_COLUMNS)
        with open(path, "a", newline="") as f:
            csv.writer(f).writerow(row)
            f.flush()

    def buffer(self) -> tuple[np.ndarray, np.ndarray]:
        """This rank's buffered ``(v (N, D), u (N,))``."""
        if not self._chunks:
            return np.zeros((0, 1)), np.zeros(0, dtype=np.int64)
        v = torch.cat([c[0] for c in self._chunks]).cpu().numpy().astype(np.float64)  # the one sync
        u = np.concatenate([c[1] for c in self._chunks])
        keep = u >= 0
        return v[keep][-self.window :], u[keep][-self.window :]

    def _gathered(self) -> tuple[np.ndarray, np.ndarray]:
        v, u = self.buffer()
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return v, u
        from monai.utils import evenly_divisible_all_gather

        gv = evenly_divisible_all_gather(torch.as_tensor(v), concat=True)
        gu = evenly_divisible_all_gather(torch.as_tensor(u), concat=True)
        return gv.cpu().numpy(), gu.cpu().numpy()

    # logging --------------------------------------------------------------------------------------
    def _terms(self, engine: Engine) -> Mapping[str, Any]:
        """``engine.state.loss_terms`` (tensors, unconverted), or ``{}`` when absent or not logged."""
        if not self.log_loss_terms:
            return {}
        terms = getattr(engine.state, "loss_terms", None)
        if terms is None:
            return {}
        if not isinstance(terms, Mapping):
            raise ValueError(
                f"engine.state.loss_terms must be a mapping of scalar tensors, got {type(terms).__name__}"
            )
        return terms

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=2)

    def _header(self, diag: dict[str, float]) -> list[str]:
        names = self.diagnostic_names if self.diagnostic_names is not None else list(diag)
        _check_clash(names)
        return list(BASE_COLUMNS) + names + [LOSS_COLUMN]

    def _write(self, row: dict[str, Any], diag: dict[str, float]) -> None:
        path = self.path
        if self._columns is None:
            wanted = self._header(diag)
            path.parent.mkdir(parents=True, exist_ok=True)
            existing = None
            if self.append and path.is_file() and path.stat().st_size > 0:
                with open(path, newline="") as f:
                    existing = next(csv.reader(f), None)
            if existing:
                lost = [c for c in wanted if c not in existing]
                if lost:
                    self._warn_once("header", f"{path}: appending to a log without the columns {lost}; "
                                              "they are dropped")
                self._columns = existing
            else:
                self._columns = wanted
                with open(path, "w", newline="") as f:
                    csv.writer(f).writerow(wanted)
        extra = [k for k in diag if k not in self._columns]
        if extra:
            self._warn_once("extra", f"diagnostic values {extra} have no column in {path}; they are dropped")
        with open(path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(c, float("nan")) for c in self._columns])
            f.flush()

    def log(self, engine: Engine) -> None:
        """Compute ``mi_knn`` on the buffer, read the diagnostic, write one row (rank 0)."""
        v, u = self._gathered()
        mi = knn_mutual_information(v, u, n_neighbors=self.k, random_state=self.seed,
                                    estimator=self.estimator, min_samples=self.min_samples)
        terms = {str(k): x for k, x in self._terms(engine).items()}
        _check_clash(terms)
        diag = _scalars({**terms, LOSS_COLUMN: self._last_loss})  # the terms and the loss in one copy
        loss = diag.pop(LOSS_COLUMN)
        row: dict[str, Any] = {"iteration": engine.state.iteration, "epoch": engine.state.epoch,
                               "n_samples": int(len(u)), "mi_knn": mi, **diag, LOSS_COLUMN: loss}
        engine.state.metrics[self.metric_name] = mi
        setattr(engine.state, self.state_attribute, dict(row))
        rank = getattr(engine.state, "rank", None)
        if rank is None:
            import ignite.distributed as idist

            rank = idist.get_rank()
        if rank == 0:
            self._write(row, diag)
