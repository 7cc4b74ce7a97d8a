"""What the fairmonai handlers share to read MONAI engine state per sample and to write their CSV files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from monai.data import decollate_batch

__all__ = ["per_sample", "atomic_csv"]


def per_sample(data: Any, keys: Sequence[str], owner: str, *, keep_none: bool = False) -> list[dict]:
    """``data`` as a list of per-sample dicts holding only ``keys`` (those present).

    Takes what a MONAI engine leaves in ``engine.state.batch`` / ``engine.state.output``: a decollated
    list of dicts (``decollate=True``, the default), one collated dict, or ``None`` (no samples). Keys
    whose value is ``None`` are left out, except in per-sample dicts with ``keep_none``.

    Raises:
        TypeError: ``data`` is not a dict or a list of dicts (the message names ``owner``).
    """
    if data is None:
        return []
    if isinstance(data, Mapping):
        sub = {k: data[k] for k in keys if k in data and data[k] is not None}
        return decollate_batch(sub, detach=True) if sub else []
    if isinstance(data, (list, tuple)):
        out = []
        for item in data:
            if not isinstance(item, Mapping):
                raise TypeError(f"{owner} expects dicts per sample, got {type(item).__name__}")
            out.append({k: item[k] for k in keys if k in item and (keep_none or item[k] is not None)})
        return out
    raise TypeError(f"{owner} expects a dict or a list of dicts, got {type(data).__name__}")


def atomic_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` (no index, ``\\n`` line ends) to a temporary file beside ``path``, then rename it, so
    a reader never sees a half-written file; the parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        df.to_csv(tmp, index=False, lineterminator="\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
