"""MAMA-MIA (breast DCE-MRI, expert tumour segmentations) -> ``mama_mia`` manifest.

Inputs: the clinical and imaging table (``clinical_and_imaging_info.xlsx``, sheet
``dataset_info``, or a CSV export of it; v1 or v2) and the release root (Synapse syn60868042)::

    images/<ID>/<id>_0000.nii.gz        pre-contrast phase (_0001, _0002: first two post-contrast)
    segmentations/expert/<id>.nii.gz    expert tumour mask
    patient_info_files/<id>.json        per-case metadata, incl. the breast bounding box
    train_test_splits.csv               official split: columns train_split, test_split

``<ID>`` is the table's ``patient_id`` (``DUKE_001``) and ``<id>`` the same in lower case
(``duke_001``), as the release names its files; with file checks on, a file whose name differs only
in letter case is accepted too.

Attributes as the MAMA-MIA challenge scores fairness (:mod:`fairmonai.data.attributes`):
``age_group`` from ``age`` (five bins; missing age -> empty cell, schema policy ``exclude``),
``menopausal_status`` from ``menopause`` (``peri`` -> ``pre``, missing -> ``unknown``),
``breast_density`` a-d (v2 only; missing -> empty cell, policy ``exclude``; v1 has no such column,
so every cell is empty). ``age``, ``dataset`` (the source collection), ``pcr`` and ``ethnicity``
are kept as they are.

Breast bounding box: ``primary_lesion.breast_coordinates`` of each JSON file -> ``bbox_x_min`` ...
``bbox_z_max``. **The manifest's bbox columns index the array of MONAI's** ``LoadImage`` **(nibabel
voxel order)**: ``image[x_min:x_max, y_min:y_max, z_min:z_max]`` on array axes 0, 1, 2, max
exclusive, as the synthetic cohort writes them and as :class:`fairmonai.transforms.MaskOutsideBoxd`
reads them. The release calls its axes x, y, z; public code that uses these files (the challenge's
sample submission among it) indexes the array returned by SimpleITK's ``GetArrayFromImage`` as
``[x_min:x_max, y_min:y_max, z_min:z_max]``, i.e. its "x" is the first axis of that array (the slice
axis, the last axis in nibabel order) and its "z" the last. So by default (``bbox_order="sitk"``) the
converter swaps x and z: manifest ``bbox_x_*`` = JSON ``z_*``, ``bbox_z_*`` = JSON ``x_*``, ``bbox_y_*``
= JSON ``y_*``. ``bbox_order="nifti"`` copies them unchanged, for files whose coordinates already follow
the nibabel order. Check one case against its mask before trusting either. Cases without a JSON file
(or without coordinates) get empty cells.

Split: the official ``train_test_splits.csv`` when given (train 1,200 / test 306); with
``official_test_as="val"`` the official test cases go to ``val`` instead, for a segmentation bundle
that validates on them as the MAMA-MIA paper's code does (it then has no ``test`` part). Without
the file: a seeded split stratified on collection x age group x menopausal status. Folds of the
training part are seeded and stratified the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..attributes import age_to_group, normalise_density, normalise_menopause
from ..manifest import ManifestError
from ._common import Conversion, PathBuilder, binary_text, folds_of, line_of, number_text, read_table, \
    require_columns, split_columns

__all__ = ["BBOX_COLUMNS", "DEFAULT_PATTERNS", "convert_mama_mia", "read_official_split"]

BBOX_COLUMNS = ("bbox_x_min", "bbox_x_max", "bbox_y_min", "bbox_y_max", "bbox_z_min", "bbox_z_max")
#: manifest column -> path pattern under the release root ({ID}: id as in the table, {id}: lower case)
DEFAULT_PATTERNS = {
    "image_pre": "images/{ID}/{id}_0000.nii.gz",
    "image_post1": "images/{ID}/{id}_0001.nii.gz",
    "image_post2": "images/{ID}/{id}_0002.nii.gz",
    "label": "segmentations/expert/{id}.nii.gz",
}
MENOPAUSE_COLUMNS = ("menopause", "menopausal_status")
SPLIT_FILE = "train_test_splits.csv"
INFO_FOLDER = "patient_info_files"


def read_official_split(path: str | os.PathLike) -> dict[str, str]:
    """Upper-case patient id -> ``"train"``/``"test"`` from the official split file.

    Reads the release's wide layout (columns ``train_split`` and ``test_split``, each a list of
    ids) or a long one (``patient_id``, ``split``).

    Raises:
        ManifestError: other columns, an unknown split name, or an id in both parts.
    """
    path = Path(path)
    table = read_table(path)
    split: dict[str, str] = {}
    entries: list[tuple[int, str, str, str]] = []
    if {"train_split", "test_split"} <= set(table.columns):
        for col, name in (("train_split", "train"), ("test_split", "test")):
            entries += [(line_of(i), col, v, name) for i, v in table[col].items() if v != ""]
    elif {"patient_id", "split"} <= set(table.columns):
        for i, (pid, s) in table[["patient_id", "split"]].iterrows():
            name = s.lower()
            if name not in ("train", "test"):
                raise ManifestError(f"split '{s}' is not train or test", file=path, row=line_of(i), column="split")
            entries.append((line_of(i), "patient_id", pid, name))
    else:
        raise ManifestError(f"expected columns train_split and test_split (or patient_id and split); the file has "
                            f"{list(table.columns)}", file=path, row=1)
    for line, col, pid, name in entries:
        key = pid.upper()
        if key in split and split[key] != name:
            raise ManifestError(f"patient '{pid}' is in both the train and the test split", file=path, row=line,
                                column=col)
        split[key] = name
    return split


BBOX_ORDERS = ("sitk", "nifti")


def _bbox(info_dir: Path | None, cid: str, bbox_order: str = "sitk") -> tuple[list[str], bool]:
    """The six bbox cells of a case in manifest (LoadImage array) order, empty when unknown, and whether
    a JSON file was found. ``bbox_order="sitk"``: the JSON's x and z are swapped (module docstring)."""
    empty = [""] * len(BBOX_COLUMNS)
    if info_dir is None:
        return empty, False
    for name in (f"{cid.lower()}.json", f"{cid}.json", f"{cid.upper()}.json"):
        file = info_dir / name
        if file.is_file():
            break
    else:
        return empty, False
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"not valid JSON: {e}", file=file) from None
    coords = (data.get("primary_lesion") or {}).get("breast_coordinates") if isinstance(data, dict) else None
    if not coords:
        return empty, True
    swap = {"x": "z", "y": "y", "z": "x"} if bbox_order == "sitk" else {"x": "x", "y": "y", "z": "z"}
    cells = []
    for col in BBOX_COLUMNS:
        axis, bound = col[len("bbox_"):].split("_", 1)
        key = f"{swap[axis]}_{bound}"
        cells.append(number_text(coords.get(key), file=file,
                                 column=f"primary_lesion.breast_coordinates.{key}"))
    return cells, True


