"""FairViTCalibration: at each epoch start the distance loss's line is refitted on the calibration split's
eval-mode logits (exactly ``fit_margin_hyperplane(logits, labels, seed=loss.seed + epoch)``, 0-based epoch),
and is off before the loss's ``start_epoch``; the pass leaves the network's mode and the global random
state as they were; an empty split and a loss of another kind raise."""

import logging

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset

from fairmonai.handlers import FairViTCalibration
from fairmonai.networks import FairViTLite, FairViTLoss, ViTClassifier
from fairmonai.networks.fairvit import Hyperplane, fit_margin_hyperplane, margin_coordinates

N, BATCH = 12, 5  # batches of 5, 5, 2: the logits are concatenated over batches


def _net(seed=0):
    torch.manual_seed(seed)
    vit = ViTClassifier(in_channels=1, img_size=32, patch_size=16, hidden_size=48, mlp_dim=96, num_layers=2,
                        num_heads=4)
    net = FairViTLite(vit, num_groups=2, num_aux_heads=2)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-zero mask scores: a training-mode forward differs from the eval one
        for p in net.masks.values():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return net.train()


def _images():
    return torch.randn(N, 1, 32, 32, 32, generator=torch.Generator().manual_seed(3))


def _eval_logits(net, x):
    """The wrapped ViT's logits, batch by batch as the loader gives them (so bit for bit the same sums)."""
    with torch.no_grad():
        return torch.cat([net.backbone.eval()(x[i:i + BATCH]) for i in range(0, N, BATCH)])


def _case(seed=0):
    """Network, loader, the expected eval logits and labels: the first 6 cases labelled with their predicted
    class (correct), the last 6 with the other class (wrong), so the line has both sides to separate."""
    net = _net(seed)
    x = _images()
    z = _eval_logits(net, x)
    net.train()
    pred = z.argmax(1)
    labels = torch.cat([pred[:6], 1 - pred[6:]])
    data = [{"image": x[i], "label": int(labels[i])} for i in range(N)]
    return net, DataLoader(Dataset(data), batch_size=BATCH, shuffle=False, num_workers=0), z, labels


def _run(handler, net, epochs):
    """Run an ignite engine that does nothing but record, per epoch, the line, the random state around the
    handler and the network's mode during the iterations."""
    engine = Engine(lambda e, b: modes.append((net.training, all(m.training for m in net.modules()))))
    modes, rng_before, seen = [], {}, {}
    engine.add_event_handler(Events.EPOCH_STARTED,
                             lambda e: rng_before.__setitem__(e.state.epoch, torch.get_rng_state()))
    handler.attach(engine)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.__setitem__(
        e.state.epoch, (handler.loss.hyperplane, e.state.fairvit_hyperplane, torch.get_rng_state())))
    engine.run([0], max_epochs=epochs)
    return engine, modes, rng_before, seen


def test_refit_is_the_fit_on_the_eval_logits(caplog):
    net, loader, z, labels = _case()
    # the expected logits are the eval ones: a training forward (masks on) gives other values
    with torch.no_grad():
        train_z = net.train()(_images()[:BATCH], sensitive=torch.zeros(BATCH, dtype=torch.long)).logits
    assert (train_z - z[:BATCH]).abs().max() > 1e-3
    loss = FairViTLoss(seed=5)
    handler = FairViTCalibration(loss, loader, net)
    got_z, got_y = handler.logits(net)
    assert torch.equal(got_z, z) and torch.equal(got_y, labels)
    # the line separates the 6 correct from the 6 wrong calibration cases
    expected = {e: fit_margin_hyperplane(z, labels, seed=5 + e - 1) for e in (2, 3)}
    xy = margin_coordinates(z, labels)
    for plane in expected.values():
        side = plane.theta1 * xy[:, 0] + plane.theta2 * xy[:, 1] + plane.bias > 0
        assert side.tolist() == [True] * 6 + [False] * 6
    with caplog.at_level(logging.INFO, logger="fairmonai.handlers.fairvit_calibration"):
        _, modes, rng_before, seen = _run(handler, net, epochs=3)
    assert seen[1][0] is None and seen[1][1] is None  # epoch 0 (ignite's 1): distance loss off
    for e in (2, 3):
        assert isinstance(seen[e][0], Hyperplane)
        assert seen[e][0] == expected[e] and seen[e][1] == expected[e]  # exactly, every float
    h = expected[3]
    assert "FairViT epoch 1: distance loss off" in caplog.text
    assert (f"FairViT epoch 3: line {h.theta1:.4g} x + {h.theta2:.4g} y + {h.bias:.4g} = 0 on the calibration split"
            in caplog.text)
    # the network trained in training mode throughout (every submodule), and is left in it
    assert modes == [(True, True)] * 3 and net.training
    # the pass drew nothing from the global random state, though iterating the loader alone does
    for e in (1, 2, 3):
        assert torch.equal(seen[e][2], rng_before[e])
    state = torch.get_rng_state()
    next(iter(loader))
    assert not torch.equal(torch.get_rng_state(), state)


def test_start_epoch_and_the_engines_network():
    net, loader, z, labels = _case()
    loss = FairViTLoss(start_epoch=2, seed=0)
    handler = FairViTCalibration(loss, loader)  # no network: the engine's
    engine = Engine(lambda e, b: None)
    engine.network = net
    handler.attach(engine)
    lines = []
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: lines.append(loss.hyperplane))
    engine.run([0], max_epochs=3)
    assert lines[:2] == [None, None]  # 0-based epochs 0 and 1 are before start_epoch 2
    assert lines[2] == fit_margin_hyperplane(z, labels, seed=2)


def test_mode_restored_for_an_eval_network_and_after_an_error():
    net, loader, z, _ = _case()
    net.eval()
    handler = FairViTCalibration(FairViTLoss(), loader, net)
    assert torch.equal(handler.logits(net)[0], z)
    assert not net.training and not any(m.training for m in net.modules())
    net.train()
    bad = FairViTCalibration(FairViTLoss(), [{"image": torch.zeros(2, 1, 8, 8, 8), "label": torch.zeros(2)}], net)
    with pytest.raises(RuntimeError):  # 8^3 does not fit the ViT's 32^3 patch grid
        bad.logits(net)
    assert net.training and all(m.training for m in net.modules())


def test_empty_loader_raises_and_nothing_before_start_epoch():
    net = _net()
    handler = FairViTCalibration(FairViTLoss(), [], net)
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([0], max_epochs=1)  # epoch 0: the line is off, the split is not read
    assert handler.loss.hyperplane is None
    engine.state.epoch = 2
    with pytest.raises(ValueError) as e:
        handler(engine)
    assert str(e.value) == "FairViTCalibration: the calibration loader gave no batch (empty calibration split)"
    assert net.training


def test_other_loss_raises():
    with pytest.raises(TypeError) as e:
        FairViTCalibration(torch.nn.CrossEntropyLoss(), [], _net())
    assert str(e.value) == "FairViTCalibration refits a fairmonai.networks.FairViTLoss, got CrossEntropyLoss"


def test_labels_from_column_batches():
    """Labels given as ``(B, 1)`` (as MONAI datasets often hold them) are flattened to ``(N,)``."""
    net, _, z, labels = _case()
    data = [{"image": _images()[i], "label": np.array([int(labels[i])])} for i in range(N)]
    handler = FairViTCalibration(FairViTLoss(), DataLoader(Dataset(data), batch_size=BATCH), net)
    got_z, got_y = handler.logits(net)
    assert torch.equal(got_z, z) and got_y.tolist() == labels.tolist()
