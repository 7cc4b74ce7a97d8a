"""FairMedSeg's per-epoch subgroup discovery + reweighting, against one training epoch of the bundle's UNet.

What FairMedSeg adds to an epoch (after the validation run) is one call of
:func:`fairmonai.metrics.divergence_weights`: subgroup discovery on the validation cases' Dice at
``minsup`` (every conjunction of ``attribute=value`` items) and the per-training-case weight, the
largest ``|divergence|`` of the subgroups the case belongs to. This script times that call and sets it
against the time of one training epoch of ``bundles/mama_mia_fairmedseg``'s network.

**Cases.** The real MAMA-MIA clinical table (1,506 cases) when it is present (default
../shared/real_metadata/mama_mia/... beside the repository, or ``--table PATH``; read where it lies,
never copied into the repository), with
the attributes derived as ``benchmarks/bench_subgroups.py`` derives them (missing -> ``unknown``).
Split: 1,200 training / 306 validation cases, the sizes of the official MAMA-MIA split
(``train_test_splits.csv``, train 1,200 / test 306; the bundle validates on the official test part).
That file is not public, so the partition is a seeded random one of the same sizes. Without the table,
seeded draws: age group with the real table's approximate shares, menopause and density given the age
group with the probabilities the synthetic generator (:mod:`fairmonai.data.synth.mama_mia`) uses,
density missing for 96 % as in the real table, and, for the extra attributes, independent draws with
the real table's cardinalities and approximate shares.

**Attributes.** 3: ``age_group``, ``menopausal_status``, ``breast_density`` (the challenge's). 6: those
plus ``--extra`` (default ``dataset`` (4 collections), ``ethnicity`` (11 values), ``bmi_group``
(7 values), as bench_subgroups.py's wide run; ``pcr`` (3 values with ``unknown``) is also available).

1. ``divergence_weights(val_scores, val_meta, train_meta, attributes=..., minsup=...)`` on seeded
   uniform random per-case validation Dice values, fresh scores each repeat (drawn outside the
   timing), one untimed warm-up call; median and min of ``--repeats`` calls.
2. The handler's epoch-end step, ``SubgroupReweighting.__call__`` on the validator's
   ``EPOCH_COMPLETED`` (gather the collected rows, the same computation, publish the weights), without
   ``output_dir`` and with it (the per-epoch ``epoch_XXXX.csv``, ``weights_epoch_XXXX.csv`` and the
   rewrite of ``divergence_history.csv``, pre-filled with ``--history-epochs`` - 1 earlier epochs so the
   rewrite is the size of the run's last epoch; default 100, the bundle's ``epochs``). Not timed: the
   per-case Dice computed in ``_collect`` during validation iterations.
3. One training step of the bundle's network, batch 2: ``UNet(spatial_dims=3, in_channels=3,
   out_channels=1, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)``,
   ``DiceFocalLoss(sigmoid=True)`` (``--loss fairmedseg``: ``DivergenceWeightedLoss`` around it with
   ``reduction="none"``, alpha 0.2, as method_fairmedseg.json), ``Adam`` lr 1e-4; a step is
   ``zero_grad -> forward -> loss -> backward -> step`` on a seeded random batch (``torch.cuda.synchronize``
   before and after on CUDA). Median of ``--steps`` after ``--warmup`` untimed steps, per ``--sizes``
   (default the bundle's ``roi_size`` 320x320x128 and the CPU evidence runs' 48x48x32).
   Epoch time = step time x ceil(1200 / 2) = 600 steps: no data loading, augmentation or validation
   pass, so a real epoch is longer and the share below is an upper bound.
4. Share = discovery+reweighting time / epoch time, in percent, for each (attributes, size); also for
   the handler step with CSV writes.

    python benchmarks/bench_fairmedseg_reweighting.py [--quick] [--sizes 320x320x128 48x48x32]
        [--steps N] [--warmup N] [--repeats 20] [--minsup 0.001] [--extra dataset ethnicity bmi_group]
        [--loss plain|fairmedseg] [--history-epochs 100] [--threads N] [--device cuda|cpu]
        [--table PATH] [--seed 0] [--out benchmarks/results/fairmedseg_reweighting.json]

Defaults: CUDA when available (3 warm-up + 10 timed steps), else CPU (1 + 3). On CPU the step at
320x320x128 takes many seconds and tens of GiB of memory. ``--quick``: 3 repeats, size 32x32x16,
1 + 2 steps, 3 history epochs, JSON to ``..._quick.json`` (a smoke run; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from fairmonai.attribute_codes import EXCLUDED_VALUE
from fairmonai.handlers import SubgroupReweighting
from fairmonai.metrics import divergence_weights

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_subgroups import load_attributes  # noqa: E402  (one derivation of the attributes)

#: The shared data folder beside the repository (``../shared``), found from this script, not a machine path.
DEFAULT_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "shared",
                             "real_metadata", "mama_mia", "clinical_and_imaging_info_v2_dataset_info.csv")
CHALLENGE_ATTRIBUTES = ["age_group", "menopausal_status", "breast_density"]
EXTRA_CHOICES = ("dataset", "ethnicity", "bmi_group", "pcr")
DEFAULT_EXTRA = ["dataset", "ethnicity", "bmi_group"]
N_TRAIN = 1200  # official MAMA-MIA split: train 1,200 / test 306
N_VAL = 306
BATCH = 2  # bundles/mama_mia_fairmedseg/configs/train.json
LR = 1e-4
ALPHA = 0.2  # method_fairmedseg.json div_alpha
EPOCHS = 100
UNET = {"spatial_dims": 3, "in_channels": 3, "out_channels": 1, "channels": (16, 32, 64, 128, 256),
        "strides": (2, 2, 2, 2), "num_res_units": 2}
DEFAULT_SIZES = ["320x320x128", "48x48x32"]
QUICK_SIZE = "32x32x16"
MIB = 2.0 ** 20

# Synthetic fallback: approximate shares of the public table (rounded), real cardinalities.
SYNTH_AGE_SHARES = {"0-40": 0.23, "41-50": 0.35, "51-60": 0.28, "61-70": 0.12, "71+": 0.02}
SYNTH_DENSITY_MISSING = 0.96
SYNTH_MENOPAUSE_UNKNOWN = 0.27
# given the age group, as the synthetic generator draws them: P(post) is its clip((age - 45) / 10, 0, 1)
# averaged over the group's whole years of age; density a-d from its density-given-age table
SYNTH_POST_GIVEN_AGE = {"0-40": 0.0, "41-50": 0.15, "51-60": 0.9, "61-70": 1.0, "71+": 1.0}
SYNTH_DENSITY_GIVEN_AGE = {"0-40": (0.05, 0.30, 0.45, 0.20), "41-50": (0.05, 0.30, 0.45, 0.20),
                           "51-60": (0.10, 0.40, 0.40, 0.10), "61-70": (0.15, 0.50, 0.30, 0.05),
                           "71+": (0.15, 0.50, 0.30, 0.05)}
SYNTH_EXTRA = {
    "dataset": {"ispy2": 0.65, "duke": 0.19, "ispy1": 0.11, "nact": 0.05},
    "ethnicity": {"caucasian": 0.75, "african american": 0.16, "asian": 0.057, "unknown": 0.011,
                  "multiple race": 0.007, "hispanic": 0.007, "hawaiian/pacific islander": 0.004,
                  "american indian/alaskan native": 0.003, "native american": 0.002, "hawaian": 0.0005,
                  "american indian": 0.0005},
    "bmi_group": {"normal": 0.31, "overweight": 0.23, "unknown": 0.17, "obesity_class_1": 0.15,
                  "obesity_class_2": 0.06, "obesity_class_3": 0.05, "underweight": 0.03},
    "pcr": {"0": 0.70, "1": 0.29, "unknown": 0.01},
}


# ------------------------------------------------------------------------------------------- metadata
def load_real(path: str) -> pd.DataFrame:
    """The table's attributes as bench_subgroups.py derives them, plus ``pcr``; missing -> ``unknown``."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    meta = load_attributes(path)
    meta["pcr"] = [EXCLUDED_VALUE if not v.strip() else str(int(float(v))) for v in raw["pcr"]]
    meta.index = pd.Index(raw["patient_id"].astype(str), name="case_id")
    return meta


