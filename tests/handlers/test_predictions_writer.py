"""PredictionsWriter: per-case probabilities of a MONAI evaluator to a CSV, single and 2-process."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd, Lambdad
from sklearn.metrics import roc_auc_score

import fairmonai.data
from fairmonai.attribute_codes import EXCLUDED_VALUE
from fairmonai.handlers.predictions_writer import NOT_PROBABILITIES_MSG, PredictionsWriter

RACES = ["Asian", "Black", "White"]


def _records(n=14, labels=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    recs = []
    for i in range(n):
        excluded = i % 5 == 4
        rec = {"case_id": f"case_{(11 * i) % n:03d}", "image": torch.randn(4, generator=g),
               "race": "unknown" if excluded else RACES[i % 3], "race_code": -1 if excluded else i % 3,
               "sex": "F" if i % 2 else "M", "sex_code": i % 2}
        if labels:
            rec["label"] = (i // 2) % 2
        recs.append(rec)
    return recs


def _network(classes, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(4, classes)


def _expected(records, net, attributes=("race",)):
    """The file computed by hand: softmax of the network's output, sorted by case id."""
    rows = []
    with torch.no_grad():
        for r in records:
            p = torch.softmax(net(r["image"][None]), dim=1)[0]
            row = {"case_id": r["case_id"]}
            if "label" in r:
                row["label"] = r["label"]
            if p.numel() == 2:
                row["score"] = float(p[1])
            else:
                row.update({f"prob_{k}": float(v) for k, v in enumerate(p)})
            row["prediction"] = int(p.argmax())
            for a in attributes:
                row[a] = EXCLUDED_VALUE if r[f"{a}_code"] == -1 else r[a]
            rows.append(row)
    return pd.DataFrame(rows).sort_values("case_id").reset_index(drop=True)


def _run(records, net, writer, decollate=True, post=True, batch_size=4):
    # Activationsd works per sample (channel = dim 0): on a collated (B, C) batch it would take the
    # softmax over the batch, so the collated case applies it over dim 1 itself
    if not post:
        post = None
    elif decollate:
        post = Activationsd(keys="pred", softmax=True)
    else:
        post = Lambdad(keys="pred", func=lambda x: torch.softmax(x, dim=1))
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(records, batch_size=batch_size), network=net,
        postprocessing=post, decollate=decollate,
    )
    writer.attach(evaluator)
    evaluator.run()
    return evaluator


def _read(path):
    return pd.read_csv(path, keep_default_na=False, dtype={"race": str, "sex": str, "case_id": str})


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("decollate", [True, False])
def test_rows_equal_softmax_by_hand(tmp_path, classes, decollate):
    recs, net = _records(), _network(classes)
    ev = _run(recs, net, PredictionsWriter(tmp_path, attributes=["race"]), decollate=decollate)
    path = tmp_path / "predictions.csv"
    assert ev.state.predictions_file == str(path)
    got = _read(path)
    want = _expected(recs, net)
    assert list(got.columns) == list(want.columns)
    prob_cols = ["score"] if classes == 2 else [f"prob_{k}" for k in range(classes)]
    assert list(got.columns) == ["case_id", "label", *prob_cols, "prediction", "race"]
    pd.testing.assert_frame_equal(got.drop(columns=prob_cols), want.drop(columns=prob_cols), check_dtype=False)
    np.testing.assert_allclose(got[prob_cols].to_numpy(), want[prob_cols].to_numpy(), rtol=0, atol=1e-7)
    assert got["case_id"].tolist() == sorted(r["case_id"] for r in recs)
    # excluded values (code -1) are "unknown", as in the manifest; the others their value
    excluded = {r["case_id"] for r in recs if r["race_code"] == -1}
    assert set(got.loc[got["race"] == "unknown", "case_id"]) == excluded and excluded
    assert "" not in set(got["race"])
    assert not list(tmp_path.glob("*.tmp"))


def test_inference_without_labels_and_two_attributes(tmp_path):
    recs, net = _records(labels=False), _network(2)
    _run(recs, net, PredictionsWriter(tmp_path, "preds_{epoch}.csv", ["sex", "race"]), batch_size=3)
    got = _read(tmp_path / "preds_1.csv")
    assert list(got.columns) == ["case_id", "score", "prediction", "sex", "race"]
    want = _expected(recs, net, attributes=("sex", "race"))
    assert got["sex"].tolist() == want["sex"].tolist()
    np.testing.assert_allclose(got["score"], want["score"], atol=1e-7)


