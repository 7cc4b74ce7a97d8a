"""EfficientNet weights from a local file, for the bundles that start from ImageNet without a download.

MONAI's :class:`~monai.networks.nets.EfficientNetBN` loads ImageNet weights only by downloading them
(``pretrained=True`` fetches the file of github.com/lukemelas/EfficientNet-PyTorch) and silently skips
every parameter whose name or shape it cannot match. The bundles build the network with
``pretrained=False`` (nothing is downloaded) and :func:`load_efficientnet_weights` copies a local file
into it, strictly: every parameter but the classifier ``_fc`` must be found with its shape.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["load_efficientnet_weights", "WEIGHTS_MISSING_MSG", "WEIGHTS_MISMATCH_MSG", "WEIGHTS_FORMAT_MSG"]

logger = logging.getLogger(__name__)

WEIGHTS_MISSING_MSG = "pretrained_weights: no file {path}"
WEIGHTS_FORMAT_MSG = "pretrained_weights: {path} holds no state dict of tensors (got {what})"
WEIGHTS_MISMATCH_MSG = (
    "pretrained_weights: {path} does not fit {network}: {n_missing} parameter(s) not in the file (first: {missing}), "
    "{n_shape} of another shape (first: {shape}); give an EfficientNet file of the same variant (model_name) and "
    "in_channels"
)

#: MONAI names a block ``_blocks.<stage>.<block>.``; the lukemelas files ``_blocks.<block>.`` (MONAI's own rule)
_STAGE_INDEX = re.compile(r"(.+)\.\d+(\.\d+\..+)")
_HEAD = "_fc."


def _state_dict(obj, path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):  # a checkpoint dict around the weights
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(WEIGHTS_FORMAT_MSG.format(path=path, what=type(obj).__name__))
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def load_efficientnet_weights(network: torch.nn.Module, path: str | os.PathLike | None) -> torch.nn.Module:
    """Copy the weights in ``path`` into ``network`` (in place) and return it; ``path=None`` returns it unchanged.

    ``path`` is a ``torch.save``-d state dict (or a dict holding one under ``"state_dict"`` or
    ``"model"``), named either as MONAI's :class:`~monai.networks.nets.EfficientNetBN`
    (``_blocks.<stage>.<block>.``) or as the ImageNet files MONAI downloads (``_blocks.<block>.``,
    github.com/lukemelas/EfficientNet-PyTorch, e.g. ``efficientnet-b1-f1951068.pth``). Every entry
    of ``network.state_dict()`` outside the classifier ``_fc`` must be in the file with the same shape;
    ``_fc`` is copied when its shape matches, else kept as initialised (an ImageNet head has 1000
    outputs; the ISIC bundle's has 2) and logged.

    Args:
        network: an ``EfficientNetBN`` (or any module with its parameter names).
        path: the weights file, or ``None``.

    Returns:
        ``network``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file holds no state dict of tensors, or it misses an entry of ``network`` or
            has one of another shape (the counts and the first names given).
    """
    if path is None:
        return network
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(WEIGHTS_MISSING_MSG.format(path=path))
    source = _state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
    target = network.state_dict()
    missing, other_shape, head_kept = [], [], []
    for key, value in target.items():
        name = key if key in source else _STAGE_INDEX.sub(r"\1\2", key)
        found = source.get(name)
        if key.startswith(_HEAD):
            if found is not None and found.shape == value.shape:
                target[key] = found
            else:
                head_kept.append(key)
        elif found is None:
            missing.append(key)
        elif found.shape != value.shape:
            other_shape.append(f"{key} {tuple(found.shape)} vs {tuple(value.shape)}")
        else:
            target[key] = found
    if missing or other_shape:
        raise ValueError(WEIGHTS_MISMATCH_MSG.format(path=path, network=type(network).__name__,
                                                     n_missing=len(missing), missing=missing[:3],
                                                     n_shape=len(other_shape), shape=other_shape[:3]))
    network.load_state_dict(target)
    logger.info("loaded %s into %s%s", path, type(network).__name__,
                f" (classifier {head_kept} kept as initialised: another shape in the file)" if head_kept else "")
    return network
