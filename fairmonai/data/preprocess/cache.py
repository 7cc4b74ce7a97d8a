"""Preprocess a rectal-MRI cohort once: crops written as NIfTI, one CSV row per case, stale crops never reused.

:func:`preprocess_cohort` runs the steps of :mod:`.geometry` (read, resample, components, box, crop,
z-score; :func:`preprocess_images` for one case) on every case of a data list and writes, under
``out_dir``::

    preprocessing.csv            one row per case (columns: CSV_COLUMNS)
    cases/<case_id>/image.nii.gz z-scored image crop, float32, crop_size voxels (SimpleITK writes the
                                 NIfTI: MONAI's LoadImage gives the (X, Y, Z) array and RAS affine of
                                 transforms.sitk_to_metatensor)
    cases/<case_id>/mask.nii.gz  kept mask crop, uint8 0/1
    cases/<case_id>/record.json  the cache key and the CSV row, written last
    boxes/<case_id>.json         crop_size="auto" only: the training cases' boxes

:func:`crop_datalist` points a data list at the crops (``image``/``mask`` replaced); a bundle then
loads them with ``LoadImaged`` + ``EnsureChannelFirstd`` and pads them with
:class:`~fairmonai.data.preprocess.transforms.PadToDivisibled`. In a bundle config::

    "preprocess_settings": {"crop_size": [79, 79, 40], "min_voxels": 20, "box_mode": "union"},
    "preprocessed": "$fairmonai.data.preprocess.preprocess_cohort(fairmonai.data.load_datalist(@manifest,
                     @schema, 'all'), @bundle_root + '/preprocessed', @preprocess_settings, workers=@num_workers)",
    "train#datalist": "$fairmonai.data.preprocess.crop_datalist(fairmonai.data.load_datalist(@manifest,
                       @schema, 'train', fold=@fold), @preprocessed)"

(all cases at once, so that ``crop_size="auto"`` sees the whole training split and every split
shares one cache).

**The cache key** of a case is the SHA-256 of: the settings that change the output
(:meth:`PreprocessSettings.key_dict`, with ``crop_size="auto"`` resolved to its numbers),
:data:`PREPROCESS_VERSION`, the case id, the series UID, and each source file's absolute path,
size and modification time in ns (for a DICOM folder, every file directly in it). A case is read
from the cache only when its ``record.json`` holds the same key and its crop files have the sizes
recorded; otherwise it is recomputed and overwritten. So a changed setting, a source file
modified, replaced, moved or touched, or a new code version recomputes the case, and a crop is
never reused for anything but its own settings and sources. *Why path + size + mtime, not a content
hash:* a stat costs nothing, while hashing reads every source on every run (tens of MB per case,
minutes for a cohort on a network disk); ``make`` and ``rsync`` rely on the same triple. The cost:
``touch`` recomputes a case whose voxels did not change (safe), and a file replaced by another of
the same size with its mtime set back would be missed (not done by ordinary tools). One
``out_dir`` holds one setting at a time: another setting recomputes and overwrites the crops (use
one folder per setting to keep several).

**Bad cases** (missing files, an unreadable image, an empty mask, no component left, ...) never
reach training. Missing files are found before any case is processed; every other
:class:`~fairmonai.errors.InputError` of a case is caught, the case's row gets ``status`` ``"error"``
and the message in ``reason``, and after the run (CSV written) ``on_error="raise"`` (default) raises
one :class:`~fairmonai.data.preprocess.io.PreprocessError` listing every failed case;
``on_error="skip"`` marks them ``"skipped"``, warns, and :func:`crop_datalist` leaves them out. A
failure is cached like a success (same key), so an unchanged bad case fails again without being
read. Errors that are not input errors (bugs) propagate at once.

A case whose crop holds less than :data:`LOW_FRACTION_INSIDE` of its kept mask is named in a
warning (``fraction_inside`` is in the CSV for every case): a tumour larger than the crop, or, with
``box_mode="union"``, kept components far apart, so the crop centred on their common box may miss
the tumour. (The synthetic cohort's spurious components of up to 19 voxels at 0.75 x 0.75 x 3 mm,
1.69 mm^3 each, cover up to about 32 voxels at 1 mm, so those of about 12 voxels or more survive
``min_voxels=20``: in a 20-case cohort (seed 1), 2 of the 4 cases with spurious components kept one,
and in one of them the union box's crop held none of the tumour. ``box_mode="largest"`` ignores them.)

The series UID in the CSV is the record's (``series_uid_key``), else, for a DICOM folder holding
one series, that series' UID, else empty.

**Timing** (``benchmarks/bench_rectal_preprocess.py``, 8 DICOM series of 512 x 512 x 40, one
SimpleITK thread, warm page cache, a quiet 2-core virtual machine): a case alone, reading the series
and writing both crops included, takes 0.40 s median (0.44 s at most) at 0.5 x 0.5 x 3 mm and 0.32 s
at 0.4 x 0.4 x 3 mm; the 8-case cohort with 2 workers 1.3-1.7 s; the second call, every case from the
cache, 0.008 s. At a load average near 5 the same case took 1.0-1.7 s (see :mod:`.geometry`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ...errors import InputError
from . import geometry as G
from .io import PreprocessError, list_dicom_series, read_image, read_mask

__all__ = [
    "CSV_NAME",
    "CSV_COLUMNS",
    "INFO_FIELDS",
    "LOW_FRACTION_INSIDE",
    "ON_ERROR",
    "PREPROCESS_VERSION",
    "CaseCrop",
    "PreprocessSettings",
    "crop_datalist",
    "preprocess_cohort",
    "preprocess_images",
    "read_preprocessing_csv",
    "resolved_settings",
    "series_uid_of",
]

#: Bump when a step's output changes for the same settings: every cached crop is then recomputed.
PREPROCESS_VERSION = 1
CSV_NAME = "preprocessing.csv"
ON_ERROR = ("raise", "skip")
#: A case whose crop holds less than this share of its kept mask is named in a warning.
LOW_FRACTION_INSIDE = 0.5

#: The fields each step adds to a case's row (and to ``d["preprocess"]`` in the MONAI transforms).
#: Lists are JSON text (``"[79, 79, 40]"``), ``(x, y, z)`` order as in :mod:`.geometry`.
INFO_FIELDS = {
    "load": ("series_uid", "image_source", "mask_source", "spacing_in", "size_in", "origin", "direction"),
    "resample": ("spacing", "size_resampled"),
    "components": ("components_kept", "components_dropped", "kept_sizes", "dropped_sizes"),
    "crop": ("box_mode", "box_start", "box_size", "crop_size", "crop_start", "pad_lower", "pad_upper",
             "padding_voxels", "mask_voxels", "mask_voxels_inside", "fraction_inside"),
    "zscore": ("zscore_mean", "zscore_sd"),
}
#: Columns of ``preprocessing.csv``, in order.
CSV_COLUMNS = ("case_id", "status", "reason", "image_crop", "mask_crop") + tuple(
    f for step in INFO_FIELDS.values() for f in step) + ("min_voxels", "connectivity", "per_slice", "key",
                                                         "from_cache")

_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MSG_CASE_ID = ("case id {case!r} cannot name a folder (use letters, digits, '.', '_', '-', starting with a letter "
                "or digit)")
_MSG_DUPLICATE = "case id '{case}' appears {n} times in the records"
_MSG_MISSING_KEY = "record {i} has no '{key}'"
_MSG_NOT_FOUND = "{key} not found: {path}"
_MSG_FAILED = "{n} of {total} cases cannot be preprocessed (on_error='raise'; rows in {csv}):\n{lines}"
_MSG_NO_TRAIN = ("crop_size='auto' takes the mean tumour box of the cases whose '{key}' is '{split}', and there is "
                 "none among the {n} records")
_MSG_NOT_PREPROCESSED = "case '{case}' is not in the preprocessing table {where}"

logger = logging.getLogger("fairmonai.data.preprocess")


def _json(values: Iterable) -> str:
    return json.dumps([v.item() if isinstance(v, np.generic) else v for v in values])


def image_info(image: sitk.Image) -> dict:
    """The source-geometry fields of :data:`INFO_FIELDS` ``["load"]``."""
    return {"spacing_in": _json(image.GetSpacing()), "size_in": _json(image.GetSize()),
            "origin": _json(image.GetOrigin()), "direction": _json(image.GetDirection())}


def components_info(ci: G.ComponentInfo) -> dict:
    """The fields of :data:`INFO_FIELDS` ``["components"]``."""
    return {"components_kept": ci.n_kept, "components_dropped": ci.n_dropped,
            "kept_sizes": _json(ci.kept_sizes), "dropped_sizes": _json(ci.dropped_sizes)}


def crop_info(box: G.Box, box_mode: str, crop: G.Crop) -> dict:
    """The fields of :data:`INFO_FIELDS` ``["crop"]``."""
    return {"box_mode": box_mode, "box_start": _json(box.start), "box_size": _json(box.size),
            "crop_size": _json(crop.size), "crop_start": _json(crop.start), "pad_lower": _json(crop.pad_lower),
            "pad_upper": _json(crop.pad_upper), "padding_voxels": crop.padding_voxels,
            "mask_voxels": crop.mask_voxels, "mask_voxels_inside": crop.mask_voxels_inside,
            "fraction_inside": crop.fraction_inside}


# --- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessSettings:
    """The settings of the rectal-MRI preprocessing (defaults: the paper's).

    Attributes:
        spacing: resampling spacing, mm ``(x, y, z)``. Default ``(1, 1, 1)``.
        min_voxels, connectivity, per_slice: :func:`.geometry.mask_components` (20, ``"face"``, False).
        box_mode: :func:`.geometry.bounding_box` (``"union"``).
        crop_size: ``(x, y, z)`` voxels, default ``(79, 79, 40)``; or ``"auto"``: the mean box
            (:func:`.geometry.mean_box_size`) of the records whose ``split`` is ``auto_crop_split``.
        auto_crop_split: the split of ``"auto"`` (``"train"``; with k-fold manifests the whole training
            part, all folds, so one crop size serves every fold).
        mask_labels, resample_mask_to_image: :func:`~fairmonai.data.preprocess.io.read_mask`.
        on_error: ``"raise"`` (default) or ``"skip"`` (see the module docstring).
    """

    spacing: tuple = G.DEFAULT_SPACING
    min_voxels: int = G.MIN_COMPONENT_VOXELS
    connectivity: str = "face"
    per_slice: bool = False
    box_mode: str = "union"
    crop_size: Any = G.DEFAULT_CROP_SIZE
    auto_crop_split: str = "train"
    mask_labels: Any = None
    resample_mask_to_image: bool = False
    on_error: str = "raise"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "spacing", G._triple(self.spacing, "spacing"))
        if isinstance(self.min_voxels, bool) or int(self.min_voxels) != self.min_voxels or self.min_voxels < 1:
            raise ValueError(f"min_voxels must be an integer >= 1, got {self.min_voxels!r}.")
        set_(self, "min_voxels", int(self.min_voxels))
        G._check_option(self.connectivity, G.CONNECTIVITIES, "connectivity")
        G._check_option(self.box_mode, G.BOX_MODES, "box_mode")
        G._check_option(self.on_error, ON_ERROR, "on_error")
        set_(self, "per_slice", bool(self.per_slice))
        set_(self, "resample_mask_to_image", bool(self.resample_mask_to_image))
        if self.crop_size != "auto":
            set_(self, "crop_size", G._triple(self.crop_size, "crop_size", kind=int))
        if self.mask_labels is not None:
            labels = [self.mask_labels] if np.isscalar(self.mask_labels) else list(self.mask_labels)
            set_(self, "mask_labels", tuple(int(v) for v in labels))

    @classmethod
    def of(cls, value: PreprocessSettings | Mapping | None) -> PreprocessSettings:
        """Settings from ``None`` (defaults), a dict (a bundle config's), or settings; unknown keys are errors."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        unknown = sorted(set(value) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown preprocessing settings {unknown}; known: {[f.name for f in fields(cls)]}.")
        return cls(**dict(value))

    def key_dict(self, crop_size: Sequence[int] | None = None) -> dict:
        """The settings that change a case's output, for the cache key (``crop_size`` resolved)."""
        d = asdict(self)
        for name in ("on_error", "auto_crop_split"):
            d.pop(name)
        d["crop_size"] = list(crop_size if crop_size is not None else self.crop_size)
        d["spacing"] = list(d["spacing"])
        d["mask_labels"] = None if d["mask_labels"] is None else list(d["mask_labels"])
        return d


# --- one case -------------------------------------------------------------------------------------


@dataclass
class CaseCrop:
    """One case preprocessed: z-scored image crop, mask crop (SimpleITK images, crop grid), inside array, row."""

    image: sitk.Image
    mask: sitk.Image
    inside: np.ndarray
    row: dict = field(default_factory=dict)


def preprocess_images(image: sitk.Image, mask: sitk.Image, settings: PreprocessSettings | Mapping | None = None,
                      *, case: Any = None, crop_size: Sequence[int] | None = None) -> CaseCrop:
    """Steps 1-5 of :mod:`.geometry` on one case's image and mask (what the MONAI transforms chain does).

    Args:
        image, mask: SimpleITK image and uint8 mask on its grid (e.g. from ``read_image`` / ``read_mask``).
        settings: :class:`PreprocessSettings` (or a dict of them); defaults to the paper's.
        case: case id, named in errors.
        crop_size: overrides ``settings.crop_size`` (needed when that is ``"auto"``).

    Returns:
        :class:`CaseCrop`; its ``row`` holds the resample, components, crop and z-score fields of
        :data:`INFO_FIELDS`.

    Raises:
        PreprocessError: see :func:`.geometry.mask_components`, :func:`.geometry.zscore_inside`.
    """
    s = PreprocessSettings.of(settings)
    size = crop_size if crop_size is not None else s.crop_size
    if size == "auto":
        raise ValueError("crop_size 'auto' must be resolved first (preprocess_cohort does it from the training split).")
    row = image_info(image)
    r_image, r_mask = G.resample_isotropic(image, mask, s.spacing)
    row.update({"spacing": _json(r_image.GetSpacing()), "size_resampled": _json(r_image.GetSize())})
    kept, ci = G.mask_components(r_mask, min_voxels=s.min_voxels, connectivity=s.connectivity,
                                 per_slice=s.per_slice, case=case)
    row.update(components_info(ci))
    box = G.bounding_box(kept, s.box_mode, connectivity=s.connectivity, case=case)
    crop = G.crop_around(r_image, kept, box, size)
    row.update(crop_info(box, s.box_mode, crop))
    z_image, mean, sd = G.zscore_inside(crop.image, crop.inside, case=case, return_stats=True)
    row.update({"zscore_mean": mean, "zscore_sd": sd})
    return CaseCrop(z_image, crop.mask, crop.inside, row)


def _read_case(job: Mapping) -> tuple[sitk.Image, sitk.Image]:
    s: PreprocessSettings = job["settings"]
    image = read_image(job["image"], series_uid=job["series_uid"] or None, case=job["case_id"])
    mask = read_mask(job["mask"], image, case=job["case_id"], mask_labels=s.mask_labels,
                     resample_to_image=s.resample_mask_to_image)
    return image, mask


def series_uid_of(path: str | os.PathLike, series_uid: str | None = None, *, case: Any = None) -> str:
    """The series UID read for ``path``: ``series_uid`` when given, else a DICOM folder's only series, else ``""``."""
    if series_uid:
        return str(series_uid)
    if os.path.isdir(path):
        uids = list(list_dicom_series(path, case=case))
        if len(uids) == 1:
            return uids[0]
    return ""


def _write_atomic_image(image: sitk.Image, path: Path) -> int:
    tmp = path.with_name(f".{os.getpid()}.{path.name}")  # keeps the .nii.gz suffix SimpleITK needs
    sitk.WriteImage(image, str(tmp), useCompression=True)
    os.replace(tmp, path)
    return path.stat().st_size


def _write_atomic_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{os.getpid()}.{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _process_case(job: Mapping) -> dict:
    """Read, preprocess and write one case; its row (input errors become an ``error`` row, cached too)."""
    case_dir = Path(job["case_dir"])
    case_dir.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"case_id": job["case_id"], "image_source": job["image"], "mask_source": job["mask"],
                           "key": job["key"]}
    files: dict[str, int] = {}
    try:
        image, mask = _read_case(job)
        row["series_uid"] = series_uid_of(job["image"], job["series_uid"], case=job["case_id"])
        out = preprocess_images(image, mask, job["settings"], case=job["case_id"], crop_size=job["crop_size"])
    except InputError as e:
        row.update({"status": "error", "reason": str(e)})
        row["series_uid"] = job["series_uid"] or ""
    else:
        row.update(out.row)
        row.update({"status": "ok", "reason": ""})
        for name, img in (("image.nii.gz", out.image), ("mask.nii.gz", out.mask)):
            files[name] = _write_atomic_image(img, case_dir / name)
        row["image_crop"], row["mask_crop"] = str(case_dir / "image.nii.gz"), str(case_dir / "mask.nii.gz")
    record = {"key": job["key"], "row": row, "files": files}
    _write_atomic_text(json.dumps(record, indent=1), case_dir / "record.json")
    return row


def _box_of_case(job: Mapping) -> dict:
    """Steps 1-3 of one case for ``crop_size="auto"``: ``{"box": [start, size]}`` or ``{"error": message}``."""
    s: PreprocessSettings = job["settings"]
    try:
        image, mask = _read_case(job)
        _, r_mask = G.resample_isotropic(image, mask, s.spacing)
        kept, _ = G.mask_components(r_mask, min_voxels=s.min_voxels, connectivity=s.connectivity,
                                    per_slice=s.per_slice, case=job["case_id"])
        box = G.bounding_box(kept, s.box_mode, connectivity=s.connectivity, case=job["case_id"])
        result = {"box": [list(box.start), list(box.size)]}
    except InputError as e:
        result = {"error": str(e)}
    path = Path(job["box_file"])
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic_text(json.dumps({"key": job["key"], **result}), path)
    return result


def _init_worker() -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # one process per core: no oversubscription


# --- the cohort -----------------------------------------------------------------------------------


def _fingerprint(path: str) -> list:
    """``[path, size, mtime_ns]`` of a file, or of every file directly in a folder (sorted)."""
    p = Path(path).resolve()
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def _key(payload: Mapping) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _text(value: Any) -> str:
    """A record's optional text field: ``""`` for ``None`` / NaN (a manifest's empty cell)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _records(records, keys: Mapping[str, str]) -> list[dict]:
    if isinstance(records, pd.DataFrame):
        records = records.to_dict("records")
    out, problems = [], []
    for i, r in enumerate(records):
        for k in ("case_id", "image", "mask"):
            if keys[k] not in r:
                raise ValueError(_MSG_MISSING_KEY.format(i=i, key=keys[k]))
        case = str(r[keys["case_id"]])
        if not _CASE_ID.match(case):
            problems.append(PreprocessError(_MSG_CASE_ID.format(case=case)))
        out.append({"case_id": case, "image": str(r[keys["image"]]), "mask": str(r[keys["mask"]]),
                    "series_uid": _text(r.get(keys["series_uid"])), "split": _text(r.get(keys["split"]))})
    counts = pd.Series([r["case_id"] for r in out]).value_counts()
    problems += [PreprocessError(_MSG_DUPLICATE.format(case=c, n=n)) for c, n in counts.items() if n > 1]
    for r in out:
        for k in ("image", "mask"):
            if not os.path.exists(r[k]):
                problems.append(PreprocessError(_MSG_NOT_FOUND.format(key=k, path=r[k]), case=r["case_id"]))
    if problems:
        lines = "\n".join(f"  {e}" for e in problems)
        raise PreprocessError(f"{len(problems)} problem(s) in the records, nothing was preprocessed:\n{lines}")
    return out


class _Progress:
    """One line every ``every`` cases (and at the end): ``preprocess: 20/120 cases (15 from cache, 1 failed)``."""

    def __init__(self, what: str, total: int, every: int | None):
        self.what, self.total, self.every = what, total, every
        self.done = self.cached = self.failed = 0
        self.t0 = time.perf_counter()

    def step(self, cached: bool, failed: bool) -> None:
        self.done += 1
        self.cached += cached
        self.failed += failed
        if self.every and (self.done % self.every == 0 or self.done == self.total):
            print(f"{self.what}: {self.done}/{self.total} cases ({self.cached} from cache, {self.failed} failed, "
                  f"{time.perf_counter() - self.t0:.1f} s)", flush=True)


def _run(fn, jobs: list[dict], workers: int, progress: _Progress, on_result) -> None:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            on_result(job, fn(job))
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
        futures = {pool.submit(fn, job): job for job in jobs}
        for fut in as_completed(futures):
            on_result(futures[fut], fut.result())


def _resolve_auto_crop(recs: list[dict], fps: list, s: PreprocessSettings, out: Path, workers: int,
                       progress: int | None, split_key: str) -> tuple[int, int, int]:
    train = [i for i, r in enumerate(recs) if r["split"] == s.auto_crop_split]
    if not train:
        raise PreprocessError(_MSG_NO_TRAIN.format(key=split_key, split=s.auto_crop_split, n=len(recs)))
    box_settings = {k: v for k, v in s.key_dict(crop_size=()).items() if k != "crop_size"}
    boxes: dict[int, Any] = {}
    jobs = []
    for i in train:
        r = recs[i]
        key = _key({"version": PREPROCESS_VERSION, "settings": box_settings, "case_id": r["case_id"],
                    "series_uid": r["series_uid"], "sources": fps[i]})
        box_file = out / "boxes" / f"{r['case_id']}.json"
        try:
            cached = json.loads(box_file.read_text())
        except (OSError, ValueError):
            cached = None
        if cached is not None and cached.get("key") == key:
            boxes[i] = cached
        else:
            jobs.append({**r, "settings": s, "key": key, "box_file": str(box_file), "index": i})
    prog = _Progress("preprocess (boxes for crop_size='auto')", len(jobs), progress)

    def done(job, result):
        boxes[job["index"]] = result
        prog.step(False, "error" in result)

    _run(_box_of_case, jobs, workers, prog, done)
    good = [boxes[i]["box"] for i in train if "box" in boxes[i]]
    if not good:
        raise PreprocessError(_MSG_NO_TRAIN.format(key=split_key, split=s.auto_crop_split, n=len(recs))
                              + " with a usable mask")
    return G.mean_box_size(good)


def preprocess_cohort(records: Sequence[Mapping] | pd.DataFrame, out_dir: str | os.PathLike,
                      settings: PreprocessSettings | Mapping | None = None, *, workers: int = 1,
                      progress: int | None = 10, image_key: str = "image", mask_key: str = "mask",
                      case_id_key: str = "case_id", series_uid_key: str = "series_uid",
                      split_key: str = "split") -> pd.DataFrame:
    """Preprocess every case once into ``out_dir`` (crops + ``preprocessing.csv``), reusing valid crops.

    See the module docstring for the layout, the cache key and bad cases.

    Args:
        records: data-list records (dicts, e.g. :func:`fairmonai.data.load_datalist` with ``"all"``)
            or a manifest table, each with a case id, an image (DICOM series folder or NIfTI) and a
            mask; optionally a series UID and a split (needed by ``crop_size="auto"``).
        out_dir: the cache folder (created).
        settings: :class:`PreprocessSettings` or a dict of its fields; defaults to the paper's.
        workers: processes; ``> 1`` runs cases in a ``concurrent.futures.ProcessPoolExecutor``, each
            worker with one SimpleITK thread. Results are identical to ``workers=1``.
        progress: print a line every ``progress`` cases and at the end; ``None`` or 0: silent.
        image_key, mask_key, case_id_key, series_uid_key, split_key: the records' keys.

    Returns:
        One row per record, in the records' order, columns :data:`CSV_COLUMNS` (the CSV's content;
        lists as JSON text; ``from_cache`` says whether this run read the case from the cache).

    Raises:
        PreprocessError: before any work, for missing files, duplicate or unusable case ids
            (all listed); after the run, with ``on_error="raise"``, listing every case that failed.
        ValueError: a record without the case id, image or mask key; bad settings.
    """
    s = PreprocessSettings.of(settings)
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}.")
    keys = {"case_id": case_id_key, "image": image_key, "mask": mask_key, "series_uid": series_uid_key,
            "split": split_key}
    recs = _records(records, keys)
    out = Path(out_dir)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    fps = [_fingerprint(r["image"]) + _fingerprint(r["mask"]) for r in recs]
    crop_size = s.crop_size
    if crop_size == "auto":  # a training case without a box fails again (and is reported) in the main pass
        crop_size = _resolve_auto_crop(recs, fps, s, out, int(workers), progress, split_key)
        logger.info("crop_size 'auto': the mean box of the %r cases is %s", s.auto_crop_split, crop_size)
    key_settings = s.key_dict(crop_size=crop_size)

    rows: list[dict | None] = [None] * len(recs)
    jobs = []
    for i, r in enumerate(recs):
        key = _key({"version": PREPROCESS_VERSION, "settings": key_settings, "case_id": r["case_id"],
                    "series_uid": r["series_uid"], "sources": fps[i]})
        case_dir = out / "cases" / r["case_id"]
        cached = _cached_row(case_dir, key)
        if cached is not None:
            rows[i] = {**cached, "from_cache": True}
        else:
            jobs.append({**r, "settings": s, "crop_size": tuple(crop_size), "key": key, "case_dir": str(case_dir),
                         "index": i})
    prog = _Progress("preprocess", len(recs), progress)
    for row in rows:
        if row is not None:
            prog.step(True, row["status"] != "ok")

    def done(job, row):
        rows[job["index"]] = {**row, "from_cache": False}
        prog.step(False, row["status"] != "ok")

    _run(_process_case, jobs, int(workers), prog, done)

    table = _table(rows, s)
    failed = table["status"] != "ok"
    if s.on_error == "skip":
        table.loc[failed, "status"] = "skipped"
    _write_atomic_text(table.to_csv(index=False), out / CSV_NAME)
    low = table[(table["status"] == "ok") & (table["fraction_inside"].astype(float) < LOW_FRACTION_INSIDE)]
    if len(low):
        logger.warning("preprocess: the crop holds less than %g of the kept mask in %d case(s) (a tumour larger "
                       "than the crop, or kept components far apart with box_mode='union'): %s",
                       LOW_FRACTION_INSIDE, len(low), dict(zip(low["case_id"], low["fraction_inside"].round(3))))
    if failed.any():
        lines = "\n".join(f"  {r}" if r.startswith("case '") else f"  case '{c}': {r}"
                          for c, r in zip(table.loc[failed, "case_id"], table.loc[failed, "reason"]))
        if s.on_error == "raise":
            raise PreprocessError(_MSG_FAILED.format(n=int(failed.sum()), total=len(table), csv=out / CSV_NAME,
                                                     lines=lines))
        logger.warning("preprocess: %d case(s) skipped:\n%s", int(failed.sum()), lines)
    return table


def _cached_row(case_dir: Path, key: str) -> dict | None:
    try:
        record = json.loads((case_dir / "record.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key:
        return None
    for name, size in record.get("files", {}).items():
        p = case_dir / name
        if not p.is_file() or p.stat().st_size != size:
            return None
    return record["row"]


def _table(rows: list[dict], s: PreprocessSettings) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    table["min_voxels"] = s.min_voxels
    table["connectivity"] = s.connectivity
    table["per_slice"] = s.per_slice
    for col in CSV_COLUMNS:
        if col not in table:
            table[col] = None
    return table[list(CSV_COLUMNS)]


def read_preprocessing_csv(path: str | os.PathLike) -> pd.DataFrame:
    """``preprocessing.csv`` (a file, or the ``out_dir`` holding it) as written, text kept as text."""
    p = Path(path)
    if p.is_dir():
        p = p / CSV_NAME
    return pd.read_csv(p, dtype={"case_id": str, "series_uid": str, "reason": str}, keep_default_na=False)


def crop_datalist(datalist: Sequence[Mapping], table: pd.DataFrame | str | os.PathLike, *,
                  image_key: str = "image", mask_key: str = "mask", case_id_key: str = "case_id") -> list[dict]:
    """A data list whose ``image`` and ``mask`` point at the cached crops of :func:`preprocess_cohort`.

    Each record is copied; ``image``/``mask`` become the crop files, the originals move to
    ``image_source``/``mask_source``. Cases marked ``skipped`` are left out (a warning names them).

    Args:
        datalist: records with a case id.
        table: :func:`preprocess_cohort`'s result, or its ``out_dir`` / CSV path.
        image_key, mask_key, case_id_key: the records' keys.

    Raises:
        PreprocessError: a case not in the table, or one that failed (status ``error``).
    """
    if not isinstance(table, pd.DataFrame):
        where = str(table)
        table = read_preprocessing_csv(table)
    else:
        where = "(preprocess_cohort's result)"
    by_id = {str(c): r for c, r in zip(table["case_id"], table.to_dict("records"))}
    out, skipped = [], []
    for rec in datalist:
        case = str(rec[case_id_key])
        row = by_id.get(case)
        if row is None:
            raise PreprocessError(_MSG_NOT_PREPROCESSED.format(case=case, where=where))
        if row["status"] == "skipped":
            skipped.append(case)
            continue
        if row["status"] != "ok":
            raise PreprocessError(f"preprocessing failed: {row['reason']}", case=case)
        new = dict(rec)
        new["image_source"], new["mask_source"] = rec.get(image_key), rec.get(mask_key)
        new[image_key], new[mask_key] = row["image_crop"], row["mask_crop"]
        out.append(new)
    if skipped:
        logger.warning("crop_datalist: %d case(s) left out, their preprocessing was skipped: %s", len(skipped),
                       skipped)
    return out


def resolved_settings(settings: Mapping, table: pd.DataFrame) -> dict:
    """``settings`` with ``crop_size="auto"`` replaced by the crop size the preprocessing used.

    ``"auto"`` is the mean tumour box of the training split (:func:`preprocess_cohort`); an inference
    run has no training split to take it from, so a training run records these resolved settings
    (:class:`fairmonai.bundle_run.RunRecord`'s ``resolved``) and inference reads them.

    Args:
        settings: the preprocessing settings (``crop_size`` numbers or ``"auto"``).
        table: :func:`preprocess_cohort`'s table (its ``crop_size`` column, JSON text or lists).

    Raises:
        PreprocessError: ``"auto"`` with no preprocessed case, or cases cropped to different sizes.
    """
    out = dict(settings)
    if out.get("crop_size") != "auto":
        return out
    ok = table[table["status"] == "ok"]
    sizes = {tuple(json.loads(v) if isinstance(v, str) else v) for v in ok["crop_size"]}
    if len(sizes) != 1:
        raise PreprocessError(f"crop_size 'auto': expected one crop size over the preprocessed cases, found "
                              f"{sorted(sizes) or 'none'}")
    out["crop_size"] = [int(v) for v in sizes.pop()]
    return out
