"""ONNX export of the bundles' networks: named input and output, dynamic batch (and spatial) axes, equal to PyTorch.

Each network is built in-process from its bundle's ``inference.json`` (plus its ``net_*.json`` overlay
and, for the ViT and SwinUNETR, ``smoke.json``'s small sizes), given random weights saved as a bundle
checkpoint (``{"model": state_dict}``), and exported with ``monai.bundle.onnx_export``: the function the
``python -m monai.bundle onnx_export`` command line calls, with the same arguments, and
``converter_kwargs`` (:func:`converter_kwargs`) naming the input ``image`` and the output ``pred`` and
making their axes dynamic. The export is traced at the smoke size (SwinUNETR: at its default patch,
slow); onnxruntime then runs it at another batch size and, where the network allows it, another
spatial size, and its output is compared with the PyTorch network's in eval mode. The slow tests add
SwinUNETR and DenseNet121 at the OCT bundle's default 96^3. FIN (two inputs, image and group codes): the
documented onnx_export refuses it with FIN's message, ckpt_export's scripted TorchScript takes both inputs,
and ``convert_to_onnx`` with both inputs gives an ONNX model equal to PyTorch (see the FIN section below).

Weights: MONAI's initialisation leaves BatchNorm at running mean 0, variance 1, scale 1, shift 0, and
the outputs of a random DenseNet hardly depend on the input, so a wrong graph could still match.
:func:`informative` draws BatchNorm statistics and affine parameters and the test first checks that the
outputs differ between the cases of the batch by far more than the tolerance.

Tolerance: ``|onnx - torch| <= 5e-5 * max(1, max |torch|)``. Both run float32 with different summation
orders (and the export folds each BatchNorm that follows a convolution into it), so the difference
scales with the outputs' size. Measured here (2 CPU cores): DenseNet121 2.4e-7 (logits below 1) and
3.6e-7 at 96^3; ViT 9e-7; UNet 1.3e-5 on outputs of 5.3 (2.5e-6 relative); SegResNet 4.2e-6;
SwinUNETR 1.8e-5 on outputs of 2.8 (6.6e-6 relative, attention and LayerNorm kernels); so at least 7x
headroom. A 32^3 demo model run at 96^3 (logits of 2e5) differed by 0.2, and there PyTorch's own
float32 result was 0.13 from its float64 result: an absolute gap means nothing without the logits' size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[2]
OCT = ROOT / "bundles" / "oct_glaucoma_fami" / "configs"
MAMA = ROOT / "bundles" / "mama_mia_fairmedseg" / "configs"
ISIC = ROOT / "bundles" / "isic2020_fairness_losses" / "configs"
FITZ = ROOT / "bundles" / "fitzpatrick17k_vae" / "configs"

SPATIAL = {2: "x", 3: "y", 4: "z"}


def converter_kwargs(dynamic: str, segmentation: bool, spatial_dims: int = 3) -> dict:
    """``--converter_kwargs`` of ``onnx_export``: TorchScript-based exporter, names, and dynamic axes:
    ``"all"`` (batch and spatial), ``"batch"`` or ``"none"``. ``segmentation``: the output has the
    input's spatial axes (a segmentation or a reconstruction)."""
    kwargs = {"dynamo": False, "input_names": ["image"], "output_names": ["pred"]}
    if dynamic != "none":
        spatial = dict(list(SPATIAL.items())[:spatial_dims]) if dynamic == "all" else {}
        kwargs["dynamic_axes"] = {"image": {0: "batch", **spatial}, "pred": {0: "batch", **(spatial if segmentation else {})}}
    return kwargs


