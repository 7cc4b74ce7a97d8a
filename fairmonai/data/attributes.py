"""Conversions of raw clinical values to the attribute categories, shared by converters and synthetic cohorts.

MAMA-MIA: the challenge scores fairness over age in five bins, menopausal status (pre / post /
unknown) and breast density (a-d). Its clinical table spells menopause out in long strings
(``"pre (<6 months since LMP AND ...)"``, ``"peri (6-12 months since LMP ...)"``) and leaves it
empty for 408 of 1,506 cases; the challenge maps ``peri`` to ``pre`` and empty to ``unknown``.

The categories themselves (names and order, i.e. the integer codes) are defined once, in the
schema ``mama_mia`` (``fairmonai/data/schemas/mama_mia.json``, read with
:func:`~fairmonai.data.load_schema`; :func:`fairmonai.data.sensitive.attribute_groups` returns them
all). This module holds only the rules that map a raw value to one of them.

ISIC 2020: Hänel et al. (ACCV 2022; their code's ``siim_isic_melanoma.py``) group ``age_approx`` into
three bins, ``<= 30``, ``31-60`` and ``> 60`` (the schema ``isic2020``'s ``age_group``).
"""

from __future__ import annotations

import math

from ..attribute_codes import is_missing
from .manifest import ManifestError, load_schema

__all__ = ["age_to_group", "isic_age_group", "normalise_menopause", "normalise_density"]

#: the schema whose categories the conversions return.
_DATASET = "mama_mia"
#: upper bounds (inclusive, years) of the challenge's age bins but the last: 0-40, 41-50, 51-60, 61-70, 71+.
_AGE_UPPER = (40, 50, 60, 70)


#: upper bounds (inclusive, years) of Hänel et al.'s ISIC age bins but the last: 0-30, 31-60, 61+.
_ISIC_AGE_UPPER = (30, 60)


def _bin_age(age, dataset: str, uppers: tuple[int, ...], rule: str) -> str | None:
    """The schema ``dataset``'s ``age_group`` category of ``age``: the first whose inclusive upper bound in
    ``uppers`` it does not exceed, else the last; ``None`` for a missing age."""
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
    schema = load_schema(dataset)
    groups = schema.attributes["age_group"].categories
    if len(groups) != len(uppers) + 1:  # a schema edited without this rule
        raise ManifestError(f"schema '{schema.name}' declares {len(groups)} age groups {list(groups)}; {rule} "
                            f"bins ages into {len(uppers) + 1} (upper bounds {list(uppers)} and above)",
                            file=schema.source)
    for upper, name in zip(uppers, groups):
        if a <= upper:
            return name
    return groups[-1]


def isic_age_group(age) -> str | None:
    """ISIC 2020 age group of ``age_approx`` (years), or ``None`` when it is missing.

    Bins (Hänel et al.'s code: ``age <= 30``, ``31 <= age <= 60``, else): ``age <= 30`` -> ``"0-30"``,
    ``30 < age <= 60`` -> ``"31-60"``, ``age > 60`` -> ``"61+"`` (the schema ``isic2020``'s ``age_group``
    categories, in order). ISIC gives ages in steps of 5; a fractional age falls in the bin whose upper
    bound it does not exceed. Their code fills a missing age with the most frequent one; here it stays
    missing (the schema excludes the case from age-group quantities).

    Raises:
        ValueError: a negative or non-numeric age.
        ManifestError: the schema's ``age_group`` does not have the three bins.
    """
    return _bin_age(age, "isic2020", _ISIC_AGE_UPPER, "isic_age_group")


def age_to_group(age) -> str | None:
    """MAMA-MIA age group of an age in years, or ``None`` when it is missing.

    Bins: ``age <= 40`` -> ``"0-40"``, ``40 < age <= 50`` -> ``"41-50"``, ``50 < age <= 60`` ->
    ``"51-60"``, ``60 < age <= 70`` -> ``"61-70"``, ``age > 70`` -> ``"71+"``. Ages in the table are
    whole years; a fractional age falls in the bin whose upper bound it does not exceed. The names
    are the schema's ``age_group`` categories, in order.

    Raises:
        ValueError: a negative or non-numeric age.
        ManifestError: the schema's ``age_group`` does not have the five bins.
    """
    return _bin_age(age, _DATASET, _AGE_UPPER, "age_to_group")


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
        ValueError: a value (any case) that is not one of the schema's ``breast_density`` categories.
    """
    if is_missing(value):
        return None
    v = str(value).strip().lower()
    categories = load_schema(_DATASET).attributes["breast_density"].categories
    if v not in categories:
        raise ValueError(f"breast density '{value}' is not one of {list(categories)}")
    return v
