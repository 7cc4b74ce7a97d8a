"""A user's rectal-cancer MRI cohort -> ``rectal_mri`` manifest.

There is no single public release: the input is a CSV with one row per patient (id, pCR, sex,
optionally age and site) and an image folder where each patient's pre-treatment T2-weighted image
and tumour mask are found by path patterns such as ``{id}/t2.nii.gz`` and ``{id}/mask.nii.gz``.

Sex spellings ``M``/``F``/``male``/``female`` (any case) are read directly; numeric codes need
``male_code`` (and ``female_code``, default the other of 0/1), because cohorts differ on which
number is male. Any other spelling is an error naming the row. Rows with a missing pCR or a missing
sex are left out and counted.

Split: a ``split`` column in the CSV (``split_column``) is used as given: ``train``, ``test`` or
``val`` on every row (any letter case); anything else, an empty cell included, is an error naming
the row. The training rows then get folds stratified on pCR x sex (seeded); ``val`` and ``test``
rows get none. Without the column the split is seeded and stratified on pCR x sex
(:func:`fairmonai.data.assign_splits`). Either way the summary ends with the cases per split x pCR
x sex (:func:`split_label_sex_table`), e.g. the FaMI paper's train 130 (20 pCR; 95 male) and
test 56 (11 pCR; 34 male).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..manifest import ManifestError, is_missing
from ._common import Conversion, PathBuilder, binary_text, folds_of, line_of, number_text, read_table, \
    require_columns, split_columns, split_label_sex_table

__all__ = ["SEX_SPELLINGS", "SPLIT_VALUES", "convert_rectal_mri", "normalise_sex", "split_label_sex_table"]

SEX_SPELLINGS = {"m": "male", "male": "male", "man": "male", "f": "female", "female": "female", "woman": "female"}
#: the values a user's ``split`` column may hold (any letter case), in the order the summary shows them
SPLIT_VALUES = ("train", "val", "test")


def normalise_sex(raw, *, male_code: str | None = None, female_code: str | None = None, file=None,
                  row: int | None = None, column: str | None = None) -> str | None:
    """``"male"``/``"female"`` from a spelling or a numeric code; ``None`` when missing.

    Raises:
        ManifestError: an unknown spelling, or a numeric code while ``male_code`` is not given.
    """
    if is_missing(raw):
        return None
    v = str(raw).strip()
    sex = SEX_SPELLINGS.get(v.lower())
    if sex is not None:
        return sex
    try:
        number = float(v)
    except ValueError:
        number = None
    if number is not None:
        if male_code is None:
            raise ManifestError(
                f"sex '{raw}' is a numeric code: say which code is male with --male-code (and --female-code)",
                file=file, row=row, column=column)
        if number == float(male_code):
            return "male"
        if female_code is not None and number == float(female_code):
            return "female"
        raise ManifestError(f"sex code '{raw}' is neither the male code {male_code} nor the female code "
                            f"{female_code}", file=file, row=row, column=column)
    raise ManifestError(f"unknown sex spelling '{raw}'; expected one of {sorted(SEX_SPELLINGS)} or a numeric "
                        f"code with --male-code", file=file, row=row, column=column)


def _default_female(male_code: str | None) -> str | None:
    if male_code is None:
        return None
    try:
        m = float(male_code)
    except ValueError:
        raise ValueError(f"male_code '{male_code}' is not a number") from None
    return {0.0: "1", 1.0: "0"}.get(m)


def convert_rectal_mri(
    csv: str | os.PathLike,
    image_root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    image_pattern: str = "{id}/t2.nii.gz",
    mask_pattern: str = "{id}/mask.nii.gz",
    id_column: str = "patient_id",
    label_column: str = "pcr",
    sex_column: str = "sex",
    age_column: str | None = "age",
    site_column: str | None = "site",
    series_uid_column: str | None = "series_uid",
    split_column: str | None = "split",
    male_code: str | None = None,
    female_code: str | None = None,
    check_files: bool = True,
    missing_files: str = "error",
    train_fraction: float = 0.7,
    num_folds: int = 5,
    seed: int = 0,
) -> Conversion:
    """Build the ``rectal_mri`` manifest from a clinical CSV and an image folder.

    Args:
        csv: one row per patient.
        image_root: folder the patterns are relative to.
        out: the manifest to be written.
        image_pattern, mask_pattern: paths of the T2w image and the tumour mask; ``{id}`` is the
            patient id as written in the CSV.
        id_column, label_column, sex_column: the CSV's columns for id, pCR (0/1, yes/no,
            true/false) and sex.
        age_column, site_column: optional columns, used when present in the CSV.
        series_uid_column: optional column, used when present: the SeriesInstanceUID to read where the
            image is a DICOM folder holding several series (written as ``series_uid``; an empty cell
            reads the folder's only series).
        split_column: a column of ``train``/``test``/``val`` used as given when present in the CSV
            (``None``: always make the seeded split).
        male_code, female_code: numeric sex codes (``female_code`` defaults to the other of 0/1).
        check_files: check that image and mask exist.
        missing_files: ``"error"`` or ``"drop"`` for cases whose files are missing.
        train_fraction, num_folds, seed: the stratified split (``train_fraction`` unused when the
            CSV has a split column); folds of the training part.

    Raises:
        ManifestError: a missing column, a duplicate id, an unknown sex, pCR or split value, a
            missing file (policy ``error``), naming the CSV, row and column; a given split with
            exactly one training case (too few for folds).
    """
    csv = Path(csv)
    if female_code is None:
        female_code = _default_female(male_code)
    table = read_table(csv)
    require_columns(table, [id_column, label_column, sex_column], csv)
    paths = PathBuilder(image_root, out, check_files=check_files, missing_files=missing_files)
    given_split = bool(split_column) and split_column in table.columns
    conv = Conversion("rectal_mri", pd.DataFrame())
    seen: dict[str, int] = {}
    rows = []
    for i, rec in zip(table.index, table.to_dict("records")):
        line = line_of(i)
        cid = rec[id_column]
        if cid == "":
            raise ManifestError("empty patient id", file=csv, row=line, column=id_column)
        if cid in seen:
            raise ManifestError(f"duplicate patient id '{cid}' (first seen on row {seen[cid]})", file=csv, row=line,
                                column=id_column)
        seen[cid] = line
        label = binary_text(rec[label_column], file=csv, row=line, column=label_column)
        sex = normalise_sex(rec[sex_column], male_code=male_code, female_code=female_code, file=csv, row=line,
                            column=sex_column)
        split = _split_value(rec[split_column], file=csv, row=line, column=split_column) if given_split else None
        if label == "":
            conv.drop(f"pCR missing (column '{label_column}')")
            continue
        if sex is None:
            conv.drop(f"sex missing (column '{sex_column}')")
            continue
        image = paths.path(image_pattern, {"id": cid}, file=csv, row=line, column=id_column)
        mask = paths.path(mask_pattern, {"id": cid}, file=csv, row=line, column=id_column)
        if image is None or mask is None:
            conv.drop("image or mask file missing")
            continue
        row = {"case_id": cid, "image": image, "mask": mask, "label": label, "sex": sex}
        if age_column and age_column in table.columns:
            row["age"] = number_text(rec[age_column], file=csv, row=line, column=age_column)
        if site_column and site_column in table.columns:
            row["site"] = rec[site_column]
        if series_uid_column and series_uid_column in table.columns:
            row["series_uid"] = rec[series_uid_column]
        if given_split:
            row["split"] = split
        rows.append(row)
    out_table = pd.DataFrame(rows)
    if given_split:
        if len(out_table):
            train = (out_table["split"] == "train").to_numpy()
            if train.sum() == 1:
                only = out_table["case_id"][train].iloc[0]
                raise ManifestError(f"the split column gives one training case ('{only}' after dropped rows); the "
                                    f"training part needs at least 2 for its folds",
                                    file=csv, column=split_column)
            out_table["fold"] = ""
            out_table.loc[train, "fold"] = folds_of(
                [out_table.loc[train, "label"].tolist(), out_table.loc[train, "sex"].tolist()], num_folds=num_folds,
                seed=seed)
        conv.notes.append(f"split: as given in column '{split_column}' of {csv.name}; {num_folds} folds of the "
                          f"training part, seeded (seed {seed}) and stratified on pCR x sex")
    else:
        if len(out_table):
            out_table["split"], out_table["fold"] = split_columns(
                out_table["label"], out_table["sex"], train_fraction=train_fraction, num_folds=num_folds, seed=seed)
        conv.notes.append(f"split: seeded (seed {seed}) stratified on pCR x sex, train fraction {train_fraction}, "
                          f"{num_folds} folds of the training part")
    conv.table = out_table
    if len(out_table):
        conv.notes.append("cases per split x pCR x sex:\n" + split_label_sex_table(out_table, label_name="pcr"))
    return conv


def _split_value(raw, *, file, row: int, column: str) -> str:
    """A split cell as ``train``/``val``/``test``; ``ManifestError`` naming the row for anything else."""
    v = "" if is_missing(raw) else str(raw).strip().lower()
    if v not in SPLIT_VALUES:
        raise ManifestError(f"split '{raw}' is not one of {list(SPLIT_VALUES)}", file=file, row=row, column=column)
    return v
