"""MONAI dictionary transforms of fairmonai.

:class:`MaskOutsideBoxd` zeroes a segmentation outside a per-case bounding box read from the same
data dict (the manifest's ``bbox_*`` columns), as the MAMA-MIA challenge masks predictions outside
the breast bounding box before scoring.

:class:`CenterSquareCropd` crops each image to its central square (side: its shortest spatial side),
the first step of the ISIC bundle's photo preprocessing (MONAI's crops take one fixed size for
every image).

:class:`LoadCaseImaged` is MONAI's ``LoadImaged`` whose read errors name the case and the file.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.config import KeysCollection
from monai.transforms import CenterSpatialCrop, LoadImaged, MapTransform

from .data.image_check import ImageReadError
from .data.manifest import is_missing

__all__ = [
    "BBOX_KEYS",
    "CenterSquareCropd",
    "ChannelCountd",
    "LoadCaseImaged",
    "MaskOutsideBoxd",
]

#: The manifest's bounding-box columns, in the order ``MaskOutsideBoxd`` reads them.
BBOX_KEYS = ("bbox_x_min", "bbox_x_max", "bbox_y_min", "bbox_y_max", "bbox_z_min", "bbox_z_max")

# Error messages (tests compare the text).
_MSG_BOX_KEYS = "box_keys must name 6 keys (x_min, x_max, y_min, y_max, z_min, z_max), got {value!r}."
_MSG_BOX_AXES = "box_axes must be a permutation of (0, 1, 2), got {value!r}."
_MSG_MISSING = (
    "MaskOutsideBoxd: case '{case}' has no value for '{column}' (got {value!r}); pass allow_missing_box=True "
    "to leave such cases unmasked."
)
_MSG_NOT_NUMBER = "MaskOutsideBoxd: case '{case}': '{column}' must be a number, got {value!r}."
_MSG_NOT_INTEGRAL = "MaskOutsideBoxd: case '{case}': '{column}' must be an integer voxel index, got {value!r}."
_MSG_SHAPE = "MaskOutsideBoxd: '{key}' of case '{case}' must be channel-first (C, X, Y, Z), got shape {shape}."
_MSG_EMPTY_BOX = (
    "MaskOutsideBoxd: the box of case '{case}' {box} leaves no voxel of '{key}' with shape {shape} "
    "(min inclusive, max exclusive, clipped to the array: {clipped})."
)
_MSG_MISSING_WARNING = "MaskOutsideBoxd: case '%s' has no bounding box (%s missing); its data are left unmasked."


def _case_name(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.reshape(-1)[0].item()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return True
    return isinstance(value, str) and is_missing(value)


def _box_value(value: Any, column: str, case: Any) -> int | None:
    """One box bound as an ``int``; ``None`` when missing."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        n = value.size if isinstance(value, np.ndarray) else value.numel()
        if n != 1:
            raise ValueError(_MSG_NOT_NUMBER.format(case=case, column=column, value=value))
        value = value.reshape(-1)[0].item()
    elif isinstance(value, np.generic):
        value = value.item()
    if _is_missing(value):
        return None
    number: Any = value
    if isinstance(value, bool):
        raise ValueError(_MSG_NOT_NUMBER.format(case=case, column=column, value=value))
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(_MSG_NOT_NUMBER.format(case=case, column=column, value=value)) from None
    if isinstance(number, int):
        return number
    if not isinstance(number, float):
        raise ValueError(_MSG_NOT_NUMBER.format(case=case, column=column, value=value))
    if not number.is_integer():  # also NaN in a string ("nan" is missing above) and infinities
        raise ValueError(_MSG_NOT_INTEGRAL.format(case=case, column=column, value=value))
    return int(number)


