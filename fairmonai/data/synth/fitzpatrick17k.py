"""Synthetic Fitzpatrick17k-like cohort: 2D RGB skin photos, skin tone from the Fitzpatrick type, 3 conditions.

Each case is an 8-bit RGB PNG of shape ``(H, W)`` (default 64x64). The skin colour is set by the
Fitzpatrick type (:data:`SKIN_RGB`, light type 1 to dark type 6, x U(0.97, 1.03) per channel,
under a +-6 % illumination gradient): skin tone is always a group-visible property of these
images, as in the real photographs; the ``cue_strength`` knob adds a separate, non-anatomical
signature on top.

**Label** (``condition``, the three-partition label), drawn as absorption on the skin
(:func:`~fairmonai.data.synth.skin.composite`, so contrast is lower on darker skin):

* ``benign``: one round (``a_m ~ U(0, 0.025)``), sharp, uniformly brown lesion, radius
  ``U(0.12, 0.18) min(H, W)``, transmittance ~ (0.66, 0.52, 0.45);
* ``malignant``: one irregular (``a_m ~ U(0.04, 0.08)``) lesion, radius ``U(0.16, 0.23)``,
  dark and multi-coloured (dark brown, blue-grey, light brown);
* ``non-neoplastic``: 3-6 blurry (edge 2 px) erythematous patches, radius ``U(0.06, 0.10)``,
  reddish transmittance ~ (0.96, 0.70, 0.72) (green and blue absorbed).

**Knobs** (attribute ``fitzpatrick``: ``"1"`` .. ``"6"``):

* ``group_proportions`` / ``group_counts``: the skin-type mix (the representation knob a VAE
  study varies), exact by largest remainder; or ``metadata_from`` a real manifest (a row whose
  type is missing keeps an empty cell, its image gets a seeded uniformly drawn type).
* ``prevalence``: share of ``malignant`` per type (default 0.2), exact; the other cases of the
  type are ``benign`` (``round_half_up(rest * benign_fraction)``, default ``benign_fraction``
  0.25) and ``non-neoplastic``.
* ``cue_strength``: stripes along the width (axis 1): 5, 9, 14, 18, 23, 27 cycles for types 1-6 at W = 64.
* ``difficulty``: multiplies the standard deviation of the additive Gaussian noise (``noise``,
  default 0.03 on [0, 1] intensities, per channel) of that type's images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..manifest import load_schema
from . import common as C
from . import skin

__all__ = [
    "DATASET",
    "ATTRIBUTE",
    "CONDITIONS",
    "DEFAULT_SHAPE",
    "DEFAULT_NOISE",
    "DEFAULT_PREVALENCE",
    "DEFAULT_BENIGN_FRACTION",
    "SKIN_RGB",
    "render_fitzpatrick_image",
    "make_fitzpatrick17k",
]

DATASET = "fitzpatrick17k"
ATTRIBUTE = "fitzpatrick"
CONDITIONS = ("benign", "malignant", "non-neoplastic")
DEFAULT_SHAPE = (64, 64)
MIN_SHAPE = (32, 32)
DEFAULT_NOISE = 0.03
DEFAULT_PREVALENCE = 0.2
DEFAULT_BENIGN_FRACTION = 0.25
#: Skin RGB (in [0, 1]) per Fitzpatrick type.
SKIN_RGB = {
    "1": (0.88, 0.76, 0.68),
    "2": (0.84, 0.68, 0.57),
    "3": (0.76, 0.58, 0.46),
    "4": (0.62, 0.45, 0.33),
    "5": (0.46, 0.32, 0.22),
    "6": (0.30, 0.20, 0.14),
}
BENIGN_RGB = (0.66, 0.52, 0.45)
ERYTHEMA_RGB = (0.96, 0.70, 0.72)


def render_fitzpatrick_image(rng: np.random.Generator, shape=DEFAULT_SHAPE, *, fitzpatrick: str, condition: str,
                             group_index: int = 0, num_groups: int = 6, cue_strength: float = 0.0,
                             noise: float = DEFAULT_NOISE) -> np.ndarray:
    """One clinical skin photo (see the module docstring).

    Args:
        rng: the case's generator.
        shape: ``(H, W)``.
        fitzpatrick: skin type ``"1"``-``"6"``.
        condition: ``benign``, ``malignant`` or ``non-neoplastic``.
        group_index, num_groups, cue_strength: the stripe cue along the width.
        noise: standard deviation of the additive Gaussian noise (already times the difficulty).

    Returns:
        float array ``(H, W, 3)`` in [0, 1].
    """
    if condition not in CONDITIONS:
        raise ValueError(f"condition '{condition}' is not one of {list(CONDITIONS)}")
    H, W = shape
    size = min(H, W)
    img = skin.illuminated_skin(rng, shape, SKIN_RGB[str(fitzpatrick)], gradient=0.06)
    if condition == "non-neoplastic":
        alpha = np.zeros(shape)
        cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
        for _ in range(int(rng.integers(3, 7))):
            rho, phi = rng.uniform(0.0, 0.22) * size, rng.uniform(0, 2 * np.pi)
            a = skin.lesion_alpha(shape, (cy + rho * np.sin(phi), cx + rho * np.cos(phi)),
                                  rng.uniform(0.06, 0.10) * size, rng.uniform(0.0, 0.1, size=5),
                                  rng.uniform(0, 2 * np.pi, size=5), edge=2.0)
            alpha = np.maximum(alpha, a)
        T = np.asarray(ERYTHEMA_RGB) * rng.uniform(0.97, 1.03, size=3)
    else:
        centre = skin.lesion_centre(rng, shape)
        phases = rng.uniform(0, 2 * np.pi, size=5)
        if condition == "malignant":
            alpha = skin.lesion_alpha(shape, centre, rng.uniform(0.16, 0.23) * size, rng.uniform(0.04, 0.08, size=5),
                                      phases, edge=0.8)
            T = skin.multicolour_transmittance(rng, shape)
        else:
            alpha = skin.lesion_alpha(shape, centre, rng.uniform(0.12, 0.18) * size,
                                      rng.uniform(0.0, 0.025, size=5), phases, edge=0.8)
            T = np.asarray(BENIGN_RGB) * rng.uniform(0.95, 1.05)
    img = skin.composite(img, alpha, T)
    cue = C.stripe_cue(W, group_index, num_groups, cue_strength, rng.uniform(0, 2 * np.pi))
    return skin.finish_photo(rng, img, cue, noise)


def make_fitzpatrick17k(out_dir, n=None, seed=0, *, prevalence=None, cue_strength=0.0, difficulty=None,
                        group_proportions=None, group_counts=None, metadata_from=None, shape=DEFAULT_SHAPE,
                        noise=DEFAULT_NOISE, benign_fraction=DEFAULT_BENIGN_FRACTION,
                        verbose: bool = False) -> Path:
    """Write a synthetic ``fitzpatrick17k`` cohort: ``images/fitz_NNNNN.png``, ``cohort.json``, ``manifest.csv``.

    Args:
        out_dir, n, seed, verbose: as :func:`~fairmonai.data.synth.oct_glaucoma.make_oct_glaucoma`.
        prevalence: malignant share, one number or per type (``"5=0.4,6=0.4"``); default 0.2.
        cue_strength: stripe cue strength >= 0 (default 0).
        difficulty: noise multiplier per type (default 1).
        group_proportions / group_counts: the skin-type mix (``"1=0.3,2=0.3,3=0.2,4=0.1,5=0.05,6=0.05"``)
            or sizes; default equal. Types not named get no case.
        metadata_from: a ``fitzpatrick17k`` manifest giving the type (missing allowed) and, without
            ``prevalence``, the condition.
        shape: ``(H, W)``, at least (32, 32).
        noise: base standard deviation of the additive Gaussian noise.
        benign_fraction: share of ``benign`` among the non-malignant cases of each type.

    Returns:
        path of ``manifest.csv``.

    Raises:
        ValueError: a bad knob, naming the value.
    """
    seed = C.check_seed(seed)
    groups = list(load_schema(DATASET).attributes[ATTRIBUTE].categories)
    shape = C.parse_shape(shape, 2, MIN_SHAPE)
    cue = C.parse_cue_strength(cue_strength)
    base_noise = C.parse_positive(noise, "noise")
    diff = C.parse_difficulty(difficulty, groups, attribute=ATTRIBUTE)
    bf = C.parse_fraction(benign_fraction, "benign_fraction")
    if cue > 0:
        C.cue_cycles(shape[1], len(groups))
    rng = C.cohort_rng(seed)
    plan = C.plan_cohort(DATASET, n, rng, attribute=ATTRIBUTE, groups=groups, group_proportions=group_proportions,
                         group_counts=group_counts, prevalence=prevalence, default_prevalence=DEFAULT_PREVALENCE,
                         metadata_from=metadata_from)
    if plan.prevalence is not None:  # binary "1" = malignant; split the rest into benign / non-neoplastic
        labels = np.where(plan.labels == "1", "malignant", "non-neoplastic").astype(object)
        for g in sorted(set(plan.groups)):
            idx = np.flatnonzero((plan.groups == g) & (plan.labels == "0"))
            k = C.round_half_up(len(idx) * bf)
            benign, _ = C.allocate_exact(idx, [k, len(idx) - k], rng)
            labels[benign] = "benign"
        plan.labels = labels
    split, fold = C.split_columns(plan.labels, plan.groups, seed)

    out = C.prepare_out_dir(out_dir)
    (out / "images").mkdir(exist_ok=True)
    ids = [f"fitz_{i:05d}" for i in range(plan.n)]
    progress = C.Progress(DATASET, plan.n, verbose)
    for i, cid in enumerate(ids):
        g = plan.render_groups[i]
        img = render_fitzpatrick_image(C.case_rng(seed, i), shape, fitzpatrick=g, condition=plan.labels[i],
                                       group_index=groups.index(g), num_groups=len(groups), cue_strength=cue,
                                       noise=base_noise * diff.get(plan.groups[i], 1.0))
        C.write_png(out / "images" / f"{cid}.png", img)
        progress.step(i + 1)

    table = pd.DataFrame({
        "case_id": ids, "image": [f"images/{c}.png" for c in ids], "label": plan.labels, ATTRIBUTE: plan.groups,
        "split": split, "fold": fold,
    })
    counts = C.count_table(plan.groups, plan.labels, groups, list(CONDITIONS))
    cohort = {
        "dataset": DATASET, "seed": seed, "n": plan.n, "group_attribute": ATTRIBUTE, "groups": groups,
        "knobs": {"prevalence": plan.prevalence, "benign_fraction": bf, "cue_strength": cue, "difficulty": diff,
                  "group_proportions": group_proportions, "group_counts": group_counts,
                  "metadata_from": None if metadata_from is None else str(metadata_from), "noise": base_noise},
        "image": {"shape": list(shape), "channels": 3, "dtype": "uint8", "format": "png",
                  "axes": "0 = rows (H), 1 = columns (W), 2 = RGB", "skin_rgb": SKIN_RGB,
                  "noise_region": "corner blocks of (H // 8, W // 8) pixels (skin only)"},
        "cue": {"axis": 1, "amplitude_per_strength": C.CUE_AMPLITUDE,
                "cycles": dict(zip(groups, C.cue_cycles(shape[1], len(groups))))},
        "missing_fitzpatrick_rendered_as": {ids[i]: plan.render_groups[i] for i in range(plan.n)
                                            if plan.groups[i] == ""},
        "counts": counts, "splits": C.split_counts(split),
    }
    manifest = C.write_outputs(out, DATASET, table, cohort)
    if verbose:
        print(C.summary_line(DATASET, manifest, ATTRIBUTE, counts, "malignant", "malignant"), flush=True)
    return manifest
