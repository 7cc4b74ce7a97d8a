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


def test_every_trainable_parameter_gets_a_gradient():
    """DistributedDataParallel stops on trainable parameters unused in the loss: MONAI's blocks carry a
    cross-attention LayerNorm that no forward uses; it is frozen, and every other parameter gets a gradient."""
    import torch

    from fairmonai.networks import ViTClassifier

    net = ViTClassifier(1, (32, 32, 32), 8, hidden_size=48, mlp_dim=96, num_layers=2, num_heads=4)
    net(torch.randn(2, 1, 32, 32, 32)).sum().backward()
    unused = [k for k, p in net.named_parameters() if p.requires_grad and p.grad is None]
    frozen = sorted(k for k, p in net.named_parameters() if not p.requires_grad)
    assert unused == []
    assert frozen == [f"vit.blocks.{i}.norm_cross_attn.{w}" for i in range(2) for w in ("bias", "weight")]
    assert {"vit.blocks.0.norm_cross_attn.weight"} <= set(net.state_dict())