#: (id, configs, export shape, run shape, dynamic axes)
CASES = [
    ("oct-densenet121", [OCT / "inference.json"], [1, 1, 32, 32, 32], [3, 1, 48, 40, 36], "all"),
    # the ViT's position embeddings fix its input size (img_size = image_size): batch only
    ("oct-vit", [OCT / "inference.json", OCT / "net_vit.json", OCT / "smoke.json"], [1, 1, 32, 32, 32],
     [3, 1, 32, 32, 32], "batch"),
    # UNet: four stride-2 levels, so any multiple of 16
    ("mama-unet", [MAMA / "inference.json"], [1, 3, 64, 64, 32], [2, 3, 48, 32, 32], "all"),
    ("mama-segresnet", [MAMA / "inference.json", MAMA / "net_segresnet.json"], [1, 3, 64, 64, 32],
     [2, 3, 48, 32, 32], "all"),
    # EfficientNet-B1 (2-D; its network does not depend on image_size): the bundle resizes every photo to
    # image_size, so the batch axis only
    ("isic-efficientnet-b1", [ISIC / "inference.json"], [1, 3, 32, 32], [3, 3, 32, 32], "batch"),
    # the VAE (smoke size, 2 stride-2 levels): any multiple of 4; the output is the reconstruction
    ("fitz-vae", [FITZ / "inference.json", FITZ / "smoke.json"], [1, 3, 32, 32], [2, 3, 48, 40], "all"),
]

#: SwinUNETR, slow (about 80 s on 2 cores): exported at the bundle's default sliding-window size 96x96x64
#: (``swin_patch_size``, all the inferer ever gives it) with smoke.json's feature size 12. At a
#: 64x64x32 patch the export stops (``ONNX export of instance_norm for unknown channel size``, MONAI
#: issue 5125): the deepest level is 2x2x1 there. Its window reshapes are traced as constants, so the
#: spatial axes stay static.
SWIN = ("mama-swinunetr", [MAMA / "inference.json", MAMA / "net_swinunetr.json", MAMA / "smoke.json"],
        [1, 3, 96, 96, 64], [2, 3, 96, 96, 64], "batch")



