"""Bundle conformance: every folder in bundles/ with configs/metadata.json passes model-zoo's checks.

Parametrised over the bundles, so a new bundle is checked without new test code. Each bundle ships
a ``configs/smoke.json`` overlay (one epoch, tiny shapes, a small synthetic cohort) that the runs
here append last. Runs are ``python -m monai.bundle run`` executed in this process (tests/bundles/harness.py), with
``--bundle_root`` a temporary folder; each bundle's smoke model is trained once per session
(tests/bundles/conftest.py) and shared by the checks of a trained model.

Checks: metadata against the offline schema copy (tests/bundles/bundle_meta_schema.json);
``check_properties`` of train and inference; ``verify_net_in_out``; a 1-epoch train run of
train.json and of every ``method_*`` overlay; evaluate.json and inference.json on the trained
checkpoint, with the report's numbers checked against scikit-learn on the written predictions;
``ckpt_export`` to TorchScript with outputs equal to PyTorch's (``onnx_export``: test_onnx_export.py); and (slow) the
multi-GPU overlay under ``torchrun --nproc_per_node=2`` with gloo, whose validation fairness metrics
must equal a single-process evaluation of the same model on the same data.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from harness import (
    BUNDLES,
    ENV,
    METHODS,
    NETWORKS,
    SCHEMA,
    SMOKE_EPOCHS,
    assert_same_weights,
    input_shape,
    input_size,
    is_generative,
    is_segmentation,
    refused,
    last_val_line,
    run_bundle,
    size_key,
)
from harness import ids as _ids
from harness import weights as _weights


@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids(BUNDLES))
def test_metadata_validates_offline(bundle):
    from monai.bundle import verify_metadata

    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"], "the version must have a changelog entry"
    assert (bundle / "LICENSE").is_file() and (bundle / "docs" / "README.md").is_file()
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))
    # the copy the bundle ships for its documented offline verify_metadata command is this schema
    assert json.loads((bundle / "docs" / "meta_schema.json").read_text()) == json.loads(SCHEMA.read_text())


@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids(BUNDLES))
def test_check_properties(bundle, tmp_path):
    from monai.bundle import ConfigWorkflow

    # no checkpoint exists here: inference is checked without loading one; the training datasets are
    # built (a property), so the smoke overlay keeps them small
    for files, kind, extra in (([bundle / "configs" / "train.json", bundle / "configs" / "smoke.json"], "train", {}),
                               ([bundle / "configs" / "inference.json"], "inference", {"load_pretrain": False})):
        wf = ConfigWorkflow(config_file=[str(f) for f in files], meta_file=str(bundle / "configs" / "metadata.json"),
                            logging_file=str(bundle / "configs" / "logging.conf"), workflow_type=kind,
                            bundle_root=str(tmp_path), **extra)
        wf.initialize()
        assert not wf.check_properties(), f"{kind}: missing properties {wf.check_properties()}"


@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids(BUNDLES))
def test_inference_seeds_with_the_bundle_seed(bundle):
    """inference.json's initialize seeds with ``seed`` (it hard-coded 0): the seeding step, run alone."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["seed"] = 7
    steps = [i for i, e in enumerate(parser["initialize"]) if "set_determinism" in e]
    assert len(steps) == 1
    parser.get_parsed_content(f"initialize#{steps[0]}")
    assert torch.initial_seed() == 7


@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids(BUNDLES))
def test_verify_net_in_out(bundle):
    from monai.bundle import verify_net_in_out

    shape = input_size(bundle)
    override = {"_meta_#network_data_format#inputs#image#spatial_shape": shape}
    if is_segmentation(bundle):
        override["_meta_#network_data_format#outputs#pred#spatial_shape"] = shape
    verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"),
                      config_file=str(bundle / "configs" / "inference.json"), device="cpu", **override)