class MaskOutsideBoxd(MapTransform):
    """Zero every voxel of ``d[key]`` outside the case's bounding box, read from the same dict.

    The box is six values of the data dict (``box_keys``: ``x_min, x_max, y_min, y_max, z_min,
    z_max``), **min inclusive, max exclusive**: the voxels kept are
    ``d[key][:, x_min:x_max, y_min:y_max, z_min:z_max]``, and every other voxel of every channel is
    set to 0. The data are channel-first ``(C, X, Y, Z)``.

    **Axis convention.** With the default ``box_axes=(0, 1, 2)``, ``x``, ``y``, ``z`` are the spatial
    axes 0, 1, 2 of the array after the channel, i.e. the array order of MONAI's ``LoadImage`` (and
    nibabel's voxel order ``i, j, k``, as stored in the NIfTI file; no reorientation). The manifest's
    ``bbox_*`` columns are read in this MONAI ``LoadImage`` array order, the order in which the
    synthetic MAMA-MIA cohort (:mod:`fairmonai.data.synth`) writes them and the MAMA-MIA converter
    (:mod:`fairmonai.data.convert.mama_mia`) converts the release's ``breast_coordinates`` to (they
    index SimpleITK's ``GetArrayFromImage`` array, axes reversed; the converter swaps x and z by
    default). ``box_axes`` remains for a table whose boxes follow another order, e.g. ``(2, 1, 0)``
    for SimpleITK order. ``box_axes[i]`` is the
    spatial axis that the ``i``-th pair of ``box_keys`` bounds.

    The box is clipped to the array (a negative min is 0, a max beyond the array its size); a box
    with no voxel left (``min >= max`` after clipping, or outside the array) raises ``ValueError``.
    Each bound may be a number, a string of a number (the manifest's cells), or a 0-d / one-element
    tensor or array (a decollated batch); a float must be integral (``2.0``).

    A missing bound (``None``, NaN, an empty or missing-value string, or the key absent: the real
    MAMA-MIA table has no box for some cases) raises ``ValueError`` naming the case and column, or,
    with ``allow_missing_box=True``, leaves the case unchanged and logs a warning (once per case id).

    The output keeps the input's type: a ``MetaTensor`` keeps its metadata (the data are cloned and
    zeroed in place), a numpy array stays a numpy array; the input is not modified.

    Use it after ``Invertd`` in a segmentation postprocessing, on the prediction on the original image
    grid, to zero predictions outside the breast bounding box as the MAMA-MIA challenge does::

        {"_target_": "Invertd", "keys": "pred", ...},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": true},
        {"_target_": "fairmonai.transforms.MaskOutsideBoxd", "keys": "pred", "allow_missing_box": true}

    Args:
        keys: keys of the channel-first arrays to mask.
        box_keys: the six keys of the box bounds, in the order ``x_min, x_max, y_min, y_max, z_min,
            z_max``. Defaults to the manifest's :data:`BBOX_KEYS`.
        allow_missing_box: leave a case without a (complete) box unchanged, with a warning, instead
            of raising. Defaults to ``False``.
        box_axes: the spatial axis (0, 1, 2 after the channel) bounded by the x, y and z pair.
            Defaults to ``(0, 1, 2)``.
        case_id_key: key of the case id named in errors and warnings. Defaults to ``"case_id"``.
        allow_missing_keys: do not raise when one of ``keys`` is absent.
        name: logger name.

    Raises:
        ValueError: at construction, ``box_keys`` not six keys or ``box_axes`` not a permutation of
            ``(0, 1, 2)``; when called, an array that is not ``(C, X, Y, Z)``, a bound that is not an
            integer, an empty box, or a missing bound without ``allow_missing_box``.

    Example:
        >>> t = MaskOutsideBoxd("pred")
        >>> d = {"pred": torch.ones(1, 4, 4, 4), "bbox_x_min": "1", "bbox_x_max": "3", "bbox_y_min": 0,
        ...      "bbox_y_max": 4, "bbox_z_min": 0.0, "bbox_z_max": 2}
        >>> int(t(d)["pred"].sum())   # 2 * 4 * 2
        16
    """

    def __init__(
        self,
        keys: KeysCollection,
        box_keys: Sequence[Hashable] = BBOX_KEYS,
        allow_missing_box: bool = False,
        *,
        box_axes: Sequence[int] = (0, 1, 2),
        case_id_key: Hashable = "case_id",
        allow_missing_keys: bool = False,
        name: str | None = "fairmonai.transforms.MaskOutsideBoxd",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(box_keys, (str, bytes)) or len(box_keys) != 6:
            raise ValueError(_MSG_BOX_KEYS.format(value=box_keys))
        axes = tuple(int(a) for a in box_axes)
        if sorted(axes) != [0, 1, 2]:
            raise ValueError(_MSG_BOX_AXES.format(value=box_axes))
        self.box_keys = tuple(box_keys)
        self.box_axes = axes
        self.allow_missing_box = bool(allow_missing_box)
        self.case_id_key = case_id_key
        self.logger = logging.getLogger(name)
        self._warned: set = set()

    def _box(self, d: Mapping, case: Any) -> list[int] | None:
        values = []
        for column in self.box_keys:
            raw = d.get(column)
            v = _box_value(raw, str(column), case)
            if v is None:
                if not self.allow_missing_box:
                    raise ValueError(_MSG_MISSING.format(case=case, column=column, value=raw))
                key = case if case is not None else object()  # no id: warn every time
                if key not in self._warned:
                    self._warned.add(key)
                    self.logger.warning(_MSG_MISSING_WARNING, case, column)
                return None
            values.append(v)
        return values

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case = _case_name(d.get(self.case_id_key))
        box = None
        for key in self.key_iterator(d):
            if box is None:
                box = self._box(d, case)
                if box is None:  # missing, allowed: leave the case as it is
                    return d
            d[key] = self._mask(d[key], box, key, case)
        return d

    def _mask(self, x: Any, box: list[int], key: Hashable, case: Any) -> Any:
        shape = tuple(x.shape)
        if len(shape) != 4:
            raise ValueError(_MSG_SHAPE.format(key=key, case=case, shape=shape))
        bounds: list[tuple[int, int]] = [(0, 0)] * 3
        for i, axis in enumerate(self.box_axes):
            size = shape[1 + axis]
            lo, hi = box[2 * i], box[2 * i + 1]
            bounds[axis] = (min(max(lo, 0), size), min(max(hi, 0), size))
        if any(lo >= hi for lo, hi in bounds):
            named = {str(k): v for k, v in zip(self.box_keys, box)}
            clipped = "[" + ", ".join(f"{lo}:{hi}" for lo, hi in bounds) + "]"
            raise ValueError(_MSG_EMPTY_BOX.format(case=case, box=named, key=key, shape=shape, clipped=clipped))
        out = x.clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)
        for axis, (lo, hi) in enumerate(bounds, start=1):
            index: list[Any] = [slice(None)] * 4
            if lo > 0:
                index[axis] = slice(0, lo)
                out[tuple(index)] = 0
            if hi < shape[axis]:
                index[axis] = slice(hi, None)
                out[tuple(index)] = 0
        return out


