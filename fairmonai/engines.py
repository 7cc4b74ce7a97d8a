"""MONAI engines that hand batch values (the sensitive attribute, per-sample weights) and optionally a
feature layer to the loss.

:class:`FairSupervisedTrainer` is a :class:`monai.engines.SupervisedTrainer` whose loss is called as
``loss(pred, target, sensitive=u)`` (and ``representation=v`` when asked), ``u`` being the integer
group codes of the current batch, and/or with other batch values as keywords (``loss_batch_keys``,
e.g. FairMedSeg's per-sample weights: ``loss(pred, target, weight=w)``). It does so without touching ``SupervisedTrainer._iteration``
(STYLE.md §4, "the clean hook"): ``self.loss_function`` is replaced by a bound method
``(pred, target)`` that reads ``self.state.batch[sensitive_key]``. The call site in ``_iteration``
does not change, so AMP autocast, ``GradScaler``, gradient accumulation (``accumulation_steps``),
``compile`` and the iteration events ``FORWARD_COMPLETED``, ``LOSS_COMPLETED``,
``BACKWARD_COMPLETED``, ``MODEL_COMPLETED`` behave exactly as in MONAI.

In MONAI 1.6.1 the batch is decollated on ``MODEL_COMPLETED``, after the loss, so during the loss
call ``engine.state.batch`` is still the collated dict (``_iteration`` calls ``prepare_batch`` on
it but does not replace it; the group codes stay on the CPU and are moved to ``pred.device``).

After each loss call the loss's logged terms (its ``last_terms``) are published on
``engine.state.loss_terms`` (STYLE.md §3: state is shared through ``engine.state``), as detached
tensors, so handlers read them there without a device sync per iteration.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.utils import convert_to_tensor

__all__ = [
    "FairSupervisedTrainer",
    "ACCUMULATION_NOTE",
    "MISSING_SENSITIVE_KEY_MSG",
    "MISSING_BATCH_KEY_MSG",
    "NO_LOSS_INPUTS_MSG",
    "LOSS_KEYWORD_MSG",
    "UNKNOWN_LAYER_MSG",
    "LAYER_NOT_RUN_MSG",
]

MISSING_SENSITIVE_KEY_MSG = (
    "the batch has no sensitive attribute key {key!r} (sensitive_key of FairSupervisedTrainer); "
    "the batch keys are {keys}"
)
LOSS_KEYWORD_MSG = (
    "the loss function {loss} does not accept the keyword argument {kw!r}; FairSupervisedTrainer calls "
    "loss(pred, target, {call}) (a fairmonai loss, or any loss whose forward takes `{kw}=`)"
)
UNKNOWN_LAYER_MSG = (
    "representation_layer {name!r} is not a submodule of {network}; close names: {close}; "
    "the first submodule names are {first}"
)
MISSING_BATCH_KEY_MSG = (
    "the batch has no key {key!r} (loss_batch_keys of FairSupervisedTrainer maps the loss keyword {kw!r} to "
    "it); the batch keys are {keys}. A handler that adds it (e.g. fairmonai.handlers.SubgroupReweighting) "
    "must be attached to the trainer"
)
NO_LOSS_INPUTS_MSG = (
    "FairSupervisedTrainer needs sensitive_key or loss_batch_keys (or both): without them it is a plain "
    "SupervisedTrainer"
)
LAYER_NOT_RUN_MSG = (
    "representation_layer {name!r} did not run in this iteration's forward pass, so there is no "
    "representation to give the loss"
)

ACCUMULATION_NOTE = """\
Gradient accumulation and the penalty batch (documented deviation). MONAI's ``accumulation_steps``
treats each loader batch as a micro-batch: the loss (task term and fairness penalty) is computed on
each micro-batch, divided by ``accumulation_steps`` and back-propagated, and the optimizer steps
every ``accumulation_steps`` iterations. The fairness penalty (e.g. FaMI's SFD terms, MINE's
Donsker-Varadhan bound) therefore sees the micro-batch of ``batch_size`` samples, not the
accumulated batch of ``batch_size * accumulation_steps``; per-group statistics are estimated from
fewer samples (and a group may be absent from a micro-batch). The gradient of the task term is the
same as with the large batch; the penalty's is the mean of the micro-batch penalties' gradients,
which differs from the large-batch penalty's gradient because the penalty is not a mean over
samples. Report the micro-batch size as the penalty batch size."""


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """Strip DistributedDataParallel / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    for _ in range(8):
        if isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), torch.nn.Module):
            network = network._orig_mod
        else:
            break
    return network


def _accepts_keyword(fn: Callable, name: str) -> bool | None:
    """Whether ``fn`` (a callable or an ``nn.Module``'s ``forward``) takes ``name=``; ``None``: unknown."""
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return True
    p = sig.parameters.get(name)
    return p is not None and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _loss_name(fn: Callable) -> str:
    return type(fn).__name__ if isinstance(fn, torch.nn.Module) else getattr(fn, "__qualname__", repr(fn))


class FairSupervisedTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` whose loss also receives the batch's group codes (and optionally features).

    Every iteration the configured loss is called as

    .. code-block:: python

        loss_function(pred, target, sensitive=u)                    # representation_layer=None
        loss_function(pred, target, sensitive=u, representation=v)  # representation_layer="name"

    where ``u = engine.state.batch[sensitive_key]`` as a ``torch.long`` tensor ``(B,)`` on
    ``pred.device`` (``-1``: in no group; a trailing dimension of size 1 is dropped) and ``v`` is the
    output of the submodule ``network.get_submodule(representation_layer)`` in the same forward pass
    (with its graph, so the penalty's gradient reaches the layers below it). The penalty therefore
    acts on the logits ``pred`` by default, or on a feature layer, e.g. DenseNet121's
    ``"class_layers.flatten"`` (the pooled 1024 features) or ``"class_layers.out"`` (the logits).
    ``v`` is taken by a forward hook registered in ``__init__`` (on the network unwrapped from
    ``DistributedDataParallel``/``DataParallel``/``torch.compile``); the hook only records during
    this trainer's iterations (from ``ITERATION_STARTED`` to ``ITERATION_COMPLETED``), so a
    validator sharing the network does not overwrite it. If the layer runs several times in one
    forward pass, its last output is used. :attr:`last_representation` gives the current value to
    handlers (e.g. :class:`fairmonai.handlers.penalty_curve.PenaltyCurveLogger`).

    Only ``self.loss_function`` changes; ``_iteration`` is MONAI's own, so ``amp`` (autocast and
    ``GradScaler``), ``accumulation_steps``, ``compile`` and the events ``FORWARD_COMPLETED``,
    ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED``, ``MODEL_COMPLETED`` are unchanged. The configured
    loss stays available as :attr:`base_loss_function`.

    Loss diagnostics: after every loss call, ``engine.state.loss_terms`` is a new
    ``dict[str, torch.Tensor]`` of the loss's ``last_terms`` (e.g. ``task_loss``, ``mu``,
    ``penalty``, ``msq_sfd``/``dv``, ``n_fallback`` of :class:`fairmonai.losses.FairnessRegularizedLoss`;
    ``seg``, ``weighted``, ``total`` of :class:`fairmonai.losses.DivergenceWeightedLoss`), each a
    detached tensor where the loss keeps it (the task loss and the penalty on ``pred``'s device; a
    Python number becomes a float64 CPU tensor). Nothing is converted to a Python number, so
    publishing costs no host-device sync; a handler converts when it logs (e.g.
    :class:`fairmonai.handlers.PenaltyCurveLogger` every ``every_n`` iterations). A loss without
    ``last_terms`` gives ``{}``; before the first iteration it is ``{}``. A plain
    ``SupervisedTrainer`` has no ``loss_terms``.

    AMP on the CPU: MONAI 1.6.1 hard-codes ``torch.autocast("cuda")`` and
    ``torch.cuda.amp.GradScaler()``; without CUDA both disable themselves with a warning, so
    ``amp=True`` on a CPU runs in float32 with an inactive scaler (``scaler.step`` calls
    ``optimizer.step``). There is no bfloat16 CPU autocast.

    Gradient accumulation: the penalty is computed per loader batch (micro-batch), not on the
    accumulated batch; see :data:`ACCUMULATION_NOTE` (a documented deviation).

    Bundle config (``method_*.json`` overlay)::

        "train#trainer#_target_": "fairmonai.engines.FairSupervisedTrainer",
        "train#trainer#sensitive_key": "@sensitive_key",
        "train#trainer#representation_layer": "class_layers.flatten"

    or, for per-sample weights (FairMedSeg)::

        "train#trainer#_target_": "fairmonai.engines.FairSupervisedTrainer",
        "train#trainer#loss_batch_keys": {"weight": "sample_weight"}

    Args:
        device, max_epochs, train_data_loader, network, optimizer, loss_function: as
            ``SupervisedTrainer``; ``loss_function`` must accept ``sensitive=`` (and
            ``representation=`` when ``representation_layer`` is set) as keyword arguments.
        sensitive_key: key of the integer group codes in the batch dict (keyword only); ``None``: the loss
            gets no ``sensitive=`` (then ``loss_batch_keys`` must be given).
        representation_layer: dotted name of the submodule whose output is passed as
            ``representation=``; default ``None``: the loss gets no representation and the penalty
            uses ``pred``.
        loss_batch_keys: ``{loss keyword: batch key}``: other batch values passed to the loss as float
            tensors ``(B,)``, e.g. ``{"weight": "sample_weight"}`` for
            :class:`fairmonai.losses.DivergenceWeightedLoss` with the weights that
            :class:`fairmonai.handlers.SubgroupReweighting` puts in each batch. Default: none.
        kwargs: every other ``SupervisedTrainer`` argument (``epoch_length``, ``inferer``,
            ``train_handlers``, ``amp``, ``accumulation_steps``, ``compile``, ...), passed through.

    Raises:
        TypeError: ``sensitive_key`` is not a non-empty string or None; ``loss_batch_keys`` is not a
            mapping of strings; ``loss_function`` does not accept ``sensitive=`` (or
            ``representation=``, or a ``loss_batch_keys`` keyword), checked on its signature at
            construction, or at the first call when the signature cannot be read.
        ValueError: neither ``sensitive_key`` nor ``loss_batch_keys``; ``loss_batch_keys`` sets
            ``sensitive`` or ``representation``; ``representation_layer`` names no submodule of
            ``network`` (the message lists close and valid names); during a run, a batch without
            ``sensitive_key`` or a ``loss_batch_keys`` key (the message names the key and the
            batch's keys).
        RuntimeError: during a run, ``representation_layer`` did not run in the forward pass.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        *,
        sensitive_key: str | None = None,
        representation_layer: str | None = None,
        loss_batch_keys: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        if sensitive_key is not None and (not isinstance(sensitive_key, str) or not sensitive_key):
            raise TypeError(f"sensitive_key must be a non-empty string or None, got {sensitive_key!r}")
        if loss_batch_keys is not None and not isinstance(loss_batch_keys, Mapping):
            raise TypeError(f"loss_batch_keys must be a mapping {{loss keyword: batch key}}, got {loss_batch_keys!r}")
        loss_batch_keys = dict(loss_batch_keys or {})
        for kw, key in loss_batch_keys.items():
            if not isinstance(kw, str) or not kw.isidentifier() or not isinstance(key, str) or not key:
                raise TypeError(f"loss_batch_keys must map keyword names to batch keys (strings), got {kw!r}: {key!r}")
            if kw in ("sensitive", "representation"):
                raise ValueError(
                    f"loss_batch_keys may not set {kw!r}: use sensitive_key / representation_layer for it"
                )
        if sensitive_key is None and not loss_batch_keys:
            raise ValueError(NO_LOSS_INPUTS_MSG)
        if not callable(loss_function):
            raise TypeError(f"loss_function must be callable, got {type(loss_function).__name__}")
        if representation_layer is not None and not isinstance(representation_layer, str):
            raise TypeError(f"representation_layer must be a string or None, got {representation_layer!r}")
        self.sensitive_key = sensitive_key
        self.representation_layer = representation_layer
        self.loss_batch_keys = loss_batch_keys
        self.base_loss_function = loss_function
        self._loss_keywords = (
            (("sensitive",) if sensitive_key is not None else ())
            + (("representation",) if representation_layer is not None else ())
            + tuple(loss_batch_keys)
        )
        self._keywords_checked = False
        for kw in self._loss_keywords:
            ok = _accepts_keyword(loss_function, kw)
            if ok is False:
                raise TypeError(self._keyword_message(kw))
        self._keywords_checked = all(_accepts_keyword(loss_function, kw) for kw in self._loss_keywords)

        layer = None
        if representation_layer is not None:
            base = _unwrap(network)
            try:
                layer = base.get_submodule(representation_layer)
            except AttributeError:
                names = [n for n, _ in base.named_modules() if n]
                close = difflib.get_close_matches(representation_layer, names, n=5, cutoff=0.5)
                first = names[:10] + (["..."] if len(names) > 10 else [])
                raise ValueError(
                    UNKNOWN_LAYER_MSG.format(name=representation_layer, network=type(base).__name__,
                                             close=close or "none", first=first)
                ) from None

        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss_function, **kwargs)
        self.loss_function = self._fair_loss  # the call site in _iteration stays MONAI's
        self.state.loss_terms = {}

        self._representation: Any = None
        self._capturing = False
        self._representation_hook = None
        if layer is not None:
            self._representation_hook = layer.register_forward_hook(self._capture_representation)
            self.add_event_handler(Events.ITERATION_STARTED, self._start_capture)
            self.add_event_handler(Events.ITERATION_COMPLETED, self._stop_capture)
        if self.accumulation_steps > 1:
            self.logger.info(
                f"accumulation_steps={self.accumulation_steps}: the fairness penalty sees each micro-batch, "
                "not the accumulated batch (see fairmonai.engines.ACCUMULATION_NOTE)"
            )

    # representation tap ---------------------------------------------------------------------------
    def _capture_representation(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._capturing:
            self._representation = output

    def _start_capture(self, engine: Any = None) -> None:
        self._representation = None
        self._capturing = True

    def _stop_capture(self, engine: Any = None) -> None:
        self._capturing = False

    @property
    def last_representation(self) -> Any:
        """Output of ``representation_layer`` in the current iteration's forward pass (``None`` before
        the forward pass, or when no layer is configured); it carries the graph, detach before keeping."""
        return self._representation

    # the loss hook --------------------------------------------------------------------------------
    def _keyword_message(self, kw: str) -> str:
        call = ", ".join(f"{k}=..." for k in self._loss_keywords)
        return LOSS_KEYWORD_MSG.format(loss=_loss_name(self.base_loss_function), kw=kw, call=call)

    def sensitive_codes(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The current batch's group codes as a ``torch.long`` tensor ``(B,)`` on ``device``.

        Raises:
            ValueError: the batch is not a dict holding ``sensitive_key``, or the codes are not integers.
        """
        batch = self.state.batch
        if not isinstance(batch, Mapping) or self.sensitive_key not in batch:
            if isinstance(batch, Mapping):
                keys: Any = sorted(map(str, batch.keys()))
            else:
                keys = f"(not a dict: {type(batch).__name__})"
            raise ValueError(MISSING_SENSITIVE_KEY_MSG.format(key=self.sensitive_key, keys=keys))
        raw = batch[self.sensitive_key]
        try:
            u = convert_to_tensor(raw, track_meta=False)
            if not isinstance(u, torch.Tensor):
                u = torch.as_tensor(u)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"batch[{self.sensitive_key!r}] must hold integer group codes, got {raw!r:.200}"
            ) from None
        if u.is_floating_point():
            if not torch.all(u == torch.round(u)):
                raise ValueError(f"batch[{self.sensitive_key!r}] must hold integer group codes, got {u.tolist()}")
        elif u.is_complex():
            raise ValueError(f"batch[{self.sensitive_key!r}] must hold integer group codes, got dtype {u.dtype}")
        if u.ndim > 1 and all(s == 1 for s in u.shape[1:]):
            u = u.reshape(u.shape[0])
        return u.to(device=device, dtype=torch.long, non_blocking=self.non_blocking)

    def batch_values(
        self, key: str, keyword: str, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """``engine.state.batch[key]`` as a ``dtype`` tensor ``(B,)`` on ``device`` (a trailing dimension of
        size 1 is dropped), for the loss keyword ``keyword``. The loss hook passes ``pred``'s dtype when it
        is float32 or float64, else float32 (e.g. under AMP), so python floats (collated as float64) do
        not promote the loss.

        Raises:
            ValueError: the batch is not a dict holding ``key``, or its values are not numbers.
        """
        batch = self.state.batch
        if not isinstance(batch, Mapping) or key not in batch:
            keys: Any = sorted(map(str, batch.keys())) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(MISSING_BATCH_KEY_MSG.format(key=key, kw=keyword, keys=keys))
        try:
            v = convert_to_tensor(batch[key], track_meta=False)
            v = v if isinstance(v, torch.Tensor) else torch.as_tensor(v)
            if v.is_complex() or v.dtype == torch.bool:
                raise TypeError
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"batch[{key!r}] must hold numbers (loss keyword {keyword!r}), got {batch[key]!r:.200}") from None
        if v.ndim > 1 and all(s == 1 for s in v.shape[1:]):
            v = v.reshape(v.shape[0])
        return v.to(device=device, dtype=dtype, non_blocking=self.non_blocking)

    def _fair_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if self.sensitive_key is not None:
            kwargs["sensitive"] = self.sensitive_codes(pred.device)
        dtype = pred.dtype if pred.dtype in (torch.float32, torch.float64) else torch.float32
        for kw, key in self.loss_batch_keys.items():
            kwargs[kw] = self.batch_values(key, kw, pred.device, dtype)
        if self.representation_layer is not None:
            if self._representation is None:
                raise RuntimeError(LAYER_NOT_RUN_MSG.format(name=self.representation_layer))
            kwargs["representation"] = self._representation
        if self._keywords_checked:
            out = self.base_loss_function(pred, target, **kwargs)
        else:
            try:
                out = self.base_loss_function(pred, target, **kwargs)
            except TypeError as e:
                for kw in self._loss_keywords:
                    if "unexpected keyword" in str(e) and repr(kw) in str(e):
                        raise TypeError(self._keyword_message(kw)) from e
                raise
            self._keywords_checked = True
        self.state.loss_terms = self._loss_terms()
        return out

    def _loss_terms(self) -> dict[str, torch.Tensor]:
        """The loss's ``last_terms`` as detached tensors (Python numbers: float64 CPU tensors); no sync."""
        terms = getattr(self.base_loss_function, "last_terms", None)
        if not isinstance(terms, Mapping):
            return {}
        return {
            str(k): v.detach() if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.float64)
            for k, v in terms.items()
        }
