"""Time per training step of CE alone, CE+FaMI, CE+MINE and CE+MIGE, for DenseNet121 and a ViT.

One fixed, seeded batch (volumes ``(B, 1, S, S, S)``, balanced binary labels, three balanced group
codes 0..2). For each network and each method a fresh network is built from the same seed, with the
bundle's optimizer (``SGD``, lr 1e-4, momentum 0, weight decay 0.01; for MINE the critic's
parameters in a second group with the bundle's ``mine_critic_lr`` 1e-3) and the loss
``FairnessRegularizedLoss(CrossEntropyLoss(), penalty, mu=0.5)`` (``penalty=None`` for CE alone).
A timed step is the whole training step::

    zero_grad -> forward -> loss(logits, y, sensitive=u) -> backward -> clip_grad_norm_(net, 1.0) -> step

timed with ``time.perf_counter`` (``torch.cuda.synchronize()`` before and after on CUDA). By
default the four methods of a network run interleaved: every round runs one step of each method,
in an order rotated from round to round, so that a slow spell of a shared machine hits all methods
alike; ``--schedule sequential`` runs all steps of one method, then the next. Reported per method:
median and interquartile range of the step time, the ratio of its median to CE alone's, and (in
the interleaved schedule) the median and quartiles of the per-round paired ratio ``t_method /
t_CE``, which cancels most of the machine's drift.

Peak memory. On CUDA: ``torch.cuda.max_memory_allocated`` over each step, reported as the
absolute peak (in the interleaved schedule this includes the other methods' resident networks) and
as the step's transient above the memory allocated when it starts (activations, gradients,
penalty workspace), plus the resident size of the method's parameters. On CPU: the process's
high-water RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) before and after each network's runs
(and, in the sequential schedule, each method's) -- coarse: a high-water mark only grows, allocator
caching hides frees, and it cannot separate the methods of an interleaved run.

The penalty alone: forward + backward of each penalty on a seeded ``(B, 2)`` tensor (the logits'
shape) with the same group codes, many repeats, so the overhead is visible without the network's
noise; CE alone on the same tensor is the reference row.

    python benchmarks/bench_penalty_step.py [--batch B] [--size S] [--steps N] [--warmup 3]
        [--networks dn vit] [--vit-small] [--threads 2] [--schedule interleaved|sequential]
        [--penalty-repeats 200] [--seed 0] [--out benchmarks/results/penalty_step.json]

Defaults: CUDA when available (batch 64, side 96, 50 steps, ViT-B/16), else CPU (batch 8, side 32,
20 steps); on CPU pass ``--vit-small`` (hidden 192, 4 layers, 3 heads, MLP 768, patch 16).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

import torch
from torch import nn

METHODS = ("ce", "fami", "mine", "mige")
LABELS = {"ce": "CE alone", "fami": "CE+FaMI", "mine": "CE+MINE", "mige": "CE+MIGE"}
NET_LABELS = {"dn": "DenseNet121", "vit": "ViT"}
NUM_GROUPS = 3
MU = 0.5
LR = 1e-4  # bundles/oct_glaucoma_fami/configs/train.json
MOMENTUM = 0.0
WEIGHT_DECAY = 0.01
MINE_CRITIC_LR = 1e-3  # configs/method_mine.json
GRAD_CLIP = 1.0
VIT_BASE = {"hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12, "patch_size": 16}
VIT_SMALL = {"hidden_size": 192, "mlp_dim": 768, "num_layers": 4, "num_heads": 3, "patch_size": 16}
MIB = 2.0 ** 20


# ----------------------------------------------------------------------------------------------- setup
def make_batch(batch: int, size: int, seed: int, device: torch.device):
    """Seeded volumes, balanced binary labels ``(B,)`` and balanced group codes 0..2 ``(B,)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, size, size, size, generator=g)
    y = (torch.arange(batch) % 2)[torch.randperm(batch, generator=g)]
    u = (torch.arange(batch) % NUM_GROUPS)[torch.randperm(batch, generator=g)]
    return x.to(device), y.to(device), u.to(device)


def make_network(name: str, size: int, vit_sizes: dict) -> nn.Module:
    if name == "dn":
        from monai.networks.nets import DenseNet121

        return DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
    from fairmonai.networks import ViTClassifier

    return ViTClassifier(in_channels=1, img_size=size, num_classes=2, **vit_sizes)


def make_penalty(method: str) -> nn.Module | None:
    from fairmonai.losses import FaMIPenalty, MIGEPenalty, MINEPenalty

    if method == "ce":
        return None
    if method == "fami":
        return FaMIPenalty(degree=1)
    if method == "mine":
        return MINEPenalty(num_groups=NUM_GROUPS, in_features=2)
    return MIGEPenalty()


