"""Score-function estimators and the score function difference (SFD) between groups.

The FaMI and MIGE penalties never estimate the mutual information :math:`I(u; v)` between a
network output :math:`v` and a discrete sensitive attribute :math:`u`; they estimate its gradient.
For a small change :math:`\\delta` of the samples, :math:`I(u; v + \\delta) - I(u; v) =
\\mathbb{E}[\\delta^\\top \\beta(u, v)] + o(\\delta)` with the *score function difference*

.. math::
    \\beta(u, v) = \\nabla_v \\log p(v \\mid u) - \\nabla_v \\log p(v) = \\nabla_v \\log p(u \\mid v)

(Babaie-Zadeh & Jutten 2005, written for :math:`I(u; v) = H(v) - H(v \\mid u)`, using
:math:`\\delta H(v) = -\\mathbb{E}[\\delta^\\top \\nabla_v \\log p(v)]`). Both scores are estimated
from the samples of one mini-batch: the marginal one from every included sample, the conditional
one from the samples of each group separately.

**Sign convention.** In this module a *score* is :math:`s(x) = \\nabla_x \\log p(x)` (the Stein
score of the machine-learning literature). Babaie-Zadeh & Jutten write
:math:`\\psi(x) = -\\frac{d}{dx} \\log p(x)`, i.e. :math:`\\psi = -s`; their SFD is
:math:`\\psi_v - \\psi_{v|u} = \\beta` above, the same vector.

Two estimators return :class:`ScoreFit`:

* :func:`polynomial_score`: least squares on a polynomial basis (Babaie-Zadeh & Jutten). With
  :math:`f(z)` the basis and :math:`\\hat s(z) = W^\\top f(z)`, minimising
  :math:`\\mathbb{E}\\|s - \\hat s\\|^2` and using Stein's identity
  :math:`\\mathbb{E}[s_d(z) f(z)] = -\\mathbb{E}[\\partial f(z) / \\partial z_d]` gives the linear system
  :math:`(\\mathbb{E}[f f^\\top] + \\rho I)\\, W = -\\mathbb{E}[\\nabla_z f]^\\top` from sample
  moments; no density is estimated.
* :func:`spectral_stein_score`: the spectral Stein gradient estimator (SSGE, Shi et al. 2018), the
  score estimator of MIGE (Wen et al. 2020).

:func:`score_function_difference` applies one of them to a batch with group codes and implements
the fallback rules for small or degenerate groups; :func:`check_penalty_inputs` validates the
``(v, sensitive)`` pair every penalty takes. Error messages are module constants.

References:
    M. Babaie-Zadeh, C. Jutten, "A general approach for mutual information minimization and its
    application to blind source separation", Signal Processing 85(5), 2005.
    J. Shi, S. Sun, J. Zhu, "A Spectral Approach to Gradient Estimation for Implicit
    Distributions", ICML 2018.
    L. Wen, Y. Zhou, L. He, M. Zhou, Z. Xu, "Mutual Information Gradient Estimation for
    Representation Learning", ICLR 2020.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from itertools import combinations_with_replacement
from typing import NamedTuple

import torch

from ..attribute_codes import EXCLUDED_CODE
from ..validation import check_float, check_int, look_up_named_option

__all__ = [
    "BASES",
    "SMALL_GROUP_OPTIONS",
    "RANK_RTOL",
    "MISSING_SENSITIVE_MSG",
    "NOT_TENSOR_MSG",
    "NOT_FLOAT_MSG",
    "BAD_V_SHAPE_MSG",
    "BAD_X_SHAPE_MSG",
    "EMPTY_BATCH_MSG",
    "BAD_SENSITIVE_SHAPE_MSG",
    "BATCH_MISMATCH_MSG",
    "NOT_INTEGER_CODES_MSG",
    "NEGATIVE_CODE_MSG",
    "MARGINAL_UNFITTED_MSG",
    "ScoreFit",
    "check_penalty_inputs",
    "polynomial_score",
    "spectral_stein_score",
    "score_function_difference",
]

#: allowed values of ``basis`` of :func:`polynomial_score`.
BASES = ("per_dimension", "multivariate")
#: allowed values of ``small_group`` of :func:`polynomial_score` (what an undefined fit gives).
SMALL_GROUP_OPTIONS = ("zero", "lower_degree")
#: tolerance of the rank test of :func:`polynomial_score` (``small_group="zero"``): per dimension,
#: standardised values closer than this count as one distinct value; multivariate, a singular value
#: of the standardised design matrix ``<= RANK_RTOL`` times the largest counts as zero.
RANK_RTOL = 1e-10

MISSING_SENSITIVE_MSG = (
    "{owner} needs the keyword argument sensitive= (the (B,) integer group codes, -1 = excluded); got None"
)
NOT_TENSOR_MSG = "{name} must be a torch.Tensor; got {type}"
NOT_FLOAT_MSG = "{name} must be a floating-point tensor; got dtype {dtype}"
BAD_V_SHAPE_MSG = "{name} must have shape (B,) or (B, D); got {shape}"
BAD_X_SHAPE_MSG = "x must have shape (N, D); got {shape}"
EMPTY_BATCH_MSG = "{name} has no samples (shape {shape})"
BAD_SENSITIVE_SHAPE_MSG = "sensitive must have shape (B,) or (B, 1); got {shape}"
BATCH_MISMATCH_MSG = "batch sizes differ: {name} has shape {shape} but sensitive has shape {s_shape}"
NOT_INTEGER_CODES_MSG = "sensitive must hold integer group codes; got {what}"
NEGATIVE_CODE_MSG = (
    "sensitive holds negative group code(s) {codes}; only -1 (excluded by the missing-value policy) is allowed"
)
MARGINAL_UNFITTED_MSG = (
    "the marginal score could not be fitted on {n} samples of dimension {d} (too few samples, or too few "
    "distinct values, for the estimator's basis; for FaMI use a lower degree, basis='per_dimension' or a "
    "larger batch): the SFD is 0 for this batch"
)


class ScoreFit(NamedTuple):
    """Result of a score estimator on ``N`` samples of dimension ``D``.

    Attributes:
        score: ``(N, D)`` float64, the estimate of :math:`\\nabla_x \\log p(x)` at each sample; ``0``
            in the coordinates that were not fitted.
        fitted: ``(D,)`` bool, the coordinates with an estimate (a coordinate that is constant over
            the samples, one where the fit is undefined, e.g. too few samples or distinct values,
            has none).
        order: the polynomial degree used (:func:`polynomial_score`) or the number of
            eigenfunctions (:func:`spectral_stein_score`); ``0`` when nothing was fitted.
    """

    score: torch.Tensor
    fitted: torch.Tensor
    order: int


# ------------------------------------------------------------------ penalty inputs


def check_penalty_inputs(v, sensitive, owner: str, name: str = "v") -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a penalty's inputs; return ``v`` as ``(B, D)`` (a view, graph kept) and codes ``(B,)``.

    Args:
        v: ``(B,)`` or ``(B, D)`` floating-point tensor (``(B,)`` is read as ``D = 1``).
        sensitive: ``(B,)`` or ``(B, 1)`` integer group codes (tensor, array or sequence); integral
            floats are accepted; ``-1`` marks an excluded sample.
        owner: class name used in the message for a missing ``sensitive``.
        name: name of ``v`` in messages.

    Returns:
        ``(v2, codes)``: ``v2`` of shape ``(B, D)``; ``codes`` int64 ``(B,)`` on ``v``'s device.

    Raises:
        TypeError: ``sensitive`` is None; ``v`` is not a floating-point tensor.
        ValueError: a shape other than the above; no samples; batch sizes differ (both shapes named);
            non-integer codes; a code below ``-1``.
    """
    if sensitive is None:
        raise TypeError(MISSING_SENSITIVE_MSG.format(owner=owner))
    if not isinstance(v, torch.Tensor):
        raise TypeError(NOT_TENSOR_MSG.format(name=name, type=type(v).__name__))
    if not torch.is_floating_point(v):
        raise TypeError(NOT_FLOAT_MSG.format(name=name, dtype=v.dtype))
    if v.ndim not in (1, 2):
        raise ValueError(BAD_V_SHAPE_MSG.format(name=name, shape=tuple(v.shape)))
    if v.shape[0] == 0 or (v.ndim == 2 and v.shape[1] == 0):
        raise ValueError(EMPTY_BATCH_MSG.format(name=name, shape=tuple(v.shape)))
    v2 = v.reshape(v.shape[0], 1) if v.ndim == 1 else v
    s = sensitive if isinstance(sensitive, torch.Tensor) else torch.as_tensor(sensitive)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise ValueError(BAD_SENSITIVE_SHAPE_MSG.format(shape=tuple(s.shape)))
    if s.shape[0] != v.shape[0]:
        raise ValueError(BATCH_MISMATCH_MSG.format(name=name, shape=tuple(v.shape), s_shape=tuple(s.shape)))
    if s.dtype == torch.bool:
        s = s.long()
    elif torch.is_floating_point(s):
        if not bool(torch.all(s == torch.floor(s))):
            bad = s[s != torch.floor(s)][0].item()
            raise TypeError(NOT_INTEGER_CODES_MSG.format(what=f"non-integer value {bad}"))
        s = s.long()
    elif s.dtype.is_complex:
        raise TypeError(NOT_INTEGER_CODES_MSG.format(what=f"dtype {s.dtype}"))
    codes = s.to(device=v.device, dtype=torch.long)
    if codes.numel() and int(codes.min()) < EXCLUDED_CODE:
        bad = torch.unique(codes[codes < EXCLUDED_CODE])[:5].tolist()
        raise ValueError(NEGATIVE_CODE_MSG.format(codes=bad))
    return v2, codes


