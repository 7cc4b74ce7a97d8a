"""Fairness losses: the FaMI mutual-information gradient penalty, the MINE and MIGE baselines, and the
combined task loss ``loss + mu * penalty``.

The three penalties share one interface, ``forward(v, *, sensitive) -> scalar`` with a
``last_diagnostic`` dict, so a bundle swaps them through ``_target_``; ``mu`` lives in
:class:`FairnessRegularizedLoss`. The score estimators behind FaMI and MIGE are in
``_score_estimation`` (polynomial least squares, spectral Stein gradient estimator).
"""

from ._score_estimation import ScoreFit, polynomial_score, score_function_difference, spectral_stein_score
from .divergence_weighted import DivergenceWeightedLoss, per_sample_loss
from .fair_loss import FairnessRegularizedLoss
from .fairness_losses import (
    BatchFairnessLoss,
    DemographicParityL2Loss,
    DemographicParityMILoss,
    DPL2Loss,
    DPMILoss,
    EOL2Loss,
    EOMILoss,
    EqualizedOddsL2Loss,
    EqualizedOddsMILoss,
    FairIoULoss,
    FairnessLossWithCE,
    IoUParityLoss,
    effective_number_weights,
)
from .fami import FaMIPenalty
from .kl_divergence import GaussianKLLoss, gaussian_kl
from .perceptual import VGG19PerceptualLoss, load_vgg19_features
from .vae import VAELoss
from .mige import MIGEPenalty
from .mine import MINEPenalty

__all__ = [
    # combined loss
    "FairnessRegularizedLoss",
    "DivergenceWeightedLoss",
    "per_sample_loss",
    # penalties
    "FaMIPenalty",
    "MIGEPenalty",
    "MINEPenalty",
    # Hänel et al.'s batch fairness losses (functional forms in fairmonai.losses.functional)
    "FairnessLossWithCE",
    "BatchFairnessLoss",
    "DemographicParityL2Loss",
    "DemographicParityMILoss",
    "EqualizedOddsL2Loss",
    "EqualizedOddsMILoss",
    "IoUParityLoss",
    "DPL2Loss",
    "DPMILoss",
    "EOL2Loss",
    "EOMILoss",
    "FairIoULoss",
    "effective_number_weights",
    # the VAE loss of the Fitzpatrick17k VAE bundle
    "VAELoss",
    "GaussianKLLoss",
    "gaussian_kl",
    "VGG19PerceptualLoss",
    "load_vgg19_features",
    # score estimation
    "ScoreFit",
    "polynomial_score",
    "spectral_stein_score",
    "score_function_difference",
]
