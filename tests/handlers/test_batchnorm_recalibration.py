"""BatchNormRecalibration: running statistics become the training data's, nothing else changes."""

import pytest
import torch
from monai.engines import SupervisedTrainer

from fairmonai.handlers import BatchNormRecalibration, recalibrate_batchnorm


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def _batches(n_batches=3, size=5, shift=2.0):
    gen = torch.Generator().manual_seed(1)
    return [{"image": torch.randn(size, 3, generator=gen) * 1.5 + shift,
             "label": torch.randint(0, 2, (size,), generator=gen)} for _ in range(n_batches)]


def test_statistics_are_the_mean_of_the_batch_statistics():
    net = _net()
    bn = net[1]
    bn.running_mean.fill_(-7.0)  # stale statistics
    bn.running_var.fill_(30.0)
    batches = _batches()
    params = [p.detach().clone() for p in net.parameters()]
    net.eval()
    assert recalibrate_batchnorm(net, batches) == 1
    with torch.no_grad():  # by hand: the first Linear's output per batch, its mean and unbiased variance
        h = [net[0](b["image"]) for b in batches]
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean(0) for x in h]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([x.var(0, unbiased=True) for x in h]).mean(0))
    assert bn.momentum == 0.1 and not net.training  # restored
    assert all(torch.equal(a, b) for a, b in zip(params, net.parameters()))
    assert all(p.grad is None for p in net.parameters())


def test_eval_output_then_matches_training_mode_on_one_full_batch():
    net = _net()
    x = _batches(1, size=200)[0]["image"]
    recalibrate_batchnorm(net, [x])  # a tensor batch works too
    n = x.shape[0]
    with torch.no_grad():
        net.eval()
        h_eval = net[1](net[0](x))
        net.train()
        h_train = net[1](net[0](x))
    # training mode divides by the biased std, eval by the unbiased running one: ratio sqrt((n - 1) / n)
    torch.testing.assert_close(h_eval, h_train * ((n - 1) / n) ** 0.5, atol=1e-5, rtol=1e-5)


def test_random_state_is_restored():
    net = _net()
    loader = torch.utils.data.DataLoader(_batches(1, size=12)[0]["image"], batch_size=4, shuffle=True)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    recalibrate_batchnorm(net, loader)  # a shuffling DataLoader draws from the global generator
    torch.testing.assert_close(torch.rand(3), expected)


def test_network_without_batchnorm_is_left_alone():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))

    def never():
        raise AssertionError("the data must not be read")
        yield

    assert recalibrate_batchnorm(net, never()) == 0


def test_non_tensor_input_is_named():
    with pytest.raises(TypeError, match=r"batch\['image'\] must be a torch.Tensor; got list"):
        recalibrate_batchnorm(_net(), [{"image": [1.0, 2.0, 3.0]}])


def _train(recalibrate, epochs=2):
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    data = _batches()
    handlers = [BatchNormRecalibration(data)] if recalibrate else []
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=epochs, train_data_loader=data, network=net,
                                optimizer=opt, loss_function=torch.nn.CrossEntropyLoss(), train_handlers=handlers,
                                decollate=False)
    trainer.run()
    return net, data


def test_handler_leaves_the_trajectory_and_fixes_the_statistics():
    plain, _ = _train(False)
    recal, data = _train(True)
    for (name, a), b in zip(plain.named_parameters(), recal.parameters()):
        assert torch.equal(a, b), name  # running statistics never enter a training-mode forward
    with torch.no_grad():
        h = [recal[0](b["image"]) for b in data]
    expected = torch.stack([x.mean(0) for x in h]).mean(0)
    torch.testing.assert_close(recal[1].running_mean, expected)
    assert not torch.allclose(plain[1].running_mean, expected, atol=1e-3)  # the moving average lags


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval must be an int >= 1"):
        BatchNormRecalibration([], interval=0)
