"""`make demo`'s job: predictions cover exactly the test split, and the report's AUC is sklearn's."""

import json

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fairmonai.data import load_manifest
from fairmonai.demo import run_demo


def test_demo_scores_the_test_split_once(tmp_path, capsys):
    res = run_demo(tmp_path, n=90, seed=1, n_bootstrap=20)
    out = capsys.readouterr().out
    assert f"report: {res['markdown']}" in out
    records = load_manifest(res["manifest"], "oct_glaucoma")
    test_ids = {r["case_id"] for r in records if r["split"] == "test"}
    pred = pd.read_csv(res["predictions"])
    assert set(pred["case_id"]) == test_ids and len(pred) == len(test_ids)
    rep = json.loads(res["json"].read_text())["attributes"]["race"]
    assert rep["metrics"]["auc"]["overall"] == pytest.approx(roc_auc_score(pred["label"], pred["score"]), abs=1e-12)
    assert rep["disparities"]["eodd"]["strategy"] == "one_vs_rest"
