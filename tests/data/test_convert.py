"""Dataset converters: tiny fixtures in each release's format, exact counts, codes, splits, errors."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairmonai.data import EXCLUDED_CODE, ManifestError, load_manifest, read_manifest_table
from fairmonai.data.convert import Conversion, convert_isic2020, write_manifest
from fairmonai.data.convert.__main__ import main


def run(capsys, *args):
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def table(path):
    return read_manifest_table(path)


def leftovers(folder):
    """Files a failed run could leave behind: the manifest or its temporary file."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith((".csv", ".tmp")))


# ----------------------------------------------------------------------------------------- Harvard-GF

def write_npz(path, **keys):
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {"oct_bscans": np.zeros((2, 2, 2), np.float32), "rnflt": np.zeros((2, 2), np.float32), "md": -1.0}
    np.savez(path, **{**base, **keys})


@pytest.fixture
def harvard(tmp_path):
    root = tmp_path / "Harvard-GF"
    n = 0
    # Training: 6 eyes, every race with glaucoma 0 and 1; Validation: 2; Test: 3
    for folder, specs in [("Training", [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]),
                          ("Validation", [(1, 0), (2, 1)]), ("Test", [(0, 0), (1, 1), (2, 0)])]:
        for race, glaucoma in specs:
            n += 1
            write_npz(root / folder / f"data_{n:04d}.npz", race=race, glaucoma=glaucoma, male=n % 2, age=50.0 + n,
                      ethnicity=-1 if n == 1 else 0)
    # a string race, as some of the authors' code expects
    write_npz(root / "Test" / "data_0012.npz", race=np.array("Black or African American"), glaucoma=0, male=1,
              age=61.5, ethnicity=1)
    return root


def test_harvard_gf_official_split_and_codes(capsys, harvard):
    out = harvard / "manifest.csv"
    rc, stdout, _ = run(capsys, "oct_glaucoma", harvard, "--out", out, "--folds", "3")
    assert rc == 0
    assert "oct_glaucoma: 12 cases" in stdout and "split: train 6, test 6" in stdout
    t = table(out)
    assert list(t.columns) == ["case_id", "image", "label", "race", "age", "gender", "ethnicity", "source_file",
                               "split", "fold"]
    by_id = t.set_index("case_id")
    # Training -> train; Validation and Test -> test (FaMI's 2,100 / 1,200)
    assert (by_id.loc[[f"data_{i:04d}" for i in range(1, 7)], "split"] == "train").all()
    assert (by_id.loc[[f"data_{i:04d}" for i in range(7, 13)], "split"] == "test").all()
    # images lie beneath the manifest's folder: relative paths
    assert by_id.loc["data_0007", "image"] == "Validation/data_0007.npz"
    assert by_id.loc["data_0007", "source_file"] == "Validation/data_0007.npz"
    assert by_id["race"].tolist() == ["Asian", "Asian", "Black", "Black", "White", "White",
                                      "Black", "White", "Asian", "Black", "White", "Black"]
    assert by_id.loc["data_0012", "race"] == "Black"  # string spelling
    assert by_id.loc["data_0002", "gender"] == "female" and by_id.loc["data_0003", "gender"] == "male"
    assert by_id.loc["data_0001", "ethnicity"] == "" and by_id.loc["data_0002", "ethnicity"] == "non-hispanic"
    assert by_id.loc["data_0012", "ethnicity"] == "hispanic"
    assert by_id.loc["data_0012", "age"] == "61.5" and by_id.loc["data_0001", "age"] == "51"
    # folds only on the training part, 3 folds of 2, each holding both labels... as strata allow
    train = t[t["split"] == "train"]
    assert sorted(train["fold"].astype(int).tolist()) == [0, 0, 1, 1, 2, 2]
    assert (t.loc[t["split"] == "test", "fold"] == "").all()
    recs = load_manifest(out, "oct_glaucoma", check_files=True)
    assert [r["race_code"] for r in recs[:6]] == [0, 0, 1, 1, 2, 2]
    assert [r["label"] for r in recs[:2]] == [0, 1]


def test_harvard_gf_validation_as_val_and_absolute_paths(capsys, harvard, tmp_path):
    out = tmp_path / "elsewhere" / "m.csv"
    rc, _, _ = run(capsys, "oct_glaucoma", harvard, "--out", out, "--validation-as", "val")
    assert rc == 0
    t = table(out).set_index("case_id")
    assert t.loc[["data_0007", "data_0008"], "split"].tolist() == ["val", "val"]
    assert t.loc["data_0009", "split"] == "test"
    assert t.loc["data_0007", "image"] == str((harvard / "Validation" / "data_0007.npz").resolve())