def informative(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm drawn running statistics and affine parameters (as training leaves them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
    return net.eval()


#: networks whose output drawn BatchNorm statistics leave nearly independent of the input (EfficientNet's 23
#: blocks: two random inputs gave logits 1e-6 apart): their statistics are estimated on random inputs instead
CALIBRATE = {"isic-efficientnet-b1"}


def calibrated(net: torch.nn.Module, shape: list[int], tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """The BatchNorm running statistics of ``net`` set to its activations' on random inputs of ``shape``
    (cumulative average over 4 batches, as a recalibration), and a checkpoint of the result."""
    g = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.rand(*shape, generator=g))
    ckpt = tmp_path / "model_calibrated.pt"
    torch.save({"model": net.state_dict()}, ckpt)
    return net.eval(), ckpt


def build(configs: list[Path], tmp_path: Path, seed: int = 0) -> tuple[torch.nn.Module, Path]:
    """The bundle's ``network_def`` with random weights, and a checkpoint of them in the bundle's format."""
    torch.manual_seed(seed)
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    net = informative(parser.get_parsed_content("network_def"), seed)
    ckpt = tmp_path / "model.pt"
    torch.save({"model": net.state_dict()}, ckpt)
    return net, ckpt


def export(configs: list[Path], ckpt: Path, out: Path, input_shape: list[int], kwargs: dict) -> Path:
    """``python -m monai.bundle onnx_export network_def ...`` as a call."""
    from monai.bundle import onnx_export

    onnx_export(net_id="network_def", filepath=str(out), ckpt_file=str(ckpt), key_in_ckpt="model",
                config_file=[str(c) for c in configs], use_trace=True, input_shape=input_shape,
                converter_kwargs=json.loads(json.dumps(kwargs), object_hook=_int_keys))
    return out


def _int_keys(d: dict) -> dict:
    """JSON object keys are strings; dynamic_axes needs the axis numbers as ints (as on the command line)."""
    return {int(k) if k.isdigit() else k: v for k, v in d.items()}


def compare(net: torch.nn.Module, onnx_file: Path, shape: list[int]) -> tuple[float, float]:
    """Max |onnx - torch| and the tolerance over two random inputs of ``shape``; checks the graph's names."""
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert [o.name for o in sess.get_outputs()] == ["pred"]
    diff, tol, outputs = 0.0, 0.0, []
    for seed in (1, 2):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = net.eval()(x).numpy()
        got = sess.run(["pred"], {"image": x.numpy()})[0]
        assert got.shape == expected.shape
        diff = max(diff, float(np.abs(got - expected).max()))
        tol = max(tol, 5e-5 * max(1.0, float(np.abs(expected).max())))
        outputs.append(expected)
    # the check has power: two inputs give outputs far apart compared with the tolerance
    assert float(np.abs(outputs[0] - outputs[1]).max()) > 100 * tol
    return diff, tol


@pytest.mark.parametrize("name,configs,export_shape,run_shape,dynamic", CASES, ids=[c[0] for c in CASES])
def test_onnx_dynamic_axes_equal_pytorch(name, configs, export_shape, run_shape, dynamic, tmp_path):
    net, ckpt = build(configs, tmp_path)
    if name in CALIBRATE:
        net, ckpt = calibrated(net, run_shape, tmp_path)
    kwargs = converter_kwargs(dynamic, segmentation=name.startswith(("mama", "fitz")), spatial_dims=len(export_shape) - 2)
    out = export(configs, ckpt, tmp_path / "model.onnx", export_shape, kwargs)

    import onnx

    graph = onnx.load(str(out)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    batch = export_shape[0] if dynamic == "none" else "batch"
    axes = ["x", "y", "z"][: len(export_shape) - 2]
    assert dims == [batch, export_shape[1], *(axes if dynamic == "all" else export_shape[2:])]
    diff, tol = compare(net, out, run_shape)
    print(f"{name}: max |onnx - torch| {diff:.3g}, tolerance {tol:.3g}")
    assert diff <= tol, f"{name}: max |onnx - torch| {diff:.3g} > {tol:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("name,configs,export_shape,run_shape,dynamic", [SWIN], ids=[SWIN[0]])
def test_onnx_swinunetr(name, configs, export_shape, run_shape, dynamic, tmp_path):
    test_onnx_dynamic_axes_equal_pytorch(name, configs, export_shape, run_shape, dynamic, tmp_path)


@pytest.mark.slow
def test_onnx_densenet_at_the_default_size(tmp_path):
    """OCT's DenseNet121 at the bundle's default 96^3, exported as the docs say (traced at 96^3)."""
    configs = [OCT / "inference.json"]
    net, ckpt = build(configs, tmp_path)
    out = export(configs, ckpt, tmp_path / "model.onnx", [1, 1, 96, 96, 96], converter_kwargs("all", False))
    diff, tol = compare(net, out, [2, 1, 96, 96, 96])
    print(f"densenet121 at 96^3: max |onnx - torch| {diff:.3g}, tolerance {tol:.3g}")
    assert diff <= tol, f"max |onnx - torch| {diff:.3g} > {tol:.3g}"


# --- FIN: a network of two inputs (image, group codes) -------------------------------------------------------
# MONAI 1.6.1's onnx_export builds the example input as ``[torch.rand(input_shape)]`` and writes it over any
# ``inputs`` in ``converter_kwargs``, so the command can only call ``network(image)``; FIN needs the codes too
# and the export stops with FIN's own message. ckpt_export without ``--use_trace`` (the documented command)
# scripts the network instead of tracing it, and the TorchScript model keeps FIN's ``forward(x, sensitive)``.
# An ONNX model with both inputs is made by calling ``monai.networks.convert_to_onnx`` with the two inputs.

FIN = [OCT / "inference.json", OCT / "method_fin.json"]
FIN_VIT = [*FIN, OCT / "net_vit.json", OCT / "smoke.json"]


def _fin_inputs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(batch, 1, 32, 32, 32, generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(batch) % 3  # the three races' codes 0, 1, 2


def _check_codes_matter(net: torch.nn.Module, x: torch.Tensor, codes: torch.Tensor, tol: float) -> None:
    """The same images with the codes rotated give other outputs, far beyond the tolerance."""
    with torch.no_grad():
        a, b = net(x, sensitive=codes), net(x, sensitive=(codes + 1) % 3)
    assert float((a - b).abs().max()) > 100 * tol


def test_fin_onnx_export_refuses_without_the_group_codes(tmp_path):
    from monai.bundle import onnx_export

    from fairmonai.networks.fin import MISSING_SENSITIVE_MSG

    _, ckpt = build(FIN, tmp_path)
    out = tmp_path / "model.onnx"
    with pytest.raises(ValueError) as e:  # the documented command's arguments
        export(FIN, ckpt, out, [1, 1, 32, 32, 32], converter_kwargs("batch", segmentation=False))
    assert str(e.value) == MISSING_SENSITIVE_MSG
    # example inputs given through converter_kwargs are replaced by the one random image: refused the same way
    with pytest.raises(ValueError) as e:
        onnx_export(net_id="network_def", filepath=str(out), ckpt_file=str(ckpt), key_in_ckpt="model",
                    config_file=[str(c) for c in FIN], use_trace=True, input_shape=[1, 1, 32, 32, 32],
                    converter_kwargs={"dynamo": False, "inputs": list(_fin_inputs(1, 0))})
    assert str(e.value) == MISSING_SENSITIVE_MSG
    assert not out.exists()


def _fin_torchscript(configs, tmp_path):
    from monai.bundle import ckpt_export

    net, ckpt = build(configs, tmp_path)
    ts_file = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts_file), ckpt_file=str(ckpt), key_in_ckpt="model",
                meta_file=str(OCT / "metadata.json"), config_file=[str(c) for c in configs])  # scripted
    ts = torch.jit.load(str(ts_file))
    x, codes = _fin_inputs(3, seed=1)
    with torch.no_grad():
        expected = net(x, sensitive=codes)
        got = ts(x, codes)
    tol = 5e-5 * max(1.0, float(expected.abs().max()))
    assert got.shape == expected.shape == (3, 2)
    assert float((got - expected).abs().max()) <= tol
    _check_codes_matter(net, x, codes, tol)
    with pytest.raises(torch.jit.Error, match="FINClassifier needs the group code of every case"):
        ts(x)


def test_fin_torchscript_export_takes_image_and_codes(tmp_path):
    """FIN-ViT (smoke sizes): the scripted export's ``(image, codes)`` output equals PyTorch's."""
    _fin_torchscript(FIN_VIT, tmp_path)


@pytest.mark.slow
def test_fin_densenet_torchscript_export_takes_image_and_codes(tmp_path):
    """FIN-DenseNet121, the overlay's default (12-25 s on 2 shared cores, most of it TorchScript's first call)."""
    _fin_torchscript(FIN, tmp_path)


def _fin_onnx_two_inputs(configs, tmp_path):
    from monai.networks import convert_to_onnx

    net, _ = build(configs, tmp_path)
    out = tmp_path / "model.onnx"
    convert_to_onnx(net, inputs=list(_fin_inputs(1, seed=0)), input_names=["image", "sensitive"],
                    output_names=["pred"], filename=str(out), dynamo=False,
                    dynamic_axes={"image": {0: "batch"}, "sensitive": {0: "batch"}, "pred": {0: "batch"}})
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in sess.get_inputs()] == [("image", "tensor(float)"), ("sensitive", "tensor(int64)")]
    x, codes = _fin_inputs(3, seed=1)
    with torch.no_grad():
        expected = net.eval()(x, sensitive=codes).numpy()
    got = sess.run(["pred"], {"image": x.numpy(), "sensitive": codes.numpy()})[0]
    tol = 5e-5 * max(1.0, float(np.abs(expected).max()))
    assert got.shape == expected.shape == (3, 2)
    assert float(np.abs(got - expected).max()) <= tol
    _check_codes_matter(net, x, codes, tol)


def test_fin_onnx_with_both_inputs_through_convert_to_onnx(tmp_path):
    """FIN-ViT (smoke sizes) traced with (image, codes): onnxruntime at another batch size equals PyTorch."""
    _fin_onnx_two_inputs(FIN_VIT, tmp_path)


@pytest.mark.slow
def test_fin_densenet_onnx_with_both_inputs_through_convert_to_onnx(tmp_path):
    """The same for FIN-DenseNet121, the overlay's default (10-15 s on 2 shared cores)."""
    _fin_onnx_two_inputs(FIN, tmp_path)
