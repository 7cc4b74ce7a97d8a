"""Dataset manifests, splits, synthetic cohorts and real-data converters."""

from ..attribute_codes import EXCLUDED_CODE, EXCLUDED_VALUE, is_missing
from .manifest import (
    MISSING_POLICIES,
    AttributeSpec,
    LabelSpec,
    ManifestError,
    ManifestSchema,
    load_manifest,
    load_schema,
    manifests_root,
    read_manifest_table,
)
from .cohort_cache import ensure_cohort
from .image_check import ImageCheckError, ImageReadError, check_images, find_image_problems
from .inference import inference_datalist
from .tone_mixtures import MixtureDraw, MixtureError, draw_mixture, real_fitzpatrick_manifest
from .memory import estimate_cache_bytes, log_cache_estimate
from .splits import (
    assign_splits,
    class_counts,
    load_datalist,
    require_split_parts,
    strata_keys,
    stratified_kfold,
    stratified_train_test_split,
    stratified_train_val_test_split,
)

__all__ = [
    "EXCLUDED_CODE",
    "EXCLUDED_VALUE",
    "MISSING_POLICIES",
    "AttributeSpec",
    "LabelSpec",
    "ManifestError",
    "ManifestSchema",
    "is_missing",
    "load_manifest",
    "load_schema",
    "manifests_root",
    "read_manifest_table",
    "ensure_cohort",
    "FairBatchSampler",
    "ImageCheckError",
    "ImageReadError",
    "check_images",
    "find_image_problems",
    "inference_datalist",
    "MixtureDraw",
    "MixtureError",
    "draw_mixture",
    "real_fitzpatrick_manifest",
    "estimate_cache_bytes",
    "log_cache_estimate",
    "assign_splits",
    "class_counts",
    "load_datalist",
    "require_split_parts",
    "strata_keys",
    "stratified_kfold",
    "stratified_train_test_split",
    "stratified_train_val_test_split",
]


def __getattr__(name: str):
    # FairBatchSampler subclasses torch's Sampler: imported on first use, so that importing
    # fairmonai.data (the reports CLI's input checks) does not import torch
    if name == "FairBatchSampler":
        from .fairbatch import FairBatchSampler

        return FairBatchSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
