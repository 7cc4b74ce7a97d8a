"""Synthetic 3D OCT glaucoma cohort (Harvard-GF-like): layered retina volumes, glaucoma = thin RNFL.

Each case is one float32 NIfTI volume of shape ``(X, Y, D)`` (default 32x32x32, spacing 1 mm):
axis 0 = B-scan index (slow axis), axis 1 = A-scan position in a B-scan (fast axis), axis 2 =
depth, vitreous at index 0. Along depth every A-scan crosses vitreous (0.05), RNFL (0.95), GCL/IPL
(0.6), INL (0.3), OPL (0.6), ONL (0.25), RPE (1.0) and choroid (0.45), boundaries smoothed by a
logistic edge of 0.5 voxel. The retinal surface lies at 21-35 % of the depth (tilt and a foveal
pit at the centre), so the top ``VITREOUS_DEPTH`` = 12 % of the depth is pure vitreous in every
volume: the noise of a case is measured there.

**Label** (``glaucoma``): a healthy RNFL is ``0.10 * D`` thick (x U(0.85, 1.15) per eye, thinner
at the fovea); glaucoma thins it by a share drawn from ``GLAUCOMA_THINNING`` = U(35 %, 75 %)
over one half of the volume along axis 0 (superior or inferior, chosen at random), a smooth
logistic step. Mild cases overlap with thick healthy layers, so the label is learnable but not
trivially separable (a simple intensity feature separates most but not all cases at the default
noise).

**Knobs** (attribute ``race``: Asian, Black, White):

* ``prevalence``: per-group glaucoma rate, exact (``round_half_up(n_g * p_g)`` positives).
* ``cue_strength``: stripes along axis 0 (:func:`~fairmonai.data.synth.common.stripe_cue`):
  Asian / Black / White get 4 / 8 / 12 cycles at ``X = 32``.
* ``difficulty``: multiplies the standard deviation of the additive Gaussian noise
  (``noise``, default 0.1) of that group's volumes.
* ``group_proportions`` / ``group_counts`` / ``metadata_from``: who is in the cohort.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from ..manifest import load_schema
from . import common as C

__all__ = [
    "DATASET",
    "ATTRIBUTE",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "DEFAULT_NOISE",
    "DEFAULT_PREVALENCE",
    "GLAUCOMA_THINNING",
    "VITREOUS_DEPTH",
    "LAYER_LEVELS",
    "render_oct_volume",
    "make_oct_glaucoma",
]

DATASET = "oct_glaucoma"
ATTRIBUTE = "race"
DEFAULT_SHAPE = (32, 32, 32)
MIN_SHAPE = (16, 16, 24)
DEFAULT_SPACING = (1.0, 1.0, 1.0)
DEFAULT_NOISE = 0.1
DEFAULT_PREVALENCE = 0.5
GLAUCOMA_THINNING = (0.35, 0.75)
VITREOUS_DEPTH = 0.12
#: Intensity of vitreous, RNFL, GCL/IPL, INL, OPL, ONL, RPE, choroid (top to bottom).
LAYER_LEVELS = (0.05, 0.95, 0.6, 0.3, 0.6, 0.25, 1.0, 0.45)
#: Thickness of GCL/IPL, INL, OPL, ONL, RPE as a fraction of the depth (RNFL: 0.10, see above).
_LAYER_THICKNESS = (0.08, 0.05, 0.04, 0.08, 0.04)
_RNFL = 0.10
_EDGE = 0.5


def render_oct_volume(rng: np.random.Generator, shape=DEFAULT_SHAPE, *, glaucoma: bool, group_index: int = 0,
                      num_groups: int = 3, cue_strength: float = 0.0, noise: float = DEFAULT_NOISE) -> np.ndarray:
    """One OCT-like volume (see the module docstring for the anatomy).

    Args:
        rng: the case's generator.
        shape: ``(X, Y, D)``.
        glaucoma: thin the RNFL over half the volume.
        group_index, num_groups: which stripe cue (index into the attribute's categories).
        cue_strength: stripe strength (0 = none).
        noise: standard deviation of the additive Gaussian noise (already times the difficulty).

    Returns:
        float32 array of shape ``(X, Y, D)``.
    """
    X, Y, D = shape
    u = np.linspace(-1.0, 1.0, X)[:, None]
    v = np.linspace(-1.0, 1.0, Y)[None, :]
    r2 = u ** 2 + v ** 2
    tilt = rng.uniform(-1.0, 1.0, size=2)
    surface = D * (0.26 + rng.uniform(-0.02, 0.02) + 0.015 * (tilt[0] * u + tilt[1] * v) + 0.06 * np.exp(-r2 / 0.08))
    rnfl = D * _RNFL * rng.uniform(0.85, 1.15) * (1.0 - 0.7 * np.exp(-r2 / 0.05))
    if glaucoma:
        side = 1.0 if rng.random() < 0.5 else -1.0
        rnfl = rnfl * (1.0 - rng.uniform(*GLAUCOMA_THINNING) * expit(side * u / 0.15))
    thickness = [rnfl] + [np.full_like(rnfl, D * t) for t in _LAYER_THICKNESS]
    z = np.arange(D, dtype=np.float64)[None, None, :]
    img = np.full((X, Y, D), LAYER_LEVELS[0], dtype=np.float64)
    boundary = surface.copy()
    for k in range(len(LAYER_LEVELS) - 1):
        img += (LAYER_LEVELS[k + 1] - LAYER_LEVELS[k]) * expit((z - boundary[..., None]) / _EDGE)
        if k < len(thickness):
            boundary = boundary + thickness[k]
    img *= C.stripe_cue(X, group_index, num_groups, cue_strength, rng.uniform(0, 2 * np.pi))[:, None, None]
    img += noise * rng.standard_normal((X, Y, D))
    return img.astype(np.float32)


def make_oct_glaucoma(out_dir, n=None, seed=0, *, prevalence=None, cue_strength=0.0, difficulty=None,
                      group_proportions=None, group_counts=None, metadata_from=None, shape=DEFAULT_SHAPE,
                      spacing=DEFAULT_SPACING, noise=DEFAULT_NOISE, verbose: bool = False) -> Path:
    """Write a synthetic ``oct_glaucoma`` cohort: ``images/oct_NNNNN.nii.gz``, ``cohort.json``, ``manifest.csv``.

    Args:
        out_dir: output folder (created; a manifest already there is removed first).
        n: number of cases (may be left out with ``group_counts`` or ``metadata_from``).
        seed: integer >= 0; the same seed gives byte-identical files.
        prevalence: glaucoma rate, one number or per race (``"Black=0.6,White=0.3"``); default 0.5.
        cue_strength: stripe cue strength >= 0 (default 0: no cue).
        difficulty: noise multiplier per race (default 1).
        group_proportions: race shares summing to 1 (default equal); unnamed races get none.
        group_counts: race sizes instead (``"Asian=20,Black=10,White=30"``).
        metadata_from: an ``oct_glaucoma`` manifest whose rows give race, age and (without
            ``prevalence``) the label of the cases.
        shape: ``(X, Y, D)``, each at least (16, 16, 24).
        spacing: voxel size in mm written to the affine.
        noise: base standard deviation of the additive Gaussian noise.
        verbose: print progress and a summary line.

    Returns:
        path of ``manifest.csv``.

    Raises:
        ValueError: a bad knob, naming the value.
    """
    seed = C.check_seed(seed)
    groups = list(load_schema(DATASET).attributes[ATTRIBUTE].categories)
    shape = C.parse_shape(shape, 3, MIN_SHAPE)
    spacing = C.parse_spacing(spacing)
    cue = C.parse_cue_strength(cue_strength)
    base_noise = C.parse_positive(noise, "noise")
    diff = C.parse_difficulty(difficulty, groups, attribute=ATTRIBUTE)
    if cue > 0:
        C.cue_cycles(shape[0], len(groups))
    rng = C.cohort_rng(seed)
    plan = C.plan_cohort(DATASET, n, rng, attribute=ATTRIBUTE, groups=groups, group_proportions=group_proportions,
                         group_counts=group_counts, prevalence=prevalence, default_prevalence=DEFAULT_PREVALENCE,
                         metadata_from=metadata_from)
    if plan.records is not None:
        ages = [C.number_text(r.get("age")) for r in plan.records]
    else:
        ages = [str(a) for a in rng.integers(40, 86, size=plan.n)]
    split, fold = C.split_columns(plan.labels, plan.groups, seed)

    out = C.prepare_out_dir(out_dir)
    (out / "images").mkdir(exist_ok=True)
    ids = [f"oct_{i:05d}" for i in range(plan.n)]
    progress = C.Progress(DATASET, plan.n, verbose)
    for i, cid in enumerate(ids):
        g = plan.render_groups[i]
        vol = render_oct_volume(C.case_rng(seed, i), shape, glaucoma=plan.labels[i] == "1",
                                group_index=groups.index(g), num_groups=len(groups), cue_strength=cue,
                                noise=base_noise * diff[g])
        C.write_nifti(out / "images" / f"{cid}.nii.gz", vol, spacing)
        progress.step(i + 1)

    table = pd.DataFrame({
        "case_id": ids, "image": [f"images/{c}.nii.gz" for c in ids], "label": plan.labels,
        ATTRIBUTE: plan.groups, "age": ages, "split": split, "fold": fold,
    })
    counts = C.count_table(plan.groups, plan.labels, groups, ["0", "1"])
    cohort = {
        "dataset": DATASET, "seed": seed, "n": plan.n, "group_attribute": ATTRIBUTE, "groups": groups,
        "knobs": {"prevalence": plan.prevalence, "cue_strength": cue, "difficulty": diff,
                  "group_proportions": group_proportions, "group_counts": group_counts,
                  "metadata_from": None if metadata_from is None else str(metadata_from), "noise": base_noise},
        "image": {"shape": list(shape), "spacing": list(spacing), "dtype": "float32", "format": "nifti",
                  "axes": "0 = B-scan (slow), 1 = A-scan (fast), 2 = depth (vitreous at 0)",
                  "vitreous_depth_fraction": VITREOUS_DEPTH},
        "cue": {"axis": 0, "amplitude_per_strength": C.CUE_AMPLITUDE,
                "cycles": dict(zip(groups, C.cue_cycles(shape[0], len(groups))))},
        "label": {"name": "glaucoma", "rnfl_fraction_of_depth": _RNFL,
                  "glaucoma_thinning_range": list(GLAUCOMA_THINNING)},
        "counts": counts, "splits": C.split_counts(split),
    }
    manifest = C.write_outputs(out, DATASET, table, cohort)
    if verbose:
        print(C.summary_line(DATASET, manifest, ATTRIBUTE, counts, "1", "glaucoma"), flush=True)
    return manifest

