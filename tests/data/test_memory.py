"""fairmonai.data.memory: the cache estimate against bytes computed by hand and against MONAI's own cache."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fairmonai.data.memory import available_memory_bytes, estimate_cache_bytes, format_bytes, log_cache_estimate


def test_oct_paper_size_by_hand():
    # 420 cases (train 336 + val 84 of the 600-case synthetic cohort) x 1 x 96^3 float32:
    # 96^3 = 884,736 voxels x 4 bytes = 3,538,944 bytes per case; x 420 = 1,486,356,480
    assert estimate_cache_bytes(420, 1, [96, 96, 96], "float32", 1.0) == 1_486_356_480
    assert format_bytes(1_486_356_480) == "1.5 GB"


def test_mama_cpu_size_by_hand():
    # 3 phases + 1 mask at 48x48x32 float32: 4 x 73,728 voxels x 4 bytes = 1,179,648 bytes per case
    assert estimate_cache_bytes(10, 4, (48, 48, 32), torch.float32, 1.0) == 11_796_480
    # float16 halves it; numpy dtypes are accepted too
    assert estimate_cache_bytes(10, 4, (48, 48, 32), np.float16, 1.0) == 5_898_240


def test_cache_rate_counts_cases_as_monai_does():
    # CacheDataset caches min(int(n * rate), n) cases: int(7 * 0.5) = 3 cases of 2x2x2x1 float32 = 32 bytes
    assert estimate_cache_bytes(7, 1, [2, 2, 2], "float32", 0.5) == 3 * 32
    assert estimate_cache_bytes(7, 1, [2, 2, 2], "float32", 0.0) == 0


def test_matches_monai_cache():
    """The estimate equals the bytes of the tensors CacheDataset actually holds (an independent count)."""
    from monai.data import CacheDataset
    from monai.transforms import EnsureTyped

    data = [{"image": np.zeros((1, 5, 6, 7), dtype=np.float64)} for _ in range(9)]
    ds = CacheDataset(data, EnsureTyped("image", dtype=torch.float32, track_meta=False), cache_rate=0.5,
                      progress=False)
    held = sum(item["image"].element_size() * item["image"].nelement() for item in ds._cache if item is not None)
    assert held == estimate_cache_bytes(9, 1, [5, 6, 7], "float32", 0.5) == 4 * 210 * 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="cache_rate"):
        estimate_cache_bytes(1, 1, [2], cache_rate=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        estimate_cache_bytes(-1, 1, [2])


def test_log_and_warn(caplog):
    caplog.set_level(logging.INFO, logger="fairmonai.data.memory")
    n = log_cache_estimate(420, 1, [96, 96, 96], cache_rate=1.0, available=10**9)
    assert n == 1_486_356_480
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages[0] == ("INFO", "caching 420 cases x 1x96x96x96 float32 at cache_rate 1.0: about 1.5 GB resident")
    assert messages[1][0] == "WARNING"
    assert "about 1.5 GB but 1.0 GB is available" in messages[1][1]
    caplog.clear()
    log_cache_estimate(420, 1, [96, 96, 96], available=2 * 10**9)
    assert [r.levelname for r in caplog.records] == ["INFO"]


def test_available_memory_reads_meminfo():
    with open("/proc/meminfo") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    got = available_memory_bytes()
    # the two reads are moments apart: equal within 5 % of the total
    assert got is not None and abs(got - kb * 1024) < 0.05 * kb * 1024 + 64 * 2**20