def make_synthetic(n: int, seed: int) -> pd.DataFrame:
    """Seeded metadata with the shares above (no images): age group, then menopause and density given it,
    and independent extra columns."""
    rng = np.random.default_rng(seed)
    groups = np.array(list(SYNTH_AGE_SHARES), dtype=object)
    age = rng.choice(groups, size=n, p=np.array(list(SYNTH_AGE_SHARES.values())) / sum(SYNTH_AGE_SHARES.values()))
    post = rng.random(n) < np.array([SYNTH_POST_GIVEN_AGE[a] for a in age])
    meno = np.where(post, "post", "pre").astype(object)
    meno[rng.random(n) < SYNTH_MENOPAUSE_UNKNOWN] = EXCLUDED_VALUE
    dens = np.array([rng.choice(list("abcd"), p=SYNTH_DENSITY_GIVEN_AGE[a]) for a in age], dtype=object)
    dens[rng.random(n) < SYNTH_DENSITY_MISSING] = EXCLUDED_VALUE
    meta = pd.DataFrame({"age_group": age, "menopausal_status": meno, "breast_density": dens})
    for col, shares in SYNTH_EXTRA.items():
        p = np.array(list(shares.values()))
        meta[col] = rng.choice(np.array(list(shares), dtype=object), size=n, p=p / p.sum())
    meta.index = pd.Index([f"synth_{i:05d}" for i in range(n)], name="case_id")
    return meta


