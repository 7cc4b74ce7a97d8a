"""MAMA-MIA attribute encodings as the challenge scores them."""

import json
import math
from pathlib import Path

import pytest

from fairmonai.data import ManifestError, load_schema
from fairmonai.data.attributes import age_to_group, normalise_density, normalise_menopause


@pytest.mark.parametrize(
    "age,group",
    [(21, "0-40"), (40, "0-40"), (40.5, "41-50"), (41, "41-50"), (50, "41-50"), (51, "51-60"), (60, "51-60"),
     (61, "61-70"), (70, "61-70"), (71, "71+"), (95, "71+"), ("48.0", "41-50"), (None, None), ("", None),
     (math.nan, None)],
)
def test_age_bins(age, group):
    assert age_to_group(age) == group


@pytest.mark.parametrize("bad", [-1, "forty"])
def test_age_bad(bad):
    with pytest.raises(ValueError):
        age_to_group(bad)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("pre (<6 months since LMP AND no prior bilateral ovariectomy AND not on estrogen replacement)", "pre"),
        ("pre (< 6 months since LMP AND no prior bilateral ovariectomy AND not on estrogen replacement)", "pre"),
        ("peri (6-12 months since LMP AND no prior bilateral ovariectomy AND not on estrogen replacement)", "pre"),
        ("post", "post"),
        ("pre", "pre"),
        ("", "unknown"),
        (float("nan"), "unknown"),
    ],
)
def test_menopause(raw, expected):
    assert normalise_menopause(raw) == expected


def test_menopause_unknown_spelling():
    with pytest.raises(ValueError, match="menopausal status 'during' is not pre/peri/post/unknown"):
        normalise_menopause("during")


def test_density():
    assert [normalise_density(v) for v in ("a", "B", " c ", "", None)] == ["a", "b", "c", None, None]
    with pytest.raises(ValueError, match="breast density 'e'"):
        normalise_density("e")


def test_conversions_give_the_schema_categories():
    """Every value the conversions return is a category of the schema, and every category is reached."""
    schema = load_schema("mama_mia")
    assert {age_to_group(a) for a in (21, 45, 55, 65, 77)} == set(schema.attributes["age_group"].categories)
    assert {normalise_menopause(v) for v in ("pre", "peri", "post", "")} == set(
        schema.attributes["menopausal_status"].categories)
    assert {normalise_density(v) for v in "ABCD"} == set(schema.attributes["breast_density"].categories)


def test_group_names_follow_the_schema(tmp_path, monkeypatch):
    """The bins are the code's rule, the names the schema's: a site schema renaming them renames the output."""
    d = json.loads(Path(load_schema("mama_mia").source).read_text())
    d["attributes"]["age_group"]["categories"] = ["<=40", "41-50", "51-60", "61-70", ">70"]
    d["attributes"]["breast_density"]["categories"] = ["a", "b", "c", "d", "e"]
    (tmp_path / "mama_mia").mkdir()
    (tmp_path / "mama_mia" / "schema.json").write_text(json.dumps(d))
    monkeypatch.setenv("FAIRMONAI_MANIFESTS", str(tmp_path))
    assert [age_to_group(a) for a in (40, 71)] == ["<=40", ">70"]
    assert normalise_density("E") == "e"
    d["attributes"]["age_group"]["categories"] = ["young", "old"]  # two names for five bins
    (tmp_path / "mama_mia" / "schema.json").write_text(json.dumps(d))
    with pytest.raises(ManifestError, match=r"declares 2 age groups \['young', 'old'\]; age_to_group bins ages "
                                            r"into 5 \(upper bounds \[40, 50, 60, 70\] and above\)"):
        age_to_group(30)


def test_isic_age_groups_are_haenel_et_al_bins():
    from fairmonai.data.attributes import isic_age_group

    # their code: age <= 30 -> 0, 31 <= age <= 60 -> 1, else 2
    assert [isic_age_group(a) for a in (0, 30, 30.5, 31, 60, 61, 90)] == \
        ["0-30", "0-30", "31-60", "31-60", "31-60", "61+", "61+"]
    assert isic_age_group("") is None and isic_age_group(None) is None and isic_age_group(float("nan")) is None
    with pytest.raises(ValueError, match="age -5.0 is negative"):
        isic_age_group(-5)
