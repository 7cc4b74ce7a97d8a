"""Cost of Hänel et al.'s fairness losses against an EfficientNet-B1 training step, and the data wait.

Three measurements (issue 18's performance requirement: each loss, forward and backward at batch 256,
under 2 % of a training step; the share of a step spent waiting for data):

1. **Loss alone.** For each of ``dp_l2``, ``dp_mi``, ``eo_l2``, ``eo_mi``, ``iou`` (the
   ``fairmonai.losses`` modules the bundle's overlays build, with their reductions: ``"sum"``,
   ``"mean"`` for IoU): forward and backward of ``FairnessLossWithCE(loss, lam=1)`` on seeded
   ``(B, 2)`` logits with balanced targets and ``K_s`` balanced group codes, minus the same for
   ``lam=0`` (the cross entropy alone, which the baseline pays anyway). Median over ``--repeats``.
2. **Training step.** ``zero_grad -> forward -> weighted CE -> backward -> Adam step`` of MONAI's
   ``EfficientNetBN("efficientnet-b1", spatial_dims=2, num_classes=2, pretrained=False)`` at
   ``(B, 3, S, S)``, median over ``--steps`` after ``--warmup``. On a CPU the paper's 240 x 240 at
   batch 256 does not fit the time (or the memory of a small machine): ``--size`` lower makes the step
   *cheaper*, so a loss share measured against it is an upper bound of the share at 240.
3. **Data wait.** The bundle's own training data loader (``train#dataloader`` of
   ``bundles/isic2020_fairness_losses`` with the given overlays, e.g. ``cpu.json``): one epoch
   (after a first epoch that fills the image cache), timing each ``next(loader)`` and each
   training step on the batch (the bundle's network, loss and optimiser). The share is
   wait / (wait + step).

    python benchmarks/bench_fairness_loss_step.py [--batch 256] [--size 64] [--steps 5] [--warmup 2]
        [--groups 2] [--repeats 50] [--threads 2] [--overlays cpu.json] [--skip-data]
        [--out benchmarks/results/fairness_loss_step.json]

CUDA when available (``torch.cuda.synchronize`` around every timing), else CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from fairmonai.losses import (DemographicParityL2Loss, DemographicParityMILoss, EqualizedOddsL2Loss,
                              EqualizedOddsMILoss, FairnessLossWithCE, IoUParityLoss)

LOSSES = {
    "dp_l2": (DemographicParityL2Loss, "sum"),
    "dp_mi": (DemographicParityMILoss, "sum"),
    "eo_l2": (EqualizedOddsL2Loss, "sum"),
    "eo_mi": (EqualizedOddsMILoss, "sum"),
    "iou": (IoUParityLoss, "mean"),
}
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "isic2020_fairness_losses"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


def loss_times(batch: int, groups: int, repeats: int, device: torch.device) -> dict[str, dict]:
    """Median seconds of forward + backward of CE + each loss, and of CE alone (``ce``)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, 2, generator=g).to(device)
    target = (torch.arange(batch) % 2).to(device)
    sensitive = (torch.randperm(batch, generator=g) % groups).to(device)
    weights = torch.tensor([0.3, 1.7])

    def step(loss):
        z = logits.clone().requires_grad_(True)
        loss(z, target, sensitive=sensitive).backward()

    ce = FairnessLossWithCE(DemographicParityL2Loss(num_groups=groups), lam=0.0, class_weights=weights).to(device)
    res = {"ce": {"median_s": statistics.median(_timed(lambda: step(ce), device, repeats))}}
    for name, (cls, reduction) in LOSSES.items():
        loss = FairnessLossWithCE(cls(num_groups=groups, reduction=reduction), lam=1.0, class_weights=weights).to(device)
        t = statistics.median(_timed(lambda: step(loss), device, repeats))
        res[name] = {"median_s": t, "extra_s": t - res["ce"]["median_s"]}
    return res


def train_step_time(batch: int, size: int, steps: int, warmup: int, device: torch.device) -> float:
    """Median seconds of one EfficientNet-B1 training step (weighted CE, Adam)."""
    from monai.networks.nets import EfficientNetBN

    torch.manual_seed(0)
    net = EfficientNetBN("efficientnet-b1", spatial_dims=2, in_channels=3, num_classes=2, pretrained=False).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size, device=device)
    y = (torch.arange(batch, device=device) % 2)
    w = torch.tensor([0.3, 1.7], device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y, weight=w).backward()
        opt.step()

    return statistics.median(_timed(step, device, steps, warmup))


def data_wait(overlays: list[str], device: torch.device) -> dict:
    """Wait for each batch vs. the training step on it, over one epoch of the bundle's loader (second epoch)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json"), *[str(BUNDLE / "configs" / o) for o in overlays]])
    tmp = tempfile.mkdtemp(prefix="bench_isic_")
    parser["bundle_root"] = tmp
    parser["dataset_dir"] = tmp + "/data"
    parser["device"] = f"$torch.device('{device}')"
    loader = parser.get_parsed_content("train#dataloader")
    net = parser.get_parsed_content("network")
    loss = parser.get_parsed_content("loss")
    opt = parser.get_parsed_content("optimizer")
    for _ in loader:  # first epoch: fills the persistent cache
        pass
    waits, steps = [], []
    it = iter(loader)
    while True:
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        waits.append(time.perf_counter() - t)
        x, y = batch["image"].to(device), batch["label"].to(device)
        _sync(device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss(net(x), y).backward()
        opt.step()
        _sync(device)
        steps.append(time.perf_counter() - t)
    wait, step = sum(waits), sum(steps)
    return {"overlays": overlays, "batches": len(waits), "batch_size": int(parser["batch_size"]),
            "image_size": list(parser["image_size"]), "num_workers": int(parser["num_workers"]),
            "wait_s": wait, "step_s": step, "wait_share": wait / (wait + step)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=None, help="image side of the timed step (CUDA 240, CPU 64)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--overlays", nargs="*", default=["cpu.json"])
    ap.add_argument("--skip-data", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/fairness_loss_step.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = a.size or (240 if device.type == "cuda" else 64)
    losses = loss_times(a.batch, a.groups, a.repeats, device)
    step = train_step_time(a.batch, size, a.steps, a.warmup, device)
    print(f"device {device}, {a.threads} threads; batch {a.batch}, K_s {a.groups}")
    print(f"EfficientNet-B1 training step at {size}x{size}: {step:.3f} s (median of {a.steps})")
    print(f"{'loss':8s} {'fwd+bwd (s)':>12s} {'extra over CE (s)':>18s} {'share of step':>14s}")
    for name, r in losses.items():
        extra = r.get("extra_s", r["median_s"])
        r["share_of_step"] = extra / step
        print(f"{name:8s} {r['median_s']:12.6f} {extra:18.6f} {100 * r['share_of_step']:13.4f}%")
    result = {"device": str(device), "threads": a.threads, "batch": a.batch, "groups": a.groups, "step_size": size,
              "train_step_s": step, "losses": losses, "platform": platform.platform(), "torch": torch.__version__}
    if not a.skip_data:
        d = data_wait(a.overlays, device)
        result["data_wait"] = d
        print(f"data wait over one epoch of the bundle's loader ({', '.join(a.overlays) or 'train.json'}: batch "
              f"{d['batch_size']}, {d['image_size']}, {d['num_workers']} workers, {d['batches']} batches): "
              f"{d['wait_s']:.2f} s waiting, {d['step_s']:.2f} s stepping, {100 * d['wait_share']:.1f}% of the time")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
