"""Shared pieces of the dataset converters: reading tables, building paths, splits, writing, summaries.

Every converter returns a :class:`Conversion` (the manifest as a table of strings, plus what was
dropped and why); :func:`write_manifest` writes it atomically after validating it against the
dataset's schema with :func:`fairmonai.data.load_manifest`; :func:`summarise` turns it into the
report the command line prints.

Input errors raise :class:`~fairmonai.data.ManifestError` naming the input file, the row (the line
number in the file, the header being line 1) and the column.
"""

from __future__ import annotations

import os
import string
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..manifest import ManifestError, ManifestSchema, is_missing, load_manifest, load_schema
from ..splits import assign_splits, strata_keys, stratified_kfold

__all__ = [
    "Conversion",
    "EMPTY_LABEL",
    "MISSING_FILE_POLICIES",
    "PathBuilder",
    "binary_text",
    "fill_pattern",
    "line_of",
    "manifest_path",
    "number_text",
    "read_table",
    "require_columns",
    "split_columns",
    "split_label_sex_table",
    "summarise",
    "write_manifest",
]

#: how an empty attribute cell shows in summaries
EMPTY_LABEL = "(empty)"
#: what a converter does when an image or mask named by the table is not on disk
MISSING_FILE_POLICIES = ("error", "drop")
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls")


@dataclass
class Conversion:
    """A converted manifest before it is written.

    Attributes:
        dataset: the schema name (``fairmonai/data/schemas/<dataset>.json``).
        table: one row per case, every cell a string (``""`` = missing), the manifest's columns.
        dropped: reason -> number of input rows left out for it, in the order met.
        notes: other facts for the summary (sources used, imputations, ignored entries).
        summary_by: further columns the summary crosses each attribute with (e.g. the MAMA-MIA
            collection and pCR, whose label is a mask).
    """

    dataset: str
    table: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    summary_by: list[str] = field(default_factory=list)

    def drop(self, reason: str, count: int = 1) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)


def line_of(index: int) -> int:
    """Line number in the input file of the table row at position ``index`` (header = line 1)."""
    return int(index) + 2


def read_table(path: str | os.PathLike, *, sheet: str | None = None) -> pd.DataFrame:
    """A CSV or Excel sheet with every cell as a stripped string; fully empty rows removed.

    Args:
        path: ``.csv`` (any other suffix reads as CSV) or ``.xlsx``/``.xlsm``/``.xls``.
        sheet: the Excel sheet (default: the first); ignored for CSV.

    Raises:
        ManifestError: the file is missing, unreadable, or has no such sheet.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError("input file not found", file=path)
    try:
        if path.suffix.lower() in EXCEL_SUFFIXES:
            with pd.ExcelFile(path) as book:
                name = book.sheet_names[0] if sheet is None else sheet
                if name not in book.sheet_names:
                    raise ManifestError(f"no sheet '{name}' (sheets: {book.sheet_names})", file=path)
                table = pd.read_excel(book, sheet_name=name, dtype=str, keep_default_na=False, na_filter=False)
        else:
            table = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except ManifestError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as e:
        raise ManifestError(f"cannot be read as a table: {e}", file=path) from None
    table.columns = [str(c).strip() for c in table.columns]
    table = table.astype(object).map(lambda v: "" if v is None else str(v).strip())
    keep = ~(table == "").all(axis=1)
    # blank rows at the end of a sheet are dropped; the index keeps the file's row positions
    return table[keep]


def require_columns(table: pd.DataFrame, columns: Sequence[str], file, what: str = "") -> None:
    """Raise a :class:`ManifestError` naming the first of ``columns`` the table lacks."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        hint = f" {what}" if what else ""
        raise ManifestError(
            f"missing column(s) {missing}{hint}; the table has {list(table.columns)}",
            file=file, row=1, column=missing[0],
        )


def fill_pattern(pattern: str, **fields: str) -> str:
    """``pattern`` with ``{name}`` placeholders filled from ``fields``.

    Raises:
        ValueError: the pattern names a placeholder not in ``fields``.
    """
    names = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise ValueError(f"path pattern '{pattern}' uses unknown placeholder(s) {unknown}; "
                         f"available: {sorted(fields)}")
    return pattern.format(**fields)


def manifest_path(path: Path, out_dir: Path) -> str:
    """How a file is written in the manifest: relative (POSIX) to ``out_dir`` when it lies beneath
    it, absolute otherwise."""
    path = Path(os.path.abspath(path))
    out_dir = Path(os.path.abspath(out_dir))
    try:
        return path.relative_to(out_dir).as_posix()
    except ValueError:
        return str(path)


