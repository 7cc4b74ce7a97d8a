"""TrainingCheckpoint saves the trainer with the model each epoch; resuming continues the same run."""

import pytest
import torch
from monai.engines import SupervisedTrainer

from fairmonai.handlers import TrainingCheckpoint


def _trainer(max_epochs, ckpt_dir, resume):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    data = [{"image": torch.randn(4, 3, generator=gen), "label": torch.randint(0, 2, (4,), generator=gen)}
            for _ in range(3)]
    handler = TrainingCheckpoint(ckpt_dir, {"model": net, "optimizer": opt}, resume=resume)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=max_epochs, train_data_loader=data, network=net,
                                optimizer=opt, loss_function=torch.nn.CrossEntropyLoss(), train_handlers=[handler],
                                decollate=False)
    return trainer, net, handler


def test_resumed_run_equals_uninterrupted(tmp_path):
    full, net_full, _ = _trainer(4, tmp_path / "a", resume=False)
    full.run()
    first, _, _ = _trainer(2, tmp_path / "b", resume=False)
    first.run()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint_checkpoint_epoch=2.pt"]
    second, net_resumed, handler = _trainer(4, tmp_path / "b", resume=True)
    second.run()
    assert handler.loaded_from.endswith("checkpoint_checkpoint_epoch=2.pt")
    assert second.state.epoch == 4 and second.state.iteration == 12
    for a, b in zip(net_full.parameters(), net_resumed.parameters()):  # momentum buffers restored too
        assert torch.allclose(a, b, atol=1e-7)


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="resume requested but no checkpoint"):
        _trainer(1, tmp_path / "none", resume=True)[0].run()


def test_trainer_key_is_reserved(tmp_path):
    with pytest.raises(ValueError, match="save_dict must not hold 'trainer'"):
        TrainingCheckpoint(tmp_path, {"trainer": object()})
