"""Checks of a predictions file, run before anything heavy is imported and before anything is written.

:func:`check_predictions` reads the CSV with pandas only and checks everything the report needs:
the file, its columns, every score (range and finiteness, naming the case and the column) and every
attribute value against the schema; it returns the parsed arrays and, per attribute, the group
codes and how many cases the missing-value policy excluded or mapped to ``unknown``. Only then does
:func:`fairmonai.reports.write_report` import torch, MONAI and matplotlib, so a bad file is rejected
before those slow imports.

Value rules (the columns :class:`~fairmonai.handlers.PredictionsWriter` and
:class:`~fairmonai.handlers.SegmentationScoresWriter` write):

* ``label``: a class index (integer >= 0); 0 or 1 with a ``score`` column, below ``K`` with
  ``prob_0 .. prob_{K-1}``;
* ``score`` and each ``prob_k``: in [0, 1]; with two or more ``prob_*`` columns each row sums to 1
  within :data:`PROB_SUM_TOLERANCE` (the writer's tolerance);
* ``dice``: in [0, 1];
* ``normhd``: finite and >= 0. Values above 1 are legal: the public MAMA-MIA scoring script does
  not clip NormHD (``clip_normhd=False`` of :func:`fairmonai.metrics.case_scores` reproduces it);
* ``hd95``: >= 0, or ``inf`` (exactly one of the two masks empty);
* no value may be empty, NaN or (except ``hd95``) infinite.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..attribute_codes import EXCLUDED_VALUE, is_missing
from ..data.manifest import AttributeSpec, load_schema, normalise_category
from ..errors import InputError

__all__ = [
    "ReportInputError",
    "CheckedPredictions",
    "RESERVED_COLUMNS",
    "PROB_SUM_TOLERANCE",
    "read_predictions",
    "detect_task",
    "check_predictions",
    "check_report_options",
    "check_output_dir",
    "check_unit_interval",
    "encode_attribute",
]

#: Columns that are never sensitive attributes.
RESERVED_COLUMNS = frozenset({
    "case_id", "label", "score", "prediction", "dice", "hd95", "normhd", "pred_voxels", "label_voxels",
    "segmentation_file", "split", "fold",
})
#: Largest allowed ``|sum of prob_* - 1|`` of one row (as :class:`~fairmonai.handlers.PredictionsWriter`).
PROB_SUM_TOLERANCE = 1e-3

# Error messages (tests compare the text). Every message is one line.
MSG_NOT_FOUND = "{path}: predictions file not found"
MSG_NOT_A_FILE = "{path}: not a file"
MSG_EMPTY_FILE = "{path}: the predictions file is empty (0 bytes)"
MSG_NOT_CSV = "{path}: cannot be read as CSV ({error})"
MSG_NO_ROWS = "{path}: the predictions file has a header but no rows"
MSG_MISSING_COLUMN = "{path}: missing column '{column}'"
MSG_EMPTY_CASE_ID = "{path}: line {line}: column 'case_id' is empty"
MSG_DUPLICATE_CASE = "{path}: duplicate case_id '{case}' (lines {first} and {second})"
MSG_NO_TASK = (
    "{path}: cannot tell the task: expected 'dice' (segmentation) or 'label' with 'score' / 'prob_*' columns "
    "(classification); columns are {columns}"
)
MSG_NO_HD = "{path}: segmentation predictions need a 'normhd' or 'hd95' column"
MSG_PROB_COLUMNS = "{path}: class probability columns must be prob_0 .. prob_{{K-1}} with K >= 2, got {columns}"
MSG_MISSING_ATTRIBUTES = "{path}: missing attribute column(s) {columns}"
MSG_NO_ATTRIBUTES = "{path}: no sensitive attribute column found; name them with --attributes"
MSG_RESERVED_ATTRIBUTE = "{path}: column(s) {columns} hold scores or ids, not sensitive attributes"
#: A bad value: ``problem`` says what is wrong, ``more`` how many other cases of the column are bad.
MSG_BAD_VALUE = "{path}: case '{case}', column '{column}': {problem}{more}"
MSG_OUT_IS_FILE = "{out}: the output folder is an existing file"
MSG_BAD_OPTION = "{name} must be {allowed}, got {value!r}"


class ReportInputError(InputError):
    """A predictions file that cannot be reported on; the message names the file, case and column."""


@dataclass
class CheckedPredictions:
    """A predictions file that passed :func:`check_predictions`: parsed values, ready for the metrics.

    Attributes:
        path: the file.
        df: the table, every cell a string.
        task: ``"classification"`` or ``"segmentation"``.
        attributes: the sensitive attribute columns, in report order.
        codes: per attribute, the group code of each case (``-1``: in no group).
        groups: per attribute, the group names in code order.
        missing: per attribute, ``{"policy", "n_excluded", "n_unknown", "unknown_category"}``:
            the schema's missing-value policy (``None`` without a schema entry), the cases left out
            of the attribute's groups (empty cell, or ``"unknown"``, the per-case writers' value of a case in no
            group, without a schema or under policy ``exclude``, unless it is a declared category), and
            the cases in the policy-``category`` group (``unknown_category``, e.g. ``"unknown"``).
        values: the numbers: ``label`` and ``scores`` (``(N,)`` or ``(N, K)``) for classification;
            ``dice`` and ``normhd`` (or ``hd95``) for segmentation.
        warnings: notes about the input to show in the report.
    """

    path: Path
    df: pd.DataFrame
    task: str
    attributes: list[str]
    codes: dict[str, np.ndarray]
    groups: dict[str, list[str]]
    missing: dict[str, dict]
    values: dict[str, np.ndarray]
    warnings: list[str] = field(default_factory=list)


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a predictions CSV (cells as strings, nothing dropped) and check its ``case_id`` column.

    Raises:
        ReportInputError: a missing, empty or unparseable file, no rows, no ``case_id`` column, an
            empty or duplicate case id.
    """
    path = Path(path)
    if not path.exists():
        raise ReportInputError(MSG_NOT_FOUND.format(path=path))
    if not path.is_file():
        raise ReportInputError(MSG_NOT_A_FILE.format(path=path))
    if path.stat().st_size == 0:
        raise ReportInputError(MSG_EMPTY_FILE.format(path=path))
    try:
        with warnings.catch_warnings():  # a row longer than the header: an error, not a shifted table
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        error = "a row has more fields than the header" if isinstance(e, pd.errors.ParserWarning) else _one_line(e)
        raise ReportInputError(MSG_NOT_CSV.format(path=path, error=error)) from None
    if "case_id" not in df.columns:
        raise ReportInputError(MSG_MISSING_COLUMN.format(path=path, column="case_id"))
    if len(df) == 0:
        raise ReportInputError(MSG_NO_ROWS.format(path=path))
    ids = df["case_id"].str.strip()
    empty = ids.map(is_missing)
    if empty.any():
        raise ReportInputError(MSG_EMPTY_CASE_ID.format(path=path, line=int(np.flatnonzero(empty)[0]) + 2))
    dup = ids.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(ids == ids.iloc[i])[0])
        raise ReportInputError(MSG_DUPLICATE_CASE.format(path=path, case=ids.iloc[i], first=first + 2, second=i + 2))
    df["case_id"] = ids
    return df