# ------------------------------------------------------------------ estimators


def _constant_columns(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, population std and the mask of non-constant columns (std > eps * (1 + |mean|))."""
    mean = x.mean(0)
    std = x.std(0, unbiased=False) if x.shape[0] > 1 else torch.zeros_like(mean)
    return mean, std, std > eps * (1.0 + mean.abs())


def _monomial_exponents(dim: int, degree: int, device) -> torch.Tensor:
    """``(P, dim)`` exponents of every monomial of total degree ``<= degree``, by increasing degree."""
    rows = []
    for k in range(degree + 1):
        for combo in combinations_with_replacement(range(dim), k):
            e = [0] * dim
            for c in combo:
                e[c] += 1
            rows.append(e)
    return torch.tensor(rows, dtype=torch.float64, device=device)


def _n_basis(basis: str, dim: int, degree: int) -> int:
    return degree + 1 if basis == "per_dimension" else math.comb(dim + degree, degree)


def _fit_per_dimension(z: torch.Tensor, k: int, ridge: float, check_rank: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate fit on standardised ``z`` ``(n, a)``: ``(s_z (n, a), ok (a,))``, 0 where not ``ok``."""
    n, a = z.shape
    ks = torch.arange(k + 1, dtype=torch.float64, device=z.device)
    feats = z.unsqueeze(-1) ** ks  # (n, a, P); 0**0 == 1
    ok = torch.ones(a, dtype=torch.bool, device=z.device)
    if check_rank:  # Vandermonde rank = number of distinct values (at most k + 1), per coordinate
        distinct = 1 + (torch.diff(z.sort(0).values, dim=0) > RANK_RTOL).sum(0)  # z has unit std
        ok = distinct >= k + 1
        if not bool(ok.any()):
            return torch.zeros_like(z), ok
        if not bool(ok.all()):
            z, feats = z[:, ok], feats[:, ok]
    dfeats = ks * z.unsqueeze(-1) ** (ks - 1).clamp(min=0)  # k z^(k-1); 0 for k = 0
    gram = torch.einsum("nap,naq->apq", feats, feats) / n
    gram = gram + ridge * torch.eye(k + 1, dtype=torch.float64, device=z.device)
    rhs = -dfeats.mean(0)  # (a, P)
    w = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)
    s_z = torch.einsum("nap,ap->na", feats, w)
    if s_z.shape[1] == a:
        return s_z, ok
    out = torch.zeros(n, a, dtype=torch.float64, device=z.device)
    out[:, ok] = s_z
    return out, ok


