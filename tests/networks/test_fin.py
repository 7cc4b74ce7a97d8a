"""FIN (Harvard-GF): the formula by hand, the vectorised gather against a per-sample loop, gradients,
bf16 autocast, the pooled feature / class token of DenseNet121 and the ViT, and the group codes
reaching the network through MONAI's PrepareBatchExtraInput in a SupervisedTrainer."""

import math

import pytest
import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset
from monai.engines import PrepareBatchExtraInput, SupervisedEvaluator, SupervisedTrainer
from monai.networks.nets import DenseNet, DenseNet121, ViT

from fairmonai.networks import FairIdentityNormalization, FINClassifier, FINPrepareBatch, ViTClassifier
from fairmonai.networks.fin import (
    BAD_GROUP_CODE_MSG,
    check_group_codes,
    EXCLUDED_GROUP_CASES_MSG,
    MISSING_GROUP_KEY_MSG,
    MISSING_SENSITIVE_MSG,
)

INV_SOFTPLUS_1 = math.log(math.e - 1.0)  # softplus(.) = 1
INV_SOFTPLUS_2 = math.log(math.e**2 - 1.0)  # softplus(.) = 2
LN2 = math.log(2.0)  # softplus(0)


def _vit(**kw):  # the OCT bundle's smoke sizes
    return ViTClassifier(in_channels=1, img_size=32, patch_size=16, hidden_size=48, mlp_dim=96, num_layers=2,
                         num_heads=4, **kw)


def _hand_fin(eps=1e-6):
    fin = FairIdentityNormalization(2, 3, eps=eps)
    with torch.no_grad():
        fin.mu.copy_(torch.tensor([[0.0, 1.0, -1.0], [0.5, 0.0, 2.0]]))
        fin.s.copy_(torch.tensor([[INV_SOFTPLUS_1, INV_SOFTPLUS_2, INV_SOFTPLUS_1],
                                  [INV_SOFTPLUS_2, INV_SOFTPLUS_1, 0.0]]))
    return fin


def test_formula_by_hand():
    # group 0: scale (1, 2, 1), mu (0, 1, -1); group 1: scale (2, 1, ln 2), mu (0.5, 0, 2)
    # A (g0) f = (1, 3, 1):          f_n = (1, 1, 2);  0.7 f_n + 0.3 f = (1.0, 1.6, 1.7)
    # B (g1) f = (2.5, -1, 2+2ln2):  f_n = (1, -1, 2); 0.7 f_n + 0.3 f = (1.45, -1.0, 2.0 + 0.6 ln2)
    # C (g0) f = (0, 1, -1):         f_n = (0, 0, 0);  out = 0.3 f = (0, 0.3, -0.3)
    f = torch.tensor([[1.0, 3.0, 1.0], [2.5, -1.0, 2.0 + 2 * LN2], [0.0, 1.0, -1.0]])
    out = _hand_fin()(f, torch.tensor([0, 1, 0]))
    expected = torch.tensor([[1.0, 1.6, 1.7], [1.45, -1.0, 2.0 + 0.6 * LN2], [0.0, 0.3, -0.3]])
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-5)  # eps = 1e-6 moves each value by < 3e-6


def test_eps_is_added_to_the_scale():
    # A's first feature with eps = 1: 0.7 * (1 - 0) / (1 + 1) + 0.3 * 1 = 0.65
    out = _hand_fin(eps=1.0)(torch.tensor([[1.0, 3.0, 1.0]]), torch.tensor([0]))
    assert out[0, 0].item() == pytest.approx(0.65, abs=1e-7)


def test_vectorised_equals_per_sample_loop():
    torch.manual_seed(0)
    fin = FairIdentityNormalization(3, 5)
    f, g = torch.randn(7, 5), torch.tensor([2, 0, 1, 1, 2, 0, 2])
    loop = torch.stack([
        0.7 * (f[i] - fin.mu[g[i]]) / (torch.log1p(torch.exp(fin.s[g[i]])) + 1e-6) + 0.3 * f[i] for i in range(7)
    ])
    assert torch.allclose(fin(f, g), loop, atol=1e-6)


