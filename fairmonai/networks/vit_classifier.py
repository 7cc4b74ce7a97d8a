"""A ViT that returns raw class logits only, for classification bundles.

MONAI's :class:`monai.networks.nets.ViT` with ``classification=True`` returns a tuple
``(logits, hidden_states)`` and, by default, passes the class token's logits through ``Tanh``
(``post_activation="Tanh"``), which bounds them to (-1, 1): a softmax over such logits can never
be confident, and the FaMI penalty would act on a squashed representation. This wrapper builds the
ViT with the linear classification head only (``post_activation=None``) and returns the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import ViT
from torch import nn

__all__ = ["ViTClassifier"]


class ViTClassifier(nn.Module):
    """ViT-B/16-sized (by default) classifier: class token -> linear head -> raw logits ``(B, C)``.

    Args:
        in_channels: input channels.
        img_size: input spatial size, each side divisible by ``patch_size``.
        patch_size: patch size per side (default 16).
        num_classes: output logits (default 2).
        hidden_size, mlp_dim, num_layers, num_heads: transformer sizes; defaults are ViT-B/16
            (768, 3072, 12, 12).
        dropout_rate: dropout in the transformer (default 0).
        spatial_dims: 2 or 3 (default 3).
        qkv_bias: bias in the attention projections (default False, MONAI's default).

    Input ``(B, in_channels, *img_size)``; output ``(B, num_classes)`` logits. The blocks' unused
    cross-attention LayerNorms are frozen (``requires_grad`` False) so the model trains under
    ``DistributedDataParallel`` without ``find_unused_parameters``.

    Raises:
        ValueError: ``img_size`` not divisible by ``patch_size``.
    """

    def __init__(
        self,
        in_channels: int,
        img_size: Sequence[int] | int,
        patch_size: Sequence[int] | int = 16,
        num_classes: int = 2,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        dropout_rate: float = 0.0,
        spatial_dims: int = 3,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        sizes = [img_size] * spatial_dims if isinstance(img_size, int) else list(img_size)
        patches = [patch_size] * spatial_dims if isinstance(patch_size, int) else list(patch_size)
        bad = [(s, p) for s, p in zip(sizes, patches) if s % p]
        if bad:
            raise ValueError(f"img_size {sizes} must be divisible by patch_size {patches} on every axis")
        self.vit = ViT(
            in_channels=in_channels, img_size=sizes, patch_size=patches, hidden_size=hidden_size, mlp_dim=mlp_dim,
            num_layers=num_layers, num_heads=num_heads, classification=True, num_classes=num_classes,
            dropout_rate=dropout_rate, spatial_dims=spatial_dims, post_activation=None, qkv_bias=qkv_bias,
        )
        # MONAI's TransformerBlock builds a cross-attention LayerNorm even without cross-attention; it never
        # gets a gradient, and DistributedDataParallel stops on parameters unused in the loss. Frozen, DDP
        # skips them (the state dict keeps its keys, so checkpoints load either way).
        for block in self.vit.blocks:
            if not getattr(block, "with_cross_attention", False) and hasattr(block, "norm_cross_attn"):
                block.norm_cross_attn.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.vit(x)
        return logits