def test_train_evaluate_inference(trained):
    bundle, root, _ = trained
    models = root / "models"
    assert (models / "model.pt").is_file()
    assert any(p.name.startswith("checkpoint") for p in models.iterdir()), list(models.iterdir())
    run_bundle(bundle, root, ["train.json", "evaluate.json"])
    manifest = pd.read_csv(next((root / "data").glob("*/manifest.csv")))
    # inference.json stands alone (smoke.json holds training ids): only the input size changes
    inference = dict(names=["inference.json"], smoke=False)
    inference_args = ("--" + size_key(bundle), json.dumps(input_size(bundle)), "--num_workers", "0")
    if is_segmentation(bundle):
        _check_segmentation_outputs(bundle, root, manifest, inference, inference_args)
        return
    if is_generative(bundle):
        _check_reconstruction_outputs(bundle, root, manifest)
        return
    pred_file = root / "eval" / "predictions_test.csv"
    pred = pd.read_csv(pred_file)
    assert set(pred["case_id"]) == set(manifest.loc[manifest["split"] == "test", "case_id"])
    report = json.loads((root / "eval" / "report_test" / "report.json").read_text())
    from sklearn.metrics import roc_auc_score

    attr = next(iter(report["attributes"]))
    auc = report["attributes"][attr]["metrics"]["auc"]["overall"]
    assert auc == pytest.approx(roc_auc_score(pred["label"], pred["score"]), abs=1e-12)
    run_bundle(bundle, root, ["inference.json"], *inference_args, smoke=False)
    inf = pd.read_csv(root / "eval" / "predictions_inference.csv")
    # the synthetic images folder holds every case; the test-split rows score the same as in evaluation
    assert len(inf) == len(manifest)
    both = inf.merge(pred, on="case_id", suffixes=("_inf", "_eval"))
    assert len(both) == len(pred)
    assert np.allclose(both["score_inf"], both["score_eval"], atol=1e-5)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    total = a.sum() + b.sum()
    return 0.0 if total == 0 else 2.0 * inter / total


def _check_segmentation_outputs(bundle, root, manifest, inference, inference_args):
    """Scores on the original grid, recomputed with numpy from the written masks; inference = evaluation."""
    import nibabel as nib

    scores = pd.read_csv(root / "eval" / "scores_test.csv")
    test = manifest[manifest["split"] == "test"].set_index("case_id")
    assert set(scores["case_id"]) == set(test.index)
    seg_dir = root / "eval" / "segmentations_test"
    data = next((root / "data").glob("*/manifest.csv")).parent
    for row in scores.itertuples():
        case = test.loc[row.case_id]
        label = np.asarray(nib.load(data / case["label"]).dataobj) > 0
        stem = Path(case["image_pre"]).name.replace(".nii.gz", "")
        pred = np.asarray(nib.load(seg_dir / f"{stem}_seg.nii.gz").dataobj)
        pred = pred.reshape(label.shape) > 0  # the original image grid, as the challenge scores it
        assert row.dice == pytest.approx(_dice(pred, label), abs=1e-6)
        box = np.zeros_like(pred)
        box[int(case["bbox_x_min"]):int(case["bbox_x_max"]), int(case["bbox_y_min"]):int(case["bbox_y_max"]),
            int(case["bbox_z_min"]):int(case["bbox_z_max"])] = True
        assert not (pred & ~box).any(), f"{row.case_id}: prediction outside the breast box"
    report = json.loads((root / "eval" / "report_test" / "report.json").read_text())
    assert report["mean_dsc"] == pytest.approx(scores["dice"].mean(), abs=1e-9)
    assert report["performance_score"] == pytest.approx(
        0.5 * (scores["dice"].mean() + 1.0 - scores["normhd"].mean()), abs=1e-9)
    run_bundle(bundle, root, inference["names"], *inference_args, smoke=False)
    inf = pd.read_csv(root / "eval" / "segmentations_inference.csv")
    assert len(inf) == len(manifest)
    both = inf.merge(scores, on="case_id", suffixes=("_inf", "_eval"))
    assert len(both) == len(scores)
    assert (both["pred_voxels_inf"] == both["pred_voxels_eval"]).all()


