"""VAE loss terms: KL against hand values, VGG19 perceptual loss (layers, frozen, offline weights), the
reference form against the paper's Eq. 2 sum form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fairmonai.losses import GaussianKLLoss, VAELoss, VGG19PerceptualLoss, gaussian_kl
from fairmonai.losses.perceptual import VGG19_CONV_INDICES


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return VGG19PerceptualLoss()


def test_kl_hand_values():
    # KL(N(mu, s^2) || N(0, 1)) = 0.5 (s^2 + mu^2 - 1 - log s^2)
    mu = torch.tensor([[0.0, 1.0, 0.0, 2.0]])
    log_var = torch.tensor([[0.0, 0.0, math.log(4.0), math.log(0.25)]])
    expected = [0.0, 0.5, 0.5 * (4 - 1 - math.log(4)), 0.5 * (0.25 + 4 - 1 - math.log(0.25))]
    assert torch.allclose(gaussian_kl(mu, log_var)[0], torch.tensor(expected), atol=1e-6)
    assert GaussianKLLoss()(mu, log_var).item() == pytest.approx(sum(expected) / 4, abs=1e-6)
    assert GaussianKLLoss(reduction="none")(mu, log_var).tolist() == pytest.approx([sum(expected)], abs=1e-5)
    with pytest.raises(ValueError, match="Available options are"):
        GaussianKLLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"same shape, got \(1, 4\) and \(1, 3\)"):
        gaussian_kl(mu, log_var[:, :3])


def test_perceptual_is_zero_for_identical_images_and_positive_otherwise(vgg):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert vgg(x, x).item() == 0.0
    assert vgg(x, -x).item() > 0.0
    assert not vgg.pretrained and vgg.weights_file is None  # random weights, and it says so


def test_perceptual_uses_the_16_pre_relu_conv_outputs(vgg):
    """The loss equals a hand pass over torchvision's features: mean over the 16 convs of the MSE of their
    outputs before the ReLU."""
    torch.manual_seed(1)
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    convs = [i for i, m in enumerate(vgg.features) if isinstance(m, nn.Conv2d)]
    assert tuple(convs) == VGG19_CONV_INDICES and len(convs) == 16
    xa, xb, values = a, b, []
    for i, m in enumerate(vgg.features):
        xa, xb = m(xa), m(xb)
        if i in convs:
            values.append(torch.mean((xa - xb) ** 2))
    with torch.no_grad():
        assert vgg(a, b).item() == pytest.approx(torch.stack(values).mean().item(), rel=1e-5)
        vgg.layer_reduction = "half_sum"
        assert vgg(a, b).item() == pytest.approx(0.5 * torch.stack(values).sum().item(), rel=1e-5)
        vgg.layer_reduction = "mean"


def test_perceptual_weights_are_frozen_and_the_image_gets_the_gradient(vgg):
    recon = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    vgg.train()
    assert not vgg.features.training  # stays in eval mode
    vgg(recon, torch.zeros(1, 3, 32, 32)).backward()
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
    assert recon.grad is not None and recon.grad.abs().sum() > 0


def test_perceptual_local_weights_file(tmp_path):
    """A local state dict is loaded (no download); a missing file or a wrong state dict is named."""
    from torchvision.models import vgg19

    torch.manual_seed(3)
    state = {f"features.{k}": v for k, v in vgg19(weights=None).features.state_dict().items()}
    assert set(VGG19PerceptualLoss().features.state_dict()) == {k[len("features."):] for k in state}  # same keys
    f = tmp_path / "vgg19.pth"
    torch.save(state, f)
    loss = VGG19PerceptualLoss(weights=f)
    assert loss.pretrained and loss.weights_file == str(f.resolve())
    assert torch.equal(loss.features[34].weight, state["features.34.weight"])
    with pytest.raises(FileNotFoundError, match="nope.pth does not exist"):
        VGG19PerceptualLoss(weights=tmp_path / "nope.pth")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="is not a VGG19 state dict"):
        VGG19PerceptualLoss(weights=tmp_path / "bad.pth")


def test_imagenet_normalisation_option(vgg):
    x = torch.zeros(1, 3, 32, 32)
    y = torch.full((1, 3, 32, 32), 0.5)
    plain = vgg(x, y).item()
    imnet = VGG19PerceptualLoss(input_normalization="imagenet")
    imnet.features.load_state_dict(vgg.features.state_dict())
    # [-1, 1] -> [0, 1] -> (v - mean) / std: a difference of 0.5 becomes 0.25 / std per channel
    assert imnet(x, y).item() != pytest.approx(plain)
    with pytest.raises(ValueError, match="imagenet"):
        VGG19PerceptualLoss(input_normalization="unit")


def _batch(seed=0, b=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, 32, 32, generator=g) * 2 - 1
    recon = torch.tanh(x + 0.3 * torch.randn(b, 3, 32, 32, generator=g))
    mu, log_var = torch.randn(b, 4, 8, 8, generator=g), 0.3 * torch.randn(b, 4, 8, 8, generator=g)
    return (recon, mu, log_var), x


def test_reference_form_is_mse_plus_kl_plus_perceptual(vgg):
    pred, x = _batch()
    loss = VAELoss(perceptual=vgg)
    value = loss(pred, x).item()
    mse = torch.mean((pred[0] - x) ** 2).item()
    kl = torch.mean(-0.5 * (1 + pred[2] - pred[1] ** 2 - pred[2].exp())).item()
    assert loss.last_terms["recon"] == pytest.approx(mse, rel=1e-6)
    assert loss.last_terms["kl"] == pytest.approx(kl, rel=1e-6)
    assert value == pytest.approx(mse + kl + vgg(pred[0], x).item(), rel=1e-6)
    assert VAELoss()(pred, x).item() == pytest.approx(mse + kl, rel=1e-6)  # no perceptual term


def test_elbo_sum_form_relation_to_the_mean_form(vgg):
    """Per batch: elbo_sum = D/2 MSE + L KL + 8 P with D = 3*32*32 pixels, L = 4*8*8 latents, 16 layers."""
    pred, x = _batch(1)
    mean_form = VAELoss(perceptual=VGG19PerceptualLoss())
    mean_form.perceptual.features.load_state_dict(vgg.features.state_dict())
    mean_form(pred, x)
    t = mean_form.last_terms
    sum_form = VAELoss(perceptual=vgg, form="elbo_sum")
    value = sum_form(pred, x).item()
    D, L = 3 * 32 * 32, 4 * 8 * 8
    assert value == pytest.approx(D / 2 * t["recon"] + L * t["kl"] + 8 * t["perceptual"], rel=1e-5)
    vgg.layer_reduction = "mean"


def test_weights_and_bad_inputs():
    pred, x = _batch(2)
    plain = VAELoss()
    plain(pred, x)
    half_kl = VAELoss(kl_weight=0.5)
    assert half_kl(pred, x).item() == pytest.approx(plain.last_terms["recon"] + 0.5 * plain.last_terms["kl"], rel=1e-6)
    with pytest.raises(ValueError, match="elbo_sum"):
        VAELoss(form="elbo")
    with pytest.raises(ValueError, match="kl_weight must be >= 0, got -1"):
        VAELoss(kl_weight=-1)
    with pytest.raises(ValueError, match=r"reconstruction shape \(3, 3, 32, 32\) differs from the image's \(3, 3, 16, 16\)"):
        plain(pred, x[..., :16, :16])
    with pytest.raises(ValueError, match="takes the network's \\(reconstruction, mu, log_var\\); got Tensor"):
        plain(pred[0], x)
