"""Penalty curves: one shared k-NN estimate of I(u; v) logged during training, for every method alike.

The fairness penalties of FaMI, MIGE and MINE cannot be compared through their own values (E[v * SFD]
is zero by construction; a Donsker-Varadhan bound is on another scale), so the penalty curves (the
FaMI paper's Figure 3) plot one estimate computed the same way for every method and for the
baseline: the mutual information between the sensitive attribute ``u`` and the model output ``v``
(the logits, or a feature layer), estimated by scikit-learn's k-nearest-neighbour estimator on the
last ``window`` training samples. Each method's own diagnostic (mean squared SFD for FaMI and MIGE,
the Donsker-Varadhan value for MINE) is logged beside it, and the SFD penalties' small-group
fallback (samples and groups whose SFD was set to 0) is summed per epoch.

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

__all__ = [
    "PenaltyCurveLogger",
    "knn_mutual_information",
    "representation_from_engine",
    "ESTIMATORS",
    "BASE_COLUMNS",
    "FALLBACK_KEYS",
    "FALLBACK_METRICS",
    "FALLBACK_COLUMNS",
]

ESTIMATORS = ("sum", "joint")
BASE_COLUMNS = ("iteration", "epoch", "n_samples", "mi_knn")
LOSS_COLUMN = "loss"
#: diagnostic keys of the SFD penalties' fallback (rows, groups of one call), summed per epoch.
FALLBACK_KEYS = ("n_fallback", "n_fallback_groups")
#: ``engine.state.metrics`` keys of the per-epoch sums of :data:`FALLBACK_KEYS`.
FALLBACK_METRICS = ("sfd_fallback_rows", "sfd_fallback_groups")
#: columns of the per-epoch fallback CSV.
FALLBACK_COLUMNS = ("epoch", "iteration", "iterations", "rows", "group_batches")


def knn_mutual_information(
    v: np.ndarray | torch.Tensor,
    u: np.ndarray | torch.Tensor,
    *,
    n_neighbors: int = 3,
    random_state: int = 0,
    estimator: str = "sum",
    min_samples: int = 20,
) -> float:
    """k-NN estimate of the mutual information I(u; v) in nats, ``u`` discrete, ``v`` continuous.

    Samples with a negative code (``-1``: in no group) are dropped first. Both estimators are Ross's
    k-NN estimator for a discrete and a continuous variable (B. C. Ross, "Mutual Information between
    Discrete and Continuous Data Sets", PLoS ONE 9(2), 2014), on ``v`` scaled to unit variance per
    column with a 1e-10 jitter (as scikit-learn does):

    * ``"sum"`` (default): ``sklearn.feature_selection.mutual_info_classif(v, u,
      n_neighbors=n_neighbors, random_state=random_state).sum()``, i.e. the sum over the columns of
      ``v`` of I(u; v_j), each column estimated separately. It equals I(u; v) for one column (a
      binary classifier's logit); for several columns it ignores their dependence (it can
      over-count redundant columns and miss information held only jointly), so it is a proxy for
      wide feature layers.
    * ``"joint"``: the same estimator on the vector ``v`` as a whole (max-norm neighbourhoods),
      an estimate of I(u; v) itself; for one column it equals ``"sum"``. Its variance grows with
      the dimension, so prefer it for logits or small layers.

    Args:
        v: ``(N,)`` or ``(N, D)`` continuous values (more dimensions are flattened to ``(N, -1)``).
        u: ``(N,)`` integer group codes.
        n_neighbors: k of the k-NN estimator (scikit-learn's default is 3).
        random_state: seed of the jitter.
        estimator: ``"sum"`` or ``"joint"``.
        min_samples: fewer kept samples than this (or than ``n_neighbors + 1``) give NaN.

    Returns:
        The estimate (>= 0), or NaN when fewer than ``min_samples`` samples are left, fewer than two
        groups have at least two samples, or ``v`` holds NaN or infinity.

    Raises:
        ValueError: an unknown ``estimator``; ``v`` and ``u`` of different lengths.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {list(ESTIMATORS)}")
    v = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
    u = np.asarray(u.detach().cpu() if isinstance(u, torch.Tensor) else u).reshape(-1)
    v = v.reshape(len(v), -1) if v.ndim != 1 else v.reshape(-1, 1)
    if len(v) != len(u):
        raise ValueError(f"v has {len(v)} samples but u has {len(u)}")
    keep = u >= 0
    v, u = v[keep], u[keep].astype(np.int64)
    _, counts = np.unique(u, return_counts=True)
    if len(u) < max(min_samples, n_neighbors + 1) or np.sum(counts >= 2) < 2 or not np.isfinite(v).all():
        return float("nan")
    if estimator == "sum":
        from sklearn.feature_selection import mutual_info_classif

        return float(mutual_info_classif(v, u, n_neighbors=n_neighbors, random_state=random_state).sum())
    return _joint_mi(v, u, n_neighbors, random_state)


def _joint_mi(v: np.ndarray, u: np.ndarray, n_neighbors: int, random_state: int) -> float:
    """Ross (2014) on the whole vector; mirrors sklearn's ``_compute_mi_cd`` with the max-norm."""
    from scipy.special import digamma
    from sklearn.neighbors import KDTree, NearestNeighbors
    from sklearn.preprocessing import scale
    from sklearn.utils import check_random_state

    rng = check_random_state(random_state)
    x = scale(v, with_mean=False, copy=True)
    means = np.maximum(1, np.mean(np.abs(x), axis=0))
    x += 1e-10 * means * rng.standard_normal(size=x.shape)
    n = len(u)
    radius = np.empty(n)
    label_counts = np.empty(n)
    k_all = np.empty(n)
    for label in np.unique(u):
        mask = u == label
        count = int(mask.sum())
        if count > 1:
            k = min(n_neighbors, count - 1)
            nn = NearestNeighbors(n_neighbors=k, metric="chebyshev").fit(x[mask])
            r = nn.kneighbors()[0]
            radius[mask] = np.nextafter(r[:, -1], 0)
            k_all[mask] = k
        label_counts[mask] = count
    mask = label_counts > 1
    x, radius, k_all, label_counts = x[mask], radius[mask], k_all[mask], label_counts[mask]
    m_all = KDTree(x, metric="chebyshev").query_radius(x, radius, count_only=True, return_distance=False)
    mi = digamma(len(x)) + np.mean(digamma(k_all)) - np.mean(digamma(label_counts)) - np.mean(digamma(m_all))
    return float(max(0.0, mi))


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
    """Default ``output_transform``: ``pred`` of a MONAI output dict, or of a decollated list of dicts."""
    if isinstance(output, Mapping):
        return output["pred"]
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
        return torch.stack([torch.as_tensor(o["pred"]) for o in output])
    if isinstance(output, (list, tuple)):
        return output[0]
    return output


def _loss_from_output(output: Any) -> float:
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
        output = output[0]  # decollated: the scalar loss is replicated into every item
    value = output.get("loss") if isinstance(output, Mapping) else None
    if value is None:
        return float("nan")
    return float(torch.as_tensor(value).detach().float().mean())


def _check_clash(names: Any) -> None:
    clash = [n for n in names if n in BASE_COLUMNS or n == LOSS_COLUMN]
    if clash:
        raise ValueError(f"diagnostic names {clash} clash with the fixed columns {list(BASE_COLUMNS) + [LOSS_COLUMN]}")


def _scalar(name: str, value: Any) -> float:
    if value is None:
        return float("nan")
    t = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value)
    if t.numel() != 1:
        raise ValueError(f"diagnostic {name!r} must be a scalar, got shape {tuple(t.shape)}")
    return float(t.float().item())


class PenaltyCurveLogger:
    """Log a shared k-NN estimate of I(u; v) every ``every_n`` iterations, beside the loss's diagnostic.

    Per iteration it keeps ``v`` (the model output ``pred``, detached, float, on the CPU, flattened to
    ``(B, -1)``; or a feature layer through ``representation_transform``) and the group codes
    ``u = engine.state.batch[sensitive_key]`` in a ring buffer of the last ``window`` samples with a
    code >= 0 (``-1``, in no group, is never buffered). Every ``every_n`` iterations (at
    ``ITERATION_COMPLETED`` with ``iteration % every_n == 0``) it

    * computes ``mi_knn`` = :func:`knn_mutual_information` of the buffer (``estimator="sum"``: the sum
      over v's columns of ``mutual_info_classif(v, u, n_neighbors=k, random_state=seed)``; see there),
      NaN when the buffer has fewer than ``min_samples`` samples or fewer than 2 groups;
    * reads the method's diagnostic with ``diagnostic_getter`` (optional);
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

    Diagnostic columns: a mapping returned by the getter gives one column per key (a scalar gives
    the column ``diagnostic``; ``None`` gives NaN). Without ``diagnostic_names`` the columns are the
    keys of the first row; later keys outside them are dropped with one warning, missing ones are NaN.

    Bundle config (train handlers; the same for every method)::

        {"_target_": "fairmonai.handlers.penalty_curve.PenaltyCurveLogger",
         "sensitive_key": "@sensitive_key", "output_dir": "@output_dir", "every_n": 50, "window": 512,
         "k": 3, "seed": "@seed", "diagnostic_getter": "base_loss_function.last_terms"}

    With :class:`fairmonai.losses.FairnessRegularizedLoss` as the trainer's loss,
    ``"base_loss_function.last_terms"`` gives ``task_loss``, ``mu``, ``penalty`` and the penalty's
    ``last_diagnostic`` (``msq_sfd`` for FaMI and MIGE, ``dv`` for MINE, ...);
    ``"base_loss_function.penalty.last_diagnostic"`` gives the penalty's entries only. For the
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
    diagnostic without these keys (MINE, the baseline, a penalty with ``mu = 0``) or without
    ``diagnostic_getter``. Under DDP the line ends ``(epoch E, I iterations per rank, summed over W
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
        estimator: ``"sum"`` (default) or ``"joint"``, see :func:`knn_mutual_information`.
        min_samples: fewer buffered samples give ``mi_knn`` NaN (default 20).
        output_transform: maps ``engine.state.output`` to ``v`` ``(B, ...)``; default: ``pred``.
        representation_transform: maps the engine to ``v`` instead (e.g.
            :func:`representation_from_engine`, the trainer's feature-layer tap); takes precedence.
        diagnostic_getter: the method's diagnostic: a callable ``getter(engine)``, or an attribute
            path on the engine such as ``"base_loss_function.last_terms"``; the value is a
            mapping of scalars, a scalar, or ``None``. Default ``None``: no diagnostic columns.
        diagnostic_names: fix the diagnostic columns (default: the first row's keys).
        filename: CSV file name (default ``"penalty_curve.csv"``).
        append: append to an existing file (default) or truncate it at the first row.
        metric_name: the ``engine.state.metrics`` key (default ``"mi_knn"``).
        state_attribute: the ``engine.state`` attribute holding the last row.
        log_fallback: sum the penalty's small-group fallback per epoch (default ``True``; needs a
            ``diagnostic_getter`` whose value holds ``n_fallback``/``n_fallback_groups``).
        fallback_filename: the per-epoch fallback CSV (default ``"sfd_fallback.csv"``); ``None``
            writes none (the metrics and the log line stay).
        fallback_label: the method's name in the log line; default ``None``: the penalty's class
            name without ``Penalty`` (``"FaMI"``, ``"MIGE"``), or ``"SFD"`` if there is none.
        name: logger name (default ``"fairmonai.handlers.PenaltyCurveLogger"``).

    Raises:
        ValueError: a bad option (at construction); during the run, a batch without
            ``sensitive_key``, ``v`` and ``u`` of different lengths, a diagnostic attribute path that
            does not resolve, a diagnostic name clashing with a fixed column.
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
        diagnostic_getter: Callable | str | None = None,
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
        if diagnostic_getter is not None and not (callable(diagnostic_getter) or isinstance(diagnostic_getter, str)):
            raise ValueError(
                f"diagnostic_getter must be a callable, an attribute path or None, got {diagnostic_getter!r}"
            )
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
        self.diagnostic_getter = diagnostic_getter
        self.diagnostic_names = None if diagnostic_names is None else list(diagnostic_names)
        self.filename = filename
        self.append = append
        self.metric_name = metric_name
        self.state_attribute = state_attribute
        self.log_fallback = bool(log_fallback)
        self.fallback_filename = fallback_filename
        self.fallback_label = fallback_label
        self.logger = logging.getLogger(name)
        self._fallback = np.zeros(3)  # rows, group-batches, iterations with the keys (this epoch, this rank)
        self._fallback_file_started = False
        self._v: np.ndarray | None = None
        self._u = np.zeros(0, dtype=np.int64)
        self._last_loss = float("nan")
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
        return self.log_fallback and self.diagnostic_getter is not None

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
        v = torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v).float().cpu()
        v = (v.reshape(v.shape[0], -1) if v.ndim > 0 else v.reshape(1, 1)).numpy().astype(np.float64)
        u = self._codes(engine.state.batch)
        if len(u) != len(v):
            raise ValueError(f"v has {len(v)} samples but batch[{self.sensitive_key!r}] has {len(u)}")
        keep = u >= 0
        v, u = v[keep], u[keep]
        if self._v is None or self._v.shape[1] != v.shape[1]:
            self._v = np.zeros((0, v.shape[1]))
            self._u = np.zeros(0, dtype=np.int64)
        self._v = np.concatenate([self._v, v])[-self.window :]
        self._u = np.concatenate([self._u, u])[-self.window :]
        self._last_loss = _loss_from_output(engine.state.output)
        if self._tracks_fallback:
            self._add_fallback(self._diagnostics(engine))

    # small-group fallback -------------------------------------------------------------------------
    def reset_fallback(self, engine: Engine | None = None) -> None:
        """Zero this epoch's fallback sums (``EPOCH_STARTED``)."""
        self._fallback = np.zeros(3)

    def _add_fallback(self, diag: Mapping[str, float]) -> None:
        if not any(k in diag for k in FALLBACK_KEYS):
            return
        for i, key in enumerate(FALLBACK_KEYS):
            value = diag.get(key, 0.0)
            self._fallback[i] += value if np.isfinite(value) else 0.0
        self._fallback[2] += 1

    def fallback_totals(self) -> dict[str, int]:
        """This rank's sums since the epoch started: ``rows``, ``group_batches``, ``iterations``."""
        rows, groups, iters = (int(round(x)) for x in self._fallback)
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
        totals = torch.as_tensor(self._fallback, dtype=torch.float64)
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
        v = self._v if self._v is not None else np.zeros((0, 1))
        return v.copy(), self._u.copy()

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
    def _diagnostics(self, engine: Engine) -> dict[str, float]:
        getter = self.diagnostic_getter
        if getter is None:
            return {}
        if isinstance(getter, str):
            value: Any = engine
            for part in getter.split("."):
                if not hasattr(value, part):
                    raise ValueError(f"diagnostic_getter {getter!r}: {type(value).__name__} has no attribute {part!r}")
                value = getattr(value, part)
        else:
            value = getter(engine)
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return {str(k): _scalar(str(k), x) for k, x in value.items()}
        return {"diagnostic": _scalar("diagnostic", value)}

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
        diag = self._diagnostics(engine)
        _check_clash(diag)
        row: dict[str, Any] = {"iteration": engine.state.iteration, "epoch": engine.state.epoch,
                               "n_samples": int(len(u)), "mi_knn": mi, **diag, LOSS_COLUMN: self._last_loss}
        engine.state.metrics[self.metric_name] = mi
        setattr(engine.state, self.state_attribute, dict(row))
        rank = getattr(engine.state, "rank", None)
        if rank is None:
            import ignite.distributed as idist

            rank = idist.get_rank()
        if rank == 0:
            self._write(row, diag)