def test_gradients_reach_only_the_groups_present():
    torch.manual_seed(1)
    fin = FairIdentityNormalization(4, 6)
    fin(torch.randn(5, 6), torch.tensor([0, 2, 2, 0, 2])).pow(2).sum().backward()
    for p in (fin.mu, fin.s):
        assert (p.grad[[0, 2]].abs().sum(1) > 0).all()
        assert (p.grad[[1, 3]] == 0).all()


def test_initialisation():
    torch.manual_seed(2)
    fin = FairIdentityNormalization(4, 1024)
    assert fin.mu.std().item() == pytest.approx(0.01, rel=0.05)  # 4096 draws: sd of the sd ~ 1 %
    assert fin.s.mean().item() == pytest.approx(0.0, abs=0.06) and fin.s.std().item() == pytest.approx(1, rel=0.05)
    ones = FairIdentityNormalization(4, 8, init_scale="ones")
    assert torch.equal(ones.s, torch.ones(4, 8))
    assert [n for n, _ in fin.named_buffers()] == []  # no running statistics


def test_bf16_autocast_runs_in_float32():
    torch.manual_seed(3)
    fin = FairIdentityNormalization(2, 16)
    f, g = torch.randn(4, 16), torch.tensor([0, 1, 1, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f16 = f.to(torch.bfloat16)  # what a backbone under autocast hands over
        out = fin(f16, g)
    assert out.dtype == torch.float32
    assert torch.equal(out, fin(f16.float(), g))  # exactly the float32 computation on the bf16 feature
    # against float32 throughout: only the feature's bf16 rounding (relative 2^-9) remains
    assert torch.allclose(out, fin(f, g), rtol=2e-2, atol=2e-2)
    # a model cast to bfloat16 as a whole (no autocast) keeps bfloat16
    assert fin.to(torch.bfloat16)(f16, g).dtype == torch.bfloat16


def test_classifier_bf16_autocast_matches_float32():
    torch.manual_seed(4)
    net = FINClassifier(_vit(), num_groups=3).eval()
    x, g = torch.randn(2, 1, 32, 32, 32), torch.tensor([2, 0])
    with torch.no_grad():
        ref = net(x, sensitive=g)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = net(x, sensitive=g)
    assert amp.shape == (2, 2)
    # bf16 keeps 8 bits of mantissa through two transformer blocks and the head; measured max |diff| 0.008
    # on logits of size ~1 (seed 4), so 2e-2 leaves a margin of 2.5
    assert torch.allclose(amp.float(), ref, atol=2e-2, rtol=0)


def test_densenet121_pooled_feature():
    torch.manual_seed(5)
    net = FINClassifier(DenseNet121(spatial_dims=3, in_channels=1, out_channels=2), num_groups=3).eval()
    assert isinstance(net.backbone.class_layers.out, torch.nn.Identity)  # the head is gone, not left unused
    assert net.num_features == 1024 and net.classifier.bias is None
    seen = {}
    net.backbone.features.register_forward_hook(lambda m, i, o: seen.__setitem__("maps", o))
    net.fin.register_forward_pre_hook(lambda m, args: seen.__setitem__("f", args[0]))
    x, g = torch.randn(2, 1, 32, 32, 32), torch.tensor([1, 2])
    with torch.no_grad():
        logits = net(x, sensitive=g)
        pooled = F.relu(seen["maps"]).mean(dim=(2, 3, 4))  # relu -> global average pool, by hand
        assert logits.shape == (2, 2)
        assert seen["f"].shape == (2, 1024) and torch.allclose(seen["f"], pooled, atol=1e-6)
        assert torch.allclose(logits, net.fin(pooled, g) @ net.classifier.weight.T, atol=1e-5)


def _unused(net, **kw):
    net(torch.randn(2, 1, 32, 32, 32), **kw).sum().backward()
    return [n for n, p in net.named_parameters() if p.grad is None]


def test_fin_adds_no_unused_parameter():
    # DDP (find_unused_parameters=False) fails on a parameter without gradient, e.g. a head left unused
    torch.manual_seed(6)
    small = DenseNet(spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4, block_config=(2, 2))
    g = torch.tensor([0, 1])
    assert _unused(FINClassifier(small, num_groups=3), sensitive=g) == []
    # MONAI 1.6.1's ViT blocks hold cross-attention norms that a plain ViT never uses; FIN adds none
    plain = _unused(_vit())
    assert plain and all("cross_attn" in n for n in plain)
    assert _unused(FINClassifier(_vit(), num_groups=3), sensitive=g) == [f"backbone.{n}" for n in plain]


def test_vit_class_token():
    torch.manual_seed(6)
    net = FINClassifier(_vit(), num_groups=3)
    assert isinstance(net.backbone.vit.classification_head, torch.nn.Identity) and net.num_features == 48
    seen = {}
    net.backbone.vit.norm.register_forward_hook(lambda m, i, o: seen.__setitem__("tokens", o))
    net.fin.register_forward_pre_hook(lambda m, args: seen.__setitem__("f", args[0]))
    x, g = torch.randn(3, 1, 32, 32, 32), torch.tensor([0, 2, 1])
    logits = net(x, g)  # positional works too (PrepareBatchExtraInput with a string key)
    assert logits.shape == (3, 2)
    assert seen["tokens"].shape == (3, 1 + 8, 48)  # class token + (32/16)^3 patches
    assert torch.equal(seen["f"], seen["tokens"][:, 0])
    assert torch.allclose(logits, net.fin(seen["tokens"][:, 0], g) @ net.classifier.weight.T, atol=1e-6)


def test_torchscript_matches_eager():
    torch.manual_seed(7)
    net = FINClassifier(_vit(), num_groups=3).eval()
    x, g = torch.randn(2, 1, 32, 32, 32), torch.tensor([1, 0])
    scripted = torch.jit.script(net)
    with torch.no_grad():
        assert torch.allclose(scripted(x, g), net(x, g), atol=1e-6)


def _toy_loader(codes, key="race_code", batch_size=2):
    torch.manual_seed(8)
    data = [{"image": torch.randn(1, 32, 32, 32), "label": torch.tensor(i % 2), key: c, "case_id": f"case{i}"}
            for i, c in enumerate(codes)]
    return DataLoader(Dataset(data), batch_size=batch_size, shuffle=False, num_workers=0)


def _record_sensitive(net):
    got = []
    net.register_forward_pre_hook(lambda m, args, kwargs: got.append(kwargs["sensitive"].clone()), with_kwargs=True)
    return got


@pytest.mark.parametrize("prepare", [PrepareBatchExtraInput({"sensitive": "race_code"}),
                                     FINPrepareBatch("race_code", 3)])
def test_trainer_passes_codes_to_network(prepare):
    torch.manual_seed(9)
    net = FINClassifier(_vit(), num_groups=3)
    got = _record_sensitive(net)
    before = net.fin.mu.detach().clone()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=_toy_loader([0, 2, 1, 0]), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=torch.nn.CrossEntropyLoss(),
        prepare_batch=prepare,
    )
    trainer.run()
    assert trainer.state.iteration == 2
    assert [t.tolist() for t in got] == [[0, 2], [1, 0]]
    assert not torch.equal(net.fin.mu, before)  # FIN's parameters were trained


def test_missing_sensitive_exact_message():
    net = FINClassifier(_vit(), num_groups=3)
    with pytest.raises(ValueError) as err:
        net(torch.randn(1, 1, 32, 32, 32))
    assert str(err.value) == MISSING_SENSITIVE_MSG
    assert "PrepareBatchExtraInput({'sensitive': '<attribute>_code'})" in MISSING_SENSITIVE_MSG
    # an engine built without the extra input stops with the same message
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=_toy_loader([0, 1]), network=net)
    with pytest.raises(ValueError) as err:
        evaluator.run()
    assert str(err.value) == MISSING_SENSITIVE_MSG


