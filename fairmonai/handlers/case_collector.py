"""Per-case rows of an evaluation epoch, gathered across ranks, one row per case id.

:class:`CaseCollector` is the base of the handlers that keep one row per evaluated case
(:class:`~fairmonai.handlers.PredictionsWriter`, :class:`~fairmonai.handlers.SegmentationScoresWriter`,
:class:`~fairmonai.handlers.SubgroupReweighting`): it resets, collects, gathers, de-duplicates and
reads attribute values one way, and the subclass says what a row holds and what to do with the rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.utils import string_list_all_gather

from ..attribute_codes import EXCLUDED_CODE, EXCLUDED_VALUE, code_key, is_missing
from ._samples import per_sample

__all__ = ["CaseCollector", "scalar", "attribute_value"]

_MSG_CLASH = "{owner}: case id '{case}' appears twice with different {what} ({a} and {b}); case ids must be unique"


def scalar(value: Any) -> Any:
    """One sample's value as a python scalar: a 0-d or one-element tensor or array, a numpy scalar, or a
    one-element list as its item; anything else (a string, a longer tensor) unchanged.

    Example:
        >>> scalar(torch.tensor([3])), scalar(np.float32(0.5)), scalar(["a"]), scalar("b")
        (3, 0.5, 'a', 'b')
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().reshape(-1)[0].item() if value.numel() == 1 else value
    if isinstance(value, np.ndarray):
        return value.reshape(-1)[0].item() if value.size == 1 else value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return scalar(value[0])
    return value


def _absent(value: Any) -> bool:
    """``None``, NaN (float, numpy or ``pd.NA``) or a missing-value token."""
    if not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value):
        return True
    return is_missing(value)


def attribute_value(value: Any, code: Any = None) -> str:
    """An attribute value as the per-case files and subgroup mining read it.

    :data:`~fairmonai.attribute_codes.EXCLUDED_VALUE` (``"unknown"``) when the value is missing or its
    code is :data:`~fairmonai.attribute_codes.EXCLUDED_CODE` (the manifest's missing-value policy
    ``exclude``), else the value as a stripped string.

    Example:
        >>> attribute_value("Black", 1), attribute_value("Black", -1), attribute_value(None), attribute_value(" F ")
        ('Black', 'unknown', 'unknown', 'F')
    """
    value, code = scalar(value), scalar(code)
    if _absent(value) or (not _absent(code) and int(code) == EXCLUDED_CODE):
        return EXCLUDED_VALUE
    return str(value).strip()


