"""How a sensitive attribute travels from the manifest to losses, metrics and handlers.

A manifest record carries each attribute twice: its value (``"race": "Black"``) and its integer code,
the value's position in the schema's ``categories`` (``"race_code": 1``). A case whose value is
missing and whose attribute uses the missing-value policy ``exclude`` gets the value
:data:`EXCLUDED_VALUE` and the code :data:`EXCLUDED_CODE`; losses and metrics leave such cases out of
every group. This module is the one definition of those conventions: :mod:`fairmonai.data` writes
them, :mod:`fairmonai.losses`, :mod:`fairmonai.metrics` and :mod:`fairmonai.handlers` read them,
and none of those needs to import another for it.
"""

from __future__ import annotations

import math

__all__ = ["EXCLUDED_CODE", "EXCLUDED_VALUE", "MISSING_TOKENS", "code_key", "is_missing"]

#: group code of a case that the missing-value policy ``exclude`` left out of its attribute's groups.
EXCLUDED_CODE = -1
#: the value written for such a case (in records, per-case CSVs and reports).
EXCLUDED_VALUE = "unknown"
#: cell contents read as "no value" (besides an empty cell, ``None`` and a float NaN).
MISSING_TOKENS = frozenset({"", "nan", "NaN", "NA", "N/A", "null", "None"})


def code_key(attribute: str) -> str:
    """The record key holding ``attribute``'s integer code.

    Example:
        >>> code_key("race")
        'race_code'
    """
    return f"{attribute}_code"


def is_missing(value) -> bool:
    """True for ``None``, a float NaN, or a cell whose stripped text is one of :data:`MISSING_TOKENS`.

    Example:
        >>> [is_missing(v) for v in (None, float("nan"), " NA ", "Black", 0)]
        [True, True, True, False, False]
    """
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return str(value).strip() in MISSING_TOKENS
