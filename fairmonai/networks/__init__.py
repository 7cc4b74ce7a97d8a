"""Networks used by the fairmonai bundles (thin wrappers around MONAI's)."""

from .efficientnet import load_efficientnet_weights
from .fairvit import FairViTLite, FairViTLoss, FairViTOutput
from .residual_vae import ResBlock, ResDown, ResidualVAE, ResUp, VAEDecoder, VAEEncoder, VAEPosteriorOutput
from .fin import FairIdentityNormalization, FINClassifier, FINPrepareBatch
from .vit_classifier import ViTClassifier

__all__ = [
    "FairIdentityNormalization",
    "FairViTLite",
    "FairViTLoss",
    "FairViTOutput",
    "FINClassifier",
    "FINPrepareBatch",
    "ViTClassifier",
    "ResidualVAE",
    "VAEPosteriorOutput",
    "VAEEncoder",
    "VAEDecoder",
    "ResBlock",
    "ResDown",
    "ResUp",
    "load_efficientnet_weights",
]