def test_report_written_and_auc_matches_sklearn(tmp_path):
    recs, net = _records(n=30), _network(2, seed=3)
    # the OCT schema with the missing-value policy 'exclude': the report leaves "unknown" out of the groups
    schema = json.loads((Path(fairmonai.data.__file__).parent / "schemas" / "oct_glaucoma.json").read_text())
    schema["attributes"]["race"]["missing"] = "exclude"
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    writer = PredictionsWriter(tmp_path, attributes="race", report=True, schema=tmp_path / "schema.json",
                               n_bootstrap=0, seed=1)
    ev = _run(recs, net, writer)
    out = tmp_path / "report"
    assert ev.state.predictions_report == str(out)
    report = json.loads((out / "report.json").read_text())
    df = _read(tmp_path / "predictions.csv")
    auc = report["attributes"]["race"]["metrics"]["auc"]
    assert auc["overall"] == pytest.approx(roc_auc_score(df["label"], df["score"]), abs=1e-12)
    sel = df["race"] == "Black"
    assert auc["by_group"]["Black"] == pytest.approx(roc_auc_score(df["label"][sel], df["score"][sel]), abs=1e-12)
    assert report["attributes"]["race"]["n_excluded"] == int((df["race"] == EXCLUDED_VALUE).sum()) > 0


def test_report_skipped_without_labels(tmp_path, caplog):
    recs, net = _records(labels=False), _network(2)
    with caplog.at_level("WARNING", logger="fairmonai.handlers.PredictionsWriter"):
        ev = _run(recs, net, PredictionsWriter(tmp_path, attributes=["race"], report=True, n_bootstrap=0))
    assert (tmp_path / "predictions.csv").is_file() and not (tmp_path / "report").exists()
    assert not hasattr(ev.state, "predictions_report")
    assert "no labels" in caplog.text


def test_logits_are_refused(tmp_path):
    recs, net = _records(), _network(3)
    with pytest.raises(ValueError) as e:
        _run(recs, net, PredictionsWriter(tmp_path, attributes=["race"]), post=False)
    assert "Activationsd(keys='pred', softmax=True)" in str(e.value)
    assert NOT_PROBABILITIES_MSG.split("{")[0] in str(e.value)
    # Activationsd on a collated batch (decollate=False) normalises over the batch: refused too
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(recs, batch_size=4), network=net,
        postprocessing=Activationsd(keys="pred", softmax=True), decollate=False,
    )
    PredictionsWriter(tmp_path, attributes=["race"]).attach(evaluator)
    with pytest.raises(ValueError, match="expects class probabilities"):
        evaluator.run()


def test_missing_attribute_and_bad_options(tmp_path):
    recs, net = _records(), _network(2)
    with pytest.raises(ValueError, match="attribute 'age' is not in the batch"):
        _run(recs, net, PredictionsWriter(tmp_path, attributes=["age"]))
    with pytest.raises(ValueError, match="named more than once"):
        PredictionsWriter(tmp_path, attributes=["race", "race"])
    with pytest.raises(ValueError, match="save_rank must be >= 0"):
        PredictionsWriter(tmp_path, save_rank=-1)


def test_duplicate_case_ids(tmp_path, caplog):
    recs, net = _records(), _network(2)
    padded = recs + recs[:2]  # as DistributedSampler pads: the same cases again
    with caplog.at_level("INFO", logger="fairmonai.handlers.PredictionsWriter"):
        _run(padded, net, PredictionsWriter(tmp_path, attributes=["race"]))
    assert _read(tmp_path / "predictions.csv")["case_id"].tolist() == sorted(r["case_id"] for r in recs)
    assert "2 repeated case(s)" in caplog.text
    clash = recs + [dict(recs[0], label=1 - recs[0]["label"])]
    with pytest.raises(ValueError, match=f"case id '{recs[0]['case_id']}' appears twice"):
        _run(clash, net, PredictionsWriter(tmp_path, attributes=["race"]))


def test_epoch_restart_resets_rows(tmp_path):
    recs, net = _records(), _network(2)
    writer = PredictionsWriter(tmp_path, attributes=["race"])
    ev = _run(recs, net, writer)
    ev.run()  # a second evaluation (as ValidationHandler does) rewrites the file, not appends
    assert len(_read(tmp_path / "predictions.csv")) == len(recs)


# ---- two processes, gloo on CPU, each rank evaluating half of the data


def _dist_worker(rank, world, init_file, out_dir):
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        recs = _records(n=15)[rank::world]  # uneven: 8 and 7 cases
        _run(recs, _network(3), PredictionsWriter(out_dir, attributes=["race", "sex"]), batch_size=3)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    _run(_records(n=15), _network(3), PredictionsWriter(single, attributes=["race", "sex"]))
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(_dist_worker, args=(2, init_file, str(multi)), nprocs=2, join=True, start_method="fork")
    assert (multi / "predictions.csv").read_bytes() == (single / "predictions.csv").read_bytes()
    assert len(_read(multi / "predictions.csv")) == 15
