"""Argument checks shared by losses and metrics, with their error messages as constants.

Each check returns the value it accepted (normalised where said) and otherwise raises, naming the
argument, the accepted values and the value it got; tests compare the exact text through the
message constants below. Checks of one method's own inputs (tensor layouts, group codes, per-case
scores) stay with that method; only the generic ones live here.

* :func:`check_int`, :func:`check_float`: a number in a range (``TypeError`` for a wrong type,
  ``ValueError`` for a value out of range, as MONAI's losses do).
* :func:`check_option`: a string among fixed choices, compared exactly; the message lists them.
* :func:`look_up_named_option`: MONAI's ``look_up_option`` (which also suggests the nearest spelling),
  with the argument's name in the message.
* :func:`check_lengths`: arrays with the same, non-zero number of samples.

Nothing here imports torch or MONAI at import time, so the module can be imported anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "BAD_INT_MSG",
    "BAD_FLOAT_MSG",
    "BAD_OPTION_MSG",
    "UNSUPPORTED_OPTION_MSG",
    "EMPTY_INPUT_MSG",
    "LENGTH_MISMATCH_MSG",
    "check_int",
    "check_float",
    "check_option",
    "look_up_named_option",
    "check_lengths",
]

BAD_INT_MSG = "{name} must be an int >= {low}; got {value!r}"
BAD_FLOAT_MSG = "{name} must be a finite number {cond}; got {value!r}"
BAD_OPTION_MSG = "unknown {name} {value!r}; allowed values: {allowed}"
UNSUPPORTED_OPTION_MSG = "unknown {name} {value!r}: {detail}"
EMPTY_INPUT_MSG = "empty input: {name} has no samples"
LENGTH_MISMATCH_MSG = "inconsistent numbers of samples: {first} has {n_first}, {other} has {n_other}"


def check_int(value, name: str, low: int) -> int:
    """Return ``value`` if it is an ``int`` (not a bool) ``>= low``.

    Raises:
        TypeError: ``value`` is not an ``int``, or is a bool (:data:`BAD_INT_MSG`).
        ValueError: ``value < low`` (:data:`BAD_INT_MSG`).

    Example:
        >>> check_int(3, "degree", 1)
        3
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(BAD_INT_MSG.format(name=name, low=low, value=value))
    if value < low:
        raise ValueError(BAD_INT_MSG.format(name=name, low=low, value=value))
    return value


def check_float(value, name: str, *, low: float = 0.0, high: float | None = None, strict: bool = False) -> float:
    """Return ``float(value)`` if it is a finite real in ``[low, high]`` (``(low, high]`` if ``strict``).

    Without ``high`` the range is ``[low, inf)`` (``(low, inf)`` if ``strict``); ``strict`` opens the
    lower end only.

    Args:
        value: an ``int`` or ``float`` (not a bool).
        name: the argument's name, for the message.
        low: lower bound. Default 0.
        high: upper bound (inclusive), or ``None`` for none. Default ``None``.
        strict: exclude ``low`` itself. Default ``False``.

    Raises:
        TypeError: ``value`` is not an ``int`` or ``float``, or is a bool (:data:`BAD_FLOAT_MSG`).
        ValueError: NaN, infinite or out of range (:data:`BAD_FLOAT_MSG`, naming the range).

    Example:
        >>> check_float(1, "mu")
        1.0
    """
    if high is None:
        cond = f"> {low}" if strict else f">= {low}"
    else:
        cond = f"in ({low}, {high}]" if strict else f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(BAD_FLOAT_MSG.format(name=name, cond=cond, value=value))
    v = float(value)
    bad = not math.isfinite(v) or (v <= low if strict else v < low) or (high is not None and v > high)
    if bad:
        raise ValueError(BAD_FLOAT_MSG.format(name=name, cond=cond, value=value))
    return v


def check_option(value, allowed: Sequence[str], name: str) -> str:
    """Return ``value`` if it is a string equal to one of ``allowed``.

    Raises:
        ValueError: anything else (:data:`BAD_OPTION_MSG`, listing ``allowed``).

    Example:
        >>> check_option("mean", ("worst_case", "mean"), "agg")
        'mean'
    """
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(BAD_OPTION_MSG.format(name=name, value=value, allowed=list(allowed)))
    return value


def look_up_named_option(value, allowed, name: str):
    """``monai.utils.look_up_option(value, allowed)`` with the argument's name in the error.

    MONAI's lookup also accepts an ``Enum`` member of ``allowed`` and, for a misspelt string, suggests
    the nearest option; its message is kept after the argument's name.

    Raises:
        ValueError: ``value`` is not one of ``allowed`` (:data:`UNSUPPORTED_OPTION_MSG`, whose
            ``detail`` is MONAI's message listing the options).

    Example:
        >>> look_up_named_option("zero", ("zero", "lower_degree"), "small_group")
        'zero'
    """
    from monai.utils import look_up_option  # imported here: MONAI imports torch

    try:
        return look_up_option(value, allowed)
    except ValueError as err:
        raise ValueError(UNSUPPORTED_OPTION_MSG.format(name=name, value=value, detail=str(err).strip())) from err


def check_lengths(**arrays) -> int:
    """Check that every given array has the same number of samples (first dimension); return it.

    ``None`` values are skipped; a 0-d array counts as one sample. The first array given is the
    one the others are compared with.

    Args:
        arrays: ``name=array``, each with ``ndim`` and ``shape`` (numpy arrays, torch tensors).

    Raises:
        ValueError: two lengths differ (:data:`LENGTH_MISMATCH_MSG`, naming both arrays and
            lengths), or there are no samples (:data:`EMPTY_INPUT_MSG`, naming the first array).

    Example:
        >>> import numpy as np
        >>> check_lengths(y_true=np.zeros(4), y_pred=np.ones(4), sample_weight=None)
        4
    """
    items = [(k, v) for k, v in arrays.items() if v is not None]
    first, a = items[0]
    n = a.shape[0] if a.ndim else 1
    for other, b in items[1:]:
        m = b.shape[0] if b.ndim else 1
        if m != n:
            raise ValueError(LENGTH_MISMATCH_MSG.format(first=first, n_first=n, other=other, n_other=m))
    if n == 0:
        raise ValueError(EMPTY_INPUT_MSG.format(name=first))
    return n
