"""eval_pass: the side pass FairBatchUpdate and FairViTCalibration make between training steps."""

from __future__ import annotations

import pytest
import torch

from fairmonai.handlers._eval_pass import eval_pass


def _net():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))


def test_eval_mode_no_grad_and_the_random_state_untouched():
    net = _net().train()
    loader = torch.utils.data.DataLoader(torch.randn(8, 3), batch_size=4)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    outs = []
    with eval_pass(net) as (module, device):
        assert module is net and device == torch.device("cpu")
        assert not module.training and not torch.is_grad_enabled()
        for x in loader:  # iterating a DataLoader draws its base seed from the global state
            outs.append(module(x))
        torch.rand(3)
    assert net.training and torch.is_grad_enabled()
    assert torch.equal(torch.get_rng_state(), before)
    # eval mode: dropout off and BatchNorm on its running statistics, so a repeat gives the same numbers
    with eval_pass(net) as (module, _):
        again = [module(x) for x in loader]
    assert all(torch.equal(a, b) and not a.requires_grad for a, b in zip(outs, again))


def test_the_previous_mode_comes_back_after_an_error_and_eval_stays_eval():
    net = _net().train()
    with pytest.raises(RuntimeError, match="boom"):
        with eval_pass(net):
            raise RuntimeError("boom")
    assert net.training
    net.eval()
    with eval_pass(net):
        pass
    assert not net.training


def test_a_given_device_wins_and_a_network_without_parameters_runs_on_the_cpu():
    with eval_pass(torch.nn.Identity()) as (_, device):
        assert device == torch.device("cpu")
    with eval_pass(_net(), "cpu") as (_, device):
        assert device == torch.device("cpu")
