"""FairBatch under DDP: the OCT bundle's ``method_fairbatch.json`` with ``multi_gpu_train.json``,
2 processes under torchrun (gloo), 2 epochs on a tiny cohort.

A recording handler (:class:`BatchRecorder`, added by a test overlay at the end of the training
handlers) writes per rank the case ids of every batch the trainer drew, and after each epoch's
FairBatch step (it runs after :class:`~fairmonai.handlers.FairBatchUpdate`) the cell losses and
lambda on ``engine.state``. The test rebuilds the single-process sampler,
``FairBatchSampler.from_datalist`` of the same training part with the global batch (2 x
``batch_size``) and the same seed, and checks per epoch:

* the two ranks' batches are disjoint and rank 0's followed by rank 1's is that epoch's global batch
  of the single-process sampler, case for case;
* both ranks measured the same cell losses and hold the same lambda (the losses are summed over the
  ranks before the step), and the single-process sampler given those losses steps to that lambda;
* the checkpoint's lambda is the single-process lambda after the two updates.

A single-process *training* run with the global batch does not give the same lambda: the DenseNet's
BatchNorm normalises each rank's half of the global batch with that half's statistics (the overlay
has no SyncBatchNorm; the recalibrated running statistics average per-rank batch variances, too), so
the DDP model and its cell losses differ from a model trained on the whole batch in one process from
the first iteration on. Tried with these settings: the epoch-1 cell losses already differ (e.g. 0.5370
against 0.5452) and the second step moves label 0 under DDP, label 1 in one process. The same pair
with the ViT (LayerNorm only) measured the same cell losses and saved the same lambda.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import ENV

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "oct_glaucoma_fami"
CONFIGS = ["train.json", "method_fairbatch.json", "multi_gpu_train.json", "cpu.json"]
BATCH = 8  # per rank
ALPHA = 0.2  # a step large enough to change the batch composition after the first epoch
EPOCHS = 2
SEED = 0


class BatchRecorder:
    """Test handler: per rank, the case ids of each batch drawn (``ITERATION_STARTED``) and, after each
    epoch's FairBatch step, ``engine.state.fairbatch_cell_loss`` and ``fairbatch_lambda``, written to
    ``<out_dir>/rank<r>.json`` after every epoch."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.record: dict = {"batches": {}, "cell_loss": {}, "lambda": {}}

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_STARTED, self._batch)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _batch(self, engine) -> None:
        self.record["batches"].setdefault(str(engine.state.epoch), []).append(list(engine.state.batch["case_id"]))

    def _epoch(self, engine) -> None:
        import torch.distributed as dist

        e = str(engine.state.epoch)
        self.record["cell_loss"][e] = engine.state.fairbatch_cell_loss
        self.record["lambda"][e] = engine.state.fairbatch_lambda
        self.record["world_size"] = dist.get_world_size() if dist.is_initialized() else 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{rank}.json").write_text(json.dumps(self.record))


def _overrides() -> list[str]:
    """A tiny cohort (training part of fold 0: 33 cases, 2 global batches of 16) and a small DenseNet."""
    return ["--cohort_size", "60", "--epochs", str(EPOCHS), "--batch_size", str(BATCH), "--seed", str(SEED),
            "--fairbatch_alpha", str(ALPHA), "--densenet_init_features", "16", "--densenet_growth_rate", "8",
            "--densenet_block_config", "[2,2,2,2]", "--n_bootstrap", "10"]


@pytest.mark.slow
def test_fairbatch_ranks_draw_shards_of_one_global_batch_and_step_alike(tmp_path):
    from monai.bundle import ConfigParser

    from fairmonai.data import FairBatchSampler

    root = tmp_path / "ddp"
    root.mkdir()
    recorder = tmp_path / "record_batches.json"
    recorder.write_text(json.dumps({"+train#handlers": [{
        "_target_": f"{Path(__file__).stem}.BatchRecorder", "out_dir": "$@output_dir + '/fairbatch_record'"}]}))
    files = [BUNDLE / "configs" / c for c in CONFIGS] + [recorder]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file", "[" + ",".join(f"'{p}'" for p in files) + "]",
           "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
           "--logging_file", str(BUNDLE / "configs" / "logging.conf"), "--bundle_root", str(root), *_overrides()]
    here = str(Path(__file__).resolve().parent)  # the recorder's module, for the ranks
    env = {**ENV, "PYTHONPATH": os.pathsep.join([here, *filter(None, [ENV.get("PYTHONPATH")])])}
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    ranks = [json.loads((root / "eval" / "fairbatch_record" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    # the training part the ranks read, and the single-process sampler of the global batch
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / c) for c in ("train.json", "cpu.json")])
    parser.update({"bundle_root": str(root), "cohort_size": 60, "seed": SEED})
    datalist = parser.get_parsed_content("train#datalist")
    ids = [d["case_id"] for d in datalist]
    single = FairBatchSampler.from_datalist(datalist, 2 * BATCH, group_key="race_code", seed=SEED,
                                            fairness="eqodds", alpha=ALPHA, num_replicas=1, rank=0)
    assert len(single) == len(datalist) // (2 * BATCH) == 2
    compositions = []
    for epoch in range(1, EPOCHS + 1):
        e = str(epoch)
        single.set_epoch(epoch)
        compositions.append(single.batch_composition()[0].tolist())
        expected = [[ids[i] for i in batch] for batch in single.global_batches()]
        b0, b1 = ranks[0]["batches"][e], ranks[1]["batches"][e]
        assert len(b0) == len(b1) == len(expected)
        for i, (x0, x1, full) in enumerate(zip(b0, b1, expected)):
            assert len(x0) == len(x1) == BATCH, (epoch, i)
            assert not set(x0) & set(x1), (epoch, i)
            assert x0 + x1 == full, (epoch, i)
        # the losses were summed over the ranks: both take the same step, the single sampler's with those losses
        assert ranks[0]["cell_loss"][e] == ranks[1]["cell_loss"][e]
        assert ranks[0]["lambda"][e] == ranks[1]["lambda"][e]
        assert single.update(ranks[0]["cell_loss"][e]) is not None
        assert np.array_equal(single.lambdas, np.asarray(ranks[0]["lambda"][e])), epoch
    assert compositions[0] != compositions[1], "the first step did not change the batch; the check has no teeth"

    saved = sorted((root / "models").glob("checkpoint*.pt"))
    assert len(saved) == 1, saved  # the last epoch's
    ckpt = torch.load(saved[0], map_location="cpu", weights_only=False)
    state = ckpt["fairbatch"]
    assert state["epoch"] == EPOCHS
    assert np.array_equal(np.asarray(state["lambdas"]), single.lambdas)
    assert not np.allclose(single.lambdas, single.cell_sizes / single.cell_sizes.sum(axis=1, keepdims=True))
