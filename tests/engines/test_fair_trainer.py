"""FairSupervisedTrainer: the loss gets each batch's groups (and features) through MONAI's own _iteration."""

from __future__ import annotations

import re
import warnings
from collections import OrderedDict

import pytest
import torch
from ignite.engine import Events
from monai.engines import IterationEvents
from torch.utils.data import DataLoader

from fairmonai.engines import FairSupervisedTrainer

GROUPS = [0, 1, 2, 1, 0, 2, 2, 0, 1, 1, 0, 2]  # 12 samples, batch 2 -> 6 iterations


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.randn(n, 2, generator=g)
    return [{"image": x[i], "label": y[i], "race_code": GROUPS[i]} for i in range(n)]


def _loader(data, batch_size=2):
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(OrderedDict(feat=torch.nn.Linear(4, 3), act=torch.nn.Tanh(), head=torch.nn.Linear(3, 2)))


def _loss_value(pred, target, sensitive):
    # a group-dependent weighting so that the groups matter for the gradient
    w = 1.0 + 0.5 * sensitive.to(pred.dtype)
    return (w[:, None] * (pred - target) ** 2).mean()


class RecordingLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, pred, target, *, sensitive, representation=None):
        self.calls.append({
            "sensitive": sensitive.clone(), "pred_dtype": pred.dtype, "pred_device": pred.device,
            "representation": None if representation is None else representation.detach().clone(),
            "requires_grad": None if representation is None else representation.requires_grad,
        })
        return _loss_value(pred, target, sensitive)


def _count_steps(opt):
    calls = []
    orig = opt.step

    def step(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    opt.step = step
    return calls


def _trainer(net, loss, data=None, **kw):
    data = _data() if data is None else data
    opt = kw.pop("optimizer", None) or torch.optim.SGD(net.parameters(), lr=0.1)
    return FairSupervisedTrainer(
        device="cpu", max_epochs=kw.pop("max_epochs", 1), train_data_loader=_loader(data), network=net,
        optimizer=opt, loss_function=loss, sensitive_key=kw.pop("sensitive_key", "race_code"), **kw,
    )


def test_loss_receives_each_batch_groups_in_order():
    loss = RecordingLoss()
    trainer = _trainer(_net(), loss)
    trainer.run()
    got = [c["sensitive"] for c in loss.calls]
    assert len(got) == 6
    assert all(t.dtype == torch.long and t.device == torch.device("cpu") for t in got)
    assert torch.cat(got).tolist() == GROUPS
    assert trainer.base_loss_function is loss
    # the loss stored by MONAI is the configured loss's value (decollated on MODEL_COMPLETED)
    assert all(c["representation"] is None for c in loss.calls)


def test_accumulation_steps_and_parameters_match_hand_run():
    data = _data()
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    steps = _count_steps(opt)
    trainer = _trainer(net, RecordingLoss(), data, optimizer=opt, accumulation_steps=2)
    trainer.run()
    assert len(steps) == 3

    ref = _net()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    batches = list(_loader(data))
    for i in range(0, 6, 2):
        ref_opt.zero_grad()
        for b in batches[i : i + 2]:
            (_loss_value(ref(b["image"]), b["label"], b["race_code"].long()) / 2).backward()
        ref_opt.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_events_fire_in_order():
    trainer = _trainer(_net(), RecordingLoss())
    seen = []
    events = [Events.ITERATION_STARTED, IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
              IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED, Events.ITERATION_COMPLETED]
    for ev in events:
        trainer.add_event_handler(ev, lambda e, ev=ev: seen.append(ev.name))
    # during the loss the batch is still the collated dict, afterwards decollated
    batch_kind = []
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda e: batch_kind.append(type(e.state.batch)))
    trainer.run()
    assert seen == [ev.name for ev in events] * 6
    assert all(issubclass(k, dict) for k in batch_kind)
    assert isinstance(trainer.state.batch, list)  # decollated after MODEL_COMPLETED


