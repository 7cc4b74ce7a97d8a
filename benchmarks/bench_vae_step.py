"""Time per training step of the Fitzpatrick17k VAE with and without the VGG19 perceptual loss, and peak memory.

The bundle's training step on one fixed, seeded batch ``(B, 3, S, S)`` in ``[-1, 1]``: the paper's
:class:`~fairmonai.networks.ResidualVAE` (ch 64, blocks 1-2-4-8, 64 latent channels, deep model; other
sizes by flag), Adam lr 1e-4, ``VAELoss`` in the reference form with or without
``VGG19PerceptualLoss`` (random weights: the timing does not depend on them), AMP (fp16 autocast and a
GradScaler) on CUDA, gradient clipping at norm 10::

    zero_grad -> forward -> loss -> backward -> unscale -> clip_grad_norm_(10) -> step

Timed with ``time.perf_counter`` (``torch.cuda.synchronize()`` around each step on CUDA), after
``--warmup`` untimed steps; the two variants run interleaved (one step of each per round). Reported per
variant: the median step time and all step times; the ratio with/without.

Peak memory. On CUDA: ``torch.cuda.max_memory_allocated`` over the variant's steps (the target is the
paper's 24 GB RTX 3090). On CPU: the high-water RSS of the process (``ru_maxrss``) after each variant's
first step -- coarse (a high-water mark only grows, so the second variant's figure includes the first's).

    python benchmarks/bench_vae_step.py [--batch 64] [--size 128] [--steps 3] [--warmup 1] [--threads 2]
        [--ch 64] [--blocks 1 2 4 8] [--latent 64] [--shallow] [--only mse_kl|mse_kl_perceptual]
        [--activations B] [--out benchmarks/results/vae_step.json]

``--activations B`` measures instead the bytes autograd saves for backward on a batch of B (distinct
storages; fp32 and under autocast, fp16 on CUDA, bf16 on CPU: the same 2 bytes an element), scaled
linearly to ``--batch``, plus weights, gradients and Adam's moments: an estimate of a GPU step's memory
from a CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from fairmonai.losses import VAELoss, VGG19PerceptualLoss
from fairmonai.networks import ResidualVAE


def _rss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20


def saved_activation_mib(net, loss, x: torch.Tensor, amp_dtype: torch.dtype | None) -> float:
    """MiB of the tensors autograd saves for backward in one forward + loss (the activation memory of a
    step; distinct storages counted once, the modules' own parameters and buffers left out since they do
    not grow with the batch), optionally under autocast to ``amp_dtype``."""
    seen: dict[int, int] = {}
    own = {t.untyped_storage().data_ptr() for m in (net, loss) for t in (*m.parameters(), *m.buffers())}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        if st.data_ptr() not in own:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            value = loss(net.reconstruct(x), x)
    del value
    return sum(seen.values()) / 2**20


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ch", type=int, default=64)
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--shallow", action="store_true", help="deep_model=False")
    ap.add_argument("--only", choices=["mse_kl", "mse_kl_perceptual"], default=None,
                    help="run one variant (on CPU, a separate process per variant gives each its own peak RSS)")
    ap.add_argument("--activations", type=int, default=0, metavar="B",
                    help="only measure the saved activations of a batch of B (fp32 and under fp16/bf16 autocast) "
                         "per variant, scaled to --batch; no timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda:0" if cuda else "cpu")
    g = torch.Generator().manual_seed(args.seed)
    x = (torch.rand(args.activations or args.batch, 3, args.size, args.size, generator=g) * 2 - 1).to(device)
    variants = {}
    for name, perceptual in (("mse_kl", False), ("mse_kl_perceptual", True)):
        if args.only not in (None, name):
            continue
        torch.manual_seed(args.seed)
        net = ResidualVAE(ch=args.ch, blocks=tuple(args.blocks), latent_channels=args.latent,
                          deep_model=not args.shallow).to(device).train()
        loss = VAELoss(VGG19PerceptualLoss().to(device) if perceptual else None)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler("cuda", enabled=cuda)
        variants[name] = {"net": net, "loss": loss, "opt": opt, "scaler": scaler, "times": [], "peak_mib": None}
    rss_start = None if cuda else _rss_mib()
    if args.activations:
        amp = torch.float16 if cuda else torch.bfloat16
        scale = args.batch / args.activations
        result = {"batch_measured": args.activations, "scaled_to_batch": args.batch, "size": args.size,
                  "amp_dtype": str(amp), "parameters": sum(p.numel() for p in next(iter(variants.values()))["net"].parameters())}
        for name, v in variants.items():
            result[name] = {"fp32_mib": saved_activation_mib(v["net"], v["loss"], x, None) * scale,
                            "amp_mib": saved_activation_mib(v["net"], v["loss"], x, amp) * scale}
        # weights, gradients and Adam's two moments, fp32
        result["params_grads_adam_mib"] = 4 * result["parameters"] * 4 / 2**20
        print(json.dumps(result, indent=2))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2))
        return result

    def step(v) -> float:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        v["opt"].zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=cuda):
            value = v["loss"](v["net"].reconstruct(x), x)
        v["scaler"].scale(value).backward()
        v["scaler"].unscale_(v["opt"])
        torch.nn.utils.clip_grad_norm_(v["net"].parameters(), 10.0)
        v["scaler"].step(v["opt"])
        v["scaler"].update()
        if cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
            v["peak_mib"] = max(v["peak_mib"] or 0.0, peak)
        elif v["peak_mib"] is None:
            v["peak_mib"] = _rss_mib()
        return time.perf_counter() - t

    for r in range(args.warmup + args.steps):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            dt = step(variants[name])
            if r >= args.warmup:
                variants[name]["times"].append(dt)
            print(f"round {r} {name}: {dt:.2f} s", flush=True)
    result = {"device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()}), "
                                                                 f"{args.threads} threads",
              "batch": args.batch, "size": args.size, "amp": cuda, "steps": args.steps, "warmup": args.warmup,
              "network": {"ch": args.ch, "blocks": args.blocks, "latent_channels": args.latent,
                          "deep_model": not args.shallow,
                          "parameters": sum(p.numel() for p in next(iter(variants.values()))["net"].parameters())},
              "rss_before_steps_mib": rss_start,
              "peak_memory": "torch.cuda.max_memory_allocated" if cuda else "process high-water RSS (cumulative)"}
    for name, v in variants.items():
        result[name] = {"median_s": statistics.median(v["times"]), "times_s": v["times"], "peak_mib": v["peak_mib"]}
    if len(variants) == 2:
        result["ratio_perceptual"] = result["mse_kl_perceptual"]["median_s"] / result["mse_kl"]["median_s"]
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
