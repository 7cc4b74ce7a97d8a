"""Networks used by the fairmonai bundles (thin wrappers around MONAI's)."""

from .vit_classifier import ViTClassifier

__all__ = ["ViTClassifier"]
