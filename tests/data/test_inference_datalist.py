"""inference_datalist: a manifest without labels (validated loosely), or a folder of images."""

import pytest

from fairmonai.data import EXCLUDED_CODE, ManifestError, load_manifest
from fairmonai.data.inference import (
    NO_ID_COLUMN_MSG,
    NO_MATCH_MSG,
    SOURCE_MISSING_MSG,
    case_id_from_path,
    inference_datalist,
    inference_schema,
)

SCHEMA = {
    "name": "toy",
    "id_column": "case_id",
    "path_columns": ["image"],
    "label": {"column": "label", "kind": "class", "categories": ["0", "1"]},
    "attributes": {
        "race": {"categories": ["Asian", "Black", "White"], "missing": "error"},
        "density": {"categories": ["a", "b", "c", "d"], "missing": "exclude"},
    },
    "numeric_columns": {"age": {"required": True, "nullable": True}},
    "optional_columns": ["split", "fold", "site"],
}

SEG_SCHEMA = {
    "name": "toyseg",
    "id_column": "case_id",
    "path_columns": ["image_pre", "image_post", "label"],
    "stack": {"image": ["image_pre", "image_post"]},
    "label": {"column": "label", "kind": "mask"},
    "attributes": {"site": {"categories": ["s1", "s2"], "missing": "exclude"}},
}


def write(tmp_path, header, rows, name="manifest.csv"):
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(4):
        for suffix in ("", "_post", "_mask"):
            (tmp_path / "img" / f"c{i}{suffix}.nii.gz").write_bytes(b"x")
    p = tmp_path / name
    p.write_text("\n".join([header, *rows]) + "\n")
    return p


def test_manifest_without_label_and_attributes(tmp_path):
    p = write(tmp_path, "case_id,image", ["c0,img/c0.nii.gz", "c1,img/c1.nii.gz"])
    recs = inference_datalist(p, schema=SCHEMA)
    assert [r["case_id"] for r in recs] == ["c0", "c1"]
    assert recs[0]["image"] == str((tmp_path / "img" / "c0.nii.gz").resolve())
    assert all("label" not in r and "race" not in r for r in recs)


def test_present_attributes_kept_with_codes_as_load_manifest(tmp_path):
    p = write(tmp_path, "case_id,image,race,density,site",
              ["c0,img/c0.nii.gz,Black,,s1", "c1,img/c1.nii.gz,White,c,s2"])
    recs = inference_datalist(p, schema=SCHEMA)
    assert [(r["race"], r["race_code"]) for r in recs] == [("Black", 1), ("White", 2)]
    assert [(r["density"], r["density_code"]) for r in recs] == [("unknown", EXCLUDED_CODE), ("c", 2)]
    assert [r["site"] for r in recs] == ["s1", "s2"]
    # a present attribute is still validated
    bad = write(tmp_path, "case_id,image,race", ["c0,img/c0.nii.gz,Green"], name="bad.csv")
    with pytest.raises(ManifestError, match="row 2, column 'race'"):
        inference_datalist(bad, schema=SCHEMA)


def test_full_manifest_equals_load_manifest(tmp_path):
    p = write(tmp_path, "case_id,image,label,race,density,age,split,fold",
              ["c0,img/c0.nii.gz,1,Asian,a,50,train,0", "c1,img/c1.nii.gz,0,Black,,61,test,"])
    assert inference_datalist(p, schema=SCHEMA) == load_manifest(p, SCHEMA)


def test_label_with_gaps_is_dropped_with_a_warning(tmp_path):
    p = write(tmp_path, "case_id,image,label", ["c0,img/c0.nii.gz,1", "c1,img/c1.nii.gz,"])
    with pytest.warns(UserWarning, match="column 'label' has empty cells"):
        recs = inference_datalist(p, schema=SCHEMA)
    assert all("label" not in r for r in recs)
    p = write(tmp_path, "case_id,image,label", ["c0,img/c0.nii.gz,7"], name="bad.csv")
    with pytest.raises(ManifestError, match="label '7' is not one of"):
        inference_datalist(p, schema=SCHEMA)


def test_segmentation_manifest_without_masks(tmp_path):
    p = write(tmp_path, "case_id,image_pre,image_post", ["c0,img/c0.nii.gz,img/c0_post.nii.gz"])
    (rec,) = inference_datalist(p, schema=SEG_SCHEMA)
    assert rec["image"] == [rec["image_pre"], rec["image_post"]] and "label" not in rec
    loose = inference_schema(SEG_SCHEMA, ["case_id", "image_pre", "image_post"])
    assert loose.path_columns == ("image_pre", "image_post") and loose.label is None
    # with masks, the mask path is the label, as in training
    p = write(tmp_path, "case_id,image_pre,image_post,label",
              ["c1,img/c1.nii.gz,img/c1_post.nii.gz,img/c1_mask.nii.gz"], name="m.csv")
    assert inference_datalist(p, schema=SEG_SCHEMA)[0]["label"].endswith("c1_mask.nii.gz")
    # a missing image path column is an error
    p = write(tmp_path, "case_id,image_pre", ["c0,img/c0.nii.gz"], name="bad.csv")
    with pytest.raises(ManifestError, match="image_post"):
        inference_datalist(p, schema=SEG_SCHEMA)