def _fit_multivariate(z: torch.Tensor, k: int, ridge: float, check_rank: bool) -> torch.Tensor | None:
    """Joint fit on standardised ``z`` ``(n, a)``: ``s_z (n, a)``, or ``None`` if rank deficient."""
    n, a = z.shape
    expo = _monomial_exponents(a, k, z.device)  # (P, a)
    p = expo.shape[0]
    powers = z.unsqueeze(1) ** expo  # (n, P, a)
    feats = powers.prod(-1)  # (n, P)
    if check_rank and int(torch.linalg.matrix_rank(feats, rtol=RANK_RTOL)) < p:
        return None
    lower = z.unsqueeze(1) ** (expo - 1).clamp(min=0)
    rhs = torch.empty(p, a, dtype=torch.float64, device=z.device)
    for j in range(a):  # d f / d z_j = e_j z_j^(e_j - 1) prod_{l != j} z_l^(e_l)
        others = torch.cat([powers[..., :j], powers[..., j + 1:]], dim=-1).prod(-1)
        rhs[:, j] = -(expo[:, j] * lower[..., j] * others).mean(0)
    gram = feats.T @ feats / n + ridge * torch.eye(p, dtype=torch.float64, device=z.device)
    w = torch.linalg.solve(gram, rhs)  # (P, a)
    return feats @ w