def test_amp_on_cpu_runs_and_passes_sensitive():
    loss = RecordingLoss()
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    steps = _count_steps(opt)
    trainer = _trainer(net, loss, optimizer=opt, amp=True, max_epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI 1.6.1: cuda autocast/GradScaler disable themselves on CPU
        trainer.run()
    assert trainer.scaler is not None and not trainer.scaler.is_enabled()
    assert len(steps) == 12  # the disabled scaler's step() calls optimizer.step()
    assert torch.cat([c["sensitive"] for c in loss.calls]).tolist() == GROUPS * 2
    assert {c["pred_dtype"] for c in loss.calls} == {torch.float32}  # no CPU autocast in MONAI 1.6.1
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_representation_tap_matches_manual_forward():
    data = _data()
    net = _net()
    loss = RecordingLoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)  # parameters fixed: compare with a forward afterwards
    trainer = _trainer(net, loss, data, optimizer=opt, representation_layer="act")
    trainer.run()
    assert len(loss.calls) == 6
    with torch.no_grad():
        for c, b in zip(loss.calls, _loader(data)):
            torch.testing.assert_close(c["representation"], torch.tanh(net.feat(b["image"])))
            assert c["requires_grad"]  # the penalty's gradient can reach the layers below
    # a validator sharing the network outside the trainer's iterations does not overwrite the tap
    before = trainer.last_representation
    net(torch.zeros(1, 4))
    assert trainer.last_representation is before


def test_representation_gradient_reaches_lower_layers():
    class FeatureOnly(torch.nn.Module):
        def forward(self, pred, target, *, sensitive, representation):
            return (representation**2).mean() + 0.0 * pred.sum()

    net = _net()
    trainer = _trainer(net, FeatureOnly(), representation_layer="feat")
    before_feat = net.feat.weight.detach().clone()
    before_head = net.head.weight.detach().clone()
    trainer.run()
    assert not torch.equal(net.feat.weight, before_feat)
    assert torch.equal(net.head.weight, before_head)


def test_missing_key_message_names_key_and_batch_keys():
    trainer = _trainer(_net(), RecordingLoss(), sensitive_key="sex_code")
    with pytest.raises(ValueError, match=re.escape("no sensitive attribute key 'sex_code'")) as e:
        trainer.run()
    assert "['image', 'label', 'race_code']" in str(e.value)


def test_loss_without_sensitive_is_rejected_at_construction():
    with pytest.raises(TypeError, match="does not accept the keyword argument 'sensitive'") as e:
        _trainer(_net(), torch.nn.MSELoss())
    assert "MSELoss" in str(e.value)

    def only_sensitive(pred, target, *, sensitive):
        return (pred - target).pow(2).mean()

    with pytest.raises(TypeError, match="does not accept the keyword argument 'representation'"):
        _trainer(_net(), only_sensitive, representation_layer="act")


def test_loss_without_sensitive_is_rejected_at_first_call():
    class Opaque:  # a callable whose signature can't be read
        __signature__ = property(lambda self: (_ for _ in ()).throw(ValueError("no signature")))

        def __call__(self, pred, target):
            return (pred - target).pow(2).mean()

    with pytest.raises(TypeError, match="does not accept the keyword argument 'sensitive'"):
        _trainer(_net(), Opaque()).run()


def test_unknown_representation_layer_lists_names():
    msg = "representation_layer 'haed' is not a submodule of Sequential"
    with pytest.raises(ValueError, match=re.escape(msg)) as e:
        _trainer(_net(), RecordingLoss(), representation_layer="haed")
    assert "'head'" in str(e.value) and "['feat', 'act', 'head']" in str(e.value)


def test_ddp_style_wrapper_is_unwrapped():
    class Wrapper(torch.nn.DataParallel):  # DataParallel on CPU: plain forward, has .module
        pass

    inner = _net()
    loss = RecordingLoss()
    opt = torch.optim.SGD(inner.parameters(), lr=0.0)
    trainer = _trainer(Wrapper(inner), loss, optimizer=opt, representation_layer="act")
    trainer.run()
    assert len(loss.calls) == 6 and loss.calls[0]["representation"].shape == (2, 3)


def test_non_integer_codes_are_rejected():
    data = [dict(d, race_code=0.5) for d in _data()]
    with pytest.raises(ValueError, match="must hold integer group codes"):
        _trainer(_net(), RecordingLoss(), data).run()


