"""Dataset manifests: a CSV of cases, validated against a per-dataset JSON schema.

A manifest has one row per case: the paths of the image(s) and mask, the target label, the
sensitive attributes, optional numeric metadata, and optional ``split`` / ``fold`` columns. The
schema of each dataset ships in the package as ``fairmonai/data/schemas/<dataset>.json`` (read by
:func:`load_schema`; ``$FAIRMONAI_MANIFESTS`` can add or replace one, see :func:`manifests_root`); its keys are

``name``
    dataset name.
``id_column``
    column holding a unique, non-empty case id.
``path_columns``
    columns holding file paths. Relative paths resolve against the manifest's folder; every file
    must exist.
``stack`` (optional)
    ``{key: [path columns]}``: adds ``key`` to each record as the list of those paths (MONAI's
    ``LoadImaged`` stacks a list into channels), e.g. the three DCE-MRI phases.
``label``
    ``{"column", "kind", "name", "categories"}``. ``kind="class"``: the value must be one of
    ``categories`` and the record's ``label`` is its integer code (index in ``categories``);
    ``kind="mask"``: the column is a path column and ``label`` is the mask's path.
``attributes``
    ``{name: {"categories": [...], "missing": policy, "missing_category": str}}``: the sensitive /
    metadata attributes, with their allowed values in a fixed order (the order defines the integer
    codes). The missing-value policy is one of

    * ``error`` (default): a missing value is a :class:`ManifestError`;
    * ``category``: a missing value becomes ``missing_category`` (which must be one of the
      categories, e.g. ``unknown``) and is a group like any other;
    * ``exclude``: the case stays; its value reads ``"unknown"`` (what subgroup discovery sees)
      and its code is ``-1``, which the fairness metrics leave out of that attribute's groups.
``numeric_columns``
    ``{name: {"required": bool, "nullable": bool}}``: parsed as float; a missing nullable value is
    ``nan``.
``optional_columns``
    passed through as strings when present (``split`` and ``fold`` are parsed, see below).

``split`` must be ``train``, ``val``, ``test`` or empty (then :func:`fairmonai.data.load_datalist` makes
the split, which it does only when every row is empty); ``fold`` an integer >= 0 (empty for cases outside
the training part). Missing values are the empty cell and ``nan``, ``NaN``, ``NA``, ``N/A``,
``null``, ``None``.

Errors name the file, the row (the line number in the CSV file, the header being line 1) and the
column. Validation runs over the whole file before anything is returned, so a bad manifest never
yields a partial data list. :class:`ManifestError` is a :class:`fairmonai.errors.InputError`: a bundle
run that stops on one prints it as its last line.

Missing values that a policy accepts are not silent: :func:`load_manifest` (and
:func:`fairmonai.data.load_datalist`, for the split it returns) logs at ``INFO``, once per call and per
attribute, how many cases have no value and were excluded (``exclude``) or counted in the missing
category (``category``), on the logger ``fairmonai.data.manifest``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..attribute_codes import EXCLUDED_CODE, EXCLUDED_VALUE, MISSING_TOKENS, code_key, is_missing

__all__ = [
    "MISSING_TOKENS",
    "normalise_category",
    "EXCLUDED_CODE",
    "EXCLUDED_VALUE",
    "MISSING_POLICIES",
    "ManifestError",
    "AttributeSpec",
    "LabelSpec",
    "ManifestSchema",
    "manifests_root",
    "load_schema",
    "read_manifest_table",
    "load_manifest",
    "read_manifest_records",
    "log_missing_values",
    "is_missing",
]

MISSING_POLICIES = ("error", "category", "exclude")
SPLITS = ("train", "val", "test")
LABEL_KINDS = ("class", "mask")

logger = logging.getLogger(__name__)

#: INFO lines of :func:`log_missing_values` (tests compare the text).
MSG_MISSING_EXCLUDED = (
    "%s (%s): attribute '%s': %d of %d cases have no value and are excluded from its groups "
    "(missing-value policy 'exclude', code -1)"
)
MSG_MISSING_CATEGORY = (
    "%s (%s): attribute '%s': %d of %d cases have no value and are counted as '%s' "
    "(missing-value policy 'category')"
)


class ManifestError(InputError):
    """A manifest or schema that cannot be used, with the file, row and column at fault.

    Args:
        message: what is wrong.
        file: the manifest (or schema) file.
        row: line number in the CSV file (header = 1), if the error is in one row.
        column: the column at fault, if any.
    """

    def __init__(self, message: str, *, file: str | os.PathLike | None = None, row: int | None = None,
                 column: str | None = None):
        self.message = message
        self.file = None if file is None else str(file)
        self.row = row
        self.column = column
        where = []
        if self.file is not None:
            where.append(self.file)
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass(frozen=True)
class AttributeSpec:
    """One categorical attribute: its categories (order = integer codes) and missing-value policy."""

    name: str
    categories: tuple[str, ...]
    missing: str = "error"
    missing_category: str | None = None

    def __post_init__(self):
        if not self.categories:
            raise ManifestError(f"attribute '{self.name}' declares no categories")
        if len(set(self.categories)) != len(self.categories):
            raise ManifestError(f"attribute '{self.name}' declares duplicate categories {list(self.categories)}")
        if self.missing not in MISSING_POLICIES:
            raise ManifestError(
                f"attribute '{self.name}': unknown missing-value policy '{self.missing}', "
                f"expected one of {list(MISSING_POLICIES)}"
            )
        if self.missing == "category" and self.missing_category not in self.categories:
            raise ManifestError(
                f"attribute '{self.name}': missing_category '{self.missing_category}' must be one of "
                f"its categories {list(self.categories)}"
            )

    def code_of(self, value: str) -> int:
        """Integer code of a (present) category value; ``ValueError`` if it is not declared."""
        return self.categories.index(value)


@dataclass(frozen=True)
class LabelSpec:
    """The target: a class label with categories, or a mask path."""

    column: str
    kind: str = "class"
    name: str = "label"
    categories: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in LABEL_KINDS:
            raise ManifestError(f"label kind '{self.kind}' is not one of {list(LABEL_KINDS)}")
        if self.kind == "class" and not self.categories:
            raise ManifestError(f"label '{self.column}' of kind 'class' declares no categories")


@dataclass(frozen=True)
class ManifestSchema:
    """A dataset's manifest schema (see the module docstring for the JSON keys)."""

    name: str
    id_column: str
    path_columns: tuple[str, ...]
    label: LabelSpec | None
    attributes: Mapping[str, AttributeSpec]
    numeric_columns: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)
    optional_columns: tuple[str, ...] = ()
    stack: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""
    source: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping, source: str | None = None) -> ManifestSchema:
        try:
            label = d.get("label")
            label_spec = None
            if label is not None:
                label_spec = LabelSpec(
                    column=label["column"], kind=label.get("kind", "class"), name=label.get("name", "label"),
                    categories=tuple(str(c) for c in label.get("categories", ())),
                )
            attrs = {
                name: AttributeSpec(
                    name=name, categories=tuple(str(c) for c in spec["categories"]),
                    missing=spec.get("missing", "error"), missing_category=spec.get("missing_category"),
                )
                for name, spec in d.get("attributes", {}).items()
            }
            schema = cls(
                name=d["name"], id_column=d["id_column"], path_columns=tuple(d.get("path_columns", ())),
                label=label_spec, attributes=attrs, numeric_columns=dict(d.get("numeric_columns", {})),
                optional_columns=tuple(d.get("optional_columns", ())),
                stack={k: tuple(v) for k, v in d.get("stack", {}).items()},
                description=d.get("description", ""), source=source,
            )
        except KeyError as e:
            raise ManifestError(f"schema lacks the required key {e}", file=source) from None
        except ManifestError as e:
            raise ManifestError(e.message, file=source) from None
        if label_spec is not None and label_spec.kind == "mask" and label_spec.column not in schema.path_columns:
            raise ManifestError(f"mask label '{label_spec.column}' must be listed in path_columns", file=source)
        for key, cols in schema.stack.items():
            unknown = [c for c in cols if c not in schema.path_columns]
            if unknown:
                raise ManifestError(f"stack '{key}' names columns that are not path columns: {unknown}", file=source)
        return schema

    @property
    def required_columns(self) -> list[str]:
        cols = [self.id_column, *self.path_columns]
        if self.label is not None and self.label.column not in cols:
            cols.append(self.label.column)
        cols += [a for a in self.attributes if a not in cols]
        cols += [c for c, spec in self.numeric_columns.items() if spec.get("required", False) and c not in cols]
        return cols

    @property
    def sensitive_attributes(self) -> list[str]:
        return list(self.attributes)


