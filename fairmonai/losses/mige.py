"""MIGE baseline: the MI gradient through the spectral Stein gradient estimator.

Wen, Zhou, He, Zhou, Xu, "Mutual Information Gradient Estimation for Representation Learning"
(ICLR 2020) estimate :math:`\\nabla I` from the score functions of the entropies, each score by the
spectral Stein gradient estimator (SSGE, Shi, Sun, Zhu, ICML 2018). Here, as in FaMI, the two
scores are the conditional one (within each group of the discrete sensitive attribute) and the
marginal one; only the score estimator differs from :class:`fairmonai.losses.FaMIPenalty`.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..validation import check_float, check_int
from ._score_estimation import (
    ScoreFit,
    check_penalty_inputs,
    score_function_difference,
    spectral_stein_score,
)
from .fami import sfd_surrogate

__all__ = ["MIGEPenalty"]


def _ssge_or_fallback(x: torch.Tensor, *, min_group_size: int, **kwargs) -> ScoreFit:
    """SSGE, or no estimate (``order`` 0) for fewer than ``min_group_size`` samples."""
    if x.shape[0] < min_group_size:
        return ScoreFit(torch.zeros(x.shape, dtype=torch.float64, device=x.device),
                        torch.zeros(x.shape[1], dtype=torch.bool, device=x.device), 0)
    return spectral_stein_score(x, **kwargs)


class MIGEPenalty(nn.Module):
    """MIGE's MI-gradient penalty: surrogate whose gradient w.r.t. ``v`` is the SSGE-estimated SFD / B.

    Same interface, surrogate and diagnostic as :class:`fairmonai.losses.FaMIPenalty`:
    ``forward(v, *, sensitive)`` with ``v`` ``(B, D)`` (or ``(B,)``) and ``sensitive`` ``(B,)`` group
    codes returns a scalar of value 0 whose gradient w.r.t. ``v`` is :math:`\\hat\\lambda / B`,

    .. math::
        \\hat\\lambda_i = \\hat s(v_i \\mid u_i) - \\hat s(v_i), \\quad s = \\nabla_v \\log p,

    the gradient of :math:`+I(u; v)` (minimising the total loss lowers the MI). Both scores are
    estimated on ``v.detach()`` by :func:`~fairmonai.losses._score_estimation.spectral_stein_score`
    (RBF kernel with the median-heuristic bandwidth of the sample set being fitted; Nyström
    eigenfunctions; ``num_eigs`` of them, or as many as hold ``eig_threshold`` of the kernel's
    trace). SSGE estimates the *joint* score of the vector ``v`` (no per-dimension approximation).

    MIGE (Wen et al. 2020, Section 3) writes the MI gradient through entropy gradients and
    conditions on a continuous variable; for a discrete ``u`` the conditional score is estimated
    within each group, which is the choice made here.

    Fallbacks (never a NaN): the group-and-marginal logic is FaMI's
    (:func:`~fairmonai.losses._score_estimation.score_function_difference`, shared); only the
    condition for an undefined fit is SSGE's. Excluded samples (code ``-1``) enter no fit and get
    SFD 0; a group with fewer than ``min_group_size`` samples (always at least 2: one sample has no
    bandwidth), or whose samples are all equal, has SFD 0; a coordinate constant within a group has
    SFD 0 there; if the whole batch has fewer than ``min_group_size`` samples the marginal is not
    fitted either and every SFD is 0 (as FaMI's undefined marginal). A batch with one group, or no
    included sample, has SFD 0. SSGE has no degree, so FaMI's ``small_group`` option has no
    counterpart here: a group of at least 2 distinct samples is fitted (in its non-constant
    coordinates), and ``min_group_size`` is the threshold for small groups (a group of 3 can get
    SFD values many times a large group's, figures in the OCT bundle's docs/experiments.md; raise
    ``min_group_size`` if such groups are common). :attr:`last_diagnostic` holds
    ``msq_sfd``, ``n_used``, ``n_excluded``, ``n_groups``, ``n_fallback`` and ``n_fallback_groups``
    (samples and groups whose SFD the fallback set to 0 in every coordinate in which the batch
    varies; :class:`fairmonai.handlers.PenaltyCurveLogger` sums them per epoch);
    :attr:`last_sfd` the last ``(B, D)`` SFD.

    Cost: one ``N x N`` eigendecomposition per group and one for the batch (``O(B^3)``), cheap
    at mini-batch sizes.

    Args:
        num_eigs: number of eigenfunctions ``>= 1``; ``None`` (default) uses ``eig_threshold``.
        eig_threshold: fraction of the Gram matrix's trace kept by the eigenfunctions, in
            ``(0, 1]``. Default ``0.99``.
        ridge: :math:`\\eta \\ge 0` added to the Gram matrix's diagonal. Default ``0``.
        min_group_size: smallest group that gets its own conditional score (``>= 2``). Default 2.
        eps: relative tolerance for a constant coordinate. Default ``1e-6``.

    Raises:
        TypeError / ValueError: bad options (the message names the value); in ``forward`` as
            :class:`~fairmonai.losses.FaMIPenalty`.

    Example:
        >>> pen = MIGEPenalty()
        >>> v = torch.randn(16, 2, requires_grad=True)
        >>> pen(v, sensitive=torch.arange(16) % 2).backward()
        >>> pen.last_diagnostic["msq_sfd"] >= 0
        True
    """

    def __init__(
        self,
        num_eigs: int | None = None,
        eig_threshold: float = 0.99,
        ridge: float = 0.0,
        min_group_size: int = 2,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.num_eigs = None if num_eigs is None else check_int(num_eigs, "num_eigs", 1)
        self.eig_threshold = check_float(eig_threshold, "eig_threshold", low=0.0, high=1.0, strict=True)
        self.ridge = check_float(ridge, "ridge")
        self.min_group_size = check_int(min_group_size, "min_group_size", 2)
        self.eps = check_float(eps, "eps")
        self.last_diagnostic: dict[str, float] = {}
        self.last_sfd: torch.Tensor | None = None

    def estimate_sfd(self, v: torch.Tensor, *, sensitive) -> torch.Tensor:
        """The ``(B, D)`` SFD for ``v``, in ``v``'s dtype; sets the diagnostic."""
        v2, codes = check_penalty_inputs(v, sensitive, type(self).__name__)
        estimator = partial(
            _ssge_or_fallback,
            min_group_size=self.min_group_size,
            num_eigs=self.num_eigs,
            eig_threshold=self.eig_threshold,
            ridge=self.ridge,
            eps=self.eps,
        )
        with torch.no_grad(), torch.autocast(device_type=v2.device.type, enabled=False):
            sfd, info = score_function_difference(v2.detach(), codes, estimator)
        sfd = sfd.to(v2.dtype)
        self.last_diagnostic = info
        self.last_sfd = sfd
        return sfd

    def forward(self, v: torch.Tensor, *, sensitive) -> torch.Tensor:
        """Surrogate scalar (value 0) whose gradient w.r.t. ``v`` is ``SFD / B``.

        Args:
            v: ``(B, D)`` or ``(B,)`` floating-point output.
            sensitive: ``(B,)`` or ``(B, 1)`` integer group codes; ``-1`` = excluded. Keyword only.
        """
        sfd = self.estimate_sfd(v, sensitive=sensitive)
        return sfd_surrogate(v.reshape(v.shape[0], -1), sfd)

    def extra_repr(self) -> str:
        return (f"num_eigs={self.num_eigs}, eig_threshold={self.eig_threshold}, ridge={self.ridge}, "
                f"min_group_size={self.min_group_size}")
