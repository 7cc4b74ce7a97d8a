"""ViTClassifier returns unbounded logits equal to MONAI ViT's linear head on the class token."""

import pytest
import torch

from fairmonai.networks import ViTClassifier


def _tiny(**kw):
    return ViTClassifier(in_channels=1, img_size=16, patch_size=8, hidden_size=24, mlp_dim=32, num_layers=1,
                         num_heads=2, **kw)


def test_logits_are_the_linear_head_of_the_class_token():
    torch.manual_seed(0)
    net = _tiny().eval()
    assert isinstance(net.vit.classification_head, torch.nn.Linear)  # no Tanh after it
    seen = {}
    net.vit.norm.register_forward_hook(lambda m, i, o: seen.__setitem__("tokens", o))
    with torch.no_grad():
        net.vit.classification_head.weight.mul_(100.0)
        x = torch.randn(3, 1, 16, 16, 16)
        out = net(x)
        head = net.vit.classification_head
        expected = seen["tokens"][:, 0] @ head.weight.T + head.bias
    assert out.shape == (3, 2)
    assert torch.allclose(out, expected, atol=1e-5)
    assert out.abs().max() > 1.0  # a Tanh head could never exceed 1


def test_torchscript_matches_eager():
    torch.manual_seed(1)
    net = _tiny().eval()
    x = torch.randn(2, 1, 16, 16, 16)
    scripted = torch.jit.script(net)
    assert torch.allclose(scripted(x), net(x), atol=1e-6)


def test_indivisible_size():
    with pytest.raises(ValueError, match=r"img_size \[20, 20, 20\] must be divisible by patch_size \[8, 8, 8\]"):
        ViTClassifier(in_channels=1, img_size=20, patch_size=8)