def _check_reconstruction_outputs(bundle, root, manifest):
    """A VAE bundle: the evaluated cases are the run's test sets; per-image MSE of decode(mu) on [-1, 1] and
    mean latent std recomputed with numpy from the PNG files and the saved weights; the run table holds their
    group means; inference (all cases) gives the same values as evaluation."""
    from monai.bundle import ConfigParser
    from PIL import Image

    cases = pd.read_csv(root / "eval" / "case_list.csv")
    per_image = pd.read_csv(root / "eval" / "reconstruction_test.csv")
    test = cases[cases["set"] == "test"]
    assert sorted(per_image["case_id"]) == sorted(test["case_id"])
    assert not set(per_image["case_id"]) & set(cases.loc[cases["set"] == "train", "case_id"])
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / n) for n in ("inference.json", "smoke.json")])
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(_weights(root / "models" / "model.pt"))
    net.eval()
    data = next((root / "data").glob("*/manifest.csv")).parent
    paths = manifest.set_index("case_id")["image"]
    x = np.stack([np.asarray(Image.open(data / paths[c]).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
                  for c in per_image["case_id"]]) / 127.5 - 1.0
    with torch.no_grad():
        recon, mu, log_var = (t.numpy() for t in net.reconstruct(torch.from_numpy(x)))
    assert np.allclose(per_image["mse"], ((recon - x) ** 2).mean(axis=(1, 2, 3)), atol=1e-6)
    assert np.allclose(per_image["latent_std"], np.exp(0.5 * log_var).mean(axis=(1, 2, 3)), atol=1e-6)
    runs = pd.read_csv(root / "eval" / "report_test" / "runs.csv").set_index("group")
    for g in ("light", "dark"):
        part = per_image[per_image["tone_group"] == g]
        assert len(part) == (test["tone_group"] == g).sum() > 0
        assert runs.loc[g, "mse_mean"] == pytest.approx(part["mse"].mean(), abs=1e-12)
        assert runs.loc[g, "latent_std_mean"] == pytest.approx(part["latent_std"].mean(), abs=1e-12)
    # inference.json stands alone; smoke.json gives it the smoke network's size
    run_bundle(bundle, root, ["inference.json"], "--num_workers", "0")
    inf = pd.read_csv(root / "eval" / "predictions_inference.csv")
    assert len(inf) == len(manifest)
    both = inf.merge(per_image, on="case_id", suffixes=("_inf", "_eval"))
    assert len(both) == len(per_image)
    assert np.allclose(both["mse_inf"], both["mse_eval"], atol=1e-6)


@pytest.mark.parametrize("bundle,method", METHODS, ids=_ids(METHODS))
def test_method_overlay_trains(bundle, method, tmp_path, smoke_model):
    if is_segmentation(bundle):
        # two epochs: the first trains with weights 1.0, the second with the weights mined after it
        run_bundle(bundle, tmp_path, ["train.json", f"{method}.json"], "--epochs", "2")
        assert (tmp_path / "models" / "model.pt").is_file()
        table = pd.read_csv(tmp_path / "eval" / "subgroups" / "epoch_0001.csv")
        assert len(table) >= 1 and np.isfinite(table["divergence"]).all()
        weights = pd.read_csv(tmp_path / "eval" / "subgroups" / "weights_epoch_0001.csv")
        assert (weights["weight"] >= 0).all()
        assert weights["weight"].max() == pytest.approx(table["divergence"].abs().max(), abs=1e-9)
        # killed after epoch 1 and resumed: the checkpoint holds the mined weights, the run ends the same
        resumed = tmp_path / "resumed"
        resumed.mkdir()
        run_bundle(bundle, resumed, ["train.json", f"{method}.json"], "--epochs", "1")
        run_bundle(bundle, resumed, ["train.json", f"{method}.json"], "--epochs", "2", "--resume", "True")
        assert_same_weights(tmp_path / "models" / "model.pt", resumed / "models" / "model.pt")
        for name in ("epoch_0002.csv", "weights_epoch_0002.csv"):
            pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "eval" / "subgroups" / name),
                                          pd.read_csv(resumed / "eval" / "subgroups" / name))
        return
    overlay = json.loads((bundle / "configs" / f"{method}.json").read_text())
    vit_only = "FairViT" in json.dumps(overlay.get("network_def", {}))  # FairViT-lite exists for a ViT only
    # 4 blocks for its 4 aux heads; 2 epochs: the line is refitted from the second on
    extra = (["net_vit.json"], ["--vit_num_layers", "4", "--epochs", "2"]) if vit_only else ([], [])
    baseline = None
    if overlay.get("finetune"):  # the overlay fine-tunes the bundle's baseline: the smoke model
        baseline = smoke_model(bundle)[0] / "models" / "model.pt"
        extra = (extra[0], [*extra[1], "--baseline_ckpt", str(baseline)])
    res = run_bundle(bundle, tmp_path, ["train.json", f"{method}.json", *extra[0]], *extra[1])
    assert (tmp_path / "models" / "model.pt").is_file()
    _check_method_outputs(bundle, method, tmp_path, res.output, baseline)