#: The package holding the shipped schemas, ``<dataset>.json`` each.
_SCHEMAS = f"{__package__}.schemas"


def manifests_root() -> Path | None:
    """The folder named by ``$FAIRMONAI_MANIFESTS``, or ``None`` when it is unset.

    That folder, laid out as ``<folder>/<dataset>/schema.json``, is searched before the schemas
    shipped in the package (:mod:`fairmonai.data.schemas`), so a site can add a dataset or replace a
    shipped schema without editing the installed package.
    """
    env = os.environ.get("FAIRMONAI_MANIFESTS")
    return Path(env) if env else None


def _known_datasets() -> list[str]:
    """Dataset names with a schema: the shipped ones and those under ``$FAIRMONAI_MANIFESTS``."""
    names = {p.name[: -len(".json")] for p in resources.files(_SCHEMAS).iterdir() if p.name.endswith(".json")}
    root = manifests_root()
    if root is not None:
        names |= {p.parent.name for p in root.glob("*/schema.json")}
    return sorted(names)


def load_schema(schema: str | os.PathLike | Mapping | ManifestSchema) -> ManifestSchema:
    """Load a schema from a dataset name (``"oct_glaucoma"``), a JSON path, a dict, or pass one through.

    A dataset name is looked up first as ``$FAIRMONAI_MANIFESTS/<name>/schema.json`` (when that
    variable is set), then among the schemas shipped in the package
    (``fairmonai/data/schemas/<name>.json``).

    Raises:
        ManifestError: the schema file does not exist (for an unknown dataset name the message lists
            the known ones), is not JSON, or is inconsistent.
    """
    if isinstance(schema, ManifestSchema):
        return schema
    if isinstance(schema, Mapping):
        return ManifestSchema.from_dict(schema)
    path = Path(schema)
    if not path.suffix and not path.exists():
        name = str(schema)
        root = manifests_root()
        if root is not None and (root / name / "schema.json").is_file():
            path = root / name / "schema.json"
        else:
            shipped = resources.files(_SCHEMAS) / f"{name}.json"
            if not shipped.is_file():
                raise ManifestError(f"no schema for dataset '{name}'; known datasets: {_known_datasets()}")
            try:
                d = json.loads(shipped.read_text())
            except json.JSONDecodeError as e:
                raise ManifestError(f"schema is not valid JSON: {e}", file=str(shipped)) from None
            return ManifestSchema.from_dict(d, source=str(shipped))
    if not path.is_file():
        raise ManifestError("schema file not found", file=path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"schema is not valid JSON: {e}", file=path) from None
    return ManifestSchema.from_dict(d, source=str(path))


