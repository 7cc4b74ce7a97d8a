"""Differentiable fairness losses of Hänel et al., functional forms.

Hänel, Kumar, Schlesinger, Li, Ünal, Eslami, Gumhold, "Enhancing Fairness of Visual Attribute Predictors"
(ACCV 2022, arXiv:2207.05727; reference code github.com/nish03/FVAP, ``src/losses``). Each loss is computed
from one batch: the softmax probabilities :math:`p_n(a)` of the :math:`K_t` target classes, the true
classes :math:`y_n` and the sensitive groups :math:`s_n \\in \\{0, \\dots, K_s - 1\\}`. All
probabilities below are batch estimates, e.g. :math:`p(\\hat y = a \\mid s = b) = \\frac{1}{|\\{n: s_n =
b\\}|} \\sum_{n: s_n = b} p_n(a)`.

======================  ==============  ===================================================
function                paper           value
======================  ==============  ===================================================
:func:`dp_l2`           Eq. 3           :math:`\\sum_{a,b} [p(\\hat y{=}a \\mid s{=}b) - p(\\hat y{=}a)]^2`
:func:`dp_mi`           Eq. 4           :math:`I(\\hat y; s) = H(\\hat y) + H(s) - H(\\hat y, s)`
:func:`eo_l2`           Eq. 6           :math:`\\sum_{a,b,c} [p(\\hat y{=}a \\mid y{=}b, s{=}c) - p(\\hat y{=}a \\mid y{=}b)]^2`
:func:`eo_mi`           Eq. 7           :math:`\\sum_b I(\\hat y; s \\mid y{=}b)` (unweighted)
:func:`iou_loss`        Eq. 12          :math:`\\sum_g [\\mathrm{IoU}(g) - \\mathrm{IoU}(\\text{all})]^2`
======================  ==============  ===================================================

Common conventions (every function):

* ``probs`` ``(B, K_t)`` probabilities (rows in [0, 1] summing to 1, e.g. ``logits.softmax(1)``);
  ``targets`` and ``groups`` ``(B,)`` or ``(B, 1)`` integer codes (a floating tensor holding integers
  is accepted). ``groups`` may hold :data:`~fairmonai.attribute_codes.EXCLUDED_CODE` (``-1``, a case
  whose sensitive value is missing): such a sample is left out of the loss altogether, from the
  conditional *and* the marginal estimates (as :class:`~fairmonai.losses.FaMIPenalty` does); any other
  code outside ``[0, num_groups)`` is an error.
* **Empty cells.** A group, a true class or a (class, group) cell can be absent from a batch (in
  ISIC 2020 at batch size 256 about 23 % of batches lack female or male malignant cases). The
  estimates conditioned on an empty cell are 0/0. ``empty="leave_out"`` (default) leaves out the terms
  that need an empty cell, so the value is the loss of the batch without that group / class / cell,
  finite, with finite gradients. ``empty="zero"`` reproduces the authors' code, which returns 0 for the
  whole loss as soon as one of the cells it divides by is empty (which cells that is, per loss, is in
  each docstring; the MI losses' code never divides by a (class, group) count, so those cells need no
  rule there).
* ``reduction``: ``"sum"`` (default; the paper's equations are plain sums), ``"mean"`` (the sum
  divided by the number of terms that entered it) or ``"none"`` (the tensor of terms, a left-out or
  zeroed term holding 0). Which terms a loss has is in its docstring.
* The losses are smooth functions of ``probs``: divisions are by counts (constants) or, in the IoU, by
  a soft union that is guarded where it is 0; entropies skip zero entries (:math:`0 \\log 0 = 0`)
  without a NaN in the backward pass.
* Every function validates its inputs (one host-device synchronisation per call) and raises with the
  offending values named; the message templates are the ``*_MSG`` constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.utils import LossReduction

from ..attribute_codes import EXCLUDED_CODE
from ..validation import check_int, look_up_named_option

__all__ = [
    "dp_l2",
    "dp_mi",
    "eo_l2",
    "eo_mi",
    "iou_loss",
    "soft_confusion_matrix",
    "EMPTY_OPTIONS",
    "REDUCTIONS",
    "PROBS_TYPE_MSG",
    "PROBS_SHAPE_MSG",
    "PROBS_NONFINITE_MSG",
    "PROBS_NOT_SIMPLEX_MSG",
    "CODES_TYPE_MSG",
    "CODES_SHAPE_MSG",
    "CODES_NOT_INTEGER_MSG",
    "GROUP_CODE_MSG",
    "TARGET_CODE_MSG",
    "MISSING_TARGETS_MSG",
]

#: values of ``empty``: leave out the terms of an empty cell (default), or the authors' code's 0.
EMPTY_OPTIONS = ("leave_out", "zero")
#: values of ``reduction``.
REDUCTIONS = tuple(r.value for r in LossReduction)

PROBS_TYPE_MSG = "probs must be a floating-point torch.Tensor of shape (B, K_t); got {what}"
PROBS_SHAPE_MSG = "probs must have shape (B, K_t) with B >= 1 and K_t >= 2; got shape {shape}"
PROBS_NONFINITE_MSG = "probs must be finite; got {value} at probs[{row}, {col}] ({count} non-finite entries)"
PROBS_NOT_SIMPLEX_MSG = (
    "probs must hold probabilities (entries in [0, 1], rows summing to 1, e.g. logits.softmax(1)); "
    "row {row} is {values} (sum {total}). Pass softmax probabilities, not logits"
)
CODES_TYPE_MSG = "{name} must be a tensor or sequence of integer codes of shape (B,); got {what}"
CODES_SHAPE_MSG = "batch sizes differ: probs has shape {probs_shape} but {name} has shape {shape}"
CODES_NOT_INTEGER_MSG = "{name} must hold integer codes; got {value} at {name}[{index}]"
GROUP_CODE_MSG = (
    "groups must hold codes in [0, num_groups) = [0, {k}) or {excluded} (excluded); got {bad} "
    "(num_groups={k})"
)
TARGET_CODE_MSG = "targets must hold class indices in [0, K_t) = [0, {k}) (K_t = probs.shape[1]); got {bad}"
MISSING_TARGETS_MSG = "{loss} needs targets (the (B,) true class indices); got None"


# -------------------------------------------------------------------------------------------------
# input checks


def _first_bad(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0])


def _check_probs(probs) -> torch.Tensor:
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point():
        what = f"dtype {probs.dtype}" if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise TypeError(PROBS_TYPE_MSG.format(what=what))
    if probs.ndim != 2 or probs.shape[0] < 1 or probs.shape[1] < 2:
        raise ValueError(PROBS_SHAPE_MSG.format(shape=tuple(probs.shape)))
    p = probs.detach()
    finite = torch.isfinite(p)
    if not bool(finite.all()):
        r, c = _first_bad(~finite)
        raise ValueError(PROBS_NONFINITE_MSG.format(value=p[r, c].item(), row=r, col=c,
                                                    count=int((~finite).sum())))
    tol = 1e-3 if p.dtype in (torch.float32, torch.float64) else 1e-2
    bad_row = ((p < -tol) | (p > 1 + tol)).any(dim=1) | ((p.sum(dim=1) - 1).abs() > tol)
    if bool(bad_row.any()):
        (r,) = _first_bad(bad_row)
        raise ValueError(PROBS_NOT_SIMPLEX_MSG.format(row=r, values=[round(v, 6) for v in p[r].tolist()],
                                                      total=round(p[r].sum().item(), 6)))
    return probs


def _check_codes(codes, name: str, probs: torch.Tensor) -> torch.Tensor:
    """``codes`` as a ``(B,)`` long tensor on ``probs``' device (shape and integrality checked)."""
    if isinstance(codes, torch.Tensor):
        c = codes.detach()
    else:
        try:
            c = torch.as_tensor(codes)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(CODES_TYPE_MSG.format(name=name, what=type(codes).__name__)) from None
    if c.dtype == torch.bool or c.is_complex():
        raise TypeError(CODES_TYPE_MSG.format(name=name, what=f"dtype {c.dtype}"))
    b = probs.shape[0]
    if c.ndim == 2 and c.shape[1] == 1:
        c = c.reshape(-1)
    if c.ndim != 1 or c.shape[0] != b:
        raise ValueError(CODES_SHAPE_MSG.format(probs_shape=tuple(probs.shape), name=name, shape=tuple(c.shape)))
    if c.is_floating_point():
        bad = ~torch.isfinite(c) | (c != torch.round(c))
        if bool(bad.any()):
            (i,) = _first_bad(bad)
            raise ValueError(CODES_NOT_INTEGER_MSG.format(name=name, value=c[i].item(), index=i))
    return c.to(device=probs.device, dtype=torch.long)


