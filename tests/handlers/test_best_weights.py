"""BestWeights: the weights of the epoch with the best validation value end up in the network."""

import logging

import pytest
import torch
from ignite.engine import Engine, Events

from fairmonai.handlers import BestWeights


def _run(values, mode="min", enabled=True, every=1, epochs=None, state=None):
    """A trainer whose epoch e sets the weight to e; a validator that reports values[e - 1] every ``every`` epochs."""
    net = torch.nn.Linear(1, 1, bias=False)
    validator = Engine(lambda e, b: None)

    @validator.on(Events.EPOCH_COMPLETED)
    def _metric(engine):
        engine.state.metrics = {"val_loss": values[engine.state.epoch - 1]}

    def step(engine, batch):
        with torch.no_grad():
            net.weight.fill_(float(engine.state.epoch))

    trainer = Engine(step)

    @trainer.on(Events.EPOCH_COMPLETED(every=every))
    def _validate(engine):  # as ValidationHandler: validator.run(global_epoch)
        validator.state.max_epochs = engine.state.epoch
        validator.state.epoch = engine.state.epoch - 1
        validator.run([0])

    best = BestWeights(net, validator, "val_loss", mode=mode, enabled=enabled)
    if state is not None:
        best.load_state_dict(state)
    best.attach(trainer)
    trainer.run([0], max_epochs=epochs or len(values))
    return net.weight.item(), best, trainer


def test_lowest_value_epoch_is_restored():
    # lowest 0.2 at epoch 3; the tie at epoch 5 keeps the earlier epoch
    w, best, trainer = _run([0.9, 0.5, 0.2, 0.4, 0.2, 0.7])
    assert w == 3.0 and best.best_epoch == 3 and best.best_value == 0.2
    assert trainer.state.best_weights == {"metric": "val_loss", "mode": "min", "epoch": 3, "value": 0.2}


def test_max_mode_and_nan_never_wins():
    w, best, _ = _run([float("nan"), 0.5, 0.8, float("nan")], mode="max")
    assert w == 3.0 and best.best_epoch == 3


def test_only_validated_epochs_count():
    # validation after epochs 2 and 4 only: epoch 1's 0.0 is never seen
    w, best, _ = _run([0.0, 0.6, 0.1, 0.3], every=2)
    assert w == 4.0 and best.best_epoch == 4


def test_disabled_keeps_the_last_weights():
    w, best, _ = _run([0.1, 0.9, 0.9], enabled=False)
    assert w == 3.0 and best.best_epoch is None


def test_state_round_trip_continues_the_selection():
    """A run stopped after epoch 2 and resumed from its state selects over all epochs."""
    _, first, _ = _run([0.3, 0.1], epochs=2)
    state = first.state_dict()
    assert state["best_epoch"] == 2 and torch.equal(state["weights"]["weight"], torch.tensor([[2.0]]))
    # the resumed run's epochs (numbered again from 1 here) are worse: the kept weights of epoch 2 come back
    w, best, _ = _run([0.5, 0.4], epochs=2, state=state)
    assert w == 2.0 and best.best_value == 0.1


def test_no_validation_warns_and_keeps_the_last_weights(caplog):
    with caplog.at_level(logging.WARNING):
        w, _, _ = _run([0.1, 0.2], every=5)
    assert w == 2.0 and "no validation ran in 2 epochs" in caplog.text


def test_unknown_metric_and_mode_are_named():
    net = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match=r"mode must be one of \['min', 'max'\]; got 'lowest'"):
        BestWeights(net, Engine(lambda e, b: None), mode="lowest")
    validator = Engine(lambda e, b: None)
    validator.state.metrics, validator.state.epoch = {"val_auc": 0.5}, 1
    trainer = Engine(lambda e, b: None)
    trainer.state.epoch = 1
    with pytest.raises(ValueError, match=r"no metric 'val_loss' after epoch 1; its metrics are \['val_auc'\]"):
        BestWeights(net, validator).epoch_completed(trainer)