# ---- loss_batch_keys: other batch values (FairMedSeg's per-sample weights) reach the loss ----------


class WeightRecordingLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weights = []

    def forward(self, pred, target, *, weight):
        self.weights.append(weight.clone())
        return (weight[:, None] * (pred - target) ** 2).mean()


def _weighted_data():
    data = _data()
    for i, d in enumerate(data):
        d["sample_weight"] = 0.25 * i  # a distinct weight per sample
    return data


def test_loss_batch_keys_pass_each_batch_weights_in_order():
    loss = WeightRecordingLoss()
    trainer = _trainer(_net(), loss, data=_weighted_data(), sensitive_key=None,
                       loss_batch_keys={"weight": "sample_weight"})
    trainer.run()
    got = torch.cat(loss.weights)
    assert got.dtype == torch.float32  # the dtype of pred, not the float64 of collated python floats
    assert got.tolist() == [0.25 * i for i in range(12)]


def test_loss_batch_keys_gradient_equals_hand_run():
    data = _weighted_data()
    net_a, net_b = _net(), _net()
    trainer = _trainer(net_a, WeightRecordingLoss(), data=data, sensitive_key=None,
                       loss_batch_keys={"weight": "sample_weight"})
    trainer.run()
    opt = torch.optim.SGD(net_b.parameters(), lr=0.1)
    for start in range(0, 12, 2):
        x = torch.stack([d["image"] for d in data[start:start + 2]])
        y = torch.stack([d["label"] for d in data[start:start + 2]])
        w = torch.tensor([d["sample_weight"] for d in data[start:start + 2]])
        opt.zero_grad()
        (w[:, None] * (net_b(x) - y) ** 2).mean().backward()
        opt.step()
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_loss_batch_keys_and_sensitive_together():
    class Both(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, pred, target, *, sensitive, weight):
            self.seen.append((sensitive.tolist(), weight.tolist()))
            return ((pred - target) ** 2).mean()

    loss = Both()
    _trainer(_net(), loss, data=_weighted_data(), loss_batch_keys={"weight": "sample_weight"}).run()
    assert loss.seen[0] == ([GROUPS[0], GROUPS[1]], [0.0, 0.25])


def test_missing_batch_key_message():
    trainer = _trainer(_net(), WeightRecordingLoss(), sensitive_key=None, loss_batch_keys={"weight": "sample_weight"})
    with pytest.raises(ValueError, match=re.escape("the batch has no key 'sample_weight' (loss_batch_keys of "
                                                   "FairSupervisedTrainer maps the loss keyword 'weight' to it)")):
        trainer.run()


def test_loss_batch_keys_checked_at_construction():
    with pytest.raises(TypeError, match="does not accept the keyword argument 'weight'"):
        _trainer(_net(), RecordingLoss(), loss_batch_keys={"weight": "sample_weight"})
    with pytest.raises(ValueError, match="needs sensitive_key or loss_batch_keys"):
        _trainer(_net(), WeightRecordingLoss(), sensitive_key=None)
    with pytest.raises(ValueError, match="may not set 'sensitive'"):
        _trainer(_net(), RecordingLoss(), loss_batch_keys={"sensitive": "race_code"})


# ------------------------------------------------------------------ loss terms on engine.state


class GapPenalty(torch.nn.Module):
    """(mean of v[:, 0] in group 0 - mean in the other groups) ** 2, with tensor ops only (no host sync)."""

    def forward(self, v, *, sensitive):
        g0 = (sensitive == 0).to(v.dtype)
        m0 = (v[:, 0] * g0).sum() / g0.sum().clamp(min=1)
        m1 = (v[:, 0] * (1 - g0)).sum() / (1 - g0).sum().clamp(min=1)
        self.last_diagnostic = {"gap": (m0 - m1).detach()}
        return (m0 - m1) ** 2