def convert_mama_mia(
    table_path: str | os.PathLike,
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    sheet: str = "dataset_info",
    split_file: str | os.PathLike | None = None,
    use_official_split: bool = True,
    official_test_as: str = "test",
    info_dir: str | os.PathLike | None = None,
    bbox_order: str = "sitk",
    patterns: dict[str, str] | None = None,
    check_files: bool = True,
    missing_files: str = "error",
    train_fraction: float = 0.7,
    num_folds: int = 5,
    seed: int = 0,
) -> Conversion:
    """Build the ``mama_mia`` manifest from the clinical table and the release root.

    Args:
        table_path: ``.xlsx`` (sheet ``sheet``) or ``.csv`` with ``patient_id``, ``age`` and
            ``menopause`` (or ``menopausal_status``); ``breast_density``, ``dataset``, ``pcr``,
            ``ethnicity`` are used when present.
        root: the release root (images, segmentations, patient_info_files, train_test_splits.csv).
        out: the manifest to be written.
        sheet: Excel sheet.
        split_file: the official split (default ``root/train_test_splits.csv`` when it exists).
        use_official_split: ``False`` ignores the official split file and makes a seeded split.
        official_test_as: ``"test"`` (default) or ``"val"`` for the official test cases.
        info_dir: JSON folder (default ``root/patient_info_files`` when it exists).
        bbox_order: ``"sitk"`` (default: the JSON's x indexes SimpleITK's array axis 0, so x and z are
            swapped into the manifest's LoadImage order) or ``"nifti"`` (copied unchanged).
        patterns: overrides of :data:`DEFAULT_PATTERNS`.
        check_files: check that the images and masks exist.
        missing_files: ``"error"`` or ``"drop"`` for cases with a missing file.
        train_fraction, num_folds, seed: the seeded split when there is no official one, and folds.

    Raises:
        ManifestError: a missing column, duplicate id, unparseable age or unknown menopause or
            density value (naming table, row, column); a case missing from the official split; a
            missing file under the ``error`` policy; an invalid JSON file.
    """
    if bbox_order not in BBOX_ORDERS:
        raise ValueError(f"bbox_order '{bbox_order}' is not one of {list(BBOX_ORDERS)}")
    if official_test_as not in ("test", "val"):
        raise ValueError(f"official_test_as '{official_test_as}' is not one of ['test', 'val']")
    table_path = Path(table_path)
    root = Path(os.path.abspath(root))
    pats = dict(DEFAULT_PATTERNS, **(patterns or {}))
    unknown = sorted(set(pats) - set(DEFAULT_PATTERNS))
    if unknown:
        raise ValueError(f"unknown pattern key(s) {unknown}; expected {sorted(DEFAULT_PATTERNS)}")
    table = read_table(table_path, sheet=sheet)
    meno_col = next((c for c in MENOPAUSE_COLUMNS if c in table.columns), MENOPAUSE_COLUMNS[0])
    require_columns(table, ["patient_id", "age", meno_col], table_path)
    has_density = "breast_density" in table.columns

    official = None
    if use_official_split:
        if split_file is None and (root / SPLIT_FILE).is_file():
            split_file = root / SPLIT_FILE
        if split_file is not None:
            official = read_official_split(split_file)
    if info_dir is None and (root / INFO_FOLDER).is_dir():
        info_dir = root / INFO_FOLDER
    info = Path(info_dir) if info_dir is not None else None
    if info is not None and not info.is_dir():
        raise ManifestError("patient info folder not found", file=info)

    paths = PathBuilder(root, out, check_files=check_files, missing_files=missing_files, case_insensitive=True)
    conv = Conversion("mama_mia", pd.DataFrame(), summary_by=["dataset", "pcr"])
    seen: dict[str, int] = {}
    rows = []
    n_json = 0
    for i, rec in zip(table.index, table.to_dict("records")):
        line = line_of(i)
        cid = rec["patient_id"]
        if cid == "":
            raise ManifestError("empty patient id", file=table_path, row=line, column="patient_id")
        if cid.upper() in seen:
            raise ManifestError(f"duplicate patient id '{cid}' (first seen on row {seen[cid.upper()]})",
                                file=table_path, row=line, column="patient_id")
        seen[cid.upper()] = line
        try:
            group = age_to_group(rec["age"])
        except ValueError as e:
            raise ManifestError(str(e), file=table_path, row=line, column="age") from None
        try:
            meno = normalise_menopause(rec[meno_col])
        except ValueError as e:
            raise ManifestError(str(e), file=table_path, row=line, column=meno_col) from None
        density = None
        if has_density:
            try:
                density = normalise_density(rec["breast_density"])
            except ValueError as e:
                raise ManifestError(str(e), file=table_path, row=line, column="breast_density") from None
        split = ""
        if official is not None:
            split = official.get(cid.upper(), "")
            if split == "":
                raise ManifestError(f"case '{cid}' is not in the official split file {split_file}",
                                    file=table_path, row=line, column="patient_id")
            if split == "test":
                split = official_test_as
        fields = {"ID": cid, "id": cid.lower()}
        files = {col: paths.path(p, fields, file=table_path, row=line, column="patient_id") for col, p in pats.items()}
        if any(v is None for v in files.values()):
            conv.drop("image or mask file missing")
            continue
        bbox, found = _bbox(info, cid, bbox_order)
        n_json += found
        row = {"case_id": cid, **files,
               "age_group": group or "", "menopausal_status": meno, "breast_density": density or "",
               "age": number_text(rec["age"], file=table_path, row=line, column="age"),
               **dict(zip(BBOX_COLUMNS, bbox)),
               "dataset": rec.get("dataset", ""),
               "pcr": binary_text(rec.get("pcr", ""), file=table_path, row=line, column="pcr"),
               "ethnicity": rec.get("ethnicity", ""),
               "split": split}
        rows.append(row)
    out_table = pd.DataFrame(rows)
    if len(out_table):
        site = out_table["dataset"].tolist()
        joint = (out_table["age_group"] + "|" + out_table["menopausal_status"]).tolist()
        if official is None:
            out_table["split"], out_table["fold"] = split_columns(
                site, joint, train_fraction=train_fraction, num_folds=num_folds, seed=seed)
            conv.notes.append(f"no official split file: seeded (seed {seed}) split stratified on collection x age "
                              f"group x menopausal status, train fraction {train_fraction}")
        else:
            out_table["fold"] = ""
            train = out_table["split"] == "train"
            out_table.loc[train, "fold"] = folds_of(
                [out_table.loc[train, "dataset"].tolist(), [j for j, t in zip(joint, train) if t]],
                num_folds=num_folds, seed=seed)
            conv.notes.append(f"official split from {split_file} (official test cases -> '{official_test_as}'); "
                              f"{len(set(official) - set(seen))} ids of the split file are not in the table")
    conv.table = out_table
    if not has_density:
        conv.notes.append("the table has no breast_density column (v1): breast_density is empty for every case")
    conv.notes.append(f"breast bounding boxes: {n_json} JSON files found"
                      + ("" if info is not None else " (no patient_info_files folder)"))
    conv.notes.append(f"menopause read from column '{meno_col}'")
    return conv

