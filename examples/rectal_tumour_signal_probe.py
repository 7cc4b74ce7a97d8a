"""How much of pCR can be read from the rectal bundle's network input: linear probes on the cached crops.

A diagnostic for issue 17's null result (the DenseNet at the CPU size does not learn pCR on the
synthetic cohort): is the label signal still in what the network sees, the z-scored crop that the
preprocessing cached, or did resampling, cropping or z-scoring remove it? Each probe is a logistic
regression (standardised features, scikit-learn defaults) fitted on the manifest's ``train`` split
and scored once on ``test`` (ROC AUC):

* ``mask_*``: features read through the tumour mask, which the network does not get: log tumour
  volume (voxels at 1 mm), mean and sd of the z-scored crop inside the mask, and the mean before
  the z-score (``zscore_mean`` / ``zscore_sd`` of ``preprocessing.csv`` undo it).
* ``centre_cube``: mean and sd of the z-scored crop's central ``--cube``^3 voxels, no mask: the crop
  is centred on the tumour box, so this is a feature a network could compute from its input alone.
* ``crop_raw_stats``: the crop's mean and sd before the z-score (what the z-score removes).
* ``voxels_pca``: every second voxel of the crop, PCA to ``--pca`` components, then the regression:
  what a linear model on the raw input reaches.

Also printed: Cohen's d of each feature between pCR and non-pCR in the training split.

    python examples/rectal_tumour_signal_probe.py <cohort folder>... [--cube 8] [--pca 20] [--out FILE]

A cohort folder holds ``manifest.csv`` (``case_id``, ``label``, ``split``) and ``preprocessed/``
(``preprocessing.csv`` and ``cases/<case_id>/image.nii.gz`` / ``mask.nii.gz``): the ``dataset_dir``
of a bundle run, e.g. ``runs/fami_seeds/data/seed0``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

PROBES = {
    "mask_log_volume": ["log_volume"],
    "mask_mean_zscored": ["tumour_mean"],
    "mask_mean_before_zscore": ["tumour_mean_raw"],
    "mask_volume_mean_sd": ["log_volume", "tumour_mean", "tumour_sd"],
    "centre_cube": ["centre_mean", "centre_sd"],
    "crop_raw_stats": ["crop_mean_raw", "crop_sd_raw"],
}


def case_features(image: np.ndarray, mask: np.ndarray, zscore_mean: float, zscore_sd: float, cube: int) -> dict:
    """Scalar features of one z-scored crop ``image`` (X, Y, Z) and its mask crop (see the module docstring)."""
    inside = mask > 0
    if not inside.any():
        raise ValueError("empty mask crop")
    raw = image * zscore_sd + zscore_mean
    lo = np.array(image.shape) // 2 - cube // 2
    centre = image[lo[0]:lo[0] + cube, lo[1]:lo[1] + cube, lo[2]:lo[2] + cube]
    return {"log_volume": float(np.log(inside.sum())), "tumour_mean": float(image[inside].mean()),
            "tumour_sd": float(image[inside].std()), "tumour_mean_raw": float(raw[inside].mean()),
            "centre_mean": float(centre.mean()), "centre_sd": float(centre.std()),
            "crop_mean_raw": float(zscore_mean), "crop_sd_raw": float(zscore_sd)}


def load_cohort(folder: Path, cube: int) -> tuple[pd.DataFrame, np.ndarray]:
    """One row of features per case (``label``, ``split``) and the subsampled voxels, ``(cases, voxels)``."""
    manifest = pd.read_csv(folder / "manifest.csv", dtype={"case_id": str})
    table = pd.read_csv(folder / "preprocessed" / "preprocessing.csv", dtype={"case_id": str}).set_index("case_id")
    rows, voxels = [], []
    for case in manifest.itertuples():
        if case.case_id not in table.index or table.loc[case.case_id, "status"] != "ok":
            raise ValueError(f"{folder}: case {case.case_id} has no cached crop (run the bundle once first)")
        d = folder / "preprocessed" / "cases" / case.case_id
        image = np.asarray(nib.load(d / "image.nii.gz").dataobj, dtype=np.float32)
        mask = np.asarray(nib.load(d / "mask.nii.gz").dataobj)
        rec = table.loc[case.case_id]
        rows.append({"case_id": case.case_id, "label": int(case.label), "split": case.split,
                     **case_features(image, mask, float(rec["zscore_mean"]), float(rec["zscore_sd"]), cube)})
        voxels.append(image[::2, ::2, ::2].ravel())
    return pd.DataFrame(rows), np.stack(voxels)


def probe_auc(x_train, y_train, x_test, y_test, pca: int | None = None) -> float:
    """Test ROC AUC of a logistic regression fitted on the training rows."""
    steps = [StandardScaler()] + ([PCA(pca, random_state=0)] if pca else []) + [LogisticRegression(max_iter=5000)]
    model = make_pipeline(*steps).fit(x_train, y_train)
    return float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))


def cohens_d(a: pd.Series, b: pd.Series) -> float | None:
    """``(mean a - mean b) / sqrt((var a + var b) / 2)`` (sample variances), 2 decimals; ``None`` when both are constant."""
    pooled = np.sqrt((a.var() + b.var()) / 2)
    return round(float((a.mean() - b.mean()) / pooled), 2) if pooled > 0 else None


def probe_cohort(folder: Path, cube: int = 8, pca: int = 20) -> dict:
    feats, voxels = load_cohort(folder, cube)
    tr, te = (feats["split"] == "train").to_numpy(), (feats["split"] == "test").to_numpy()
    y_tr, y_te = feats["label"][tr].to_numpy(), feats["label"][te].to_numpy()
    out = {name: round(probe_auc(feats.loc[tr, cols].to_numpy(), y_tr, feats.loc[te, cols].to_numpy(), y_te), 3)
           for name, cols in PROBES.items()}
    out["voxels_pca"] = round(probe_auc(voxels[tr], y_tr, voxels[te], y_te, pca=min(pca, int(tr.sum()) - 1)), 3)
    train = feats[tr]
    pos, neg = train[train["label"] == 1], train[train["label"] == 0]
    out["train_cohens_d"] = {c: cohens_d(pos[c], neg[c]) for c in sorted({c for cs in PROBES.values() for c in cs})}
    out["cases"] = {"train": int(tr.sum()), "train_pcr": int(y_tr.sum()), "test": int(te.sum()),
                    "test_pcr": int(y_te.sum())}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cohorts", nargs="+", type=Path)
    ap.add_argument("--cube", type=int, default=8)
    ap.add_argument("--pca", type=int, default=20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    result = {str(c): probe_cohort(c, args.cube, args.pca) for c in args.cohorts}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
