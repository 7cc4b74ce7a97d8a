"""MONAI dictionary transforms for the FaMI rectal-MRI preprocessing (:mod:`.geometry`, one step each).

A bundle lists the steps as MAMA-MIA's ``train.json`` lists its transforms::

    {"_target_": "fairmonai.data.preprocess.transforms.LoadRectalCased"},
    {"_target_": "fairmonai.data.preprocess.transforms.ResampleIsotropicd", "spacing": [1, 1, 1]},
    {"_target_": "fairmonai.data.preprocess.transforms.MaskComponentsd", "min_voxels": 20},
    {"_target_": "fairmonai.data.preprocess.transforms.CropAroundMaskd", "crop_size": [79, 79, 40]},
    {"_target_": "fairmonai.data.preprocess.transforms.ZScoreInsided"},
    {"_target_": "fairmonai.data.preprocess.transforms.SITKToMetaTensord"},
    {"_target_": "fairmonai.data.preprocess.transforms.PadToDivisibled", "spatial_size": [80, 80, 48]}

Training reads the crops written once by :func:`~fairmonai.data.preprocess.cache.preprocess_cohort`
instead (``LoadImaged``, ``EnsureChannelFirstd``, :class:`PadToDivisibled`): the same arrays and
affines (tested), without redoing the resampling every epoch. The chain above serves inference on
new cases.

**Data between the steps.** Until :class:`SITKToMetaTensord`, ``d["image"]`` and ``d["mask"]``
hold ``SimpleITK.Image`` objects (the physical geometry travels with them); after
:class:`CropAroundMaskd`, ``d["inside"]`` is a uint8 image on the crop's grid (1 = inside the source
image). :class:`SITKToMetaTensord` turns each into a channel-first ``MetaTensor`` ``(1, X, Y, Z)``:
SimpleITK's array ``(z, y, x)`` transposed, with the RAS affine of :func:`.geometry.ras_affine`
(LPS -> RAS: x and y negated), so a voxel sits at the same physical place as in SimpleITK and as
in MONAI's ``LoadImage`` of the NIfTI file SimpleITK writes. Axes stay in acquisition order
(axis 2 = slice axis, the crop's 40); add ``Orientationd`` afterwards only if every case shares
one acquisition plane.

**What each step did** goes to ``d["preprocess"]`` (``info_key``): a flat dict of numbers and
strings (lists as JSON text), so it collates into a batch and is the row format of
``preprocessing.csv``; see :data:`.cache.INFO_FIELDS`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from . import geometry as G
from .io import read_image, read_mask
from .cache import _json, components_info, crop_info, image_info, series_uid_of

__all__ = [
    "LoadRectalCased",
    "ResampleIsotropicd",
    "MaskComponentsd",
    "CropAroundMaskd",
    "ZScoreInsided",
    "SITKToMetaTensord",
    "PadToDivisibled",
    "sitk_to_metatensor",
]

def _case(d: Mapping, key: Hashable) -> Any:
    value = d.get(key)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.reshape(-1)[0].item()
    return value


class _Step(MapTransform):
    """Shared plumbing: the image and mask keys, the case id, the info dict."""

    def __init__(self, keys, *, case_id_key: Hashable = "case_id", info_key: Hashable = "preprocess",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.case_id_key = case_id_key
        self.info_key = info_key

    def _start(self, data: Mapping) -> tuple[dict, dict, Any]:
        d = dict(data)
        info = dict(d.get(self.info_key) or {})
        d[self.info_key] = info
        return d, info, _case(d, self.case_id_key)


class LoadRectalCased(_Step):
    """Read a case's T2w image (DICOM series folder or NIfTI) and tumour mask as SimpleITK images.

    Uses :func:`fairmonai.data.preprocess.io.read_image` and ``read_mask`` (the mask as uint8 0/1).
    Records ``series_uid`` (``d[series_uid_key]``, else the only series of a DICOM folder, else empty),
    the source paths and the source geometry.

    Args:
        image_key, mask_key: keys of the image and mask paths. Default ``"image"``, ``"mask"``.
        series_uid_key: key of an optional series instance UID choosing one series of a DICOM folder.
        mask_labels: labels of the mask that are tumour (``None``: every non-zero label).
        resample_mask_to_image: let ``read_mask`` resample a mask on another grid onto the image's.
        case_id_key, info_key: the case id (named in errors) and the info dict.
    """

    def __init__(self, image_key: Hashable = "image", mask_key: Hashable = "mask", *,
                 series_uid_key: Hashable = "series_uid", mask_labels: Sequence[int] | None = None,
                 resample_mask_to_image: bool = False, case_id_key: Hashable = "case_id",
                 info_key: Hashable = "preprocess") -> None:
        super().__init__([image_key, mask_key], case_id_key=case_id_key, info_key=info_key)
        self.image_key, self.mask_key, self.series_uid_key = image_key, mask_key, series_uid_key
        self.mask_labels = mask_labels
        self.resample_mask_to_image = bool(resample_mask_to_image)

    def __call__(self, data: Mapping) -> dict:
        d, info, case = self._start(data)
        uid = d.get(self.series_uid_key) or None
        image_path, mask_path = d[self.image_key], d[self.mask_key]
        image = read_image(image_path, series_uid=uid, case=case)
        mask = read_mask(mask_path, image, case=case, mask_labels=self.mask_labels,
                         resample_to_image=self.resample_mask_to_image)
        info.update({"series_uid": series_uid_of(image_path, uid, case=case), "image_source": str(image_path),
                     "mask_source": str(mask_path)})
        info.update(image_info(image))
        d[self.image_key], d[self.mask_key] = image, mask
        return d


class ResampleIsotropicd(_Step):
    """:func:`.geometry.resample_isotropic` on ``d[image_key]`` (linear) and ``d[mask_key]`` (nearest).

    Args:
        image_key, mask_key: keys of the SimpleITK image and mask. Default ``"image"``, ``"mask"``.
        spacing: mm, one number or ``(x, y, z)``. Defaults to ``(1, 1, 1)``.
        case_id_key, info_key: as :class:`LoadRectalCased`.
    """

    def __init__(self, image_key: Hashable = "image", mask_key: Hashable = "mask",
                 spacing: float | Sequence[float] = G.DEFAULT_SPACING, *, case_id_key: Hashable = "case_id",
                 info_key: Hashable = "preprocess") -> None:
        super().__init__([image_key, mask_key], case_id_key=case_id_key, info_key=info_key)
        self.image_key, self.mask_key, self.spacing = image_key, mask_key, spacing

    def __call__(self, data: Mapping) -> dict:
        d, info, _ = self._start(data)
        if "spacing_in" not in info:
            info.update(image_info(d[self.image_key]))
        image, mask = G.resample_isotropic(d[self.image_key], d[self.mask_key], self.spacing)
        info.update({"spacing": _json(image.GetSpacing()), "size_resampled": _json(image.GetSize())})
        d[self.image_key], d[self.mask_key] = image, mask
        return d


class MaskComponentsd(_Step):
    """:func:`.geometry.mask_components` on ``d[mask_key]``: components under ``min_voxels`` dropped.

    Args:
        mask_key: key of the SimpleITK mask (resampled). Default ``"mask"``.
        min_voxels, connectivity, per_slice: as :func:`.geometry.mask_components`.
        case_id_key, info_key: as :class:`LoadRectalCased`.

    Raises:
        PreprocessError: empty mask, or no component kept (naming the case).
    """

    def __init__(self, mask_key: Hashable = "mask", min_voxels: int = G.MIN_COMPONENT_VOXELS,
                 connectivity: str = "face", per_slice: bool = False, *, case_id_key: Hashable = "case_id",
                 info_key: Hashable = "preprocess") -> None:
        super().__init__([mask_key], case_id_key=case_id_key, info_key=info_key)
        G._check_option(connectivity, G.CONNECTIVITIES, "connectivity")
        self.mask_key, self.min_voxels = mask_key, min_voxels
        self.connectivity, self.per_slice = connectivity, per_slice

    def __call__(self, data: Mapping) -> dict:
        d, info, case = self._start(data)
        kept, ci = G.mask_components(d[self.mask_key], min_voxels=self.min_voxels, connectivity=self.connectivity,
                                     per_slice=self.per_slice, case=case)
        info.update(components_info(ci))
        d[self.mask_key] = kept
        return d


def inside_image(crop: G.Crop) -> sitk.Image:
    """:attr:`.geometry.Crop.inside` as a uint8 image on the crop's grid."""
    inside = sitk.GetImageFromArray(crop.inside.astype(np.uint8))
    inside.CopyInformation(crop.image)
    return inside


