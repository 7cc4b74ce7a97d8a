"""SegmentationScoresWriter: per-case DSC / HD95 / NormHD of a MONAI evaluator to a CSV, and its report."""

import json
import logging
import math
import os
import tempfile

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.transforms import LoadImaged
from scipy import ndimage

from fairmonai.handlers import SegmentationScoresWriter
from fairmonai.reports import write_report

N = 8
FACE = ndimage.generate_binary_structure(3, 1)


def _mask(*boxes):
    m = torch.zeros(1, N, N, N)
    for box in boxes:
        m[(0, *[slice(a, b) for a, b in box])] = 1
    return m


# (case id, prediction, label, age group, age code, menopause)
CASES = [
    ("c1", _mask(((2, 4), (2, 4), (2, 4))), _mask(((2, 4), (2, 4), (2, 5))), "0-40", 0, "pre"),  # 8 vs 12
    ("c2", _mask(((2, 4), (2, 4), (2, 4))), _mask(((3, 5), (2, 4), (2, 4))), "41-50", 1, "post"),  # shifted
    ("c3", _mask(((2, 3), (2, 3), (2, 3))), _mask(((2, 3), (2, 3), (5, 6))), "0-40", 0, "post"),  # 3 apart
    ("c4", _mask(), _mask(((1, 6), (1, 3), (4, 7))), "unknown", -1, "pre"),  # empty prediction
    ("c5", _mask(((1, 5), (2, 6), (1, 4))), _mask(((1, 5), (2, 6), (1, 4))), "41-50", 1, "unknown"),  # equal
]

# hand-computed: DSC = 2|A n B| / (|A| + |B|); HD95 for the simple cases
HAND = {
    "c1": {"dice": 2 * 8 / (8 + 12)},
    "c2": {"dice": 2 * 4 / (8 + 8), "hd95": 1.0},  # 4 voxels at distance 0 and 4 at 1, both ways
    "c3": {"dice": 0.0, "hd95": 3.0},  # one voxel each, 3 apart
    "c4": {"dice": 0.0, "hd95": math.inf, "normhd": 1.0},
    "c5": {"dice": 1.0, "hd95": 0.0, "normhd": 0.0},
}


def _records(cases=CASES):
    return [{"case_id": c, "image": p, "label": y, "age_group": a, "age_group_code": code,
             "menopausal_status": m, "menopausal_status_code": ["pre", "post", "unknown"].index(m)}
            for c, p, y, a, code, m in cases]


def _run(records, writer, *, decollate=True, batch_size=2, postprocessing=None):
    """The network is the identity: the 'image' of each record is its prediction."""
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(records, batch_size=batch_size),
        network=torch.nn.Identity(), decollate=decollate, postprocessing=postprocessing,
    )
    writer.attach(evaluator)
    evaluator.run()
    return evaluator


def _read(path):
    return pd.read_csv(path, keep_default_na=False, dtype={"case_id": str, "age_group": str,
                                                           "menopausal_status": str})


def _np_dice(p, y):
    p, y = np.asarray(p, bool), np.asarray(y, bool)
    s = p.sum() + y.sum()
    return 0.0 if s == 0 else 2.0 * np.logical_and(p, y).sum() / s


def _scipy_hd95(p, y, outside=1):
    """Symmetric 95th-percentile distance between the face-connected contours (the challenge's rule:
    ``sitk.LabelContour``, where the image border is no contour; no contour on one side only: inf).
    ``outside=0`` makes the outside of the image background, as MONAI's edges."""
    p, y = np.asarray(p[0], bool), np.asarray(y[0], bool)
    ep = p & ~ndimage.binary_erosion(p, FACE, border_value=outside)
    ey = y & ~ndimage.binary_erosion(y, FACE, border_value=outside)
    if not ep.any() and not ey.any():
        return 0.0
    if not ep.any() or not ey.any():
        return math.inf
    d_py = ndimage.distance_transform_edt(~ey)[ep]
    d_yp = ndimage.distance_transform_edt(~ep)[ey]
    return max(np.percentile(d_py, 95), np.percentile(d_yp, 95))


