"""Fair Identity Normalization (FIN) of Harvard-GF, on a MONAI backbone's pooled feature.

Luo et al., "Harvard Glaucoma Fairness: A Retinal Nerve Disease Dataset for Fairness Learning and
Fair Identity Normalization", IEEE TMI 2024 (reference code: Harvard-Ophthalmology-AI-Lab/Harvard-GF).
FIN normalises the feature vector the classifier reads with a learnable mean and scale *per
identity group* (and per feature), and mixes the normalised feature with the raw one:

.. math::

    \\hat f = \\frac{f - \\mu_g}{\\operatorname{softplus}(s_g) + \\epsilon}, \\qquad
    \\operatorname{FIN}(f, g) = m\\,\\hat f + (1 - m)\\,f,

with :math:`\\mu, s \\in \\mathbb{R}^{G \\times F}` learned by back-propagation (no running statistics),
:math:`\\epsilon = 10^{-6}` and :math:`m = 0.7` (the reference's ``momentum = 0.3`` weights the raw
feature). A bias-free linear layer maps the result to the logits.

Four parts:

* :class:`FairIdentityNormalization`: the layer, ``(B, F)`` features and ``(B,)`` group codes.
* :class:`FINClassifier`: a MONAI ``DenseNet`` (the 1024-d pooled feature of ``DenseNet121``) or a
  :class:`~fairmonai.networks.ViTClassifier` (the class token after the final LayerNorm) with its
  head removed, then FIN, then ``Linear(F, num_classes, bias=False)``. ``forward(x, sensitive)``.
* :func:`check_group_codes`: the same check on a datalist, before a run starts (inference).
* :class:`FINPrepareBatch`: MONAI's :class:`~monai.engines.PrepareBatchExtraInput` that passes the
  batch's group codes to the network as ``sensitive=`` and, before anything runs, names the cases
  whose code is missing or excluded (``-1``).

Differences from the reference, each a choice:

* **Two logits and cross-entropy**, like the other fairmonai models (the reference ends in one logit
  and ``BCEWithLogitsLoss``). With two classes this is the same model family (a softmax over two
  logits is a sigmoid of their difference).
* **Vectorised**: the ``(G, F)`` parameters are indexed by the group codes, one gather instead of the
  reference's per-sample loop with in-place writes; the result is the same (tested).
* **Group codes are checked**: the reference indexes its parameter table with the code as is, so a
  code ``-1`` (fairmonai's ``EXCLUDED_CODE``) silently takes the *last* group's statistics (Python
  negative indexing) and on CUDA an out-of-range code is a device-side assert. Here a code outside
  ``[0, num_groups)`` raises :class:`ValueError` naming the positions and codes: FIN cannot score a
  case without its group. This costs one host sync per forward, small beside the backbone.
* **Initial scale**: ``init_scale="randn"`` (default) draws ``s ~ N(0, 1)`` as the reference's
  training script; ``"ones"`` sets ``s = 1`` (the reference's ``test`` branch), i.e. an initial scale
  of ``softplus(1) = 1.313`` for every feature. ``mu ~ 0.01 N(0, 1)`` in both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from monai.engines import PrepareBatchExtraInput
from monai.networks.nets import DenseNet, ViT
from torch import nn

from .vit_classifier import ViTClassifier

__all__ = [
    "FairIdentityNormalization",
    "FINClassifier",
    "FINPrepareBatch",
    "check_group_codes",
    "MISSING_SENSITIVE_MSG",
    "BAD_GROUP_CODE_MSG",
    "MISSING_GROUP_KEY_MSG",
    "EXCLUDED_GROUP_CASES_MSG",
]

#: raised by :meth:`FINClassifier.forward` called without the group codes.
MISSING_SENSITIVE_MSG = (
    "FINClassifier needs the group code of every case: call network(x, sensitive=codes) with codes a (B,) "
    "integer tensor. In a MONAI engine (trainer, evaluator and the inference evaluator) set "
    "prepare_batch to monai.engines.PrepareBatchExtraInput({'sensitive': '<attribute>_code'}) "
    "(or fairmonai.networks.FINPrepareBatch('<attribute>_code'))"
)
#: raised when a group code is outside ``[0, num_groups)``.
BAD_GROUP_CODE_MSG = (
    "FairIdentityNormalization has {num_groups} groups (codes 0..{last}) but got code(s) {codes} at batch "
    "position(s) {positions}; code -1 marks a case whose attribute is missing and excluded: FIN cannot "
    "normalise a case without its group"
)
#: raised by :class:`FINPrepareBatch` when the batch lacks the group key.
MISSING_GROUP_KEY_MSG = (
    "the batch has no group key {key!r}, which FIN needs for every case (cases {cases}); the batch keys are "
    "{keys}. For inference, read the cases from a manifest that has the attribute's column"
)
#: raised by :class:`FINPrepareBatch` for cases whose code is missing or out of range.
EXCLUDED_GROUP_CASES_MSG = (
    "FIN needs the group of every case, but {key!r} is {codes} (valid: 0..{last}) for case(s) {cases}; "
    "code -1 means the attribute is missing and excluded by the schema's missing-value policy"
)

_INIT_SCALES = ("randn", "ones")


def _as_codes(sensitive: torch.Tensor, batch: int) -> torch.Tensor:
    """``sensitive`` as a ``(B,)`` long tensor, or a clear error."""
    codes = torch.as_tensor(sensitive)
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise TypeError(f"the group codes (sensitive) must be integers, got dtype {codes.dtype}")
    if codes.ndim == 2 and codes.shape[1] == 1:
        codes = codes[:, 0]
    if tuple(codes.shape) != (batch,):
        raise ValueError(f"the group codes (sensitive) must have shape ({batch},) (one per case of the batch), "
                         f"got {tuple(codes.shape)}")
    return codes.long()


def _check_range(codes: torch.Tensor, num_groups: int) -> None:
    bad = (codes < 0) | (codes >= num_groups)
    if bool(bad.any()):
        pos = torch.nonzero(bad).flatten()
        raise ValueError(BAD_GROUP_CODE_MSG.format(num_groups=num_groups, last=num_groups - 1,
                                                   codes=codes[pos].tolist(), positions=pos.tolist()))


class FairIdentityNormalization(nn.Module):
    """Per-group learnable normalisation of a feature vector, mixed with the raw feature (Luo et al. 2024).

    .. math::

        \\operatorname{FIN}(f, g) = m\\,\\frac{f - \\mu_g}{\\operatorname{softplus}(s_g) + \\epsilon}
        + (1 - m)\\,f

    ``mu`` and ``s`` are ``(num_groups, num_features)`` parameters learned with the network; there are
    no running statistics, so training and evaluation compute the same function.

    Under autocast (AMP) the normalisation runs in float32: the division by
    ``softplus(s) + 1e-6`` can amplify a feature a thousandfold, beyond float16's range, and ``1e-6``
    is below bfloat16's resolution. The output has the dtype PyTorch's type promotion gives the input
    and the parameters: float32 under autocast with float32 parameters (the next ``Linear`` is an
    autocast op and casts it back down itself), and the input's dtype when the whole model was cast.

    Args:
        num_groups: number of identity groups ``G`` (codes ``0 .. G-1``).
        num_features: feature size ``F``.
        init_scale: ``"randn"`` (default, the reference's training initialisation, ``s ~ N(0, 1)``)
            or ``"ones"`` (``s = 1``).
        mix: weight ``m`` of the normalised feature (default 0.7; the raw feature gets ``1 - m``).
        eps: :math:`\\epsilon` added to the scale (default 1e-6).
        mu_std: standard deviation of the initial ``mu`` (default 0.01, ``mu ~ 0.01 N(0, 1)``).

    Input ``f`` ``(B, F)``, ``group`` ``(B,)`` (or ``(B, 1)``) integer codes; output ``(B, F)``.

    Raises:
        ValueError: ``num_groups`` or ``num_features`` < 1, ``mix`` outside [0, 1], ``eps`` <= 0,
            ``init_scale`` not one of ``"randn"``, ``"ones"`` (at construction); a feature that is not
            ``(B, F)``, a group shape other than ``(B,)``, or a code outside ``[0, num_groups)`` (at
            forward).
        TypeError: non-integer group codes.

    Example:
        >>> fin = FairIdentityNormalization(3, 1024)
        >>> fin(torch.randn(4, 1024), torch.tensor([0, 2, 1, 0])).shape
        torch.Size([4, 1024])
    """

    def __init__(self, num_groups: int, num_features: int, *, init_scale: str = "randn", mix: float = 0.7,
                 eps: float = 1e-6, mu_std: float = 0.01) -> None:
        super().__init__()
        if int(num_groups) < 1 or int(num_features) < 1:
            raise ValueError(f"num_groups and num_features must be >= 1, got {num_groups} and {num_features}")
        if init_scale not in _INIT_SCALES:
            raise ValueError(f"init_scale must be one of {list(_INIT_SCALES)}, got {init_scale!r}")
        if not 0.0 <= float(mix) <= 1.0:
            raise ValueError(f"mix must be in [0, 1], got {mix}")
        if not float(eps) > 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.num_groups = int(num_groups)
        self.num_features = int(num_features)
        self.init_scale = init_scale
        self.mix = float(mix)
        self.eps = float(eps)
        self.mu = nn.Parameter(float(mu_std) * torch.randn(self.num_groups, self.num_features))
        scale = torch.randn if init_scale == "randn" else torch.ones
        self.s = nn.Parameter(scale(self.num_groups, self.num_features))

    def extra_repr(self) -> str:
        return (f"num_groups={self.num_groups}, num_features={self.num_features}, init_scale={self.init_scale!r}, "
                f"mix={self.mix}, eps={self.eps}")

    @torch.jit.unused
    def _checked(self, f: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        if f.ndim != 2 or f.shape[1] != self.num_features:
            raise ValueError(f"f must have shape (B, {self.num_features}), got {tuple(f.shape)}")
        codes = _as_codes(group, f.shape[0])
        _check_range(codes, self.num_groups)
        return codes

    def forward(self, f: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            group = self._checked(f, group)
        codes = group.to(device=self.mu.device, dtype=torch.long).reshape(-1)
        out_dtype = torch.promote_types(f.dtype, self.mu.dtype)  # the dtype eager arithmetic would give
        x = f.float()
        mu = self.mu.float()[codes]  # (B, F): each case's group row
        scale = F.softplus(self.s.float()[codes]) + self.eps
        out = self.mix * (x - mu) / scale + (1.0 - self.mix) * x
        return out.to(out_dtype)


def _strip_head(backbone: nn.Module) -> tuple[nn.Module, int]:
    """Replace the backbone's classification layer by ``Identity``; return it and the feature size."""
    if isinstance(backbone, DenseNet):
        head = backbone.class_layers.out
        backbone.class_layers.out = nn.Identity()  # relu -> pool -> flatten: the pooled feature
        return backbone, head.in_features
    if isinstance(backbone, ViTClassifier):
        vit = backbone.vit
        head = vit.classification_head  # a plain Linear (ViTClassifier builds it with post_activation=None)
        vit.classification_head = nn.Identity()  # norm(tokens)[:, 0]: the class token
        return backbone, head.in_features
    hint = " (wrap a MONAI ViT as fairmonai.networks.ViTClassifier)" if isinstance(backbone, ViT) else ""
    raise TypeError(f"FINClassifier supports a monai.networks.nets.DenseNet (e.g. DenseNet121) or a "
                    f"fairmonai.networks.ViTClassifier backbone, got {type(backbone).__name__}{hint}")


class FINClassifier(nn.Module):
    """Backbone pooled feature -> :class:`FairIdentityNormalization` -> bias-free ``Linear`` -> logits.

    The backbone's own classification layer is replaced by ``nn.Identity`` (the module passed in is
    changed in place), so the backbone returns its pooled feature:

    * MONAI ``DenseNet`` (``DenseNet121``: ``F = 1024``): ``class_layers`` relu -> global average pool
      -> flatten, the input of its ``out`` Linear.
    * :class:`~fairmonai.networks.ViTClassifier`: the class
      token after the final LayerNorm, ``norm(tokens)[:, 0]`` (``F = hidden_size``), the input of its
      ``classification_head``.

    Removing the head, rather than leaving it unused, keeps every parameter in the graph
    (``DistributedDataParallel`` refuses parameters that get no gradient) and keeps a dead head out of
    the checkpoint. The logits are ``W FIN(f, g)`` with ``W`` ``(num_classes, F)`` and no bias, as in
    the reference (which has one output and BCE; here two logits and cross-entropy, like the other
    fairmonai models).

    ``sensitive`` is positional-or-keyword (not keyword-only as in fairmonai's losses) because
    TorchScript rejects keyword-only arguments; MONAI engines pass it as a keyword through
    :class:`monai.engines.PrepareBatchExtraInput` ``({"sensitive": "<attribute>_code"})`` or
    :class:`FINPrepareBatch`. A TorchScript export (``torch.jit.script``) computes the same logits
    but skips the shape and group-code checks (they build Python messages); the eager model checks.

    Args:
        backbone: a MONAI ``DenseNet`` or a fairmonai ``ViTClassifier``; its head is replaced in place.
        num_groups: number of identity groups (``len(group_names)``).
        num_classes: logits (default 2).
        init_scale, mix, eps, mu_std: of :class:`FairIdentityNormalization`.

    Input ``x`` ``(B, C, H, W[, D])`` and ``sensitive`` ``(B,)`` integer group codes; output
    ``(B, num_classes)`` logits.

    Raises:
        TypeError: an unsupported backbone; non-integer ``sensitive``.
        ValueError: ``sensitive`` missing (the message says how to
            pass it), of the wrong shape, or with a code outside ``[0, num_groups)``.

    Example:
        >>> from monai.networks.nets import DenseNet121
        >>> net = FINClassifier(DenseNet121(spatial_dims=3, in_channels=1, out_channels=2), num_groups=3)
        >>> net(torch.randn(2, 1, 32, 32, 32), sensitive=torch.tensor([0, 2])).shape
        torch.Size([2, 2])
    """

    def __init__(self, backbone: nn.Module, num_groups: int, num_classes: int = 2, *, init_scale: str = "randn",
                 mix: float = 0.7, eps: float = 1e-6, mu_std: float = 0.01) -> None:
        super().__init__()
        self.backbone, num_features = _strip_head(backbone)
        self.num_features = num_features
        self.fin = FairIdentityNormalization(num_groups, num_features, init_scale=init_scale, mix=mix, eps=eps,
                                             mu_std=mu_std)
        self.classifier = nn.Linear(num_features, int(num_classes), bias=False)
        self.missing_sensitive_msg = MISSING_SENSITIVE_MSG  # an attribute, so TorchScript keeps the message

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled feature ``(B, F)`` (what FIN normalises)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor, sensitive: Optional[torch.Tensor] = None) -> torch.Tensor:
        if sensitive is None:
            raise ValueError(self.missing_sensitive_msg)
        return self.classifier(self.fin(self.backbone(x), sensitive))