def _check_method_outputs(bundle: Path, method: str, root: Path, output: str, baseline: Path | None = None) -> None:
    """What the overlay's method writes, told by what the overlay defines: a fairness penalty (FaMI, MINE,
    MIGE) its penalty curve; a FairBatch sampler its lambda step in the log and lambda in the checkpoint;
    a FIN network a FINClassifier whose weights hold FIN's per-group parameters (it raises without the
    group codes, so a finished run means every batch delivered them); Hänel et al.'s loss (FairnessLossWithCE)
    its cross entropy, lambda and batch fairness loss in the penalty curve, and a fine-tuning its start
    from the baseline in the log."""
    overlay = json.loads((bundle / "configs" / f"{method}.json").read_text())
    checked = False
    if "penalty" in overlay:
        curve = pd.read_csv(root / "eval" / "penalty_curve.csv")
        assert len(curve) >= 1 and np.isfinite(curve["loss"]).all()
        checked = True
    if "train#batch_sampler" in overlay:
        assert "FairBatch: epoch 1:" in output, output[-3000:]
        ckpt = next((root / "models").glob("checkpoint*.pt"))
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["fairbatch"]
        lam = np.asarray(state["lambdas"])
        assert state["epoch"] == 1 and np.allclose(lam.sum(axis=1), 1.0)
        shares = np.asarray(state["cell_sizes"]) / np.asarray(state["cell_sizes"]).sum(axis=1, keepdims=True)
        assert not np.allclose(lam, shares, atol=1e-9), "lambda did not move from the empirical shares"
        checked = True
    loss = overlay.get("loss", {})
    if isinstance(loss, dict) and loss.get("_target_", "").endswith("FairnessLossWithCE"):
        curve = pd.read_csv(root / "eval" / "penalty_curve.csv")
        assert len(curve) >= 1 and np.isfinite(curve[["ce", "fair", "loss"]].to_numpy()).all()
        assert (curve["fair"] >= -1e-6).all() and (curve["lam"] == overlay["fair_lambda"]).all()
        # every logged loss is the cross entropy plus lambda times the fairness loss
        assert np.allclose(curve["loss"], curve["ce"] + curve["lam"] * curve["fair"], atol=1e-4)
        # one row per epoch: how many of its batches had an empty cell in the fairness loss
        cells = pd.read_csv(root / "eval" / "empty_cells.csv")
        assert cells["epoch"].tolist() == list(range(1, len(cells) + 1)) and (cells["batches"] > 0).all()
        assert ((0 <= cells["empty_batches"]) & (cells["empty_batches"] <= cells["batches"])).all()
        assert np.allclose(cells["share"], cells["empty_batches"] / cells["batches"])
        checked = True
    if overlay.get("finetune"):
        assert baseline is not None and f"Restored all variables from {baseline}" in output, output[-3000:]
    network = overlay.get("network_def", {})
    if isinstance(network, dict) and network.get("_target_", "").endswith("FINClassifier"):
        from monai.bundle import ConfigParser

        from fairmonai.networks import FINClassifier

        parser = ConfigParser()
        parser.read_config([str(bundle / "configs" / n) for n in ("train.json", f"{method}.json", "smoke.json")])
        net = parser.get_parsed_content("network_def")
        assert isinstance(net, FINClassifier)
        weights = _weights(root / "models" / "model.pt")
        assert weights["fin.mu"].shape == net.fin.mu.shape and weights["fin.s"].shape == net.fin.s.shape
        assert "fairmonai.networks.FINPrepareBatch" in json.dumps(overlay)
        checked = True
    if isinstance(network, dict) and network.get("_target_", "").endswith("FairViTLite"):
        # the distance loss is off in epoch 1 and its line refitted from epoch 2 on; masks and aux heads saved
        assert "FairViT epoch 1: distance loss off" in output, output[-3000:]
        assert "FairViT epoch 2: " in output, output[-3000:]  # a line, or off when one class only
        weights = _weights(root / "models" / "model.pt")
        varsigma = weights["varsigma"].numpy()
        from fairmonai.data.sensitive import group_names  # one weight per group of the bundle's attribute

        train = json.loads((bundle / "configs" / "train.json").read_text())
        n_groups = len(group_names(train["schema"], train["sensitive_key"]))
        assert varsigma.shape == (n_groups,) and ((varsigma > 0) & (varsigma < 4)).all()
        assert "masks.block0_qkv" in weights and "aux_heads.0.1.weight" in weights
        checked = True
    if isinstance(loss, dict) and loss.get("_target_", "").endswith("VAELoss"):
        # every logged VAE loss is recon + kl_weight KL + perceptual_weight P, in the overlay's form
        terms = pd.read_csv(root / "eval" / "loss_terms.csv")
        assert len(terms) >= 1 and (terms["form"] == loss.get("form", "reference")).all()
        assert np.allclose(terms["loss"], terms["recon"] + terms["kl_weight"] * terms["kl"]
                           + terms["perceptual_weight"] * terms["perceptual"], rtol=1e-5)
        assert (terms["perceptual"] > 0).all() if loss.get("perceptual") else (terms["perceptual"] == 0).all()
        checked = True
    assert checked, f"{method}.json: no check of what this method writes; add one to _check_method_outputs"


