"""Bad inputs stop a bundle run with exit status 1, a last line naming the case and the file, and no output.

End to end: ``python -m monai.bundle run`` (train.json + smoke.json) on a copy of the synthetic smoke
cohort with one file or one manifest cell corrupted, one run per kind of input. Two runs are the real
command in a subprocess, for its exit status and last stderr line (the header check, and the cache fill
in a thread pool); the others run it in this process (tests/bundles/harness.py) and check the line
:func:`fairmonai.errors.input_error_line` gives, the one the command prints last. The
cohort is built once per bundle (module-scoped fixture); every run stops before training starts, at
the data lists' header check (:func:`fairmonai.data.check_images`) or at the manifest, or, for a file
whose damage only a full read finds, when the training cache is filled
(:class:`fairmonai.transforms.LoadCaseImaged` in CacheDataset's thread pool, the run that used to end
in SIGABRT). A last test runs an evaluator in process to check that an evaluation stopped by an
unreadable case leaves none of the segmentations it had written.
"""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from harness import ROOT, run_bundle, run_bundle_cli

OCT = ROOT / "bundles" / "oct_glaucoma_fami"
MAMA = ROOT / "bundles" / "mama_mia_fairmedseg"


def _smoke_cohort(bundle: Path, root: Path) -> Path:
    """Build the smoke run's synthetic cohort under ``root`` as the bundle would; return its manifest."""
    from monai.bundle import ConfigParser

    from fairmonai.data.cohort_cache import ensure_cohort

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(bundle / "configs" / "smoke.json")])
    parser["bundle_root"] = str(root)
    return Path(ensure_cohort(parser["schema"], parser.get_parsed_content("dataset_dir"), seed=parser["seed"],
                              **parser.get_parsed_content("synthetic_cohort")))


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """One smoke cohort per bundle: {bundle: (bundle_root holding it, manifest path relative to it)}."""
    out = {}
    for bundle in (OCT, MAMA):
        root = tmp_path_factory.mktemp(f"cohort_{bundle.name}")
        out[bundle] = (root, _smoke_cohort(bundle, root).relative_to(root))
    return out


def _copy(cohorts, bundle, tmp_path):
    """A fresh bundle root holding a copy of the cohort; its manifest as a table; the first training case."""
    src, rel = cohorts[bundle]
    root = tmp_path / "root"
    shutil.copytree(src, root)
    manifest = root / rel
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    i = int(table.index[(table["split"] == "train") & (table["fold"] != "0")][0])  # in the 'train' data list
    return root, manifest, table, i


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run_train(bundle: Path, root: Path, cli: bool = False) -> str:
    """The smoke training run, which must fail leaving ``root`` as it was; the last line it prints (with
    ``cli``, the subprocess's last non-empty stderr line and exit status 1; otherwise, in process, the
    line :func:`fairmonai.errors.input_error_line` gives for its exception)."""
    from fairmonai.errors import input_error_line

    before = _files(root)
    if cli:
        res = run_bundle_cli(bundle, root, ["train.json"], timeout=600)
        assert res.returncode == 1, f"exit {res.returncode}\n{res.stderr[-3000:]}"  # 134 was SIGABRT
        assert "terminate called" not in res.stderr
        last = [ln for ln in res.stderr.splitlines() if ln.strip()][-1]
    else:
        res = run_bundle(bundle, root, ["train.json"], fails=True)
        line = input_error_line(res.error)
        assert line is not None, f"not an input error: {res.error!r}"
        last = line.splitlines()[-1]
    assert _files(root) == before, f"the run left {sorted(_files(root) - before)}"
    return last


def _truncate(path: Path, keep_trailer: bool = False) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + (data[-8:] if keep_trailer else b""))


def _save_2d(path: Path) -> None:
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine), path)


def test_oct_truncated_nifti(cohorts, tmp_path):
    root, manifest, table, i = _copy(cohorts, OCT, tmp_path)
    path = manifest.parent / table["image"][i]
    _truncate(path)
    last = _run_train(OCT, root, cli=True)
    assert last.startswith(f"  case '{table['case_id'][i]}', image {path}: the file is truncated: it decompresses to ")
    assert last.endswith(" bytes, its header announces 131424")  # 352 + 32**3 float32


def test_oct_random_bytes(cohorts, tmp_path):
    root, manifest, table, i = _copy(cohorts, OCT, tmp_path)
    path = manifest.parent / table["image"][i]
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    last = _run_train(OCT, root)
    assert last == (f"  case '{table['case_id'][i]}', image {path}: cannot read the image header "
                    "(ImageFileError: File <file> is not a gzip file)")


def test_oct_2d_image(cohorts, tmp_path):
    root, manifest, table, i = _copy(cohorts, OCT, tmp_path)
    path = manifest.parent / table["image"][i]
    _save_2d(path)
    last = _run_train(OCT, root)
    assert last == f"  case '{table['case_id'][i]}', image {path}: 2-D image of shape (32, 32), 3-D expected"


def test_oct_bad_manifest_value(cohorts, tmp_path):
    root, manifest, table, i = _copy(cohorts, OCT, tmp_path)
    table.loc[i, "race"] = "Martian"
    table.to_csv(manifest, index=False)
    last = _run_train(OCT, root)
    assert last == (f"ManifestError: {manifest}, row {i + 2}, column 'race': value 'Martian' is not one of the "
                    "declared categories ['Asian', 'Black', 'White']")


