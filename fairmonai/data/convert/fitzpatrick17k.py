"""Fitzpatrick17k (clinical skin photographs) -> ``fitzpatrick17k`` manifest.

Input: ``fitzpatrick17k.csv`` (``md5hash``, ``fitzpatrick_scale``, ``fitzpatrick_centaur``,
``label``, ``nine_partition_label``, ``three_partition_label``, ``qc``, ``url``, ``url_alphanum``)
and the folder of downloaded images, ``<md5hash>.jpg`` by default.

``fitzpatrick`` is ``fitzpatrick_scale`` (1-6); the source's ``-1`` (no skin type) becomes an empty
cell, which the schema's ``exclude`` policy keeps out of the skin-type groups. The label is
``three_partition_label`` (benign / malignant / non-neoplastic); ``condition`` keeps the fine
``label`` (114 conditions). ``fitzpatrick_centaur`` is passed through with ``-1`` as empty too.
The split is seeded and stratified on label x skin type (empty skin type is its own stratum).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..manifest import ManifestError, load_schema
from ._common import Conversion, PathBuilder, line_of, read_table, require_columns, split_columns

__all__ = ["convert_fitzpatrick17k", "skin_type"]

REQUIRED = ("md5hash", "fitzpatrick_scale", "label", "three_partition_label")
SKIN_TYPES = ("1", "2", "3", "4", "5", "6")


def skin_type(raw, *, file=None, row: int | None = None, column: str | None = None) -> str:
    """``"1"``-``"6"``, or ``""`` for ``-1`` / empty.

    Raises:
        ManifestError: any other value.
    """
    v = str(raw).strip()
    if v in ("", "-1", "-1.0"):
        return ""
    try:
        f = float(v)
        if f.is_integer() and str(int(f)) in SKIN_TYPES:
            return str(int(f))
    except ValueError:
        pass
    raise ManifestError(f"Fitzpatrick type '{raw}' is not 1-6 or -1", file=file, row=row, column=column)


def convert_fitzpatrick17k(
    csv: str | os.PathLike,
    image_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    image_pattern: str = "{md5hash}.jpg",
    check_files: bool = True,
    missing_files: str = "error",
    train_fraction: float = 0.7,
    num_folds: int = 5,
    seed: int = 0,
) -> Conversion:
    """Build the ``fitzpatrick17k`` manifest from the CSV and the image folder.

    Args:
        csv: ``fitzpatrick17k.csv``.
        image_dir: folder of the images.
        out: the manifest to be written.
        image_pattern: image path under ``image_dir``; placeholder ``{md5hash}``.
        check_files: check that each image exists.
        missing_files: ``"error"`` or ``"drop"`` for images not on disk (41 rows of the CSV have
            no URL, so a download lacks at least those).
        train_fraction, num_folds, seed: the stratified split.

    Columns: ``case_id`` (md5hash), ``image``, ``label``, ``fitzpatrick``, ``condition``,
    ``nine_partition_label``, ``fitzpatrick_centaur``, ``qc``, ``url``, ``split``, ``fold``.

    Raises:
        ManifestError: missing columns, an empty or repeated md5hash, a skin type outside 1-6/-1, a
            label outside benign/malignant/non-neoplastic, a missing image under ``error``.
    """
    csv = Path(csv)
    table = read_table(csv)
    require_columns(table, list(REQUIRED), csv)
    labels = load_schema("fitzpatrick17k").label.categories
    paths = PathBuilder(image_dir, out, check_files=check_files, missing_files=missing_files)
    conv = Conversion("fitzpatrick17k", pd.DataFrame())
    seen: dict[str, int] = {}
    rows = []
    for i, rec in zip(table.index, table.to_dict("records")):
        line = line_of(i)
        cid = rec["md5hash"]
        if cid == "":
            raise ManifestError("empty md5hash", file=csv, row=line, column="md5hash")
        if cid in seen:
            raise ManifestError(f"md5hash '{cid}' repeats (first seen on row {seen[cid]})", file=csv, row=line,
                                column="md5hash")
        seen[cid] = line
        label = rec["three_partition_label"]
        if label not in labels:
            raise ManifestError(f"label '{label}' is not one of {list(labels)}", file=csv, row=line,
                                column="three_partition_label")
        image = paths.path(image_pattern, {"md5hash": cid}, file=csv, row=line, column="md5hash")
        if image is None:
            conv.drop("image file missing")
            continue
        rows.append({
            "case_id": cid, "image": image, "label": label,
            "fitzpatrick": skin_type(rec["fitzpatrick_scale"], file=csv, row=line, column="fitzpatrick_scale"),
            "condition": rec["label"], "nine_partition_label": rec.get("nine_partition_label", ""),
            "fitzpatrick_centaur": skin_type(rec.get("fitzpatrick_centaur", ""), file=csv, row=line,
                                             column="fitzpatrick_centaur"),
            "qc": rec.get("qc", ""), "url": rec.get("url", ""),
        })
    t = pd.DataFrame(rows)
    if len(t):
        t["split"], t["fold"] = split_columns(t["label"], t["fitzpatrick"], train_fraction=train_fraction,
                                              num_folds=num_folds, seed=seed)
    conv.table = t
    n_missing = int((t["fitzpatrick"] == "").sum()) if len(t) else 0
    conv.notes.append(f"fitzpatrick_scale -1 (no skin type): {n_missing} images, written as empty cells "
                      f"(schema policy exclude)")
    conv.notes.append(f"split: seeded (seed {seed}) stratified on label x skin type, train fraction "
                      f"{train_fraction}, {num_folds} folds of the training part")
    return conv
