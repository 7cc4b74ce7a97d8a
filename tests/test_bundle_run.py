"""fairmonai.bundle_run: the command line, unknown overrides, the run record and the checks against it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from fairmonai.bundle_run import (
    BundleRunError,
    RunRecord,
    bundle_command_line,
    check_evaluation_run,
    check_inference_run,
    check_training_run,
    load_run_record,
    recorded_manifest,
    unknown_overrides,
)
from fairmonai.data.manifest import ManifestError
from fairmonai.data.sensitive import check_attributes, group_names

MAIN = str(Path("/x/site-packages/monai/bundle/__main__.py"))
CONFIG = {
    "manifest": "m.csv",
    "epochs": 3,
    "learning_rate": 0.1,
    "synthetic_cohort": {"n": 10, "shape": [4, 4, 4]},
    "image_size": [32, 32, 32],
    "network_def": {"_target_": "DenseNet121", "spatial_dims": 3, "out_channels": 2},
    "vit": {"_target_": "ViT", "img_size": "@image_size"},
    "train": {"trainer": {"_target_": "SupervisedTrainer", "max_epochs": "@epochs"}, "handlers": [{"a": 1}]},
}


@pytest.mark.parametrize("key,closest", [
    ("manfest", ["manifest"]),
    ("epoch", ["epochs"]),
    ("learning_rat", ["learning_rate"]),
    ("synthetic_cohort#nn", ["synthetic_cohort#n"]),  # not a component: no new keys
    ("train#trainr#max_epochs", ["train#trainer#max_epochs"]),
    ("train#handlers#3", []),  # past the end of a list
])
def test_unknown_overrides_named_with_closest_ids(key, closest):
    bad = unknown_overrides(CONFIG, {key: 1})
    assert list(bad) == [key]
    assert bad[key][:len(closest)] == closest


@pytest.mark.parametrize("key", [
    "manifest", "epochs", "synthetic_cohort#n", "synthetic_cohort::shape", "train#trainer#max_epochs",
    "network_def#dropout_prob",  # a new constructor argument of an existing component
    "train#handlers#0#a", "+imports", "config_file", "meta_file", "workflow_type",
])
def test_defined_overrides_pass(key):
    assert unknown_overrides(CONFIG, {key: 1}) == {}


def test_command_line_parsed_as_fire_does(tmp_path):
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"config_file": "a/train.json", "epochs": 9, "seed": 4}))
    cmd = bundle_command_line([MAIN, "run", "--config_file", "['a/train.json','a/smoke.json']", "--epochs", "3",
                               "--learning-rate=0.5", "--resume", "--image_size", "[8,8,8]", "--name", "x y"])
    assert cmd.config_files == ["a/train.json", "a/smoke.json"]
    assert cmd.overrides == {"epochs": 3, "learning_rate": 0.5, "resume": True, "image_size": [8, 8, 8],
                             "name": "x y"}
    cmd = bundle_command_line([MAIN, "run", "--args_file", str(args_file), "--epochs", "2"])
    assert cmd.config_files == ["a/train.json"] and cmd.overrides == {"epochs": 2, "seed": 4}
    assert bundle_command_line(["/usr/bin/pytest", "run", "--epochs", "2"]) is None
    assert bundle_command_line([MAIN, "verify_metadata", "--epochs", "2"]) is None


def _bundle(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A minimal bundle: train.json defining the model ids, a net overlay, and a manifest file."""
    cfg = tmp_path / "configs"
    cfg.mkdir()
    (cfg / "train.json").write_text(json.dumps({
        "manifest": "m.csv", "epochs": 1, "image_size": [32, 32, 32], "patch": 8,
        "network_def": {"_target_": "ViT", "img_size": "@image_size", "patch_size": "@patch"},
        "loss": {"_target_": "torch.nn.CrossEntropyLoss"},
        "model_record_ids": ["network_def", "image_size", "loss"]}))
    (cfg / "method.json").write_text(json.dumps({"loss": {"_target_": "FaMI", "mu": 0.5}}))
    (cfg / "infer.json").write_text(json.dumps({
        "image_size": [96, 96, 96], "patch": 8, "network_def": {"_target_": "ViT", "img_size": "@image_size",
                                                                "patch_size": "@patch"},
        "model_record_ids": ["network_def", "image_size"]}))
    manifest = tmp_path / "m.csv"
    manifest.write_text("case_id\na\n")
    return cfg, manifest, tmp_path / "models"


