"""Harvard-GF (3D OCT glaucoma screening) -> ``oct_glaucoma`` manifest.

The release has one ``.npz`` file per sample in ``Training/`` (2,100), ``Validation/`` (300) and
``Test/`` (900). Each file holds ``oct_bscans`` (the 200 x 200 x 200 B-scan volume), ``rnflt``,
``glaucoma`` (0/1), ``race`` (0 Asian, 1 Black or African American, 2 White or Caucasian; some code
of the authors also compares it with those strings, so both spellings are read), ``male``
(0 female, 1 male), ``age``, ``ethnicity`` (0 non-Hispanic, 1 Hispanic, -1 unknown), ``md``,
``tds`` and a few more.

Split: ``Training`` -> ``train``; ``Validation`` and ``Test`` -> ``test`` (2,100 / 1,200 cases,
700 / 400 per race: the FaMI paper's Table 1); ``validation_as="val"`` keeps ``Validation`` apart
as ``val`` instead. The training part gets ``num_folds`` seeded folds stratified on glaucoma x race.

Only the small keys are read: an ``.npz`` is a zip archive and :func:`numpy.load` opens members
lazily, so the B-scan volume is never decompressed (its presence is checked in the archive's
member list).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..manifest import ManifestError
from ._common import Conversion, folds_of, manifest_path, number_text

__all__ = ["SPLIT_FOLDERS", "RACES", "convert_harvard_gf"]

#: release folder (lower case) -> split; "Validation" follows ``validation_as``
SPLIT_FOLDERS = {"training": "train", "train": "train", "validation": "val", "val": "val", "test": "test",
                 "testing": "test"}
RACES = ("Asian", "Black", "White")
_RACE_STRINGS = {
    "asian": "Asian",
    "black": "Black", "black or african american": "Black", "african american": "Black",
    "white": "White", "white or caucasian": "White", "caucasian": "White",
}
_ETHNICITY = {0: "non-hispanic", 1: "hispanic"}


def _scalar(npz, key: str, file: Path, *, required: bool):
    if key not in npz.files:
        if required:
            raise ManifestError(f"no key '{key}' in the npz file (keys: {sorted(npz.files)})", file=file, column=key)
        return None
    try:
        arr = npz[key]
    except ValueError as e:  # object arrays need pickle
        raise ManifestError(f"cannot read key '{key}': {e} (pass --allow-pickle if you trust the file)",
                            file=file, column=key) from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ManifestError(f"cannot read key '{key}': {e}", file=file, column=key) from None
    if arr.size != 1:
        raise ManifestError(f"key '{key}' holds {arr.size} values, expected one", file=file, column=key)
    value = arr.reshape(-1)[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.item() if isinstance(value, np.generic) else value


def _race(value, file: Path) -> str:
    if isinstance(value, str):
        race = _RACE_STRINGS.get(value.strip().lower())
    else:
        try:
            f = float(value)
            race = RACES[int(f)] if f.is_integer() and 0 <= f < len(RACES) else None
        except (TypeError, ValueError):
            race = None
    if race is None:
        raise ManifestError(f"race '{value}' is not 0/1/2 (Asian/Black/White) or one of their names",
                            file=file, column="race")
    return race


def _binary(value, file: Path, key: str) -> str:
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = None
    if f not in (0.0, 1.0):
        raise ManifestError(f"'{value}' is not 0 or 1", file=file, column=key)
    return str(int(f))


def _code(value, mapping: dict[int, str]) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip().lower()
    try:
        f = float(value)
    except (TypeError, ValueError):
        return ""
    return mapping.get(int(f), "") if f.is_integer() else ""


def _split_folders(root: Path) -> list[tuple[Path, str]]:
    if not root.is_dir():
        raise ManifestError("Harvard-GF root folder not found", file=root)
    order = {"train": 0, "val": 1, "test": 2}
    found = sorted(((p, SPLIT_FOLDERS[p.name.lower()]) for p in root.iterdir()
                    if p.is_dir() and p.name.lower() in SPLIT_FOLDERS), key=lambda f: (order[f[1]], f[0].name))
    if not found:
        raise ManifestError("no Training/, Validation/ or Test/ folder of .npz files", file=root)
    return found


def convert_harvard_gf(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    validation_as: str = "test",
    num_folds: int = 5,
    seed: int = 0,
    image_key: str = "oct_bscans",
    allow_pickle: bool = False,
) -> Conversion:
    """Scan a Harvard-GF release and build the ``oct_glaucoma`` manifest.

    Args:
        root: the folder holding ``Training/``, ``Validation/``, ``Test/`` (any letter case;
            ``train``/``val``/``test`` are accepted too).
        out: the manifest to be written (paths are relative to its folder when beneath it).
        validation_as: ``"test"`` (FaMI's split, default) or ``"val"``.
        num_folds: folds of the training part (stratified on glaucoma x race, seeded).
        seed: seed of the folds.
        image_key: the array the bundles read; each file must contain it.
        allow_pickle: let :func:`numpy.load` unpickle object arrays (only for files you trust).

    Columns: ``case_id`` (file stem; ``<folder>_<stem>`` for all when stems repeat across
    folders), ``image`` (the ``.npz``), ``label`` (glaucoma 0/1), ``race``, ``age``, ``gender``
    (female/male, empty if absent), ``ethnicity`` (non-hispanic/hispanic, empty if unknown),
    ``source_file`` (path under ``root``), ``split``, ``fold``.

    Raises:
        ManifestError: a missing folder, an unreadable file, a missing key or an unknown code,
            naming the file and the key.
    """
    if validation_as not in ("test", "val"):
        raise ValueError(f"validation_as '{validation_as}' is not one of ['test', 'val']")
    root = Path(os.path.abspath(root))
    out_dir = Path(os.path.abspath(out)).parent
    rows = []
    for folder, split in _split_folders(root):
        if split == "val":
            split = validation_as
        for file in sorted(folder.glob("*.npz")):
            try:
                npz = np.load(file, allow_pickle=allow_pickle)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise ManifestError(f"not a readable .npz file: {e}", file=file) from None
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ManifestError("not an .npz archive (a single .npy array?)", file=file)
            with npz:
                if image_key not in npz.files:
                    raise ManifestError(f"no image key '{image_key}' in the npz file (keys: {sorted(npz.files)})",
                                        file=file, column=image_key)
                glaucoma = _binary(_scalar(npz, "glaucoma", file, required=True), file, "glaucoma")
                race = _race(_scalar(npz, "race", file, required=True), file)
                age = _scalar(npz, "age", file, required=False)
                male = _scalar(npz, "male", file, required=False)
                ethnicity = _scalar(npz, "ethnicity", file, required=False)
            rows.append({
                "stem": file.stem, "folder": folder.name, "image": manifest_path(file, out_dir), "label": glaucoma,
                "race": race, "age": number_text(age, file=file, column="age"),
                "gender": _code(male, {0: "female", 1: "male"}), "ethnicity": _code(ethnicity, _ETHNICITY),
                "source_file": file.relative_to(root).as_posix(), "split": split,
            })
    if not rows:
        raise ManifestError("no .npz files in the split folders", file=root)
    table = pd.DataFrame(rows)
    if table["stem"].duplicated().any():
        table["case_id"] = table["folder"].str.lower() + "_" + table["stem"]
        note = "file names repeat across folders: case ids are <folder>_<file stem>"
    else:
        table["case_id"] = table["stem"]
        note = None
    table["fold"] = ""
    train = table["split"] == "train"
    table.loc[train, "fold"] = folds_of([table.loc[train, "label"].tolist(), table.loc[train, "race"].tolist()],
                                        num_folds=num_folds, seed=seed)
    table = table.drop(columns=["stem", "folder"])
    conv = Conversion("oct_glaucoma", table.reset_index(drop=True))
    conv.notes.append(f"official split: Training -> train, Validation -> {validation_as}, Test -> test")
    if note:
        conv.notes.append(note)
    return conv
