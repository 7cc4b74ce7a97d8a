"""Checkpoint files written by the bundles' trainers: finding the one to resume from."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["latest_checkpoint"]

_EPOCH = re.compile(r"epoch=(\d+)")


def latest_checkpoint(ckpt_dir: str | os.PathLike, prefix: str = "checkpoint") -> str:
    """Path of the newest per-epoch checkpoint ``<prefix>*epoch=<N>.pt`` in ``ckpt_dir`` (largest N).

    The bundles' trainers save the model, optimiser and trainer state there every epoch
    (``CheckpointSaver(file_prefix="checkpoint", save_interval=1)``); resuming loads this file.

    Raises:
        FileNotFoundError: no such checkpoint, naming the folder and the pattern.
    """
    folder = Path(ckpt_dir)
    found = []
    for p in folder.glob(f"{prefix}*.pt") if folder.is_dir() else []:
        m = _EPOCH.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    if not found:
        raise FileNotFoundError(
            f"resume requested but no checkpoint '{prefix}*epoch=N.pt' in {folder}; train without resume first"
        )
    return str(max(found)[1])
