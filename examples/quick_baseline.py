"""A one-minute baseline through the whole data-to-report chain, no bundle, no training loop.

The former ``python -m fairmonai.demo --quick``. It runs in well under a minute on a laptop CPU:

1. :func:`fairmonai.data.synth.make_oct_glaucoma` writes a cohort in which glaucoma prevalence
   differs by race, each race carries a visible stripe cue (a shortcut), and one race is noisier.
2. A logistic regression on 4x4x4-average-pooled volumes is fit on the training part (the
   manifest's ``split == "train"`` rows, validation fold left out) and scored on the test split
   once; the validation fold is only reported, never used to choose anything.
3. :func:`fairmonai.reports.write_report` writes the report (AUC by race with bootstrap CIs, EOM,
   EOdd, parity gaps, figures) next to the predictions.

    python examples/quick_baseline.py --out quick_output
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd


def _features(paths, pool: int = 4) -> np.ndarray:
    """Average-pool each volume by ``pool`` per axis and flatten: (N, X/pool * Y/pool * D/pool)."""
    feats = []
    for p in paths:
        v = np.asarray(nib.load(p).dataobj, dtype=np.float32)
        x, y, z = (s // pool * pool for s in v.shape)
        v = v[:x, :y, :z].reshape(x // pool, pool, y // pool, pool, z // pool, pool).mean(axis=(1, 3, 5))
        feats.append(v.ravel())
    return np.stack(feats)


def run_baseline(out: str | Path, *, n: int = 300, seed: int = 0, fold: int = 0, n_bootstrap: int = 1000) -> dict:
    """Build the cohort, fit the baseline, write predictions and the report; return their paths and headline figures."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fairmonai.data import load_datalist
    from fairmonai.data.synth import make_oct_glaucoma
    from fairmonai.reports import write_report

    out = Path(out)
    t0 = time.time()
    print(f"[1/3] synthetic OCT cohort: {n} eyes, seed {seed}, planted race bias", flush=True)
    manifest = make_oct_glaucoma(
        out / "cohort", n=n, seed=seed, prevalence="Asian=0.4,Black=0.65,White=0.35", cue_strength=1.0,
        difficulty="Black=2.5", noise=1.0, verbose=True,
    )
    train = load_datalist(manifest, "oct_glaucoma", "train", fold=fold)
    val = load_datalist(manifest, "oct_glaucoma", "val", fold=fold)
    test = load_datalist(manifest, "oct_glaucoma", "test")
    print(f"[2/3] baseline: logistic regression on pooled volumes; train {len(train)}, val {len(val)}, "
          f"test {len(test)}", flush=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    model.fit(_features([r["image"] for r in train]), [r["label"] for r in train])
    val_auc = roc_auc_score([r["label"] for r in val], model.predict_proba(_features([r["image"] for r in val]))[:, 1])
    scores = model.predict_proba(_features([r["image"] for r in test]))[:, 1]
    pred_file = out / "predictions_test.csv"
    pd.DataFrame({
        "case_id": [r["case_id"] for r in test], "label": [r["label"] for r in test], "score": scores,
        "prediction": (scores >= 0.5).astype(int), "race": [r["race"] for r in test],
    }).to_csv(pred_file, index=False)
    print(f"[3/3] fairness report on the test split (validation AUC {val_auc:.3f}, for monitoring only)", flush=True)
    files = write_report(pred_file, out / "report", schema="oct_glaucoma", n_bootstrap=n_bootstrap, seed=seed,
                         reference_group="Black", title="Demo: baseline on the synthetic OCT cohort (test split)")
    import json

    rep = json.loads(files["json"].read_text())["attributes"]["race"]
    auc = rep["metrics"]["auc"]
    print("\nAUC by race (test split, 95 % bootstrap CI):")
    for g, v in auc["by_group"].items():
        lo, hi = (auc["ci"]["by_group"][g] or (None, None)) if auc.get("ci") else (None, None)
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
        print(f"  {g:<6} n={rep['group_sizes'][g]:<4} AUC {v:.3f}{ci}")
    print(f"  overall       AUC {auc['overall']:.3f}")
    d = rep["disparities"]
    print(f"EOM {d['eom']['value']:.3f} (1 = fair)   EOdd {d['eodd']['value']:.3f} ({d['eodd']['strategy']}, "
          f"Black vs rest; 0 = fair)   ES-AUC {d['es_auc']['value']:.3f}   DP gap {d['dp_difference']['value']:.3f}")
    print(f"\nreport: {files['markdown']}  (figures and report.json beside it); {time.time() - t0:.0f} s")
    return {"manifest": manifest, "predictions": pred_file, **files, "val_auc": val_auc, "test_auc": auc["overall"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="quick_output")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    run_baseline(args.out, n=args.n, seed=args.seed, n_bootstrap=args.n_bootstrap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