# ---- LoadCaseImaged

_MSG_READ = "cannot read the image ({error})"
_MSG_STACK = "the files of '{key}' cannot be stacked into one image ({error}); their shapes: {shapes}"
_MSG_LOAD = "loading '{keys}' failed ({error})"
_MSG_NO_KEY = "the record has no '{key}' to load"
_REASON_CHARS = 300


def _reason(e: BaseException, files: Sequence[str] = ()) -> str:
    """``"<Type>: <message>"`` on one line, the (already named) file paths left out, shortened."""
    text = " ".join(str(e).split())
    for f in files:
        text = text.replace(str(f), "<file>")
    if len(text) > _REASON_CHARS:
        text = text[: _REASON_CHARS - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _paths(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


class LoadCaseImaged(LoadImaged):
    """MONAI's ``LoadImaged`` whose read errors name the case id, the key and the file.

    It loads exactly as ``LoadImaged`` (same arguments, same output). When loading fails, it finds
    which file is at fault by loading each file of each key on its own (this runs only after a
    failure) and raises :class:`fairmonai.data.ImageReadError` (a
    :class:`fairmonai.errors.InputError`) from the reader's error, e.g.::

        ImageReadError: case 'mama_00006', image /data/images/mama_00006_post1.nii.gz: cannot read the
        image (EOFError: Compressed file ended before the end-of-stream marker was reached)

    When every file of a multi-file key (the phases of a case) reads on its own, the files could not
    be stacked: the error names the file whose shape differs from the others' and lists the shapes. Use it in place of ``LoadImaged`` in a bundle's
    transforms: ``{"_target_": "fairmonai.transforms.LoadCaseImaged", "keys": "image", ...}``.
    :func:`fairmonai.data.check_images` catches most bad files from their headers before a run;
    this names the case for what only a full read finds (a corrupt compressed stream).

    Args:
        keys: keys of the file paths to load (each a path or a list of paths).
        args: the positional arguments of ``LoadImaged`` after ``keys``.
        case_id_key: key of the case id named in errors. Defaults to ``"case_id"``.
        kwargs: the keyword arguments of ``LoadImaged`` (``reader``, ``image_only``,
            ``ensure_channel_first``, ...).

    Raises:
        ImageReadError: a file cannot be read, or the files of a key cannot be stacked; a key is
            missing (without ``allow_missing_keys``).
    """

    def __init__(self, keys: KeysCollection, *args, case_id_key: Hashable = "case_id", **kwargs) -> None:
        super().__init__(keys, *args, **kwargs)
        self.case_id_key = case_id_key

    def __call__(self, data, reader=None):
        try:
            return super().__call__(data, reader)
        except Exception as e:
            raise self._diagnose(data, reader, e) from e

    def _diagnose(self, data: Mapping, reader, error: Exception) -> ImageReadError:
        case = _case_name(data.get(self.case_id_key)) if isinstance(data, Mapping) else None
        tried: list[str] = []
        for key in self.keys:
            if key not in data:
                if self.allow_missing_keys:
                    continue
                return ImageReadError(_MSG_NO_KEY.format(key=key), case_id=case, key=key)
            files = _paths(data[key])
            tried += files
            shapes = []
            for f in files:
                try:
                    shapes.append(tuple(self._loader(f, reader).shape))
                except Exception as fe:
                    return ImageReadError(_MSG_READ.format(error=_reason(fe, [f])), case_id=case, key=key, file=f)
            if len(files) > 1 and len(set(shapes)) > 1:
                listed = ", ".join(f"{Path(f).name} {s}" for f, s in zip(files, shapes))
                common = Counter(shapes).most_common(1)[0][0]
                odd = next(f for f, s in zip(files, shapes) if s != common)
                return ImageReadError(_MSG_STACK.format(key=key, error=_reason(error, files), shapes=listed),
                                      case_id=case, key=key, file=odd)
        keys = ", ".join(str(k) for k in self.keys)
        return ImageReadError(_MSG_LOAD.format(keys=keys, error=_reason(error, tried)), case_id=case,
                              file=", ".join(tried) or None)


class CenterSquareCropd(MapTransform):
    """Crop each channel-first image ``(C, *spatial)`` to the central square (cube) whose side is its
    shortest spatial side, e.g. a 4000 x 6000 photo to its central 4000 x 4000.

    The square starts at ``n // 2 - side // 2`` along a side of ``n`` (MONAI's
    :class:`~monai.transforms.CenterSpatialCrop`, which does the cropping, so a ``MetaTensor`` keeps
    its affine and the crop is invertible): where ``n - side`` is odd, the odd row is cut from the
    near end when ``n`` is even, from the far end when ``n`` is odd. An image that is already square is returned unchanged.

    Args:
        keys: the keys of the images.
        allow_missing_keys: don't raise for a missing key.

    Raises:
        ValueError: an image with no spatial dimension (fewer than 2 dimensions), naming the key and shape.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            shape = tuple(img.shape)
            if len(shape) < 2:
                raise ValueError(f"CenterSquareCropd: '{key}' must be channel-first (C, *spatial), got shape {shape}")
            side = min(shape[1:])
            d[key] = CenterSpatialCrop([side] * (len(shape) - 1))(img)
        return d


class ChannelCountd(MapTransform):
    """Stop on an image with another number of channels than the network takes, naming the case and file.

    A greyscale photo loads as one channel and an RGBA PNG as four; a 3-channel network would fail on
    them with a convolution's shape error that names no file (or, for a network that adapts, train on
    something else). Place it after ``EnsureChannelFirstd``: the image is channel-first ``(C, *spatial)``.

    Args:
        keys: the keys of the images.
        channels: the number of channels expected (3 for RGB).
        case_id_key: key of the case id named in errors. Defaults to ``"case_id"``.
        allow_missing_keys: don't raise for a missing key.

    Raises:
        ImageReadError: an image with another channel count, e.g. ``case 'ISIC_0001', image
            /data/ISIC_0001.png: 4 channels (shape (4, 64, 64)), expected 3: convert it to RGB``.
    """

    def __init__(self, keys: KeysCollection, channels: int, case_id_key: Hashable = "case_id",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(channels, bool) or int(channels) != channels or channels < 1:
            raise ValueError(f"ChannelCountd: channels must be an integer >= 1, got {channels!r}")
        self.channels = int(channels)
        self.case_id_key = case_id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] != self.channels:
                meta = getattr(img, "meta", {}) or {}
                file = meta.get("filename_or_obj")
                fix = " to RGB" if self.channels == 3 else ""
                raise ImageReadError(f"{img.shape[0]} channels (shape {tuple(img.shape)}), expected {self.channels}: "
                                     f"convert it{fix}", case_id=_case_name(d.get(self.case_id_key)), key=key,
                                     file=str(file) if file else None)
        return d