def read_manifest_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest CSV with every cell as a string (nothing converted, nothing dropped)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError("manifest file not found", file=path)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot be read as CSV: {e}", file=path) from None


def load_manifest(
    manifest: str | os.PathLike,
    schema: str | os.PathLike | Mapping | ManifestSchema,
    *,
    check_files: bool = True,
) -> list[dict]:
    """Validate a manifest against its schema and return one dict per case, in file order.

    Each record holds: ``case_id``; every path column as an absolute path string; the stacked keys;
    ``label`` (class code, or mask path) and ``label_name`` (the category string, class labels only);
    for each attribute ``<attr>`` its value string (``"unknown"`` when excluded) and ``<attr>_code``
    (its integer code, ``-1`` when excluded); numeric columns as float (``nan`` when missing);
    optional columns as strings; ``split`` (``""`` if the manifest has no split) and ``fold`` (``-1``
    if none). The dicts are what MONAI datasets take.

    Args:
        manifest: the CSV file.
        schema: dataset name, schema path, dict or :class:`ManifestSchema`.
        check_files: check that every path exists (default ``True``).

    Raises:
        ManifestError: naming the file, row and column of the first problem found: missing file or
            column, a value outside the declared categories, a missing label, a duplicate case id, a
            missing attribute value under the ``error`` policy, an unparseable number, split or fold.
    """
    records, missing = read_manifest_records(manifest, schema, check_files=check_files)
    log_missing_values(manifest, "all cases", records, missing)
    return records


