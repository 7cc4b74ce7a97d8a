"""Attribute encodings shared by converters, synthetic cohorts and metrics.

MAMA-MIA: the challenge scores fairness over age in five bins, menopausal status (pre / post /
unknown) and breast density (a-d). Its clinical table spells menopause out in long strings
(``"pre (<6 months since LMP AND ...)"``, ``"peri (6-12 months since LMP ...)"``) and leaves it
empty for 408 of 1,506 cases; the challenge maps ``peri`` to ``pre`` and empty to ``unknown``.
"""

from __future__ import annotations

import math

from .manifest import is_missing

__all__ = ["MAMA_MIA_AGE_GROUPS", "MAMA_MIA_MENOPAUSE", "MAMA_MIA_DENSITY", "age_to_group", "normalise_menopause",
           "normalise_density"]

#: Age groups of the MAMA-MIA challenge, upper bounds inclusive: 0-40, 41-50, 51-60, 61-70, 71+.
MAMA_MIA_AGE_GROUPS = ("0-40", "41-50", "51-60", "61-70", "71+")
_AGE_UPPER = (40, 50, 60, 70)
MAMA_MIA_MENOPAUSE = ("pre", "post", "unknown")
MAMA_MIA_DENSITY = ("a", "b", "c", "d")


def age_to_group(age) -> str | None:
    """MAMA-MIA age group of an age in years, or ``None`` when it is missing.

    Bins: ``age <= 40`` -> ``"0-40"``, ``40 < age <= 50`` -> ``"41-50"``, ``50 < age <= 60`` ->
    ``"51-60"``, ``60 < age <= 70`` -> ``"61-70"``, ``age > 70`` -> ``"71+"``. Ages in the table are
    whole years; a fractional age falls in the bin whose upper bound it does not exceed.

    Raises:
        ValueError: a negative or non-numeric age.
    """
    if is_missing(age):
        return None
    try:
        a = float(age)
    except (TypeError, ValueError):
        raise ValueError(f"age '{age}' is not a number") from None
    if math.isnan(a):
        return None
    if a < 0:
        raise ValueError(f"age {a} is negative")
    for upper, name in zip(_AGE_UPPER, MAMA_MIA_AGE_GROUPS):
        if a <= upper:
            return name
    return MAMA_MIA_AGE_GROUPS[-1]


def normalise_menopause(value) -> str:
    """Menopausal status as the challenge scores it: ``pre`` (incl. ``peri``), ``post`` or ``unknown``.

    The first word of the table's string decides (``"pre (<6 months ...)"`` -> ``pre``,
    ``"peri (6-12 months ...)"`` -> ``pre``, ``"post"`` -> ``post``); an empty cell is ``unknown``.

    Raises:
        ValueError: a value that starts with none of pre / peri / post / unknown.
    """
    if is_missing(value):
        return "unknown"
    word = str(value).strip().split()[0].split("(")[0].lower()
    if word in ("pre", "peri", "premenopausal", "perimenopausal"):
        return "pre"
    if word in ("post", "postmenopausal"):
        return "post"
    if word == "unknown":
        return "unknown"
    raise ValueError(f"menopausal status '{value}' is not pre/peri/post/unknown")


def normalise_density(value) -> str | None:
    """Breast density category ``a``-``d`` (BI-RADS), or ``None`` when missing.

    Raises:
        ValueError: a value other than a-d (any case).
    """
    if is_missing(value):
        return None
    v = str(value).strip().lower()
    if v not in MAMA_MIA_DENSITY:
        raise ValueError(f"breast density '{value}' is not one of {list(MAMA_MIA_DENSITY)}")
    return v
