"""The ISIC 2020 fairness-losses bundle (bundles/isic2020_fairness_losses): what the conformance suite
cannot see.

The baseline's ``model.pt`` is the epoch with the lowest validation loss; a method overlay starts from
the baseline's weights (checked with a zero learning rate, which leaves every parameter where it
started) and refuses a baseline that is missing, was trained on another manifest or at another input
size; the class weights are the effective-number weights of the training split's counts; the split is
patient level, 70/20/10; the evaluation's Table 3 rows are those of the predictions it wrote. Every
training here is the shared smoke model or one smoke epoch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from harness import refused, run_bundle, weights
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
ISIC = ROOT / "bundles" / "isic2020_fairness_losses"
METHODS = ("dp_l2", "dp_mi", "eo_l2", "eo_mi", "iou")


@pytest.fixture(scope="module")
def baseline(smoke_model):
    root, output = smoke_model(ISIC)
    return root, output


def _manifest(root: Path) -> pd.DataFrame:
    return pd.read_csv(next((root / "data").glob("*/manifest.csv")), dtype={"fold": str})


def test_baseline_model_is_the_lowest_validation_loss_epoch(baseline):
    root, output = baseline
    losses = [float(x) for x in re.findall(r"Metrics -- .*?val_loss: ([0-9.]+)", output)]
    assert len(losses) == 2, output[-2000:]
    best = int(np.argmin(losses)) + 1
    restored = re.search(r"BestWeights: restored the weights of epoch (\d+) \(val_loss lowest ([0-9.]+)\)", output)
    assert restored and int(restored.group(1)) == best
    assert float(restored.group(2)) == pytest.approx(min(losses), abs=1e-4)  # the log rounds to 4 decimals
    # the per-epoch checkpoint holds that choice, so a resumed run selects among all epochs
    ckpt = torch.load(next((root / "models").glob("checkpoint*.pt")), map_location="cpu", weights_only=True)
    state = ckpt["best_weights"]
    assert state["best_epoch"] == best and state["best_value"] == pytest.approx(min(losses), abs=1e-4)
    model = weights(root / "models" / "model.pt")
    assert all(torch.equal(model[k], state["weights"][k]) for k in model)


def test_split_is_patient_level_70_20_10(baseline):
    m = _manifest(baseline[0])
    assert (m.groupby("patient_id")["split"].nunique() == 1).all()
    shares = m.groupby("patient_id")["split"].first().value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.7, abs=0.08) and shares["val"] == pytest.approx(0.2, abs=0.08)
    assert shares["test"] == pytest.approx(0.1, abs=0.08)


def test_class_weights_are_effective_numbers_of_the_training_split(baseline):
    from monai.bundle import ConfigParser

    root = baseline[0]
    parser = ConfigParser()
    parser.read_config([str(ISIC / "configs" / n) for n in ("train.json", "smoke.json")])
    parser["bundle_root"] = str(root)
    w = parser.get_parsed_content("class_weight").numpy()
    m = _manifest(root)
    n = np.array([((m["split"] == "train") & (m["label"] == c)).sum() for c in (0, 1)], dtype=float)
    beta = 0.9998  # Cui et al.'s E_n = (1 - beta^n) / (1 - beta); w proportional to 1 / E_n, summing to K = 2
    inv = (1 - beta) / (1 - beta ** n)
    assert np.allclose(w, 2 * inv / inv.sum(), rtol=1e-9) and w.sum() == pytest.approx(2.0)


def test_finetune_starts_from_the_baseline_weights(baseline, tmp_path):
    """Adam with learning rate 0 moves no parameter: after one epoch of a method overlay, every parameter
    is the baseline's (BatchNorm's running statistics are buffers, recomputed in training mode and by the
    smoke size's recalibration: left out). Without the baseline the same run keeps its own
    initialisation, which differs."""
    root, _ = baseline
    base = weights(root / "models" / "model.pt")
    params = [k for k in base if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    run_bundle(ISIC, tmp_path, ["train.json", "method_eo_l2.json"], "--baseline_ckpt",
               str(root / "models" / "model.pt"), "--learning_rate", "0.0")
    tuned = weights(tmp_path / "models" / "model.pt")
    assert all(torch.equal(tuned[k], base[k]) for k in params)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    run_bundle(ISIC, scratch, ["train.json"], "--learning_rate", "0.0", "--seed", "1")
    assert not all(torch.equal(weights(scratch / "models" / "model.pt")[k], base[k]) for k in params)


def test_lambda_zero_finetune_is_the_weighted_cross_entropy(baseline, tmp_path):
    """The control: any overlay at fair_lambda 0 trains the baseline's weighted cross entropy (the fairness
    loss is still logged). Two overlays at lambda 0 give the same model."""
    root, _ = baseline
    runs = []
    for method in ("dp_l2", "iou"):
        out = tmp_path / method
        out.mkdir()
        run_bundle(ISIC, out, ["train.json", f"method_{method}.json"], "--baseline_ckpt",
                   str(root / "models" / "model.pt"), "--fair_lambda", "0.0")
        curve = pd.read_csv(out / "eval" / "penalty_curve.csv")
        assert (curve["lam"] == 0).all() and np.allclose(curve["loss"], curve["ce"], atol=1e-6)
        runs.append(weights(out / "models" / "model.pt"))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_bad_baselines_are_refused(baseline, tmp_path, monkeypatch):
    root, _ = baseline
    ckpt = str(root / "models" / "model.pt")
    out = refused(ISIC, tmp_path, ["train.json", "method_dp_l2.json"], monkeypatch)
    assert "baseline_ckpt is not set: this run fine-tunes a trained model" in out
    out = refused(ISIC, tmp_path, ["train.json", "method_dp_l2.json"], monkeypatch,
                  baseline_ckpt=str(tmp_path / "none.pt"))
    assert f"baseline_ckpt: no model file {tmp_path / 'none.pt'}" in out
    # another input size: the network and input ids are compared, naming the id and both values
    out = refused(ISIC, tmp_path, ["train.json", "method_dp_l2.json"], monkeypatch, baseline_ckpt=ckpt,
                  image_size=[24, 24])
    assert f"{ckpt} was trained with other settings than this fine-tuning (image_size: trained with [32,32], " \
        "this fine-tuning has [24,24]" in out
    # another cohort, another manifest: the baseline may have trained on this run's validation or test cases
    out = refused(ISIC, tmp_path / "other", ["train.json", "method_dp_l2.json"], monkeypatch, baseline_ckpt=ckpt,
                  cohort_size=60)
    assert f"baseline_ckpt {ckpt} was trained on manifest" in out and "fine-tune on the manifest" in out


def test_table3_rows_are_the_evaluated_predictions(baseline, tmp_path):
    """evaluate.json on the validation split and on the test split: each writes its Table 3 beside its
    report, from the predictions it wrote (AUC checked with scikit-learn)."""
    root, _ = baseline
    for split in ("val", "test"):
        run_bundle(ISIC, root, ["train.json", "evaluate.json"], "--eval_split", split)
        pred = pd.read_csv(root / "eval" / f"predictions_{split}.csv")
        m = _manifest(root)
        assert set(pred["case_id"]) == set(m.loc[m["split"] == split, "case_id"])
        table = pd.read_csv(root / "eval" / f"report_{split}" / "table3.csv")
        assert len(table) == 1 and table.loc[0, "split"] == split and table.loc[0, "model"] == "baseline"
        assert table.loc[0, "n"] == len(pred)
        assert table.loc[0, "auc"] == pytest.approx(roc_auc_score(pred["label"], pred["score"]), abs=1e-12)
        acc = ((pred["score"] >= 0.5).astype(int) == pred["label"]).mean()
        assert table.loc[0, "accuracy"] == pytest.approx(acc)
        md = (root / "eval" / f"report_{split}" / "table3.md").read_text()
        assert f"| baseline | {split} | sex | {len(pred)} |" in md


def test_method_overlays_differ_only_in_their_loss():
    """The five overlays are one file with the loss class (and the IoU loss's mean over groups) changed."""
    overlays = {m: json.loads((ISIC / "configs" / f"method_{m}.json").read_text()) for m in METHODS}
    ref = overlays["dp_l2"]
    for m, o in overlays.items():
        assert set(o) == set(ref)
        assert {k: v for k, v in o.items() if k not in ("fair_loss", "model_label")} == \
            {k: v for k, v in ref.items() if k not in ("fair_loss", "model_label")}
        assert o["finetune"] is True and o["epochs"] == "@finetune_epochs" and o["select_best"] is False
        assert o["fair_loss"]["empty"] == "@fair_loss_empty"
        assert o["fair_loss"]["reduction"] == ("mean" if m == "iou" else "sum")


def test_age_group_is_one_override(baseline, tmp_path):
    """--sensitive_key age_group fine-tunes with K_s = 3 (the loss gets three groups) and the evaluation's
    report and Table 3 are by age group, from the same baseline (sex is not part of the baseline)."""
    from monai.bundle import ConfigParser

    root, _ = baseline
    parser = ConfigParser()
    parser.read_config([str(ISIC / "configs" / n) for n in ("train.json", "method_dp_l2.json")])
    parser["sensitive_key"] = "age_group"
    assert parser.get_parsed_content("group_names") == ["0-30", "31-60", "61+"]
    assert parser.get_parsed_content("fair_loss").num_groups == 3
    res = run_bundle(ISIC, tmp_path, ["train.json", "method_dp_l2.json"], "--baseline_ckpt",
                     str(root / "models" / "model.pt"), "--sensitive_key", "age_group")
    assert "Restored all variables from" in res.output
    curve = pd.read_csv(tmp_path / "eval" / "penalty_curve.csv")
    assert np.isfinite(curve["fair"]).all()
    run_bundle(ISIC, tmp_path, ["train.json", "method_dp_l2.json", "evaluate.json"], "--sensitive_key", "age_group")
    pred = pd.read_csv(tmp_path / "eval" / "predictions_test.csv", dtype={"age_group": str})
    m = _manifest(tmp_path).set_index("case_id")
    assert (pred["age_group"].to_numpy() == m.loc[pred["case_id"], "age_group"].to_numpy()).all()
    report = json.loads((tmp_path / "eval" / "report_test" / "report.json").read_text())
    assert list(report["attributes"]) == ["age_group"]
    table = pd.read_csv(tmp_path / "eval" / "report_test" / "table3.csv")
    assert table.loc[0, "attribute"] == "age_group" and table.loc[0, "model"] == "dp_l2 lambda=1.0"


def test_real_data_overlay_needs_the_70_20_10_manifest(tmp_path):
    """data_isic2020.json reads <dataset_dir>/manifest.csv; one built without a validation part (the
    converter's default train/test split) is refused, naming the converter's option."""
    from monai.bundle import ConfigParser

    from fairmonai.data import ManifestError

    (tmp_path / "train").mkdir()
    (tmp_path / "manifest.csv").write_text(
        "case_id,image,label,sex,age_group,split,fold\n"
        "I1,train/I1.jpg,0,male,31-60,train,0\nI2,train/I2.jpg,1,female,0-30,test,\n")
    parser = ConfigParser()
    parser.read_config([str(ISIC / "configs" / n) for n in ("train.json", "data_isic2020.json")])
    parser["dataset_dir"] = str(tmp_path)
    assert parser.get_parsed_content("manifest") == str(tmp_path / "manifest.csv")
    with pytest.raises(RuntimeError) as info:  # MONAI's config expression error, raised from ours
        parser.get_parsed_content("train#datalist")
    assert isinstance(info.value.__cause__, ManifestError)
    assert re.search(r"has no \['val'\] rows .*--val-fraction", str(info.value.__cause__))


GOOD = pd.DataFrame({"case_id": ["I1", "I2", "I3"], "image": ["train/I1.jpg"] * 3, "label": ["0", "1", "1"],
                     "sex": ["male", "male", "female"], "age_group": ["0-30", "31-60", "61+"],
                     "split": ["train", "val", "test"]})


@pytest.mark.parametrize("change,expected", [
    (lambda t: t.drop(columns="sex"), r"missing required column\(s\) \['sex'\]"),
    (lambda t: t.assign(sex=["divers", "male", "female"]),
     r"row 2, column 'sex': value 'divers' is not one of the declared categories \['female', 'male'\]"),
    (lambda t: t.assign(label=["nan", "1", "1"]), r"row 2, column 'label': empty or NaN label"),
    (lambda t: t.assign(image=["train/none.jpg"] + ["train/I1.jpg"] * 2),
     r"row 2, column 'image': file not found: .*train/none\.jpg"),
], ids=["missing_column", "unknown_value", "nan_label", "missing_file"])
def test_bad_manifest_is_named(tmp_path, change, expected):
    """A bad real manifest stops the data list with an error naming the column, value or file."""
    from monai.bundle import ConfigParser

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "I1.jpg").write_bytes(b"x")
    change(GOOD).to_csv(tmp_path / "manifest.csv", index=False)
    parser = ConfigParser()
    parser.read_config([str(ISIC / "configs" / n) for n in ("train.json", "data_isic2020.json")])
    parser["dataset_dir"] = str(tmp_path)
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("train#datalist")
    message = str(info.value.__cause__ or info.value)
    assert re.search(expected, message), message


