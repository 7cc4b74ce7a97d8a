"""Synthetic rectal cancer T2w MRI cohort: pelvis-like volumes, tumour masks, pCR learnable from the tumour.

Each case is a float32 image and a uint8 mask, NIfTI, shape ``(X, Y, Z)`` (default 96x96x24) with
**anisotropic spacing** in the affine (default 0.75 x 0.75 x 3 mm: axial slices), so that a 1 mm
isotropic resampling step downstream has work to do. Anatomy is laid out in millimetres relative
to the in-plane field of view (half-width ``h = min(X sx, Y sy) / 2``), so it scales with the
shape: an elliptic body (subcutaneous fat 0.8, pelvic muscle 0.35), mesorectal fat (0.75), the
rectal wall (0.3) around a dark lumen (0.15), constant along z; air (0) outside the body, so the
corner blocks ``[:X//8, :Y//8, :]`` hold pure noise. Intensities are not clipped (noise is
additive Gaussian, values may go slightly negative).

**Label** (``pcr``): the tumour is a textured ellipsoid on the rectal wall. pCR tumours
(label 1) tend to be smaller (radius ``U(0.13, 0.21) h`` against ``U(0.18, 0.28) h``, per axis
x U(0.9, 1.1)), darker (mean 0.50 against 0.60, + N(0, 0.03) per case) and more homogeneous
(texture amplitude 0.03 against 0.08): the mask volume and the mean intensity inside it separate
the classes well but not perfectly.

**Spurious mask components**: in a share ``spurious_fraction`` (default 0.2) of the cases, one or
two small boxes of 2-18 voxels (< 20) are added to the *mask only* (annotation noise), at least
two voxels from the tumour and from each other, so they are separate 26-connected components. A
connected-components step keeping the largest component removes them; ``cohort.json`` lists the
affected cases under ``spurious_components``. The tumour itself always has at least
``MIN_TUMOUR_VOXELS`` = 27 voxels.

**Knobs** (attribute ``sex``: female, male): ``prevalence`` (pCR rate, exact), ``cue_strength``
(stripes along axis 0, multiplying the body), ``difficulty`` (multiplies the standard deviation
of the additive Gaussian noise, ``noise`` default 0.05), ``group_proportions`` /
``group_counts`` / ``metadata_from``.

**DICOM fixture**: :func:`write_dicom_series` writes a volume as a DICOM MR series (one int16 slice
per file, oblique geometry and shuffled file names allowed) for the tests of
:mod:`fairmonai.data.preprocess.io`; the cohort itself stays NIfTI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from ..manifest import load_schema
from . import common as C

__all__ = [
    "DATASET",
    "ATTRIBUTE",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "DEFAULT_NOISE",
    "DEFAULT_PREVALENCE",
    "DEFAULT_SPURIOUS_FRACTION",
    "MAX_SPURIOUS_VOXELS",
    "MIN_TUMOUR_VOXELS",
    "render_rectal_case",
    "make_rectal_mri",
    "write_dicom_series",
]

DATASET = "rectal_mri"
ATTRIBUTE = "sex"
DEFAULT_SHAPE = (96, 96, 24)
MIN_SHAPE = (32, 32, 8)
DEFAULT_SPACING = (0.75, 0.75, 3.0)
DEFAULT_NOISE = 0.05
DEFAULT_PREVALENCE = 0.3
DEFAULT_SPURIOUS_FRACTION = 0.2
MAX_SPURIOUS_VOXELS = 19
MIN_TUMOUR_VOXELS = 27
_TUMOUR = {"1": ((0.13, 0.21), 0.50, 0.03), "0": ((0.18, 0.28), 0.60, 0.08)}  # radius / h, mean, texture
_MEAN_JITTER = 0.03


def _anatomy(shape, spacing, rng):
    """In-plane (X, Y) T2w-like slice, the rectum centre and wall radius (in mm), and the body mask."""
    X, Y, _ = shape
    sx, sy, _ = spacing
    h = min(X * sx, Y * sy) / 2.0
    x = (np.arange(X) - (X - 1) / 2.0)[:, None] * sx / h
    y = (np.arange(Y) - (Y - 1) / 2.0)[None, :] * sy / h
    a, b = 0.90 * rng.uniform(0.95, 1.0), 0.75 * rng.uniform(0.95, 1.0)
    body = (x / a) ** 2 + (y / b) ** 2 <= 1.0
    inner = (x / (a - 0.1)) ** 2 + (y / (b - 0.1)) ** 2 <= 1.0
    cx, cy = rng.uniform(-0.05, 0.05), 0.25 + rng.uniform(-0.04, 0.04)
    rr = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    img = np.where(body, 0.8, 0.0)
    img = np.where(inner, 0.35, img)
    img = np.where(inner & (rr <= 0.32), 0.75, img)
    img = np.where(rr <= 0.16, 0.30, img)
    img = np.where(rr <= 0.09, 0.15, img)
    img = ndimage.gaussian_filter(img, 0.6) * body
    return img, (cx * h, cy * h), 0.125 * h, h, body


def render_rectal_case(rng: np.random.Generator, shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING, *, pcr: bool,
                       group_index: int = 0, num_groups: int = 2, cue_strength: float = 0.0,
                       noise: float = DEFAULT_NOISE, spurious: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One T2w-like volume and its tumour mask (see the module docstring).

    Args:
        rng: the case's generator.
        shape: ``(X, Y, Z)``; spacing: ``(sx, sy, sz)`` in mm.
        pcr: draw a pCR (small, dark, homogeneous) tumour.
        group_index, num_groups, cue_strength: the stripe cue along axis 0.
        noise: standard deviation of the additive Gaussian noise (already times the difficulty).
        spurious: number (0-2) of small spurious components added to the mask.

    Returns:
        ``(image, mask)``: float32 and uint8 arrays of shape ``(X, Y, Z)``.
    """
    X, Y, Z = shape
    sx, sy, sz = spacing
    plane, (rcx, rcy), wall_r, h, body = _anatomy(shape, spacing, rng)
    img = np.repeat(plane[:, :, None], Z, axis=2)
    # tumour: ellipsoid centred on the rectal wall
    (lo, hi), mean, texture = _TUMOUR["1" if pcr else "0"]
    radius = rng.uniform(lo, hi) * h * rng.uniform(0.9, 1.1, size=3)
    radius = np.maximum(radius, 1.5 * np.array(spacing))
    theta = rng.uniform(0, 2 * np.pi)
    centre_mm = np.array([rcx + wall_r * np.cos(theta), rcy + wall_r * np.sin(theta),
                          rng.uniform(0.35, 0.65) * Z * sz])
    xs = (np.arange(X) - (X - 1) / 2.0) * sx
    ys = (np.arange(Y) - (Y - 1) / 2.0) * sy
    zs = (np.arange(Z) + 0.5) * sz
    for _ in range(10):
        d2 = (((xs - centre_mm[0]) / radius[0]) ** 2)[:, None, None] \
            + (((ys - centre_mm[1]) / radius[1]) ** 2)[None, :, None] \
            + (((zs - centre_mm[2]) / radius[2]) ** 2)[None, None, :]
        tumour = d2 <= 1.0
        if tumour.sum() >= MIN_TUMOUR_VOXELS:
            break
        radius = radius * 1.2
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    field /= field.std() + 1e-12
    img = np.where(tumour, mean + rng.normal(0.0, _MEAN_JITTER) + texture * field, img)
    img = img * C.stripe_cue(X, group_index, num_groups, cue_strength, rng.uniform(0, 2 * np.pi))[:, None, None]
    img = img + noise * rng.standard_normal(shape)
    mask = tumour.astype(np.uint8)
    if spurious:
        _add_spurious(mask, body, spurious, rng)
    return img.astype(np.float32), mask


