"""MAMA-MIA attribute encodings as the challenge scores them."""

import math

import pytest

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