def test_mama_mia_mask_of_another_shape(cohorts, tmp_path):
    root, manifest, table, i = _copy(cohorts, MAMA, tmp_path)
    path = manifest.parent / table["label"][i]
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-2], img.affine), path)
    last = _run_train(MAMA, root)
    pre = manifest.parent / table["image_pre"][i]
    assert last == (f"  case '{table['case_id'][i]}', label {path}: shape (30, 32, 16) differs from image_pre's "
                    f"(32, 32, 16) ({pre})")


def test_mama_mia_2d_phase(cohorts, tmp_path):
    root, manifest, table, i = _copy(cohorts, MAMA, tmp_path)
    path = manifest.parent / table["image_post1"][i]
    _save_2d(path)
    last = _run_train(MAMA, root)
    assert last == f"  case '{table['case_id'][i]}', image_post1 {path}: 2-D image of shape (32, 32), 3-D expected"


def test_mama_mia_damage_only_a_full_read_finds(cohorts, tmp_path):
    """Cut in half but with the gzip trailer kept: the header and the trailer read fine, the data do not."""
    root, manifest, table, i = _copy(cohorts, MAMA, tmp_path)
    path = manifest.parent / table["image_post1"][i]
    _truncate(path, keep_trailer=True)
    last = _run_train(MAMA, root, cli=True)
    assert last == (f"ImageReadError: case '{table['case_id'][i]}', image {path}: cannot read the image "
                    "(EOFError: Compressed file ended before the end-of-stream marker was reached)")


def test_evaluation_stopped_by_a_bad_case_leaves_no_segmentation(tmp_path):
    """SaveImaged writes case a's mask, case b cannot be read: the writer deletes a's mask and its folder."""
    from ignite.engine import Events
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.transforms import Compose, EnsureChannelFirstd, SaveImaged

    from fairmonai.data import ImageReadError
    from fairmonai.handlers import SegmentationScoresWriter
    from fairmonai.transforms import LoadCaseImaged

    data = []
    for cid in ("a", "b"):
        path = tmp_path / f"{cid}.nii.gz"
        nib.save(nib.Nifti1Image((np.random.default_rng(0).random((16, 16, 8)) > 0.5).astype(np.float32),
                                 np.eye(4)), path)
        data.append({"case_id": cid, "image": str(path), "label": str(path), "age_group": "41-50",
                     "age_group_code": 1})
    _truncate(tmp_path / "b.nii.gz")
    seg_dir = tmp_path / "eval" / "segmentations_test"
    pre = Compose([LoadCaseImaged(["image", "label"], image_only=True), EnsureChannelFirstd(["image", "label"],
                                                                                           channel_dim="no_channel")])
    post = SaveImaged("pred", output_dir=seg_dir, output_postfix="seg", separate_folder=False, resample=False,
                      print_log=False, savepath_in_metadict=True)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), network=torch.nn.Identity(), postprocessing=post,
                                    val_data_loader=DataLoader(Dataset(data, pre), batch_size=1))
    writer = SegmentationScoresWriter(tmp_path / "eval", attributes=["age_group"])
    writer.attach(evaluator)
    seen = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.extend(sorted(os.listdir(seg_dir))))
    with pytest.raises(RuntimeError) as e:
        evaluator.run()
    assert seen == ["a_seg.nii.gz"]  # written for case a before case b failed
    from fairmonai.errors import find_input_error

    assert isinstance(find_input_error(e.value), ImageReadError)
    assert find_input_error(e.value).case_id == "b"
    del e, evaluator, writer
    gc.collect()
    assert not seg_dir.exists() and not (tmp_path / "eval" / "scores.csv").exists()


def test_training_part_smaller_than_one_batch_is_refused(cohorts, tmp_path):
    """With drop_last, a training part smaller than one batch would run no step and finish without a model
    (MONAI only warns): it stops before training, naming the counts and the largest batch size that works."""
    root, manifest, table, _ = _copy(cohorts, OCT, tmp_path)
    n = int(((table["split"] == "train") & (table["fold"] != "0")).sum())
    before = _files(root)
    res = run_bundle(OCT, root, ["train.json"], "--batch_size", str(n + 1), fails=True)
    from fairmonai.errors import input_error_line

    assert (f"the training part has {n} cases, fewer than one batch of {n + 1}; the loader drops an incomplete batch "
            f"(drop_last), so no training step would run and no model would be written: pass --batch_size {n} or less"
            ) in input_error_line(res.error)
    assert _files(root) == before  # stopped before anything was written


def test_check_training_batches_per_process(monkeypatch):
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from fairmonai.bundle_run import BundleRunError, check_training_batches

    check_training_batches(DataLoader(list(range(8)), batch_size=8, drop_last=True), 8)  # exactly one batch
    check_training_batches(DataLoader(list(range(3)), batch_size=8), 3)  # one incomplete batch, kept
    with pytest.raises(BundleRunError, match="has no cases"):
        check_training_batches(DataLoader([], batch_size=8), 0)
    with pytest.raises(BundleRunError, match=r"has 7 cases, fewer than one batch of 8; .* --batch_size 7 or less"):
        check_training_batches(DataLoader(list(range(7)), batch_size=8, drop_last=True), 7)
    sampler = torch.utils.data.BatchSampler(list(range(5)), batch_size=8, drop_last=True)  # a custom batch sampler
    with pytest.raises(BundleRunError, match="the training loader yields no batch from 5 cases"):
        check_training_batches(DataLoader(list(range(5)), batch_sampler=sampler), 5)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    with pytest.raises(BundleRunError, match=r"has 15 cases \(8 per process over 2\), fewer than one batch of 10"):
        check_training_batches(DataLoader([], batch_size=10, drop_last=True), 15)  # the per-process part is empty
