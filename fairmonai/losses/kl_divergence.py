"""KL divergence of a diagonal Gaussian posterior from the standard normal prior (the VAE's KL term)."""

from __future__ import annotations

import torch
from monai.utils import LossReduction, look_up_option
from torch.nn.modules.loss import _Loss

__all__ = ["gaussian_kl", "GaussianKLLoss"]


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Elementwise :math:`KL(\\mathcal{N}(\\mu, \\sigma^2) \\| \\mathcal{N}(0, 1))`.

    .. math:: -\\tfrac12 \\left(1 + \\log\\sigma^2 - \\mu^2 - \\sigma^2\\right)

    Args:
        mu, log_var: posterior mean and log-variance, any equal shapes (``(B, L, h, w)`` for the VAE).

    Returns:
        a tensor of their shape, each element >= 0.

    Raises:
        ValueError: the shapes differ, naming both.
    """
    if mu.shape != log_var.shape:
        raise ValueError(f"mu and log_var must have the same shape, got {tuple(mu.shape)} and {tuple(log_var.shape)}")
    return -0.5 * (1.0 + log_var - mu.pow(2) - log_var.exp())


class GaussianKLLoss(_Loss):
    """The VAE's KL term from ``(mu, log_var)`` of shape ``(B, *latent)``.

    Args:
        reduction: over the whole tensor (``"mean"``, as the reference ``kl_loss``: the mean over
            latent elements and batch; ``"sum"``), or ``"none"`` (per-image sums over the latent
            elements, shape ``(B,)``: the term of the ELBO). Default ``"mean"``.

    Raises:
        ValueError: an unknown reduction, listing the options.

    Example:
        >>> GaussianKLLoss()(torch.zeros(2, 4), torch.zeros(2, 4))
        tensor(0.)
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=look_up_option(reduction, LossReduction).value)

    def forward(self, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        kl = gaussian_kl(mu, log_var)
        if self.reduction == LossReduction.MEAN.value:
            return kl.mean()
        if self.reduction == LossReduction.SUM.value:
            return kl.sum()
        return kl.flatten(1).sum(1)
