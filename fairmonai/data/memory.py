"""How much memory a bundle's ``CacheDataset`` will hold, said before it starts caching.

MONAI's ``CacheDataset`` runs the deterministic transforms of ``cache_rate`` x the cases once and keeps
the results in memory for the whole run, and before caching ends nothing else is printed, so a run
that does not fit is killed without a word. The training configs call :func:`log_cache_estimate` in
``initialize``, before the datasets are built::

    "$fairmonai.data.log_cache_estimate(len(@train#datalist) + len(@validate#datalist), 1, @image_size, cache_rate=@cache_rate)"

(MAMA-MIA: 4 channels, the three phases and the mask, at ``@roi_size``), which logs e.g.
``caching 420 cases x 1x96x96x96 float32 at cache_rate 1.0: about 1.5 GB resident`` and a warning when that exceeds the memory available now (``MemAvailable`` of ``/proc/meminfo``, or
``psutil`` where it is installed). The estimate counts the cached arrays only (no Python object
overhead, no model, no batches): a lower bound, close when the cached arrays are large. Under DDP
every process holds its own cache, so the multi-GPU configs log it once per process. Training needs
more, for the activations of each batch (at the OCT bundle's paper size, batch 64 at 96^3, far more
than the cache: the bundle's docs give the measured figures).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["estimate_cache_bytes", "available_memory_bytes", "format_bytes", "log_cache_estimate"]

_LOGGER = logging.getLogger(__name__)


def estimate_cache_bytes(n_cases: int, channels: int, spatial_shape: Sequence[int], dtype="float32",
                         cache_rate: float = 1.0) -> int:
    """Bytes of the arrays a ``CacheDataset`` keeps: cached cases x channels x voxels x item size.

    The number of cached cases is MONAI's: ``min(int(n_cases * cache_rate), n_cases)``
    (``CacheDataset`` with ``cache_num`` left at its default).

    Args:
        n_cases: cases in the dataset (all datasets that cache, added up).
        channels: channels of one cached case, all cached keys together (e.g. 3 image phases + 1 mask = 4).
        spatial_shape: the voxels of one channel after the deterministic transforms, e.g. ``[96, 96, 96]``.
        dtype: the cached arrays' dtype (a numpy or torch dtype, or its name).
        cache_rate: the fraction of cases cached, in [0, 1].

    Raises:
        ValueError: a negative count or size, or a cache rate outside [0, 1].
    """
    if n_cases < 0 or channels < 0 or any(int(s) < 0 for s in spatial_shape):
        raise ValueError(f"counts and sizes must be >= 0, got n_cases={n_cases}, channels={channels}, "
                         f"spatial_shape={list(spatial_shape)}")
    if not 0.0 <= cache_rate <= 1.0:
        raise ValueError(f"cache_rate must be in [0, 1], got {cache_rate}")
    cached = min(int(n_cases * cache_rate), n_cases)
    return cached * channels * math.prod(int(s) for s in spatial_shape) * _itemsize(dtype)


def _is_torch_dtype(dtype) -> bool:
    # by type name, so that importing fairmonai.data does not import torch (the reports CLI rejects a
    # bad file before any slow import)
    return type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype"


def _itemsize(dtype) -> int:
    if _is_torch_dtype(dtype):
        return int(dtype.itemsize)
    return int(np.dtype(dtype).itemsize)  # a numpy dtype or scalar type, or a name


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "") if _is_torch_dtype(dtype) else np.dtype(dtype).name


def available_memory_bytes() -> int | None:
    """Memory available to new allocations now: ``psutil.virtual_memory().available`` where psutil is
    installed, else ``MemAvailable`` of ``/proc/meminfo``; ``None`` where neither can be read."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # not installed, or no answer on this platform
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file gives kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def format_bytes(n: float) -> str:
    """``n`` bytes in decimal units with one decimal: ``1_528_823_808`` -> ``"1.5 GB"``."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def log_cache_estimate(n_cases: int, channels: int, spatial_shape: Sequence[int], dtype="float32",
                       cache_rate: float = 1.0, available: int | None = -1,
                       logger: logging.Logger | None = None) -> int:
    """Log the :func:`estimate_cache_bytes` of a run's caching, and warn when it exceeds the available memory.

    Logs at INFO ``caching 420 cases x 1x96x96x96 float32 at cache_rate 1.0: about 1.5 GB resident``;
    when the estimate is larger than ``available``, a WARNING naming both numbers and the remedies
    (a lower ``--cache_rate``, a smaller size, ``configs/cpu.json``). Nothing stops the run.

    Args:
        n_cases, channels, spatial_shape, dtype, cache_rate: as :func:`estimate_cache_bytes`.
        available: bytes available; ``-1`` (default) reads :func:`available_memory_bytes`, ``None``
            skips the comparison.
        logger: defaults to this module's logger.

    Returns:
        The estimate in bytes.
    """
    logger = logger or _LOGGER
    estimate = estimate_cache_bytes(n_cases, channels, spatial_shape, dtype, cache_rate)
    shape = "x".join(str(int(s)) for s in [channels, *spatial_shape])
    logger.info(f"caching {n_cases} cases x {shape} {_dtype_name(dtype)} at cache_rate {cache_rate}: "
                f"about {format_bytes(estimate)} resident")
    if available == -1:
        available = available_memory_bytes()
    if available is not None and estimate > available:
        logger.warning(f"the cache needs about {format_bytes(estimate)} but {format_bytes(available)} is available: "
                       "the run may be killed for memory; lower --cache_rate (0 caches nothing), the image size, "
                       "or use configs/cpu.json")
    return estimate