def test_excluded_code_is_an_error_naming_positions():
    fin = _hand_fin()
    with pytest.raises(ValueError) as err:
        fin(torch.zeros(3, 3), torch.tensor([0, -1, 2]))
    assert str(err.value) == BAD_GROUP_CODE_MSG.format(num_groups=2, last=1, codes=[-1, 2], positions=[1, 2])


def test_prepare_batch_names_the_cases():
    net = FINClassifier(_vit(), num_groups=3)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=_toy_loader([0, 1, -1, 0]),
                                    network=net, prepare_batch=FINPrepareBatch("race_code", num_groups=3))
    with pytest.raises(ValueError) as err:
        evaluator.run()
    assert str(err.value) == EXCLUDED_GROUP_CASES_MSG.format(key="race_code", codes=[-1], last=2, cases=["case2"])
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=_toy_loader([0, 1], key="sex_code"),
                                    network=net, prepare_batch=FINPrepareBatch("race_code"))
    with pytest.raises(KeyError) as err:
        evaluator.run()
    assert err.value.args[0] == MISSING_GROUP_KEY_MSG.format(
        key="race_code", cases=["case0", "case1"], keys=["case_id", "image", "label", "sex_code"])


def test_ill_inputs():
    fin = FairIdentityNormalization(2, 3)
    with pytest.raises(ValueError, match=r"^f must have shape \(B, 3\), got \(2, 4\)$"):
        fin(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"^the group codes \(sensitive\) must have shape \(2,\) "
                                         r"\(one per case of the batch\), "
                                         r"got \(3,\)$"):
        fin(torch.zeros(2, 3), torch.tensor([0, 1, 1]))
    with pytest.raises(TypeError, match=r"^the group codes \(sensitive\) must be integers, got dtype "
                                        r"torch.float32$"):
        fin(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    assert fin(torch.zeros(2, 3), torch.tensor([[0], [1]])).shape == (2, 3)  # (B, 1) codes are accepted


def test_ill_options():
    with pytest.raises(ValueError, match=r"^init_scale must be one of \['randn', 'ones'\], got 'zeros'$"):
        FairIdentityNormalization(2, 3, init_scale="zeros")
    with pytest.raises(ValueError, match=r"^mix must be in \[0, 1\], got 1.5$"):
        FairIdentityNormalization(2, 3, mix=1.5)
    with pytest.raises(ValueError, match=r"^eps must be > 0, got 0$"):
        FairIdentityNormalization(2, 3, eps=0)
    with pytest.raises(ValueError, match=r"^num_groups and num_features must be >= 1, got 0 and 3$"):
        FairIdentityNormalization(0, 3)
    bare = ViT(in_channels=1, img_size=32, patch_size=16, hidden_size=48, mlp_dim=96, num_layers=1, num_heads=4,
               classification=True)
    with pytest.raises(TypeError, match=r"got ViT \(wrap a MONAI ViT as fairmonai.networks.ViTClassifier\)$"):
        FINClassifier(bare, num_groups=3)


def test_check_group_codes_names_every_bad_case_before_a_run():
    records = [{"case_id": "a", "race_code": 0}, {"case_id": "b", "race_code": -1}, {"case_id": "c", "race_code": 3},
               {"case_id": "d", "race_code": 2}]
    check_group_codes(records[:1] + records[3:], "race_code", 3)
    with pytest.raises(ValueError) as err:
        check_group_codes(records, "race_code", 3)
    assert str(err.value) == EXCLUDED_GROUP_CASES_MSG.format(key="race_code", codes=[-1, 3], last=2, cases=["b", "c"])
    folder = [{"case_id": "x", "image": "x.nii.gz"}, {"case_id": "y", "image": "y.nii.gz"}]  # no manifest
    with pytest.raises(KeyError) as err:
        check_group_codes(folder, "race_code", 3)
    assert err.value.args[0] == MISSING_GROUP_KEY_MSG.format(key="race_code", cases=["x", "y"],
                                                             keys=["case_id", "image"])