def split(meta: pd.DataFrame, n_train: int, n_val: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(meta))
    return meta.iloc[np.sort(order[:n_train])], meta.iloc[np.sort(order[n_train:n_train + n_val])]


# ----------------------------------------------------------------------------------------- discovery
def summary(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "times_s": times}


def bench_discovery(train: pd.DataFrame, val: pd.DataFrame, attrs: list[str], args) -> dict:
    rng = np.random.default_rng(args.seed + 1)
    scores = [rng.random(len(val)) for _ in range(args.repeats + 1)]
    kw = {"attributes": attrs, "minsup": args.minsup}
    w, table = divergence_weights(scores[0], val, train, **kw)  # warm-up, untimed
    times = []
    for s in scores[1:]:
        t0 = time.perf_counter()
        w, table = divergence_weights(s, val, train, **kw)
        times.append(time.perf_counter() - t0)
    return {"n_subgroups": len(table), "n_train_in_no_subgroup": table.attrs["n_train_in_no_subgroup"],
            "weight_mean": float(w.mean()), **summary(times)}


def bench_handler(train: pd.DataFrame, val: pd.DataFrame, attrs: list[str], args, tmp: str) -> dict:
    """``SubgroupReweighting.__call__`` (the validator's EPOCH_COMPLETED step), without and with CSV writes."""
    from ignite.engine import Engine

    from fairmonai.handlers.subgroup_reweighting import HISTORY_COLUMNS

    logging.getLogger("fairmonai.handlers.SubgroupReweighting").setLevel(logging.WARNING)
    train_data = train[attrs].reset_index()
    rng = np.random.default_rng(args.seed + 2)
    val_attrs = val[attrs].astype(str).values.tolist()
    rows = [[json.dumps([c, a, float(s)]) for c, a, s in zip(val.index, val_attrs, rng.random(len(val)))]
            for _ in range(args.repeats + 1)]
    epoch = max(args.history_epochs, 1)
    out = {}
    for label, out_dir in (("no_output", None), ("with_csv", os.path.join(tmp, "-".join(map(str, attrs))))):
        validator = Engine(lambda e, b: None)
        validator.state.epoch = epoch
        h = SubgroupReweighting(validator, train_data, attrs, minsup=args.minsup, output_dir=out_dir)
        h._rows = rows[0]
        h(validator)  # warm-up; with output_dir it writes the files of epoch `epoch`
        if out_dir is not None and epoch > 1:  # pre-fill the history with epochs 1 .. epoch-1
            path = os.path.join(out_dir, h.table_dir, "divergence_history.csv")
            one = pd.read_csv(path, keep_default_na=False, dtype={"subgroup": str})
            hist = pd.concat([one.assign(epoch=e) for e in range(1, epoch + 1)], ignore_index=True)
            hist.loc[:, list(HISTORY_COLUMNS)].to_csv(path, index=False)
        times = []
        for r in rows[1:]:
            h._rows = r
            t0 = time.perf_counter()
            h(validator)
            times.append(time.perf_counter() - t0)
        out[label] = summary(times)
        if out_dir is not None:
            folder = os.path.join(out_dir, h.table_dir)
            out[label]["files_bytes"] = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
    return out