@pytest.mark.parametrize("mode,channels", [("RGBA", 4), ("L", 1), ("RGB", 3)])
def test_photo_channel_count_is_checked(tmp_path, mode, channels):
    """The cached preprocessing stops on a greyscale or RGBA photo, naming the case, file and channel count
    (the 3-channel network would fail without naming a file); an RGB photo passes at the cache size."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose
    from PIL import Image

    from fairmonai.data.image_check import ImageReadError

    path = tmp_path / f"ISIC_{mode}.png"
    Image.new(mode, (40, 30)).save(path)
    parser = ConfigParser()
    parser.read_config([str(ISIC / "configs" / n) for n in ("train.json", "smoke.json")])
    preprocess = Compose(parser.get_parsed_content("train#cache_transforms"))
    if channels == 3:
        assert tuple(preprocess({"image": str(path), "case_id": "c1"})["image"].shape) == (3, 34, 34)
        return
    with pytest.raises(Exception) as info:
        preprocess({"image": str(path), "case_id": "c1"})
    err = info.value
    while err is not None and not isinstance(err, ImageReadError):
        err = err.__cause__ or err.__context__
    assert err is not None, repr(info.value)
    assert re.fullmatch(rf"case 'c1', image {re.escape(str(path))}: {channels} channels \(shape \({channels}, 40, 30\)\), "
                        r"expected 3: convert it to RGB", str(err)), str(err)


def test_training_part_smaller_than_one_batch_is_refused(tmp_path, monkeypatch):
    """cpu.json's batch of 64 on a 60-image cohort (42 training images): refused before training, not a run
    that drops its only incomplete batch and exits 0 without a model."""
    out = refused(ISIC, tmp_path, ["train.json"], monkeypatch, cohort_size=60, batch_size=64)
    assert re.search(r"the training part has \d+ cases, fewer than one batch of 64; .* --batch_size \d+ or less", out), out
    assert not (tmp_path / "models" / "model.pt").exists()