def test_harvard_gf_reads_only_small_keys(harvard, tmp_path, monkeypatch):
    from fairmonai.data.convert import convert_harvard_gf

    read = []
    original = np.lib.npyio.NpzFile.__getitem__

    def spy(self, key):
        read.append(key)
        return original(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", spy)
    conv = convert_harvard_gf(harvard, tmp_path / "m.csv")
    assert len(conv.table) == 12
    assert "oct_bscans" not in read and "rnflt" not in read
    assert set(read) == {"glaucoma", "race", "age", "male", "ethnicity"}


def test_harvard_gf_bad_files(capsys, harvard):
    out = harvard / "manifest.csv"
    bad = harvard / "Training" / "data_0099.npz"
    write_npz(bad, glaucoma=1, male=0, age=40.0)  # no race
    rc, _, err = run(capsys, "oct_glaucoma", harvard, "--out", out)
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"{bad}, column 'race': no key 'race'" in err
    assert leftovers(harvard) == []
    write_npz(bad, glaucoma=1, race=7)
    rc, _, err = run(capsys, "oct_glaucoma", harvard, "--out", out)
    assert rc == 2 and "race '7' is not 0/1/2" in err
    np.savez(bad, glaucoma=1, race=0)  # no B-scans
    rc, _, err = run(capsys, "oct_glaucoma", harvard, "--out", out)
    assert rc == 2 and "no image key 'oct_bscans'" in err
    rc, _, err = run(capsys, "oct_glaucoma", harvard / "nowhere", "--out", out)
    assert rc == 2 and "Harvard-GF root folder not found" in err


# ----------------------------------------------------------------------------------------- rectal MRI

RECTAL_CSV = """patient_id,pcr,sex,age,site
R01,1,M,61,A
R02,0,female,55,A
R03,0,Male,70,B
R04,1,f,,B
R05,yes,F,48,A
R06,,M,50,B
R07,0,,52,A
R08,no,m,66,B
"""


def rectal_images(root, ids):
    for cid in ids:
        (root / cid).mkdir(parents=True, exist_ok=True)
        (root / cid / "t2.nii.gz").write_bytes(b"x")
        (root / cid / "mask.nii.gz").write_bytes(b"x")


def test_rectal_mri_sex_spellings_drops_and_split(capsys, tmp_path):
    csv = tmp_path / "clinical.csv"
    csv.write_text(RECTAL_CSV)
    images = tmp_path / "images"
    rectal_images(images, ["R01", "R02", "R03", "R04", "R05", "R08"])
    out = tmp_path / "manifest.csv"
    rc, stdout, _ = run(capsys, "rectal_mri", csv, images, "--out", out, "--folds", "2")
    assert rc == 0
    assert "rectal_mri: 6 cases" in stdout
    assert "dropped rows: 1 pCR missing (column 'pcr'); 1 sex missing (column 'sex')" in stdout
    t = table(out).set_index("case_id")
    assert t.index.tolist() == ["R01", "R02", "R03", "R04", "R05", "R08"]
    assert t["sex"].tolist() == ["male", "female", "male", "female", "female", "male"]
    assert t["label"].tolist() == ["1", "0", "0", "1", "1", "0"]
    assert t.loc["R01", "image"] == "images/R01/t2.nii.gz" and t.loc["R01", "mask"] == "images/R01/mask.nii.gz"
    assert t.loc["R04", "age"] == "" and t.loc["R03", "site"] == "B"
    # stratified on pCR x sex: each stratum keeps round(0.7 n), at least 1, in train:
    # (1, male) R01 -> 1; (0, female) R02 -> 1; (0, male) R03, R08 -> 1; (1, female) R04, R05 -> 1
    assert (t["split"] == "train").sum() == 4
    assert t.loc[["R03", "R08"], "split"].tolist().count("train") == 1
    assert set(t.loc[t["split"] == "train", "fold"]) <= {"0", "1"}
    assert (t.loc[t["split"] == "test", "fold"] == "").all()
    assert len(load_manifest(out, "rectal_mri")) == 6


def test_rectal_mri_numeric_sex_codes(capsys, tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("id,response,gender\nA,1,1\nB,0,0\nC,1,0\nD,0,1\n")
    out = tmp_path / "m.csv"
    columns = ["--id-column", "id", "--label-column", "response", "--sex-column", "gender"]
    base = ["rectal_mri", csv, tmp_path / "img", "--no-check-files", *columns]
    rc, _, err = run(capsys, *base, "--out", out)
    assert rc == 2
    assert f"{csv}, row 2, column 'gender': sex '1' is a numeric code: say which code is male with --male-code" in err
    assert leftovers(tmp_path) == ["c.csv"]
    rc, _, _ = run(capsys, *base, "--out", out, "--male-code", "1")
    assert rc == 0
    assert table(out)["sex"].tolist() == ["male", "female", "female", "male"]
    rc, _, _ = run(capsys, *base, "--out", out, "--male-code", "0")
    assert table(out)["sex"].tolist() == ["female", "male", "male", "female"]
    # metadata only: paths are written under the (absent) image folder
    assert table(out)["image"][0] == "img/A/t2.nii.gz"
    # ... and absolute when the image folder is not beneath the manifest's folder
    rc, _, _ = run(capsys, *base, "--out", tmp_path / "sub" / "m.csv", "--male-code", "1")
    assert table(tmp_path / "sub" / "m.csv")["image"][0] == str(tmp_path / "img" / "A" / "t2.nii.gz")


def test_rectal_mri_series_uid_column_passes_through(capsys, tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("patient_id,pcr,sex,uid\nA,1,M,1.2.3.4\nB,0,F,\n")
    out = tmp_path / "m.csv"
    base = ["rectal_mri", csv, tmp_path / "img", "--no-check-files", "--image-pattern", "{id}/dicom"]
    assert run(capsys, *base, "--out", out)[0] == 0  # no series_uid column: none written
    assert "series_uid" not in table(out).columns
    assert run(capsys, *base, "--out", out, "--series-uid-column", "uid")[0] == 0
    t = table(out)
    assert t["series_uid"].tolist() == ["1.2.3.4", ""] and t["image"].tolist() == ["img/A/dicom", "img/B/dicom"]
    assert [r.get("series_uid") for r in load_manifest(out, "rectal_mri", check_files=False)] == ["1.2.3.4", ""]


def test_rectal_mri_errors(capsys, tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("patient_id,pcr,sex\nA,1,M\nB,0,x\n")
    out = tmp_path / "m.csv"
    rc, _, err = run(capsys, "rectal_mri", csv, tmp_path, "--out", out, "--no-check-files")
    assert rc == 2 and f"{csv}, row 3, column 'sex': unknown sex spelling 'x'" in err
    csv.write_text("patient_id,pcr\nA,1\n")
    rc, _, err = run(capsys, "rectal_mri", csv, tmp_path, "--out", out, "--no-check-files")
    assert rc == 2 and f"{csv}, row 1, column 'sex': missing column(s) ['sex']" in err
    # a missing image: error naming the row, or the case dropped on request
    csv.write_text("patient_id,pcr,sex\nA,1,M\nB,0,F\nC,0,F\n")
    rectal_images(tmp_path / "img", ["A", "C"])
    rc, _, err = run(capsys, "rectal_mri", csv, tmp_path / "img", "--out", out)
    missing = tmp_path / "img" / "B" / "t2.nii.gz"
    assert rc == 2 and f"{csv}, row 3, column 'patient_id': file not found: {missing}" in err
    assert leftovers(tmp_path) == ["c.csv"]
    rc, stdout, _ = run(capsys, "rectal_mri", csv, tmp_path / "img", "--out", out, "--missing-files", "drop")
    assert rc == 0 and "dropped rows: 1 image or mask file missing" in stdout
    assert table(out)["case_id"].tolist() == ["A", "C"]


# ----------------------------------------------------------------------------------------- MAMA-MIA

PRE_LONG = "pre (<6 months since LMP AND no prior bilateral ovariectomy AND not on estrogen replacement)"
PERI_LONG = "peri (6-12 months since LMP AND no prior bilateral ovariectomy AND not on estrogen replacement)"
MAMA_ROWS = [
    # patient_id, dataset, pcr, age, menopause, ethnicity, breast_density
    ("DUKE_001", "DUKE", "0.0", "41.0", "pre", "african american", "c"),
    ("DUKE_002", "DUKE", "1.0", "38.0", "post", "caucasian", ""),
    ("DUKE_003", "DUKE", "", "75.0", "", "", "a"),
    ("ISPY2_100001", "ISPY2", "1.0", "", PERI_LONG, "asian", ""),
    ("ISPY2_100002", "ISPY2", "0.0", "55.0", PRE_LONG, "caucasian", ""),
    ("ISPY2_100003", "ISPY2", "0.0", "64.0", "post", "caucasian", "d"),
    ("ISPY1_1001", "ISPY1", "0.0", "50.0", "", "caucasian", ""),
    ("NACT_01", "NACT", "1.0", "40.0", "", "hispanic", ""),
]
MAMA_COLUMNS = ["patient_id", "dataset", "pcr", "age", "menopause", "ethnicity", "breast_density"]


def mama_table(path, *, density=True, rows=MAMA_ROWS):
    df = pd.DataFrame(rows, columns=MAMA_COLUMNS)
    if not density:
        df = df.drop(columns=["breast_density"])
    if path.suffix == ".xlsx":
        with pd.ExcelWriter(path) as w:
            df.assign(age=pd.to_numeric(df["age"]), pcr=pd.to_numeric(df["pcr"])).to_excel(
                w, sheet_name="dataset_info", index=False)
            pd.DataFrame({"Field": ["patient_id"]}).to_excel(w, sheet_name="legend", index=False)
    else:
        df.to_csv(path, index=False)
    return path


def mama_release(root, ids, *, upper_files=()):
    for cid in ids:
        name = cid if cid in upper_files else cid.lower()
        d = root / "images" / cid
        d.mkdir(parents=True, exist_ok=True)
        for phase in range(4):
            (d / f"{name}_{phase:04d}.nii.gz").write_bytes(b"x")
        (root / "segmentations" / "expert").mkdir(parents=True, exist_ok=True)
        (root / "segmentations" / "expert" / f"{name}.nii.gz").write_bytes(b"x")


def test_mama_mia_attributes_official_split_and_bbox(capsys, tmp_path):
    root = tmp_path / "MAMA-MIA"
    ids = [r[0] for r in MAMA_ROWS]
    mama_release(root, ids, upper_files={"NACT_01"})  # one case with upper-case file names
    tab = mama_table(tmp_path / "clinical.csv")
    # the release's wide split file: columns of unequal length
    (root / "train_test_splits.csv").write_text(
        "train_split,test_split\nDUKE_001,DUKE_003\nDUKE_002,ISPY1_1001\nISPY2_100001,\nISPY2_100002,\n"
        "ISPY2_100003,\nNACT_01,\nISPY2_999999,\n")
    (root / "patient_info_files").mkdir()
    (root / "patient_info_files" / "duke_001.json").write_text(json.dumps({
        "patient_id": "DUKE_001",
        "primary_lesion": {"breast_coordinates": {"x_min": 1, "x_max": 158, "y_min": 6, "y_max": 276,
                                                  "z_min": 1, "z_max": 176}}}))
    out = root / "manifest.csv"
    rc, stdout, _ = run(capsys, "mama_mia", tab, root, "--out", out, "--folds", "2")
    assert rc == 0, stdout
    assert "mama_mia: 8 cases" in stdout and "split: train 6, test 2" in stdout
    assert "1 ids of the split file are not in the table" in stdout
    t = table(out).set_index("case_id")
    assert t["age_group"].tolist() == ["41-50", "0-40", "71+", "", "51-60", "61-70", "41-50", "0-40"]
    assert t["menopausal_status"].tolist() == ["pre", "post", "unknown", "pre", "pre", "post", "unknown", "unknown"]
    assert t["breast_density"].tolist() == ["c", "", "a", "", "", "d", "", ""]
    assert t["age"].tolist() == ["41", "38", "75", "", "55", "64", "50", "40"]
    assert t["pcr"].tolist() == ["0", "1", "", "1", "0", "0", "0", "1"]
    assert t.loc["DUKE_001", "dataset"] == "DUKE" and t.loc["ISPY2_100001", "ethnicity"] == "asian"
    assert t.loc["DUKE_001", "image_pre"] == "images/DUKE_001/duke_001_0000.nii.gz"
    assert t.loc["DUKE_001", "label"] == "segmentations/expert/duke_001.nii.gz"
    assert t.loc["NACT_01", "image_post2"] == "images/NACT_01/NACT_01_0002.nii.gz"  # found despite the case
    # the JSON's x (SimpleITK array axis 0) is the manifest's z (LoadImage axis 2), and z is x
    assert [t.loc["DUKE_001", f"bbox_{k}"] for k in ("x_min", "x_max", "y_min", "y_max", "z_min", "z_max")] == \
        ["1", "176", "6", "276", "1", "158"]
    assert t.loc["DUKE_002", "bbox_x_min"] == ""
    assert t.loc[["DUKE_003", "ISPY1_1001"], "split"].tolist() == ["test", "test"]
    assert (t.loc[t["split"] == "test", "fold"] == "").all()
    assert sorted(t.loc[t["split"] == "train", "fold"].astype(int)) == [0, 0, 0, 1, 1, 1]
    recs = {r["case_id"]: r for r in load_manifest(out, "mama_mia", check_files=True)}
    assert recs["ISPY2_100001"]["age_group_code"] == EXCLUDED_CODE
    assert recs["DUKE_002"]["breast_density_code"] == EXCLUDED_CODE
    assert recs["DUKE_003"]["menopausal_status_code"] == 2  # "unknown" is a group (policy category)
    assert len(recs["DUKE_001"]["image"]) == 3 and recs["DUKE_001"]["bbox_z_max"] == 158.0

    rc, stdout, _ = run(capsys, "mama_mia", tab, root, "--out", out, "--official-test-as", "val")
    assert rc == 0 and "split: train 6, val 2" in stdout
    assert table(out).set_index("case_id").loc["DUKE_003", "split"] == "val"
    # --bbox-order nifti copies the JSON coordinates unchanged
    rc, _, _ = run(capsys, "mama_mia", tab, root, "--out", out, "--bbox-order", "nifti")
    t = table(out).set_index("case_id")
    assert rc == 0 and [t.loc["DUKE_001", f"bbox_{k}"] for k in ("x_min", "x_max", "z_min", "z_max")] == \
        ["1", "158", "1", "176"]


def test_mama_mia_xlsx_v1_without_split_file(capsys, tmp_path):
    # every case three times (ids _a/_b/_c), so each stratum keeps 2 in train and puts 1 in test
    rows = [(f"{r[0]}_{k}", *r[1:]) for r in MAMA_ROWS for k in "abc"]
    tab = mama_table(tmp_path / "clinical_and_imaging_info.xlsx", density=False, rows=rows)
    out = tmp_path / "m.csv"
    rc, stdout, _ = run(capsys, "mama_mia", tab, tmp_path / "release", "--out", out, "--no-check-files")
    assert rc == 0
    assert "no breast_density column (v1)" in stdout and "no official split file" in stdout
    t = table(out)
    assert (t["breast_density"] == "").all()
    assert t["age"].tolist()[::3] == ["41", "38", "75", "", "55", "64", "50", "40"]
    assert t["pcr"].tolist()[::3] == ["0", "1", "", "1", "0", "0", "0", "1"]
    assert t["menopausal_status"].tolist()[::3] == ["pre", "post", "unknown", "pre", "pre", "post", "unknown",
                                                    "unknown"]
    assert t["split"].value_counts().to_dict() == {"train": 16, "test": 8}
    assert (t[t["split"] == "test"]["case_id"].str[:-2].value_counts() == 1).all()
    assert (t.loc[t["split"] == "test", "fold"] == "").all() and (t.loc[t["split"] == "train", "fold"] != "").all()
    # same seed, same split; another seed may differ but keeps every case
    rc, _, _ = run(capsys, "mama_mia", tab, tmp_path / "release", "--out", tmp_path / "m2.csv", "--no-check-files")
    assert table(tmp_path / "m2.csv")["split"].tolist() == t["split"].tolist()


def test_mama_mia_errors(capsys, tmp_path):
    root = tmp_path / "release"
    root.mkdir()
    rows = [*MAMA_ROWS[:2], ("DUKE_009", "DUKE", "0.0", "45.0", "during", "", "")]
    tab = mama_table(tmp_path / "t.csv", rows=rows)
    out = tmp_path / "m.csv"
    rc, _, err = run(capsys, "mama_mia", tab, root, "--out", out, "--no-check-files")
    assert rc == 2 and f"{tab}, row 4, column 'menopause': menopausal status 'during'" in err
    tab = mama_table(tmp_path / "t.csv", rows=MAMA_ROWS[:3])
    (root / "train_test_splits.csv").write_text("train_split,test_split\nDUKE_001,DUKE_002\n")
    rc, _, err = run(capsys, "mama_mia", tab, root, "--out", out, "--no-check-files")
    assert rc == 2 and f"{tab}, row 4, column 'patient_id': case 'DUKE_003' is not in the official split file" in err
    rc, _, _ = run(capsys, "mama_mia", tab, root, "--out", out, "--no-check-files", "--no-official-split")
    assert rc == 0
    rc, _, err = run(capsys, "mama_mia", tab, root, "--out", out)  # no images
    assert rc == 2 and "file not found" in err and "row 2, column 'patient_id'" in err


# ----------------------------------------------------------------------------------------- ISIC 2020

ISIC_V2 = """image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target
I01,P1,L1,male,45,torso,unknown,benign,0
I02,P1,L1,male,45,torso,unknown,benign,0
I03,P1,L2,male,50,head/neck,melanoma,malignant,1
I04,P2,L3,female,30,torso,nevus,benign,0
I05,P2,L4,female,,lower extremity,unknown,benign,0
I06,P3,L5,female,60,,melanoma,malignant,1
I07,P3,L6,female,60,torso,unknown,benign,0
I08,P4,L7,male,70,torso,unknown,benign,0
I09,P5,L8,,55,torso,unknown,benign,0
I10,P5,L9,,55,upper extremity,unknown,benign,0
I11,P6,L10,,35,torso,unknown,benign,0
I12,P6,L11,female,35,torso,unknown,benign,0
I13,P7,L12,male,40,torso,unknown,benign,0
I14,P8,L13,female,25,torso,melanoma,malignant,1
I15,P9,L14,female,65,torso,unknown,benign,0
I16,P10,L15,male,80,palms/soles,unknown,benign,0
"""
ISIC_DUPS = "image_name_1,image_name_2\nI01,I02\nI09,I10\n"


def isic_files(tmp_path, text=ISIC_V2):
    gt = tmp_path / "ISIC_2020_Training_GroundTruth_v2.csv"
    gt.write_text(text)
    dups = tmp_path / "ISIC_2020_Training_Duplicates.csv"
    dups.write_text(ISIC_DUPS)
    return gt, dups


def test_isic2020_duplicates_sex_drop_and_patient_split(capsys, tmp_path):
    gt, dups = isic_files(tmp_path)
    out = tmp_path / "m.csv"
    rc, stdout, _ = run(capsys, "isic2020", gt, tmp_path / "jpeg", "--duplicates", dups, "--out", out,
                        "--no-check-files", "--folds", "3")
    assert rc == 0
    assert "dropped rows: 2 duplicate (image_name_2 of a pair in the duplicates list); 2 sex missing" in stdout
    assert "sex is empty for 3 of 16 images" in stdout
    t = table(out)
    assert "I02" not in set(t["case_id"]) and "I10" not in set(t["case_id"]) and "I01" in set(t["case_id"])
    assert set(t["case_id"]).isdisjoint({"I09", "I11"})  # empty sex dropped
    assert len(t) == 12 and set(t["sex"]) == {"male", "female"} and (t["sex_imputed"] == "0").all()
    assert t.set_index("case_id").loc["I05", "age_approx"] == ""
    # Hänel et al.'s age bins, empty for a missing age
    ages = t.set_index("case_id")[["age_approx", "age_group"]]
    assert ages.loc[["I05", "I14", "I04", "I03", "I07", "I15", "I16"], "age_group"].tolist() == \
        ["", "0-30", "0-30", "31-60", "31-60", "61+", "61+"]
    assert t.set_index("case_id").loc["I06", "anatom_site"] == ""
    assert t.set_index("case_id").loc["I03", "lesion_id"] == "L2"
    # patient level: one split and one fold per patient
    assert (t.groupby("patient_id")["split"].nunique() == 1).all()
    assert (t.groupby("patient_id")["fold"].nunique() == 1).all()
    assert (t.loc[t["split"] == "test", "fold"] == "").all()
    assert set(t.loc[t["split"] == "train", "fold"]) <= {"0", "1", "2"}
    assert set(t["split"]) == {"train", "test"}
    recs = load_manifest(out, "isic2020", check_files=False)
    assert sum(r["label"] for r in recs) == 3


def test_isic2020_val_fraction_splits_patients_three_ways(capsys, tmp_path):
    gt, dups = isic_files(tmp_path)
    out = tmp_path / "m.csv"
    rc, stdout, _ = run(capsys, "isic2020", gt, tmp_path / "jpeg", "--duplicates", dups, "--out", out,
                        "--no-check-files", "--val-fraction", "0.2")
    assert rc == 0
    t = table(out)
    assert (t.groupby("patient_id")["split"].nunique() == 1).all()
    # the 9 patients kept (P5 dropped: no sex), strata (melanoma, sex): (0, F) P2 P6 P9, (0, M) P4 P7 P10,
    # (1, F) P3 P8, (1, M) P1: train round(0.7 n) = 2, 2, 1, 1; val round(0.9 n) - train = 1, 1, 1, 0
    patients = t.groupby("patient_id")["split"].first()
    assert patients.value_counts().to_dict() == {"train": 6, "val": 3}
    assert "patient-level split (seed 0): 6 train / 3 val / 0 test patients" in stdout
    # the images per split x melanoma x sex, as counted from the written manifest
    counted = t.assign(label=t["label"].astype(str)).groupby(["split", "label", "sex"]).size()
    lines = stdout.split("images per split x melanoma x sex:\n")[1].splitlines()
    assert lines[0].split() == ["split", "melanoma", "female", "male", "total"]
    for line in lines[1:7]:
        sp, lab, f, m, tot = line.split()
        if lab != "total":
            assert (int(f), int(m)) == (counted.get((sp, lab, "female"), 0), counted.get((sp, lab, "male"), 0)), line
        assert int(tot) == int(f) + int(m)
    assert [ln.split()[:2] for ln in lines[1:7]] == [["train", "0"], ["train", "1"], ["train", "total"],
                                                     ["val", "0"], ["val", "1"], ["val", "total"]]
    # the training patients are those of the train/test split
    plain = convert_isic2020(gt, tmp_path, tmp_path / "m2.csv", duplicates=dups, check_files=False)
    train_plain = set(plain.table.loc[plain.table["split"] == "train", "patient_id"])
    assert set(patients[patients == "train"].index) == train_plain


def test_isic2020_sex_impute_and_v1(tmp_path):
    gt, dups = isic_files(tmp_path)
    conv = convert_isic2020(gt, tmp_path, tmp_path / "m.csv", duplicates=dups, sex_missing="impute",
                            check_files=False)
    t = conv.table.set_index("case_id")
    # P6 has another image with sex female; P5 has none: the majority sex of the images kept (7 female, 5 male)
    assert t.loc["I11", "sex"] == "female" and t.loc["I09", "sex"] == "female"
    assert t.loc[["I09", "I11"], "sex_imputed"].tolist() == ["1", "1"]
    assert (t.drop(index=["I09", "I11"])["sex_imputed"] == "0").all()
    assert "sex imputed for 2 images: 1 from the same patient's other images, 1 with the majority sex 'female'" in \
        " ".join(conv.notes)
    # v1 columns (no lesion_id); same seed, same patient split
    v1 = "\n".join(",".join(c for j, c in enumerate(line.split(",")) if j != 2) for line in ISIC_V2.splitlines())
    gt1 = tmp_path / "v1.csv"
    gt1.write_text(v1 + "\n")
    conv1 = convert_isic2020(gt1, tmp_path, tmp_path / "m.csv", duplicates=dups, sex_missing="impute",
                             check_files=False)
    assert (conv1.table["lesion_id"] == "").all()
    assert conv1.table["split"].tolist() == conv.table["split"].tolist()


def test_isic2020_errors(capsys, tmp_path):
    gt, _ = isic_files(tmp_path, ISIC_V2.replace(",target\n", ",label\n", 1))
    out = tmp_path / "m.csv"
    rc, _, err = run(capsys, "isic2020", gt, tmp_path, "--out", out, "--no-check-files")
    assert rc == 2 and f"{gt}, row 1, column 'target': missing column(s) ['target']" in err
    gt, _ = isic_files(tmp_path, ISIC_V2.replace("I04,P2,L3,female", "I04,P2,L3,F"))
    rc, _, err = run(capsys, "isic2020", gt, tmp_path, "--out", out, "--no-check-files")
    assert rc == 2 and f"{gt}, row 5, column 'sex': unknown sex 'F'" in err
    gt, _ = isic_files(tmp_path)
    rc, _, err = run(capsys, "isic2020", gt, tmp_path / "jpeg", "--out", out)
    assert rc == 2 and f"{tmp_path / 'jpeg'}: image folder not found" in err
    (tmp_path / "jpeg").mkdir()
    rc, _, err = run(capsys, "isic2020", gt, tmp_path / "jpeg", "--out", out)
    assert rc == 2 and f"{gt}, row 2, column 'image_name': file not found" in err
    assert leftovers(tmp_path) == ["ISIC_2020_Training_Duplicates.csv", "ISIC_2020_Training_GroundTruth_v2.csv"]


# ----------------------------------------------------------------------------------------- Fitzpatrick17k

FITZ = """md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,three_partition_label,qc,url,url_alphanum
h01,3,3,psoriasis,inflammatory,non-neoplastic,,https://x/1.jpg,x1
h02,-1,-1,melanoma,malignant melanoma,malignant,1 Diagnostic,https://x/2.jpg,x2
h03,1,2,seborrheic keratosis,benign epidermal,benign,,https://x/3.jpg,x3
h04,6,-1,psoriasis,inflammatory,non-neoplastic,,,x4
h05,2,2,basal cell carcinoma,malignant epidermal,malignant,,https://x/5.jpg,x5
h06,-1,4,acne,inflammatory,non-neoplastic,,https://x/6.jpg,x6
"""


def test_fitzpatrick17k_missing_skin_type_and_split(capsys, tmp_path):
    csv = tmp_path / "fitzpatrick17k.csv"
    csv.write_text(FITZ)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(1, 7):
        (images / f"h{i:02d}.jpg").write_bytes(b"x")
    out = tmp_path / "m.csv"
    rc, stdout, _ = run(capsys, "fitzpatrick17k", csv, images, "--out", out, "--folds", "2")
    assert rc == 0 and "fitzpatrick17k: 6 cases" in stdout
    assert "fitzpatrick_scale -1 (no skin type): 2 images" in stdout
    # counts per group x label, the empty skin type shown as its own row
    summary = stdout[stdout.index("fitzpatrick x condition (label):"):].splitlines()
    assert summary[1].split() == ["label", "benign", "malignant", "non-neoplastic", "total"]
    assert summary[3].split() == ["(empty)", "0", "1", "1", "2"]
    t = table(out).set_index("case_id")
    assert t["fitzpatrick"].tolist() == ["3", "", "1", "6", "2", ""]  # -1 -> empty, never a made-up type
    assert t["fitzpatrick_centaur"].tolist() == ["3", "", "2", "", "2", "4"]
    assert t["label"].tolist() == ["non-neoplastic", "malignant", "benign", "non-neoplastic", "malignant",
                                   "non-neoplastic"]
    assert t.loc["h02", "condition"] == "melanoma" and t.loc["h02", "qc"] == "1 Diagnostic"
    assert t.loc["h01", "image"] == "images/h01.jpg"
    assert set(t["split"]) <= {"train", "test"}
    recs = {r["case_id"]: r for r in load_manifest(out, "fitzpatrick17k")}
    assert recs["h02"]["fitzpatrick_code"] == EXCLUDED_CODE and recs["h02"]["fitzpatrick"] == "unknown"
    assert recs["h03"]["fitzpatrick_code"] == 0 and recs["h03"]["label"] == 0


def test_fitzpatrick17k_errors(capsys, tmp_path):
    csv = tmp_path / "f.csv"
    csv.write_text(FITZ.replace("h03,1,2", "h03,7,2"))
    out = tmp_path / "m.csv"
    rc, _, err = run(capsys, "fitzpatrick17k", csv, tmp_path, "--out", out, "--no-check-files")
    assert rc == 2 and f"{csv}, row 4, column 'fitzpatrick_scale': Fitzpatrick type '7' is not 1-6 or -1" in err
    csv.write_text(FITZ.replace(",benign,,", ",harmless,,"))
    rc, _, err = run(capsys, "fitzpatrick17k", csv, tmp_path, "--out", out, "--no-check-files")
    assert rc == 2 and "row 4, column 'three_partition_label': label 'harmless'" in err
    assert leftovers(tmp_path) == ["f.csv"]


# ----------------------------------------------------------------------------------------- writing

def test_write_is_atomic_and_validated(tmp_path):
    out = tmp_path / "m.csv"
    out.write_text("old\n")
    bad = Conversion("isic2020", pd.DataFrame([{"case_id": "I1", "image": "a.jpg", "label": "0", "sex": "",
                                                "age_group": "", "split": "train", "fold": "0"}]))
    with pytest.raises(ManifestError, match=r"m\.csv, row 2, column 'sex': the converted manifest does not validate"):
        write_manifest(bad, out, check_files=False)
    assert out.read_text() == "old\n"  # the old file is untouched, no temporary file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]
    good = Conversion("isic2020", bad.table.assign(sex="male"))
    write_manifest(good, out, check_files=False)
    assert table(out)["sex"].tolist() == ["male"]
    with pytest.raises(ManifestError, match="no cases left to write"):
        write_manifest(Conversion("isic2020", pd.DataFrame()), tmp_path / "n.csv")
    assert not (tmp_path / "n.csv").exists()


def test_cli_bad_arguments(capsys):
    assert main(["nosuchdataset", "x", "--out", "y"]) == 2
    assert main(["isic2020", "gt.csv", "img", "--out", "m.csv", "--sex-missing", "guess"]) == 2