def detect_task(df: pd.DataFrame, path: str | os.PathLike = "predictions") -> str:
    """``"segmentation"`` if the file has a ``dice`` column, ``"classification"`` if it has ``label``
    and ``score`` or ``prob_*`` columns."""
    if "dice" in df.columns:
        return "segmentation"
    if "label" in df.columns and ("score" in df.columns or any(c.startswith("prob_") for c in df.columns)):
        return "classification"
    raise ReportInputError(MSG_NO_TASK.format(path=path, columns=list(df.columns)))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _bad(path, df, column: str, mask: np.ndarray, problem) -> None:
    """Raise for the first case where ``mask`` is set; ``problem(i)`` describes that case's value."""
    if not mask.any():
        return
    idx = np.flatnonzero(mask)
    i = int(idx[0])
    more = f" ({len(idx) - 1} more case(s) in this column)" if len(idx) > 1 else ""
    raise ReportInputError(MSG_BAD_VALUE.format(path=path, case=df["case_id"].iloc[i], column=column,
                                                problem=problem(i), more=more))


def _numbers(df: pd.DataFrame, column: str, path, *, allow_inf: bool = False) -> np.ndarray:
    """A column as float64: every cell present, numeric, not NaN, finite (``+inf`` if ``allow_inf``)."""
    raw = df[column].astype(str)
    missing = raw.map(is_missing).to_numpy()
    _bad(path, df, column, missing, lambda i: f"value {raw.iloc[i].strip()!r} is missing (empty or NaN)")
    values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    not_number = np.isnan(values) & ~raw.str.strip().str.lower().isin(["nan", "+nan", "-nan"]).to_numpy()
    _bad(path, df, column, not_number, lambda i: f"value {raw.iloc[i].strip()!r} is not a number")
    _bad(path, df, column, np.isnan(values), lambda i: f"value {raw.iloc[i].strip()!r} is NaN")
    bad_inf = np.isneginf(values) | (np.isposinf(values) & (not allow_inf))
    _bad(path, df, column, bad_inf, lambda i: f"value {raw.iloc[i].strip()!r} is not finite")
    return values


