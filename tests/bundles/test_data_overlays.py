"""The real-data overlays (``data_harvard_gf.json``, ``data_mama_mia.json``) and the CPU overlays (``cpu.json``).

Each real-data overlay is composed with its bundle's ``train.json`` in-process (``monai.bundle.ConfigParser``,
no training) over a tiny fake release written in a temporary folder in the layout its converter writes
(``data_manifests/<dataset>/README.md``): the manifest is the one under ``dataset_dir``, the data lists
hold the manifest's training fold and validation fold, one case loads with the real reader and has the
shape the pipeline promises, and ``initialize`` logs the cache estimate for those cases.
Each ``cpu.json`` merges with ``train.json`` and only sets ids that train.json defines.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from monai.bundle import ConfigParser

from fairmonai.bundle_run import unknown_overrides
from fairmonai.data import ImageCheckError

ROOT = Path(__file__).resolve().parents[2]
OCT = ROOT / "bundles" / "oct_glaucoma_fami" / "configs"
MAMA = ROOT / "bundles" / "mama_mia_fairmedseg" / "configs"


def parse(files: list[Path], **overrides) -> ConfigParser:
    """The merged configs as ``monai.bundle run`` merges them (files left to right, then overrides)."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    for key, value in overrides.items():
        parser[key] = value
    return parser


# --------------------------------------------------------------------------------------------- OCT
def harvard_release(root: Path) -> Path:
    """Harvard-GF-like ``.npz`` files and the manifest ``python -m fairmonai.data.convert oct_glaucoma`` writes.

    Training: 10 eyes with folds 0-4 (two per fold); Validation + Test -> ``test``. Paths relative to
    the manifest's folder, as the converter writes them when the files lie beneath it.
    """
    rng = np.random.default_rng(0)
    rows = []
    for folder, split, n in (("Training", "train", 10), ("Validation", "test", 2), ("Test", "test", 3)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            stem = f"data_{folder[:2].lower()}{i:02d}"
            np.savez(root / folder / f"{stem}.npz", oct_bscans=rng.integers(0, 255, (20, 18, 16), dtype=np.uint8),
                     rnflt=np.zeros((4, 4), np.float32), glaucoma=np.array(i % 2), race=np.array(i % 3),
                     male=np.array(i % 2), age=np.array(60.0))
            rows.append({"case_id": stem, "image": f"{folder}/{stem}.npz", "label": i % 2,
                         "race": ("Asian", "Black", "White")[i % 3], "age": "60.0",
                         "gender": ("female", "male")[i % 2], "ethnicity": "",
                         "source_file": f"{folder}/{stem}.npz", "split": split,
                         "fold": str(i % 5) if split == "train" else ""})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def test_oct_harvard_gf_overlay(tmp_path, caplog):
    release = tmp_path / "Harvard-GF"
    manifest = harvard_release(release)
    parser = parse([OCT / "train.json", OCT / "data_harvard_gf.json"], bundle_root=str(tmp_path / "run"),
                   dataset_dir=str(release), batch_size=4)  # 8 training eyes: a batch of 64 is refused
    assert parser.get_parsed_content("manifest") == str(manifest)
    train, val = parser.get_parsed_content("train#datalist"), parser.get_parsed_content("validate#datalist")
    # fold 0 = eyes 0 and 5 validate, the other 8 training eyes train; the test split is in neither
    assert sorted(r["case_id"] for r in val) == ["data_tr00", "data_tr05"]
    assert len(train) == 8 and not {r["case_id"] for r in train} & {"data_va00", "data_te00"}
    # the reader reads the B-scan volume of the .npz (not another key), unchanged
    load = parser.get_parsed_content("train#deterministic_transforms")[0]
    raw = load(dict(val[0]))["image"]
    assert tuple(raw.shape) == (20, 18, 16)
    assert np.array_equal(np.asarray(raw), np.load(release / "Training" / "data_tr00.npz")["oct_bscans"])

    caplog.set_level(logging.INFO, logger="fairmonai.data.memory")
    parser.get_parsed_content("initialize")
    # 10 cases x 1 x 96^3 float32 = 10 x 884,736 x 4 bytes = 35,389,440 bytes
    assert "caching 10 cases x 1x96x96x96 float32 at cache_rate 1.0: about 35.4 MB resident" in caplog.text

    dataset = parser.get_parsed_content("train#dataset")
    assert len(dataset) == 8
    item = dataset[0]
    assert tuple(item["image"].shape) == (1, 96, 96, 96) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) == 0.0 and float(item["image"].max()) == 1.0  # min-max scaling


