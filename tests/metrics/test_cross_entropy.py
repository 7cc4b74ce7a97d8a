"""WeightedCrossEntropyMetric: PyTorch's weighted cross entropy, from probabilities, over a whole evaluation."""

import math

import pytest
import torch
import torch.nn.functional as F
from monai.handlers import IgniteMetricHandler, from_engine
from ignite.engine import Engine

from fairmonai.metrics import WeightedCrossEntropyMetric, weighted_cross_entropy


def test_hand_computed_value():
    # p(y) = 0.5, 0.25, 0.8; weights w_0 = 1, w_1 = 3 on labels 0, 1, 1:
    # (1 * ln 2 + 3 * ln 4 + 3 * ln 1.25) / 7
    probs = torch.tensor([[0.5, 0.5], [0.75, 0.25], [0.2, 0.8]])
    y = torch.tensor([0, 1, 1])
    expected = (math.log(2) + 3 * math.log(4) + 3 * math.log(1.25)) / 7
    assert weighted_cross_entropy(probs, y, [1.0, 3.0]).item() == pytest.approx(expected, rel=1e-6)
    assert weighted_cross_entropy(probs, y).item() == pytest.approx((math.log(2) + math.log(4) + math.log(1.25)) / 3,
                                                                     rel=1e-6)


def test_cumulative_equals_torch_cross_entropy_on_all_cases():
    torch.manual_seed(0)
    logits, y = torch.randn(23, 3), torch.randint(0, 3, (23,))
    w = torch.tensor([0.5, 1.0, 2.5])
    metric = WeightedCrossEntropyMetric(w)
    probs = logits.softmax(1)
    for chunk in (slice(0, 8), slice(8, 16), slice(16, 23)):  # batches of unequal size: not a mean of means
        metric(probs[chunk], y[chunk][:, None])
    reference = F.cross_entropy(logits, y, weight=w)
    assert metric.aggregate().item() == pytest.approx(reference.item(), rel=1e-5)


def test_decollated_lists_through_the_ignite_handler():
    torch.manual_seed(1)
    logits, y = torch.randn(6, 2), torch.randint(0, 2, (6,))
    handler = IgniteMetricHandler(metric_fn=WeightedCrossEntropyMetric([1.0, 4.0]),
                                  output_transform=from_engine(["pred", "label"]), save_details=False)
    batches = [[{"pred": p, "label": t} for p, t in zip(logits[i:i + 4].softmax(1), y[i:i + 4])] for i in (0, 4)]
    engine = Engine(lambda e, b: b)
    handler.attach(engine, "val_loss")
    engine.run(batches)
    reference = F.cross_entropy(logits, y, weight=torch.tensor([1.0, 4.0]))
    assert engine.state.metrics["val_loss"] == pytest.approx(reference.item(), rel=1e-5)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"y_pred must be \(B, K\) class probabilities with K >= 2; got shape \(3,\)"):
        weighted_cross_entropy(torch.rand(3), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\).*got values \[0, 2\]"):
        weighted_cross_entropy(torch.full((2, 2), 0.5), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"got shape \(3,\) for 2 predictions"):
        weighted_cross_entropy(torch.full((2, 2), 0.5), torch.tensor([0, 1, 1]))