def _add_spurious(mask: np.ndarray, body: np.ndarray, count: int, rng: np.random.Generator) -> None:
    """Add ``count`` boxes of < 20 voxels inside the body, >= 2 voxels clear of everything in ``mask``."""
    X, Y, Z = mask.shape
    cube = np.ones((3, 3, 3), dtype=bool)
    blocked = ndimage.binary_dilation(mask > 0, structure=cube, iterations=2)
    placed = 0
    for _ in range(200):
        if placed == count:
            break
        while True:
            size = rng.integers(1, [4, 4, 3])
            if 2 <= size.prod() <= MAX_SPURIOUS_VOXELS:
                break
        corner = rng.integers(0, [X - size[0] + 1, Y - size[1] + 1, Z - size[2] + 1])
        sl = tuple(slice(c, c + s) for c, s in zip(corner, size))
        if blocked[sl].any() or not body[sl[0], sl[1]].all():
            continue
        mask[sl] = 1
        grown = np.zeros_like(blocked)
        grown[sl] = True
        blocked |= ndimage.binary_dilation(grown, structure=cube, iterations=2)
        placed += 1


def make_rectal_mri(out_dir, n=None, seed=0, *, prevalence=None, cue_strength=0.0, difficulty=None,
                    group_proportions=None, group_counts=None, metadata_from=None, shape=DEFAULT_SHAPE,
                    spacing=DEFAULT_SPACING, noise=DEFAULT_NOISE, spurious_fraction=DEFAULT_SPURIOUS_FRACTION,
                    verbose: bool = False) -> Path:
    """Write a synthetic ``rectal_mri`` cohort: ``images/`` and ``masks/rectal_NNNNN.nii.gz``, manifest.

    Args:
        out_dir, n, seed, verbose: as :func:`~fairmonai.data.synth.oct_glaucoma.make_oct_glaucoma`.
        prevalence: pCR rate, one number or per sex (``"female=0.4,male=0.2"``); default 0.3.
        cue_strength: stripe cue strength >= 0 (default 0).
        difficulty: noise multiplier per sex (default 1).
        group_proportions / group_counts: sex shares (sum 1) or sizes; default equal.
        metadata_from: a ``rectal_mri`` manifest giving sex, age and (without ``prevalence``) pCR.
        shape: ``(X, Y, Z)``, at least (32, 32, 8); spacing: mm, written to the affine.
        noise: base standard deviation of the additive Gaussian noise.
        spurious_fraction: share of masks that get 1-2 spurious components (exact:
            ``round_half_up(n * fraction)`` cases, chosen at random).

    Returns:
        path of ``manifest.csv``.

    Raises:
        ValueError: a bad knob, naming the value.
    """
    seed = C.check_seed(seed)
    groups = list(load_schema(DATASET).attributes[ATTRIBUTE].categories)
    shape = C.parse_shape(shape, 3, MIN_SHAPE)
    spacing = C.parse_spacing(spacing)
    cue = C.parse_cue_strength(cue_strength)
    base_noise = C.parse_positive(noise, "noise")
    spurious_fraction = C.parse_fraction(spurious_fraction, "spurious_fraction")
    diff = C.parse_difficulty(difficulty, groups, attribute=ATTRIBUTE)
    if cue > 0:
        C.cue_cycles(shape[0], len(groups))
    rng = C.cohort_rng(seed)
    plan = C.plan_cohort(DATASET, n, rng, attribute=ATTRIBUTE, groups=groups, group_proportions=group_proportions,
                         group_counts=group_counts, prevalence=prevalence, default_prevalence=DEFAULT_PREVALENCE,
                         metadata_from=metadata_from)
    if plan.records is not None:
        ages = [C.number_text(r.get("age")) for r in plan.records]
    else:
        ages = [str(a) for a in rng.integers(35, 86, size=plan.n)]
    n_spurious = np.zeros(plan.n, dtype=int)
    chosen = rng.permutation(plan.n)[:C.round_half_up(plan.n * spurious_fraction)]
    n_spurious[chosen] = rng.integers(1, 3, size=len(chosen))
    split, fold = C.split_columns(plan.labels, plan.groups, seed)

    out = C.prepare_out_dir(out_dir)
    (out / "images").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    ids = [f"rectal_{i:05d}" for i in range(plan.n)]
    progress = C.Progress(DATASET, plan.n, verbose)
    for i, cid in enumerate(ids):
        g = plan.render_groups[i]
        img, mask = render_rectal_case(C.case_rng(seed, i), shape, spacing, pcr=plan.labels[i] == "1",
                                       group_index=groups.index(g), num_groups=len(groups), cue_strength=cue,
                                       noise=base_noise * diff[g], spurious=int(n_spurious[i]))
        C.write_nifti(out / "images" / f"{cid}.nii.gz", img, spacing)
        C.write_nifti(out / "masks" / f"{cid}.nii.gz", mask, spacing)
        progress.step(i + 1)

    table = pd.DataFrame({
        "case_id": ids, "image": [f"images/{c}.nii.gz" for c in ids], "mask": [f"masks/{c}.nii.gz" for c in ids],
        "label": plan.labels, ATTRIBUTE: plan.groups, "age": ages, "split": split, "fold": fold,
    })
    counts = C.count_table(plan.groups, plan.labels, groups, ["0", "1"])
    cohort = {
        "dataset": DATASET, "seed": seed, "n": plan.n, "group_attribute": ATTRIBUTE, "groups": groups,
        "knobs": {"prevalence": plan.prevalence, "cue_strength": cue, "difficulty": diff,
                  "group_proportions": group_proportions, "group_counts": group_counts,
                  "metadata_from": None if metadata_from is None else str(metadata_from), "noise": base_noise,
                  "spurious_fraction": spurious_fraction},
        "image": {"shape": list(shape), "spacing": list(spacing), "dtype": "float32", "mask_dtype": "uint8",
                  "format": "nifti", "axes": "0 = x, 1 = y (in-plane), 2 = z (slices)",
                  "noise_region": "corner blocks [:X//8, :Y//8, :] (air)"},
        "cue": {"axis": 0, "amplitude_per_strength": C.CUE_AMPLITUDE,
                "cycles": dict(zip(groups, C.cue_cycles(shape[0], len(groups))))},
        "label": {"name": "pcr", "tumour": {k: {"radius_fraction_of_half_fov": list(v[0]), "mean": v[1],
                                                 "texture": v[2]} for k, v in _TUMOUR.items()}},
        "spurious_components": {ids[i]: int(n_spurious[i]) for i in range(plan.n) if n_spurious[i]},
        "max_spurious_voxels": MAX_SPURIOUS_VOXELS,
        "counts": counts, "splits": C.split_counts(split),
    }
    manifest = C.write_outputs(out, DATASET, table, cohort)
    if verbose:
        print(C.summary_line(DATASET, manifest, ATTRIBUTE, counts, "1", "pcr"), flush=True)
    return manifest


