"""SIIM-ISIC 2020 melanoma classification -> ``isic2020`` manifest.

Inputs: the training ground truth (``ISIC_2020_Training_GroundTruth.csv``, v1, or ``..._v2.csv``,
which adds ``lesion_id``), the JPEG folder (``<image_name>.jpg``), and optionally
``ISIC_2020_Training_Duplicates.csv`` (pairs ``image_name_1``, ``image_name_2`` of the same
image): the second image of each pair (``image_name_2``) is left out, the first kept.

Sex is missing for 65 images (all images of two patients). ``sex_missing="drop"`` (default)
leaves them out; ``"impute"`` fills each from the same patient's other images when those agree
on one sex, else with the majority sex of the images kept, and marks the row ``sex_imputed=1``.
In ISIC 2020 the patients concerned have no image with a recorded sex, so imputation gives them the
majority sex (male): a made-up value, only for users who choose it.

Split: patient level, so one patient's images never straddle train, validation and test, nor two
folds. Each patient is one unit, stratified on (any melanoma image, patient sex) with
:func:`fairmonai.data.stratified_train_val_test_split` (``train_fraction`` of the patients of each
stratum in train, ``val_fraction`` in val, the rest in test; ``val_fraction=0``, the default, gives
train/test only) and :func:`fairmonai.data.stratified_kfold` for the training patients' folds; the
image shares per split follow the patient shares closely but not exactly. Hänel et al.'s 70/20/10
split is ``train_fraction=0.7, val_fraction=0.2``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..attributes import isic_age_group
from ..manifest import ManifestError
from ..splits import strata_keys, stratified_kfold, stratified_train_val_test_split
from ._common import Conversion, PathBuilder, binary_text, line_of, number_text, read_table, require_columns, \
    split_label_sex_table

__all__ = ["SEX_MISSING_POLICIES", "convert_isic2020", "read_duplicates"]

SEX_MISSING_POLICIES = ("drop", "impute")
REQUIRED = ("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis", "target")


def read_duplicates(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The ``(image_name_1, image_name_2)`` pairs of the duplicates list."""
    path = Path(path)
    table = read_table(path)
    require_columns(table, ["image_name_1", "image_name_2"], path)
    pairs = []
    for i, (a, b) in table[["image_name_1", "image_name_2"]].iterrows():
        if a == "" or b == "":
            raise ManifestError("empty image name in a duplicate pair", file=path, row=line_of(i),
                                column="image_name_1" if a == "" else "image_name_2")
        pairs.append((a, b))
    return pairs


def _patient_split(patients: pd.DataFrame, *, train_fraction: float, val_fraction: float, num_folds: int,
                   seed: int) -> tuple[dict[str, str], dict[str, str]]:
    strata = strata_keys(patients["label"].tolist(), patients["sex"].tolist())
    parts = stratified_train_val_test_split(strata, train_fraction, val_fraction, seed)
    is_train = parts == "train"
    split = dict(zip(patients.index, parts))
    train_idx = np.flatnonzero(is_train)
    folds = stratified_kfold(strata[train_idx], num_folds=min(num_folds, len(train_idx)), seed=seed + 1)
    fold = {pid: "" for pid in patients.index}
    fold.update({patients.index[j]: str(int(f)) for j, f in zip(train_idx, folds)})
    return split, fold