@pytest.mark.parametrize("bundle,net", NETWORKS, ids=_ids(NETWORKS))
def test_network_overlay_trains(bundle, net, tmp_path):
    """Each network overlay trains (one epoch cut to two iterations: the composition is under test, not
    the learning) and validates to a finite key metric, then deploys."""
    res = run_bundle(bundle, tmp_path, ["train.json", f"{net}.json"], "--train#trainer#epoch_length", "2")
    assert (tmp_path / "models" / "model.pt").is_file()
    value = float(last_val_line(res.output).split(":", 1)[1].split()[0])
    assert np.isfinite(value) and 0.0 <= value <= 1.0
    _check_overlay_deploys(bundle, net, tmp_path)


def _check_overlay_deploys(bundle: Path, net: str, root: Path) -> None:
    """The overlay composes with inference.json (and smoke.json): verify_net_in_out, inference on every
    case of the cohort, and a TorchScript export that carries the run record and reproduces the network."""
    from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out
    from monai.data import load_net_with_metadata

    files = [str(bundle / "configs" / f) for f in ("inference.json", f"{net}.json", "smoke.json")]
    shape = input_size(bundle)
    override = {"_meta_#network_data_format#inputs#image#spatial_shape": shape}
    if is_segmentation(bundle):
        override["_meta_#network_data_format#outputs#pred#spatial_shape"] = shape
    verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"),
                      config_file=files, device="cpu", **override)
    # inference on four cases of the cohort (a manifest for segmentation, an image folder otherwise)
    manifest_file = next((root / "data").glob("*/manifest.csv"))
    cases = pd.read_csv(manifest_file).head(4)
    if is_segmentation(bundle):
        source = manifest_file.parent / "four_cases.csv"
        cases.to_csv(source, index=False)
    else:
        source = root / "four_images"
        source.mkdir()
        for rel in cases["image"]:
            (source / Path(rel).name).symlink_to(manifest_file.parent / rel)
    run_bundle(bundle, root, ["inference.json", f"{net}.json"], "--input", str(source))
    out = pd.read_csv(next((root / "eval").glob("*_inference.csv")))
    assert sorted(out["case_id"]) == sorted(cases["case_id"])
    ts_file = root / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts_file), ckpt_file=str(root / "models" / "model.pt"),
                key_in_ckpt="model", use_trace=True, input_shape=[1, *input_shape(bundle)[1:]],
                meta_file=str(bundle / "configs" / "metadata.json"),
                config_file=[*files, str(root / "models" / "run_record.json")])
    ts, _, extra = load_net_with_metadata(str(ts_file), more_extra_files=("run_record.json",))
    record = json.loads(extra["run_record.json"])["fairmonai_run_record"]
    assert [Path(f).name for f in record["command_line"]["config_files"]] == ["train.json", f"{net}.json", "smoke.json"]
    parser = ConfigParser()
    parser.read_config(files)
    model = parser.get_parsed_content("network_def")
    model.load_state_dict(_weights(root / "models" / "model.pt"))
    model.eval()
    x = torch.rand(*input_shape(bundle), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert np.allclose(ts(x).numpy(), model(x).numpy(), atol=1e-4)


def test_export_torchscript(trained, tmp_path):
    """The documented ckpt_export of the trained smoke model reproduces the network (ONNX export, at other
    batch and spatial sizes: tests/bundles/test_onnx_export.py)."""
    bundle, root, _ = trained
    from monai.bundle import ConfigParser, ckpt_export

    shape = input_shape(bundle)
    # a generative bundle's smoke model is a smaller network than the paper's: smoke.json sizes it
    configs = [str(bundle / "configs" / n) for n in (["inference.json", "smoke.json"] if is_generative(bundle)
                                                      else ["inference.json"])]
    ckpt_export(net_id="network_def", ckpt_file=str(root / "models" / "model.pt"), key_in_ckpt="model",
                meta_file=str(bundle / "configs" / "metadata.json"),
                config_file=[*configs, str(root / "models" / "run_record.json")],
                filepath=str(tmp_path / "model.ts"))
    parser = ConfigParser()
    parser.read_config(configs)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(_weights(root / "models" / "model.pt"))
    net.eval()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x).numpy()
        ts = torch.jit.load(str(tmp_path / "model.ts"))(x).numpy()
    assert np.allclose(ts, expected, atol=1e-5)


