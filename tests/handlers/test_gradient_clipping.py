"""GradientClipping: clip after backward, before the step; once per accumulated step; amp unscaling."""

import warnings

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents

from fairmonai.handlers.gradient_clipping import MAX_NORM_MSG, NORM_TYPE_MSG, GradientClipping, should_step

SCALE = 1e4  # a huge loss scale: the raw gradient norm is far above max_norm
LR = 0.1
MAX_NORM = 0.5


class ScaledMSE(torch.nn.Module):
    def forward(self, pred, target):
        return SCALE * ((pred - target) ** 2).mean()


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = rng.normal(size=(n, 1)).astype(np.float32)
    return x, y


def _net():
    net = torch.nn.Linear(3, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.3, -0.2, 0.1]]))
        net.bias.fill_(0.05)
    return net


def _trainer(x, y, batch_size=2, accumulation_steps=1, handler=None, epochs=1):
    net = _net()
    data = [{"image": torch.from_numpy(a), "label": torch.from_numpy(b)} for a, b in zip(x, y)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=epochs, train_data_loader=DataLoader(data, batch_size=batch_size),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=LR), loss_function=ScaledMSE(),
        accumulation_steps=accumulation_steps, train_handlers=[handler] if handler is not None else None,
    )
    return trainer, net


def _grad(w, b, xb, yb):
    """Gradient of SCALE * mean((x w^T + b - y)^2) by hand, float64."""
    r = xb @ w.T + b - yb  # (B, 1)
    gw = 2 * SCALE / len(xb) * (r.T @ xb)
    gb = 2 * SCALE / len(xb) * r.sum(axis=0)
    return gw, gb


def _clip(gw, gb):
    norm = np.sqrt((gw**2).sum() + (gb**2).sum())
    coef = min(1.0, MAX_NORM / (norm + 1e-6))  # clip_grad_norm_'s rule
    return gw * coef, gb * coef, norm


def _params(net):
    return net.weight.detach().double().numpy().copy(), net.bias.detach().double().numpy().copy()


def test_update_equals_clipped_sgd_by_hand():
    x, y = _data(n=2)
    trainer, net = _trainer(x, y, handler=GradientClipping(MAX_NORM))
    w0, b0 = _params(net)
    trainer.run()
    gw, gb = _grad(w0, b0, x.astype(np.float64), y.astype(np.float64))
    cw, cb, norm = _clip(gw, gb)
    assert norm > 100 * MAX_NORM  # clipping is active
    w1, b1 = _params(net)
    np.testing.assert_allclose(w1, w0 - LR * cw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b0 - LR * cb, rtol=1e-5, atol=1e-6)
    assert trainer.state.metrics["grad_norm"] == pytest.approx(norm, rel=1e-5)
    # the clipped step moved the parameters by exactly lr * max_norm
    step = np.sqrt(((w1 - w0) ** 2).sum() + ((b1 - b0) ** 2).sum())
    assert step == pytest.approx(LR * MAX_NORM, rel=1e-4)


