"""examples/rectal_tumour_signal_probe.py: the features by hand, and the probes on a tiny cached cohort."""

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "rectal_tumour_signal_probe.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("rectal_tumour_signal_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_case_features_by_hand(probe):
    image = np.zeros((4, 4, 4), np.float32)
    image[1:3, 1:3, 1:3] = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]  # the central 2^3 cube holds 1..8
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = 1  # voxels holding 1 and 8
    f = probe.case_features(image, mask, zscore_mean=10.0, zscore_sd=2.0, cube=2)
    assert f["log_volume"] == pytest.approx(np.log(2))
    assert f["tumour_mean"] == pytest.approx(4.5)
    assert f["tumour_sd"] == pytest.approx(3.5)
    assert f["tumour_mean_raw"] == pytest.approx(4.5 * 2 + 10)  # the z-score undone
    assert f["centre_mean"] == pytest.approx(4.5)
    assert f["centre_sd"] == pytest.approx(np.std(np.arange(1, 9)))
    assert (f["crop_mean_raw"], f["crop_sd_raw"]) == (10.0, 2.0)
    with pytest.raises(ValueError, match="empty mask"):
        probe.case_features(image, np.zeros_like(mask), 0.0, 1.0, 2)


def _cohort(folder: Path, n: int = 24) -> Path:
    """Crops whose tumour (centre 2^3) is darker for label 1 and whose mask is the same for all."""
    rng = np.random.default_rng(0)
    rows, table = [], []
    for i in range(n):
        case, label = f"c{i:02d}", i % 2
        image = rng.normal(0.0, 0.1, (6, 6, 6)).astype(np.float32)
        image[2:4, 2:4, 2:4] += -1.0 if label else 1.0
        mask = np.zeros((6, 6, 6), np.uint8)
        mask[2:4, 2:4, 2:4] = 1
        d = folder / "preprocessed" / "cases" / case
        d.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, np.eye(4)), d / "image.nii.gz")
        nib.save(nib.Nifti1Image(mask, np.eye(4)), d / "mask.nii.gz")
        rows.append({"case_id": case, "label": label, "split": "train" if i < 16 else "test"})
        table.append({"case_id": case, "status": "ok", "zscore_mean": 0.5, "zscore_sd": 0.2})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(table).to_csv(folder / "preprocessed" / "preprocessing.csv", index=False)
    return folder


def test_probes_on_a_tiny_cohort(probe, tmp_path):
    out = probe.probe_cohort(_cohort(tmp_path), cube=2, pca=4)
    assert out["cases"] == {"train": 16, "train_pcr": 8, "test": 8, "test_pcr": 4}
    # the tumour's mean separates the labels; its volume and the crop statistics before the z-score do not
    assert out["mask_mean_zscored"] == 1.0 and out["centre_cube"] == 1.0
    assert out["mask_log_volume"] == 0.5 and out["crop_raw_stats"] == 0.5
    assert out["train_cohens_d"]["tumour_mean"] < -10
    assert out["train_cohens_d"]["log_volume"] is None  # constant in both classes: undefined, not NaN


def test_a_case_without_a_cached_crop_is_named(probe, tmp_path):
    folder = _cohort(tmp_path)
    table = pd.read_csv(folder / "preprocessed" / "preprocessing.csv")
    table.loc[3, "status"] = "error"
    table.to_csv(folder / "preprocessed" / "preprocessing.csv", index=False)
    with pytest.raises(ValueError, match="case c03 has no cached crop"):
        probe.probe_cohort(folder)