def polynomial_score(
    x: torch.Tensor,
    *,
    degree: int = 1,
    ridge: float = 1e-3,
    basis: str = "per_dimension",
    eps: float = 1e-6,
    small_group: str = "zero",
) -> ScoreFit:
    """Score :math:`\\nabla_x \\log p(x)` at the samples by least squares on a polynomial basis.

    The samples are standardised per coordinate, :math:`z = (x - \\bar x) / \\sigma` (population
    standard deviation); the score is fitted in :math:`z` and mapped back by the chain rule,
    :math:`\\nabla_x \\log p_x(x) = \\nabla_z \\log p_z(z) / \\sigma` (the Jacobian of the
    standardisation is constant). With the basis :math:`f(z) \\in \\mathbb{R}^P` and
    :math:`\\hat s(z) = W^\\top f(z)`:

    .. math::
        \\Big(\\tfrac{1}{N} \\sum_i f(z_i) f(z_i)^\\top + \\rho I\\Big) W
        = -\\tfrac{1}{N} \\sum_i \\nabla_z f(z_i)^\\top

    (Stein's identity :math:`\\mathbb{E}[s_d f] = -\\mathbb{E}[\\partial_d f]`, Babaie-Zadeh & Jutten
    2005). Degree 1 is the Gaussian fit: per dimension it gives :math:`-(x - \\bar x)/\\sigma^2`, in
    the multivariate basis :math:`-\\hat\\Sigma^{-1}(x - \\bar x)` (both shrunk by the ridge).

    * ``basis="per_dimension"``: ``f = (1, z_d, ..., z_d^K)`` for each coordinate separately, so
      :math:`\\hat s_d` is the score of the *marginal* density of coordinate :math:`d`, a
      coordinate-wise approximation of the joint score (exact when ``D = 1`` or the coordinates are
      independent). ``P = K + 1``.
    * ``basis="multivariate"``: every monomial of the ``D`` coordinates of total degree ``<= K``,
      giving the joint score, correlations included. ``P = C(D + K, K)``, so meant for small ``D``.

    Constant coordinates (never a NaN): a coordinate with ``std <= eps * (1 + |mean|)`` is constant,
    has no score (``fitted`` False, score 0) and is left out of the basis (``D'`` below counts the
    others).

    **Small sample sets** (``small_group``; ``x`` is one group, or the whole batch for the marginal
    score). The fit at degree ``K`` is *undefined* when the basis functions are linearly dependent
    on the samples, i.e. the ``N x P`` design matrix :math:`F_{ip} = f_p(z_i)` has rank ``< P``: the
    normal equations without the ridge then have no unique solution and the ridge alone sets the
    estimate, and its values can be tens of times those of a well-fitted group (tested in
    tests/losses/test_fami.py).

    * per dimension, coordinate by coordinate: :math:`F` is the Vandermonde matrix of
      ``(1, z_d, ..., z_d^K)``, whose rank is the number of distinct values of the coordinate (at
      most ``K + 1``), so coordinate ``d`` is undefined when it holds *fewer than K + 1 distinct
      values* (in particular when ``N < K + 1``); the other coordinates are fitted.
    * multivariate, jointly: undefined when ``N < P = C(D' + K, K)``, or when the samples lie on an
      algebraic set of degree ``<= K`` (fewer than ``P`` distinct points; collinear points at
      ``K = 1``, where the covariance is singular; points on a circle at ``K = 2``, where
      :math:`z_1^2 + z_2^2` is constant). The whole fit is then undefined (a joint score has no
      coordinate-wise part).

    The rank, not the number of samples alone, is the condition because repeated values make the
    system singular however many samples there are (6 samples with 2 distinct values: ``P = 4 <= 6``
    but rank 2). It is tested on the standardised samples, so it does not depend on the scale of
    ``x``: per dimension by counting distinct values (standardised values closer than
    ``RANK_RTOL = 1e-10`` count as one; a sort per coordinate, cheap for wide feature layers),
    multivariate by the singular values of :math:`F` (those ``<= RANK_RTOL`` times the largest
    count as zero). Values equal up to rounding therefore count as one.

    * ``"zero"`` (default): an undefined coordinate (per dimension) or fit (multivariate) has no
      estimate (``fitted`` False, score 0); the degree is never lowered. ``order`` is ``degree``
      when anything is fitted, else 0.
    * ``"lower_degree"`` (the behaviour before the ``small_group`` option): the degree is lowered
      to the largest ``k <= degree`` with ``P_k <= N`` (no fewer samples than basis functions),
      the rank is not tested (a singular moment matrix is solved through the ridge), and nothing is
      fitted if even ``k = 1`` does not fit (``N < 2`` per dimension, ``N < D' + 1``
      multivariate).

    Args:
        x: ``(N, D)`` samples (detached inside; computed in float64).
        degree: highest polynomial degree ``K >= 1``. Default 1.
        ridge: :math:`\\rho \\ge 0` added to the diagonal of the standardised moment matrix.
            Default ``1e-3``.
        basis: ``"per_dimension"`` (default) or ``"multivariate"``.
        eps: relative tolerance of the constant-coordinate test. Default ``1e-6``.
        small_group: ``"zero"`` (default) or ``"lower_degree"``, what an undefined fit gives (above).

    Returns:
        :class:`ScoreFit` (float64 score).

    Raises:
        TypeError / ValueError: a bad ``degree``, ``ridge``, ``eps``, ``basis`` or ``small_group``
            (the message lists the allowed values); ``x`` not 2-D.

    Example:
        >>> x = torch.randn(500, 1, dtype=torch.float64)
        >>> fit = polynomial_score(x, degree=1, ridge=0.0)
        >>> bool(torch.allclose(fit.score, -(x - x.mean()) / x.var(unbiased=False)))
        True
        >>> polynomial_score(torch.tensor([[0.0], [1.0], [3.0]]), degree=3).order  # 3 samples < 4
        0
    """
    degree = check_int(degree, "degree", 1)
    ridge = check_float(ridge, "ridge")
    eps = check_float(eps, "eps")
    basis = look_up_named_option(basis, BASES, "basis")
    small_group = look_up_named_option(small_group, SMALL_GROUP_OPTIONS, "small_group")
    if x.ndim != 2:
        raise ValueError(BAD_X_SHAPE_MSG.format(shape=tuple(x.shape)))
    x = x.detach().to(torch.float64)
    n, d = x.shape
    score = torch.zeros_like(x)
    none = ScoreFit(score, torch.zeros(d, dtype=torch.bool, device=x.device), 0)
    if n == 0:
        return none
    mean, std, active = _constant_columns(x, eps)
    act = torch.nonzero(active).flatten()
    n_act = int(act.numel())
    if n_act == 0:
        return none
    check_rank = small_group == "zero"
    k_used = 0
    if check_rank:
        k_used = degree if _n_basis(basis, n_act, degree) <= n else 0
    else:
        for k in range(degree, 0, -1):
            if _n_basis(basis, n_act, k) <= n:
                k_used = k
                break
    if k_used == 0:
        return none
    sd = std[act]
    z = (x[:, act] - mean[act]) / sd
    fitted = active
    if basis == "per_dimension":
        s_z, ok = _fit_per_dimension(z, k_used, ridge, check_rank)
        if not bool(ok.any()):
            return none
        fitted = active.clone()
        fitted[act[~ok]] = False
    else:
        s_z = _fit_multivariate(z, k_used, ridge, check_rank)
        if s_z is None:
            return none
    score[:, act] = s_z / sd
    return ScoreFit(score, fitted, k_used)