# -------------------------------------------------------------------------------------------- training
def parse_size(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"size '{text}' is not of the form HxWxD (e.g. 320x320x128)")
    size = tuple(int(p) for p in parts)
    div = 2 ** len(UNET["strides"])
    if any(s % div for s in size):
        raise argparse.ArgumentTypeError(f"size '{text}': every side must be divisible by {div} (the UNet's "
                                         f"{len(UNET['strides'])} stride-2 levels)")
    if all(s == div for s in size):
        raise argparse.ArgumentTypeError(f"size '{text}': the UNet's bottom level would be 1x1x1, which instance "
                                         f"norm refuses in training; make one side at least {2 * div}")
    return size


def max_rss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / MIB if sys.platform == "darwin" else r / 1024.0


def bench_step(size: tuple[int, int, int], args, device: torch.device) -> dict:
    from monai.losses import DiceFocalLoss
    from monai.networks.nets import UNet

    from fairmonai.losses import DivergenceWeightedLoss

    cuda = device.type == "cuda"
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(BATCH, UNET["in_channels"], *size, generator=g).to(device)
    y = (torch.rand(BATCH, 1, *size, generator=g) < 0.05).float().to(device)
    w = torch.tensor([0.05, 0.2], device=device)
    net = UNet(**UNET).to(device).train()
    if args.loss == "plain":
        loss_fn = DiceFocalLoss(sigmoid=True)

        def loss(p):
            return loss_fn(p, y)
    else:
        loss_fn = DivergenceWeightedLoss(DiceFocalLoss(sigmoid=True, reduction="none"), alpha=ALPHA)

        def loss(p):
            return loss_fn(p, y, weight=w)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times, value = [], float("nan")
    for i in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        v = loss(net(x))
        v.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        value = float(v.detach())
        if i >= args.warmup:
            times.append(t1 - t0)
    res = {"size": list(size), "loss_last": value, "n_params": sum(p.numel() for p in net.parameters()),
           **summary(times)}
    res["epoch_steps"] = math.ceil(args.n_train / BATCH)
    res["epoch_s"] = res["median_s"] * res["epoch_steps"]
    if cuda:
        res["cuda_peak_MiB"] = torch.cuda.max_memory_allocated(device) / MIB
    res["max_rss_MiB"] = max_rss_mib()
    return res


# -------------------------------------------------------------------------------------------- printing
def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths)))


