"""VGG19 perceptual (feature) loss of LukeDitria/CNN-VAE's ``vgg19.py``, offline.

For each of the 16 convolutions of VGG19's ``features`` (torchvision indices :data:`VGG19_CONV_INDICES`)
the squared difference of the two images' *pre-ReLU* outputs is averaged over ``C_l x H_l x W_l``; the
16 layer values are then combined per image:

* ``layer_reduction="mean"`` (the reference): their mean, :math:`\\frac1{16}\\sum_l \\frac{1}{C_lH_lW_l}
  \\|\\Phi_l(\\hat x) - \\Phi_l(x)\\|^2`;
* ``layer_reduction="half_sum"`` (López-Pérez et al., Eq. 2): :math:`\\sum_l \\frac{1}{2C_lH_lW_l}
  \\|\\Phi_l(\\hat x) - \\Phi_l(x)\\|^2`, i.e. 8 times the mean form.

Inputs are taken as they come, in ``[-1, 1]``: the reference feeds its ``Normalize(0.5, 0.5)`` images to
VGG without ImageNet normalisation; ``input_normalization="imagenet"`` maps ``[-1, 1]`` to ``[0, 1]``
and then to ImageNet's mean and std instead. The last max-pool is not run (no layer follows it).

Nothing is downloaded: the network is torchvision's ``vgg19(weights=None).features`` (built with
torchvision's ``make_layers``, same layers, keys and initialisation, without the unused classifier), and ``weights`` is a local
file (torchvision's ``vgg19-dcbb9e9d.pth``, or any state dict of ``vgg19()`` or of its ``features``).
Without it the weights are random, which :attr:`VGG19PerceptualLoss.pretrained` says and a warning logs:
such a loss still compares the images through 16 fixed random filters banks, but it is not the paper's.
The weights are frozen (no gradient) and the module stays in eval mode.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from monai.utils import LossReduction, look_up_option
from torch import nn
from torch.nn.modules.loss import _Loss

__all__ = ["VGG19PerceptualLoss", "VGG19_CONV_INDICES", "LAYER_REDUCTIONS", "INPUT_NORMALIZATIONS",
           "load_vgg19_features"]

logger = logging.getLogger(__name__)

#: indices of the 16 ``Conv2d`` layers in torchvision's ``vgg19().features``.
VGG19_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
LAYER_REDUCTIONS = ("mean", "half_sum")
INPUT_NORMALIZATIONS = ("none", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_vgg19_features(weights: str | os.PathLike | None = None) -> tuple[nn.Sequential, bool]:
    """torchvision ``vgg19(weights=None).features`` up to the 16th convolution, loaded from ``weights`` if given.

    Returns:
        ``(features, pretrained)``.

    Raises:
        FileNotFoundError: ``weights`` is not a file, naming it.
        ValueError: the file is not a state dict of VGG19 (missing or extra ``features`` keys listed).
    """
    from torchvision.models.vgg import cfgs, make_layers

    # vgg19(weights=None).features, built without the 120M-parameter classifier nobody uses here
    features = make_layers(cfgs["E"], batch_norm=False)[: VGG19_CONV_INDICES[-1] + 1]
    for m in features.modules():  # torchvision's VGG initialisation of the convolutions
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
    for m in features:
        if isinstance(m, nn.ReLU):
            m.inplace = False  # the pre-ReLU outputs are compared
    if weights is None:
        return features, False
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"VGG19 weights file {path} does not exist (vgg_weights: a local copy of torchvision's "
                                "vgg19-dcbb9e9d.pth; nothing is downloaded)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    prefix = "features." if any(k.startswith("features.") for k in state) else ""
    wanted = {k: v for k, v in state.items() if k.startswith(prefix)}
    wanted = {k[len(prefix):]: v for k, v in wanted.items() if k[len(prefix):].split(".")[0].isdigit()
              and int(k[len(prefix):].split(".")[0]) <= VGG19_CONV_INDICES[-1]}
    own = features.state_dict()
    missing = sorted(set(own) - set(wanted))
    wrong = sorted(k for k in set(own) & set(wanted) if tuple(own[k].shape) != tuple(wanted[k].shape))
    if missing or wrong:
        raise ValueError(f"{path} is not a VGG19 state dict: missing {missing}, wrong shape {wrong}")
    features.load_state_dict(wanted)
    return features, True


class VGG19PerceptualLoss(_Loss):
    """Perceptual loss between a reconstruction and its image, both ``(B, 3, H, W)`` in ``[-1, 1]``.

    Args:
        weights: local VGG19 weights file, or ``None`` (random weights; a warning says so). Default ``None``.
        layer_reduction: ``"mean"`` (reference) or ``"half_sum"`` (paper's Eq. 2). Default ``"mean"``.
        input_normalization: ``"none"`` (reference) or ``"imagenet"``. Default ``"none"``.
        reduction: over the batch: ``"mean"``, ``"sum"`` or ``"none"`` (``(B,)``). Default ``"mean"``.

    Raises:
        ValueError: an unknown option (the accepted values listed), or inputs of different or non-RGB shapes.

    Example:
        >>> loss = VGG19PerceptualLoss()
        >>> float(loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)))
        0.0
    """

    def __init__(self, weights: str | os.PathLike | None = None, layer_reduction: str = "mean",
                 input_normalization: str = "none", reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=look_up_option(reduction, LossReduction).value)
        self.layer_reduction = look_up_option(layer_reduction, LAYER_REDUCTIONS)
        self.input_normalization = look_up_option(input_normalization, INPUT_NORMALIZATIONS)
        self.features, self.pretrained = load_vgg19_features(weights)
        self.weights_file = None if weights is None else str(Path(weights).resolve())
        if not self.pretrained:
            logger.warning("VGG19PerceptualLoss: no local VGG19 weights given (vgg_weights), the perceptual loss runs "
                           "on random VGG19 weights, not the paper's ImageNet ones")
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.features.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGG19PerceptualLoss:
        """The features stay in eval mode (frozen network)."""
        super().train(mode)
        self.features.eval()
        return self

    def layer_values(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, 16)``: per image and conv layer, the mean over ``C_l H_l W_l`` of the squared difference."""
        if input.shape != target.shape or input.ndim != 4 or input.shape[1] != 3:
            raise ValueError(f"VGG19PerceptualLoss needs input and target of one shape (B, 3, H, W), got "
                             f"{tuple(input.shape)} and {tuple(target.shape)}")
        x = torch.cat([input, target], 0)
        if self.input_normalization == "imagenet":
            x = ((x + 1.0) / 2.0 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        n = input.shape[0]
        values = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG19_CONV_INDICES:
                values.append((x[:n] - x[n:]).float().pow(2).flatten(1).mean(1))
        return torch.stack(values, 1)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        layers = self.layer_values(input, target)
        per_image = layers.mean(1) if self.layer_reduction == "mean" else 0.5 * layers.sum(1)
        if self.reduction == LossReduction.MEAN.value:
            return per_image.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_image.sum()
        return per_image
