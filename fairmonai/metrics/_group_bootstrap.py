"""Seeded percentile bootstrap over the evaluated samples, vectorised over replicates.

A replicate is ``N`` sample indices drawn with replacement from the evaluated set (the ``N``
samples passed in, excluded-group samples included, so the overall metric is resampled as well).
Replicates are produced in chunks of shape ``(b, N)``; every group metric computes all ``b``
replicates of a chunk at once (``bincount`` over ``b * cells`` or weighted rank sums), never one
replicate at a time.

Stratified resampling (the default in fairmonai) draws, inside each stratum ``(group, label)``
(the excluded samples forming their own strata), as many samples as the stratum holds. Every
replicate then has the original group sizes and per-group class counts, so a per-group metric that
is defined on the data (e.g. a group's AUC, which needs both classes) is defined on every replicate
and the interval reflects only the sampling of predictions within strata. Unstratified resampling
(``stratified=False``) draws ``N`` samples from the whole set, so group sizes vary between
replicates as they would between cohorts; a replicate on which a per-group value is undefined is
left out of that value's percentiles (with a warning giving the count).

Percentiles interpolate linearly between order statistics (``numpy.nanpercentile``). A statistic
built from extremes over groups (a difference ``max - min``, a ``min / max`` ratio, EOM, EOdd over
pairs) is biased away from parity under resampling, since noise only widens the spread of group
values: its percentile interval can lie beside the point estimate rather than around it. Read such
intervals as the sampling spread of the index, not as a test of parity.

Reference: B. Efron and R. J. Tibshirani, *An Introduction to the Bootstrap*, Chapman & Hall, 1993,
ch. 13 (percentile intervals).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

__all__ = [
    "BAD_N_BOOTSTRAP_MSG",
    "BAD_CONFIDENCE_MSG",
    "BOOTSTRAP_UNDEFINED_MSG",
    "check_bootstrap_args",
    "bootstrap_index_chunks",
    "percentile_interval",
]

BAD_N_BOOTSTRAP_MSG = "n_bootstrap must be an integer >= 0; got {value!r}"
BAD_CONFIDENCE_MSG = "confidence_level must lie strictly between 0 and 1; got {value!r}"
BOOTSTRAP_UNDEFINED_MSG = (
    "{metric} was undefined on {k} of {n} bootstrap replicates for {what}; its interval uses the other replicates"
)

#: largest number of (replicate, sample) index pairs held in memory at once.
_MAX_CHUNK_ELEMENTS = 1 << 22


def check_bootstrap_args(n_bootstrap, confidence_level) -> None:
    """Raise ``ValueError`` for a negative / non-integer ``n_bootstrap`` or a level outside (0, 1)."""
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(BAD_N_BOOTSTRAP_MSG.format(value=n_bootstrap))
    if not isinstance(confidence_level, (float, int, np.floating)) or not 0.0 < float(confidence_level) < 1.0:
        raise ValueError(BAD_CONFIDENCE_MSG.format(value=confidence_level))


def bootstrap_index_chunks(
    strata: np.ndarray | None, n: int, n_bootstrap: int, seed: int | None, max_elements: int = _MAX_CHUNK_ELEMENTS
) -> Iterator[np.ndarray]:
    """Yield resampling index arrays of shape ``(b, n)``, ``n_bootstrap`` rows in all.

    Args:
        strata: ``(n,)`` integer stratum of each sample, or ``None`` for unstratified resampling.
            Within a stratum of size ``m``, each replicate draws ``m`` members with replacement.
        n: number of samples.
        n_bootstrap: number of replicates.
        seed: seed of ``numpy.random.default_rng``; the same seed and data give the same replicates.
        max_elements: the largest ``b * n`` of one chunk.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_bootstrap, max_elements // max(n, 1)))
    if strata is not None:
        order = np.argsort(strata, kind="stable")
        bounds = np.flatnonzero(np.diff(strata[order])) + 1
        members = np.split(order, bounds)
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        if strata is None:
            idx = rng.integers(0, n, size=(b, n))
        else:
            idx = np.empty((b, n), dtype=np.int64)
            for mem in members:  # the columns of a stratum's members get draws from that stratum
                idx[:, mem] = mem[rng.integers(0, mem.size, size=(b, mem.size))]
        done += b
        yield idx


def percentile_interval(samples: np.ndarray, confidence_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 of bootstrap ``samples``, ignoring NaN replicates.

    .. math::
        [\\hat\\theta^*_{(\\alpha/2)},\\ \\hat\\theta^*_{(1-\\alpha/2)}], \\quad \\alpha = 1 - \\text{level}

    Returns ``(low, high)`` with the shape of ``samples[0]``; NaN where every replicate is NaN.
    """
    alpha = 1.0 - float(confidence_level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN, on purpose
        lo, hi = np.nanpercentile(samples, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)], axis=0)
    return lo, hi