def check_unit_interval(df: pd.DataFrame, column: str, path) -> np.ndarray:
    """A column as float64, every value present, finite and in [0, 1] (else ``ReportInputError`` naming the case)."""
    v = _numbers(df, column, path)
    _bad(path, df, column, (v < 0) | (v > 1), lambda i: f"value {v[i]:g} is outside [0, 1]")
    return v


def _prob_columns(df: pd.DataFrame, path) -> list[str]:
    cols = [c for c in df.columns if c.startswith("prob_")]
    if not cols:
        return []
    suffix = [c[len("prob_"):] for c in cols]
    if not all(s.isdigit() for s in suffix) or sorted(int(s) for s in suffix) != list(range(len(cols))) \
            or len(cols) < 2:
        raise ReportInputError(MSG_PROB_COLUMNS.format(path=path, columns=cols))
    return sorted(cols, key=lambda c: int(c[len("prob_"):]))


def _check_classification(df, path) -> dict[str, np.ndarray]:
    prob_cols = _prob_columns(df, path)
    label = _numbers(df, "label", path)
    _bad(path, df, "label", (label < 0) | (label != np.round(label)),
         lambda i: f"label {label[i]:g} is not a class index (0, 1, ...)")
    score = check_unit_interval(df, "score", path) if "score" in df.columns else None
    if prob_cols:
        probs = np.stack([check_unit_interval(df, c, path) for c in prob_cols], axis=1)
        total = probs.sum(axis=1)
        span = f"{prob_cols[0]}..{prob_cols[-1]}"
        _bad(path, df, span, np.abs(total - 1.0) > PROB_SUM_TOLERANCE,
             lambda i: f"probabilities sum to {total[i]:.6g}, not 1 (tolerance {PROB_SUM_TOLERANCE:g})")
        k = len(prob_cols)
        _bad(path, df, "label", label >= k, lambda i: f"label {label[i]:g} is not among the classes 0..{k - 1} "
                                                      f"of the {span} columns")
        scores = probs
    else:
        _bad(path, df, "label", label > 1, lambda i: f"label {label[i]:g} is not 0 or 1 (a binary 'score' "
                                                     "column; use prob_0..prob_{K-1} for K classes)")
        scores = score
    return {"label": label.astype(np.int64), "scores": scores}


def _check_segmentation(df, path) -> dict[str, np.ndarray]:
    out = {"dice": check_unit_interval(df, "dice", path)}
    if "normhd" not in df.columns and "hd95" not in df.columns:
        raise ReportInputError(MSG_NO_HD.format(path=path))
    if "normhd" in df.columns:
        v = _numbers(df, "normhd", path)
        _bad(path, df, "normhd", v < 0, lambda i: f"value {v[i]:g} is negative (NormHD = HD95 / hd_max is >= 0)")
        out["normhd"] = v
    if "hd95" in df.columns:
        v = _numbers(df, "hd95", path, allow_inf=True)
        _bad(path, df, "hd95", v < 0, lambda i: f"value {v[i]:g} is negative (a distance; inf when one mask is "
                                                "empty)")
        out["hd95"] = v
    return out


def encode_attribute(df: pd.DataFrame, path, attr: str, spec: AttributeSpec | None,
                     categories: Sequence[str] | None = None):
    """Group codes of one attribute column, under the schema's categories and missing-value policy.

    Args:
        df: the table (string cells).
        path: the file named in errors.
        attr: the column.
        spec: the schema's entry for ``attr``; ``None``: no policy, an empty cell is in no group.
        categories: group names when ``spec`` is ``None`` (default: the sorted values present).

    Returns:
        ``(codes, groups, missing, notes)``: codes ``(N,)`` (``-1``: in no group), the group
        names in code order, the missing-value counts (see :class:`CheckedPredictions`) and notes.

    Raises:
        ReportInputError: a value not among the categories, naming the case and the column.
    """
    values = [normalise_category(v) for v in df[attr]]
    policy = spec.missing if spec is not None else None
    unknown_category = spec.missing_category if policy == "category" else None
    declared = spec.categories if spec is not None else categories
    if policy in (None, "exclude") and (declared is None or EXCLUDED_VALUE not in declared):
        # the per-case writers' value of a case in no group (code -1), unless a declared category; under
        # policy 'error' no case can be in no group, so there "unknown" is an error like any other value
        values = [None if v == EXCLUDED_VALUE else v for v in values]
    n_empty = sum(v is None for v in values)
    notes = []
    if spec is None:
        categories = list(categories) if categories is not None else sorted({v for v in values if v is not None})
        allowed = set(categories)
        bad = np.array([v is not None and v not in allowed for v in values])
        _bad(path, df, attr, bad, lambda i: f"value {values[i]!r} is not one of the groups {categories}")
    else:
        categories = list(spec.categories)
        if policy == "category":  # a missing value becomes the unknown group, as the manifest does
            values = [unknown_category if v is None else v for v in values]
        elif policy == "error" and n_empty:
            notes.append(f"{attr}: {n_empty} case(s) without a value although the schema's missing-value policy is "
                         "'error'; they are left out of its groups")
        allowed = set(categories)
        bad = np.array([v is not None and v not in allowed for v in values])
        _bad(path, df, attr, bad, lambda i: f"value {values[i]!r} is not one of the schema's categories {categories}")
    index = {c: i for i, c in enumerate(categories)}
    codes = np.array([-1 if v is None else index[v] for v in values], dtype=np.int64)
    missing = {
        "policy": policy,
        "n_excluded": int((codes == -1).sum()),
        "n_unknown": int(sum(v == unknown_category for v in values)) if unknown_category is not None else 0,
        "unknown_category": unknown_category,
    }
    return codes, categories, missing, notes


