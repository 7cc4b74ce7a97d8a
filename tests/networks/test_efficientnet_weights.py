"""load_efficientnet_weights: a local ImageNet-format file into MONAI's EfficientNetBN, strictly."""

import re

import pytest
import torch
from monai.networks.nets import EfficientNetBN

from fairmonai.networks import load_efficientnet_weights


def _net(num_classes=2, seed=0):
    torch.manual_seed(seed)
    return EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=3, num_classes=num_classes)


def _lukemelas_names(state):
    """The names of the ImageNet files: MONAI's '_blocks.<stage>.<block>.' without the stage."""
    return {re.sub(r"^_blocks\.\d+\.(\d+\.)", r"_blocks.\1", k): v for k, v in state.items()}


def test_imagenet_file_loads_all_but_another_head(tmp_path):
    source = _net(num_classes=1000, seed=1)
    path = tmp_path / "efficientnet-b0.pth"
    torch.save(_lukemelas_names(source.state_dict()), path)
    net = _net(seed=2)
    head_before = net._fc.weight.detach().clone()
    assert load_efficientnet_weights(net, path) is net
    src, dst = source.state_dict(), net.state_dict()
    for key, value in dst.items():
        if key.startswith("_fc."):
            continue
        assert torch.equal(value, src[key]), key
    assert torch.equal(net._fc.weight, head_before)  # 1000 outputs in the file, 2 here: kept


def test_monai_names_and_a_checkpoint_dict_load_everything(tmp_path):
    source = _net(seed=3)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict()}, path)
    net = load_efficientnet_weights(_net(seed=4), path)
    for key, value in net.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_none_is_no_change():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    load_efficientnet_weights(net, None)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"pretrained_weights: no file {tmp_path / 'nope.pth'}"):
        load_efficientnet_weights(_net(), tmp_path / "nope.pth")
    state = _lukemelas_names(_net(num_classes=1000).state_dict())
    del state["_conv_stem.weight"]
    state["_bn0.weight"] = torch.zeros(7)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=re.escape(
            "1 parameter(s) not in the file (first: ['_conv_stem.weight']), 1 of another shape "
            "(first: ['_bn0.weight (7,) vs (32,)'])")):
        load_efficientnet_weights(_net(), path)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds no state dict of tensors"):
        load_efficientnet_weights(_net(), tmp_path / "list.pth")