def convert_isic2020(
    ground_truth: str | os.PathLike,
    image_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    duplicates: str | os.PathLike | None = None,
    image_pattern: str = "{image_name}.jpg",
    sex_missing: str = "drop",
    check_files: bool = True,
    missing_files: str = "error",
    train_fraction: float = 0.7,
    val_fraction: float = 0.0,
    num_folds: int = 5,
    seed: int = 0,
) -> Conversion:
    """Build the ``isic2020`` manifest from the ground-truth CSV and the image folder.

    Args:
        ground_truth: v1 or v2 ground-truth CSV.
        image_dir: folder of the JPEG images.
        out: the manifest to be written.
        duplicates: the duplicates CSV; the second image of each pair is left out.
        image_pattern: image path under ``image_dir``; placeholder ``{image_name}``.
        sex_missing: ``"drop"`` or ``"impute"`` (see the module docstring).
        check_files: check that each image exists.
        missing_files: ``"error"`` or ``"drop"`` for images not on disk.
        train_fraction, val_fraction, num_folds, seed: the patient-level split (``val_fraction`` > 0
            adds a ``val`` part; 0.7 and 0.2 give Hänel et al.'s 70/20/10).

    Columns: ``case_id`` (image_name), ``image``, ``label`` (target 0/1), ``sex``,
    ``age_approx``, ``age_group`` (:func:`fairmonai.data.attributes.isic_age_group`: 0-30, 31-60, 61+;
    empty when the age is), ``patient_id``, ``lesion_id`` (v2; empty for v1), ``anatom_site``,
    ``diagnosis``, ``sex_imputed`` (0/1), ``split``, ``fold``.

    Raises:
        ManifestError: missing columns, a duplicate or empty image name, an empty patient id, a
            target that is not 0/1 or disagrees with ``benign_malignant``, an unknown sex, a missing
            image under the ``error`` policy.
    """
    if sex_missing not in SEX_MISSING_POLICIES:
        raise ValueError(f"sex_missing '{sex_missing}' is not one of {list(SEX_MISSING_POLICIES)}")
    gt = Path(ground_truth)
    table = read_table(gt)
    require_columns(table, list(REQUIRED), gt)
    conv = Conversion("isic2020", pd.DataFrame())

    names = table["image_name"]
    for i in names.index[names == ""]:
        raise ManifestError("empty image name", file=gt, row=line_of(i), column="image_name")
    dup = names.duplicated()
    if dup.any():
        i = dup.idxmax()
        raise ManifestError(f"image '{names[i]}' is listed twice", file=gt, row=line_of(i), column="image_name")

    conv.notes.append(f"sex is empty for {int((table['sex'] == '').sum())} of {len(table)} images in "
                      f"{gt.name} (before dropping duplicates)")
    drop_dup = set()
    if duplicates is not None:
        pairs = read_duplicates(duplicates)
        known = set(names)
        drop_dup = {b for a, b in pairs if b in known and a in known}
        unknown = sum(1 for a, b in pairs if a not in known or b not in known)
        conv.notes.append(f"duplicates: {len(pairs)} pairs in {Path(duplicates).name}; the second image "
                          f"(image_name_2) of each pair is dropped" + (f"; {unknown} pairs name images not in the "
                                                                        f"ground truth and are ignored" if unknown
                                                                        else ""))

    rows = []
    for i, rec in zip(table.index, table.to_dict("records")):
        line = line_of(i)
        if rec["image_name"] in drop_dup:
            conv.drop("duplicate (image_name_2 of a pair in the duplicates list)")
            continue
        if rec["patient_id"] == "":
            raise ManifestError("empty patient id", file=gt, row=line, column="patient_id")
        label = binary_text(rec["target"], file=gt, row=line, column="target")
        if label == "":
            raise ManifestError("empty target", file=gt, row=line, column="target")
        bm = rec.get("benign_malignant", "").lower()
        if bm in ("benign", "malignant") and (bm == "malignant") != (label == "1"):
            raise ManifestError(f"target {label} disagrees with benign_malignant '{rec['benign_malignant']}'",
                                file=gt, row=line, column="target")
        sex = rec["sex"].lower()
        if sex not in ("", "male", "female"):
            raise ManifestError(f"unknown sex '{rec['sex']}', expected male, female or empty", file=gt, row=line,
                                column="sex")
        rows.append({
            "case_id": rec["image_name"], "line": line, "label": label, "sex": sex,
            "age_approx": number_text(rec["age_approx"], file=gt, row=line, column="age_approx"),
            "age_group": isic_age_group(rec["age_approx"]) or "",
            "patient_id": rec["patient_id"], "lesion_id": rec.get("lesion_id", ""),
            "anatom_site": rec["anatom_site_general_challenge"], "diagnosis": rec["diagnosis"], "sex_imputed": "0",
        })
    t = pd.DataFrame(rows)

    missing = t["sex"] == "" if len(t) else pd.Series([], dtype=bool)
    if missing.any():
        if sex_missing == "drop":
            conv.drop("sex missing (--sex-missing drop)", int(missing.sum()))
            t = t[~missing]
        else:
            known = t[~missing]
            majority = Counter(known["sex"]).most_common(1)[0][0] if len(known) else "female"
            per_patient = known.groupby("patient_id")["sex"].agg(lambda s: sorted(set(s)))
            filled = []
            for pid in t.loc[missing, "patient_id"]:
                sexes = per_patient.get(pid, [])
                filled.append(sexes[0] if len(sexes) == 1 else majority)
            from_patient = sum(1 for pid in t.loc[missing, "patient_id"] if len(per_patient.get(pid, [])) == 1)
            t.loc[missing, "sex"] = filled
            t.loc[missing, "sex_imputed"] = "1"
            conv.notes.append(f"sex imputed for {int(missing.sum())} images: {from_patient} from the same patient's "
                              f"other images, {int(missing.sum()) - from_patient} with the majority sex '{majority}'")

    paths = PathBuilder(image_dir, out, check_files=check_files, missing_files=missing_files)
    images = [paths.path(image_pattern, {"image_name": cid}, file=gt, row=line, column="image_name")
              for cid, line in zip(t["case_id"], t["line"])]
    t = t.assign(image=images)
    absent = t["image"].isna()
    if absent.any():
        conv.drop("image file missing", int(absent.sum()))
        t = t[~absent]
    t = t.drop(columns=["line"]).reset_index(drop=True)

    if len(t):
        patients = t.groupby("patient_id").agg(
            label=("label", "max"), sex=("sex", lambda s: Counter(sorted(s)).most_common(1)[0][0]))
        split, fold = _patient_split(patients, train_fraction=train_fraction, val_fraction=val_fraction,
                                     num_folds=num_folds, seed=seed)
        t["split"] = t["patient_id"].map(split)
        t["fold"] = t["patient_id"].map(fold)
        n = Counter(split.values())
        parts = " / ".join(f"{n[p]} {p}" for p in ("train", "val", "test") if p != "val" or val_fraction > 0)
        conv.notes.append(f"patient-level split (seed {seed}): {parts} patients, stratified on patient melanoma x sex")
        conv.notes.append("images per split x melanoma x sex:\n" + split_label_sex_table(t, label_name="melanoma"))
    conv.table = t
    return conv