class _Batch(NamedTuple):
    probs: torch.Tensor  # (N, K_t), the samples in a group
    groups: torch.Tensor  # (N,) long in [0, K_s)
    targets: torch.Tensor | None  # (N,) long in [0, K_t)
    num_classes: int
    num_groups: int


def _prepare(probs, groups, targets, num_groups, loss: str, need_targets: bool) -> _Batch:
    """Check the inputs and drop the excluded samples (group code -1)."""
    probs = _check_probs(probs)
    k_t = probs.shape[1]
    s = _check_codes(groups, "groups", probs)
    y = None
    if need_targets:
        if targets is None:
            raise ValueError(MISSING_TARGETS_MSG.format(loss=loss))
        y = _check_codes(targets, "targets", probs)
        bad_y = (y < 0) | (y >= k_t)
        if bool(bad_y.any()):
            raise ValueError(TARGET_CODE_MSG.format(k=k_t, bad=sorted(set(y[bad_y].tolist()))))
    keep = s != EXCLUDED_CODE
    if num_groups is None:
        num_groups = int(s[keep].max()) + 1 if bool(keep.any()) else 1
    num_groups = check_int(num_groups, "num_groups", 1)
    bad_s = keep & ((s < 0) | (s >= num_groups))
    if bool(bad_s.any()):
        raise ValueError(GROUP_CODE_MSG.format(k=num_groups, excluded=EXCLUDED_CODE,
                                               bad=sorted(set(s[bad_s].tolist()))))
    if not bool(keep.all()):
        probs, s = probs[keep], s[keep]
        y = y[keep] if y is not None else None
    return _Batch(probs, s, y, k_t, num_groups)


