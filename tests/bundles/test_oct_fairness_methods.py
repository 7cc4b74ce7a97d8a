"""The OCT bundle's FIN and FairBatch overlays (issue 16) as bundle runs, at smoke sizes, in process.

* ``[train, method_fin, net_vit]`` is FIN-ViT whichever order the two overlays come in, and trains;
* a FIN model trained with ``[train, method_fin]`` evaluates with ``evaluate.json`` and infers with
  ``[inference, method_fin]`` from a manifest (the same scores as evaluation); a folder of images has no
  group codes, so FIN inference stops before scoring, naming the cases; evaluation without the overlay is
  refused by the run record;
* FairBatch: one epoch, then ``--resume`` to two, gives the weights and lambda of two epochs straight.
* FairViT-lite ``[train, method_fairvit, net_vit]`` (4 ViT blocks for its 4 aux heads): the line is off in
  epoch 1 and refitted at epoch 2 to exactly the fit on the calibration cases' eval logits of the epoch-1
  model; the model holds the mask scores, varsigma and aux heads; the calibration cases are cut from the
  fold's training part (what the trainer reads) and neither part meets the held-out fold or the test
  split; without net_vit the run stops naming the ViT requirement; one epoch then ``--resume`` to two
  equals two straight (same line, same weights); the model evaluates with evaluate.json and runs
  inference with ``[inference, method_fairvit, net_vit, cpu]`` on a folder (no group codes), scoring as
  evaluation did.

The generic checks of every ``method_*.json`` (each writes what its method writes) are in
test_bundle_conformance.py::test_method_overlay_trains.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from harness import ROOT, assert_same_weights, run_bundle, weights

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


def test_the_demos_columns_and_outputs_read_a_real_report(fin_model):
    """Every column of experiments/demo.json (``make demo``) is a number in the bundle's own report of
    the test split, each interval a [low, high] pair, and the listed outputs are the report and its two
    figures."""
    from fairmonai.experiments.columns import column_interval, column_value
    from fairmonai.experiments.grid import load_experiment

    exp = load_experiment(BUNDLE, "demo")
    assert sum("ci" in src for src in exp.columns.values()) == 9  # all but the count of eyes
    for name, src in exp.columns.items():
        value = column_value(fin_model, "test", src)
        assert isinstance(value, (int, float)) and np.isfinite(value), name
        if "ci" in src:
            lo, hi = column_interval(fin_model, "test", src)
            assert lo is not None and hi is not None and lo <= hi, (name, lo, hi)
    report = fin_model / "eval" / "report_test"
    found = sorted({p.name for pattern in exp.outputs for p in fin_model.glob(pattern.replace("{split}", "test"))})
    assert found == sorted(["report.md", *(p.name for p in report.glob("*.png"))]) and len(found) == 3


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


# --- FairViT-lite (method_fairvit.json) ---------------------------------------------------------------------

FAIRVIT = ["train.json", "method_fairvit.json", "net_vit.json"]
#: smoke.json's ViT has 2 blocks; FairViT's default 4 aux heads need 4
FAIRVIT_ARGS = ("--vit_num_layers", "4")
#: the smoke ViT for inference.json + cpu.json (which carry no ViT sizes): the sizes training recorded
SMOKE = json.loads((CONFIGS / "smoke.json").read_text())
FAIRVIT_INFERENCE_ARGS = (*[a for k in ("vit_patch_size", "vit_hidden_size", "vit_mlp_dim", "vit_num_heads")
                            for a in (f"--{k}", str(SMOKE[k]))], *FAIRVIT_ARGS)


def _fairvit_parser(root):
    """The merged training config of the FairViT runs, with ``root`` as bundle_root (its cohort is reused)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / n) for n in (*FAIRVIT, "smoke.json")])
    parser["bundle_root"] = str(root)
    parser["vit_num_layers"] = 4
    return parser


def _line(output: str, epoch: int) -> str:
    lines = [ln.split("FairViT ", 1)[1] for ln in output.splitlines() if f"FairViT epoch {epoch}:" in ln]
    assert len(lines) == 1, output[-3000:]
    return lines[0].strip()


