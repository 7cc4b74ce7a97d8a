"""Per-image VAE metrics and their writers: what the Fitzpatrick17k VAE bundle evaluates.

The engines run :class:`~fairmonai.networks.VAEPosteriorOutput`, so ``engine.state.output["pred"]`` is
``(reconstruction, mu, log_var)`` for the batch (the engines are built with ``decollate=False``), and the
target is the image itself (:func:`image_target_batch`). In eval mode the reconstruction is
``decode(mu)``. Per image (López-Pérez et al.):

* ``mse``: mean over ``C x H x W`` of ``(decode(mu) - x)^2`` on the ``[-1, 1]`` scale;
* ``latent_std``: mean over the ``L x h x w`` latent elements of ``exp(0.5 log_var)``.

:class:`ReconstructionMetric` is the ignite metric of either (the mean over images, summed across
ranks before dividing); :class:`ReconstructionWriter` writes the per-image table, the per-run table and
``report.json`` of an evaluation, and a few reconstructions for the figures; :class:`LossTermsLogger`
writes the training loss terms.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from ._samples import atomic_csv

__all__ = ["per_image_values", "image_target_batch", "ReconstructionMetric", "ReconstructionWriter",
           "LossTermsLogger", "METRIC_KINDS", "PER_IMAGE_COLUMNS"]

METRIC_KINDS = ("mse", "latent_std")
#: the record keys copied into the per-image table, when present.
PER_IMAGE_COLUMNS = ("case_id", "tone_group", "fitzpatrick", "label_name", "condition", "nine_partition_label")


def per_image_values(recon: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
                     image: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"mse": (B,), "latent_std": (B,)}`` (module docstring) from ``(B, C, H, W)`` images and ``(B, L, h, w)`` latents.

    Raises:
        ValueError: reconstruction and image shapes differ, naming both.
    """
    if recon.shape != image.shape:
        raise ValueError(f"reconstruction shape {tuple(recon.shape)} differs from the image's {tuple(image.shape)}")
    mse = (recon.float() - image.float()).pow(2).flatten(1).mean(1)
    std = torch.exp(0.5 * log_var.float()).flatten(1).mean(1)
    return {"mse": mse, "latent_std": std}


