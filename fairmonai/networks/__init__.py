"""Networks used by the fairmonai bundles (thin wrappers around MONAI's)."""

from .fin import FairIdentityNormalization, FINClassifier, FINPrepareBatch
from .vit_classifier import ViTClassifier

__all__ = ["FairIdentityNormalization", "FINClassifier", "FINPrepareBatch", "ViTClassifier"]