def _argv(cfg: Path, *names: str, **overrides) -> list[str]:
    files = "[" + ",".join(f"'{cfg / n}'" for n in names) + "]"
    return [MAIN, "run", "--config_file", files, *[x for k, v in overrides.items() for x in (f"--{k}", str(v))]]


def _train(cfg, manifest, models, *names, **overrides) -> dict:
    """What the bundle's FinalCheckpointSaver writes: the weights and the record."""
    record = RunRecord(manifest=manifest, save_dir=models, argv=_argv(cfg, *names, **overrides))
    torch.save({"model": {"w": torch.ones(2)}, "run_record": record.state_dict()}, models / "model.pt")
    return record.state_dict()


def test_run_record_holds_what_made_the_model(tmp_path):
    cfg, manifest, models = _bundle(tmp_path)
    models.mkdir()
    rec = _train(cfg, manifest, models, "train.json", patch=16)
    assert rec["command_line"]["overrides"] == {"patch": 16}
    assert [Path(f).name for f in rec["command_line"]["config_files"]] == ["train.json"]
    # @references expanded: the recorded network says which size and patch it was built with
    assert rec["model"]["network_def"] == {"_target_": "ViT", "img_size": [32, 32, 32], "patch_size": 16}
    assert rec["manifest"] == str(manifest.resolve())
    import hashlib
    assert rec["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert len(rec["config_sha256"]) == 64
    # MONAI's CheckpointLoader reads with weights_only=True: the record must be plain data
    loaded = torch.load(models / "model.pt", weights_only=True)
    assert loaded["run_record"]["model"] == rec["model"]
    assert json.loads((models / "run_record.json").read_text())["fairmonai_run_record"]["model"] == rec["model"]
    assert load_run_record(models / "model.pt")["manifest"] == recorded_manifest(models / "model.pt")


def test_training_refuses_a_folder_with_a_finished_model(tmp_path):
    cfg, manifest, models = _bundle(tmp_path)
    models.mkdir()
    check_training_run(models, argv=_argv(cfg, "train.json"))  # empty folder: fine
    _train(cfg, manifest, models, "train.json")
    with pytest.raises(BundleRunError, match="holds a finished model: pass --overwrite True"):
        check_training_run(models, argv=_argv(cfg, "train.json"))
    check_training_run(models, resume=True, argv=_argv(cfg, "train.json"))
    assert (models / "model.pt").is_file()
    check_training_run(models, overwrite=True, argv=_argv(cfg, "train.json"))
    assert not (models / "model.pt").exists() and not (models / "run_record.json").exists()
    with pytest.raises(BundleRunError, match="--epoch: not defined by the configs \\[train.json\\]; closest defined: epochs"):
        check_training_run(models, argv=_argv(cfg, "train.json", epoch=3))


def test_evaluation_refuses_other_method_and_names_both_values(tmp_path, caplog):
    cfg, manifest, models = _bundle(tmp_path)
    models.mkdir()
    _train(cfg, manifest, models, "train.json")
    ckpt = models / "model.pt"
    with pytest.raises(BundleRunError) as e:
        check_evaluation_run(ckpt, manifest=manifest, argv=_argv(cfg, "train.json", "method.json"))
    assert ('loss: trained with {"_target_":"torch.nn.CrossEntropyLoss"}, this evaluation has '
            '{"_target_":"FaMI","mu":0.5}') in str(e.value)
    with pytest.raises(BundleRunError, match='image_size: trained with \\[32,32,32\\], this evaluation has \\[64,64,64\\]'):
        check_evaluation_run(ckpt, manifest=manifest, argv=_argv(cfg, "train.json", image_size="[64,64,64]"))
    with caplog.at_level(logging.INFO, logger="fairmonai.bundle_run"):
        check_evaluation_run(ckpt, manifest=manifest, argv=_argv(cfg, "train.json"))
    assert "is the training manifest" in caplog.text
    other = tmp_path / "other.csv"
    other.write_text("case_id\nb\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fairmonai.bundle_run"):
        check_evaluation_run(ckpt, manifest=other, argv=_argv(cfg, "train.json"))
    assert f"evaluation manifest {other.resolve()}" in caplog.text and "differs from the one" in caplog.text


def test_inference_compares_its_own_ids(tmp_path):
    cfg, manifest, models = _bundle(tmp_path)
    models.mkdir()
    _train(cfg, manifest, models, "train.json")
    with pytest.raises(BundleRunError, match=r"network_def: trained with .*\[32,32,32\].*this inference has .*\[96,96,96\]"):
        check_inference_run(models / "model.pt", argv=_argv(cfg, "infer.json"))
    rec = check_inference_run(models / "model.pt", argv=_argv(cfg, "infer.json", image_size="[32,32,32]"))
    assert rec["model"]["image_size"] == [32, 32, 32]


def test_model_without_record_is_refused(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "model.pt")
    with pytest.raises(BundleRunError, match="carries no run record"):
        load_run_record(tmp_path / "model.pt")
    with pytest.raises(BundleRunError, match="no model file"):
        load_run_record(tmp_path / "missing.pt")


def test_group_names_from_the_schema():
    assert group_names("oct_glaucoma", "race", "Black") == ["Asian", "Black", "White"]
    with pytest.raises(ManifestError, match="reference_group 'black' is not a category of 'race'.*\\['Asian', 'Black', 'White'\\]"):
        group_names("oct_glaucoma", "race", "black")
    with pytest.raises(ManifestError, match="sensitive attribute 'sex' is not declared in schema 'oct_glaucoma'.*race"):
        group_names("oct_glaucoma", "sex")
    assert check_attributes("mama_mia", ["age_group"]) == ["age_group"]
    with pytest.raises(ManifestError, match=r"\['hospital'\] not declared in schema 'mama_mia'.*attributes declare it"):
        check_attributes("mama_mia", ["age_group", "hospital"])


def test_resolved_settings_and_recorded_value(tmp_path):
    import pandas as pd
    import torch

    from fairmonai.bundle_run import RECORD_KEY, BundleRunError, recorded_value
    from fairmonai.data.preprocess import PreprocessError, resolved_settings

    table = pd.DataFrame({"status": ["ok", "ok", "failed"], "crop_size": ["[60, 52, 30]", "[60, 52, 30]", ""]})
    assert resolved_settings({"crop_size": "auto", "spacing": [1, 1, 1]}, table) == {
        "crop_size": [60, 52, 30], "spacing": [1, 1, 1]}
    assert resolved_settings({"crop_size": [79, 79, 40]}, table) == {"crop_size": [79, 79, 40]}  # numbers stay
    with pytest.raises(PreprocessError, match=r"one crop size .* found \[\(60, 52, 30\), \(61, 52, 30\)\]"):
        resolved_settings({"crop_size": "auto"}, table.assign(crop_size=["[60, 52, 30]", "[61, 52, 30]", ""]))
    ckpt = tmp_path / "model.pt"
    torch.save({RECORD_KEY: {"model": {"a": 1, "b": "auto"}, "resolved": {"b": [3]}}}, ckpt)
    assert recorded_value(ckpt, "b") == [3] and recorded_value(ckpt, "a") == 1
    with pytest.raises(BundleRunError, match=r"holds no 'c' \(it records \['a', 'b'\]\)"):
        recorded_value(ckpt, "c")