class FINPrepareBatch(PrepareBatchExtraInput):
    """``PrepareBatchExtraInput({"sensitive": sensitive_key})`` that checks the codes and names bad cases.

    Plain :class:`monai.engines.PrepareBatchExtraInput` would fail with a bare ``KeyError`` on a batch
    without the key and pass a ``-1`` code on to the network. This one checks the collated batch
    first (on the CPU, before it is moved, so no device sync) and raises naming the cases, read from
    ``id_key``. Use it as ``prepare_batch`` of the trainer, the validation evaluator and the inference
    evaluator of a FIN model.

    Bundle config::

        "fin_prepare_batch": {"_target_": "fairmonai.networks.FINPrepareBatch",
                              "sensitive_key": "@sensitive_code_key", "num_groups": "$len(@group_names)"},
        "train#trainer#prepare_batch": "@fin_prepare_batch"

    Args:
        sensitive_key: batch key of the integer group codes, e.g. ``"race_code"``.
        num_groups: when given, codes must be in ``[0, num_groups)``; otherwise only ``>= 0``.
        id_key: batch key of the case ids used in messages (default ``"case_id"``; positions when absent).

    Raises:
        KeyError: the batch lacks ``sensitive_key`` (keys and cases named).
        ValueError: a case's code is negative (``-1``: excluded) or ``>= num_groups`` (cases named).
    """

    def __init__(self, sensitive_key: str, num_groups: int | None = None, id_key: str = "case_id") -> None:
        super().__init__({"sensitive": sensitive_key})
        self.sensitive_key = sensitive_key
        self.num_groups = None if num_groups is None else int(num_groups)
        self.id_key = id_key

    def _cases(self, batchdata: Mapping, positions: Sequence[int] | None = None) -> list:
        ids = batchdata.get(self.id_key)
        if ids is None:
            return [f"#{i}" for i in positions] if positions is not None else ["(no case ids in the batch)"]
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return ids if positions is None else [ids[i] for i in positions]

    def __call__(self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False,
                 **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        if self.sensitive_key not in batchdata:
            raise KeyError(MISSING_GROUP_KEY_MSG.format(key=self.sensitive_key, cases=self._cases(batchdata),
                                                        keys=sorted(batchdata)))
        codes = torch.as_tensor(batchdata[self.sensitive_key]).reshape(-1)
        bad = codes < 0
        if self.num_groups is not None:
            bad = bad | (codes >= self.num_groups)
        if bool(bad.any()):
            pos = torch.nonzero(bad).flatten().tolist()
            last = "" if self.num_groups is None else self.num_groups - 1
            raise ValueError(EXCLUDED_GROUP_CASES_MSG.format(key=self.sensitive_key, codes=codes[pos].tolist(),
                                                             last=last, cases=self._cases(batchdata, pos)))
        return super().__call__(batchdata, device, non_blocking, **kwargs)


def check_group_codes(records: Sequence[Mapping], sensitive_key: str, num_groups: int | None = None,
                      id_key: str = "case_id") -> None:
    """Before a FIN run (inference above all): every record has a group code in ``[0, num_groups)``.

    :class:`FINPrepareBatch` finds the same problems batch by batch; this finds them all before the
    first case is scored. Bundle config (``initialize`` of inference.json with the FIN overlay)::

        "$fairmonai.networks.fin.check_group_codes(@datalist, @sensitive_code_key, len(@group_names))"

    Args:
        records: the datalist (dicts), e.g. from :func:`fairmonai.data.inference.inference_datalist`.
        sensitive_key: the code key, e.g. ``"race_code"``.
        num_groups: when given, codes must be below it.
        id_key: key of the case id named in the message (default ``"case_id"``; the record's index
            when absent).

    Raises:
        KeyError: records without ``sensitive_key`` (:data:`MISSING_GROUP_KEY_MSG`, first keys seen).
        ValueError: records whose code is ``-1`` (excluded) or out of range (:data:`EXCLUDED_GROUP_CASES_MSG`).
    """
    def case(i: int, r: Mapping):
        return r.get(id_key, f"#{i}")

    missing = [case(i, r) for i, r in enumerate(records) if sensitive_key not in r]
    if missing:
        first = next(r for r in records if sensitive_key not in r)
        raise KeyError(MISSING_GROUP_KEY_MSG.format(key=sensitive_key, cases=missing, keys=sorted(first)))
    bad = [(case(i, r), int(r[sensitive_key])) for i, r in enumerate(records)
           if int(r[sensitive_key]) < 0 or (num_groups is not None and int(r[sensitive_key]) >= num_groups)]
    if bad:
        last = "" if num_groups is None else int(num_groups) - 1
        raise ValueError(EXCLUDED_GROUP_CASES_MSG.format(key=sensitive_key, codes=[c for _, c in bad], last=last,
                                                         cases=[i for i, _ in bad]))
