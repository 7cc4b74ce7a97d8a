"""draw_mixture: the A/B/C training sets and the two test sets of a repeat."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from fairmonai.data import ManifestError
from fairmonai.data.tone_mixtures import MixtureError, draw_mixture


def _records(counts={"1": 30, "2": 30, "3": 10, "4": 10, "5": 25, "6": 15, "": 5}):
    out = []
    for t, k in counts.items():
        out += [{"case_id": f"t{t or 'x'}_{i:03d}", "fitzpatrick": t or "unknown"} for i in range(k)]
    return out


KW = dict(test_size=10, seed=0)


def test_sizes_groups_and_disjoint_test_sets():
    recs = _records()
    for mix, (n_light, n_dark) in {"A": (30, 0), "B": (15, 15), "C": (0, 30)}.items():
        d = draw_mixture(recs, repeat=0, mix=mix, **KW)
        light_ids = {r["case_id"] for r in d.test_light}
        dark_ids = {r["case_id"] for r in d.test_dark}
        train_ids = {r["case_id"] for r in d.train}
        assert len(light_ids) == len(dark_ids) == 10 and not light_ids & dark_ids
        assert not train_ids & (light_ids | dark_ids)  # training never sees a test image
        assert {r["fitzpatrick"] for r in d.test_light} <= {"1", "2"} and {r["fitzpatrick"] for r in d.test_dark} <= {"5", "6"}
        # n = available dark (40) - test size (10); types 3, 4 and unknown never drawn
        c = d.counts()
        assert d.n == 30 and (c["train_light"], c["train_dark"]) == (n_light, n_dark)
        assert all(r["fitzpatrick"] in {"1", "2", "5", "6"} for r in d.train)
        assert c["available_light"] == 60 and c["available_dark"] == 40


def test_same_test_sets_across_mixes_other_per_repeat_and_deterministic():
    recs = _records()
    a, b, c = (draw_mixture(recs, repeat=3, mix=m, **KW) for m in "ABC")
    ids = lambda d: [r["case_id"] for r in d.test_light + d.test_dark]
    assert ids(a) == ids(b) == ids(c)
    assert ids(draw_mixture(recs, repeat=4, mix="A", **KW)) != ids(a)
    again = draw_mixture(recs, repeat=3, mix="B", **KW)
    assert [r["case_id"] for r in again.train] == [r["case_id"] for r in b.train]
    other_seed = draw_mixture(recs, repeat=3, mix="B", test_size=10, seed=1)
    assert [r["case_id"] for r in other_seed.train] != [r["case_id"] for r in b.train]


def test_with_replacement_repeats_images_and_counts_distinct_ones(tmp_path):
    d = draw_mixture(_records(), repeat=0, mix="C", **KW)
    mult = Counter(r["case_id"] for r in d.train)
    assert max(mult.values()) > 1  # 30 draws from 30 with replacement: repeats (P(no repeat) = 30!/30^30)
    assert d.counts()["distinct_dark"] == len(mult) < 30
    table = pd.read_csv(d.write_case_list(tmp_path / "cases.csv"))
    train = table[table["set"] == "train"]
    assert train["multiplicity"].sum() == 30 and len(train) == len(mult)
    assert dict(zip(train["case_id"], train["multiplicity"])) == dict(mult)
    assert (table["set"] == "test").sum() == 20 and (tmp_path / "cases_counts.json").is_file()


def test_without_replacement_uses_distinct_images():
    d = draw_mixture(_records(), repeat=0, mix="C", replacement=False, **KW)
    assert len({r["case_id"] for r in d.train}) == 30  # the whole dark pool
    b = draw_mixture(_records(), repeat=0, mix="B", replacement=False, **KW)
    assert b.counts()["distinct_light"] == 15 and b.counts()["distinct_dark"] == 15


def test_odd_n_gives_the_extra_image_to_light_and_validation_sets():
    recs = _records({"1": 40, "5": 21})  # n = 21 - 10 = 11
    c = draw_mixture(recs, repeat=0, mix="B", **KW).counts()
    assert (c["train_light"], c["train_dark"]) == (6, 5)
    v = draw_mixture(_records(), repeat=0, mix="B", val_size=3, **KW)
    assert len(v.val) == 6 and v.n == 27  # 40 dark - 10 test - 3 val
    assert not {r["case_id"] for r in v.val} & {r["case_id"] for r in v.train + v.test_light + v.test_dark}


def test_dark_is_a_setting():
    d = draw_mixture(_records(), repeat=0, mix="C", dark=("4", "5", "6"), **KW)
    assert d.n == 50 - 10 and {r["fitzpatrick"] for r in d.train} <= {"4", "5", "6"}


@pytest.mark.parametrize("kwargs,message", [
    (dict(test_size=40), "too few dark images (types 5, 6): 40 in the manifest, need at least 41 (test_size 40"),
    (dict(test_size=10, mix="D"), "mix 'D' is not one of ['A', 'B', 'C']"),
    (dict(test_size=10, dark=("2", "5")), "share skin types ['2']"),
    (dict(test_size=10, dark=("7",)), "skin types ['7'] are not among"),
    (dict(test_size=0), "test_size must be an integer >= 1, got 0"),
])
def test_bad_settings_are_named(kwargs, message):
    kwargs = {"mix": "A", **kwargs}
    with pytest.raises(MixtureError) as info:
        draw_mixture(_records(), repeat=0, **kwargs)
    assert message in str(info.value)


def test_without_replacement_too_few_light_is_named():
    with pytest.raises(MixtureError, match=r"needs 30 light training images, the light pool has 20"):
        draw_mixture(_records({"1": 30, "5": 40}), repeat=0, mix="A", replacement=False, **KW)


def _manifest(tmp_path, rows, columns=("case_id", "image", "label", "fitzpatrick")):
    (tmp_path / "images").mkdir(exist_ok=True)
    for r in rows:
        (tmp_path / "images" / f"{r[0]}.png").write_bytes(b"x")
    t = pd.DataFrame([dict(zip(("case_id", "image", "label", "fitzpatrick"), (r[0], f"images/{r[0]}.png", "benign", r[1])))
                      for r in rows])[list(columns)]
    t.to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv"


def test_manifest_problems_are_named(tmp_path):
    rows = [(f"c{i}", "1" if i < 6 else "6") for i in range(12)]
    m = _manifest(tmp_path, rows)
    assert draw_mixture(m, repeat=0, mix="B", test_size=2).n == 4
    (tmp_path / "images" / "c3.png").unlink()
    with pytest.raises(ManifestError, match="c3.png"):
        draw_mixture(m, repeat=0, mix="B", test_size=2)
    m = _manifest(tmp_path, [("c0", "7")] + rows[1:])
    with pytest.raises(ManifestError, match="'7'"):
        draw_mixture(m, repeat=0, mix="B", test_size=2)
    m = _manifest(tmp_path, rows, columns=("case_id", "image", "label"))
    with pytest.raises(ManifestError, match="fitzpatrick"):
        draw_mixture(m, repeat=0, mix="B", test_size=2)
