"""EmptyCellShare: per epoch, the share of batches whose fairness loss met an empty cell."""

import math

import pytest
import torch
from ignite.engine import Engine, Events

from fairmonai.handlers import EmptyCellShare
from fairmonai.losses import DemographicParityL2Loss, FairnessLossWithCE


def test_share_per_epoch_counts_batches_without_a_group(tmp_path):
    loss = FairnessLossWithCE(DemographicParityL2Loss(num_groups=2), lam=1.0)
    logits = torch.zeros(4, 2)
    y = torch.tensor([0, 1, 0, 1])
    both, only0 = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 0, 0])
    engine = Engine(lambda e, sensitive: loss(logits, y, sensitive=sensitive))  # each batch: its group codes
    EmptyCellShare(loss, output_dir=tmp_path).attach(engine)
    shares = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: shares.append(e.state.metrics["empty_cell_share"]))

    engine.run([both, only0, only0, both], max_epochs=1)  # 2 of 4 batches lack group 1
    assert shares == [0.5] and loss.n_batches == 0  # reset after the epoch
    lines = (tmp_path / "empty_cells.csv").read_text().splitlines()
    assert lines == ["epoch,batches,empty_batches,share", "1,4,2,0.5"]


def test_loss_without_counters_is_refused_and_no_call_is_nan(tmp_path):
    with pytest.raises(TypeError, match=r"CrossEntropyLoss does not count empty cells"):
        EmptyCellShare(torch.nn.CrossEntropyLoss())
    loss = FairnessLossWithCE(DemographicParityL2Loss(num_groups=2), lam=1.0)
    engine = Engine(lambda e, b: None)
    EmptyCellShare(loss, output_dir=tmp_path).attach(engine)
    engine.run([0], max_epochs=1)
    assert math.isnan(engine.state.metrics["empty_cell_share"])