def _default_attributes(df: pd.DataFrame, schema) -> list[str]:
    if schema is not None:
        attrs = [a for a in schema.attributes if a in df.columns]
        if attrs:
            return attrs
    return [c for c in df.columns
            if c not in RESERVED_COLUMNS and not c.startswith("prob_") and not c.endswith("_code")
            and df[c].nunique() <= 20]


def check_report_options(*, n_bootstrap=1000, confidence_level=0.95, threshold=0.5, eodd_strategy=None,
                         ts_weight=0.5) -> None:
    """Check :func:`~fairmonai.reports.write_report`'s options (``ReportInputError`` naming the allowed values)."""
    def bad(name, allowed, value):
        raise ReportInputError(MSG_BAD_OPTION.format(name=name, allowed=allowed, value=value))

    def number(x):
        return not isinstance(x, bool) and isinstance(x, (int, float, np.integer, np.floating)) and math.isfinite(x)

    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        bad("n_bootstrap", "an integer >= 0", n_bootstrap)
    if not number(confidence_level) or not 0 < confidence_level < 1:
        bad("confidence_level", "a number in (0, 1)", confidence_level)
    if not number(threshold) or not 0 <= threshold <= 1:
        bad("threshold", "a number in [0, 1]", threshold)
    if eodd_strategy is not None and eodd_strategy not in ("max_pair", "one_vs_rest"):
        bad("eodd_strategy", "None, 'max_pair' or 'one_vs_rest'", eodd_strategy)
    if not number(ts_weight) or not 0 <= ts_weight <= 1:
        bad("ts_weight", "a number in [0, 1]", ts_weight)


def check_predictions(
    predictions: str | os.PathLike,
    *,
    attributes: Sequence[str] | None = None,
    schema=None,
) -> CheckedPredictions:
    """Read and check a predictions file completely (pandas and numpy only; nothing written).

    Args:
        predictions: the CSV.
        attributes: sensitive attribute columns (default: the schema's attributes in the file, else
            every other column with at most 20 distinct values).
        schema: dataset name, schema path or :class:`~fairmonai.data.ManifestSchema`: category
            order and missing-value policy of each attribute.

    Returns:
        :class:`CheckedPredictions`.

    Raises:
        ReportInputError: the first problem, naming the file, and the case and column where one is
            at fault (see the module docstring for the rules).
        ManifestError: the schema cannot be loaded.
    """
    path = Path(predictions)
    schema = load_schema(schema) if schema is not None else None
    df = read_predictions(path)
    task = detect_task(df, path)
    attributes = list(_default_attributes(df, schema) if attributes is None else attributes)
    missing_cols = [a for a in attributes if a not in df.columns]
    if missing_cols:
        raise ReportInputError(MSG_MISSING_ATTRIBUTES.format(path=path, columns=missing_cols))
    if not attributes:
        raise ReportInputError(MSG_NO_ATTRIBUTES.format(path=path))
    reserved = [a for a in attributes if a in RESERVED_COLUMNS or a.startswith("prob_")]
    if reserved:
        raise ReportInputError(MSG_RESERVED_ATTRIBUTE.format(path=path, columns=reserved))
    values = _check_classification(df, path) if task == "classification" else _check_segmentation(df, path)
    codes, groups, missing, notes = {}, {}, {}, []
    for a in attributes:
        spec = schema.attributes.get(a) if schema is not None else None
        codes[a], groups[a], missing[a], n = encode_attribute(df, path, a, spec)
        notes += n
    return CheckedPredictions(path=path, df=df, task=task, attributes=attributes, codes=codes, groups=groups,
                              missing=missing, values=values, warnings=notes)


def check_output_dir(out: str | os.PathLike) -> Path:
    """The output folder as a path; ``ReportInputError`` if it is an existing file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportInputError(MSG_OUT_IS_FILE.format(out=out))
    return out