def spectral_stein_score(
    x: torch.Tensor,
    *,
    num_eigs: int | None = None,
    eig_threshold: float = 0.99,
    ridge: float = 0.0,
    eps: float = 1e-6,
) -> ScoreFit:
    """Score :math:`\\nabla_x \\log p(x)` at the samples by the spectral Stein gradient estimator.

    SSGE (Shi et al. 2018, Section 3): with the RBF kernel
    :math:`k(x, y) = \\exp(-\\|x - y\\|^2 / (2\\sigma^2))`, :math:`\\sigma` the median of the pairwise
    distances between distinct samples (the median heuristic), the Gram matrix
    :math:`K = U \\Lambda U^\\top` (``ridge`` :math:`\\eta` added to its diagonal before the
    eigendecomposition) gives the Nyström eigenfunctions
    :math:`\\psi_j(x) = \\frac{\\sqrt{N}}{\\lambda_j} \\sum_m k(x, x_m) U_{mj}`. The score is expanded as
    :math:`\\hat s(x) = \\sum_j \\beta_j \\psi_j(x)` with, by Stein's identity,
    :math:`\\beta_j = -\\frac{1}{N} \\sum_i \\nabla \\psi_j(x_i)`. Estimated at the samples themselves.

    The number ``J`` of eigenfunctions is ``num_eigs`` when given, else the smallest ``J`` whose
    eigenvalues hold a fraction ``eig_threshold`` of the trace; eigenvalues below ``1e-10`` times
    the largest are never used (they would divide by zero).

    Fallbacks (never a NaN): fewer than 2 samples, or all samples equal, fits nothing (``order``
    0); a constant coordinate (``std <= eps * (1 + |mean|)``) gets score 0 and ``fitted`` False.

    Args:
        x: ``(N, D)`` samples (detached inside; float64).
        num_eigs: number of eigenfunctions ``J >= 1`` (capped at ``N``); ``None`` (default) uses
            ``eig_threshold``.
        eig_threshold: fraction of the kernel's trace kept, in ``(0, 1]``. Default ``0.99``.
        ridge: :math:`\\eta \\ge 0` added to the Gram matrix's diagonal. Default ``0``.
        eps: relative tolerance of the constant-coordinate test. Default ``1e-6``.

    Returns:
        :class:`ScoreFit` (float64 score; ``order`` = ``J``).

    Raises:
        TypeError / ValueError: a bad option; ``x`` not 2-D.

    Example:
        >>> x = torch.randn(400, 1, dtype=torch.float64)
        >>> fit = spectral_stein_score(x)
        >>> fit.score.shape
        torch.Size([400, 1])
    """
    if num_eigs is not None:
        num_eigs = check_int(num_eigs, "num_eigs", 1)
    eig_threshold = check_float(eig_threshold, "eig_threshold", low=0.0, high=1.0, strict=True)
    ridge = check_float(ridge, "ridge")
    eps = check_float(eps, "eps")
    if x.ndim != 2:
        raise ValueError(BAD_X_SHAPE_MSG.format(shape=tuple(x.shape)))
    x = x.detach().to(torch.float64)
    n, d = x.shape
    score = torch.zeros_like(x)
    none = ScoreFit(score, torch.zeros(d, dtype=torch.bool, device=x.device), 0)
    if n < 2:
        return none
    _, _, active = _constant_columns(x, eps)
    if not bool(active.any()):
        return none
    sq = torch.cdist(x, x).pow(2)
    iu = torch.triu_indices(n, n, offset=1, device=x.device)
    dist = sq[iu[0], iu[1]].clamp(min=0).sqrt()
    dist = dist[dist > 0]
    if dist.numel() == 0:
        return none
    srt = dist.sort().values  # median; the mean of the two middle values for an even count
    mid = srt.numel() // 2
    sigma = float(srt[mid]) if srt.numel() % 2 else 0.5 * float(srt[mid - 1] + srt[mid])
    sigma2 = sigma**2
    k0 = torch.exp(-sq / (2.0 * sigma2))
    evals, evecs = torch.linalg.eigh(k0 + ridge * torch.eye(n, dtype=torch.float64, device=x.device))
    evals, evecs = evals.flip(0), evecs.flip(1)  # descending
    usable = int((evals > 1e-10 * evals[0]).sum())
    if num_eigs is not None:
        j = min(num_eigs, n)
    else:
        frac = torch.cumsum(evals.clamp(min=0), 0) / evals.clamp(min=0).sum()
        j = int((frac < eig_threshold).sum()) + 1
    j = max(1, min(j, usable))
    lam, u = evals[:j], evecs[:, :j]
    # (1/N) sum_i grad_{x_i} k(x_i, x_m) = -(sum_i k_im x_i - x_m sum_i k_im) / (N sigma^2)
    grad_avg = -(k0 @ x - x * k0.sum(0, keepdim=True).T) / (n * sigma2)  # (N, D), k0 symmetric
    beta = -math.sqrt(n) * (u.T @ grad_avg) / lam.unsqueeze(-1)  # (J, D)
    psi = math.sqrt(n) * (k0 @ u) / lam  # (N, J), Nystrom at the samples
    score = psi @ beta
    score[:, ~active] = 0.0
    return ScoreFit(score, active, j)


