"""Residual convolutional VAE of LukeDitria/CNN-VAE (``RES_VAE_Dynamic``, 2024-01-20), as López-Pérez,
Hauberg and Feragen use it to study how skin-tone representation shapes reconstruction error and latent
uncertainty on Fitzpatrick17k.

Layout (``BCHW``; defaults ``ch=64``, ``blocks=(1, 2, 4, 8)``, ``latent_channels=64``, ``deep_model=True``):

* encoder: 3x3 conv ``C -> blocks[0] ch``; per stage ``i`` (``deep_model``: a :class:`ResBlock` at
  ``blocks[i] ch`` first) a :class:`ResDown` ``blocks[i] ch -> blocks[i+1] ch`` (the last to
  ``2 blocks[-1] ch``) halving H and W; ``num_res_blocks`` ResBlocks at the bottleneck; ELU; two 1x1
  convs to ``mu`` and ``log_var``. A ``(B, 3, 128, 128)`` image gives ``(B, 64, 8, 8)`` latents.
* decoder, the mirror: 1x1 conv ``latent_channels -> 2 blocks[-1] ch``; ``num_res_blocks`` ResBlocks;
  per stage a :class:`ResUp` (nearest x2) then (``deep_model``) a ResBlock; ELU; 5x5 conv to ``C``; tanh.
* every norm is ``BatchNorm2d(eps=1e-4)``, every activation ELU; the blocks are pre-activation
  (norm, ELU, conv), and the first conv of a resampling block also yields the skip path (its first
  ``out`` channels), as in the reference.

In training mode the encoder samples ``z = mu + exp(0.5 log_var) eps``; in eval mode it returns ``mu``.
``forward`` returns the reconstruction only (what export, the conformance suite and inference need);
:meth:`ResidualVAE.reconstruct` returns ``(reconstruction, mu, log_var)``; :class:`VAEPosteriorOutput`
wraps a VAE so that the wrapper's ``forward`` is that method (a DistributedDataParallel module must be
called through ``forward``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ResBlock", "ResDown", "ResUp", "VAEEncoder", "VAEDecoder", "ResidualVAE", "VAEPosteriorOutput",
           "BN_EPS"]

#: BatchNorm epsilon of the reference.
BN_EPS = 1e-4


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class ResDown(nn.Module):
    """Downsampling residual block: BN, ELU, strided 3x3 conv to ``out + out // 2`` channels (the first
    ``out`` are the skip), BN, ELU, 3x3 conv to ``out``; output = conv + skip.

    ``(B, in, H, W) -> (B, out, H/2, W/2)``.
    """

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels_out = channels_out
        self.norm1 = _bn(channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out + channels_out // 2, kernel_size, 2, kernel_size // 2)
        self.norm2 = _bn(channels_out // 2)
        self.conv2 = nn.Conv2d(channels_out // 2, channels_out, kernel_size, 1, kernel_size // 2)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = self.conv1(self.act(self.norm1(x)))
        skip, h = both[:, : self.channels_out], both[:, self.channels_out:]
        return self.conv2(self.act(self.norm2(h))) + skip


class ResUp(nn.Module):
    """Upsampling residual block: BN, ELU, nearest x2, 3x3 conv to ``out + in // 2`` channels (the first
    ``out`` are the skip), BN, ELU, 3x3 conv to ``out``; output = conv + skip.

    ``(B, in, H, W) -> (B, out, 2H, 2W)``.
    """

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int = 3, scale_factor: int = 2) -> None:
        super().__init__()
        self.channels_out = channels_out
        self.norm1 = _bn(channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out + channels_in // 2, kernel_size, 1, kernel_size // 2)
        self.norm2 = _bn(channels_in // 2)
        self.conv2 = nn.Conv2d(channels_in // 2, channels_out, kernel_size, 1, kernel_size // 2)
        self.up = nn.Upsample(scale_factor=scale_factor, mode="nearest")
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = self.conv1(self.up(self.act(self.norm1(x))))
        skip, h = both[:, : self.channels_out], both[:, self.channels_out:]
        return self.conv2(self.act(self.norm2(h))) + skip


class ResBlock(nn.Module):
    """Residual block at one resolution: BN, ELU, 3x3 conv to ``in // 2`` channels (plus ``out`` skip
    channels when ``in != out``), BN, ELU, 3x3 conv to ``out``; the skip is the input itself when
    ``in == out``.

    ``(B, in, H, W) -> (B, out, H, W)``.
    """

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.bottleneck = channels_in // 2
        self.identity = channels_in == channels_out
        first = self.bottleneck if self.identity else self.bottleneck + channels_out
        self.norm1 = _bn(channels_in)
        self.conv1 = nn.Conv2d(channels_in, first, kernel_size, 1, kernel_size // 2)
        self.norm2 = _bn(self.bottleneck)
        self.conv2 = nn.Conv2d(self.bottleneck, channels_out, kernel_size, 1, kernel_size // 2)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = self.conv1(self.act(self.norm1(x)))
        h = both[:, : self.bottleneck]
        skip = x if self.identity else both[:, self.bottleneck:]
        return self.conv2(self.act(self.norm2(h))) + skip


def _check(channels_in: int, ch: int, blocks: Sequence[int], latent_channels: int, num_res_blocks: int) -> tuple:
    blocks = tuple(int(b) for b in blocks)
    for name, v in (("channels_in", channels_in), ("ch", ch), ("latent_channels", latent_channels)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not blocks or any(b < 1 for b in blocks):
        raise ValueError(f"blocks must be a non-empty sequence of positive channel multipliers, got {blocks}")
    if any((b * ch) % 2 for b in blocks):
        raise ValueError(f"every blocks[i] * ch must be even (the blocks halve it), got blocks {blocks}, ch {ch}")
    if num_res_blocks < 0:
        raise ValueError(f"num_res_blocks must be >= 0, got {num_res_blocks}")
    return blocks


class VAEEncoder(nn.Module):
    """``(B, C, H, W) -> (z, mu, log_var)``, each ``(B, latent_channels, H / 2^k, W / 2^k)`` with
    ``k = len(blocks)``; ``z`` is a sample in training mode (or with ``sample=True``), ``mu`` in eval mode."""

    def __init__(self, channels_in: int = 3, ch: int = 64, blocks: Sequence[int] = (1, 2, 4, 8),
                 latent_channels: int = 64, num_res_blocks: int = 1, deep_model: bool = True) -> None:
        super().__init__()
        blocks = _check(channels_in, ch, blocks, latent_channels, num_res_blocks)
        widths_in = list(blocks)
        widths_out = list(blocks[1:]) + [2 * blocks[-1]]
        self.conv_in = nn.Conv2d(channels_in, blocks[0] * ch, 3, 1, 1)
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths_in, widths_out):
            if deep_model:
                layers.append(ResBlock(w_in * ch, w_in * ch))
            layers.append(ResDown(w_in * ch, w_out * ch))
        layers += [ResBlock(widths_out[-1] * ch, widths_out[-1] * ch) for _ in range(num_res_blocks)]
        self.layer_blocks = nn.ModuleList(layers)
        self.conv_mu = nn.Conv2d(widths_out[-1] * ch, latent_channels, 1, 1)
        self.conv_log_var = nn.Conv2d(widths_out[-1] * ch, latent_channels, 1, 1)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor, sample: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.conv_in(x)
        for block in self.layer_blocks:
            h = block(h)
        h = self.act(h)
        mu, log_var = self.conv_mu(h), self.conv_log_var(h)
        if self.training or sample:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        else:
            z = mu
        return z, mu, log_var


class VAEDecoder(nn.Module):
    """``(B, latent_channels, h, w) -> (B, C, h 2^k, w 2^k)`` in ``[-1, 1]`` (tanh), the encoder's mirror."""

    def __init__(self, channels_out: int = 3, ch: int = 64, blocks: Sequence[int] = (1, 2, 4, 8),
                 latent_channels: int = 64, num_res_blocks: int = 1, deep_model: bool = True) -> None:
        super().__init__()
        blocks = _check(channels_out, ch, blocks, latent_channels, num_res_blocks)
        widths_out = list(blocks)[::-1]
        widths_in = (list(blocks[1:]) + [2 * blocks[-1]])[::-1]
        self.conv_in = nn.Conv2d(latent_channels, widths_in[0] * ch, 1, 1)
        layers: list[nn.Module] = [ResBlock(widths_in[0] * ch, widths_in[0] * ch) for _ in range(num_res_blocks)]
        for w_in, w_out in zip(widths_in, widths_out):
            layers.append(ResUp(w_in * ch, w_out * ch))
            if deep_model:
                layers.append(ResBlock(w_out * ch, w_out * ch))
        self.layer_blocks = nn.ModuleList(layers)
        self.conv_out = nn.Conv2d(blocks[0] * ch, channels_out, 5, 1, 2)
        self.act = nn.ELU()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.layer_blocks:
            h = block(h)
        return torch.tanh(self.conv_out(self.act(h)))


