"""CaseCollector: per-case rows reset, collected, gathered across (simulated) ranks, de-duplicated, written once."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine

import fairmonai.handlers.case_collector as cc
from fairmonai.handlers import CaseCollector
from fairmonai.handlers._samples import atomic_csv
from fairmonai.handlers.case_collector import attribute_value, scalar


class _ScoreWriter(CaseCollector):
    """The smallest collector: a score per case from the batch, written to ``path`` on the save rank."""

    def __init__(self, path, attributes, **kwargs):
        super().__init__(attributes, **kwargs)
        self.path = path
        self.written = None

    def rows(self, engine):
        batch = self.samples(engine.state.batch, [self.case_id_key, "score", *self.attribute_keys()])
        return [[self.case_id(b), self.attributes_of(b, self.case_id(b)), float(b["score"])] for b in batch]

    def __call__(self, engine):
        cases, _ = self.gather()
        if self.is_save_rank():
            table = {"case_id": list(cases), "score": [r[2] for r in cases.values()]}
            for j, a in enumerate(self.attributes):
                table[a] = [r[1][j] for r in cases.values()]
            atomic_csv(pd.DataFrame(table), self.path)
            self.written = str(self.path)


def _batch(ids, scores, race, codes):
    return {"case_id": list(ids), "score": torch.tensor(scores), "race": list(race), "race_code": torch.tensor(codes)}


# rank 0 evaluates c1..c3, rank 1 c4, c5 and, as DistributedSampler pads the shorter rank, c1 again
RANK0 = [_batch(["c1", "c2"], [0.5, 0.25], ["Black", "White"], [1, 2]), _batch(["c3"], [1.0], ["Asian"], [-1])]
RANK1 = [_batch(["c4", "c5"], [0.0, 0.75], ["", "Asian"], [0, 0]), _batch(["c1"], [0.5], ["Black"], [1])]


def _collect(writer, batches):
    """Reset, then collect ``batches`` as ITERATION_COMPLETED would; the engine and the rows kept."""
    engine = Engine(lambda e, b: None)
    writer.reset(engine)
    for b in batches:
        engine.state.batch = b
        writer.collect(engine)
    return engine, list(writer._rows)


@pytest.mark.parametrize("rank", [0, 1])
def test_two_ranks_padded_case_written_once_on_rank0(tmp_path, monkeypatch, rank, caplog):
    path = tmp_path / "scores.csv"
    w0, w1 = _ScoreWriter(path, "race"), _ScoreWriter(path, "race")
    _, rows0 = _collect(w0, RANK0)
    engine, rows1 = _collect(w1, RANK1)
    # simulated 2-rank run: the collective returns rank 0's rows then rank 1's, on every rank
    monkeypatch.setattr(cc.idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(cc.idist, "get_rank", lambda: rank)
    monkeypatch.setattr(cc, "string_list_all_gather", lambda strings: rows0 + rows1)
    writer = (w0, w1)[rank]
    cases, n_differ = writer.gather()
    # each case once, sorted; c3 (code -1) and c4 (no value) are "unknown"
    assert list(cases) == ["c1", "c2", "c3", "c4", "c5"] and n_differ == 0
    assert [r[1] for r in cases.values()] == [["Black"], ["White"], ["unknown"], ["unknown"], ["Asian"]]
    with caplog.at_level("INFO"):
        writer(engine)
    if rank == 0:
        got = pd.read_csv(path, keep_default_na=False)
        assert got["case_id"].tolist() == ["c1", "c2", "c3", "c4", "c5"]
        assert got["score"].tolist() == [0.5, 0.25, 1.0, 0.0, 0.75]
        assert got["race"].tolist() == ["Black", "White", "unknown", "unknown", "Asian"]
        assert "1 repeated case(s)" in caplog.text
    else:
        assert not path.exists() and writer.written is None


def test_one_id_on_two_cases_and_save_rank(tmp_path, monkeypatch):
    w = _ScoreWriter(tmp_path / "s.csv", "race")
    _collect(w, [_batch(["c1", "c1"], [0.5, 0.5], ["Black", "White"], [1, 2])])
    with pytest.raises(ValueError) as e:
        w.gather()
    assert str(e.value) == ("_ScoreWriter: case id 'c1' appears twice with different attributes (['Black'] and "
                            "['White']); case ids must be unique")
    # a repeat with another score only (non-deterministic inference) is kept once and counted
    _collect(w, [_batch(["c1", "c1"], [0.5, 0.25], ["Black", "Black"], [1, 1])])
    cases, n_differ = w.gather()
    assert cases["c1"][2] == 0.5 and n_differ == 1
    with pytest.raises(ValueError, match=r"save_rank 1 is not below the number of ranks \(1\)"):
        _ScoreWriter(tmp_path / "s.csv", "race", save_rank=1).gather()
    with pytest.raises(ValueError, match="save_rank must be >= 0, got -1"):
        _ScoreWriter(tmp_path / "s.csv", "race", save_rank=-1)
    with pytest.raises(ValueError, match=r"_ScoreWriter: attributes named more than once: \['race', 'race'\]"):
        _ScoreWriter(tmp_path / "s.csv", ["race", "race"])
    with pytest.raises(ValueError, match="_ScoreWriter: attribute 'sex' is not in the batch of case 'c1'"):
        _collect(_ScoreWriter(tmp_path / "s.csv", "sex"), RANK0)


def test_engine_events_reset_each_epoch(tmp_path):
    data = [_batch(["c1", "c2"], [0.5, 0.25], ["Black", "White"], [1, 2]), _batch(["c3"], [1.0], ["Asian"], [-1])]
    writer = _ScoreWriter(tmp_path / "s.csv", ["race"])
    engine = Engine(lambda e, b: None)
    writer.attach(engine)
    engine.run(data, max_epochs=2)  # the second epoch starts from no rows
    assert len(writer._rows) == 3 and json.loads(writer._rows[2]) == ["c3", ["unknown"], 1.0]
    assert pd.read_csv(tmp_path / "s.csv", keep_default_na=False)["race"].tolist() == ["Black", "White", "unknown"]


@pytest.mark.parametrize(
    "value,want",
    [(torch.tensor([3]), 3), (torch.tensor(2.5), 2.5), (np.array([[7]]), 7), (np.float32(0.5), 0.5), (["a"], "a"),
     ("b", "b"), (None, None)],
)
def test_scalar(value, want):
    assert scalar(value) == want
    assert torch.equal(scalar(torch.tensor([1, 2])), torch.tensor([1, 2]))  # not one value: unchanged


@pytest.mark.parametrize(
    "value,code,want",
    [("Black", 1, "Black"), ("Black", -1, "unknown"), ("Black", torch.tensor([-1]), "unknown"), (" F ", None, "F"),
     (None, 0, "unknown"), (float("nan"), None, "unknown"), ("NA", 2, "unknown"), (pd.NA, None, "unknown"),
     ("Black", float("nan"), "Black"), (1, 0, "1")],
)
def test_attribute_value(value, code, want):
    assert attribute_value(value, code) == want
