"""The shared argument checks: accepted values come back (normalised), others raise with the exact text.

Expected messages are written out by hand, so a change to a message constant shows here. The callers'
own tests (tests/losses, tests/metrics) check that each argument reaches these checks with its name.
"""

import math

import numpy as np
import pytest
import torch

from fairmonai.validation import (
    check_float,
    check_int,
    check_lengths,
    check_option,
    look_up_named_option,
)


def raised(fn, *args, **kwargs) -> tuple[type, str]:
    with pytest.raises((TypeError, ValueError)) as e:
        fn(*args, **kwargs)
    return e.type, str(e.value)


# ------------------------------------------------------------------ check_int


@pytest.mark.parametrize("value, low", [(1, 1), (7, 1), (0, 0), (2, 2)])
def test_check_int_accepts(value, low):
    out = check_int(value, "n", low)
    assert out == value and type(out) is int


@pytest.mark.parametrize(
    "value, low, exc, msg",
    [
        (0, 1, ValueError, "degree must be an int >= 1; got 0"),
        (1, 2, ValueError, "degree must be an int >= 2; got 1"),
        (1.5, 1, TypeError, "degree must be an int >= 1; got 1.5"),
        (2.0, 1, TypeError, "degree must be an int >= 1; got 2.0"),  # an integral float is still a float
        (True, 0, TypeError, "degree must be an int >= 0; got True"),  # a bool is no int here
        ("3", 1, TypeError, "degree must be an int >= 1; got '3'"),
    ],
)
def test_check_int_rejects(value, low, exc, msg):
    assert raised(check_int, value, "degree", low) == (exc, msg)


# ------------------------------------------------------------------ check_float


@pytest.mark.parametrize(
    "value, kwargs, expected",
    [
        (0, {}, 0.0),  # [0, inf) by default: 0 included
        (3, {}, 3.0),  # an int comes back as a float
        (1.0, {"high": 1.0}, 1.0),  # the upper end is always included
        (1.0, {"high": 1.0, "strict": True}, 1.0),
        (0.25, {"low": 0.0, "high": 1.0, "strict": True}, 0.25),
        (-2.5, {"low": -3.0}, -2.5),
    ],
)
def test_check_float_accepts(value, kwargs, expected):
    out = check_float(value, "x", **kwargs)
    assert out == expected and type(out) is float


@pytest.mark.parametrize(
    "value, kwargs, exc, msg",
    [
        (-0.1, {}, ValueError, "ridge must be a finite number >= 0.0; got -0.1"),
        (0, {"strict": True}, ValueError, "ridge must be a finite number > 0.0; got 0"),
        (1.5, {"high": 1.0}, ValueError, "ridge must be a finite number in [0.0, 1.0]; got 1.5"),
        (0.0, {"high": 1.0, "strict": True}, ValueError, "ridge must be a finite number in (0.0, 1.0]; got 0.0"),
        (math.nan, {}, ValueError, "ridge must be a finite number >= 0.0; got nan"),
        (math.inf, {}, ValueError, "ridge must be a finite number >= 0.0; got inf"),
        ("0.5", {}, TypeError, "ridge must be a finite number >= 0.0; got '0.5'"),
        (False, {}, TypeError, "ridge must be a finite number >= 0.0; got False"),
        (None, {"high": 1.0}, TypeError, "ridge must be a finite number in [0.0, 1.0]; got None"),
    ],
)
def test_check_float_rejects(value, kwargs, exc, msg):
    assert raised(check_float, value, "ridge", **kwargs) == (exc, msg)


# ------------------------------------------------------------------ options


def test_check_option():
    assert check_option("mean", ("worst_case", "mean"), "agg") == "mean"
    assert raised(check_option, "pairs", ("between_groups", "to_overall"), "method") == (
        ValueError, "unknown method 'pairs'; allowed values: ['between_groups', 'to_overall']")
    # compared exactly: no case folding, and a non-string is refused with the same message
    assert raised(check_option, "Mean", ("worst_case", "mean"), "agg") == (
        ValueError, "unknown agg 'Mean'; allowed values: ['worst_case', 'mean']")
    assert raised(check_option, 1, ("a",), "agg") == (ValueError, "unknown agg 1; allowed values: ['a']")


def test_look_up_named_option():
    assert look_up_named_option("zero", ("zero", "lower_degree"), "small_group") == "zero"
    exc, msg = raised(look_up_named_option, "drop", ("zero", "lower_degree"), "small_group")
    # the argument's name first, then MONAI's own message listing the options
    assert exc is ValueError
    assert msg.startswith("unknown small_group 'drop': ")
    assert "'zero'" in msg and "'lower_degree'" in msg
    # MONAI suggests the nearest spelling of a near miss
    _, msg = raised(look_up_named_option, "multivariat", ("per_dimension", "multivariate"), "basis")
    assert msg.startswith("unknown basis 'multivariat': ") and "did you mean 'multivariate'?" in msg


# ------------------------------------------------------------------ check_lengths


def test_check_lengths_returns_the_common_length():
    assert check_lengths(y_true=np.zeros(4), y_pred=torch.ones(4, 2), sample_weight=None) == 4
    assert check_lengths(y=np.float64(1.0)) == 1  # a 0-d array is one sample


def test_check_lengths_names_both_arrays():
    assert raised(check_lengths, y_true=np.zeros(10), y_score=np.zeros(10), sensitive_features=np.zeros(9)) == (
        ValueError, "inconsistent numbers of samples: y_true has 10, sensitive_features has 9")


def test_check_lengths_empty():
    assert raised(check_lengths, y_true=np.zeros(0), y_pred=np.zeros(0)) == (
        ValueError, "empty input: y_true has no samples")