class CaseCollector:
    """Collect one row per case over an evaluation epoch; gather the rows of every rank.

    A subclass implements :meth:`rows` (the rows of one iteration, each ``[case_id, attributes,
    data]`` with ``attributes`` from :meth:`attributes_of`) and :meth:`__call__` (the epoch's end,
    which calls :meth:`gather`). :meth:`attach_collection` registers, on ``engine``:

    * ``EPOCH_STARTED``: :meth:`reset` (no rows);
    * ``ITERATION_COMPLETED``: :meth:`collect`, each row of :meth:`rows` kept as one JSON string;
    * ``EPOCH_COMPLETED``: ``self``.

    :meth:`gather` joins every rank's rows (``monai.utils.string_list_all_gather``: one collective for
    the whole row, so id, attributes and data stay aligned; a collective, so every rank must call it)
    and keeps one row per case id, the first: ``DistributedSampler`` pads ranks with repeated cases.
    Two rows of one id whose attributes, or the part of the data :meth:`identity` names, differ are two
    cases sharing an id and raise ``ValueError`` (:meth:`clash`). Only :attr:`save_rank` writes files
    (:meth:`is_save_rank`). An excluded or missing attribute value is
    :data:`~fairmonai.attribute_codes.EXCLUDED_VALUE` (:func:`attribute_value`), as in the manifest.

    MONAI's ``ClassificationSaver`` gathers one output tensor and the image file names and
    ``MetricsSaver`` the metric details by file name; neither carries string attributes or labels with
    a case id, nor removes the cases the sampler repeats, so they do not fit here.

    Args:
        attributes: attribute names read per case (a name or a list; none by default).
        case_id_key: key of the case id.
        save_rank: the rank that writes (default 0).
        name: logger name.

    Raises:
        ValueError: an attribute named twice; ``save_rank`` negative; at the epoch's end, ``save_rank``
            not below the number of ranks, or one case id on two different cases.
    """

    def __init__(
        self,
        attributes: Sequence[str] | str | None = None,
        *,
        case_id_key: str = "case_id",
        save_rank: int = 0,
        name: str | None = None,
    ) -> None:
        if isinstance(attributes, str):
            attributes = [attributes]
        self.attributes = [str(a) for a in (attributes or [])]
        if len(set(self.attributes)) != len(self.attributes):
            raise ValueError(f"{self.owner}: attributes named more than once: {self.attributes}")
        if save_rank < 0:
            raise ValueError(f"save_rank must be >= 0, got {save_rank}")
        self.case_id_key = case_id_key
        self.save_rank = save_rank
        self.logger = logging.getLogger(name)
        self._rows: list[str] = []

    @property
    def owner(self) -> str:
        """The class name, for messages."""
        return type(self).__name__

    # ---- collect

    def attach_collection(self, engine: Engine) -> None:
        """Register :meth:`reset`, :meth:`collect` and ``self`` on ``engine``'s epoch and iteration events."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def attach(self, engine: Engine) -> None:
        """Register the collection on ``engine`` (:meth:`attach_collection`)."""
        self.attach_collection(engine)

    def reset(self, _engine: Engine | None = None) -> None:
        """Forget the rows collected so far."""
        self._rows = []

    def collect(self, engine: Engine) -> None:
        """Keep the rows :meth:`rows` reads from this iteration."""
        self._rows.extend(json.dumps(r) for r in self.rows(engine))

    def rows(self, engine: Engine) -> list[list]:
        """The rows of this iteration's cases, each ``[case_id, attributes, data]`` (JSON-serialisable)."""
        raise NotImplementedError

    def samples(self, data: Any, keys: Sequence[str], *, keep_none: bool = False) -> list[dict]:
        """``engine.state.batch`` or ``engine.state.output`` as per-sample dicts of ``keys``
        (:func:`~fairmonai.handlers._samples.per_sample`)."""
        return per_sample(data, keys, self.owner, keep_none=keep_none)

    def attribute_keys(self) -> list[str]:
        """The batch keys of the attributes and their codes."""
        return [k for a in self.attributes for k in (a, code_key(a))]

    def case_id(self, sample: Mapping) -> str:
        """The case id of one sample as a string.

        Raises:
            ValueError: the sample has no :attr:`case_id_key`.
        """
        if self.case_id_key not in sample:
            raise ValueError(f"{self.owner}: a case has no case id key '{self.case_id_key}' (keys: {sorted(sample)})")
        return str(scalar(sample[self.case_id_key]))

    def missing_attribute(self, attribute: str, case: str, sample: Mapping) -> str:
        """The error message for a sample without ``attribute``."""
        return f"{self.owner}: attribute '{attribute}' is not in the batch of case '{case}' (keys read: {sorted(sample)})"

    def attributes_of(self, sample: Mapping, case: str) -> list[str]:
        """The :attr:`attributes` of one sample, each by :func:`attribute_value` (its code from ``<attr>_code``).

        Raises:
            ValueError: an attribute missing from the sample (:meth:`missing_attribute`).
        """
        out = []
        for a in self.attributes:
            if a not in sample:
                raise ValueError(self.missing_attribute(a, case, sample))
            out.append(attribute_value(sample[a], sample.get(code_key(a))))
        return out

    # ---- gather

    def identity(self, data: Any) -> Any:
        """The part of a row's data that must be equal in two rows of one case id (``None``: nothing
        beyond the attributes)."""
        return None

    def clash(self, first: list, row: list) -> str:
        """The error message for two rows of one case id that are two cases (:meth:`gather`)."""
        return _MSG_CLASH.format(owner=self.owner, case=row[0], what="attributes", a=first[1], b=row[1])

    def check_save_rank(self) -> None:
        """Raise ``ValueError`` when :attr:`save_rank` is not a rank of this run."""
        ws = idist.get_world_size()
        if self.save_rank >= ws:
            raise ValueError(f"save_rank {self.save_rank} is not below the number of ranks ({ws})")

    def is_save_rank(self) -> bool:
        """Whether this process writes the files."""
        return idist.get_rank() == self.save_rank

    def gather(self) -> tuple[dict[str, list], int]:
        """Every rank's rows, one per case id (the first), sorted by case id; a collective.

        Returns:
            ``({case_id: [case_id, attributes, data]}, n_differ)``: ``n_differ`` counts repeated rows
            whose data differ from the kept row outside :meth:`identity`. Repeated rows are logged.

        Raises:
            ValueError: ``save_rank`` not below the number of ranks; two rows of one case id whose
                attributes or :meth:`identity` differ.
        """
        self.check_save_rank()
        rows = string_list_all_gather(strings=self._rows) if idist.get_world_size() > 1 else list(self._rows)
        rows = [json.loads(s) for s in rows if s]  # a rank without rows contributes one empty string
        seen: dict[str, list] = {}
        n_differ = 0
        for r in rows:
            first = seen.setdefault(r[0], r)
            if (first[1], self.identity(first[2])) != (r[1], self.identity(r[2])):
                raise ValueError(self.clash(first, r))
            n_differ += first[2] != r[2]
        if len(seen) < len(rows):
            self.logger.info("%s: %d repeated case(s) (sampler padding) counted once", self.owner,
                             len(rows) - len(seen))
        return {c: seen[c] for c in sorted(seen)}, n_differ

    def __call__(self, engine: Engine) -> None:
        """The epoch's end: :meth:`gather`, then what the subclass does with the rows."""
        raise NotImplementedError
