"""Reading T2w MRI (a DICOM series or a NIfTI file) and its tumour mask for the rectal MRI preprocessing.

Every reader returns a 3-D scalar ``SimpleITK.Image``, so the grid travels with the voxels: size
``(X, Y, Z)`` (SimpleITK order; ``GetArrayFromImage`` gives ``(Z, Y, X)``), spacing in mm, origin
(the centre of voxel ``(0, 0, 0)``) and a direction matrix whose columns are the unit vectors of
the three index axes, oblique allowed.

**Coordinates.** SimpleITK, ITK and DICOM use LPS patient coordinates (x to the patient's left,
y to posterior, z to superior); nibabel and MONAI use RAS. The readers here return LPS, as
SimpleITK does: a NIfTI file (whose affine is RAS) read by :func:`read_image` has origin and
direction with x and y negated against the file's affine, which is exactly what puts a voxel at
the same physical point whether nibabel or SimpleITK wrote the file (``tests/data/
test_preprocess_io.py`` checks both, and a DICOM series, on a marked corner voxel).

**DICOM series** (:func:`list_dicom_series`, :func:`read_dicom_series`). The headers are read
with pydicom, the voxels with SimpleITK's GDCM reader (which decodes the compressed transfer
syntaxes and applies the rescale slope and intercept). Slices are grouped by
``SeriesInstanceUID`` and ordered by their position along the slice normal (``ImagePositionPatient``
projected on ``row x column`` of ``ImageOrientationPatient``), never by file name or
``InstanceNumber``. The geometry is taken from the headers: origin = position of the first slice,
spacing = ``(PixelSpacing[1], PixelSpacing[0], (last - first) / (n - 1))`` along the normal,
direction columns = row cosine, column cosine, normal. The normal is ``row x column``, so the
direction of a series is always a rotation (determinant +1): DICOM stores no slice axis of its
own. The folder is not searched recursively; files without the DICOM preamble (``DICM`` at byte
128) and DICOM files without an image (``Rows``), e.g. RT structure sets, reports, ``DICOMDIR``,
are ignored; a DICOM file that cannot be parsed is an error.

Refused, each with a :class:`PreprocessError` naming the case and the path: no series; several
series and no ``series_uid``; a ``series_uid`` not in the folder; a one-slice series; a
multi-frame file (enhanced MR, 4-D); several slices at one position (a 4-D series: time points,
echoes, b-values); multi-component (colour) pixels; slices of different size, pixel spacing or
orientation; slices shifted in-plane (gantry tilt, sheared stack); gaps between slices that differ
by more than ``tol_mm`` (a missing slice), naming the slices and files.

**Speed.** :func:`read_dicom_series` on a 512 x 512 x 40 int16 series written by
:func:`fairmonai.data.synth.rectal_mri.write_dicom_series` (40 files, 21 MB) took 0.11 s on one
core (best of 5 in one process; the first call 0.3 s), of which 0.03 s for the pydicom headers and
the rest for SimpleITK's GDCM reader. Measured once: SimpleITK limited to one thread, process pinned
to one core with ``taskset -c 0``, warm file cache, on a 2-core virtual machine ("Intel Xeon
Processor", SimpleITK 2.5.7, pydicom 3.0.2) while a background job kept its load average at 4.5.

**Masks** (:func:`read_mask`) come back as uint8 0/1 on the image's grid: another grid is an error
(or, with ``resample_to_image``, a nearest-neighbour resampling), the labels to keep are chosen
with ``mask_labels``, and an empty mask is an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ...errors import InputError

__all__ = [
    "PreprocessError",
    "SLICE_TOL_MM",
    "NIFTI_SUFFIXES",
    "list_dicom_series",
    "read_dicom_series",
    "read_image",
    "read_mask",
]

#: Default tolerance (mm) on the gaps between slices and on the in-plane shift of slices.
SLICE_TOL_MM = 0.01
#: File name endings read as NIfTI.
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ORIENT_TOL = 1e-4  # IOP cosines: same across slices, unit length and orthogonal
_MAX_LISTED = 5

# Messages (PreprocessError prefixes "case '<case>', <path>: ")
MSG_NOT_FOUND = "image path does not exist"
MSG_NOT_A_FOLDER = "not a folder (a DICOM series is read from the folder that holds its files)"
MSG_UNSUPPORTED = "unsupported file type: expected a DICOM series folder, a .dcm file or a NIfTI file (.nii, .nii.gz)"
MSG_NO_SERIES = "no DICOM image series in the folder ({n_files} files, none a DICOM image)"
MSG_BAD_DICOM = "DICOM file {file} cannot be read: {error}"
MSG_SEVERAL_SERIES = "the folder holds {n} DICOM series; pass series_uid to pick one of:\n{listing}"
MSG_SERIES_LINE = "  {uid} ({description}, {n_slices} slice(s))"
MSG_UID_NOT_FOUND = "series_uid {uid} is not in the folder; its series are:\n{listing}"
MSG_ONE_SLICE = "series {uid} has one slice ({file}): a 3-D volume needs at least 2 slices"
MSG_MULTI_FRAME = ("file {file} of series {uid} is a multi-frame image ({frames} frames): multi-frame "
                   "(enhanced, 4-D) DICOM is not read; export one file per slice")
MSG_MULTI_COMPONENT = ("series {uid} has {components} values per pixel ({file}: SamplesPerPixel {components}, "
                       "{photometric}): a scalar (grey-level) image is needed")
MSG_MISSING_TAG = "file {file} of series {uid} has no {tag}: its slices cannot be placed"
MSG_MIXED = "slices of series {uid} differ in {what}: {first} ({file_a}) vs {other} ({file_b})"
MSG_NOT_ORTHONORMAL = "file {file} of series {uid}: ImageOrientationPatient {iop} is not two orthogonal unit vectors"
MSG_4D = ("series {uid} is 4-D: its {n_files} slices lie at {n_positions} distinct positions along the normal "
          "(several time points, echoes or b-values); pick one volume")
MSG_SHEARED = ("slices of series {uid} are not stacked along their normal (gantry tilt or a sheared stack): "
               "slice {index} ({file}) is {offset:.4g} mm off the normal through the first slice")
MSG_GAPS = ("inconsistent slice spacing in series {uid}: the median gap along the normal is {gap:.4g} mm, but "
            "{listing} (tolerance {tol} mm; a missing or extra slice?)")
MSG_GAP_ITEM = "{gap:.4g} mm between slices {i} and {j} ({file_i}, {file_j})"
MSG_READ_FAILED = "SimpleITK could not read {what}: {error}"
MSG_NOT_3D = "{dim}-D image (size {size}): a 3-D volume is needed{hint}"
MSG_COMPONENTS = "image has {components} components per voxel: a scalar (grey-level) image is needed"
MSG_GRID = ("mask grid differs from the image grid ({what}):\n  image: {image}\n  mask:  {mask}\n"
            "pass resample_to_image=True to resample the mask (nearest neighbour) onto the image grid")
MSG_NON_INTEGER = "mask has non-integer values (e.g. {value}): a probability map or an interpolated mask?"
MSG_LABELS_ABSENT = "mask_labels {missing} not in the mask; its labels are {present}"
MSG_BAD_LABELS = "mask_labels must be None, an integer or a non-empty list of integers, got {labels!r}"
MSG_EMPTY = "mask is empty{detail}"


class PreprocessError(InputError):
    """An image or mask the rectal MRI preprocessing cannot use, named with its case and path.

    Args:
        message: what is wrong.
        case: the case id (``None`` when unknown).
        path: the file or folder at fault.

    The text is ``"case '<case>', <path>: <message>"`` (parts left out when ``None``).
    """

    def __init__(self, message: str, *, case: Any = None, path: str | os.PathLike | None = None):
        self.message = message
        self.case = case
        self.path = None if path is None else str(path)
        where = []
        if case is not None:
            where.append(f"case '{case}'")
        if path is not None:
            where.append(str(path))
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


# ---------------------------------------------------------------------------------------------- DICOM


@dataclass
class _Slice:
    path: Path
    uid: str
    description: str
    position: np.ndarray | None  # (3,) ImagePositionPatient, LPS mm
    orientation: np.ndarray | None  # (6,) ImageOrientationPatient
    spacing: tuple[float, float] | None  # PixelSpacing (row spacing, column spacing)
    rows: int
    columns: int
    frames: int
    samples: int
    photometric: str
    instance: int | None


def _floats(value) -> np.ndarray | None:
    if value is None:
        return None
    try:
        return np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _read_header(path: Path, case) -> _Slice | None:
    """The header of one file; ``None`` when it is not a DICOM image file."""
    import pydicom
    from pydicom.misc import is_dicom

    try:
        if not is_dicom(path):
            return None
    except OSError:
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001 - any parse failure of a file that says it is DICOM
        raise PreprocessError(MSG_BAD_DICOM.format(file=path.name, error=e), case=case, path=path.parent) from e
    if "Rows" not in ds or "Columns" not in ds or "SeriesInstanceUID" not in ds:
        return None
    spacing = _floats(ds.get("PixelSpacing"))
    instance = ds.get("InstanceNumber")
    return _Slice(
        path=path,
        uid=str(ds.SeriesInstanceUID),
        description=str(ds.get("SeriesDescription", "") or ""),
        position=_floats(ds.get("ImagePositionPatient")),
        orientation=_floats(ds.get("ImageOrientationPatient")),
        spacing=None if spacing is None or len(spacing) != 2 else (float(spacing[0]), float(spacing[1])),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        samples=int(ds.get("SamplesPerPixel", 1) or 1),
        photometric=str(ds.get("PhotometricInterpretation", "")),
        instance=None if instance in (None, "") else int(instance),
    )


def _normal(iop: np.ndarray) -> np.ndarray:
    return np.cross(iop[:3], iop[3:])


def _order(slices: list[_Slice]) -> list[_Slice]:
    """Slices by position along the first slice's normal; by InstanceNumber when a position is missing."""
    slices = sorted(slices, key=lambda s: s.path.name)
    first = slices[0].orientation
    if first is not None and len(first) == 6 and all(s.position is not None and len(s.position) == 3 for s in slices):
        n = _normal(first)
        return sorted(slices, key=lambda s: (float(s.position @ n), s.instance if s.instance is not None else 0))
    return sorted(slices, key=lambda s: s.instance if s.instance is not None else 0)