class Setup:
    """A fresh network, loss and optimizer for one (network, method) pair; ``step()`` is one training step."""

    def __init__(self, net_name: str, method: str, args, device: torch.device, batch) -> None:
        from fairmonai.losses import FairnessRegularizedLoss

        torch.manual_seed(args.seed)  # same initial weights for every method
        self.method = method
        self.net = make_network(net_name, args.size, args.vit_sizes).to(device).train()
        self.penalty = make_penalty(method)
        if self.penalty is not None:
            self.penalty = self.penalty.to(device).train()
        self.loss = FairnessRegularizedLoss(nn.CrossEntropyLoss(), penalty=self.penalty, mu=MU)
        groups = [{"params": list(self.net.parameters())}]
        pen_params = list(self.penalty.parameters()) if self.penalty is not None else []
        if pen_params:
            groups.append({"params": pen_params, "lr": MINE_CRITIC_LR})
        self.opt = torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.net_params = list(self.net.parameters())
        self.x, self.y, self.u = batch
        self.n_params = sum(p.numel() for p in self.net_params) + sum(p.numel() for p in pen_params)
        self.resident_bytes = sum(p.numel() * p.element_size() for p in self.net_params + pen_params)
        self.times: list[float] = []
        self.step_peak: list[float] = []  # CUDA: peak allocated during the step (bytes)
        self.step_delta: list[float] = []  # CUDA: that peak minus allocated at the step's start
        self.last_loss = float("nan")

    def step(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        logits = self.net(self.x)
        value = self.loss(logits, self.y, sensitive=self.u)
        value.backward()
        torch.nn.utils.clip_grad_norm_(self.net_params, GRAD_CLIP)
        self.opt.step()
        return value

    def timed_step(self, device: torch.device, record: bool) -> None:
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            start_alloc = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        value = self.step()
        if cuda:
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        self.last_loss = float(value.detach())
        if record:
            self.times.append(t1 - t0)
            if cuda:
                peak = torch.cuda.max_memory_allocated(device)
                self.step_peak.append(peak)
                self.step_delta.append(peak - start_alloc)


# ------------------------------------------------------------------------------------------ statistics
def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def max_rss_mib() -> float:
    """High-water resident set size of this process in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / MIB if sys.platform == "darwin" else r / 1024.0


def progress(text: str) -> None:
    """A one-line progress note on stderr, only on a terminal (kept out of captured output)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r  {text:<60}\r" if text else "\r" + " " * 64 + "\r")
        sys.stderr.flush()


# ------------------------------------------------------------------------------------------ benchmarks
def bench_network(net_name: str, args, device: torch.device, batch) -> dict:
    cuda = device.type == "cuda"
    rss_before = max_rss_mib()
    if cuda:
        torch.cuda.empty_cache()
    per_method_rss: dict[str, tuple[float, float]] = {}
    setups: dict[str, Setup] = {}
    if args.schedule == "interleaved":
        setups = {m: Setup(net_name, m, args, device, batch) for m in METHODS}
        for r in range(args.warmup + args.steps):
            k = r % len(METHODS)
            for m in METHODS[k:] + METHODS[:k]:  # rotated order: no method always runs first
                setups[m].timed_step(device, record=r >= args.warmup)
            progress(f"{NET_LABELS[net_name]} round {r + 1}/{args.warmup + args.steps}")
    else:
        for m in METHODS:
            before = max_rss_mib()
            s = Setup(net_name, m, args, device, batch)
            for r in range(args.warmup + args.steps):
                s.timed_step(device, record=r >= args.warmup)
                progress(f"{NET_LABELS[net_name]} {LABELS[m]} step {r + 1}/{args.warmup + args.steps}")
            per_method_rss[m] = (before, max_rss_mib())
            # keep only what the report needs, free the network before the next method's
            s.net = s.opt = s.loss = s.penalty = s.net_params = None
            setups[m] = s
            if cuda:
                torch.cuda.empty_cache()
    progress("")
    rss_after = max_rss_mib()

    ce = setups["ce"]
    ce_med = statistics.median(ce.times)
    rows = []
    for m in METHODS:
        s = setups[m]
        q1, med, q3 = quartiles(s.times)
        row = {
            "method": m,
            "label": LABELS[m],
            "median_s": med,
            "q1_s": q1,
            "q3_s": q3,
            "iqr_s": q3 - q1,
            "ratio_to_ce": med / ce_med,
            "n_params": s.n_params,
            "param_MiB": s.resident_bytes / MIB,
            "last_loss": s.last_loss,
            "times_s": s.times,
        }
        if args.schedule == "interleaved":
            paired = [t / c for t, c in zip(s.times, ce.times)]
            p1, pm, p3 = quartiles(paired)
            row.update(paired_ratio_median=pm, paired_ratio_q1=p1, paired_ratio_q3=p3)
        if cuda:
            row.update(peak_alloc_MiB=max(s.step_peak) / MIB, step_transient_MiB=max(s.step_delta) / MIB)
        elif m in per_method_rss:
            row.update(max_rss_before_MiB=per_method_rss[m][0], max_rss_after_MiB=per_method_rss[m][1])
        rows.append(row)
    bad = [LABELS[r["method"]] for r in rows if not math.isfinite(r["last_loss"])]
    if bad:
        print(f"WARNING: {NET_LABELS[net_name]}: non-finite loss for {', '.join(bad)}")
    return {"network": net_name, "label": NET_LABELS[net_name], "rows": rows,
            "max_rss_before_MiB": rss_before, "max_rss_after_MiB": rss_after}


def bench_penalty_alone(args, device: torch.device, u: torch.Tensor) -> list[dict]:
    """Forward + backward of each penalty (and of CE, the reference) on a seeded ``(B, 2)`` tensor."""
    from fairmonai.losses import FairnessRegularizedLoss

    g = torch.Generator().manual_seed(args.seed + 1)
    v0 = torch.randn(u.shape[0], 2, generator=g).to(device)
    y = (torch.arange(u.shape[0]) % 2).to(device)
    cuda = device.type == "cuda"
    out = []
    for m in METHODS:
        torch.manual_seed(args.seed)
        pen = make_penalty(m)
        if pen is None:
            ce = FairnessRegularizedLoss(nn.CrossEntropyLoss(), penalty=None)

            def fn(v, ce=ce):
                return ce(v, y, sensitive=u)
        else:
            pen = pen.to(device).train()

            def fn(v, pen=pen):
                return pen(v, sensitive=u)

        times = []
        for r in range(args.penalty_warmup + args.penalty_repeats):
            v = v0.clone().requires_grad_(True)
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn(v).backward()
            if cuda:
                torch.cuda.synchronize(device)
            t1 = time.perf_counter()
            if r >= args.penalty_warmup:
                times.append(t1 - t0)
        q1, med, q3 = quartiles(times)
        out.append({"method": m, "label": "CE (reference)" if m == "ce" else LABELS[m][3:],
                    "median_s": med, "q1_s": q1, "q3_s": q3})
    return out


# -------------------------------------------------------------------------------------------- printing
def print_network_table(res: dict, cuda: bool, schedule: str) -> None:
    rows = res["rows"]
    head = f"{'network':<12} {'method':<9} {'median ms':>10} {'IQR ms':>9} {'q1-q3 ms':>17} {'ratio':>6}"
    if schedule == "interleaved":
        head += f" {'paired ratio (q1-q3)':>22}"
    head += f" {'peak MiB':>9} {'step MiB':>9}" if cuda else ""
    print(head)
    for r in rows:
        line = (f"{res['label']:<12} {r['label']:<9} {r['median_s'] * 1e3:>10.1f} {r['iqr_s'] * 1e3:>9.1f} "
                f"{r['q1_s'] * 1e3:>8.1f}-{r['q3_s'] * 1e3:<8.1f} {r['ratio_to_ce']:>6.3f}")
        if schedule == "interleaved":
            line += (f" {r['paired_ratio_median']:>7.3f} ({r['paired_ratio_q1']:.3f}-"
                     f"{r['paired_ratio_q3']:.3f})")
        if cuda:
            line += f" {r['peak_alloc_MiB']:>9.0f} {r['step_transient_MiB']:>9.0f}"
        elif "max_rss_after_MiB" in r:
            line += f"   maxRSS {r['max_rss_before_MiB']:.0f}->{r['max_rss_after_MiB']:.0f} MiB"
        print(line)
    n_params = rows[0]["n_params"]
    print(f"{'':<12} ({n_params / 1e6:.2f} M parameters; process max RSS {res['max_rss_before_MiB']:.0f} -> "
          f"{res['max_rss_after_MiB']:.0f} MiB over this network's runs)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 64 on CUDA, 8 on CPU)")
    ap.add_argument("--size", type=int, default=None, help="volume side (default 96 on CUDA, 32 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per method (default 50 CUDA, 20 CPU)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per method first (default 3)")
    ap.add_argument("--networks", nargs="+", choices=("dn", "vit"), default=["dn", "vit"])
    ap.add_argument("--vit-small", action="store_true",
                    help="ViT with hidden 192, 4 layers, 3 heads, MLP 768, patch 16 (default: ViT-B/16)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--schedule", choices=("interleaved", "sequential"), default="interleaved",
                    help="interleave the methods' steps round by round (default) or run them one after another")
    ap.add_argument("--penalty-repeats", type=int, default=200, help="repeats of the penalty-alone timing")
    ap.add_argument("--penalty-warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="force a device (default: cuda if available, else cpu)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "penalty_step.json"),
                    help="JSON output path ('' to skip)")
    args = ap.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    args.batch = args.batch or (64 if cuda else 8)
    args.size = args.size or (96 if cuda else 32)
    args.steps = args.steps or (50 if cuda else 20)
    if args.steps < 1 or args.warmup < 0 or args.penalty_repeats < 1:
        ap.error("--steps and --penalty-repeats must be >= 1, --warmup >= 0")
    if args.batch < 2 * NUM_GROUPS:
        ap.error(f"--batch must be at least {2 * NUM_GROUPS} (two samples per group)")
    args.vit_sizes = dict(VIT_SMALL if args.vit_small else VIT_BASE)
    if "vit" in args.networks and args.size % args.vit_sizes["patch_size"]:
        ap.error(f"--size {args.size} must be divisible by the ViT patch size {args.vit_sizes['patch_size']}")
    torch.set_num_threads(args.threads)

    import monai

    import fairmonai

    batch = make_batch(args.batch, args.size, args.seed, device)
    vit_desc = ("small: " if args.vit_small else "B/16: ") + ", ".join(f"{k} {v}" for k, v in args.vit_sizes.items())
    dev_name = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    print(f"device {device} ({dev_name}), torch {torch.__version__}, monai {monai.__version__}, "
          f"threads {torch.get_num_threads()}, cpu_count {os.cpu_count()}")
    print(f"batch {args.batch} x 1 x {args.size}^3, {NUM_GROUPS} balanced groups, seed {args.seed}; "
          f"{args.warmup} warm-up + {args.steps} timed steps per method, schedule {args.schedule}; "
          f"SGD lr {LR} wd {WEIGHT_DECAY}, mu {MU}, clip {GRAD_CLIP}; ViT {vit_desc}")
    print()

    t_start = time.perf_counter()
    results = []
    for net_name in args.networks:
        res = bench_network(net_name, args, device, batch)
        results.append(res)
        print_network_table(res, cuda, args.schedule)
        print()

    pen = bench_penalty_alone(args, device, batch[2])
    ce_pen = pen[0]["median_s"]
    print(f"penalty alone: forward + backward on a ({args.batch}, 2) tensor, median of {args.penalty_repeats}")
    head = f"{'penalty':<15} {'median us':>10} {'q1-q3 us':>17} {'x CE':>7}"
    for res in results:
        head += f" {'% ' + res['label'] + ' CE step':>22}"
    print(head)
    for p in pen:
        line = (f"{p['label']:<15} {p['median_s'] * 1e6:>10.0f} {p['q1_s'] * 1e6:>8.0f}-{p['q3_s'] * 1e6:<8.0f} "
                f"{p['median_s'] / ce_pen:>7.1f}")
        for res in results:
            ce_step = res["rows"][0]["median_s"]
            p[f"pct_of_{res['network']}_ce_step"] = 100 * p["median_s"] / ce_step
            line += f" {100 * p['median_s'] / ce_step:>21.2f}%"
        print(line)
    elapsed = time.perf_counter() - t_start
    print()
    if cuda:
        print("peak MiB: torch.cuda.max_memory_allocated during a step (absolute; in the interleaved schedule it "
              "includes the other methods' resident networks); step MiB: that peak minus the memory allocated "
              "when the step starts.")
    else:
        print("memory on CPU: process high-water RSS (ru_maxrss) only -- coarse, it never decreases and cannot "
              "separate interleaved methods.")
    print(f"total {elapsed:.0f} s")

    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        config = {k: v for k, v in vars(args).items() if k != "out"}
        with open(args.out, "w") as fh:
            json.dump({
                "config": config, "device": str(device), "device_name": dev_name,
                "optimizer": {"type": "SGD", "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY,
                              "mine_critic_lr": MINE_CRITIC_LR},
                "mu": MU, "grad_clip_norm": GRAD_CLIP, "num_groups": NUM_GROUPS,
                "networks": results, "penalty_alone": pen, "elapsed_s": elapsed,
                "cuda_max_memory_allocated_MiB": torch.cuda.max_memory_allocated(device) / MIB if cuda else None,
                "max_rss_MiB": max_rss_mib(),
                "torch": torch.__version__, "monai": monai.__version__,
                "fairmonai": getattr(fairmonai, "__version__", None), "python": sys.version.split()[0],
                "platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            }, fh, indent=2)
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
