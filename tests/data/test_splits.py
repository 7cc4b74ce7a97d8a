"""Stratified, seeded splits and the data lists bundles read."""

import numpy as np
import pytest

from fairmonai.data import (
    ManifestError,
    assign_splits,
    class_counts,
    require_split_parts,
    load_datalist,
    strata_keys,
    stratified_kfold,
    stratified_train_test_split,
    stratified_train_val_test_split,
)


def test_strata_keys_joint_values():
    keys = strata_keys([0, 0, 1, 1, 0], ["a", "b", "a", "a", "a"])
    # (0,a) (0,b) (1,a) (1,a) (0,a): three distinct strata, equal pairs share an id
    assert len(set(keys)) == 3 and keys[0] == keys[4] and keys[2] == keys[3] and keys[0] != keys[1]


def test_train_fraction_is_exact_per_stratum():
    # strata of sizes 10, 20, 3, 1: round(0.7 n) = 7, 14, 2, and a singleton goes to train
    strata = np.repeat([0, 1, 2, 3], [10, 20, 3, 1])
    is_train = stratified_train_test_split(strata, 0.7, seed=3)
    assert [int(is_train[strata == s].sum()) for s in range(4)] == [7, 14, 2, 1]


def test_train_val_test_counts_per_stratum():
    # sizes 10, 20, 3, 1, 2 at 0.7 / 0.2: train round(0.7 n) = 7, 14, 2, 1 (singleton), 1;
    # val round(0.9 n) - train = 9-7, 18-14, 3-2, 1-1, 2-1 (round(1.8) = 2) = 2, 4, 1, 0, 1; test the rest
    strata = np.repeat([0, 1, 2, 3, 4], [10, 20, 3, 1, 2])
    split = stratified_train_val_test_split(strata, 0.7, 0.2, seed=3)
    counts = [[int(((strata == s) & (split == part)).sum()) for part in ("train", "val", "test")] for s in range(5)]
    assert counts == [[7, 2, 1], [14, 4, 2], [2, 1, 0], [1, 0, 0], [1, 1, 0]]


def test_train_val_test_keeps_the_train_test_split_training_cases():
    strata = np.repeat([0, 1, 2], [31, 17, 8])
    for seed in range(3):
        split = stratified_train_val_test_split(strata, 0.7, 0.2, seed=seed)
        assert np.array_equal(split == "train", stratified_train_test_split(strata, 0.7, seed=seed))
        # val_fraction 0 is the train/test split itself
        plain = stratified_train_val_test_split(strata, 0.7, 0.0, seed=seed)
        assert set(plain) == {"train", "test"}
        assert np.array_equal(plain == "train", stratified_train_test_split(strata, 0.7, seed=seed))


@pytest.mark.parametrize("train,val", [(0.7, 0.3), (0.7, -0.1), (0.0, 0.2), (0.9, 0.2)])
def test_train_val_test_fractions_checked(train, val):
    with pytest.raises(ValueError, match="must be"):
        stratified_train_val_test_split([0, 0, 1, 1], train, val)


def test_assign_splits_with_validation_part():
    labels = [0] * 60 + [1] * 40
    split, fold = assign_splits(labels, ["f", "m"] * 50, train_fraction=0.7, val_fraction=0.2, seed=0)
    # strata (0,f) (0,m) (1,f) (1,m) of 30, 30, 20, 20: 21/6/3 and 14/4/2 each
    assert [int((split == p).sum()) for p in ("train", "val", "test")] == [70, 20, 10]
    assert (fold[split != "train"] == -1).all() and set(fold[split == "train"]) == set(range(5))


def test_split_is_seeded():
    strata = np.repeat([0, 1], [50, 50])
    a = stratified_train_test_split(strata, 0.7, seed=1)
    assert np.array_equal(a, stratified_train_test_split(strata, 0.7, seed=1))
    assert not np.array_equal(a, stratified_train_test_split(strata, 0.7, seed=2))


def test_kfold_balances_every_stratum_and_overall():
    strata = np.repeat([0, 1, 2], [13, 7, 5])
    fold = stratified_kfold(strata, num_folds=5, seed=0)
    assert set(fold) == set(range(5))
    for s in range(3):
        counts = np.bincount(fold[strata == s], minlength=5)
        assert counts.max() - counts.min() <= 1
    overall = np.bincount(fold, minlength=5)
    assert overall.max() - overall.min() <= 1 and overall.sum() == 25