@pytest.mark.parametrize("decollate", [True, False])
def test_scores_equal_hand_and_numpy(tmp_path, decollate):
    writer = SegmentationScoresWriter(tmp_path, attributes=["age_group", "menopausal_status"])
    ev = _run(_records(), writer, decollate=decollate)
    path = tmp_path / "scores.csv"
    assert ev.state.scores_file == str(path)
    got = _read(path)
    assert list(got.columns) == ["case_id", "dice", "hd95", "normhd", "pred_voxels", "label_voxels",
                                 "age_group", "menopausal_status"]
    assert got["case_id"].tolist() == ["c1", "c2", "c3", "c4", "c5"]
    got = got.set_index("case_id")
    for cid, p, y, age, code, meno in CASES:
        row = got.loc[cid]
        assert float(row["dice"]) == pytest.approx(HAND[cid]["dice"], rel=1e-6, abs=1e-7)
        assert float(row["dice"]) == pytest.approx(_np_dice(p, y), rel=1e-6, abs=1e-7)
        hd = float(row["hd95"])
        assert hd == pytest.approx(_scipy_hd95(p, y), abs=1e-5)
        if "hd95" in HAND[cid]:
            assert hd == pytest.approx(HAND[cid]["hd95"], abs=1e-6)
        normhd = 1.0 if math.isinf(hd) else min(hd / 150.0, 1.0)
        assert float(row["normhd"]) == pytest.approx(HAND[cid].get("normhd", normhd), abs=1e-7)
        assert int(row["pred_voxels"]) == int(p.sum()) and int(row["label_voxels"]) == int(y.sum())
        assert row["age_group"] == ("unknown" if code == -1 else age)  # excluded: EXCLUDED_VALUE
        assert row["menopausal_status"] == meno  # "unknown" is a group of menopausal status (code 2)
    # HD95 infinity written as "inf"
    assert (path.read_text().splitlines()[4]).startswith("c4,0.0,inf,1.0,0,30,unknown,pre")
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_round_trip_and_challenge_ps(tmp_path):
    writer = SegmentationScoresWriter(tmp_path, "scores_{epoch}.csv", ["age_group", "menopausal_status"],
                                      report=True, schema="mama_mia", report_kwargs={"title": "MAMA test"})
    ev = _run(_records(), writer)
    path, out = tmp_path / "scores_1.csv", tmp_path / "report"
    assert ev.state.scores_file == str(path) and ev.state.scores_report == str(out)
    df = _read(path)
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "segmentation" and report["n_cases"] == 5
    assert report["mean_dsc"] == pytest.approx(df["dice"].astype(float).mean(), abs=1e-12)
    # NormHD from the written HD95, as the challenge: min(HD95 / 150, 1), inf -> 1
    hd = df["hd95"].astype(float).to_numpy()
    normhd = np.where(np.isinf(hd), 1.0, np.minimum(hd / 150.0, 1.0))
    assert report["mean_normhd"] == pytest.approx(normhd.mean(), abs=1e-7)
    ps = 0.5 * (df["dice"].astype(float).mean() + 1.0 - normhd.mean())
    assert report["performance_score"] == pytest.approx(ps, abs=1e-7)
    # group means and the excluded case (c4, age code -1)
    age = report["variables"]["age_group"]
    assert age["groups"] == ["0-40", "41-50", "51-60", "61-70", "71+"] and age["n_excluded"] == 1
    assert age["counts"][:2] == [2, 2]
    assert age["mean_dsc"][0] == pytest.approx(df.loc[df["age_group"] == "0-40", "dice"].astype(float).mean())
    assert (out / "report.md").read_text().startswith("# MAMA test")
    assert (out / "heatmap_age_group_x_menopausal_status.png").is_file()

    # a file with HD95 only (no normhd column): the report reads "inf" and gives the same scores
    hd_only = tmp_path / "hd_only.csv"
    _read(path).drop(columns=["normhd"]).to_csv(hd_only, index=False)
    assert ",inf," in hd_only.read_text()
    write_report(hd_only, tmp_path / "report_hd", attributes=["age_group", "menopausal_status"], schema="mama_mia")
    report_hd = json.loads((tmp_path / "report_hd" / "report.json").read_text())
    for k in ("mean_dsc", "mean_normhd", "performance_score", "fairness_score", "total_score"):
        assert report_hd[k] == pytest.approx(report[k], abs=1e-7)


def test_original_grid_label_loaded_in_postprocessing(tmp_path):
    """The bundle's pattern: the label re-loaded from its file into 'label_original' by the postprocessing."""
    recs = []
    for cid, p, y, *_ in CASES[:3]:
        f = tmp_path / f"{cid}.nii.gz"
        nib.save(nib.Nifti1Image(y[0].numpy().astype(np.uint8), np.eye(4)), str(f))
        # the preprocessed label is on another grid (here: cropped); it must not be used
        recs.append({"case_id": cid, "image": p, "label": y[:, :6], "label_original": str(f)})
    post = LoadImaged(keys="label_original", ensure_channel_first=True, image_only=True)
    _run(recs, SegmentationScoresWriter(tmp_path, label_key="label_original"), batch_size=1, postprocessing=post)
    got = _read(tmp_path / "scores.csv").set_index("case_id")
    for cid, p, y, *_ in CASES[:3]:
        assert float(got.loc[cid, "dice"]) == pytest.approx(_np_dice(p, y), rel=1e-6)
    # the preprocessed label has another shape: refused, with the way out
    with pytest.raises(ValueError) as e:
        _run(recs, SegmentationScoresWriter(tmp_path), batch_size=1)
    assert str(e.value) == (
        "SegmentationScoresWriter: case 'c1': 'pred' has shape (1, 8, 8, 8) but 'label' has shape (1, 6, 8, 8); "
        "scores are computed on the original image grid, so invert the preprocessing of the prediction first "
        "(Invertd in the evaluator's postprocessing) and compare it with the label as loaded from its file"
    )