def test_accumulation_clips_once_on_summed_gradient(monkeypatch):
    x, y = _data(n=8)
    calls = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(parameters, *args, **kwargs):
        parameters = list(parameters)
        calls.append((trainer.state.iteration, [p.grad.detach().double().numpy().copy() for p in parameters]))
        return original(parameters, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    trainer, net = _trainer(x, y, accumulation_steps=2, handler=GradientClipping(MAX_NORM))
    w, b = _params(net)
    trainer.run()  # 4 iterations of 2 samples: steps after iterations 2 and 4
    assert [it for it, _ in calls] == [2, 4]
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    for k, (_, grads) in enumerate(calls):
        # the trainer divides each loss by accumulation_steps: the accumulated gradient is the mean
        g1 = _grad(w, b, x64[4 * k:4 * k + 2], y64[4 * k:4 * k + 2])
        g2 = _grad(w, b, x64[4 * k + 2:4 * k + 4], y64[4 * k + 2:4 * k + 4])
        gw, gb = (g1[0] + g2[0]) / 2, (g1[1] + g2[1]) / 2
        np.testing.assert_allclose(grads[0], gw, rtol=1e-5)
        np.testing.assert_allclose(grads[1], gb, rtol=1e-5)
        cw, cb, norm = _clip(gw, gb)
        w, b = w - LR * cw, b - LR * cb
    w1, b1 = _params(net)
    np.testing.assert_allclose(w1, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b, rtol=1e-5, atol=1e-6)
    assert trainer.state.metrics["grad_norm"] == pytest.approx(norm, rel=1e-5)


@pytest.mark.parametrize(
    "acc, epoch_length, expected",
    [
        (1, 5, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (2, 5, [2, 4, 5, 7, 9, 10]),  # the last iteration of an epoch flushes a partial accumulation
        (3, 5, [3, 5, 8, 10]),
        (2, None, [2, 4, 6, 8, 10]),
    ],
)
def test_should_step_table(acc, epoch_length, expected):
    assert [i for i in range(1, 11) if should_step(i, acc, epoch_length)] == expected


def test_should_step_matches_trainer():
    x, y = _data(n=10)  # 5 iterations per epoch
    trainer, net = _trainer(x, y, accumulation_steps=2, epochs=2)
    predicted, stepped = [], []
    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, lambda e: predicted.append(
        should_step(e.state.iteration, e.accumulation_steps, e.state.epoch_length)))
    trainer.optimizer.register_step_post_hook(lambda *a: stepped.append(trainer.state.iteration))
    trainer.run()
    assert [i + 1 for i, p in enumerate(predicted) if p] == stepped == [2, 4, 5, 7, 9, 10]


def test_amp_scaler_unscaled_before_clipping_only_when_stepping():
    x, y = _data(n=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # amp on a CPU-only machine: CUDA autocast and scaler disabled
        trainer, net = _trainer(x, y, accumulation_steps=2, handler=GradientClipping(MAX_NORM))
        trainer.amp = True
        unscaled = []

        def cpu_scaler(engine):  # Trainer.run() makes a CUDA GradScaler (disabled on CPU): replace it
            engine.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
            original = engine.scaler.unscale_
            engine.scaler.unscale_ = lambda opt: (unscaled.append(engine.state.iteration), original(opt))[1]

        trainer.add_event_handler(Events.STARTED, cpu_scaler)
        ref, ref_net = _trainer(x, y, accumulation_steps=2, handler=GradientClipping(MAX_NORM))
        trainer.run()
        ref.run()
    assert unscaled == [2, 4]
    # the same steps as without amp: the norm was taken on the unscaled gradient
    for p, q in zip(net.parameters(), ref_net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert trainer.state.metrics["grad_norm"] == pytest.approx(ref.state.metrics["grad_norm"], rel=1e-6)
    assert trainer.scaler.get_scale() == 2.0**10  # no overflow, no skipped step


def test_given_parameters_only_are_clipped():
    x, y = _data(n=2)
    probe = GradientClipping(MAX_NORM, parameters=(p for p in [_net().bias]))  # a generator is kept as a list
    assert len(probe.parameters) == 1
    trainer, net = _trainer(x, y, handler=None)
    GradientClipping(MAX_NORM, parameters=[net.bias]).attach(trainer)
    w0, b0 = _params(net)
    trainer.run()
    gw, gb = _grad(w0, b0, x.astype(np.float64), y.astype(np.float64))
    coef = min(1.0, MAX_NORM / (np.abs(gb).sum() + 1e-6))
    w1, b1 = _params(net)
    np.testing.assert_allclose(w1, w0 - LR * gw, rtol=1e-5)  # the weight is not clipped
    np.testing.assert_allclose(b1, b0 - LR * gb * coef, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), "abc", None])
def test_bad_max_norm(bad):
    with pytest.raises(ValueError) as e:
        GradientClipping(bad)
    assert str(e.value) == MAX_NORM_MSG.format(value=bad)
    assert "max_norm" in str(e.value)


def test_bad_norm_type_and_parameters():
    with pytest.raises(ValueError) as e:
        GradientClipping(1.0, norm_type=0)
    assert str(e.value) == NORM_TYPE_MSG.format(value=0)
    assert GradientClipping(1.0, norm_type="inf").norm_type == float("inf")
    with pytest.raises(TypeError, match="parameters must be"):
        GradientClipping(1.0, parameters=[1, 2])
