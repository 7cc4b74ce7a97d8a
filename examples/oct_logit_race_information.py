"""How much race information the test logits of finished OCT runs carry, and where it sits.

For each run folder (one run of an OCT experiment, e.g. ``fami_seeds``: it holds ``eval/predictions_test.csv``)
reads the glaucoma probability p, takes the logit margin z = log(p / (1 - p)) (= v1 - v0 of the two
logits) and prints

* the mean of z per race (what a degree-1 FaMI fit sees: group means and variances);
* ``I(race; z)``: the k-nearest-neighbour estimate that the penalty-curve log records during
  training (:func:`fairmonai.metrics.knn_mutual_information`, k = 3), mean over
  5 seeds of its jitter, in nats;
* ``I(race; z | y)``: the same within each label, weighted by the label's share: race information
  that the label does not explain.

    python -m fairmonai.experiments run bundles/oct_glaucoma_fami fami_seeds --out runs/fami_seeds \
        --configurations vit fami_vit
    python examples/oct_logit_race_information.py runs/fami_seeds/{vit,fami_vit}_seed0

Scored on the test split, once, after training; it selects nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logit

from fairmonai.metrics import knn_mutual_information


def knn_mi(z: np.ndarray, codes: np.ndarray, repeats: int = 5) -> float:
    """Mean over ``repeats`` jitter seeds of the k = 3 nearest-neighbour estimate of I(codes; z)."""
    return float(np.mean([knn_mutual_information(z, codes, n_neighbors=3, random_state=k) for k in range(repeats)]))


def race_information(predictions: Path) -> dict[str, float]:
    """Group means of the logit margin, I(race; z) and I(race; z | label) of one predictions CSV."""
    d = pd.read_csv(predictions)
    missing = {"label", "score", "race"} - set(d.columns)
    if missing:
        raise ValueError(f"{predictions}: missing column(s) {sorted(missing)}")
    z = logit(d["score"].to_numpy(float).clip(1e-7, 1 - 1e-7))
    race, y = d["race"].to_numpy(), d["label"].to_numpy()
    codes = pd.Categorical(race).codes.astype(np.int64)
    out = {f"mean_z_{g}": float(z[race == g].mean()) for g in sorted(set(race))}
    out["mi"] = knn_mi(z, codes)
    out["mi_given_label"] = sum((y == c).mean() * knn_mi(z[y == c], codes[y == c]) for c in np.unique(y))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="model folders holding eval/predictions_test.csv")
    args = parser.parse_args()
    rows = {}
    for run in args.runs:
        f = run / "eval" / "predictions_test.csv"
        if not f.is_file():
            raise SystemExit(f"{run}: no eval/predictions_test.csv (run evaluate.json first)")
        rows[str(run)] = race_information(f)
    print(pd.DataFrame(rows).T.round(3).to_string())


if __name__ == "__main__":
    main()
