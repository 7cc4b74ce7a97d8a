"""The VAE training loss of López-Pérez, Hauberg and Feragen: reconstruction + KL + perceptual.

Two forms (``form``), both averaged over the batch:

* ``"reference"`` (default, LukeDitria/CNN-VAE's ``train_vae.py``, the code the paper ran):
  :math:`\\text{MSE} + \\text{KL} + \\text{P}`, the MSE averaged over pixels and batch, the KL over
  latent elements and batch (:class:`~fairmonai.losses.GaussianKLLoss`), P the mean over VGG19's 16
  conv layers (:class:`~fairmonai.losses.VGG19PerceptualLoss`, ``layer_reduction="mean"``).
* ``"elbo_sum"`` (the paper's Eq. 2): :math:`-\\text{ELBO} + \\sum_l \\frac{1}{2C_lH_lW_l}
  \\|\\Phi_l(\\hat x)-\\Phi_l(x)\\|^2` per image, with :math:`-\\text{ELBO} = \\tfrac12\\|\\hat x - x\\|^2
  + KL` (a Gaussian likelihood of unit variance, its constant dropped) summed over the ``D = CHW``
  pixels and the ``L`` latent elements. Eq. 2 prints "ELBO +", a sign slip: the ELBO is maximised, the
  loss minimised. Per batch, ``elbo_sum = D/2 MSE + L KL + 8 P`` in terms of the reference's three
  means (16 layers: the half-sum is 8 times the mean).

``kl_weight`` and ``perceptual_weight`` scale the two terms (the reference's ``--kl_scale`` and
``--feature_scale``, 1 by default); ``perceptual=None`` drops the VGG term (``--feature_scale 0``).

The input is ``(reconstruction, mu, log_var)`` as :meth:`fairmonai.networks.ResidualVAE.reconstruct`
returns it, the target the image. After each call :attr:`VAELoss.last_terms` holds the batch's
detached terms (``recon``, ``kl``, ``perceptual`` as the form weighs them before the weights, and
``loss``) for :class:`fairmonai.handlers.LossTermsLogger`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import look_up_option
from torch import nn
from torch.nn.modules.loss import _Loss

from .kl_divergence import gaussian_kl

__all__ = ["VAELoss", "VAE_LOSS_FORMS"]

VAE_LOSS_FORMS = ("reference", "elbo_sum")


class VAELoss(_Loss):
    """Reconstruction + KL (+ perceptual) loss of a VAE (module docstring).

    Args:
        perceptual: a perceptual loss module taking ``(reconstruction, image)`` with ``reduction="none"``
            support, e.g. :class:`~fairmonai.losses.VGG19PerceptualLoss`, or ``None`` for none. Its
            ``layer_reduction`` is set to the form's (``"mean"`` or ``"half_sum"``). Default ``None``.
        form: ``"reference"`` or ``"elbo_sum"``. Default ``"reference"``.
        kl_weight: weight of the KL term, >= 0. Default 1.
        perceptual_weight: weight of the perceptual term, >= 0. Default 1.

    Raises:
        ValueError: an unknown form (options listed), a negative weight, an input that is not a
            3-sequence, or image and reconstruction shapes that differ (both named).
        TypeError: ``perceptual`` not a module.

    Example:
        >>> loss = VAELoss()
        >>> x = torch.zeros(2, 3, 8, 8)
        >>> float(loss((x, torch.zeros(2, 4, 2, 2), torch.zeros(2, 4, 2, 2)), x))
        0.0
    """

    def __init__(self, perceptual: nn.Module | None = None, form: str = "reference", kl_weight: float = 1.0,
                 perceptual_weight: float = 1.0) -> None:
        super().__init__()
        self.form = look_up_option(form, VAE_LOSS_FORMS)
        for name, w in (("kl_weight", kl_weight), ("perceptual_weight", perceptual_weight)):
            if not float(w) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {w}")
        if perceptual is not None and not isinstance(perceptual, nn.Module):
            raise TypeError(f"perceptual must be a torch.nn.Module or None, got {type(perceptual).__name__}")
        self.kl_weight = float(kl_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.perceptual = perceptual
        if perceptual is not None and hasattr(perceptual, "layer_reduction"):
            perceptual.layer_reduction = "mean" if self.form == "reference" else "half_sum"
        self.last_terms: dict[str, float] = {}

    def terms(self, pred: Sequence[torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unweighted batch terms ``recon``, ``kl``, ``perceptual`` (0 without a perceptual loss)."""
        if not isinstance(pred, (tuple, list)) or len(pred) != 3:
            raise ValueError("VAELoss takes the network's (reconstruction, mu, log_var); got "
                             f"{type(pred).__name__}{'' if not isinstance(pred, (tuple, list)) else f' of {len(pred)}'}")
        recon, mu, log_var = pred
        if recon.shape != target.shape:
            raise ValueError(f"reconstruction shape {tuple(recon.shape)} differs from the image's {tuple(target.shape)}")
        sq = (recon.float() - target.float()).pow(2)
        kl = gaussian_kl(mu.float(), log_var.float())
        if self.form == "reference":
            out = {"recon": sq.mean(), "kl": kl.mean()}
        else:
            out = {"recon": 0.5 * sq.flatten(1).sum(1).mean(), "kl": kl.flatten(1).sum(1).mean()}
        if self.perceptual is None:
            out["perceptual"] = torch.zeros((), device=recon.device)
        else:
            p = self.perceptual(recon, target)
            out["perceptual"] = p.mean() if p.ndim else p
        return out

    def forward(self, pred: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        t = self.terms(pred, target)
        loss = t["recon"] + self.kl_weight * t["kl"] + self.perceptual_weight * t["perceptual"]
        self.last_terms = {k: float(v.detach()) for k, v in t.items()}
        self.last_terms["loss"] = float(loss.detach())
        return loss
