"""The geometric and intensity steps of the FaMI rectal-MRI preprocessing, one tested function each.

Sadri et al. (FaMI), cohort C2 (rectal MRI, pCR): each T2-weighted volume is resampled to 1 mm
isotropic voxels (trilinear), small connected components (< 20 pixels) are removed from the
tumour mask, a fixed-size box (79 x 79 x 40, the mean tumour bounding box of the training split)
is cropped around the tumour and z-scored. The functions, in pipeline order:

1. :func:`resample_isotropic`: image linear, mask nearest neighbour, onto one new grid.
2. :func:`mask_components`: connected components; those under ``min_voxels`` are dropped.
3. :func:`bounding_box`: the tumour's box in voxel indices of the resampled grid.
4. :func:`crop_around`: a ``crop_size`` crop centred on the box, zero-padded outside the image;
   :func:`mean_box_size` gives ``crop_size="auto"`` (the paper's derivation).
5. :func:`zscore_inside`: z-score over the voxels inside the image; padding stays 0.
6. :func:`pad_to_divisible`: zero-pad (never resize) the crop to a size every network divides.

:func:`ras_affine` gives the NIfTI/MONAI affine of a SimpleITK image (see the conventions below).

**Conventions.**

* Steps 1-5 take and return ``SimpleITK.Image`` objects, so that the physical geometry (origin,
  spacing, direction) travels with the data. Indices and sizes are SimpleITK's ``(x, y, z)``
  (``i, j, k``): ``x``, ``y`` the in-plane axes of the acquisition and ``z`` the slice axis; a
  box or crop is never reoriented. A numpy array taken from an image
  (``SimpleITK.GetArrayFromImage``) is ``(z, y, x)``: :attr:`Crop.inside` uses that order, so it
  indexes ``GetArrayViewFromImage(crop.image)`` directly.
* SimpleITK's physical space is LPS; nibabel's and MONAI's is RAS. The voxel order is the same
  (SimpleITK writes NIfTI voxel ``(i, j, k)`` = its index ``(x, y, z)``), so an image goes to MONAI as
  the array transposed to ``(X, Y, Z)`` with the affine ``diag(-1, -1, 1, 1) @ [[D S, o], [0, 1]]``
  (:func:`ras_affine`), what MONAI's ``ITKReader`` and ``NibabelReader`` give for the same file.
* Errors in the data (an empty mask, no component left, a constant crop) raise
  :class:`~fairmonai.data.preprocess.io.PreprocessError` (an :class:`~fairmonai.errors.InputError`)
  whose message begins with the case: ``case 'c7': ...``.

**Timing.** Steps 1-5 (:func:`~fairmonai.data.preprocess.cache.preprocess_images`) on a 512 x 512 x
40 image at 0.5 x 0.5 x 3 mm (-> 256 x 256 x 120 at 1 mm; a 60 x 60 x 8 voxel tumour and one
spurious component) took 0.5-0.9 s on one core (0.35 s of it the resampling); the whole case in
:func:`~fairmonai.data.preprocess.cache.preprocess_cohort` (reading the 42 MB NIfTI or a 40-file
DICOM series, steps 1-5, writing both crops) 1.4-1.7 s from NIfTI and 1.0-1.3 s from DICOM. Measured
once (3 runs each): SimpleITK limited to one thread, process pinned with ``taskset -c 0``, on a
2-core virtual machine ("Intel Xeon Processor", SimpleITK 2.5.7) while a background job kept its
load average near 5. On the same machine when quiet the whole case from DICOM takes 0.40 s
(``benchmarks/bench_rectal_preprocess.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import SimpleITK as sitk

from .io import PreprocessError

__all__ = [
    "BOX_MODES",
    "CONNECTIVITIES",
    "DEFAULT_CROP_SIZE",
    "DEFAULT_SPATIAL_SIZE",
    "DEFAULT_SPACING",
    "MIN_COMPONENT_VOXELS",
    "Box",
    "ComponentInfo",
    "Crop",
    "resample_isotropic",
    "mask_components",
    "bounding_box",
    "crop_around",
    "mean_box_size",
    "zscore_inside",
    "pad_to_divisible",
    "ras_affine",
]

#: Output spacing of the paper's resampling, mm.
DEFAULT_SPACING = (1.0, 1.0, 1.0)
#: The paper's smallest kept mask component ("20 pixels"), voxels of the resampled grid.
MIN_COMPONENT_VOXELS = 20
#: The paper's crop, voxels (x, y, z) at 1 mm: the mean tumour box of its training split.
DEFAULT_CROP_SIZE = (79, 79, 40)
#: The crop zero-padded to a size that a ViT with 16-voxel patches (and every pooling network) divides.
DEFAULT_SPATIAL_SIZE = (80, 80, 48)
#: ``face``: 6-neighbourhood in 3-D (4 in 2-D); ``full``: 26-neighbourhood (8 in 2-D).
CONNECTIVITIES = ("face", "full")
#: ``union``: the box of all kept components; ``largest``: of the largest component only.
BOX_MODES = ("union", "largest")

_MSG_OPTION = "{name} must be one of {allowed}, got {value!r}."
_MSG_NOT_3D = "{name} must be a 3-D SimpleITK image, got {value}."
_MSG_EMPTY = "the tumour mask is empty (no voxel is 1)."
_MSG_NONE_KEPT = ("all {n} mask components have fewer than {min_voxels} voxels ({how}; sizes {sizes}): no tumour "
                  "is left.")
_MSG_CONSTANT = "the image crop is constant ({value}) over its {n} voxels inside the image: it cannot be z-scored."
_MSG_PAD_SMALLER = "pad_to_divisible pads only: the input's spatial shape {shape} exceeds spatial_size {size}."
_MSG_NOT_DIVISIBLE = "spatial_size {size} is not divisible by {divisor} on every axis."


def _case_error(case: Any, message: str) -> PreprocessError:
    return PreprocessError(message, case=case)


def _check_image(image: Any, name: str) -> None:
    if not isinstance(image, sitk.Image) or image.GetDimension() != 3:
        got = f"a {image.GetDimension()}-D image" if isinstance(image, sitk.Image) else type(image).__name__
        raise TypeError(_MSG_NOT_3D.format(name=name, value=got))


def _check_option(value: Any, allowed: Sequence[str], name: str) -> str:
    if value not in allowed:
        raise ValueError(_MSG_OPTION.format(name=name, allowed=list(allowed), value=value))
    return value


def _triple(value: Any, name: str, kind=float) -> tuple:
    if np.isscalar(value):
        value = (value,) * 3
    out = tuple(kind(v) for v in value)
    if len(out) != 3 or any(v <= 0 for v in out):
        raise ValueError(f"{name} must be 3 positive numbers, got {value!r}.")
    return out


# --- 1. resampling -------------------------------------------------------------------------------


def resample_isotropic(image: sitk.Image, mask: sitk.Image | None = None,
                       spacing: float | Sequence[float] = DEFAULT_SPACING) -> tuple[sitk.Image, sitk.Image | None]:
    """Resample an image (linear) and its mask (nearest neighbour) onto one grid of spacing ``spacing``.

    Paper step: resampling to 1 mm isotropic voxels with trilinear interpolation.

    The output grid keeps the image's **origin** (the centre of voxel ``(0, 0, 0)``) and
    **direction**; its size on axis ``a`` is ``floor(n_a s_a / t_a + 0.5)`` (the extent
    ``n_a s_a`` divided by the new spacing ``t_a``, rounded half up, at least 1), e.g. 96 x 96 x 24
    voxels at 0.75 x 0.75 x 3 mm -> 72 x 72 x 72 at 1 mm. With the origin kept, the new grid is
    shifted towards the high indices by ``(s_a - t_a) / 2`` relative to the old field of view: new
    voxel centres past the last old voxel centre take the value of the nearest old voxel
    (SimpleITK's nearest-neighbour extrapolator; at 3 -> 1 mm, the last 2 slices copy the last old
    slice), never the padding value. Linear interpolation reproduces a linear intensity ramp
    exactly between the old voxel centres. The mask is resampled onto the same grid (nearest
    neighbour in physical space, so a mask on another grid is placed where it is). The image is
    resampled as float32.

    Args:
        image: 3-D image, any pixel type, any direction.
        mask: 3-D mask (0/1, uint8), or ``None``.
        spacing: the new spacing in mm, one number or ``(x, y, z)``. Defaults to ``(1, 1, 1)``.

    Returns:
        ``(image, mask)``: float32 image and uint8 mask (``None`` when no mask was given), same
        origin and direction as ``image``, spacing ``spacing``.

    Raises:
        TypeError: ``image`` or ``mask`` is not a 3-D SimpleITK image.
        ValueError: ``spacing`` is not 3 positive numbers.
    """
    _check_image(image, "image")
    if mask is not None:
        _check_image(mask, "mask")
    new = _triple(spacing, "spacing")
    size = [max(1, int(math.floor(n * s / t + 0.5))) for n, s, t in zip(image.GetSize(), image.GetSpacing(), new)]
    f = sitk.ResampleImageFilter()
    f.SetOutputOrigin(image.GetOrigin())
    f.SetOutputDirection(image.GetDirection())
    f.SetOutputSpacing(new)
    f.SetSize(size)
    f.SetDefaultPixelValue(0)
    f.SetUseNearestNeighborExtrapolator(True)
    f.SetInterpolator(sitk.sitkLinear)
    f.SetOutputPixelType(sitk.sitkFloat32)
    out_image = f.Execute(sitk.Cast(image, sitk.sitkFloat32) if image.GetPixelID() != sitk.sitkFloat32 else image)
    out_mask = None
    if mask is not None:
        f.SetInterpolator(sitk.sitkNearestNeighbor)
        f.SetOutputPixelType(sitk.sitkUInt8)
        out_mask = f.Execute(mask if mask.GetPixelID() == sitk.sitkUInt8 else sitk.Cast(mask != 0, sitk.sitkUInt8))
    return out_image, out_mask


# --- 2. connected components ----------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentInfo:
    """Connected components of a mask, kept and dropped.

    Attributes:
        kept_sizes: voxel counts of the kept components, largest first.
        dropped_sizes: voxel counts of the dropped components (``< min_voxels``), largest first.
        min_voxels, connectivity, per_slice: the settings used.
    """

    kept_sizes: tuple[int, ...]
    dropped_sizes: tuple[int, ...]
    min_voxels: int
    connectivity: str
    per_slice: bool

    @property
    def n_kept(self) -> int:
        return len(self.kept_sizes)

    @property
    def n_dropped(self) -> int:
        return len(self.dropped_sizes)


def _components(binary: sitk.Image, fully: bool, min_voxels: int) -> tuple[sitk.Image, list[int], list[int]]:
    """Kept binary mask, kept sizes, dropped sizes (both largest first) of one 2-D or 3-D mask."""
    relabel = sitk.RelabelComponentImageFilter()  # labels by size, largest = 1, all kept (minimum size 0)
    labels = relabel.Execute(sitk.ConnectedComponent(binary, fully))
    sizes = [int(s) for s in relabel.GetSizeOfObjectsInPixels()]
    n_kept = sum(s >= min_voxels for s in sizes)
    if n_kept:
        kept = sitk.BinaryThreshold(labels, 1, n_kept, 1, 0)
    else:
        kept = sitk.Image(binary.GetSize(), sitk.sitkUInt8)
        kept.CopyInformation(binary)
    return kept, sizes[:n_kept], sizes[n_kept:]


def mask_components(mask: sitk.Image, *, min_voxels: int = MIN_COMPONENT_VOXELS, connectivity: str = "face",
                    per_slice: bool = False, case: Any = None) -> tuple[sitk.Image, ComponentInfo]:
    """Drop the connected components of a mask that have fewer than ``min_voxels`` voxels.

    Paper step: "connected components with fewer than 20 pixels were removed". Apply it to the
    **resampled** mask (:func:`resample_isotropic`): sizes are counted on the 1 mm grid, where a
    component of 19 acquisition voxels at 0.75 x 0.75 x 3 mm covers about 32 voxels.

    Components use SimpleITK's ``ConnectedComponentImageFilter`` (``FullyConnected`` off for
    ``"face"``: 6-neighbourhood in 3-D, so two voxels touching only at an edge or a corner are two
    components; on for ``"full"``: 26-neighbourhood) and ``RelabelComponentImageFilter`` for the
    sizes. With ``per_slice=True`` each slice (fixed ``z`` index) is labelled in 2-D (4- or
    8-neighbourhood) and a component's size is its pixel count in that slice, the literal reading
    of "20 pixels"; a tumour spread over several thin slices can then lose slices that 3-D counting
    keeps.

    A case whose mask is empty, or whose components are all dropped, raises: its tumour is not
    there, which the user must fix (or leave the case out) before training. Nothing is silently
    skipped here; :func:`~fairmonai.data.preprocess.cache.preprocess_cohort` decides whether a
    cohort run stops or flags the case.

    Args:
        mask: 3-D mask, voxels 0/1 (any non-zero counts as 1).
        min_voxels: smallest kept component, voxels (pixels with ``per_slice``). Defaults to 20.
        connectivity: ``"face"`` (default) or ``"full"``.
        per_slice: count 2-D components per slice instead of 3-D components. Defaults to ``False``.
        case: case id, named in errors.

    Returns:
        ``(kept, info)``: the uint8 0/1 mask of the kept components (geometry of ``mask``) and a
        :class:`ComponentInfo` with the kept and dropped sizes.

    Raises:
        PreprocessError: the mask is empty, or no component has ``min_voxels`` voxels.
        ValueError: ``connectivity`` not in :data:`CONNECTIVITIES`, ``min_voxels`` < 1.
        TypeError: ``mask`` is not a 3-D SimpleITK image.
    """
    _check_image(mask, "mask")
    _check_option(connectivity, CONNECTIVITIES, "connectivity")
    if int(min_voxels) != min_voxels or min_voxels < 1:
        raise ValueError(f"min_voxels must be an integer >= 1, got {min_voxels!r}.")
    min_voxels = int(min_voxels)
    fully = connectivity == "full"
    binary = sitk.Cast(mask != 0, sitk.sitkUInt8)
    if not per_slice:
        kept, kept_sizes, dropped_sizes = _components(binary, fully, min_voxels)
    else:
        arr = sitk.GetArrayViewFromImage(binary)  # (z, y, x)
        out = np.zeros(arr.shape, dtype=np.uint8)
        kept_sizes, dropped_sizes = [], []
        for k in np.flatnonzero(arr.reshape(arr.shape[0], -1).any(axis=1)):
            k_kept, ks, ds = _components(binary[:, :, int(k)], fully, min_voxels)
            out[k] = sitk.GetArrayViewFromImage(k_kept)
            kept_sizes += ks
            dropped_sizes += ds
        kept = sitk.GetImageFromArray(out)
        kept.CopyInformation(binary)
        kept_sizes.sort(reverse=True)
        dropped_sizes.sort(reverse=True)
    if not kept_sizes and not dropped_sizes:
        raise _case_error(case, _MSG_EMPTY)
    if not kept_sizes:
        how = f"{'2-D per slice' if per_slice else '3-D'}, {connectivity} connectivity"
        raise _case_error(case, _MSG_NONE_KEPT.format(n=len(dropped_sizes), min_voxels=min_voxels, how=how,
                                                      sizes=dropped_sizes))
    info = ComponentInfo(tuple(kept_sizes), tuple(dropped_sizes), min_voxels, connectivity, bool(per_slice))
    return kept, info


# --- 3. bounding box ------------------------------------------------------------------------------


class Box(NamedTuple):
    """An axis-aligned box of voxel indices ``(x, y, z)`` of one grid: ``start`` (first voxel) and ``size``.

    The voxels are ``start[a] <= i < start[a] + size[a]`` (:attr:`stop` is exclusive); in
    SimpleITK's numpy order ``array[z0:z1, y0:y1, x0:x1]``.
    """

    start: tuple[int, int, int]
    size: tuple[int, int, int]

    @property
    def stop(self) -> tuple[int, int, int]:
        return tuple(a + n for a, n in zip(self.start, self.size))  # type: ignore[return-value]


def bounding_box(mask: sitk.Image, mode: str = "union", *, connectivity: str = "face", case: Any = None) -> Box:
    """The bounding box of a mask in voxel indices ``(x, y, z)`` of its grid (the resampled acquisition grid).

    Paper step: the tumour's bounding box, around which the fixed-size crop is centred.
    ``"union"`` boxes every voxel of the mask (all kept components); ``"largest"`` only the
    largest component (``connectivity`` as in :func:`mask_components`; of equal sizes, the first in
    SimpleITK's raster order, x fastest, wins). Computed with ``LabelShapeStatisticsImageFilter``.

    Args:
        mask: 3-D mask (non-zero = tumour), normally the kept mask of :func:`mask_components`.
        mode: ``"union"`` (default) or ``"largest"``.
        connectivity: for ``"largest"``: ``"face"`` (default) or ``"full"``.
        case: case id, named in errors.

    Returns:
        :class:`Box` ``(start, size)``, each ``(x, y, z)`` voxel indices.

    Raises:
        PreprocessError: the mask is empty.
        ValueError: unknown ``mode`` or ``connectivity``.
    """
    _check_image(mask, "mask")
    _check_option(mode, BOX_MODES, "mode")
    _check_option(connectivity, CONNECTIVITIES, "connectivity")
    labels = sitk.Cast(mask != 0, sitk.sitkUInt8)
    if mode == "largest":
        labels = sitk.RelabelComponent(sitk.ConnectedComponent(labels, connectivity == "full"))
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    if 1 not in stats.GetLabels():
        raise _case_error(case, _MSG_EMPTY)
    bb = [int(v) for v in stats.GetBoundingBox(1)]
    return Box(tuple(bb[:3]), tuple(bb[3:]))  # type: ignore[arg-type]


# --- 4. crop --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crop:
    """A fixed-size crop of an image and its mask, and where it left the image.

    Attributes:
        image: float32 crop, size ``size`` (x, y, z), geometry of the source grid (its origin is
            the physical point of source index ``start``), 0 outside the source image.
        mask: uint8 crop of the mask, same grid.
        inside: bool array ``(z, y, x)`` (SimpleITK array order of ``image``), ``True`` where the crop
            voxel lies inside the source image.
        start: source index of the crop's first voxel, ``(x, y, z)``; negative where it leaves the image.
        size: crop size ``(x, y, z)``.
        pad_lower, pad_upper: voxels of padding on the low and high side of each axis ``(x, y, z)``.
        padding_voxels: crop voxels outside the image.
        mask_voxels: voxels of the whole (kept) mask; mask_voxels_inside: those in the crop.
        fraction_inside: ``mask_voxels_inside / mask_voxels``.
    """

    image: sitk.Image
    mask: sitk.Image
    inside: np.ndarray
    start: tuple[int, int, int]
    size: tuple[int, int, int]
    pad_lower: tuple[int, int, int]
    pad_upper: tuple[int, int, int]
    padding_voxels: int
    mask_voxels: int
    mask_voxels_inside: int
    fraction_inside: float


def _crop_one(image: sitk.Image, start, size, pad_lower, pad_upper) -> sitk.Image:
    if any(pad_lower) or any(pad_upper):
        image = sitk.ConstantPad(image, list(pad_lower), list(pad_upper), 0)  # origin moves with pad_lower
    return sitk.RegionOfInterest(image, list(size), [s + p for s, p in zip(start, pad_lower)])


def crop_around(image: sitk.Image, mask: sitk.Image, box: Box | Sequence, crop_size: int | Sequence[int]
                = DEFAULT_CROP_SIZE) -> Crop:
    """Crop ``crop_size`` voxels of the image and the mask centred on ``box``, zero-padded outside the image.

    Paper step: a fixed 79 x 79 x 40 crop around the tumour (at 1 mm).

    **Centring.** On each axis the crop starts at ``start = box.start + floor((box.size - crop) / 2)``:
    when box and crop sizes have the same parity the two centres coincide; otherwise the crop's
    centre lies half a voxel below the box's (the extra voxel of margin is on the low-index side).
    E.g. a box of 10 voxels from index 20 and a crop of 13 start at 18 (margins 2 below, 1 above);
    a box of 90 from index 0 and a crop of 79 start at 5 (the box is cut, 5 voxels below, 6 above).

    Where the crop leaves the image it is padded with 0 (image and mask, SimpleITK's
    ``ConstantPadImageFilter``, then ``RegionOfInterestImageFilter``), and :attr:`Crop.inside` is
    ``False``; a tumour larger than the crop is cut, and :attr:`Crop.fraction_inside` (mask voxels
    in the crop / all mask voxels) says how much of it was kept.

    Args:
        image: 3-D image (normally resampled, float32).
        mask: 3-D mask on the image's grid (the kept mask of :func:`mask_components`).
        box: :class:`Box` or ``(start, size)`` in voxel indices ``(x, y, z)`` of that grid.
        crop_size: ``(x, y, z)`` voxels, or one number. Defaults to ``(79, 79, 40)``.

    Returns:
        :class:`Crop`.

    Raises:
        ValueError: image and mask differ in size, or ``crop_size`` is not 3 positive integers.
    """
    _check_image(image, "image")
    _check_image(mask, "mask")
    if image.GetSize() != mask.GetSize():
        raise ValueError(f"image size {image.GetSize()} and mask size {mask.GetSize()} differ.")
    crop = _triple(crop_size, "crop_size", kind=int)
    box = Box(tuple(int(v) for v in box[0]), tuple(int(v) for v in box[1]))  # type: ignore[arg-type]
    n = image.GetSize()
    start = tuple(b + (s - c) // 2 for b, s, c in zip(box.start, box.size, crop))
    pad_lower = tuple(max(0, -a) for a in start)
    pad_upper = tuple(max(0, a + c - m) for a, c, m in zip(start, crop, n))
    out_image = _crop_one(image, start, crop, pad_lower, pad_upper)
    out_mask = _crop_one(mask, start, crop, pad_lower, pad_upper)
    inside = np.zeros(crop[::-1], dtype=bool)
    lo = [min(c, p) for c, p in zip(crop, pad_lower)]
    hi = [max(lo_a, c - p) for c, p, lo_a in zip(crop, pad_upper, lo)]
    inside[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = True
    mask_voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    mask_inside = int(np.count_nonzero(sitk.GetArrayViewFromImage(out_mask)))
    return Crop(
        image=out_image, mask=out_mask, inside=inside, start=start, size=crop,  # type: ignore[arg-type]
        pad_lower=pad_lower, pad_upper=pad_upper, padding_voxels=int(inside.size - np.count_nonzero(inside)),
        mask_voxels=mask_voxels, mask_voxels_inside=mask_inside,
        fraction_inside=mask_inside / mask_voxels if mask_voxels else float("nan"),
    )


def mean_box_size(boxes: Iterable[Box | Sequence]) -> tuple[int, int, int]:
    """The mean box size ``(x, y, z)`` of a set of boxes, rounded up: the paper's crop size.

    Paper: the crop (79 x 79 x 40) is the mean tumour bounding box of the training split. Pass the
    boxes of the training cases only (:func:`bounding_box` on their kept resampled masks), so that
    validation and test cases do not shape the input. The mean is computed exactly (integer sums)
    and rounded up, so the mean box fits.

    Args:
        boxes: :class:`Box` or ``(start, size)`` pairs.

    Returns:
        ``(x, y, z)`` voxels.

    Raises:
        ValueError: no box.
    """
    sizes = [tuple(int(v) for v in b[1]) for b in boxes]
    if not sizes:
        raise ValueError("mean_box_size needs at least one box (the training cases' boxes), got none.")
    n = len(sizes)
    return tuple(-(-sum(s[a] for s in sizes) // n) for a in range(3))  # type: ignore[return-value]


# --- 5. z-score -----------------------------------------------------------------------------------


def zscore_inside(crop: sitk.Image | np.ndarray, inside: sitk.Image | np.ndarray, *, case: Any = None,
                  return_stats: bool = False):
    """Z-score a crop over its voxels inside the image; the padding is 0 afterwards.

    Paper step: per-case z-score normalisation. The mean and the (population, ``ddof=0``) standard
    deviation are taken over the voxels where ``inside`` is true only, so the zero padding of
    :func:`crop_around` does not pull them; then ``(x - mean) / sd`` inside and exactly 0 outside.
    Computed in float64, returned as float32. (MONAI's ``NormalizeIntensity`` can restrict the
    statistics to non-zero voxels only, which would also drop real zero-valued voxels inside the image.)

    Args:
        crop: the crop, a SimpleITK image or a numpy array.
        inside: same shape (for an image: its array ``(z, y, x)``, e.g. :attr:`Crop.inside`, or a
            SimpleITK image on the crop's grid); non-zero = inside.
        case: case id, named in errors.
        return_stats: also return ``(mean, sd)``.

    Returns:
        The z-scored crop, of the type of ``crop`` (an image keeps its geometry); with
        ``return_stats``, ``(crop, mean, sd)``.

    Raises:
        PreprocessError: no voxel inside, or the crop is constant inside (sd 0).
        ValueError: shapes differ.
    """
    arr = sitk.GetArrayViewFromImage(crop) if isinstance(crop, sitk.Image) else np.asarray(crop)
    ins = sitk.GetArrayViewFromImage(inside) if isinstance(inside, sitk.Image) else np.asarray(inside)
    ins = ins.astype(bool, copy=False)
    if arr.shape != ins.shape:
        raise ValueError(f"crop shape {arr.shape} and inside shape {ins.shape} differ.")
    values = arr[ins].astype(np.float64)
    if values.size == 0:
        raise _case_error(case, "no voxel of the crop lies inside the image.")
    mean, sd = float(values.mean()), float(values.std())
    if not sd > 0:
        raise _case_error(case, _MSG_CONSTANT.format(value=mean, n=values.size))
    out = np.zeros(arr.shape, dtype=np.float32)
    out[ins] = ((values - mean) / sd).astype(np.float32)
    if isinstance(crop, sitk.Image):
        image = sitk.GetImageFromArray(out)
        image.CopyInformation(crop)
        out = image
    return (out, mean, sd) if return_stats else out


# --- 6. pad ---------------------------------------------------------------------------------------


def pad_to_divisible(array, spatial_size: Sequence[int] = DEFAULT_SPATIAL_SIZE, *, divisor: int | None = 16,
                     method: str = "symmetric"):
    """Zero-pad a channel-first crop ``(C, X, Y, Z)`` to ``spatial_size``; never resize or crop.

    Why: MONAI's ViT patch embedding (a convolution with stride = patch size) silently ignores the
    voxels that do not fill a whole patch: a 79 x 79 x 40 input with 16-voxel patches is seen as
    64 x 64 x 32. Padded to 80 x 80 x 48 (multiples of 16) every voxel reaches the network.
    ``divisor`` checks that ``spatial_size`` is a multiple of it on every axis (``None``: no check).

    Uses MONAI's ``SpatialPad`` (constant 0); ``method="symmetric"`` puts ``floor(d / 2)`` voxels
    before and the rest after (79 -> 80: 0 before, 1 after; 40 -> 48: 4 and 4), ``"end"`` all after.

    Args:
        array: channel-first ``(C, X, Y, Z)`` numpy array, tensor or ``MetaTensor``.
        spatial_size: output ``(X, Y, Z)``. Defaults to ``(80, 80, 48)``.
        divisor: required divisor of ``spatial_size`` (the ViT patch size). Defaults to 16.
        method: ``"symmetric"`` (default) or ``"end"``.

    Returns:
        The padded array, of the input's type (a ``MetaTensor``'s affine follows the padding).

    Raises:
        ValueError: ``spatial_size`` not divisible by ``divisor``, or smaller than the input.
    """
    from monai.transforms import SpatialPad
    from monai.utils import convert_to_dst_type

    size = _triple(spatial_size, "spatial_size", kind=int)
    if divisor is not None and any(s % int(divisor) for s in size):
        raise ValueError(_MSG_NOT_DIVISIBLE.format(size=size, divisor=divisor))
    shape = tuple(int(s) for s in array.shape[1:])
    if len(shape) != 3:
        raise ValueError(f"pad_to_divisible takes a channel-first (C, X, Y, Z) array, got shape {tuple(array.shape)}.")
    if any(a > s for a, s in zip(shape, size)):
        raise ValueError(_MSG_PAD_SMALLER.format(shape=shape, size=size))
    out = SpatialPad(size, method=method, mode="constant")(array)
    if isinstance(array, np.ndarray):
        return convert_to_dst_type(out, array)[0]
    return out


# --- MONAI affine ---------------------------------------------------------------------------------


def ras_affine(image: sitk.Image) -> np.ndarray:
    """The 4 x 4 RAS affine of a SimpleITK image for its array transposed to ``(X, Y, Z)``.

    ``p_RAS = diag(-1, -1, 1) (origin + D diag(spacing) (i, j, k))``: SimpleITK's LPS index-to-point
    map with x and y negated, the affine nibabel and MONAI give the NIfTI file SimpleITK writes.
    """
    d = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = d * np.array(image.GetSpacing(), dtype=np.float64)[None, :]
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
