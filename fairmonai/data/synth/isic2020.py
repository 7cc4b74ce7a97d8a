"""Synthetic ISIC 2020-like dermoscopy cohort: 2D RGB lesion images, melanoma yes/no, sex, patients.

Each case is an 8-bit RGB PNG of shape ``(H, W)`` (default 64x64): beige skin under a linear
illumination gradient with one pigmented lesion near the centre (see
:mod:`fairmonai.data.synth.skin`).

**Label** (``melanoma``): benign naevi are round (outline harmonics ``a_m ~ U(0, 0.025)``),
radius ``U(0.15, 0.22) min(H, W)``, uniformly light brown (transmittance ~ (0.72, 0.55, 0.45));
melanomas have an irregular border (``a_m ~ U(0.04, 0.08)``, ``m = 2..6``), radius
``U(0.17, 0.24) min(H, W)``, and are darker and multi-coloured (dark brown, blue-grey, light
brown patches). Darkness and colour spread inside the lesion separate the classes.

**Patients**: within each sex, the shuffled images are dealt to patients of
``1..max_images_per_patient`` (default 4) images, ids ``patient_NNNNN`` (column ``patient_id``);
``age_approx`` is one multiple of 5 per patient (20-85), ``age_group`` its bin (0-30, 31-60, 61+). The split is **patient-level**:
:func:`~fairmonai.data.assign_splits` runs on patients (stratified on "has a melanoma" x sex)
and every image takes its patient's split and fold, so no patient is in both train and test.
``val_fraction`` (default 0) moves that share of each stratum's patients into a ``val`` part
(0.2 with the default train share 0.7: Hänel et al.'s 70/20/10 split).

**Knobs** (attribute ``sex``: female, male): ``prevalence`` (melanoma rate per image, exact),
``cue_strength`` (stripes along the image width, axis 1), ``difficulty`` (multiplies the standard
deviation of the additive Gaussian noise, ``noise`` default 0.03 on [0, 1] intensities, per
channel), ``group_proportions`` / ``group_counts`` / ``metadata_from``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..attributes import isic_age_group
from ..manifest import load_schema
from ..splits import assign_splits
from . import common as C
from . import skin

__all__ = [
    "DATASET",
    "ATTRIBUTE",
    "DEFAULT_SHAPE",
    "DEFAULT_NOISE",
    "DEFAULT_PREVALENCE",
    "DEFAULT_MAX_IMAGES_PER_PATIENT",
    "SKIN_RGB",
    "render_isic_image",
    "make_isic2020",
]

DATASET = "isic2020"
ATTRIBUTE = "sex"
DEFAULT_SHAPE = (64, 64)
MIN_SHAPE = (32, 32)
DEFAULT_NOISE = 0.03
DEFAULT_PREVALENCE = 0.3
DEFAULT_MAX_IMAGES_PER_PATIENT = 4
SKIN_RGB = (0.86, 0.70, 0.62)
BENIGN_RGB = (0.72, 0.55, 0.45)


def render_isic_image(rng: np.random.Generator, shape=DEFAULT_SHAPE, *, melanoma: bool, group_index: int = 0,
                      num_groups: int = 2, cue_strength: float = 0.0, noise: float = DEFAULT_NOISE) -> np.ndarray:
    """One dermoscopy-like image (see the module docstring).

    Args:
        rng: the case's generator.
        shape: ``(H, W)``.
        melanoma: draw an irregular, dark, multi-coloured lesion.
        group_index, num_groups, cue_strength: the stripe cue along the width.
        noise: standard deviation of the additive Gaussian noise (already times the difficulty).

    Returns:
        float array ``(H, W, 3)`` in [0, 1].
    """
    H, W = shape
    size = min(H, W)
    img = skin.illuminated_skin(rng, shape, SKIN_RGB)
    centre = skin.lesion_centre(rng, shape)
    phases = rng.uniform(0, 2 * np.pi, size=5)
    if melanoma:
        alpha = skin.lesion_alpha(shape, centre, rng.uniform(0.17, 0.24) * size, rng.uniform(0.04, 0.08, size=5),
                                  phases, edge=0.8)
        T = skin.multicolour_transmittance(rng, shape)
    else:
        alpha = skin.lesion_alpha(shape, centre, rng.uniform(0.15, 0.22) * size, rng.uniform(0.0, 0.025, size=5),
                                  phases, edge=0.8)
        T = np.asarray(BENIGN_RGB) * rng.uniform(0.95, 1.05)
        T = T * (1.0 + 0.03 * skin.smooth_field(rng, shape, 3.0))[..., None]
    img = skin.composite(img, alpha, T)
    cue = C.stripe_cue(W, group_index, num_groups, cue_strength, rng.uniform(0, 2 * np.pi))
    return skin.finish_photo(rng, img, cue, noise)


def _patients(groups: np.ndarray, rng: np.random.Generator, max_per_patient: int) -> np.ndarray:
    pid = np.empty(len(groups), dtype=object)
    counter = 0
    for g in sorted(set(groups)):
        idx = np.flatnonzero(groups == g)
        idx = idx[rng.permutation(len(idx))]
        pos = 0
        while pos < len(idx):
            k = int(rng.integers(1, max_per_patient + 1))
            pid[idx[pos:pos + k]] = f"patient_{counter:05d}"
            counter += 1
            pos += k
    return pid


def make_isic2020(out_dir, n=None, seed=0, *, prevalence=None, cue_strength=0.0, difficulty=None,
                  group_proportions=None, group_counts=None, metadata_from=None, shape=DEFAULT_SHAPE,
                  noise=DEFAULT_NOISE, max_images_per_patient=DEFAULT_MAX_IMAGES_PER_PATIENT,
                  val_fraction=0.0, verbose: bool = False) -> Path:
    """Write a synthetic ``isic2020`` cohort: ``images/isic_NNNNN.png``, ``cohort.json``, ``manifest.csv``.

    Args:
        out_dir, n, seed, verbose: as :func:`~fairmonai.data.synth.oct_glaucoma.make_oct_glaucoma`.
        prevalence: melanoma rate, one number or per sex; default 0.3.
        cue_strength: stripe cue strength >= 0 (default 0).
        difficulty: noise multiplier per sex (default 1).
        group_proportions / group_counts: sex shares (sum 1) or sizes; default equal.
        metadata_from: an ``isic2020`` manifest giving sex, ``age_approx`` and (without
            ``prevalence``) the label.
        shape: ``(H, W)``, at least (32, 32).
        noise: base standard deviation of the additive Gaussian noise.
        max_images_per_patient: patients get 1..this many images (default 4).
        val_fraction: share of each stratum's patients in a ``val`` part (default 0: train/test).

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
    mipp = C.parse_number(max_images_per_patient, "max_images_per_patient")
    if mipp < 1 or not mipp.is_integer():
        raise ValueError(f"max_images_per_patient {max_images_per_patient} must be an integer >= 1")
    mipp = int(mipp)
    if cue > 0:
        C.cue_cycles(shape[1], len(groups))
    rng = C.cohort_rng(seed)
    plan = C.plan_cohort(DATASET, n, rng, attribute=ATTRIBUTE, groups=groups, group_proportions=group_proportions,
                         group_counts=group_counts, prevalence=prevalence, default_prevalence=DEFAULT_PREVALENCE,
                         metadata_from=metadata_from)
    pid = _patients(plan.groups, rng, mipp)
    patients = sorted(set(pid))
    if plan.records is not None:
        ages = [C.number_text(r.get("age_approx")) for r in plan.records]
    else:
        age_of = dict(zip(patients, (5 * rng.integers(4, 18, size=len(patients))).tolist()))
        ages = [str(age_of[p]) for p in pid]
    p_label = [str(int((plan.labels[pid == p] == "1").any())) for p in patients]
    p_group = [plan.groups[pid == p][0] for p in patients]
    val_fraction = C.parse_number(val_fraction, "val_fraction")
    p_split, p_fold = assign_splits(p_label, p_group, train_fraction=C.TRAIN_FRACTION, val_fraction=val_fraction,
                                    num_folds=C.NUM_FOLDS, seed=seed)
    split_of = dict(zip(patients, p_split))
    fold_of = dict(zip(patients, p_fold))
    split = np.array([split_of[p] for p in pid], dtype=object)
    fold = np.array(["" if fold_of[p] < 0 else str(int(fold_of[p])) for p in pid], dtype=object)

    out = C.prepare_out_dir(out_dir)
    (out / "images").mkdir(exist_ok=True)
    ids = [f"isic_{i:05d}" for i in range(plan.n)]
    progress = C.Progress(DATASET, plan.n, verbose)
    for i, cid in enumerate(ids):
        g = plan.render_groups[i]
        img = render_isic_image(C.case_rng(seed, i), shape, melanoma=plan.labels[i] == "1",
                                group_index=groups.index(g), num_groups=len(groups), cue_strength=cue,
                                noise=base_noise * diff[g])
        C.write_png(out / "images" / f"{cid}.png", img)
        progress.step(i + 1)

    table = pd.DataFrame({
        "case_id": ids, "image": [f"images/{c}.png" for c in ids], "label": plan.labels, ATTRIBUTE: plan.groups,
        "age_approx": ages, "age_group": [isic_age_group(a) or "" for a in ages], "patient_id": pid, "split": split,
        "fold": fold,
    })
    counts = C.count_table(plan.groups, plan.labels, groups, ["0", "1"])
    cohort = {
        "dataset": DATASET, "seed": seed, "n": plan.n, "group_attribute": ATTRIBUTE, "groups": groups,
        "knobs": {"prevalence": plan.prevalence, "cue_strength": cue, "difficulty": diff,
                  "group_proportions": group_proportions, "group_counts": group_counts,
                  "metadata_from": None if metadata_from is None else str(metadata_from), "noise": base_noise,
                  "max_images_per_patient": mipp, "val_fraction": val_fraction},
        "image": {"shape": list(shape), "channels": 3, "dtype": "uint8", "format": "png",
                  "axes": "0 = rows (H), 1 = columns (W), 2 = RGB",
                  "noise_region": "corner blocks of (H // 8, W // 8) pixels (skin only)"},
        "cue": {"axis": 1, "amplitude_per_strength": C.CUE_AMPLITUDE,
                "cycles": dict(zip(groups, C.cue_cycles(shape[1], len(groups))))},
        "patients": {"n": len(patients), "split": "patient-level",
                     "splits": {s: int(sum(v == s for v in p_split)) for s in ("train", "val", "test")
                                if s != "val" or val_fraction > 0}},
        "counts": counts, "splits": {s: int((split == s).sum()) for s in ("train", "val", "test")
                                     if s != "val" or val_fraction > 0},
    }
    manifest = C.write_outputs(out, DATASET, table, cohort)
    if verbose:
        print(C.summary_line(DATASET, manifest, ATTRIBUTE, counts, "1", "melanoma"), flush=True)
    return manifest