def test_missing_label_is_an_error(tmp_path):
    recs = _records()
    with pytest.raises(ValueError) as e:
        _run(recs, SegmentationScoresWriter(tmp_path, label_key="label_original"))
    assert str(e.value).startswith(
        "SegmentationScoresWriter: case 'c1' has no 'label_original' in the batch or the output (keys: ['case_id', ")
    assert str(e.value).endswith(
        "the writer scores predictions against reference masks, so it needs labels and cannot be used at inference")
    unlabeled = [{k: v for k, v in r.items() if k != "label"} for r in recs]
    with pytest.raises(ValueError, match="case 'c1' has no 'label' in the batch or the output"):
        _run(unlabeled, SegmentationScoresWriter(tmp_path))
    with pytest.raises(ValueError) as e:
        SegmentationScoresWriter(tmp_path, label_key=None, attributes=["age_group"], report=True)
    assert str(e.value) == (
        "SegmentationScoresWriter: label_key is None (inference: no reference masks), so there are no scores to "
        "report; set report=False")


def test_inference_mode_writes_voxel_counts_and_files(tmp_path):
    recs = _records()
    unlabeled = [{k: v for k, v in r.items() if k != "label"} for r in recs]

    def mark_saved(d):  # what SaveImaged leaves in the prediction's metadata
        d = dict(d)
        d["pred"] = MetaTensor(torch.as_tensor(d["pred"]), meta={"saved_to": f"/out/{d['case_id']}_seg.nii.gz"})
        return d

    _run(unlabeled, SegmentationScoresWriter(tmp_path, "inf.csv", label_key=None), postprocessing=mark_saved)
    df = pd.read_csv(tmp_path / "inf.csv")
    assert list(df.columns) == ["case_id", "pred_voxels", "segmentation_file"]
    expected = {r["case_id"]: int(torch.as_tensor(r["image"]).count_nonzero()) for r in recs}
    assert dict(zip(df["case_id"], df["pred_voxels"])) == expected
    assert df["segmentation_file"].tolist() == [f"/out/{c}_seg.nii.gz" for c in df["case_id"]]


def test_bad_masks_are_errors(tmp_path):
    recs = _records()
    soft = [dict(recs[0], image=recs[0]["image"] * 0.5)]
    with pytest.raises(ValueError) as e:
        _run(soft, SegmentationScoresWriter(tmp_path))
    assert str(e.value) == (
        "SegmentationScoresWriter: case 'c1': pred must be binary (values 0 and 1 only), found 0.5. Binarise the "
        "prediction in the evaluator's postprocessing (AsDiscreted(argmax=True) or AsDiscreted(threshold=0.5); "
        "Invertd with nearest interpolation)."
    )
    two_channel = [dict(recs[1], image=torch.cat([1 - recs[1]["image"], recs[1]["image"]]))]
    with pytest.raises(ValueError) as e:
        _run(two_channel, SegmentationScoresWriter(tmp_path))
    assert str(e.value).startswith(
        "SegmentationScoresWriter: 'pred' of case 'c2' must be a channel-first binary mask with one channel, "
        "(1, X, Y, Z) or (1, X, Y), got shape (2, 8, 8, 8); turn a prediction into one with AsDiscreted(argmax=True)")


def test_attributes_and_options(tmp_path):
    with pytest.raises(ValueError, match=r"SegmentationScoresWriter: attribute 'breast_density' is not in the batch "
                                         r"of case 'c1' \(keys read: \["):
        _run(_records(), SegmentationScoresWriter(tmp_path, attributes=["breast_density"]))
    with pytest.raises(ValueError, match="report=True needs the attributes to report on"):
        SegmentationScoresWriter(tmp_path, report=True)
    with pytest.raises(ValueError, match="named more than once"):
        SegmentationScoresWriter(tmp_path, attributes=["age_group", "age_group"])
    with pytest.raises(ValueError, match=r"attribute name\(s\) \['dice'\] clash with the file's columns"):
        SegmentationScoresWriter(tmp_path, attributes=["dice"])
    with pytest.raises(ValueError, match="save_rank must be >= 0, got -1"):
        SegmentationScoresWriter(tmp_path, save_rank=-1)
    with pytest.raises(ValueError, match="hd_max must be a positive number, got 0"):
        SegmentationScoresWriter(tmp_path, hd_max=0)
    with pytest.raises(ValueError, match=r"ts_weight must be a number in \[0, 1\], got 1.5"):
        SegmentationScoresWriter(tmp_path, ts_weight=1.5)
    with pytest.raises(ValueError) as e:
        SegmentationScoresWriter(tmp_path, hd_method="MONAI")
    assert str(e.value) == "hd_method must be one of ('challenge', 'monai'), got 'MONAI'."
    # hd_max and clip_normhd reach case_scores: HD95 3 with hd_max 2 gives 1.5 unclipped
    _run(_records(CASES[2:3]), SegmentationScoresWriter(tmp_path, hd_max=2.0, clip_normhd=False), batch_size=1)
    assert float(_read(tmp_path / "scores.csv")["normhd"][0]) == pytest.approx(1.5)


