"""Rectal MRI (T2w) preprocessing: read a DICOM series or NIfTI volume and its tumour mask, then resample,
crop and normalise (the geometry steps, MONAI dictionary transforms and cache live beside :mod:`.io`)."""

from .io import (
    NIFTI_SUFFIXES,
    SLICE_TOL_MM,
    PreprocessError,
    list_dicom_series,
    read_dicom_series,
    read_image,
    read_mask,
)
from .geometry import (
    BOX_MODES,
    CONNECTIVITIES,
    DEFAULT_CROP_SIZE,
    DEFAULT_SPACING,
    DEFAULT_SPATIAL_SIZE,
    MIN_COMPONENT_VOXELS,
    Box,
    ComponentInfo,
    Crop,
    bounding_box,
    crop_around,
    mask_components,
    mean_box_size,
    pad_to_divisible,
    ras_affine,
    resample_isotropic,
    zscore_inside,
)
from .cache import (
    CSV_COLUMNS,
    CSV_NAME,
    CaseCrop,
    PreprocessSettings,
    crop_datalist,
    preprocess_cohort,
    preprocess_images,
    read_preprocessing_csv,
    resolved_settings,
)

# the MONAI transforms import torch: loaded on first use (fairmonai.data.preprocess.<name>)
_TRANSFORMS = (
    "LoadRectalCased",
    "ResampleIsotropicd",
    "MaskComponentsd",
    "CropAroundMaskd",
    "ZScoreInsided",
    "SITKToMetaTensord",
    "PadToDivisibled",
    "sitk_to_metatensor",
)

__all__ = [
    "NIFTI_SUFFIXES",
    "SLICE_TOL_MM",
    "PreprocessError",
    "list_dicom_series",
    "read_dicom_series",
    "read_image",
    "read_mask",
    "BOX_MODES",
    "CONNECTIVITIES",
    "DEFAULT_CROP_SIZE",
    "DEFAULT_SPACING",
    "DEFAULT_SPATIAL_SIZE",
    "MIN_COMPONENT_VOXELS",
    "Box",
    "ComponentInfo",
    "Crop",
    "bounding_box",
    "crop_around",
    "mask_components",
    "mean_box_size",
    "pad_to_divisible",
    "ras_affine",
    "resample_isotropic",
    "zscore_inside",
    "CSV_COLUMNS",
    "CSV_NAME",
    "CaseCrop",
    "PreprocessSettings",
    "crop_datalist",
    "preprocess_cohort",
    "preprocess_images",
    "read_preprocessing_csv",
    "resolved_settings",
    *_TRANSFORMS,
]


def __getattr__(name: str):
    if name in _TRANSFORMS:
        from . import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