def read_manifest_records(
    manifest: str | os.PathLike,
    schema: str | os.PathLike | Mapping | ManifestSchema,
    *,
    check_files: bool = True,
) -> tuple[list[dict], dict[str, tuple[str, str | None, frozenset[str]]]]:
    """:func:`load_manifest` without the log: the records, and per attribute whose policy accepted a
    missing value, ``(policy, missing_category, case ids without a value)``."""
    schema = load_schema(schema)
    path = Path(manifest)
    table = read_manifest_table(path)
    root = path.resolve().parent

    missing_cols = [c for c in schema.required_columns if c not in table.columns]
    if missing_cols:
        raise ManifestError(
            f"missing required column(s) {missing_cols} for schema '{schema.name}'",
            file=path, row=1, column=missing_cols[0],
        )
    if len(table) == 0:
        raise ManifestError("manifest has no cases", file=path)

    def line(i: int) -> int:
        return i + 2

    # case ids: non-empty and unique
    ids = table[schema.id_column].str.strip()
    for i in ids.index[ids.map(is_missing)]:
        raise ManifestError("empty case id", file=path, row=line(i), column=schema.id_column)
    dup = ids.duplicated(keep="first")
    if dup.any():
        i = int(dup.idxmax())
        first = int(ids.index[(ids == ids[i])][0])
        raise ManifestError(
            f"duplicate case id '{ids[i]}' (first seen on row {line(first)})",
            file=path, row=line(i), column=schema.id_column,
        )

    records = [{"case_id": cid} for cid in ids]

    # paths
    for col in schema.path_columns:
        for i, raw in enumerate(table[col]):
            if is_missing(raw):
                raise ManifestError("empty path", file=path, row=line(i), column=col)
            p = Path(raw.strip())
            p = p if p.is_absolute() else root / p
            if check_files and not p.exists():
                raise ManifestError(f"file not found: {p}", file=path, row=line(i), column=col)
            records[i][col] = str(p)
    for key, cols in schema.stack.items():
        for rec in records:
            rec[key] = [rec[c] for c in cols]

    # label
    lab = schema.label
    if lab is not None and lab.kind == "class":
        for i, raw in enumerate(table[lab.column]):
            value = normalise_category(raw)
            if value is None:
                raise ManifestError("empty or NaN label", file=path, row=line(i), column=lab.column)
            if value not in lab.categories:
                raise ManifestError(
                    f"label '{raw}' is not one of {list(lab.categories)}", file=path, row=line(i), column=lab.column
                )
            records[i]["label"] = lab.categories.index(value)
            records[i]["label_name"] = value
    elif lab is not None:
        for rec in records:
            rec["label"] = rec[lab.column]

    # attributes
    missing: dict[str, tuple[str, str | None, frozenset[str]]] = {}
    for name, spec in schema.attributes.items():
        without_value = []
        for i, raw in enumerate(table[name]):
            value = normalise_category(raw)
            if value is None:
                without_value.append(records[i]["case_id"])
                if spec.missing == "error":
                    raise ManifestError(
                        f"missing value for attribute '{name}' (its schema policy is 'error'; "
                        f"declare 'category' or 'exclude' to accept missing values)",
                        file=path, row=line(i), column=name,
                    )
                if spec.missing == "category":
                    value = spec.missing_category
                else:
                    records[i][name] = EXCLUDED_VALUE
                    records[i][code_key(name)] = EXCLUDED_CODE
                    continue
            if value not in spec.categories:
                raise ManifestError(
                    f"value '{raw}' is not one of the declared categories {list(spec.categories)}",
                    file=path, row=line(i), column=name,
                )
            records[i][name] = value
            records[i][code_key(name)] = spec.code_of(value)
        if spec.missing != "error":
            missing[name] = (spec.missing, spec.missing_category, frozenset(without_value))

    # numeric columns
    for name, spec in schema.numeric_columns.items():
        if name not in table.columns:
            continue
        for i, raw in enumerate(table[name]):
            if is_missing(raw):
                if not spec.get("nullable", True):
                    raise ManifestError("missing numeric value", file=path, row=line(i), column=name)
                records[i][name] = float("nan")
                continue
            try:
                records[i][name] = float(raw)
            except ValueError:
                raise ManifestError(f"'{raw}' is not a number", file=path, row=line(i), column=name) from None

    # split / fold
    for i in range(len(records)):
        records[i]["split"] = ""
        records[i]["fold"] = -1
    if "split" in table.columns:
        for i, raw in enumerate(table["split"]):
            value = raw.strip()
            if is_missing(value):
                continue
            if value not in SPLITS:
                raise ManifestError(f"split '{raw}' is not one of {list(SPLITS)}", file=path, row=line(i), column="split")
            records[i]["split"] = value
    if "fold" in table.columns:
        for i, raw in enumerate(table["fold"]):
            if is_missing(raw):
                continue
            try:
                number = float(raw)
            except ValueError:
                number = -1.0
            if number < 0 or not number.is_integer():
                raise ManifestError(f"fold '{raw}' is not an integer >= 0", file=path, row=line(i), column="fold")
            records[i]["fold"] = int(number)

    # optional pass-through columns
    reserved = set(schema.required_columns) | set(schema.numeric_columns) | {"split", "fold"}
    for col in schema.optional_columns:
        if col in table.columns and col not in reserved:
            for i, raw in enumerate(table[col]):
                records[i][col] = raw
    return records, missing