def test_hd_method_reaches_case_scores(tmp_path):
    # prediction: the whole 8^3 image; label: a 2^3 cube at the centre. DSC = 2*8 / (512 + 8).
    # challenge (default): a whole-image mask has no LabelContour contour -> HD95 inf, NormHD 1.
    # monai: the image border is the prediction's edge (scipy with the outside as background agrees);
    #   label->pred: every cube voxel is 3 from the nearest face (3 - 0 or 7 - 4), so HD95 >= 3.
    whole, cube = torch.ones(1, N, N, N), _mask(((3, 5), (3, 5), (3, 5)))
    recs = _records([("w", whole, cube, "0-40", 0, "pre")])
    _run(recs, SegmentationScoresWriter(tmp_path, filename="challenge.csv"), batch_size=1)
    row = _read(tmp_path / "challenge.csv").iloc[0]
    assert float(row["dice"]) == pytest.approx(16 / 520, rel=1e-6)
    assert math.isinf(float(row["hd95"])) and float(row["normhd"]) == 1.0
    assert _scipy_hd95(whole, cube) == math.inf
    _run(recs, SegmentationScoresWriter(tmp_path, filename="monai.csv", hd_method="monai"), batch_size=1)
    row = _read(tmp_path / "monai.csv").iloc[0]
    hd_monai = _scipy_hd95(whole, cube, outside=0)
    assert 3.0 <= hd_monai < 150
    assert float(row["hd95"]) == pytest.approx(hd_monai, abs=1e-5)
    assert float(row["normhd"]) == pytest.approx(hd_monai / 150, abs=1e-7)


def test_duplicate_case_ids(tmp_path, caplog):
    recs = _records()
    padded = recs + recs[:2]  # as DistributedSampler pads: the same cases again
    with caplog.at_level(logging.INFO, logger="fairmonai.handlers.SegmentationScoresWriter"):
        _run(padded, SegmentationScoresWriter(tmp_path, attributes=["age_group"]))
    assert _read(tmp_path / "scores.csv")["case_id"].tolist() == ["c1", "c2", "c3", "c4", "c5"]
    assert "2 repeated case(s)" in caplog.text
    # the same id with another reference mask: two cases sharing an id
    clash = recs + [dict(recs[1], case_id="c1")]
    with pytest.raises(ValueError) as e:
        _run(clash, SegmentationScoresWriter(tmp_path, attributes=["age_group"]))
    assert str(e.value) == (
        "SegmentationScoresWriter: case id 'c1' appears twice with different reference masks or attributes "
        "(label_voxels 12, ['0-40'] and 8, ['41-50']); case ids must be unique"
    )
    # the same case predicted differently (non-deterministic inference on another rank): first kept, warned
    caplog.clear()
    again = recs + [dict(recs[0], image=recs[4]["image"])]
    with caplog.at_level(logging.WARNING, logger="fairmonai.handlers.SegmentationScoresWriter"):
        _run(again, SegmentationScoresWriter(tmp_path, attributes=["age_group"]))
    assert "1 repeated case(s) scored differently on another rank" in caplog.text
    assert float(_read(tmp_path / "scores.csv")["dice"][0]) == pytest.approx(0.8)


def test_epoch_restart_resets_rows(tmp_path):
    writer = SegmentationScoresWriter(tmp_path)
    ev = _run(_records(), writer)
    ev.run()  # a second evaluation (as ValidationHandler does) rewrites the file, not appends
    assert len(_read(tmp_path / "scores.csv")) == len(CASES)


# ---- two processes, gloo on CPU, each rank scoring part of the cases


def _dist_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        _run(_records()[rank::world], SegmentationScoresWriter(out_dir, attributes=["age_group"]))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    _run(_records(), SegmentationScoresWriter(single, attributes=["age_group"]))
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(_dist_worker, args=(2, init_file, str(multi)), nprocs=2, join=True, start_method="fork")
    assert (multi / "scores.csv").read_bytes() == (single / "scores.csv").read_bytes()
