"""fairmonai.data.preprocess.cache: preprocess_cohort's crops, CSV, cache key, workers and bad cases."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from fairmonai.data.preprocess import cache as C
from fairmonai.data.preprocess.io import PreprocessError
from fairmonai.data.synth.rectal_mri import write_dicom_series

SETTINGS = {"crop_size": (8, 8, 8)}
SIZE = (20, 20, 6)  # (x, y, z) voxels of 1 x 1 x 3 mm -> 20 x 20 x 18 at 1 mm
ORIGIN = (-10.0, 5.0, 2.0)
# case a: a 6 x 5 x 2 block (old slices 2-3 -> new z 5-10: 180 voxels) and one spurious voxel (3 voxels at 1 mm)
BLOCKS_A = [((4, 10), (5, 10), (2, 4)), ((15, 16), (15, 16), (1, 2))]
# case b: 4 x 4 x 1 at the corner (old slice 0 -> new z 0-1: 32 voxels): the crop leaves the image
BLOCKS_B = [((0, 4), (0, 4), (0, 1))]


def _arrays(blocks, seed, size=SIZE):
    rng = np.random.default_rng(seed)
    image = (rng.normal(size=size[::-1]) + 5).astype(np.float32)  # (z, y, x)
    mask = np.zeros(size[::-1], np.uint8)
    for (x0, x1), (y0, y1), (z0, z1) in blocks:
        mask[z0:z1, y0:y1, x0:x1] = 1
    return image, mask


def _write(arr, path, spacing=(1.0, 1.0, 3.0)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(ORIGIN)
    sitk.WriteImage(img, str(path))
    return str(path)


def _case(folder, name, blocks, seed=0, split="train"):
    image, mask = _arrays(blocks, seed)
    return {"case_id": name, "image": _write(image, folder / f"{name}_t2.nii.gz"),
            "mask": _write(mask, folder / f"{name}_mask.nii.gz"), "split": split}


def _dicom_case(folder, name="d", uid="1.2.826.0.1.3680043.8.498.1"):
    image, mask = _arrays(BLOCKS_A, seed=3)
    series = folder / f"{name}_dicom"
    assert write_dicom_series(image.transpose(2, 1, 0), series, spacing=(1.0, 1.0, 3.0), origin=ORIGIN,
                              series_uid=uid) == uid
    return {"case_id": name, "image": str(series), "mask": _write(mask, folder / f"{name}_mask.nii.gz"),
            "split": "train"}


@pytest.fixture
def counted_reads(monkeypatch):
    calls = []

    def read_image(path, **kwargs):
        calls.append(kwargs.get("case"))
        return real(path, **kwargs)

    real = C.read_image
    monkeypatch.setattr(C, "read_image", read_image)
    return calls


def _mtimes(out):
    return {p.relative_to(out): p.stat().st_mtime_ns for p in (out / "cases").rglob("*.nii.gz")}


def test_csv_rows_hold_the_hand_checked_geometry(tmp_path):
    recs = [_case(tmp_path, "a", BLOCKS_A), _case(tmp_path, "b", BLOCKS_B, seed=1), _dicom_case(tmp_path)]
    out = tmp_path / "cache"
    table = C.preprocess_cohort(recs, out, SETTINGS, progress=None)
    csv = C.read_preprocessing_csv(out)
    assert list(csv.columns) == list(C.CSV_COLUMNS) and list(csv["case_id"]) == ["a", "b", "d"]
    a, b, d = (csv.iloc[i] for i in range(3))
    assert (a["status"], a["reason"], a["from_cache"]) == ("ok", "", False)
    assert a["spacing_in"] == "[1.0, 1.0, 3.0]" and a["spacing"] == "[1.0, 1.0, 1.0]"
    assert a["size_in"] == "[20, 20, 6]" and a["size_resampled"] == "[20, 20, 18]"
    assert a["direction"] == "[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]" and a["origin"] == "[-10.0, 5.0, 2.0]"
    assert (a["components_kept"], a["kept_sizes"]) == (1, "[180]")
    assert (a["components_dropped"], a["dropped_sizes"]) == (1, "[3]")
    assert (a["box_start"], a["box_size"], a["crop_size"]) == ("[4, 5, 5]", "[6, 5, 6]", "[8, 8, 8]")
    assert a["crop_start"] == "[3, 3, 4]" and a["pad_lower"] == a["pad_upper"] == "[0, 0, 0]"
    assert (a["padding_voxels"], a["mask_voxels"], a["fraction_inside"]) == (0, 180, 1.0)
    assert (a["min_voxels"], a["connectivity"], a["per_slice"], a["series_uid"]) == (20, "face", False, "")
    assert a["image_source"] == recs[0]["image"] and a["image_crop"] == str(out / "cases" / "a" / "image.nii.gz")
    # b: box (0, 0, 0) + (4, 4, 2); crop start (0 - 2, 0 - 2, 0 - 3): 8^3 - 6 * 6 * 5 voxels of padding
    assert (b["box_start"], b["box_size"], b["crop_start"]) == ("[0, 0, 0]", "[4, 4, 2]", "[-2, -2, -3]")
    assert (b["pad_lower"], b["padding_voxels"], b["fraction_inside"]) == ("[2, 2, 3]", 332, 1.0)
    # the DICOM series: its UID, the same tumour as a
    assert d["series_uid"] == "1.2.826.0.1.3680043.8.498.1" and d["kept_sizes"] == "[180]"
    crop = sitk.ReadImage(a["image_crop"])
    mask = sitk.GetArrayFromImage(sitk.ReadImage(a["mask_crop"]))
    assert crop.GetSize() == (8, 8, 8) and crop.GetPixelID() == sitk.sitkFloat32 and int(mask.sum()) == 180
    arr = sitk.GetArrayFromImage(crop)
    assert arr.mean() == pytest.approx(0, abs=1e-5) and arr.std() == pytest.approx(1, abs=1e-4)  # all inside
    bz = sitk.GetArrayFromImage(sitk.ReadImage(b["image_crop"]))
    assert (bz[:3] == 0).all() and (bz[:, :2] == 0).all() and int((bz != 0).sum()) == 6 * 6 * 5
    pd.testing.assert_frame_equal(table.drop(columns="from_cache"), csv.drop(columns="from_cache"),
                                  check_dtype=False)


def test_cache_reused_only_for_the_same_settings_and_sources(tmp_path, counted_reads):
    recs = [_case(tmp_path, "a", BLOCKS_A), _case(tmp_path, "b", BLOCKS_B, seed=1)]
    out = tmp_path / "cache"
    first = C.preprocess_cohort(recs, out, SETTINGS, progress=None)
    assert counted_reads == ["a", "b"] and not first["from_cache"].any()
    before = _mtimes(out)

    counted_reads.clear()  # unchanged: read from the cache only
    again = C.preprocess_cohort(recs, out, SETTINGS, progress=None)
    assert counted_reads == [] and again["from_cache"].all() and _mtimes(out) == before
    pd.testing.assert_frame_equal(again.drop(columns="from_cache"), first.drop(columns="from_cache"))

    counted_reads.clear()  # one setting changed: every case recomputed
    changed = C.preprocess_cohort(recs, out, {**SETTINGS, "min_voxels": 3}, progress=None)
    assert counted_reads == ["a", "b"] and not changed["from_cache"].any()
    assert changed.loc[0, "kept_sizes"] == "[180, 3]"

    counted_reads.clear()  # back to the first setting: recomputed again (one setting per folder)
    C.preprocess_cohort(recs, out, SETTINGS, progress=None)
    assert counted_reads == ["a", "b"]

    counted_reads.clear()  # a touched source: that case only
    st = os.stat(recs[1]["mask"])
    os.utime(recs[1]["mask"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = C.preprocess_cohort(recs, out, SETTINGS, progress=None)
    assert counted_reads == ["b"] and list(touched["from_cache"]) == [True, False]

    counted_reads.clear()  # a modified source (same size, mtime set apart): that case only, new crop
    old_crop = sitk.GetArrayFromImage(sitk.ReadImage(touched.loc[0, "image_crop"]))
    st = os.stat(recs[0]["image"])
    _write(_arrays(BLOCKS_A, seed=7)[0], recs[0]["image"])
    os.utime(recs[0]["image"], ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    modified = C.preprocess_cohort(recs, out, SETTINGS, progress=None)
    assert counted_reads == ["a"] and list(modified["from_cache"]) == [False, True]
    assert not np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(modified.loc[0, "image_crop"])), old_crop)
    assert modified.loc[0, "key"] != touched.loc[0, "key"]

    counted_reads.clear()  # a crop file damaged behind the cache's back: recomputed
    with open(modified.loc[1, "image_crop"], "ab") as f:
        f.write(b"x")
    C.preprocess_cohort(recs, out, SETTINGS, progress=None)
    assert counted_reads == ["b"]


def test_workers_give_identical_results(tmp_path, capsys):
    recs = [_case(tmp_path, "a", BLOCKS_A), _case(tmp_path, "b", BLOCKS_B, seed=1), _dicom_case(tmp_path)]
    one = C.preprocess_cohort(recs, tmp_path / "w1", SETTINGS, progress=2)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["preprocess: 2/3 cases", "preprocess: 3/3 cases"]
    assert lines[-1].startswith("preprocess: 3/3 cases (0 from cache, 0 failed, ")
    two = C.preprocess_cohort(recs, tmp_path / "w2", SETTINGS, workers=2, progress=None)
    paths = ["image_crop", "mask_crop"]
    pd.testing.assert_frame_equal(one.drop(columns=paths), two.drop(columns=paths))
    for col in paths:
        for p1, p2 in zip(one[col], two[col]):
            arrays = [sitk.GetArrayFromImage(sitk.ReadImage(p)) for p in (p1, p2)]
            assert np.array_equal(*arrays)


def test_missing_files_stop_before_any_work(tmp_path, counted_reads):
    recs = [_case(tmp_path, "a", BLOCKS_A), {"case_id": "x", "image": str(tmp_path / "no.nii.gz"),
                                             "mask": str(tmp_path / "a_mask.nii.gz")}]
    with pytest.raises(PreprocessError) as e:
        C.preprocess_cohort(recs, tmp_path / "cache", SETTINGS, progress=None)
    assert str(e.value) == (f"1 problem(s) in the records, nothing was preprocessed:\n"
                            f"  case 'x': image not found: {tmp_path / 'no.nii.gz'}")
    assert counted_reads == [] and not any((tmp_path / "cache").rglob("*.nii.gz"))
    with pytest.raises(PreprocessError, match="case id 'a/b' cannot name a folder"):
        C.preprocess_cohort([{**recs[0], "case_id": "a/b"}], tmp_path / "cache", progress=None)


def test_bad_masks_raise_naming_the_cases_or_are_skipped(tmp_path, counted_reads, caplog):
    recs = [_case(tmp_path, "a", BLOCKS_A), _case(tmp_path, "empty", []),
            _case(tmp_path, "tiny", [((2, 4), (2, 4), (1, 2))])]  # 2 x 2 x 1 -> 12 voxels at 1 mm
    out = tmp_path / "cache"
    with pytest.raises(PreprocessError) as e:
        C.preprocess_cohort(recs, out, SETTINGS, progress=None)
    lines = str(e.value).splitlines()
    assert lines[0] == f"2 of 3 cases cannot be preprocessed (on_error='raise'; rows in {out / C.CSV_NAME}):"
    assert lines[1] == f"  case 'empty', {recs[1]['mask']}: mask is empty (no non-zero voxel)"
    assert lines[2] == ("  case 'tiny': all 1 mask components have fewer than 20 voxels (3-D, face connectivity; "
                        "sizes [12]): no tumour is left.")
    csv = C.read_preprocessing_csv(out)
    assert list(csv["status"]) == ["ok", "error", "error"] and csv.loc[2, "image_crop"] == ""

    counted_reads.clear()
    with caplog.at_level(logging.WARNING, logger="fairmonai.data.preprocess"):
        table = C.preprocess_cohort(recs, out, {**SETTINGS, "on_error": "skip"}, progress=None)
    assert counted_reads == []  # failures are cached too (on_error is not part of the key)
    assert list(table["status"]) == ["ok", "skipped", "skipped"] and "2 case(s) skipped" in caplog.text
    datalist = [{"case_id": c, "image": "raw", "mask": "raw", "label": 1} for c in ("a", "empty", "tiny")]
    cropped = C.crop_datalist(datalist, out)
    assert cropped == [{"case_id": "a", "image": table.loc[0, "image_crop"], "mask": table.loc[0, "mask_crop"],
                        "label": 1, "image_source": "raw", "mask_source": "raw"}]
    assert "left out, their preprocessing was skipped: ['empty', 'tiny']" in caplog.text
    with pytest.raises(PreprocessError, match=r"^case 'zz' is not in the preprocessing table"):
        C.crop_datalist([{"case_id": "zz"}], table)


def test_auto_crop_size_is_the_mean_box_of_the_training_cases(tmp_path, counted_reads, caplog):
    big = [((0, 20), (0, 20), (0, 6))]  # a test case with a huge box must not change the crop
    recs = [_case(tmp_path, "a", BLOCKS_A), _case(tmp_path, "b", BLOCKS_B, seed=1),
            _case(tmp_path, "t", big, seed=2, split="test")]
    out = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="fairmonai.data.preprocess"):
        table = C.preprocess_cohort(recs, out, {"crop_size": "auto"}, progress=None)
    # boxes (6, 5, 6) and (4, 4, 2): mean (5, 4.5, 4) rounded up
    assert set(table["crop_size"]) == {"[5, 5, 4]"}
    assert counted_reads == ["a", "b", "a", "b", "t"]  # box pass (training cases), then every case
    assert json.loads((out / "boxes" / "a.json").read_text())["box"] == [[4, 5, 5], [6, 5, 6]]
    assert table.loc[2, "fraction_inside"] == pytest.approx(100 / 7200)
    assert "less than 0.5 of the kept mask in 1 case(s)" in caplog.text and "'t': 0.014" in caplog.text
    counted_reads.clear()
    again = C.preprocess_cohort(recs, out, {"crop_size": "auto"}, progress=None)
    assert counted_reads == [] and again["from_cache"].all()
    with pytest.raises(PreprocessError, match="crop_size='auto' takes the mean tumour box of the cases whose 'split'"):
        C.preprocess_cohort(recs[2:], out, {"crop_size": "auto"}, progress=None)


def test_settings_are_checked():
    assert C.PreprocessSettings.of(None) == C.PreprocessSettings()
    assert C.PreprocessSettings.of({"spacing": 1, "mask_labels": 2}).key_dict()["spacing"] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"unknown preprocessing settings \['crop'\]"):
        C.PreprocessSettings.of({"crop": 3})
    with pytest.raises(ValueError, match=r"on_error must be one of \['raise', 'skip'\], got 'ignore'"):
        C.PreprocessSettings(on_error="ignore")


def test_a_manifests_series_uid_picks_the_series_of_a_folder_with_two(tmp_path):
    """The rectal manifest's optional ``series_uid`` column reaches the cache through ``load_datalist``:
    a folder holding two series is read as the one the manifest names (without the column the same
    folder is an error listing both, see test_preprocess_io)."""
    from fairmonai.data import load_datalist, load_schema

    rec = _dicom_case(tmp_path, uid="1.2.826.0.1.3680043.8.498.1")
    other = np.zeros((4, 4, 2), np.float32)  # a second, smaller series in the same folder
    write_dicom_series(other, rec["image"], series_uid="1.2.826.0.1.3680043.8.498.2",
                       series_description="localiser")
    manifest = pd.DataFrame([{"case_id": "d", "image": rec["image"], "mask": rec["mask"], "label": 1,
                              "sex": "female", "split": "train", "series_uid": "1.2.826.0.1.3680043.8.498.1"}])
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    records = load_datalist(tmp_path / "manifest.csv", load_schema("rectal_mri"), "all")
    assert records[0]["series_uid"] == "1.2.826.0.1.3680043.8.498.1"
    table = C.preprocess_cohort(records, tmp_path / "cache", SETTINGS, progress=None)
    row = table.iloc[0]
    # the named series: the 20 x 20 x 6 volume of 1 x 1 x 3 mm with case a's tumour, not the 4 x 4 x 2 one
    assert (row["status"], row["series_uid"], row["size_in"], row["kept_sizes"]) == (
        "ok", "1.2.826.0.1.3680043.8.498.1", "[20, 20, 6]", "[180]")