class CropAroundMaskd(_Step):
    """:func:`.geometry.bounding_box` then :func:`.geometry.crop_around`: a fixed-size crop around the tumour.

    Replaces ``d[image_key]`` and ``d[mask_key]`` by their crops and sets ``d[inside_key]``
    (uint8 image, 1 inside the source image).

    Args:
        image_key, mask_key: keys of the SimpleITK image and (kept) mask. Default ``"image"``, ``"mask"``.
        crop_size: ``(x, y, z)`` voxels. Defaults to ``(79, 79, 40)``. (``"auto"`` is resolved by
            :func:`~fairmonai.data.preprocess.cache.preprocess_cohort` from the training split; here
            it must be numbers.)
        box_mode: ``"union"`` (default) or ``"largest"``.
        connectivity: for ``"largest"``. Defaults to ``"face"``.
        inside_key: key of the inside image. Defaults to ``"inside"``.
        case_id_key, info_key: as :class:`LoadRectalCased`.
    """

    def __init__(self, image_key: Hashable = "image", mask_key: Hashable = "mask",
                 crop_size: Sequence[int] = G.DEFAULT_CROP_SIZE, box_mode: str = "union", *,
                 connectivity: str = "face", inside_key: Hashable = "inside", case_id_key: Hashable = "case_id",
                 info_key: Hashable = "preprocess") -> None:
        super().__init__([image_key, mask_key], case_id_key=case_id_key, info_key=info_key)
        G._check_option(box_mode, G.BOX_MODES, "box_mode")
        G._check_option(connectivity, G.CONNECTIVITIES, "connectivity")
        self.crop_size = G._triple(crop_size, "crop_size", kind=int)
        self.image_key, self.mask_key, self.inside_key = image_key, mask_key, inside_key
        self.box_mode, self.connectivity = box_mode, connectivity

    def __call__(self, data: Mapping) -> dict:
        d, info, case = self._start(data)
        box = G.bounding_box(d[self.mask_key], self.box_mode, connectivity=self.connectivity, case=case)
        crop = G.crop_around(d[self.image_key], d[self.mask_key], box, self.crop_size)
        info.update(crop_info(box, self.box_mode, crop))
        d[self.image_key], d[self.mask_key], d[self.inside_key] = crop.image, crop.mask, inside_image(crop)
        return d


