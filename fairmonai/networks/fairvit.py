"""FairViT-lite: a documented approximation of FairViT on fairmonai's 3-D :class:`ViTClassifier`.

Tian, Du and Shen, "FairViT: Fair Vision Transformer via Adaptive Masking", ECCV 2024 (arXiv
2407.14799; reference code by the authors, read for this module: ``MaskedLinear``, ``TopKBinarizer``,
``Fair_VisionTransformer``, ``LossFunction``/``distance_loss`` and the training loop). No 3-D or medical
FairViT exists; this is the paper's method moved onto MONAI's ViT, with every choice listed below.

Three parts act during training only; the model scored at test is the plain ViT with its main head.

1. **Adaptive masks.** Every block's ``attn.qkv`` (one mask entry per attention head, shared by q, k
   and v and by the head's channels), ``attn.out_proj``, ``mlp.linear1`` and ``mlp.linear2`` (one
   entry per output feature) get, per identity group :math:`j`, a learnable score vector
   :math:`s_j` (0 at start) and the groups share weights :math:`\\varsigma_j` (2 at start, kept in
   (0, 4)). The layer output :math:`y = Wx + b` becomes

   .. math::

       y' = m \\odot y, \\qquad m = 1 + \\sum_{j=1}^{G} \\varsigma_j s_j .

   Scaling the output equals the reference's scaling of the weight rows and the bias by ``m``
   (its ``bias_mask`` is on for these layers; MONAI's qkv has no bias). In eval mode the masks are
   not applied at all (the reference's ``inference_forward`` uses the plain weights), so the eval
   output equals the wrapped ViT's output exactly.
2. **Auxiliary heads**: LayerNorm + Linear on the class token after each of the last
   ``num_aux_heads`` blocks (the reference's ``norm_classifier`` / ``head_classifier``); their
   cross-entropies are added to the main head's (:class:`FairViTLoss`).
3. **Distance loss** (:func:`hyperplane_distance_loss`) to a line fitted by logistic regression
   (:func:`fit_margin_hyperplane`) that separates correctly from wrongly classified cases in the
   plane (true-class logit, competitor logits), refitted each epoch on a calibration split
   (:func:`calibration_split`) and off in the first epoch.

Choices where the paper or the reference is ambiguous, each with its reason:

* **Routing** (``routing=``). In the reference the *forward* mask is the same for every case of the
  batch, :math:`1 + \\sum_j \\varsigma_j s_j` over *all* groups (the paper's sum); the group enters
  only the backward pass: its custom autograd function gives :math:`s_j` the gradient
  :math:`\\varsigma_j (n_j / B)\\,\\partial L/\\partial m` and :math:`\\varsigma_j` the gradient
  :math:`(n_j / B)\\, s_j \\cdot \\partial L/\\partial m`, :math:`n_j` the cases of group :math:`j` in the
  batch of :math:`B`. ``routing="shared"`` (default) reproduces exactly that (the forward value is the
  full sum; each term's gradient is scaled by its group's batch share through a detach split).
  ``routing="sample"`` is the literal "group-routed" reading of the issue: case :math:`i` of group
  :math:`g_i` is scaled by :math:`1 + \\varsigma_{g_i} s_{g_i}` (one non-zero term per case), so a
  group's mask changes only its own cases. Default "shared" because the comparison baseline
  should be the published method where the code is unambiguous; "sample" is offered because the
  shared mask is, in the forward pass, a group-blind rescaling.
* **varsigma**: one weight per group shared by all masked layers, as the reference's
  ``args.varsigma``. The reference updates it by hand with its own rate and clips it to
  ``[1e-8, 4 - 1e-8]`` after every step; here it is an ``nn.Parameter`` the optimizer updates
  (``learn_varsigma=False`` freezes it at ``varsigma_init``), projected into
  ``[varsigma_min, varsigma_max]`` (default ``[1e-8, 4 - 1e-6]``, the open (0, 4) in float32) at the
  start of every training forward, i.e. after every optimizer step, and clamped where it is used.
* **Aux heads after the last blocks, the final block included**: with 12 blocks and 4 heads, after
  blocks 9-12 (1-based). The head after the final block reads the same tokens as the main head
  but through its own LayerNorm and Linear. ``aux_blocks=`` chooses other blocks (0-based). The
  reference's default ``classifiers=[3, 7]`` is two heads after blocks 3 and 7; the issue asks
  for four after the last four. PyTorch's default initialisation for the new layers.
* The reference's binarizer/threshold machinery (``TopKBinarizer``, ``threshold_fc``) computes a
  top-k count that the forward never uses; it is left out.
* Group codes are checked as in FIN (a code ``-1`` or ``>= num_groups`` raises naming the
  positions); in eval mode the code is not needed and is ignored.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import ViT
from monai.utils import LossReduction
from torch import nn
from torch.nn.modules.loss import _Loss

from .fin import _as_codes, _check_range
from .vit_classifier import ViTClassifier

__all__ = [
    "FairViTLite",
    "FairViTOutput",
    "FairViTLoss",
    "Hyperplane",
    "margin_coordinates",
    "fit_margin_hyperplane",
    "hyperplane_distance_loss",
    "calibration_split",
    "calibration_datalists",
    "NOT_A_VIT_MSG",
    "MISSING_SENSITIVE_TRAIN_MSG",
    "BAD_ROUTING_MSG",
    "BAD_AUX_MSG",
]

#: raised by :class:`FairViTLite` for any backbone that is not a :class:`ViTClassifier`.
NOT_A_VIT_MSG = (
    "FairViTLite needs a fairmonai.networks.ViTClassifier (its masks act on the transformer blocks' "
    "qkv, out_proj, linear1 and linear2), got {type}: FairViT has no DenseNet or CNN form{hint}"
)
#: raised by :meth:`FairViTLite.forward` in training mode without the group codes.
MISSING_SENSITIVE_TRAIN_MSG = (
    "FairViTLite in training mode needs the group code of every case for its masks: call "
    "network(x, sensitive=codes) with codes a (B,) integer tensor (in a MONAI trainer, prepare_batch="
    "monai.engines.PrepareBatchExtraInput({'sensitive': '<attribute>_code'})); eval mode does not need them"
)
#: raised for an unknown ``routing``.
BAD_ROUTING_MSG = "routing must be one of {allowed}, got {got!r}"
#: raised for aux heads that do not fit the backbone.
BAD_AUX_MSG = "aux_blocks must be distinct block indices in [0, {n}) (the ViT has {n} blocks), got {got}"

_ROUTINGS = ("shared", "sample")


class FairViTOutput(NamedTuple):
    """What :class:`FairViTLite` returns in training mode.

    Attributes:
        logits: main head ``(B, C)`` (the class token after the final LayerNorm).
        aux_logits: auxiliary heads ``(B, K, C)``, head ``k`` after block ``aux_blocks[k]``.
    """

    logits: torch.Tensor
    aux_logits: torch.Tensor


class Hyperplane(NamedTuple):
    """A line :math:`\\theta_1 x + \\theta_2 y + b = 0` in the (true-class logit, competitor) plane;
    positive side: correctly classified."""

    theta1: float
    theta2: float
    bias: float


class _MaskHook:
    """Forward hook multiplying one Linear's output by its mask while the owner is in a training forward.

    An object rather than a closure so that ``copy.deepcopy`` of the model re-points it at the
    copy (a closure would keep masking with the original's parameters) and the model pickles.
    """

    def __init__(self, owner: "FairViTLite", key: str, per_head: tuple[int, int] | None) -> None:
        self.owner, self.key, self.per_head = owner, key, per_head

    def __call__(self, module: nn.Module, args, out: torch.Tensor):
        owner = self.owner
        if not owner.training or owner._route is None:
            return None
        m = owner._mask(self.key)
        if self.per_head is not None:  # (.., H) -> (.., 3 * H * D), MONAI's qkv layout "(qkv l d)"
            m = m.repeat_interleave(self.per_head[1], dim=-1)
            m = torch.cat([m, m, m], dim=-1)
        if m.ndim == 2:  # (B, F) -> (B, 1, F) over the tokens
            m = m.unsqueeze(1)
        return out * m.to(out.dtype)


class FairViTLite(nn.Module):
    """A :class:`ViTClassifier` with FairViT's group masks and auxiliary heads (training only).

    The backbone is kept as is (``self.backbone``, state-dict keys ``backbone.vit...``); the masks
    act through forward hooks on its Linear layers, so no MONAI module is replaced or copied.
    Mask scores live in ``self.masks`` (keys ``block{b}_{qkv|out_proj|linear1|linear2}``, shapes
    ``(G, num_heads)``, ``(G, hidden)``, ``(G, mlp_dim)``, ``(G, hidden)``), the group weights in
    ``self.varsigma`` ``(G,)``. See the module docstring for the equations and choices.

    ``forward(x, sensitive)``:

    * training mode: ``sensitive`` required; returns :class:`FairViTOutput` ``(logits (B, C),
      aux_logits (B, K, C))``, masks applied. :class:`FairViTLoss` takes it as ``input``.
      MONAI decollates it per case into ``[logits_i, aux_i]``; a train-time post-processing or
      metric takes the first item.
    * eval mode: returns the main logits ``(B, C)``, exactly the wrapped ViT's output; ``sensitive``
      is optional and ignored.

    Args:
        backbone: a fairmonai ``ViTClassifier`` (anything else raises ``TypeError``).
        num_groups: number of identity groups ``G`` (codes ``0 .. G-1``).
        num_aux_heads: auxiliary heads after the last ``num_aux_heads`` blocks (default 4); ignored
            when ``aux_blocks`` is given.
        varsigma_init: initial :math:`\\varsigma_j` (default 2).
        varsigma_min, varsigma_max: the projection range of :math:`\\varsigma` (default
            ``[1e-8, 4 - 1e-6]``).
        learn_varsigma: :math:`\\varsigma` is a trained parameter (default ``True``) or fixed.
        routing: ``"shared"`` (default, the reference) or ``"sample"`` (see the module docstring).
        aux_blocks: 0-based block indices for the aux heads (default: the last ``num_aux_heads``).

    Raises:
        TypeError: ``backbone`` is not a ``ViTClassifier`` (:data:`NOT_A_VIT_MSG`).
        ValueError: ``num_groups`` < 1; unknown ``routing``; aux blocks outside the ViT or repeated;
            ``varsigma_init`` outside the range; at forward, training without ``sensitive``
            (:data:`MISSING_SENSITIVE_TRAIN_MSG`) or a code outside ``[0, num_groups)``.

    Example:
        >>> vit = ViTClassifier(1, 32, 16, hidden_size=48, mlp_dim=96, num_layers=4, num_heads=4)
        >>> net = FairViTLite(vit, num_groups=3)
        >>> out = net.train()(torch.randn(2, 1, 32, 32, 32), sensitive=torch.tensor([0, 2]))
        >>> out.logits.shape, out.aux_logits.shape
        (torch.Size([2, 2]), torch.Size([2, 4, 2]))
    """

    def __init__(self, backbone: nn.Module, num_groups: int, num_aux_heads: int = 4, *,
                 varsigma_init: float = 2.0, varsigma_min: float = 1e-8, varsigma_max: float = 4.0 - 1e-6,
                 learn_varsigma: bool = True, routing: str = "shared",
                 aux_blocks: Sequence[int] | None = None) -> None:
        super().__init__()
        if not isinstance(backbone, ViTClassifier):
            hint = (" (wrap a MONAI ViT as fairmonai.networks.ViTClassifier)" if isinstance(backbone, ViT)
                    else "; give it a ViT backbone (in a bundle, the ViT network overlay)")
            raise TypeError(NOT_A_VIT_MSG.format(type=type(backbone).__name__, hint=hint))
        if int(num_groups) < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        if routing not in _ROUTINGS:
            raise ValueError(BAD_ROUTING_MSG.format(allowed=list(_ROUTINGS), got=routing))
        if not 0.0 < float(varsigma_min) < float(varsigma_max):
            raise ValueError(f"need 0 < varsigma_min < varsigma_max, got {varsigma_min} and {varsigma_max}")
        if not float(varsigma_min) <= float(varsigma_init) <= float(varsigma_max):
            raise ValueError(f"varsigma_init must be in [{varsigma_min}, {varsigma_max}], got {varsigma_init}")
        vit = backbone.vit
        blocks = list(vit.blocks)
        n = len(blocks)
        if aux_blocks is None:
            if not 0 <= int(num_aux_heads) <= n:
                raise ValueError(BAD_AUX_MSG.format(n=n, got=f"the last {num_aux_heads}"))
            aux_blocks = list(range(n - int(num_aux_heads), n))
        aux_blocks = [int(b) for b in aux_blocks]
        if len(set(aux_blocks)) != len(aux_blocks) or any(not 0 <= b < n for b in aux_blocks):
            raise ValueError(BAD_AUX_MSG.format(n=n, got=aux_blocks))
        self.backbone = backbone
        self.num_groups = int(num_groups)
        self.routing = routing
        self.aux_blocks = tuple(aux_blocks)
        self.varsigma_min, self.varsigma_max = float(varsigma_min), float(varsigma_max)
        head = vit.classification_head
        hidden, num_classes = head.in_features, head.out_features
        self.num_classes = num_classes
        self.aux_heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, num_classes)) for _ in self.aux_blocks)
        self.varsigma = nn.Parameter(torch.full((self.num_groups,), float(varsigma_init)),
                                     requires_grad=bool(learn_varsigma))
        self.masks = nn.ParameterDict()
        self._route: Optional[torch.Tensor] = None  # batch shares (shared) or codes (sample), set per forward
        for b, blk in enumerate(blocks):
            attn, mlp = blk.attn, blk.mlp
            layers = {"qkv": attn.qkv, "out_proj": attn.out_proj, "linear1": mlp.linear1, "linear2": mlp.linear2}
            for name, layer in layers.items():
                if not isinstance(layer, nn.Linear):
                    raise TypeError(f"block {b}: {name} is {type(layer).__name__}, FairViTLite masks a Linear "
                                    "(MONAI ViT with use_combined_linear=True and include_fc=True)")
                if name == "qkv":
                    width, per_head = attn.num_heads, (attn.num_heads, attn.dim_head)
                else:
                    width, per_head = layer.out_features, None
                key = f"block{b}_{name}"
                self.masks[key] = nn.Parameter(torch.zeros(self.num_groups, width))
                layer.register_forward_hook(_MaskHook(self, key, per_head))

    def extra_repr(self) -> str:
        return (f"num_groups={self.num_groups}, routing={self.routing!r}, aux_blocks={self.aux_blocks}, "
                f"varsigma_range=[{self.varsigma_min}, {self.varsigma_max}]")

    def mask_parameters(self) -> list[nn.Parameter]:
        """The mask scores and :math:`\\varsigma` (e.g. for their own optimizer parameter group)."""
        return [*self.masks.values(), self.varsigma]

    def _mask(self, key: str) -> torch.Tensor:
        """``m`` for one layer: ``(F,)`` (shared) or ``(B, F)`` (sample); F = heads for qkv."""
        s = self.masks[key]
        sig = self.varsigma.clamp(self.varsigma_min, self.varsigma_max)
        route = self._route
        if self.routing == "sample":
            return 1.0 + sig[route].unsqueeze(-1) * s[route]
        term = sig.unsqueeze(-1) * s  # (G, F)
        share = route.unsqueeze(-1)  # (G, 1): n_j / B
        # value: the full sum; gradient of term j scaled by its group's batch share (the reference's backward)
        return 1.0 + (share * term + ((1.0 - share) * term).detach()).sum(0)

    def forward(self, x: torch.Tensor, sensitive: Optional[torch.Tensor] = None):
        if not self.training:
            return self.backbone(x)
        if sensitive is None:
            raise ValueError(MISSING_SENSITIVE_TRAIN_MSG)
        codes = _as_codes(sensitive, x.shape[0])
        _check_range(codes, self.num_groups)
        codes = codes.to(self.varsigma.device)
        with torch.no_grad():  # projected gradient step: keep varsigma in range after every update
            self.varsigma.clamp_(self.varsigma_min, self.varsigma_max)
        if self.routing == "sample":
            self._route = codes
        else:
            self._route = torch.bincount(codes, minlength=self.num_groups).float() / codes.numel()
        try:
            logits, hidden = self.backbone.vit(x)
        finally:
            self._route = None
        aux = [head(hidden[b][:, 0]) for b, head in zip(self.aux_blocks, self.aux_heads)]
        aux_logits = torch.stack(aux, dim=1) if aux else logits.new_zeros(logits.shape[0], 0, logits.shape[1])
        return FairViTOutput(logits, aux_logits)


def margin_coordinates(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The plane FairViT's hyperplane lives in: ``(B, 2)`` = (true-class logit, competitor logits).

    The competitor coordinate is the sum of the two largest logits with the true class removed
    (the reference's loss: ``topk(2)`` minus the true class): with two classes, the other class's
    logit; with more, the best competitor when the true class is in the top two, else the sum of
    the top two. The reference fits its line with ``top-3`` but computes the loss with ``top-2``;
    here both use ``top-2`` so the line and the loss share one plane. Ties are resolved by index.

    Args:
        logits: ``(B, C)``, ``C >= 2``.
        labels: ``(B,)`` or ``(B, 1)`` class indices.

    Raises:
        ValueError: logits not ``(B, C)`` with ``C >= 2``, or labels of another length.
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (B, C) with C >= 2, got {tuple(logits.shape)}")
    y = torch.as_tensor(labels, device=logits.device).reshape(-1).long()
    if y.numel() != logits.shape[0]:
        raise ValueError(f"labels must have {logits.shape[0]} entries (one per row of logits), got {y.numel()}")
    true = logits.gather(1, y[:, None])[:, 0]
    top = logits.topk(2, dim=1)
    keep = (top.indices != y[:, None]).to(logits.dtype)
    other = (top.values * keep).sum(1)
    return torch.stack([true, other], dim=1)


def fit_margin_hyperplane(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, *, seed: int,
                          cs: int = 10, cv: int = 5) -> Hyperplane | None:
    """Logistic regression of "correctly classified" on :func:`margin_coordinates` (FairViT's line).

    The reference fits ``LogisticRegressionCV(Cs=10, cv=5, solver="lbfgs")`` (accuracy as the CV score,
    its default) on the model's outputs
    in eval mode, label 1 = argmax equals the true class; the positive side of the line is then
    the correct side. The same here, with the folds stratified and shuffled by ``seed``. Call it on
    the main-head logits (eval mode, masks off) of the calibration split only
    (:func:`calibration_split`), never on a held-out fold or the test cohort.

    Small calibration sets: ``cv`` drops to the smaller class count; with a class of one case a
    plain ``LogisticRegression(C=1)`` is fitted. With one class only (every case right, or every
    case wrong) there is no line: returns ``None`` with a warning, and the distance loss stays off
    for that epoch; also when the fitted :math:`\\theta` is zero.

    Args:
        logits: ``(N, C)`` main-head logits.
        labels: ``(N,)`` true classes.
        seed: seeds the fold shuffle.
        cs, cv: of ``LogisticRegressionCV`` (defaults 10 and 5, the reference's).

    Returns:
        :class:`Hyperplane` or ``None``.
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    z = torch.as_tensor(logits).detach().float().cpu()
    y = torch.as_tensor(labels).reshape(-1).long().cpu()
    xy = margin_coordinates(z, y).numpy().astype(np.float64)
    correct = (z.argmax(1) == y).numpy().astype(int)
    counts = np.bincount(correct, minlength=2)
    if counts.min() == 0:
        warnings.warn(f"fit_margin_hyperplane: all {len(correct)} calibration cases are "
                      f"{'correctly' if counts[1] else 'wrongly'} classified, no line to fit: distance loss off "
                      "this epoch", stacklevel=2)
        return None
    folds = min(int(cv), int(counts.min()))
    if folds >= 2:
        model = LogisticRegressionCV(Cs=int(cs), cv=StratifiedKFold(folds, shuffle=True, random_state=int(seed)),
                                     solver="lbfgs", scoring="accuracy")
    else:
        model = LogisticRegression(C=1.0, solver="lbfgs")
    with warnings.catch_warnings():  # scikit-learn 1.8+ announces changed defaults; the fit is the same
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(xy, correct)
    t1, t2 = (float(v) for v in model.coef_[0])
    if t1 == 0.0 and t2 == 0.0:
        warnings.warn("fit_margin_hyperplane: the fitted line has theta = 0: distance loss off this epoch",
                      stacklevel=2)
        return None
    return Hyperplane(t1, t2, float(model.intercept_[0]))


def hyperplane_distance_loss(logits: torch.Tensor, labels: torch.Tensor, hyperplane: Hyperplane | Sequence[float],
                             *, alpha: float = 0.1, gamma: float = 0.5, offset: float = 0.0,
                             saturation: float = 10.0, saturated_value: float = -2.0,
                             reduction: str = "sum") -> torch.Tensor:
    """FairViT's distance loss: push each case to the correct side of the line, less once it is there.

    With :math:`(x_i, y_i)` from :func:`margin_coordinates` and the signed distance

    .. math::

        d_i = \\frac{\\theta_1 x_i + \\theta_2 y_i + b - \\text{offset}}{\\sqrt{\\theta_1^2 + \\theta_2^2}},
        \\qquad
        \\ell_i = \\begin{cases} -d_i & d_i < 0 \\text{ (wrong side)} \\\\
                                -\\gamma\\, d_i & 0 \\le d_i < 10 \\\\
                                -2 & d_i \\ge 10 \\end{cases},
        \\qquad L = \\alpha \\sum_i \\ell_i .

    **gamma** is the slope on the correct side relative to 1 on the wrong side: a case already
    classified correctly is pushed further at ``gamma`` (0.5) times the rate of a misclassified one.
    **alpha** weighs the term against the cross-entropies. Both as the reference's ``distance_loss``
    (``args.gamma``, ``args.alpha``), including its constant ``-2`` beyond distance 10 (no gradient
    there; the value jumps from ``-10 gamma`` to ``-2``: kept so logged losses match the reference)
    and its **sum** over the batch (``reduction="sum"``; the term then grows with the batch size;
    ``"mean"`` divides by ``B``). ``offset`` is the reference's ``args.bias`` (default 0).
    Computed in float32.

    Args:
        logits: ``(B, C)`` main-head logits (training forward).
        labels: ``(B,)`` or ``(B, 1)`` true classes.
        hyperplane: :class:`Hyperplane` or ``(theta1, theta2, b)``.
        alpha, gamma, offset, saturation, saturated_value: as above (defaults 0.1, 0.5, 0, 10, -2).
        reduction: ``"sum"`` (default, the reference), ``"mean"`` or ``"none"`` (``(B,)``, times alpha).

    Raises:
        ValueError: bad shapes (:func:`margin_coordinates`), ``theta = 0``, unknown ``reduction``.
    """
    t1, t2, b = (float(v) for v in hyperplane)
    norm = math.hypot(t1, t2)
    if norm == 0.0:
        raise ValueError("the hyperplane has theta1 = theta2 = 0: it has no normal, the distance is undefined")
    reduction = LossReduction(reduction).value
    xy = margin_coordinates(logits.float(), labels)
    d = (t1 * xy[:, 0] + t2 * xy[:, 1] + (b - float(offset))) / norm
    per_case = torch.where(d >= saturation, torch.full_like(d, float(saturated_value)),
                           torch.where(d >= 0, -float(gamma) * d, -d))
    per_case = float(alpha) * per_case
    if reduction == "sum":
        return per_case.sum()
    if reduction == "mean":
        return per_case.mean()
    return per_case


class FairViTLoss(_Loss):
    """Cross-entropy of the main head plus each auxiliary head, plus the distance loss when a line is set.

    .. math::

        L = \\mathrm{CE}(z, t) + \\sum_{k=1}^{K} \\mathrm{CE}(z^{(k)}, t)
            + [h \\ne \\varnothing]\\; \\alpha \\sum_i \\ell_i(z, t; h)

    (the reference's ``LossFunction``: each CE a batch mean, aux heads unweighted, the distance on
    the main logits only). ``input`` is the :class:`FairViTOutput` of a training forward; a plain
    ``(B, C)`` tensor (an eval-mode forward, e.g. a validation loss) gives the main CE only.

    The line ``self.hyperplane`` is ``None`` at construction, so the distance term is off in the
    first epoch; at the start of each later epoch the bundle calls :meth:`refit` with the
    calibration split's eval-mode logits (ignite's ``engine.state.epoch`` is 1-based: pass
    ``epoch=engine.state.epoch - 1``). ``sensitive`` is accepted (the fair trainer passes it) and
    not used: the group acts through the network's masks.

    Args:
        alpha, gamma: of :func:`hyperplane_distance_loss` (defaults 0.1, 0.5).
        distance_reduction: ``"sum"`` (default, the reference) or ``"mean"``.
        offset: the reference's ``args.bias`` (default 0).
        start_epoch: first 0-based epoch with the distance term (default 1: off in epoch 0).
        seed: seeds :func:`fit_margin_hyperplane`'s folds (default 0).

    Raises:
        ValueError: logits and target of different lengths; ``distance_reduction`` not sum/mean.
    """

    def __init__(self, alpha: float = 0.1, gamma: float = 0.5, *, distance_reduction: str = "sum",
                 offset: float = 0.0, start_epoch: int = 1, seed: int = 0) -> None:
        super().__init__(reduction="mean")
        if distance_reduction not in ("sum", "mean"):
            raise ValueError(f"distance_reduction must be one of ['sum', 'mean'], got {distance_reduction!r}")
        self.alpha, self.gamma, self.offset = float(alpha), float(gamma), float(offset)
        self.distance_reduction = distance_reduction
        self.start_epoch, self.seed = int(start_epoch), int(seed)
        self.hyperplane: Hyperplane | None = None

    def refit(self, logits: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> Hyperplane | None:
        """Set ``self.hyperplane`` for 0-based ``epoch``: ``None`` before ``start_epoch``, else fitted."""
        if int(epoch) < self.start_epoch:
            self.hyperplane = None
        else:
            self.hyperplane = fit_margin_hyperplane(logits, labels, seed=self.seed + int(epoch))
        return self.hyperplane

    def forward(self, input, target: torch.Tensor, *, sensitive: Optional[torch.Tensor] = None) -> torch.Tensor:
        if isinstance(input, torch.Tensor):
            logits, aux = input, None
        else:
            logits, aux = input[0], input[1]
        t = torch.as_tensor(target, device=logits.device).reshape(-1).long()
        if t.numel() != logits.shape[0]:
            raise ValueError(f"target has {t.numel()} entries but the logits {tuple(logits.shape)} have "
                             f"{logits.shape[0]} rows")
        loss = F.cross_entropy(logits, t)
        if aux is not None:
            for k in range(aux.shape[1]):
                loss = loss + F.cross_entropy(aux[:, k], t)
        if self.hyperplane is not None and aux is not None:
            loss = loss + hyperplane_distance_loss(logits, t, self.hyperplane, alpha=self.alpha, gamma=self.gamma,
                                                   offset=self.offset, reduction=self.distance_reduction)
        return loss


def calibration_split(indices: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray,
                      groups: Sequence[int] | np.ndarray, *, fraction: float = 0.1,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training part into (training, calibration), seeded and stratified on label x group.

    The function sees only what it is given: pass the fold's *training part* (the cases the model
    trains on), never the held-out fold or the test cohort, and the calibration line
    (:func:`fit_margin_hyperplane`) can only be fitted on training cases. The calibration cases
    are held out of training (they are returned apart) so the line sees the model's errors on
    unseen cases; late in training the training cases are almost all classified correctly, and a
    line fitted on them would have one class only.

    Size ``n_cal = round(fraction * N)`` (halves up), at least 1 and at most ``N - 1``. Each
    label x group cell gets ``n_cal * n_cell / N`` cases rounded by largest remainder (ties broken
    by the seeded generator), so the calibration part keeps the cells' shares; members are drawn
    by ``numpy.random.default_rng(seed)``. Both parts keep the input order.

    Args:
        indices: ``(N,)`` case identifiers (dataset indices or ids) of the training part.
        labels: ``(N,)`` class labels; ``groups``: ``(N,)`` group codes.
        fraction: calibration share (default 0.1), in (0, 1).
        seed: required; the same seed gives the same split.

    Returns:
        ``(train_indices, calibration_indices)`` as numpy arrays.

    Raises:
        ValueError: lengths differ, fewer than 2 cases, ``fraction`` outside (0, 1), repeated indices.
    """
    idx, y, g = np.asarray(indices), np.asarray(labels).reshape(-1), np.asarray(groups).reshape(-1)
    n = idx.shape[0]
    if idx.ndim != 1 or y.shape[0] != n or g.shape[0] != n:
        raise ValueError(f"indices, labels and groups must be 1-D of one length, got {idx.shape}, {y.shape}, "
                         f"{g.shape}")
    if n < 2:
        raise ValueError(f"calibration_split needs at least 2 cases, got {n}")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if len(np.unique(idx)) != n:
        raise ValueError("indices must be distinct (one entry per case)")
    rng = np.random.default_rng(int(seed))
    n_cal = min(max(int(math.floor(float(fraction) * n + 0.5)), 1), n - 1)
    _, cell = np.unique(np.stack([y, g], axis=1), axis=0, return_inverse=True)
    cell = cell.reshape(-1)
    sizes = np.bincount(cell)
    exact = n_cal * sizes / n
    quota = np.floor(exact).astype(int)
    order = np.lexsort((rng.random(len(sizes)), -(exact - quota)))  # largest remainder first, seeded ties
    quota[order[: n_cal - quota.sum()]] += 1
    chosen = np.zeros(n, dtype=bool)
    for c, q in enumerate(quota):
        members = np.flatnonzero(cell == c)
        chosen[rng.permutation(members)[:q]] = True
    return idx[~chosen], idx[chosen]


def calibration_datalists(datalist: Sequence[dict], *, group_key: str, label_key: str = "label",
                          fraction: float = 0.1, seed: int) -> tuple[list[dict], list[dict]]:
    """:func:`calibration_split` of a MONAI datalist: ``(training cases, calibration cases)``.

    ``datalist`` is the fold's training part (``@train#datalist`` of a bundle), never the held-out
    fold or the test cohort; both returned lists keep its order.

    Raises:
        KeyError: a case lacks ``label_key`` or ``group_key`` (the case is named by its ``case_id``
            or position).
        ValueError: see :func:`calibration_split`.
    """
    for i, d in enumerate(datalist):
        for key in (label_key, group_key):
            if key not in d:
                raise KeyError(f"calibration_datalists: case {d.get('case_id', f'#{i}')} has no key '{key}' "
                               f"(keys: {sorted(map(str, d))})")
    labels = [int(d[label_key]) for d in datalist]
    groups = [int(d[group_key]) for d in datalist]
    train_idx, cal_idx = calibration_split(np.arange(len(datalist)), labels, groups, fraction=fraction, seed=seed)
    return [datalist[i] for i in train_idx], [datalist[i] for i in cal_idx]
