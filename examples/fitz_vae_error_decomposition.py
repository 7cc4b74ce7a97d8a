"""Split the reconstruction MSE of finished Fitzpatrick VAE runs on the synthetic skin cohort into noise and
structure, per test group.

The synthetic images are ``clean + noise`` (the noise standard deviation times the type's difficulty is
added last, :func:`fairmonai.data.synth.skin.finish_photo`), so each test image's clean version can be
rendered again (same case generator, ``noise=0``). Per test image, on the evaluation's [-1, 1] scale:

* ``mse``: decode(mu) against the noisy image (what the bundle reports);
* ``mse_clean``: decode(mu) against the clean image (the structure the model missed);
* ``noise_floor``: the noisy image against the clean one (what no reconstruction of the clean image
  can remove).

    python examples/fitz_vae_error_decomposition.py RUN_FOLDER... [--out decomposition.csv]

RUN_FOLDER is a bundle_root of a finished run (``models/model.pt``, ``eval/reconstruction_test.csv``) whose
manifest is a synthetic cohort; the network sizes are read from the run's record.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fairmonai.data.synth import common as C
from fairmonai.data.synth.fitzpatrick17k import render_fitzpatrick_image
from fairmonai.networks import ResidualVAE


def _network(record: dict) -> ResidualVAE:
    spec = dict(record["model"]["network_def"])
    spec.pop("_target_")
    return ResidualVAE(**spec)


def decompose(run: Path) -> pd.DataFrame:
    record = json.loads((run / "models" / "run_record.json").read_text())["fairmonai_run_record"]
    manifest = Path(record["manifest"])
    cohort = json.loads((manifest.parent / "cohort.json").read_text())
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False).set_index("case_id")
    per_image = pd.read_csv(run / "eval" / "reconstruction_test.csv", dtype={"case_id": str, "fitzpatrick": str})
    net = _network(record)
    net.load_state_dict(torch.load(run / "models" / "model.pt", map_location="cpu", weights_only=True)["model"])
    net.eval()
    groups = cohort["groups"]
    shape = tuple(cohort["image"]["shape"])
    from PIL import Image

    noisy, clean = [], []
    for cid in per_image["case_id"]:
        i = int(cid.split("_")[-1])
        t = table.loc[cid, "fitzpatrick"]
        img = render_fitzpatrick_image(C.case_rng(cohort["seed"], i), shape, fitzpatrick=t, condition=table.loc[cid, "label"],
                                       group_index=groups.index(t), num_groups=len(groups),
                                       cue_strength=cohort["knobs"]["cue_strength"], noise=0.0)
        clean.append(np.round(img * 255.0) / 127.5 - 1.0)
        noisy.append(np.asarray(Image.open(manifest.parent / table.loc[cid, "image"]).convert("RGB"), np.float64) / 127.5 - 1.0)
    x = torch.from_numpy(np.stack(noisy).transpose(0, 3, 1, 2)).float()
    c = np.stack(clean).transpose(0, 3, 1, 2)
    with torch.no_grad():
        recon = net(x).numpy().astype(np.float64)
    xn = x.numpy().astype(np.float64)
    out = per_image[["case_id", "tone_group", "fitzpatrick", "mse"]].copy()
    out["mse_recomputed"] = ((recon - xn) ** 2).mean(axis=(1, 2, 3))
    out["mse_clean"] = ((recon - c) ** 2).mean(axis=(1, 2, 3))
    out["noise_floor"] = ((xn - c) ** 2).mean(axis=(1, 2, 3))
    key = pd.read_csv(run / "eval" / "report_test" / "runs.csv", dtype={"mix": str}).iloc[0]
    return out.assign(run=run.name, mix=key["mix"], repeat=int(key["repeat"]))


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    table = pd.concat([decompose(r) for r in args.runs], ignore_index=True)
    summary = table.groupby(["mix", "tone_group"])[["mse", "mse_clean", "noise_floor"]].mean()
    print(summary.round(5).to_string())
    if args.out:
        table.to_csv(args.out, index=False)
        summary.to_csv(args.out.with_name(args.out.stem + "_summary.csv"))
    return table


if __name__ == "__main__":
    main()