def write_dicom_series(image: np.ndarray, out_dir, *, spacing=DEFAULT_SPACING, origin=(0.0, 0.0, 0.0),
                       direction=None, series_uid: str | None = None, study_uid: str | None = None,
                       series_description: str = "T2w", shuffle_names_seed: int | None = None,
                       patient_id: str = "synth") -> str:
    """Write a volume as a DICOM MR series, one slice per file (a fixture for the DICOM readers).

    Geometry is LPS (SimpleITK's and DICOM's convention): slice ``k`` has
    ``ImagePositionPatient = origin + k * spacing[2] * direction[:, 2]``,
    ``ImageOrientationPatient = direction[:, 0], direction[:, 1]`` (row and column cosines),
    ``PixelSpacing = (spacing[1], spacing[0])``, ``SliceThickness`` and ``SpacingBetweenSlices``
    ``spacing[2]``; an oblique ``direction`` is kept. Pixels are int16 (``Rows = Y``,
    ``Columns = X``) with one ``RescaleSlope`` / ``RescaleIntercept`` for the series, so the
    floats come back to within ``(max - min) / 131068`` (1e-3 for a range up to 131). Files are
    MR Image Storage, explicit VR little endian, with the 128-byte preamble. Other UIDs
    (study, frame of reference, SOP instances) are new random UIDs (``pydicom.uid.generate_uid``)
    unless given.

    Args:
        image: ``(X, Y, Z)`` array of finite numbers (``Z = 1`` gives a one-slice series).
        out_dir: folder, created if needed; existing files are never overwritten.
        spacing: ``(sx, sy, sz)`` mm, > 0.
        origin: LPS position (mm) of voxel ``(0, 0, 0)``.
        direction: 3x3 rotation (columns: the LPS directions of the x, y, z index axes);
            default identity. It must have determinant +1: a DICOM series stores no slice axis,
            readers stack slices along ``row x column``, so a left-handed direction would come
            back with its slices reversed.
        series_uid, study_uid: UIDs to write (default new).
        series_description: ``SeriesDescription``.
        shuffle_names_seed: when given, files get random 8-hex-digit names drawn from this seed
            (so ordering by name is wrong); otherwise ``MR.<series_uid>.<k+1:04d>.dcm``.
        patient_id: ``PatientID`` and ``PatientName``.

    Returns:
        the ``SeriesInstanceUID``.

    Raises:
        ValueError: a non-3-D or non-finite image, a bad spacing or direction, an existing file.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
    from pydicom.valuerep import DSfloat

    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"image must be a non-empty (X, Y, Z) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("image has non-finite values")
    spacing = np.asarray(spacing, dtype=np.float64)
    origin = np.asarray(origin, dtype=np.float64)
    if spacing.shape != (3,) or not (spacing > 0).all():
        raise ValueError(f"spacing must be three numbers > 0, got {spacing.tolist()}")
    if origin.shape != (3,):
        raise ValueError(f"origin must be three numbers, got {origin.tolist()}")
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    if d.shape != (3, 3) or not np.allclose(d.T @ d, np.eye(3), atol=1e-6) or np.linalg.det(d) < 0:
        raise ValueError(f"direction must be a 3x3 rotation (orthonormal, determinant +1), got {d.tolist()}")

    def ds_value(x: float) -> DSfloat:
        return DSfloat(float(x), auto_format=True)

    lo, hi = float(arr.min()), float(arr.max())
    slope = ds_value((hi - lo) / 65534.0) if hi > lo else ds_value(1.0)
    intercept = ds_value((hi + lo) / 2.0)
    q = np.rint((arr - float(intercept)) / float(slope))
    q = np.clip(q, -32768, 32767).astype("<i2")

    X, Y, Z = arr.shape
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    if shuffle_names_seed is None:
        names = [f"MR.{series_uid}.{k + 1:04d}.dcm" for k in range(Z)]
    else:
        rng = np.random.default_rng(shuffle_names_seed)
        names = []
        while len(names) < Z:
            name = f"{int(rng.integers(16 ** 8)):08x}.dcm"
            if name not in names:
                names.append(name)
    clash = [n for n in names if (out / n).exists()]
    if clash:
        raise ValueError(f"{out}: file(s) {clash[:3]} exist; write_dicom_series does not overwrite")
    iop = [ds_value(v) for v in (*d[:, 0], *d[:, 1])]
    for k in range(Z):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientID = patient_id
        ds.PatientName = patient_id
        ds.Modality = "MR"
        ds.SeriesDescription = series_description
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        position = origin + k * spacing[2] * d[:, 2]
        ds.ImagePositionPatient = [ds_value(v) for v in position]
        ds.ImageOrientationPatient = iop
        ds.SliceLocation = ds_value(position @ d[:, 2])
        ds.PixelSpacing = [ds_value(spacing[1]), ds_value(spacing[0])]
        ds.SliceThickness = ds_value(spacing[2])
        ds.SpacingBetweenSlices = ds_value(spacing[2])
        ds.Rows, ds.Columns = Y, X
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.RescaleType = "US"
        ds.PixelData = np.ascontiguousarray(q[:, :, k].T).tobytes()  # (rows = Y, columns = X)
        ds.save_as(out / names[k], enforce_file_format=True)
    return str(series_uid)