def size_text(size) -> str:
    return "x".join(map(str, size))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 repeats, size 32x32x16, 1 + 2 steps")
    ap.add_argument("--sizes", nargs="+", type=parse_size, default=None,
                    help=f"UNet input sizes HxWxD (default {' '.join(DEFAULT_SIZES)})")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps per size (default 10 CUDA, 3 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 CUDA, 1 CPU)")
    ap.add_argument("--repeats", type=int, default=None, help="timed discovery calls (default 20)")
    ap.add_argument("--minsup", type=float, default=0.001)
    ap.add_argument("--extra", nargs=3, choices=EXTRA_CHOICES, default=DEFAULT_EXTRA, metavar="ATTR",
                    help=f"the 3 attributes added for the 6-attribute run, from {list(EXTRA_CHOICES)} "
                         f"(default {' '.join(DEFAULT_EXTRA)})")
    ap.add_argument("--loss", choices=("plain", "fairmedseg"), default="plain",
                    help="DiceFocalLoss(sigmoid) (default) or DivergenceWeightedLoss around it (alpha 0.2)")
    ap.add_argument("--history-epochs", type=int, default=None,
                    help=f"epoch number of the timed handler step, its history pre-filled (default {EPOCHS})")
    ap.add_argument("--no-handler", action="store_true", help="skip the handler timing")
    ap.add_argument("--n-train", type=int, default=N_TRAIN)
    ap.add_argument("--n-val", type=int, default=N_VAL)
    ap.add_argument("--table", default=DEFAULT_TABLE, help="MAMA-MIA clinical_and_imaging_info CSV (synthetic "
                                                           "metadata when absent)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON output ('' to skip; default "
                                                "benchmarks/results/fairmedseg_reweighting[_quick].json)")
    args = ap.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if args.quick:
        args.sizes = args.sizes or [parse_size(QUICK_SIZE)]
        args.repeats = args.repeats or 3
        args.steps = args.steps or 2
        args.warmup = 1 if args.warmup is None else args.warmup
        args.history_epochs = args.history_epochs or 3
    args.sizes = args.sizes or [parse_size(s) for s in DEFAULT_SIZES]
    args.repeats = args.repeats or 20
    args.steps = args.steps or (10 if cuda else 3)
    args.warmup = (3 if cuda else 1) if args.warmup is None else args.warmup
    args.history_epochs = args.history_epochs or EPOCHS
    if args.out is None:
        name = "fairmedseg_reweighting_quick.json" if args.quick else "fairmedseg_reweighting.json"
        args.out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", name)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.n_train < 1 or args.n_val < 1:
        ap.error("--steps, --repeats, --n-train, --n-val must be >= 1, --warmup >= 0")
    if len(set(args.extra)) != 3:
        ap.error(f"--extra names an attribute twice: {args.extra}")
    if args.threads:
        torch.set_num_threads(args.threads)

    import monai

    import fairmonai

    n_total = args.n_train + args.n_val
    if os.path.isfile(args.table):
        meta = load_real(args.table)
        source = f"real MAMA-MIA table {args.table} ({len(meta)} cases)"
        if len(meta) < n_total:
            ap.error(f"the table has {len(meta)} cases, fewer than --n-train + --n-val = {n_total}")
    else:
        meta = make_synthetic(n_total, args.seed)
        source = (f"synthetic metadata ({args.table} not found): seeded draws with the generator's shares + "
                  f"independent {', '.join(args.extra)} with the real table's cardinalities")
    train, val = split(meta, args.n_train, args.n_val, args.seed)
    attr_sets = [CHALLENGE_ATTRIBUTES, CHALLENGE_ATTRIBUTES + list(args.extra)]

    dev_name = torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine())
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"device {device} ({dev_name}), torch {torch.__version__}, monai {monai.__version__}, "
          f"threads {torch.get_num_threads()}, cpu_count {os.cpu_count()} (usable {affinity}), "
          f"load avg {'/'.join(f'{x:.2f}' for x in load) if load else '?'}")
    print(f"cases: {source}; seeded random split {len(train)} train / {len(val)} validation "
          f"(the official split's sizes), seed {args.seed}; minsup {args.minsup}")
    print()

    t_start = time.perf_counter()
    disc, handler = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for attrs in attr_sets:
            disc.append(bench_discovery(train, val, attrs, args))
            handler.append(None if args.no_handler else bench_handler(train, val, attrs, args, tmp))

    print(f"1. discovery + reweighting: divergence_weights(...) on random validation Dice, "
          f"{args.repeats} repeats (ms)")
    header = ["attributes", "subgroups", "train_in_none", "median_ms", "min_ms", "max_ms"]
    if not args.no_handler:
        header += ["handler_ms", f"handler+csv_ms (epoch {args.history_epochs})"]
    rows = []
    for attrs, d, h in zip(attr_sets, disc, handler):
        r = [str(len(attrs)), str(d["n_subgroups"]), str(d["n_train_in_no_subgroup"]), f"{d['median_s'] * 1e3:.1f}",
             f"{d['min_s'] * 1e3:.1f}", f"{d['max_s'] * 1e3:.1f}"]
        if h is not None:
            r += [f"{h['no_output']['median_s'] * 1e3:.1f}", f"{h['with_csv']['median_s'] * 1e3:.1f}"]
        rows.append(r)
    print_table(header, rows)
    for attrs in attr_sets:
        print(f"  {len(attrs)} attributes: {', '.join(attrs)}")
    print()

    steps = []
    for size in args.sizes:
        try:
            steps.append(bench_step(size, args, device))
        except (RuntimeError, MemoryError) as e:  # CUDA OOM or a failed CPU allocation
            msg = str(e).splitlines()[0][:200]
            print(f"  size {size_text(size)}: step failed: {type(e).__name__}: {msg}")
            steps.append({"size": list(size), "error": f"{type(e).__name__}: {msg}"})
            if cuda:
                torch.cuda.empty_cache()
    loss_desc = "DiceFocalLoss(sigmoid)" if args.loss == "plain" else f"DivergenceWeightedLoss(DiceFocalLoss, {ALPHA})"
    print(f"2. training step: UNet {UNET['channels']} x {UNET['num_res_units']} res units, {loss_desc}, Adam "
          f"lr {LR}, batch {BATCH}; {args.warmup} warm-up + {args.steps} timed steps; "
          f"epoch = step x ceil({args.n_train}/{BATCH}) = {math.ceil(args.n_train / BATCH)} steps")
    header = ["input", "step_median_s", "step_min_s", "epoch_s", "memory_MiB"]
    rows = []
    for s in steps:
        if "error" in s:
            rows.append([size_text(s["size"]), "failed", "", "", ""])
            continue
        mem = s["cuda_peak_MiB"] if cuda else s["max_rss_MiB"]
        rows.append([size_text(s["size"]), f"{s['median_s']:.3f}", f"{s['min_s']:.3f}", f"{s['epoch_s']:.1f}",
                     f"{mem:.0f} ({'CUDA peak' if cuda else 'max RSS'})"])
    print_table(header, rows)
    print()

    shares = []
    for attrs, d, h in zip(attr_sets, disc, handler):
        for s in steps:
            if "error" in s:
                continue
            row = {"attributes": len(attrs), "size": s["size"], "discovery_s": d["median_s"], "epoch_s": s["epoch_s"],
                   "share_pct": 100 * d["median_s"] / s["epoch_s"],
                   "share_min_pct": 100 * d["min_s"] / s["epoch_s"]}
            if h is not None:
                row["handler_csv_s"] = h["with_csv"]["median_s"]
                row["share_handler_csv_pct"] = 100 * h["with_csv"]["median_s"] / s["epoch_s"]
            shares.append(row)
    print("3. share of one training epoch (discovery+reweighting median / epoch time; the epoch excludes data "
          "loading and validation)")
    header = ["attributes", "input", "discovery_ms", "epoch_s", "share_%"]
    if not args.no_handler:
        header += ["handler+csv_%"]
    rows = []
    for r in shares:
        c = [str(r["attributes"]), size_text(r["size"]), f"{r['discovery_s'] * 1e3:.1f}", f"{r['epoch_s']:.1f}",
             f"{r['share_pct']:.4f}"]
        if "share_handler_csv_pct" in r:
            c.append(f"{r['share_handler_csv_pct']:.4f}")
        rows.append(c)
    if rows:
        print_table(header, rows)
    else:
        print("  (no training step succeeded)")
    elapsed = time.perf_counter() - t_start
    print(f"\ntotal {elapsed:.0f} s")

    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        config = {k: v for k, v in vars(args).items() if k != "out"}
        config["sizes"] = [list(s) for s in args.sizes]
        with open(args.out, "w") as fh:
            json.dump({
                "config": config, "cases_source": source, "n_train": len(train), "n_val": len(val),
                "split": "seeded random partition with the official MAMA-MIA split's sizes",
                "attribute_sets": attr_sets,
                "value_counts": {a: meta[a].value_counts().to_dict() for a in attr_sets[1]},
                "discovery": [dict(d, attributes=a) for d, a in zip(disc, attr_sets)],
                "handler": [None if h is None else dict(h, attributes=a) for h, a in zip(handler, attr_sets)],
                "training_step": steps, "shares": shares,
                "network": {k: list(v) if isinstance(v, tuple) else v for k, v in UNET.items()},
                "loss": loss_desc, "optimizer": {"type": "Adam", "lr": LR}, "batch": BATCH,
                "device": str(device), "device_name": dev_name, "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(), "cpu_count": os.cpu_count(),
                "usable_cpus": affinity, "load_avg_start": list(load) if load else None, "elapsed_s": elapsed,
                "torch": torch.__version__, "monai": monai.__version__, "numpy": np.__version__,
                "pandas": pd.__version__, "fairmonai": getattr(fairmonai, "__version__", None),
                "python": sys.version.split()[0], "platform": platform.platform(),
            }, fh, indent=2)
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