def _image_check_error(parser: ConfigParser, id: str) -> ImageCheckError:
    """The header check's error that parsing ``id`` raises (MONAI wraps it in a RuntimeError)."""
    with pytest.raises(RuntimeError) as e:
        parser.get_parsed_content(id)
    assert isinstance(e.value.__cause__, ImageCheckError), repr(e.value.__cause__)
    return e.value.__cause__


def test_oct_harvard_gf_overlay_checks_the_npz_headers(tmp_path):
    """Both data lists are the header-checked ones, on the overlay's array (``npz_key``): a training eye
    whose ``oct_bscans`` is 2-D and a validation eye without ``oct_bscans`` are refused by name."""
    release = tmp_path / "Harvard-GF"
    harvard_release(release)
    flat, keyless = release / "Training" / "data_tr03.npz", release / "Training" / "data_tr05.npz"
    np.savez(flat, oct_bscans=np.zeros((20, 18), np.uint8), rnflt=np.zeros((4, 4), np.float32))
    np.savez(keyless, rnflt=np.zeros((4, 4), np.float32), glaucoma=np.array(1))
    parser = parse([OCT / "train.json", OCT / "data_harvard_gf.json"], bundle_root=str(tmp_path / "run"),
                   dataset_dir=str(release))
    assert str(_image_check_error(parser, "train#datalist")).splitlines() == [
        "image check: 1 of 8 cases have bad image files (3-D expected):",
        f"  case 'data_tr03', image {flat}: 2-D image of shape (20, 18), 3-D expected",
    ]
    assert str(_image_check_error(parser, "validate#datalist")).splitlines() == [
        "image check: 1 of 2 cases have bad image files (3-D expected):",
        f"  case 'data_tr05', image {keyless}: the .npz has no array 'oct_bscans'; its arrays are ['rnflt', 'glaucoma']",
    ]


def test_oct_harvard_gf_overlay_with_evaluate_keeps_the_recorded_manifest():
    """evaluate.json after the data overlay reads the manifest the model was trained on."""
    parser = parse([OCT / "train.json", OCT / "data_harvard_gf.json", OCT / "evaluate.json"])
    assert parser["manifest"] == "$fairmonai.bundle_run.recorded_manifest(@ckpt_path)"
    assert parser.get_parsed_content("image_reader").npz_keys == ("oct_bscans",)
    assert "npz_key=@npz_key" in parser["validate#datalist"]


def test_oct_harvard_gf_overlay_with_inference_reads_a_folder_of_npz(tmp_path):
    """inference.json + the data overlay: the ``.npz`` files of a folder, header-checked on ``oct_bscans``
    and read with the training reader (2 files -> 2 rows; other files ignored)."""
    folder = tmp_path / "eyes"
    folder.mkdir()
    rng = np.random.default_rng(1)
    volumes = {}
    for stem in ("data_b", "data_a"):
        volumes[stem] = rng.integers(0, 255, (20, 18, 16), dtype=np.uint8)
        np.savez(folder / f"{stem}.npz", oct_bscans=volumes[stem], rnflt=np.zeros((4, 4), np.float32))
    (folder / "notes.txt").write_text("not an eye")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overlay merges into inference.json without MONAI's merge warnings
        parser = parse([OCT / "inference.json", OCT / "data_harvard_gf.json"], input=str(folder))
    datalist = parser.get_parsed_content("datalist")
    assert datalist == [{"case_id": "data_a", "image": str((folder / "data_a.npz").resolve())},
                        {"case_id": "data_b", "image": str((folder / "data_b.npz").resolve())}]
    preprocessing = parser.get_parsed_content("preprocessing")
    raw = preprocessing.transforms[0](dict(datalist[0]))["image"]
    assert tuple(raw.shape) == (20, 18, 16) and np.array_equal(np.asarray(raw), volumes["data_a"])
    item = preprocessing(dict(datalist[1]))
    assert tuple(item["image"].shape) == (1, 96, 96, 96) and item["image"].dtype == torch.float32
    # a 2-D B-scan array among them is refused before anything runs
    np.savez(folder / "data_c.npz", oct_bscans=np.zeros((20, 18), np.uint8))
    parser = parse([OCT / "inference.json", OCT / "data_harvard_gf.json"], input=str(folder))
    assert str(_image_check_error(parser, "datalist")).splitlines()[1:] == [
        f"  case 'data_c', image {(folder / 'data_c.npz').resolve()}: 2-D image of shape (20, 18), 3-D expected"]


