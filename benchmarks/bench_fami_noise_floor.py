"""Noise floor of the FaMI (and MIGE) MI-gradient estimate: mean squared SFD with and without dependence.

FaMI's diagnostic ``msq_sfd`` is the mean over a batch of the squared norm of the estimated score
function difference, the size of the estimated gradient of I(u; v). With u independent of v the
true SFD is 0 and ``msq_sfd`` measures only estimation noise (the *noise floor*); with a planted
dependence it should rise above it. This script draws many seeded batches of size B (default 64)
of a two-logit output v in R^2 and a binary attribute u ~ Bernoulli(1/2):

* ``null``:      v ~ N(0, I), u independent of v;
* ``shift=δ``:   v | u ~ N(δ u e_1, I) (a group mean gap δ in the first logit).

For each estimator (FaMI degree 1 and 3, per dimension and multivariate; MIGE/SSGE) it prints the
mean, standard deviation, median and 95th percentile of ``msq_sfd`` over the batches, the
*population* value of the mean squared true SFD (Monte Carlo on 10^6 samples, from the analytic
scores of the Gaussian mixture), and the power: the fraction of planted batches whose ``msq_sfd``
exceeds the null's 95th percentile.

    python benchmarks/bench_fami_noise_floor.py [--batch 64] [--batches 500] [--shifts 0.5 1.0]
        [--seed 0] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from fairmonai.losses import FaMIPenalty, MIGEPenalty

ESTIMATORS = {
    "fami_deg1_per_dim": lambda: FaMIPenalty(degree=1),
    "fami_deg3_per_dim": lambda: FaMIPenalty(degree=3),
    "fami_deg1_multivar": lambda: FaMIPenalty(degree=1, basis="multivariate"),
    "fami_deg3_multivar": lambda: FaMIPenalty(degree=3, basis="multivariate"),
    "mige_ssge": lambda: MIGEPenalty(),
}


def draw(batch: int, shift: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    u = torch.randint(0, 2, (batch,), generator=gen)
    v = torch.randn(batch, 2, generator=gen, dtype=torch.float64)
    v[:, 0] += shift * u
    return v, u


def population_msq_sfd(shift: float, n: int = 1_000_000, seed: int = 12345) -> float:
    """E||SFD||^2 for v | u ~ N(shift u e1, I), u ~ Bernoulli(1/2): SFD = (m_u - E[m | v]) e1."""
    if shift == 0:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    v, u = draw(n, shift, gen)
    x = v[:, 0]
    logit = shift * x - shift**2 / 2  # log p(u=1 | x) - log p(u=0 | x)
    post_mean = shift * torch.sigmoid(logit)
    return float(((shift * u - post_mean) ** 2).mean())


def run(batch: int, batches: int, shifts: list[float], seed: int) -> dict:
    results: dict = {"batch": batch, "batches": batches, "seed": seed, "conditions": {}}
    conditions = [("null", 0.0)] + [(f"shift={s:g}", s) for s in shifts]
    for cname, shift in conditions:
        results["conditions"][cname] = {"shift": shift, "population_msq_sfd": population_msq_sfd(shift),
                                        "estimators": {}}
        for ename, make in ESTIMATORS.items():
            pen = make()
            gen = torch.Generator().manual_seed(seed)
            vals = []
            t0 = time.perf_counter()
            for _ in range(batches):
                v, u = draw(batch, shift, gen)
                pen.estimate_sfd(v, sensitive=u)
                vals.append(float(pen.last_diagnostic["msq_sfd"]))
            dt = (time.perf_counter() - t0) / batches
            a = np.asarray(vals)
            if not np.all(np.isfinite(a)):
                raise RuntimeError(f"{ename} gave a non-finite msq_sfd under {cname}")
            results["conditions"][cname]["estimators"][ename] = {
                "mean": float(a.mean()), "sd": float(a.std(ddof=1)), "median": float(np.median(a)),
                "p95": float(np.quantile(a, 0.95)), "ms_per_batch": 1e3 * dt, "values": vals,
            }
    null = results["conditions"]["null"]["estimators"]
    for cname, cond in results["conditions"].items():
        for ename, r in cond["estimators"].items():
            r["power_vs_null_p95"] = float(np.mean(np.asarray(r["values"]) > null[ename]["p95"]))
    return results


def print_table(res: dict) -> None:
    print(f"msq_sfd over {res['batches']} seeded batches of B={res['batch']}, v in R^2, u ~ Bernoulli(1/2)")
    head = f"{'condition':<11} {'estimator':<20} {'mean':>8} {'sd':>8} {'median':>8} {'p95':>8} " \
           f"{'true':>8} {'power':>6} {'ms':>6}"
    print(head)
    print("-" * len(head))
    for cname, cond in res["conditions"].items():
        for ename, r in cond["estimators"].items():
            print(f"{cname:<11} {ename:<20} {r['mean']:8.4f} {r['sd']:8.4f} {r['median']:8.4f} {r['p95']:8.4f} "
                  f"{cond['population_msq_sfd']:8.4f} {r['power_vs_null_p95']:6.2f} {r['ms_per_batch']:6.2f}")
    print("true: population E||SFD||^2 of the analytic SFD; power: share of batches above the null's p95")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=500)
    ap.add_argument("--shifts", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (small batches: 1 is fastest)")
    ap.add_argument("--json", default=None, help="write the summary (without per-batch values) here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = run(args.batch, args.batches, args.shifts, args.seed)
    print_table(res)
    if args.json:
        slim = json.loads(json.dumps(res))
        for cond in slim["conditions"].values():
            for r in cond["estimators"].values():
                r.pop("values")
        slim["torch"] = torch.__version__
        with open(args.json, "w") as f:
            json.dump(slim, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
