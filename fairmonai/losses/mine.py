"""MINE baseline: the Donsker-Varadhan bound of I(u; v) with a jointly trained statistics network.

Belghazi, Baratin, Rajeswar, Ozair, Bengio, Courville, Hjelm, "Mutual Information Neural
Estimation" (ICML 2018). Unlike FaMI and MIGE this penalty *does* estimate the MI, as a lower bound
maximised over the statistics network :math:`T_\\phi`, while the model minimises it.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..validation import check_float, check_int
from ._score_estimation import check_penalty_inputs

__all__ = ["MINEPenalty", "IN_FEATURES_MSG", "CODE_TOO_LARGE_MSG"]

IN_FEATURES_MSG = (
    "MINEPenalty was built with in_features={expected} but v has {got} feature(s) (shape {shape}); "
    "set in_features to the width of the output the penalty receives"
)
CODE_TOO_LARGE_MSG = "sensitive holds group code(s) {codes} but MINEPenalty was built with num_groups={n}"


class _ReverseGrad(torch.autograd.Function):
    """Identity whose backward negates the gradient."""

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return -grad


class MINEPenalty(nn.Module):
    """Donsker-Varadhan estimate of :math:`I(u; v)`, the model minimising it, the critic maximising it.

    The statistics network ("critic") :math:`T_\\phi(v, \\mathrm{onehot}(u))` is an MLP
    ``Linear(in_features + num_groups, hidden_size) - ReLU - Linear(hidden_size, hidden_size) - ReLU -
    Linear(hidden_size, 1)``. On the included samples of a batch (code ``>= 0``; code ``-1`` samples
    are dropped) the DV bound (Belghazi et al. 2018, Definition 3.1, on one mini-batch)

    .. math::
        \\hat I_{DV} = \\frac{1}{n}\\sum_i T(v_i, u_i) - \\log \\frac{1}{n}\\sum_i e^{T(v_i, u_{\\pi(i)})}

    uses marginal samples made by shuffling ``u`` within the batch (permutation :math:`\\pi` from a
    ``torch.Generator`` seeded with ``seed``, advanced by every call).

    **Bias-corrected gradient** (Belghazi et al., Section 3.2): the gradient of the log term is
    replaced by :math:`\\mathbb{E}[\\nabla T\\, e^{T}] / \\bar m` with :math:`\\bar m` the exponential
    moving average of the batch mean of :math:`e^{T}` on marginal samples,
    :math:`\\bar m \\leftarrow (1 - a)\\bar m + a\\,\\overline{e^{T}}` (``a = ma_rate``; the first
    batch sets :math:`\\bar m`; updated in training mode only; kept in log space in the buffer
    ``log_ma``, saved with the state dict). The returned scalar has the *value* :math:`\\hat I_{DV}`
    and the *gradient* of :math:`\\frac{1}{n}\\sum T_{joint} - \\frac{1}{n}\\sum e^{T_{marg}} / \\bar m`.
    The gradient reaches ``v`` through both terms.

    **One backward pass, one optimizer.** The critic's *input* passes through a gradient reversal
    and the returned scalar's gradient is that of the *negated* surrogate
    :math:`-(\\frac{1}{n}\\sum T_{joint} - \\frac{1}{n}\\sum e^{T_{marg}} / \\bar m)` on the critic's side:
    ``(task + mu * penalty).backward()`` thus gives the model
    :math:`+\\mu\\, \\partial \\hat I / \\partial\\theta` (descent lowers the MI; the reversal undoes the
    negation on the way to ``v``) and the critic :math:`-\\mu\\, \\partial \\hat I / \\partial\\phi` (the same
    descent step *raises* the bound: the critic maximises it). Negation is exact in floating point, so
    these are the very numbers a reversal on the critic's parameters would give, while the critic stays
    an ordinary module call (which ``DistributedDataParallel`` needs, below). The optimizer must hold
    the penalty's parameters as well as the network's, e.g.
    ``"optimizer#params": "$list(@network.parameters()) + list(@penalty.parameters())"``; without them
    the critic never trains. The critic's gradient carries the factor ``mu``; Adam-type optimizers are
    invariant to it, with SGD give the critic a parameter group with ``lr / mu``.

    **Distributed training** (``sync_critic=True``, the default). When ``torch.distributed`` is
    initialised with more than one process, and the penalty is in training mode with gradients enabled,
    the critic is called through a :class:`~torch.nn.parallel.DistributedDataParallel` wrapper (built
    at the first such call, a collective that also broadcasts rank 0's critic to the others;
    ``device_ids=[device]`` for a CUDA critic), so its gradients are averaged across ranks exactly as
    DDP averages the network's and every rank's critic stays identical. Only the network needs to be
    wrapped by the user. The wrapper shares the critic's parameters and is not a registered submodule:
    ``penalty.parameters()`` (for the optimizer) and the ``state_dict`` keys (``critic.0.weight``, ...)
    are the same as in a single process. Under DDP the joint and marginal samples go through the
    critic in one call, on their concatenation (DDP allows one forward per backward); in a single
    process, or with ``sync_critic=False``, they go through two calls (same values up to rounding;
    bit-identical to earlier versions). Each training call then runs the critic forward on every rank,
    even one with fewer than 2 included samples (its surrogate is zero but depends on the critic, so
    the gradient all-reduce is not left waiting), and must be followed by a backward through its
    output, as for any DDP module. Gradient accumulation over micro-batches all-reduces each
    micro-batch's critic gradient; the average is linear, so the accumulated gradient is the average
    of the summed ones, as without accumulation (``no_sync`` on the network does not reach the
    critic). The moving average :math:`\\bar m` and :attr:`last_diagnostic` stay per rank (each rank's
    bias correction uses the moving average of its own batches). With ``sync_critic=False`` each
    rank's critic follows its own batches' gradients only.

    Diagnostic after each call, :attr:`last_diagnostic`: ``dv`` (the DV value of this batch) and
    ``ma`` (:math:`\\bar m`) as detached 0-d tensors (logging them needs no host sync), ``n_used``,
    ``n_excluded`` as floats. Fewer than 2 included samples give a zero
    surrogate and ``dv = 0`` (in a single process the critic is not run and gets no gradient; under
    DDP it gets a zero gradient from that rank).

    Args:
        num_groups: width of the group one-hot (groups ``0 .. num_groups - 1``), ``>= 1``.
        in_features: width ``D`` of ``v`` (default 2: the two logits of a binary classifier; set the
            feature width when the bundle passes a representation layer).
        hidden_size: width of the critic's two hidden layers. Default 64.
        ma_rate: rate ``a`` of the moving average, in ``(0, 1]``. Default ``0.01``.
        seed: seed of the generator that draws the shuffles. Default 0.
        sync_critic: average the critic's gradients across ranks under ``torch.distributed`` (see
            above). Default ``True``; no effect in a single process.

    Raises:
        TypeError / ValueError: bad options (the message names the value); in ``forward``, as
            :class:`~fairmonai.losses.FaMIPenalty`, plus ``v`` whose width is not ``in_features`` and
            codes ``>= num_groups``.

    Example:
        >>> pen = MINEPenalty(num_groups=2, in_features=2)
        >>> logits = torch.randn(32, 2, requires_grad=True)
        >>> dv = pen(logits, sensitive=torch.arange(32) % 2)
        >>> dv.backward()   # logits.grad: d(+I)/dv; critic grads: d(-I)/dphi
        >>> "dv" in pen.last_diagnostic
        True
    """

    def __init__(
        self,
        num_groups: int,
        in_features: int = 2,
        hidden_size: int = 64,
        ma_rate: float = 0.01,
        seed: int = 0,
        sync_critic: bool = True,
    ) -> None:
        super().__init__()
        self.num_groups = check_int(num_groups, "num_groups", 1)
        self.in_features = check_int(in_features, "in_features", 1)
        self.hidden_size = check_int(hidden_size, "hidden_size", 1)
        self.ma_rate = check_float(ma_rate, "ma_rate", low=0.0, high=1.0, strict=True)
        self.seed = check_int(seed, "seed", 0)
        if not isinstance(sync_critic, bool):
            raise TypeError(f"sync_critic must be a bool; got {sync_critic!r}")
        self.sync_critic = sync_critic
        self.critic = nn.Sequential(
            nn.Linear(self.in_features + self.num_groups, self.hidden_size),
            nn.ReLU(),
            nn.Linear(self.hidden_size, self.hidden_size),
            nn.ReLU(),
            nn.Linear(self.hidden_size, 1),
        )
        self.register_buffer("log_ma", torch.tensor(float("-inf")))
        self._generator = torch.Generator().manual_seed(self.seed)
        self.last_diagnostic: dict[str, float] = {}
        # [((device, dtype), DistributedDataParallel(self.critic))] once built: a plain list, so the
        # wrapper is no registered submodule (state_dict and parameters() stay the critic's own)
        self._ddp_critic: list = []

    def __getstate__(self):  # noqa: D105 - copies and pickles leave the process-bound wrapper behind
        state = dict(super().__getstate__())
        state["_ddp_critic"] = []
        return state

    def _synced_critic(self) -> nn.Module | None:
        """The DDP-wrapped critic where its gradients must be averaged across ranks, else ``None``."""
        if not (self.sync_critic and self.training and torch.is_grad_enabled()):
            return None
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return None
        if not any(p.requires_grad for p in self.critic.parameters()):
            return None  # a frozen critic: nothing to average (and DDP refuses such a module)
        weight = self.critic[0].weight
        key = (weight.device, weight.dtype)
        if not self._ddp_critic or self._ddp_critic[0][0] != key:  # first call, or moved since
            device_ids = [weight.device] if weight.device.type == "cuda" else None
            self._ddp_critic[:] = [(key, nn.parallel.DistributedDataParallel(self.critic, device_ids=device_ids))]
        return self._ddp_critic[0][1]

    def _critic_input(self, x: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        # x has already passed through the gradient reversal
        return torch.cat([x, onehot], dim=1).to(self.critic[0].weight.dtype)

    def forward(self, v: torch.Tensor, *, sensitive) -> torch.Tensor:
        """The DV estimate of this batch, with the bias-corrected gradient (see the class docstring).

        Args:
            v: ``(B, in_features)`` (or ``(B,)`` when ``in_features == 1``) floating-point output.
            sensitive: ``(B,)`` or ``(B, 1)`` integer group codes; ``-1`` = excluded. Keyword only.
        """
        v2, codes = check_penalty_inputs(v, sensitive, type(self).__name__)
        if v2.shape[1] != self.in_features:
            raise ValueError(IN_FEATURES_MSG.format(expected=self.in_features, got=v2.shape[1], shape=tuple(v.shape)))
        if int(codes.max()) >= self.num_groups:
            bad = torch.unique(codes[codes >= self.num_groups])[:5].tolist()
            raise ValueError(CODE_TOO_LARGE_MSG.format(codes=bad, n=self.num_groups))
        included = codes >= 0
        n = int(included.sum())
        # dv and ma stay tensors (no host sync for the diagnostic; FairnessRegularizedLoss logs them as such)
        diag = {"dv": torch.zeros((), dtype=torch.float64), "ma": self.log_ma.exp().detach(), "n_used": float(n),
                "n_excluded": float(v2.shape[0] - n)}
        synced = self._synced_critic()
        if n < 2 and synced is None:
            self.last_diagnostic = diag
            return v2.sum() * 0.0
        x, u = v2[included], codes[included]
        onehot = F.one_hot(u, self.num_groups).to(x.dtype)
        x_rev = _ReverseGrad.apply(x)  # the model gets +dI/dv from the negated surrogate below
        if n < 2:
            # every rank must run the critic forward and backward, or the others' all-reduce waits:
            # a zero surrogate that still depends on the critic (no logsumexp over < 2 samples)
            self.last_diagnostic = diag
            t = synced(self._critic_input(x_rev, onehot)).squeeze(-1).float()
            return v2.sum() * 0.0 + t.sum() * 0.0
        perm = torch.randperm(n, generator=self._generator).to(x.device)
        joint_in, marg_in = self._critic_input(x_rev, onehot), self._critic_input(x_rev, onehot[perm])
        if synced is None:
            t_joint = self.critic(joint_in).squeeze(-1).float()
            t_marg = self.critic(marg_in).squeeze(-1).float()
        else:  # DDP: one forward per backward
            t_joint, t_marg = synced(torch.cat([joint_in, marg_in], 0)).squeeze(-1).float().split(n)
        log_mean_exp = torch.logsumexp(t_marg, 0) - math.log(n)
        dv = t_joint.mean() - log_mean_exp
        with torch.no_grad():
            lme = log_mean_exp.detach().to(self.log_ma.dtype)
            first = torch.isinf(self.log_ma)  # no average yet: it starts at this batch's value (no host sync)
            if self.training:
                if self.ma_rate == 1.0:
                    self.log_ma.copy_(lme)
                else:
                    decayed = self.log_ma + math.log1p(-self.ma_rate)
                    self.log_ma.copy_(torch.where(first, lme, torch.logaddexp(decayed, lme + math.log(self.ma_rate))))
            log_ma = torch.where(torch.isinf(self.log_ma), lme, self.log_ma)
        corrected = t_joint.mean() - torch.exp(t_marg - log_ma.to(t_marg.dtype)).mean()
        # the critic maximises: its parameters get d(-corrected)/dphi, and v (through the reversal on
        # the critic's input) d(+corrected)/dv; negation is exact, so these are bit for bit the
        # gradients of a reversal on the parameters
        negated = -corrected
        diag["dv"] = dv.detach()
        diag["ma"] = log_ma.exp()
        self.last_diagnostic = diag
        return dv.detach() + (negated - negated.detach())

    def extra_repr(self) -> str:
        return (f"num_groups={self.num_groups}, in_features={self.in_features}, hidden_size={self.hidden_size}, "
                f"ma_rate={self.ma_rate}, seed={self.seed}, sync_critic={self.sync_critic}")