class ZScoreInsided(_Step):
    """:func:`.geometry.zscore_inside`: z-score ``d[image_key]`` over ``d[inside_key]``; padding 0.

    Works on SimpleITK images (before :class:`SITKToMetaTensord`) and on arrays or tensors of one
    shape (after it); the output keeps the input's type and metadata.

    Args:
        image_key: default ``"image"``; inside_key: default ``"inside"``.
        case_id_key, info_key: as :class:`LoadRectalCased`.
    """

    def __init__(self, image_key: Hashable = "image", inside_key: Hashable = "inside", *,
                 case_id_key: Hashable = "case_id", info_key: Hashable = "preprocess") -> None:
        super().__init__([image_key, inside_key], case_id_key=case_id_key, info_key=info_key)
        self.image_key, self.inside_key = image_key, inside_key

    def __call__(self, data: Mapping) -> dict:
        d, info, case = self._start(data)
        image, inside = d[self.image_key], d[self.inside_key]
        if isinstance(image, torch.Tensor):
            ins = inside.detach().cpu().numpy() if isinstance(inside, torch.Tensor) else inside
            out, mean, sd = G.zscore_inside(image.detach().cpu().numpy(), ins, case=case, return_stats=True)
            out = convert_to_dst_type(out, image, dtype=torch.float32)[0]
        else:
            out, mean, sd = G.zscore_inside(image, inside, case=case, return_stats=True)
        info.update({"zscore_mean": mean, "zscore_sd": sd})
        d[self.image_key] = out
        return d


def sitk_to_metatensor(image: sitk.Image) -> MetaTensor:
    """A SimpleITK image as a channel-first ``MetaTensor`` ``(1, X, Y, Z)`` with its RAS affine.

    The array is ``GetArrayFromImage`` transposed from ``(z, y, x)`` to ``(x, y, z)``; the affine is
    :func:`.geometry.ras_affine`; ``space`` is RAS. Voxel ``(i, j, k)`` of the output is SimpleITK's
    index ``(i, j, k)``, at RAS point ``affine @ (i, j, k, 1)`` = SimpleITK's LPS point with x, y negated.
    """
    arr = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0)[None])
    affine = torch.as_tensor(G.ras_affine(image), dtype=torch.float64)
    meta = {"original_affine": affine.clone(), "space": "RAS",
            "spatial_shape": np.array(image.GetSize()), "original_channel_dim": "no_channel"}
    return MetaTensor(torch.from_numpy(arr), affine=affine, meta=meta)


class SITKToMetaTensord(MapTransform):
    """Convert SimpleITK images to channel-first ``MetaTensor`` ``(1, X, Y, Z)`` (see :func:`sitk_to_metatensor`).

    Args:
        keys: keys to convert. Defaults to ``("image", "mask", "inside")``.
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys=("image", "mask", "inside"), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = sitk_to_metatensor(d[key])
        return d


class PadToDivisibled(MapTransform):
    """:func:`.geometry.pad_to_divisible` on each key: zero-pad ``(C, X, Y, Z)`` to ``spatial_size``.

    Args:
        keys: keys to pad. Defaults to ``("image", "mask", "inside")``.
        spatial_size: defaults to ``(80, 80, 48)``; divisor: checked divisor (default 16, the ViT patch);
        method: ``"symmetric"`` (default) or ``"end"``.
        allow_missing_keys: skip absent keys (defaults to ``True``: ``inside`` is absent on cached crops).
    """

    def __init__(self, keys=("image", "mask", "inside"), spatial_size: Sequence[int] = G.DEFAULT_SPATIAL_SIZE,
                 divisor: int | None = 16, method: str = "symmetric", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_size = G._triple(spatial_size, "spatial_size", kind=int)
        if divisor is not None and any(s % int(divisor) for s in self.spatial_size):
            raise ValueError(G._MSG_NOT_DIVISIBLE.format(size=self.spatial_size, divisor=divisor))
        self.divisor, self.method = divisor, method

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = G.pad_to_divisible(d[key], self.spatial_size, divisor=self.divisor, method=self.method)
        return d