class PathBuilder:
    """Builds the manifest path of a file named by a pattern under a root folder.

    Args:
        root: the folder the patterns are relative to.
        out: the manifest file (its folder decides relative or absolute paths).
        check_files: check that each file exists.
        missing_files: ``"error"`` (a missing file is a :class:`ManifestError` naming the input row)
            or ``"drop"`` (the case is left out; :meth:`path` returns ``None``).
        case_insensitive: when the exact name is absent, accept a file whose path differs only in
            letter case (one directory listing per folder, cached).
    """

    def __init__(self, root, out, *, check_files: bool = True, missing_files: str = "error",
                 case_insensitive: bool = False):
        if missing_files not in MISSING_FILE_POLICIES:
            raise ValueError(f"missing_files '{missing_files}' is not one of {list(MISSING_FILE_POLICIES)}")
        self.root = Path(os.path.abspath(root))
        self.out_dir = Path(os.path.abspath(out)).parent
        self.check_files = check_files
        self.missing_files = missing_files
        self.case_insensitive = case_insensitive
        self._listings: dict[Path, dict[str, str]] = {}
        if check_files and not self.root.is_dir():
            raise ManifestError("image folder not found", file=self.root)

    def _listing(self, folder: Path) -> dict[str, str]:
        if folder not in self._listings:
            try:
                self._listings[folder] = {n.lower(): n for n in os.listdir(folder)}
            except OSError:
                self._listings[folder] = {}
        return self._listings[folder]

    def _find(self, path: Path) -> Path | None:
        if path.exists():
            return path
        if not self.case_insensitive:
            return None
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:  # a pattern leading outside the root: exact names only
            return None
        found = self.root
        for part in parts:
            name = self._listing(found).get(part.lower())
            if name is None:
                return None
            found = found / name
        return found

    def path(self, pattern: str, fields: Mapping[str, str], *, file, row: int, column: str) -> str | None:
        """The manifest path of ``root / pattern.format(**fields)``; ``None`` when missing and dropped.

        Raises:
            ManifestError: the file is missing under the ``error`` policy (names ``file``, ``row``
                and ``column``, the input table's), or the pattern is malformed.
        """
        try:
            rel = fill_pattern(pattern, **fields)
        except ValueError as e:
            raise ManifestError(str(e), file=file, row=row, column=column) from None
        path = self.root / rel
        if self.check_files:
            found = self._find(path)
            if found is None:
                if self.missing_files == "drop":
                    return None
                raise ManifestError(
                    f"file not found: {path} (use --missing-files drop to leave such cases out, or "
                    f"--no-check-files to write the manifest without images)",
                    file=file, row=row, column=column,
                )
            path = found
        return manifest_path(path, self.out_dir)


def number_text(raw, *, file=None, row: int | None = None, column: str | None = None) -> str:
    """A numeric cell as short text: ``"41.0"`` -> ``"41"``, ``"45.5"`` stays; missing -> ``""``.

    Raises:
        ManifestError: the cell is not a number.
    """
    if is_missing(raw):
        return ""
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ManifestError(f"'{raw}' is not a number", file=file, row=row, column=column) from None
    if np.isnan(value):
        return ""
    return str(int(value)) if value.is_integer() else repr(value)


_TRUE = {"1", "yes", "y", "true", "t"}
_FALSE = {"0", "no", "n", "false", "f"}


def binary_text(raw, *, file=None, row: int | None = None, column: str | None = None) -> str:
    """A 0/1 cell as ``"0"``/``"1"`` (also ``0.0``/``1.0``, yes/no, true/false); missing -> ``""``.

    Raises:
        ManifestError: any other value.
    """
    if is_missing(raw):
        return ""
    v = str(raw).strip().lower()
    try:
        f = float(v)
        if f in (0.0, 1.0):
            return str(int(f))
    except ValueError:
        pass
    if v in _TRUE:
        return "1"
    if v in _FALSE:
        return "0"
    raise ManifestError(f"'{raw}' is not a 0/1 value", file=file, row=row, column=column)


def split_columns(labels: Sequence, groups: Sequence | None, *, train_fraction: float, num_folds: int,
                  seed: int) -> tuple[list[str], list[str]]:
    """``split`` and ``fold`` cells from :func:`fairmonai.data.assign_splits` (fold ``""`` on test)."""
    try:
        split, fold = assign_splits(list(labels), None if groups is None else list(groups),
                                    train_fraction=train_fraction, num_folds=num_folds, seed=seed)
    except ValueError as e:
        raise ValueError(f"cannot split {len(labels)} cases into train/test and {num_folds} folds: {e}") from None
    return [str(s) for s in split], ["" if f < 0 else str(int(f)) for f in fold]


def folds_of(strata_columns: Sequence[Sequence], *, num_folds: int, seed: int) -> list[str]:
    """Fold cells of one part (e.g. an official training split), stratified on the given columns."""
    n = len(strata_columns[0])
    if n == 0:
        return []
    folds = stratified_kfold(strata_keys(*strata_columns), num_folds=min(num_folds, n), seed=seed)
    return [str(int(f)) for f in folds]


