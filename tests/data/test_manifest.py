"""Manifest loading and validation: every record field, every error names file, row and column."""

import json
import math

import pytest

from fairmonai.data import EXCLUDED_CODE, ManifestError, load_manifest, load_schema

SCHEMA = {
    "name": "toy",
    "id_column": "case_id",
    "path_columns": ["image"],
    "label": {"column": "label", "kind": "class", "categories": ["0", "1"]},
    "attributes": {
        "race": {"categories": ["Asian", "Black", "White"], "missing": "error"},
        "meno": {"categories": ["pre", "post", "unknown"], "missing": "category", "missing_category": "unknown"},
        "density": {"categories": ["a", "b", "c", "d"], "missing": "exclude"},
    },
    "numeric_columns": {"age": {"required": False, "nullable": True}},
    "optional_columns": ["split", "fold", "site"],
}

HEADER = "case_id,image,label,race,meno,density,age,split,fold,site"


def write(tmp_path, rows, header=HEADER, name="manifest.csv"):
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(10):
        (tmp_path / "img" / f"c{i}.nii.gz").write_bytes(b"x")
    p = tmp_path / name
    p.write_text("\n".join([header, *rows]) + "\n")
    return p


GOOD = [
    "c0,img/c0.nii.gz,0,Asian,pre,a,41,train,0,s1",
    "c1,img/c1.nii.gz,1,Black,,,nan,train,1,s2",
    "c2,img/c2.nii.gz,1.0,White,post,d,,test,,s1",
]


def test_records_fields(tmp_path):
    p = write(tmp_path, GOOD)
    recs = load_manifest(p, SCHEMA)
    assert [r["case_id"] for r in recs] == ["c0", "c1", "c2"]
    # relative paths resolve against the manifest's folder
    assert recs[0]["image"] == str((tmp_path / "img" / "c0.nii.gz").resolve())
    # label codes; "1.0" reads as category "1"
    assert [r["label"] for r in recs] == [0, 1, 1]
    assert [r["label_name"] for r in recs] == ["0", "1", "1"]
    # attribute codes follow the declared category order
    assert [r["race_code"] for r in recs] == [0, 1, 2]
    # policy "category": missing -> "unknown" (code 2); policy "exclude": value "unknown", code -1
    assert [(r["meno"], r["meno_code"]) for r in recs] == [("pre", 0), ("unknown", 2), ("post", 1)]
    assert [(r["density"], r["density_code"]) for r in recs] == [("a", 0), ("unknown", EXCLUDED_CODE), ("d", 3)]
    assert recs[0]["age"] == 41.0 and math.isnan(recs[1]["age"]) and math.isnan(recs[2]["age"])
    assert [(r["split"], r["fold"]) for r in recs] == [("train", 0), ("train", 1), ("test", -1)]
    assert recs[1]["site"] == "s2"


def test_absolute_paths_and_schema_file(tmp_path):
    abs_img = tmp_path / "img" / "c0.nii.gz"
    p = write(tmp_path, [f"c0,{abs_img},0,Asian,pre,a,41,train,0,s"])
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(SCHEMA))
    assert load_manifest(p, schema_file)[0]["image"] == str(abs_img)