def _scan(folder, case) -> dict[str, list[_Slice]]:
    folder = Path(folder)
    if not folder.exists():
        raise PreprocessError(MSG_NOT_FOUND, case=case, path=folder)
    if not folder.is_dir():
        raise PreprocessError(MSG_NOT_A_FOLDER, case=case, path=folder)
    groups: dict[str, list[_Slice]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file():
            s = _read_header(p, case)
            if s is not None:
                groups.setdefault(s.uid, []).append(s)
    return {uid: _order(groups[uid]) for uid in sorted(groups)}


def list_dicom_series(folder: str | os.PathLike, *, case: Any = None) -> dict[str, list[Path]]:
    """The DICOM image series of a folder: ``SeriesInstanceUID -> files``, slices in spatial order.

    Files are ordered by ``ImagePositionPatient`` projected on the slice normal (``row x column`` of
    the first file's ``ImageOrientationPatient``), ascending; file names and ``InstanceNumber``
    play no part (``InstanceNumber`` orders a series only when a file lacks a position). Series
    come sorted by UID. The folder is not searched recursively; non-DICOM files and DICOM files
    without an image are ignored (see the module docstring).

    Args:
        folder: the folder.
        case: case id for error messages.

    Returns:
        ``{uid: [path, ...]}``, possibly empty.

    Raises:
        PreprocessError: the folder does not exist or is a file; a file with the DICOM preamble
            cannot be parsed.
    """
    return {uid: [s.path for s in slices] for uid, slices in _scan(folder, case).items()}


def _listing(series: dict[str, list[_Slice]]) -> str:
    return "\n".join(MSG_SERIES_LINE.format(uid=uid, description=repr(s[0].description) if s[0].description
                                            else "no description", n_slices=len(s)) for uid, s in series.items())


def _check_series(slices: list[_Slice], uid: str, case, folder: Path, tol_mm: float) -> tuple[np.ndarray, ...]:
    """Validate an ordered series; returns ``(origin (3,), spacing (3,), direction (3, 3) columns)``."""
    def fail(msg):
        raise PreprocessError(msg, case=case, path=folder)

    for s in slices:
        if s.frames > 1:
            fail(MSG_MULTI_FRAME.format(file=s.path.name, uid=uid, frames=s.frames))
        if s.samples != 1:
            fail(MSG_MULTI_COMPONENT.format(uid=uid, components=s.samples, file=s.path.name,
                                            photometric=s.photometric or "no PhotometricInterpretation"))
    if len(slices) == 1:
        fail(MSG_ONE_SLICE.format(uid=uid, file=slices[0].path.name))
    for s in slices:
        for tag, value, length in (("ImagePositionPatient", s.position, 3),
                                   ("ImageOrientationPatient", s.orientation, 6), ("PixelSpacing", s.spacing, 2)):
            if value is None or len(value) != length:
                fail(MSG_MISSING_TAG.format(file=s.path.name, uid=uid, tag=tag))
    a = slices[0]
    for s in slices[1:]:
        for what, first, other, differ in (
            ("size (Rows, Columns)", (a.rows, a.columns), (s.rows, s.columns),
             (a.rows, a.columns) != (s.rows, s.columns)),
            ("PixelSpacing", a.spacing, s.spacing, np.max(np.abs(np.subtract(a.spacing, s.spacing))) > tol_mm),
            ("orientation (ImageOrientationPatient)", a.orientation.tolist(), s.orientation.tolist(),
             np.max(np.abs(a.orientation - s.orientation)) > _ORIENT_TOL),
        ):
            if differ:
                fail(MSG_MIXED.format(uid=uid, what=what, first=first, other=other, file_a=a.path.name,
                                      file_b=s.path.name))
    iop = a.orientation
    row, col = iop[:3], iop[3:]
    if (abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3
            or abs(float(row @ col)) > 1e-3):
        fail(MSG_NOT_ORTHONORMAL.format(file=a.path.name, uid=uid, iop=iop.tolist()))
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    pos = np.stack([s.position for s in slices])  # (n, 3)
    along = (pos - pos[0]) @ normal  # (n,), ascending
    gaps = np.diff(along)
    n_positions = 1 + int(np.sum(gaps > tol_mm))
    if n_positions < len(slices):
        fail(MSG_4D.format(uid=uid, n_files=len(slices), n_positions=n_positions))
    off = np.linalg.norm((pos - pos[0]) - along[:, None] * normal[None, :], axis=1)
    if off.max() > tol_mm:
        k = int(np.argmax(off))
        fail(MSG_SHEARED.format(uid=uid, index=k, file=slices[k].path.name, offset=float(off[k])))
    typical = float(np.median(gaps))
    odd = np.flatnonzero(np.abs(gaps - typical) > tol_mm)
    if len(odd):
        items = [MSG_GAP_ITEM.format(gap=float(gaps[i]), i=int(i), j=int(i) + 1, file_i=slices[i].path.name,
                                     file_j=slices[i + 1].path.name) for i in odd[:_MAX_LISTED]]
        more = f" and {len(odd) - _MAX_LISTED} more" if len(odd) > _MAX_LISTED else ""
        fail(MSG_GAPS.format(uid=uid, gap=typical, listing="; ".join(items) + more, tol=tol_mm))
    spacing = np.array([a.spacing[1], a.spacing[0], along[-1] / (len(slices) - 1)])
    return pos[0], spacing, np.stack([row, col, normal], axis=1)


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None, *, case: Any = None,
                      tol_mm: float = SLICE_TOL_MM) -> sitk.Image:
    """Read one DICOM series of a folder as a 3-D float32 image (LPS, geometry from the headers).

    Args:
        folder: the folder holding the series' files (one slice per file).
        series_uid: the ``SeriesInstanceUID`` to read; needed when the folder holds several series.
        case: case id for error messages.
        tol_mm: largest accepted deviation (mm) of a gap between slices from the median gap, and of
            a slice from the normal through the first slice (default :data:`SLICE_TOL_MM`).

    Returns:
        ``SimpleITK.Image`` of size ``(Columns, Rows, n_slices)``, float32 (rescale slope and
        intercept applied), origin = ``ImagePositionPatient`` of the first slice along the
        normal, spacing ``(PixelSpacing[1], PixelSpacing[0], slice gap)``, direction columns =
        row cosine, column cosine, normal (oblique kept). See the module docstring for the time
        it takes.

    Raises:
        PreprocessError: with the case and folder: no series; several series and no
            ``series_uid`` (the message lists each UID, description and slice count); an unknown
            ``series_uid``; one slice; multi-frame or multi-component files; a 4-D series;
            mixed sizes, pixel spacings or orientations; a sheared stack; inconsistent gaps
            (naming the slices); a file the reader fails on.
    """
    folder = Path(folder)
    series = _scan(folder, case)
    if not series:
        n_files = sum(1 for p in folder.iterdir() if p.is_file())
        raise PreprocessError(MSG_NO_SERIES.format(n_files=n_files), case=case, path=folder)
    if series_uid is None:
        if len(series) > 1:
            raise PreprocessError(MSG_SEVERAL_SERIES.format(n=len(series), listing=_listing(series)), case=case,
                                  path=folder)
        series_uid = next(iter(series))
    elif str(series_uid) not in series:
        raise PreprocessError(MSG_UID_NOT_FOUND.format(uid=series_uid, listing=_listing(series)), case=case,
                              path=folder)
    uid = str(series_uid)
    slices = series[uid]
    origin, spacing, direction = _check_series(slices, uid, case, folder, tol_mm)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(s.path) for s in slices])
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise PreprocessError(MSG_READ_FAILED.format(what=f"series {uid}", error=str(e).strip()), case=case,
                              path=folder) from e
    expected = (slices[0].columns, slices[0].rows, len(slices))
    if image.GetDimension() != 3 or image.GetSize() != expected or image.GetNumberOfComponentsPerPixel() != 1:
        raise PreprocessError(MSG_READ_FAILED.format(
            what=f"series {uid}", error=f"got size {image.GetSize()} with {image.GetNumberOfComponentsPerPixel()} "
                                        f"component(s), expected {expected} scalar"), case=case, path=folder)
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def _read_dicom_file(path: Path, series_uid, case) -> sitk.Image:
    """One DICOM file given as the image: refused with the series errors (one slice, multi-frame)."""
    s = _read_header(path, case)
    if s is None:
        raise PreprocessError(MSG_UNSUPPORTED, case=case, path=path)
    if series_uid is not None and str(series_uid) != s.uid:
        raise PreprocessError(MSG_UID_NOT_FOUND.format(uid=series_uid, listing=_listing({s.uid: [s]})), case=case,
                              path=path)
    _check_series([s], s.uid, case, path, SLICE_TOL_MM)  # one file always fails here
    raise AssertionError("unreachable: a single DICOM file is one slice or multi-frame")  # pragma: no cover


