"""Check the image and mask files of a data list before a run reads them: :func:`check_images`.

A 2-D image in a 3-D bundle is silently padded out to 3-D by the resizing transforms and trained; a
mask whose shape differs from its image's is cropped or padded into place; a phase of a
multi-phase case that is not on the other phases' grid is stacked with them. None of these stops a
run. :func:`check_images` reads only the **headers** of every file of a data list (nibabel for
NIfTI, the npy header of the array for NumPy ``.npy`` / ``.npz``, SimpleITK's
``ReadImageInformation`` for other formats), in a thread pool, and raises one
:class:`ImageCheckError` listing the first ``max_listed`` bad cases, each with its case id, key and
file. A bundle wraps its data lists with it, so a bad cohort stops before anything is trained or
written::

    "datalist": "$fairmonai.data.check_images(fairmonai.data.load_datalist(@manifest, @schema, 'train', ...), image_keys=['image_pre', 'image_post1', 'image_post2'], mask_key='label')"

What is checked, per file:

* the header can be read;
* **dimensionality**: ``expected_dims`` axes (3 by default). A 4-D file whose last axis has one
  element (``(X, Y, Z, 1)``, a 3-D volume stored the way some tools write one) is an error by
  default, with the fix in the message (squeeze it, e.g. ``nibabel.squeeze_image``): the bundles'
  loaders keep that axis (OCT's ``EnsureChannelFirstd`` makes it a fourth spatial axis; MAMA-MIA
  stacks phases along it), so accepting it would train on a wrong shape. ``allow_singleton_4d=True``
  accepts it as 3-D, for a pipeline whose reader squeezes it (``NibabelReader(squeeze_non_spatial_dims=True)``);
* **shape**: every axis has at least ``min_size`` voxels (2 by default: a volume one slice thick is
  a 2-D image);
* **spacing**: finite and positive (the lengths of the affine's columns, as MONAI computes it), and a
  finite affine;
* **complete data** (NIfTI, ``check_data_size=True``): an uncompressed ``.nii`` holds at least the
  bytes its header announces; a ``.nii.gz`` whose gzip trailer (the uncompressed size modulo
  2**32, the file's last four bytes) does not match the header's size is decompressed, streaming,
  to tell a truncated or corrupt file from a valid one (e.g. several gzip members). A truncated file
  has a readable header, so this is what catches it before the run.

and per case:

* **all files of the image on one grid**: the phases of a multi-phase case (several
  ``image_keys``, or a key holding a list of files) and the mask (``mask_key``) have the first
  image file's shape, and its spacing, origin and direction within ``tolerance``: spacing relative
  (``|a - b| <= tolerance * |a|``), origin in voxels of the reference (``|a - b| <= tolerance * spacing``),
  direction cosines absolute (``|a - b| <= tolerance``).

**NumPy files** (``.npy``, ``.npz``; what :class:`monai.data.NumpyReader` reads, e.g. Harvard-GF's
``oct_bscans``): the shape and dtype come from the npy header of the array (for ``.npz``, the zip
member ``<npz_key>.npy``, opened without reading the array; ``npz_key`` names it, and an ``.npz``
holding a single array needs none). These files carry **no geometry**: they are checked as unit
spacing, zero origin and identity direction (what ``NumpyReader`` reports), so the spacing check
cannot fail and files of one case are compared by shape only. ``check_data_size`` checks that the
member holds the bytes its header announces; an ``.npz`` whose zip directory cannot be read (a
truncated download) is reported as such. An array of Python objects is an error (``NumpyReader``
refuses pickles by default).

World coordinates are compared in nibabel's RAS convention (SimpleITK's LPS origin and
direction are converted), so a mask in ``.nrrd`` can be compared with an image in ``.nii.gz``.

:class:`ImageReadError` is what :class:`fairmonai.transforms.LoadCaseImaged` raises when a full
read fails (a file whose header reads but whose data does not): it names the case and the file.
Both errors are :class:`fairmonai.errors.InputError`: a bundle run that stops on one prints it last.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = [
    "ImageCheckError",
    "ImageReadError",
    "ImageInfo",
    "ImageProblem",
    "check_images",
    "find_image_problems",
    "read_image_info",
    "MAX_LISTED",
]

#: Bad cases listed in one :class:`ImageCheckError` message.
MAX_LISTED = 10
_NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".hdr.gz", ".img.gz")
_NUMPY_SUFFIXES = (".npy", ".npz")
_CHUNK = 1 << 20

# Messages (tests compare the text).
MSG_HEADER = "cannot read the image header ({error})"
MSG_DIMS = "{ndim}-D image of shape {shape}, {expected}-D expected"
MSG_SINGLETON_4D = (
    "4-D image of shape {shape}: a 3-D volume stored with a 4th axis of length 1; save it as 3-D "
    "(e.g. nibabel.squeeze_image), or pass allow_singleton_4d=True to a pipeline whose reader squeezes it"
)
MSG_SMALL = "shape {shape} has an axis shorter than {min_size} voxels (a {ndim}-D image that is really lower-dimensional)"
MSG_SPACING = "spacing {spacing} is not finite and positive (affine {affine})"
MSG_AFFINE = "the affine is not finite: {affine}"
MSG_TRUNCATED = "the file is truncated: it holds {have} bytes, its header announces {need}"
MSG_TRUNCATED_GZ = "the file is truncated: it decompresses to {have} bytes, its header announces {need}"
MSG_CORRUPT = "the compressed data are corrupt ({error})"
MSG_ZIP = "the .npz file is truncated or corrupt: its zip directory cannot be read ({error})"
MSG_NPZ_KEY = "the .npz has no array '{key}'; its arrays are {keys}"
MSG_NPZ_WHICH = "the .npz holds {n} arrays {keys}; name the one to check with npz_key"
MSG_NPY = "cannot read the npy header of {member} ({error})"
MSG_NPY_OBJECT = "the array {member} holds Python objects (dtype object), not numbers"
MSG_TRUNCATED_NPY = "the array {member} is truncated: it holds {have} bytes, its header announces {need}"
MSG_GRID_SHAPE = "shape {shape} differs from {ref_key}'s {ref_shape} ({ref_file})"
MSG_GRID = "{what} {value} differs from {ref_key}'s {ref_value} ({ref_file}) beyond the tolerance {tolerance}"
MSG_NO_KEY = "the record has no '{key}'"
MSG_NOT_PATH = "'{key}' is not a file path or a list of file paths: {value!r}"
MSG_SUMMARY = "image check: {n_bad} of {n} cases have bad image files ({expected}-D expected{mask}){listed}:"
MSG_LINE = "  case '{case}', {key} {file}: {problem}"


class ImageCheckError(InputError):
    """Files of a data list that a run must not read: wrong dimensionality, shape or grid, unreadable.

    ``problems`` holds every :class:`ImageProblem` found (the message lists the first
    ``max_listed`` cases).
    """

    def __init__(self, message: str, problems: Sequence[ImageProblem] = ()):
        super().__init__(message)
        self.problems = list(problems)


class ImageReadError(InputError):
    """An image file that cannot be read, named with its case id and key.

    Args:
        message: what went wrong (the reader's error).
        case_id: the case.
        key: the data-list key that holds the file.
        file: the file.
    """

    def __init__(self, message: str, *, case_id: Any = None, key: Hashable | None = None, file: str | None = None):
        self.message = message
        self.case_id = case_id
        self.key = key
        self.file = file
        where = []
        if case_id is not None:
            where.append(f"case '{case_id}'")
        if key is not None or file is not None:
            where.append(" ".join(str(x) for x in (key, file) if x is not None))
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass(frozen=True)
class ImageInfo:
    """What a header says about one file's geometry (RAS world coordinates).

    ``shape`` is the stored shape (all axes); ``spacing``, ``origin`` and ``direction`` cover the
    first ``min(ndim, 3)`` axes; ``affine`` is the 4x4 voxel-to-RAS matrix.
    """

    file: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[tuple[float, ...], ...]
    affine: tuple[tuple[float, ...], ...]
    data_problem: str | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class ImageProblem:
    """One problem of one file of one case."""

    index: int
    case_id: str
    key: str
    file: str
    message: str

    def line(self) -> str:
        return MSG_LINE.format(case=self.case_id, key=self.key, file=self.file, problem=self.message)


def _is_nifti(path: str) -> bool:
    return path.lower().endswith(_NIFTI_SUFFIXES)


def _geometry(affine: np.ndarray, ndim: int) -> tuple[tuple[float, ...], tuple[float, ...], tuple[tuple[float, ...], ...]]:
    k = min(max(ndim, 1), 3)
    m = affine[:3, :k]
    spacing = np.linalg.norm(m, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        direction = m / spacing
    return (tuple(float(s) for s in spacing), tuple(float(o) for o in affine[:3, 3]),
            tuple(tuple(float(v) for v in row) for row in direction))


def _gzip_data_problem(path: str, need: int) -> str | None:
    """None when the gzip file decompresses to at least ``need`` bytes, else the problem."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() >= 18:  # 10-byte header + 8-byte trailer
            f.seek(-4, os.SEEK_END)
            if int.from_bytes(f.read(4), "little") == need % (1 << 32):
                return None  # the trailer agrees with the header: the usual, fast case
        f.seek(0)
        total = 0
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                while chunk:
                    if d.eof:  # the previous gzip member ended and more data follow: the next member
                        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    total += len(d.decompress(chunk))
                    chunk = d.unused_data if d.eof else b""
        except zlib.error as e:
            return MSG_CORRUPT.format(error=e)
    if total < need or not d.eof:
        return MSG_TRUNCATED_GZ.format(have=total, need=need)
    return None


def _single_file_nifti_header(path: str):
    """The header of a single-file NIfTI-1/2 (``.nii``, ``.nii.gz``) read directly, or ``None`` for
    anything else (left to ``nibabel.load``). The header is read and checked as ``nibabel.load``
    does, without its format sniffing and image construction (a third of its time)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    if not path.lower().endswith((".nii", ".nii.gz")):
        return None
    try:
        with ImageOpener(path) as f:
            start = f.read(4)
            size = {int.from_bytes(start, "little"), int.from_bytes(start, "big")} if len(start) == 4 else set()
            klass = nib.Nifti1Header if 348 in size else nib.Nifti2Header if 540 in size else None
            if klass is None:
                return None
            f.seek(0)
            header = klass.from_fileobj(f)
    except Exception:  # not readable this way: nibabel.load says why
        return None
    return header if header["magic"].item() in (b"n+1", b"n+2") else None


def _read_nifti(path: str, check_data_size: bool) -> ImageInfo:
    import nibabel as nib

    header = _single_file_nifti_header(path)
    if header is not None:
        data_file, offset, affine = path, header.get_data_offset(), header.get_best_affine()
    else:  # a pair (.hdr/.img), Analyze, or not a NIfTI file at all: nibabel decides (and raises)
        img = nib.load(path)
        header, affine = img.header, img.affine
        data_file, offset = img.file_map["image"].filename, getattr(img.dataobj, "offset", None)
    shape = tuple(int(s) for s in header.get_data_shape())
    affine = np.asarray(affine, dtype=float)
    spacing, origin, direction = _geometry(affine, len(shape))
    problem = None
    if check_data_size and offset is not None and data_file:
        offset = int(offset)
        need = offset + int(np.prod(shape, dtype=np.int64)) * header.get_data_dtype().itemsize
        if str(data_file).lower().endswith(".gz"):
            problem = _gzip_data_problem(str(data_file), need)
        else:
            have = os.path.getsize(data_file)
            if have < need:
                problem = MSG_TRUNCATED.format(have=have, need=need)
    return ImageInfo(path, shape, spacing, origin, direction, tuple(tuple(float(v) for v in r) for r in affine),
                     problem)


def _read_itk(path: str) -> ImageInfo:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    ndim = reader.GetDimension()
    shape = tuple(int(s) for s in reader.GetSize())
    spacing = np.asarray(reader.GetSpacing(), dtype=float)
    origin = np.asarray(reader.GetOrigin(), dtype=float)
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(ndim, ndim)
    # voxel-to-world in LPS, then to RAS (flip x and y) as nibabel reports NIfTI
    k = min(ndim, 3)
    affine = np.eye(4)
    affine[:k, :k] = (direction * spacing[None, :])[:k, :k]
    affine[:k, 3] = origin[:k]
    affine[:2] *= -1
    affine[3] = (0, 0, 0, 1)
    sp, org, dirs = _geometry(affine, ndim)
    return ImageInfo(path, shape, sp, org, dirs, tuple(tuple(float(v) for v in r) for r in affine))


class _FileProblem(Exception):
    """A file's problem, already worded for the report (raised by a reader, caught per file)."""


def _is_numpy(path: str) -> bool:
    return path.lower().endswith(_NUMPY_SUFFIXES)


def _npy_header(f, member: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and header length of the npy stream ``f`` (positioned at its start)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:  # 3.0 (utf-8 field names) has no public reader
            shape, _, dtype = fmt._read_array_header(f, version)
        length = f.tell()
    except Exception as e:  # not an npy stream, or cut inside its header
        raise _FileProblem(MSG_NPY.format(member=member, error=f"{type(e).__name__}: {e}")) from e
    if dtype.hasobject:
        raise _FileProblem(MSG_NPY_OBJECT.format(member=member))
    return tuple(int(s) for s in shape), dtype, length


def _read_numpy(path: str, check_data_size: bool, npz_key: str | None) -> ImageInfo:
    if path.lower().endswith(".npy"):
        with open(path, "rb") as f:
            shape, dtype, length = _npy_header(f, "'.npy'")
        have, member = os.path.getsize(path), "'.npy'"
    else:
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise _FileProblem(MSG_ZIP.format(error=f"{type(e).__name__}: {e}")) from e
        with zf:
            names = zf.namelist()
            arrays = [n[:-4] if n.endswith(".npy") else n for n in names]  # the keys np.load gives
            if npz_key is None:
                if len(arrays) != 1:
                    raise _FileProblem(MSG_NPZ_WHICH.format(n=len(arrays), keys=arrays))
                name = names[0]
            elif npz_key in arrays:
                name = names[arrays.index(npz_key)]
            else:
                raise _FileProblem(MSG_NPZ_KEY.format(key=npz_key, keys=arrays))
            member = f"'{arrays[names.index(name)]}'"
            try:
                with zf.open(name) as f:
                    shape, dtype, length = _npy_header(f, member)
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # a member cut or corrupt in its first bytes
                raise _FileProblem(MSG_ZIP.format(error=f"{type(e).__name__}: {e}")) from e
            have = zf.getinfo(name).file_size
    problem = None
    need = length + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if check_data_size and have < need:
        problem = MSG_TRUNCATED_NPY.format(member=member, have=have, need=need)
    affine = np.eye(4)  # no geometry in the file: unit spacing, as NumpyReader reports
    spacing, origin, direction = _geometry(affine, len(shape))
    return ImageInfo(path, shape, spacing, origin, direction, tuple(tuple(float(v) for v in r) for r in affine),
                     problem)


def read_image_info(path: str | os.PathLike, *, check_data_size: bool = True, npz_key: str | None = None) -> ImageInfo:
    """The geometry of one image file from its header (nibabel for NIfTI, the npy header for ``.npy`` /
    ``.npz``, SimpleITK otherwise).

    Args:
        path: the file.
        check_data_size: also check that the file holds the data its header announces (NIfTI, NumPy).
        npz_key: the array of an ``.npz`` file to describe; ``None``: its only array.

    Raises:
        OSError, ValueError, RuntimeError: the header cannot be read (what the reader raises).
    """
    path = os.fspath(path)
    if _is_nifti(path):
        return _read_nifti(path, check_data_size)
    if _is_numpy(path):
        try:
            return _read_numpy(path, check_data_size, npz_key)
        except _FileProblem as e:
            raise ValueError(f"{path}: {e}") from e
    return _read_itk(path)


def _read_or_error(path: str, check_data_size: bool, npz_key: str | None = None) -> ImageInfo | str:
    if not os.path.exists(path):
        return MSG_HEADER.format(error="file not found")
    try:
        if _is_numpy(path):
            return _read_numpy(path, check_data_size, npz_key)
        return read_image_info(path, check_data_size=check_data_size)
    except _FileProblem as e:  # worded already
        return str(e)
    except Exception as e:  # any reader failure is this file's problem, reported with its case
        text = str(e).replace(path, "<file>").strip() or type(e).__name__
        return MSG_HEADER.format(error=f"{type(e).__name__}: {text}")


def _files_of(value: Any) -> list[str] | None:
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [os.fspath(v) for v in value]
    return None


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _file_problems(info: ImageInfo, expected_dims: int, min_size: int, allow_singleton_4d: bool) -> tuple[list[str], tuple[int, ...]]:
    """Problems of one file on its own, and its shape as the check sees it."""
    shape = info.shape
    if allow_singleton_4d and len(shape) == expected_dims + 1 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != expected_dims:
        if len(shape) == expected_dims + 1 and shape[-1] == 1:
            return [MSG_SINGLETON_4D.format(shape=shape)], shape
        return [MSG_DIMS.format(ndim=len(shape), shape=shape, expected=expected_dims)], shape
    problems = []
    if min(shape) < min_size:
        problems.append(MSG_SMALL.format(shape=shape, min_size=min_size, ndim=len(shape)))
    affine = np.asarray(info.affine)
    if not np.all(np.isfinite(affine)):
        problems.append(MSG_AFFINE.format(affine=affine.tolist()))
    elif not all(math.isfinite(s) and s > 0 for s in info.spacing):
        problems.append(MSG_SPACING.format(spacing=_fmt(info.spacing), affine=affine[:3].round(6).tolist()))
    if info.data_problem is not None:
        problems.append(info.data_problem)
    return problems, shape


def _grid_problem(info: ImageInfo, shape: tuple, ref: ImageInfo, ref_shape: tuple, ref_key: str,
                  tolerance: float) -> str | None:
    if shape != ref_shape:
        return MSG_GRID_SHAPE.format(shape=shape, ref_key=ref_key, ref_shape=ref_shape, ref_file=ref.file)
    sp, rsp = np.asarray(info.spacing), np.asarray(ref.spacing)
    if np.any(np.abs(sp - rsp) > tolerance * np.abs(rsp)):
        return MSG_GRID.format(what="spacing", value=_fmt(sp), ref_key=ref_key, ref_value=_fmt(rsp), ref_file=ref.file,
                               tolerance=f"{tolerance:g} (relative)")
    org, rorg = np.asarray(info.origin), np.asarray(ref.origin)
    if np.any(np.abs(org - rorg) > tolerance * np.min(rsp)):
        return MSG_GRID.format(what="origin", value=_fmt(org), ref_key=ref_key, ref_value=_fmt(rorg), ref_file=ref.file,
                               tolerance=f"{tolerance:g} voxel")
    d, rd = np.asarray(info.direction), np.asarray(ref.direction)
    if np.any(np.abs(d - rd) > tolerance):
        return MSG_GRID.format(what="direction", value=d.round(6).tolist(), ref_key=ref_key,
                               ref_value=rd.round(6).tolist(), ref_file=ref.file, tolerance=f"{tolerance:g}")
    return None


def find_image_problems(
    datalist: Sequence[Mapping],
    image_keys: str | Sequence[str] = "image",
    mask_key: str | None = None,
    *,
    case_id_key: str = "case_id",
    expected_dims: int = 3,
    min_size: int = 2,
    tolerance: float = 1e-3,
    allow_singleton_4d: bool = False,
    allow_missing_keys: bool = False,
    check_data_size: bool = True,
    npz_key: str | Mapping[str, str] | None = None,
    num_workers: int | None = None,
) -> list[ImageProblem]:
    """Every problem :func:`check_images` would report, in data-list order (nothing raised).

    Arguments as :func:`check_images`.
    """
    keys = [image_keys] if isinstance(image_keys, str) else list(image_keys)
    if not keys:
        raise ValueError("image_keys names no key")
    if expected_dims < 1:
        raise ValueError(f"expected_dims must be >= 1, got {expected_dims}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    all_keys = keys + ([mask_key] if mask_key is not None else [])
    if isinstance(npz_key, Mapping):
        unknown = [k for k in npz_key if k not in all_keys]
        if unknown:
            raise ValueError(f"npz_key names keys that are not checked: {unknown}; the checked keys are {all_keys}")
        array_of = dict(npz_key)
    else:
        array_of = {k: npz_key for k in all_keys}

    # the files of each case, as (key name, file), images first, then the mask
    cases: list[tuple[str, list[tuple[str, str]], list[tuple[str, str]]]] = []
    early: dict[int, list[ImageProblem]] = {}
    for i, rec in enumerate(datalist):
        cid = str(rec.get(case_id_key, f"#{i}"))
        named: list[tuple[str, str]] = []
        for key in all_keys:
            if key not in rec:
                if not allow_missing_keys:
                    early.setdefault(i, []).append(ImageProblem(i, cid, key, "-", MSG_NO_KEY.format(key=key)))
                continue
            files = _files_of(rec[key])
            if files is None:
                early.setdefault(i, []).append(ImageProblem(i, cid, key, "-", MSG_NOT_PATH.format(key=key, value=rec[key])))
                continue
            named += [(key if len(files) == 1 else f"{key}[{j}]", f) for j, f in enumerate(files)]
        n_img = sum(1 for k, _ in named if k.split("[")[0] != mask_key)
        cases.append((cid, named[:n_img], named[n_img:]))

    def source(key: str, f: str) -> tuple[str, str | None]:  # a file, and the array of it an .npz key names
        return f, array_of.get(key.split("[")[0]) if _is_numpy(f) else None

    files = list(dict.fromkeys(source(k, f) for _, imgs, masks in cases for k, f in imgs + masks))
    workers = num_workers if num_workers is not None else min(16, 4 * (os.cpu_count() or 1))
    if workers <= 1 or len(files) <= 1:
        infos = {src: _read_or_error(src[0], check_data_size, src[1]) for src in files}
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            infos = dict(zip(files, pool.map(lambda src: _read_or_error(src[0], check_data_size, src[1]), files)))

    problems: list[ImageProblem] = []
    for i, (cid, images, masks) in enumerate(cases):
        problems += early.get(i, [])
        ref = None
        for key, f in images + masks:
            info = infos[source(key, f)]
            if isinstance(info, str):
                problems.append(ImageProblem(i, cid, key, f, info))
                continue
            own, shape = _file_problems(info, expected_dims, min_size, allow_singleton_4d)
            problems += [ImageProblem(i, cid, key, f, p) for p in own]
            if own:
                continue  # a bad file is neither compared nor the reference: one problem, said once
            if ref is None:
                ref = (key, info, shape)
                continue
            p = _grid_problem(info, shape, ref[1], ref[2], ref[0], tolerance)
            if p is not None:
                problems.append(ImageProblem(i, cid, key, f, p))
    return problems


def check_images(
    datalist: Sequence[Mapping],
    image_keys: str | Sequence[str] = "image",
    mask_key: str | None = None,
    *,
    case_id_key: str = "case_id",
    expected_dims: int = 3,
    min_size: int = 2,
    tolerance: float = 1e-3,
    allow_singleton_4d: bool = False,
    allow_missing_keys: bool = False,
    check_data_size: bool = True,
    npz_key: str | Mapping[str, str] | None = None,
    max_listed: int = MAX_LISTED,
    num_workers: int | None = None,
) -> Sequence[Mapping]:
    """Check the headers of every image and mask file of ``datalist``; return it unchanged.

    See the module docstring for what is checked. Headers are read once per distinct file, in a
    thread pool of ``num_workers`` threads; the result does not depend on the number of threads.

    Args:
        datalist: the records (dicts), e.g. from :func:`fairmonai.data.load_datalist`.
        image_keys: key(s) of the image files; a key may hold one path or a list of paths (the
            phases of a multi-file image). All image files of a case must be on one grid; the
            first is the reference.
        mask_key: key of the mask file, which must be on the reference image's grid; ``None``
            for none (classification).
        case_id_key: key of the case id named in errors (a record without it is named ``#<index>``).
        expected_dims: the number of axes every file must have. Defaults to 3.
        min_size: the fewest voxels along any axis. Defaults to 2.
        tolerance: grid tolerance: relative for spacing, in voxels for the origin, absolute for the
            direction cosines. Defaults to 1e-3.
        allow_singleton_4d: accept ``(X, Y, Z, 1)`` as 3-D (only when the reader squeezes it).
        allow_missing_keys: skip a key a record lacks instead of reporting it (inference lists).
        check_data_size: check that each NIfTI or NumPy file holds all the data its header announces.
        npz_key: the array of each ``.npz`` file to check, as :class:`monai.data.NumpyReader`'s
            ``npz_keys`` reads it (e.g. ``"oct_bscans"`` for Harvard-GF): one name for every key, or a
            mapping data-list key -> name (a key it omits: ``None``). ``None``: an ``.npz`` must hold
            one array, which is checked. An ``.npz`` without the named array is a bad case (the
            message lists its arrays). ``.npz`` / ``.npy`` files have no geometry: unit spacing.
        max_listed: bad cases listed in the error message (all are in ``ImageCheckError.problems``).
        num_workers: header-reading threads; default ``min(16, 4 * cpu_count)``; 0 or 1 reads serially.

    Returns:
        ``datalist`` itself, so a config can wrap a data list expression.

    Raises:
        ImageCheckError: at least one bad case; the message lists ``max_listed`` of them, one problem
            per line: ``case '<id>', <key> <file>: <problem>``.
        ValueError: ``image_keys`` empty, ``expected_dims`` < 1, ``tolerance`` outside [0, 1), an
            ``npz_key`` mapping naming a key that is not checked.
    """
    problems = find_image_problems(
        datalist, image_keys, mask_key, case_id_key=case_id_key, expected_dims=expected_dims, min_size=min_size,
        tolerance=tolerance, allow_singleton_4d=allow_singleton_4d, allow_missing_keys=allow_missing_keys,
        check_data_size=check_data_size, npz_key=npz_key, num_workers=num_workers,
    )
    if not problems:
        return datalist
    bad = list(dict.fromkeys(p.index for p in problems))
    shown = set(bad[:max_listed])
    listed = "" if len(bad) <= max_listed else f"; the first {max_listed} cases"
    head = MSG_SUMMARY.format(n_bad=len(bad), n=len(datalist), expected=expected_dims,
                              mask=", masks on their image's grid" if mask_key is not None else "", listed=listed)
    lines = [head] + [p.line() for p in problems if p.index in shown]
    raise ImageCheckError("\n".join(lines), problems)