# -------------------------------------------------------------------------------------------- MAMA
def mama_release(root: Path, shape=(24, 20, 12), spacing=2.0) -> Path:
    """MAMA-MIA-like NIfTI files (three phases, expert mask) in the release's layout, and the manifest
    ``python -m fairmonai.data.convert mama_mia ... --official-test-as val`` writes: 6 train (folds 0-2),
    2 val (the official test cases), paths relative to the manifest's folder."""
    rng = np.random.default_rng(0)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    rows = []
    for i in range(8):
        pid = f"DUKE_{i:03d}"
        lower = pid.lower()
        (root / "images" / pid).mkdir(parents=True)
        (root / "segmentations" / "expert").mkdir(parents=True, exist_ok=True)
        for phase in range(3):
            data = rng.normal(100 + 10 * phase, 5, shape).astype(np.float32)
            nib.save(nib.Nifti1Image(data, affine), root / "images" / pid / f"{lower}_{phase:04d}.nii.gz")
        mask = np.zeros(shape, np.uint8)
        mask[8:14, 8:12, 4:8] = 1
        nib.save(nib.Nifti1Image(mask, affine), root / "segmentations" / "expert" / f"{lower}.nii.gz")
        split = "train" if i < 6 else "val"
        rows.append({"case_id": pid, "image_pre": f"images/{pid}/{lower}_0000.nii.gz",
                     "image_post1": f"images/{pid}/{lower}_0001.nii.gz",
                     "image_post2": f"images/{pid}/{lower}_0002.nii.gz",
                     "label": f"segmentations/expert/{lower}.nii.gz",
                     "age_group": ["41-50", "51-60", ""][i % 3], "menopausal_status": ["pre", "post", "unknown"][i % 3],
                     "breast_density": ["", "c"][i % 2], "age": ["45", "55", ""][i % 3],
                     "bbox_x_min": "", "bbox_x_max": "", "bbox_y_min": "", "bbox_y_max": "", "bbox_z_min": "",
                     "bbox_z_max": "", "dataset": "DUKE", "pcr": "", "ethnicity": "",
                     "split": split, "fold": str(i % 3) if split == "train" else ""})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def test_mama_mia_overlay(tmp_path, caplog):
    release = tmp_path / "MAMA-MIA"
    manifest = mama_release(release)
    parser = parse([MAMA / "train.json", MAMA / "data_mama_mia.json"], bundle_root=str(tmp_path / "run"),
                   dataset_dir=str(release), roi_size=[32, 32, 16])
    assert parser.get_parsed_content("manifest") == str(manifest)
    train, val = parser.get_parsed_content("train#datalist"), parser.get_parsed_content("validate#datalist")
    # --official-test-as val: the manifest's val rows validate; the training part is all 6 train rows
    assert [r["case_id"] for r in val] == ["DUKE_006", "DUKE_007"]
    assert len(train) == 6

    # load, orientation RAS, spacing 1 mm: 24x20x12 voxels of 2 mm cover 46x38x22 mm between the first
    # and last voxel centres, so 47x39x23 voxels of 1 mm; the three phases are the three channels
    steps = parser.get_parsed_content("train#deterministic_transforms")[:5]
    case = dict(val[0])
    for t in steps:
        case = t(case)
    assert tuple(case["image"].shape) == (3, 47, 39, 23) and tuple(case["label"].shape) == (1, 47, 39, 23)
    assert np.allclose(case["image"].pixdim, [1.0, 1.0, 1.0])

    caplog.set_level(logging.INFO, logger="fairmonai.data.memory")
    parser.get_parsed_content("initialize")
    # the overlay caches nothing (cache_rate 0): at the paper's 320x320x128 one case is 4 x 13.1 M voxels x 4 B = 210 MB
    assert "caching 8 cases x 4x32x32x16 float32 at cache_rate 0.0: about 0 B resident" in caplog.text

    dataset = parser.get_parsed_content("train#dataset")
    assert len(dataset) == 6
    item = dataset[0]
    assert tuple(item["image"].shape) == (3, 32, 32, 16) and tuple(item["label"].shape) == (1, 32, 32, 16)


# -------------------------------------------------------------------------------------------- cpu.json
@pytest.mark.parametrize("configs", [OCT, MAMA], ids=["oct", "mama"])
def test_cpu_overlay_sets_only_known_ids(configs):
    base = ConfigParser.load_config_files([str(configs / "train.json")])
    cpu = json.loads((configs / "cpu.json").read_text())
    assert cpu and unknown_overrides(base, cpu) == {}
    merged = parse([configs / "train.json", configs / "cpu.json"])
    for key, value in cpu.items():
        assert merged[key] == value