# ------------------------------------------------------------------ group SFD


def score_function_difference(
    x: torch.Tensor, codes: torch.Tensor, estimator: Callable[[torch.Tensor], ScoreFit]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-sample SFD :math:`\\hat s(v_i \\mid u_i) - \\hat s(v_i)` for a batch with group codes.

    The marginal score is fitted on every included sample (code ``>= 0``); samples with code
    ``-1`` are left out of the marginal fit and of every conditional fit, and their SFD is 0 (they
    carry no gradient of the MI term). The conditional score of group ``g`` is fitted on the
    samples with code ``g``.

    Fallback: the SFD of a group is 0 in every coordinate where either of its two scores has no
    estimate (``fitted`` False): the group's own fit (the group is constant there, or too small or
    has too few distinct values for the estimator, see :func:`polynomial_score` /
    :func:`spectral_stein_score`), or the marginal fit (the whole batch is too small, e.g. a last
    batch of 3 samples at degree 3: then every group's SFD is 0 there, the same rule). A
    difference needs both scores, so the SFD is never one score alone. A group with a single sample
    therefore always has SFD 0. A batch with one group only has SFD exactly 0 (the two fits see
    the same samples). If the marginal has no estimate at all although the batch varies, a
    ``UserWarning`` says so.

    Counting: a group is *zeroed* when this fallback sets its SFD to 0 in every coordinate in which
    the batch varies (coordinates constant over the whole batch have score 0 in every fit, so their
    SFD is 0 by definition, not by fallback). A group zeroed in some coordinates only (per
    dimension: too few distinct values in one coordinate) keeps the fitted coordinates and is not
    counted.

    Args:
        x: ``(B, D)`` samples (detached inside).
        codes: ``(B,)`` int64 group codes, ``-1`` = excluded.
        estimator: ``(N, D) -> ScoreFit``, e.g. ``functools.partial(polynomial_score, degree=3)``.

    Returns:
        ``(sfd, info)``: ``sfd`` ``(B, D)`` float64; ``info`` with ``msq_sfd`` (mean over included
        samples of :math:`\\|\\mathrm{SFD}_i\\|^2`, 0 if none), ``n_used``, ``n_excluded``,
        ``n_groups`` (groups present), ``n_fallback`` (included samples of zeroed groups) and
        ``n_fallback_groups`` (zeroed groups), all floats.
    """
    x = x.detach().to(torch.float64)
    b = x.shape[0]
    sfd = torch.zeros_like(x)
    included = codes >= 0
    n_used = int(included.sum())
    info = {"msq_sfd": 0.0, "n_used": float(n_used), "n_excluded": float(b - n_used), "n_groups": 0.0,
            "n_fallback": 0.0, "n_fallback_groups": 0.0}
    if n_used == 0:
        return sfd, info
    xi = x[included]
    varies = xi.amax(0) > xi.amin(0)  # (D,): exact test, a constant coordinate has SFD 0 by definition
    marginal = torch.zeros_like(x)
    marginal_fit = estimator(xi)
    marginal[included] = marginal_fit.score
    if not bool(marginal_fit.fitted.any()) and bool(varies.any()):
        warnings.warn(MARGINAL_UNFITTED_MSG.format(n=n_used, d=x.shape[1]), UserWarning, stacklevel=3)
    groups = torch.unique(codes[included]).tolist()
    info["n_groups"] = float(len(groups))
    n_fallback = n_fallback_groups = 0
    for g in groups:
        idx = torch.nonzero(codes == g).flatten()
        fit = estimator(x[idx])
        ok = fit.fitted & marginal_fit.fitted
        if bool(varies.any()) and not bool((ok & varies).any()):
            n_fallback += int(idx.numel())
            n_fallback_groups += 1
        if not bool(ok.any()):
            continue
        diff = fit.score - marginal[idx]
        diff[:, ~ok] = 0.0
        sfd[idx] = diff
    info["n_fallback"] = float(n_fallback)
    info["n_fallback_groups"] = float(n_fallback_groups)
    info["msq_sfd"] = sfd[included].pow(2).sum(1).mean()  # a 0-d tensor: logging it needs no host sync here
    return sfd, info
