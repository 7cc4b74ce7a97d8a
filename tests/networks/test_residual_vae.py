"""ResidualVAE: shapes, the reference's layer structure and parameter count, eval mode returns mu."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fairmonai.networks import ResBlock, ResDown, ResidualVAE, ResUp, VAEPosteriorOutput

TINY = dict(ch=8, blocks=(1, 2), latent_channels=4)


def _count(net: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


def test_paper_size_shapes_and_reference_structure():
    """128 x 128 -> 64 x 8 x 8. The counts are those of LukeDitria/CNN-VAE's RES_VAE_Dynamic.VAE(3, ch=64,
    blocks=(1, 2, 4, 8), latent_channels=64, deep_model=True) (commit 1c02e66, counted once from the
    reference): 56,715,139 parameters, 41 convolutions, 36 BatchNorms."""
    net = ResidualVAE()
    assert sum(p.numel() for p in net.parameters()) == 56_715_139
    assert _count(net, nn.Conv2d) == 41 and _count(net, nn.BatchNorm2d) == 36
    # encoder: 4 x (ResBlock, ResDown) + 1 bottleneck ResBlock; decoder: 1 ResBlock + 4 x (ResUp, ResBlock)
    assert [type(b) for b in net.encoder.layer_blocks] == [ResBlock, ResDown] * 4 + [ResBlock]
    assert [type(b) for b in net.decoder.layer_blocks] == [ResBlock] + [ResUp, ResBlock] * 4
    assert all(m.eps == 1e-4 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert [m.channels_out for m in net.encoder.layer_blocks if isinstance(m, ResDown)] == [128, 256, 512, 1024]
    # the strided conv of a ResDown yields the skip (out) and the bottleneck (out // 2) in one layer
    assert net.encoder.layer_blocks[1].conv1.out_channels == 128 + 64 and net.encoder.layer_blocks[1].conv1.stride == (2, 2)
    assert net.decoder.conv_out.kernel_size == (5, 5)
    net.eval()
    with torch.no_grad():
        _, mu, log_var = net.encoder(torch.zeros(1, 3, 128, 128))
    assert mu.shape == log_var.shape == (1, 64, 8, 8)


def test_shallow_model_counts():
    """deep_model=False drops the 8 per-stage ResBlocks (2 convs, 2 BNs each): 25 convs, 20 BNs, 50,439,619
    parameters (the reference's count for the same arguments)."""
    net = ResidualVAE(deep_model=False)
    assert sum(p.numel() for p in net.parameters()) == 50_439_619
    assert _count(net, nn.Conv2d) == 25 and _count(net, nn.BatchNorm2d) == 20


def test_tiny_shapes_range_and_forward_is_the_reconstruction():
    torch.manual_seed(0)
    net = ResidualVAE(**TINY).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, mu, log_var = net.reconstruct(x)
    assert recon.shape == (2, 3, 32, 32) and mu.shape == log_var.shape == (2, 4, 8, 8)
    assert recon.abs().max() <= 1.0  # tanh
    assert torch.equal(net(x), recon)
    assert all(torch.equal(a, b) for a, b in zip(VAEPosteriorOutput(net)(x), (recon, mu, log_var)))


def test_eval_mode_decodes_mu_deterministically_training_mode_samples():
    torch.manual_seed(0)
    net = ResidualVAE(**TINY)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    net.eval()
    with torch.no_grad():
        z, mu, _ = net.encoder(x)
        a, b = net(x), net(x)
        assert torch.equal(z, mu) and torch.equal(a, b)
        assert torch.allclose(a, net.decoder(mu))
        net.train()
        z1, mu1, log_var1 = net.encoder(x)
        z2, _, _ = net.encoder(x)
    assert not torch.equal(z1, z2)  # a sample: z = mu + exp(0.5 log_var) eps
    eps = (z1 - mu1) / torch.exp(0.5 * log_var1)
    assert abs(eps.mean().item()) < 0.2 and abs(eps.std().item() - 1.0) < 0.2


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="multiples of 4"):
        ResidualVAE(**TINY).reconstruct(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match="latent_channels must be a positive integer, got 0"):
        ResidualVAE(ch=8, blocks=(1, 2), latent_channels=0)


def test_torchscript_matches_eager():
    torch.manual_seed(0)
    net = ResidualVAE(**TINY).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(net)(x), net(x), atol=1e-6)