def image_target_batch(batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
    """``prepare_batch`` of a VAE: ``(image, image)``, the image being its own target."""
    image = batchdata["image"]
    if isinstance(image, torch.Tensor):
        image = image.to(device=device, non_blocking=non_blocking)
        image = image.as_tensor() if hasattr(image, "as_tensor") else image
    return image, image


def _pred_and_image(output: Mapping) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
    return output["pred"], output["label"]


class ReconstructionMetric(Metric):
    """Mean per-image ``mse`` or ``latent_std`` over an epoch (ignite metric; distributed sums).

    Args:
        kind: ``"mse"`` or ``"latent_std"``.
        output_transform: engine output -> ``((recon, mu, log_var), image)``; default reads ``pred`` and ``label``.
        device: where the running sums live.

    Raises:
        ValueError: an unknown kind (options listed).
    """

    def __init__(self, kind: str = "mse", output_transform: Callable = _pred_and_image, device="cpu") -> None:
        if kind not in METRIC_KINDS:
            raise ValueError(f"kind '{kind}' is not one of {list(METRIC_KINDS)}")
        self.kind = kind
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.tensor(0.0, dtype=torch.float64, device=self._device)
        self._count = torch.tensor(0.0, dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output) -> None:
        (recon, mu, log_var), image = output
        v = per_image_values(recon, mu, log_var, image)[self.kind]
        self._sum += v.detach().double().sum().to(self._device)
        self._count += v.numel()

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        if self._count.item() == 0:
            raise RuntimeError(f"ReconstructionMetric({self.kind}): no images were seen")
        return float(self._sum.item() / self._count.item())


def _column(batch: Mapping, key: str, n: int) -> list:
    v = batch.get(key)
    if v is None:
        return [""] * n
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return [str(x) for x in v]


class ReconstructionWriter:
    """Writes an evaluation's per-image values, its per-run summary and a few reconstructions.

    Files (``output_dir``): ``filename`` (per image: the record columns of :data:`PER_IMAGE_COLUMNS`
    present, ``mse``, ``latent_std``); with ``report_dir`` also ``<report_dir>/runs.csv`` (one row per
    tone group and ``all``: ``n_images``, mean and sd of ``mse`` and ``latent_std``, plus ``run_info``),
    ``<report_dir>/report.json`` (the same with ``run_info`` and the file names) and
    ``<report_dir>/examples.npz`` (the first ``n_examples`` images of each tone group in evaluation
    order and their reconstructions, uint8 ``(N, H, W, 3)``, with their case ids).

    Args:
        output_dir: folder of the files.
        filename: per-image CSV name.
        report_dir: folder (under ``output_dir``) of the run summary, or ``None`` for none (inference).
        run_info: JSON-able facts about the run copied into the summary (mix, repeat, seed, VGG weights...).
        n_examples: images per tone group kept for the reconstruction grids. Default 8.
        enabled: ``False`` attaches nothing (the bundles' rank-0 switch).
    """

    def __init__(self, output_dir: str | os.PathLike, filename: str = "reconstruction.csv",
                 report_dir: str | None = None, run_info: Mapping[str, Any] | None = None, n_examples: int = 8,
                 enabled: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.filename = filename
        self.report_dir = report_dir
        self.run_info = json.loads(json.dumps(dict(run_info or {}), default=str))
        self.n_examples = int(n_examples)
        self.enabled = enabled
        self._rows: list[dict] = []
        self._examples: dict[str, list] = {}

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._rows, self._examples = [], {}

    def _collect(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        recon, mu, log_var = output["pred"]
        image = output["label"]
        values = per_image_values(recon, mu, log_var, image)
        n = recon.shape[0]
        cols = {k: _column(batch, k, n) for k in PER_IMAGE_COLUMNS if k in batch}
        mse, std = values["mse"].cpu().tolist(), values["latent_std"].cpu().tolist()
        groups = cols.get("tone_group", ["all"] * n)
        for i in range(n):
            row = {k: v[i] for k, v in cols.items()}
            row.update(mse=mse[i], latent_std=std[i])
            self._rows.append(row)
            kept = self._examples.setdefault(groups[i], [])
            if len(kept) < self.n_examples:
                kept.append((row.get("case_id", str(len(self._rows))), _to_uint8(image[i]), _to_uint8(recon[i])))

    def _write(self, engine: Engine) -> None:
        table = pd.DataFrame(self._rows)
        atomic_csv(table, self.output_dir / self.filename)
        if self.report_dir is None:
            return
        folder = self.output_dir / self.report_dir
        folder.mkdir(parents=True, exist_ok=True)
        per_group = run_summary(table)
        summary = per_group.copy()
        for k, v in self.run_info.items():
            if isinstance(v, dict):  # e.g. the draw's counts: one column each
                for k2, v2 in v.items():
                    summary[f"{k}_{k2}"] = v2 if not isinstance(v2, (list, dict)) else json.dumps(v2)
            else:
                summary[k] = v if not isinstance(v, list) else json.dumps(v)
        atomic_csv(summary, folder / "runs.csv")
        groups = {r["group"]: {k: r[k] for k in ("n_images", "mse_mean", "mse_sd", "latent_std_mean", "latent_std_sd")}
                  for r in per_group.to_dict("records")}
        report = {"run": self.run_info, "groups": groups, "per_image": str(self.output_dir / self.filename)}
        if "light" in groups and "dark" in groups:
            report["dark_minus_light"] = {m: groups["dark"][f"{m}_mean"] - groups["light"][f"{m}_mean"]
                                          for m in ("mse", "latent_std")}
        (folder / "report.json").write_text(json.dumps(report, indent=2))
        arrays = {}
        for g, kept in self._examples.items():
            arrays[f"{g}_case_id"] = np.array([k[0] for k in kept])
            arrays[f"{g}_image"] = np.stack([k[1] for k in kept])
            arrays[f"{g}_recon"] = np.stack([k[2] for k in kept])
        np.savez_compressed(folder / "examples.npz", **arrays)


def run_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per tone group (and ``all``) of a per-image table: ``n_images``, mean and sd of each metric."""
    rows = []
    parts = [("all", table)]
    if "tone_group" in table:
        parts += [(g, table[table["tone_group"] == g]) for g in ("light", "dark") if (table["tone_group"] == g).any()]
    for g, t in parts:
        rows.append({"group": g, "n_images": len(t), "mse_mean": float(t["mse"].mean()),
                     "mse_sd": float(t["mse"].std(ddof=1)) if len(t) > 1 else float("nan"),
                     "latent_std_mean": float(t["latent_std"].mean()),
                     "latent_std_sd": float(t["latent_std"].std(ddof=1)) if len(t) > 1 else float("nan")})
    return pd.DataFrame(rows)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in ``[-1, 1]`` -> ``(H, W, 3)`` uint8."""
    a = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return a.permute(1, 2, 0).numpy()


class LossTermsLogger:
    """Appends the VAE loss terms (:attr:`fairmonai.losses.VAELoss.last_terms`) of every ``every_n``-th
    iteration to ``<output_dir>/loss_terms.csv`` (columns ``epoch``, ``iteration``, ``recon``, ``kl``,
    ``perceptual``, ``loss``, ``kl_weight``, ``perceptual_weight``, ``form``), written at each epoch end.

    Args:
        loss: the :class:`~fairmonai.losses.VAELoss` of the trainer.
        output_dir: folder of the CSV.
        every_n: iteration interval. Default 1.
        enabled: ``False`` attaches nothing (rank 0 only writes).
    """

    def __init__(self, loss, output_dir: str | os.PathLike, every_n: int = 1, enabled: bool = True) -> None:
        self.loss, self.path, self.every_n, self.enabled = loss, Path(output_dir) / "loss_terms.csv", int(every_n), enabled
        self._rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n), self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        t = dict(self.loss.last_terms)
        self._rows.append({"epoch": engine.state.epoch, "iteration": engine.state.iteration, **t,
                           "kl_weight": self.loss.kl_weight, "perceptual_weight": self.loss.perceptual_weight,
                           "form": self.loss.form})

    def _write(self, engine: Engine) -> None:
        if not self._rows:
            return
        new = pd.DataFrame(self._rows)
        old = pd.read_csv(self.path) if self.path.is_file() else None
        if old is not None:
            old = old[old["iteration"] < new["iteration"].min()]
            new = pd.concat([old, new], ignore_index=True)
        atomic_csv(new, self.path)
        self._rows = []
