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

__all__ = [
    "NIFTI_SUFFIXES",
    "SLICE_TOL_MM",
    "PreprocessError",
    "list_dicom_series",
    "read_dicom_series",
    "read_image",
    "read_mask",
]
