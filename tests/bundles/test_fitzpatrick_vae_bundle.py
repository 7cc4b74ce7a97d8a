"""The Fitzpatrick17k VAE bundle (bundles/fitzpatrick17k_vae): what the conformance suite cannot see.

The run's case list is the draw of its mix and repeat (n = dark - test, sets disjoint); evaluation refuses
a model of another repeat; the real-data overlay reads a local image folder and reports missing images;
bad manifests and too few dark images stop the run naming the cause; the overlays set only known ids;
the experiment files expand to the A/B/C x repeats design. Every training here is the shared smoke model
or one smoke epoch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from harness import run_bundle

ROOT = Path(__file__).resolve().parents[2]
FITZ = ROOT / "bundles" / "fitzpatrick17k_vae"


@pytest.fixture(scope="module")
def smoke(smoke_model):
    return smoke_model(FITZ)


def _configs(*names):
    return {n: json.loads((FITZ / "configs" / n).read_text()) for n in names}


def test_case_list_is_the_runs_draw(smoke):
    root, _ = smoke
    cases = pd.read_csv(root / "eval" / "case_list.csv", dtype={"fitzpatrick": str})
    counts = json.loads((root / "eval" / "case_list_counts.json").read_text())
    smoke_cfg = _configs("smoke.json")["smoke.json"]
    train, test, val = (cases[cases["set"] == s] for s in ("train", "test", "val"))
    # B, with replacement: n = available dark - test - val, half light half dark, multiplicities sum to n
    n = counts["available_dark"] - smoke_cfg["test_size"] - smoke_cfg["val_size"]
    assert counts["mix"] == "B" and counts["n"] == n == train["multiplicity"].sum()
    assert counts["train_dark"] == n // 2 and counts["train_light"] == n - n // 2
    assert counts["distinct_dark"] == (train["tone_group"] == "dark").sum()
    assert (test.groupby("tone_group").size() == smoke_cfg["test_size"]).all()
    assert not set(train["case_id"]) & set(test["case_id"]) and not set(val["case_id"]) & set(test["case_id"])
    assert set(cases.loc[cases["tone_group"] == "dark", "fitzpatrick"]) <= {"5", "6"}
    assert set(cases.loc[cases["tone_group"] == "light", "fitzpatrick"]) <= {"1", "2"}


def test_loss_terms_are_the_reference_form(smoke):
    root, _ = smoke
    terms = pd.read_csv(root / "eval" / "loss_terms.csv")
    assert (terms["form"] == "reference").all() and (terms["perceptual"] > 0).all()
    assert np.allclose(terms["loss"], terms["recon"] + terms["kl"] + terms["perceptual"], rtol=1e-5)


def test_evaluation_of_another_repeat_is_refused(smoke, tmp_path):
    """Evaluating with --repeat 1 would score test images the repeat-0 model may have trained on."""
    root, _ = smoke
    res = run_bundle(FITZ, root, ["train.json", "evaluate.json"], "--repeat", "1", fails=True)
    message = str(res.error.__cause__ or res.error)
    assert "differs from the one training wrote to" in message and "repeat 1" in message, message


def test_evaluation_report_says_the_vgg_weights_were_random(smoke):
    root, _ = smoke
    if not (root / "eval" / "report_test" / "report.json").is_file():
        run_bundle(FITZ, root, ["train.json", "evaluate.json"])
    report = json.loads((root / "eval" / "report_test" / "report.json").read_text())
    assert report["run"]["vgg_weights"].startswith("none: random VGG19 weights")
    # and the model's record (model.pt, run_record.json) says which VGG weights trained it: none
    record = json.loads((root / "models" / "run_record.json").read_text())["fairmonai_run_record"]["model"]
    assert record["vgg_weights"] is None and record["perceptual"]["weights"] is None
    assert report["run"]["mix"] == "B" and report["run"]["draw"]["n"] > 0
    assert set(report["groups"]) == {"all", "light", "dark"}
    assert report["dark_minus_light"]["mse"] == pytest.approx(
        report["groups"]["dark"]["mse_mean"] - report["groups"]["light"]["mse_mean"])


def _jpeg(path: Path, colour) -> None:
    from PIL import Image

    Image.fromarray(np.full((40, 48, 3), colour, np.uint8)).save(path)


def test_real_data_overlay_reads_a_local_folder_and_reports_missing_images(tmp_path):
    """A Fitzpatrick17k CSV of 30 rows, 26 images present (types 1-2: 12, 5-6: 10 present); the manifest
    keeps the present ones, the missing are listed, and n follows the dark images present."""
    rows, images = [], tmp_path / "images"
    images.mkdir()
    types = ["1"] * 7 + ["2"] * 7 + ["5"] * 6 + ["6"] * 6 + ["3"] * 2 + ["-1"] * 2
    for i, t in enumerate(types):
        md5 = f"{i:032x}"
        rows.append({"md5hash": md5, "fitzpatrick_scale": t, "fitzpatrick_centaur": t, "label": "psoriasis",
                     "nine_partition_label": "inflammatory", "three_partition_label": "non-neoplastic",
                     "qc": "", "url": f"http://x/{i}", "url_alphanum": ""})
        if i not in (0, 1, 14, 15):  # two light and two dark images were never downloaded
            _jpeg(images / f"{md5}.jpg", (200 - 5 * i, 150, 120))
    pd.DataFrame(rows).to_csv(tmp_path / "fitzpatrick17k.csv", index=False)
    (tmp_path / "run").mkdir()
    res = run_bundle(FITZ, tmp_path / "run", ["train.json", "data_fitzpatrick17k.json"], "--dataset_dir", str(tmp_path),
                     "--test_size", "3", "--val_size", "0")
    missing = pd.read_csv(tmp_path / "manifest_missing.csv", dtype=str)
    assert sorted(missing["md5hash"]) == [f"{i:032x}" for i in (0, 1, 14, 15)]
    assert "4 of 30 images missing" in res.output
    counts = json.loads((tmp_path / "run" / "eval" / "case_list_counts.json").read_text())
    assert (counts["available_light"], counts["available_dark"]) == (12, 10) and counts["n"] == 10 - 3
    assert (tmp_path / "run" / "models" / "model.pt").is_file()


@pytest.mark.parametrize("change,expected", [
    (lambda t: t.drop(columns="fitzpatrick"), r"missing required column\(s\) \['fitzpatrick'\]"),
    (lambda t: t.assign(fitzpatrick=["7"] + list(t["fitzpatrick"][1:])), r"value '7' is not one of the declared categories"),
    (lambda t: t.assign(image=["images/none.png"] + list(t["image"][1:])), r"file not found: .*images/none\.png"),
], ids=["missing_column", "unknown_fitzpatrick", "missing_file"])
def test_bad_manifest_is_named(smoke, tmp_path, change, expected):
    from monai.bundle import ConfigParser

    root, _ = smoke
    manifest = next((root / "data").glob("*/manifest.csv"))
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    (tmp_path / "images").symlink_to(manifest.parent / "images")
    change(table).to_csv(tmp_path / "manifest.csv", index=False)
    parser = ConfigParser()
    parser.read_config([str(FITZ / "configs" / n) for n in ("train.json", "smoke.json")])
    parser["manifest"] = str(tmp_path / "manifest.csv")
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("train#datalist")
    message = str(info.value.__cause__ or info.value)
    assert re.search(expected, message), message


def test_too_few_dark_images_is_named(smoke):
    from monai.bundle import ConfigParser

    root, _ = smoke
    parser = ConfigParser()
    parser.read_config([str(FITZ / "configs" / n) for n in ("train.json", "smoke.json")])
    parser["manifest"] = str(next((root / "data").glob("*/manifest.csv")))
    parser["test_size"] = 25  # the smoke cohort: 30 light, 24 dark images; val_size 2
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("train#datalist")
    message = str(info.value.__cause__ or info.value)
    assert "too few dark images (types 5, 6): 24 in the manifest, need at least 28 (test_size 25 + val_size 2" \
        in message, message


def test_overlays_set_only_known_ids():
    """cpu.json and smoke.json change values train.json defines; the method overlays change the loss only,
    and only its form or its perceptual term."""
    cfg = _configs("train.json", "cpu.json", "smoke.json", "method_elbo_sum.json", "method_no_perceptual.json")
    train = cfg["train.json"]
    for name in ("cpu.json", "smoke.json"):
        unknown = [k for k in cfg[name] if k.split("#")[0] not in train]
        assert not unknown, f"{name}: {unknown}"
    elbo, noperc = cfg["method_elbo_sum.json"], cfg["method_no_perceptual.json"]
    assert set(elbo) == set(noperc) == {"loss"}
    assert {k: v for k, v in elbo["loss"].items() if v != train["loss"][k]} == {"form": "elbo_sum"}
    assert {k: v for k, v in noperc["loss"].items() if v != train["loss"][k]} == {"perceptual": None}
    # the paper's training settings are the defaults
    assert (train["learning_rate"], train["batch_size"], train["epochs"], train["grad_clip_norm"]) == (1e-4, 64, 15, 10.0)
    assert (train["image_size"], train["latent_channels"], train["vae_blocks"], train["deep_model"]) == ([128, 128], 64, [1, 2, 4, 8], True)
    assert (train["dark_types"], train["test_size"], train["replacement"]) == (["5", "6"], 500, True)


def test_experiment_files_expand_to_the_design(tmp_path):
    from fairmonai.experiments.grid import expand, load_experiment

    paper = expand(load_experiment(FITZ, "abc_design"), tmp_path)
    assert len(paper) == 30
    assert sorted({(r.unit.overrides["mix"], r.unit.overrides["repeat"]) for r in paper}) == \
        [(m, k) for m in "ABC" for k in range(10)]
    assert {r.unit.overrides["dataset_dir"] for r in paper} == {f"{tmp_path.resolve()}/data/seed0"}
    cpu = expand(load_experiment(FITZ, "abc_design_cpu"), tmp_path)
    assert len(cpu) == 9 and all(r.unit.configs[-1] == "cpu.json" for r in cpu)