@pytest.mark.parametrize(
    "rows,header,row,column,fragment",
    [
        (["c0,img/missing.nii.gz,0,Asian,pre,a,41,train,0,s"], HEADER, 2, "image", "file not found"),
        (GOOD, HEADER.replace(",race", ",ethnicity"), 1, "race", "missing required column(s) ['race']"),
        ([GOOD[0], "c1,img/c1.nii.gz,0,Hispanic,pre,a,41,train,0,s"], HEADER, 3, "race",
         "value 'Hispanic' is not one of the declared categories ['Asian', 'Black', 'White']"),
        ([GOOD[0], "c1,img/c1.nii.gz,,Asian,pre,a,41,train,0,s"], HEADER, 3, "label", "empty or NaN label"),
        ([GOOD[0], "c1,img/c1.nii.gz,NaN,Asian,pre,a,41,train,0,s"], HEADER, 3, "label", "empty or NaN label"),
        ([GOOD[0], "c1,img/c1.nii.gz,2,Asian,pre,a,41,train,0,s"], HEADER, 3, "label", "label '2' is not one of"),
        ([GOOD[0], GOOD[1], "c0,img/c2.nii.gz,1,White,post,d,50,test,,s"], HEADER, 4, "case_id",
         "duplicate case id 'c0' (first seen on row 2)"),
        (["c0,img/c0.nii.gz,0,,pre,a,41,train,0,s"], HEADER, 2, "race", "missing value for attribute 'race'"),
        (["c0,img/c0.nii.gz,0,Asian,pre,e,41,train,0,s"], HEADER, 2, "density", "value 'e' is not one of"),
        (["c0,img/c0.nii.gz,0,Asian,pre,a,forty,train,0,s"], HEADER, 2, "age", "'forty' is not a number"),
        (["c0,img/c0.nii.gz,0,Asian,pre,a,41,training,0,s"], HEADER, 2, "split", "split 'training' is not one of"),
        (["c0,img/c0.nii.gz,0,Asian,pre,a,41,train,1.5,s"], HEADER, 2, "fold", "fold '1.5' is not an integer"),
        (["c0,img/c0.nii.gz,0,Asian,pre,a,41,train,x,s"], HEADER, 2, "fold", "fold 'x' is not an integer"),
        ([",img/c0.nii.gz,0,Asian,pre,a,41,train,0,s"], HEADER, 2, "case_id", "empty case id"),
    ],
)
def test_errors_name_file_row_column(tmp_path, rows, header, row, column, fragment):
    p = write(tmp_path, rows, header=header)
    with pytest.raises(ManifestError) as err:
        load_manifest(p, SCHEMA)
    e = err.value
    assert (e.file, e.row, e.column) == (str(p), row, column)
    assert fragment in str(e)
    assert str(e).startswith(f"{p}, row {row}, column '{column}': ")


def test_missing_manifest_file(tmp_path):
    with pytest.raises(ManifestError, match="manifest file not found"):
        load_manifest(tmp_path / "nope.csv", SCHEMA)


def test_check_files_off_accepts_missing_images(tmp_path):
    p = write(tmp_path, ["c0,img/absent.nii.gz,0,Asian,pre,a,41,train,0,s"])
    assert load_manifest(p, SCHEMA, check_files=False)[0]["image"].endswith("absent.nii.gz")


def test_mask_label_and_stack(tmp_path):
    schema = load_schema("mama_mia")
    for n in ("a", "b", "c", "m"):
        (tmp_path / f"{n}.nii.gz").write_bytes(b"x")
    p = tmp_path / "m.csv"
    p.write_text(
        "case_id,image_pre,image_post1,image_post2,label,age_group,menopausal_status,breast_density,age\n"
        "duke_001,a.nii.gz,b.nii.gz,c.nii.gz,m.nii.gz,41-50,,,41\n"
    )
    rec = load_manifest(p, schema)[0]
    assert rec["image"] == [str(tmp_path / f"{n}.nii.gz") for n in "abc"]
    assert rec["label"] == str(tmp_path / "m.nii.gz")
    assert (rec["menopausal_status"], rec["menopausal_status_code"]) == ("unknown", 2)
    assert (rec["breast_density"], rec["breast_density_code"]) == ("unknown", -1)
    assert rec["age_group_code"] == 1


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ({**SCHEMA, "attributes": {"race": {"categories": ["A"], "missing": "drop"}}}, "unknown missing-value policy 'drop'"),
        ({**SCHEMA, "attributes": {"meno": {"categories": ["pre"], "missing": "category", "missing_category": "unk"}}},
         "missing_category 'unk' must be one of its categories ['pre']"),
        ({k: v for k, v in SCHEMA.items() if k != "id_column"}, "schema lacks the required key 'id_column'"),
        ({**SCHEMA, "attributes": {"race": {"categories": ["A", "A"]}}}, "duplicate categories"),
    ],
)
def test_bad_schema(bad, fragment):
    with pytest.raises(ManifestError) as err:
        load_schema(bad)
    assert fragment in str(err.value)