@pytest.mark.parametrize("k,fragment", [(1, "num_folds must be at least 2"), (9, "exceeds the number of cases (8)")])
def test_kfold_bad_k(k, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        stratified_kfold(np.zeros(8), num_folds=k)


def test_assign_splits_folds_only_on_train():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    groups = rng.choice(["A", "B", "W"], 200)
    split, fold = assign_splits(labels, groups, seed=5)
    assert set(fold[split == "test"]) == {-1}
    assert set(fold[split == "train"]) == set(range(5))
    # 70 % of each label x group stratum in train, up to rounding
    for lab in (0, 1):
        for g in "ABW":
            m = (labels == lab) & (groups == g)
            assert (split[m] == "train").sum() == max(1, round(0.7 * m.sum()))


def _manifest(tmp_path, rows, extra_header=""):
    """An isic2020 manifest of ``rows``; its age_group column is empty (missing: excluded), so that the
    strata are label x sex."""
    (tmp_path / "x.png").write_bytes(b"x")
    p = tmp_path / "manifest.csv"
    header = "case_id,image,label,sex" + extra_header + ",age_group"
    p.write_text("\n".join([header, *(r + "," for r in rows)]) + "\n")
    return p


def test_datalist_parts_from_manifest_columns(tmp_path):
    rows = [f"c{i},x.png,{i % 2},{'female' if i % 3 else 'male'},train,{i % 3}" for i in range(9)]
    rows += [f"t{i},x.png,{i % 2},male,test," for i in range(4)]
    p = _manifest(tmp_path, rows, ",split,fold")
    val = load_datalist(p, "isic2020", "val", fold=1, num_folds=3)
    train = load_datalist(p, "isic2020", "train", fold=1, num_folds=3)
    test = load_datalist(p, "isic2020", "test")
    assert [r["case_id"] for r in val] == ["c1", "c4", "c7"]
    assert {r["case_id"] for r in train} == {"c0", "c2", "c3", "c5", "c6", "c8"}
    assert [r["case_id"] for r in test] == ["t0", "t1", "t2", "t3"]
    with pytest.raises(ValueError, match=r"fold 3 is out of range: the training part has folds 0..2"):
        load_datalist(p, "isic2020", "val", fold=3, num_folds=3)


def test_manifest_fold_column_with_another_number_of_folds(tmp_path):
    """A 10-fold experiment never runs on a manifest's 3-fold column: an error naming both, or, with
    manifest_folds False, 10 folds made here (each case held out once, strata spread)."""
    rows = [f"c{i},x.png,{i % 2},{'female' if i % 4 < 2 else 'male'},train,{i % 3}" for i in range(40)]
    p = _manifest(tmp_path, rows, ",split,fold")
    with pytest.raises(ValueError, match=r"its fold column has 3 folds \(0..2\) but num_folds is 10: set num_folds 3, "
                                         r"or manifest_folds False to make 10 folds here"):
        load_datalist(p, "isic2020", "val", fold=0, num_folds=10)
    vals = [{r["case_id"] for r in load_datalist(p, "isic2020", "val", fold=k, num_folds=10, manifest_folds=False)}
            for k in range(10)]
    assert [len(v) for v in vals] == [4] * 10  # 4 strata of 10 cases dealt round-robin: one of each per fold
    assert set().union(*vals) == {f"c{i}" for i in range(40)} and sum(map(len, vals)) == 40
    train = {r["case_id"] for r in load_datalist(p, "isic2020", "train", fold=3, num_folds=10, manifest_folds=False)}
    assert train == {f"c{i}" for i in range(40)} - vals[3]


def test_datalist_explicit_val_rows(tmp_path):
    rows = ["a,x.png,0,male,train,", "b,x.png,1,female,val,", "c,x.png,1,male,test,"]
    p = _manifest(tmp_path, rows, ",split,fold")
    assert [r["case_id"] for r in load_datalist(p, "isic2020", "val")] == ["b"]
    assert [r["case_id"] for r in load_datalist(p, "isic2020", "train")] == ["a"]


def test_datalist_without_split_column_is_seeded_and_disjoint(tmp_path):
    rows = [f"c{i},x.png,{i % 2},{'female' if i % 4 < 2 else 'male'}" for i in range(40)]
    p = _manifest(tmp_path, rows)
    parts = {s: {r["case_id"] for r in load_datalist(p, "isic2020", s, seed=7)} for s in ("train", "val", "test")}
    assert not (parts["train"] & parts["val"]) and not (parts["test"] & (parts["train"] | parts["val"]))
    assert len(parts["train"] | parts["val"] | parts["test"]) == 40
    # 4 strata of 10 cases: 7 train each
    assert len(parts["train"] | parts["val"]) == 28
    again = {r["case_id"] for r in load_datalist(p, "isic2020", "val", seed=7)}
    assert again == parts["val"]


def test_datalist_partial_split_column_is_an_error(tmp_path):
    p = _manifest(tmp_path, ["a,x.png,0,male,train", "b,x.png,1,female,"], ",split")
    with pytest.raises(ManifestError, match=r"'split' is empty on some rows \(first: \[3\]\)"):
        load_datalist(p, "isic2020", "train")


def test_datalist_unknown_part(tmp_path):
    p = _manifest(tmp_path, ["a,x.png,0,male"])
    with pytest.raises(ValueError, match=r"split 'dev' is not one of \['train', 'val', 'test', 'trainval', 'all'\]"):
        load_datalist(p, "isic2020", "dev")


def test_class_counts():
    recs = [{"case_id": f"c{i}", "label": y} for i, y in enumerate([0, 1, 1, 0, 0])]
    assert class_counts(recs, 2) == [3, 2]
    with pytest.raises(ValueError, match=r"no case of class\(es\) \[2\] among the 5 records \(counts \[3, 2, 0\]\)"):
        class_counts(recs, 3)
    with pytest.raises(ValueError, match="case 'x' has label 2, not a class index in \\[0, 2\\)"):
        class_counts([{"case_id": "x", "label": 2}], 2)


def test_require_split_parts(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("case_id,split\na,train\nb,test\nc,train\n")
    with pytest.raises(ManifestError, match=r"no \['val'\] rows \(it holds \['test', 'train'\]\)"):
        require_split_parts(m)
    assert require_split_parts(m, ("train", "test")) == str(m)
    m.write_text("case_id\na\n")
    with pytest.raises(ManifestError, match="has no 'split' column"):
        require_split_parts(m)