def _options(empty, reduction) -> tuple[str, str]:
    empty = look_up_named_option(empty, EMPTY_OPTIONS, "empty")
    if isinstance(reduction, LossReduction):
        reduction = reduction.value
    reduction = look_up_named_option(reduction, REDUCTIONS, "reduction")
    return empty, reduction


# -------------------------------------------------------------------------------------------------
# building blocks


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den > 0``, else 0; no NaN or inf in value or gradient."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _entropy(p: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """:math:`-\\sum p \\log p` over ``dims`` (natural log), zero entries skipped in value and gradient."""
    pos = p > 0
    plogp = torch.where(pos, p * torch.log(torch.where(pos, p, torch.ones_like(p))), torch.zeros_like(p))
    return -plogp.sum(dim=dims)


def _mutual_information(joint: torch.Tensor) -> torch.Tensor:
    """:math:`H(X) + H(Y) - H(X, Y)` of joint distributions ``(..., K_x, K_y)``, per leading index."""
    return _entropy(joint.sum(-1), (-1,)) + _entropy(joint.sum(-2), (-1,)) - _entropy(joint, (-2, -1))


class _Terms(NamedTuple):
    terms: torch.Tensor  # the loss's terms (shape per loss)
    valid: torch.Tensor  # bool, broadcastable to terms: the term's cells are non-empty
    code_zero: bool  # the authors' code returns 0 on this batch
    empty: bool  # a cell the loss conditions on has no sample


def _reduce(t: _Terms, empty: str, reduction: str) -> torch.Tensor:
    valid = t.valid.expand_as(t.terms)
    if empty == "zero":
        # the code's value: every term (all valid unless the code returns 0) or 0, graph kept
        kept = torch.where(valid, t.terms, torch.zeros_like(t.terms))
        if t.code_zero:
            kept = kept * 0
        n = t.terms.numel()
    else:
        kept = torch.where(valid, t.terms, torch.zeros_like(t.terms))
        n = int(valid.sum())
    if reduction == LossReduction.NONE.value:
        return kept
    total = kept.sum()
    if reduction == LossReduction.SUM.value:
        return total
    return total / max(n, 1)


def _one_hot(codes: torch.Tensor, k: int, like: torch.Tensor) -> torch.Tensor:
    return F.one_hot(codes, k).to(like.dtype)


def _dp_l2_terms(b: _Batch) -> _Terms:
    s = _one_hot(b.groups, b.num_groups, b.probs)  # (N, K_s)
    n_s = s.sum(0)  # (K_s,)
    cond = _safe_div(s.T @ b.probs, n_s[:, None]).T  # (K_t, K_s): p(yhat = a | s = b)
    marg = b.probs.mean(0) if b.probs.shape[0] else b.probs.sum(0)  # (K_t,): p(yhat = a)
    terms = (cond - marg[:, None]) ** 2
    empty = bool((n_s == 0).any())
    return _Terms(terms, (n_s > 0)[None, :], empty, empty)


def _dp_mi_terms(b: _Batch) -> _Terms:
    n = max(b.probs.shape[0], 1)
    s = _one_hot(b.groups, b.num_groups, b.probs)
    joint = (b.probs.T @ s) / n  # (K_t, K_s): mean_n p_n(a) 1[s_n = b]
    mi = _mutual_information(joint)
    empty = bool((s.sum(0) == 0).any())
    return _Terms(mi, torch.ones((), dtype=torch.bool, device=mi.device), False, empty)


def _class_group_sums(b: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_yc (K_t, K_s), sums (K_t, K_t, K_s))``: counts of (y = b, s = c) and
    ``sums[b, a, c] = sum over those samples of p_n(a)``."""
    y = _one_hot(b.targets, b.num_classes, b.probs)  # (N, K_t)
    s = _one_hot(b.groups, b.num_groups, b.probs)  # (N, K_s)
    n_yc = y.T @ s
    sums = torch.einsum("nb,na,nc->bac", y, b.probs, s)
    return n_yc, sums


