"""Ignite adapter for the classification fairness summary.

MONAI's ``IgniteMetricHandler`` passes exactly ``(y_pred, y)`` to its metric, and the evaluator's
output holds only image, label and pred, so a group-aware metric needs its own ignite ``Metric``
that reads the group codes from ``engine.state.batch`` (as ``MetricsSaver`` reads file names).
:class:`GroupFairnessMetric` does that and holds a
:class:`fairmonai.metrics._classification.ClassificationFairnessMetric`, which buffers per-sample
``(score, label, group)``, gathers the buffers across ranks and computes the summary on all samples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from ignite.engine import Engine
from ignite.metrics import Metric

from ..metrics._classification import ClassificationFairnessMetric, FairnessSummary

__all__ = ["GroupFairnessMetric", "SENSITIVE_SOURCE_MSG", "UNKNOWN_SCALAR_MSG"]

SENSITIVE_SOURCE_MSG = "give exactly one of sensitive_key and batch_transform; got {what}"
UNKNOWN_SCALAR_MSG = "unknown {what} {value!r}; the summary has {allowed}"


def _key_reader(key: str) -> Callable:
    """Read ``key`` from a collated batch dict or a decollated list of dicts."""

    def read(batch):
        if isinstance(batch, Mapping):
            return batch[key]
        return [item[key] for item in batch]

    return read


class GroupFairnessMetric(Metric):
    """Epoch-level group fairness of a classifier, for MONAI evaluators and plain ignite engines.

    Per iteration it takes ``(y_pred, y)`` from ``output_transform(engine.state.output)`` and the
    group codes from ``batch_transform(engine.state.batch)``; at the end of the epoch it gathers
    every rank's samples, computes :func:`classification_fairness_summary` and writes

    * ``engine.state.metrics[name]``: the scalar ``key`` (default ``"auc"``, the overall AUC), so
      the metric can be an evaluator's key metric (checkpoint selection, ``StatsHandler``);
    * ``engine.state.metrics[prefix + s]`` for each scalar ``s`` in ``scalars`` (default: all of
      :meth:`FairnessSummary.scalars`, e.g. ``val_auc``, ``val_eodd``, ``val_es_auc``);
    * ``engine.state.<state_attribute>[name]``: the :class:`FairnessSummary` (per group values,
      intervals), ``engine.state.fairness`` by default.

    Bundle config (validator)::

        "key_metric": {"val_auc": {
            "_target_": "fairmonai.handlers.GroupFairnessMetric",
            "sensitive_key": "race_code",
            "group_names": ["Asian", "Black", "White"],
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}}

    Args:
        sensitive_key: key of the integer group codes in the batch dict (``-1``: in no group).
        batch_transform: instead of ``sensitive_key``, a callable mapping ``engine.state.batch``
            to the ``(B,)`` group codes (a tensor or a list of per-sample values).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)`` (default: identity);
            ``y_pred`` are probabilities ``(B,)``, ``(B, 2)`` or ``(B, K)`` (or a list of
            per-sample tensors), ``y`` labels ``(B,)`` or one-hot.
        key: the scalar written under the attach name (default ``"auc"``).
        prefix: prefix of the other scalars; default: when the attach name ends with ``key``
            (``"val_auc"``), the part before it (``"val_"``), else the name plus ``"_"``.
        scalars: which scalars of the summary to write (default ``None``: all).
        state_attribute: the ``engine.state`` attribute holding ``{name: FairnessSummary}``.
        device: ignite metric device (buffers are kept on the CPU).
        summary_kwargs: ``group_names``, ``threshold``, ``method``, ``agg``, ``eodd_strategy``,
            ``reference_group``, ``num_classes``, ``sigma_ddof``, ``n_bootstrap``,
            ``confidence_level``, ``stratified``, ``seed`` of :func:`classification_fairness_summary`.

    Raises:
        ValueError: both or neither of ``sensitive_key`` and ``batch_transform``; an unknown
            option; at epoch end, a ``key`` or ``scalars`` entry the summary does not have.
    """

    def __init__(
        self,
        sensitive_key: str | None = None,
        *,
        batch_transform: Callable | None = None,
        output_transform: Callable = lambda x: x,
        key: str = "auc",
        prefix: str | None = None,
        scalars: Sequence[str] | None = None,
        state_attribute: str = "fairness",
        device: str | torch.device = "cpu",
        **summary_kwargs,
    ) -> None:
        if (sensitive_key is None) == (batch_transform is None):
            what = "both" if sensitive_key is not None else "neither"
            raise ValueError(SENSITIVE_SOURCE_MSG.format(what=what))
        self._batch_transform = batch_transform if batch_transform is not None else _key_reader(sensitive_key)
        self._metric = ClassificationFairnessMetric(**summary_kwargs)
        self.key = key
        self.prefix = prefix
        self.scalar_names = None if scalars is None else tuple(scalars)
        self.state_attribute = state_attribute
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    def reset(self) -> None:
        self._metric.reset()

    def update(self, output: Sequence) -> None:
        """Buffer one batch ``(y_pred, y, groups)``."""
        y_pred, y, groups = output
        self._metric(y_pred, y, sensitive=groups)

    @torch.no_grad()
    def iteration_completed(self, engine: Engine) -> None:
        output = self._output_transform(engine.state.output)
        if isinstance(output, Mapping):
            output = (output["y_pred"], output["y"])
        groups = self._batch_transform(engine.state.batch)
        if isinstance(groups, tuple) and len(groups) == 1:  # from_engine([key]) on a dict gives a 1-tuple
            groups = groups[0]
        self.update((output[0], output[1], groups))

    def compute(self) -> FairnessSummary:
        """Gather all ranks' samples and return their :class:`FairnessSummary`."""
        return self._metric.aggregate()

    def _prefix(self, name: str) -> str:
        if self.prefix is not None:
            return self.prefix
        return name[: -len(self.key)] if name.endswith(self.key) and name != self.key else f"{name}_"

    def completed(self, engine: Engine, name: str) -> None:
        summary = self.compute()
        values = summary.scalars()
        wanted = self.scalar_names if self.scalar_names is not None else tuple(values)
        for what, v in [("key", self.key)] + [("scalar", s) for s in wanted]:
            if v not in values:
                raise ValueError(UNKNOWN_SCALAR_MSG.format(what=what, value=v, allowed=sorted(values)))
        prefix = self._prefix(name)
        for s in wanted:
            engine.state.metrics[prefix + s] = values[s]
        engine.state.metrics[name] = values[self.key]
        store = getattr(engine.state, self.state_attribute, None)
        if not isinstance(store, dict):
            store = {}
            setattr(engine.state, self.state_attribute, store)
        store[name] = summary
