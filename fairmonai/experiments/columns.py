"""Table columns read from a run's output files, as an experiment file declares them.

A source (see :mod:`fairmonai.experiments.grid`) is either a JSON file and a dot-separated key path
(``{"json": "eval/report_{split}/report.json", "key": "attributes.race.metrics.auc.overall"}``) or a
CSV file, a column and a reduction over some of its rows (``{"csv": "eval/scores_{split}.csv",
"column": "dice", "reduce": "mean", "where": {"age_group": "61-70"}}``). Paths are relative to the
run's folder; ``{split}`` is the split of the table row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..errors import InputError

__all__ = ["ColumnError", "column_value", "column_interval", "json_value", "json_interval", "csv_value"]


class ColumnError(InputError):
    """A column's file is missing, or lacks the key, CSV column or filter column that a source names."""


def _json_at(file: Path, key: str) -> object:
    if not file.is_file():
        raise ColumnError(f"{file}: no such file (column source 'json')")
    value: object = json.loads(file.read_text())
    done = []
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            there = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise ColumnError(f"{file}: no key '{part}' at '{'.'.join(done) or '<top>'}' (key path '{key}'); "
                              f"found {there}")
        value = value[part]
        done.append(part)
    return value


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def json_interval(file: str | Path, key: str) -> tuple[float | None, float | None]:
    """The interval ``[low, high]`` at the dot-separated ``key`` of JSON ``file`` (a bootstrap CI);
    ``(None, None)`` where the file holds ``null`` (e.g. a group whose metric is undefined).

    Raises:
        ColumnError: the file or a key is missing, or the value is not a list of two numbers (or nulls).
    """
    file = Path(file)
    value = _json_at(file, key)
    if value is None:
        return None, None
    if not isinstance(value, list) or len(value) != 2 or not all(v is None or _is_number(v) for v in value):
        raise ColumnError(f"{file}: '{key}' is {value!r}, not an interval [low, high]")
    return value[0], value[1]


def json_value(file: str | Path, key: str) -> float | None:
    """The number at the dot-separated ``key`` of JSON ``file``; ``None`` where the file holds ``null``.

    Raises:
        ColumnError: the file is missing, a key of the path is absent (the message names it and the
            keys present there), or the value is not a number.
    """
    file = Path(file)
    value = _json_at(file, key)
    if value is None:
        return None
    if not _is_number(value):
        raise ColumnError(f"{file}: '{key}' is {value!r}, not a number")
    return value


def _matches(frame: pd.DataFrame, where: Mapping[str, str], file: Path) -> pd.Series:
    missing = [c for c in where if c not in frame.columns]
    if missing:
        raise ColumnError(f"{file}: no column '{missing[0]}' to filter on; columns {list(frame.columns)}")
    hit = pd.Series(True, index=frame.index)
    for c, v in where.items():
        hit &= frame[c].fillna("") == v
    return hit


def csv_value(file: str | Path, column: str, reduce: str, *, where: Mapping[str, str] | None = None,
              unless: Mapping[str, str] | None = None, from_fraction: float = 0.0) -> float | int | None:
    """A reduction of ``column`` of CSV ``file`` over the rows from ``floor(from_fraction * n)`` on that
    match all of ``where`` and not all of ``unless`` (text comparison; an empty cell matches ``""``).

    ``reduce`` is ``mean``, ``sum``, ``min``, ``max``, ``last`` or ``count`` (the number of rows kept);
    the others are over the column's non-empty values, ``None`` when there are none.

    Raises:
        ColumnError: the file is missing, or lacks ``column`` or a filter column.
    """
    file = Path(file)
    if not file.is_file():
        raise ColumnError(f"{file}: no such file (column source 'csv')")
    header = pd.read_csv(file, nrows=0).columns
    # filter columns compared as text; the value column parsed as pandas parses numbers
    frame = pd.read_csv(file, dtype={c: str for c in {*(where or {}), *(unless or {})} if c in header})
    if column not in frame.columns:
        raise ColumnError(f"{file}: no column '{column}'; columns {list(frame.columns)}")
    frame = frame.iloc[math.floor(from_fraction * len(frame)):]
    if where:
        frame = frame[_matches(frame, where, file)]
    if unless:
        frame = frame[~_matches(frame, unless, file)]
    if reduce == "count":
        return int(len(frame))
    values = frame[column].dropna()
    if not pd.api.types.is_numeric_dtype(values):
        raise ColumnError(f"{file}: column '{column}' is not numeric")
    if values.empty:
        return None
    if reduce == "last":
        return float(values.iloc[-1])
    return float(getattr(values, reduce)())


def column_value(run_dir: str | Path, split: str, source: Mapping) -> float | int | None:
    """The value of one column ``source`` (from an experiment file) for the run in ``run_dir`` and ``split``.

    Raises:
        ColumnError: see :func:`json_value` and :func:`csv_value`.
    """
    if "json" in source:
        return json_value(Path(run_dir) / source["json"].replace("{split}", split), source["key"])
    return csv_value(Path(run_dir) / source["csv"].replace("{split}", split), source["column"], source["reduce"],
                     where=source.get("where"), unless=source.get("unless"),
                     from_fraction=source.get("from_fraction", 0.0))


def column_interval(run_dir: str | Path, split: str, source: Mapping) -> tuple[float | None, float | None] | None:
    """The interval of column ``source`` (its ``ci`` key path) for the run in ``run_dir`` and ``split``;
    ``None`` for a source without ``ci``.

    Raises:
        ColumnError: see :func:`json_interval`.
    """
    if "ci" not in source:
        return None
    return json_interval(Path(run_dir) / source["json"].replace("{split}", split), source["ci"])
