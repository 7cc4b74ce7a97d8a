"""The OCT bundle's intensity scaling: min-max to [0, 1] for DenseNet, z-score for the ViT overlay.

The value comes from one config id, ``intensity_scaling``, that the training, validation and
inference pipelines all use, so an overlay that changes it changes every pipeline of the run (a
model evaluated or deployed with another scaling than it was trained with gives wrong numbers
without any error).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "oct_glaucoma_fami" / "configs"
SHAPE = (8, 6, 10)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A volume with a non-zero mean and an uneven range, saved as NIfTI; returns (path, array)."""
    rng = np.random.default_rng(3)
    x = (0.4 + 0.3 * rng.standard_normal(SHAPE)).astype(np.float32)
    x[0, 0, 0] = 2.5  # an outlier that sets the maximum
    path = tmp_path_factory.mktemp("oct") / "eye.nii.gz"
    nib.save(nib.Nifti1Image(x, np.eye(4)), str(path))
    return path, x


def _pipelines(files: list[str]) -> dict:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    parser["image_size"] = list(SHAPE)  # same size: the resize is the identity, only the scaling acts
    parser["bundle_root"] = "."
    if "inference.json" in files:
        return {"inference": parser.get_parsed_content("preprocessing")}
    return {"train": parser.get_parsed_content("train#preprocessing"),
            "validate": parser.get_parsed_content("validate#preprocessing")}


def _apply(transform, path: Path) -> np.ndarray:
    out = transform({"image": str(path)})["image"]
    assert tuple(out.shape) == (1, *SHAPE)
    return np.asarray(out[0], dtype=np.float64)


@pytest.mark.parametrize("files", [["train.json"], ["inference.json"]], ids=["train", "inference"])
def test_densenet_default_is_min_max(volume, files):
    path, x = volume
    expected = (x - x.min()) / (x.max() - x.min())
    for name, t in _pipelines(files).items():
        got = _apply(t, path)
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=name)
        assert got.min() == pytest.approx(0.0, abs=1e-7) and got.max() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("files", [["train.json", "net_vit.json"], ["train.json", "net_vit.json", "evaluate.json"],
                                   ["inference.json", "net_vit.json"]], ids=["train", "evaluate", "inference"])
def test_vit_overlay_z_scores_every_pipeline(volume, files):
    path, x = volume
    expected = (x.astype(np.float64) - x.mean()) / x.std()  # population std (ddof 0), as NormalizeIntensity
    for name, t in _pipelines(files).items():
        got = _apply(t, path)
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)
        assert got.mean() == pytest.approx(0.0, abs=1e-6) and got.std() == pytest.approx(1.0, abs=1e-5)