def test_resume_matches_uninterrupted_run(trained, tmp_path):
    """One epoch, then --resume to the smoke model's epochs: the same weights and validation metrics as the
    uninterrupted smoke run."""
    bundle, straight, straight_output = trained
    run_bundle(bundle, tmp_path, ["train.json"], "--epochs", "1")
    b = run_bundle(bundle, tmp_path, ["train.json"], "--epochs", str(SMOKE_EPOCHS), "--resume", "True")
    assert "Restored all variables from" in b.output
    assert_same_weights(straight / "models" / "model.pt", tmp_path / "models" / "model.pt")
    assert last_val_line(straight_output) == last_val_line(b.output)


@pytest.mark.slow
def test_multi_gpu_overlay_matches_single_process(trained, tmp_path):
    """2-process gloo run: its last validation metrics equal a single-process evaluation of its model."""
    bundle, _, _ = trained
    root = tmp_path / "ddp"
    root.mkdir()
    train = json.loads((bundle / "configs" / "train.json").read_text())  # SGD bundles take a momentum, Adam ones not
    saver = tmp_path / "metrics_saver.json"
    saver.write_text(json.dumps({"+validate#handlers": [{
        "_target_": "MetricsSaver", "save_dir": "$@output_dir + '/val_metrics'",
        "metrics": "*", "save_rank": 0}]}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file",
           "[" + ",".join(f"'{p}'" for p in [bundle / "configs" / "train.json", bundle / "configs" / "smoke.json",
                                             saver, bundle / "configs" / "multi_gpu_train.json"]) + "]",
           "--meta_file", str(bundle / "configs" / "metadata.json"),
           "--logging_file", str(bundle / "configs" / "logging.conf"), "--bundle_root", str(root),
           # a model that separates the classes, so the compared values are not degenerate
           "--epochs", "2", *(["--learning_rate", "0.001"] if is_segmentation(bundle)
                              else ["--learning_rate", "0.01", "--momentum", "0.9"] if "momentum" in train
                              else ["--learning_rate", "0.001"]),
           # the last epoch's validation is compared: a bundle that keeps its best epoch keeps the last here
           *(["--select_best", "False"] if "select_best" in train else [])]
    res = subprocess.run(cmd, cwd=root, env=ENV, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ddp = dict(line.strip().split(",") for line in (root / "eval" / "val_metrics" / "metrics.csv").read_text().splitlines())
    if is_segmentation(bundle):
        # the same final model, validated in one process: the same mean Dice over the same cases
        validate_only = tmp_path / "validate_only.json"
        validate_only.write_text(json.dumps({
            "+validate#handlers": [
                {"_target_": "CheckpointLoader", "load_path": "$@ckpt_dir + '/model.pt'",
                 "load_dict": {"model": "@network"}, "map_location": "@device"},
                {"_target_": "MetricsSaver", "save_dir": "$@output_dir + '/val_metrics_single'", "metrics": "*"}],
            "initialize": ["$monai.utils.set_determinism(seed=@seed)"], "run": ["$@validate#evaluator.run()"]}))
        run_bundle(bundle, root, ["train.json", str(validate_only)])
        single = dict(line.strip().split(",") for line in
                      (root / "eval" / "val_metrics_single" / "metrics.csv").read_text().splitlines())
        assert 0.0 < float(ddp["val_mean_dice"]) < 1.0
        assert float(ddp["val_mean_dice"]) == pytest.approx(float(single["val_mean_dice"]), abs=1e-6)
        return
    # the same final model, evaluated on the validation fold in one process
    run_bundle(bundle, root, ["train.json", "evaluate.json"], "--eval_split", "val")
    if is_generative(bundle):
        single = json.loads((root / "eval" / "report_val" / "report.json").read_text())["groups"]["all"]
        assert float(ddp["val_mse"]) > 0.0
        assert float(ddp["val_mse"]) == pytest.approx(single["mse_mean"], abs=1e-6)
        assert float(ddp["val_latent_std"]) == pytest.approx(single["latent_std_mean"], abs=1e-6)
        return
    report = json.loads((root / "eval" / "report_val" / "report.json").read_text())
    attr = next(iter(report["attributes"]))
    single = report["attributes"][attr]
    # not constant (0.5); 1.0 is allowed: the rectal smoke cohort validates on 3 cases, which a model often ranks right
    assert 0.0 <= float(ddp["val_auc"]) <= 1.0 and float(ddp["val_auc"]) != 0.5
    assert float(ddp["val_auc"]) == pytest.approx(single["metrics"]["auc"]["overall"], abs=1e-6)
    for name in ("eodd", "eom"):  # undefined on a fold where a group lacks a class: NaN in the log, null in the report
        logged, reported = float(ddp[f"val_{name}"]), single["disparities"][name]["value"]
        if reported is None:
            assert math.isnan(logged), (name, logged)
        else:
            assert logged == pytest.approx(reported, abs=1e-6), name


def test_runs_that_would_succeed_on_the_wrong_thing_are_refused(trained, monkeypatch):
    """Issue 14 points 1-2: misspelled overrides, retraining over a finished model, evaluating a model
    with another method's configs, and inference at another input size stop in ``initialize``, before
    any work, naming what differs; the model and the manifest are left as they were. (The bundle
    command's exit status and last line for such errors: tests/bundles/test_bad_inputs.py.)"""
    from fairmonai.bundle_run import file_sha256

    bundle, root, _ = trained
    model = root / "models" / "model.pt"
    before = file_sha256(model)
    manifest = next((root / "data").glob("*/manifest.csv"))
    manifest_before = file_sha256(manifest)

    out = refused(bundle, root, ["train.json"], monkeypatch, manfest="/data/real.csv", epoch=3, learning_rat=0.5)
    assert "--manfest: not defined by the configs [train.json, smoke.json]; closest defined: manifest" in out
    assert "--epoch: not defined" in out and "closest defined: epochs" in out
    assert "--learning_rat: not defined" in out and "learning_rate" in out

    out = refused(bundle, root, ["train.json"], monkeypatch)
    assert f"{model} holds a finished model: pass --overwrite True" in out

    # a method that changes the loss and nothing else (FairBatch changes only the batches, FIN the
    # network, FairViT both: its refusal names the network first)
    method = next(m.name for m in sorted((bundle / "configs").glob("method_*.json"))
                  if "loss" in json.loads(m.read_text()) and "network_def" not in json.loads(m.read_text()))
    out = refused(bundle, root, ["train.json", method, "evaluate.json"], monkeypatch)
    assert "was trained with other settings than this evaluation (loss: trained with" in out
    assert "It was trained with configs ['train.json', 'smoke.json']" in out

    key = size_key(bundle)
    default = json.loads((bundle / "configs" / "inference.json").read_text())[key]
    out = refused(bundle, root, ["inference.json"], monkeypatch, smoke=False)
    assert (f"{key}: trained with {json.dumps(input_size(bundle), separators=(',', ':'))}, this inference has "
            f"{json.dumps(default, separators=(',', ':'))}") in out

    assert file_sha256(model) == before
    assert file_sha256(manifest) == manifest_before
