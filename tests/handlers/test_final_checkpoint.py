"""FinalCheckpointSaver writes the final model when training completes and never when it fails."""

import logging

import pytest
import torch
from monai.engines import SupervisedTrainer

from fairmonai.handlers import FinalCheckpointSaver


class _FailAt(torch.nn.Module):
    """Linear layer whose forward raises at call ``fail_at`` (1-based); never when ``fail_at`` is None."""

    def __init__(self, fail_at=None):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.fail_at, self.calls = fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise FloatingPointError("loss is NaN")
        return self.lin(x)


def _run(tmp_path, net, epochs=2):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(4, 3, generator=gen), "label": torch.randint(0, 2, (4,), generator=gen)}
            for _ in range(3)]
    saver = FinalCheckpointSaver(str(tmp_path), {"model": net}, final_filename="model.pt")
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=epochs, train_data_loader=data, network=net,
                                optimizer=opt, loss_function=torch.nn.CrossEntropyLoss(), train_handlers=[saver],
                                decollate=False)
    trainer.run()
    return trainer


def test_completed_run_writes_the_trained_weights(tmp_path):
    net = _FailAt()
    _run(tmp_path, net)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    for k, v in net.state_dict().items():
        assert torch.equal(saved[k], v)  # the weights after the last step, not an earlier copy


def test_failed_run_writes_nothing_and_reports(tmp_path, caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(FloatingPointError):
        _run(tmp_path, _FailAt(fail_at=5))  # epoch 2, iteration 5
    assert not (tmp_path / "model.pt").exists()
    msg = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "epoch 2, iteration 5" in msg and "FloatingPointError" in msg and "NOT written" in msg
    assert msg.count("NOT written") == 1  # ignite fires EXCEPTION_RAISED once per nested run loop


def test_failed_run_keeps_an_earlier_final_file(tmp_path):
    torch.save({"marker": torch.tensor(7)}, tmp_path / "model.pt")
    with pytest.raises(FloatingPointError):
        _run(tmp_path, _FailAt(fail_at=2))
    assert int(torch.load(tmp_path / "model.pt", weights_only=True)["marker"]) == 7


def test_save_final_cannot_be_turned_off(tmp_path):
    saver = FinalCheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(1, 1)}, save_final=False,
                                 final_filename="model.pt")
    assert saver._final_checkpoint is not None
