"""The OCT bundle's FIN and FairBatch overlays (issue 16) as bundle runs, at smoke sizes, in process.

* ``[train, method_fin, net_vit]`` is FIN-ViT whichever order the two overlays come in, and trains;
* a FIN model trained with ``[train, method_fin]`` evaluates with ``evaluate.json`` and infers with
  ``[inference, method_fin]`` from a manifest (the same scores as evaluation); a folder of images has no
  group codes, so FIN inference stops before scoring, naming the cases; evaluation without the overlay is
  refused by the run record;
* FairBatch: one epoch, then ``--resume`` to two, gives the weights and lambda of two epochs straight.

The generic checks of every ``method_*.json`` (each writes what its method writes) are in
test_bundle_conformance.py::test_method_overlay_trains.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from harness import ROOT, assert_same_weights, run_bundle

BUNDLE = ROOT / "bundles" / "oct_glaucoma_fami"
CONFIGS = BUNDLE / "configs"
SMOKE_SIZE = json.loads((CONFIGS / "smoke.json").read_text())["image_size"]
INFERENCE_ARGS = ("--image_size", json.dumps(SMOKE_SIZE), "--num_workers", "0")


def _parsed(names: list[str], key: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / n) for n in names])
    return parser.get_parsed_content(key)


@pytest.mark.parametrize("order", [["method_fin.json", "net_vit.json"], ["net_vit.json", "method_fin.json"]],
                         ids=["fin-vit", "vit-fin"])
def test_fin_vit_composes_in_any_order(order):
    from fairmonai.networks import FINClassifier, ViTClassifier

    net = _parsed(["train.json", *order, "smoke.json"], "network_def")
    assert isinstance(net, FINClassifier) and isinstance(net.backbone, ViTClassifier)
    hidden = json.loads((CONFIGS / "smoke.json").read_text())["vit_hidden_size"]
    assert tuple(net.fin.mu.shape) == (3, hidden)  # three races, the class token's size


def test_fin_vit_trains(tmp_path):
    run_bundle(BUNDLE, tmp_path, ["train.json", "method_fin.json", "net_vit.json"], "--train#trainer#epoch_length", "2")
    weights = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)["model"]
    assert "fin.mu" in weights and "classifier.weight" in weights
    assert any(k.startswith("backbone.vit.") for k in weights)
    assert "backbone.vit.classification_head.weight" not in weights  # the ViT's own head was removed


@pytest.fixture(scope="module")
def fin_model(tmp_path_factory):
    """A FIN-DenseNet trained with [train, method_fin] (one epoch of two iterations) and evaluated."""
    root = tmp_path_factory.mktemp("fin")
    run_bundle(BUNDLE, root, ["train.json", "method_fin.json"], "--train#trainer#epoch_length", "2")
    run_bundle(BUNDLE, root, ["train.json", "method_fin.json", "evaluate.json"])
    return root


def test_fin_evaluation_and_inference(fin_model):
    root = fin_model
    pred = pd.read_csv(root / "eval" / "predictions_test.csv")
    manifest_file = next((root / "data").glob("*/manifest.csv"))
    manifest = pd.read_csv(manifest_file)
    assert set(pred["case_id"]) == set(manifest.loc[manifest["split"] == "test", "case_id"])
    assert json.loads((root / "eval" / "report_test" / "report.json").read_text())["attributes"]
    # inference from the manifest (it has the race column, so every case has its group code)
    run_bundle(BUNDLE, root, ["inference.json", "method_fin.json"], "--input", str(manifest_file), *INFERENCE_ARGS,
               smoke=False)
    inf = pd.read_csv(root / "eval" / "predictions_inference.csv")
    assert len(inf) == len(manifest)
    both = inf.merge(pred, on="case_id", suffixes=("_inf", "_eval"))
    assert len(both) == len(pred)
    assert np.allclose(both["score_inf"], both["score_eval"], atol=1e-5)


def test_fin_inference_without_group_codes_names_the_cases(fin_model):
    from fairmonai.networks.fin import MISSING_GROUP_KEY_MSG

    root = fin_model
    manifest_file = next((root / "data").glob("*/manifest.csv"))
    cases = pd.read_csv(manifest_file).head(2)
    folder = root / "two_images"
    folder.mkdir()
    for rel in cases["image"]:
        (folder / rel.split("/")[-1]).symlink_to(manifest_file.parent / rel)
    written = root / "eval" / "predictions_inference.csv"
    before = written.stat().st_mtime_ns if written.exists() else None
    res = run_bundle(BUNDLE, root, ["inference.json", "method_fin.json"], "--input", str(folder), *INFERENCE_ARGS,
                     smoke=False, fails=True)
    err = res.error
    while err is not None and not isinstance(err, KeyError):
        err = err.__cause__ or err.__context__
    assert err is not None, repr(res.error)
    head = MISSING_GROUP_KEY_MSG.split("{cases}")[0].format(key="race_code")
    assert head in str(err)
    for case in cases["case_id"]:
        assert case in str(err)
    assert (written.stat().st_mtime_ns if written.exists() else None) == before  # stopped before scoring


def _messages(err: BaseException | None) -> str:
    """The messages of an exception and of its causes and contexts."""
    out = []
    while err is not None:
        out.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(out)


def test_fin_model_evaluated_without_the_overlay_is_refused(fin_model):
    res = run_bundle(BUNDLE, fin_model, ["train.json", "evaluate.json"], fails=True)
    assert "was trained with other settings than this evaluation (network_def: trained with" in _messages(res.error)


def _lambda(root) -> list:
    ckpt = next((root / "models").glob("checkpoint*.pt"))
    return torch.load(ckpt, map_location="cpu", weights_only=False)["fairbatch"]["lambdas"]


def test_fairbatch_resume_restores_lambda(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir()
    resumed.mkdir()
    names = ["train.json", "method_fairbatch.json"]
    out = run_bundle(BUNDLE, straight, names, "--epochs", "2").output
    assert "FairBatch: epoch 1:" in out and "FairBatch: epoch 2:" in out
    run_bundle(BUNDLE, resumed, names, "--epochs", "1")
    after_one = _lambda(resumed)
    b = run_bundle(BUNDLE, resumed, names, "--epochs", "2", "--resume", "True")
    assert "Restored all variables from" in b.output
    assert_same_weights(straight / "models" / "model.pt", resumed / "models" / "model.pt")
    assert np.array_equal(_lambda(resumed), _lambda(straight))
    assert not np.array_equal(_lambda(resumed), after_one)  # epoch 2 stepped from the restored lambda