def ordered_columns(table: pd.DataFrame, schema: ManifestSchema) -> list[str]:
    """The manifest's column order: id, paths, label, attributes, numbers, optional, split, fold."""
    cols = list(schema.required_columns)
    cols += [c for c in schema.numeric_columns if c in table.columns and c not in cols]
    cols += [c for c in schema.optional_columns if c in table.columns and c not in cols + ["split", "fold"]]
    cols += [c for c in ("split", "fold") if c in table.columns]
    extra = [c for c in table.columns if c not in cols]
    if extra:
        raise ValueError(f"columns {extra} are not in schema '{schema.name}'")
    return cols


def write_manifest(conversion: Conversion, out: str | os.PathLike, *, check_files: bool = True) -> Path:
    """Write the manifest atomically: a temporary file beside ``out``, validated with
    :func:`fairmonai.data.load_manifest` against the dataset's schema, then renamed to ``out``.

    Nothing is left at ``out`` (or beside it) when writing or validation fails; an existing ``out``
    is replaced only by a valid manifest.

    Returns:
        the written path.

    Raises:
        ManifestError: the manifest does not validate (named after ``out``) or has no cases.
    """
    out = Path(out)
    schema = load_schema(conversion.dataset)
    table = conversion.table
    if len(table) == 0:
        raise ManifestError("no cases left to write (see the dropped rows)", file=out)
    table = table[ordered_columns(table, schema)]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            table.to_csv(f, index=False, lineterminator="\n")
        try:
            load_manifest(tmp, schema, check_files=check_files)
        except ManifestError as e:
            raise ManifestError(f"the converted manifest does not validate: {e.message}", file=out, row=e.row,
                                column=e.column) from None
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
_SEXES = ("female", "male")


def split_label_sex_table(table: pd.DataFrame, label_name: str = "label") -> str:
    """Cases per split x label x sex as text: one row per split and label (splits in the order
    train, val, test; both labels always shown), columns ``female``, ``male``, ``total``, and a
    ``total`` row per split.

    Args:
        table: manifest rows with ``split``, ``label`` (``"0"``/``"1"``) and ``sex`` columns.
        label_name: the label column's heading (e.g. ``"pcr"``, ``"melanoma"``).
    """
    splits = [sp for sp in _SPLIT_ORDER if (table["split"] == sp).any()]
    rows = [("split", label_name, *_SEXES, "total")]
    for sp in splits:
        part = table[table["split"] == sp]
        for lab in ("0", "1", "total"):
            sel = part if lab == "total" else part[part["label"].astype(str) == lab]
            counts = [int((sel["sex"] == g).sum()) for g in _SEXES]
            rows.append((sp, lab, *map(str, counts), str(len(sel))))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in rows)


def _group_table(table: pd.DataFrame, attr: str, by: str) -> str:
    values = table[attr].where(table[attr] != "", EMPTY_LABEL)
    other = table[by].where(table[by] != "", EMPTY_LABEL)
    counts = pd.crosstab(values, other, margins=True, margins_name="total")
    if by == "split":
        cols = sorted(counts.columns[:-1], key=lambda c: _SPLIT_ORDER.get(c, 3))
        counts = counts[[*cols, "total"]]
    counts.index.name = attr
    counts.columns.name = by
    return counts.to_string()


def summarise(conversion: Conversion, out: str | os.PathLike | None = None) -> str:
    """The report printed after a conversion: cases, split sizes, counts per group x label, per
    group x split (and per group x each ``summary_by`` column), dropped rows with their reasons,
    notes. An empty attribute cell shows as ``(empty)``."""
    schema = load_schema(conversion.dataset)
    t = conversion.table
    lines = [f"{conversion.dataset}: {len(t)} cases" + (f" written to {out}" if out is not None else "")]
    if conversion.dropped:
        lines.append("dropped rows: " + "; ".join(f"{n} {reason}" for reason, n in conversion.dropped.items()))
    else:
        lines.append("dropped rows: none")
    if not len(t):
        return "\n".join(lines + [f"note: {n}" for n in conversion.notes])
    if "split" in t.columns:
        sizes = t["split"].value_counts()
        parts = [f"{s} {int(sizes[s])}" for s in ("train", "val", "test") if s in sizes]
        folds = t.loc[t["fold"] != "", "fold"] if "fold" in t.columns else pd.Series([], dtype=object)
        fold_text = ""
        if len(folds):
            fc = folds.astype(int).value_counts().sort_index()
            fold_text = " | folds of train: " + ", ".join(f"{k}: {v}" for k, v in fc.items())
        lines.append("split: " + ", ".join(parts) + fold_text)
    label_col = schema.label.column if schema.label is not None and schema.label.kind == "class" else None
    if label_col is not None and "split" in t.columns:
        lines.append(f"\n{schema.label.name} ({label_col}) x split:")
        lines.append(_group_table(t, label_col, "split"))
    for attr in schema.attributes:
        if attr not in t.columns:
            continue
        by = ([label_col] if label_col is not None else []) + (["split"] if "split" in t.columns else [])
        by += [c for c in conversion.summary_by if c in t.columns]
        for col in by:
            name = f"{schema.label.name} ({col})" if col == label_col else col
            lines.append(f"\n{attr} x {name}:")
            lines.append(_group_table(t, attr, col))
    for note in conversion.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
