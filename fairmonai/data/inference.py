"""Data lists for inference: a manifest without labels, or a folder of images.

:func:`inference_datalist` is what an ``inference.json`` bundle config calls to build its dataset.
A manifest is validated by :func:`fairmonai.data.load_manifest` under a loosened copy of the
dataset's schema (label, attributes and numeric columns optional), so the records are the same as
for training where the columns are present.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from .manifest import ManifestError, ManifestSchema, is_missing, load_manifest, load_schema, read_manifest_table

__all__ = [
    "IMAGE_EXTENSIONS",
    "case_id_from_path",
    "inference_datalist",
    "inference_schema",
    "SOURCE_MISSING_MSG",
    "NO_MATCH_MSG",
    "NO_ID_COLUMN_MSG",
]

#: Extensions stripped from a file name to make its case id, longest first (case-insensitive).
IMAGE_EXTENSIONS = (
    ".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".npz", ".npy", ".png", ".jpg", ".jpeg",
    ".tif", ".tiff", ".bmp", ".dcm", ".h5", ".pt",
)

SOURCE_MISSING_MSG = "inference source not found: {source} (expected a manifest CSV file or a folder of images)"
NO_MATCH_MSG = "no file matching the pattern '{pattern}' in the folder {folder}"
NO_ID_COLUMN_MSG = "no '{column}' column: an inference manifest needs one case id per row; the columns are {columns}"
NOT_CSV_MSG = "inference source {source} is a file but not a .csv manifest; give a manifest CSV or a folder of images"


def case_id_from_path(path: str | os.PathLike) -> str:
    """A file's name without its image extension: ``"a/oct_00001.nii.gz"`` -> ``"oct_00001"``.

    The longest extension of :data:`IMAGE_EXTENSIONS` that ends the name is removed (``.nii.gz`` as
    one); a name with none of them loses its last suffix only (``"scan.v2.xyz"`` -> ``"scan.v2"``).
    """
    name = Path(path).name
    lower = name.lower()
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return Path(name).stem or name


def inference_schema(schema: str | os.PathLike | Mapping | ManifestSchema, columns) -> ManifestSchema:
    """The dataset's schema loosened for a manifest with the given ``columns``.

    What stays required: the id column and the image path columns. What becomes optional:

    * the label: kept (and validated as in training) only when its column is present;
    * a mask label (segmentation) and its path column: likewise;
    * the attributes: those whose column is present are kept, with their missing-value policy;
    * numeric columns: all optional.

    Stacked keys whose path columns are all kept stay.
    """
    s = load_schema(schema)
    columns = set(columns)
    label = s.label if s.label is not None and s.label.column in columns else None
    path_columns = tuple(
        c for c in s.path_columns
        if not (s.label is not None and s.label.kind == "mask" and c == s.label.column and label is None)
    )
    return dataclasses.replace(
        s,
        label=label,
        path_columns=path_columns,
        attributes={k: v for k, v in s.attributes.items() if k in columns},
        numeric_columns={k: {**dict(v), "required": False} for k, v in s.numeric_columns.items()},
        stack={k: cols for k, cols in s.stack.items() if all(c in path_columns for c in cols)},
    )


def _bare_schema(columns) -> ManifestSchema:
    """No schema: ``case_id`` and the ``image`` path; every other column passed through as a string."""
    others = tuple(c for c in columns if c not in ("case_id", "image"))
    return ManifestSchema(name="inference", id_column="case_id", path_columns=("image",), label=None,
                          attributes={}, optional_columns=others)


def inference_datalist(
    source: str | os.PathLike,
    *,
    schema: str | os.PathLike | Mapping | ManifestSchema | None = None,
    pattern: str = "*.nii.gz",
    check_files: bool = True,
) -> list[dict]:
    """The records an inference run reads: from a manifest CSV, or one per image file of a folder.

    * **A manifest CSV** is validated by :func:`fairmonai.data.load_manifest` under
      :func:`inference_schema` (the schema with label, attributes and numeric columns optional): rows
      need the id column (``case_id``) and the schema's image path columns; a label column gives
      ``label`` / ``label_name`` (values checked as in training; a column with empty cells is
      ignored with a warning, so all records or none have a label); each present attribute gives
      ``<attr>`` and ``<attr>_code`` as in :func:`load_manifest` (``"unknown"`` / ``-1`` when
      excluded). Without a schema the manifest needs ``case_id`` and ``image``, and every other
      column is passed through as a string.
    * **A folder**: one record ``{"case_id", "image"}`` per file matching ``pattern`` (``Path.glob``
      syntax, ``**`` recursive), sorted by path; ``image`` is the absolute path and ``case_id`` the
      file name without its image extension (:func:`case_id_from_path`). ``schema`` and
      ``check_files`` do not apply.

    Bundle config (inference.json)::

        "datalist": "$fairmonai.data.inference.inference_datalist(@input_dir, schema='oct_glaucoma')",
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"}

    Args:
        source: a manifest ``.csv`` file or a folder of images.
        schema: dataset name, schema path, dict or :class:`ManifestSchema` (manifests only).
        pattern: glob of the image files (folders only), default ``"*.nii.gz"``.
        check_files: check that every path of a manifest exists.

    Raises:
        FileNotFoundError: ``source`` does not exist; a folder without a file matching ``pattern``.
        ValueError: a file that is not a ``.csv``; two files of a folder with the same case id.
        ManifestError: a manifest without its id column, or invalid (file, row and column named).
    """
    path = Path(source)
    if path.is_dir():
        return _folder_datalist(path, pattern)
    if not path.exists():
        raise FileNotFoundError(SOURCE_MISSING_MSG.format(source=path))
    if path.suffix.lower() != ".csv":
        raise ValueError(NOT_CSV_MSG.format(source=path))
    table = read_manifest_table(path)
    if schema is None:
        loose = _bare_schema(table.columns)
    else:
        present = list(table.columns)
        label = load_schema(schema).label
        if label is not None and label.column in present and table[label.column].map(is_missing).any():
            warnings.warn(f"{path}: column '{label.column}' has empty cells; the cases are read without labels",
                          stacklevel=2)
            present.remove(label.column)
        loose = inference_schema(schema, present)
    if loose.id_column not in table.columns:
        raise ManifestError(NO_ID_COLUMN_MSG.format(column=loose.id_column, columns=list(table.columns)),
                            file=path, row=1, column=loose.id_column)
    return load_manifest(path, loose, check_files=check_files)


def _folder_datalist(folder: Path, pattern: str) -> list[dict]:
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(NO_MATCH_MSG.format(pattern=pattern, folder=folder.resolve()))
    records, seen = [], {}
    for p in files:
        cid = case_id_from_path(p)
        if cid in seen:
            raise ValueError(f"two files give the case id '{cid}': {seen[cid]} and {p}; narrow the pattern '{pattern}'")
        seen[cid] = p
        records.append({"case_id": cid, "image": str(p.resolve())})
    return records