def log_missing_values(
    manifest: str | os.PathLike,
    part: str,
    records: list[dict],
    missing: Mapping[str, tuple[str, str | None, frozenset[str]]],
) -> None:
    """Log at INFO, per attribute, how many of ``records`` lost their missing value to the policy.

    One line per attribute with at least one such case: excluded (policy ``exclude``, code -1) or
    counted in the missing category (policy ``category``). ``part`` names the records (``"all
    cases"``, ``"split 'train'"``); ``missing`` is what :func:`read_manifest_records` returns.
    """
    ids = [r["case_id"] for r in records]
    for name, (policy, category, without) in missing.items():
        n = sum(cid in without for cid in ids)
        if n == 0:
            continue
        if policy == "exclude":
            logger.info(MSG_MISSING_EXCLUDED, manifest, part, name, n, len(ids))
        else:
            logger.info(MSG_MISSING_CATEGORY, manifest, part, name, n, len(ids), category)


def normalise_category(raw) -> str | None:
    """A category cell as a string; integers written as floats (``'1.0'``) read as ``'1'``; None if missing."""
    if is_missing(raw):
        return None
    value = str(raw).strip()
    try:
        f = float(value)
        if f.is_integer() and ("." in value or "e" in value.lower()):
            return str(int(f))
    except ValueError:
        pass
    return value