# ---------------------------------------------------------------------------------------------- any image


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _read_any(path, *, series_uid, case) -> sitk.Image:
    """The 3-D scalar image at ``path`` in its stored pixel type (DICOM: float32)."""
    path = Path(path)
    if not path.exists():
        raise PreprocessError(MSG_NOT_FOUND, case=case, path=path)
    if path.is_dir():
        return read_dicom_series(path, series_uid, case=case)
    if not _is_nifti(path):
        from pydicom.misc import is_dicom

        if path.suffix.lower() == ".dcm" or is_dicom(path):
            return _read_dicom_file(path, series_uid, case)
        raise PreprocessError(MSG_UNSUPPORTED, case=case, path=path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise PreprocessError(MSG_READ_FAILED.format(what="the file", error=str(e).strip()), case=case,
                              path=path) from e
    if image.GetDimension() != 3:
        hint = " (a 4-D file holds several volumes: time points, echoes)" if image.GetDimension() == 4 else ""
        raise PreprocessError(MSG_NOT_3D.format(dim=image.GetDimension(), size=image.GetSize(), hint=hint),
                              case=case, path=path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise PreprocessError(MSG_COMPONENTS.format(components=image.GetNumberOfComponentsPerPixel()), case=case,
                              path=path)
    return image


def read_image(path: str | os.PathLike, *, series_uid: str | None = None, case: Any = None) -> sitk.Image:
    """Read a T2w volume: a DICOM series folder, or a NIfTI file; float32, LPS.

    Args:
        path: a folder (read with :func:`read_dicom_series`), a ``.nii`` / ``.nii.gz`` file (read
            with SimpleITK, whose NIfTI reader turns the RAS affine into LPS origin and
            direction), or a single DICOM file (``.dcm`` or any file with the DICOM preamble),
            which is refused: one slice, or a multi-frame file.
        series_uid: the series to read from a folder with several.
        case: case id for error messages.

    Returns:
        3-D scalar ``SimpleITK.Image`` (size ``(X, Y, Z)``), pixel type float32, with origin,
        spacing and direction (oblique kept) in LPS.

    Raises:
        PreprocessError: naming the case and path: the path does not exist; another file type;
            a file SimpleITK cannot read; not 3-D (2-D, 4-D); several components per voxel; and
            the DICOM series errors of :func:`read_dicom_series`.
    """
    image = _read_any(path, series_uid=series_uid, case=case)
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    return image


# ---------------------------------------------------------------------------------------------- mask


def _grid_text(image: sitk.Image) -> str:
    def fmt(values):
        return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"

    return (f"size {tuple(image.GetSize())}, spacing {fmt(image.GetSpacing())}, origin {fmt(image.GetOrigin())}, "
            f"direction {fmt(image.GetDirection())}")


def _grid_differences(mask: sitk.Image, image: sitk.Image, tol_mm: float, tol_dir: float) -> list[str]:
    what = []
    if mask.GetDimension() != image.GetDimension() or mask.GetSize() != image.GetSize():
        what.append("size")
    if mask.GetDimension() == image.GetDimension():
        if np.max(np.abs(np.subtract(mask.GetSpacing(), image.GetSpacing()))) > tol_mm:
            what.append(f"spacing beyond {tol_mm} mm")
        if np.max(np.abs(np.subtract(mask.GetOrigin(), image.GetOrigin()))) > tol_mm:
            what.append(f"origin beyond {tol_mm} mm")
        if np.max(np.abs(np.subtract(mask.GetDirection(), image.GetDirection()))) > tol_dir:
            what.append(f"direction beyond {tol_dir}")
    return what


def _parse_labels(mask_labels) -> list[int] | None:
    if mask_labels is None:
        return None
    if isinstance(mask_labels, (int, np.integer)) and not isinstance(mask_labels, bool):
        return [int(mask_labels)]
    if isinstance(mask_labels, (str, bytes)) or not isinstance(mask_labels, Iterable):
        raise ValueError(MSG_BAD_LABELS.format(labels=mask_labels))
    labels = list(mask_labels)
    if not labels or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in labels):
        raise ValueError(MSG_BAD_LABELS.format(labels=mask_labels))
    return [int(v) for v in labels]


def read_mask(path: str | os.PathLike, image: sitk.Image, *, case: Any = None,
              mask_labels: int | Sequence[int] | None = None, resample_to_image: bool = False,
              tol_mm: float = 1e-3, tol_dir: float = 1e-4) -> sitk.Image:
    """Read a tumour mask for ``image``: uint8 0/1 on the image's grid.

    Args:
        path: the mask (NIfTI file or DICOM series folder, as :func:`read_image`).
        image: the image it belongs to (``SimpleITK.Image``, e.g. from :func:`read_image`).
        case: case id for error messages.
        mask_labels: ``None`` keeps every non-zero voxel; an integer or a list keeps the voxels
            with those labels (each must occur in the mask).
        resample_to_image: when the grids differ, resample the mask onto the image grid (nearest
            neighbour, after choosing the labels; outside the mask 0) instead of raising.
        tol_mm: largest accepted difference (mm) of spacing and origin components.
        tol_dir: largest accepted difference of direction matrix entries.

    Returns:
        ``SimpleITK.Image`` uint8 with values 0 and 1, the image's size, and exactly the image's
        spacing, origin and direction (copied when the mask's were within tolerance).

    Raises:
        PreprocessError: naming the case and mask path: the reading errors of :func:`read_image`;
            another grid (size, or spacing/origin beyond ``tol_mm``, direction beyond
            ``tol_dir``; the message gives both grids) without ``resample_to_image``; non-integer
            values; ``mask_labels`` not in the mask (the message lists those present); an empty
            mask (or one empty after resampling).
        ValueError: ``mask_labels`` not an integer or a non-empty list of integers.
        TypeError: ``image`` not a ``SimpleITK.Image``.
    """
    if not isinstance(image, sitk.Image):
        raise TypeError(f"image must be a SimpleITK.Image (e.g. from read_image), got {type(image).__name__}")
    labels = _parse_labels(mask_labels)
    mask = _read_any(path, series_uid=None, case=case)
    arr = sitk.GetArrayViewFromImage(mask)  # (Z, Y, X)
    if np.issubdtype(arr.dtype, np.floating):
        bad = arr[(arr != np.round(arr)) | ~np.isfinite(arr)]
        if bad.size:
            raise PreprocessError(MSG_NON_INTEGER.format(value=f"{float(bad.flat[0]):.6g}"), case=case, path=path)
    if labels is None:
        keep = arr != 0
    else:
        present = np.unique(arr)
        missing = [v for v in labels if v not in present]
        if missing:
            raise PreprocessError(MSG_LABELS_ABSENT.format(missing=missing, present=[int(v) for v in present]),
                                  case=case, path=path)
        keep = np.isin(arr, labels)
    if not keep.any():
        raise PreprocessError(MSG_EMPTY.format(detail=" (no non-zero voxel)" if labels is None
                                               else f" (no voxel with labels {labels})"), case=case, path=path)
    binary = sitk.GetImageFromArray(keep.astype(np.uint8))
    binary.CopyInformation(mask)
    differences = _grid_differences(mask, image, tol_mm, tol_dir)
    if differences and not resample_to_image:
        raise PreprocessError(MSG_GRID.format(what=", ".join(differences), image=_grid_text(image),
                                              mask=_grid_text(mask)), case=case, path=path)
    if differences:
        binary = sitk.Resample(binary, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        if not sitk.GetArrayViewFromImage(binary).any():
            raise PreprocessError(MSG_EMPTY.format(detail=" after resampling onto the image grid (the mask lies "
                                                   "outside the image)"), case=case, path=path)
    else:
        binary.CopyInformation(image)
    return binary
