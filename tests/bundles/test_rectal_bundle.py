"""The rectal MRI pCR bundle (bundles/rectal_mri_pcr_fami) beside the OCT bundle it mirrors.

What the conformance suite (test_bundle_conformance.py) cannot see: that the two bundles' method
overlays are the same files with the same keys and values except for the documented
bundle-specific ones; that no bundle's config reaches into another bundle; that the crops the
bundle trains on have its ``image_size`` and hold the whole ``crop_size`` crop (padding only adds
zeros around it), at the paper's size, the CPU size and the smoke size; that inference stops before
any work, naming the case, when a case's mask (or, for a FIN model, its sex) is missing; that the
opt-in class-weighted loss and class-balanced sampler compute what they say; and that the
experiment files parse and name only this bundle's overlays. No network is trained here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from harness import run_bundle

ROOT = Path(__file__).resolve().parents[2]
RECTAL = ROOT / "bundles" / "rectal_mri_pcr_fami"
OCT = ROOT / "bundles" / "oct_glaucoma_fami"

#: The method overlays' bundle-specific values, documented in the rectal bundle's README (Method
#: variants): file -> {flat key: (OCT value, rectal value)}. The inner cross-entropy of the
#: mutual-information penalties takes the bundle's class_weight (null unless loss_weighted.json),
#: so that the class-weighted loss composes with them.
DOCUMENTED = {
    f"method_{m}.json": {"loss#loss": ("$torch.nn.CrossEntropyLoss()",
                                       "$torch.nn.CrossEntropyLoss(weight=@class_weight)")}
    for m in ("fami", "mine", "mige")
}

#: A cohort of 10 cases at the generator's default shape (96 x 96 x 24 at 0.75 x 0.75 x 3 mm, so the
#: paper's 79 x 79 x 40 crop leaves the 72 mm field of view and is zero-padded), both labels and sexes
#: in train and test.
TINY_COHORT = {
    "split_counts": "train/female/0=2,train/female/1=2,train/male/0=2,train/male/1=2,test/female/1=1,test/male/0=1",
    "cue_strength": 3.0,
    "label_signal": 0.5,
}


def _read(path: Path):
    return json.loads(path.read_text())


def _flat(value, prefix: str = "") -> dict:
    """A config dict as ``{"a#b#c": leaf}`` (lists are leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out = {}
    for k, v in value.items():
        out.update(_flat(v, f"{prefix}#{k}" if prefix else k))
    return out


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_method_overlays_agree_with_the_oct_bundle():
    names = sorted(p.name for p in (RECTAL / "configs").glob("method_*.json"))
    assert names == sorted(p.name for p in (OCT / "configs").glob("method_*.json"))
    for name in names:
        octv, rectal = _flat(_read(OCT / "configs" / name)), _flat(_read(RECTAL / "configs" / name))
        assert octv.keys() == rectal.keys(), name
        differ = {k: (octv[k], rectal[k]) for k in octv if octv[k] != rectal[k]}
        assert differ == DOCUMENTED.get(name, {}), name
    readme = (RECTAL / "docs" / "README.md").read_text()
    for name, keys in DOCUMENTED.items():
        for key, (_, value) in keys.items():
            assert name in readme and value in readme, f"{name} {key}: the difference is not documented"


def test_no_config_references_another_bundle():
    bundles = sorted(p for p in (ROOT / "bundles").iterdir() if (p / "configs").is_dir())
    assert RECTAL in bundles and OCT in bundles
    for bundle in bundles:
        others = [b.name for b in bundles if b != bundle]
        files = sorted((bundle / "configs").glob("*.json")) + sorted((bundle / "experiments").rglob("*.json"))
        for f in files:
            for s in _strings(_read(f)):
                assert not any(o in s for o in others), f"{f.relative_to(ROOT)}: {s!r} names another bundle"
                assert "../" not in s and "..\\" not in s, f"{f.relative_to(ROOT)}: {s!r} leaves the bundle"
                assert not (s.startswith("%") and ".json" in s), f"{f.relative_to(ROOT)}: {s!r} is a file macro"


@pytest.mark.parametrize("overlay", ["cpu.json", "smoke.json", "loss_weighted.json", "sampler_balanced.json",
                                     "data_rectal_mri.json"])
def test_overlays_set_only_known_ids(overlay):
    """A misspelled id in an overlay would be added silently by the merge: every id an overlay sets is
    defined by train.json, inference.json or net_vit.json (the ViT sizes of cpu.json and smoke.json)."""
    from monai.bundle import ConfigParser

    from fairmonai.bundle_run import unknown_overrides

    values = _read(RECTAL / "configs" / overlay)
    assert values
    for base in ("train.json", "inference.json", "net_vit.json"):
        known = ConfigParser.load_config_files([str(RECTAL / "configs" / base)])
        values = {k: v for k, v in values.items() if k in unknown_overrides(known, values)}
    assert values == {}, f"{overlay}: ids defined by no config: {sorted(values)}"


def test_experiments_parse_and_use_only_this_bundles_overlays():
    from fairmonai.experiments.grid import list_experiments, load_experiment

    assert sorted(list_experiments(RECTAL)) == ["fami_seeds", "table2"]
    seeds = load_experiment(RECTAL, "fami_seeds")
    table2, oct_table2 = load_experiment(RECTAL, "table2"), load_experiment(OCT, "table2")
    for exp in (seeds, table2):
        for conf in exp.configurations.values():
            for name in conf.configs:
                assert (RECTAL / "configs" / name).is_file(), (conf.name, name)
    # the evidence: DN vs FaMI-DN, 3 seeds, the test split scored once, at the CPU size (cpu.json last)
    assert list(seeds.default_configurations) == ["dn", "fami_dn"] and list(seeds.seeds) == [0, 1, 2]
    assert list(seeds.splits) == ["test"]
    assert all(c.configs[-1] == "cpu.json" for c in seeds.configurations.values())
    # Table 2: the OCT grid (13 configurations x 10 folds, same overlays) with the attribute sex
    assert {n: c.configs for n, c in table2.configurations.items()} == \
           {n: c.configs for n, c in oct_table2.configurations.items()}
    assert list(table2.folds) == list(range(10)) and table2.overrides["num_folds"] == 10
    assert table2.overrides["manifest_folds"] is False  # ten folds made here, not the manifest's five
    assert table2.overrides == oct_table2.overrides
    assert table2.fold_report["attribute"] == "sex"
    paper = _read(RECTAL / "experiments" / table2.fold_report["paper"])
    assert paper["values"] == {"fami_vit": {"auc": {"train": None, "test": 0.81}}}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A 10-case synthetic cohort at the default shape: ``(folder, manifest)``."""
    from fairmonai.data.cohort_cache import ensure_cohort

    folder = tmp_path_factory.mktemp("rectal_cohort")
    return folder, Path(ensure_cohort("rectal_mri", folder, seed=0, **TINY_COHORT))


def _parser(files: list[str], root: Path, cohort_dir: Path, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(RECTAL / "configs" / f) for f in files])
    settings = {"bundle_root": str(root), "dataset_dir": str(cohort_dir), "synthetic_cohort": TINY_COHORT,
                "preprocessed_dir": str(root / "preprocessed"), "num_workers": 0, "preprocess_workers": 1,
                **overrides}
    for k, v in settings.items():
        parser[k] = v
    for expr in parser["imports"]:
        parser.get_parsed_content("imports#" + str(parser["imports"].index(expr)))
    return parser


@pytest.mark.parametrize("overlays", [[], ["cpu.json"], ["smoke.json"]], ids=["paper", "cpu", "smoke"])
def test_training_crops_have_image_size_and_hold_the_whole_crop(cohort, overlays, tmp_path):
    import nibabel as nib

    from fairmonai.data.preprocess import read_preprocessing_csv

    parser = _parser(["train.json", *overlays], tmp_path, cohort[0])
    crop, size = list(parser["crop_size"]), list(parser["image_size"])
    if not overlays:
        assert (crop, size) == ([79, 79, 40], [80, 80, 48])  # the paper's crop, padded for 16-voxel patches
    records = parser.get_parsed_content("train#datalist") + parser.get_parsed_content("validate#datalist")
    table = read_preprocessing_csv(tmp_path / "preprocessed").set_index("case_id")
    transform = parser.get_parsed_content("validate#preprocessing")  # = train's deterministic transforms
    low = [(s - c) // 2 for s, c in zip(size, crop)]  # PadToDivisibled's symmetric padding
    for rec in records:
        assert json.loads(table.loc[rec["case_id"], "crop_size"]) == crop
        assert table.loc[rec["case_id"], "fraction_inside"] == 1.0  # the tumour is in its crop
        x = transform(dict(rec))["image"].numpy()
        assert x.shape == (1, *size) and x.dtype == np.float32, rec["case_id"]
        cached = np.asarray(nib.load(rec["image"]).dataobj, dtype=np.float32)
        assert cached.shape == tuple(crop)
        inner = x[0, low[0]:low[0] + crop[0], low[1]:low[1] + crop[1], low[2]:low[2] + crop[2]]
        np.testing.assert_array_equal(inner, cached)  # every voxel of the crop is in the input, in place
        outer = x.copy()
        outer[0, low[0]:low[0] + crop[0], low[1]:low[1] + crop[1], low[2]:low[2] + crop[2]] = 0
        assert not outer.any(), "padding must only add zeros around the crop"
        assert np.count_nonzero(x) == np.count_nonzero(cached)
    # what the network is trained on: the training dataset's items
    item = parser.get_parsed_content("train#dataset")[0]
    assert tuple(item["image"].shape) == (1, *size)


def _error_text(result) -> str:
    err, texts = result.error, []
    while err is not None:
        texts.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(texts)


def _folder_input(cohort, root: Path, with_mask: int):
    """The first three cases' images in ``root/images`` and the first ``with_mask`` masks in ``root/masks``."""
    import pandas as pd

    folder, manifest = cohort
    cases = pd.read_csv(manifest).head(3)
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    for i, row in enumerate(cases.itertuples()):
        (images / Path(row.image).name).symlink_to(folder / row.image)
        if i < with_mask:
            (masks / Path(row.mask).name).symlink_to(folder / row.mask)
    return cases, images, masks


UNTRAINED = ("--load_pretrain", "False", "--num_workers", "0", "--preprocess_workers", "1")


def test_inference_with_a_missing_mask_names_the_case(cohort, tmp_path):
    """A folder of images whose mask is missing from mask_dir, and a manifest whose mask file is missing:
    inference stops before preprocessing any case, naming each such case and the file it looked for."""
    import pandas as pd

    cases, images, masks = _folder_input(cohort, tmp_path, with_mask=1)
    res = run_bundle(RECTAL, tmp_path, ["inference.json"], "--input", str(images), "--mask_dir", str(masks),
                     *UNTRAINED, smoke=False, fails=True)
    text = _error_text(res)
    assert "2 problem(s) in the records, nothing was preprocessed" in text, text[-2000:]
    for case in cases["case_id"][1:]:
        assert f"case '{case}': mask not found: {masks / (case + '.nii.gz')}" in text, text[-2000:]
    assert f"case '{cases['case_id'][0]}'" not in text
    assert not list((tmp_path / "eval" / "preprocessed_inference" / "cases").glob("*"))

    folder, _ = cohort
    table = cases[["case_id", "image", "mask", "sex"]].copy()
    table["image"] = [str(folder / p) for p in table["image"]]
    table["mask"] = [str(folder / p) for p in table["mask"]]
    missing = tmp_path / "nowhere" / "mask.nii.gz"
    table.loc[2, "mask"] = str(missing)
    table.to_csv(tmp_path / "cases.csv", index=False)
    res = run_bundle(RECTAL, tmp_path, ["inference.json"], "--input", str(tmp_path / "cases.csv"), *UNTRAINED,
                     smoke=False, fails=True)
    assert f"case '{table['case_id'][2]}': mask not found: {missing}" in _error_text(res)


def test_fin_inference_without_sex_names_the_cases(cohort, tmp_path):
    """A FIN model needs each case's sex: a folder of images (no sex) stops in initialize, naming the cases."""
    cases, images, masks = _folder_input(cohort, tmp_path, with_mask=3)
    res = run_bundle(RECTAL, tmp_path, ["inference.json", "method_fin.json"], "--input", str(images),
                     "--mask_dir", str(masks), *UNTRAINED, smoke=False, fails=True)
    text = _error_text(res)
    assert "sex_code" in text and all(c in text for c in cases["case_id"]), text[-2000:]
    assert not (tmp_path / "eval" / "preprocessed_inference").exists()  # stopped before any preprocessing


def test_loss_weighted_and_sampler_balanced(cohort, tmp_path):
    """loss_weighted.json: CE weights n / (2 n_c) of the training part, also inside FaMI's loss;
    sampler_balanced.json: each class drawn with equal total weight (1 / n_c per case)."""
    import torch
    from monai.data import DistributedWeightedRandomSampler

    parser = _parser(["train.json", "loss_weighted.json"], tmp_path, cohort[0])
    labels = [r["label"] for r in parser.get_parsed_content("train#datalist")]
    n, n1 = len(labels), sum(labels)
    expected = torch.tensor([n / (2.0 * (n - n1)), n / (2.0 * n1)])
    assert torch.allclose(parser.get_parsed_content("loss").weight.cpu(), expected)
    assert parser.get_parsed_content("loss").weight.device == parser.get_parsed_content("device")
    parser = _parser(["train.json", "method_fami.json", "loss_weighted.json"], tmp_path, cohort[0])
    assert torch.allclose(parser.get_parsed_content("loss").loss.weight.cpu(), expected)
    assert _parser(["train.json"], tmp_path, cohort[0]).get_parsed_content("loss").weight is None

    parser = _parser(["train.json", "sampler_balanced.json"], tmp_path, cohort[0])
    sampler = parser.get_parsed_content("train#sampler")
    assert isinstance(sampler, DistributedWeightedRandomSampler)
    data = parser.get_parsed_content("train#dataset").data
    weights = np.asarray(sampler.weights)
    by_class = [weights[[r["label"] == c for r in data]].sum() for c in (0, 1)]
    assert by_class == pytest.approx([1.0, 1.0]) and len(sampler) == len(data)


def test_crop_size_auto_is_recorded_resolved_and_used_by_inference(cohort, tmp_path):
    """A model trained with crop_size 'auto' records the mean box it resolved to; inference, which has no
    training split, crops every case to that size (read with recorded_value), not to 'auto' or the default."""
    from fairmonai.bundle_run import load_run_record, recorded_value
    from fairmonai.data.preprocess import read_preprocessing_csv

    run_bundle(RECTAL, tmp_path, ["train.json"], "--crop_size", "auto", "--dataset_dir", str(cohort[0]),
               "--synthetic_cohort", json.dumps(TINY_COHORT), "--preprocessed_dir", str(tmp_path / "preprocessed"),
               "--epochs", "1", "--batch_size", "4", "--num_workers", "0", "--preprocess_workers", "1")
    trained = read_preprocessing_csv(tmp_path / "preprocessed")
    sizes = {tuple(json.loads(v)) for v in trained.loc[trained["status"] == "ok", "crop_size"]}
    assert len(sizes) == 1
    resolved = list(sizes.pop())
    ckpt = tmp_path / "models" / "model.pt"
    record = load_run_record(ckpt)
    assert record["model"]["preprocess_settings"]["crop_size"] == "auto"  # the config, as a rerun reproduces it
    assert record["resolved"]["preprocess_settings"]["crop_size"] == resolved != [79, 79, 40]
    assert recorded_value(ckpt, "preprocess_settings")["crop_size"] == resolved

    cases, images, masks = _folder_input(cohort, tmp_path, with_mask=3)
    smoke = json.loads((RECTAL / "configs" / "smoke.json").read_text())
    run_bundle(RECTAL, tmp_path, ["inference.json"], "--input", str(images), "--mask_dir", str(masks),
               "--image_size", json.dumps(smoke["image_size"]), "--num_workers", "0", "--preprocess_workers", "1",
               smoke=False)
    inferred = read_preprocessing_csv(tmp_path / "eval" / "preprocessed_inference")
    assert len(inferred) == 3 and all(json.loads(v) == resolved for v in inferred["crop_size"])