def test_unknown_dataset_lists_known():
    with pytest.raises(ManifestError) as err:
        load_schema("no_such_dataset")
    assert "known datasets: ['fitzpatrick17k', 'isic2020', 'mama_mia', 'oct_glaucoma', 'rectal_mri']" in str(err.value)


@pytest.mark.parametrize("name", ["oct_glaucoma", "rectal_mri", "mama_mia", "isic2020", "fitzpatrick17k"])
def test_shipped_schemas_load(name):
    s = load_schema(name)
    assert s.name == name and s.attributes and s.label is not None


# ---- missing values a policy accepts are logged, per attribute and per call

MISSING_ROWS = [
    "c0,img/c0.nii.gz,0,Asian,pre,,40,train,0,s1",  # density excluded
    "c1,img/c1.nii.gz,1,Black,,,41,train,1,s1",  # meno -> unknown, density excluded
    "c2,img/c2.nii.gz,0,White,unknown,b,42,train,0,s1",  # 'unknown' given, not missing
    "c3,img/c3.nii.gz,1,Asian,NA,c,43,train,1,s1",  # meno -> unknown ('NA' is a missing token)
    "c4,img/c4.nii.gz,0,Black,post,a,44,val,,s1",
    "c5,img/c5.nii.gz,1,White,,N/A,45,test,,s1",  # meno -> unknown, density excluded
]


def _logged(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "fairmonai.data.manifest" and r.levelname == "INFO"]


def test_missing_values_are_logged_per_attribute_and_split(tmp_path, caplog):
    from fairmonai.data import load_datalist

    p = write(tmp_path, MISSING_ROWS)
    caplog.set_level("INFO", logger="fairmonai.data.manifest")
    records = load_manifest(p, SCHEMA)
    assert [r["density_code"] for r in records] == [EXCLUDED_CODE, EXCLUDED_CODE, 1, 2, 0, EXCLUDED_CODE]
    assert [r["meno"] for r in records] == ["pre", "unknown", "unknown", "unknown", "post", "unknown"]
    assert _logged(caplog) == [
        f"{p} (all cases): attribute 'meno': 3 of 6 cases have no value and are counted as 'unknown' "
        "(missing-value policy 'category')",
        f"{p} (all cases): attribute 'density': 3 of 6 cases have no value and are excluded from its groups "
        "(missing-value policy 'exclude', code -1)",
    ]

    caplog.clear()
    assert [r["case_id"] for r in load_datalist(p, SCHEMA, "train")] == ["c0", "c1", "c2", "c3"]
    assert _logged(caplog) == [
        f"{p} (split 'train'): attribute 'meno': 2 of 4 cases have no value and are counted as 'unknown' "
        "(missing-value policy 'category')",
        f"{p} (split 'train'): attribute 'density': 2 of 4 cases have no value and are excluded from its groups "
        "(missing-value policy 'exclude', code -1)",
    ]

    caplog.clear()
    load_datalist(p, SCHEMA, "val")  # c4 has every value: nothing to say
    assert _logged(caplog) == []

    caplog.clear()
    load_datalist(p, SCHEMA, "test")
    assert _logged(caplog) == [
        f"{p} (split 'test'): attribute 'meno': 1 of 1 cases have no value and are counted as 'unknown' "
        "(missing-value policy 'category')",
        f"{p} (split 'test'): attribute 'density': 1 of 1 cases have no value and are excluded from its groups "
        "(missing-value policy 'exclude', code -1)",
    ]


def test_manifest_error_is_an_input_error():
    from fairmonai.errors import InputError

    e = ManifestError("value 'x' is not one of the declared categories ['a']", file="m.csv", row=3, column="race")
    assert isinstance(e, InputError) and isinstance(e, ValueError)
    assert str(e) == "m.csv, row 3, column 'race': value 'x' is not one of the declared categories ['a']"
    assert str(ManifestError("plain")) == "plain"  # built from one string, as DataLoader re-raises
