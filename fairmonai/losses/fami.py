"""FaMI: the gradient of the mutual information between a network output and a sensitive attribute.

Sadri, DeSilvio, Viswanath, "Mutual Information Regularization for Fairness-aware Deep Imaging
Representations" (MICCAI 2025). The total loss is :math:`\\mathcal{L} = \\mathcal{L}_{CE} + \\mu
\\mathcal{L}_{MI}`; :math:`\\mathcal{L}_{MI} = I(u; v)` is never estimated as a number, only its
gradient, through the score function difference (SFD) of Babaie-Zadeh & Jutten, estimated in each
mini-batch by polynomial least squares (:func:`fairmonai.losses._score_estimation.polynomial_score`).
:math:`\\mu` lives in :class:`fairmonai.losses.FairnessRegularizedLoss`, not here.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..validation import check_float, check_int, look_up_named_option
from ._score_estimation import (
    BASES,
    SMALL_GROUP_OPTIONS,
    check_penalty_inputs,
    polynomial_score,
    score_function_difference,
)

__all__ = ["FaMIPenalty", "sfd_surrogate"]


def sfd_surrogate(v: torch.Tensor, sfd: torch.Tensor) -> torch.Tensor:
    """Scalar whose value is 0 and whose gradient w.r.t. ``v`` is ``sfd / B``.

    :math:`S = \\frac{1}{B} \\sum_i v_i^\\top \\mathrm{SFD}_i` with the SFD detached, minus its own
    detached value. Its value (:math:`\\approx 0` anyway, by Stein's identity) is centred to exactly 0
    so that the logged total loss is the task loss and nobody reads it as an MI estimate.

    Args:
        v: ``(B, D)`` output, part of the graph.
        sfd: ``(B, D)`` score function difference (any dtype; cast to ``v``'s and detached).
    """
    s = (v * sfd.detach().to(v.dtype)).sum() / v.shape[0]
    return s - s.detach()


class FaMIPenalty(nn.Module):
    """FaMI's MI-gradient penalty: a surrogate whose gradient w.r.t. ``v`` is the estimated SFD / B.

    For the model output ``v`` (``(B, C)`` logits by default, or a feature layer ``(B, D)``; ``(B,)``
    is read as ``D = 1``) and the sensitive attribute ``u`` (``(B,)`` integer group codes), the
    gradient of :math:`I(u; v)` w.r.t. the batch is estimated by the score function difference

    .. math::
        \\frac{\\partial I(u; v)}{\\partial v_i} \\approx \\frac{1}{B}\\lambda(u_i, v_i), \\quad
        \\lambda(u, v) = \\nabla_v \\log p(v \\mid u) - \\nabla_v \\log p(v) = \\nabla_v \\log p(u \\mid v)

    and the returned scalar is :math:`S = \\frac{1}{B}\\sum_i v_i^\\top \\hat\\lambda_i` (SFD
    detached, value centred to 0, see :func:`sfd_surrogate`). Back-propagation then gives the
    network's parameters :math:`\\frac{1}{B}\\sum_i J_i^\\top \\hat\\lambda_i`, the gradient of the paper's
    Eq. 2 (:math:`J_i = \\partial v_i / \\partial \\theta`).

    **Sign.** Scores are :math:`s = \\nabla \\log p` (Babaie-Zadeh & Jutten's :math:`\\psi` is
    :math:`-s`); :math:`\\lambda` is the gradient of :math:`+I`, so *minimising* ``loss + mu * S``
    lowers :math:`I(u; v)` (a descent step moves each sample against :math:`\\lambda`, pulling the
    groups' distributions together; tested on a toy).

    **Estimation** (on ``v.detach()``, float64, autocast off). Each score is fitted by
    :func:`~fairmonai.losses._score_estimation.polynomial_score`: ``v`` standardised per coordinate
    (mean, population std of the sample set being fitted; the chain rule divides the score by the
    std), a polynomial of degree ``degree`` fitted by the Stein-identity normal equations with
    ``ridge`` on the diagonal. The marginal score uses every included sample, the conditional one
    the samples of each group.

    * ``basis="per_dimension"`` (default) fits each coordinate's own score, so
      :math:`\\hat\\lambda_d` is the gradient of :math:`I(u; v_d)`: the penalty descends
      :math:`\\sum_d I(u; v_d)`, a coordinate-wise approximation of the paper's joint score that is
      exact for ``D = 1`` (and for independent coordinates). The paper's score is the joint score of
      the vector ``v``; ``basis="multivariate"`` fits it with all monomials of total degree
      ``<= degree`` (``C(D + degree, degree)`` basis functions: meant for logits or small ``D``).
    * ``degree=1`` (default) is the Gaussian fit (score :math:`-\\hat\\Sigma^{-1}(v - \\bar v)`, per
      dimension :math:`-(v_d - \\bar v_d)/\\hat\\sigma_d^2`): the low-variance choice, it sees
      differences of group means and variances. Degree 3 also sees skew and bimodality at a higher
      noise floor (``benchmarks/bench_fami_noise_floor.py`` measures both; figures in the OCT
      bundle's docs/experiments.md). The noise adds to the signal, so degree 1 is the default.

    **Scale.** :math:`I(u; c\\,v) = I(u; v)`, so the SFD of :math:`c\\,v` is the SFD of ``v`` divided
    by :math:`c` (exactly, for this estimator: it fits standardised ``v``; tested). The penalty's
    pull is therefore strongest when the logits are small and fades as they spread: near-constant
    logits get a penalty gradient far above the cross-entropy's, fitted ones almost none (the OCT
    bundle's docs/experiments.md has the measured curves). This is the method (the gradient of a
    scale-invariant quantity), not a defect of the estimator.

    **Choices where the paper is silent.**

    * Excluded samples (code ``-1``) enter no fit, neither conditional nor marginal (left out
      entirely, the simple choice: the marginal then describes the samples whose groups are known)
      and get SFD 0. The surrogate still divides by the full batch size ``B``, as a mean-reduced
      task loss does, so the MI term is weighted by the fraction of included samples.
    * Small groups: see below. A coordinate constant within a group (``std <= eps * (1 + |mean|)``)
      takes the marginal score there (SFD 0); a coordinate constant over the batch has score 0 in
      every fit. Never a NaN.
    * A batch in which every sample is excluded, or with a single group, has SFD 0.
    * With several processes (DDP) each rank estimates the SFD on its own local batch, the
      mini-batch estimate of the paper; nothing is gathered across ranks.

    **Small groups.** A group's polynomial fit at degree ``K`` is *undefined* when its basis
    functions are linearly dependent on the group's samples (the design matrix has rank below the
    number ``P`` of basis functions; the normal equations without the ridge then have no unique
    solution and the small ridge alone sets the values):

    * ``basis="per_dimension"``, per coordinate: fewer than ``K + 1`` *distinct values* in the
      coordinate (so also fewer than ``K + 1`` samples); the group's other coordinates are fitted.
    * ``basis="multivariate"``: fewer than ``P = C(D' + K, K)`` samples (``D'`` the group's
      non-constant coordinates), or samples on an algebraic set of degree ``<= K`` (fewer than ``P``
      distinct points; collinear points at degree 1); the whole fit is undefined.

    The condition is the rank, not the group size alone, because repeated values make the system
    singular whatever the size (details in
    :func:`~fairmonai.losses._score_estimation.polynomial_score`). With ``small_group="zero"``
    (default) the SFD is 0 where a group's fit is undefined: the estimator has no value there, and
    before this option such groups could dominate a step: their ridge-only SFD values were tens of
    times the RMS of a well-fitted group's (tested; figures in the OCT bundle's docs/experiments.md).
    ``small_group="lower_degree"`` keeps the former behaviour: the degree is lowered to the largest
    ``k`` whose basis has no more functions than the group has samples, repeated values are solved
    through the ridge, and only a group too small even for degree 1 (per dimension: 1 sample;
    multivariate: fewer than ``D' + 1``) gets SFD 0.

    The marginal (all-rows) fit follows the same rule: if the whole batch is too small (e.g. a last
    batch of 3 samples at degree 3) the marginal is undefined, and the SFD of every group is 0 in
    the undefined coordinates (a ``UserWarning`` when no coordinate is left). The other groups' SFD
    does not depend on the option: their conditional fits use their own samples, and the marginal
    fit still uses every included sample, the small group's too (removing the small group from the
    batch would therefore change them).

    Groups just above the threshold are defined but noisy (docs/experiments.md of the OCT bundle); a
    lower ``degree`` or a larger batch is the remedy there.

    The zeroed samples and groups of each call are counted in :attr:`last_diagnostic`
    (``n_fallback``, ``n_fallback_groups``: a group counts when its SFD is 0 in every coordinate in
    which the batch varies); :class:`fairmonai.handlers.PenaltyCurveLogger` sums them per epoch and
    logs "FaMI small-group fallback: N rows in M group-batches zeroed this epoch".

    :math:`\\mathbb{E}[v^\\top \\lambda]` is zero by Stein's identity and is not the penalty; the
    diagnostic after each call is :attr:`last_diagnostic`: ``msq_sfd`` (a detached 0-d tensor: mean
    over included samples of :math:`\\|\\hat\\lambda_i\\|^2`, the squared size of the MI gradient; it
    falls towards the estimator's noise floor as :math:`I(u; v)` falls), and as floats ``n_used``, ``n_excluded``, ``n_groups``,
    ``n_fallback`` and ``n_fallback_groups`` (samples and groups whose SFD the fallback set to 0,
    see *Small groups*). :attr:`last_sfd` holds the ``(B, D)`` SFD of the last call.

    Args:
        degree: polynomial degree ``>= 1``. Default 1.
        ridge: ridge :math:`\\rho \\ge 0` on the standardised moment matrix. Default ``1e-3``
            (shrinks the degree-1 score by 0.1 %; keeps degree >= 2 solvable on small groups).
        basis: ``"per_dimension"`` (default) or ``"multivariate"``.
        eps: relative tolerance for a constant coordinate. Default ``1e-6``.
        small_group: ``"zero"`` (default: SFD 0 where a group's fit is undefined) or
            ``"lower_degree"`` (the former lowered-degree fit), see *Small groups*.

    Raises:
        TypeError: ``degree`` not an int; ``ridge``/``eps`` not a number; in ``forward``,
            ``sensitive`` missing or None, ``v`` not a floating-point tensor, non-integer codes.
        ValueError: ``degree < 1``, negative ``ridge``/``eps``, unknown ``basis`` or
            ``small_group`` (the message lists the allowed values); in ``forward``,
            a bad shape, batch sizes of ``v`` and ``sensitive`` differ (both shapes named), a code
            below ``-1``.

    Example:
        >>> pen = FaMIPenalty(degree=1)
        >>> logits = torch.randn(8, 2, requires_grad=True)
        >>> s = pen(logits, sensitive=torch.tensor([0, 1, 0, 1, 0, 1, -1, 1]))
        >>> s.backward()   # logits.grad == pen.last_sfd / 8
        >>> sorted(pen.last_diagnostic)
        ['msq_sfd', 'n_excluded', 'n_fallback', 'n_fallback_groups', 'n_groups', 'n_used']
    """

    def __init__(
        self,
        degree: int = 1,
        ridge: float = 1e-3,
        basis: str = "per_dimension",
        eps: float = 1e-6,
        small_group: str = "zero",
    ) -> None:
        super().__init__()
        self.degree = check_int(degree, "degree", 1)
        self.ridge = check_float(ridge, "ridge")
        self.basis = look_up_named_option(basis, BASES, "basis")
        self.eps = check_float(eps, "eps")
        self.small_group = look_up_named_option(small_group, SMALL_GROUP_OPTIONS, "small_group")
        self.last_diagnostic: dict[str, float] = {}
        self.last_sfd: torch.Tensor | None = None

    def estimate_sfd(self, v: torch.Tensor, *, sensitive) -> torch.Tensor:
        """The ``(B, D)`` SFD for ``v`` (``(B,)`` or ``(B, D)``), in ``v``'s dtype; sets the diagnostic."""
        v2, codes = check_penalty_inputs(v, sensitive, type(self).__name__)
        estimator = partial(polynomial_score, degree=self.degree, ridge=self.ridge, basis=self.basis, eps=self.eps,
                            small_group=self.small_group)
        with torch.no_grad(), torch.autocast(device_type=v2.device.type, enabled=False):
            sfd, info = score_function_difference(v2.detach(), codes, estimator)
        sfd = sfd.to(v2.dtype)
        self.last_diagnostic = info
        self.last_sfd = sfd
        return sfd

    def forward(self, v: torch.Tensor, *, sensitive) -> torch.Tensor:
        """Surrogate scalar (value 0) whose gradient w.r.t. ``v`` is ``SFD / B``.

        Args:
            v: ``(B, D)`` or ``(B,)`` floating-point output (logits or features).
            sensitive: ``(B,)`` or ``(B, 1)`` integer group codes; ``-1`` = excluded. Keyword only.
        """
        sfd = self.estimate_sfd(v, sensitive=sensitive)
        v2 = v.reshape(v.shape[0], -1)
        return sfd_surrogate(v2, sfd)

    def extra_repr(self) -> str:
        return (f"degree={self.degree}, ridge={self.ridge}, basis={self.basis!r}, eps={self.eps}, "
                f"small_group={self.small_group!r}")