@pytest.fixture(scope="module")
def fairvit_runs(tmp_path_factory):
    """FairViT-ViT trained two epochs straight, and one epoch then resumed to two (the weights after the first
    epoch kept aside); the outputs of the three runs."""
    import shutil

    straight, resumed = tmp_path_factory.mktemp("fairvit_straight"), tmp_path_factory.mktemp("fairvit_resumed")
    out = {"straight": run_bundle(BUNDLE, straight, FAIRVIT, *FAIRVIT_ARGS, "--epochs", "2").output}
    data = ("--dataset_dir", str(straight / "data" / "synthetic_oct"))  # the same cohort, not built again
    out["first"] = run_bundle(BUNDLE, resumed, FAIRVIT, *FAIRVIT_ARGS, *data, "--epochs", "1").output
    shutil.copy(resumed / "models" / "model.pt", resumed / "model_epoch1.pt")
    out["resumed"] = run_bundle(BUNDLE, resumed, FAIRVIT, *FAIRVIT_ARGS, *data, "--epochs", "2",
                                "--resume", "True").output
    return straight, resumed, out


def test_fairvit_trains_masks_aux_heads_and_refits_the_line(fairvit_runs):
    from fairmonai.networks.fairvit import fit_margin_hyperplane

    straight, resumed, out = fairvit_runs
    # the line: off in the first epoch, refitted at the start of the second
    assert _line(out["straight"], 1) == "epoch 1: distance loss off"
    assert _line(out["straight"], 2).endswith("= 0 on the calibration split")
    # ... and it is the fit on the calibration cases' eval logits of the model after epoch 1, seed 0 + epoch 1
    parser = _fairvit_parser(straight)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(weights(resumed / "model_epoch1.pt"))
    net.eval()
    logits, labels = [], []
    with torch.no_grad():
        for batch in parser.get_parsed_content("train#calibration_loader"):
            logits.append(net(batch["image"]))
            labels.append(batch["label"].reshape(-1))
    h = fit_margin_hyperplane(torch.cat(logits), torch.cat(labels), seed=1)
    assert h is not None
    assert _line(out["straight"], 2) == (f"epoch 2: line {h.theta1:.4g} x + {h.theta2:.4g} y + {h.bias:.4g} = 0 "
                                         "on the calibration split")
    # the final model holds FairViT's parameters: per-group mask scores of every masked layer of the 4 blocks,
    # varsigma, the 4 aux heads, and the ViT (its own head kept: the main head)
    w = weights(straight / "models" / "model.pt")
    hidden, mlp, heads = SMOKE["vit_hidden_size"], SMOKE["vit_mlp_dim"], SMOKE["vit_num_heads"]
    for b in range(4):
        assert tuple(w[f"masks.block{b}_qkv"].shape) == (3, heads)  # three races
        assert tuple(w[f"masks.block{b}_out_proj"].shape) == (3, hidden)
        assert tuple(w[f"masks.block{b}_linear1"].shape) == (3, mlp)
        assert tuple(w[f"masks.block{b}_linear2"].shape) == (3, hidden)
    assert not any(k.startswith("masks.block4") for k in w)
    assert any(w[k].abs().max() > 0 for k in w if k.startswith("masks."))  # the scores (0 at start) trained
    assert tuple(w["varsigma"].shape) == (3,) and ((w["varsigma"] > 0) & (w["varsigma"] < 4)).all()
    for k in range(4):
        assert tuple(w[f"aux_heads.{k}.1.weight"].shape) == (2, hidden)
    assert "aux_heads.4.1.weight" not in w
    assert "backbone.vit.classification_head.weight" in w