def test_loss_terms_equal_the_loss_computed_directly():
    import copy

    from fairmonai.losses import FairnessRegularizedLoss, MINEPenalty

    torch.manual_seed(0)
    loss = FairnessRegularizedLoss(torch.nn.MSELoss(), MINEPenalty(num_groups=3, in_features=2), mu=0.5,
                                   target_transform="none")
    reference = copy.deepcopy(loss)  # the same critic, moving average and shuffling state
    net = _net()
    # lr 0 (and the critic outside the optimizer): the network and critic stay as they are
    trainer = _trainer(net, loss, optimizer=torch.optim.SGD(net.parameters(), lr=0.0))
    assert trainer.state.loss_terms == {}  # before the first iteration
    published = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: published.append(e.state.loss_terms))
    trainer.run()
    assert len(published) == 6
    for terms, batch in zip(published, _loader(_data())):
        pred = net(batch["image"])
        total = reference(pred, batch["label"], sensitive=batch["race_code"].long())
        assert list(terms) == ["task_loss", "mu", "penalty", "dv", "ma", "n_used", "n_excluded"]
        assert all(isinstance(t, torch.Tensor) and t.ndim == 0 and not t.requires_grad for t in terms.values())
        for key, expected in reference.last_terms.items():
            assert torch.equal(terms[key], expected), key
        # the published numbers are the loss's: total = task + mu * penalty, penalty = the DV value
        assert float(terms["task_loss"]) == torch.nn.functional.mse_loss(pred, batch["label"]).item()
        assert float(terms["penalty"]) == float(terms["dv"]) != 0.0
        assert float(terms["task_loss"]) + 0.5 * float(terms["penalty"]) == pytest.approx(total.item(), rel=1e-6)
        assert float(terms["mu"]) == 0.5 and terms["mu"].dtype == torch.float64


def test_loss_terms_of_divergence_weighted_loss_and_of_a_loss_without_terms():
    from fairmonai.losses import DivergenceWeightedLoss

    class SampleMSE(torch.nn.Module):
        def forward(self, pred, target):
            return ((pred - target) ** 2).mean(dim=1)  # (B,): per-sample values

    data = [dict(d, sample_weight=float(i % 3)) for i, d in enumerate(_data())]
    net = _net()
    trainer = FairSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=_loader(data), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0), loss_function=DivergenceWeightedLoss(SampleMSE(), 0.2),
        loss_batch_keys={"weight": "sample_weight"},
    )
    trainer.run()
    last = list(_loader(data))[-1]  # weights (1, 2): samples 10 and 11
    per = ((net(last["image"]) - last["label"]) ** 2).mean(dim=1).detach()
    expected = {"seg": per.mean(), "weighted": (torch.tensor([1.0, 2.0]) * per).mean()}
    expected["total"] = 0.2 * expected["seg"] + 0.8 * expected["weighted"]
    assert set(trainer.state.loss_terms) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(trainer.state.loss_terms[key], value, rtol=1e-6, atol=0)

    plain = _trainer(_net(), RecordingLoss())  # no last_terms: nothing to publish
    plain.run()
    assert plain.state.loss_terms == {}


def test_publishing_the_terms_converts_nothing_to_python_numbers(monkeypatch):
    from fairmonai.losses import FairnessRegularizedLoss

    loss = FairnessRegularizedLoss(torch.nn.MSELoss(), GapPenalty(), mu=0.5, target_transform="none")
    trainer = _trainer(_net(), loss)
    calls, active = [], [False]
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _n=name, _o=original, **k: (
            active[0] and calls.append(_n), _o(self, *a, **k))[1])
    # from the batch to LOSS_COMPLETED: prepare_batch, forward, the loss hook, publishing the terms. (After
    # it MONAI's own decollation on MODEL_COMPLETED calls .item() on the loss unless decollate=False.)
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: (calls.append("start"), active.__setitem__(0, True)))
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda e: active.__setitem__(0, False))
    trainer.run()
    monkeypatch.undo()
    assert calls == ["start"] * 6  # no host conversion up to the loss in any iteration
    terms = trainer.state.loss_terms
    assert list(terms) == ["task_loss", "mu", "penalty", "gap"]
    assert float(terms["penalty"]) == pytest.approx(float(terms["gap"]) ** 2, rel=1e-6)