class ResidualVAE(nn.Module):
    """The residual VAE (module docstring).

    Args:
        in_channels: image channels ``C`` (3 for RGB). Default 3.
        ch: channel width multiplier. Default 64.
        blocks: channel multiplier of each stage's input; one halving of H and W per entry.
            Default ``(1, 2, 4, 8)``.
        latent_channels: channels of ``mu`` and ``log_var``. Default 64 (the reference README's
            command for 128 x 128 images to a 64 x 8 x 8 latent; the reference's own default is 256).
        num_res_blocks: ResBlocks at the bottleneck of encoder and decoder. Default 1.
        deep_model: one more ResBlock per stage in encoder and decoder. Default ``True``.

    Raises:
        ValueError: a non-positive size, or an odd ``blocks[i] * ch``, naming the value.

    Example:
        >>> net = ResidualVAE(ch=8, blocks=(1, 2), latent_channels=4).eval()
        >>> recon, mu, log_var = net.reconstruct(torch.zeros(2, 3, 32, 32))
        >>> recon.shape, mu.shape
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 4, 8, 8]))
    """

    def __init__(self, in_channels: int = 3, ch: int = 64, blocks: Sequence[int] = (1, 2, 4, 8),
                 latent_channels: int = 64, num_res_blocks: int = 1, deep_model: bool = True) -> None:
        super().__init__()
        self.downsampling = 2 ** len(tuple(blocks))
        self.encoder = VAEEncoder(in_channels, ch, blocks, latent_channels, num_res_blocks, deep_model)
        self.decoder = VAEDecoder(in_channels, ch, blocks, latent_channels, num_res_blocks, deep_model)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` in ``[-1, 1]`` -> ``(reconstruction (B, C, H, W), mu, log_var (B, L, H/2^k, W/2^k))``;
        the reconstruction decodes a sample in training mode and ``mu`` in eval mode.

        Raises:
            ValueError: H or W not divisible by ``2^k``, naming the shape.
        """
        if x.shape[-1] % self.downsampling or x.shape[-2] % self.downsampling:
            raise ValueError(f"ResidualVAE: H and W must be multiples of {self.downsampling} "
                             f"(2 ** len(blocks)), got input shape {list(x.shape)}")
        z, mu, log_var = self.encoder(x)
        return self.decoder(z), mu, log_var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``: the reconstruction of :meth:`reconstruct`."""
        return self.reconstruct(x)[0]


class VAEPosteriorOutput(nn.Module):
    """``forward(x) = vae.reconstruct(x)``: ``(reconstruction, mu, log_var)``.

    The training and evaluation engines run this wrapper (or a DistributedDataParallel around it, which
    must be called through ``forward`` for its gradient synchronisation), while checkpoints and
    exports hold the wrapped :class:`ResidualVAE` itself: the two share their parameters.
    """

    def __init__(self, vae: ResidualVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.vae.reconstruct(x)