def _eo_l2_terms(b: _Batch) -> _Terms:
    n_yc, sums = _class_group_sums(b)
    n_y = n_yc.sum(1)  # (K_t,)
    cond_y = _safe_div(sums.sum(2), n_y[:, None])  # (K_t b, K_t a): p(yhat = a | y = b)
    cond_yc = _safe_div(sums, n_yc[:, None, :])  # (b, a, c): p(yhat = a | y = b, s = c)
    terms = ((cond_yc - cond_y[:, :, None]) ** 2).permute(1, 0, 2)  # (a, b, c)
    empty = bool((n_yc == 0).any())
    return _Terms(terms, (n_yc > 0)[None, :, :], empty, empty)


def _eo_mi_terms(b: _Batch) -> _Terms:
    n_yc, sums = _class_group_sums(b)
    n_y = n_yc.sum(1)
    joint = _safe_div(sums, n_y[:, None, None])  # (b, a, c): joint of (yhat, s) within y = b
    mi = _mutual_information(joint)  # (K_t,)
    class_absent = bool((n_y == 0).any())
    return _Terms(mi, n_y > 0, class_absent, bool((n_yc == 0).any()))


def soft_confusion_matrix(probs: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Soft confusion matrix :math:`C[i, j] = \\sum_n \\mathbb 1[y_n = i]\\, p_n(j)` (rows: true class,
    columns: predicted class), the expected confusion matrix when sample :math:`n` is predicted as
    class :math:`j` with probability :math:`p_n(j)`; on one-hot ``probs`` it is the confusion matrix of
    the hard predictions. Row :math:`i` sums to the number of samples of class :math:`i`.

    Args:
        probs: ``(N, K)`` probabilities.
        targets: ``(N,)`` long class indices.
        num_classes: ``K`` (default ``probs.shape[1]``).

    Returns:
        ``(K, K)`` tensor in ``probs``' dtype, differentiable in ``probs``.
    """
    k = probs.shape[1] if num_classes is None else num_classes
    return _one_hot(targets, k, probs).T @ probs


def _mean_iou(c: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
    """Mean class IoU of confusion matrices ``(..., K, K)``; ``classes`` (bool ``(K,)``) restricts the
    mean, ``None``: all ``K`` classes. A class with union 0 scores 0."""
    diag = torch.diagonal(c, dim1=-2, dim2=-1)
    union = c.sum(-1) + c.sum(-2) - diag
    iou = _safe_div(diag, union)  # (..., K)
    if classes is None:
        return iou.mean(-1)
    w = classes.to(iou.dtype)
    return (iou * w).sum(-1) / w.sum().clamp_min(1)


def _iou_terms(b: _Batch, empty: str) -> _Terms:
    y = _one_hot(b.targets, b.num_classes, b.probs)
    s = _one_hot(b.groups, b.num_groups, b.probs)
    c_g = torch.einsum("ng,ni,nj->gij", s, y, b.probs)  # (K_s, K_t, K_t) per-group soft confusion matrices
    c_all = c_g.sum(0)
    n_yc = (y.T @ s)  # (K_t, K_s)
    n_y = n_yc.sum(1)
    n_s = n_yc.sum(0)
    if empty == "zero":
        classes = None  # the code: mean over all K_t classes, a class absent from a group scores 0
        valid = n_s > 0
    else:
        present = n_y > 0  # classes in the batch's labels
        classes = present
        valid = (n_s > 0) & ((n_yc > 0) | ~present[:, None]).all(0)  # the group has every present class
    terms = (_mean_iou(c_g, classes) - _mean_iou(c_all, classes)) ** 2  # (K_s,)
    return _Terms(terms, valid, bool((n_s == 0).any()), bool((n_yc == 0).any()))


# -------------------------------------------------------------------------------------------------
# public functions


def dp_l2(
    probs: torch.Tensor,
    groups: torch.Tensor | Sequence[int],
    *,
    num_groups: int | None = None,
    empty: str = "leave_out",
    reduction: LossReduction | str = LossReduction.SUM,
) -> torch.Tensor:
    """:math:`L_{dp}^{l_2}`, the l2 demographic-parity loss (Hänel et al., Eq. 3).

    .. math::
        L_{dp}^{l_2} = \\sum_{a=1}^{K_t} \\sum_{b=1}^{K_s}
            \\left[p(\\hat y = a \\mid s = b) - p(\\hat y = a)\\right]^2, \\quad
        p(\\hat y = a \\mid s = b) = \\frac{\\sum_{n: s_n = b} p_n(a)}{|\\{n: s_n = b\\}|}, \\quad
        p(\\hat y = a) = \\frac{1}{N} \\sum_n p_n(a).

    0 when the groups' mean predicted distributions are equal. Terms: ``(K_t, K_s)``, indexed
    ``[a, b]``. Empty cell: a group :math:`b` without samples; ``"leave_out"`` drops its :math:`K_t`
    terms (the marginal is unchanged: the group has no samples), ``"zero"`` returns 0 (the code).

    Args:
        probs: ``(B, K_t)`` probabilities.
        groups: ``(B,)`` or ``(B, 1)`` group codes in ``[0, num_groups)``, ``-1`` = excluded.
        num_groups: :math:`K_s`; default ``None``: the largest code + 1 (a group above every code
            present is then not seen as empty: give it).
        empty: ``"leave_out"`` (default) or ``"zero"``.
        reduction: ``"sum"`` (default, Eq. 3), ``"mean"`` (over the terms used) or ``"none"``.

    Raises:
        TypeError: ``probs`` not a floating tensor, codes of a wrong type.
        ValueError: a shape mismatch (both shapes named), non-finite ``probs`` (value and index
            named), rows that are not probabilities, a group code outside ``[0, num_groups)`` other
            than ``-1`` (the codes named), non-integer codes, an unknown option.

    Example:
        >>> p = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [1.0, 0.0, 0.0],
        ...                   [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
        >>> dp_l2(p, torch.tensor([0, 0, 1, 1, 2, 2]), num_groups=3)  # 0 + 1/8 + 1/8
        tensor(0.2500)
    """
    empty, reduction = _options(empty, reduction)
    b = _prepare(probs, groups, None, num_groups, "dp_l2", need_targets=False)
    return _reduce(_dp_l2_terms(b), empty, reduction)


def dp_mi(
    probs: torch.Tensor,
    groups: torch.Tensor | Sequence[int],
    *,
    num_groups: int | None = None,
    empty: str = "leave_out",
    reduction: LossReduction | str = LossReduction.SUM,
) -> torch.Tensor:
    """:math:`L_{dp}^{MI}`, the mutual information between prediction and group (Hänel et al., Eq. 4).

    .. math::
        L_{dp}^{MI} = H(\\hat y) + H(s) - H(\\hat y, s), \\quad
        p(\\hat y = a, s = b) = \\frac{1}{N} \\sum_n p_n(a)\\, \\mathbb 1[s_n = b],

    with the marginals of that joint (:math:`p(s = b)` the group's share of the batch), natural
    logarithm (nats), zero entries skipped (:math:`0 \\log 0 = 0`). On one-hot ``probs`` it equals
    ``sklearn.metrics.mutual_info_score(groups, argmax)``. One term (``reduction`` ``"none"`` returns
    it 0-d). An absent group is a zero column of the joint, skipped by the entropies, so the value is
    the MI without that group in both ``empty`` modes (the code never returns 0 here).

    Args:
        probs, groups, num_groups, empty, reduction: as :func:`dp_l2`.

    Raises:
        as :func:`dp_l2`.
    """
    empty, reduction = _options(empty, reduction)
    b = _prepare(probs, groups, None, num_groups, "dp_mi", need_targets=False)
    return _reduce(_dp_mi_terms(b), empty, reduction)


def eo_l2(
    probs: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    groups: torch.Tensor | Sequence[int],
    *,
    num_groups: int | None = None,
    empty: str = "leave_out",
    reduction: LossReduction | str = LossReduction.SUM,
) -> torch.Tensor:
    """:math:`L_{eo}^{l_2}`, the l2 equalized-odds loss (Hänel et al., Eq. 6).

    .. math::
        L_{eo}^{l_2} = \\sum_{a=1}^{K_t} \\sum_{b=1}^{K_t} \\sum_{c=1}^{K_s}
            \\left[p(\\hat y = a \\mid y = b, s = c) - p(\\hat y = a \\mid y = b)\\right]^2

    (means of :math:`p_n(a)` over the samples of true class :math:`b` and group :math:`c`, and over
    those of class :math:`b`). 0 when the predictions are independent of the group given the true
    class. Terms: ``(K_t, K_t, K_s)``, indexed ``[a, b, c]``. Empty cells: a (class :math:`b`, group
    :math:`c`) cell without samples (which includes a class absent from the batch);
    ``"leave_out"`` drops the :math:`K_t` terms of that cell, ``"zero"`` returns 0 (the code).

    Args:
        probs: ``(B, K_t)`` probabilities.
        targets: ``(B,)`` or ``(B, 1)`` true classes in ``[0, K_t)``.
        groups, num_groups, empty, reduction: as :func:`dp_l2`.

    Raises:
        as :func:`dp_l2`; also ``ValueError`` for ``targets`` missing, of another batch size, or
        outside ``[0, K_t)`` (the values named).

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
        >>> # class 0: group 0 predicts [1, 0], group 1 [1/2, 1/2], both together [2/3, 1/3]:
        >>> # 2 (1/3)^2 + 2 (1/6)^2 = 5/18; class 1: cell (1, 0) empty (left out), cell (1, 1) gives 0
        >>> eo_l2(p, torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 1, 1]), num_groups=2)
        tensor(0.2778)
    """
    empty, reduction = _options(empty, reduction)
    b = _prepare(probs, groups, targets, num_groups, "eo_l2", need_targets=True)
    return _reduce(_eo_l2_terms(b), empty, reduction)


def eo_mi(
    probs: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    groups: torch.Tensor | Sequence[int],
    *,
    num_groups: int | None = None,
    empty: str = "leave_out",
    reduction: LossReduction | str = LossReduction.SUM,
) -> torch.Tensor:
    """:math:`L_{eo}^{MI}`, the equalized-odds MI loss (Hänel et al., Eq. 7, as printed and as coded).

    .. math::
        L_{eo}^{MI} = \\sum_{b=1}^{K_t} \\left[H(\\hat y \\mid y{=}b) + H(s \\mid y{=}b)
            - H(\\hat y, s \\mid y{=}b)\\right], \\quad
        p(\\hat y = a, s = c \\mid y = b) = \\frac{\\sum_{n: y_n = b} p_n(a)\\, \\mathbb 1[s_n = c]}
            {|\\{n: y_n = b\\}|},

    the MI between prediction and group *within* each true class, summed unweighted over the
    classes. This is not the conditional MI :math:`I(\\hat y; s \\mid y) = \\sum_b p(y{=}b)\\, I_b`
    (which weights by the class shares); with an imbalanced target (ISIC: about 2 % malignant) the
    unweighted sum gives the rare class the same weight as the common one. Terms: ``(K_t,)``, one per
    true class. Empty cells: a class absent from the batch, whose term is dropped (``"leave_out"``) or
    makes the whole loss 0 (``"zero"``, the code); a (class, group) cell without samples is a zero
    entry of that class's joint, skipped by the entropies (both modes, as the code), so that term is
    the MI over the groups present.

    Args:
        probs, targets, groups, num_groups, empty, reduction: as :func:`eo_l2`.

    Raises:
        as :func:`eo_l2`.
    """
    empty, reduction = _options(empty, reduction)
    b = _prepare(probs, groups, targets, num_groups, "eo_mi", need_targets=True)
    return _reduce(_eo_mi_terms(b), empty, reduction)


def iou_loss(
    probs: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    groups: torch.Tensor | Sequence[int],
    *,
    num_groups: int | None = None,
    empty: str = "leave_out",
    reduction: LossReduction | str = LossReduction.SUM,
) -> torch.Tensor:
    """:math:`L_{IoU}`, the IoU-parity loss (Hänel et al., Eq. 12; the code's "conditioned" variant).

    From the soft confusion matrix (:func:`soft_confusion_matrix`) of a set of samples,
    :math:`C[i, j] = \\sum_n \\mathbb 1[y_n = i]\\, p_n(j)`, the soft IoU of class :math:`c` and the
    mean IoU are

    .. math::
        \\mathrm{IoU}_c = \\frac{C[c, c]}{\\sum_j C[c, j] + \\sum_i C[i, c] - C[c, c]}, \\qquad
        \\mathrm{IoU} = \\frac{1}{|\\mathcal C|} \\sum_{c \\in \\mathcal C} \\mathrm{IoU}_c,

    (true count of :math:`c` plus predicted mass of :math:`c` minus their overlap), and

    .. math::
        L_{IoU} = \\sum_{g=1}^{K_s} \\left[\\mathrm{IoU}(g) - \\mathrm{IoU}(\\text{all})\\right]^2

    with :math:`\\mathrm{IoU}(g)` on the samples of group :math:`g` and :math:`\\mathrm{IoU}(\\text{all})`
    on the whole batch. Terms: ``(K_s,)``, one per group.

    Choices where the paper is not explicit (it writes "IoU" without saying per class or mean):

    * **Mean over classes, one IoU per group**, as the authors' code
      (``intersection_over_union``: the per-class soft IoUs averaged over the classes) and as the
      evaluation metric sigma_IoU (:func:`fairmonai.metrics.compute_sigma_iou`), whose differentiable
      surrogate this is. The orientation of :math:`C` does not matter (the code's is transposed).
    * **Plain sum** (Eq. 12) by default; ``reduction="mean"`` divides by the number of groups in the
      sum, which is :math:`K_s` (the code's ``/= K_s``) when none is left out.
    * **Empty cells.** ``empty="zero"`` is the code: 0 when a group has no samples; otherwise the mean
      is over all :math:`K_t` classes, a class absent from a group's labels scoring
      :math:`\\mathrm{IoU}_c = 0` (no intersection is possible), and a class with union 0 (absent from
      the labels, predicted mass exactly 0) scoring 0 where the code would give NaN.
      ``empty="leave_out"`` (default): :math:`\\mathcal C` is the set of classes present in the batch's
      labels (for both :math:`\\mathrm{IoU}(g)` and :math:`\\mathrm{IoU}(\\text{all})`), and a group
      that lacks one of them (or has no samples) is left out of the sum. The code's group IoU would
      count such a class as 0, an offset that no prediction can remove (at K_t = 2 a group without
      malignant cases could score at most 1/2), so its term is dropped rather than driving the
      network.

    Args:
        probs, targets, groups, num_groups, empty, reduction: as :func:`eo_l2`.

    Raises:
        as :func:`eo_l2`.
    """
    empty, reduction = _options(empty, reduction)
    b = _prepare(probs, groups, targets, num_groups, "iou_loss", need_targets=True)
    return _reduce(_iou_terms(b, empty), empty, reduction)