def test_manifest_without_schema(tmp_path):
    p = write(tmp_path, "case_id,image,race", ["c0,img/c0.nii.gz,Asian"])
    assert inference_datalist(p) == [{"case_id": "c0", "image": str((tmp_path / "img/c0.nii.gz").resolve()),
                                      "split": "", "fold": -1, "race": "Asian"}]
    p = write(tmp_path, "case_id,image", ["c0,img/missing.nii.gz"], name="missing.csv")
    with pytest.raises(ManifestError, match="file not found"):
        inference_datalist(p)
    assert inference_datalist(p, check_files=False)[0]["image"].endswith("missing.nii.gz")


@pytest.mark.parametrize("schema", [None, SCHEMA])
def test_manifest_without_case_id(tmp_path, schema):
    p = write(tmp_path, "id,image", ["c0,img/c0.nii.gz"])
    with pytest.raises(ManifestError) as e:
        inference_datalist(p, schema=schema)
    assert NO_ID_COLUMN_MSG.format(column="case_id", columns=["id", "image"]) in str(e.value)
    assert str(p) in str(e.value)


def test_folder(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for name in ["b_02.nii.gz", "a_01.nii.gz", "a_01.json", "c.nii"]:
        (d / name).write_bytes(b"x")
    (d / "sub").mkdir()
    (d / "sub" / "z.nii.gz").write_bytes(b"x")
    recs = inference_datalist(d)
    assert recs == [{"case_id": "a_01", "image": str((d / "a_01.nii.gz").resolve())},
                    {"case_id": "b_02", "image": str((d / "b_02.nii.gz").resolve())}]
    assert [r["case_id"] for r in inference_datalist(d, pattern="**/*.nii*")] == ["a_01", "b_02", "c", "z"]
    with pytest.raises(ValueError, match="two files give the case id 'a_01'"):
        inference_datalist(d, pattern="a_01.*")


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        inference_datalist(empty, pattern="*.png")
    assert str(e.value) == NO_MATCH_MSG.format(pattern="*.png", folder=empty.resolve())
    with pytest.raises(FileNotFoundError) as e:
        inference_datalist(tmp_path / "nowhere")
    assert str(e.value) == SOURCE_MISSING_MSG.format(source=tmp_path / "nowhere")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not a .csv manifest"):
        inference_datalist(tmp_path / "x.txt")


@pytest.mark.parametrize("path, cid", [
    ("a/oct_00001.nii.gz", "oct_00001"), ("b.NII.GZ", "b"), ("c.nii", "c"), ("d.npz", "d"), ("e.png", "e"),
    ("scan.v2.xyz", "scan.v2"), ("f.v1.nii.gz", "f.v1"), ("noext", "noext"),
])
def test_case_id_from_path(path, cid):
    assert case_id_from_path(path) == cid


def test_folder_of_npz_checked_and_read_as_training_reads_it(tmp_path):
    """Harvard-GF-like eyes: ``pattern="*.npz"`` lists them, the header check takes ``oct_bscans``, and
    NumpyReader(npz_keys=["oct_bscans"]) reads that array unchanged (2 files -> 2 rows)."""
    import numpy as np
    from monai.data import NumpyReader

    from fairmonai.data import check_images
    from fairmonai.transforms import LoadCaseImaged

    rng = np.random.default_rng(0)
    volumes = {stem: rng.integers(0, 255, (20, 18, 16), dtype=np.uint8) for stem in ("eye_2", "eye_1")}
    for stem, vol in volumes.items():
        np.savez(tmp_path / f"{stem}.npz", oct_bscans=vol, rnflt=np.zeros((4, 4), np.float32), glaucoma=np.array(1))
    (tmp_path / "eye_3.nii.gz").write_bytes(b"x")  # not matched by the pattern
    recs = inference_datalist(tmp_path, pattern="*.npz")
    assert recs == [{"case_id": "eye_1", "image": str((tmp_path / "eye_1.npz").resolve())},
                    {"case_id": "eye_2", "image": str((tmp_path / "eye_2.npz").resolve())}]
    assert check_images(recs, "image", npz_key="oct_bscans") is recs
    load = LoadCaseImaged(keys="image", reader=NumpyReader(npz_keys=["oct_bscans"]), image_only=True)
    for rec in recs:
        image = load(dict(rec))["image"]
        assert tuple(image.shape) == (20, 18, 16)
        assert np.array_equal(np.asarray(image), volumes[rec["case_id"]])