def test_fairvit_training_part_excludes_calibration_and_held_out_cases(fairvit_runs):
    from fairmonai.data import load_datalist

    straight, _, _ = fairvit_runs
    parser = _fairvit_parser(straight)
    fold_train = [d["case_id"] for d in parser.get_parsed_content("train#datalist")]
    train_part, cal_part = ([d["case_id"] for d in part] for part in parser.get_parsed_content("fairvit_parts"))
    assert sorted(train_part + cal_part) == sorted(fold_train) and not set(train_part) & set(cal_part)
    assert len(cal_part) == int(0.1 * len(fold_train) + 0.5) and len(cal_part) >= 2
    # what the trainer and the calibration loader read
    assert [d["case_id"] for d in parser.get_parsed_content("train#dataset").data] == train_part
    assert [d["case_id"] for d in parser.get_parsed_content("train#calibration_loader").dataset.data] == cal_part
    assert len(parser.get_parsed_content("train#dataloader")) == len(train_part) // SMOKE["batch_size"]
    # neither part meets the held-out fold or the test split
    held_out = {d["case_id"] for d in parser.get_parsed_content("validate#datalist")}
    test = {d["case_id"] for d in load_datalist(parser.get_parsed_content("manifest"), "oct_glaucoma", "test")}
    assert held_out and test
    for part in (train_part, cal_part):
        assert not set(part) & held_out and not set(part) & test


def test_fairvit_needs_the_vit_overlay(fairvit_runs, tmp_path):
    from fairmonai.networks.fairvit import NOT_A_VIT_MSG

    straight, _, _ = fairvit_runs
    res = run_bundle(BUNDLE, tmp_path, ["train.json", "method_fairvit.json"],
                     "--dataset_dir", str(straight / "data" / "synthetic_oct"), fails=True)
    assert NOT_A_VIT_MSG.format(type="DenseNet121", hint="; give it a ViT backbone (in a bundle, the ViT network "
                                "overlay)") in _messages(res.error)
    assert not (tmp_path / "models" / "model.pt").exists()


def test_fairvit_resume_equals_straight(fairvit_runs):
    straight, resumed, out = fairvit_runs
    assert "Restored all variables from" in out["resumed"]
    assert "FairViT epoch 1:" not in out["resumed"]  # the resumed run starts at epoch 2 and refits there
    assert _line(out["resumed"], 2) == _line(out["straight"], 2)  # the same line from the restored weights
    assert_same_weights(straight / "models" / "model.pt", resumed / "models" / "model.pt")
    with pytest.raises(AssertionError):  # the second epoch changed the weights: the check has power
        assert_same_weights(resumed / "model_epoch1.pt", resumed / "models" / "model.pt")


def test_fairvit_evaluates_and_infers_without_group_codes(fairvit_runs):
    straight, _, _ = fairvit_runs
    root = straight
    run_bundle(BUNDLE, root, [*FAIRVIT, "evaluate.json"], *FAIRVIT_ARGS)
    pred = pd.read_csv(root / "eval" / "predictions_test.csv")
    manifest_file = next((root / "data").glob("*/manifest.csv"))
    manifest = pd.read_csv(manifest_file)
    test = manifest.loc[manifest["split"] == "test"]
    assert sorted(pred["case_id"]) == sorted(test["case_id"])
    assert json.loads((root / "eval" / "report_test" / "report.json").read_text())["attributes"]
    # inference on a folder of the test images: no race column, so no group codes anywhere
    folder = root / "test_images"
    folder.mkdir()
    for rel in test["image"]:
        (folder / rel.split("/")[-1]).symlink_to(manifest_file.parent / rel)
    run_bundle(BUNDLE, root, ["inference.json", "method_fairvit.json", "net_vit.json", "cpu.json"], "--input",
               str(folder), *FAIRVIT_INFERENCE_ARGS, smoke=False)
    inf = pd.read_csv(root / "eval" / "predictions_inference.csv")
    assert "race" not in inf.columns and "race_code" not in inf.columns
    both = inf.merge(pred, on="case_id", suffixes=("_inf", "_eval"))
    assert len(both) == len(inf) == len(test)
    assert np.allclose(both["score_inf"], both["score_eval"], atol=1e-5)  # the main head, as evaluated
    assert both["score_inf"].std() > 1e-4  # scores that differ between cases: the comparison has power
